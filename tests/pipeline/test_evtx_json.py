"""The fast EVTX path (pyevtx-rs JSON) gives exactly the records of the XML path."""

from __future__ import annotations

from caltrail.parsers.base import EventRecord
from caltrail.parsers.errors import ParseError
from caltrail.parsers.evtx import reader as evtx
from tests.conftest import corpus_path


def _records(chunk: evtx.ChunkSlice, backend: str) -> dict[int, EventRecord]:
    return {
        r.offset: r
        for r in evtx.parse_chunk(chunk, evtx.renderer_for(backend))
        if isinstance(r, EventRecord)
    }


def test_json_path_equals_xml_path_on_every_corpus_record() -> None:
    """Every record of every corpus file: backend "rust" (JSON) == "rust-xml" (XML), every
    field, and the data map in the same order."""
    root = corpus_path("evtx")
    compared = 0
    for path in sorted(root.rglob("*.evtx")):
        name = str(path.relative_to(root))
        try:
            with open(path, "rb") as stream:
                chunks = [c for c in evtx.walk_chunks(stream) if isinstance(c, evtx.ChunkSlice)]
        except ParseError:
            continue
        for chunk in chunks:
            xml = _records(chunk, "rust-xml")
            fast = _records(chunk, "rust")
            assert set(fast) == set(xml), f"{name} chunk {chunk.index}: different records read"
            for offset, want in xml.items():
                got = fast[offset]
                assert got == want, f"{name} chunk {chunk.index} offset {offset}"
                assert list(got.data.items()) == list(want.data.items()), f"{name} {offset}"
                compared += 1
    assert compared > 100_000


def test_json_duplicate_children_and_attributes() -> None:
    """Repeated children ("X", "X_1"), attributes, namespace declarations, arrays."""
    event = {
        "Event": {
            "#attributes": {"xmlns": "http://schemas.microsoft.com/win/2004/08/events/event"},
            "System": {
                "EventID": {"#attributes": {"Qualifiers": 16384}, "#text": 7036},
                "TimeCreated": {"#attributes": {"SystemTime": "2020-01-01T00:00:00.000000Z"}},
                "Execution": {"#attributes": {"ProcessID": 4, "ThreadID": 8}},
            },
            "UserData": {
                "Rm": {
                    "#attributes": {"xmlns": "urn:x", "xmlns:a": "urn:a", "a:kind": "k"},
                    "App": {"Name": "one"},
                    "App_1": {"Name": "two\r\nlines"},
                    "Flag": True,
                }
            },
        }
    }
    rec = evtx.record_from_json(event, evtx.RecordSlice(512, 100, 1, 0), 0, 4608)
    assert (rec.event_id, rec.qualifiers, rec.process_id, rec.thread_id) == (7036, 16384, 4, 8)
    assert rec.data == {
        "Rm@kind": "k",
        "Rm.App.Name": "one",
        "Rm.App[2].Name": "two\nlines",
        "Rm.Flag": "true",
    }
    data = {"Event": {"System": {}, "EventData": {"Data": {"#text": ["a", None, 3]}}}}
    rec = evtx.record_from_json(data, evtx.RecordSlice(512, 100, 1, 0), 0, 4608)
    assert rec.data == {"param1": "a", "param2": None, "param3": "3"}


def test_python_backend_template_cache_renders_python_evtx_xml_exactly() -> None:
    """The python backend renders each template once per chunk: the XML must be the very
    string python-evtx's own view gives (first records of the first chunks, every file)."""
    root = corpus_path("evtx")
    compared = 0
    for path in sorted(root.rglob("*.evtx")):
        try:
            with open(path, "rb") as stream:
                chunks = [c for c in evtx.walk_chunks(stream) if isinstance(c, evtx.ChunkSlice)]
        except ParseError:
            continue
        for chunk in chunks[:2]:
            chunk.records = chunk.records[:3]
            fast = list(evtx._python_xml(chunk))
            slow = list(evtx._python_xml_reference(chunk))
            assert len(fast) == len(slow)
            for a, b in zip(fast, slow, strict=True):
                if isinstance(b, tuple):
                    assert isinstance(a, tuple), f"{path.name}: {a}"
                    assert a[1] == b[1], f"{path.name} chunk {chunk.index}"
                    compared += 1
                else:
                    assert not isinstance(a, tuple), f"{path.name}: only the reference failed"
    assert compared > 300
