"""Deleted and overwritten EVTX records in chunk slack: finding them and checking them.

Windows fills a chunk from offset 512 on and keeps its free space offset at the end of the
last record. The bytes past it are what the chunk held before: in a log that wrapped, the
older incarnation of the chunk; in a log that was cleared, the records of before. A record
there is whole (header, BinXML body, size copy) as long as nothing newer was written over
it. This module finds such records by their signature and checks them before anything
renders them; recovery.py renders what passes (with the reader's backend, in a synthetic
chunk built here) and decides what is emitted. Pure: bytes in, offsets and verdicts out.

A candidate passes these checks, cheapest first. A failure is counted under its name
(recovery.py reports the counts in the file's notes); it is never an error of the file.

- "size": the size at offset 4 and its copy in the record's last four bytes agree, and the
  record lies in the chunk's free bytes (a record never spans chunks, and never overlaps a
  record the chunk still counts).
- "id": the record id is between 1 and MAX_RECORD_ID.
- "time": the written FILETIME lies between FIRST_FILETIME and LAST_FILETIME.
- "structure": the body is a BinXML fragment (header version 1.1, then a template instance
  or an element) whose template instances, substitution declarations and values (nested
  documents included) fit inside the record.
- "template gone" (recovery.py): a template the record names is neither where it points
  (a definition there that carries its id) nor anywhere else in the file.
- "names gone" (recovery.py): a name its templates (or its body) refer to is no longer a
  name whose stored hash matches its characters (`names_intact`).

References: libyal libevtx "Windows XML Event Log (EVTX) format" (event record, template
instance and template definition layouts; libevtx reads such "recovered" records too);
[MS-EVEN6] 2.2.12 BinXml; EVTXtract (Willi Ballenthin) for the idea of rendering an old
record with a copy of its template found elsewhere in the file (`transplant`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from caltrail.parsers.evtx import structs as S
from caltrail.parsers.evtx.structs import RecordSlice

# Sanity bounds of a carved header. Windows numbers records from 1 and the counter would
# need 2**48 events to pass the bound; the FILETIME bounds take in a machine whose clock was
# reset (1980 is the earliest date a PC's firmware gives) and reject the random bytes of
# overwritten slack (a random 64-bit value falls inside them about once in 270 tries).
MAX_RECORD_ID = 1 << 48
_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)
FIRST_FILETIME = int((dt.datetime(1980, 1, 1, tzinfo=dt.UTC) - _EPOCH).total_seconds()) * 10**7
LAST_FILETIME = int((dt.datetime(2200, 1, 1, tzinfo=dt.UTC) - _EPOCH).total_seconds()) * 10**7
MAX_DEPTH = 8  # nested BinXML documents walked (a record has two: System, then its payload)
MAX_NAME = 512  # UTF-16 units of an element or attribute name (real ones have a few dozen)

# BinXML (libyal "Binary XML"): a template instance token is 0x0c, one unknown byte, the
# template id (the first 4 bytes of the template GUID), and the chunk offset of the
# template definition; a definition is the offset of the next one, the GUID, the size of
# its BinXML, then that BinXML. It is "resident" (defined here, at first use in the chunk)
# when it follows the instance token directly.
INSTANCE = struct.Struct("<BBII")
TEMPLATE_HEAD = struct.Struct("<I16sI")
_FRAGMENT_HEADER = 0x0F
_FRAGMENT_START = b"\x0f\x01\x01"  # fragment header token, major and minor version 1
_ROOT_TOKENS = (0x0C, 0x01)  # a record's root: a template instance, or an element
_TEMPLATE_INSTANCE = 0x0C
_BXML = 0x21  # value type: a nested BinXML document
_DECLARATION = struct.Struct("<HBx")  # value size, value type, one unused byte
_U32 = S.U32
_U16 = struct.Struct("<H")
_UNITS = struct.Struct("<H")
_NAME = struct.Struct("<IHH")  # next name offset, hash, number of UTF-16 code units
_IDS = struct.Struct("<QQ")  # record id and FILETIME, as in a record header


@dataclass(frozen=True, slots=True)
class TemplateRef:
    """A template instance in a record: where its token is, what it names, and which
    BinXML value of the record holds it (None: it is the record's root)."""

    at: int  # chunk offset of the instance token
    template_id: int
    offset: int  # chunk offset of the template definition it names
    value: Value | None = None

    @property
    def resident(self) -> bool:
        return self.offset == self.at + INSTANCE.size


@dataclass(frozen=True, slots=True)
class Value:
    """A substitution value of type BinXML: where its declaration (size, type) is, and its
    bytes (chunk offsets). Declared NULL, it is left out of the rendering (`drop`)."""

    declaration: int
    start: int
    end: int


@dataclass(slots=True)
class Candidate:
    """A carved record that passed the checks of this module.

    `refs`: its template instances, root first; `missing`: those whose definition is not
    where they point (rebuilt from a copy elsewhere in the file, or left out); `plain`:
    its nested documents that are no template instance (their names are checked where it
    lies, and they are left out of a record moved elsewhere)."""

    record: RecordSlice
    refs: list[TemplateRef]
    missing: list[TemplateRef]
    plain: list[Value]  # nested BinXML values that are plain elements (names by offset)


def scan(
    data: bytes, framed: Sequence[RecordSlice], end: int = S.CHUNK_SIZE
) -> tuple[list[Candidate], Counter[str]]:
    """The candidates of one chunk's bytes (`data[:end]` are real; a cut chunk is padded),
    given the records the reader framed in it; and the count of signatures found, under
    "found", with the rejected ones under their reason."""
    counts: Counter[str] = Counter()
    found: list[Candidate] = []
    for start, stop in free_ranges(data, framed, end):
        pos = data.find(S.RECORD_MAGIC, start, stop)
        while pos != -1:
            counts["found"] += 1
            verdict = check(data, pos, stop)
            if isinstance(verdict, Candidate):
                found.append(verdict)
                pos = data.find(S.RECORD_MAGIC, pos + verdict.record.size, stop)
                continue
            counts[verdict] += 1
            pos = data.find(S.RECORD_MAGIC, pos + 1, stop)
    return found, counts


def free_ranges(
    data: bytes, framed: Sequence[RecordSlice], end: int = S.CHUNK_SIZE
) -> list[tuple[int, int]]:
    """The parts of a chunk's record area that no intact framed record occupies: its slack
    past the last record, and what is between records (bytes the reader skipped, a record
    torn by an older block written over its end). A framed record whose size copy does not
    match is torn, and its bytes are searched too."""
    size_copy = _U32.unpack_from
    taken = []
    for r in framed:
        stop = r.offset + r.size
        if stop <= end and size_copy(data, stop - 4)[0] == r.size:
            taken.append((r.offset, stop))
    taken.sort()
    ranges = []
    start = S.CHUNK_HEADER_SIZE
    for begin, stop in taken:
        if begin > start:
            ranges.append((start, begin))
        start = max(start, stop)
    if start < end:
        ranges.append((start, end))
    return ranges


def check(data: bytes, pos: int, stop: int) -> Candidate | str:
    """The candidate whose signature is at `pos`, or why it is not one (`stop`: the end of
    the free bytes it must lie in)."""
    if pos + S.RECORD_HEADER_SIZE > stop or S.CHUNK_HEADER_SIZE < pos < _FIRST_AFTER:
        return "size"  # (no record fits before one starting there: it cannot be one)
    _, size, record_id, filetime = S.RECORD_HEADER.unpack_from(data, pos)
    if size < S.MIN_RECORD_SIZE or pos + size > stop:
        return "size"
    if _U32.unpack_from(data, pos + size - 4)[0] != size:
        return "size"
    if not 1 <= record_id < MAX_RECORD_ID:
        return "id"
    if not FIRST_FILETIME <= filetime < LAST_FILETIME:
        return "time"
    body = pos + S.RECORD_HEADER_SIZE
    if data[body : body + 3] != _FRAGMENT_START or data[body + 4] & 0x0F not in _ROOT_TOKENS:
        return "structure"  # a record is a fragment header (version 1.1), then its root
    plain: list[Value] = []
    refs = template_refs(data, body, pos + size - 4, plain=plain)
    if refs is None:
        return "structure"
    missing = [ref for ref in refs if defined_at(data, ref.offset) != ref.template_id]
    return Candidate(RecordSlice(pos, size, record_id, filetime), refs, missing, plain)


def template_refs(
    data: bytes,
    root: int,
    end: int,
    value: Value | None = None,
    depth: int = 0,
    plain: list[Value] | None = None,
) -> list[TemplateRef] | None:
    """The template instances of the BinXML document at `root` (ending by `end`), with
    those of the BinXML documents among its values; None when the document is not laid
    out as a record's (a template instance, its declarations and values inside `end`).
    A document that is no template instance names no template: [] (the renderer judges);
    a nested one is added to `plain`. `value`: the value the document is, when nested."""
    pos = root
    if pos < end and data[pos] & 0x0F == _FRAGMENT_HEADER:
        pos += 4
    if pos + INSTANCE.size > end:
        return None
    token, _, template_id, offset = INSTANCE.unpack_from(data, pos)
    if token & 0x0F != _TEMPLATE_INSTANCE:
        if value is not None and plain is not None:
            plain.append(value)
        return []
    ref = TemplateRef(pos, template_id, offset, value)
    refs = [ref]
    pos += INSTANCE.size
    if offset > ref.at:  # defined in this record: its definition comes next
        if not ref.resident or pos + TEMPLATE_HEAD.size > end:
            return None
        pos += TEMPLATE_HEAD.size + _U32.unpack_from(data, pos + 20)[0]
    if pos + 4 > end:
        return None
    count = _U32.unpack_from(data, pos)[0]
    pos += 4
    if pos + _DECLARATION.size * count > end:
        return None
    values = pos + _DECLARATION.size * count
    for i in range(count):
        declaration = pos + _DECLARATION.size * i
        size, kind = _DECLARATION.unpack_from(data, declaration)
        if values + size > end:
            return None
        if kind == _BXML and size > 0:
            if depth >= MAX_DEPTH:
                return None
            held = Value(declaration, values, values + size)
            nested = template_refs(data, values, values + size, held, depth + 1, plain)
            if nested is None:
                return None
            refs.extend(nested)
        values += size
    return refs


def names_intact(data: bytes, pos: int, end: int) -> bool:
    """Whether every name the BinXML tokens from `pos` (to `end`, or to their end-of-stream
    token) refer to is a name structure whose stored hash is that of its characters
    ([MS-EVEN6] 2.2.12: h = h * 65599 + code unit, low 16 bits kept). A name overwritten
    since the record was written fails it, where a renderer would print what is there now.
    Walks elements, attributes, text, CDATA, references and substitutions; stops (True)
    at what it does not walk: a template instance (checked on its own), a value that is
    not text."""
    end = min(end, len(data))
    while pos < end:
        token = data[pos]
        kind = token & 0x0F
        if kind == 0x00:  # end of stream
            return True
        if kind == _FRAGMENT_HEADER:
            pos += 4
        elif kind == 0x01:  # open start element: dependency id, size, name offset
            if pos + 11 > end:
                return False
            step = _name_at(data, _U32.unpack_from(data, pos + 7)[0], pos + 11)
            if step is None:
                return False
            pos += 11 + step + (4 if token & 0x40 else 0)  # then the attribute list size
        elif kind in (0x02, 0x03, 0x04, 0x08):  # close tags; character reference
            pos += 3 if kind == 0x08 else 1
        elif kind == 0x05:  # value: type, then (text) a character count and characters
            if pos + 4 > end:
                return False
            if data[pos + 1] != 0x01:
                return True
            pos += 4 + 2 * _U16.unpack_from(data, pos + 2)[0]
        elif kind in (0x06, 0x09, 0x0A):  # attribute, entity reference, PI target: a name
            if pos + 5 > end:
                return False
            step = _name_at(data, _U32.unpack_from(data, pos + 1)[0], pos + 5)
            if step is None:
                return False
            pos += 5 + step
        elif kind in (0x07, 0x0B):  # CDATA, PI data: a character count and characters
            if pos + 3 > end:
                return False
            pos += 3 + 2 * _U16.unpack_from(data, pos + 1)[0]
        elif kind in (0x0D, 0x0E):  # substitution: index, value type
            pos += 4
        else:  # a template instance, or no token at all
            return kind == _TEMPLATE_INSTANCE
    return True


def _name_at(data: bytes, offset: int, here: int) -> int | None:
    """The bytes a name reference at `here` is followed by (the name itself, when it is
    defined there; 0 when it is defined elsewhere), or None when there is no sound name
    at `offset` (no room, no characters, or a hash that does not match them)."""
    if offset < S.CHUNK_HEADER_SIZE or offset + 8 > len(data):
        return None
    _, stored, count = _NAME.unpack_from(data, offset)
    stop = offset + 8 + 2 * count
    if not 0 < count <= MAX_NAME or stop + 2 > len(data):
        return None
    value = 0
    for (unit,) in _UNITS.iter_unpack(data[offset + 8 : stop]):
        value = (value * 65599 + unit) & 0xFFFFFFFF
    if value & 0xFFFF != stored:
        return None
    if offset == here:
        return int(stop + 2 - offset)  # defined here: next offset, hash, count, chars, NUL
    return 0 if offset < here else None  # a name is defined before it is referred to


def defined_at(data: bytes, offset: int) -> int | None:
    """The id of the template definition at chunk `offset` (its GUID's first four bytes),
    or None when no definition fits there."""
    if offset < S.CHUNK_HEADER_SIZE or offset + TEMPLATE_HEAD.size > len(data):
        return None
    if offset + TEMPLATE_HEAD.size + _U32.unpack_from(data, offset + 20)[0] > len(data):
        return None
    return int(_U32.unpack_from(data, offset + 4)[0])


def chunk_templates(data: bytes) -> dict[int, tuple[int, int]]:
    """The templates a chunk's template table lists: id -> (offset, end of definition).
    Chains are followed until they end, loop or leave the chunk."""
    found: dict[int, tuple[int, int]] = {}
    for slot in range(32):
        offset = _U32.unpack_from(data, 0x180 + 4 * slot)[0]
        seen: set[int] = set()
        while offset and offset not in seen:
            seen.add(offset)
            template_id = defined_at(data, offset)
            if template_id is None:
                break
            end = offset + TEMPLATE_HEAD.size + _U32.unpack_from(data, offset + 20)[0]
            found.setdefault(template_id, (offset, end))
            offset = _U32.unpack_from(data, offset)[0]
    return found


def synthetic_chunk(
    data: bytes, records: Sequence[RecordSlice], drop: Iterable[Value] = ()
) -> bytes:
    """`data` (64 KiB) changed so that a reader walking records from offset 512, as
    pyevtx-rs does, meets `records` (in offset order, none overlapping) one after the
    other after the header at 512, and stops after the last: the header at 512, and each
    of `records` but the last, are given the size that leads to the next; the chunk
    header's last record id and free space offset are the last one's. (A record's size
    bounds its BinXML, which ends at its own end-of-stream token: a larger one changes
    nothing.) No byte a record may name (template, name) changes: only the chunk header,
    the header at 512 and the size fields of `records`; and the values in `drop` are
    declared NULL (left out of the rendering)."""
    out = bytearray(data[: S.CHUNK_SIZE].ljust(S.CHUNK_SIZE, b"\x00"))
    for value in drop:
        out[value.declaration + 2] = 0x00  # the value's type: NULL (its size still skips it)
    out[:8] = S.CHUNK_MAGIC
    first, last = records[0], records[-1]
    if first.offset > S.CHUNK_HEADER_SIZE:
        # record id 0: never the chunk's "last record id" at which a walk stops; its body
        # an end-of-stream token at once (a fragment header was there: nothing names it)
        S.RECORD_HEADER.pack_into(
            out, S.CHUNK_HEADER_SIZE, S.RECORD_MAGIC, first.offset - S.CHUNK_HEADER_SIZE, 0, 0
        )
        out[_FIRST_BODY] = 0x00
    for here, after in itertools.pairwise(records):
        _U32.pack_into(out, here.offset + 4, after.offset - here.offset)
    end = last.offset + last.size
    struct.pack_into("<QQQQ", out, 8, 0, 0, 0, last.record_id)  # numbers, then ids
    struct.pack_into("<II", out, 44, last.offset, end)  # last record, free space offset
    # (the checksums are left as they were: no renderer checks them)
    return bytes(out)


_FIRST_BODY = S.CHUNK_HEADER_SIZE + S.RECORD_HEADER_SIZE  # where the record at 512 starts
_FIRST_AFTER = S.CHUNK_HEADER_SIZE + S.MIN_RECORD_SIZE  # the first place a second record fits


def transplant_place(donor: bytes, placed: dict[TemplateRef, int], size: int) -> int | None:
    """Where `transplant` puts a record of `size` bytes in `donor`: after the last of the
    template definitions it uses (the names they use come before their ends), 8-byte
    aligned; None when it does not fit there."""
    if not placed:
        return None
    last = 0
    for offset in placed.values():
        last = max(last, offset + TEMPLATE_HEAD.size + _U32.unpack_from(donor, offset + 20)[0])
    place = max((last + 7) & ~7, S.CHUNK_HEADER_SIZE + S.RECORD_HEADER_SIZE + 8)
    return place if place + size <= S.CHUNK_SIZE else None


@dataclass(slots=True)
class Move:
    """A candidate to render in another chunk: where each template it keeps is there
    (`positions`), and its values left out (`drop`)."""

    candidate: Candidate
    positions: dict[TemplateRef, int]
    drop: list[Value]


def transplant(
    data: bytes, moves: Sequence[Move], donor: bytes, tables: Callable[[int], bytes]
) -> tuple[bytes, list[RecordSlice]]:
    """Candidates of `data` copied into a synthetic chunk made of `donor`, a chunk that
    holds copies of their templates, their template instances pointed at those and their
    values in `drop` left out: the records rendered with the copies of their templates.
    They go one after the other from the last `transplant_place` of them, over the donor's
    later records: the first ones of `moves`, as many as fit (the first always does: the
    caller checked its `transplant_place`);
    `tables(start)`: the donor's name and template tables without what lies from `start`
    on (`cut_tables`). Returns the chunk and where each record placed is."""
    start = length = 0  # where the records go, and the bytes they take (8-byte aligned)
    taken: list[Move] = []
    for move in moves:
        size = move.candidate.record.size
        own = transplant_place(donor, move.positions, size)
        if own is None or (taken and max(start, own) + length + size > S.CHUNK_SIZE):
            break
        start, length = max(start, own), length + ((size + 7) & ~7)
        taken.append(move)
    out = bytearray(donor[: S.CHUNK_SIZE].ljust(S.CHUNK_SIZE, b"\x00"))
    placed: list[RecordSlice] = []
    drop: list[Value] = []
    place = start
    for move in taken:
        record = move.candidate.record
        shift = place - record.offset
        out[place : place + record.size] = data[record.offset : record.offset + record.size]
        for ref, offset in move.positions.items():
            _U32.pack_into(out, ref.at + shift + 6, offset)
        drop.extend(Value(v.declaration + shift, v.start + shift, v.end + shift) for v in move.drop)
        placed.append(RecordSlice(place, record.size, record.record_id, record.filetime))
        place = (place + record.size + 7) & ~7
    out[_TABLES : _TABLES + 4 * 96] = tables(start)
    return synthetic_chunk(bytes(out), placed, drop), placed


_TABLES = 0x80  # the name table (64 offsets), then the template table (32)


def cut_tables(chunk: bytes, limit: int) -> bytes:
    """A chunk's name and template tables (offsets 0x80-0x200) without the entries at or
    past `limit` (written over by `transplant`): a chain starts with its newest entry and
    links to older, lower ones, so its head moves to its first entry below `limit`.
    (pyevtx-rs reads every name the table lists when it opens a chunk, and fails the whole
    chunk on one it cannot read.)"""
    heads = list(struct.unpack_from("<96I", chunk, _TABLES))
    for slot, head in enumerate(heads):
        offset = head
        seen: set[int] = set()
        while offset >= limit:
            if offset in seen or offset + 4 > len(chunk):
                offset = 0
                break
            seen.add(offset)
            offset = _U32.unpack_from(chunk, offset)[0]
        heads[slot] = offset
    return struct.pack("<96I", *heads)


def find_record(data: bytes, record_id: int, filetime: int) -> RecordSlice | None:
    """The record of a chunk whose header carries this id and FILETIME (the allocated copy
    a recovered record is compared with), or None."""
    needle = _IDS.pack(record_id, filetime)
    pos = data.find(needle, S.CHUNK_HEADER_SIZE + 8)
    while pos != -1:
        at = pos - 8
        if data[at : at + 4] == S.RECORD_MAGIC:
            size = _U32.unpack_from(data, at + 4)[0]
            if size >= S.MIN_RECORD_SIZE and at + size <= len(data):
                return RecordSlice(at, size, record_id, filetime)
        pos = data.find(needle, pos + 1)
    return None

