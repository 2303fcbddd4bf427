"""tracerpt XML dumps (caltrail.parsers.trace.tracerpt_xml)."""

from __future__ import annotations

import datetime as dt
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caltrail.parsers.base import FileNote, Item, ParseIssue, TraceRecord
from caltrail.parsers.errors import InvalidSignatureError, ParseError
from caltrail.parsers.trace import tracerpt_xml
from tests.parsers.items import all_issues, notes, parse_bytes, trace_records

DATA = Path(__file__).parent / "data" / "traces"
NS = "http://schemas.microsoft.com/win/2004/08/events/event"
UTC = dt.UTC


def run(data: bytes, **options: object) -> list[Item]:
    return parse_bytes(tracerpt_xml, data, **options)


records = trace_records
issues = all_issues


def event(body: str, system: str = "<Provider Name='P'/><EventID>1</EventID>") -> str:
    return f'<Event xmlns="{NS}"><System>{system}</System>{body}</Event>\n'


def check_sample(items: list[Item]) -> None:
    recs = records(items)
    assert [r.line for r in recs] == [3, 29, 59, 87, 101]
    assert not issues(items)
    assert notes(items) == {
        "events_lost": "3",
        "zone_assumed": "TimeCreated without offset",
    }
    header, wpp, userdata, procerr, binary = recs

    # EventTrace header: EventData by name, 9 fraction digits with +00:00
    assert header.provider == "MSNT_SystemTrace"
    assert header.ts == dt.datetime(2020, 12, 18, 10, 12, 53, 537830, tzinfo=UTC)
    assert header.ts_raw == "2020-12-18T10:12:53.537830900+00:00"
    assert (header.event_id, header.level, header.cpu, header.pid, header.tid) == (0, "0", 0, 4, 8)
    assert header.fields["BufferSize"] == "65536"
    assert header.fields["EventsLost"] == "3"
    assert header.fields["LogFileMode"] == "0x00010001"
    assert header.fields["System.Provider.Guid"] == "{68fdd900-4a3e-11d1-84f4-0000f80464e3}"
    assert header.fields["System.Correlation.ActivityID"] == (
        "{00000000-0000-0000-0000-000000000000}"
    )
    assert header.fields["System.Execution.KernelTime"] == "0"
    assert header.fields["System.Channel"] is None
    assert header.fields["RenderingInfo.Opcode"] == "Header"
    assert header.fields["RenderingInfo.EventName"] == "EventTrace"
    assert header.message is None

    # WPP DebugData: message/function/level promoted, the rest in fields; local offset
    assert wpp.provider == "{a489f3d1-f149-4968-bdce-4f7d93516da8}"
    assert wpp.ts == dt.datetime(2023, 10, 5, 12, 34, 56, 123456, tzinfo=UTC)
    assert wpp.ts_raw == "2023-10-05T14:34:56.1234567+02:00"
    assert (wpp.cpu, wpp.pid, wpp.tid) == (1, 2604, 3120)
    assert wpp.message == "Issued license to CL-01 HWID 0x00000002, 0x7d4eb2c0"
    assert wpp.function == "IssueLicense"
    assert wpp.level == "TRACE_LEVEL_INFORMATION"
    assert wpp.fields["System.Level"] == "4"
    for key, value in {
        "SequenceNumber": "42",
        "FlagsName": "TRACE_FLAG_LICENSING",
        "Component": "lserver",
        "SubComponent": "issue",
        "FileLine": "licensing.cpp(1234)",
        "RenderingInfo.Level": "Information",
        "RenderingInfo.Message": "unused rendering message",
        "System.Execution.UserTime": "30",
    }.items():
        assert wpp.fields[key] == value

    # UserData flattened; RenderingInfo message and names; Z with 9 digits
    assert userdata.provider == "Microsoft-Windows-TerminalServices-Licensing"
    assert (userdata.event_id, userdata.level, userdata.cpu) == (4105, "2", 3)
    assert userdata.ts == dt.datetime(2023, 10, 5, 12, 34, 56, 123456, tzinfo=UTC)
    assert userdata.message == "The RD License server issued a license."
    assert userdata.fields["EventXML.Param1"] == "CL-01"
    assert userdata.fields["EventXML.Param2"] == "A02-6.00-S"
    assert userdata.fields["EventXML.Inner.Deep"] == "x"
    assert userdata.fields["System.EventID.Qualifiers"] == "0"
    assert userdata.fields["System.Computer"] == "LS01.contoso.local"
    assert userdata.fields["RenderingInfo.Keywords"] == "Classic, Licensing"
    assert userdata.fields["RenderingInfo.Task"] == "None"
    assert userdata.fields["RenderingInfo.Provider"] == (
        "Microsoft-Windows-TerminalServices-Licensing"
    )
    assert userdata.fields["RenderingInfo.Culture"] == "en-US"

    # ProcessingErrorData; a time without offset is read in options.tz
    assert procerr.ts == dt.datetime(2023, 10, 5, 10, 34, 56, 123456, tzinfo=UTC)
    assert procerr.ts_raw == "2023-10-05T12:34:56.1234567"
    assert procerr.fields["ErrorCode"] == "15003"
    assert procerr.fields["DataItemName"] is None
    assert procerr.fields["EventPayload"] == "0A0B0C0D"
    assert procerr.message is None

    # BinaryEventData and ExtendedTracingInfo
    assert binary.provider == "{22222222-2222-3333-4444-555555555555}"
    assert binary.fields["BinaryEventData"] == "DEADBEEF00FF"
    assert binary.fields["ExtendedTracingInfo.EventGuid"] == (
        "{33333333-2222-3333-4444-555555555555}"
    )
    assert binary.ts == dt.datetime(2023, 10, 5, 12, 34, 56, tzinfo=UTC)


