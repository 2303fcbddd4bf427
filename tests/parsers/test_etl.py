"""Raw .etl traces (parsers.trace.etl): every corpus file, TraceLogging fields against
published decodings, user manifests and TMF files, damaged buffers."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caltrail.fixtures.etl_writer import (
    EtlWriter,
    licensing_events,
    tracelogging_event,
    wpp_message,
)
from caltrail.parsers import reader_for
from caltrail.parsers.base import TraceRecord
from caltrail.parsers.errors import ParseError
from caltrail.parsers.trace import etl, etw_manifest, lzxpress, wpp_tmf
from tests.conftest import corpus_path
from tests.parsers.items import all_issues, notes, parse_bytes, trace_records

DATA = Path(__file__).parent / "data" / "etl"
SEED = DATA / "licensing_telemetry.etl"
CLDFLT_GUID = "2818ef08-6a54-396f-2244-5a6ea4a98cf0"
# The corpus's inventory.json counts records by header kind, as dissect.etl 3.14 read them.
KINDS = {"SYSTEM": "kernel", "EVENT": "event", "WPP": "message", "OTHER14": "classic"}


def parse_file(path: Path, **options: object) -> list[object]:
    return parse_bytes(etl, path.read_bytes(), **options)


def kind_of(record: TraceRecord) -> str:
    if record.provider and record.provider.startswith("Windows Kernel/"):
        return "kernel"
    header = record.fields.get("ETL.HeaderType")
    if header == "message":
        return "message"
    if header in ("full32", "full64"):
        return "classic"
    return "event"


def corpus_files() -> list[str]:
    inventory = corpus_path("etl", "inventory.json")
    return sorted(json.loads(inventory.read_text()))


# -- the public corpus ------------------------------------------------------------------------


def test_every_corpus_file_reads_completely() -> None:
    """Each .etl of the corpus: as many records of each kind (and each provider) as the
    inventory's second reader counted, no issue at all, and every time stamp inside the
    trace's own start and end (the clock conversion)."""
    inventory = json.loads(corpus_path("etl", "inventory.json").read_text())
    for name, facts in inventory.items():
        items = parse_file(corpus_path("etl", name))
        records = trace_records(items)  # type: ignore[arg-type]
        assert all_issues(items) == [], name  # type: ignore[arg-type]
        kinds: dict[str, int] = {}
        for record in records:
            kinds[kind_of(record)] = kinds.get(kind_of(record), 0) + 1
        expected = {KINDS[k]: v for k, v in facts["record_kinds"].items()}
        assert kinds == expected, name
        if facts["dissect_records"]:  # (CldFlt2 says it wrote no buffer: dissect read none)
            assert len(records) == facts["dissect_records"], name
        providers: dict[str, int] = {}
        for record in records:
            if kind_of(record) == "event":
                guid = record.fields["System.ProviderGuid"] or ""
                providers[guid] = providers.get(guid, 0) + 1
        assert providers == facts.get("event_header_providers", {}), name
        start = dt.datetime.fromisoformat(facts["header"]["start"])
        end = dt.datetime.fromisoformat(facts["header"]["end"])
        for record in records:
            assert record.ts is not None, (name, record.line)
            assert record.ts >= start - dt.timedelta(seconds=1), (name, record.line)
            if end.year > 1601:
                assert record.ts <= end + dt.timedelta(seconds=1), (name, record.line)
        assert [r.line for r in records] == list(range(1, len(records) + 1))


def test_compressed_buffers_of_the_corpus() -> None:
    """net.4.5.2.x64.etl (inside its zip): 359 LZXpress buffers, 179,474 records as the
    corpus's research walker counted them (SOURCES.md), none lost."""
    with zipfile.ZipFile(corpus_path("etl", "perfview", "net.4.5.2.x64.etl.zip")) as bundle:
        data = bundle.read("net.4.5.2.x64.etl")
    items = parse_bytes(etl, data)
    assert len(trace_records(items)) == 179_474
    assert all_issues(items) == []
    assert notes(items)["buffers"] == "360 readable of 360, 359 LZXpress-compressed"


