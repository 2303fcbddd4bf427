"""Records read back from chunk slack (evtx/carve.py, evtx/recovery.py).

Writer-made files whose deleted records are known (a rewritten chunk's tail, a circular
log's overwritten chunks) are recovered exactly, record for record and field for field;
copies of allocated records are not emitted twice; a template or a name that is gone is
never rendered from what is there now; near-records in slack are counted, never emitted;
the work bound holds. On the public corpus, every record libevtx recovers is read, and no
allocated record is lost.
"""

from __future__ import annotations

import datetime as dt
import io
import random
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyevtx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caltrail.fixtures.evtx_writer import (
    CHUNK_SIZE,
    HEADER_SIZE,
    EventSpec,
    EvtxWriter,
    write_evtx,
)
from caltrail.parsers.base import Budget, EventRecord, FileNote, ParseIssue, ParseOptions
from caltrail.parsers.errors import ParseError
from caltrail.parsers.evtx import carve, reader
from caltrail.parsers.evtx import structs as S
from caltrail.parsers.evtx.recovery import PARTLY, Recovery
from tests.conftest import corpus_path

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
LICENSING = "Microsoft-Windows-TerminalServices-Licensing"


# --- specs and reading ---------------------------------------------------------------


def licensing(i: int, pad: int = 0, computer: str = "LS01") -> EventSpec:
    """A license server event (4105-like: client name, user, CAL type), `pad` characters
    longer when asked (to vary record sizes)."""
    return EventSpec(
        provider=LICENSING,
        event_id=4105 if i % 2 else 4106,
        time_created=T0 + dt.timedelta(minutes=i),
        computer=computer,
        channel=f"{LICENSING}/Admin",
        qualifiers=16384,
        data=[f"PC-{i:05d}", f"user{i % 7}" + "x" * pad, "Per Device CAL"],
    )


def session(i: int, pad: int = 0) -> EventSpec:
    """A session host event with named UserData (another pair of templates)."""
    return EventSpec(
        provider="Microsoft-Windows-TerminalServices-LocalSessionManager",
        event_id=21,
        time_created=T0 + dt.timedelta(minutes=i, seconds=30),
        computer="RDSH01",
        channel="Microsoft-Windows-TerminalServices-LocalSessionManager/Operational",
        provider_guid="{5d896912-022d-40aa-a3a8-4fa5515c76d7}",
        version=0,
        user_sid="S-1-5-18",
        user_data=(
            "EventXML",
            "Event_NS",
            {"User": f"CORP\\u{i}" + "y" * pad, "SessionID": str(i)},
        ),
    )


def specs(n: int, pad: int = 0) -> list[EventSpec]:
    return [licensing(i, pad) if i % 3 else session(i, pad) for i in range(n)]


def parse(
    data: bytes, backend: str = "rust", recover: bool = True
) -> tuple[list[EventRecord], list[ParseIssue], dict[str, str]]:
    records: list[EventRecord] = []
    issues: list[ParseIssue] = []
    notes: dict[str, str] = {}
    for item in reader.parse(io.BytesIO(data), ParseOptions(backend=backend, recover=recover)):
        if isinstance(item, EventRecord):
            records.append(item)
        elif isinstance(item, ParseIssue):
            issues.append(item)
        elif isinstance(item, FileNote):
            notes[item.key] = item.value
    return records, issues, notes


def content(record: EventRecord) -> tuple[Any, ...]:
    """A record's fields but its location (and whether it was recovered)."""
    return tuple(
        getattr(record, name)
        for name in EventRecord.__slots__
        if name not in ("chunk", "offset", "recovered")
    )


def reference(events: Sequence[EventSpec], backend: str = "rust") -> dict[int, tuple[Any, ...]]:
    """Record id -> content, read from a file holding every event allocated."""
    buf = io.BytesIO()
    write_evtx(buf, events)
    records, _, _ = parse(buf.getvalue(), backend, recover=False)
    return {r.record_id: content(r) for r in records}


