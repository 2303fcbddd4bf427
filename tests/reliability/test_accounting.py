"""Reliability: accounting. For every input file of the current runs,
records seen = rows written + rows quarantined, checked by `caltrail verify` over the lake
(view ingest_accounting). Also: verify notices when rows are really missing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.conftest import corpus_path
from tests.reliability.conftest import run_caltrail


def test_whole_corpus_balances(tmp_path: Path) -> None:
    """The whole EVTX corpus (rust backend, two workers): every file balances."""
    corpus = corpus_path("evtx")
    lake = tmp_path / "lake"
    done = run_caltrail(
        "ingest",
        corpus,
        "--lake",
        lake,
        "--backend",
        "rust",
        "--workers",
        "2",
        "--json",
        timeout=900,
    )
    assert done.returncode in (0, 3), done.stderr[-2000:]
    summary = json.loads(done.stdout)
    verified = run_caltrail("verify", "--lake", lake, "--json")
    assert verified.returncode == 0, verified.stdout
    result = json.loads(verified.stdout)
    assert result["mismatches"] == []
    read = summary["files"].get("ok", 0) + summary["files"].get("quarantined", 0)
    assert result["files"] == read > 100
    assert result["records_seen"] == summary["records_seen"] > 100_000
    assert result["records_seen"] == result["rows_written"] + result["quarantined"]
    assert result["quarantined"] == summary["records_quarantined"] > 0


def test_multi_format_input_balances(baseline: dict[str, Any]) -> None:
    """EVTX, WMI CSV/XML/HTML, Checkmk, registry, TSCTST, tracefmt, tracerpt XML/CSV, zip."""
    verified = run_caltrail("verify", "--lake", baseline["lake"], "--json")
    assert verified.returncode == 0, verified.stdout
    result = json.loads(verified.stdout)
    assert result["mismatches"] == []
    assert result["files"] >= 30


def test_verify_reports_lost_rows(baseline: dict[str, Any], tmp_path: Path) -> None:
    """Delete one committed data file: verify exits 1 and names the file that lost rows."""
    lake = tmp_path / "lake"
    shutil.copytree(baseline["lake"], lake)
    victim = next(
        p for p in sorted((lake / "events").glob("*.parquet")) if p.name != "_empty.parquet"
    )
    victim.unlink()
    verified = run_caltrail("verify", "--lake", lake)
    assert verified.returncode == 1
    assert "1 file does not balance" in verified.stdout
    assert "written 0" in verified.stdout or "written" in verified.stdout