def test_sample_utf8() -> None:
    data = (DATA / "tracerpt_sample.xml").read_bytes()
    assert tracerpt_xml.sniff(data, "")
    check_sample(run(data, tz=ZoneInfo("Europe/Berlin")))


def test_sample_utf16_bom() -> None:
    data = (DATA / "tracerpt_sample_utf16.xml").read_bytes()
    assert data.startswith(b"\xff\xfe")
    assert tracerpt_xml.sniff(data, "")
    check_sample(run(data, tz=ZoneInfo("Europe/Berlin")))


def test_eventdata_unnamed_binary_and_repeats() -> None:
    body = (
        "<EventData><Data>first</Data><Data Name='x'>1</Data><Data>second</Data>"
        "<Data Name='x'>2</Data><Binary>00FF</Binary></EventData>"
    )
    (rec,) = records(run(f"<Events>{event(body)}</Events>".encode()))
    assert rec.fields == {
        "param1": "first",
        "x": "1",
        "param2": "second",
        "x[2]": "2",
        "Binary": "00FF",
    }


def test_raw_time_and_missing_time() -> None:
    data = (
        "<Events>"
        + event("", "<Provider Name='P'/><TimeCreated RawTime='123456789'/>")
        + event("", "<Provider Name='Q'/>")
        + "</Events>"
    ).encode()
    items = run(data)
    first, second = records(items)
    assert (first.ts, first.ts_raw) == (None, "123456789")
    assert (second.ts, second.ts_raw) == (None, None)
    assert notes(items)["clock"].startswith("RawTime")


def test_bad_system_time_is_kept_with_warning() -> None:
    items = run(
        ("<Events>" + event("", "<TimeCreated SystemTime='yesterday'/>") + "</Events>").encode()
    )
    (rec,) = records(items)
    assert (rec.ts, rec.ts_raw) == (None, "yesterday")
    (issue,) = issues(items)
    assert (issue.kind, issue.quarantined) == ("bad_timestamp", False)


def test_unexpected_top_level_element_is_reported() -> None:
    items = run(("<Events><Other>x</Other>" + event("") + "</Events>").encode())
    assert len(records(items)) == 1
    (issue,) = issues(items)
    assert (issue.kind, issue.quarantined, issue.line) == ("unexpected_element", True, 1)


