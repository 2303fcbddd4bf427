"""CLI: caltrail run / diagnose / timeline / report / demo (typer CliRunner)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from caltrail.pipeline.cli import app

runner = CliRunner(env={"TERMINAL_WIDTH": "160", "NO_COLOR": "1", "COLUMNS": "160"})
SAMPLES = Path(__file__).resolve().parents[1] / "caltrail" / "fixtures" / "samples"


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, object]]:
    """`caltrail run` over the committed sample bundle: (lake, report, truth)."""
    if not (SAMPLES / "truth.json").exists():
        pytest.skip("no committed samples")
    base = tmp_path_factory.mktemp("cli-case")
    lake, report = base / "lake", base / "case.html"
    result = runner.invoke(
        app,
        ["run", str(SAMPLES), "--lake", str(lake), "--tz", "Europe/Berlin", "--out", str(report)],
    )
    assert result.exit_code == 0, result.output
    assert "Findings (most excess first):" in result.output
    truth = json.loads((SAMPLES / "truth.json").read_text(encoding="utf-8"))
    return lake, report, truth


def test_run_prints_findings_and_writes_the_report(
    case: tuple[Path, Path, dict[str, object]],
) -> None:
    _, report, truth = case
    text = report.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>")
    for f in truth["expected_findings"]:  # type: ignore[attr-defined]
        assert f">{f['cause']}<" in text


def test_run_with_workers_finds_the_same(
    case: tuple[Path, Path, dict[str, object]], tmp_path: Path
) -> None:
    """`run --workers 2` (the ingest in worker processes) diagnoses the bundle as one does."""
    lake, _, _ = case
    parallel = tmp_path / "lake"
    result = runner.invoke(
        app,
        ["run", str(SAMPLES), "--lake", str(parallel), "--tz", "Europe/Berlin",
         "--out", str(tmp_path / "case.html"), "--workers", "2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output

    def findings(at: Path) -> list[object]:
        out = runner.invoke(app, ["diagnose", "--lake", str(at), "--format", "json"])
        assert out.exit_code == 0, out.output
        return sorted(out.output.splitlines())

    assert findings(parallel) == findings(lake)


def test_diagnose_formats(case: tuple[Path, Path, dict[str, object]]) -> None:
    lake, _, truth = case
    result = runner.invoke(app, ["diagnose", "--lake", str(lake), "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    got = {(r["cause"], r["subject"].upper()) for r in rows if r["subject_kind"] != "server"}
    expected = {
        (f["cause"], f["subject"].upper())
        for f in truth["expected_findings"]  # type: ignore[attr-defined]
    }
    assert got == expected
    assert all(r["fix"] for r in rows)
    result = runner.invoke(app, ["diagnose", "--lake", str(lake), "--format", "csv"])
    assert result.exit_code == 0
    assert result.output.splitlines()[0].startswith("cause,subject_kind,subject,")
    result = runner.invoke(app, ["diagnose", "--lake", str(lake)])
    assert result.exit_code == 0
    assert "cause" in result.output
    result = runner.invoke(app, ["diagnose", "--lake", str(lake), "--format", "xml"])
    assert result.exit_code == 2


def test_timeline_by_hwid_and_by_name(case: tuple[Path, Path, dict[str, object]]) -> None:
    lake, _, truth = case
    findings = truth["expected_findings"]  # type: ignore[index]
    by_hwid = next(f for f in findings if f["subject_kind"] == "hwid")  # type: ignore[union-attr]
    result = runner.invoke(
        app, ["timeline", "--lake", str(lake), "--hwid", by_hwid["subject"].upper(), "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert rows
    assert {r["client_name"] for r in rows if r["client_name"]} >= {
        n.upper() for n in by_hwid["names"]
    }
    by_name = next(f for f in findings if f["subject_kind"] == "name")  # type: ignore[union-attr]
    result = runner.invoke(
        app, ["timeline", "--lake", str(lake), "--name", by_name["subject"].lower(), "-f", "csv"]
    )
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) > 2


def test_timeline_usage_errors(case: tuple[Path, Path, dict[str, object]]) -> None:
    lake, _, _ = case
    assert runner.invoke(app, ["timeline", "--lake", str(lake)]).exit_code == 2
    both = runner.invoke(app, ["timeline", "--lake", str(lake), "--hwid", "00", "--name", "x"])
    assert both.exit_code == 2
    bad = runner.invoke(app, ["timeline", "--lake", str(lake), "--hwid", "not-a-hwid"])
    assert bad.exit_code == 2


def test_report_command(case: tuple[Path, Path, dict[str, object]], tmp_path: Path) -> None:
    lake, _, _ = case
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", "--lake", str(lake), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").count("<svg") >= 2


def test_commands_on_a_missing_lake(tmp_path: Path) -> None:
    result = runner.invoke(app, ["diagnose", "--lake", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert "not a caltrail lake" in result.output


def test_run_on_a_missing_path(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", str(tmp_path / "nope"), "--lake", str(tmp_path / "l")])
    assert result.exit_code == 2


def test_every_case_command_has_help() -> None:
    for command in ("run", "diagnose", "timeline", "report", "demo"):
        result = runner.invoke(app, [command, "--help"])
        assert result.exit_code == 0
        assert "Example:" in result.output
