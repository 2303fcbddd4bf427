"""The tracerpt CSV reader's usual rows read in bulk (pipeline/trace_blocks.py) give the very
rows, issues and notes the per-row reading gives: each file here goes through ingest's own
item loop with RowBlocks and without, and the staged tables and counts are compared."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caltrail.parsers.base import ParseOptions, RowBlock
from caltrail.parsers.trace import tracerpt_csv
from caltrail.parsers.trace.tracetime import FILETIME_PLAUSIBLE_MAX, FILETIME_PLAUSIBLE_MIN
from caltrail.pipeline import row_blocks
from caltrail.pipeline.ingest import FileResult
from tests.parsers.test_fast_paths import TRACE_LINES, TRACE_ODD, _trace_line
from tests.pipeline import test_row_blocks as row_block_tests

HEADER_LINE, EVENT_TRACE, *EVENTS = [line for line in TRACE_LINES if line.strip()]
FIXED = len(tracerpt_csv.HEADER) - 1


def ingested(path: Path, stage: Path, blocks: bool) -> tuple[dict[str, pa.Table], FileResult]:
    return row_block_tests.ingested(path, stage, blocks, tracerpt_csv)


def blocks_read_in_bulk(path: Path) -> tuple[int, int, int]:
    """(the RowBlocks the reader gives for `path`, how many of them are read in bulk, the
    rows of those)."""
    with open(path, "rb") as stream:
        items = tracerpt_csv.parse(stream, ParseOptions(file_name=path.name, row_blocks=True))
        blocks = [item for item in items if isinstance(item, RowBlock)]
    bulk = [block for block in blocks if row_blocks.block_table(block) is not None]
    return len(blocks), len(bulk), sum(map(len, bulk))


def assert_blocks_are_rows(path: Path, stage: Path) -> None:
    row_block_tests.assert_blocks_are_rows(path, stage, tracerpt_csv)


def write_trace(path: Path, rows: list[str], header: str = HEADER_LINE) -> Path:
    path.write_text("\n".join([header, EVENT_TRACE, *rows]) + "\n", encoding="utf-8")
    return path


def with_values(
    template: str, tail: list[str] | None = None, cells: dict[str, str] | None = None
) -> str:
    """A sample row with some fixed cells replaced (by header name) and its user data
    replaced by `tail` (written as tracerpt writes it: quoted when it holds ", ")."""
    values, _ = tracerpt_csv.split_row(template)
    for name, value in (cells or {}).items():
        values[tracerpt_csv.HEADER.index(name)] = value
    if tail is not None:
        quoted = ['"' + v.replace('"', '""') + '"' if ", " in v or '"' in v else v for v in tail]
        values = values[:FIXED] + quoted
    return ", ".join(values)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of three rows, so that a few rows make several blocks."""
    monkeypatch.setattr(tracerpt_csv, "BLOCK_ROWS", 3)


def test_the_sample_and_usual_rows_are_read_in_bulk(tmp_path: Path, small_blocks: None) -> None:
    path = write_trace(tmp_path / "usual.csv", EVENTS * 5)
    assert blocks_read_in_bulk(path) == (4, 4, 10)
    assert_blocks_are_rows(path, tmp_path)
    sample = Path(tracerpt_csv.__file__).parents[3] / "tests/parsers/data/traces"
    assert_blocks_are_rows(sample / "tracerpt_sample.csv", tmp_path / "sample")


ROW = st.tuples(
    st.sampled_from(EVENTS),
    # most rows usual; a few with an odd cell anywhere (a block holding one is declined)
    st.one_of(
        st.just([]),
        st.lists(st.tuples(st.integers(0, 40), st.sampled_from(TRACE_ODD)), max_size=2),
    ),
    st.one_of(
        st.none(),
        st.lists(st.text(alphabet='ab ,"\\\té\u3000\x85', max_size=6), max_size=5),
    ),
    st.integers(0, 3),
)


@given(st.lists(ROW, min_size=1, max_size=12))
@settings(max_examples=150, deadline=None)
def test_bulk_reading_is_the_row_reading(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str, list[tuple[int, str]], list[str] | None, int]],
) -> None:
    lines = []
    for template, edits, tail, pad in rows:
        line = _trace_line(with_values(template, tail), edits)
        lines.append(line + " " * pad + ("," if pad == 3 else ""))
    stage = tmp_path_factory.mktemp("drawn")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tracerpt_csv, "BLOCK_ROWS", 4)
        assert_blocks_are_rows(write_trace(stage / "drawn.csv", lines), stage)


EDGE_CLOCKS = [
    str(FILETIME_PLAUSIBLE_MIN),
    str(FILETIME_PLAUSIBLE_MIN - 1),
    str(FILETIME_PLAUSIBLE_MAX - 1),
    str(FILETIME_PLAUSIBLE_MAX),
    "13341084957000000",  # 17 digits: a raw clock, read against the EventTrace header
    "1334108495700000000",  # 19 digits
    "١٣٣٤١٠٨٤٩٥٧٠٠٠٠٠٠٠",  # 18 digits, not ASCII
    "0x1DA2B3C4D5E6F70",
    "",
]
EDGE_NUMBERS = ["0x7FFFFFFF", "0x80000000", "2147483647", "2147483648", "-1", "0X1F", " 7", ""]


