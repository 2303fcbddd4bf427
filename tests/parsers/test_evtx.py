"""EVTX parsing: every corpus file, both backends held equal, damaged files never fewer records."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from caltrail.parsers.base import EventRecord, FileNote, Item, ParseIssue, ParseOptions
from caltrail.parsers.errors import ParseError
from caltrail.parsers.evtx import reader as evtx
from tests.conftest import CORPUS, corpus_path

DATA = Path(__file__).parent / "data"


def parse_all(path: Path, backend: str = "rust") -> tuple[list[EventRecord], list[ParseIssue]]:
    """The records the file's chunks count (records recovered from slack: see
    test_evtx_recover.py), and the issues."""
    records: list[EventRecord] = []
    issues: list[ParseIssue] = []
    with open(path, "rb") as stream:
        for item in evtx.parse(stream, ParseOptions(backend=backend, recover=False)):
            if isinstance(item, EventRecord):
                records.append(item)
            elif isinstance(item, ParseIssue):
                issues.append(item)
    return records, issues


def corpus_reference() -> dict[str, dict[str, object]]:
    """Record counts the corpus documents (SOURCES.md): rs = Rust with skip_errors,
    rsdef = Rust default API, py = python-evtx per-record API, dmg = damaged."""
    sources = CORPUS / "evtx" / "SOURCES.md"
    if not sources.exists():
        return {}
    ref: dict[str, dict[str, object]] = {}
    for line in sources.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 12 and cells[0].endswith(".evtx") and cells[5].isdigit():
            ref[cells[0]] = {
                "rs": int(cells[5]),
                "rsdef": int(cells[6]),
                "py": int(cells[8]) if cells[8].isdigit() else 0,
                "dmg": cells[10] == "yes",
            }
        elif len(cells) >= 7 and cells[0].startswith("System__") and cells[2].isdigit():
            ref["derived/mutants/" + cells[0]] = {
                "rs": int(cells[2]),
                "rsdef": int(cells[3]),
                "py": int(cells[5]),
                "dmg": True,
            }
    return ref


REFERENCE = corpus_reference()


@pytest.mark.parametrize("name", sorted(REFERENCE) or ["<corpus absent>"])
def test_corpus_file_record_counts(name: str) -> None:
    """Clean files: exactly what the Rust parser recovers. Damaged files: never fewer than
    either backend's plain API gives, and every lost record is accounted for."""
    path = corpus_path("evtx", name) if name != "<corpus absent>" else corpus_path("evtx")
    ref = REFERENCE[name]
    try:
        records, issues = parse_all(path)
    except ParseError:
        assert ref["rs"] == 0, "only unreadable files may raise"
        assert ref["py"] == 0, "only unreadable files may raise"
        return
    assert len(records) >= ref["rs"], f"fewer records than pyevtx-rs: {len(records)} < {ref['rs']}"
    if ref["dmg"]:
        assert len(records) >= max(int(ref["rsdef"]), int(ref["py"]))  # type: ignore[call-overload]
    elif not any(i.quarantined for i in issues):
        assert len(records) == ref["rs"]
    # Record ids unique within a file, offsets inside the file.
    size = path.stat().st_size
    assert len({(r.chunk, r.offset) for r in records}) == len(records)
    assert all(0 < r.offset < size for r in records)


def test_corpus_is_complete() -> None:
    """Every .evtx of the corpus is in the reference table, so none is silently untested."""
    root = corpus_path("evtx")
    files = {str(p.relative_to(root)) for p in root.rglob("*.evtx")}
    missing = files - set(REFERENCE) - {"derived/spliced-large-170chunks.evtx"}
    assert not missing


def test_spliced_large_file() -> None:
    path = corpus_path("evtx", "derived", "spliced-large-170chunks.evtx")
    records, issues = parse_all(path)
    assert len(records) == 15299
    assert [r.record_id for r in records] == list(range(1, 15300))
    assert not [i for i in issues if i.quarantined]


