"""The python backend's own value decoding (`caltrail.parsers.evtx.pysubs`) gives python-evtx's XML
exactly: every value type, odd sizes and broken values, in synthetic one-record chunks (the
corpus has few of the rarer types), plus randomly damaged corpus chunks."""

from __future__ import annotations

import itertools
import random
import struct
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest

from caltrail.parsers.base import ParseIssue
from caltrail.parsers.evtx import reader as evtx
from tests.conftest import corpus_path

CHUNK = 65536
RECORD = 512


def _name(text: str) -> bytes:
    """A name string as BinXML defines it inline: next offset, hash, length, UTF-16, NUL."""
    return struct.pack("<IHH", 0, 0, len(text)) + text.encode("utf-16-le") + b"\x00\x00"


def _chunk(
    values: list[tuple[int, int, bytes]],
    used: list[int] | None = None,
    inner: Callable[[int], bytes] | None = None,
) -> evtx.ChunkSlice:
    """One chunk holding one record: `<E>` with the substitutions `used` (default all),
    each followed by a "|" text, over the (type, declared size, bytes) `values`; and
    first the tokens `inner(offset)` gives for the chunk offset they start at."""
    root = RECORD + 24
    instance = root + 4  # after the fragment header
    template = instance + 10  # defined right after its instance (resident)
    name_at = template + 0x18 + 11
    body = bytearray(b"\x01\xff\xff\x00\x00\x00\x00" + struct.pack("<I", name_at))
    body += _name("E") + b"\x02"
    if inner is not None:
        body += inner(template + 0x18 + len(body))
    for index in range(len(values)) if used is None else used:
        body += struct.pack("<BHB", 0x0D, index, values[index][0] if index < len(values) else 1)
        body += b"\x05\x01" + struct.pack("<H", 1) + "|".encode("utf-16-le")
    body += b"\x04\x00"
    definition = struct.pack("<I", 0) + bytes(16) + struct.pack("<I", len(body)) + body
    binxml = bytearray(b"\x0f\x01\x01\x00")
    binxml += struct.pack("<BBII", 0x0C, 0x01, 1, template) + definition
    binxml += struct.pack("<I", len(values))
    for type_, size, _ in values:
        binxml += struct.pack("<HBB", size, type_, 0)
    for _, _, raw in values:
        binxml += raw
    binxml += b"\x00"
    size = 24 + len(binxml) + 4
    data = bytearray(CHUNK)
    data[:8] = b"ElfChnk\x00"
    data[RECORD : RECORD + 24] = struct.pack("<4sIQQ", b"\x2a\x2a\x00\x00", size, 1, 0)
    data[RECORD + 24 : RECORD + 24 + len(binxml)] = binxml
    data[RECORD + size - 4 : RECORD + size] = struct.pack("<I", size)
    return evtx.ChunkSlice(0, 4096, bytes(data), [evtx.RecordSlice(RECORD, size, 1, 0)])


def _outputs(render: evtx.Renderer, chunk: evtx.ChunkSlice) -> list[object]:
    return [
        (out.kind, out.message) if isinstance(out, ParseIssue) else out[1] for out in render(chunk)
    ]


def _same_as_python_evtx(chunk: evtx.ChunkSlice) -> list[object]:
    fast = _outputs(evtx._python_xml, chunk)
    assert fast == _outputs(evtx._python_xml_reference, chunk)
    return fast


def _v(type_: int, raw: bytes, size: int | None = None) -> tuple[int, int, bytes]:
    return (type_, len(raw) if size is None else size, raw)


def _w(text: str) -> bytes:
    return text.encode("utf-16-le")


