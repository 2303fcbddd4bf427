"""EVTX on-disk layouts, declared as data.

References: libyal libevtx "Windows XML Event Log (EVTX) format" (documentation/), and
MS-EVEN6. Offsets below are from the start of the structure.

File header (4096-byte block, 128 bytes used):
    0   8  signature b"ElfFile\\0"
    8   8  first chunk number
    16  8  last chunk number
    24  8  next record identifier
    32  4  header size (128)
    36  2  minor version (1), 38 2 major version (3)
    40  2  header block size (4096)
    42  2  number of chunks
    44 76  unknown (empty)
    120 4  file flags (0x1 dirty, 0x2 full)
    124 4  CRC32 of the first 120 bytes

Chunk header (64 KiB chunk, 512-byte header):
    0   8  signature b"ElfChnk\\0"
    8   8  first event record number, 16 8 last event record number
    24  8  first event record identifier, 32 8 last event record identifier
    40  4  header size (128)
    44  4  last event record data offset
    48  4  free space offset (end of the records)
    52  4  CRC32 of the event records data (512 .. free space offset)
    56 64  unknown, 120 4 unknown flags
    124 4  CRC32 of bytes 0-120 and 128-512
    128 256 common string offset table (64 x u32), 384 128 template pointers (32 x u32)

Event record:
    0   4  signature b"\\x2a\\x2a\\x00\\x00"
    4   4  size (of the whole record, including this header and the trailing copy)
    8   8  event record identifier
    16  8  written time (FILETIME)
    24  .. BinXML
    size-4 4 copy of size
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

FILE_MAGIC = b"ElfFile\x00"
CHUNK_MAGIC = b"ElfChnk\x00"
RECORD_MAGIC = b"\x2a\x2a\x00\x00"

FILE_HEADER_BLOCK = 4096
CHUNK_SIZE = 65536
CHUNK_HEADER_SIZE = 512
RECORD_HEADER_SIZE = 24
MIN_RECORD_SIZE = RECORD_HEADER_SIZE + 4

FILE_HEADER = struct.Struct("<8sQQQIHHHH76sII")
CHUNK_HEADER = struct.Struct("<8sQQQQIIII64sII")
RECORD_HEADER = struct.Struct("<4sIQQ")
U32 = struct.Struct("<I")


def file_header_crc(block: bytes) -> int:
    """CRC32 the file header stores: over its first 120 bytes."""
    return zlib.crc32(block[:120]) & 0xFFFFFFFF


def chunk_header_crc(chunk: bytes) -> int:
    """CRC32 the chunk header stores: over bytes 0-120 and 128-512."""
    return zlib.crc32(chunk[128:512], zlib.crc32(chunk[:120])) & 0xFFFFFFFF


def chunk_data_crc(chunk: bytes, free_space_offset: int) -> int:
    """CRC32 of the event records data of a chunk."""
    return zlib.crc32(chunk[CHUNK_HEADER_SIZE:free_space_offset]) & 0xFFFFFFFF


def synthetic_file_header(chunk_count: int = 1, next_record_id: int = 1) -> bytes:
    """A clean file header block, used to hand single chunks to a backend parser."""
    body = FILE_HEADER.pack(
        FILE_MAGIC,
        0,
        max(chunk_count - 1, 0),
        next_record_id,
        128,
        1,
        3,
        4096,
        chunk_count,
        b"\x00" * 76,
        0,
        0,
    )
    crc = zlib.crc32(body[:120]) & 0xFFFFFFFF
    return body[:124] + U32.pack(crc) + b"\x00" * (FILE_HEADER_BLOCK - 128)


# ---------------------------------------------------------------------------
# Framing: where the reader found a chunk and its records (reader.walk_chunks)
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class RecordSlice:
    """Where a framed record lies: its offset inside the chunk and its header values."""

    offset: int  # inside the chunk
    size: int
    record_id: int
    filetime: int


@dataclass(slots=True)
class ChunkSlice:
    """A chunk that can be read: its bytes (64 KiB, magic repaired) and framed records.

    `skipped` marks a block whose chunk header was unusable (no records framed): its bytes
    are still searched for deleted records (recovery.py)."""

    index: int
    file_offset: int
    data: bytes
    records: list[RecordSlice] = field(default_factory=list)
    skipped: bool = False
