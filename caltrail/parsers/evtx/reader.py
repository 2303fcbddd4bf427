"""EVTX (Windows XML Event Log) files: every valid record, from any channel.

References: libyal libevtx "Windows XML Event Log (EVTX) format"; MS-EVEN6; python-evtx
issue #85 (records() stops at the header's chunk count, losing the chunks of a "dirty" file).

How a file is read:
1. We walk the file ourselves (`walk_chunks`): the file header is read but not trusted;
   every 64 KiB block after it is a candidate chunk. A chunk's magic, header CRC and data
   CRC are checked; zero-filled (never used) chunks are skipped silently; a damaged header
   whose record area still looks sane is read with a warning; anything else is reported.
   Inside a chunk, record headers are walked by their size fields and checked (magic,
   size, trailing size copy); after a broken record we resynchronise on the next sane
   record header, so one bad record never ends its chunk.
2. A backend renders the framed records to XML: "rust" (the `evtx` package, pyevtx-rs,
   given one chunk at a time behind a synthetic clean file header) or "python"
   (python-evtx's BinXML renderer on the same chunk bytes).
3. One converter (`record_from_xml`) turns the XML into an `EventRecord`, with values
   normalised so that both backends give equal records (tests hold them equal).

The record header FILETIME is kept raw; `time_created` comes from it, unless the
System/TimeCreated value differs by more than a second (forwarded events), in which case
TimeCreated wins (at millisecond precision, where both backends agree).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import importlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, cast

from lxml import etree

from caltrail.parsers.base import (
    BUDGET_EXCEEDED,
    Budget,
    EventRecord,
    FileNote,
    Item,
    ParseIssue,
    ParseOptions,
)
from caltrail.parsers.errors import InvalidSignatureError, TruncatedError
from caltrail.parsers.evtx import structs as S
from caltrail.parsers.evtx.cpubound import CpuBound, TooSlow
from caltrail.parsers.evtx.recovery import NOTE as RECOVERY_NOTE
from caltrail.parsers.evtx.recovery import Recovery
from caltrail.parsers.evtx.structs import ChunkSlice, RecordSlice

# python-evtx logs "Unexpected token encountered" (a damaged template table) through the
# root logger's last-resort handler, i.e. on the user's terminal in the middle of a progress
# bar. The damage is reported as the records' own issues; the log line adds nothing.
logging.getLogger("Evtx.Evtx").setLevel(logging.ERROR)

NAME = "evtx"
VERSION = "1"
BACKENDS = ("rust", "python", "rust-xml")
DEFAULT_BACKEND = "rust"

SIGNATURE = (S.FILE_MAGIC, 0)


def sniff(head: bytes, name: str) -> bool:
    """An EVTX file starts with the file magic (or, header damaged, a chunk at 4096)."""
    if head.startswith(S.FILE_MAGIC):
        return True
    return head[S.FILE_HEADER_BLOCK : S.FILE_HEADER_BLOCK + 8] == S.CHUNK_MAGIC


# ---------------------------------------------------------------------------
# 1. Framing: chunks and record headers
# ---------------------------------------------------------------------------


CHUNKS_FORM = "{readable} readable of {total}"


def chunk_count(size: int) -> int:
    """How many 64 KiB chunk slots a file of `size` bytes has after its header block."""
    return max(0, -(-(size - S.FILE_HEADER_BLOCK) // S.CHUNK_SIZE))


def walk_chunks(
    stream: BinaryIO,
    budget: Budget | None = None,
    start: int = 0,
    stop: int | None = None,
) -> Iterator[ChunkSlice | Item]:
    """Yield readable chunks with their framed records, plus issues and notes.

    Raises InvalidSignatureError / TruncatedError only when no chunk can be found at all.
    `start`/`stop` restrict the walk to chunks start..stop-1 (a part of a file read by one
    worker; chunks are independent): the file header is then checked by the part that
    starts at chunk 0 only.
    """
    if start > 0:
        yield from _walk_from(stream, budget, start, stop, None)
        return
    header = stream.read(S.FILE_HEADER_BLOCK)
    if not header:
        raise TruncatedError("offset 0x00000000: empty file, expected an EVTX file header")
    first = stream.read(S.CHUNK_SIZE)
    if not header.startswith(S.FILE_MAGIC):
        if not first.startswith(S.CHUNK_MAGIC):
            raise InvalidSignatureError(
                f"offset 0x00000000: bad file magic, expected {S.FILE_MAGIC!r}, "
                f"found {header[:8]!r}"
            )
        yield ParseIssue(
            "bad_file_magic",
            f"offset 0x00000000: bad file magic, expected {S.FILE_MAGIC!r}, found "
            f"{header[:8]!r}; chunks read anyway",
            quarantined=False,
            offset=0,
        )
    elif len(header) < S.FILE_HEADER.size:
        raise TruncatedError(
            f"offset 0x00000000: file ends after {len(header)} bytes, inside the file header"
        )
    else:
        yield from _check_file_header(header)
    if not first:
        yield FileNote.counted("chunks", {"readable": 0, "total": 0}, CHUNKS_FORM)
        return
    yield from _walk_from(stream, budget, 0, stop, first)


def _walk_from(
    stream: BinaryIO, budget: Budget | None, index: int, stop: int | None, block: bytes | None
) -> Iterator[ChunkSlice | Item]:
    """The chunks from `index` on (`block`: the first one's bytes if already read)."""
    first = index
    if block is None:
        stream.seek(S.FILE_HEADER_BLOCK + index * S.CHUNK_SIZE)
        block = stream.read(S.CHUNK_SIZE)
    readable = 0
    while block and (stop is None or index < stop):
        if budget is not None and budget.exceeded():
            yield ParseIssue(
                BUDGET_EXCEEDED,
                f"chunk {index}: stopped after {budget.max_seconds:.0f} s (work bound per file); "
                "the rest of the file was not read",
                chunk=index,
                offset=S.FILE_HEADER_BLOCK + index * S.CHUNK_SIZE,
            )
            return
        file_offset = S.FILE_HEADER_BLOCK + index * S.CHUNK_SIZE
        for item in _frame_chunk(index, file_offset, block):
            if isinstance(item, ChunkSlice) and not item.skipped:
                readable += 1
            yield item
        index += 1
        block = stream.read(S.CHUNK_SIZE)
    yield FileNote.counted("chunks", {"readable": readable, "total": index - first}, CHUNKS_FORM)


def _check_file_header(header: bytes) -> Iterator[Item]:
    fields = S.FILE_HEADER.unpack_from(header)
    stored_crc = fields[-1]
    if S.file_header_crc(header) != stored_crc:
        yield ParseIssue(
            "file_header_checksum",
            f"offset 0x00000000: file header CRC32 mismatch, expected 0x{stored_crc:08x}, "
            f"found 0x{S.file_header_crc(header):08x}; header not trusted, chunks walked anyway",
            quarantined=False,
            offset=0,
        )
    flags = fields[-2]
    if flags & 0x1:
        yield FileNote(
            "dirty", "yes (file was not closed cleanly; chunks past the header count read)"
        )


def _frame_chunk(index: int, file_offset: int, block: bytes) -> Iterator[ChunkSlice | Item]:
    where = f"chunk {index} (offset 0x{file_offset:08x})"
    if not block.strip(b"\x00"):
        return  # a chunk never written: normal at the end of a file
    truncated = len(block) < S.CHUNK_SIZE
    if len(block) < S.CHUNK_HEADER_SIZE + S.MIN_RECORD_SIZE:
        yield ParseIssue(
            "truncated_chunk",
            f"{where}: file ends {len(block)} bytes into the chunk, expected {S.CHUNK_SIZE}; "
            "nothing readable in it",
            chunk=index,
            offset=file_offset,
            excerpt=block[:32].hex(),
        )
        return
    data = block.ljust(S.CHUNK_SIZE, b"\x00") if truncated else block
    fields = S.CHUNK_HEADER.unpack_from(data)
    magic, free_space = fields[0], fields[7]
    if magic != S.CHUNK_MAGIC:
        if data[S.CHUNK_HEADER_SIZE : S.CHUNK_HEADER_SIZE + 4] != S.RECORD_MAGIC:
            yield ParseIssue(
                "bad_chunk_magic",
                f"{where}: bad chunk magic, expected {S.CHUNK_MAGIC!r}, found {magic!r}, "
                "and no record at offset 512; chunk skipped",
                chunk=index,
                offset=file_offset,
                excerpt=data[:32].hex(),
            )
            yield ChunkSlice(index, file_offset, data, skipped=True)  # searched by recovery
            return
        yield ParseIssue(
            "bad_chunk_magic",
            f"{where}: bad chunk magic, expected {S.CHUNK_MAGIC!r}, found {magic!r}; "
            "its records look sane and were read",
            quarantined=False,
            chunk=index,
            offset=file_offset,
        )
        data = S.CHUNK_MAGIC + data[8:]
    elif S.chunk_header_crc(data) != fields[-1]:
        yield ParseIssue(
            "chunk_header_checksum",
            f"{where}: chunk header CRC32 mismatch, expected 0x{fields[-1]:08x}, found "
            f"0x{S.chunk_header_crc(data):08x}; records read anyway",
            quarantined=False,
            chunk=index,
            offset=file_offset,
        )
    free = free_space if S.CHUNK_HEADER_SIZE < free_space <= S.CHUNK_SIZE else S.CHUNK_SIZE
    # The free space offset is a hint: a dirty chunk has complete records past it. Records
    # are framed up to the chunk's end; zero slack ends the walk.
    end = S.CHUNK_SIZE
    if truncated:
        end = len(block)
        free = min(free, end)
        yield ParseIssue(
            "truncated_chunk",
            f"{where}: file ends {len(block)} bytes into the chunk, expected {S.CHUNK_SIZE}; "
            "records wholly inside it were read, the rest of the chunk is lost",
            quarantined=False,  # the cut record, if any, is reported on its own
            chunk=index,
            offset=file_offset + len(block),
        )
    elif S.chunk_data_crc(data, free) != fields[8]:
        yield ParseIssue(
            "chunk_data_checksum",
            f"{where}: event records CRC32 mismatch, expected 0x{fields[8]:08x}, found "
            f"0x{S.chunk_data_crc(data, free):08x}; each record checked on its own",
            quarantined=False,
            chunk=index,
            offset=file_offset,
        )
    chunk = ChunkSlice(index, file_offset, data)
    for item in _frame_records(chunk, free, end):
        if isinstance(item, RecordSlice):
            chunk.records.append(item)
        else:
            yield item
    yield chunk


def _record_at(data: bytes, offset: int, end: int, strict: bool) -> RecordSlice | None:
    """The record header at `offset` if it is plausible. `strict` also requires the size
    copy at the record's end (used when hunting for a record after damage)."""
    if offset + S.RECORD_HEADER_SIZE > end:
        return None
    magic, size, record_id, filetime = S.RECORD_HEADER.unpack_from(data, offset)
    if magic != S.RECORD_MAGIC or size < S.MIN_RECORD_SIZE or offset + size > end:
        return None
    if strict and S.U32.unpack_from(data, offset + size - 4)[0] != size:
        return None
    if record_id >= 1 << 63 or filetime >= 1 << 63:
        return None  # a damaged header: such values are no real id or time (int64 columns)
    return RecordSlice(offset, size, record_id, filetime)


def _frame_records(chunk: ChunkSlice, free: int, end: int) -> Iterator[RecordSlice | ParseIssue]:
    """Walk record headers from offset 512. Up to the free space offset every byte is
    accounted for (a broken header is reported and skipped to the next sane record); past
    it, only records that continue the id sequence are taken (a dirty chunk's tail), and
    anything else is slack."""
    data = chunk.data
    offset = S.CHUNK_HEADER_SIZE
    previous: RecordSlice | None = None
    while offset + S.RECORD_HEADER_SIZE <= end:
        found = _record_at(data, offset, end, strict=False)
        if offset >= free and (
            found is None or previous is None or found.record_id != previous.record_id + 1
        ):
            return
        if found is not None:
            yield found
            previous = found
            offset += found.size
            continue
        if not data[offset:free].strip(b"\x00"):
            return  # slack after the last record
        # Broken record header: hunt for the next sane one before the free space offset.
        resync = data.find(S.RECORD_MAGIC, offset + 1, free)
        while resync != -1 and _record_at(data, resync, end, strict=True) is None:
            resync = data.find(S.RECORD_MAGIC, resync + 1, free)
        stop = resync if resync != -1 else free
        yield ParseIssue(
            "bad_record_header",
            f"chunk {chunk.index} offset 0x{chunk.file_offset + offset:08x}: no sane record "
            f"header (magic {data[offset : offset + 4]!r}); {stop - offset} bytes skipped",
            chunk=chunk.index,
            offset=chunk.file_offset + offset,
            excerpt=data[offset : offset + 32].hex(),
        )
        if resync == -1:
            return
        previous = None
        offset = resync


# ---------------------------------------------------------------------------
# 2. Backends: framed records -> XML text, or JSON decoded to a dict (pyevtx-rs)
# ---------------------------------------------------------------------------

Rendered = tuple[RecordSlice, "str | dict[str, Any]"]

# python-evtx (the second chance) has no work bound of its own: a damaged template can cost
# it 0.1-0.2 s of CPU per record, for every record of the chunk. Each record gets this much
# CPU time, the chunk's second chances this much in all; past it the record is quarantined,
# with why. (The corpus's 781 second chances take 40 us typically, 31 ms at most, the
# chunk's template table read included: a slower machine keeps a wide margin.)
FALLBACK_RECORD_CPU_S = 0.2
FALLBACK_CHUNK_CPU_S = 1.0


def _pick_json_loads() -> Callable[[str], Any]:
    """orjson when installed (decodes pyevtx-rs JSON faster), else the standard library."""
    try:
        module = importlib.import_module("orjson")
    except ImportError:
        return json.loads
    return cast("Callable[[str], Any]", module.loads)


_json_loads = _pick_json_loads()


def _rust_render(chunk: ChunkSlice, json_out: bool) -> Iterator[Rendered | ParseIssue]:
    """pyevtx-rs on one chunk behind a synthetic header: XML text, or JSON decoded to a
    dict (`json_out`)."""
    # the native module loads with the first chunk rendered: detection and range planning,
    # which the ingest driver does, import this module without rendering anything
    from evtx import PyEvtxParser

    pending: dict[int, list[RecordSlice]] = {}
    for rec in chunk.records:
        pending.setdefault(rec.record_id, []).append(rec)
    errors: list[str] = []
    try:
        parser = PyEvtxParser(
            io.BytesIO(S.synthetic_file_header() + chunk.data),
            number_of_threads=1,
            indent=not json_out,
        )
        records = cast(
            "Iterator[dict[str, Any]]", parser.records_json() if json_out else parser.records()
        )
        while True:
            try:
                out = next(records)
            except StopIteration:
                break
            except RuntimeError as exc:
                errors.append(str(exc))
                if len(errors) > len(chunk.records) + 8:
                    break
                continue
            slots = pending.get(out["event_record_id"])
            if not slots:
                continue
            rec = slots.pop(0)
            if not json_out:
                yield rec, out["data"]
                continue
            try:
                yield rec, _json_loads(out["data"])
            except ValueError as exc:
                # reported as not rendered (and so retried with python-evtx)
                yield _record_issue(chunk, rec, f"rust backend: JSON not readable: {exc}")
    except (OSError, RuntimeError) as exc:
        errors.append(str(exc))
    for slots in pending.values():
        for rec in slots:
            yield _record_issue(chunk, rec, "rust backend: " + _first(errors, rec.record_id))


def _with_fallback(
    chunk: ChunkSlice, first: Iterator[Rendered | ParseIssue]
) -> Iterator[Rendered | ParseIssue]:
    """pyevtx-rs first; records it cannot render get a second chance with python-evtx
    (the two fail on different damage, and a record either can read is kept)."""
    failed: list[tuple[RecordSlice, ParseIssue]] = []
    by_offset = {chunk.file_offset + r.offset: r for r in chunk.records}
    for out in first:
        if isinstance(out, ParseIssue) and out.kind == "bad_record" and out.offset in by_offset:
            failed.append((by_offset[out.offset], out))
            continue
        yield out
    if not failed:
        return
    retry = ChunkSlice(chunk.index, chunk.file_offset, chunk.data, [rec for rec, _ in failed])
    first_error = {rec.offset: issue for rec, issue in failed}
    bound = CpuBound(FALLBACK_RECORD_CPU_S, FALLBACK_CHUNK_CPU_S, _fallback_code())
    for out in _python_xml(retry, bound):
        if isinstance(out, ParseIssue):
            rec = by_offset[out.offset or -1]
            rust_issue = first_error[rec.offset]
            yield ParseIssue(
                out.kind,
                f"{rust_issue.message}; {out.message.split(': ', 1)[-1]}",
                chunk=out.chunk,
                offset=out.offset,
                excerpt=out.excerpt,
            )
        else:
            yield out


def _fallback_code() -> tuple[str, ...]:
    """Where the second chance runs: python-evtx's package and the fast renderer."""
    # python-evtx (and pysubs, built on it) load only where a record needs the second
    # chance or the python backend: most files never do
    import Evtx

    from caltrail.parsers.evtx import pysubs

    return (os.path.dirname(Evtx.__file__) + os.sep, pysubs.__file__)


def _rust_with_fallback(chunk: ChunkSlice) -> Iterator[Rendered | ParseIssue]:
    """Backend "rust-xml": pyevtx-rs XML, python-evtx for what it cannot render."""
    return _with_fallback(chunk, _rust_render(chunk, json_out=False))


def _rust_json_with_fallback(chunk: ChunkSlice) -> Iterator[Rendered | ParseIssue]:
    """Backend "rust": pyevtx-rs JSON, python-evtx for what it cannot render."""
    return _with_fallback(chunk, _rust_render(chunk, json_out=True))


def _python_xml(
    chunk: ChunkSlice, bound: CpuBound | None = None
) -> Iterator[Rendered | ParseIssue]:
    """python-evtx's XML for each framed record, the string its `evtx_record_xml_view`
    gives (`_python_xml_reference`; tests hold the two equal, errors included), faster.

    python-evtx parses the record's template anew for every record and builds a node
    object per token and per value: nearly all of its time. Here (`_evtx_pysubs`) each
    template is read once per chunk into a skeleton of literal text and substitution
    slots, and each record's substitution values are decoded with `struct`; python-evtx
    renders only what that path does not mirror exactly (a record, or a nested fragment).

    With a `bound` (the second chance for what pyevtx-rs cannot render), a record past its
    CPU time is quarantined, and so is every later one of the chunk (the chunk's python-evtx
    state may be half built; a damaged template costs each of its records the same)."""
    # python-evtx loads only for the python backend or a second chance (most files never)
    from Evtx.Evtx import ChunkHeader
    from Evtx.Nodes import RootNode
    from Evtx.Views import render_root_node

    from caltrail.parsers.evtx.pysubs import ChunkRenderer

    data = chunk.data
    header = ChunkHeader(data, 0)

    def python(root: int) -> str:
        return cast("str", render_root_node(RootNode(data, root, header, None)))

    fast = ChunkRenderer(data, header, python)
    given_up: str | None = None
    for rec in chunk.records:
        if given_up is not None:
            yield _record_issue(chunk, rec, given_up)
            continue
        try:
            if bound is None:
                xml = fast.render(rec.offset + S.RECORD_HEADER_SIZE)
            else:
                xml = bound.call(fast.render, rec.offset + S.RECORD_HEADER_SIZE)
        except TooSlow as slow:
            yield _record_issue(chunk, rec, f"python backend: {slow} (a damaged template)")
            given_up = "python backend not tried: a record before it in the chunk ran out of time"
            continue
        except Exception as exc:  # third-party parser boundary: any failure is this record's
            yield _record_issue(chunk, rec, f"python backend: {type(exc).__name__}: {exc}")
            continue
        yield rec, xml
        if bound is not None and bound.spent():
            given_up = (
                f"python backend not tried: the chunk's second chances used their "
                f"{bound.total:g} s of CPU time"
            )


def _python_xml_reference(chunk: ChunkSlice) -> Iterator[Rendered | ParseIssue]:
    """python-evtx's own `evtx_record_xml_view` (slow; the reference for `_python_xml`)."""
    # the reference renderer of the tests only
    from Evtx.Evtx import ChunkHeader, Record
    from Evtx.Views import evtx_record_xml_view

    header = ChunkHeader(chunk.data, 0)
    for rec in chunk.records:
        try:
            xml = evtx_record_xml_view(Record(chunk.data, rec.offset, header))
        except Exception as exc:  # third-party parser boundary: any failure is this record's
            yield _record_issue(chunk, rec, f"python backend: {type(exc).__name__}: {exc}")
            continue
        yield rec, xml


Renderer = Callable[[ChunkSlice], Iterator["Rendered | ParseIssue"]]


def _first(errors: list[str], record_id: int) -> str:
    for message in errors:
        if f"record number {record_id}:" in message or f"record number {record_id} " in message:
            return message[:300]
    return errors[0][:300] if errors else "record not returned by the parser"


def _record_issue(chunk: ChunkSlice, rec: RecordSlice, message: str) -> ParseIssue:
    offset = chunk.file_offset + rec.offset
    return ParseIssue(
        "bad_record",
        f"chunk {chunk.index} offset 0x{offset:08x} record {rec.record_id}: {message}",
        chunk=chunk.index,
        offset=offset,
        excerpt=chunk.data[rec.offset : rec.offset + 64].hex(),
    )


# ---------------------------------------------------------------------------
# 3. XML -> EventRecord
# ---------------------------------------------------------------------------

_NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"
_XML_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=False
)
_RECOVER_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, recover=True
)
# Characters XML 1.0 forbids, raw or as character references. Real logs contain them.
_BAD_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_BAD_REFS = re.compile(r"&#(x0*[0-8bcef]|x0*1[0-9a-f]|0*[0-8]|0*1[124-9]|0*2[0-9]|0*3[01]);", re.I)
_PRIVATE = 0xF700  # control char c is carried as U+F700+c through lxml, then restored
_RESTORE = {_PRIVATE + c: c for c in range(32)}
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_GUID = re.compile(
    r"\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?"
)
_EPOCH = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)


