"""Bug (pipeline/ingest.py, owned by the spine engineer): a killed ingest leaves the zip
members it extracted in the system temp folder for good.

`ingest()` extracts zip members into `tempfile.mkdtemp(prefix="caltrail-")` (system TMPDIR)
and removes it in a `finally`, which SIGKILL skips; no later run knows about it. A scheduler
that kills and restarts a job over a large bundle fills /tmp a bundle's size at a time.

Fix needed in pipeline/ingest.py, ingest(): create the extraction folder inside the run's
staging folder, e.g. `workdir = stage / "extract"` (stage = L.staging_dir(lake, run_id)),
instead of tempfile.mkdtemp(); the next run's `L.sweep_orphans(lake)` then deletes what a
killed run left (and the zip members share the lake's disk, whose free space the zip limits in
pipeline/inputs.py check).
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.reliability.conftest import kill_group, run_caltrail, start_caltrail, wait_for


def test_killed_run_leaves_no_extracted_members(multi_input: Path, tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    lake = tmp_path / "lake"
    env = {"TMPDIR": str(tmpdir)}
    proc = start_caltrail("ingest", multi_input / "bundle.zip", "--lake", lake, env=env)
    # Members are extracted inside the lake's staging folder, not the system temp folder.
    assert wait_for(lambda: any((lake / ".staging").rglob("extract/*/*.evtx")), timeout=120)
    kill_group(proc)
    assert list(tmpdir.rglob("*.evtx")) == []
    done = run_caltrail("ingest", multi_input / "bundle.zip", "--lake", lake, env_tmp=tmpdir)
    assert done.returncode == 0, done.stderr
    time.sleep(0.1)
    assert list(tmpdir.iterdir()) == []
    assert list((lake / ".staging").rglob("*.evtx")) == []  # the killed run's leftovers swept