def test_tracelogging_fields_match_the_published_decoding() -> None:
    """primitive-types.etl against primitive-types.baseline.txt (TraceEvent's decoding of
    the same file): every field of the five events, and their times."""
    records = [r for r in trace_records(parse_file(corpus_path("etl", "perfview", "primitive-types.etl"))) if r.provider == "solar_system"]  # type: ignore[arg-type]
    baseline = corpus_path("etl", "perfview", "primitive-types.baseline.txt").read_text()
    header = re.search(r"StartTime=(\S+ \S+)", baseline)
    assert header is not None
    events = [line for line in baseline.splitlines() if line.startswith("EVENT ") and "solar_system/PrimitiveTypesTest" in line]
    assert len(records) == len(events) == 5
    start = dt.datetime(2021, 9, 9, 14, 59, 32, 857851, tzinfo=dt.UTC)  # the file's StartTime
    for record, line in zip(records, events, strict=True):
        expected = dict(re.findall(r"(\w+)=([^;]*);", line))
        fields = record.fields
        millis = float(line.split()[1].rstrip(":").replace(",", ""))
        assert record.ts is not None
        assert abs((record.ts - start).total_seconds() * 1000 - millis) < 0.002
        assert record.pid == int(expected["PID"])
        assert record.tid == int(expected["TID"])
        assert fields["System.EventName"] == "PrimitiveTypesTest"
        assert fields["string_type"] == expected["string_type"]
        assert fields["boolean_type"] == expected["boolean_type"].lower()
        assert ord(fields["char_type"] or "") == int(expected["char_type"])  # out-type STRING
        for name in ("int16_type", "int32_type", "uint16_type", "uint32_type", "uint64_type"):
            assert fields[name] == expected[name], name
        # EventSource writes its int64 with in-type UINT64 (10); as the bytes say, then:
        assert int(fields["int64_type"] or "") - 2**64 == int(expected["int64_type"])
        assert (fields["guid_type"] or "").startswith(expected["guid_type"].rstrip("."))
        # times: the baseline shows yy/mm/dd hh:mm:ss.ff... (cut at 20 characters)
        shown = dt.datetime.fromisoformat((fields["file_time_type"] or "").replace("Z", "+00:00"))
        assert shown.strftime("%y/%m/%d %H:%M:%S.%f").startswith(expected["file_time_type"].rstrip("."))
        system_time = dt.datetime.fromisoformat(fields["system_time_type"] or "")
        assert system_time.strftime("%y/%m/%d %H:%M:%S") == expected["system_time_type"][:17]
        assert abs((system_time - shown.replace(tzinfo=None)).total_seconds()) < 1
        assert record.message is not None
        assert record.message.startswith(f"PrimitiveTypesTest: string_type={expected['string_type']}, ")


def test_tracelogging_structs_and_provider_names() -> None:
    """A struct's members are named Struct.Member; providers carry their own names."""
    items = parse_file(corpus_path("etl", "perfview", "SelfDescribingSingleEvent.etl"))
    records = trace_records(items)  # type: ignore[arg-type]
    event = next(r for r in records if r.provider == "MySource")
    assert event.fields["System.EventName"] == "TestEvent"
    assert (event.fields["a.b"], event.fields["a.c"]) == ("Hello", "World!")
    assert event.message == "TestEvent: a.b=Hello, a.c=World!"
    amsi = trace_records(parse_file(corpus_path("etl", "etl-parser", "AMSITrace.etl")))  # type: ignore[arg-type]
    scripts = [r for r in amsi if r.fields.get("System.EventName") == "AmsiScript"]
    assert len(scripts) == 19
    assert all(r.provider == "AmsiTrace" and r.fields.get("Engine") for r in scripts)


