"""Regression (pipeline/cli.py; fixed in eed7aa3): after a write failure the CLI always said "the lake was left as it was", also when the run had already
committed files.

Seen on a real full tmpfs: every input file was committed, then `write_init_script`
(called after the writer lock is released) hit ENOSPC copying LAKE/_ref; the message said the
lake was left as it was, while it held the whole run. The lake itself is fine (complete,
balanced); the message is wrong, and a user may re-ingest elsewhere or distrust the lake.

The fix: caltrail/pipeline/cli_common.py `run_ingest`, say what is true in every case, e.g.
"...: [Errno 28] No space left on device; files committed before the failure are complete
and visible, nothing partial is visible; free space and re-run the same command to finish".
(Optionally ingest() could report how many files it committed: IngestSummary is lost when
the exception propagates.)
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from caltrail.pipeline.cli import app
from tests.reliability.conftest import lake_state


def test_message_after_a_late_failure(
    multi_input: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from caltrail.pipeline import session

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(session, "write_init_script", full)
    lake = tmp_path / "lake"
    result = CliRunner().invoke(app, ["ingest", str(multi_input / "fleet"), "--lake", str(lake)])
    monkeypatch.undo()
    assert result.exit_code == 1
    assert lake_state(lake)["counts"]["events_all"] > 0  # the run's files are in the lake
    assert "left as it was" not in result.stderr
