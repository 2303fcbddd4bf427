"""tracefmt / netsh trace convert text dumps (caltrail.parsers.trace.tracefmt)."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caltrail.parsers.base import Item
from caltrail.parsers.errors import InvalidSignatureError, ParseError
from caltrail.parsers.textio import iter_lines
from caltrail.parsers.trace import tracefmt
from caltrail.parsers.trace.tracetime import MAX_LINE_CHARS
from tests.conftest import corpus_path
from tests.parsers.items import all_issues, notes, parse_bytes, trace_records

DATA = Path(__file__).parent / "data" / "traces"
UTC = dt.UTC


def run(data: bytes, **options: object) -> list[Item]:
    return parse_bytes(tracefmt, data, **options)


records = trace_records
issues = all_issues


def ts(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- real public excerpts ------------------------------------------------------------------


def test_tracefmt_default_prefix_sample() -> None:
    path = corpus_path("etl", "text-samples", "tracefmt-default-prefix_tracedrv_sample.txt")
    data = path.read_bytes()
    assert tracefmt.sniff(data, path.name)
    items = run(data)
    recs = records(items)
    assert len(recs) == 4
    assert not issues(items)
    first = recs[0]
    assert first.ts == ts(2003, 7, 25, 14, 55, 39, 998000)
    assert first.ts_raw == "07/25/2003-14:55:39.998"
    assert (first.cpu, first.pid, first.tid) == (0, 0x0AF4, 0x0C64)
    assert first.provider == "tracedrv"
    assert first.message == "IOCTL = 1"
    assert first.line == 1
    assert not first.raw
    assert (recs[3].pid, recs[3].tid, recs[3].message) == (0x0C40, 0x0C3C, "Hello, 1 Hi")
    assert notes(items)["zone_assumed"] == "trace text has no zone"


def test_tracefmt_seq_sample() -> None:
    data = corpus_path("etl", "text-samples", "tracefmt-seq_tracedrv_sample.txt").read_bytes()
    recs = records(run(data))
    assert [r.fields["SequenceNumber"] for r in recs] == ["00004ea4", "000047d0", "63966c89"]
    assert [r.message for r in recs] == ["IOCTL = 1", "Hello, 1 Hi", "Hello, 2 Hi"]
    assert recs[0].ts == ts(2003, 7, 25, 13, 55, 39, 998000)


def test_netsh_wlan_sample() -> None:
    data = corpus_path("etl", "text-samples", "netsh-trace-convert_wlan_sample.txt").read_bytes()
    assert tracefmt.sniff(data, "x.txt")
    items = run(data)
    recs = records(items)
    assert not issues(items)
    # 16 lines, two records wrapped over two lines each
    assert len(recs) == 14
    assert not any(r.raw for r in recs)
    tat = recs[0]
    assert tat.fields == {"tat_line": "44676"}
    assert tat.ts == ts(2018, 9, 17, 10, 22, 14, 658000)
    assert (tat.cpu, tat.pid, tat.tid) == (2, 0x0F24, 0x1020)
    assert tat.provider == "Microsoft-Windows-WLAN-AutoConfig"
    assert tat.message == "FSM Transition from State: Disconnected to State: Reset"
    wrapped = recs[6]
    assert wrapped.line == 7
    assert wrapped.ts == ts(2017, 8, 28, 13, 24, 28, 693000)
    assert wrapped.message == "FSM Transition from State: \nReset to State: Ihv_Configuring"
    assert recs[7].line == 9
    spaced = recs[11]  # "[0] 0EF8.1174:: 08/28/17-13:24:29.705"
    assert (spaced.cpu, spaced.pid, spaced.tid) == (0, 0x0EF8, 0x1174)
    assert spaced.ts == ts(2017, 8, 28, 13, 24, 29, 705000)
    seven = recs[12]  # leading space, 7 fraction digits
    assert seven.ts_raw == "08/28/17-13:24:29.7512788"
    assert seven.ts == ts(2017, 8, 28, 13, 24, 29, 751278)
    assert recs[-1].message == "FSM Transition from State: \nAuthenticating to State: Roaming"
    assert recs[-1].line == 15


@pytest.mark.parametrize(
    "name", ["wifi.tat", "tracerpt-csv-header.txt"], ids=["tat-filter-file", "csv-header"]
)
def test_sniff_rejects_other_corpus_text(name: str) -> None:
    data = corpus_path("etl", "text-samples", name).read_bytes()
    assert not tracefmt.sniff(data, name)
    with pytest.raises(InvalidSignatureError):
        run(data)


# -- hand-written variants ---------------------------------------------------------------


def check_variants(items: list[Item]) -> None:
    recs = records(items)
    by_line = {r.line: r for r in recs}
    assert [r.line for r in recs] == [1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 14, 15, 16]
    header = by_line[1]
    assert header.raw
    assert header.message.startswith("Tracefmt output of lserver.etl")  # type: ignore[union-attr]
    assert (header.ts, header.pid, header.provider, header.fields) == (None, None, None, {})

    mdy4 = by_line[2]
    assert mdy4.ts_raw == "07/25/2003-14:55:39.998"
    assert mdy4.ts == ts(2003, 7, 25, 12, 55, 39, 998000)  # Berlin summer time, UTC+2

    mdy2 = by_line[3]
    assert mdy2.ts_raw == "07/25/03-14:55:39.998123"
    assert mdy2.ts == ts(2003, 7, 25, 12, 55, 39, 998123)
    assert mdy2.message == "six fraction digits"

    iso = by_line[4]
    assert iso.ts_raw == "2018-09-17 10:22:14.6581234"
    assert iso.ts == ts(2018, 9, 17, 8, 22, 14, 658123)
    assert (iso.cpu, iso.pid, iso.tid) == (2, 0x0C34, 0x2FF0)

    ymd = by_line[5]
    assert ymd.ts_raw == "2023/06/22-18:55:06.496848300"
    assert ymd.ts == ts(2023, 6, 22, 16, 55, 6, 496848)
    assert ymd.provider == "nt"
    assert ymd.message == "NSI: Enter>>NsiSetAllParametersEx. ObjectIndex:16"

    seq = by_line[6]
    assert seq.fields == {"SequenceNumber": "00004ea4"}
    assert seq.message == "with a sequence number"

    tat = by_line[7]
    assert tat.fields == {"tat_line": "45473"}
    assert (tat.cpu, tat.pid, tat.tid) == (1, 0x0F24, 0x1020)

    wrapped = by_line[8]
    assert wrapped.message == (
        "FSM Transition from State: \nReset to State: Ihv_Configuring\nand a third wrapped line"
    )

    unknown = by_line[12]
    assert unknown.provider == "Unknown"
    assert (unknown.pid, unknown.tid) == (0, 0)
    assert (unknown.message or "").startswith("Unknown( 12): GUID=")

    empty = by_line[13]
    assert empty.provider is None
    assert empty.message == "empty module"

    for line in (14, 15, 16):  # custom prefix, tracefmt summary lines
        assert by_line[line].raw
    assert by_line[14].message == "2023-06-22 18:55:06.123 a line with a custom prefix"
    assert by_line[15].message == "Total Buffers Processed 4"

    assert not issues(items)
    got = notes(items)
    assert got["zone_assumed"] == "trace text has no zone"
    assert got["date_order"].startswith("mdy")
    assert got["raw_lines"].startswith("4 lines")


def test_variants_utf8() -> None:
    data = (DATA / "tracefmt_variants.txt").read_bytes()
    assert tracefmt.sniff(data, "")
    check_variants(run(data, tz=ZoneInfo("Europe/Berlin")))


def test_variants_utf16le_bom_crlf() -> None:
    data = (DATA / "tracefmt_variants_utf16.txt").read_bytes()
    assert data.startswith(b"\xff\xfe")
    assert b"\r\x00\n\x00" in data
    assert tracefmt.sniff(data, "")
    check_variants(run(data, tz=ZoneInfo("Europe/Berlin")))


def test_default_zone_is_utc() -> None:
    recs = records(run(b"[0]0AF4.0C64::07/25/2003-14:55:39.998 [m]x\n"))
    assert recs[0].ts == ts(2003, 7, 25, 14, 55, 39, 998000)


def test_winter_time_in_zone() -> None:
    line = b"[0]0001.0002::2023-01-15 08:00:00.000 [m]x\n"
    assert records(run(line, tz=ZoneInfo("America/New_York")))[0].ts == ts(2023, 1, 15, 13, 0)


def test_dmy_option() -> None:
    items = run(b"[0]0001.0002::05/10/2023-08:00:00.000 [m]x\n", date_order="dmy")
    assert records(items)[0].ts == ts(2023, 10, 5, 8, 0)
    assert notes(items)["date_order"] == "dmy (from options)"


def test_invalid_date_keeps_record_with_warning() -> None:
    items = run(b"[0]0001.0002::13/45/2023-08:00:00.000 [m]x\n")
    (rec,) = records(items)
    assert (rec.ts, rec.ts_raw, rec.message) == (None, "13/45/2023-08:00:00.000", "x")
    (issue,) = issues(items)
    assert (issue.kind, issue.quarantined, issue.line) == ("bad_timestamp", False, 1)


def test_fraction_digits_and_no_fraction() -> None:
    lines = [
        b"[0]0001.0002::2023-01-15 08:00:00.123 [m]three",
        b"[0]0001.0002::2023-01-15 08:00:00.123456 [m]six",
        b"[0]0001.0002::2023-01-15 08:00:00.1234567 [m]seven",
        b"[0]0001.0002::2023-01-15 08:00:00.123456789 [m]nine",
        b"[0]0001.0002::2023-01-15 08:00:00 [m]none",
    ]
    recs = records(run(b"\n".join(lines)))
    assert [r.ts.microsecond for r in recs if r.ts] == [123000, 123456, 123456, 123456, 0]
    assert recs[3].ts_raw == "2023-01-15 08:00:00.123456789"


def test_leading_lines_before_first_record_are_raw() -> None:
    items = run(b"some header\n\n[0]0001.0002::2023-01-15 08:00:00.123 [m]x\n")
    recs = records(items)
    assert [(r.line, r.raw, r.message) for r in recs] == [
        (1, True, "some header"),
        (3, False, "x"),
    ]


def test_not_tracefmt_raises_before_yielding() -> None:
    with pytest.raises(InvalidSignatureError):
        run(b"hello\nworld\n" * 100)
    with pytest.raises(InvalidSignatureError):
        run(b"")
    assert not tracefmt.sniff(b"", "x.txt")
    assert not tracefmt.sniff(b"hello\n", "trace.txt")


def test_binary_junk_line_is_quarantined() -> None:
    data = (
        b"[0]0001.0002::2023-01-15 08:00:00.123 [m]first\n"
        b"\x01\x02\x03junk\x7f\n"
        b"after junk\n"
        b"[0]0001.0002::2023-01-15 08:00:01.123 [m]second\n"
    )
    items = run(data)
    recs = records(items)
    assert [(r.line, r.raw, r.message) for r in recs] == [
        (1, False, "first"),
        (3, True, "after junk"),
        (4, False, "second"),
    ]
    (issue,) = issues(items)
    assert (issue.kind, issue.quarantined, issue.line) == ("binary_line", True, 2)
    assert issue.excerpt.startswith("\\x01\\x02\\x03junk")


def test_overlong_line_is_truncated() -> None:
    body = b"A" * (MAX_LINE_CHARS + 10)
    items = run(b"[0]0001.0002::2023-01-15 08:00:00.123 [m]" + body + b"\n")
    (rec,) = records(items)
    (issue,) = issues(items)
    assert (issue.kind, issue.quarantined, issue.line) == ("line_truncated", False, 1)
    assert rec.message is not None
    assert len(rec.message) == MAX_LINE_CHARS - len("[0]0001.0002::2023-01-15 08:00:00.123 [m]")


def test_budget_exceeded_stops_with_one_issue() -> None:
    line = b"[0]0001.0002::2023-01-15 08:00:00.123 [m]x\n"
    items = run(line * 10000, max_seconds=-1.0)
    stops = [i for i in issues(items) if i.kind == "budget_exceeded"]
    assert len(stops) == 1
    assert len(records(items)) < 10000


# -- properties ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_never_crash(data: bytes) -> None:
    valid = b"[0]0001.0002::2023-01-15 08:00:00.123 [m]x\n"
    for sample in (data, valid + data):
        tracefmt.sniff(sample, "x")
        try:
            run(sample)
        except ParseError:
            pass


RECORD_LINE = st.builds(
    lambda cpu, pid, tid, msg: f"[{cpu}]{pid:04X}.{tid:04X}::2023-01-15 08:00:00.123 [m]{msg}",
    st.integers(0, 63),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFF),
    st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30),
)
OTHER_LINE = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)


@settings(max_examples=200, deadline=None)
@given(RECORD_LINE, st.lists(st.one_of(RECORD_LINE, OTHER_LINE), max_size=30))
def test_every_line_lands_in_exactly_one_record_or_issue(first: str, rest: list[str]) -> None:
    data = "\n".join([first, *rest]).encode("utf-8")
    items = run(data)
    consumed = sum(1 for _, line in iter_lines(io.BytesIO(data)) if line.strip())
    spans = sum((r.message or "").count("\n") + 1 for r in records(items))
    lost = sum(1 for i in issues(items) if i.quarantined)
    assert consumed == spans + lost
