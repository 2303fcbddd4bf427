"""Ingest on a Dask cluster (`caltrail ingest --dask`): the lake's guarantees hold as with
the local pool.

- A cluster of 2 worker processes (reached by its scheduler address, as a remote one is)
  gives the rows, manifest and views of a one-process ingest of the multi-format input
  (simulated fleet, exports, traces, a zip, corpus EVTX files), the corpus files split by
  chunk ranges across the workers as large files are.
- The public corpus (its EVTX files as published, and its ETL traces) on that cluster: the
  rows of a one-process ingest.
- `local:2` (a cluster started for the run): a worker SIGKILLed mid-file, once, after it
  staged part of the file, is replaced and the file is read again: the lake equals the
  clean one, nothing of the killed attempt is committed. A file that kills every worker that
  reads it is recorded as an error, the others are read, and the next run retries it.
- The driver SIGKILLed mid-run (one file never finishes, the others staged): the lake shows
  whole files or nothing,
  the local cluster's processes end with it, and a plain re-run gives the clean lake.
- Two drivers on one lake, one on the cluster: one reads, the other waits and skips.
- A bad address is a usage error; a scheduler nobody answers at is one line and exit 1.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from caltrail.pipeline import ingest as I
from caltrail.pipeline import runner_dask
from caltrail.pipeline.cli import app
from caltrail.pipeline.ingest import IngestOptions, ingest
from tests.conftest import corpus_path
from tests.reliability.conftest import kill_group, lake_state, start_caltrail, wait_for
from tests.reliability.test_crash_safety import check_after_crash, rerun_and_compare

pytest.importorskip("distributed", reason="the dask extra is not installed")

RUN_COLUMNS = {"run_id", "started", "finished"}


def _rows(lake: Path, table: str) -> Counter[tuple[Any, ...]]:
    """Every row of a table, as a multiset, without what differs between two runs."""
    rows: Counter[tuple[Any, ...]] = Counter()
    for path in sorted((lake / table).glob("*.parquet")):
        for row in pq.read_table(path).to_pylist():
            if table == "ingest_files":  # a split file says in how many parts it was read
                row["notes"] = sorted((k, v) for k, v in row["notes"] if k != "parts")
            rows[tuple((k, repr(v)) for k, v in sorted(row.items()) if k not in RUN_COLUMNS)] += 1
    return rows


def _same_lake(one: Path, other: Path) -> None:
    for table in ("ingest_files", "events", "trace_events", "issued_licenses", "parse_errors"):
        assert _rows(one, table) == _rows(other, table), table
    state, other_state = lake_state(one), lake_state(other)
    assert state["counts"] == other_state["counts"]
    assert other_state["unbalanced"] == []
    assert other_state["duplicated_events"] == 0


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """A running cluster of 2 worker processes, reached by its address like a remote one."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
    ) as cluster:
        yield cluster.scheduler_address


