"""Regression (found by test_concurrency: two `--wait` ingests started together): a new
ingest's `sweep_orphans` deleted `.staging/tmp` while another process was using it without
the writer lock (the finishing ingest's write_init_script, or a reader's prepare_lake writing
a typed `_empty.parquet`); that process then failed with "No such file or directory" on its
rename and exited 1 ("cannot write the lake") after a complete, committed run.

Fix (pipeline/lake.py): the sweep removes crashed runs' directories, but in the shared
`.staging/tmp` only files older than an hour, never the directory.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa

from caltrail.pipeline import lake as L


def test_sweep_during_an_unlocked_write_does_not_break_it(tmp_path: Path, monkeypatch) -> None:
    lake = tmp_path / "lake"
    L.ensure_lake(lake)
    real_write = L.pq.write_table

    def write_then_sweep(table: pa.Table, where: object, **kwargs: object) -> None:
        real_write(table, where, **kwargs)
        L.sweep_orphans(lake)  # another process takes the lock and sweeps, right now

    monkeypatch.setattr(L.pq, "write_table", write_then_sweep)
    final = lake / "ingest_files" / "_empty.parquet"
    L.write_parquet_atomic(pa.table({"a": [1]}), final, lake / ".staging" / L.SHARED_TMP)
    assert final.exists()


def test_sweep_removes_crashed_runs_and_stale_scratch_only(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    L.ensure_lake(lake)
    run = L.staging_dir(lake, "crashed-run")
    run.mkdir(parents=True)
    (run / "events__x.parquet").write_bytes(b"partial")
    shared = lake / ".staging" / L.SHARED_TMP
    shared.mkdir()
    fresh = shared / ".fresh.tmp"
    fresh.write_bytes(b"being written")
    stale = shared / ".stale.tmp"
    stale.write_bytes(b"left by a crash")
    old = time.time() - 2 * L.STALE_TMP_SECONDS
    os.utime(stale, (old, old))
    assert L.sweep_orphans(lake) == 2
    assert not run.exists()
    assert not stale.exists()
    assert fresh.exists()
