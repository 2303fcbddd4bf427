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


def test_timeline_reads_every_hwid_rendering(case: tuple[Path, Path, dict[str, object]]) -> None:
    from caltrail.parsers.hwid import render_dwords, render_registry_hex, render_wmi

    lake, _, truth = case
    findings = truth["expected_findings"]  # type: ignore[index]
    hwid = next(f["subject"] for f in findings if f["subject_kind"] == "hwid")  # type: ignore[union-attr]

    def rows(text: str) -> list[str]:
        result = runner.invoke(app, ["timeline", "--lake", str(lake), "--hwid", text, "-f", "csv"])
        assert result.exit_code == 0, result.output
        return result.stdout.splitlines()

    expected = rows(hwid)
    assert len(expected) > 2
    for rendering in (
        hwid.upper(),
        render_wmi(hwid),
        render_dwords(hwid),
        render_registry_hex(hwid),
    ):
        assert rows(rendering) == expected, rendering


def test_timeline_says_when_there_is_no_history(case: tuple[Path, Path, dict[str, object]]) -> None:
    lake, _, _ = case
    unknown = "00000002-00000000-11111111-22222222-33333333"
    result = runner.invoke(app, ["timeline", "--lake", str(lake), "--hwid", unknown])
    assert result.exit_code == 0
    assert result.stdout == ""
    assert f"no history for HWID {unknown}" in result.stderr
    assert "(02000000" in result.stderr  # the canonical form it looked for
    result = runner.invoke(app, ["timeline", "--lake", str(lake), "--name", "NOPE"])
    assert result.stdout == ""
    assert "no history for name NOPE" in result.stderr


