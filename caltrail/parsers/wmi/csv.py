"""`Win32_TSIssuedLicense` / `Win32_TSLicenseKeyPack` exported with PowerShell `Export-Csv`.

Sources: docs/FORMATS.md ("PowerShell `Export-Csv`"): Windows PowerShell 5.1
`Get-WmiObject | Export-Csv` (a `#TYPE System.Management.ManagementObject#root\\cimv2\\...`
line, every field double-quoted, ASCII, WMI system columns `__GENUS`..`__PATH`, DMTF dates);
PowerShell 7 (no `#TYPE`, UTF-8); `Get-CimInstance | Export-Csv` (`#TYPE
Microsoft.Management.Infrastructure.CimInstance#...`, culture-formatted dates, CimClass /
CimInstanceProperties / CimSystemProperties columns). Microsoft docs: Export-Csv
(`-Delimiter`, `-UseCulture`, `-NoTypeInformation`).

Assumptions:
- [U] Column order: columns are found by header name, any order, any case.
- [U] `-UseCulture` writes `;` in many cultures: the delimiter is whichever of `,` `;` tab
  `|` makes the header hold the class's columns.
- A quoted value may span lines (Export-Csv keeps embedded newlines); a line that opens a
  quote is joined with up to `MAX_JOIN_LINES` following lines, and only when the join gives
  a row of the header's width; otherwise the line is a bad row of its own. So every physical
  data line is accounted for: records + quarantined issues = data rows.
- Lines before the header that start with `#` (the `#TYPE` line, comments) are skipped; at
  most `MAX_PREAMBLE_LINES` lines are looked at for the header.
"""

from __future__ import annotations

import csv
import io
from collections import deque
from collections.abc import Iterator
from typing import BinaryIO

from caltrail.parsers.base import Item, ParseIssue, ParseOptions
from caltrail.parsers.errors import InvalidSignatureError
from caltrail.parsers.textio import decode_head, iter_lines
from caltrail.parsers.wmi.rows import (
    Header,
    RowItem,
    TableSpec,
    excerpt,
    looks_like_header,
    new_cells,
    read_tables,
    spec_from_columns,
    spec_from_type_name,
)

NAME = "wmi_csv"
VERSION = "2"

DELIMITERS = (",", ";", "\t", "|")
MAX_PREAMBLE_LINES = 20
MAX_JOIN_LINES = 20
MAX_JOIN_CHARS = 65536


def split_fields(text: str, delimiter: str) -> list[str] | None:
    """The fields of one CSV record (which may hold newlines), or None if it is not one."""
    fields = _split_all_quoted(text, delimiter)
    if fields is not None:
        return fields
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error:
        return None
    if len(rows) != 1:
        return None
    return rows[0]


def _split_all_quoted(text: str, delimiter: str) -> list[str] | None:
    """The fields of `"a","b",...,"z"` where no value holds a quote (Export-Csv's usual
    row), read by one split; None for any other shape (left to the csv module).

    Exact: when the quotes number two per piece, every quote is the opening or closing one
    of a field, so no piece holds a quote, and the csv module would read the same values.
    """
    if not (len(text) >= 2 and text[0] == '"' and text[-1] == '"'):
        return None
    if "\n" in text or "\r" in text or "\x00" in text:
        return None  # line ends inside a value, or a NUL the csv module refuses
    pieces = text[1:-1].split(f'"{delimiter}"')
    if text.count('"') != 2 * len(pieces):
        return None
    return pieces


def _header_fields(line: str) -> tuple[str, list[str]]:
    best: tuple[str, list[str]] | None = None
    for delimiter in DELIMITERS:
        fields = split_fields(line, delimiter)
        if fields is None:
            continue
        if looks_like_header(fields) or spec_from_columns(fields) is not None:
            return delimiter, fields
        if best is None or len(fields) > len(best[1]):
            best = (delimiter, fields)
    return best if best is not None else (",", [line])


def _find_header(lines: Iterator[tuple[int, str]]) -> tuple[str | None, int, str] | None:
    """(the #TYPE line, header line number, header text), or None within the preamble."""
    type_line: str | None = None
    for count, (number, line) in enumerate(lines):
        if count >= MAX_PREAMBLE_LINES:
            return None
        stripped = line.strip().lstrip("\ufeff")
        if not stripped:
            continue
        if stripped.startswith("#"):
            if stripped.upper().startswith("#TYPE"):
                type_line = stripped
            continue
        return type_line, number, line
    return None


