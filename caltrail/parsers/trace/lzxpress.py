"""LZXpress "plain LZ77" decompression, for the compressed buffers of .etl files.

Written from the public specification [MS-XCA] "Xpress Compression Algorithm", sections
2.3 (the format) and 2.4 (the decompression algorithm): 32-bit flag words, one bit per
item from the highest; a 0 bit is one literal byte, a 1 bit a 16-bit match (offset - 1 in
the high 13 bits, length - 3 in the low 3), with longer lengths continued in a shared
half-byte, a byte, 16 bits and 32 bits.

Why not a library: the pure-Python decoder on PyPI (dissect.util) takes a match length of
up to 2^32 from the data and allocates that much, and copies a match whose offset points
before the start of the output without a word. Here the output never exceeds the size the
buffer header announces (a damaged buffer cannot make it allocate more), a bad offset is an
error, and runs of literal bytes are copied as slices (several times faster in Python).
"""

from __future__ import annotations

import struct

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")


class DecompressionError(ValueError):
    """Compressed data that does not decode (the message says where and why)."""


def decompress(data: bytes, limit: int) -> bytes:
    """The decompressed bytes of `data`, at most `limit` of them (more is an error)."""
    out = bytearray()
    size = len(data)
    pos = 0
    flags = 0
    flag_count = 0
    half_byte_at = -1
    try:
        while True:
            if flag_count == 0:
                if pos + 4 > size:
                    break  # the stream ends on a flag boundary
                flags = _U32.unpack_from(data, pos)[0]
                pos += 4
                flag_count = 32
            left = flags & ((1 << flag_count) - 1)
            # a run of 0 bits: that many literal bytes, copied at once
            run = flag_count - left.bit_length()
            if run:
                take = min(run, size - pos)
                if len(out) + take > limit:
                    raise DecompressionError(f"input offset {pos}: output beyond {limit} bytes")
                out += data[pos : pos + take]
                pos += take
                flag_count -= run
                if take < run:
                    break  # input exhausted inside a literal run: the end
                continue
            flag_count -= 1
            if pos == size:
                break
            match = _U16.unpack_from(data, pos)[0]
            pos += 2
            length = match & 7
            offset = (match >> 3) + 1
            if length == 7:
                if half_byte_at < 0:
                    length = data[pos] & 0x0F
                    half_byte_at = pos
                    pos += 1
                else:
                    length = data[half_byte_at] >> 4
                    half_byte_at = -1
                if length == 15:
                    length = data[pos]
                    pos += 1
                    if length == 255:
                        length = _U16.unpack_from(data, pos)[0]
                        pos += 2
                        if length == 0:
                            length = _U32.unpack_from(data, pos)[0]
                            pos += 4
                        if length < 15 + 7:
                            raise DecompressionError(
                                f"input offset {pos}: match length {length} below 22"
                            )
                        length -= 15 + 7
                    length += 15
                length += 7
            length += 3
            if offset > len(out):
                raise DecompressionError(
                    f"input offset {pos}: match offset {offset} before the start of the output "
                    f"({len(out)} bytes so far)"
                )
            if len(out) + length > limit:
                raise DecompressionError(f"input offset {pos}: output beyond {limit} bytes")
            start = len(out) - offset
            if offset >= length:
                out += out[start : start + length]
            else:  # the match overlaps what it writes: a repeated pattern
                pattern = bytes(out[start:])
                out += (pattern * (length // offset + 1))[:length]
    except (IndexError, struct.error) as exc:
        raise DecompressionError(f"input offset {pos}: compressed data cut short") from exc
    return bytes(out)


__all__ = ["DecompressionError", "decompress"]