@pytest.mark.parametrize("clock", EDGE_CLOCKS)
def test_edge_clocks(tmp_path: Path, small_blocks: None, clock: str) -> None:
    odd = with_values(EVENTS[1], cells={"Clock-Time": clock})
    path = write_trace(tmp_path / "clock.csv", [*EVENTS, EVENTS[1], odd, *EVENTS * 2])
    assert_blocks_are_rows(path, tmp_path)
    if clock in EDGE_CLOCKS[:3:2]:  # a FILETIME: every block read in bulk
        assert blocks_read_in_bulk(path) == (3, 3, 8)


@pytest.mark.parametrize("column", ["Event ID", "PID", "TID", "Processor Number"])
@pytest.mark.parametrize("number", EDGE_NUMBERS)
def test_edge_numbers(tmp_path: Path, column: str, number: str) -> None:
    odd = with_values(EVENTS[0], cells={column: number})
    path = write_trace(tmp_path / "numbers.csv", [*EVENTS, odd, *EVENTS])
    assert_blocks_are_rows(path, tmp_path)


@pytest.mark.parametrize("width", [0, 1, 63, 64, 65])
def test_user_data_of_any_width(tmp_path: Path, small_blocks: None, width: int) -> None:
    tail = [f'v{i}, "{i}"\\' if i % 7 == 3 else f" {i} " for i in range(width)]
    path = write_trace(tmp_path / "wide.csv", [*EVENTS, with_values(EVENTS[1], tail), *EVENTS])
    assert_blocks_are_rows(path, tmp_path)
    # the wide row in a block of its own, read in bulk when `plain` reads it
    assert blocks_read_in_bulk(path) == (2, 2, 5) if width <= 64 else (2, 1, 2)


def test_padding_inside_quotes_is_kept_and_empty_cells_are_left_out(tmp_path: Path) -> None:
    tail = ["  padded, inside  ", "", "x"]
    row = with_values(EVENTS[1], tail, {"Channel": "", "Keyword": " "})
    path = write_trace(tmp_path / "padded.csv", [row, *EVENTS])
    assert blocks_read_in_bulk(path) == (1, 1, 3)
    assert_blocks_are_rows(path, tmp_path)
    bulk, _ = ingested(path, tmp_path / "again", blocks=True)
    fields = dict(bulk["trace_events"]["fields"][1].as_py())  # (0: the EventTrace row)
    assert "Channel" not in fields
    assert "Keyword" not in fields
    assert list(fields)[-4:] == ["UserData", "UserData.0", "UserData.1", "UserData.2"]
    assert json.loads(fields["UserData"]) == tail


@pytest.mark.parametrize(
    "header",
    [
        # an older header without Version and Channel
        HEADER_LINE.replace("Version, Channel, ", ""),
        # a kept column twice, and one named like a user-data key: no blocks, the same rows
        HEADER_LINE.replace("Opcode", "Type"),
        HEADER_LINE.replace("Keyword", "UserData.0"),
        # a promoted column missing: the plain path cannot read the rows
        HEADER_LINE.replace("TID, ", ""),
    ],
)
def test_other_headers(tmp_path: Path, small_blocks: None, header: str) -> None:
    width = len(header.split(", ")) - 1
    rows = []
    for event in EVENTS * 3:
        values, _ = tracerpt_csv.split_row(event)
        rows.append(", ".join(values[: width - 1] + values[FIXED - 1 :]))
    path = write_trace(tmp_path / "header.csv", rows, header)
    assert_blocks_are_rows(path, tmp_path)


def test_the_event_trace_row_and_the_header_again_are_read_row_by_row(
    tmp_path: Path, small_blocks: None
) -> None:
    rows = [*EVENTS, HEADER_LINE, *EVENTS, EVENT_TRACE, EVENTS[0]]
    rows.append(EVENTS[0].replace("Microsoft-Windows", " EventTrace", 1))
    rows.append(" " * 40 + "EventTrace" + EVENTS[1][EVENTS[1].index(",") :])
    path = write_trace(tmp_path / "again.csv", rows)
    assert_blocks_are_rows(path, tmp_path)


SHORT_ROW = ", ".join(tracerpt_csv.split_row(EVENTS[1])[0][: FIXED - 1])  # no User(ms)


@pytest.mark.parametrize(
    ("odd", "in_bulk"),
    [
        # gathered, and its block declined: the rows after it in bulk
        (SHORT_ROW, (1, 2)),
        # not gathered (a warning and a record of the rest of the line): both blocks in bulk
        (EVENTS[1] + ', "an open quote', (2, 4)),
    ],
)
def test_short_rows_and_open_quotes_are_read_row_by_row(
    tmp_path: Path, small_blocks: None, odd: str, in_bulk: tuple[int, int]
) -> None:
    path = write_trace(tmp_path / "odd.csv", [*EVENTS, odd, *EVENTS])
    assert blocks_read_in_bulk(path)[1:] == in_bulk
    assert_blocks_are_rows(path, tmp_path)
