"""EVTX (Windows XML Event Log) files: `reader` walks chunks and records, `structs` declares
the on-disk layouts, `pysubs` is the pure-Python BinXML value reader."""

from __future__ import annotations

from caltrail.parsers.evtx.reader import NAME, VERSION, chunk_count, parse, parse_range, sniff

__all__ = ["NAME", "VERSION", "chunk_count", "parse", "parse_range", "sniff"]
