"""The HTML report: self-contained, every log value escaped (names are attacker-controlled)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from caltrail.fixtures.simulator import simulate
from caltrail.pipeline.diagnose import open_case
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.report import esc, render_report

SCRIPT_NAME = "<script>alert(1)</script>"
FORMULA_NAME = '=HYPERLINK("http://evil","y")'


def hostile_bundle(out: Path, seed: int = 31) -> tuple[Path, dict[str, str]]:
    """A simulated bundle in which two computers carry hostile names (WMI export + trace)."""
    result = simulate(out, seed=seed, devices=40, days=120, scenario="standard")
    findings = result.expected_findings
    dup = next(f["subject"] for f in findings if f["cause"] == "duplicate-names")
    rebuilt = next(f["subject"] for f in findings if f["cause"] == "rebuilt")
    renames = {dup: SCRIPT_NAME, rebuilt: FORMULA_NAME}
    for path in out.rglob("*"):
        if path.suffix not in (".csv", ".txt") or "clients" in path.parts:
            continue
        text = path.read_text(encoding="utf-8-sig")
        for old, new in renames.items():
            if path.suffix == ".csv":
                text = text.replace(f'"{old}"', '"' + new.replace('"', '""') + '"')
            else:
                text = text.replace(f"ClientName={old} ", f"ClientName={new} ")
        path.write_text(text, encoding="utf-8")
    return out, renames


@pytest.fixture(scope="module")
def hostile_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("report")
    bundle, _ = hostile_bundle(base / "bundle")
    lake = base / "lake"
    ingest([bundle], IngestOptions(lake=lake, tz="Europe/Berlin", tz_given=True))
    return lake


@pytest.fixture(scope="module")
def report_html(hostile_lake: Path) -> str:
    con = open_case(hostile_lake)
    try:
        return render_report(con, hostile_lake)
    finally:
        con.close()


def test_esc_quotes_and_tags() -> None:
    assert esc('<a href="x">') == "&lt;a href=&quot;x&quot;&gt;"
    assert esc(None) == ""
    assert esc(["<b>", "c"]) == "&lt;b&gt;, c"


def test_hostile_names_reach_the_diagnosis(hostile_lake: Path) -> None:
    con = open_case(hostile_lake)
    names = {r[0] for r in con.execute("select client_name from names").fetchall()}
    assert SCRIPT_NAME.upper() in names
    con.close()


def test_report_escapes_every_log_value(report_html: str) -> None:
    # the only <script> in the file would be an injected one
    assert "<script" not in report_html.lower()
    assert "&lt;SCRIPT&gt;ALERT(1)&lt;/SCRIPT&gt;" in report_html
    assert 'HYPERLINK("' not in report_html
    # attribute values cannot be broken out of
    assert not re.search(r"<[a-z]+[^>]*\son[a-z]+=", report_html)


def test_report_is_self_contained(report_html: str) -> None:
    assert report_html.startswith("<!doctype html>")
    # no external fetch: no src/href to anything, no @import, no url()
    assert not re.search(r"\s(src|href)=", report_html)
    assert "@import" not in report_html
    assert "url(" not in report_html
    assert "Content-Security-Policy" in report_html
    assert "<svg" in report_html


def test_report_sections_in_order(report_html: str) -> None:
    order = [
        "<h2>Summary",
        "<h2>Findings",
        "<h2>Devices",
        "<h2>The pool over time",
        "<h2>Recovery and revoke plan",
        "<h2>Server problems",
        "<h2>Inputs",
    ]
    positions = [report_html.index(h) for h in order]
    assert positions == sorted(positions)
    # (the renamed machines are split between their old and new names: the EVTX and trace
    # still carry the old ones, so only the causes of untouched devices are checked)
    for cause in ("cloned", "vdi", "script", "store-app", "freerdp"):
        assert f"<td>{cause}</td>" in report_html


def test_csv_output_neutralises_formulas(hostile_lake: Path) -> None:
    import io

    from caltrail.pipeline import output

    con = open_case(hostile_lake)
    reader = con.sql("select client_name, hwid_count from names order by 1").to_arrow_reader(64)
    text = io.StringIO()
    output.write_csv(reader.schema, reader, text)
    con.close()
    assert "\n=" not in text.getvalue()
    assert ",=" not in text.getvalue()
    assert "'=HYPERLINK" in text.getvalue()


def test_report_of_an_empty_lake(tmp_path: Path) -> None:
    empty = tmp_path / "in"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here\n", encoding="utf-8")
    lake = tmp_path / "lake"
    ingest([empty], IngestOptions(lake=lake))
    con = open_case(lake)
    text = render_report(con, lake)
    con.close()
    assert "No device holds more CALs than it should." in text
    assert "notes.txt" in text