def filetime_to_datetime(filetime: int) -> dt.datetime | None:
    """FILETIME (100 ns ticks since 1601-01-01 UTC) to an aware datetime (µs, floored)."""
    try:
        return _EPOCH + dt.timedelta(microseconds=filetime // 10)
    except OverflowError:
        return None


def _protect(xml: str) -> str:
    xml = _BAD_REFS.sub(lambda m: chr(_PRIVATE + _ref_value(m.group(1))), xml)
    return _BAD_CHARS.sub(
        lambda m: chr(_PRIVATE + ord(m.group()) if ord(m.group()) < 32 else 0xFFFD), xml
    )


def _ref_value(ref: str) -> int:
    return int(ref[1:], 16) if ref[:1] in "xX" else int(ref)


def _parse_xml(xml: str) -> tuple[etree._Element, bool]:
    if xml.startswith("<?xml"):
        xml = xml[xml.index("?>") + 2 :]
    try:
        return etree.fromstring(xml, _XML_PARSER), False
    except etree.XMLSyntaxError:
        pass
    protected = _protect(xml)
    try:
        return etree.fromstring(protected, _XML_PARSER), True
    except etree.XMLSyntaxError:
        root = etree.fromstring(protected, _RECOVER_PARSER)
        if root is None:
            raise
        return root, True


_DATETIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(Z|[+-]00:00)?(?: UTC)?"
)


