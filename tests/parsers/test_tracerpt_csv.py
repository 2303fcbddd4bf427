"""tracerpt CSV dumps (caltrail.parsers.trace.tracerpt_csv)."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caltrail.parsers.base import Item
from caltrail.parsers.errors import InvalidSignatureError, ParseError
from caltrail.parsers.textio import iter_lines
from caltrail.parsers.trace import tracerpt_csv
from tests.conftest import corpus_path
from tests.parsers.items import all_issues, notes, parse_bytes, trace_records

DATA = Path(__file__).parent / "data" / "traces"
UTC = dt.UTC
HEADER = ", ".join(tracerpt_csv.HEADER)
START_FT = 133410848960000000  # 2023-10-06T16:54:56Z


def run(data: bytes, **options: object) -> list[Item]:
    return parse_bytes(tracerpt_csv, data, **options)


records = trace_records
issues = all_issues


def row(name: str, pid: str, clock: str | int, tail: str, kind: str = "Info") -> str:
    return (
        f"{name}, {kind}, 7, 0, 0, 4, 0, 0, 0x0, {pid}, 0x00000C30, 1, , , "
        f"{{00000000-0000-0000-0000-000000000000}}, , {clock}, 0, 0, {tail}"
    )


def test_corpus_header_line() -> None:
    path = corpus_path("etl", "text-samples", "tracerpt-csv-header.txt")
    data = path.read_bytes()
    assert tracerpt_csv.sniff(data, path.name)
    assert run(data) == []


def check_sample(items: list[Item]) -> None:
    assert not issues(items)
    header, licensing, wpp = records(items)

    assert header.provider == "EventTrace"
    assert header.fields["Type"] == "Header"
    assert header.fields["Version"] == "2"
    assert (header.pid, header.tid, header.cpu, header.event_id) == (4, 8, 0, 0)
    assert header.ts == dt.datetime(2023, 10, 6, 16, 54, 56, tzinfo=UTC)
    assert header.ts_raw == "133410848960000000"
    assert header.fields["Header.BufferSize"] == "65536"
    assert header.fields["Header.EventsLost"] == "2"
    assert header.fields["Header.PerfFreq"] == "10000000"
    assert header.fields["Header.StartTime"] == str(START_FT)
    assert header.fields["Header.ReservedFlags"] == "1"
    assert header.fields["Header.BootTime"] == "133410000000000000"
    assert header.fields["Header.BuffersLost"] == "0"
    assert header.fields["UserData.15"] == "@tzres.dll,-212"

    assert licensing.provider == "Microsoft-Windows-TerminalServices-Licensing"
    assert licensing.line == 3
    assert (licensing.pid, licensing.tid, licensing.cpu) == (0x0A1C, 0x0C30, 1)
    assert (licensing.event_id, licensing.level) == (4105, "4")
    assert licensing.ts == dt.datetime(2023, 10, 6, 16, 55, 56, 123456, tzinfo=UTC)
    assert licensing.ts_raw == "133410849561234567"
    assert licensing.fields["Type"] == "Info"
    assert licensing.fields["Keyword"] == "0x8000000000000000"
    assert licensing.fields["Kernel(ms)"] == "15"
    assert licensing.fields["User(ms)"] == "30"
    assert "Instance ID" not in licensing.fields  # empty column
    tail = ["CL-01", "A02-6.00-S, per device", "0x00000002"]
    assert json.loads(licensing.fields["UserData"] or "") == tail
    assert [licensing.fields[f"UserData.{i}"] for i in range(3)] == tail
    assert "UserData.3" not in licensing.fields
    assert licensing.message == "CL-01, A02-6.00-S, per device, 0x00000002"

    assert wpp.provider == "lserver"
    assert wpp.message == "Issued license to CL-01, HWID 0x00000002, ok"
    assert wpp.fields["UserData.1"] == "HWID 0x00000002"

    got = notes(items)
    assert got["trace_start"] == "2023-10-06T16:54:56+00:00"
    assert got["trace_end"] == "2023-10-06T17:00:56+00:00"
    assert got["perf_freq"] == "10000000"
    assert got["clock_type"] == "1 (QPC)"
    assert got["events_lost"] == "2"
    assert got["buffers_lost"] == "0"
    assert got["clock"].startswith("FILETIME")
    assert "(3 rows)" in got["clock"]


def test_sample_utf8() -> None:
    data = (DATA / "tracerpt_sample.csv").read_bytes()
    assert tracerpt_csv.sniff(data, "")
    check_sample(run(data))


def test_sample_utf16le_bom_crlf() -> None:
    text = (DATA / "tracerpt_sample.csv").read_text(encoding="utf-8")
    data = b"\xff\xfe" + text.replace("\n", "\r\n").encode("utf-16-le")
    assert tracerpt_csv.sniff(data, "")
    check_sample(run(data))


def test_qpc_clock_relative_to_header() -> None:
    header_tail = (
        "65536, 1, 19041, 4, 0, 156250, 0, 0x1, 3, 4, 8, 0, 2592, 0x0, 0x0, @tzres.dll,-212, "
        f"{START_FT - 10**9}, 10000000, {START_FT}, 1, 0"
    )
    lines = [
        HEADER,
        row("EventTrace", "0x00000004", 5_000_000, header_tail, kind="Header"),
        row("lserver", "0x00000A1C", 5_000_000 + 15_000_000, "a"),
        row("lserver", "0x00000A1C", 5_000_000 + 1, "b"),
    ]
    items = run("\n".join(lines).encode())
    header, first, second = records(items)
    start = dt.datetime(2023, 10, 6, 16, 54, 56, tzinfo=UTC)
    assert header.ts == start
    assert first.ts == start + dt.timedelta(seconds=1.5)
    assert first.ts_raw == "20000000"
    assert second.ts == start + dt.timedelta(microseconds=0)  # 100 ns -> truncated to µs
    assert notes(items)["clock"].startswith("relative: ts = header StartTime")
    assert "10000000 Hz" in notes(items)["clock"]


def test_raw_clock_without_header() -> None:
    items = run("\n".join([HEADER, row("lserver", "0x10", 123456789, "x")]).encode())
    (rec,) = records(items)
    assert (rec.ts, rec.ts_raw) == (None, "123456789")
    assert notes(items)["clock"].startswith("raw: no conversion")


def test_decimal_pid_and_unparseable_values_kept() -> None:
    items = run("\n".join([HEADER, row("p", "2588", "not-a-clock", "x")]).encode())
    (rec,) = records(items)
    assert rec.pid == 2588
    assert (rec.ts, rec.ts_raw) == (None, "not-a-clock")
    items = run("\n".join([HEADER, row("p", "0xZZ", 1, "x")]).encode())
    (rec,) = records(items)
    assert rec.pid is None
    assert rec.fields["PID"] == "0xZZ"


def test_no_user_data() -> None:
    line = row("p", "0x1", START_FT, "").rstrip(", ")
    (rec,) = records(run(f"{HEADER}\n{line}\n".encode()))
    assert rec.message is None
    assert "UserData" not in rec.fields
    assert rec.fields["User(ms)"] == "0"


def test_bad_rows() -> None:
    lines = [
        HEADER,
        row("p", "0x1", START_FT, "ok"),
        "\x01\x02\x03 binary junk",
        row("p", "0x1", START_FT, '"never closed, at all'),
        HEADER,
        "",
        "p, Info, 7, 0, 0, 4, 0, 0, 0x0, 0x1, 0x2, 1, , , {0}, , 1334108495",
        "p, Info, 7, 0, 0",  # truncated last row
    ]
    items = run("\n".join(lines).encode())
    recs = records(items)
    assert [r.line for r in recs] == [2, 4, 7]
    assert recs[1].fields["UserData.0"] == '"never closed, at all'
    kinds = [(i.kind, i.quarantined, i.line) for i in issues(items)]
    assert kinds == [
        ("binary_line", True, 3),
        ("unterminated_quote", False, 4),
        ("repeated_header", False, 5),
        ("short_row", True, 8),
    ]


@pytest.mark.parametrize(
    ("line", "values"),
    [
        ("a, b, c", ["a", "b", "c"]),
        ("  a,    b  , ", ["a", "b", ""]),
        ('a, "b, c", d', ["a", "b, c", "d"]),
        ('a, "say ""hi"", ok", d', ["a", 'say "hi", ok', "d"]),
        ("a, , , b", ["a", "", "", "b"]),
        ("a,b, c", ["a,b", "c"]),
        ("a, b,", ["a", "b", ""]),
    ],
)
def test_split_row(line: str, values: list[str]) -> None:
    assert tracerpt_csv.split_row(line) == (values, False)


def test_split_row_unterminated() -> None:
    assert tracerpt_csv.split_row('a, "b, c') == (["a", '"b, c'], True)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n\n",
        b"[0]0AF4.0C64::07/25/2003-14:55:39.998 [tracedrv]IOCTL = 1\n",
        b"<Events></Events>",
        b"Event Name,Type,TID\n",
        b"\x00\xff\x10binary",
        b"KeyPackId,Description,KeyPackType\n1,2,3\n",
    ],
    ids=["empty", "blank", "tracefmt", "xml", "no-clock", "binary", "other-csv"],
)
def test_not_tracerpt_csv(data: bytes) -> None:
    assert not tracerpt_csv.sniff(data, "x.csv")
    with pytest.raises(InvalidSignatureError):
        run(data)


def test_older_header_by_name() -> None:
    data = b"Event Name, Type, TID, Clock-Time, Kernel(ms), User(ms), User Data\n"
    data += f"p, Info, 0x00000010, {START_FT}, 0, 0, hello, world\n".encode()
    assert tracerpt_csv.sniff(data, "")
    (rec,) = records(run(data))
    assert (rec.tid, rec.pid, rec.message) == (16, None, "hello, world")
    assert rec.ts == dt.datetime(2023, 10, 6, 16, 54, 56, tzinfo=UTC)


def test_budget_exceeded() -> None:
    data = "\n".join([HEADER] + [row("p", "0x1", START_FT, "x")] * 9000).encode()
    items = run(data, max_seconds=-1.0)
    assert [i.kind for i in issues(items)] == ["budget_exceeded"]
    assert len(records(items)) < 9000


# -- properties ------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1500))
def test_random_bytes_never_crash(data: bytes) -> None:
    for sample in (data, HEADER.encode() + b"\n" + data):
        tracerpt_csv.sniff(sample, "x.csv")
        try:
            run(sample)
        except ParseError:
            pass


CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
LINE = st.one_of(
    st.builds(
        row,
        st.text(CHARS, max_size=8),
        st.sampled_from(["0x1", "12", "zz", ""]),
        st.one_of(st.integers(-(2**70), 2**70), st.text(max_size=5)),
        st.text(CHARS, max_size=40),
    ),
    st.text(CHARS, max_size=60),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(LINE, max_size=20))
def test_every_line_is_a_record_or_an_issue(lines: list[str]) -> None:
    data = "\n".join([HEADER, *lines]).encode("utf-8")
    items = run(data)
    consumed = sum(1 for n, line in iter_lines(io.BytesIO(data)) if n > 1 and line.strip())
    counted = len(records(items)) + sum(
        1 for i in issues(items) if i.quarantined or i.kind == "repeated_header"
    )
    assert consumed == counted
