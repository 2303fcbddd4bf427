"""Timestamps and small text helpers shared by the trace-dump parsers.

Used by `parsers.trace.tracefmt`, `parsers.trace.tracerpt_xml` and `parsers.trace.tracerpt_csv`.

Sources:
- FILETIME: 100 ns intervals since 1601-01-01 UTC (Microsoft docs, FILETIME structure).
- tracerpt XML `TimeCreated/@SystemTime`: ISO 8601 with 7 to 9 fractional digits and `Z`,
  `+00:00` or a local offset (docs/FORMATS.md, "tracerpt XML").
- Text dumps carry local wall-clock time without a zone (docs/FORMATS.md, "Trace dumps"):
  the caller passes the zone the user gave (`ParseOptions.tz`, a tzinfo).

Assumptions [U]:
- A wall-clock time that falls in a DST gap or overlap is read with `fold=0` (zoneinfo's
  default: the earlier of two readings), because the text gives no way to tell.
- Fractions beyond microseconds are truncated (not rounded) in `ts`; callers keep the full
  text in `ts_raw`.
"""

from __future__ import annotations

import datetime as dt
import re

UTC = dt.UTC

# Longest line (in characters) a trace parser keeps; longer lines are cut with a warning.
MAX_LINE_CHARS = 1 << 20

FILETIME_EPOCH = dt.datetime(1601, 1, 1, tzinfo=UTC)
# FILETIME values of 1990-01-01 and 2100-01-01 UTC: a clock value between them is read as a
# FILETIME; anything else (QPC ticks, CPU cycles) is not a wall-clock time.
FILETIME_PLAUSIBLE_MIN = 122_756_256_000_000_000
FILETIME_PLAUSIBLE_MAX = 157_469_184_000_000_000

_ISO_RE = re.compile(
    r"\s*(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})[T ](?P<h>\d{2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?:[.,](?P<frac>\d{1,12}))?\s*(?P<zone>Z|[+-]\d{2}:?\d{2})?\s*\Z",
    re.ASCII,
)

_JUNK_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def frac_to_us(frac: str | None) -> int:
    """Microseconds from the fractional-second digits ("998" -> 998000), truncated."""
    if not frac:
        return 0
    return int((frac + "000000")[:6])


def local_to_utc(
    year: int,
    month: int,
    day: int,
    hour: int,
    minute: int,
    second: int,
    micro: int,
    zone: dt.tzinfo,
) -> dt.datetime | None:
    """A wall-clock time read in `zone`, converted to UTC; None when it is not a valid date."""
    try:
        local = dt.datetime(year, month, day, hour, minute, second, micro, tzinfo=zone)
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def parse_iso(text: str, zone: dt.tzinfo) -> tuple[dt.datetime | None, bool]:
    """Parse an ISO 8601 time such as tracerpt's SystemTime.

    Returns (UTC datetime or None, zone_assumed). zone_assumed is True when the text had no
    offset and was read in `zone`.
    """
    m = _ISO_RE.match(text)
    if m is None:
        return None, False
    micro = frac_to_us(m["frac"])
    parts = (int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"]), int(m["mi"]), int(m["s"]))
    zone_text = m["zone"]
    if zone_text is None:
        return local_to_utc(*parts, micro, zone), True
    if zone_text == "Z":
        offset = dt.timedelta(0)
    else:
        digits = zone_text[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            return None, False
        offset = dt.timedelta(hours=hours, minutes=minutes)
        if zone_text[0] == "-":
            offset = -offset
    try:
        value = dt.datetime(*parts, micro, tzinfo=dt.timezone(offset))
        return value.astimezone(UTC), False
    except (ValueError, OverflowError):
        return None, False


def filetime_to_utc(filetime: int) -> dt.datetime | None:
    """A FILETIME (100 ns ticks since 1601-01-01 UTC) as a UTC datetime (microseconds)."""
    if filetime < 0:
        return None
    try:
        return FILETIME_EPOCH + dt.timedelta(microseconds=filetime // 10)
    except OverflowError:
        return None


def is_plausible_filetime(value: int) -> bool:
    """True when `value` read as a FILETIME falls between 1990 and 2100."""
    return FILETIME_PLAUSIBLE_MIN <= value < FILETIME_PLAUSIBLE_MAX


def parse_int(text: str | None, bits: int = 64) -> int | None:
    """An integer from "0x1A2B" (hex) or "1234" (decimal); None when it is neither.

    Values outside the signed `bits`-bit range are refused (they cannot be stored: 32 for
    int32 columns such as cpu and event_id, else 64).
    """
    if text is None:
        return None
    if text.isdigit() and text.isascii():  # the usual case: plain decimal digits
        value = int(text)
        return value if value < (_INT64_LIMIT if bits == 64 else 1 << (bits - 1)) else None
    if text[:2] == "0x" and text.isalnum() and text.isascii():  # tracerpt's PID/TID
        # (what the general reading below does when there is nothing to strip)
        try:
            value = int(text[2:], 16)
        except ValueError:
            return None
        return value if value < (_INT64_LIMIT if bits == 64 else 1 << (bits - 1)) else None
    value_text = text.strip()
    try:
        if value_text[:2] in ("0x", "0X"):
            value = int(value_text[2:], 16)
        elif value_text.isascii() and value_text.lstrip("-").isdigit():
            value = int(value_text)
        else:
            return None
    except ValueError:
        return None
    limit = _INT64_LIMIT if bits == 64 else 1 << (bits - 1)
    if not -limit <= value < limit:
        return None
    return value


_INT64_LIMIT = 1 << 63


def is_junk(line: str) -> bool:
    """True for a line that is binary junk rather than text.

    A C0 control character other than tab/line-ends, or more than a tenth of the line made
    of U+FFFD (bytes that did not decode). A few U+FFFD alone are tolerated: tracefmt writes
    the ANSI code page, so a non-ASCII name may not decode as UTF-8.
    """
    # (a printable line has no control character: isprintable is the cheaper test)
    if not line.isprintable() and _JUNK_RE.search(line):
        return True
    bad = line.count("\ufffd")
    return bad > 3 and bad * 10 > len(line)


def excerpt(text: str, limit: int = 160) -> str:
    """A short printable excerpt of `text`: control characters escaped, cut at `limit`."""
    cut = text[:limit]
    out = "".join(ch if ch.isprintable() or ch == " " else f"\\x{ord(ch):02x}" for ch in cut)
    if len(text) > limit:
        out += "..."
    return out