def test_manifest_events_decode_with_the_users_manifest() -> None:
    """gcevents.PerfViewData.etl with a manifest of five GC events: their fields equal the
    published decoding (gcevents.baseline.txt); the other events stay raw."""
    manifest = (DATA / "dotnet-gc-subset.man").read_bytes()
    path = corpus_path("etl", "perfview", "gcevents.PerfViewData.etl")
    without = trace_records(parse_file(path))  # type: ignore[arg-type]
    records = trace_records(parse_file(path, etw_manifests=(manifest,)))  # type: ignore[arg-type]
    assert len(records) == len(without) == 71
    decoded = [r for r in records if not r.raw and r.provider == "Microsoft-Windows-DotNETRuntime"]
    assert sorted({r.fields["System.EventName"] for r in decoded}) == [
        "GCAllocationTick_V4", "GCCreateSegment_V1", "GCEnd_V1", "GCStart_V2", "GCTriggered",
    ]  # fmt: skip
    assert all(r.raw for r in without if r.event_id is not None)
    baseline = corpus_path("etl", "perfview", "gcevents.baseline.txt").read_text()
    start = dt.datetime(2023, 3, 14, 0, 46, 36, 694654, tzinfo=dt.UTC)
    names = {
        "GCStart_V2": "GC/Start", "GCEnd_V1": "GC/Stop", "GCCreateSegment_V1": "GC/CreateSegment",
        "GCAllocationTick_V4": "GC/AllocationTick", "GCTriggered": "GC/Triggered",
    }  # fmt: skip
    shown: list[tuple[str, float, dict[str, str]]] = []
    for line in baseline.splitlines():
        if line.startswith("EVENT ") and "DotNETRuntime/GC/" in line:
            millis = float(line.split()[1].rstrip(":").replace(",", ""))
            kind = line.split()[2].split("DotNETRuntime/")[1]
            shown.append((kind, millis, dict(re.findall(r"(\w+)=([^;]*);", line))))
    compared = 0
    for record in decoded:
        assert record.ts is not None
        assert "ETL.DecodeError" not in record.fields
        millis = (record.ts - start).total_seconds() * 1000
        kind = names[record.fields["System.EventName"] or ""]
        matches = [e for k, m, e in shown if k == kind and abs(m - millis) < 0.0015]
        if not matches:
            continue  # the baseline shows the first five events of each kind
        expected = matches[0]
        for name, value in expected.items():
            if name in ("PID", "TID", "PName", "ProceNum", "DataLen") or name not in record.fields:
                continue
            mine = record.fields[name] or ""
            if value.startswith("0x"):
                assert int(mine, 16) == int(value, 16), name
            elif value.endswith("..."):
                assert mine.startswith(value[:-3]), name
            else:
                assert mine == value.replace(",", ""), name
        compared += 1
    assert compared >= 15
    triggered = next(r for r in decoded if r.fields["System.EventName"] == "GCTriggered")
    assert triggered.message == "A garbage collection was triggered: Reason=Induced ClrInstanceID=8"


def test_wpp_messages_without_and_with_their_tmf() -> None:
    """CldFlt0.etl: 13 WPP messages kept with their GUID and raw arguments; with a TMF they
    are formatted, their arguments read exactly (no byte left over)."""
    path = corpus_path("etl", "super-speedy-syslog-searcher", "CldFlt0-2025-12-21-121418.etl")
    raw = [r for r in trace_records(parse_file(path)) if r.event_id == 43]  # type: ignore[arg-type]
    assert len(raw) == 13
    assert all(r.raw for r in raw)
    assert raw[0].fields["WPP.MessageGuid"] == CLDFLT_GUID
    assert raw[0].message == f"Unknown(43): GUID={CLDFLT_GUID} (No Format Information found)."
    assert len(raw[0].fields["WPP.Arguments"] or "") == 40  # 20 bytes of arguments
    tmf = ((f"{CLDFLT_GUID}.tmf", (DATA / "tmf" / f"{CLDFLT_GUID}.tmf").read_bytes()),)
    items = parse_file(path, tmf_files=tmf)
    assert all_issues(items) == []  # type: ignore[arg-type]
    decoded = [r for r in trace_records(items) if r.event_id == 43]  # type: ignore[arg-type]
    assert [r.ts for r in decoded] == [r.ts for r in raw]
    for record, before in zip(decoded, raw, strict=True):
        args = bytes.fromhex(before.fields["WPP.Arguments"] or "")
        request, obj, status = struct.unpack("<QQI", args)
        assert not record.raw
        assert record.provider == "cldflt"
        assert record.function == "CaltrailTestFunction"
        assert record.level == "TRACE_LEVEL_ERROR"
        assert record.message == (
            f"CaltrailTestFunction: request {request:016X} on object {obj:016X} failed, "
            f"status 0x{status:08X}"
        )
    assert decoded[0].message.endswith("status 0xC01C000F")  # type: ignore[union-attr]


