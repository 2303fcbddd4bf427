"""Regression (found by test_crash_safety, --workers 2 kill): records lost for good when a
run died after committing a "duplicate" manifest row but before its original was read.

A file whose content equals an earlier file of the same run gets a manifest row with status
"duplicate" at discovery time, before the original is parsed; the committer may write it
first. `known_hashes` then listed that sha256 as ingested, so the next plain run skipped the
original ("already ingested") and its records were never read.

Fix (pipeline/lake.py, known_hashes): rows with status "duplicate" do not make a content
known; only a row of a file that was actually read (or found unreadable/skipped) does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from caltrail.pipeline.runner import IN_PROCESS_ENV
from tests.reliability.conftest import ROOT, lake_state, run_caltrail

# The run itself must die (not only a parsing child, whose crash costs one file): the
# file is parsed in the driver's process (CALTRAIL_PARSE_IN_PROCESS=1).
DIE_WHILE_READING_THE_ORIGINAL = """
import os, sys
from caltrail.pipeline import ingest
ingest.COMMIT_EVERY_SECONDS = 0.0   # commit at every finished file: the duplicate row first
real = ingest.parse_file
def parse_file(task):
    if task.display.endswith("a_original.evtx"):
        os._exit(137)               # the run dies while reading the original
    return real(task)
ingest.parse_file = parse_file
from caltrail.pipeline.cli import main
sys.argv = ["caltrail", *sys.argv[1:]]
main()
"""


def test_original_is_read_after_a_crash(multi_input: Path, tmp_path: Path) -> None:
    evtx = multi_input / "fleet" / "LS01" / "LS01_System.evtx"
    source = tmp_path / "in"
    source.mkdir()
    shutil.copy(evtx, source / "a_original.evtx")
    shutil.copy(evtx, source / "b_vss_copy.evtx")
    lake = tmp_path / "lake"
    died = subprocess.run(
        [
            sys.executable,
            "-c",
            DIE_WHILE_READING_THE_ORIGINAL,
            "ingest",
            str(source),
            "--lake",
            str(lake),
        ],
        cwd=ROOT,
        env={**os.environ, IN_PROCESS_ENV: "1"},
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert died.returncode == 137, died.stderr
    rerun = run_caltrail("ingest", source, "--lake", lake, "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["records_ok"] > 0, "the original was skipped"
    clean = tmp_path / "clean"
    assert run_caltrail("ingest", source, "--lake", clean).returncode == 0
    assert lake_state(lake)["counts"] == lake_state(clean)["counts"]
