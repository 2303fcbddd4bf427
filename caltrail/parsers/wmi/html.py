"""`Win32_TSIssuedLicense` / `Win32_TSLicenseKeyPack` as PowerShell `ConvertTo-Html` tables.

Sources: docs/FORMATS.md ("MSRD-Collect `ConvertTo-Html`": MSRD-Collect
`<host>_rdls_IssuedLicenses.html` / `<host>_rdls_LicenseKeyPacks.html`, a table with columns
PSComputerName, LicenseId, sIssuedToUser, sIssuedToComputer, IssueDate, ExpirationDate,
LicenseStatus, KeyPackId, sHardwareId); Microsoft docs, ConvertTo-Html (`-As Table`, the
default: one `<th>` header row then one `<tr>` per object; `-As List`: one two-column
table per object, names ending with ":").

Assumptions:
- [U] Column order and the set of columns vary with the collector version: columns are
  found by header text, case-insensitively.
- HTML is parsed by lxml's HTML parser, streaming (each row dropped once read), with network
  access off; nothing in the file is executed or fetched. The text is decoded by
  `parsers.textio` and handed to lxml as UTF-8.
- A file with no license table (MSRD-Collect writes an empty table when the server has no
  licenses, or the collector failed) yields one quarantined issue "no_license_table".
- Each data `<tr>` of a license table (or each `-As List` table) is one data row: records
  + quarantined issues = data rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from lxml import etree

from caltrail.parsers.base import Item, ParseIssue, ParseOptions
from caltrail.parsers.textio import decode_head, iter_blocks
from caltrail.parsers.wmi.columns import column_key
from caltrail.parsers.wmi.rows import (
    Header,
    Row,
    RowItem,
    TableSpec,
    excerpt,
    looks_like_header,
    read_tables,
    spec_from_columns,
)

NAME = "wmi_html"
VERSION = "2"

_SNIFF_HTML = re.compile(r"<(html|table)[\s>]", re.IGNORECASE)
_SNIFF_TH = re.compile(r"<t[hd][^>]*>\s*([A-Za-z_]+)\s*:?\s*</t[hd]>", re.IGNORECASE)
_MSRD_NAME = re.compile(r"rdls_(IssuedLicenses|LicenseKeyPacks)", re.IGNORECASE)


def sniff(head: bytes, name: str) -> bool:
    """An HTML table with the classes' columns (or an MSRD-Collect rdls file name)."""
    text = decode_head(head)
    if _SNIFF_HTML.search(text) is None or "<Objects" in text:
        return False
    if looks_like_header(_SNIFF_TH.findall(text)):
        return True
    return _MSRD_NAME.search(name or "") is not None


@dataclass
class _Table:
    """What we know about the table being read."""

    columns: tuple[str, ...] | None = None
    keys: list[str] = field(default_factory=list)  # the columns lower-cased
    unique_keys: bool = True
    spec: TableSpec | None = None
    list_values: dict[str, str | None] = field(default_factory=dict)
    list_mode: bool = False
    line: int = 0


def _cells(tr: etree._Element) -> tuple[list[str], bool]:
    """The texts of the row's td/th cells, and whether all of them are th."""
    texts: list[str] = []
    all_th = True
    for cell in tr:
        tag = cell.tag
        if tag != "td" and tag != "th":
            continue
        all_th = all_th and tag == "th"
        if len(cell):  # markup inside the cell: all of its text
            texts.append("".join(str(t) for t in cell.itertext()).strip())
        else:
            texts.append((cell.text or "").strip())
    return texts, bool(texts) and all_th


def _line(element: etree._Element, default: int) -> int:
    """The element's line; `default` (the last line of the block just fed, which the row
    ends on or before) where lxml does not know it. libxml2's HTML parser counts lines only
    up to 65,535 (it stops there), so past it a row's line is that of its block's end."""
    line = element.sourceline
    return line if isinstance(line, int) and line < _LINES_COUNTED else default


_LINES_COUNTED = 65_535


def _utf8_blocks(stream: BinaryIO) -> Iterator[tuple[int, str, bytes]]:
    """(last line number, text, its UTF-8 bytes) of blocks of whole lines, each line with
    any BOM at its start dropped. lxml is fed blocks, not lines: feeding line by line cost
    more than the parsing itself."""
    for number, block in iter_blocks(stream):
        if "\ufeff" in block:
            block = "\n".join(line.lstrip("\ufeff") for line in block.split("\n"))
        yield number, block, block.encode("utf-8")


