"""Dates in WMI exports (DMTF and culture-formatted), and the snapshot time of an export.

Sources:
- docs/FORMATS.md ("Dates and sentinels"): DMTF DATETIME `yyyymmddHHMMSS.ffffff±UUU`
  (UUU = offset from UTC in minutes, local = UTC + UUU), `*` for unknown digits; the never
  sentinel `20380119031407.000000-000`; `Get-CimInstance | Export-Csv` writes dates in the
  exporting machine's culture ([U]) such as `10/5/2023 12:34:56 PM` or `05.10.2023 12:34:56`.
- Microsoft docs, "CIM_DATETIME" (DMTF datetime format, asterisks for unused fields).
- Checkmk's rds_licenses check shows agent rows with culture dates `01/08/2023 00:00:00`.

Assumptions:
- A DMTF value with `*` in the time or fraction reads those parts as 0; `*` in the year,
  month or day gives no date (None + a warning issue); `*` in the offset reads as +000.
- [U] Culture dates carry no zone: they are local time of the exporting machine, read in
  `options.tz`. Two-digit years are 2000-2099. The day/month order is settled by the file's
  own values when one has a first field above 12 (dmy) or a second field above 12 (mdy);
  otherwise `options.date_order`, then `options.culture` (a few cultures are month-first,
  the rest day-first), then mdy flagged as a guess.
- [U] The never sentinel may appear as local wall-clock time (2038-01-19 03:14:07 in the
  export) or as that instant in UTC: both mean "never".
- [U] Dates in file names (`..._2025-11-03.csv`, `issued-20251103-1400.csv`, `2025_11_03`)
  are local time of the collecting machine, read in `options.tz`.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import NamedTuple
from zoneinfo import ZoneInfo

from caltrail.parsers.base import FileNote, ParseOptions

UTC = dt.UTC
NEVER_UTC = dt.datetime(2038, 1, 19, 3, 14, 7, tzinfo=UTC)
# The never sentinel as wall-clock fields (year .. microsecond), to compare without a datetime.
_NEVER_FIELDS = (2038, 1, 19, 3, 14, 7, 0)

#: How many date strings the order inference reads at most.
MAX_ORDER_SAMPLES = 10_000

_DMTF = re.compile(
    r"^\s*(?P<y>[\d*]{4})(?P<mo>[\d*]{2})(?P<d>[\d*]{2})(?P<h>[\d*]{2})(?P<mi>[\d*]{2})"
    r"(?P<s>[\d*]{2})\.(?P<f>[\d*]{1,6})(?P<sign>[+-])(?P<off>[\d*]{3})\s*$"
)
_CULTURE = re.compile(
    r"""^\s*(?P<a>\d{1,4})\s*[./-]\s*(?P<b>\d{1,2})\s*[./-]\s*(?P<c>\d{1,4})\.?
    (?:(?:\s+|T|,\s*)(?P<h>\d{1,2})[:.](?P<mi>\d{2})(?:[:.](?P<s>\d{2})(?:[.,](?P<f>\d{1,7}))?)?
    \s*(?P<ampm>[AaPp]\.?\s?[Mm]\.?)?)?
    \s*(?P<zone>Z|[+-]\d{2}:?\d{2})?\s*$""",
    re.VERBOSE,
)
_FILE_DATE = re.compile(
    r"(?<!\d)(?P<y>(?:19|20)\d{2})(?P<sep>[-_.]?)(?P<m>\d{2})(?P=sep)(?P<d>\d{2})"
    r"(?:[T_\- ]?(?P<H>\d{2})[-_.:]?(?P<M>\d{2})(?:[-_.:]?(?P<S>\d{2}))?)?(?!\d)"
)

#: Cultures whose short date is month first ([U]: the common ones; others are day first).
MDY_CULTURES = frozenset({"en", "en-us", "en-ph", "en-bz", "en-pr", "es-us", "en-um", "en-as"})


class DateResult(NamedTuple):
    """One parsed date (a NamedTuple: immutable, and cheap to make, two per WMI row).

    Attributes:
        value: the instant in UTC, or None (empty, never, unknown digits, unparseable).
        never: the 2038-01-19 03:14:07 "never" sentinel was seen (value is None).
        problem: why the value is None or doubtful; None when all is well.
        fatal: the text is not a date at all (the caller quarantines its row).
    """

    value: dt.datetime | None
    never: bool = False
    problem: str | None = None
    fatal: bool = False


def is_dmtf(text: str) -> bool:
    """True when `text` looks like a DMTF DATETIME."""
    return _DMTF.match(text) is not None


# One tzinfo per UTC offset (minutes) seen, instead of a new one per date: exports hold
# one or two offsets, and there are at most 2 x 1000 of them (three offset digits).
_OFFSET_ZONES: dict[int, dt.timezone] = {}


def _offset_zone(minutes: int) -> dt.timezone:
    zone = _OFFSET_ZONES.get(minutes)
    if zone is None:
        zone = _OFFSET_ZONES[minutes] = dt.timezone(dt.timedelta(minutes=minutes))
    return zone


def parse_dmtf(text: str) -> DateResult:
    """Parse a DMTF DATETIME (`20231005123456.000000+060`) to UTC."""
    m = _DMTF.match(text)
    if m is None:
        return DateResult(None, problem=f"not a DMTF date: {text!r}", fatal=True)
    return _dmtf_value(text, m)


def _dmtf_value(text: str, m: re.Match[str]) -> DateResult:
    """The date of a `_DMTF` match of `text`."""
    y, mo, d, h, mi, s, frac, sign, off = m.groups()
    if "*" in text:  # unknown digits somewhere (rare): the careful reading below
        if "*" in y + mo + d:
            return DateResult(None, problem=f"DMTF date with unknown date digits: {text!r}")
        h, mi, s, off = ("0" if "*" in g else g for g in (h, mi, s, off))
        if "*" in frac:
            frac = "0"
    micro = int(frac.ljust(6, "0"))
    offset = -int(off) if sign == "-" else int(off)
    fields = (int(y), int(mo), int(d), int(h), int(mi), int(s), micro)
    try:
        value = dt.datetime(*fields, tzinfo=_offset_zone(offset)).astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # OverflowError: year 1 or 9999 moved by its zone
        return DateResult(None, problem=f"invalid DMTF date {text!r}: {exc}", fatal=True)
    if value == NEVER_UTC or fields == _NEVER_FIELDS:
        return DateResult(None, never=True)
    return DateResult(value)


def order_evidence(text: str) -> str | None:
    """What one culture date says about the field order: "dmy", "mdy", "ymd" or None."""
    m = _CULTURE.match(text)
    if m is None or is_dmtf(text):
        return None
    return _evidence(m)


def _evidence(m: re.Match[str]) -> str | None:
    """`order_evidence` of a `_CULTURE` match."""
    if len(m["a"]) == 4:
        return "ymd"
    a, b = int(m["a"]), int(m["b"])
    if 12 < a <= 31 and 1 <= b <= 12:
        return "dmy"
    if 12 < b <= 31 and 1 <= a <= 12:
        return "mdy"
    return None


def is_culture_date(text: str) -> bool:
    """True when `text` looks like a culture-formatted date (not DMTF)."""
    return _CULTURE.match(text) is not None and not is_dmtf(text)


def parse_culture(text: str, order: str, zone: dt.tzinfo) -> DateResult:
    """Parse a culture-formatted date with the given field order, read in `zone`."""
    m = _CULTURE.match(text)
    if m is None:
        return DateResult(None, problem=f"not a date: {text!r}", fatal=True)
    a_text, b_text, c_text, h_text, mi_text, s_text, f_text, ampm_text, zone_text = m.groups()
    a, b, c = int(a_text), int(b_text), int(c_text)
    if len(a_text) == 4 or order == "ymd":
        year, month, day = a, b, c
    elif order == "dmy":
        day, month, year = a, b, c
    else:
        month, day, year = a, b, c
    if year < 100:
        year += 2000
    hour = int(h_text or 0)
    if ampm_text:
        ampm = ampm_text.lower().replace(".", "").replace(" ", "")
        if not 1 <= hour <= 12:
            return DateResult(None, problem=f"hour {hour} with AM/PM in {text!r}", fatal=True)
        hour = hour % 12 + (12 if ampm == "pm" else 0)
    micro = int(f_text[:6].ljust(6, "0")) if f_text else 0
    fields = (year, month, day, hour, int(mi_text or 0), int(s_text or 0), micro)
    try:
        # a zone beyond +-24 h ("+99:99") is as invalid as the 31st of February
        tzinfo = _fixed_zone(zone_text) if zone_text else zone
        value = dt.datetime(*fields, tzinfo=tzinfo).astimezone(UTC)
    except (ValueError, OverflowError) as exc:  # OverflowError: year 1 or 9999 moved by its zone
        return DateResult(None, problem=f"invalid date {text!r} read {order}: {exc}", fatal=True)
    if value == NEVER_UTC or fields == _NEVER_FIELDS:
        return DateResult(None, never=True)
    return DateResult(value)


def parse_wmi_date(text: str | None, order: str, zone: dt.tzinfo) -> DateResult:
    """Parse a WMI date cell in either form; empty -> value None without a problem."""
    if text is None or not text.strip():
        return DateResult(None)
    m = _DMTF.match(text)
    if m is not None:
        return _dmtf_value(text, m)
    return parse_culture(text, order, zone)


# -- the plain cells of a typical export, read without the general regexes ----------------
# A WMI export has two or three dates per row, nearly all in one clean shape: Export-Csv's
# DMTF `20231005123456.000000+060`, or a culture date `10/5/2023 12:34:56 PM` /
# `05.10.2023 12:34:56`. `plain_instant` reads those shapes only (ASCII digits, no padding, no
# `*`) and returns None for anything else, or for any value it would have to reject, so the
# caller then asks `parse_wmi_date`, whose result it equals (tests/parsers/test_fast_paths.py).

_PLAIN_DMTF = re.compile(r"[0-9]{14}\.[0-9]{6}[+-][0-9]{3}")
# Every DMTF offset ("+060", minutes east of UTC) as what to subtract from the wall clock
# to reach UTC: the wall clock read as UTC ("Z") less this is what reading it in its offset
# and converting to UTC gives (fixed offsets: no fold, no gap), for half the time.
_OFFSET_DELTAS = {
    f"{sign}{minutes:03d}": dt.timedelta(minutes=minutes if sign == "+" else -minutes)
    for sign in "+-"
    for minutes in range(1000)
}
_PLAIN_CULTURE = re.compile(
    r"([0-9]{1,2})([/.-])([0-9]{1,2})\2([0-9]{4}) ([0-9]{1,2}):([0-9]{2}):([0-9]{2})(?: ([AP]M))?"
)
# The value of every one- or two-digit field `_PLAIN_CULTURE` matches (a look-up costs a
# third of int()).
_SMALL = {text: int(text) for n in range(100) for text in (str(n), f"{n:02d}")}
# UTC (the default zone) and ZoneInfo("UTC") (one cached object): dates read in them need no
# conversion (offset 0 always).
_UTC_ZONES = (UTC, ZoneInfo("UTC"))


def plain_instant(text: str, order: str, zone: dt.tzinfo) -> dt.datetime | None:
    """`parse_wmi_date(text, order, zone).value` for a plain DMTF or culture date, without
    the DateResult (made twice a row, it cost a tenth of the row): the instant in UTC,
    NEVER_UTC itself (this very object) for the never sentinel, None for a text that is
    not a plain date. (Also written over columns in caltrail/pipeline/row_blocks.py.)"""
    # (a DMTF date has 25 characters, the 15th a ".": other texts go straight to the
    # culture reading)
    if len(text) == 25 and text[14] == "." and _PLAIN_DMTF.fullmatch(text) is not None:
        if text.startswith("20380119031407.000000"):  # the never sentinel, wall clock
            return NEVER_UTC
        try:
            wall = dt.datetime.fromisoformat(text[:8] + "T" + text[8:21] + "Z")
            value = wall - _OFFSET_DELTAS[text[21:]]
        except (ValueError, OverflowError):
            return None
        return NEVER_UTC if value == NEVER_UTC else value
    m = _PLAIN_CULTURE.fullmatch(text)
    if m is None or order not in ("dmy", "mdy"):
        return None
    a, _, b, year_text, hour_text, minute, second, ampm = m.groups()
    day, month = (a, b) if order == "dmy" else (b, a)
    year = int(year_text)
    if year < 100:
        year += 2000
    hour = _SMALL[hour_text]
    if ampm is not None:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if ampm == "PM" else 0)
    month_n, day_n, minute_n, second_n = _SMALL[month], _SMALL[day], _SMALL[minute], _SMALL[second]
    try:
        # (tzinfo given by position, which costs less than by keyword)
        if zone in _UTC_ZONES:
            value = dt.datetime(year, month_n, day_n, hour, minute_n, second_n, 0, UTC)
        else:
            value = dt.datetime(year, month_n, day_n, hour, minute_n, second_n, 0, zone)
            value = value.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    # (the never sentinel, local or UTC, is in 2038 in every zone: other years skip the test)
    if year == 2038 and (
        value == NEVER_UTC or (month_n, day_n, hour, minute_n, second_n, 0) == _NEVER_FIELDS[1:]
    ):
        return NEVER_UTC
    return value


def _fixed_zone(text: str) -> dt.timezone:
    if text == "Z":
        return UTC
    digits = text[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + int(digits[2:])
    return dt.timezone(dt.timedelta(minutes=-minutes if text[0] == "-" else minutes))


class OrderVotes:
    """Collects what a file's own date strings say about the day/month order."""

    def __init__(self) -> None:
        self.samples = 0
        self.culture = 0
        self.votes: dict[str, int] = {"dmy": 0, "mdy": 0, "ymd": 0}

    @property
    def full(self) -> bool:
        return self.samples >= MAX_ORDER_SAMPLES

    def add(self, text: str | None) -> None:
        if text is None or not text.strip() or self.full:
            return
        self.samples += 1
        m = _CULTURE.match(text)  # is_culture_date and order_evidence, one match each
        if m is None or is_dmtf(text):
            return
        self.culture += 1
        evidence = _evidence(m)
        if evidence is not None:
            self.votes[evidence] += 1

    def add_all(self, texts: Iterable[str | None]) -> None:
        for text in texts:
            self.add(text)


