"""Raw .etl through the pipeline: inside a zip, detected by content, rows in trace_events
with their lineage and accounting, licensing facts in trace_licensing; the CLI options."""

from __future__ import annotations

import csv
import io
import json
import struct
import zipfile
from pathlib import Path

from typer.testing import CliRunner

from caltrail.fixtures.etl_writer import EtlWriter, licensing_events, wpp_message
from caltrail.pipeline.cli import app
from caltrail.pipeline.ingest import IngestOptions, ingest
from tests.conftest import corpus_path
from tests.queries.test_trace_licensing import connect_35, rows

MESSAGE_GUID = "5b1a2b3c-4d5e-4f60-8a9b-0c1d2e3f4a5b"
TMF = f"""// PDB:  written for caltrail's tests
{MESSAGE_GUID} lserver // SRC=caltrail-test.c MJ= MN=
#typev caltrail_test_c10 7 "%0Issued permanent license to %10!s! HWID=%11!s! LicenseId=%12!d!" //   LEVEL=TRACE_LEVEL_INFORMATION FLAGS=LICENSING FUNC=TLSIssueLicense
{{
ClientName, ItemWString -- 10
Hwid, ItemString -- 11
LicenseId, ItemLong -- 12
}}
"""
HWID = "02000000c0b24e7d10a9ff372b54eb75f67a7087"


def etl_bytes() -> bytes:
    """Licensing telemetry (TraceLogging) and three lserver WPP messages."""
    out = io.BytesIO()
    writer = EtlWriter(out, buffer_size=4096)
    for record in licensing_events(writer, 5):
        writer.add(record)
    for n in range(3):
        args = f"PC-{n:04d}".encode("utf-16-le") + b"\x00\x00" + HWID.encode() + b"\x00"
        writer.add(wpp_message(MESSAGE_GUID, 7, args + struct.pack("<i", 100 + n), timestamp=writer.raw_time(70 + n)))
    writer.close()
    return out.getvalue()


def bundle(tmp_path: Path) -> tuple[Path, Path]:
    archive = tmp_path / "case.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("LS01/traces/RDSLS_trace.etl", etl_bytes())  # any name: found by content
    tmf_dir = tmp_path / "tmf"
    tmf_dir.mkdir()
    (tmf_dir / f"{MESSAGE_GUID}.tmf").write_text(TMF, encoding="utf-8")
    return archive, tmf_dir


def test_zip_with_etl_feeds_trace_licensing(tmp_path: Path) -> None:
    archive, tmf_dir = bundle(tmp_path)
    lake = tmp_path / "lake"
    patterns = tmp_path / "patterns.csv"
    with patterns.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "module_regex", "regex", "captures", "operation", "priority"])
        writer.writerow(
            ["rdsls", "(?i).*rdslstelemetry.*", r"ClientName=(\S+?),.*LicenseId=(\d+)", "client_name|license_id", "issue-permanent", "5"]
        )
    summary = ingest([archive], IngestOptions(lake=lake, tmf_dirs=(tmf_dir,), patterns=patterns))
    assert summary.files == {"ok": 1}
    assert summary.records_seen == summary.records_ok == 9  # the header record + 5 + 3
    con = connect_35(lake)
    files = rows(con, "select path, kind, status, records_seen, records_ok, records_bad from ingest_files")
    assert files == [
        {"path": f"{archive}!LS01/traces/RDSLS_trace.etl", "kind": "etl", "status": "ok",
         "records_seen": 9, "records_ok": 9, "records_bad": 0}
    ]  # fmt: skip
    events = rows(con, "select provider, parser, count(*) as n from trace_events group by all order by all")
    assert events == [
        {"provider": "Microsoft.Windows.RemoteDesktop.RDSLSTelemetry", "parser": "etl/1", "n": 5},
        {"provider": "Windows Kernel/EventTrace", "parser": "etl/1", "n": 1},
        {"provider": "lserver", "parser": "etl/1", "n": 3},
    ]
    facts = rows(
        con,
        "select operation, client_name, hwid, license_id, pattern from trace_licensing order by all",
    )
    assert [f for f in facts if f["pattern"] != "rdsls"] == [
        {"operation": "issue-permanent", "client_name": f"PC-{n:04d}", "hwid": HWID,
         "license_id": str(100 + n), "pattern": "issued-to"}
        for n in range(3)
    ]  # fmt: skip
    telemetry = [f for f in facts if f["pattern"] == "rdsls"]
    assert [(f["client_name"], f["license_id"]) for f in telemetry] == [
        (f"PC-{n:04d}", str(1000 + n)) for n in range(5)
    ]