# -- not this format ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"ElfFile\x00" + bytes(120),
        b"\x00\x01\x02\xff\xfe garbage",
        f'<Event xmlns="{NS}"><System/></Event>'.encode(),  # wevtutil: one event, no <Events>
        b"<?xml version='1.0'?><Objects><Object/></Objects>",
        b"Event Name, Type, Event ID\n",
    ],
    ids=["empty", "evtx", "binary", "single-event", "other-xml", "csv"],
)
def test_not_tracerpt_xml(data: bytes) -> None:
    assert not tracerpt_xml.sniff(data, "x.xml")
    with pytest.raises(InvalidSignatureError):
        run(data)


# -- broken files ------------------------------------------------------------------------------


def test_truncated_mid_event_keeps_complete_events() -> None:
    data = (DATA / "tracerpt_sample.xml").read_bytes()
    cut = data.index(b"<DataItemName />")  # inside the 4th event (line 87)
    items = run(data[:cut])
    assert [r.line for r in records(items)] == [3, 29, 59]
    (issue,) = issues(items)
    assert issue.kind == "xml_break"
    assert issue.quarantined
    assert issue.line == data[:cut].count(b"\n") + 1
    assert "a partial <Event> was lost" in issue.message


def test_truncated_inside_a_start_tag_counts_the_lost_event() -> None:
    data = (DATA / "tracerpt_sample.xml").read_bytes()
    cut = data.index(b"<Event xmlns") + 4
    items = run(data[:cut])
    assert records(items) == []
    (issue,) = issues(items)
    assert issue.quarantined


def test_truncated_after_last_event_loses_nothing() -> None:
    data = (DATA / "tracerpt_sample.xml").read_bytes()
    items = run(data[: data.rindex(b"</Events>")])
    assert len(records(items)) == 5
    (issue,) = issues(items)
    assert (issue.kind, issue.quarantined) == ("xml_break", False)


def test_truncated_utf16() -> None:
    data = (DATA / "tracerpt_sample_utf16.xml").read_bytes()
    cut = data.index("<DataItemName />".encode("utf-16-le"))
    items = run(data[:cut])
    assert len(records(items)) == 3
    (issue,) = issues(items)
    assert issue.quarantined
    assert issue.line == data[:cut].decode("utf-16").count("\n") + 1


def test_junk_in_the_middle() -> None:
    data = ("<Events>" + event("") + event("") + "\x01\x02 junk <<<" + event("")).encode()
    items = run(data)
    assert len(records(items)) == 2
    (issue,) = issues(items)
    assert issue.kind == "xml_break"
    assert issue.line == 3


@pytest.mark.parametrize("before", [1, 700, 2500])
def test_a_break_anywhere_keeps_every_event_before_it(before: int) -> None:
    """The break is where the document breaks, not where lxml's read buffer started (lxml
    6.2's iterparse dropped the events of the buffer that held the break): the junk sits
    anywhere from the first few hundred bytes to far past 64 KiB."""
    data = ("<Events>" + event("") * before + "\x01 junk" + event("") * 3).encode()
    items = run(data)
    assert len(records(items)) == before
    (issue,) = issues(items)
    assert (issue.kind, issue.quarantined) == ("xml_break", False)
    assert f"{before} complete events" in issue.message


def test_junk_inside_an_event_loses_that_event_only() -> None:
    broken = event("<EventData><Data Name='A'>x\x01y</Data></EventData>")
    data = ("<Events>" + event("") * 2 + broken + event("")).encode()
    items = run(data)
    assert len(records(items)) == 2
    (issue,) = issues(items)
    assert (issue.kind, issue.quarantined) == ("xml_break", True)


def test_truncated_far_into_a_large_file() -> None:
    whole = ("<Events>" + event("<EventData><Data Name='A'>v</Data></EventData>") * 3000).encode()
    cut = whole.rindex(b"<Data Name") + 3  # inside the last event
    items = run(whole[:cut])
    assert len(records(items)) == 2999
    (issue,) = issues(items)
    assert (issue.kind, issue.quarantined) == ("xml_break", True)


# -- hostile files -----------------------------------------------------------------------------

LAUGHS = '<!ENTITY lol "lol">\n' + "".join(
    f'<!ENTITY lol{i} "{("&lol;" if i == 1 else f"&lol{i - 1};") * 10}">\n' for i in range(1, 10)
)


