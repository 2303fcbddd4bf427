"""Which parser reads a file: decided by content (magic bytes, header lines), not by name."""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path

from caltrail.parsers import reader_for, readers
from caltrail.parsers.base import ParserModule

SNIFF_BYTES = 65536 + 4096 + 8  # enough to see an EVTX chunk magic behind a broken header

@dataclass(frozen=True)
class Detection:
    """The parser chosen for a file, or why none was."""

    parser: ParserModule | None
    reason: str


def detect(path: Path, display: str) -> Detection:
    """Pick the parser for a file by its first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(SNIFF_BYTES)
    if not head:
        if display.lower().endswith(".evtx"):
            return Detection(_module("caltrail.parsers.evtx"), "empty file named .evtx")
        return Detection(None, "empty file")
    module = reader_for(head, display)
    if module is not None:
        return Detection(module, f"content looks like {module.NAME}")
    if display.lower().endswith(".evtx"):
        # Named .evtx but not EVTX inside: let the EVTX parser say exactly what is wrong.
        return Detection(_module("caltrail.parsers.evtx"), "named .evtx; content does not match")
    return Detection(None, f"not a format caltrail reads (starts with {describe_start(head)})")


def describe_start(head: bytes, size: int = 16) -> str:
    """The first bytes of a file as a person reads them: its text, or its bytes in hex."""
    sample = head[:size]
    try:  # (a character cut at the end of the sample is left out, not an error)
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(sample, final=False)
    except UnicodeDecodeError:
        text = ""
    shown = " ".join(text.split())
    if shown and shown.isprintable():
        return f'the text "{shown}"'
    return f"the bytes {sample.hex(' ')}"


def _module(name: str) -> ParserModule:
    for module in readers():
        if module.__name__ == name:  # type: ignore[attr-defined]
            return module
    raise KeyError(name)
