"""Raw .etl trace files (what `logman`, `netsh trace start`, TSS and MSRD-Collect bring back).

An .etl file is a sequence of buffers. Each starts with a WMI_BUFFER_HEADER (0x48 bytes:
its size on disk, the bytes it holds, its processor, flags, type); the first buffer's first
record is the log file header (TRACE_LOGFILE_HEADER: clock type, start time, frequencies,
logger and file names). Records are 8-byte aligned; each starts with a 32-bit marker whose
flags byte tells the header form (kernel system/perfinfo headers, classic
EVENT_TRACE_HEADER, EVENT_HEADER, WPP TraceMessage). A compressed buffer (flag 0x40) holds
LZXpress plain-LZ77 data that decompresses to the bytes it announces. Layouts:
`_etl_structs.py`; records into TraceRecords: `etl_records.py`; sources: docs/ETL.md.

What this reader guarantees (the parser contract, parsers/base.py):
- every record of every readable buffer becomes one TraceRecord (the log file header too);
- a buffer whose header is damaged, that does not decompress, or that ends before its
  records do is one quarantined ParseIssue, and the reader goes on with the next buffer (at
  the next buffer size, or at the next plausible buffer header found after it);
- a record whose header cannot be read is one quarantined ParseIssue, and the rest of its
  buffer (whose record boundaries are then unknown) is lost with it;
- a payload that only partly decodes keeps its record (fields["ETL.DecodeError"]) and gives
  a ParseIssue that is not quarantined;
- memory is one buffer at a time (at most 64 MiB, whatever a header claims) and the time is
  bounded by `options.max_seconds`, checked between buffers.

Records seen = records yielded + quarantined issues, per file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from caltrail.parsers.base import (
    BUDGET_EXCEEDED,
    Budget,
    FileNote,
    Item,
    ParseIssue,
    ParseOptions,
)
from caltrail.parsers.errors import InvalidSignatureError, TruncatedError
from caltrail.parsers.trace import _etl_structs as S
from caltrail.parsers.trace.etl_records import Place, RecordDecoder, RecordError
from caltrail.parsers.trace.etw_manifest import load_manifests
from caltrail.parsers.trace.lzxpress import DecompressionError, decompress
from caltrail.parsers.trace.wpp_tmf import load_tmf

NAME = "etl"
VERSION = "1"

# The first record of a file (at 0x48) is the log file header: a kernel SYSTEM32/64 record
# of group 0, opcode 0.
_FIRST_RECORD = S.BUFFER_HEADER_SIZE
_MIN_HEADER_RECORD = S.SYSTEM_HEADER.size + S.LOGFILE_NAMES_OFFSET[4]
RESYNC_WINDOW = 4 * 1024 * 1024  # bytes searched for the next buffer after a damaged one


def sniff(head: bytes, name: str) -> bool:
    """True when `head` starts with an ETL header buffer: its first record is the kernel
    log file header (SYSTEM32/64 marker, group 0, opcode 0, a plausible size)."""
    at = _FIRST_RECORD
    if len(head) < at + 8:
        return False
    header_type, flags = head[at + 2], head[at + 3]
    size = int.from_bytes(head[at + 4 : at + 6], "little")
    opcode, group = head[at + 6], head[at + 7]
    return (
        flags == S.MARKER_FLAGS_HEADER
        and header_type in (S.TYPE_SYSTEM32, S.TYPE_SYSTEM64)
        and opcode == 0
        and group == 0
        and size >= _MIN_HEADER_RECORD
    )


def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]:
    """Yield one TraceRecord per record, ParseIssues and FileNotes."""
    head = stream.read(_FIRST_RECORD + S.SYSTEM_HEADER.size + 4)
    if len(head) < _FIRST_RECORD + 8:
        raise TruncatedError(
            f"offset 0: expected an .etl header buffer of at least {_FIRST_RECORD + 8} bytes, "
            f"found {len(head)}"
        )
    if not sniff(head, options.file_name):
        raise InvalidSignatureError(
            f"offset 0x{_FIRST_RECORD:x}: expected the .etl log file header record (kernel "
            f"marker 0xC0 with header type 1 or 2, hook id 0), found {head[_FIRST_RECORD:].hex()}"
        )
    decoder = RecordDecoder(
        manifests=load_manifests(options.etw_manifests) if options.etw_manifests else None,
        tmf=load_tmf(options.tmf_files) if options.tmf_files else None,
    )
    walker = _Walker(stream, options, decoder)
    if len(head) == _FIRST_RECORD + S.SYSTEM_HEADER.size + 4:
        # the log file header's BufferSize: where the next buffer is if buffer 0 is damaged
        declared = int.from_bytes(head[-4:], "little")
        if S.BUFFER_HEADER_SIZE < declared <= S.MAX_BUFFER_SIZE:
            walker.declared = declared
    return walker.run()


class _Walker:
    """Reads the buffers of one file in order."""

    def __init__(self, stream: BinaryIO, options: ParseOptions, decoder: RecordDecoder) -> None:
        self.stream = stream
        self.options = options
        self.decoder = decoder
        self.size = stream.seek(0, 2)
        self.line = 0  # records so far (a record's `line` is its 1-based position)
        self.buffers = 0
        self.bad_buffers = 0
        self.compressed = 0
        self.nominal: int | None = None  # the size of the file's plain buffers
        self.declared: int | None = None  # the buffer size the log file header declares
        self.records_end = 0  # file offset after the last good plain buffer's records
        self.logger_id: int | None = None

    def run(self) -> Iterator[Item]:
        budget = Budget(self.options.max_seconds)
        offset = 0
        index = 0
        while offset + S.BUFFER_HEADER_SIZE <= self.size:
            if index and budget.exceeded():
                yield ParseIssue(
                    kind=BUDGET_EXCEEDED,
                    message=f"buffer {index} (offset {offset:,}): stopped after "
                    f"{self.options.max_seconds:g} s (work bound per file); the rest of the "
                    "file was not read",
                    offset=offset,
                )
                break
            self.stream.seek(offset)
            raw = self.stream.read(S.BUFFER_HEADER_SIZE)
            header = S.BUFFER_HEADER.unpack(raw)
            problem = self.check(header)
            if problem is None:
                yield from self.buffer(index, offset, header)
                next_offset = offset + header[0]
                fixed = self.size_check(offset, header)
                if fixed is not None:
                    next_offset, warning = fixed
                    yield warning
            else:
                self.bad_buffers += 1
                next_offset = self.resync(offset)
                lost = (
                    ""
                    if next_offset is not None
                    else (
                        f"; no buffer header found in the {RESYNC_WINDOW:,} bytes after it: the "
                        f"rest of the file ({self.size - offset:,} bytes) was not read"
                    )
                )
                yield ParseIssue(
                    kind="bad_buffer_header",
                    message=f"buffer {index} at offset {offset:,}: {problem}; its records "
                    f"were not read{lost}",
                    offset=offset,
                    excerpt=raw[:64].hex(),
                )
                if next_offset is None:
                    break
            offset = next_offset
            index += 1
        if 0 < self.size - offset < S.BUFFER_HEADER_SIZE:
            yield ParseIssue(
                kind="trailing_bytes",
                message=f"offset {offset:,}: {self.size - offset} bytes after the last buffer, "
                f"fewer than a buffer header ({S.BUFFER_HEADER_SIZE})",
                quarantined=False,
                offset=offset,
            )
        yield from self.notes()

    def check(self, header: tuple[int, ...]) -> str | None:
        """Why a buffer header cannot be right, or None."""
        size, filled, flags = header[0], header[10], header[11]
        if not S.BUFFER_HEADER_SIZE < size <= S.MAX_BUFFER_SIZE:
            return (
                f"expected a buffer size between {S.BUFFER_HEADER_SIZE + 1} and "
                f"{S.MAX_BUFFER_SIZE:,} bytes, found {size:,}"
            )
        if not S.BUFFER_HEADER_SIZE <= filled <= S.MAX_BUFFER_SIZE:
            return f"expected a filled size between {S.BUFFER_HEADER_SIZE} and {S.MAX_BUFFER_SIZE:,}, found {filled:,}"
        if not flags & S.BUFFER_FLAG_COMPRESSED and filled > size:
            return f"the buffer says it holds {filled:,} bytes but is {size:,} bytes long"
        return None

    def size_check(self, offset: int, header: tuple[int, ...]) -> tuple[int, ParseIssue] | None:
        """A plain buffer whose size differs from the file's buffer size, where a buffer
        header stands one file buffer size further: its size field is damage (a wrong size
        would skip buffers unseen). The next offset and a warning, or None."""
        size, flags = header[0], header[11]
        if flags & S.BUFFER_FLAG_COMPRESSED:
            return None
        for step in dict.fromkeys((self.nominal, self.declared)):
            if step is None or step == size:
                continue
            self.stream.seek(offset + step)
            if self.plausible_at(self.stream.read(S.BUFFER_HEADER_SIZE + 4), 0):
                return offset + step, ParseIssue(
                    kind="bad_buffer_size",
                    message=f"buffer at offset {offset:,}: its size field says {size:,} bytes, "
                    f"but the next buffer starts {step:,} bytes after it (the file's buffer "
                    f"size); read on from there",
                    quarantined=False,
                    offset=offset,
                )
        return None

    def plausible_at(self, data: bytes, at: int) -> bool:
        """Whether `data[at:]` starts with a buffer header like this file's."""
        if at + S.BUFFER_HEADER_SIZE > len(data):
            return False
        header = S.BUFFER_HEADER.unpack_from(data, at)
        if self.check(header) is not None or header[12] not in S.BUFFER_TYPE_NAMES:
            return False
        if self.logger_id is not None and header[8] != self.logger_id:
            return False
        if header[11] & S.BUFFER_FLAG_COMPRESSED:
            return self.logger_id is not None
        # a plain buffer starts with a record marker (or is empty)
        first = at + S.BUFFER_HEADER_SIZE
        if header[10] == S.BUFFER_HEADER_SIZE:
            return True
        return len(data) >= first + 4 and data[first + 3] in (S.MARKER_FLAGS_HEADER, S.MARKER_FLAGS_MESSAGE)

    def resync(self, offset: int) -> int | None:
        """The offset of the next buffer after a damaged header at `offset`: one plain
        buffer size further when a header is there, else the first plausible header in the
        next RESYNC_WINDOW bytes; None when there is none."""
        for step in dict.fromkeys((self.nominal, self.declared)):
            if step is None:
                continue
            self.stream.seek(offset + step)
            if self.plausible_at(self.stream.read(S.BUFFER_HEADER_SIZE + 4), 0):
                return offset + step
        # From the end of the last good buffer's records: the buffer before may have had a
        # wrong size (and the damaged header is then no buffer's at all).
        base = min(self.records_end, offset + 1) if self.records_end else offset + 1
        self.stream.seek(base)
        window = self.stream.read(RESYNC_WINDOW + S.BUFFER_HEADER_SIZE + 4)
        if self.logger_id is not None:
            needle = self.logger_id.to_bytes(2, "little")
            at = window.find(needle, 0x2A)
            while at >= 0:
                if base + at - 0x2A != offset and self.plausible_at(window, at - 0x2A):
                    return base + at - 0x2A
                at = window.find(needle, at + 1)
            return None
        for at in range(min(len(window), RESYNC_WINDOW)):
            if base + at != offset and self.plausible_at(window, at):
                return base + at
        return None

    def buffer(self, index: int, offset: int, header: tuple[int, ...]) -> Iterator[Item]:
        size, context, logger_id, filled, flags = (
            header[0],
            header[7],
            header[8],
            header[10],
            header[11],
        )
        self.buffers += 1
        if self.logger_id is None:
            self.logger_id = logger_id
        cpu = context if flags & S.BUFFER_FLAG_PROC_INDEX else context & 0xFF
        body = self.stream.read(size - S.BUFFER_HEADER_SIZE)
        want = filled - S.BUFFER_HEADER_SIZE
        if flags & S.BUFFER_FLAG_COMPRESSED:
            self.compressed += 1
            if len(body) < size - S.BUFFER_HEADER_SIZE:
                yield self.lost(
                    index,
                    offset,
                    f"the compressed buffer is cut short at {len(body):,} of {size - S.BUFFER_HEADER_SIZE:,} bytes",
                )
                return
            try:
                body = decompress(body, want)
            except DecompressionError as exc:
                yield self.lost(index, offset, f"its LZXpress data does not decompress ({exc})")
                return
            if len(body) < want:
                yield self.lost(
                    index,
                    offset,
                    f"it decompresses to {len(body):,} bytes, not the {want:,} it announces",
                )
                return
        else:
            self.records_end = offset + filled
            if index > 0 and self.nominal is None:
                self.nominal = size
        yield from self.records(index, offset, cpu, body, want)

    def lost(self, index: int, offset: int, why: str) -> ParseIssue:
        self.bad_buffers += 1
        return ParseIssue(
            kind="bad_buffer",
            message=f"buffer {index} at offset {offset:,}: {why}; its records were not read",
            offset=offset,
        )

    def records(self, index: int, offset: int, cpu: int, body: bytes, want: int) -> Iterator[Item]:
        """The records of one buffer (`body`: its bytes after the buffer header)."""
        end = min(want, len(body))
        pos = 0
        while pos + 4 <= end:
            marker = int.from_bytes(body[pos : pos + 4], "little")
            if marker == S.PADDING_MARKER:
                break
            where = f"buffer {index} (offset {offset:,}), record at buffer offset 0x{pos + S.BUFFER_HEADER_SIZE:x}"
            header_type, size, problem = _record_shape(body, pos, marker)
            kind = "bad_record"
            if problem is None and pos + size > end:
                cut = len(body) < want and pos + size <= want
                kind = "truncated_buffer" if cut else kind
                problem = (
                    f"a record of {size} bytes does not fit the {end - pos} bytes left in the "
                    "buffer" + (" (the file ends inside the buffer)" if cut else "")
                )
            if problem is not None:
                yield ParseIssue(
                    kind=kind,
                    message=f"{where}: {problem}; the rest of the buffer was not read",
                    offset=offset + S.BUFFER_HEADER_SIZE + pos,
                    excerpt=body[pos : pos + 32].hex(),
                )
                return
            self.line += 1
            place = Place(index, offset, pos + S.BUFFER_HEADER_SIZE, cpu, self.line)
            try:
                record = self.decoder.decode(body[pos : pos + size], header_type, place)
            except (RecordError, ValueError, IndexError) as exc:
                yield ParseIssue(
                    kind="bad_record",
                    message=f"{where}: {exc}; the record was skipped",
                    offset=offset + S.BUFFER_HEADER_SIZE + pos,
                    excerpt=body[pos : pos + 32].hex(),
                )
            else:
                yield record
                for warning in self.decoder.warnings:
                    yield ParseIssue(
                        kind="partly_decoded",
                        message=f"{where}: {warning}; the record was kept with its raw payload",
                        quarantined=False,
                        offset=offset + S.BUFFER_HEADER_SIZE + pos,
                    )
            pos += (size + S.RECORD_ALIGNMENT - 1) & ~(S.RECORD_ALIGNMENT - 1)
        if len(body) < want:
            yield ParseIssue(
                kind="truncated_buffer",
                message=f"buffer {index} (offset {offset:,}): the file ends {want - len(body):,} "
                "bytes before the buffer's last record; records there were lost",
                offset=offset,
            )

    def notes(self) -> Iterator[Item]:
        header = self.decoder.header
        parts = [f"{self.buffers} readable of {self.buffers + self.bad_buffers}"]
        if self.compressed:
            parts.append(f"{self.compressed} LZXpress-compressed")
        yield FileNote("buffers", ", ".join(parts))
        if header is None:
            yield FileNote(
                "clock",
                "no log file header record: times only where a raw value reads as a FILETIME",
            )
            return
        clock = header.clock
        if clock is None:
            yield FileNote(
                "clock",
                f"clock type {header.values['ReservedFlags']} unknown: times only where a raw value reads as a FILETIME",
            )
        elif clock.kind == S.CLOCK_SYSTEM_TIME:
            yield FileNote("clock", "system time: time stamps are FILETIMEs (UTC)")
        else:
            yield FileNote(
                "clock",
                f"{S.CLOCK_NAMES[clock.kind]} at {clock.frequency} Hz: ts = StartTime + "
                f"(time stamp - header record's time stamp) / frequency",
            )
        yield FileNote("trace_start", header.values["StartTime"])
        if header.end_filetime > 0:
            yield FileNote("trace_end", header.values["EndTime"])
        yield FileNote("logger", header.values["LoggerName"])
        if header.buffers_written != self.buffers + self.bad_buffers:
            yield FileNote(
                "buffers_written",
                f"the header says {header.buffers_written}; the file holds "
                f"{self.buffers + self.bad_buffers} (all were read)",
            )
        if header.events_lost:
            yield FileNote("events_lost", str(header.events_lost))
        if header.buffers_lost:
            yield FileNote("buffers_lost", str(header.buffers_lost))
        for reason, count in sorted(self.decoder.counts.items()):
            yield FileNote(f"raw: {reason}", str(count))


