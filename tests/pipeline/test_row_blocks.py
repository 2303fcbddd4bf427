"""The WMI readers' usual rows read in bulk (pipeline/row_blocks.py) give the very rows the
per-row reading gives (RowBlock.records through the table buffer), or decline the block."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from caltrail.parsers.base import FileNote, ParseIssue, ParseOptions, RowBlock
from caltrail.parsers.wmi import csv as wmi_csv
from caltrail.parsers.wmi import html as wmi_html
from caltrail.parsers.wmi import rows as wmirows
from caltrail.parsers.wmi.dates import ZoneInfo
from caltrail.pipeline import block_kernels, ingest, row_blocks
from caltrail.pipeline import lake as L
from caltrail.pipeline.ingest import FileResult
from tests.parsers.test_fast_paths import CELLS, DATE_TEXT, VALID_CULTURE, VALID_DMTF, ZONES

ROOT = Path(__file__).resolve().parents[2]
EXPORTS = ROOT / "tests" / "parsers" / "data" / "exports"
SAMPLES = ROOT / "caltrail" / "fixtures" / "samples" / "LS01"
LINEAGE = {"source_path": "f", "file_sha256": "0" * 64, "parser": "wmi/1", "run_id": "r"}
BERLIN = ZoneInfo("Europe/Berlin")
SNAPSHOTS = [(None, "unknown"), (dt.datetime(2025, 1, 2, tzinfo=dt.UTC), "option")]


def staged_rows(stage: Path, feed: Callable[[L.FileRows], None]) -> dict[str, pa.Table]:
    """Every table's rows as the table buffers stage them after `feed`."""
    stage.mkdir(parents=True)
    rows = L.open_buffers(stage, LINEAGE, "t")
    feed(rows)
    tables = {}
    for name, buffer in rows.buffers.items():
        buffer.flush()
        parts = [pq.read_table(s.path) for s in buffer.staged]
        tables[name] = pa.concat_tables(parts) if parts else None
    return tables


def per_row(blocks: list[RowBlock]) -> Callable[[L.FileRows], None]:
    def feed(rows: L.FileRows) -> None:
        for block in blocks:
            for item in block.records():
                assert not isinstance(item, RowBlock | FileNote)
                if isinstance(item, ParseIssue):
                    rows.buffers["parse_errors"].add(L.IssueAdapter(item))
                else:
                    rows.buffers[item.table].add(item)

    return feed


def in_bulk(tables: list[pa.Table]) -> Callable[[L.FileRows], None]:
    def feed(rows: L.FileRows) -> None:
        for table in tables:
            rows.buffers["issued_licenses"].add_table(table)

    return feed


def block_of(
    rows: Iterable[dict[str, str | None]],
    order: str,
    zone: dt.tzinfo,
    snapshot: tuple[dt.datetime | None, str],
    columns: list[str] | None = None,
) -> RowBlock:
    columns = columns or list(wmirows.PLAIN_KEYS)
    reader = wmirows.RowReader(wmirows.ISSUED, order, zone, snapshot, ParseOptions())
    reader.set_columns(columns)
    assert reader.gives_blocks
    texts = [[row.get(c) or "" for c in columns] for row in rows]
    lines = list(range(10, 10 + len(texts)))
    return reader.block(list(map(reader.block_take, texts)), lines, ["raw"] * len(texts))


def assert_same_rows(tmp_path: Path, *blocks: RowBlock) -> int:
    """The blocks read in bulk equal them read row by row (the blocks declined aside): how
    many were read in bulk."""
    read = [(block, row_blocks.block_table(block)) for block in blocks]
    taken = [(block, table) for block, table in read if table is not None]
    if not taken:
        return 0
    expected = staged_rows(tmp_path / "rows", per_row([block for block, _ in taken]))
    got = staged_rows(tmp_path / "bulk", in_bulk([table for _, table in taken]))
    assert expected["parse_errors"] is None  # a row with a doubt is never read in bulk
    assert got["issued_licenses"].equals(expected["issued_licenses"])
    return len(taken)