def culture_order(culture: str) -> str:
    """The day/month order of a culture name: mdy for the month-first ones, else dmy."""
    return "mdy" if culture.strip().lower().replace("_", "-") in MDY_CULTURES else "dmy"


def resolve_date_order(
    votes: OrderVotes, options: ParseOptions, always_note: bool = False
) -> tuple[str, FileNote | None]:
    """Choose the day/month order; the note is None when the file has no culture dates
    (unless `always_note`: the caller could not look at the values)."""
    dmy, mdy = votes.votes["dmy"], votes.votes["mdy"]
    forced = options.date_order.lower() if options.date_order else None
    settled = "dmy" if dmy and not mdy else "mdy" if mdy and not dmy else None
    if settled is not None:
        text = f"{settled} (inferred from values: a {'first' if settled == 'dmy' else 'second'}"
        text += " field above 12)"
        if forced and forced != settled and forced != "ymd":
            text += f"; --date-order {forced} overridden"
        return settled, FileNote("date_order", text)
    why = "; values conflict" if dmy and mdy else ""
    if forced in ("dmy", "mdy", "ymd"):
        order, text = forced, f"{forced} (from --date-order{why})"
    elif options.culture:
        order = culture_order(options.culture)
        text = f"{order} (from culture {options.culture}{why})"
    elif votes.culture and votes.votes["ymd"] == votes.culture:
        order, text = "ymd", "ymd (inferred from values: year first)"
    else:
        order = "mdy"
        text = f"mdy (guess: nothing settled the order{why}; default)"
    return order, (FileNote("date_order", text) if votes.culture or always_note else None)


