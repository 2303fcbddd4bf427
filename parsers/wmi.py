"""All WMI export forms of the RDS licensing classes behind one parser module.

Sources: /work/shared/reference/formats.md ("WMI exports"). The forms are read by
`parsers.checkmk` (Checkmk `<<<rds_licenses>>>`), `parsers.wmi_xml` (psSDP `ConvertTo-Xml`),
`parsers.wmi_html` (MSRD-Collect `ConvertTo-Html`) and `parsers.wmi_csv` (`Export-Csv`);
this module picks one by content, in that order, so a caller may register either this
module alone or the four.

Why that order: each sniff is exclusive by construction (a `<<<rds_licenses` line; an
`<Objects>` root; an HTML `<table>`/`<html>` without `<Objects>`; a CSV header that does
not start with `<`), and the most specific markers are tried first.

Assumption: the stream is seekable (the contract's files are); a non-seekable stream is
read into memory first.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

from parsers import checkmk, wmi_csv, wmi_html, wmi_xml
from parsers.base import FileNote, Item, ParseOptions, ParserModule
from parsers.errors import InvalidSignatureError

NAME = "wmi"
VERSION = "1"
HEAD_BYTES = 65536

#: Sub-parsers in sniff order.
FORMS: tuple[ParserModule, ...] = (checkmk, wmi_xml, wmi_html, wmi_csv)


def pick(head: bytes, name: str) -> ParserModule | None:
    """The sub-parser whose sniff accepts `head`, or None."""
    for module in FORMS:
        if module.sniff(head, name):
            return module
    return None


def sniff(head: bytes, name: str) -> bool:
    """True when one of the WMI export forms recognises the file."""
    return pick(head, name) is not None


def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]:
    """Delegate to the sub-parser that recognises the file; note which one it was."""
    if not stream.seekable():
        stream = io.BytesIO(stream.read())
    start = stream.tell()
    head = stream.read(HEAD_BYTES)
    stream.seek(start)
    module = pick(head, options.file_name)
    if module is None:
        raise InvalidSignatureError(
            "not a WMI export of Win32_TSIssuedLicense / Win32_TSLicenseKeyPack "
            f"(first bytes: {head[:40]!r})"
        )
    yield FileNote("wmi_parser", f"{module.NAME} {module.VERSION}")
    yield from module.parse(stream, options)


__all__ = ["FORMS", "NAME", "VERSION", "parse", "pick", "sniff"]