@pytest.mark.parametrize("backend", ["rust", "python"])
def test_golden_rows(backend: str) -> None:
    """The first two records of plaso/System.evtx, field by field, for each backend."""
    path = corpus_path("evtx", "plaso", "System.evtx")
    expected = json.loads((DATA / f"evtx_golden_{backend}.json").read_text(encoding="utf-8"))
    got = []
    with open(path, "rb") as stream:
        for item in evtx.parse(stream, ParseOptions(backend=backend)):
            if isinstance(item, EventRecord):
                row = {k: getattr(item, k) for k in item.__slots__}
                row["time_created"] = row["time_created"].isoformat()
                got.append(row)
                if len(got) == len(expected):
                    break
    assert got == expected


# -- the two backends, record by record -------------------------------------------------


# Value renderings XML cannot reconcile, because the BinXML type is lost in the text:
# python-evtx prints SizeT in decimal and binary data in base64, pyevtx-rs prints both in
# hex; pyevtx-rs prints a non-standard BoolType value as its integer; python-evtx drops a
# few control characters. Any other difference fails the test.
def _equivalent(a: str | None, b: str | None) -> bool:
    if a == b:
        return True
    if a is None or b is None:
        return False
    if re.fullmatch(r"0x[0-9a-f]+", a) and b.isdigit():
        return int(a, 16) == int(b)
    if b in ("true", "false") and a.isdigit():
        return (a != "0") == (b == "true")
    if re.fullmatch(r"[0-9A-F]+", a) and re.fullmatch(r"[A-Za-z0-9+/]+=*", b):
        import base64
        import binascii

        try:
            return base64.b64decode(b).hex().upper() == a
        except (ValueError, binascii.Error):
            return False
    return re.sub(r"[\x00-\x1f]", "", a) == b


# Records whose parameters the two renderers lay out differently (empty or array
# substitutions in classic events). Kept explicit: file -> reason.
KNOWN_LAYOUT_DIFFERENCES = {
    "omerbenamram-evtx/sample-with-zero-data-size-event.evtx": "zero-size substitution shifts params",
    "omerbenamram-evtx/system.evtx": "empty substitution shifts params",
}


def _sample_chunks(path: Path, per_chunk: int) -> Iterator[evtx.ChunkSlice]:
    with open(path, "rb") as stream:
        for item in evtx.walk_chunks(stream):
            if isinstance(item, evtx.ChunkSlice):
                item.records = item.records[:per_chunk]
                yield item