def counts(note: str) -> dict[str, int]:
    """ "12 found, 3 recovered, ..." -> {"found": 12, "recovered": 3, ...}"""
    return {name: int(n) for n, name in re.findall(r"(\d+) ([a-z ]+)", note)}


def chunk_offsets(data: bytes) -> list[int]:
    return list(range(HEADER_SIZE, len(data), CHUNK_SIZE))


def records_of(data: bytes, chunk: int) -> list[tuple[int, int, int]]:
    """(offset in chunk, size, record id) of a chunk's allocated records."""
    at = HEADER_SIZE + chunk * CHUNK_SIZE
    free = struct.unpack_from("<I", data, at + 48)[0]
    out, pos = [], 512
    while pos < free:
        _, size, record_id, _ = S.RECORD_HEADER.unpack_from(data, at + pos)
        out.append((pos, size, record_id))
        pos += size
    return out


# --- writer-made slack, recovered exactly ----------------------------------------------


def circular(events: Sequence[EventSpec], chunks: int) -> tuple[bytes, EvtxWriter]:
    """`events` written as a circular log of `chunks` chunks: once they are full, each
    new chunk is written over the oldest one (writer.slack: what that left in slack)."""
    buf = io.BytesIO()
    with EvtxWriter(buf, max_chunks=chunks) as writer:
        writer.add_all(events)
    return buf.getvalue(), writer


def rewritten(make: Any = licensing, chunks: int = 1) -> tuple[list[EventSpec], bytes, EvtxWriter]:
    """Long events filling `chunks` chunks, then short ones written over the first: the
    rewritten chunk keeps the tail of its older records in its slack. The first event
    of each stretch has the same shape and value sizes, so the rewritten chunk holds its
    templates where the old records point."""
    events = [make(i, 200) for i in range(80 * chunks)] + [
        make(80 * chunks + i, 0) for i in range(20)
    ]
    data, writer = circular(events, chunks)
    assert writer.slack
    return events, data, writer


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_a_rewritten_chunk_keeps_its_old_records_in_slack(backend: str) -> None:
    events, data, writer = rewritten()
    want = reference(events, backend)
    records, issues, notes = parse(data, backend)
    recovered = {r.record_id: r for r in records if r.recovered}
    assert set(recovered) == {s.record_id for s in writer.slack}
    for s in writer.slack:
        r = recovered[s.record_id]
        assert content(r) == want[s.record_id]
        assert (r.chunk, r.offset) == (0, HEADER_SIZE + s.offset)
    allocated = [r for r in records if not r.recovered]
    newest = allocated[0].record_id  # the chunk holds the newest records, then the old ones
    assert [r.record_id for r in allocated] == list(range(newest, len(events) + 1))
    assert newest > max(recovered)
    for r in allocated:
        assert content(r) == want[r.record_id]
    assert not issues
    assert counts(notes["carve_candidates"]) == {
        "found": len(writer.slack),
        "recovered": len(writer.slack),
        "without payload": 0,
        "duplicates": 0,
        "rejected": 0,
    }