def _norm(value: str | None, restore: bool) -> str | None:
    """One rendering for values the backends print differently (BinXML types)."""
    if value is None or value == "" or value.isspace() or value == "(NULL)":
        # Empty and null substitutions: python-evtx prints nothing, pyevtx-rs prints
        # "(NULL)" or the pretty-printer's indentation.
        return None
    if restore:
        value = value.translate(_RESTORE)
    first = value[0]
    if first == "0" and value[:2] == "0x" and _HEX.fullmatch(value):
        # HexInt32/64: python-evtx pads with zeros, pyevtx-rs does not.
        return hex(int(value, 16))
    if first in "TtFf" and value in ("True", "False", "true", "false"):
        return value.lower()
    n = len(value)
    if n in (36, 38) and _GUID.fullmatch(value):
        return _guid(value)
    if 19 <= n <= 35 and value[4:5] == "-" and (m := _DATETIME.fullmatch(value)):
        # SystemTime/FileTime: "2020-11-02 06:40:20+00:00" (python-evtx) and
        # "2020-11-02T06:40:20.000000Z" (pyevtx-rs) -> ISO 8601 UTC, microseconds.
        # Milliseconds: the backends round FILETIME fractions differently below that.
        year = "1601" if m.group(1) == "0001" else m.group(1)
        micros = int((m.group(7) or "")[:6].ljust(6, "0"))
        stamp = f"{year}-{m.group(2)}-{m.group(3)}T{m.group(4)}:{m.group(5)}:{m.group(6)}"
        if micros >= 999_500:  # rounds up into the next second: let datetime carry it
            try:
                moment = dt.datetime.fromisoformat(stamp) + dt.timedelta(microseconds=micros)
            except ValueError:
                return value
            return (
                moment.strftime("%Y-%m-%dT%H:%M:%S.")
                + f"{round(moment.microsecond / 1000) % 1000:03d}Z"
            )
        return f"{stamp}.{round(micros / 1000):03d}Z"
    return value