USUAL = {key: cells[0] for key, cells in CELLS.items() if key in wmirows.PLAIN_KEYS}
ODD = {key: [c or "" for c in cells] for key, cells in CELLS.items() if key in USUAL}
ODD["licenseid"] += ["9999999999999999999", "999999999999999999"]  # 19 digits beyond int64
ROW = st.fixed_dictionaries(
    {
        "odd": st.sampled_from([None, *ODD]),
        "pick": st.integers(0, 20),
        "issuedate": st.one_of(DATE_TEXT, st.sampled_from(["", " "])),
        "expirationdate": st.one_of(DATE_TEXT, st.sampled_from(["", " "])),
    }
)


def row_from(drawn: dict[str, object]) -> dict[str, str | None]:
    """The usual row, its two dates as drawn, and at most one other cell drawn from the odd
    ones (a block with any row of those is declined: most blocks hold the usual rows)."""
    row: dict[str, str | None] = dict(USUAL)
    row["issuedate"] = str(drawn["issuedate"])
    row["expirationdate"] = str(drawn["expirationdate"])
    odd = drawn["odd"]
    if isinstance(odd, str):
        choices = ODD[odd]
        row[odd] = choices[int(str(drawn["pick"])) % len(choices)]
    return row


@given(
    st.lists(ROW, min_size=1, max_size=6),
    st.sampled_from(["dmy", "mdy", "ymd"]),
    st.sampled_from(ZONES),
    st.sampled_from(SNAPSHOTS),
)
@settings(max_examples=300, deadline=None)
def test_bulk_reading_is_the_row_reading(
    tmp_path_factory: pytest.TempPathFactory,
    drawn: list[dict[str, object]],
    order: str,
    zone: dt.tzinfo,
    snapshot: tuple[dt.datetime | None, str],
) -> None:
    block = block_of(map(row_from, drawn), order, zone, snapshot)
    assert_same_rows(tmp_path_factory.mktemp("block"), block)


@given(
    st.lists(st.tuples(VALID_DMTF, st.one_of(VALID_DMTF, VALID_CULTURE)), min_size=1, max_size=8),
    st.sampled_from(["dmy", "mdy"]),
    st.sampled_from([dt.UTC, ZoneInfo("UTC"), dt.timezone(dt.timedelta(hours=-3))]),
)
@settings(max_examples=150, deadline=None)
def test_usual_rows_are_read_in_bulk(
    tmp_path_factory: pytest.TempPathFactory,
    dates: list[tuple[str, str]],
    order: str,
    zone: dt.tzinfo,
) -> None:
    rows = [USUAL | {"issuedate": a, "expirationdate": b} for a, b in dates]
    # a culture date of a day above 12 read in the other order is no date: keep the usual
    rows = [r for r in rows if row_is_plain(r, order, zone)]
    if rows:
        block = block_of(rows, order, zone, SNAPSHOTS[1])
        assert assert_same_rows(tmp_path_factory.mktemp("usual"), block)


def row_is_plain(row: dict[str, str | None], order: str, zone: dt.tzinfo) -> bool:
    reader = wmirows.RowReader(wmirows.ISSUED, order, zone, SNAPSHOTS[1], ParseOptions())
    return reader.plain(wmirows.Row(row, 1, "")) is not None


def test_a_day_the_zone_changes_its_offset_is_read_row_by_row(tmp_path: Path) -> None:
    # 2023-03-26: Berlin moves from +01:00 to +02:00 at 02:00 (2:30 does not exist that day)
    changing = USUAL | {"issuedate": "26.03.2023 12:00:00", "expirationdate": ""}
    other_day = USUAL | {"issuedate": "27.03.2023 02:30:00", "expirationdate": ""}
    assert row_blocks.block_table(block_of([changing], "dmy", BERLIN, SNAPSHOTS[0])) is None
    assert assert_same_rows(tmp_path, block_of([other_day], "dmy", BERLIN, SNAPSHOTS[0]))