S, Q, I4 = struct.Struct, struct.pack, "<i"
VALUES = {
    "wstring": [_v(1, _w("plain")), _v(1, _w("a<b>&'\"")), _v(1, _w("nul\x00\x00"))],
    "wstring odd sizes": [_v(1, _w("abc"), 5), _v(1, b"", 0), _v(1, _w("x"), 1)],
    "wstring controls": [_v(1, _w("tab\there\x01\x7f\x85\x9f\u2028é"))],
    "wstring byte order marks": [_v(1, b"\xff\xfe" + _w("bom")), _v(1, b"\xfe\xff\x00a")],
    "wstring lone surrogate": [_v(1, b"\x00\xd8a\x00")],
    "ansi": [_v(2, b"ansi\x00"), _v(2, b"", 0), _v(2, b"x<y")],
    "ansi not ascii": [_v(2, b"caf\xe9")],
    "integers": [
        _v(3, Q("<b", -128)), _v(4, Q("<B", 255)), _v(5, Q("<h", -32768)),
        _v(6, Q("<H", 65535)), _v(7, Q("<i", -(2**31))), _v(8, Q("<I", 2**32 - 1)),
        _v(9, Q("<q", -(2**63))), _v(10, Q("<Q", 2**64 - 1)),
    ],
    "integer sizes within 4": [_v(4, b"\x07\x00\x00\x00\x00", 5), _v(8, Q("<I", 9), 0)],
    "integer size off by 5": [_v(4, b"\x07" * 6, 6)],
    "floats": [
        _v(11, Q("<f", 0.1)), _v(11, Q("<f", float("nan"))), _v(12, Q("<d", -0.0)),
        _v(12, Q("<d", float("inf"))), _v(12, Q("<d", 1e300)),
    ],
    "booleans": [_v(13, Q(I4, 0)), _v(13, Q(I4, 1)), _v(13, Q(I4, -1)), _v(13, Q(I4, 2))],
    "binary": [_v(14, bytes(range(40))), _v(14, b"", 0)],
    "guid": [_v(15, bytes(range(16))), _v(15, bytes(range(16, 32)), 12)],
    "size_t": [_v(16, Q("<I", 7)), _v(16, Q("<Q", 2**40)), _v(16, Q("<Q", 5), 0)],
    "size_t odd size": [_v(16, Q("<Q", 5) + b"\x01\x02", 10), _v(16, Q("<Q", 3)[:6], 6)],
    "filetime": [_v(17, Q("<Q", 0)), _v(17, Q("<Q", 133_500_000_000_000_000))],
    "filetime out of range": [_v(17, Q("<Q", 2**63 + 12345)), _v(17, Q("<Q", 2**64 - 1))],
    "systemtime": [_v(18, Q("<8H", 2024, 2, 4, 29, 23, 59, 58, 999))],
    "systemtime invalid": [_v(18, Q("<8H", 2024, 13, 0, 1, 0, 0, 0, 0))],
    "sid": [
        _v(19, b"\x01\x01" + b"\x00" * 5 + b"\x05" + Q("<I", 18)),
        _v(19, b"\x01\x04" + b"\x00" * 5 + b"\x05" + Q("<4I", 21, 1, 2, 3)),
        _v(19, b"\x01\x00\x12\x34\x56\x78\x9a\xbc"),
    ],
    "sid size mismatch": [_v(19, b"\x01\x05" + b"\x00" * 6 + Q("<I", 1), 12)],
    "hex": [_v(20, Q("<I", 0xDEADBEEF)), _v(21, Q("<Q", 0x0123456789ABCDEF))],
    "null": [_v(0, b"", 0), _v(0, b"abc", 3)],
    "string array": [_v(0x81, _w("one\x00two\x00\x00\x00three\x00"))],
    "string array odd nulls": [_v(0x81, b"a\x00\x00\x00\x00")],
    "string arrays": [
        _v(0x81, b""), _v(0x81, b"\x00\x00\x00\x00"), _v(0x81, _w("x\ny") + b"\x00\x00"),
        _v(0x81, b"\x00\x00" + _w("lead")), _v(0x81, _w("\u20ac") + b"\x00\x00" + _w("z")),
    ],
    "unknown type": [_v(0x22, b"abcd")],
    "array of integers": [_v(0x88, Q("<2I", 1, 2))],
}  # fmt: skip


# Cases python-evtx renders (the others are its errors, which must stay its errors).
RENDERED = sorted(
    set(VALUES)
    - {"wstring lone surrogate", "ansi not ascii", "integer size off by 5", "systemtime invalid"}
    - {"sid size mismatch", "unknown type", "array of integers", "string array odd nulls"}
)


