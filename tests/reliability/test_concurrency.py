"""Reliability: concurrency.

- Two ingests on one lake: the second fails fast (exit 1) with the lock message naming the
  writer and suggesting --wait; with --wait it queues and then finds everything ingested.
  Two --wait ingests started together end with exactly the clean run's lake.
- Readers during an ingest (`caltrail verify`, `caltrail sql`, the DuckDB shell through
  `caltrail shell -c`) always see a consistent lake: every visible file balances, no row is
  visible twice, counts only grow and never pass the final ones.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from caltrail.pipeline.shell import duckdb_cli
from tests.reliability.conftest import (
    connect_core,
    lake_state,
    run_caltrail,
    start_caltrail,
    start_slow_caltrail,
    wait_for,
)


def lock_held(lake: Path) -> bool:
    path = lake / ".lock"
    try:
        return path.read_text().startswith("pid ")
    except OSError:
        return False


def test_second_ingest_fails_fast_then_waits(
    multi_input: Path, baseline: dict[str, Any], tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    first = start_slow_caltrail(0.1, "ingest", multi_input, "--lake", lake, "--json")
    try:
        assert wait_for(lambda: lock_held(lake) or first.poll() is not None, timeout=120)
        assert first.poll() is None, "the first ingest ended before the test could overlap it"
        started = time.monotonic()
        second = run_caltrail("ingest", multi_input, "--lake", lake, "--json")
        assert time.monotonic() - started < 30  # fails fast (process start included)
        assert second.returncode == 1
        assert "is being written by pid" in second.stderr
        assert "--wait" in second.stderr
        assert first.poll() is None
        queued = start_caltrail("ingest", multi_input, "--lake", lake, "--json", "--wait")
        _out, err = first.communicate(timeout=300)
        assert first.returncode == baseline["rc"], err
        out2, err2 = queued.communicate(timeout=300)
        assert queued.returncode == baseline["rc"], err2
        summary = json.loads(out2)
        assert summary["already_ingested"] > 0
        assert summary["records_seen"] == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    state = lake_state(lake)
    assert state["counts"] == baseline["state"]["counts"]
    assert state["files"] == baseline["state"]["files"]


def test_two_waiting_ingests_started_together(
    multi_input: Path, baseline: dict[str, Any], tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    procs = [
        start_caltrail("ingest", multi_input, "--lake", lake, "--wait", "--json") for _ in range(2)
    ]
    summaries = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode in (0, 3), err
        summaries.append(json.loads(out))
    assert sorted(s["records_seen"] > 0 for s in summaries) == [False, True]
    state = lake_state(lake)
    assert state["counts"] == baseline["state"]["counts"]
    assert state["duplicated_events"] == 0


def test_readers_during_an_ingest_see_a_consistent_lake(
    multi_input: Path, baseline: dict[str, Any], tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    final = baseline["state"]["counts"]
    # (--no-compact: the merge at the end of a run may delete a file under a running query,
    # a documented "run it again"; this test is about what commits show)
    writer = start_slow_caltrail(
        0.1, "ingest", multi_input, "--lake", lake, "--json", "--no-compact"
    )
    seen: list[int] = []
    verifier = None
    try:
        assert wait_for(lambda: lock_held(lake), timeout=120)
        assert wait_for(lambda: (lake / "ingest_files").is_dir(), timeout=120)
        con = connect_core(lake)  # views bind their globs at each query: one session sees all
        while writer.poll() is None:
            bad = con.execute(
                "select count(*) from ingest_accounting where not balanced"
            ).fetchone()[0]
            assert bad == 0, "a reader saw a file whose rows are not all visible"
            events, dupes = con.execute(
                'select count(*), count(*) - count(distinct (file_sha256, chunk, "offset")) '
                "from events_all"
            ).fetchone()
            assert dupes == 0
            assert events <= final["events_all"]
            assert not seen or events >= seen[-1], "a committed row disappeared"
            seen.append(events)
            if verifier is None and events:  # the real CLI reader, concurrently
                verifier = start_caltrail("verify", "--lake", lake, "--json")
        con.close()
        _out, err = writer.communicate(timeout=300)
        assert writer.returncode == baseline["rc"], err
        assert verifier is not None, "the ingest committed nothing while the reader looked"
        out, err = verifier.communicate(timeout=300)
        assert verifier.returncode == 0, out + err
        assert json.loads(out)["mismatches"] == []
    finally:
        for proc in (writer, verifier):
            if proc is None:
                continue
            if proc.poll() is None:
                proc.kill()
            if proc.stdout is not None and not proc.stdout.closed:
                proc.communicate()  # closes its pipes, on failure too
    assert len(set(seen)) >= 3, f"the reader saw too few states of the lake: {seen}"
    assert lake_state(lake)["counts"] == final


def test_duckdb_shell_during_an_ingest(multi_input: Path, tmp_path: Path) -> None:
    """The DuckDB shell (what `caltrail shell` execs) opens the lake mid-ingest."""
    if duckdb_cli() is None:
        import pytest

        pytest.skip("the DuckDB shell (duckdb-cli) is not installed")
    lake = tmp_path / "lake"
    done = run_caltrail("ingest", multi_input / "fleet", "--lake", lake, "--json")
    assert done.returncode == 0, done.stderr
    writer = start_caltrail("ingest", multi_input, "--lake", lake, "--json")
    try:
        assert wait_for(lambda: lock_held(lake), timeout=120)
        shell = run_caltrail(
            "shell",
            "--lake",
            lake,
            "-c",
            "select 'unbalanced=' || count(*) filter (where not balanced) as r from ingest_accounting",
        )
        assert shell.returncode == 0, shell.stderr
        assert "unbalanced=0" in shell.stdout, shell.stdout
    finally:
        writer.communicate(timeout=300)
