"""The caltrail CLI: exit codes, summaries, output formats, help text."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caltrail.pipeline.cli import COMMANDS, app
from tests.conftest import ROOT, corpus_path

runner = CliRunner(env={"TERMINAL_WIDTH": "120", "NO_COLOR": "1", "COLUMNS": "120"})


@pytest.fixture
def evtx_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(corpus_path("evtx", "chainsaw", "security_sample.evtx"), folder / "Security.evtx")
    shutil.copy(corpus_path("evtx", "plaso", "System2.evtx"), folder / "System2.evtx")
    return folder


def test_ingest_json_summary_and_rerun(tmp_path: Path, evtx_dir: Path) -> None:
    lake = tmp_path / "lake"
    result = runner.invoke(app, ["ingest", str(evtx_dir), "--lake", str(lake), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["files"] == {"ok": 1, "quarantined": 1}
    assert summary["records_seen"] == summary["records_ok"] + summary["records_quarantined"]
    again = json.loads(
        runner.invoke(app, ["ingest", str(evtx_dir), "--lake", str(lake), "--json"]).output
    )
    assert again["records_seen"] == 0
    assert again["already_ingested"] == 2
    count = runner.invoke(
        app, ["sql", "select count(*) as n from events", "--lake", str(lake), "-f", "csv"]
    )
    assert count.output == f"n\n{summary['rows']['events']}\n"


def test_ingest_human_summary(tmp_path: Path, evtx_dir: Path) -> None:
    result = runner.invoke(app, ["ingest", str(evtx_dir), "--lake", str(tmp_path / "lake")])
    assert result.exit_code == 0
    assert "Files: 2 new (1 read, 1 read, some records quarantined)" in result.output
    assert "quarantined" in result.output
    assert "Elapsed:" in result.output


def test_strict_fails_on_quarantine(tmp_path: Path, evtx_dir: Path) -> None:
    result = runner.invoke(
        app, ["ingest", str(evtx_dir), "--lake", str(tmp_path / "lake"), "--strict", "--json"]
    )
    assert result.exit_code == 4


def test_unreadable_input_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "broken.evtx"
    bad.write_bytes(b"ElfFile\x00")
    result = runner.invoke(app, ["ingest", str(bad), "--lake", str(tmp_path / "lake"), "--json"])
    assert result.exit_code == 3
    problem = json.loads(result.output)["problems"][0]
    assert problem["path"] == str(bad)
    assert "file header" in problem["message"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert runner.invoke(app, ["ingest", str(tmp_path), "--backend", "java"]).exit_code == 2
    assert runner.invoke(app, ["ingest", str(tmp_path), "--tz", "Mars/Olympus"]).exit_code == 2
    assert runner.invoke(app, ["sql", "select 1", "--format", "xml"]).exit_code == 2
    assert runner.invoke(app, ["ingest"]).exit_code == 2


def test_sql_on_missing_lake_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["sql", "select 1", "--lake", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "not a caltrail lake" in result.output


def test_sql_bound_parameters_and_formats(tmp_path: Path, evtx_dir: Path) -> None:
    lake = tmp_path / "lake"
    runner.invoke(app, ["ingest", str(evtx_dir), "--lake", str(lake), "--json"])
    hostile = "x'; drop view events; --"
    result = runner.invoke(
        app,
        [
            "sql",
            "select $v as v, count(*) as n from events where computer = $v",
            "--lake",
            str(lake),
            "-p",
            f"v={hostile}",
            "-f",
            "json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"v": hostile, "n": 0}
    still = runner.invoke(
        app, ["sql", "select count(*) > 0 as ok from events", "--lake", str(lake), "-f", "csv"]
    )
    assert still.output == "ok\ntrue\n"  # booleans as JSON writes them
    formula = runner.invoke(
        app,
        [
            "sql",
            "select '=HYPERLINK(1)' as a, '+1' as b, 'PC-01' as c",
            "--lake",
            str(lake),
            "-f",
            "csv",
        ],
    )
    assert formula.output.splitlines()[1] == "'=HYPERLINK(1),'+1,PC-01"
    table = runner.invoke(app, ["sql", "select '[bold]x' as v", "--lake", str(lake)])
    assert "[bold]x" in table.output
    failed = runner.invoke(app, ["sql", "select * from no_such_view", "--lake", str(lake)])
    assert failed.exit_code == 1
    assert "query failed" in failed.output


def test_verify_balances(tmp_path: Path, evtx_dir: Path) -> None:
    lake = tmp_path / "lake"
    runner.invoke(app, ["ingest", str(evtx_dir), "--lake", str(lake), "--json"])
    result = runner.invoke(app, ["verify", "--lake", str(lake), "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["records_seen"] == data["rows_written"] + data["quarantined"]
    assert data["mismatches"] == []


def test_every_command_has_help_with_an_example() -> None:
    top = runner.invoke(app, ["--help"])
    commands = list(COMMANDS)
    assert len(commands) >= 6
    for name in commands:
        assert name in top.output
        text = runner.invoke(app, [name, "--help"]).output
        assert "Example:" in text, name
        # what Python and click would show a user who knows neither: a type or a range
        assert not re.search(r"x>=|x<=|<list|<int|<str|<path", text, re.IGNORECASE), name


def test_every_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for command in COMMANDS:
        assert f"caltrail {command}" in readme, command


def test_a_command_loads_only_its_own_module() -> None:
    """The app imports a command's module when that command is asked for (caltrail/pipeline/
    cli.py, COMMANDS): `caltrail shell` resolved loads neither pyarrow nor DuckDB nor the
    ingest, which the other commands' modules load; `caltrail sql` does (the check is not
    vacuous)."""
    probe = (
        "import json, sys\n"
        "from caltrail.pipeline.cli import COMMANDS, app\n"
        "import typer\n"
        "group = typer.main.get_command(app)\n"
        "with group.make_context('caltrail', [sys.argv[1], '--help'], resilient_parsing=True) as ctx:\n"
        "    assert group.get_command(ctx, sys.argv[1]) is not None\n"
        "    listed = group.list_commands(ctx)\n"
        "print(json.dumps({'listed': listed, 'loaded': sorted(sys.modules)}))\n"
    )
    heavy = {"pyarrow", "duckdb", "caltrail.pipeline.ingest", "caltrail.pipeline.diagnose"}
    seen = {}
    for command in ("shell", "sql"):
        done = subprocess.run(
            [sys.executable, "-c", probe, command],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        seen[command] = json.loads(done.stdout)
        assert seen[command]["listed"] == list(COMMANDS)  # listing the names loads nothing
    assert heavy.isdisjoint(seen["shell"]["loaded"]), heavy & set(seen["shell"]["loaded"])
    assert "caltrail.pipeline.cli_shell" in seen["shell"]["loaded"]
    assert "caltrail.pipeline.cli_sql" not in seen["shell"]["loaded"]
    assert {"pyarrow", "duckdb"} <= set(seen["sql"]["loaded"])


def test_installed_entry_point_runs() -> None:
    """Through the console script, as a user runs it."""
    exe = Path(sys.executable).parent / "caltrail"
    assert exe.exists()
    out = subprocess.run(
        [str(exe), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert out.returncode == 0
    assert "ingest" in out.stdout
