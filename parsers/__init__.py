"""caltrail parsers: one module per input format; pure (bytes in, records out)."""

from __future__ import annotations

from parsers.base import (
    ClientHwidRecord,
    EventRecord,
    FileNote,
    IssuedLicenseRecord,
    Item,
    KeypackRecord,
    ParseIssue,
    ParseOptions,
    Record,
    TraceRecord,
)
from parsers.errors import ParseError

__all__ = [
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
    "TraceRecord",
]