def test_backends_agree_record_by_record() -> None:
    """Every corpus file, the first record of up to ~6 chunks spread over it, parsed by both
    backends: equal.

    (python-evtx renders about 100 records/s, so the whole corpus would take many minutes:
    set CALTRAIL_FULL_BACKEND_CHECK=1 to compare every record.)"""
    import os

    root = corpus_path("evtx")
    full = bool(os.environ.get("CALTRAIL_FULL_BACKEND_CHECK"))
    per_chunk = 10_000 if full else 1
    compared = differing = 0
    problems: list[str] = []
    for path in sorted(root.rglob("*.evtx")):
        name = str(path.relative_to(root))
        try:
            chunks = list(_sample_chunks(path, per_chunk))
        except ParseError:
            continue
        for chunk in chunks if full else chunks[:: max(1, len(chunks) // 6)]:
            rust = {
                r.offset: r
                for r in evtx.parse_chunk(chunk, evtx.renderer_for("rust"))
                if isinstance(r, EventRecord)
            }
            python = {
                r.offset: r
                for r in evtx.parse_chunk(chunk, evtx.renderer_for("python"))
                if isinstance(r, EventRecord)
            }
            for offset, a in python.items():
                b = rust.get(offset)
                assert b is not None, f"{name}: python-evtx read a record pyevtx-rs did not"
                compared += 1
                fields_a = {k: getattr(a, k) for k in a.__slots__ if k != "data"}
                fields_b = {k: getattr(b, k) for k in b.__slots__ if k != "data"}
                same = (
                    fields_a == fields_b
                    and set(a.data) == set(b.data)
                    and all(_equivalent(b.data[k], a.data[k]) for k in a.data)
                )
                if not same:
                    differing += 1
                    if name not in KNOWN_LAYOUT_DIFFERENCES:
                        problems.append(f"{name} offset {offset}")
    assert compared > 150
    assert not problems, problems[:10]
    assert differing <= 10


def _rendered(render: evtx.Renderer, chunk: evtx.ChunkSlice) -> list[object]:
    """A renderer's output, comparable: (offset, XML) or (offset, issue kind, message)."""
    return [
        (out.offset, out.kind, out.message)
        if isinstance(out, ParseIssue)
        else (chunk.file_offset + out[0].offset, out[1])
        for out in render(chunk)
    ]


def test_python_backend_is_python_evtx_exactly() -> None:
    """The python backend decodes templates and values itself: every corpus file (damaged
    and derived ones too), records from up to 4 chunks spread over it, give python-evtx's
    own `evtx_record_xml_view` string, and the same error message where it fails.

    (python-evtx's own view renders about 150 records/s: set CALTRAIL_FULL_BACKEND_CHECK=1
    to compare every record of every chunk.)"""
    import os

    root = corpus_path("evtx")
    full = bool(os.environ.get("CALTRAIL_FULL_BACKEND_CHECK"))
    compared = failed = 0
    for path in sorted(root.rglob("*.evtx")):
        try:
            chunks = list(_sample_chunks(path, 10_000))
        except ParseError:
            continue
        for chunk in chunks if full else chunks[:: max(1, len(chunks) // 3)][:4]:
            if not full:
                chunk.records = chunk.records[:6] + chunk.records[6:][-4:]
            fast = _rendered(evtx._python_xml, chunk)
            assert fast == _rendered(evtx._python_xml_reference, chunk), str(path)
            compared += sum(len(out) == 2 for out in fast)
            failed += sum(len(out) == 3 for out in fast)
    assert compared > 1500  # about 2,100
    assert failed > 100  # about 200 (damaged files): their messages compared too


def test_python_backend_failures_are_quarantined_not_lost() -> None:
    """A record python-evtx cannot render is a quarantined issue, never silently dropped."""
    path = corpus_path(
        "evtx", "velocidex-evtx", "Microsoft-Windows-CAPI2_Operational_EventID70.evtx"
    )
    records, issues = parse_all(path, backend="python")
    assert len(records) + sum(i.quarantined for i in issues) >= 1
    for issue in issues:
        if issue.quarantined:
            assert issue.kind in ("bad_record", "bad_record_header")
            assert issue.offset is not None


# -- framing, damage and errors ---------------------------------------------------------


def test_empty_file_is_a_clear_error() -> None:
    with pytest.raises(ParseError, match="empty file"):
        list(evtx.parse(io.BytesIO(b""), ParseOptions()))


def test_not_evtx_is_a_clear_error() -> None:
    with pytest.raises(ParseError, match="bad file magic"):
        list(evtx.parse(io.BytesIO(b"MZ" + b"\x00" * 5000), ParseOptions()))


def test_dirty_header_chunk_count_ignored() -> None:
    """python-evtx issue #85: chunks past the header's count are still read."""
    path = corpus_path("evtx", "derived", "mutants", "System__filehdr_chunkcount_5.evtx")
    records, _ = parse_all(path)
    assert len(records) == 5009


def test_bad_file_magic_still_reads_chunks() -> None:
    path = corpus_path("evtx", "derived", "mutants", "System__filehdr_magic_bad.evtx")
    records, issues = parse_all(path)
    assert len(records) == 5009
    assert any(i.kind == "bad_file_magic" and not i.quarantined for i in issues)


def test_truncated_chunk_keeps_whole_records() -> None:
    path = corpus_path("evtx", "derived", "mutants", "System__trunc_mid_chunk13.evtx")
    records, issues = parse_all(path)
    assert len(records) > 2327  # records wholly inside the cut chunk are kept
    assert sum(i.quarantined for i in issues) == 1  # the one record cut in half


def test_corrupt_record_never_ends_its_chunk() -> None:
    path = corpus_path("evtx", "derived", "mutants", "System__chunk5_rand64_seed5.evtx")
    records, issues = parse_all(path)
    chunk5 = [r for r in records if r.chunk == 5]
    assert chunk5, "records after the damage in chunk 5 are kept"
    assert all(i.message for i in issues)


def test_control_characters_are_read() -> None:
    """Real files hold values a strict XML parser rejects; the record is still read."""
    xml = (
        '<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>'
        "<EventID>7</EventID><Computer>PC\x01-01</Computer></System>"
        '<EventData><Data Name="x">a&#1;b</Data></EventData></Event>'
    )
    rec, repaired = evtx.record_from_xml(xml, evtx.RecordSlice(512, 100, 9, 0), 0, 4608)
    assert repaired
    assert rec.computer == "PC\x01-01"
    assert rec.data["x"] == "a\x01b"


def test_event_id_high_bits_become_qualifiers() -> None:
    xml = (
        '<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>'
        "<EventID>3221295149</EventID></System></Event>"
    )
    rec, _ = evtx.record_from_xml(xml, evtx.RecordSlice(512, 100, 1, 0), 0, 4608)
    assert (rec.event_id, rec.qualifiers) == (4141, 49153)


def test_userdata_flattened_and_unnamed_data_numbered() -> None:
    xml = (
        '<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>'
        "<EventID>1149</EventID></System><UserData>"
        '<EventXML xmlns="Event_NS"><Param1>alice</Param1><Param2>CORP</Param2>'
        "<Param3>10.0.0.5</Param3></EventXML></UserData></Event>"
    )
    rec, _ = evtx.record_from_xml(xml, evtx.RecordSlice(512, 100, 1, 0), 0, 4608)
    assert rec.data == {
        "EventXML.Param1": "alice",
        "EventXML.Param2": "CORP",
        "EventXML.Param3": "10.0.0.5",
    }
    xml2 = (
        '<Event xmlns="http://schemas.microsoft.com/win/2004/08/events/event"><System>'
        "<EventID>4147</EventID></System><EventData><Data>Per Device CAL</Data>"
        "<Data>PC-01</Data></EventData></Event>"
    )
    rec2, _ = evtx.record_from_xml(xml2, evtx.RecordSlice(512, 100, 1, 0), 0, 4608)
    assert rec2.data == {"param1": "Per Device CAL", "param2": "PC-01"}


def test_file_notes_name_backend_and_chunks() -> None:
    path = corpus_path("evtx", "plaso", "System.evtx")
    with open(path, "rb") as stream:
        notes = {
            i.key: i.value for i in evtx.parse(stream, ParseOptions()) if isinstance(i, FileNote)
        }
    assert notes["backend"] == "rust"
    assert notes["chunks"].startswith("27 readable")


def test_byte_ranges_together_read_what_the_whole_file_reads() -> None:
    """The ranges `plan_ranges` cuts, each read by `parse_range`, give the records, issues
    and (added up) counts of one `parse`: what ingest relies on to split a large file.
    The records recovered from slack come at the end of each range."""
    source = corpus_path("evtx", "derived", "spliced-large-170chunks.evtx")
    data = source.read_bytes()
    ranges = evtx.plan_ranges(data[: evtx.RANGE_HEAD], len(data), 3)
    assert len(ranges) == 3
    whole = list(evtx.parse(io.BytesIO(data), ParseOptions()))
    parts: list[Item] = []
    counted: dict[str, FileNote] = {}
    for start, stop in ranges:
        for item in evtx.parse_range(io.BytesIO(data), ParseOptions(), start, stop):
            if isinstance(item, FileNote) and item.counts:
                known = counted.get(item.key)
                counted[item.key] = known.plus(item) if known else item
            elif not isinstance(item, FileNote):
                parts.append(item)
    # the same items; records recovered from slack come at the end of each range
    assert sorted(map(repr, (i for i in whole if not isinstance(i, FileNote)))) == sorted(
        map(repr, parts)
    )
    whole_counted = {i.key: i.value for i in whole if isinstance(i, FileNote) and i.counts}
    assert {k: n.value for k, n in counted.items()} == whole_counted
    assert whole_counted["chunks"] == "170 readable of 170"
    assert evtx.plan_ranges(b"not an evtx file", len(data), 3) == []