EDGE_DATES = [
    *("1/5/0099 1:00:00 AM", "5.1.0000 00:00:00", "29.02.2000 12:00:00", "29.02.1900 12:00:00"),
    *("02/29/2024 01:00:00 PM", "12/31/9999 11:59:59 PM", "1/1/0100 12:00:00 AM"),
    *("13/1/2023 0:00:00", "1/13/2023 0:00:00", "1/1/2023 24:00:00", "1/1/2023 0:60:00"),
    *("1/1/2023 0:00:60", "1/1/2023 0:00:59 PM", "1/1/2023 12:00:00 AM", "1/1/2023 12:00:00 PM"),
    *("1/1/2023 13:00:00 PM", "1/1/2023 0:00:00 AM", "1-1-2023 1:00:00", "1/1.2023 1:00:00"),
    *("31.04.2023 10:00:00", "1/1/0001 00:00:00", "01.01.0001 00:00:00", "1/1/2023 1:00:00 pm"),
    *("20000229120000.000000+000", "19000229120000.000000+000", "20230229120000.000000+000"),
    *("99991231235959.999999-060", "99991231235959.999999+060", "00010101000000.000000+060"),
    *("00010101000000.000000-060", "00000101000000.000000+000", "20231005240000.000000+000"),
    *("20231005236000.000000+000", "20231005235960.000000+000", "20231005235959.000000-999"),
    *("20231305000000.000000+000", "20231000000000.000000+000", "20231005123456.123456+000"),
    *("20380119031407.000000+000", "20380119031407.000000-300", "20380119041407.000000+060"),
    *("20380119031407.000001+000", "1/19/2038 3:14:07 AM", "19.01.2038 03:14:07"),
    *("19.01.2038 04:14:07", "20231005123456.000000+060", " 20231005123456.000000+060", ""),
]


@pytest.mark.parametrize("order", ["dmy", "mdy", "ymd"])
def test_edge_dates_and_cells(tmp_path: Path, order: str) -> None:
    """Each edge date (in either column) and each odd cell alone in a usual row, in zones
    with and without summer time: read in bulk as row by row, or declined."""
    blocks = [
        block_of([USUAL | {column: text}], order, zone, SNAPSHOTS[0])
        for text in EDGE_DATES
        for column in ("issuedate", "expirationdate")
        for zone in (
            dt.UTC,
            BERLIN,
            ZoneInfo("America/New_York"),
            dt.timezone(dt.timedelta(hours=14)),
        )
    ]
    blocks += [
        block_of([USUAL | {key: text}], order, dt.UTC, SNAPSHOTS[1])
        for key, texts in ODD.items()
        for text in texts
    ]
    assert assert_same_rows(tmp_path, *blocks) > len(blocks) // 4  # most rows are read


@pytest.mark.parametrize(
    ("text", "order"),
    [
        ("29.02.2000 12:00:00", "dmy"),
        ("20000229120000.000000+000", "dmy"),
        ("12/31/9999 11:59:59 PM", "mdy"),
        ("1/5/0099 1:00:00 AM", "mdy"),
        ("00010101000000.000000-060", "mdy"),
    ],
)
def test_valid_edge_dates_are_read_in_bulk(tmp_path: Path, text: str, order: str) -> None:
    block = block_of([USUAL | {"issuedate": text}], order, dt.UTC, SNAPSHOTS[0])
    assert assert_same_rows(tmp_path, block) == 1


