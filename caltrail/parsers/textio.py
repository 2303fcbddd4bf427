"""Text decoding shared by every text format (exports, registry, traces).

Windows tools write ASCII, UTF-8 with or without BOM, or UTF-16LE with BOM (Windows
PowerShell 5.1 `Out-File` and `>`, regedit), with CRLF or LF line ends. This module is the
one place that decides how bytes become lines.
"""

from __future__ import annotations

import codecs
import io
import operator
from collections.abc import Iterator
from typing import BinaryIO

BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)


def detect_encoding(head: bytes) -> tuple[str, int]:
    """Return (codec, BOM length) for the first bytes of a text file.

    Without a BOM, a NUL in every other byte of the first line means UTF-16 without BOM;
    otherwise UTF-8 (ASCII is a subset). Bytes that are not valid in that encoding become
    U+FFFD in `decode_head` / `iter_lines` (errors="replace": a line is never lost; the
    non-ASCII letters of an ANSI file show up this way).
    """
    for bom, codec in BOMS:
        if head.startswith(bom):
            return codec, len(bom)
    sample = head[:256]
    if len(sample) >= 4 and sample[1::2].count(0) > len(sample) // 4 and sample[0] != 0:
        return "utf-16-le", 0
    if len(sample) >= 4 and sample[0::2].count(0) > len(sample) // 4 and sample[1] != 0:
        return "utf-16-be", 0
    return "utf-8", 0


def decode_head(head: bytes) -> str:
    """Decode the first bytes of a file for sniffing (never raises)."""
    codec, bom = detect_encoding(head)
    data = head[bom:]
    if codec.startswith("utf-16") and len(data) % 2:
        data = data[:-1]
    return data.decode(codec, errors="replace")


def iter_lines(stream: BinaryIO) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without its line end) from a binary stream.

    Streams: memory does not grow with the file. Invalid bytes become U+FFFD instead of
    stopping the file; the caller sees them in the text and can quarantine the line.
    """
    # (numbered and stripped in C, by enumerate and map: no Python step per line here)
    yield from enumerate(map(_drop_line_end, _text_stream(stream)), start=1)


_drop_line_end = operator.methodcaller("rstrip", "\n")


def iter_blocks(stream: BinaryIO, chars: int = 1 << 16) -> Iterator[tuple[int, str]]:
    """Yield (number of the last line in the block, block) from a binary stream.

    A block is whole lines of about `chars` characters, decoded as `iter_lines` decodes
    them, each ending with "\n" (the last line of the file gets one too). For readers that
    hand text on to a parser and need no Python work per line.
    """
    text = _text_stream(stream)
    number = 0
    while lines := text.readlines(chars):
        number += len(lines)
        block = "".join(lines)
        if not block.endswith("\n"):
            block += "\n"
        yield number, block


def _text_stream(stream: BinaryIO) -> io.TextIOWrapper:
    head = stream.read(4096)
    codec, bom = detect_encoding(head)
    rest = io.BufferedReader(_Prefixed(head[bom:], stream))  # type: ignore[arg-type]
    return io.TextIOWrapper(rest, encoding=codec, errors="replace", newline=None)


class _Prefixed(io.RawIOBase):
    """A raw stream that first returns `prefix`, then the rest of `stream`."""

    def __init__(self, prefix: bytes, stream: BinaryIO) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        view = memoryview(buffer)
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(view))
        n = len(data)
        view[:n] = data
        return n
