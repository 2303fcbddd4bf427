"""Every command, given bad arguments, fails with its documented exit status and one line on
stderr (`caltrail: error: ...`), never a usage block or a traceback; and the small things a
new user meets first: --version, -h, help texts that read as they should."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caltrail.pipeline import cli
from caltrail.pipeline.cli import app

SAMPLES = Path(__file__).resolve().parents[1] / "caltrail" / "fixtures" / "samples"
runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "100"})
COMMANDS = list(cli.COMMANDS)


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("caltrail: error: "), lines[0]
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_option_is_one_line_exit_2(command: str) -> None:
    code, out, err = invoke(command, "--no-such-option")
    assert code == 2, out + err
    message = one_line(err)
    assert "--no-such-option" in message
    assert f"caltrail {command} -h" in message


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_short_help_and_plain_metavariables(command: str) -> None:
    code, out, _ = invoke(command, "-h")
    assert code == 0
    assert "Example:" in out
    # no Python type shown as a metavariable (<str>, <list[Path]>, <int range>)
    assert not re.search(r"<(str|int|float|path|list\[|int range|file)", out), out
    if "--lake" in out and command not in ("run", "ingest", "demo"):
        assert "created if missing" not in out


def test_examples_are_one_per_line() -> None:
    for command in COMMANDS:
        out = invoke(command, "-h")[1]
        for line in out.splitlines():
            assert line.count("Example:") <= 1, (command, line)


def test_version_and_help() -> None:
    code, out, _ = invoke("--version")
    assert code == 0
    assert re.fullmatch(r"caltrail \d+\.\d+\.\d+\n", out)
    code, out, _ = invoke("-h")
    assert code == 0
    assert "Commands:" in out
    code, out, _ = invoke()
    assert code == 0
    assert "Commands:" in out


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (("sql", ""), 2, "the query is empty"),
        (("ingest",), 2, "Missing argument"),
        (("ingest", "{tmp}/nope"), 2, "no such file or folder"),
        (("run", "{tmp}/nope"), 2, "no such file or folder"),
        (("ingest", "{tmp}", "--tz", "Mars/Olympus"), 2, "unknown time zone"),
        (("run", "{tmp}", "--tz", "Mars/Olympus"), 2, "unknown time zone"),
        (("ingest", "{tmp}", "--backend", "java"), 2, "choose rust or python"),
        (("ingest", "{tmp}", "--date-order", "ydm"), 2, "choose dmy, mdy or ymd"),
        (("ingest", "{tmp}", "--snapshot-time", "soon"), 2, "not an ISO date"),
        (("ingest", "{tmp}", "--workers", "0"), 2, "--workers"),
        (("diagnose", "--lake", "{tmp}/none"), 1, "not a caltrail lake"),
        (("timeline", "--lake", "{tmp}/none", "--name", "x"), 1, "not a caltrail lake"),
        (("report", "--lake", "{tmp}/none"), 1, "not a caltrail lake"),
        (("search", "--lake", "{tmp}/none"), 1, "not a caltrail lake"),
        (("verify", "--lake", "{tmp}/none"), 1, "not a caltrail lake"),
        (("compact", "--lake", "{tmp}/none"), 1, "not a caltrail lake"),
        (("shell", "--lake", "{tmp}/none"), 1, "not a caltrail lake"),
        (("sql", "select 1", "--lake", "{tmp}/none"), 1, "not a caltrail lake"),
        (("timeline", "--hwid", "zz"), 2, "not a HWID"),
        (("timeline",), 2, "exactly one of --hwid or --name"),
        (("diagnose", "--format", "xml"), 2, "choose table, csv or json"),
        (("search", "--source", "etl"), 2, "choose all, evtx or trace"),
        (("search", "--from", "tomorrow"), 2, "not an ISO date"),
        (("simulate", "--out", "{tmp}/sim", "--devices", "5"), 2, "needs at least"),
        (("simulate", "--out", "{tmp}/sim", "--scenario", "nope"), 2, "choose one of"),
        (("simulate", "--out", "{tmp}/sim", "--days", "3"), 2, "--days"),
    ],
)
def test_bad_arguments(tmp_path: Path, args: tuple[str, ...], code: int, expected: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    got, out, err = invoke(*argv)
    assert got == code, out + err
    assert expected in one_line(err)


def test_a_missing_input_touches_nothing(tmp_path: Path) -> None:
    """ingest and run treat a missing path alike: exit 2 before a lake is created."""
    for command in ("ingest", "run"):
        lake = tmp_path / f"lake-{command}"
        code, _, err = invoke(command, str(tmp_path / "nope"), "--lake", str(lake))
        assert code == 2
        one_line(err)
        assert not lake.exists()


def test_patterns_with_other_columns_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "patterns.csv"
    bad.write_text("name,pattern\nx,y\n", encoding="utf-8")
    lake = tmp_path / "lake"
    code, _, err = invoke("ingest", str(tmp_path), "--lake", str(lake), "--patterns", str(bad))
    assert code == 2
    message = one_line(err)
    assert "missing module_regex" in message
    assert "unknown pattern" in message
    assert "(groups_regex, operation, priority, example, note may be left out)" in message
    assert not lake.exists()
    # the optional columns (groups_regex, operation, priority, example, note) may be left out
    short = tmp_path / "short.csv"
    short.write_text("name,module_regex,regex,captures\nx,,^y (\\S+)$,client_name\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    code, _, err = invoke("ingest", str(logs), "--lake", str(lake), "--patterns", str(short))
    assert code == 0, err


def test_unused_patterns_are_named(tmp_path: Path) -> None:
    """An ingest with --patterns says which of its rows the lake does not use, and why."""
    patterns = tmp_path / "p.csv"
    patterns.write_text(
        "name,module_regex,regex,groups_regex,captures\n"
        "fine,,^pair=(\\S+)$,,client_name\n"
        "broken,,x,(,user\n"
        "unknown,,^y=(\\S+)$,,computer\n"
        "hwid,,,,\n",  # no regex: the default switched off, as meant
        encoding="utf-8",
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    lake = tmp_path / "lake"
    code, _, err = invoke("ingest", str(logs), "--lake", str(lake), "--patterns", str(patterns))
    assert code == 0, err
    named = [line.strip() for line in err.splitlines() if "is not used" in line]
    assert named == [
        f"! pattern broken of {patterns} is not used: invalid groups_regex",
        f"! pattern unknown of {patterns} is not used: unknown capture name: computer",
    ]
    # a file DuckDB cannot read at all (a quote left open) is refused before the run: once in
    # the lake it would stop every session; one put there by hand stops them with a message
    unread = tmp_path / "open-quote.csv"
    unread.write_text('name,module_regex,regex,captures\n"x,,^y$,user\n', encoding="utf-8")
    fresh = tmp_path / "fresh"
    code, _, err = invoke("ingest", str(logs), "--lake", str(fresh), "--patterns", str(unread))
    assert code == 2
    assert "cannot be read as CSV" in one_line(err)
    assert not fresh.exists()
    (lake / "_ref" / "user_trace_patterns.csv").write_bytes(unread.read_bytes())
    code, _, err = invoke("diagnose", "--lake", str(lake))
    assert code == 1
    assert "user_trace_patterns.csv cannot be read as CSV" in one_line(err)
    # an ingest into that lake commits its files and says why the init script is not written
    more = tmp_path / "more"
    more.mkdir()
    shutil.copy(SAMPLES / "LS01" / "LS01_Win32_TSLicenseKeyPack_20250501-2350.csv", more)
    code, out, err = invoke("ingest", str(more), "--lake", str(lake), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["files"] == {"ok": 1}
    assert "user_trace_patterns.csv cannot be read as CSV" in summary["init_script_error"]
    code, out, err = invoke("ingest", str(more), "--lake", str(lake), "--force")
    assert code == 0, err
    assert "init script (caltrail.sql) was not written" in " ".join(out.split())
    assert "internal error" not in out + err
    code, out, err = invoke("compact", "--lake", str(lake))
    assert code == 0, err
    assert "init script (caltrail.sql) was not written" in " ".join(err.split())
    code, _, err = invoke("shell", "--lake", str(lake))
    assert code == 1
    assert "user_trace_patterns.csv cannot be read as CSV" in one_line(err)


def test_an_internal_error_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from caltrail.pipeline import cli_lake

    def broken(*args: object, **kwargs: object) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(cli_lake, "check_patterns", broken)
    patterns = tmp_path / "p.csv"
    patterns.write_text("x\n", encoding="utf-8")
    code, _, err = invoke("ingest", str(tmp_path), "--patterns", str(patterns))
    assert code == 1
    line = err.strip()
    assert line.startswith("caltrail: internal error: KeyError")
    assert "\n" not in line