class _Reader:
    def __init__(self) -> None:
        self.tables: list[_Table] = []
        self.header_columns: tuple[str, ...] | None = None
        self.found = False
        self.first_text = ""

    def header(self, table: _Table, columns: list[str], line: int, form: str) -> Header | None:
        spec = spec_from_columns(columns)
        table.columns = tuple(columns)
        table.keys = [column_key(c) for c in columns]
        table.unique_keys = len(set(table.keys)) == len(table.keys)
        table.spec = spec
        if spec is not None:
            self.found = True
            return Header(spec, tuple(columns), form, line)
        return None

    def row(self, tr: etree._Element, line: int) -> RowItem | None:
        """What one <tr> gives (at most one item: it runs for every row, so no generator)."""
        if not self.tables:
            return None
        table = self.tables[-1]
        texts, all_th = _cells(tr)
        if not texts:
            return None
        if table.columns is None and not table.list_mode:
            if len(texts) == 2 and texts[0].endswith(":") and not all_th:
                table.list_mode = True
                table.line = line
            else:
                form = "ConvertTo-Html -As Table"
                return self.header(table, texts, line, form)
        if table.list_mode:
            table.list_values.setdefault(texts[0].rstrip(":").strip().lower(), texts[-1] or None)
            return None
        if table.spec is None or table.columns is None:
            return None
        raw = " | ".join(texts)
        if len(texts) != len(table.columns):
            return ParseIssue(
                "bad_row",
                f"line {line}: expected {len(table.columns)} cells, found {len(texts)}",
                True,
                line=line,
                excerpt=excerpt(raw),
            )
        if table.unique_keys:
            values: dict[str, str | None] = dict(zip(table.keys, texts, strict=True))
        else:  # a repeated column name: the first one wins
            values = {}
            for key, value in zip(table.keys, texts, strict=True):
                values.setdefault(key, value)
        return Row(values, line, raw)

    def end_table(self) -> Iterator[RowItem]:
        table = self.tables.pop()
        if not table.list_mode:
            return
        names = list(table.list_values)
        spec = spec_from_columns(names)
        if spec is None:
            return
        if self.header_columns is None:
            self.header_columns = tuple(names)
            self.found = True
            yield Header(spec, tuple(names), "ConvertTo-Html -As List", table.line)
        raw = "; ".join(f"{k}={v}" for k, v in table.list_values.items())
        yield Row(dict(table.list_values), table.line, raw)


def _drop_read(element: etree._Element) -> None:
    """Free what has been read, keeping memory flat: the element's content, and the
    siblings before it (each with its tail text).

    Never the element itself with its tail: libxml2 may still be appending text to that
    tail (the text after `</tr>` arrives with the next block, or at close), and it keeps
    the length of the text node it appends to. Once the node is unlinked, the parent's
    last child is some earlier text node, and libxml2 appends to it at the old length:
    a heap overflow (segmentation fault, or an abort on a corrupted heap; lxml 6.1-6.2,
    libxml2 2.14; docs/GUARANTEES.md, "Native crashes found"). The siblings before the element
    are complete; libxml2 no longer writes to them."""
    element.clear(keep_tail=True)  # type: ignore[call-arg]  # (lxml-stubs lacks keep_tail)
    while (previous := element.getprevious()) is not None:
        parent = previous.getparent()
        if parent is None:
            break
        parent.remove(previous)


def _rows(stream: BinaryIO) -> Iterator[RowItem]:
    parser = etree.HTMLPullParser(
        events=("start", "end"),
        tag=("table", "tr"),  # the only elements read; cells are read from their row
        encoding="utf-8",
        no_network=True,
        remove_comments=True,
        remove_pis=True,
    )
    reader = _Reader()
    line_no = 0
    blocks = _utf8_blocks(stream)
    finished = False
    while not finished:
        item = next(blocks, None)
        error: etree.LxmlError | None = None
        try:
            if item is None:
                finished = True
                parser.close()
            else:
                # (an error raised while feeding names the block's last line)
                line_no = item[0]
                if len(reader.first_text) < 200:
                    reader.first_text += item[1][:200]
                parser.feed(item[2])
        except etree.LxmlError as exc:
            error = exc
        # (the rows read before an error are kept, whatever lxml's buffering)
        for event, element in parser.read_events():
            if not isinstance(element, etree._Element) or not isinstance(element.tag, str):
                continue
            tag = element.tag.lower()
            if event == "start":
                if tag == "table":
                    reader.tables.append(_Table())
                continue
            if tag == "tr":
                row = reader.row(element, _line(element, line_no))
                if row is not None:
                    yield row
                _drop_read(element)
            elif tag == "table" and reader.tables:
                yield from reader.end_table()
                _drop_read(element)
        if error is not None:
            yield ParseIssue(
                "html_syntax",
                f"line {line_no}: HTML the parser cannot go on with: {error}",
                True,
                line=line_no,
            )
            return
    if not reader.found:
        yield ParseIssue(
            "no_license_table",
            "line 1: no HTML table with Win32_TSIssuedLicense or Win32_TSLicenseKeyPack "
            "columns (LicenseId/sHardwareId or KeyPackId/TotalLicenses)",
            True,
            line=1,
            excerpt=excerpt(reader.first_text),
        )


def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]:
    """Records of a ConvertTo-Html file; bad rows and a missing table become issues."""
    return read_tables(stream, options, _rows)


__all__ = ["NAME", "VERSION", "parse", "sniff"]