def hostile(dtd: str, data_value: str, doctype: str = "<!DOCTYPE Events [") -> bytes:
    return (
        f'<?xml version="1.0"?>\n{doctype}\n{dtd}]>\n<Events>\n'
        + event(f"<EventData><Data Name='v'>{data_value}</Data></EventData>")
        + "</Events>\n"
    ).encode()


def all_text(items: list[Item]) -> str:
    return repr(items)


def test_billion_laughs_is_not_expanded() -> None:
    started = time.monotonic()
    items = run(hostile(LAUGHS, "&lol9;"))
    assert time.monotonic() - started < 2
    assert "lollol" not in all_text(items)
    assert any(i.kind == "dtd_ignored" for i in issues(items))
    # libxml2 refuses the amplification even unexpanded (an issue), or keeps the reference
    # as text; either way no expansion.
    for rec in records(items):
        assert rec.fields["v"] == "&lol9;"


def test_small_internal_entity_is_not_expanded() -> None:
    (rec,) = records(run(hostile('<!ENTITY name "EXPANDED">\n', "a &name; b")))
    assert rec.fields["v"] == "a &name; b"


def test_external_entity_does_not_read_local_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-MARKER-7f3a")
    dtd = f'<!ENTITY xxe SYSTEM "file://{secret}">\n<!ENTITY host SYSTEM "file:///etc/hostname">\n'
    items = run(hostile(dtd, "&xxe;|&host;"))
    (rec,) = records(items)
    assert rec.fields["v"] == "&xxe;|&host;"
    assert "SECRET-MARKER" not in all_text(items)
    hostname = Path("/etc/hostname")
    if hostname.exists() and hostname.read_text().strip():
        assert hostname.read_text().strip() not in rec.fields["v"]  # type: ignore[operator]


def test_no_network_and_no_external_dtd(tmp_path: Path) -> None:
    evil = tmp_path / "evil.dtd"
    evil.write_text('<!ENTITY leak "LEAKED">')
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    port = server.getsockname()[1]
    try:
        dtd = (
            f'<!ENTITY net SYSTEM "http://127.0.0.1:{port}/entity">\n'
            f'<!ENTITY % pe SYSTEM "file://{evil}">\n%pe;\n'
        )
        doctype = f'<!DOCTYPE Events SYSTEM "http://127.0.0.1:{port}/events.dtd" ['
        items = run(hostile(dtd, "&net;", doctype=doctype))
        (rec,) = records(items)
        assert rec.fields["v"] == "&net;"
        assert "LEAKED" not in all_text(items)
        readable, _, _ = select.select([server], [], [], 0.2)
        assert readable == [], "the parser connected to the network"
    finally:
        server.close()


# -- properties ------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=1500))
def test_random_bytes_never_crash(data: bytes) -> None:
    valid = ("<Events>" + event("<EventData><Data Name='a'>1</Data></EventData>")).encode()
    for sample in (data, valid + data, b"<Events>" + data):
        tracerpt_xml.sniff(sample, "x.xml")
        try:
            items = run(sample)
        except ParseError:
            continue
        assert all(isinstance(i, (TraceRecord, ParseIssue, FileNote)) for i in items)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_random_text_inside_events_never_crashes(text: str) -> None:
    sample = ("<Events>" + event(text) + text + "</Events>").encode("utf-8", "surrogatepass")
    try:
        run(sample)
    except ParseError:
        pass


# -- memory ------------------------------------------------------------------------------------