def _guid(value: str | None) -> str | None:
    if not value:
        return None
    m = _GUID.fullmatch(value.strip())
    return "{" + m.group(1).lower() + "}" if m else value


def _int(value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value, 0) if value[:2] in ("0x", "0X") else int(value)
    except ValueError:
        return None


def _local(tag: object) -> str:
    local = _LOCAL_CACHE.get(tag)  # type: ignore[call-overload]
    if local is None:
        text = str(tag)
        local = text[text.rfind("}") + 1 :]
        if len(_LOCAL_CACHE) >= 4096:
            _LOCAL_CACHE.clear()
        _LOCAL_CACHE[tag] = local
    return local


_LOCAL_CACHE: dict[object, str] = {}


def _xnorm(value: str | None, restore: bool) -> str | None:
    """`_norm`, memoised for XML that needed no repair (most values repeat)."""
    if restore or value is None:
        return _norm(value, restore)
    out = _XML_NORM_CACHE.get(value, _MISSING)
    if out is _MISSING:
        out = _norm(value, False)
        if len(_XML_NORM_CACHE) >= _CACHE_MAX:
            _XML_NORM_CACHE.clear()
        _XML_NORM_CACHE[value] = out
    return out  # type: ignore[no-any-return]


_XML_NORM_CACHE: dict[str, str | None] = {}


