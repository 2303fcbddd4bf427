"""Compaction (pipeline/compact.py): small files merged, every view's rows unchanged,
the derived tables still current, files it cannot merge left alone."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from caltrail.fixtures.simulator import simulate
from caltrail.pipeline import compact as C
from caltrail.pipeline import lake as L
from caltrail.pipeline import materialize
from caltrail.pipeline.diagnose import diagnose, open_case
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.session import connect
from tests.reliability.conftest import connect_core

SOURCE_VIEWS = (
    "events_all",
    "trace_events",
    "client_hwids",
    "issued_license_rows",
    "keypack_rows",
    "parse_errors",
    "ingest_files",
    "runs",
)


def view_digests(lake: Path) -> dict[str, tuple[int, str]]:
    """Row count and a digest of every row of each source view (order-free)."""
    con = connect_core(lake)  # the source views only: quick to open
    digests = {}
    for view in SOURCE_VIEWS:
        row = con.execute(
            "select count(*), md5(coalesce(string_agg(r::varchar, '|' order by r::varchar), '')) "
            f"from (select t as r from {view} as t)"
        ).fetchone()
        assert row is not None
        digests[view] = (row[0], row[1])
    con.close()
    return digests


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("compact-in")
    folders = []
    for seed in (71, 72, 73):
        folder = base / f"fleet{seed}"
        simulate(folder, seed=seed, devices=20, days=20)
        folders.append(folder)
    return folders


def split_lake(tmp_path: Path, inputs: list[Path]) -> Path:
    """A lake fed in several runs without compaction: many small files per table."""
    lake = tmp_path / "lake"
    for folder in inputs:
        ingest([folder], IngestOptions(lake=lake, compact=False))
    return lake


def test_compaction_merges_files_and_keeps_every_row(tmp_path: Path, inputs: list[Path]) -> None:
    lake = split_lake(tmp_path, inputs)
    before_files = {t: len(C.table_files(lake, t)) for t in ("events", "ingest_files", "runs")}
    assert all(n >= 3 for n in before_files.values()), before_files
    before = view_digests(lake)
    assert before["events_all"][0] > 0
    assert before["client_hwids"][0] > 0

    with L.writer_lock(lake):
        results = C.compact(lake, min_files=2)
    by_table = {r.table: r for r in results}
    for table, n in before_files.items():
        assert by_table[table].files_before == n
        assert len(C.table_files(lake, table)) == by_table[table].files_after == 1
    assert view_digests(lake) == before
    assert not list((lake / L.COMPACT_DIR).iterdir()), "no journal or temp file is left"
    # a second pass has nothing left to merge
    with L.writer_lock(lake):
        assert C.compact(lake, min_files=2) == []


def test_a_merge_writes_before_its_rows_outgrow_the_memory_bound(
    tmp_path: Path, inputs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows read for one merged file are written once they hold PENDING_BYTES (a row
    group of fewer rows), so compacting wide rows holds a bounded amount: every row kept."""
    lake = split_lake(tmp_path, inputs)
    inputs_bytes = [pq.read_table(p).nbytes for p in C.table_files(lake, "events")]
    assert len(inputs_bytes) >= 3
    monkeypatch.setattr(C, "PENDING_BYTES", min(inputs_bytes))  # each input is written alone
    before = view_digests(lake)
    with L.writer_lock(lake):
        C.compact(lake, min_files=2)
    (merged,) = C.table_files(lake, "events")
    assert pq.ParquetFile(merged).metadata.num_row_groups >= len(inputs_bytes)
    assert view_digests(lake) == before