def _python_evtx_renders(chunk: evtx.ChunkSlice) -> int:
    """How many fragments python-evtx rendered for `_python_xml` (0: all decoded here)."""
    import Evtx.Views

    with mock.patch.object(
        Evtx.Views, "render_root_node", wraps=Evtx.Views.render_root_node
    ) as spy:
        list(evtx._python_xml(chunk))
    return int(spy.call_count)


@pytest.mark.parametrize("case", sorted(VALUES))
def test_value_types_render_as_python_evtx_renders_them(case: str) -> None:
    chunk = _chunk(VALUES[case])
    [out] = _same_as_python_evtx(chunk)
    assert isinstance(out, str) == (case in RENDERED), out
    if case in RENDERED:
        assert _python_evtx_renders(chunk) == 0, "rendered by python-evtx, not decoded here"


def test_every_type_in_one_record() -> None:
    values = [v for case in RENDERED for v in VALUES[case] if v[1] == len(v[2])]
    chunk = _chunk(values)
    [xml] = _same_as_python_evtx(chunk)
    assert isinstance(xml, str)
    assert xml.startswith("<E>")
    assert "S-1-5-18|" in xml
    assert _python_evtx_renders(chunk) == 0


def _u16(n: int) -> bytes:
    return struct.pack("<H", n)


def _u32(n: int) -> bytes:
    return struct.pack("<I", n)


# Template tokens other than elements, attributes and substitutions, as python-evtx reads
# them (CDATA: it skips 3 + n bytes and reads n - 2 UTF-16 units, n its length field).
TOKENS: dict[str, Callable[[int], bytes]] = {
    "cdata": lambda at: b"\x07" + _u16(4) + _w("a<"),
    "cdata of another length": lambda at: b"\x07" + _u16(12) + _w("cdata&text") + b"\x00\x00",
    "character reference": lambda at: b"\x08" + _u16(0x41),
    "entity reference": lambda at: b"\x09" + _u32(at + 5) + _name("amp"),
    "entity reference to a name": lambda at: b"\x09" + _u32(RECORD + 24 + 14 + 0x18 + 11),
    "processing instruction": lambda at: (
        b"\x0a" + _u32(at + 5) + _name("xml-stylesheet") + b"\x0b" + _u16(8) + _w("href='a'")
    ),
    "processing instruction, no data": lambda at: b"\x0b\x00\x00",
    "text value": lambda at: b"\x05\x01" + _u16(5) + _w("t&<>\x01"),
    "null text value": lambda at: b"\x05\x00",
    "name past the chunk": lambda at: b"\x09" + _u32(0x7FFF0000),
}


@pytest.mark.parametrize("case", sorted(TOKENS))
def test_template_tokens_render_as_python_evtx_renders_them(case: str) -> None:
    chunk = _chunk([_v(1, _w("v"))], inner=TOKENS[case])
    [out] = _same_as_python_evtx(chunk)
    if isinstance(out, str):
        assert out.startswith("<E>")
    assert _python_evtx_renders(chunk) == 0, "rendered by python-evtx, not here"


def _with_u32(chunk: evtx.ChunkSlice, at: int, value: int) -> evtx.ChunkSlice:
    data = bytearray(chunk.data)
    data[at : at + 4] = _u32(value)
    return evtx.ChunkSlice(chunk.index, chunk.file_offset, bytes(data), chunk.records)


NAME_E = RECORD + 24 + 14 + 0x18 + 11  # where `_chunk` defines the name "E"


@pytest.mark.parametrize(
    "chain",
    [
        [NAME_E],  # the chunk's string table lists the template's own name
        [0xFFFC],  # a name whose length lies past the chunk: python-evtx fails loading
        [0xFFF8],  # its length just inside the chunk (its text past it)
        [NAME_E, 0x7000],  # a chain on to zeros (a name of length 0)
    ],
)
def test_chunk_string_table_read_as_python_evtx_reads_it(chain: list[int]) -> None:
    """python-evtx loads the chunk's string table when it first needs a name; the fast
    path keeps the same table (without python-evtx's objects) and fails where it fails."""
    for inner in (None, TOKENS["entity reference to a name"], TOKENS["name past the chunk"]):
        chunk = _chunk([_v(1, _w("v"))], inner=inner)
        chunk = _with_u32(chunk, 0x80 + 4 * 7, chain[0])
        for here, after in itertools.pairwise(chain):
            chunk = _with_u32(chunk, here, after)  # each name's next-name offset
        _same_as_python_evtx(chunk)


