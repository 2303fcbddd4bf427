"""Reliability: disk full and permissions.

An ingest that cannot write fails with a clear message and exit status 1, and the lake keeps
every file it had, complete and visible as before (files committed earlier in the same run
are complete too: the write protocol commits in groups). Shown with:

- a monkeypatched Parquet writer raising ENOSPC at the first write, and after a few writes;
- ENOSPC met by the child process that parses (the crash hook), carried to the parent;
- a real tiny filesystem (tmpfs, when the test may mount one);
- a read-only lake (read-only bind mount as root, else chmod), which readers can still query;
- a lake path that cannot be created.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from caltrail.pipeline import ingest as I
from caltrail.pipeline import lake as L
from caltrail.pipeline import runner
from caltrail.pipeline.cli import app
from tests.reliability.conftest import (
    assert_parquet_readable,
    lake_state,
    run_caltrail,
)


def snapshot(lake: Path) -> dict[str, bytes]:
    """Every file of the lake's tables, byte for byte."""
    return {
        str(p.relative_to(lake)): p.read_bytes()
        for table in (*L.DATA_TABLES, "ingest_files", "runs")
        for p in sorted((lake / table).glob("*.parquet"))
    }


@pytest.fixture(scope="module")
def fleet_lake_once(multi_input: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("fleet") / "lake"
    done = run_caltrail("ingest", multi_input / "fleet", "--lake", lake, "--json")
    assert done.returncode == 0, done.stderr
    return lake


@pytest.fixture
def fleet_lake(fleet_lake_once: Path, tmp_path: Path) -> Path:
    """A lake holding the fleet: a copy per test of one ingest (each test changes it)."""
    lake = tmp_path / "lake"
    shutil.copytree(fleet_lake_once, lake, symlinks=True)
    return lake


def ingest_in_process(paths: list[Path], lake: Path) -> Any:
    args = ["ingest", *map(str, paths), "--lake", str(lake), "--json"]
    return CliRunner().invoke(app, args)


def full_disk_after(monkeypatch: pytest.MonkeyPatch, writes: int) -> None:
    """Every Parquet write after the first `writes` fails with ENOSPC. The patch is this
    process's: files are parsed here too (not in a child), so it counts their staged writes
    (the child's own ENOSPC: test_enospc_in_the_parsing_process)."""
    monkeypatch.setenv(runner.IN_PROCESS_ENV, "1")
    real = L.pq.write_table
    count = [0]

    def write_table(*args: Any, **kwargs: Any) -> None:
        count[0] += 1
        if count[0] > writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(*args, **kwargs)

    monkeypatch.setattr(L.pq, "write_table", write_table)


def test_enospc_at_first_write_leaves_the_lake_as_it_was(
    multi_input: Path, fleet_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before_files = snapshot(fleet_lake)
    before = lake_state(fleet_lake)
    full_disk_after(monkeypatch, 0)
    result = ingest_in_process([multi_input / "exports", multi_input / "traces"], fleet_lake)
    assert result.exit_code == 1
    assert "No space left on device" in result.stderr
    assert "cannot write the lake" in result.stderr
    monkeypatch.undo()
    assert snapshot(fleet_lake) == before_files
    assert lake_state(fleet_lake) == before


@pytest.mark.parametrize("writes", [2, 6])
def test_enospc_mid_run_then_rerun(
    multi_input: Path,
    fleet_lake: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    writes: int,
) -> None:
    """Disk full after a few writes: exit 1; what is visible is complete and balanced; once
    space is back a plain re-run gives the same lake as a run that never failed."""
    extra = [multi_input / "exports", multi_input / "traces", multi_input / "bundle.zip"]
    before = snapshot(fleet_lake)
    full_disk_after(monkeypatch, writes)
    result = ingest_in_process(extra, fleet_lake)
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.stderr
    after = snapshot(fleet_lake)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing rewritten
    assert_parquet_readable(fleet_lake)
    state = lake_state(fleet_lake)
    assert state["unbalanced"] == []
    assert state["duplicated_events"] == 0
    # No file may be recorded as unreadable because the *lake's* disk was full.
    con_files = {f[0]: f[2] for f in state["files"]}
    assert "error" not in con_files.values(), con_files

    rerun = run_caltrail("ingest", *extra, "--lake", fleet_lake, "--json")
    assert rerun.returncode == 0, rerun.stderr
    clean = tmp_path / "clean"
    for paths in ([multi_input / "fleet"], extra):
        assert run_caltrail("ingest", *paths, "--lake", clean).returncode == 0
    assert lake_state(fleet_lake)["counts"] == lake_state(clean)["counts"]


def test_enospc_in_the_parsing_process(
    multi_input: Path, fleet_lake: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk met by the child process that parses (it writes the staged files) ends
    the run as the parent's own would: exit 1, the message, no input recorded as unreadable,
    and a re-run once there is space reads what was left."""
    monkeypatch.setenv(I.CRASH_HOOK_ENV, "wmiobject_ps51_issued=enospc")
    done = run_caltrail("ingest", multi_input / "exports", "--lake", fleet_lake, "--json")
    assert done.returncode == 1, done.stdout[-500:]
    assert "cannot write the lake" in done.stderr
    assert "No space left on device" in done.stderr
    assert "Traceback" not in done.stderr
    after = lake_state(fleet_lake)
    assert after["unbalanced"] == []
    assert "error" not in {f[2] for f in after["files"]}
    assert not [f for f in after["files"] if "wmiobject_ps51_issued" in f[0]]
    monkeypatch.delenv(I.CRASH_HOOK_ENV)
    rerun = run_caltrail("ingest", multi_input / "exports", "--lake", fleet_lake, "--json")
    assert rerun.returncode == 0, rerun.stderr


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "tiny"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace')}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_real_full_filesystem(multi_input: Path, tiny_fs: Path) -> None:
    from tests.conftest import CORPUS

    if not CORPUS.is_dir():
        pytest.skip("the corpus files are what fill the tiny filesystem; the corpus is absent")
    lake = tiny_fs / "lake"
    done = run_caltrail("ingest", multi_input, "--lake", lake, "--json")
    assert done.returncode == 1, done.stdout[-500:]
    assert "No space left on device" in done.stderr
    assert "Traceback" not in done.stderr
    if (lake / "ingest_files").is_dir():
        # Free the space the way a user would (move the lake to a bigger disk), then go on.
        moved = tiny_fs.parent / "moved"
        shutil.copytree(lake, moved)
        assert_parquet_readable(moved)
        state = lake_state(moved)
        assert state["unbalanced"] == []
        assert "error" not in {f[2] for f in state["files"]}
        rerun = run_caltrail("ingest", multi_input, "--lake", moved, "--json")
        assert rerun.returncode == 0, rerun.stderr


@pytest.fixture
def read_only(fleet_lake: Path) -> Iterator[Path]:
    """The lake made read-only: a read-only bind mount as root (root ignores modes), else
    chmod a-w."""
    if os.geteuid() == 0:
        binds = [
            ["mount", "--bind", str(fleet_lake), str(fleet_lake)],
            ["mount", "-o", "remount,bind,ro", str(fleet_lake)],
        ]
        for command in binds:
            done = subprocess.run(command, capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", str(fleet_lake)], check=False)
                pytest.skip(f"cannot make a read-only bind mount: {done.stderr!r}")
        try:
            yield fleet_lake
        finally:
            subprocess.run(["umount", "-l", str(fleet_lake)], check=False)
        return
    paths = [fleet_lake, *fleet_lake.rglob("*")]
    for path in paths:
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield fleet_lake
    finally:
        for path in paths:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)


def test_read_only_lake(multi_input: Path, read_only: Path) -> None:
    before = snapshot(read_only)
    done = run_caltrail("ingest", multi_input / "exports", "--lake", read_only, "--json")
    assert done.returncode == 1
    assert "cannot write the lake" in done.stderr
    assert "Read-only file system" in done.stderr or "Permission denied" in done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(read_only) == before
    # Readers still work: evidence on write-protected media can be queried.
    query = run_caltrail(
        "sql", "select count(*) as n from events_all", "--lake", read_only, "-f", "json"
    )
    assert query.returncode == 0, query.stderr
    assert json.loads(query.stdout)["n"] > 0


def test_lake_path_that_cannot_be_created(multi_input: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the lake's parent should be")
    done = run_caltrail("ingest", multi_input / "exports", "--lake", blocker / "lake")
    assert done.returncode == 1
    assert "cannot create the lake" in done.stderr or "cannot write the lake" in done.stderr
    assert "Traceback" not in done.stderr