def _flatten(
    element: etree._Element, prefix: str, out: dict[str, str | None], restore: bool
) -> None:
    for name, value in element.attrib.items():
        out[f"{prefix}@{_local(name)}"] = _xnorm(str(value), restore)
    children = [c for c in element if isinstance(c.tag, str)]
    if not children:
        out[prefix] = _xnorm(element.text, restore)
        return
    seen: dict[str, int] = {}
    for child in children:
        name = _local(child.tag)
        seen[name] = seen.get(name, 0) + 1
        key = f"{prefix}.{name}" if seen[name] == 1 else f"{prefix}.{name}[{seen[name]}]"
        _flatten(child, key, out, restore)


def _event_data(section: etree._Element, out: dict[str, str | None], restore: bool) -> None:
    unnamed = 0
    for child in section:
        if not isinstance(child.tag, str):
            continue
        tag = _local(child.tag)
        if tag == "Data":
            name = child.get("Name")
            if not name:
                unnamed += 1
                name = f"param{unnamed}"
            if len(child):
                _flatten(child, name, out, restore)
            elif child.get("Name") is None and (text := child.text) and text.startswith("<string>"):
                # A string-array substitution: pyevtx-rs writes one <Data> per item (as
                # Windows does); python-evtx writes "<string>a</string><string>b</string>".
                items = _ARRAY_ITEM.findall(text)
                out[name] = _xnorm(_unescape(items[0]) if items else None, restore)
                for item in items[1:]:
                    unnamed += 1
                    out[f"param{unnamed}"] = _xnorm(_unescape(item), restore)
            else:
                out[name] = _xnorm(child.text, restore)
        elif tag == "Binary":
            out["Binary"] = _binary_hex(child.text)
        else:
            _flatten(child, tag, out, restore)


_ARRAY_ITEM = re.compile(r"<string>(.*?)</string>", re.S)
_B64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_HEX_DIGITS = re.compile(r"[0-9A-Fa-f]*")


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _binary_hex(text: str | None) -> str | None:
    """<Binary>: pyevtx-rs writes upper-case hex, python-evtx base64. Stored as hex."""
    if text is None or not text.strip():
        return None
    value = text.strip()
    if len(value) % 2 == 0 and _HEX_DIGITS.fullmatch(value):
        return value.upper()
    if _B64.fullmatch(value):
        try:
            return base64.b64decode(value, validate=True).hex().upper()
        except (ValueError, binascii.Error):
            return value
    return value


