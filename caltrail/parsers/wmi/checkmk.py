"""`Win32_TSLicenseKeyPack` rows from the Checkmk Windows agent section `rds_licenses`.

Sources: docs/FORMATS.md ("Checkmk agent output"), after real key-pack rows:
`<<<rds_licenses:sep(44)>>>`, a header line
`KeyPackId,Description,KeyPackType,ProductType,ProductVersion,ProductVersionID,TotalLicenses,
IssuedLicenses,AvailableLicenses,ExpirationDate`, then comma rows with DMTF dates; the
Checkmk check plugin's own sample shows the same rows with culture dates
(`01/08/2023 00:00:00`) and reads rows with `zip(header, row)`.

Assumptions:
- The section may sit inside a full agent dump: lines outside `<<<rds_licenses...>>>`
  sections are skipped; a line starting with `<<<` ends the section. `sep(N)` gives the
  separator as a character code (44 = comma; comma when absent).
- [U] A header with one column more than the rows has been reported; the samples we have
  show equal widths. A row one field short reads the missing last column as null (as the
  check plugin's zip does); any other width is a bad row.
- The agent does not quote fields, so fields are split on the separator alone.
- Each row after a header is one data row: records + quarantined issues = data rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

from caltrail.parsers.base import Item, ParseIssue, ParseOptions
from caltrail.parsers.errors import InvalidSignatureError
from caltrail.parsers.textio import decode_head, iter_lines
from caltrail.parsers.wmi.rows import KEYPACK, Header, Row, RowItem, excerpt, read_tables

NAME = "checkmk_rds_licenses"
VERSION = "1"

_SECTION = re.compile(r"^<<<rds_licenses(?::(?P<opts>[^>]*))?>>>\s*$", re.IGNORECASE)
_SEP = re.compile(r"sep\((\d{1,3})\)")


def sniff(head: bytes, name: str) -> bool:
    """A `<<<rds_licenses...>>>` section header line."""
    text = decode_head(head)
    return any(_SECTION.match(line.strip()) for line in text.splitlines())


def _separator(opts: str | None) -> str:
    m = _SEP.search(opts or "")
    if m is None:
        return ","
    code = int(m[1])
    return chr(code) if 0 < code < 256 else ","


def _rows(stream: BinaryIO) -> Iterator[RowItem]:
    in_section = False
    sep = ","
    columns: list[str] | None = None
    seen_section = False
    for number, line in iter_lines(stream):
        stripped = line.strip().lstrip("\ufeff")
        if stripped.startswith("<<<"):
            m = _SECTION.match(stripped)
            in_section = m is not None
            if m is not None:
                seen_section = True
                sep = _separator(m["opts"])
                columns = None
            continue
        if not in_section or not stripped:
            continue
        fields = [f.strip() for f in stripped.split(sep)]
        if columns is None:
            columns = fields
            form = f"Checkmk agent section rds_licenses (separator {sep!r})"
            yield Header(KEYPACK, tuple(columns), form, number)
            continue
        width = len(columns)
        if len(fields) == width - 1:
            fields.append("")
        if len(fields) != width:
            yield ParseIssue(
                "bad_row",
                f"line {number}: expected {width} fields, found {len(fields)}",
                True,
                line=number,
                excerpt=excerpt(line),
            )
            continue
        values: dict[str, str | None] = {}
        for key, value in zip(columns, fields, strict=True):
            values.setdefault(key.lower(), value if value else None)
        yield Row(values, number, line)
    if not seen_section:
        raise InvalidSignatureError("no <<<rds_licenses>>> section found")


def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]:
    """Key-pack records of the rds_licenses section(s); bad rows become issues."""
    return read_tables(stream, options, _rows)


__all__ = ["NAME", "VERSION", "parse", "sniff"]