def shrinking(n: int) -> list[EventSpec]:
    """Events that get shorter as the log goes on, so that a chunk written over holds fewer
    bytes of records than it did, and the records of its older self stay in its slack.
    Their sizes change, so the templates of a chunk written over do not lie where its old
    records point; every chunk holds every shape (three computers, two kinds of event), so
    a copy of each template is left in the file."""
    out = []
    for i in range(n):
        pad = max(0, 260 - i // 2)
        out.append(licensing(i, pad, computer=f"LS{i % 3:02d}") if i % 4 else session(i, pad))
    return out


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_circular_log_slack_is_recovered_exactly(backend: str) -> None:
    events = shrinking(600)
    data, writer = circular(events, 3)
    slack = writer.slack
    assert len(slack) > 20
    want = reference(events, backend)

    records, issues, notes = parse(data, backend)
    recovered = {r.record_id: r for r in records if r.recovered}
    assert set(recovered) == {s.record_id for s in slack}
    for s in slack:
        r = recovered[s.record_id]
        assert content(r) == want[s.record_id], s.record_id
        assert (r.chunk, r.offset) == (s.chunk, HEADER_SIZE + s.chunk * CHUNK_SIZE + s.offset)
    allocated = [r for r in records if not r.recovered]
    assert {r.record_id for r in allocated}.isdisjoint(recovered)
    for r in allocated:
        assert content(r) == want[r.record_id]
    assert not issues
    # some of them named templates their chunk no longer holds where they point: those
    # were rendered with copies found in other chunks
    rebuilt = 0
    with io.BytesIO(data) as stream:
        for chunk in reader.walk_chunks(stream):
            if isinstance(chunk, S.ChunkSlice):
                found, _ = carve.scan(chunk.data, chunk.records)
                rebuilt += sum(bool(c.missing) for c in found)
    assert rebuilt > 0
    note = counts(notes["carve_candidates"])
    assert note["recovered"] == len(slack)
    assert note["found"] >= len(slack)


def test_circular_log_libevtx_recovers_no_more(tmp_path: Path) -> None:
    data, writer = circular(shrinking(600), 3)
    path = tmp_path / "circular.evtx"
    path.write_bytes(data)
    log = pyevtx.file()
    log.open(str(path))
    try:
        theirs = set()
        for i in range(log.number_of_recovered_records):
            try:
                record = log.get_recovered_record(i)
                record.xml_string  # noqa: B018 - rendered, as libevtx recovers it
            except OSError:
                continue
            theirs.add(record.identifier)
    finally:
        log.close()
    assert theirs  # libevtx recovers some of them too
    assert theirs <= {s.record_id for s in writer.slack}


def test_slack_copies_of_allocated_records_are_not_emitted_twice() -> None:
    """The last chunk's slack given byte copies of the first chunk's records, at their
    offsets (as an export's stale buffer leaves them): they are duplicates, except one
    whose value was changed, a record of its own."""
    events = specs(330, pad=60)
    buf = io.BytesIO()
    write_evtx(buf, events)
    data = bytearray(buf.getvalue())
    offsets = chunk_offsets(bytes(data))
    first, last = offsets[0], offsets[-1]
    free = struct.unpack_from("<I", data, last + 48)[0]
    copies = [r for r in records_of(bytes(data), 0) if r[0] >= free]
    assert len(copies) >= 5
    for offset, size, _ in copies:
        data[last + offset : last + offset + size] = data[first + offset : first + offset + size]
    changed_at, changed_size, changed_id = next(r for r in copies[2:] if events[r[2] - 1].data)
    old = f"PC-{changed_id - 1:05d}".encode("utf-16-le")
    body = data[last + changed_at : last + changed_at + changed_size]
    assert old in body
    data[last + changed_at : last + changed_at + changed_size] = body.replace(
        old, "PC-99999".encode("utf-16-le")
    )

    records, issues, notes = parse(bytes(data))
    recovered = [r for r in records if r.recovered]
    assert [r.record_id for r in recovered] == [changed_id]
    assert recovered[0].data["param1"] == "PC-99999"
    note = counts(notes["carve_candidates"])
    assert note["duplicates"] == len(copies) - 1
    assert note["recovered"] == 1
    assert not [i for i in issues if i.quarantined]


def _damage_template(data: bytes, chunk: int, record_offset: int, which: int) -> bytes:
    """Change the id of the `which`-th template (0: System, 1: payload) that the record at
    `record_offset` of `chunk` names, where it points: the template there is no longer
    the one the record names (a reader that does not check ids would still use it)."""
    at = HEADER_SIZE + chunk * CHUNK_SIZE
    size = struct.unpack_from("<I", data, at + record_offset + 4)[0]
    body = data[at : at + CHUNK_SIZE]
    refs = carve.template_refs(body, record_offset + 24, record_offset + size - 4)
    assert refs is not None
    template = refs[which].offset
    assert carve.defined_at(body, template) == refs[which].template_id
    out = bytearray(data)
    out[at + template + 4 : at + template + 8] = b"\xde\xad\xbe\xef"
    return bytes(out)


def test_a_payload_template_gone_from_the_file_leaves_the_record_without_payload() -> None:
    events, data, writer = rewritten()
    broken = _damage_template(data, 0, writer.slack[0].offset, which=1)
    want = reference(events)

    records, issues, notes = parse(broken)
    recovered = [r for r in records if r.recovered]
    assert len(recovered) == len(writer.slack)
    for r in recovered:
        assert r.data == {}  # never rendered with what now lies where its template was
        assert content(r)[:-1] == want[r.record_id][:-1]  # everything else is
    partly = [i for i in issues if i.kind == PARTLY]
    assert len(partly) == len(writer.slack)
    assert not any(i.quarantined for i in partly)
    assert counts(notes["carve_candidates"])["without payload"] == len(writer.slack)


def test_a_template_gone_from_its_chunk_is_rebuilt_from_another_chunk() -> None:
    events, data, writer = rewritten(chunks=2)
    in_first = [s for s in writer.slack if s.chunk == 0]
    assert in_first
    broken = _damage_template(data, 0, in_first[0].offset, which=1)
    want = reference(events)

    records, issues, _ = parse(broken)
    recovered = {r.record_id: r for r in records if r.recovered}
    assert set(recovered) == {s.record_id for s in writer.slack}
    for r in recovered.values():
        assert content(r) == want[r.record_id]  # whole: its payload template from chunk 1
    assert [i.kind for i in issues] == ["chunk_data_checksum"]  # the bytes changed above


def test_a_record_whose_own_template_is_gone_is_rejected() -> None:
    _, data, writer = rewritten()
    broken = _damage_template(data, 0, writer.slack[0].offset, which=0)
    records, issues, notes = parse(broken)
    assert not [r for r in records if r.recovered]
    # the allocated ones are read (the renderers do not check template ids)
    assert len(records) == len(parse(data, recover=False)[0])
    assert f"{len(writer.slack)} template gone" in notes["carve_rejected"]
    assert not [i for i in issues if i.quarantined]


def test_overwritten_names_are_never_rendered() -> None:
    """A name the payload template uses, written over (its characters no longer match
    its hash): the old records are recovered without their payload rather than with an
    element name that is not theirs."""
    _, data, writer = rewritten(session)
    buf = bytearray(data)
    name = "SessionID".encode("utf-16-le")
    at = buf.index(name, HEADER_SIZE)
    buf[at : at + len(name)] = "SessionXX".encode("utf-16-le")
    records, issues, _ = parse(bytes(buf))
    recovered = [r for r in records if r.recovered]
    assert len(recovered) == len(writer.slack)
    assert all(r.data == {} for r in recovered)
    assert len([i for i in issues if i.kind == PARTLY]) == len(writer.slack)


def test_recovery_off_reads_allocated_records_only() -> None:
    data, _ = circular(shrinking(600), 3)
    on, _, _ = parse(data)
    off, _, notes = parse(data, recover=False)
    assert [content(r) for r in off] == [content(r) for r in on if not r.recovered]
    assert not any(r.recovered for r in off)
    assert notes["carve_candidates"] == "not searched (recovery turned off)"


# --- the work bound --------------------------------------------------------------------


def test_recovery_stops_at_the_work_bound_with_one_issue() -> None:
    data, writer = circular(shrinking(600), 3)
    budget = Budget(3600)
    stream = io.BytesIO(data)
    recovery = Recovery(stream, reader._rust_json_then_xml, reader._convert, budget)
    for item in reader.walk_chunks(stream, budget):
        if isinstance(item, S.ChunkSlice):
            recovery.scan(item)
    budget.max_seconds = -1.0  # spent: nothing more is rendered
    out = list(recovery.finish())
    stopped = [i for i in out if isinstance(i, ParseIssue)]
    assert [i.kind for i in stopped] == ["budget_exceeded"]
    assert stopped[0].quarantined
    assert not [i for i in out if isinstance(i, EventRecord)]
    (note,) = [i for i in out if isinstance(i, FileNote) and i.key == "carve_candidates"]
    assert counts(note.value)["not examined"] == len(writer.slack)


# --- near-records in slack -------------------------------------------------------------


@pytest.fixture(scope="module")
def slack_file() -> tuple[bytes, set[int], int, dict[int, tuple[Any, ...]]]:
    """A rewritten chunk, the ids of the records in its slack, where they end, and what
    every record holds."""
    events, data, writer = rewritten()
    end = max(s.offset + s.size for s in writer.slack)
    return data, {s.record_id for s in writer.slack}, end, reference(events)


def _near_record(draw: st.DrawFn, body: bytes) -> bytes:
    """Bytes that almost make a record: one check of carve.py fails."""
    flaw = draw(st.sampled_from(["size copy", "id", "time", "size", "body", "cut"]))
    size = 24 + len(body) + 4
    record_id = draw(st.integers(1, 10**6))
    filetime = carve.FIRST_FILETIME + draw(st.integers(0, 10**17))
    if flaw == "id":
        record_id = draw(st.sampled_from([0, carve.MAX_RECORD_ID, 2**63 - 1]))
    if flaw == "time":
        filetime = draw(st.sampled_from([0, carve.FIRST_FILETIME - 1, carve.LAST_FILETIME]))
    tail = size + (draw(st.integers(1, 100)) if flaw == "size copy" else 0)
    head_size = draw(st.sampled_from([0, 27, 70000])) if flaw == "size" else size
    if flaw == "body":  # a fragment header, then no root: not BinXML a record can hold
        body = b"\x0f\x01\x01\x00" + bytes(len(body))
        size = tail = head_size = 24 + len(body) + 4
    out = S.RECORD_HEADER.pack(S.RECORD_MAGIC, head_size, record_id, filetime) + body
    out += struct.pack("<I", tail)
    if flaw == "cut":
        out = out[: draw(st.integers(4, len(out) - 1))]
    return out


@st.composite
def slack_noise(draw: st.DrawFn) -> list[bytes]:
    pieces = []
    for _ in range(draw(st.integers(1, 25))):
        body = draw(st.binary(min_size=0, max_size=200))
        pieces.append(_near_record(draw, body) if draw(st.booleans()) else S.RECORD_MAGIC + body)
    return pieces


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(noise=slack_noise(), gap=st.integers(0, 64), spacing=st.integers(0, 16))
def test_near_records_in_slack_are_counted_never_emitted(
    slack_file: tuple[bytes, set[int], int, dict[int, tuple[Any, ...]]],
    noise: list[bytes],
    gap: int,
    spacing: int,
) -> None:
    data, deleted, end, want = slack_file
    alive = [r.record_id for r in parse(data, recover=False)[0]]
    buf = bytearray(data)
    pos = HEADER_SIZE + end + gap
    written = 0
    for piece in noise:
        if pos + len(piece) > HEADER_SIZE + CHUNK_SIZE:
            break
        buf[pos : pos + len(piece)] = piece
        pos += len(piece) + spacing
        written += 1
    records, issues, notes = parse(bytes(buf))
    recovered = [r for r in records if r.recovered]
    assert {r.record_id for r in recovered} == deleted
    for r in recovered:
        assert content(r) == want[r.record_id]
    assert [r.record_id for r in records if not r.recovered] == alive
    assert not issues
    note = counts(notes["carve_candidates"])
    assert note["recovered"] == len(deleted)
    assert note["found"] >= len(deleted) + written  # each piece starts with the signature
    assert note["found"] == note["recovered"] + note["rejected"]


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 60))
def test_random_damage_in_slack_never_costs_an_allocated_record(seed: int, flips: int) -> None:
    _, data, _ = rewritten()
    alive = [r.record_id for r in parse(data, recover=False)[0]]
    buf = bytearray(data)
    rnd = random.Random(seed)
    free = struct.unpack_from("<I", buf, HEADER_SIZE + 48)[0]
    for _ in range(flips):
        buf[HEADER_SIZE + rnd.randrange(free, CHUNK_SIZE)] = rnd.randrange(256)
    records, issues, notes = parse(bytes(buf))
    assert [r.record_id for r in records if not r.recovered] == alive
    assert not [i for i in issues if i.quarantined]
    note = counts(notes["carve_candidates"])
    assert note["found"] >= note["recovered"] + note["rejected"] + note["duplicates"]


