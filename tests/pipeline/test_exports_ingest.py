"""License-server and client exports through `caltrail ingest`: every form detected by
content, and a snapshot's license count in SQL equal to the data rows of the export."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

from typer.testing import CliRunner

from caltrail.parsers.textio import detect_encoding
from caltrail.pipeline.cli import app
from caltrail.pipeline.session import connect

EXPORTS = Path(__file__).resolve().parents[1] / "parsers" / "data" / "exports"
runner = CliRunner()

EXPECTED_KIND = {
    "CL-01_tsctst.txt": "tsctst",
    "PC-0042_MSLicensing.reg": "registry",
    "Reg-HKLM-MSLicensing.txt": "registry",
    "checkmk_rds_licenses.txt": "checkmk_rds_licenses",
    "msrd_issued.html": "wmi_html",
    "pssdp_keypacks.xml": "wmi_xml",
    "wmiobject_ps51_issued.csv": "wmi_csv",
    # the seed's "Script for RDS Per Devices CALs" output and per-device report entries
    "seed_script_per_device_cals.csv": "wmi_csv",
    "report_per_device_entries.csv": "wmi_csv",
}


def csv_data_rows(path: Path) -> int:
    raw = path.read_bytes()
    codec, bom = detect_encoding(raw[:4096])
    text = raw[bom:].decode(codec)
    lines = [line for line in text.splitlines() if not line.startswith("#TYPE")]
    return sum(1 for row in csv.reader(io.StringIO("\n".join(lines))) if row) - 1


def test_every_hand_written_form_is_detected_by_content(tmp_path: Path) -> None:
    # Renamed so that no name gives the format away.
    folder = tmp_path / "in"
    folder.mkdir()
    for number, path in enumerate(sorted(EXPORTS.rglob("*"))):
        if path.is_file():
            shutil.copy(path, folder / f"export{number:02d}.dat")
    lake = tmp_path / "lake"
    result = runner.invoke(app, ["ingest", str(folder), "--lake", str(lake), "--json"])
    assert result.exit_code == 0, result.output
    kinds = sorted(k for (k,) in connect(lake).execute("select kind from ingest_files").fetchall())
    assert kinds == sorted(EXPECTED_KIND.values())


def test_snapshot_counts_equal_export_rows_in_every_form(tmp_path: Path) -> None:
    """PowerShell 5.1 (#TYPE, ASCII), PowerShell 7 (UTF-8) and Get-CimInstance (culture
    dates) exports of the same snapshots: each file's rows in SQL = its data rows."""
    from caltrail.fixtures.simulator import simulate

    bundle = tmp_path / "bundle"
    simulate(
        bundle, seed=3, devices=30, days=90, scenario="standard",
        snapshot_forms=("ps51", "ps7", "cim"), snapshot_every_days=30, culture="de-DE",
    )  # fmt: skip
    lake = tmp_path / "lake"
    # Culture dates carry no zone: they are read in --tz, the site's zone (recorded per file).
    result = runner.invoke(
        app, ["ingest", str(bundle), "--lake", str(lake), "--json", "--tz", "Europe/Berlin"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["records_quarantined"] == 0
    con = connect(lake)
    exports = sorted(bundle.rglob("*Win32_TSIssuedLicense*.csv"))
    assert len(exports) >= 6
    per_file = dict(
        con.execute("select source_path, count(*) from issued_license_rows group by all").fetchall()
    )
    for path in exports:
        assert per_file[str(path)] == csv_data_rows(path), path.name
    # The three forms of one snapshot agree on every license (dates included).
    forms = con.execute(
        "select snapshot_time, count(distinct (license_id, keypack_id, issue_date, "
        "expiration_date, hwid)) as licenses, count(*) as rows "
        "from issued_license_rows group by all"
    ).fetchall()
    for _, licenses, rows in forms:
        assert rows == 3 * licenses
    # Each reading keeps its cell beside it: a culture date (no zone) read again from its
    # text in the site's zone gives the stored UTC time; the DMTF cells are kept too.
    culture, differing = con.execute(
        "select count(*), count(*) filter (where timezone('Europe/Berlin', coalesce("
        "try_strptime(issue_date_raw, '%d.%m.%Y %H:%M:%S'), "
        "try_strptime(issue_date_raw, '%-m/%-d/%Y %-I:%M:%S %p'))) is distinct from issue_date) "
        "from issued_license_rows where issue_date_raw not like '%.000000%'"
    ).fetchone()
    assert culture > 0
    assert differing == 0
    assert con.execute(
        "select count(*) from issued_license_rows where issue_date is not null "
        "and issue_date_raw is null"
    ).fetchone() == (0,)
    # The deduplicated view holds each license once.
    assert con.execute(
        "select count(*) = count(distinct (license_server, keypack_id, license_id, issue_date)) "
        "from issued_licenses"
    ).fetchone() == (True,)
