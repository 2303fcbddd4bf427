"""The HTML report: self-contained, every log value escaped (names are attacker-controlled)."""

from __future__ import annotations

import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from caltrail.fixtures.simulator import simulate
from caltrail.pipeline.diagnose import open_case
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.report import esc, render_report, subject_html

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
    ingest([bundle], IngestOptions(lake=lake, tz=ZoneInfo("Europe/Berlin")))
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
    assert not re.search(r"\ssrc=", report_html)
    # links only within the report (the table of contents, findings <-> charts)
    assert re.findall(r'\shref="([^"]*)"', report_html)
    assert all(h.startswith("#") for h in re.findall(r'\shref="([^"]*)"', report_html))
    assert "@import" not in report_html
    assert "url(" not in report_html
    assert "Content-Security-Policy" in report_html
    assert "<svg" in report_html


def test_report_sections_in_order(report_html: str) -> None:
    order = [
        '<nav class="toc"',
        '<h2 id="summary">Summary',
        '<h2 id="findings">Findings',
        '<h2 id="devices">Devices',
        '<h2 id="pool">The pool over time',
        '<h2 id="plan">Recovery and revoke plan',
        '<h2 id="server">Server problems',
        '<h2 id="inputs">Inputs',
    ]
    positions = [report_html.index(h) for h in order]
    assert positions == sorted(positions)
    # (the renamed machines are split between their old and new names: the EVTX and trace
    # still carry the old ones, so only the causes of untouched devices are checked)
    for cause in ("cloned", "vdi", "script", "store-app", "freerdp"):
        assert f'<td class="word">{cause}</td>' in report_html


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
    # no all-clear from a lake without licensing data: a banner says so
    assert "No device holds more CALs than it should." not in text
    assert "No licensing data" in text
    assert "not an all-clear" in text
    assert "Data up to ;" not in text
    assert "notes.txt" in text


def test_links_lead_somewhere(report_html: str) -> None:
    targets = set(re.findall(r'\sid="([^"]+)"', report_html))
    links = re.findall(r'\shref="#([^"]+)"', report_html)
    assert {"summary", "findings", "devices", "pool", "plan", "server", "inputs"} <= set(links)
    assert set(links) <= targets
    # every charted finding links to its chart, and the chart back to it
    charts = re.findall(r'<h3 id="device-(\d+)">', report_html)
    assert charts
    for n in charts:
        assert f'href="#device-{n}"' in report_html
        assert f'href="#finding-{n}"' in report_html


def test_a_device_chart_draws_every_license(hostile_lake: Path, report_html: str) -> None:
    """The whole history, onset included: as many bars as the device has licenses."""
    con = open_case(hostile_lake)
    hwid, count = con.execute(
        "select hwid, count(*) from licenses where hwid is not null "
        "group by hwid order by 2 desc limit 1"
    ).fetchall()[0]
    con.close()
    assert count > 60  # more than the report used to draw
    heading = report_html.index(f'{subject_html(hwid)}<a class="back"')
    chart = report_html[heading : report_html.index("</figure>", heading)]
    assert chart.count("<rect ") == count
    assert f"{count} licenses" in report_html[heading : heading + 2000]


def test_hwids_wrap_only_between_their_dwords() -> None:
    hwid = "02000000e5100f70ba772d2a44e8cde8a2f24791"
    assert subject_html(hwid) == (
        '<code class="hwid">02000000<wbr>e5100f70<wbr>ba772d2a<wbr>44e8cde8<wbr>a2f24791</code>'
    )
    assert subject_html("<b>PC</b>") == '<span class="name">&lt;b&gt;PC&lt;/b&gt;</span>'


def test_a_window_keeps_the_findings_active_in_it(hostile_lake: Path) -> None:
    import datetime as dt

    from caltrail.pipeline.user_sql import Window

    con = open_case(hostile_lake)
    everything = render_report(con, hostile_lake)
    last = con.execute("select max(last_seen) from findings").fetchall()[0][0]
    later = render_report(con, hostile_lake, Window(last + dt.timedelta(days=1), None))
    con.close()
    assert "Window:" in later
    assert everything.count('<tr id="finding-') > 0
    assert later.count('<tr id="finding-') == 0


def test_the_print_stylesheet_is_there(report_html: str) -> None:
    assert "@media print" in report_html
    assert "break-inside: avoid" in report_html


def test_the_plan_table_gives_each_batch_as_the_plan_does(
    hostile_lake: Path, report_html: str
) -> None:
    """Each revoke batch's row: its server, batch number, the day (UTC) it is revoked on, its
    licenses, the 20% allowance and the next batch's day, as the revoke_plan view gives them."""
    con = open_case(hostile_lake)
    try:
        batches = con.execute(
            """
            select license_server, product_version, batch,
                strftime(min(revoke_on) at time zone 'UTC', '%Y-%m-%d'), count(*),
                any_value(revoke_limit), any_value(installed),
                strftime(min(next_batch_on) at time zone 'UTC', '%Y-%m-%d')
            from revoke_plan where action = 'revoke'
            group by all order by license_server, product_version, batch
            """
        ).fetchall()
    finally:
        con.close()
    assert batches, "the hostile fleet's plan revokes something"
    plan = report_html[report_html.index('id="plan"') :]
    rows = re.findall(r"<tr>(.*?)</tr>", plan, flags=re.S)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S) for row in rows]
    shown = {(c[0], c[2]): c for c in cells if len(c) == 8}
    for server, _product, batch, revoke_on, count, limit, installed, next_on in batches[:30]:
        row = shown[(server, str(batch))]
        assert row[3] == revoke_on
        assert row[4] == str(count)
        assert row[5] == f"{limit} of {installed}"
        assert row[6] == (next_on or "")
