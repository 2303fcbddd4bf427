"""`caltrail ingest --json` as a scheduler reads it: a schema version, the absolute lake
path, one entry per input file (path, sha256, status, counts, problems), and, when the run
cannot be done, one JSON error object on stdout with the exit status of the command."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caltrail.pipeline import lake as L
from caltrail.pipeline.cli import app
from caltrail.pipeline.ingest import SUMMARY_SCHEMA_VERSION
from tests.conftest import corpus_path
from tests.reliability.conftest import run_caltrail

runner = CliRunner(env={"NO_COLOR": "1"})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_per_file_results_with_a_relative_lake(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    good = folder / "System2.evtx"
    shutil.copy(corpus_path("evtx", "plaso", "System2.evtx"), good)
    broken = folder / "broken.evtx"
    broken.write_bytes(b"ElfFile\x00")
    (folder / "notes.txt").write_text("not a log\n")
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["ingest", "in", "--lake", "lake", "--json"])
    assert result.exit_code == 3  # the broken file, as before
    summary = json.loads(result.stdout)
    assert summary["schema_version"] == SUMMARY_SCHEMA_VERSION == 2
    assert summary["lake"] == str(tmp_path / "lake")
    by_name = {Path(r["path"]).name: r for r in summary["results"]}
    assert set(by_name) == {"System2.evtx", "broken.evtx", "notes.txt"}
    entry = by_name["System2.evtx"]
    assert entry["sha256"] == _sha256(good)
    assert entry["status"] in ("ok", "quarantined")
    assert entry["records_seen"] == entry["records_ok"] + entry["records_quarantined"] > 0
    assert sum(entry["rows"].values()) >= entry["records_ok"]
    assert by_name["broken.evtx"]["status"] == "error"
    assert by_name["broken.evtx"]["sha256"] == _sha256(broken)
    (problem,) = by_name["broken.evtx"]["problems"]
    assert "file header" in problem
    assert by_name["notes.txt"]["status"] == "skipped"
    assert sum(r["records_seen"] for r in summary["results"]) == summary["records_seen"]
    # the run's record in the lake keeps the totals, not the per-file list (the manifest has it)
    again = json.loads(runner.invoke(app, ["ingest", "in", "--lake", "lake", "--json"]).stdout)
    statuses = {Path(r["path"]).name: r["status"] for r in again["results"]}
    assert statuses["System2.evtx"] == "already_ingested"
    assert again["already_ingested"] == 3


def test_busy_lake_is_a_json_error_on_stdout(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    sample = tmp_path / "x.txt"
    sample.write_text("nothing\n")
    with L.writer_lock(lake):
        done = run_caltrail("ingest", sample, "--lake", lake, "--json")
    assert done.returncode == 1
    answer = json.loads(done.stdout)
    assert answer["schema_version"] == SUMMARY_SCHEMA_VERSION
    assert answer["exit_status"] == 1
    assert answer["lake"] == str(lake)
    assert answer["error"]["kind"] == "lake_busy"
    assert "--wait" in answer["error"]["message"]
    (line,) = done.stderr.strip().splitlines()  # and the one line for a person, as before
    assert line.startswith("caltrail: error: the lake")


def test_unwritable_lake_is_a_json_error_on_stdout(tmp_path: Path) -> None:
    blocker = tmp_path / "lake"
    blocker.write_text("a file where the lake should be\n")
    sample = tmp_path / "x.txt"
    sample.write_text("nothing\n")
    result = runner.invoke(app, ["ingest", str(sample), "--lake", str(blocker), "--json"])
    assert result.exit_code == 1
    answer = json.loads(result.stdout)
    assert answer["error"]["kind"] == "lake_unwritable"
    assert answer["exit_status"] == 1
    assert "cannot create the lake" in answer["error"]["message"]


def test_lake_uris(tmp_path: Path) -> None:
    sample = tmp_path / "x.txt"
    sample.write_text("nothing\n")
    s3 = runner.invoke(app, ["ingest", str(sample), "--lake", "s3://bucket/lake", "--json"])
    assert s3.exit_code == 2
    assert "s3:// lakes are not supported yet" in s3.output
    as_uri = runner.invoke(app, ["ingest", str(sample), "--lake", f"file://{tmp_path}/l", "--json"])
    assert as_uri.exit_code == 0, as_uri.output
    assert json.loads(as_uri.stdout)["lake"] == str(tmp_path / "l")
    assert (tmp_path / "l" / "ingest_files").is_dir()
