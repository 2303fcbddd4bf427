"""tracerpt CSV dumps of ETL traces (`tracerpt x.etl -o x.csv -of CSV`).

Sources:
- docs/FORMATS.md ("tracerpt CSV"), and a real tracerpt CSV header among the ETL text
  samples of the public corpus beside the checkout: the header `Event Name, Type, Event ID, Version, Channel, Level,
  Opcode, Task, Keyword, PID, TID, Processor Number, Instance ID, Parent Instance ID,
  Activity ID, Related Activity ID, Clock-Time, Kernel(ms), User(ms), User Data`; separator
  comma + space; PID/TID in hex (`0x00000A1C`); "User Data" spread over a variable number
  of trailing columns; first data row `EventTrace, Header, ...`.
- Windows 2000 Resource Kit, "tracedmp": Clock-time is the event timestamp; the user data
  may span several columns.
- wmicore.mof `EventTrace_Header` (as transcribed in public ETL readers): the header event's
  payload is BufferSize, Version, ProviderVersion, NumberOfProcessors, EndTime,
  TimerResolution, MaximumFileSize, LogFileMode, BuffersWritten, StartBuffers, PointerSize,
  EventsLost, CPUSpeed, LoggerName, LogFileName, TimeZoneInformation, BootTime, PerfFreq,
  StartTime, ReservedFlags (the clock type: 1 QPC, 2 system time, 3 CPU cycles),
  BuffersLost, ... . FILETIMEs are 100 ns ticks since 1601-01-01 UTC.
- ProcessTrace (Microsoft docs, EVENT_TRACE_LOGFILE / PROCESS_TRACE_MODE_RAW_TIMESTAMP):
  unless raw timestamps are asked for, consumers receive event times already converted to
  FILETIME, which is what public tracerpt CSV rows show (18-digit Clock-Time values).

Columns are found by header name, so an older or shorter header that still starts with
`Event Name, Type` and ends with `User Data` (and has Clock-Time) is read as well. Every
column before "User Data" is fixed (kept in fields by its header name unless promoted to
an attribute); the rest of the row is the user data tail, kept as fields["UserData"] (a
JSON list) and fields["UserData.0"], ["UserData.1"], ...; `message` is the tail joined
back with ", " (a WPP message with commas was split by the separator).

Clock-Time → ts, per row:
1. a value that reads as a FILETIME between 1990 and 2100 is one (UTC);
2. otherwise, when an EventTrace header row gave StartTime and a frequency for its clock type
   (PerfFreq for QPC, CPUSpeed MHz for CPU cycles) and its own Clock-Time is a raw value,
   ts = StartTime + (Clock-Time - header Clock-Time) / frequency [U: the header row's
   Clock-Time taken as the raw clock at StartTime];
3. otherwise ts is None and ts_raw keeps the value.
FileNote "clock" says which rule gave how many rows. The header row's named values go to
fields["Header.<Name>"] (BufferSize ... CPUSpeed, BootTime, PerfFreq, StartTime,
ReservedFlags, BuffersLost).

Assumptions [U]:
- The header row's user-data columns: the first thirteen are read by position; the
  PerfFreq/StartTime/ReservedFlags group is found by shape (a positive number, a plausible
  FILETIME, 0..3) after them, because TimeZoneInformation and the name strings may take a
  varying number of columns.
- PID/TID/Processor Number without `0x` are decimal.
- A row is one line: a quoted value that spans lines is not joined (its lines are reported).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain, compress
from json.encoder import encode_basestring
from operator import itemgetter
from typing import BinaryIO, NamedTuple

from caltrail.parsers.base import (
    BUDGET_EXCEEDED,
    Budget,
    FileNote,
    Item,
    ParseIssue,
    ParseOptions,
    RowBlock,
    TraceRecord,
)
from caltrail.parsers.errors import InvalidSignatureError
from caltrail.parsers.textio import decode_head, iter_lines
from caltrail.parsers.trace.tracetime import (
    FILETIME_EPOCH,
    FILETIME_PLAUSIBLE_MAX,
    FILETIME_PLAUSIBLE_MIN,
    MAX_LINE_CHARS,
    excerpt,
    filetime_to_utc,
    is_junk,
    is_plausible_filetime,
    parse_int,
)

NAME = "tracerpt_csv"
VERSION = "1"

HEADER: tuple[str, ...] = (
    "Event Name",
    "Type",
    "Event ID",
    "Version",
    "Channel",
    "Level",
    "Opcode",
    "Task",
    "Keyword",
    "PID",
    "TID",
    "Processor Number",
    "Instance ID",
    "Parent Instance ID",
    "Activity ID",
    "Related Activity ID",
    "Clock-Time",
    "Kernel(ms)",
    "User(ms)",
    "User Data",
)
# Columns promoted to TraceRecord attributes; every other fixed column goes to fields.
_PROMOTED = {"Event Name", "Event ID", "Level", "PID", "TID", "Processor Number", "Clock-Time"}
# EventTrace header user data, by position (wmicore.mof EventTrace_Header) [U].
_HEADER_POSITIONAL = (
    "BufferSize",
    "Version",
    "ProviderVersion",
    "NumberOfProcessors",
    "EndTime",
    "TimerResolution",
    "MaximumFileSize",
    "LogFileMode",
    "BuffersWritten",
    "StartBuffers",
    "PointerSize",
    "EventsLost",
    "CPUSpeed",
)
_HEADER_KEYS = tuple(f"Header.{name}" for name in _HEADER_POSITIONAL)
_CLOCK_TYPES = {1: "QPC", 2: "system time", 3: "CPU cycle counter"}
_USER_DATA_KEYS = tuple(f"UserData.{i}" for i in range(64))
MAX_PLAIN_TAIL = len(_USER_DATA_KEYS)  # user data values the plain path names by these keys

BUDGET_EVERY = 4096
# RowBlocks (ParseOptions.row_blocks): the rules pipeline/trace_blocks.py reads them by, the
# most rows a block holds, and the separator its rows' values are joined with (a printable
# line cannot hold it).
BLOCK_RULES = "tracerpt_csv"
BLOCK_ROWS = 8192
BLOCK_SEPARATOR = "\x07"  # (not printable, and not whitespace for str.strip either)
MAX_KNOWN_INTS = 4096
SNIFF_BLANK_LINES = 5


def _columns(line: str) -> list[str]:
    return [part.strip() for part in line.split(",")]


def _is_header(columns: list[str]) -> bool:
    if tuple(columns) == HEADER:
        return True
    return (
        len(columns) >= 4
        and columns[0] == "Event Name"
        and columns[1] == "Type"
        and columns[-1] == "User Data"
        and "Clock-Time" in columns
    )


def sniff(head: bytes, name: str) -> bool:
    """True when the first non-blank line of `head` is the tracerpt CSV header."""
    text = decode_head(head[: 64 * 1024])
    for number, line in enumerate(text.splitlines()):
        if line.strip():
            return _is_header(_columns(line))
        if number >= SNIFF_BLANK_LINES:
            break
    return False


def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]:
    """Yield one TraceRecord per data row, ParseIssues and FileNotes."""
    lines = iter_lines(stream)
    for number, line in lines:
        if not line.strip():
            if number > SNIFF_BLANK_LINES:
                break
            continue
        columns = _columns(line[:4096])
        if not _is_header(columns):
            raise InvalidSignatureError(
                f"line {number}: expected the tracerpt CSV header 'Event Name, Type, Event ID, "
                f"...', found {excerpt(line, 80)!r}"
            )
        return _Parser(columns, options).run(lines)
    raise InvalidSignatureError("line 1: expected the tracerpt CSV header, found no text")


def split_row(line: str) -> tuple[list[str], bool]:
    """Split a row on ", ", honouring double quotes; returns (values, unterminated_quote).

    Values are stripped of the padding tracerpt writes; a value quoted as a whole is
    unquoted ("" inside it becomes "). An unterminated quote keeps the rest of the line as
    one value, as written.
    """
    stripped = line.rstrip()
    trailing_empty = stripped.endswith(",")
    if trailing_empty:
        stripped = stripped[:-1]
    quote = stripped.find('"')
    if quote < 0:  # the usual row: nothing to unquote
        values = list(map(str.strip, stripped.split(", ")))
        unterminated = False
    else:
        one = _split_one_quoted(stripped) if stripped.count('"') == 2 else None
        if one is not None:
            values, unterminated = one, False
        else:
            values, unterminated = _split_quoted(stripped, quote)
    if trailing_empty:
        values.append("")
    return values, unterminated


def _split_one_quoted(text: str) -> list[str] | None:
    """`_split_quoted` for a text with exactly two quotes, when they enclose one whole value
    (blanks aside): the usual quoted row of a trace, split by a few C calls. None for any
    other place of the two (the general split reads it)."""
    left, inside, right = text.split('"')
    before = left.split(", ")
    after = right.split(", ")
    if before[-1].strip() or after[0].strip():  # a quote inside a value
        return None
    return [*map(str.strip, before[:-1]), inside, *map(str.strip, after[1:])]


def _split_quoted(text: str, quote: int) -> tuple[list[str], bool]:
    """`split_row` for a text with a quote at `quote` (its first): the text is split at
    each ", ", except that a piece starting with a quote (after blanks) runs on over the
    separators until it holds an even number of quotes. Found by searching the text from
    quote to quote, not piece by piece: the pieces between quotes are split and stripped
    in one C call each (the rows of a trace have long runs of plain columns)."""
    values: list[str] = []
    start = 0  # the pieces from here to the one holding `quote` hold no quote
    while quote >= 0:
        sep = text.rfind(", ", start, quote)
        begin = start if sep < 0 else sep + 2  # where the piece holding the quote starts
        if text[begin:quote].strip():  # the quote is inside a piece: kept as written
            sep = text.find(", ", quote)
            if sep < 0:
                break
            quote = text.find('"', sep)
            continue
        if begin > start:
            values += map(str.strip, text[start : begin - 2].split(", "))
        # The quoted piece ends at the first separator after an even number of quotes
        # (close: the quote that makes the number even; sep: the separator after it).
        close = text.find('"', quote + 1)
        while close >= 0:
            sep = text.find(", ", close)
            quote = text.find('"', close + 1)
            if quote < 0 or 0 <= sep < quote:
                break
            close = text.find('"', quote + 1)
        value = text[begin : sep if close >= 0 and sep >= 0 else len(text)].strip()
        if len(value) >= 2 and value[-1] == '"':  # (value[0] is the opening quote)
            value = value[1:-1].replace('""', '"')
        values.append(value)
        if close < 0:  # unterminated: the value runs to the end of the line
            return values, True
        if sep < 0:
            return values, False
        start = sep + 2
    values += map(str.strip, text[start:].split(", "))
    return values, False


@dataclass(slots=True)
class _TraceHeader:
    """What an EventTrace header row says about the clock."""

    anchor: int | None = None
    start_filetime: int | None = None
    end_filetime: int | None = None
    perf_freq: int | None = None
    cpu_mhz: int | None = None
    clock_type: int | None = None

    def frequency(self) -> int | None:
        if self.clock_type == 3:
            return self.cpu_mhz * 1_000_000 if self.cpu_mhz else None
        if self.clock_type in (1, None, 0):
            return self.perf_freq if self.perf_freq else None
        return None


@dataclass(frozen=True, slots=True)
class BlockLayout:
    """Where a RowBlock's values are (positions in each row's values, as `plain` reads them),
    given as the block's `facts["layout"]`.

    Attributes:
        fixed: the header's names of the columns before the user data (its width).
        kept: the positions of the fixed columns kept in `fields`, in `fields`' order
            (ascending: a header whose kept columns are not in order gives no blocks).
        name, level, clock: Event Name, Level, Clock-Time.
        ints: (position, bits) of Event ID, PID, TID, Processor Number, in that order.
    """

    fixed: tuple[str, ...]
    kept: tuple[int, ...]
    name: int
    level: int
    clock: int
    ints: tuple[tuple[int, int], ...]


@dataclass(slots=True)
class _Gathered:
    """The rows of the next RowBlock: each row's values joined by BLOCK_SEPARATOR, whether
    they were split here ("1", see `block_text`), line numbers, and the lines as read (for
    the block's `records`)."""

    texts: list[str] = field(default_factory=list)
    split_here: list[str] = field(default_factory=list)
    numbers: list[int] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)