def test_cluster_of_two_workers_gives_the_rows_of_one_process(
    multi_input: Path,
    baseline: dict[str, Any],
    scheduler: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the split is planned by the driver: the corpus files (1-3 MB) stand for large ones
    monkeypatch.setattr(I, "SPLIT_MIN_BYTES", 1024 * 1024)
    lake = tmp_path / "dask"
    summary = ingest([multi_input], IngestOptions(lake=lake, dask=scheduler))
    assert summary.records_seen > 1000
    _same_lake(baseline["lake"], lake)
    parts = [
        dict(r["notes"]).get("parts")
        for p in (lake / "ingest_files").glob("*.parquet")
        for r in pq.read_table(p).to_pylist()
    ]
    assert "2" in parts  # read by the two workers, chunk range by chunk range
    assert not list((lake / ".staging").rglob("*.parquet"))


def _digest(lake: Path, table: str) -> tuple[int, int]:
    """(rows, an order-free digest of every column but the run's) of a table's files."""
    import duckdb

    files = str(lake / table / "*.parquet")
    with duckdb.connect() as con:
        found = con.execute(
            "select count(*), coalesce(sum(hash(t::varchar)::hugeint), 0) from "
            "(select * exclude (run_id) from read_parquet($files, union_by_name = true)) as t",
            {"files": files},
        ).fetchall()
    count, digest = found[0]
    return int(count), int(digest)


@pytest.mark.slow
def test_public_corpus_on_the_cluster_gives_the_rows_of_one_process(
    scheduler: str, tmp_path: Path
) -> None:
    # the corpus's public files; its derived mutants (half its size) are read by the
    # whole-corpus accounting test, and two of them by the test above
    evtx = corpus_path("evtx")
    corpus = [p for p in sorted(evtx.iterdir()) if p.is_dir() and p.name != "derived"]
    corpus.append(corpus_path("etl"))
    one = ingest(corpus, IngestOptions(lake=tmp_path / "one"))
    dask = ingest(corpus, IngestOptions(lake=tmp_path / "dask", dask=scheduler))
    assert dask.files == one.files
    assert dask.rows == one.rows
    assert dask.records_seen == one.records_seen > 50_000
    for table in ("events", "trace_events", "parse_errors"):
        assert _digest(tmp_path / "dask", table) == _digest(tmp_path / "one", table), table
    assert _rows(tmp_path / "dask", "ingest_files") == _rows(tmp_path / "one", "ingest_files")


def test_worker_killed_mid_file_is_retried_and_nothing_half_committed(
    multi_input: Path, baseline: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = next(p for p in sorted(multi_input.rglob("*.evtx")) if p.stat().st_size > 200_000)
    monkeypatch.setenv(I.CRASH_HOOK_ENV, f"{victim.name}=killmid")
    lake = tmp_path / "lake"
    summary = ingest([multi_input], IngestOptions(lake=lake, dask="local:2"))
    assert not summary.problems or all("worker" not in p["message"] for p in summary.problems)
    stage = next((lake / ".staging").glob("*/.killed-*"), None)
    assert stage is None  # the run's staging folder is gone, the marker with it
    assert lake_state(lake)["counts"] == baseline["state"]["counts"]
    assert lake_state(lake)["files"] == baseline["state"]["files"]
    _same_lake(baseline["lake"], lake)


def test_file_that_kills_every_worker_is_recorded_then_retried(
    multi_input: Path,
    baseline: dict[str, Any],
    scheduler: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    victim = next(p for p in sorted(multi_input.rglob("*.evtx")) if p.stat().st_size > 200_000)
    monkeypatch.setenv(I.CRASH_HOOK_ENV, f"{victim.name}=kill")
    lake = tmp_path / "lake"
    summary = ingest([multi_input], IngestOptions(lake=lake, dask="local:2"))
    (problem,) = [p for p in summary.problems if p["status"] == "error"]
    assert problem["path"].endswith(victim.name)
    assert problem["message"].startswith("the worker process parsing this file crashed")
    assert runner_dask.KILLED_REASON in problem["message"]
    state = lake_state(lake)
    assert state["unbalanced"] == []
    assert state["counts"]["events_all"] < baseline["state"]["counts"]["events_all"]
    monkeypatch.delenv(I.CRASH_HOOK_ENV)
    again = ingest([multi_input], IngestOptions(lake=lake, dask=scheduler))
    assert sum(again.files.values()) == 1  # only the crashed file is read again
    assert lake_state(lake)["counts"] == baseline["state"]["counts"]


def test_two_drivers_on_one_lake_one_on_the_cluster(
    multi_input: Path, baseline: dict[str, Any], scheduler: str, tmp_path: Path
) -> None:
    """Two drivers started together on one lake, one parsing on the cluster, one locally:
    the second waits for the lock (--wait), then finds everything already in the lake."""
    lake = tmp_path / "lake"
    drivers = [
        start_caltrail("ingest", multi_input, "--lake", lake, "--wait", "--json", *extra)
        for extra in (("--dask", scheduler), ())
    ]
    summaries = []
    for proc in drivers:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == baseline["rc"], err
        summaries.append(json.loads(out))
    assert sorted(s["records_seen"] > 0 for s in summaries) == [False, True]
    state = lake_state(lake)
    assert state["counts"] == baseline["state"]["counts"]
    assert state["duplicated_events"] == 0


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_driver_killed_mid_run_leaves_whole_files_and_its_cluster_ends(
    multi_input: Path, baseline: dict[str, Any], tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    victim = next(p for p in sorted(multi_input.rglob("*.evtx")) if p.stat().st_size > 200_000)
    # one file never finishes: the driver is killed while the workers have staged files
    hang = {I.CRASH_HOOK_ENV: f"{victim.name}=hang"}
    proc = start_caltrail("ingest", multi_input, "--lake", lake, "--dask", "local:2", env=hang)
    try:
        assert wait_for(
            lambda: any((lake / ".staging").glob("*/*.parquet")) or proc.poll() is not None,
            timeout=180,
        )
        assert proc.poll() is None, "the ingest ended before the test could kill it"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only: its workers are left to notice
        proc.communicate(timeout=60)
        # the nannies watch their parent: the local cluster ends with the driver
        assert wait_for(lambda: not _group_alive(proc.pid), timeout=60)
    finally:
        kill_group(proc)
    check_after_crash(lake, baseline["state"])
    paths = [row[0] for row in lake_state(lake)["files"]]
    assert str(victim) not in paths
    assert len(paths) < baseline["state"]["counts"]["ingest_files"]
    rerun_and_compare(lake, multi_input, baseline["state"], baseline["rc"])


def test_bad_addresses_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sample = tmp_path / "x.txt"
    sample.write_text("nothing\n")
    runner = CliRunner()
    bad = runner.invoke(
        app, ["ingest", str(sample), "-l", str(tmp_path / "l"), "--dask", "local:x"]
    )
    assert bad.exit_code == 2
    assert "local:N needs N between 1 and 64" in bad.output
    monkeypatch.setattr(runner_dask, "CONNECT_TIMEOUT_S", 1.0)
    gone = runner.invoke(
        app, ["ingest", str(sample), "-l", str(tmp_path / "l"), "--dask", "tcp://127.0.0.1:9"]
    )
    assert gone.exit_code == 1
    (line,) = gone.output.strip().splitlines()
    assert line.startswith("caltrail: error: cannot use the Dask cluster at tcp://127.0.0.1:9")
    assert gone.exception is None or isinstance(gone.exception, SystemExit)
    as_json = runner.invoke(
        app,
        ["ingest", str(sample), "-l", str(tmp_path / "l"), "--dask", "tcp://127.0.0.1:9", "--json"],
    )
    assert as_json.exit_code == 1
    answer = json.loads(as_json.stdout)
    assert answer["error"]["kind"] == "cluster_unavailable"
    assert answer["exit_status"] == 1
