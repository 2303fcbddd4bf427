"""Regression: a parser that died in native code ended the whole run with one worker.

With the default single worker, files were parsed in the ingest process itself: a
segmentation fault in pyevtx-rs or lxml killed the run (exit 139, no summary, no JSON, nothing
of the run's later files), and every later run died again on the same file. With
`--workers 2` the file was already recorded as `error` and the run went on.

Fix (pipeline/runner.py): whatever `--workers`, files are parsed in long-lived child
processes; a child that dies costs the file it was reading (tried once more in a fresh
child, then recorded as `error` with the signal and where it happened), and the run goes
on, commits the other files, prints its summary and exits 3 (some input unreadable).

The crash hook (CALTRAIL_TEST_CRASH, pipeline/ingest.py) makes the parse of one file die: a
real invalid read (segv) or SIGKILL, in the child where the file is read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from caltrail.pipeline import ingest as I
from caltrail.pipeline.ingest import IngestOptions, exit_code, ingest
from tests.reliability.conftest import DATA, run_caltrail

VICTIM = "msrd_issued.html"
WORDS = {
    "segv": "crashed: it was killed by SIGSEGV (a fault in native code) in caltrail/",
    "kill": "crashed: it was killed by SIGKILL (from outside",
}


@pytest.fixture
def exports(tmp_path: Path) -> Path:
    """The hand-written exports (WMI CSV/XML/HTML, Checkmk, registry, TSCTST)."""
    folder = tmp_path / "in"
    shutil.copytree(DATA / "exports", folder)
    return folder


def manifest(lake: Path) -> dict[str, dict[str, object]]:
    rows = [
        row
        for path in sorted((lake / "ingest_files").glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]
    return {str(row["path"]).rsplit("/", 1)[-1]: row for row in rows}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    """A clean run over the same exports: what every other file must have."""
    lake = tmp_path_factory.mktemp("reference") / "lake"
    ingest([DATA / "exports"], IngestOptions(lake=lake))
    return manifest(lake)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("mode", ["segv", "kill"])
def test_a_native_crash_costs_its_file_only(
    exports: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reference: dict[str, dict[str, object]],
    mode: str,
    workers: int,
) -> None:
    monkeypatch.setenv(I.CRASH_HOOK_ENV, f"{VICTIM}={mode}")
    lake = tmp_path / "lake"
    summary = ingest([exports], IngestOptions(lake=lake, workers=workers))
    assert exit_code(summary, strict=False) == 3
    ((problem),) = summary.problems
    assert problem["path"].endswith(VICTIM)
    assert WORDS[mode] in problem["message"]
    assert problem["message"].endswith(", twice; the rest of the run went on")
    rows = manifest(lake)
    assert rows[VICTIM]["status"] == "error"
    assert rows[VICTIM]["error"] == problem["message"]
    assert rows[VICTIM]["records_seen"] == 0
    # every other file is in the lake, read exactly as a clean run reads it
    for name, row in reference.items():
        if name == VICTIM:
            continue
        for key in ("status", "records_seen", "records_ok", "records_bad", "kind"):
            assert rows[name][key] == row[key], (name, key)
    assert not list((lake / ".staging").rglob("*.parquet"))


def test_the_cli_survives_twice_in_a_row(
    exports: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    reference: dict[str, dict[str, object]],
) -> None:
    """The report's own reproduction: exit 139 twice in a row before the fix."""
    others = len(reference) - 1  # every export but the victim
    lake = tmp_path / "lake"
    monkeypatch.setenv(I.CRASH_HOOK_ENV, f"{VICTIM}=segv")
    for attempt in (1, 2):
        done = run_caltrail("ingest", exports, "--lake", lake, "--json")
        assert done.returncode == 3, (attempt, done.returncode, done.stderr[-500:])
        assert done.stderr == ""  # no traceback, no faulthandler report on the terminal
        summary = json.loads(done.stdout)
        assert [p["path"].rsplit("/", 1)[-1] for p in summary["problems"]] == [VICTIM]
        if attempt == 1:
            assert summary["files"]["error"] == 1
            assert summary["files"] == {"ok": others, "error": 1}
        else:
            # a crash says nothing certain about the file (the OOM killer, a kill from
            # outside): the next plain run reads it again, and only it
            assert summary["already_ingested"] == others
            assert summary["files"] == {"error": 1}
    human = run_caltrail("ingest", exports, "--lake", lake)
    assert human.returncode == 3
    (line,) = [ln for ln in human.stdout.splitlines() if VICTIM in ln]
    assert "crashed: it was killed by SIGSEGV" in line


def test_a_parser_process_that_cannot_start_is_one_clear_line(
    exports: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not a file's fault: no file is blamed; exit 1 and what the child said."""
    from typer.testing import CliRunner

    from caltrail.pipeline.cli import app

    monkeypatch.setattr(I, "PRELOAD", (*I.PRELOAD, "caltrail.no_such_module"))
    monkeypatch.setenv("CALTRAIL_TEST_FRESH_CHILD", "1")  # not the spare of an earlier test
    result = CliRunner().invoke(app, ["ingest", str(exports), "--lake", str(tmp_path / "l")])
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "the parser process could not start" in line
    assert "No module named 'caltrail.no_such_module'" in line
    assert "Traceback" not in result.output