def test_sniff() -> None:
    for name in corpus_files():
        assert etl.sniff(corpus_path("etl", name).read_bytes()[:65536], name), name
    head = corpus_path("etl", "perfview", "primitive-types.etl").read_bytes()[:4096]
    assert reader_for(head, "x.bin") is etl  # detection by content
    assert not etl.sniff(b"ElfFile\x00" + b"\x00" * 200, "x.evtx")
    assert not etl.sniff(b"[0]0AF4.0C64::07/25/2003-14:55:39.998 [tracedrv]IOCTL = 1\n" * 3, "x")
    with pytest.raises(ParseError, match="expected"):
        parse_bytes(etl, b"\x00" * 200)


# -- files of the writer: licensing telemetry, damage -------------------------------------


def licensing_file(count: int = 40, buffer_size: int = 4096) -> bytes:
    out = io.BytesIO()
    writer = EtlWriter(out, buffer_size=buffer_size)
    for record in licensing_events(writer, count):
        writer.add(record)
    writer.add(wpp_message(CLDFLT_GUID, 44, b"", timestamp=writer.raw_time(61)))
    writer.close()
    return out.getvalue()


def write_seed() -> None:
    """The fuzz tests' seed (tests/parsers/data/etl/licensing_telemetry.etl)."""
    SEED.write_bytes(licensing_file(12, 4096))


def test_the_seed_file_is_the_writers() -> None:
    """The committed fuzz seed is what the writer makes (README beside it)."""
    assert SEED.read_bytes() == licensing_file(12, 4096)


def test_licensing_telemetry_fields_and_message() -> None:
    items = parse_bytes(etl, licensing_file())
    records = trace_records(items)
    events = [r for r in records if r.provider == "Microsoft.Windows.RemoteDesktop.RDSLSTelemetry"]
    assert len(events) == 40
    assert all_issues(items) == []
    first = events[0]
    assert first.fields["ClientName"] == "PC-0000"
    assert first.fields["LicenseId"] == "1000"
    assert first.message == (
        "LicenseIssued: ClientName=PC-0000, HWID=0200000000000000000000000000000000000000, "
        "LicenseId=1000, Operation=issue-permanent, IssuedAt=2024-01-17T21:20:00.0000000Z"
    )
    assert first.ts == dt.datetime(2024, 1, 17, 21, 20, tzinfo=dt.UTC)


def key(record: TraceRecord) -> tuple[int, int]:
    """Where a record is in the file: its buffer's offset, its offset in the buffer."""
    return int(record.fields["ETL.BufferOffset"] or 0), int(record.fields["ETL.RecordOffset"] or 0)


def buffer_keys(data: bytes) -> set[tuple[int, int]]:
    return {key(r) for r in trace_records(parse_bytes(etl, data))}


