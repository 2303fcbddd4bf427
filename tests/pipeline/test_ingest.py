"""The ingest driver and the lake: idempotency, accounting, inputs, detection."""

from __future__ import annotations

import dataclasses
import shutil
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from caltrail.parsers.base import RECORD_TYPES
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.schemas import LINEAGE_NAMES, RECORD_SCHEMAS
from caltrail.pipeline.session import connect
from tests.conftest import corpus_path


def one(lake: Path, sql: str, params: dict[str, object] | None = None) -> object:
    row = connect(lake).execute(sql, params or {}).fetchone()
    assert row is not None
    return row[0]


def test_record_fields_match_declared_schemas() -> None:
    """Each record dataclass and its table's Arrow schema name the same columns."""
    for record_type in RECORD_TYPES:
        schema = RECORD_SCHEMAS[record_type.table]
        fields = [f.name for f in dataclasses.fields(record_type)]
        columns = [n for n in schema.names if n not in LINEAGE_NAMES]
        assert fields == columns, record_type.__name__


@pytest.fixture
def small_inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(corpus_path("evtx", "plaso", "System2.evtx"), folder / "System2.evtx")
    shutil.copy(corpus_path("evtx", "chainsaw", "security_sample.evtx"), folder / "Security.evtx")
    (folder / "notes.txt").write_text("nothing to see\n", encoding="utf-8")
    (folder / "empty.evtx").write_bytes(b"")
    (folder / "fake.evtx").write_bytes(b"this is not an event log" * 100)
    return folder


def test_ingest_counts_and_statuses(tmp_path: Path, small_inputs: Path) -> None:
    lake = tmp_path / "lake"
    summary = ingest([small_inputs], IngestOptions(lake=lake))
    assert summary.files == {"ok": 1, "quarantined": 1, "skipped": 1, "error": 2}
    assert summary.records_seen == summary.records_ok + summary.records_quarantined
    statuses = dict(connect(lake).execute("select path, status from ingest_files").fetchall())
    assert statuses[str(small_inputs / "notes.txt")] == "skipped"
    assert statuses[str(small_inputs / "empty.evtx")] == "error"
    assert statuses[str(small_inputs / "fake.evtx")] == "error"
    errors = dict(connect(lake).execute("select path, error from ingest_files").fetchall())
    assert "empty file" in errors[str(small_inputs / "empty.evtx")]
    assert "bad file magic" in errors[str(small_inputs / "fake.evtx")]
    assert one(lake, "select count(*) from events") == summary.rows["events"]
    assert one(lake, "select count(*) from ingest_accounting where not balanced") == 0


def test_second_ingest_adds_nothing_and_force_rereads(tmp_path: Path, small_inputs: Path) -> None:
    lake = tmp_path / "lake"
    first = ingest([small_inputs], IngestOptions(lake=lake))
    events = one(lake, "select count(*) from events_all")
    again = ingest([small_inputs], IngestOptions(lake=lake))
    assert again.records_seen == 0
    assert again.already_ingested == sum(first.files.values())
    assert one(lake, "select count(*) from events_all") == events
    forced = ingest([small_inputs / "Security.evtx"], IngestOptions(lake=lake, force=True))
    assert forced.records_ok == 10
    # The older run's rows of that file are hidden: still one copy of each record.
    assert one(lake, "select count(*) from events_all") == events
    assert one(lake, "select count(*) from ingest_accounting where not balanced") == 0


def test_same_record_through_two_files_is_shown_once(tmp_path: Path) -> None:
    source = corpus_path("evtx", "chainsaw", "security_sample.evtx")
    folder = tmp_path / "in"
    folder.mkdir()
    data = source.read_bytes()
    (folder / "live.evtx").write_bytes(data)
    # A "VSS copy": same records, different bytes (one unused trailing block).
    (folder / "vss.evtx").write_bytes(data + b"\x00" * 65536)
    lake = tmp_path / "lake"
    ingest([folder], IngestOptions(lake=lake))
    assert one(lake, "select count(*) from events_all") == 20
    assert one(lake, "select count(*) from events") == 10
    assert one(lake, "select min(dup_count) from events") == 2


def test_identical_files_in_one_run_are_read_once(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    source = corpus_path("evtx", "chainsaw", "security_sample.evtx")
    shutil.copy(source, folder / "a.evtx")
    shutil.copy(source, folder / "b.evtx")
    summary = ingest([folder], IngestOptions(lake=tmp_path / "lake"))
    assert summary.files == {"ok": 1, "duplicate": 1}
    assert summary.records_ok == 10


def test_zip_members_are_contained(tmp_path: Path) -> None:
    """Members named ../x or /abs/x are read from a private temp folder, never written there."""
    bundle = tmp_path / "case.zip"
    data = corpus_path("evtx", "chainsaw", "security_sample.evtx").read_bytes()
    with zipfile.ZipFile(bundle, "w") as archive:
        archive.writestr("../../escape.evtx", data)
        archive.writestr("/abs/System.evtx", data[:4096])
        archive.writestr("logs/readme.txt", "hello")
    lake = tmp_path / "lake"
    summary = ingest([bundle], IngestOptions(lake=lake))
    assert summary.records_ok == 10
    assert not (tmp_path / "escape.evtx").exists()
    assert not Path("/abs/System.evtx").exists()
    paths = {row[0] for row in connect(lake).execute("select path from ingest_files").fetchall()}
    assert f"{bundle}!../../escape.evtx" in paths


def test_missing_path_is_reported_and_run_goes_on(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    source = corpus_path("evtx", "chainsaw", "security_sample.evtx")
    summary = ingest([tmp_path / "nope", source], IngestOptions(lake=lake))
    assert summary.files == {"error": 1, "ok": 1}
    assert summary.problems[0]["message"] == "no such file or directory"


def test_every_parquet_file_in_the_lake_is_complete(tmp_path: Path, small_inputs: Path) -> None:
    lake = tmp_path / "lake"
    ingest([small_inputs], IngestOptions(lake=lake))
    files = [p for p in lake.rglob("*.parquet") if ".staging" not in p.parts]
    assert files
    for path in files:
        pq.read_metadata(path)  # raises on a partial file
    assert not list((lake / ".staging").rglob("*.parquet"))


def test_init_script_defines_every_view(tmp_path: Path, small_inputs: Path) -> None:
    """The DuckDB shell (duckdb-cli, installed with caltrail) opens the lake with all views
    right after a plain ingest (nothing kept yet: the shell computes what it needs)."""
    import subprocess

    from caltrail.pipeline.shell import duckdb_cli

    lake = tmp_path / "lake"
    ingest([small_inputs], IngestOptions(lake=lake))
    binary = duckdb_cli()
    assert binary, "duckdb-cli is a dependency of caltrail"
    out = subprocess.run(
        [
            binary,
            "-init",
            "lake/caltrail.sql",
            "-csv",
            "-c",
            "select count(*) as n from events; select table_name from information_schema.tables order by 1",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=True,
    ).stdout
    expected_events = one(lake, "select count(*) from events")
    assert f"n\n{expected_events}\n" in out
    for view in ("events", "ingest_files", "parse_errors", "licensing_events", "event_catalog"):
        assert f"\n{view}\n" in out