EVENT_TEMPLATE = (
    '<Event xmlns="{ns}">\r\n\t<System>\r\n\t\t<Provider Guid="{{a489f3d1-f149-4968-bdce-'
    '4f7d93516da8}}" />\r\n\t\t<EventID>0</EventID>\r\n\t\t<Version>0</Version>\r\n\t\t'
    "<Level>4</Level>\r\n\t\t<Task>0</Task>\r\n\t\t<Opcode>0</Opcode>\r\n\t\t<Keywords>0x0"
    '</Keywords>\r\n\t\t<TimeCreated SystemTime="2023-10-05T12:34:56.{n:09d}Z" />\r\n\t\t'
    '<Correlation ActivityID="{{00000000-0000-0000-0000-000000000000}}" />\r\n\t\t'
    '<Execution ProcessID="2604" ThreadID="3120" ProcessorID="1" KernelTime="0" '
    'UserTime="0" />\r\n\t\t<Channel />\r\n\t\t<Computer />\r\n\t</System>\r\n\t'
    "<DebugData>\r\n\t\t<SequenceNumber>{n}</SequenceNumber>\r\n\t\t<FlagsName>FLAG"
    "</FlagsName>\r\n\t\t<LevelName>TRACE_LEVEL_INFORMATION</LevelName>\r\n\t\t<Component>"
    "lserver</Component>\r\n\t\t<SubComponent>issue</SubComponent>\r\n\t\t<FileLine>"
    "licensing.cpp(1234)</FileLine>\r\n\t\t<Function>IssueLicense</Function>\r\n\t\t"
    "<Message>Issued license {n} to CL-{n:05d} HWID 0x00000002, 0x7d4eb2c0, 0x37ffa910; "
    'license blob {blob}</Message>\r\n\t</DebugData>\r\n\t<RenderingInfo Culture="en-US">'
    "\r\n\t\t<Level>Information</Level>\r\n\t</RenderingInfo>\r\n</Event>\r\n"
)
BLOB = "0A1B2C3D4E5F" * 100  # a hex dump in the message, as WPP traces of license blobs have


def write_big_xml(path: Path, target_bytes: int) -> int:
    """Write a tracerpt-shaped XML file of about `target_bytes`, 500 events at a time."""
    count = 0
    written = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write('<?xml version="1.0" encoding="UTF-8"?>\r\n<Events>\r\n')
        while written < target_bytes:
            chunk = "".join(
                EVENT_TEMPLATE.format(n=count + i, ns=NS, blob=BLOB) for i in range(500)
            )
            out.write(chunk)
            written += len(chunk)
            count += 500
        out.write("</Events>\r\n")
    return count


# Run in a child process so that its peak RSS (which sees libxml2's own allocations, unlike
# tracemalloc) belongs to this parse alone.
MEASURE = """
import resource, sys, tracemalloc
from caltrail.parsers.trace import tracerpt_xml
from caltrail.parsers.base import ParseOptions, TraceRecord
tracemalloc.start()
count, last = 0, None
with open(sys.argv[1], "rb") as stream:
    for item in tracerpt_xml.parse(stream, ParseOptions()):
        if isinstance(item, TraceRecord):
            count, last = count + 1, item
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(count, last.fields["SequenceNumber"] if last else "", peak,
      rss if sys.platform == "darwin" else rss * 1024)
"""


def measure(path: Path) -> tuple[int, str, int, int]:
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    count, last, peak, rss = done.stdout.split()
    return int(count), last, int(peak), int(rss)


@pytest.mark.slow
def test_memory_stays_flat_on_a_50_mb_file(tmp_path: Path) -> None:
    small = tmp_path / "small.xml"
    write_big_xml(small, 1)
    big = tmp_path / "big.xml"
    expected = write_big_xml(big, 50 * 1024 * 1024)
    assert big.stat().st_size > 50 * 1024 * 1024

    _, _, _, rss_small = measure(small)
    count, last, peak, rss_big = measure(big)
    assert count == expected
    assert last == str(expected - 1)
    assert peak < 30 * 1024 * 1024, f"tracemalloc peak {peak / 2**20:.1f} MiB"
    grown = rss_big - rss_small
    assert grown < 20 * 1024 * 1024, f"peak RSS grew by {grown / 2**20:.1f} MiB"


def test_stray_elements_anywhere_are_reported() -> None:
    foreign = '<Event xmlns="urn:other"><System/></Event>'
    data = (
        "<Events><!-- a comment -->"
        + event("")
        + foreign
        + event("")
        + "<Trailer>t</Trailer></Events>"
    ).encode()
    items = run(data)
    assert len(records(items)) == 2
    found = [(i.kind, i.quarantined) for i in issues(items)]
    assert found == [("unexpected_element", True), ("unexpected_element", True)]
    assert "urn:other" in issues(items)[0].message
    assert "Trailer" in issues(items)[1].message