@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        ("size", "bad_buffer_header"),  # buffer 2's size field: 0xFFFFFFFF
        ("marker", "bad_record"),  # buffer 2's first record marker: garbage
        ("truncate_half", "truncated_buffer"),
        ("ff64", "bad_record"),  # 64 bytes of 0xFF inside buffer 1 (the corpus's suggestion)
    ],
)
def test_damage_costs_only_its_buffer(damage: str, kind: str) -> None:
    data = bytearray(licensing_file(60, 4096))
    whole = buffer_keys(bytes(data))
    if damage == "size":
        data[2 * 4096 : 2 * 4096 + 4] = b"\xff\xff\xff\xff"
    elif damage == "marker":
        data[2 * 4096 + 0x48 : 2 * 4096 + 0x4C] = b"\x12\x34\x56\x78"
    elif damage == "truncate_half":
        del data[len(data) // 2 + 100 :]
    elif damage == "ff64":
        data[4096 + 200 : 4096 + 264] = b"\xff" * 64
    items = parse_bytes(etl, bytes(data))
    records = trace_records(items)
    issues = all_issues(items)
    assert [i.kind for i in issues if i.quarantined][:1] == [kind]
    kept = {key(r) for r in records}
    assert kept <= whole
    damaged = {"size": 2, "marker": 2, "ff64": 1}.get(damage)
    if damaged is not None:  # every record of the other buffers is there
        assert {k for k in whole if k[0] != damaged * 4096} <= kept
        assert notes(items)["buffers"].endswith(f"of {len(data) // 4096}")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(
    at=st.integers(min_value=0, max_value=5 * 4096 - 1),
    junk=st.binary(min_size=1, max_size=96),
    cut=st.booleans(),
)
def test_damaged_buffers_never_stop_the_file(at: int, junk: bytes, cut: bool) -> None:
    """Random bytes over any part of a file (or the file cut there): only ParseIssues, every
    record of an untouched buffer still read, nothing yielded twice."""
    original = licensing_file(60, 4096)
    whole = buffer_keys(original)
    data = bytearray(original)
    if cut:
        del data[at:]
    else:
        data[at : at + len(junk)] = junk
    try:
        items = parse_bytes(etl, bytes(data))
    except ParseError:
        assert at < 0x48 + 8  # only a damaged header record can make it not an .etl
        return
    records = trace_records(items)
    keys = [key(r) for r in records]
    assert len(keys) == len(set(keys))
    touched = {at // 4096 * 4096, (at + len(junk) - 1) // 4096 * 4096}
    intact = {k for k in whole if k[0] not in touched and (not cut or k[0] < at // 4096 * 4096)}
    assert intact <= set(keys)


def test_lzxpress_output_is_bounded() -> None:
    # a match whose 32-bit length says 4 GiB: an error, not an allocation
    bomb = struct.pack("<I", 0x40000000) + b"A" + struct.pack("<H", 7) + b"\x0f\xff" + struct.pack("<HI", 0, 0xFFFFFFF0)
    with pytest.raises(lzxpress.DecompressionError, match="beyond"):
        lzxpress.decompress(bomb, 65536)
    with pytest.raises(lzxpress.DecompressionError, match="before the start"):
        lzxpress.decompress(struct.pack("<I", 0x80000000) + struct.pack("<H", 0x80), 100)
    # literals and an overlapping match: "abc" then 9 more from 3 back
    data = struct.pack("<I", 0x10000000) + b"abc" + struct.pack("<H", ((3 - 1) << 3) | (9 - 3))
    assert lzxpress.decompress(data, 100) == b"abcabcabcabc"


def test_manifest_and_tmf_loading_errors() -> None:
    with pytest.raises(etw_manifest.ManifestError, match="not an XML document"):
        etw_manifest.read_manifest(b"not xml")
    with pytest.raises(etw_manifest.ManifestError, match="no <provider"):
        etw_manifest.read_manifest(b"<instrumentationManifest/>")
    tmf = wpp_tmf.read_tmf("x.tmf", (DATA / "tmf" / f"{CLDFLT_GUID}.tmf").read_bytes())
    assert sorted(tmf.messages) == [(CLDFLT_GUID, 43), (CLDFLT_GUID, 44)]


def test_tmf_message_from_the_writer() -> None:
    out = io.BytesIO()
    writer = EtlWriter(out, buffer_size=4096)
    args = "PC-0042".encode("utf-16-le") + b"\x00\x00" + b"02000000c0b24e7d\x00" + struct.pack("<i", 17)
    writer.add(wpp_message(CLDFLT_GUID, 44, args, timestamp=writer.raw_time(2)))
    writer.add(tracelogging_event("P", "11111111-2222-3333-4444-555555555555", "E", [("n", "u32", 1)], timestamp=writer.raw_time(3)))
    writer.close()
    tmf = ((f"{CLDFLT_GUID}.tmf", (DATA / "tmf" / f"{CLDFLT_GUID}.tmf").read_bytes()),)
    records = trace_records(parse_bytes(etl, out.getvalue(), tmf_files=tmf))
    message = next(r for r in records if r.event_id == 44)
    assert message.message == "license for PC-0042 (hwid 02000000c0b24e7d) id 17"
    assert message.fields["WPP.Arg1"] == "PC-0042"
    assert message.fields["WPP.Arg3"] == "17"


if __name__ == "__main__":
    write_seed()