def _time_created(value: str | None, header_time: dt.datetime | None) -> dt.datetime | None:
    if not value or header_time is None:
        return header_time
    text = value.replace(" ", "T").replace("Z", "+00:00")
    if "." in text:
        head, _, tail = text.partition(".")
        digits = re.match(r"\d+", tail)
        frac = digits.group() if digits else ""
        text = f"{head}.{frac[:6].ljust(6, '0')}{tail[len(frac) :]}"
    try:
        created = dt.datetime.fromisoformat(text)
    except ValueError:
        return header_time
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    if abs((created - header_time).total_seconds()) <= 1:
        return header_time
    return created.replace(microsecond=created.microsecond // 1000 * 1000)


def record_from_xml(
    xml: str, rec: RecordSlice, chunk: int, offset: int
) -> tuple[EventRecord, bool]:
    """Convert one record's XML (from either backend) into an EventRecord.

    Returns the record and whether the XML needed repair (forbidden characters or
    recover mode).
    """
    root, repaired = _parse_xml(xml)
    system = root.find(_NS + "System")
    if system is None:
        system = root.find("System")
    sys: dict[str, etree._Element] = {}
    if system is not None:
        for child in system:
            if isinstance(child.tag, str):
                sys[_local(child.tag)] = child
    data: dict[str, str | None] = {}
    for child in root:
        if not isinstance(child.tag, str):
            continue
        tag = _local(child.tag)
        if tag == "EventData":
            _event_data(child, data, repaired)
        elif tag == "UserData":
            for sub in child:
                if isinstance(sub.tag, str):
                    _flatten(sub, _local(sub.tag), data, repaired)
        elif tag not in ("System", "RenderingInfo"):
            _flatten(child, tag, data, repaired)

    def text(name: str) -> str | None:
        el = sys.get(name)
        return _xnorm(el.text, repaired) if el is not None else None

    def attr(name: str, key: str) -> str | None:
        el = sys.get(name)
        return _xnorm(el.get(key), repaired) if el is not None else None

    event_id = _int(text("EventID"))
    qualifiers = _int(attr("EventID", "Qualifiers"))
    if event_id is not None and event_id > 0xFFFF:
        # A 32-bit message id: EventID is the low 16 bits, Qualifiers the high 16.
        qualifiers = qualifiers if qualifiers is not None else event_id >> 16
        event_id &= 0xFFFF
    header_time = filetime_to_datetime(rec.filetime)
    keywords = text("Keywords")
    return (
        EventRecord(
            time_created=_time_created(attr("TimeCreated", "SystemTime"), header_time),
            filetime=rec.filetime,
            record_id=rec.record_id,
            event_id=event_id,
            qualifiers=qualifiers,
            version=_int(text("Version")),
            level=_int(text("Level")),
            task=_int(text("Task")),
            opcode=_int(text("Opcode")),
            keywords=keywords,
            provider=attr("Provider", "Name"),
            provider_guid=_guid(attr("Provider", "Guid")),
            event_source_name=attr("Provider", "EventSourceName"),
            channel=text("Channel"),
            computer=text("Computer"),
            user_sid=attr("Security", "UserID"),
            activity_id=_guid(attr("Correlation", "ActivityID")),
            related_activity_id=_guid(attr("Correlation", "RelatedActivityID")),
            process_id=_int(attr("Execution", "ProcessID")),
            thread_id=_int(attr("Execution", "ThreadID")),
            data=data,
            chunk=chunk,
            offset=offset,
        ),
        repaired,
    )


# ---------------------------------------------------------------------------
# 3b. pyevtx-rs JSON -> EventRecord (the fast path; held equal to the XML path by tests)
# ---------------------------------------------------------------------------
#
# pyevtx-rs JSON: {"Event": {"#attributes": {...}, "System": {...}, "EventData": {...}}}.
# An element with attributes is {"#attributes": {...}, "#text": value, child: ...}; without,
# its value (or its children's object, or null when empty). Named <Data> become keys of
# EventData; unnamed <Data> are {"Data": {"#text": value | [values]}}. A repeated child
# name gets a suffix: "Name", "Name_1", "Name_2". Numbers and booleans are JSON values;
# they are printed as the XML renderer prints them before the same `_norm`.

_NORM_CACHE: dict[str, str | None] = {}
_GUID_CACHE: dict[str, str | None] = {}
_CACHE_MAX = 65_536
_MISSING: Any = object()
_DUP = re.compile(r"(.+)_(\d+)")


def _snorm(value: str) -> str | None:
    """`_norm` of a JSON string, memoised (most values repeat: "-", "0x0", SIDs, names)."""
    out = _NORM_CACHE.get(value, _MISSING)
    if out is _MISSING:
        # An XML parser reads line ends as "\n" (XML 1.0 section 2.11): so does this path.
        text = value.replace("\r\n", "\n").replace("\r", "\n") if "\r" in value else value
        out = _norm(text, False)
        if len(_NORM_CACHE) >= _CACHE_MAX:
            _NORM_CACHE.clear()
        _NORM_CACHE[value] = out
    return out  # type: ignore[no-any-return]


def _jnorm(value: object) -> str | None:
    """`_norm` of a JSON value (printed as pyevtx-rs's XML prints it)."""
    kind = type(value)
    if kind is str:
        return _snorm(value)  # type: ignore[arg-type]
    if value is None:
        return None
    if kind is int:
        return str(value)
    if kind is bool:
        return "true" if value else "false"
    if kind is dict:
        return _jnorm(value.get("#text"))  # type: ignore[attr-defined]
    if kind is list:
        return _jnorm(value[0]) if value else None  # type: ignore[index]
    return _norm(str(value), False)


def _jguid(value: object) -> str | None:
    if type(value) is not str:
        return _guid(_jnorm(value))
    out = _GUID_CACHE.get(value, _MISSING)
    if out is _MISSING:
        out = _guid(_snorm(value))
        if len(_GUID_CACHE) >= _CACHE_MAX:
            _GUID_CACHE.clear()
        _GUID_CACHE[value] = out
    return out  # type: ignore[no-any-return]


def _jchildren(obj: dict[str, Any]) -> Iterator[tuple[str, int, Any]]:
    """(name, occurrence, value) of an element's children, undoing the "_N" suffixes."""
    seen: set[str] = set()
    for key, value in obj.items():
        if key[:1] == "#":
            continue
        if key[-1:].isdigit() and (m := _DUP.fullmatch(key)) and m.group(1) in seen:
            yield m.group(1), int(m.group(2)) + 1, value
            continue
        seen.add(key)
        yield key, 1, value


def _jlocal(name: str) -> str:
    return name[name.rfind(":") + 1 :]


def _jflatten(value: Any, prefix: str, out: dict[str, str | None]) -> None:
    """`_flatten` on a JSON element."""
    if type(value) is not dict:
        out[prefix] = _jnorm(value)
        return
    attrs = value.get("#attributes")
    if attrs:
        for name, attr in attrs.items():
            if name == "xmlns" or name.startswith("xmlns:"):
                continue  # a namespace declaration, not an attribute
            out[f"{prefix}@{_jlocal(name)}"] = _jnorm(attr)
    children = False
    for name, n, child in _jchildren(value):
        children = True
        _jflatten(child, f"{prefix}.{name}" if n == 1 else f"{prefix}.{name}[{n}]", out)
    if not children:
        out[prefix] = _jnorm(value.get("#text"))


def _jevent_data(section: Any, out: dict[str, str | None]) -> None:
    if type(section) is not dict:
        return
    unnamed = 0
    seen: set[str] = set()
    cached = _NORM_CACHE.get
    for name, value in section.items():
        kind = type(value)
        if name[-1:].isdigit() and (m := _DUP.fullmatch(name)) and m.group(1) in seen:
            name = m.group(1)  # a repeated name: the XML path keeps the last value
        else:
            seen.add(name)
        if kind is str and name != "Data" and name != "Binary" and name:
            # the common case: a named <Data> with a string (its cache lookup inlined)
            norm = cached(value, _MISSING)
            out[name] = _snorm(value) if norm is _MISSING else norm
        elif name == "Data" or not name:
            texts = value.get("#text") if kind is dict else value
            for text in texts if type(texts) is list else (texts,):
                unnamed += 1
                out[f"param{unnamed}"] = _jnorm(text)
        elif name == "Binary":
            out["Binary"] = _binary_hex(_jnorm(value))
        elif name[0] == "#":
            continue
        elif kind is dict:  # nested, or another element with attributes
            _jflatten(value, name, out)
        elif kind is int:
            out[name] = str(value)
        else:
            out[name] = _jnorm(value)


def _jint(value: Any) -> int | None:
    kind = type(value)
    if kind is int:
        return value  # type: ignore[no-any-return]
    if value is None:
        return None
    if kind is dict:
        return _jint(value.get("#text"))
    return _int(_jnorm(value))


def _attrs(element: Any) -> dict[str, Any]:
    if type(element) is dict:
        attrs = element.get("#attributes")
        if type(attrs) is dict:
            return attrs
    return _NO_ATTRS


_NO_ATTRS: dict[str, Any] = {}
_FILETIME_UNIX = 11_644_473_600  # seconds from 1601-01-01 to 1970-01-01
_HOUR_CACHE: dict[str, int | None] = {}


def _jtime_created(raw: Any, filetime: int, header_time: dt.datetime | None) -> dt.datetime | None:
    """`_time_created(_norm(raw), header_time)`, without parsing a date when the value is
    plainly within the second of the header FILETIME (nearly every record)."""
    if (
        type(raw) is str
        and len(raw) >= 20
        and raw[10] == "T"
        and raw[-1] == "Z"
        and header_time is not None
    ):
        hour = _HOUR_CACHE.get(raw[:13], _MISSING)
        if hour is _MISSING:
            try:
                moment = dt.datetime.fromisoformat(raw[:13] + ":00:00+00:00")
                hour = int(moment.timestamp())
            except ValueError:
                hour = None
            if len(_HOUR_CACHE) >= _CACHE_MAX:
                _HOUR_CACHE.clear()
            _HOUR_CACHE[raw[:13]] = hour
        if hour is not None and raw[13] == ":" and raw[16] == ":":
            minutes, seconds = raw[14:16], raw[17:19]
            if minutes.isdigit() and seconds.isdigit():
                stamp = hour + int(minutes) * 60 + int(seconds)
                header = filetime // 10_000_000 - _FILETIME_UNIX
                if abs(stamp - header) <= 0:  # same whole second: within a second for sure
                    return header_time
    return _time_created(_jnorm(raw), header_time)


def record_from_json(
    event: dict[str, Any], rec: RecordSlice, chunk: int, offset: int
) -> EventRecord:
    """Convert one record's pyevtx-rs JSON (decoded) into an EventRecord: the same values
    `record_from_xml` gives for pyevtx-rs's XML of the record (tests hold them equal)."""
    root = event.get("Event")
    if type(root) is not dict:
        root = {}
    system = root.get("System")
    if type(system) is not dict:
        system = _NO_ATTRS
    data: dict[str, str | None] = {}
    for tag, value in root.items():
        if tag == "System" or tag == "RenderingInfo" or tag[:1] == "#":
            continue
        if tag == "EventData":
            _jevent_data(value, data)
        elif tag == "UserData":
            if type(value) is dict:
                for name, _m, sub in _jchildren(value):
                    _jflatten(sub, name, data)
        else:
            _jflatten(value, _DUP.sub(r"\1", tag) if tag[-1:].isdigit() else tag, data)
    # The System values are mostly plain ints and strings: each is read inline when it
    # is, and through the general helpers (`_jint`, `_jnorm`) when it is not. Attributes
    # live under "#attributes" ({} when the element has none).
    get = system.get
    event_id_el = get("EventID")
    event_id: int | None
    qualifiers: int | None
    if type(event_id_el) is int:
        event_id, qualifiers = event_id_el, None
    else:
        event_id = _jint(event_id_el)
        qualifiers = _jint(_attrs(event_id_el).get("Qualifiers"))
    if event_id is not None and event_id > 0xFFFF:
        qualifiers = qualifiers if qualifiers is not None else event_id >> 16
        event_id &= 0xFFFF
    provider = _attrs(get("Provider"))
    correlation = _attrs(get("Correlation"))
    execution = _attrs(get("Execution"))
    filetime = rec.filetime
    header_time = filetime_to_datetime(filetime)
    version, level, task, opcode = get("Version"), get("Level"), get("Task"), get("Opcode")
    pid, tid = execution.get("ProcessID"), execution.get("ThreadID")
    return EventRecord(
        _jtime_created(_attrs(get("TimeCreated")).get("SystemTime"), filetime, header_time),
        filetime,
        rec.record_id,
        event_id,
        qualifiers,
        version if type(version) is int else _jint(version),
        level if type(level) is int else _jint(level),
        task if type(task) is int else _jint(task),
        opcode if type(opcode) is int else _jint(opcode),
        _jnorm(get("Keywords")),
        _jnorm(provider.get("Name")),
        _jguid(provider.get("Guid")),
        _jnorm(provider.get("EventSourceName")),
        _jnorm(get("Channel")),
        _jnorm(get("Computer")),
        _jnorm(_attrs(get("Security")).get("UserID")),
        _jguid(correlation.get("ActivityID")),
        _jguid(correlation.get("RelatedActivityID")),
        pid if type(pid) is int else _jint(pid),
        tid if type(tid) is int else _jint(tid),
        data,
        chunk,
        offset,
    )


# ---------------------------------------------------------------------------
# 4. The parser entry point
# ---------------------------------------------------------------------------


def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]:
    """Yield every valid record of an EVTX file, and an issue for everything else."""
    return _parse_chunks(stream, options, 0, None)


