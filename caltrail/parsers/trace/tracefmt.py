"""tracefmt and `netsh trace convert` text dumps of ETL traces (`[CPU]PID.TID::TIME [Module]Msg`).

Sources:
- Microsoft docs, "What is the text that precedes each trace message?" and "Example 7:
  Customizing the trace message prefix": the default `%TRACE_FORMAT_PREFIX%` is
  `[%9!d!]%8!04X!.%3!04X!::%4!s! [%1!s!]` (CPU decimal, PID and TID hex, time, module).
- Microsoft docs, "Example 4: Sequence numbers": `tracefmt -seq` writes an 8-hex-digit
  sequence number after the time.
- Microsoft docs, "Summary Message File": the summary lines tracefmt writes ("Files
  Processed:", "Total Buffers Processed", "Total Events  Processed", "Elapsed Time", a table).
- docs/FORMATS.md ("tracefmt and `netsh trace convert` text"), and the real excerpts among
  the ETL text samples of the public corpus beside the checkout (a netsh WLAN sample with
  TextAnalysisTool line numbers, spacing variants, 2-digit years, 7-digit fractions and
  wrapped messages).

What the parser does:
- A line that matches the prefix starts a record. Variants accepted: a TextAnalysisTool
  line number before the prefix (kept in fields["tat_line"]); optional space after `]` and
  after `::`; dates `MM/DD/YYYY-`, `MM/DD/YY-`, `YYYY-MM-DD ` and `YYYY/MM/DD-`; 0 to 9
  fractional digits (full text in `ts_raw`, `ts` truncated to microseconds); a sequence
  number between the time and the module (fields["SequenceNumber"]); `[Unknown]` or an
  empty module (empty gives provider None).
- A line that does not start a record is appended (with "\\n") to the message of the
  record just before it. It is instead kept as its own raw record (`raw=True`, message =
  the line) when there is no such record (before the first record, or after a raw line),
  when it looks like the start of a record in another prefix (a `[n]` bracket or a date at
  the start of the line), when it is a tracefmt summary line, or when the joined message
  would pass MAX_LINE_CHARS.
- Blank lines carry nothing and are skipped (they are not records).
- A line of binary junk (control characters, mostly undecodable bytes) that is not a record
  becomes a quarantined ParseIssue.
- Lines longer than MAX_LINE_CHARS are cut, with a non-quarantined ParseIssue.

Assumptions [U]:
- Timestamps are wall-clock time of the converting machine (unless tracefmt was told to
  write UTC, which the text does not say): read in `options.tz`, stored in UTC; FileNote
  ZONE_ASSUMED says so.
- Slash dates with the year last are month first (the only form in public samples);
  `options.date_order == "dmy"` swaps them. Two-digit years are 2000-2079 / 1980-1999.
- A file is tracefmt text when one of its first 50 non-blank lines matches the prefix.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import BinaryIO

from caltrail.parsers.base import (
    BUDGET_EXCEEDED,
    ZONE_ASSUMED,
    Budget,
    FileNote,
    Item,
    ParseIssue,
    ParseOptions,
    TraceRecord,
)
from caltrail.parsers.errors import InvalidSignatureError
from caltrail.parsers.textio import decode_head, iter_lines
from caltrail.parsers.trace.tracetime import (
    MAX_LINE_CHARS,
    excerpt,
    frac_to_us,
    is_junk,
    local_to_utc,
)

NAME = "tracefmt"
VERSION = "1"

# How far into a file the first record must appear (sniff and parse agree on this).
SNIFF_LINES = 50
SNIFF_CHARS = 64 * 1024
BUDGET_EVERY = 4096

_DATE = (
    r"(?:(?P<a1>\d{1,2})/(?P<a2>\d{1,2})/(?P<ay>\d{4}|\d{2})-"
    r"|(?P<iy>\d{4})-(?P<im>\d{1,2})-(?P<id>\d{1,2})[ T-]"
    r"|(?P<sy>\d{4})/(?P<sm>\d{1,2})/(?P<sd>\d{1,2})-)"
)
_TIME = r"(?P<H>\d{1,2}):(?P<M>\d{2}):(?P<S>\d{2})(?:\.(?P<frac>\d{1,9}))?"

PREFIX_RE = re.compile(
    r"^\s*(?:(?P<tat>\d{1,10})\s+)?"
    r"\[(?P<cpu>\d{1,5})\]\s?(?P<pid>[0-9A-Fa-f]{1,8})\.(?P<tid>[0-9A-Fa-f]{1,8})::\s?"
    rf"(?P<ts>{_DATE}{_TIME})"
    r"(?:\s+(?P<seq>[0-9A-Fa-f]{1,16}))?\s*"
    r"\[(?P<module>[^\]]*)\]"
    r"(?P<msg>.*)\Z",
    re.ASCII | re.DOTALL,
)

# A line that starts like some record (another prefix): never a continuation.
_OTHER_START_RE = re.compile(
    r"^\s*(?:\d+\s+)?(?:\[[0-9A-Fa-f]{1,8}\]|\d{1,4}[-/.]\d{1,2}[-/.]\d{1,4}[ T-]\d{1,2}:\d{2})",
    re.ASCII,
)
# tracefmt / netsh summary and table lines.
_FOOTER_RE = re.compile(
    r"^\s*(?:Files Processed:|Total (?:Buffers|Events|Formats|Messages)\b|Elapsed Time\b"
    r"|Summary\b|\+-{8,}|\|.*\|\s*\Z)",
)


def sniff(head: bytes, name: str) -> bool:
    """True when one of the first non-blank lines of `head` has the tracefmt prefix."""
    text = decode_head(head[:SNIFF_CHARS])
    seen = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        if PREFIX_RE.match(line):
            return True
        seen += 1
        if seen >= SNIFF_LINES:
            break
    return False


def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]:
    """Yield one TraceRecord per record (raw lines included), ParseIssues and FileNotes."""
    return _Parser(options).run(stream)


class _Parser:
    """The state of one parse: the pending record waiting for its wrapped lines."""

    def __init__(self, options: ParseOptions) -> None:
        self.options = options
        self.zone = options.tz
        self.dmy = options.date_order == "dmy"
        self.pending: TraceRecord | None = None
        self.pending_chars = 0
        self.raw_lines = 0
        self.slash_dates = 0

    # -- driver ----------------------------------------------------------------------
    def run(self, stream: BinaryIO) -> Iterator[Item]:
        lines = iter_lines(stream)
        before: list[tuple[int, str]] = []
        first: tuple[int, str] | None = None
        chars = 0
        for number, line in lines:
            if line.strip():
                if PREFIX_RE.match(line[:MAX_LINE_CHARS]):
                    first = (number, line)
                    break
                before.append((number, line))
                chars += len(line)
            if len(before) >= SNIFF_LINES or chars >= SNIFF_CHARS or number >= 20 * SNIFF_LINES:
                break
        if first is None:
            shown = excerpt(before[0][1], 80) if before else "(no text)"
            raise InvalidSignatureError(
                f"no line in the first {len(before)} non-blank lines has the tracefmt prefix "
                f"'[CPU]PID.TID::TIME [Module]'; first line: {shown!r}"
            )
        yield FileNote(ZONE_ASSUMED, "trace text has no zone")
        for number, line in before:
            yield from self.line(number, line)
        yield from self.line(*first)
        budget = Budget(self.options.max_seconds)
        for number, line in lines:
            if number % BUDGET_EVERY == 0 and budget.exceeded():
                yield from self.flush()
                yield ParseIssue(
                    kind=BUDGET_EXCEEDED,
                    message=f"line {number}: stopped after {self.options.max_seconds:g} s "
                    "(work bound per file); the rest of the file was not read",
                    line=number,
                )
                return
            yield from self.line(number, line)
        yield from self.flush()
        yield from self.notes()

    def notes(self) -> Iterator[Item]:
        if self.slash_dates:
            order = "dmy (from options)" if self.dmy else "mdy (tracefmt month-first dates [U])"
            yield FileNote("date_order", order)
        if self.raw_lines:
            yield FileNote(
                "raw_lines",
                f"{self.raw_lines} lines matched no known prefix (kept as raw records)",
            )

    # -- one line --------------------------------------------------------------------
    def line(self, number: int, line: str) -> Iterator[Item]:
        if not line.strip():
            return
        if len(line) > MAX_LINE_CHARS:
            yield ParseIssue(
                kind="line_truncated",
                message=f"line {number}: {len(line)} characters, longer than the "
                f"{MAX_LINE_CHARS} kept; the rest of the line was dropped",
                quarantined=False,
                line=number,
                excerpt=excerpt(line),
            )
            line = line[:MAX_LINE_CHARS]
        match = PREFIX_RE.match(line)
        if match is not None:
            yield from self.flush()
            record = self.record(number, match)
            if record.ts is None:
                yield ParseIssue(
                    kind="bad_timestamp",
                    message=f"line {number}: expected a valid date and time, found "
                    f"{record.ts_raw!r}; the record is kept with ts None",
                    quarantined=False,
                    line=number,
                    excerpt=excerpt(line),
                )
            self.pending = record
            self.pending_chars = len(record.message or "")
            return
        if is_junk(line):
            yield from self.flush()
            yield ParseIssue(
                kind="binary_line",
                message=f"line {number}: expected text (a trace record or a continuation), "
                "found binary data",
                line=number,
                excerpt=excerpt(line),
            )
            return
        pending = self.pending
        if pending is not None and not _OTHER_START_RE.match(line) and not _FOOTER_RE.match(line):
            if self.pending_chars + 1 + len(line) <= MAX_LINE_CHARS:
                pending.message = f"{pending.message}\n{line}"
                self.pending_chars += 1 + len(line)
                return
            yield ParseIssue(
                kind="message_too_long",
                message=f"line {number}: the record of line {pending.line} would pass "
                f"{MAX_LINE_CHARS} characters; this line is kept as a raw record",
                quarantined=False,
                line=number,
                excerpt=excerpt(line),
            )
        yield from self.flush()
        self.raw_lines += 1
        yield TraceRecord.bare(number, message=line, raw=True)

    def flush(self) -> Iterator[Item]:
        if self.pending is not None:
            yield self.pending
            self.pending = None
            self.pending_chars = 0

    def record(self, number: int, m: re.Match[str]) -> TraceRecord:
        fields: dict[str, str | None] = {}
        if m["seq"] is not None:
            fields["SequenceNumber"] = m["seq"]
        if m["tat"] is not None:
            fields["tat_line"] = m["tat"]
        module = m["module"]
        return TraceRecord(
            ts=self.timestamp(m),
            ts_raw=m["ts"],
            cpu=int(m["cpu"]),
            pid=int(m["pid"], 16),
            tid=int(m["tid"], 16),
            provider=module if module.strip() else None,
            event_id=None,
            level=None,
            function=None,
            message=m["msg"],
            fields=fields,
            line=number,
        )

    def timestamp(self, m: re.Match[str]) -> dt.datetime | None:
        if m["ay"] is not None:
            self.slash_dates += 1
            year = int(m["ay"])
            if len(m["ay"]) == 2:
                year += 2000 if year < 80 else 1900
            first, second = int(m["a1"]), int(m["a2"])
            month, day = (second, first) if self.dmy else (first, second)
        elif m["iy"] is not None:
            year, month, day = int(m["iy"]), int(m["im"]), int(m["id"])
        else:
            year, month, day = int(m["sy"]), int(m["sm"]), int(m["sd"])
        return local_to_utc(
            year,
            month,
            day,
            int(m["H"]),
            int(m["M"]),
            int(m["S"]),
            frac_to_us(m["frac"]),
            self.zone,
        )