def _record_shape(body: bytes, pos: int, marker: int) -> tuple[int, int, str | None]:
    """(header type, size, problem) of the record at `pos`."""
    flags = marker >> 24
    if flags == S.MARKER_FLAGS_MESSAGE:
        header_type = S.TYPE_MESSAGE
        size = marker & 0xFFFF
        minimum = S.MESSAGE_HEADER.size
    elif flags == S.MARKER_FLAGS_HEADER:
        header_type = (marker >> 16) & 0xFF
        kernel = S.KERNEL_TYPES.get(header_type)
        if kernel is not None:
            if pos + 6 > len(body):
                return header_type, 0, "record header cut short"
            size = int.from_bytes(body[pos + 4 : pos + 6], "little")
            minimum = kernel.size
        else:
            size = marker & 0xFFFF
            if header_type in S.EVENT_TYPES:
                minimum = S.EVENT_HEADER.size
            elif header_type in S.CLASSIC_TYPES:
                minimum = S.CLASSIC_TYPES[header_type].size
            elif header_type in S.HEADER_TYPE_NAMES:
                minimum = 8
            else:
                return (
                    header_type,
                    0,
                    f"unknown header type 0x{header_type:02x} (marker 0x{marker:08x})",
                )
    else:
        return 0, 0, f"expected a record marker (flags 0xC0 or 0x90), found 0x{marker:08x}"
    if size < minimum:
        return (
            header_type,
            size,
            (
                f"a {S.HEADER_TYPE_NAMES.get(header_type, 'record')} record of {size} bytes, "
                f"shorter than its {minimum}-byte header"
            ),
        )
    return header_type, size, None


__all__ = ["NAME", "VERSION", "parse", "sniff"]
