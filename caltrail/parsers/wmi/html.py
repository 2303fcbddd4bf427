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
- The rows of the plain ConvertTo-Html table (one `<tr><td>..</td>..</tr>` a line, cells
  without markup or entities) are read by splitting the line, lxml having read the lines up
  to the header row: lxml alone took most of a row's time. The first line of any other
  shape sends the file back to lxml from its start (the rows already given are skipped),
  so every file reads as lxml reads it (tests/parsers/test_fast_paths.py).
- A file with no license table (MSRD-Collect writes an empty table when the server has no
  licenses, or the collector failed) yields one quarantined issue "no_license_table".
- Each data `<tr>` of a license table (or each `-As List` table) is one data row: records
  + quarantined issues = data rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice, repeat
from typing import BinaryIO

from lxml import etree

from caltrail.parsers.base import Item, ParseIssue, ParseOptions
from caltrail.parsers.textio import decode_head, iter_blocks
from caltrail.parsers.wmi.rows import (
    Cells,
    Header,
    Row,
    RowItem,
    TableSpec,
    excerpt,
    looks_like_header,
    new_cells,
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


def _text_blocks(stream: BinaryIO) -> Iterator[tuple[int, str]]:
    """(last line number, text) of blocks of whole lines, each line with any BOM at its
    start dropped."""
    for number, block in iter_blocks(stream):
        if "\ufeff" in block:
            block = "\n".join(line.lstrip("\ufeff") for line in block.split("\n"))
        yield number, block


def _utf8_blocks(stream: BinaryIO) -> Iterator[tuple[int, str, bytes]]:
    """`_text_blocks` with their UTF-8 bytes. lxml is fed blocks, not lines: feeding line by
    line cost more than the parsing itself."""
    for number, block in _text_blocks(stream):
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
        table.spec = spec
        if spec is not None:
            self.found = True
            return Header(spec, tuple(columns), form, line)
        return None

    def row(self, tr: etree._Element, line: int) -> RowItem | None:
        """What one <tr> gives (at most one item: it runs for every row, so no generator)."""
        if not self.tables:
            return None
        texts, all_th = _cells(tr)
        return self.cells(texts, all_th, line)

    def cells(self, texts: list[str], all_th: bool, line: int) -> RowItem | None:
        """What a row of these cell texts gives (`row`, once its cells are read)."""
        table = self.tables[-1]
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
        return Cells(texts, line, raw)

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


def _parser() -> etree.HTMLPullParser:
    return etree.HTMLPullParser(
        events=("start", "end"),
        tag=("table", "tr"),  # the only elements read; cells are read from their row
        encoding="utf-8",
        no_network=True,
        remove_comments=True,
        remove_pis=True,
    )


def _events(parser: etree.HTMLPullParser, reader: _Reader, line_no: int) -> Iterator[RowItem]:
    """The items of what lxml has read since last asked; `line_no` is the last line fed."""
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


def _lxml_rows(stream: BinaryIO) -> Iterator[RowItem]:
    """Every row as lxml reads it."""
    parser = _parser()
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
        yield from _events(parser, reader, line_no)
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


def _rows(stream: BinaryIO, plain: bool = True) -> Iterator[RowItem]:
    """The rows of the file as lxml reads them: by `_PlainTable` as far as the file has
    the plain shape, then by lxml from the start, the items already given skipped.
    `plain=False` reads with lxml alone (the tests compare both ways)."""
    if not (plain and stream.seekable()):  # (going back needs a seekable stream)
        yield from _lxml_rows(stream)
        return
    start = stream.tell()
    table = _PlainTable()
    yield from table.rows(stream)
    if not table.complete:
        stream.seek(start)
        yield from islice(_lxml_rows(stream), table.given, None)


# The plain ConvertTo-Html shape. A cell: text without "<", entity or NUL (which libxml2
# reads as U+FFFD); libxml2 gives any other character of a cell as itself (a line holds no
# "\r": the text is decoded with universal newlines), and lxml's texts are stripped.
_DATA_TAGS = ("<tr><td>", "</td></tr>", "</td><td>")
_HEADER_TAGS = ("<tr><th>", "</th></tr>", "</th><th>")
_PLAIN_AFTER = frozenset({"</body></html>", "</body>", "</html>"})  # after `</table>`
_HEAD_LINES = 200  # the header row is looked for in the first lines only
# A longer line is left to lxml, limits and all (libxml2 refuses a text node over 10 MB)
_PLAIN_LINE_MAX = 1 << 16


def _plain_cells(line: str, opening: str, closing: str, between: str) -> list[str] | None:
    """The stripped texts of a line `<tr><td>a</td><td>b</td></tr>` of plain cells (with
    these tags), or None for a line of any other shape."""
    if not (line.startswith(opening) and line.endswith(closing)) or len(line) > _PLAIN_LINE_MAX:
        return None
    inner = line[len(opening) : -len(closing)]
    texts = inner.split(between)
    # the only markup is the tags between the cells, each with two "<" (a ">" in a cell is
    # text to libxml2)
    if inner.count("<") != 2 * (len(texts) - 1) or "&" in inner or "\0" in inner:
        return None
    return list(map(str.strip, texts))


class _PlainTable:
    """Reads a file of the plain ConvertTo-Html shape: lxml reads the lines up to the table's
    header row (whatever the head holds), one at a time; then each line is a plain data
    row, until `</table>` and the end of the document. `complete` is False when a line of
    another shape (or an lxml error, or no such header) stopped it: `given` items were
    given, which are lxml's first ones."""

    def __init__(self) -> None:
        self.complete = False
        self.given = 0

    def rows(self, stream: BinaryIO) -> Iterator[RowItem]:
        reader = _Reader()
        lines = self._lines(stream)
        head = self._head(lines, reader)
        if head is None:
            return
        self.given = len(head)
        yield from head
        table = reader.tables[-1]
        width = len(table.columns or ())
        opening, closing, between = _DATA_TAGS
        ended = False
        for number, block_end, line in lines:
            texts = None if ended else _plain_cells(line, opening, closing, between)
            if texts is not None:
                # libxml2 counts lines only up to 65,535: past it, lxml's rows get the last
                # line of the block they were fed in (`_line`)
                at = number if number < _LINES_COUNTED else block_end
                if len(texts) == width:  # (`_Reader.cells`, inlined for the usual row)
                    item: RowItem | None = new_cells((texts, at, " | ".join(texts)))
                else:
                    item = reader.cells(texts, False, at)
                if item is not None:
                    self.given += 1
                    yield item
                continue
            bare = line.strip(" \t")
            if not bare:
                continue  # (blank between rows: no element)
            if not ended and bare == "</table>":
                ended = True  # (a plain table's end gives no item: `_Reader.end_table`)
            elif not (ended and bare in _PLAIN_AFTER):
                return
        self.complete = ended

    @staticmethod
    def _head(lines: Iterator[tuple[int, int, str]], reader: _Reader) -> list[RowItem] | None:
        """What lxml gives for the lines up to the header row of a license table, fed to it
        one at a time; None when the head holds no such row (or lxml raises), and then
        nothing was given."""
        parser = _parser()
        items: list[RowItem] = []
        for number, _, line in lines:
            if number > _HEAD_LINES:
                return None
            try:
                parser.feed((line + "\n").encode("utf-8"))
            except etree.LxmlError:
                return None
            read = list(_events(parser, reader, number))
            items.extend(read)
            # (the header row read from this very line: an earlier header with this line
            # in a comment, say, is not enough)
            header = read[0] if len(read) == 1 else None
            if (
                isinstance(header, Header)
                and header.line == number
                and _PlainTable._at_plain_rows(reader, line)
            ):
                return items
        return None

    @staticmethod
    def _at_plain_rows(reader: _Reader, line: str) -> bool:
        """lxml has just read the header row of a license table, this line alone, in the
        only open table: lxml reads the plain rows that follow as `_plain_cells` does."""
        if len(reader.tables) != 1:
            return False
        table = reader.tables[0]
        return (
            table.spec is not None
            and table.columns is not None
            and not table.list_mode
            and _plain_cells(line, *_HEADER_TAGS) == list(table.columns)
        )

    @staticmethod
    def _lines(stream: BinaryIO) -> Iterator[tuple[int, int, str]]:
        """(line number, number of the last line of its block, line) of the lines lxml
        would be fed, in the same blocks."""
        for block_end, text in _text_blocks(stream):
            lines = text.split("\n")
            lines.pop()  # (a block ends with a line end)
            first = block_end - len(lines) + 1
            # (zip makes the tuples in C: no Python step per line here)
            count = len(lines)
            yield from zip(range(first, block_end + 1), repeat(block_end, count), lines, strict=True)


def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]:
    """Records of a ConvertTo-Html file; bad rows and a missing table become issues."""
    return read_tables(stream, options, _rows)


__all__ = ["NAME", "VERSION", "parse", "sniff"]