def test_timeline_and_diagnose_in_a_window(case: tuple[Path, Path, dict[str, object]]) -> None:
    lake, _, truth = case
    findings = truth["expected_findings"]  # type: ignore[index]
    name = next(f["subject"] for f in findings if f["subject_kind"] == "name")  # type: ignore[union-attr]
    every = runner.invoke(app, ["timeline", "--lake", str(lake), "--name", name, "-f", "json"])
    days = sorted(
        {json.loads(r)["ts"][:10] for r in every.stdout.splitlines() if json.loads(r)["ts"]}
    )
    assert len(days) > 2
    day = days[len(days) // 2]
    some = runner.invoke(
        app,
        ["timeline", "--lake", str(lake), "--name", name, "-f", "json", "--from", day, "--to", day],
    )
    assert some.exit_code == 0, some.output
    rows = [json.loads(r) for r in some.stdout.splitlines()]
    assert rows
    assert {r["ts"][:10] for r in rows} == {day}
    # a window the lake's licensing facts do not reach is said to be empty of data, with
    # where the data is: never "no finding" as if the devices were fine then (exit 5)
    for window in (["--from", "2100-01-01"], ["--to", "1999-12-31"]):
        diag = runner.invoke(app, ["diagnose", "--lake", str(lake), "-f", "json", *window])
        assert diag.exit_code == 5, diag.output
        assert diag.stdout == ""
        assert "No licensing data in the window" in diag.stderr
        assert "the lake's licensing facts run from 20" in diag.stderr
        assert "No finding:" not in diag.stderr
    report = lake.parent / "later.html"
    later = runner.invoke(
        app, ["report", "--lake", str(lake), "--out", str(report), "--from", "2100-01-01"]
    )
    assert later.exit_code == 5, later.output
    assert "No licensing data in the window" in report.read_text(encoding="utf-8")
    # a window inside the data with no finding active in it is said as such (exit 0)
    inside = runner.invoke(
        app, ["diagnose", "--lake", str(lake), "-f", "json", "--from", day, "--to", day]
    )
    assert inside.exit_code == 0, inside.output
    assert "No licensing data in the window" not in inside.stderr


def test_no_licensing_data_is_no_all_clear(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "notes.txt").write_text("nothing caltrail reads\n", encoding="utf-8")
    lake, report = tmp_path / "lake", tmp_path / "out" / "case.html"
    result = runner.invoke(app, ["run", str(folder), "--lake", str(lake), "--out", str(report)])
    assert result.exit_code == 5, result.output
    assert "No licensing data" in result.stderr
    assert "No device holds more CALs" not in result.stdout + report.read_text(encoding="utf-8")
    assert "not an all-clear" in report.read_text(encoding="utf-8")
    assert runner.invoke(app, ["diagnose", "--lake", str(lake)]).exit_code == 5
    assert runner.invoke(app, ["report", "--lake", str(lake), "--out", str(report)]).exit_code == 5
    skipped = runner.invoke(
        app, ["sql", "select error from ingest_files", "--lake", str(lake), "-f", "csv"]
    )
    assert 'starts with the text ""nothing caltrail"")' in skipped.stdout  # not a bytes repr


def test_report_and_run_create_the_output_folder(
    case: tuple[Path, Path, dict[str, object]], tmp_path: Path
) -> None:
    lake, _, _ = case
    out = tmp_path / "new" / "folder" / "case.html"
    result = runner.invoke(app, ["report", "--lake", str(lake), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")
    blocked = tmp_path / "file"
    blocked.write_text("x", encoding="utf-8")
    result = runner.invoke(app, ["run", str(SAMPLES), "--lake", str(tmp_path / "l"),
                                 "--out", str(blocked / "case.html")])  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith("caltrail: error: ")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "l").exists()  # refused before any work


def test_a_fatal_json_ingest_prints_json_and_wait_says_it_waits(tmp_path: Path) -> None:
    import threading
    import time

    from caltrail.pipeline import lake as L

    lake = tmp_path / "lake"
    L.ensure_lake(lake)
    held = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with L.writer_lock(lake):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(30)
    try:
        busy = runner.invoke(app, ["ingest", str(SAMPLES), "--lake", str(lake), "--json"])
        assert busy.exit_code == 1
        answer = json.loads(busy.stdout)
        assert answer["exit_status"] == 1
        assert "being written" in answer["error"]["message"]
        threading.Timer(1.0, release.set).start()
        started = time.monotonic()
        waited = runner.invoke(
            app, ["ingest", str(SAMPLES), "--lake", str(lake), "--json", "--wait"]
        )
        assert time.monotonic() - started >= 0.9
    finally:
        release.set()
        thread.join()
    assert waited.exit_code == 0, waited.output
    assert "waiting for pid" in waited.stderr
    assert json.loads(waited.stdout)["files_total"] > 0


def test_findings_table_shows_whole_hwids(case: tuple[Path, Path, dict[str, object]]) -> None:
    lake, _, truth = case
    hwids = [
        f["subject"]
        for f in truth["expected_findings"]  # type: ignore[attr-defined]
        if f["subject_kind"] == "hwid"
    ]
    table = runner.invoke(app, ["diagnose", "--lake", str(lake), "--max-rows", "0"])
    assert table.exit_code == 0
    for hwid in hwids:
        assert hwid.lower() in table.stdout  # never cut: it is what `timeline --hwid` takes


def test_counts_read_in_the_singular_and_plural(tmp_path: Path) -> None:
    from caltrail.pipeline.output import plural

    assert plural(1, "record") == "1 record"
    assert plural(2_000, "record") == "2,000 records"
    assert plural(1, "excess CAL") == "1 excess CAL"
    assert plural(0, "file does", "files do") == "0 files do"


def test_progress_is_drawn_on_a_terminal_also_with_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from contextlib import contextmanager

    from caltrail.pipeline import cli_ingest, progress

    seen: list[bool] = []

    @contextmanager
    def record(enabled: bool):  # type: ignore[no-untyped-def]
        seen.append(enabled)
        yield None

    monkeypatch.setattr(progress, "ingest_progress", record)
    monkeypatch.setattr(cli_ingest, "stderr_is_terminal", lambda: True)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "x.txt").write_text("x\n", encoding="utf-8")
    result = runner.invoke(app, ["ingest", str(folder), "--lake", str(tmp_path / "l"), "--json"])
    assert result.exit_code == 0, result.output
    assert seen == [True]
    assert json.loads(result.stdout)["files_total"] == 1
