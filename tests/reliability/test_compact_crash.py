"""Compaction is crash safe (pipeline/compact.py): `caltrail compact` killed (os._exit) just
before or just after the renames it makes leaves a lake whose views show every row exactly
once, after the next session finishes or undoes the merge; a second compaction completes it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from caltrail.pipeline import compact as C
from caltrail.pipeline import lake as L
from caltrail.pipeline.ingest import IngestOptions, ingest
from tests.pipeline.test_compact import view_digests
from tests.reliability.conftest import assert_parquet_readable
from tests.reliability.test_crash_safety import run_crashing


def compact_crashing(lake: Path, at: int, when: str) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = run_crashing(
        at, when, "compact", "--lake", lake, "--min-files", "2"
    )
    return result


@pytest.fixture(scope="module")
def split_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from caltrail.fixtures.simulator import simulate

    base = tmp_path_factory.mktemp("compact-crash")
    lake = base / "lake"
    for seed in (81, 82, 83):
        simulate(base / f"in{seed}", seed=seed, devices=20, days=20)
        ingest([base / f"in{seed}"], IngestOptions(lake=lake, compact=False))
    return lake


def copy_lake(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


def test_crash_at_every_rename_of_a_compaction(split_lake: Path, tmp_path: Path) -> None:
    expected = view_digests(copy_lake(split_lake, tmp_path / "reference"))
    counted = compact_crashing(copy_lake(split_lake, tmp_path / "count"), 0, "never")
    assert counted.returncode == 0, counted.stderr
    renames = int(
        [ln for ln in counted.stderr.splitlines() if ln.startswith("RENAMES")][-1].split()[1]
    )
    assert renames >= 6  # journal and output per merged table, and the init script
    # the first table's journal and output renames, the second table's journal, the last
    # rename: every state the protocol passes through (the others repeat them)
    for at in sorted({1, 2, 3, renames}):
        for when in ("before", "after"):
            lake = copy_lake(split_lake, tmp_path / f"lake-{at}-{when}")
            done = compact_crashing(lake, at, when)
            assert done.returncode == 137, (at, when, done.stderr[-2000:])
            assert_parquet_readable(lake)
            # the next session finishes or undoes what the crash interrupted
            assert view_digests(lake) == expected, (at, when)
            assert L.pending_compactions(lake) == []
            with L.writer_lock(lake):
                C.compact(lake, min_files=2)
            # unpublished temp files of the crash are gone once a writer took the lock
            assert list((lake / L.COMPACT_DIR).iterdir()) == []
            assert view_digests(lake) == expected, (at, when)
            assert len(C.table_files(lake, "events")) == 1
