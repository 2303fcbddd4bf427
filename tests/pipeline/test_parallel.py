"""Parallel ingest: split files give the rows of a single-worker run; a worker that raises
or dies costs its own file only; Ctrl-C leaves nothing half-written."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from caltrail.pipeline import ingest as I
from caltrail.pipeline.ingest import FileResult, IngestOptions, ingest
from tests.conftest import corpus_path

SPLICED = ("evtx", "derived", "spliced-large-170chunks.evtx")
LINEAGE_RUN = {"run_id"}


def _table_rows(lake: Path, table: str) -> Counter[tuple[Any, ...]]:
    rows: Counter[tuple[Any, ...]] = Counter()
    for path in sorted((lake / table).glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            rows[tuple((k, repr(v)) for k, v in sorted(row.items()) if k not in LINEAGE_RUN)] += 1
    return rows


def _manifest(lake: Path) -> list[dict[str, Any]]:
    return [
        r
        for p in sorted((lake / "ingest_files").glob("*.parquet"))
        for r in pq.read_table(p).to_pylist()
    ]


@pytest.fixture(autouse=True)
def _split_small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    # the split is decided in the main process: the 11 MB corpus file stands for a big one
    monkeypatch.setattr(I, "SPLIT_MIN_BYTES", 1024 * 1024)


def test_plan_splits_a_large_evtx_file_into_chunk_ranges(tmp_path: Path) -> None:
    source = corpus_path(*SPLICED)
    task = I.FileTask(
        source,
        "x.evtx",
        "0" * 64,
        source.stat().st_size,
        None,
        0,
        "run",
        tmp_path,
        I.ParseOptions(),
        (),
    )
    parts = I._plan_parts(task, 2)
    assert len(parts) == 2
    ranges = [p.part for p in parts]
    assert [r[0] for r in ranges if r] == [0, 1]
    starts = [r[1] for r in ranges if r]
    stops = [r[2] for r in ranges if r]
    assert starts[0] == 0  # the first range checks the file header
    assert stops[-1] is None  # the last reads to the end
    assert stops[:-1] == starts[1:]  # contiguous: every chunk in exactly one range
    assert all((s - 4096) % 65536 == 0 for s in starts[1:])  # on chunk boundaries


def test_a_file_no_reader_reads_in_ranges_is_one_task(tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    source.write_bytes(b"a,b\n" + b"1,2\n" * 400_000)
    task = I.FileTask(
        source,
        "big.csv",
        "0" * 64,
        source.stat().st_size,
        None,
        0,
        "run",
        tmp_path,
        I.ParseOptions(),
        (),
    )
    assert [p.part for p in I._plan_parts(task, 2)] == [None]


def test_one_large_file_split_across_workers_gives_the_same_rows(tmp_path: Path) -> None:
    source = corpus_path(*SPLICED)
    one = ingest([source], IngestOptions(lake=tmp_path / "one", workers=1))
    two = ingest([source], IngestOptions(lake=tmp_path / "two", workers=2))
    assert one.records_ok == two.records_ok == 15299 + 3  # 3 recovered from chunk slack
    assert one.rows == two.rows
    assert dict(one.files) == dict(two.files) == {"ok": 1}
    assert _table_rows(tmp_path / "one", "events") == _table_rows(tmp_path / "two", "events")
    assert _table_rows(tmp_path / "one", "parse_errors") == _table_rows(
        tmp_path / "two", "parse_errors"
    )
    (m1,), (m2,) = _manifest(tmp_path / "one"), _manifest(tmp_path / "two")
    assert dict(m2["notes"])["parts"] == "2"
    assert dict(m1["notes"])["chunks"] == dict(m2["notes"])["chunks"] == "170 readable of 170"
    for key in ("records_seen", "records_ok", "records_bad", "warnings", "status"):
        assert m1[key] == m2[key], key
    assert not list((tmp_path / "two" / ".staging").rglob("*.parquet"))


def _inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, parts in {
        "a.evtx": ("evtx", "plaso", "System.evtx"),
        "b-crashme.evtx": ("evtx", "plaso", "System2.evtx"),
        "c.evtx": ("evtx", "python-evtx", "system.evtx"),
        "d.evtx": ("evtx", "python-evtx", "issue_38.evtx"),
    }.items():
        shutil.copyfile(corpus_path(*parts), folder / name)
    return folder


@pytest.mark.parametrize("mode", ["raise", "exit", "segv"])
def test_worker_failure_costs_its_file_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    folder = _inputs(tmp_path)
    monkeypatch.setenv(I.CRASH_HOOK_ENV, f"crashme={mode}")
    seen: list[FileResult] = []

    def progress(event: str, result: FileResult | None, total: int) -> None:
        if result is not None:
            seen.append(result)

    summary = ingest([folder], IngestOptions(lake=tmp_path / "lake", workers=2), progress)
    assert summary.files == {"ok": 3, "error": 1}
    assert len(seen) == 4
    (problem,) = summary.problems
    assert problem["path"].endswith("b-crashme.evtx")
    assert ("crashed" if mode != "raise" else "test crash hook") in problem["message"]
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in _manifest(tmp_path / "lake")}
    assert rows["b-crashme.evtx"]["status"] == "error"
    assert all(
        rows[n]["status"] == "ok" and rows[n]["records_ok"] > 0
        for n in ("a.evtx", "c.evtx", "d.evtx")
    )
    # the crashed file has no rows; the others have all of theirs
    reference = ingest(
        [folder / n for n in ("a.evtx", "c.evtx", "d.evtx")],
        IngestOptions(lake=tmp_path / "ref", workers=1),
    )
    assert summary.records_ok == reference.records_ok
    assert _table_rows(tmp_path / "lake", "events").total() == reference.rows["events"]
    assert not list((tmp_path / "lake" / ".staging").rglob("*.parquet"))
    # A crash says nothing about the file: the next plain run reads it (and only it).
    monkeypatch.delenv(I.CRASH_HOOK_ENV)
    again = ingest([folder], IngestOptions(lake=tmp_path / "lake", workers=2))
    assert again.files == {"quarantined": 1}  # System2.evtx ends inside a record
    assert again.records_ok > 0
    assert again.already_ingested == 3


@pytest.mark.parametrize("workers", [1, 2])
def test_ctrl_c_stops_cleanly(tmp_path: Path, workers: int) -> None:
    folder = _inputs(tmp_path)
    done: list[str] = []

    def progress(event: str, result: FileResult | None, total: int) -> None:
        if result is not None:
            done.append(result.display)
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C after the first file

    lake = tmp_path / "lake"
    summary = ingest([folder], IngestOptions(lake=lake, workers=workers), progress)
    assert summary.interrupted
    assert not [p for p in (lake / ".staging").rglob("*") if p.is_file()]
    # every data file in the lake belongs to a file that has its manifest row, and the
    # next run reads exactly the files that were not committed
    listed = {r["sha256"] for r in _manifest(lake)}
    for table in ("events", "parse_errors"):
        for path in (lake / table).glob("*.parquet"):
            hashes = set(pq.read_table(path, columns=["file_sha256"]).column(0).to_pylist())
            assert hashes <= listed, path
    again = ingest([folder], IngestOptions(lake=lake, workers=workers))
    assert again.already_ingested == len(listed)
    assert sum(again.files.values()) == 4 - len(listed)