def test_default_patterns_read_the_licensing_telemetry(tmp_path: Path) -> None:
    """Without a pattern of the user's, the telemetry provider's events (matched by its name
    or GUID) give name-HWID facts through the default Key=Value patterns: its field names
    are not public, so only the common spellings (ClientName, HWID, LicenseId) are read."""
    archive, tmf_dir = bundle(tmp_path)
    lake = tmp_path / "lake"
    ingest([archive], IngestOptions(lake=lake, tmf_dirs=(tmf_dir,)))
    con = connect_35(lake)
    facts = rows(
        con,
        "select client_name, hwid, license_id from trace_licensing "
        "where message like 'LicenseIssued:%' order by all",
    )
    assert facts == [
        {"client_name": f"PC-{n:04d}", "hwid": f"02000000{n:032x}", "license_id": str(1000 + n)}
        for n in range(5)
    ]


def test_cli_options_are_checked_before_the_run(tmp_path: Path) -> None:
    archive, tmf_dir = bundle(tmp_path)
    runner = CliRunner()
    bad = tmp_path / "not-a-manifest.man"
    bad.write_text("<Events/>", encoding="utf-8")
    result = runner.invoke(app, ["ingest", str(archive), "--lake", str(tmp_path / "l"), "--etw-manifest", str(bad)])
    assert result.exit_code == 2
    assert "is not an instrumentation manifest" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["ingest", str(archive), "--lake", str(tmp_path / "l"), "--tmf", str(empty)])
    assert result.exit_code == 2
    assert "no WPP message found" in result.output
    assert not (tmp_path / "l").exists()
    result = runner.invoke(
        app, ["ingest", str(archive), "--lake", str(tmp_path / "l"), "--tmf", str(tmf_dir), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["rows"] == {"trace_events": 9}


def test_the_whole_etl_corpus_ingests(tmp_path: Path) -> None:
    """Every file of the corpus folder (the .etl files, the zips holding more, the text
    samples beside them): no file ends in error, every .etl balances with nothing lost."""
    folder = corpus_path("etl")
    summary = ingest([folder], IngestOptions(lake=tmp_path / "lake"))
    assert "error" not in summary.files
    con = connect_35(tmp_path / "lake")
    etl_files = rows(
        con,
        "select path, status, records_seen, records_ok, records_bad from ingest_files "
        "where kind = 'etl' order by path",
    )
    # 13 .etl files and net.4.5.2.x64.etl from its zip (the other zips hold copies of files
    # already read, recorded with status "duplicate")
    assert len(etl_files) == 14
    assert {f["status"] for f in etl_files} == {"ok"}
    assert all(f["records_seen"] == f["records_ok"] > 0 for f in etl_files)
    assert sum(f["records_ok"] for f in etl_files if "net.4.5.2" in f["path"]) == 179_474


def test_work_bound_between_buffers() -> None:
    from caltrail.parsers.base import BUDGET_EXCEEDED
    from caltrail.parsers.trace import etl
    from tests.parsers.items import all_issues, parse_bytes, trace_records

    items = parse_bytes(etl, etl_bytes(), max_seconds=0.0)
    stops = [i for i in all_issues(items) if i.kind == BUDGET_EXCEEDED]
    assert len(stops) == 1
    assert stops[0].quarantined
    assert len(trace_records(items)) == 1  # the header buffer's record, read before the check


def test_run_takes_the_decoding_files_too(tmp_path: Path) -> None:
    """`caltrail run` (the one command for a case) decodes raw .etl traces as ingest does,
    and refuses a bad decoding file before it touches the lake or writes a report."""
    archive, tmf_dir = bundle(tmp_path)
    runner = CliRunner()
    lake, report = tmp_path / "lake", tmp_path / "case.html"
    bad = tmp_path / "not-a-manifest.man"
    bad.write_text("<Events/>", encoding="utf-8")
    refused = runner.invoke(
        app, ["run", str(archive), "--lake", str(lake), "--out", str(report), "--etw-manifest", str(bad)]
    )
    assert refused.exit_code == 2
    assert "is not an instrumentation manifest" in refused.output
    assert not lake.exists()
    assert not report.exists()
    result = runner.invoke(
        app, ["run", str(archive), "--lake", str(lake), "--out", str(report), "--tmf", str(tmf_dir)]
    )
    assert result.exit_code in (0, 5), result.output  # 5: the bundle holds no CAL facts
    con = connect_35(lake)
    decoded = rows(con, "select count(*) as n from trace_licensing where message like 'LicenseIssued:%'")
    assert decoded == [{"n": 5}]
