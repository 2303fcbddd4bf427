"""Regression (queries/15_accounting.sql; fixed in eed7aa3): two input files with the same
content in one run made `caltrail verify` fail.

The second file gets a manifest row with status "duplicate" (records_seen 0) and the same
sha256 and run_id as the first. `ingest_accounting.current_files` joins ingest_files with
visible_runs on (sha256, run_id) only, so the duplicate row is matched to the first file's
written rows: seen 0, written N -> balanced = false, verify exits 1. Overlapping exports and
VSS copies make this common in real collections.

The fix in queries/15_accounting.sql, CTE current_files: keep only rows that were read,
    where f.status in ('ok', 'quarantined')
(the duplicate row then stays visible in ingest_files, and is not counted twice).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.reliability.conftest import DATA, run_caltrail


def test_same_content_twice_balances(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(DATA / "exports" / "pssdp_keypacks.xml", source / "a_keypacks.xml")
    shutil.copy(DATA / "exports" / "pssdp_keypacks.xml", source / "b_keypacks_copy.xml")
    lake = tmp_path / "lake"
    done = run_caltrail("ingest", source, "--lake", lake, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["files"] == {"duplicate": 1, "ok": 1}
    verified = run_caltrail("verify", "--lake", lake, "--json")
    assert json.loads(verified.stdout)["mismatches"] == []
    assert verified.returncode == 0