# Reading a file in ranges (base.RangeReader): ranges are whole chunks (they are
# independent), at least MIN_RANGE_CHUNKS each, so that a range's fixed costs (a worker's
# template caches, its recovery pass) stay small beside its work.
RANGE_HEAD = S.FILE_HEADER_BLOCK + 8
MIN_RANGE_CHUNKS = 16


def plan_ranges(head: bytes, size: int, parts: int) -> list[tuple[int, int | None]]:
    """At most `parts` byte ranges of whole chunks ([] when not worth splitting)."""
    if not sniff(head, ""):
        return []
    chunks = chunk_count(size)
    per_range = max(MIN_RANGE_CHUNKS, -(-chunks // max(parts, 1)))
    starts = list(range(0, chunks, per_range))
    if len(starts) < 2:
        return []
    offsets = [S.FILE_HEADER_BLOCK + n * S.CHUNK_SIZE for n in starts]
    # The first range starts at 0 (it checks the file header); the last reads to the end.
    return [
        (0 if n == 0 else start, offsets[n + 1] if n + 1 < len(offsets) else None)
        for n, start in enumerate(offsets)
    ]


def parse_range(
    stream: BinaryIO, options: ParseOptions, start: int, stop: int | None
) -> Iterator[Item]:
    """`parse` restricted to the chunks that start in bytes [start, stop) (one range of a
    file read by several workers; see base.RangeReader)."""
    first = max(0, -(-(start - S.FILE_HEADER_BLOCK) // S.CHUNK_SIZE))
    last = None if stop is None else max(0, -(-(stop - S.FILE_HEADER_BLOCK) // S.CHUNK_SIZE))
    return _parse_chunks(stream, options, first, last)


def _parse_chunks(
    stream: BinaryIO, options: ParseOptions, start: int, stop: int | None
) -> Iterator[Item]:
    """`parse` restricted to chunks start..stop-1."""
    backend = options.backend if options.backend in BACKENDS else DEFAULT_BACKEND
    render = renderer_for(backend)
    budget = Budget(options.max_seconds)
    yield FileNote("backend", backend)
    recovery: Recovery | FileNote | None = _recovery(stream, options, backend, budget)
    if isinstance(recovery, FileNote):
        yield recovery  # why nothing is searched
        recovery = None
    for item in walk_chunks(stream, budget, start, stop):
        if not isinstance(item, ChunkSlice):
            yield item
            continue
        yield from parse_chunk(item, render)
        if recovery is not None:
            recovery.scan(item)
        if budget.exceeded():
            yield ParseIssue(
                BUDGET_EXCEEDED,
                f"chunk {item.index}: stopped after {budget.max_seconds:.0f} s (work bound per "
                "file); the rest of the file was not read",
                chunk=item.index,
            )
            return
    if recovery is not None:
        yield from recovery.finish()


def _recovery(
    stream: BinaryIO, options: ParseOptions, backend: str, budget: Budget
) -> Recovery | FileNote:
    """The reader of records left in chunk slack (recovery.py), or the note saying why
    there is none. It renders with the backend alone: a candidate the backend cannot
    render is no record (the python-evtx second chance is for the records the chunk
    counts)."""
    if not options.recover:
        return FileNote(RECOVERY_NOTE, "not searched (recovery turned off)")
    if not stream.seekable():
        return FileNote(RECOVERY_NOTE, "not searched (the input cannot be read twice)")
    if backend == "python":
        return Recovery(stream, _python_xml, _convert, budget)
    if backend == "rust-xml":
        return Recovery(stream, lambda chunk: _rust_render(chunk, False), _convert, budget)
    return Recovery(stream, _rust_json_then_xml, _convert, budget)


def _rust_json_then_xml(chunk: ChunkSlice) -> Iterator[Rendered | ParseIssue]:
    """pyevtx-rs JSON; its XML for the records whose JSON did not decode (it writes some
    control characters raw in JSON strings; the XML path reads them)."""
    failed: list[RecordSlice] = []
    for out in _rust_render(chunk, json_out=True):
        if isinstance(out, ParseIssue):
            failed.extend(r for r in chunk.records if chunk.file_offset + r.offset == out.offset)
            continue
        yield out
    if failed:
        yield from _rust_render(
            ChunkSlice(chunk.index, chunk.file_offset, chunk.data, failed), False
        )


def _convert(
    payload: str | dict[str, Any], rec: RecordSlice, chunk: int, offset: int
) -> EventRecord:
    """A rendered record (JSON decoded, or XML) as an EventRecord; ValueError if it cannot be."""
    if type(payload) is dict:
        return record_from_json(payload, rec, chunk, offset)
    try:
        return record_from_xml(cast("str", payload), rec, chunk, offset)[0]
    except etree.XMLSyntaxError as exc:
        raise ValueError(str(exc)) from exc


def renderer_for(backend: str) -> Renderer:
    """The function that renders a chunk's framed records for a backend name: "rust"
    (pyevtx-rs JSON, python-evtx XML for what it cannot render), "rust-xml" (the same
    with pyevtx-rs XML: slower, kept as the reference the JSON path is tested against),
    "python" (python-evtx XML)."""
    if backend == "python":
        return _python_xml
    if backend == "rust-xml":
        return _rust_with_fallback
    return _rust_json_with_fallback


def parse_chunk(chunk: ChunkSlice, render: Renderer) -> Iterator[Item]:
    """Render and convert the framed records of one chunk (used by parallel workers too)."""
    for out in render(chunk):
        if isinstance(out, ParseIssue):
            yield out
            continue
        rec, payload = out
        offset = chunk.file_offset + rec.offset
        if type(payload) is dict:
            try:
                yield record_from_json(payload, rec, chunk.index, offset)
            except (ValueError, TypeError, AttributeError, IndexError) as exc:
                yield _record_issue(chunk, rec, f"rendered JSON not readable: {exc}")
            continue
        try:
            record, repaired = record_from_xml(cast("str", payload), rec, chunk.index, offset)
        except (etree.XMLSyntaxError, ValueError) as exc:
            yield _record_issue(chunk, rec, f"rendered XML not readable: {exc}")
            continue
        if repaired:
            yield ParseIssue(
                "xml_repaired",
                f"chunk {chunk.index} offset 0x{offset:08x} record {rec.record_id}: XML held "
                "characters XML 1.0 forbids; read with them kept",
                quarantined=False,
                chunk=chunk.index,
                offset=offset,
            )
        yield record


__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "NAME",
    "VERSION",
    "ChunkSlice",
    "RecordSlice",
    "chunk_count",
    "filetime_to_datetime",
    "parse",
    "parse_chunk",
    "parse_range",
    "record_from_json",
    "record_from_xml",
    "renderer_for",
    "sniff",
    "walk_chunks",
]
