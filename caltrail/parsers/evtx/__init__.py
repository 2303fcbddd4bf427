"""EVTX (Windows XML Event Log) files: `reader` walks chunks and records, `structs` declares
the on-disk layouts, `pysubs` is the pure-Python BinXML value reader. A large file is read
in byte ranges of whole chunks (`plan_ranges`, `parse_range`: base.RangeReader)."""

from __future__ import annotations

from caltrail.parsers.evtx.reader import (
    NAME,
    RANGE_HEAD,
    VERSION,
    parse,
    parse_range,
    plan_ranges,
    sniff,
)

__all__ = ["NAME", "RANGE_HEAD", "VERSION", "parse", "parse_range", "plan_ranges", "sniff"]