def snapshot_from_file_name(name: str, zone: dt.tzinfo) -> dt.datetime | None:
    """A date or timestamp in a file name (then its folders, nearest first), as UTC."""
    parts = [p for p in re.split(r"[/\\]", name) if p]
    for part in reversed(parts):
        for m in _FILE_DATE.finditer(part):
            try:
                local = dt.datetime(
                    int(m["y"]),
                    int(m["m"]),
                    int(m["d"]),
                    int(m["H"] or 0),
                    int(m["M"] or 0),
                    int(m["S"] or 0),
                    tzinfo=zone,
                )
            except ValueError:
                continue
            return local.astimezone(UTC)
    return None


def as_utc(value: dt.datetime) -> dt.datetime:
    """A datetime in UTC; a naive one is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def resolve_snapshot(
    options: ParseOptions, data_time: dt.datetime | None, zone: dt.tzinfo
) -> tuple[dt.datetime | None, str]:
    """Snapshot time and its source: option, data, file name, file mtime, or unknown."""
    if options.snapshot_time is not None:
        return as_utc(options.snapshot_time), "option"
    if data_time is not None:
        return as_utc(data_time), "data"
    from_name = snapshot_from_file_name(options.file_name, zone) if options.file_name else None
    if from_name is not None:
        return from_name, "file name"
    if options.file_mtime is not None:
        return as_utc(options.file_mtime), "file mtime"
    return None, "unknown"


def snapshot_notes(value: dt.datetime | None, source: str) -> list[FileNote]:
    """The FileNotes that record a file's snapshot time."""
    return [
        FileNote("snapshot_time", value.isoformat() if value else "unknown"),
        FileNote("snapshot_time_source", source),
    ]


__all__ = [
    "MAX_ORDER_SAMPLES",
    "NEVER_UTC",
    "DateResult",
    "OrderVotes",
    "as_utc",
    "culture_order",
    "is_culture_date",
    "is_dmtf",
    "order_evidence",
    "parse_culture",
    "parse_dmtf",
    "parse_wmi_date",
    "plain_instant",
    "resolve_date_order",
    "resolve_snapshot",
    "snapshot_from_file_name",
    "snapshot_notes",
]