class _Numbers(NamedTuple):
    """Event ID, PID, TID and Processor Number of a row, and the texts among them that are
    not numbers, as (column, text) pairs for the row's fields."""

    event_id: int | None
    pid: int | None
    tid: int | None
    cpu: int | None
    misfits: tuple[tuple[str, str], ...]


class _Parser:
    def __init__(self, columns: list[str], options: ParseOptions) -> None:
        self.options = options
        self.columns = columns
        self.fixed = columns[:-1]
        self.tail_at = len(self.fixed)  # where the user data starts
        self.index = {name: i for i, name in enumerate(self.fixed)}
        self.min_columns = self.index["Clock-Time"] + 1
        self.header: _TraceHeader | None = None
        self.header_rows = 0
        self.modes: dict[str, int] = {"filetime": 0, "relative": 0, "raw": 0}
        # Per row, columns are taken by these precomputed positions (None: no such column).
        self.kept = [(name, i) for name, i in self.index.items() if name not in _PROMOTED]
        self.int_columns = [
            # Event ID and Processor Number are int32 columns; PID and TID int64.
            (name, self.index.get(name), 32 if name in ("Event ID", "Processor Number") else 64)
            for name in ("Event ID", "PID", "TID", "Processor Number")
        ]
        self.at_name = self.index.get("Event Name")
        self.at_level = self.index.get("Level")
        self.at_clock = self.index["Clock-Time"]
        # The plain-row path takes its columns by two getters (one C call each); it needs
        # every promoted column and at least two kept ones (a getter of one gives no tuple).
        promoted = [self.at_name, self.at_level, self.at_clock]
        promoted += [i for _, i, _ in self.int_columns]
        self.plain_width = len(self.fixed) if None not in promoted and len(self.kept) > 1 else 0
        self.get_head = itemgetter(*(i or 0 for i in promoted[:3]))
        self.get_numbers = itemgetter(*(i or 0 for i in promoted[3:]))
        self.get_kept = itemgetter(*(i for _, i in self.kept))
        self.kept_names = [name for name, _ in self.kept]
        # The four number columns read together, by their texts: (Event ID, PID, TID,
        # Processor Number) and the texts that are not numbers (kept in fields). A trace
        # repeats a few such combinations on every line (one lserver process, a few
        # threads, a handful of event ids and processors), so each is read once; bounded
        # by MAX_KNOWN_INTS all the same.
        self.known_ints: dict[tuple[str, ...], _Numbers] = {}
        self.layout = self.block_layout() if options.row_blocks else None

    def block_layout(self) -> BlockLayout | None:
        """The layout of this header's rows for RowBlocks; None when the plain path cannot
        read its rows, when its fields would not be built in the order of the values (kept
        columns out of order, a fixed column named like a user-data key), or when Event
        Name is not the first column (`block_text` tells the EventTrace rows by it)."""
        kept = tuple(i for _, i in self.kept)
        if not self.plain_width or list(kept) != sorted(kept) or self.at_name != 0:
            return None
        if any(name == "UserData" or name.startswith("UserData.") for name in self.fixed):
            return None
        ints = tuple((i or 0, bits) for _, i, bits in self.int_columns)
        assert self.at_name is not None  # (plain_width: every promoted column is there)
        assert self.at_level is not None
        return BlockLayout(
            tuple(self.fixed), kept, self.at_name, self.at_level, self.at_clock, ints
        )

    def run(self, lines: Iterator[tuple[int, str]], plain: bool = True) -> Iterator[Item]:
        """Every row's items, then the notes; `plain=False` reads every row by `row` (the
        tests compare both ways)."""
        budget = Budget(self.options.max_seconds)
        gather = self.block_text if plain and self.layout is not None else None
        block = _Gathered()
        try:
            for number, line in lines:
                if number % BUDGET_EVERY == 0 and budget.exceeded():
                    if block.numbers:
                        yield from self.block(block)
                        block = _Gathered()
                    yield ParseIssue(
                        kind=BUDGET_EXCEEDED,
                        message=f"line {number}: stopped after {self.options.max_seconds:g} "
                        "s (work bound per file); the rest of the file was not read",
                        line=number,
                    )
                    break
                if not line or line.isspace():  # (= not line.strip(), without a copy)
                    continue
                if gather is not None:
                    joined = gather(line)
                    if joined is not None:
                        block.texts.append(joined[0])
                        block.split_here.append(joined[1])
                        block.numbers.append(number)
                        block.lines.append(line)
                        if len(block.numbers) >= BLOCK_ROWS:
                            yield from self.block(block)
                            block = _Gathered()
                        continue
                    if block.numbers:  # (the rows before this one first)
                        yield from self.block(block)
                        block = _Gathered()
                record = self.plain(number, line) if plain else None
                if record is not None:
                    yield record
                else:
                    yield from self.row(number, line)
        except Exception:
            # The reading stopped (a read error): the rows gathered were read, and are given
            # before the error goes on, as they would be without blocks.
            if block.numbers:
                yield from self.block(block)
            raise
        if block.numbers:
            yield from self.block(block)
        yield from self.notes()

    def block_text(self, line: str) -> tuple[str, str] | None:
        """A row for a RowBlock: its values joined by BLOCK_SEPARATOR, and "1" when they were
        split here (a row with quotes or a trailing comma: stripped already, and a value's
        padding inside its quotes kept) or "" when the bulk reading splits and strips them.
        (Telling which split rows hold such padding costs more per row than the bulk
        reading's choice per value.) None for a line `plain` would not read, and for the
        header or an EventTrace row (told by the first value's start: a provider whose name
        only starts so goes to the per-row reading, which reads it as `plain` does)."""
        if len(line) > MAX_LINE_CHARS or "\ufffd" in line or not line.isprintable():
            return None
        text = line.rstrip()
        if text.lstrip()[:10].lower() in ("eventtrace", "event name"):
            return None
        if text.endswith(",") or '"' in text:
            values, unterminated = split_row(line)
            if unterminated:
                return None
            return BLOCK_SEPARATOR.join(values), "1"
        return text.replace(", ", BLOCK_SEPARATOR), ""

    def block(self, gathered: _Gathered) -> Iterator[Item]:
        """The gathered rows as one RowBlock. Its `records` reads them one by one (`plain`,
        else `row`), the reference; read in bulk instead, every row's clock was a FILETIME
        (the bulk rules read no other), counted here as `plain` counts it."""
        replayed = False

        def records() -> Iterator[Item]:
            nonlocal replayed
            replayed = True
            return self.replay(gathered)

        assert self.layout is not None  # (only gathered with a layout)
        yield RowBlock(
            TraceRecord.table,
            BLOCK_RULES,
            {"values": gathered.texts, "split_here": gathered.split_here},
            gathered.numbers,
            {"layout": self.layout},
            records,
        )
        if not replayed:
            self.modes["filetime"] += len(gathered.numbers)

    def replay(self, gathered: _Gathered) -> Iterator[Item]:
        for number, line in zip(gathered.numbers, gathered.lines, strict=True):
            record = self.plain(number, line)
            if record is not None:
                yield record
            else:
                yield from self.row(number, line)

    def plain(self, number: int, line: str) -> TraceRecord | None:
        """`row` for the usual data row, which gives one record and no issue or note: a
        printable line (so not junk) no longer than MAX_LINE_CHARS, no unterminated quote,
        every fixed column, neither the CSV header again nor an EventTrace row (whose
        header values `record` would take). None for any other line, before any state
        changed: then `row` reads it. What `record` does, with the columns taken by the
        getters and the usual values (decimal or 0x numbers, FILETIME clock) read inline;
        the tests hold the two to the same records."""
        if not self.plain_width or len(line) > MAX_LINE_CHARS:
            return None
        if "\ufffd" in line or not line.isprintable():
            return None
        # (split_row's usual case inline: its call and tuple saved on nearly every row)
        text = line.rstrip()
        if text.endswith(",") or '"' in text:
            values, unterminated = split_row(line)
            if unterminated:
                return None
        else:
            values = list(map(str.strip, text.split(", ")))
        if len(values) < self.plain_width or values[0] == self.columns[0]:
            return None
        provider, level, clock_text = self.get_head(values)
        if provider.lower() == "eventtrace":  # (after the split only: one row in a trace)
            return None
        tail = values[self.tail_at :]
        if len(tail) > MAX_PLAIN_TAIL:
            return None  # (rare: `record` names the keys one by one)
        number_texts = self.get_numbers(values)
        numbers = self.known_ints.get(number_texts)
        if numbers is None:
            if len(self.known_ints) >= MAX_KNOWN_INTS:
                self.known_ints.clear()
            numbers = self.known_ints[number_texts] = self.numbers(number_texts)
        event_id, pid, tid, cpu, misfits = numbers
        # The fields in `record`'s order, made by one dict call over C iterators: the kept
        # columns that are not empty (compress drops the "" values), the number texts that
        # are not numbers, then the user data. (zip's strict= would be a keyword call,
        # which costs more than the rest of the zip; the getters give the lengths.)
        kept = self.get_kept(values)
        pairs = chain(compress(zip(self.kept_names, kept), kept), misfits)  # noqa: B905
        message = None
        if tail:
            message = ", ".join(tail)
            if '"' in message or "\\" in message:
                user_data = "[" + ", ".join(map(encode_basestring, tail)) + "]"
            else:  # JSON strings with nothing to escape (a printable line has no control
                # character): joined as they are
                user_data = '["' + '", "'.join(tail) + '"]'
            pairs = chain(pairs, (("UserData", user_data),), zip(_USER_DATA_KEYS, tail))  # noqa: B905
        fields: dict[str, str | None] = dict(pairs)
        if clock_text.isdigit() and clock_text.isascii() and len(clock_text) == 18:
            clock = int(clock_text)
            if FILETIME_PLAUSIBLE_MIN <= clock < FILETIME_PLAUSIBLE_MAX:
                self.modes["filetime"] += 1
                # (timedelta's arguments by position: a keyword costs more than the addition)
                ts: dt.datetime | None = FILETIME_EPOCH + dt.timedelta(0, 0, clock // 10)
            else:
                ts = self.timestamp(clock_text)
        else:
            ts = self.timestamp(clock_text or None)
        # By position, in TraceRecord's order (ts, ts_raw, cpu, pid, tid, provider,
        # event_id, level, function, message, fields, line): twelve keywords cost more than
        # twice the call. (`record` names them: the tests comparing the two would see a
        # change of order.)
        return TraceRecord(
            ts,
            clock_text or None,
            cpu,
            pid,
            tid,
            provider or None,
            event_id,
            level or None,
            None,
            message,
            fields,
            number,
        )

    def numbers(self, texts: tuple[str, ...]) -> _Numbers:
        """The four number columns of `plain` read as `record` reads them, and the
        (column, text) pairs of the non-empty texts that are not numbers."""
        ints: list[int | None] = []
        misfits: list[tuple[str, str]] = []
        for text, (name, _, bits) in zip(texts, self.int_columns, strict=True):
            value = parse_int(text, bits) if text else None
            ints.append(value)
            if value is None and text:
                misfits.append((name, text))
        event_id, pid, tid, cpu = ints
        return _Numbers(event_id, pid, tid, cpu, tuple(misfits))

    def row(self, number: int, line: str) -> Iterator[Item]:
        if len(line) > MAX_LINE_CHARS:
            yield ParseIssue(
                kind="line_truncated",
                message=f"line {number}: {len(line)} characters, longer than the "
                f"{MAX_LINE_CHARS} kept; the rest of the row was dropped",
                quarantined=False,
                line=number,
                excerpt=excerpt(line),
            )
            line = line[:MAX_LINE_CHARS]
        if is_junk(line):
            yield ParseIssue(
                kind="binary_line",
                message=f"line {number}: expected a CSV row, found binary data",
                line=number,
                excerpt=excerpt(line),
            )
            return
        values, unterminated = split_row(line)
        if len(values) < self.min_columns:
            yield ParseIssue(
                kind="short_row",
                message=f"line {number}: expected at least {self.min_columns} columns (up to "
                f"Clock-Time), found {len(values)}",
                line=number,
                excerpt=excerpt(line),
            )
            return
        if values[0] == self.columns[0] and values[: len(self.columns)] == self.columns:
            yield ParseIssue(
                kind="repeated_header",
                message=f"line {number}: the CSV header appears again; skipped",
                quarantined=False,
                line=number,
            )
            return
        if unterminated:
            yield ParseIssue(
                kind="unterminated_quote",
                message=f"line {number}: a quoted value is not closed on its line; the rest "
                "of the line is kept as one value",
                quarantined=False,
                line=number,
                excerpt=excerpt(line),
            )
        notes, record = self.record(number, values)
        if notes:
            yield from notes
        yield record

    @staticmethod
    def value(values: list[str], i: int | None) -> str | None:
        """The value at position `i`; None when there is no such column or it is empty."""
        if i is None or i >= len(values) or values[i] == "":
            return None
        return values[i]

    def record(self, number: int, values: list[str]) -> tuple[list[Item], TraceRecord]:
        """The record of one row, after the notes its EventTrace header row gives."""
        count = len(values)
        fields: dict[str, str | None] = {
            name: values[i] for name, i in self.kept if i < count and values[i] != ""
        }
        ints: list[int | None] = []
        for name, i, bits in self.int_columns:
            text = values[i] if i is not None and i < count and values[i] != "" else None
            number_value = parse_int(text, bits)
            ints.append(number_value)
            if number_value is None and text is not None:
                fields[name] = text
        event_id, pid, tid, cpu = ints
        tail = values[len(self.fixed) :]
        if tail:
            # = json.dumps(tail, ensure_ascii=False), which builds an encoder per call
            fields["UserData"] = "[" + ", ".join(map(encode_basestring, tail)) + "]"
            if len(tail) <= len(_USER_DATA_KEYS):  # keys made once, not per row
                fields.update(zip(_USER_DATA_KEYS, tail, strict=False))
            else:
                for i, item in enumerate(tail):
                    fields[f"UserData.{i}"] = item
        provider = self.value(values, self.at_name)
        clock_text = self.value(values, self.at_clock)
        notes: list[Item] = []
        is_header = (provider or "").lower() == "eventtrace" and (
            fields.get("Type") or ""
        ).lower() == "header"
        if is_header:
            notes = self.read_header(parse_int(clock_text), tail, fields)
        return notes, TraceRecord(
            ts=self.timestamp(clock_text),
            ts_raw=clock_text,
            cpu=cpu,
            pid=pid,
            tid=tid,
            provider=provider,
            event_id=event_id,
            level=self.value(values, self.at_level),
            function=None,
            message=", ".join(tail) if tail else None,
            fields=fields,
            line=number,
        )

    def read_header(
        self, clock: int | None, tail: list[str], fields: dict[str, str | None]
    ) -> list[Item]:
        self.header_rows += 1
        header = _TraceHeader(anchor=clock)
        fields.update(
            {key: value for key, value in zip(_HEADER_KEYS, tail, strict=False) if value != ""}
        )
        # Only positions 4 (EndTime), 12 (CPUSpeed) and those after the positional ones
        # are read as numbers.
        numbers = [parse_int(v) if i == 4 or i >= 12 else None for i, v in enumerate(tail)]
        if len(numbers) > 12:
            end, mhz = numbers[4], numbers[12]
            header.end_filetime = end if end is not None and is_plausible_filetime(end) else None
            header.cpu_mhz = mhz if mhz is not None and mhz > 0 else None
        for i in range(len(_HEADER_POSITIONAL), len(numbers) - 2):
            freq, start, flags = numbers[i], numbers[i + 1], numbers[i + 2]
            if (
                freq is not None
                and freq > 0
                and start is not None
                and is_plausible_filetime(start)
                and flags is not None
                and 0 <= flags <= 3
            ):
                header.perf_freq, header.start_filetime, header.clock_type = freq, start, flags
                fields["Header.PerfFreq"], fields["Header.StartTime"] = tail[i], tail[i + 1]
                fields["Header.ReservedFlags"] = tail[i + 2]
                if i - 1 >= len(_HEADER_POSITIONAL):
                    fields["Header.BootTime"] = tail[i - 1]
                if i + 3 < len(tail):
                    fields["Header.BuffersLost"] = tail[i + 3]
                break
        notes: list[Item] = []
        if self.header is None:
            notes.extend(self.header_notes(header, fields))
        self.header = header
        return notes

    def header_notes(self, header: _TraceHeader, fields: dict[str, str | None]) -> list[Item]:
        notes: list[Item] = []
        for key, filetime in (
            ("trace_start", header.start_filetime),
            ("trace_end", header.end_filetime),
        ):
            when = filetime_to_utc(filetime) if filetime is not None else None
            if when is not None:
                notes.append(FileNote(key, when.isoformat()))
        if header.perf_freq is not None:
            notes.append(FileNote("perf_freq", str(header.perf_freq)))
        if header.clock_type is not None:
            kind = _CLOCK_TYPES.get(header.clock_type, "unknown")
            notes.append(FileNote("clock_type", f"{header.clock_type} ({kind})"))
        for key, name in (
            ("events_lost", "Header.EventsLost"),
            ("buffers_lost", "Header.BuffersLost"),
        ):
            if fields.get(name) is not None:
                notes.append(FileNote(key, str(fields[name])))
        return notes

    def timestamp(self, clock_text: str | None) -> dt.datetime | None:
        clock = parse_int(clock_text)
        if clock is None:
            self.modes["raw"] += 1
            return None
        if is_plausible_filetime(clock):
            self.modes["filetime"] += 1
            return filetime_to_utc(clock)
        header = self.header
        if header is not None and header.anchor is not None and header.start_filetime:
            frequency = header.frequency()
            if frequency and not is_plausible_filetime(header.anchor):
                ticks = (clock - header.anchor) * 10_000_000 // frequency
                self.modes["relative"] += 1
                return filetime_to_utc(header.start_filetime + ticks)
        self.modes["raw"] += 1
        return None

    def notes(self) -> Iterator[Item]:
        parts = []
        if self.modes["filetime"]:
            parts.append(
                f"FILETIME: Clock-Time read as 100 ns ticks since 1601 UTC "
                f"({self.modes['filetime']} rows)"
            )
        if self.modes["relative"]:
            header = self.header
            freq = header.frequency() if header else None
            parts.append(
                f"relative: ts = header StartTime + (Clock-Time - header Clock-Time) / "
                f"{freq} Hz [U] ({self.modes['relative']} rows)"
            )
        if self.modes["raw"]:
            parts.append(
                "raw: no conversion, ts None and ts_raw = Clock-Time (not a FILETIME and no "
                f"usable EventTrace header) ({self.modes['raw']} rows)"
            )
        if parts:
            yield FileNote("clock", "; ".join(parts))
        if self.header_rows > 1:
            yield FileNote("trace_headers", f"{self.header_rows} EventTrace header rows")