def test_the_never_sentinel_in_bulk(tmp_path: Path) -> None:
    rows = [
        USUAL | {"issuedate": "20380119031407.000000+060", "expirationdate": never}
        for never in ("20380119041407.000000+060", "1/19/2038 3:14:07 AM", "")
    ]
    block = block_of(rows, "mdy", BERLIN, SNAPSHOTS[0])
    assert assert_same_rows(tmp_path, block)
    table = row_blocks.block_table(block)
    assert table is not None
    assert table["expiration_never"].to_pylist() == [True, True, False]
    assert table["issue_date"].null_count == 3  # the sentinel is no issue date


def test_columns_in_any_order_and_absent_ones(tmp_path: Path) -> None:
    columns = ["sIssuedToComputer", "LicenseId", "sHardwareId", "IssueDate", "ExpirationDate"]
    keys = [c.lower() for c in columns]
    rows = [
        {k: v for k, v in (USUAL | {"issuedate": "10/5/2023 12:34:56 PM"}).items() if k in keys}
    ]
    block = block_of(rows, "mdy", dt.UTC, SNAPSHOTS[0], columns=keys)
    assert assert_same_rows(tmp_path, block)


def test_python_whitespace_is_what_str_strip_removes() -> None:
    spaces = {c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()}
    assert set(block_kernels.PY_WHITESPACE) == spaces


def ingested(
    path: Path, stage: Path, blocks: bool, reader: ModuleType | None = None
) -> tuple[dict[str, pa.Table], FileResult]:
    """A file's staged rows and counts as ingest takes its reader's items (a WMI reader by
    the file's suffix unless `reader` is given)."""
    module = reader or (wmi_html if path.suffix == ".html" else wmi_csv)
    result = FileResult(path.name, "0" * 64, 0, None, status="ok")
    options = ParseOptions(file_name=path.name, row_blocks=blocks)

    def feed(rows: L.FileRows) -> None:
        with open(path, "rb") as stream:
            ingest._take_items(module.parse(stream, options), rows, result, "UTC")

    return staged_rows(stage, feed), result


def assert_blocks_are_rows(path: Path, stage: Path, reader: ModuleType | None = None) -> None:
    """Ingest's item loop gives the same staged tables, counts and notes for `path` with
    RowBlocks and without."""
    plain, plain_result = ingested(path, stage / "rows", False, reader)
    bulk, bulk_result = ingested(path, stage / "blocks", True, reader)
    for name, table in plain.items():
        assert (table is None) == (bulk[name] is None), name
        if table is not None:
            assert bulk[name].equals(table), name
    assert (bulk_result.records_bad, bulk_result.warnings, bulk_result.notes) == (
        plain_result.records_bad,
        plain_result.warnings,
        plain_result.notes,
    )


@pytest.mark.parametrize(
    "path",
    [
        *sorted(SAMPLES.glob("*IssuedLicense*.csv")),
        *sorted(EXPORTS.glob("*.csv")),
        *sorted(EXPORTS.glob("*.html")),
    ],
    ids=lambda p: p.name,
)
def test_ingest_takes_blocks_as_the_rows(tmp_path: Path, path: Path) -> None:
    assert_blocks_are_rows(path, tmp_path)


def test_a_block_with_an_odd_row_is_read_row_by_row(tmp_path: Path) -> None:
    sample = sorted(SAMPLES.glob("*IssuedLicense*.csv"))[0]
    lines = sample.read_text(encoding="utf-8-sig").splitlines()
    odd = lines[3].replace("+120", "+1x0", 1)  # a DMTF date the rules do not read
    path = tmp_path / "odd_Win32_TSIssuedLicense.csv"
    path.write_text("\n".join([*lines[:3], odd, *lines[4:]]) + "\n", encoding="utf-8")
    with open(path, "rb") as stream:
        blocks = [
            i
            for i in wmi_csv.parse(stream, ParseOptions(file_name=path.name, row_blocks=True))
            if isinstance(i, RowBlock)
        ]
    assert blocks
    assert row_blocks.block_table(blocks[0]) is None
    test_ingest_takes_blocks_as_the_rows(tmp_path, path)