def test_a_file_of_many_rows_is_not_small_however_well_it_compresses(
    tmp_path: Path, inputs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full ingest batch of repetitive rows can be a few dozen KB on disk: it is left alone
    (a session pays per file; rewriting a large input's batches cost the ingest memory)."""
    lake = split_lake(tmp_path, inputs)
    rows = sorted(pq.read_metadata(p).num_rows for p in C.table_files(lake, "events"))
    assert len(rows) >= 3
    assert "events" in C.needs_compaction(lake, min_files=2)
    monkeypatch.setattr(C, "SMALL_FILE_ROWS", rows[0])  # every file has that many rows or more
    assert C.small_files(lake, "events") == []
    assert "events" not in C.needs_compaction(lake, min_files=2)


def test_diagnosis_unchanged_by_compaction(tmp_path: Path, inputs: list[Path]) -> None:
    lake = split_lake(tmp_path, inputs)
    con = open_case(lake)
    before = diagnose(con)
    con.close()
    with L.writer_lock(lake):
        C.compact(lake, min_files=2)
    con = open_case(lake)
    after = diagnose(con)
    con.close()
    assert before.findings, "the fleet has findings to compare"
    key = ["cause", "subject_kind", "subject", "excess_cals", "cals", "names", "hwids"]
    assert [[f[k] for k in key] for f in after.findings] == [
        [f[k] for k in key] for f in before.findings
    ]
    assert after.revoke_plan == before.revoke_plan
    assert after.recovery == before.recovery


def test_ingest_compacts_when_a_table_has_many_small_files(
    tmp_path: Path, inputs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = split_lake(tmp_path, inputs[:2])
    monkeypatch.setattr(C, "MIN_SMALL_FILES", 3)
    many = len(C.table_files(lake, "events"))
    summary = ingest([inputs[2]], IngestOptions(lake=lake))
    compacted = {c["table"]: c for c in summary.compacted}
    assert compacted["events"]["files_after"] == 1
    assert compacted["events"]["files_before"] > many
    assert summary.to_dict()["compacted"] == summary.compacted
    # and a later session still finds the derived tables current after building them once
    connect(lake).close()
    assert materialize.current_file(lake, "cal_events") is not None


def test_no_compact_leaves_the_files(
    tmp_path: Path, inputs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(C, "MIN_SMALL_FILES", 2)
    lake = split_lake(tmp_path, inputs)  # compact=False on every run
    assert len(C.table_files(lake, "events")) > 3


def test_a_file_of_another_schema_is_left_as_it_is(tmp_path: Path, inputs: list[Path]) -> None:
    lake = split_lake(tmp_path, inputs)
    first = C.table_files(lake, "client_hwids")[0]
    # a file written by some other version: an extra column the schema no longer has
    table = pq.read_table(first)
    odd = lake / "client_hwids" / "odd-version.parquet"
    pq.write_table(table.append_column("retired", pa.array(["x"] * table.num_rows)), odd)
    first.unlink()
    before = len(C.table_files(lake, "client_hwids"))
    with L.writer_lock(lake):
        results = C.compact(lake, tables=["client_hwids"], min_files=2)
    assert odd.exists()
    assert any("odd-version.parquet" in s and "retired" in s for s in results[0].skipped)
    assert len(C.table_files(lake, "client_hwids")) == 2 < before


def test_files_are_read_ahead_in_order_and_an_unreadable_one_is_named(tmp_path: Path) -> None:
    """The merge reads its inputs a few ahead, on threads: each comes back in the order
    given, with its rows or why it could not be read (a broken file costs itself only)."""
    paths = []
    for n in range(7):
        path = tmp_path / f"part-{n}.parquet"
        pq.write_table(pa.table({"n": [n] * (n + 1)}), path)
        paths.append(path)
    paths[3].write_bytes(b"PAR1 not parquet PAR1")
    read = list(C._read_ahead(paths))
    assert [path for path, _ in read] == paths
    for n, (_path, rows) in enumerate(read):
        if n == 3:
            assert isinstance(rows, str)
            assert rows.startswith("unreadable:")
        else:
            assert isinstance(rows, pa.Table)
            assert rows.column("n").to_pylist() == [n] * (n + 1)


def test_an_unreadable_small_file_is_left_and_the_others_merged(
    tmp_path: Path, inputs: list[Path]
) -> None:
    lake = split_lake(tmp_path, inputs)
    broken = lake / "client_hwids" / "broken.parquet"
    broken.write_bytes(b"PAR1 cut short")
    before = len(C.table_files(lake, "client_hwids"))
    with L.writer_lock(lake):
        results = C.compact(lake, tables=["client_hwids"], min_files=2)
    assert broken.exists()
    assert any(s.startswith("broken.parquet: unreadable") for s in results[0].skipped)
    assert len(C.table_files(lake, "client_hwids")) == 2 < before


def test_an_older_file_without_a_new_column_gets_nulls(tmp_path: Path) -> None:
    schema = pa.schema([("a", pa.string()), ("b", pa.int64())])
    conformed = C._conform(pa.table({"a": ["x"]}), schema)
    assert isinstance(conformed, pa.Table)
    assert conformed.to_pylist() == [{"a": "x", "b": None}]
    assert isinstance(C._conform(pa.table({"b": ["1"]}), schema), str)


def journal(lake: Path, table: str, output: str, inputs: list[str]) -> Path:
    work = lake / L.COMPACT_DIR
    work.mkdir(exist_ok=True)
    path = work / "20260101T000000Z-test.json"
    path.write_text(json.dumps({"table": table, "output": output, "inputs": inputs}))
    return path


def test_recovery_completes_a_published_compaction(tmp_path: Path, inputs: list[Path]) -> None:
    """Crash after the merged file was renamed into the table, before its inputs were
    deleted: the next session deletes them (until then rows would show twice)."""
    lake = split_lake(tmp_path, inputs)
    before = view_digests(lake)
    files = C.table_files(lake, "events")
    merged = pa.concat_tables([pq.read_table(p) for p in files])
    pq.write_table(merged, lake / "events" / "compact-test.parquet")
    journal(lake, "events", "compact-test.parquet", [p.name for p in files])
    assert view_digests(lake) == before  # the session finished it before reading
    assert C.table_files(lake, "events") == [lake / "events" / "compact-test.parquet"]
    assert L.pending_compactions(lake) == []


def test_recovery_undoes_an_unpublished_compaction(tmp_path: Path, inputs: list[Path]) -> None:
    lake = split_lake(tmp_path, inputs)
    before = view_digests(lake)
    files = C.table_files(lake, "events")
    journal(lake, "events", "compact-test.parquet", [p.name for p in files])
    tmp = lake / L.COMPACT_DIR / "20260101T000000Z-test.parquet.tmp"
    tmp.write_bytes(b"half written")
    stray = lake / L.COMPACT_DIR / "20260101T000001Z-other.parquet.tmp"  # before its journal
    stray.write_bytes(b"half written")
    assert view_digests(lake) == before
    assert C.table_files(lake, "events") == files
    assert not tmp.exists()
    assert not stray.exists()
    assert L.pending_compactions(lake) == []


def test_a_busy_writer_is_not_disturbed(tmp_path: Path, inputs: list[Path]) -> None:
    """A reader does not touch a journal while a writer holds the lock (it is that
    writer's compaction in progress)."""
    lake = split_lake(tmp_path, inputs)
    files = C.table_files(lake, "events")
    with L.writer_lock(lake):
        path = journal(lake, "events", "compact-test.parquet", [p.name for p in files])
        connect_core(lake).close()  # prepares the lake as every session does
        assert path.exists()
        assert C.table_files(lake, "events") == files


def _summary(results: list[C.TableCompaction]) -> list[dict[str, Any]]:
    return [r.to_dict() for r in results]


def test_cli_compact(tmp_path: Path, inputs: list[Path]) -> None:
    from typer.testing import CliRunner

    from caltrail.pipeline.cli import app

    lake = split_lake(tmp_path, inputs)
    runner = CliRunner()
    done = runner.invoke(app, ["compact", "--lake", str(lake), "--min-files", "2", "--json"])
    assert done.exit_code == 0, done.output
    tables = {r["table"] for r in json.loads(done.output)}
    assert {"events", "ingest_files", "runs"} <= tables
    again = runner.invoke(app, ["compact", "--lake", str(lake), "--min-files", "2"])
    assert again.exit_code == 0
    assert "Nothing to merge" in again.output
    missing = runner.invoke(app, ["compact", "--lake", str(tmp_path / "nowhere")])
    assert missing.exit_code == 1
    assert "not a caltrail lake" in missing.output


def test_ctrl_c_while_merging_leaves_every_row_once(
    tmp_path: Path, inputs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C right after a merged file is published, before its inputs are deleted: the
    run ends as interrupted with the merge finished, nothing shown twice."""
    lake = split_lake(tmp_path, inputs[:2])
    before = view_digests(split_lake(tmp_path / "reference", inputs))
    real = C.os.replace

    def replace_then_interrupt(src: Any, dst: Any) -> None:
        real(src, dst)
        if Path(dst).parent.name == "events" and Path(dst).name.startswith("compact-"):
            raise KeyboardInterrupt

    monkeypatch.setattr(C, "MIN_SMALL_FILES", 2)
    monkeypatch.setattr(C.os, "replace", replace_then_interrupt)
    summary = ingest([inputs[2]], IngestOptions(lake=lake))
    monkeypatch.undo()
    assert summary.interrupted
    assert summary.compact_error is not None
    assert "interrupted" in summary.compact_error
    assert L.pending_compactions(lake) == []
    assert len(C.table_files(lake, "events")) == 1
    after = view_digests(lake)
    for view in ("events_all", "trace_events", "client_hwids", "issued_license_rows"):
        assert after[view][0] == before[view][0], view  # (other run ids: counts only)