# --- the public corpus, against libevtx ------------------------------------------------


def _libevtx(path: Path) -> tuple[int, set[tuple[int, int]]] | None:
    """libevtx's count of allocated records, and the (id, written time in us) of the
    records it recovers (those it can render); None when it cannot open the file."""
    log = pyevtx.file()
    try:
        log.open(str(path))
    except OSError:
        return None
    epoch = dt.datetime(1601, 1, 1)  # noqa: DTZ001 - libevtx gives naive UTC
    try:
        recovered = set()
        for i in range(log.number_of_recovered_records):
            try:
                record = log.get_recovered_record(i)
                record.xml_string  # noqa: B018 - libevtx counts it only when it renders
            except OSError:
                continue
            written = (record.written_time - epoch) // dt.timedelta(microseconds=1)
            recovered.add((record.identifier, written))
        return log.number_of_records, recovered
    finally:
        log.close()


_QUARANTINED_ID = re.compile(r"record (\d+):")


def test_corpus_recovers_what_libevtx_recovers_and_loses_no_allocated_record() -> None:
    """Every corpus file: every record libevtx recovers (by id and written time) is read,
    allocated or recovered, unless caltrail framed it as allocated and quarantined it (a
    damaged record of a derived mutant); the allocated records equal those read with
    recovery off. Over the real files (not the derived mutants), caltrail's rows are at
    least libevtx's records, allocated and recovered."""
    root = corpus_path("evtx")
    totals = {"libevtx": 0, "caltrail": 0, "recovered": 0}
    missing: list[str] = []
    for path in sorted(root.rglob("*.evtx")):
        name = str(path.relative_to(root))
        theirs = _libevtx(path)
        data = path.read_bytes()
        try:
            records, issues, notes = parse(data)
        except ParseError:
            assert theirs is None or theirs == (0, set()), name
            continue
        if not notes["carve_candidates"].startswith("0 found"):
            off, _, _ = parse(data, recover=False)
            allocated = [r for r in records if not r.recovered]
            assert [content(r) for r in allocated] == [content(r) for r in off], name
        if theirs is None:
            continue
        ours = {(r.record_id, r.filetime // 10) for r in records}
        quarantined = {
            int(m.group(1))
            for i in issues
            if i.quarantined and (m := _QUARANTINED_ID.search(i.message))
        }
        lost = {k for k in theirs[1] if k not in ours and k[0] not in quarantined}
        if lost:
            missing.append(f"{name}: {sorted(lost)[:3]}")
        if not name.startswith("derived/"):
            totals["libevtx"] += theirs[0] + len(theirs[1])
            totals["caltrail"] += len(records)
            totals["recovered"] += sum(r.recovered for r in records)
    assert not missing, missing
    assert totals["caltrail"] >= totals["libevtx"]
    assert totals["recovered"] > 1000


def test_records_of_a_chunk_whose_header_is_gone_are_recovered() -> None:
    """A chunk whose header and first record's header were zeroed is no chunk any more
    (reported, quarantined once); its other records are still whole, and are recovered."""
    events = specs(330, pad=60)
    buf = io.BytesIO()
    write_evtx(buf, events)
    data = bytearray(buf.getvalue())
    second = chunk_offsets(bytes(data))[1]
    in_chunk = records_of(bytes(data), 1)
    data[second : second + 520] = bytes(520)
    want = reference(events)

    records, issues, notes = parse(bytes(data))
    assert [i.kind for i in issues if i.quarantined] == ["bad_chunk_magic"]
    recovered = {r.record_id: r for r in records if r.recovered}
    assert set(recovered) == {rid for _, _, rid in in_chunk[1:]}
    for r in recovered.values():
        assert content(r) == want[r.record_id]
        assert r.chunk == 1
    assert counts(notes["carve_candidates"])["recovered"] == len(in_chunk) - 1
    assert (
        notes["chunks"]
        == f"{len(chunk_offsets(bytes(data))) - 1} readable of {len(chunk_offsets(bytes(data)))}"
    )
