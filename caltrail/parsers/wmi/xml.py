"""`Win32_TSIssuedLicense` / `Win32_TSLicenseKeyPack` as PowerShell `ConvertTo-Xml` (psSDP).

Sources: docs/FORMATS.md ("psSDP `ConvertTo-Xml`": psSDP
`<host>_Win32_TSIssuedLicense.xml`, `<Objects><Object Type=..><Property Name="LicenseId"
Type="System.UInt32">5</Property>...`); Microsoft docs, ConvertTo-Xml (`-As Document`,
`-Depth`: nested values become child `<Property>` elements).

Assumptions:
- [U] The `Type` attribute of `<Object>` may or may not name the WMI class; the class is
  taken from it, else from a `__CLASS` property, else from the property names.
- A property with child `<Property>` elements (a collection) reads as their texts joined
  with ", "; a property with no text is null.
- The file is decoded by `parsers.textio` (UTF-16LE with BOM is common when PowerShell
  wrote the XML with `Out-File`) and re-encoded as UTF-8 for lxml; the XML declaration's
  encoding is rewritten to match. lxml runs with entity resolution, DTD loading and network
  access off.
- Streaming: each `<Object>` is read and then dropped, so memory does not grow with the
  file. A syntax error ends the file with one quarantined issue standing for the rest.
- Each `<Object>` is one data row: records + quarantined issues = objects read.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

from lxml import etree

from caltrail.parsers.base import Item, ParseIssue, ParseOptions
from caltrail.parsers.errors import InvalidSignatureError
from caltrail.parsers.textio import decode_head, iter_lines
from caltrail.parsers.wmi.columns import column_key
from caltrail.parsers.wmi.rows import (
    Header,
    Row,
    RowItem,
    TableSpec,
    excerpt,
    read_tables,
    spec_from_columns,
    spec_from_type_name,
)

NAME = "wmi_xml"
VERSION = "2"

_DECL_ENCODING = re.compile(r"""(<\?xml[^>]*?encoding\s*=\s*)(["'])[^"']*\2""")
_SNIFF_ROOT = re.compile(r"<Objects[\s>]")
_SNIFF_ISSUED = re.compile(r"""Name\s*=\s*["'](LicenseId|sHardwareId)["']""", re.IGNORECASE)
_SNIFF_KEYPACK = re.compile(r"""Name\s*=\s*["']TotalLicenses["']""", re.IGNORECASE)
_SNIFF_CLASS = re.compile(r"Win32_TS(IssuedLicense|LicenseKeyPack)", re.IGNORECASE)


def sniff(head: bytes, name: str) -> bool:
    """An `<Objects>` document whose objects carry the classes' properties."""
    text = decode_head(head)
    if _SNIFF_ROOT.search(text) is None or "<Object" not in text:
        return False
    return bool(
        _SNIFF_ISSUED.search(text) or _SNIFF_KEYPACK.search(text) or _SNIFF_CLASS.search(text)
    )


def _utf8_chunks(stream: BinaryIO) -> Iterator[bytes]:
    for number, line in iter_lines(stream):
        if number == 1:
            line = _DECL_ENCODING.sub(r'\1"utf-8"', line.lstrip("\ufeff"), count=1)
        yield (line + "\n").encode("utf-8")


def _value(prop: etree._Element) -> str | None:
    children = [c for c in prop if isinstance(c.tag, str)]
    if children:
        texts = [_value(c) for c in children]
        return ", ".join(t for t in texts if t is not None)
    return prop.text


def _object_values(obj: etree._Element) -> dict[str, str | None]:
    values: dict[str, str | None] = {}
    for prop in obj:
        if prop.tag != "Property":
            continue
        name = prop.get("Name")
        if name:
            values.setdefault(column_key(name), _value(prop))
    return values


def _line(element: etree._Element, default: int) -> int:
    line = element.sourceline
    return line if isinstance(line, int) else default


def _object_excerpt(values: dict[str, str | None]) -> str:
    return excerpt("; ".join(f"{k}={v}" for k, v in values.items() if not k.startswith("__")))


def _rows(stream: BinaryIO) -> Iterator[RowItem]:
    parser = etree.XMLPullParser(
        events=("start", "end"),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    root_seen = False
    header_sent = False
    depth = 0
    line_no = 0
    chunks = _utf8_chunks(stream)
    finished = False
    while not finished:
        chunk = next(chunks, None)
        error: etree.XMLSyntaxError | None = None
        try:
            if chunk is None:
                finished = True
                parser.close()
            else:
                line_no += 1
                parser.feed(chunk)
        except etree.XMLSyntaxError as exc:
            error = exc
        # Every event before a break is read, whatever lxml's buffering. When the data ends
        # inside an element, close() reports an "end" for each element still open: those
        # are incomplete, so only their starts are taken.
        events = [
            (event, element)
            for event, element in parser.read_events()
            if error is None or chunk is not None or event == "start"
        ]
        for event, element in events:
            if not isinstance(element, etree._Element):
                continue
            if event == "start":
                depth += 1
                if depth == 1:
                    if element.tag != "Objects":
                        raise InvalidSignatureError(
                            f"line {_line(element, line_no)}: expected root <Objects>, "
                            f"found <{element.tag}>"
                        )
                    root_seen = True
                continue
            depth -= 1
            if depth != 1 or element.tag != "Object":
                continue
            values = _object_values(element)
            line = _line(element, line_no)
            if not header_sent:
                header_sent = True
                spec: TableSpec | None = spec_from_type_name(element.get("Type") or "")
                spec = spec or spec_from_type_name(values.get("__class") or "")
                spec = spec or spec_from_columns(list(values))
                form = f"ConvertTo-Xml (Object Type {element.get('Type') or '?'})"
                columns = tuple(str(p.get("Name") or "") for p in element if p.tag == "Property")
                yield Header(spec, columns, form, line)
            yield Row(values, line, _object_excerpt(values))
            parent = element.getparent()
            element.clear()
            if parent is not None:
                parent.remove(element)
        if error is not None:
            if not root_seen:
                raise InvalidSignatureError(
                    f"line {line_no}: not a ConvertTo-Xml document: {error}"
                ) from error
            yield ParseIssue(
                "xml_syntax",
                f"line {line_no}: XML syntax error, rest of the file unreadable: {error}",
                True,
                line=line_no,
                excerpt=excerpt(chunk.decode("utf-8", "replace") if chunk else ""),
            )
            return
    if not root_seen:
        raise InvalidSignatureError("no <Objects> root element")
    if not header_sent:
        yield ParseIssue(
            "no_objects",
            "the <Objects> document holds no <Object>",
            False,
        )


def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]:
    """Records of a ConvertTo-Xml document; unreadable objects become quarantined issues."""
    return read_tables(stream, options, _rows)


__all__ = ["NAME", "VERSION", "parse", "sniff"]