def sniff(head: bytes, name: str) -> bool:
    """A `#TYPE` line naming one of the classes, or a header row with their columns."""
    text = decode_head(head)
    if text.lstrip().startswith("<"):
        return False
    found = _find_header(enumerate(text.splitlines()[:MAX_PREAMBLE_LINES], start=1))
    if found is None:
        return False
    type_line, _, header = found
    if type_line is not None and spec_from_type_name(type_line) is not None:
        return True
    return looks_like_header(_header_fields(header)[1])


def _form(type_line: str | None, columns: list[str], delimiter: str) -> str:
    names = {c.lower() for c in columns}
    if type_line and "ciminstance" in type_line.lower():
        form = "Get-CimInstance | Export-Csv (Windows PowerShell 5.1, #TYPE CimInstance)"
    elif type_line and "managementobject" in type_line.lower():
        form = "Get-WmiObject | Export-Csv (Windows PowerShell 5.1, #TYPE ManagementObject)"
    elif type_line:
        form = f"Export-Csv ({type_line[:80]})"
    elif "cimclass" in names or "ciminstanceproperties" in names:
        form = "Get-CimInstance | Export-Csv (no #TYPE line: PowerShell 7 or -NoTypeInformation)"
    elif "__genus" in names:
        form = "Get-WmiObject | Export-Csv (no #TYPE line: PowerShell 7 or -NoTypeInformation)"
    else:
        form = "CSV (no #TYPE line)"
    if delimiter != ",":
        form += f", delimiter {delimiter!r}"
    return form


def _rows(stream: BinaryIO, plain: bool = True) -> Iterator[RowItem]:
    """Header, then one Cells or bad-row issue per data row. `plain=False` turns off the
    inlined split of the usual row (the tests compare both ways)."""
    lines = iter_lines(stream)
    found = _find_header(lines)
    if found is None:
        raise InvalidSignatureError(
            "no CSV header with Win32_TSIssuedLicense / Win32_TSLicenseKeyPack columns in the "
            f"first {MAX_PREAMBLE_LINES} lines"
        )
    type_line, header_line, header_text = found
    delimiter, columns = _header_fields(header_text)
    columns = [c.strip() for c in columns]
    spec: TableSpec | None = spec_from_type_name(type_line) if type_line else None
    yield Header(spec, tuple(columns), _form(type_line, columns, delimiter), header_line)
    width = len(columns)
    pending: deque[tuple[int, str]] = deque()

    def next_line() -> tuple[int, str] | None:
        if pending:
            return pending.popleft()
        return next(lines, None)

    between = f'"{delimiter}"'
    while (item := (pending.popleft() if pending else next(lines, None))) is not None:
        number, line = item
        if not line or line.isspace():  # (= not line.strip(), without copying the line)
            continue
        fields: list[str] | None = None
        raw = line
        quotes = line.count('"')
        if quotes % 2 == 1:
            taken: list[tuple[int, str]] = []
            text = line
            while len(taken) < MAX_JOIN_LINES and len(text) < MAX_JOIN_CHARS:
                follower = next_line()
                if follower is None:
                    break
                taken.append(follower)
                text += "\n" + follower[1]
                if text.count('"') % 2 == 0:
                    joined = split_fields(text, delimiter)
                    if joined is not None and len(joined) == width:
                        fields, raw = joined, text
                    break
            if fields is None:
                pending.extendleft(reversed(taken))
        elif plain and line[0] == '"' and line[-1] == '"' and "\x00" not in line:
            # `_split_all_quoted` inlined for the usual row (iter_lines gives no line end
            # inside a line, and the quotes are counted once)
            pieces = line[1:-1].split(between)
            if quotes == 2 * len(pieces):
                fields = pieces
        if fields is None:
            fields = split_fields(line, delimiter)
        if fields is None or len(fields) != width:
            found_width = "unreadable" if fields is None else f"{len(fields)} fields"
            yield ParseIssue(
                "bad_row",
                f"line {number}: expected {width} fields, found {found_width}",
                True,
                line=number,
                excerpt=excerpt(line),
            )
            continue
        yield new_cells((fields, number, raw))


def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]:
    """Records of an Export-Csv file; bad rows become quarantined issues."""
    return read_tables(stream, options, _rows)


__all__ = ["NAME", "VERSION", "parse", "sniff", "split_fields"]
