"""Reliability: crash safety.

`caltrail ingest` is killed with SIGKILL (its whole process group, as a scheduler does) at
random moments over a multi-file input (simulated fleet, parser samples, a zip bundle, corpus
EVTX). After each kill: every Parquet file in a table directory reads completely, the views
answer, no record is visible twice, accounting balances; then a plain re-run completes and
the lake holds exactly what one clean run gives (same files, statuses, per-file counts and
view row counts).

A deterministic variant crashes the process (os._exit) just before and just after chosen
renames of the write protocol (staged data -> table, manifest, run row), the moments where
a partial commit could become visible. tools/crash_loop.py runs many more of both.
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.conftest import (
    ROOT,
    assert_parquet_readable,
    every_view_answers,
    kill_group,
    lake_state,
    run_caltrail,
    start_caltrail,
)

KILLS = int(os.environ.get("CALTRAIL_CRASH_KILLS", "2"))


def check_after_crash(lake: Path, clean: dict[str, Any], all_views: bool = False) -> None:
    """What a reader may rely on after any crash: complete files, answering views, nothing
    twice, nothing more than a clean run, every visible file balanced."""
    if not (lake / "ingest_files").is_dir():
        return  # killed before the lake existed
    assert_parquet_readable(lake)
    if all_views:
        assert len(every_view_answers(lake)) > 20
    state = lake_state(lake)
    assert state["duplicated_events"] == 0
    assert state["unbalanced"] == []
    for view, count in state["counts"].items():
        if view not in ("ingest_files", "ingest_accounting"):
            assert count <= clean["counts"][view], (view, count)


def rerun_and_compare(lake: Path, multi_input: Path, clean: dict[str, Any], rc: int) -> None:
    done = run_caltrail("ingest", multi_input, "--lake", lake, "--json")
    assert done.returncode == rc, done.stderr
    # Crashed runs' staged files are swept by the next run (the shared .staging/tmp keeps
    # recent scratch files of unlocked writers for an hour; see lake.sweep_orphans).
    leftovers = [
        p for p in (lake / ".staging").rglob("*") if p.is_file() and p.parent.name != "tmp"
    ]
    assert leftovers == [], "a completed run leaves no staged file behind"
    assert_parquet_readable(lake)
    state = lake_state(lake)
    assert state["counts"] == clean["counts"]
    assert state["files"] == clean["files"]
    assert state["unbalanced"] == []
    assert state["duplicated_events"] == 0


def test_sigkill_at_random_moments(
    multi_input: Path, baseline: dict[str, Any], tmp_path: Path
) -> None:
    seed = int(os.environ.get("CALTRAIL_CRASH_SEED", "8"))
    rng = random.Random(seed)
    window = baseline["elapsed"] * 1.1
    for attempt in range(KILLS):
        lake = tmp_path / f"lake{attempt}"
        # One to three kills in a row on the same lake, then a plain re-run.
        delays = []
        for _ in range(rng.choice((1, 1, 2, 3))):
            delay = rng.uniform(0.3, window)
            delays.append(round(delay, 2))
            proc = start_caltrail("ingest", multi_input, "--lake", lake, "--json")
            time.sleep(delay)
            kill_group(proc)
            check_after_crash(lake, baseline["state"], all_views=attempt == 0)
        print(f"attempt {attempt}: killed after {delays} s (seed {seed})")
        rerun_and_compare(lake, multi_input, baseline["state"], baseline["rc"])


def test_sigkill_with_parallel_workers(
    multi_input: Path, baseline: dict[str, Any], tmp_path: Path
) -> None:
    """The same with --workers 2: the parent and its worker processes die together."""
    lake = tmp_path / "lake"
    proc = start_caltrail("ingest", multi_input, "--lake", lake, "--workers", "2", "--json")
    time.sleep(min(baseline["elapsed"] * 0.5, 6.0))
    kill_group(proc)
    check_after_crash(lake, baseline["state"])
    rerun_and_compare(lake, multi_input, baseline["state"], baseline["rc"])


# -- deterministic crash points ------------------------------------------------------------

CRASHER = """
import os, sys
at, when = int(os.environ["CRASH_AT"]), os.environ["CRASH_WHEN"]
real, calls = os.replace, [0]
def replace(src, dst, *args, **kwargs):
    calls[0] += 1
    if calls[0] == at and when == "before":
        os._exit(137)
    real(src, dst, *args, **kwargs)
    if calls[0] == at and when == "after":
        os._exit(137)
os.replace = replace
# commit after every file, not every 2 s: the renames a run makes must not depend on how
# busy the machine is (the counting run and the crashing run must make the same ones)
from caltrail.pipeline import ingest
ingest.COMMIT_EVERY_SECONDS = 0.0
if at == 0:
    import atexit
    atexit.register(lambda: print("RENAMES", calls[0], file=sys.stderr))
from caltrail.pipeline.cli import main
sys.argv = ["caltrail", *sys.argv[1:]]
main()
"""


def run_crashing(at: int, when: str, *args: str | Path) -> Any:
    """`caltrail ARGS` that exits (os._exit 137) just before or after its `at`-th rename
    (at 0: never; it prints how many renames it made)."""
    import subprocess

    env = dict(os.environ, CRASH_AT=str(at), CRASH_WHEN=when)
    return subprocess.run(
        [sys.executable, "-c", CRASHER, *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )


def crash_run(lake: Path, source: Path, at: int, when: str) -> Any:
    return run_crashing(at, when, "ingest", source, "--lake", lake, "--json")


def count_renames(lake: Path, source: Path) -> int:
    done = crash_run(lake, source, 0, "never")
    line = [ln for ln in done.stderr.splitlines() if ln.startswith("RENAMES")][-1]
    return int(line.split()[1])


@pytest.fixture(scope="module")
def fleet_only(multi_input: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    source = multi_input / "fleet"
    lake = tmp_path_factory.mktemp("fleet") / "lake"
    renames = count_renames(lake, source)
    return {"source": source, "renames": renames, "state": lake_state(lake)}


@pytest.mark.parametrize(
    ("fraction", "when"),
    [(0.0, "after"), (0.35, "before"), (0.7, "after"), (1.0, "before")],
)
def test_crash_at_rename(
    fleet_only: dict[str, Any], tmp_path: Path, fraction: float, when: str
) -> None:
    """Crash just before or just after the n-th rename of the write protocol."""
    total = fleet_only["renames"]
    at = max(1, round(fraction * total))
    lake = tmp_path / "lake"
    done = crash_run(lake, fleet_only["source"], at, when)
    assert done.returncode == 137, (at, total, done.stderr[-2000:])
    check_after_crash(lake, fleet_only["state"])
    rerun = run_caltrail("ingest", fleet_only["source"], "--lake", lake, "--json")
    assert rerun.returncode == 0, rerun.stderr
    state = lake_state(lake)
    assert state["counts"] == fleet_only["state"]["counts"]
    assert state["files"] == fleet_only["state"]["files"]
