"""caltrail parsers: one module per input format; pure (bytes in, records out).

Grouped by where the file comes from: `evtx` (event logs), `wmi` (the license server's WMI
exports), `trace` (trace dumps), `client` (what a client holds). `READERS` is the one list of
them; detection (`caltrail.pipeline.detect`) tries them in its order.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from caltrail.parsers.base import (
    ClientHwidRecord,
    EventRecord,
    FileNote,
    IssuedLicenseRecord,
    Item,
    KeypackRecord,
    ParseIssue,
    ParseOptions,
    Record,
    RowBlock,
    TraceRecord,
)
from caltrail.parsers.errors import ParseError

if TYPE_CHECKING:
    from caltrail.parsers.base import ParserModule, RangeReader

# Every reader, in the order detection tries them: the most specific signatures first, text
# formats after binary ones. Imported when first needed (lxml and pyevtx-rs load slowly).
READERS: tuple[str, ...] = (
    "caltrail.parsers.evtx",
    "caltrail.parsers.trace.etl",
    "caltrail.parsers.client.registry",
    "caltrail.parsers.wmi.checkmk",
    "caltrail.parsers.wmi.xml",
    "caltrail.parsers.wmi.html",
    "caltrail.parsers.wmi.csv",
    "caltrail.parsers.client.tsctst",
    "caltrail.parsers.trace.tracerpt_xml",
    "caltrail.parsers.trace.tracerpt_csv",
    "caltrail.parsers.trace.tracefmt",
)


@cache
def readers() -> tuple[ParserModule, ...]:
    """The modules of READERS, imported."""
    return tuple(importlib.import_module(name) for name in READERS)  # type: ignore[misc]


@cache
def range_readers() -> tuple[RangeReader, ...]:
    """The readers that read a large file in byte ranges (base.RangeReader), in READERS'
    order."""
    return tuple(m for m in readers() if hasattr(m, "plan_ranges"))  # type: ignore[misc]


def reader_for(head: bytes, name: str) -> ParserModule | None:
    """The first reader whose `sniff` accepts the first bytes of a file, or None."""
    for module in readers():
        if module.sniff(head, name):
            return module
    return None


__all__ = [
    "READERS",
    "ClientHwidRecord",
    "EventRecord",
    "FileNote",
    "IssuedLicenseRecord",
    "Item",
    "KeypackRecord",
    "ParseError",
    "ParseIssue",
    "ParseOptions",
    "Record",
    "RowBlock",
    "TraceRecord",
    "range_readers",
    "reader_for",
    "readers",
]