TEMPLATE = RECORD + 24 + 14  # where `_chunk` defines its template


@pytest.mark.parametrize(
    ("table", "first", "loop_at"),
    [(0x80, NAME_E, NAME_E), (0x180, TEMPLATE, TEMPLATE)],
    ids=["strings", "templates"],
)
def test_chunk_table_that_loops_is_an_error_not_a_hang(
    table: int, first: int, loop_at: int
) -> None:
    """A chain of the chunk's string or template table that comes back on itself:
    python-evtx would loop forever loading it; here each record is an error instead."""
    chunk = _with_u32(_chunk([_v(1, _w("v"))]), table, first)
    chunk = _with_u32(chunk, loop_at, loop_at)  # its next offset: itself
    [(kind, message)] = _outputs(evtx._python_xml, chunk)
    assert kind == "bad_record"
    assert "LoopsForever" in message


@pytest.mark.parametrize("raw", [b"a", b"\x00\x00a", _w("ab") + b"\x00\x00c"])
def test_string_array_python_evtx_reads_forever_is_an_error(raw: bytes) -> None:
    """python-evtx's string array reading never returns on these bytes (nothing left
    that it can drop): an error for the record instead of a hang."""
    [(kind, message)] = _outputs(evtx._python_xml, _chunk([_v(0x81, raw)]))
    assert kind == "bad_record"
    assert "LoopsForever" in message


def test_broken_value_not_in_the_template_is_not_read() -> None:
    """python-evtx decodes only the values its template uses: a broken unused one is fine."""
    values = [_v(1, _w("used")), _v(1, b"\x00\xd8"), _v(18, Q("<8H", 1, 13, 0, 1, 0, 0, 0, 0))]
    [xml] = _same_as_python_evtx(_chunk(values, used=[0]))
    assert xml == "<E>used|</E>\n"
    [issue] = _same_as_python_evtx(_chunk(values, used=[0, 1]))
    assert isinstance(issue, tuple)
    assert issue[0] == "bad_record"


def test_substitution_index_out_of_range_is_python_evtx_error() -> None:
    [issue] = _same_as_python_evtx(_chunk([_v(1, _w("only"))], used=[0, 3]))
    assert isinstance(issue, tuple)
    assert "IndexError" in str(issue[1])


def test_value_running_past_the_chunk_is_python_evtx_result() -> None:
    chunk = _chunk([_v(1, _w("x")), _v(14, b"\x01\x02", 60000)])
    _same_as_python_evtx(chunk)


def _damaged(path: Path, seed: int, per_chunk: int) -> list[evtx.ChunkSlice]:
    """The file's first chunks with a few bytes of their first records' BinXML changed."""
    rng = random.Random(seed)
    with open(path, "rb") as stream:
        chunks = [c for c in evtx.walk_chunks(stream) if isinstance(c, evtx.ChunkSlice)][:3]
    for chunk in chunks:
        chunk.records = chunk.records[:per_chunk]
        data = bytearray(chunk.data)
        for rec in chunk.records:
            for _ in range(3):
                at = rng.randrange(rec.offset + 24, rec.offset + rec.size - 4)
                data[at] = rng.randrange(256)
        chunk.data = bytes(data)
    return chunks


@pytest.mark.parametrize("seed", range(4))
def test_randomly_damaged_records_give_python_evtx_results(seed: int) -> None:
    """Values, sizes, types and tokens hit at random: each record gives python-evtx's XML,
    or python-evtx's error message."""
    path = corpus_path("evtx", "EVTX-ATTACK-SAMPLES")
    files = sorted(path.rglob("*.evtx"))
    for name in files[seed :: max(1, len(files) // 6)][:6]:
        for chunk in _damaged(name, seed, 12):
            _same_as_python_evtx(chunk)
