"""`caltrail export`: what a SIEM takes as it is.

- ECS: every field of every document (events, CAL facts, findings) is one of the ECS or
  Winlogbeat fields declared in pipeline/export_fields.csv, with a value of its declared type,
  or under caltrail.*; the required fields are there; event.kind is one ECS allows.
- Timesketch: every line has the importer's required fields (message, datetime in ISO 8601,
  timestamp_desc), and timestamp is datetime in microseconds.
- CSV: the fixed header, one row per document.
- --from/--to select the rows of the window; findings keep their id across runs and across
  lakes read from the same files; the command writes a file whole, or to stdout.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from caltrail.fixtures.simulator import simulate
from caltrail.pipeline import export
from caltrail.pipeline.cli import app
from caltrail.pipeline.diagnose import open_case
from caltrail.pipeline.ingest import IngestOptions, ingest

runner = CliRunner(env={"NO_COLOR": "1"})
ECS_KINDS = {"alert", "enrichment", "event", "metric", "state", "pipeline_error", "signal"}


def _fields(fmt: str) -> dict[str, dict[str, str]]:
    with open(export.FIELDS_FILE, encoding="utf-8", newline="") as handle:
        return {r["field"]: r for r in csv.DictReader(handle) if r["format"] == fmt}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fleet")
    simulate(folder / "sim", seed=4, devices=24, days=45, trace_days=3, session_log_days=5)
    return folder / "sim"


@pytest.fixture(scope="module")
def lake(fleet: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("lake") / "lake"
    ingest([fleet], IngestOptions(lake=path))
    return path


@pytest.fixture(scope="module")
def con(lake: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = open_case(lake)
    yield connection
    connection.close()


def _export(con: duckdb.DuckDBPyConnection, what: str, fmt: str, **window: Any) -> str:
    out = io.StringIO()
    export.write_export(con, what, fmt, out, **window)
    return out.getvalue()


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def _is_date(value: Any) -> bool:
    if not isinstance(value, str) or not value.endswith("Z"):
        return False
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None


def _of_type(value: Any, kind: str) -> bool:
    values = value if isinstance(value, list) and kind != "object" else [value]
    checks = {
        "date": _is_date,
        "keyword": lambda v: isinstance(v, str) and v != "",
        "match_only_text": lambda v: isinstance(v, str),
        "text": lambda v: isinstance(v, str) and v != "",
        "long": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
    }
    return bool(values) and all(checks[kind](v) for v in values)


@pytest.mark.parametrize("what", export.WHATS)
def test_ecs_documents_hold_to_the_field_definitions(
    con: duckdb.DuckDBPyConnection, what: str
) -> None:
    fields = _fields("ecs")
    docs = _lines(_export(con, what, "ecs"))
    assert len(docs) > 5
    used: set[str] = set()
    for doc in docs:
        flat = export.flatten(doc)
        for name in (f for f, row in fields.items() if row["required"] == "yes"):
            assert name in flat, (name, doc)
        assert doc["ecs"]["version"] == export.ECS_VERSION
        assert doc["event"]["kind"] in ECS_KINDS
        for name, value in flat.items():
            if name.startswith("caltrail."):
                continue
            assert name in fields, f"{name} is not a declared ECS/Winlogbeat field ({what})"
            assert _of_type(value, fields[name]["type"]), (name, value, fields[name]["type"])
            used.add(name)
    expected = {
        "events": {
            "event.code",
            "event.provider",
            "host.name",
            "winlog.channel",
            "winlog.event_id",
        },
        "cal-facts": {"event.action", "host.name", "related.hosts"},
        "findings": {"event.id", "event.reason", "rule.name"},
    }[what]
    assert expected <= used


@pytest.mark.parametrize("what", export.WHATS)
def test_timesketch_lines_have_the_importers_required_fields(
    con: duckdb.DuckDBPyConnection, what: str
) -> None:
    fields = _fields("timesketch")
    required = [f for f, row in fields.items() if row["required"] == "yes"]
    assert sorted(required) == ["datetime", "message", "timestamp_desc"]
    lines = _lines(_export(con, what, "timesketch"))
    assert len(lines) == len(_lines(_export(con, what, "ecs")))
    for line in lines:
        for name in required:
            assert _of_type(line[name], fields[name]["type"]), (name, line)
        stamp = dt.datetime.fromisoformat(line["datetime"].replace("Z", "+00:00"))
        assert (
            line["timestamp"] == int(stamp.timestamp() * 1_000_000)
            or abs(line["timestamp"] - stamp.timestamp() * 1_000_000) < 1
        )
        assert all("." not in key for key in line)  # flat names a timeline shows as columns


@pytest.mark.parametrize("what", export.WHATS)
def test_csv_has_a_fixed_header_and_a_row_per_document(
    con: duckdb.DuckDBPyConnection, what: str
) -> None:
    rows = list(csv.reader(io.StringIO(_export(con, what, "csv"))))
    assert rows[0] == export.csv_columns(what)
    assert "@timestamp" in rows[0]
    docs = _lines(_export(con, what, "ecs"))
    assert len(rows) - 1 == len(docs)
    stamp = rows[0].index("@timestamp")
    assert [r[stamp] for r in rows[1:]] == [d["@timestamp"] for d in docs]


def test_window_selects_the_rows_between_from_and_to(con: duckdb.DuckDBPyConnection) -> None:
    start = dt.datetime(2025, 3, 20, tzinfo=dt.UTC)
    end = dt.datetime(2025, 4, 1, tzinfo=dt.UTC)
    expected = con.execute(
        "select count(*) from events where time_created >= $s and time_created < $e",
        {"s": start, "e": end},
    ).fetchall()[0]
    docs = _lines(_export(con, "events", "ecs", start=start, end=end))
    assert expected is not None
    assert len(docs) == expected[0] > 0
    assert all(start.isoformat()[:10] <= d["@timestamp"][:10] < "2025-04-01" for d in docs)
    facts = _lines(_export(con, "cal-facts", "ecs", start=start, end=end))
    assert 0 < len(facts) < len(_lines(_export(con, "cal-facts", "ecs")))


def test_finding_ids_are_stable_across_runs_and_lakes(
    con: duckdb.DuckDBPyConnection, fleet: Path, tmp_path: Path
) -> None:
    first = {
        d["event"]["id"]: d["caltrail"]["finding"] for d in _lines(_export(con, "findings", "ecs"))
    }
    assert len(first) == len(_lines(_export(con, "findings", "ecs")))  # one id per finding
    again = {d["event"]["id"] for d in _lines(_export(con, "findings", "ecs"))}
    assert again == set(first)
    other = tmp_path / "other"
    ingest([fleet], IngestOptions(lake=other))
    with open_case(other) as second:
        ids = {d["event"]["id"] for d in _lines(_export(second, "findings", "ecs"))}
    assert ids == set(first)
    # the id follows the evidence: the same finding named by other rows is another alert
    cause, subject = next((f["cause"], f["subject"]) for f in first.values())
    changed = con.execute(
        "select sha256(concat_ws(chr(31), cause, subject_kind, subject, 'other evidence')) "
        "from finding_exports where cause = $c and subject = $s",
        {"c": cause, "s": subject},
    ).fetchall()[0]
    assert changed is not None
    assert changed[0] not in first


def test_cli_writes_a_whole_file_or_stdout(lake: Path, tmp_path: Path) -> None:
    target = tmp_path / "findings.ndjson"
    done = runner.invoke(
        app, ["export", "-f", "ecs", "--what", "findings", "--out", str(target), "-l", str(lake)]
    )
    assert done.exit_code == 0, done.output
    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines
    assert all(json.loads(line)["event"]["kind"] == "alert" for line in lines)
    assert f"{len(lines)} findings written to {target}" in done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["findings.ndjson"]  # no temporary left
    piped = runner.invoke(
        app,
        [
            "export",
            "-f",
            "timesketch",
            "--what",
            "events",
            "--out",
            "-",
            "-l",
            str(lake),
            "--from",
            "2025-03-20",
            "--to",
            "2025-04-01",
        ],
    )
    assert piped.exit_code == 0
    assert all("timestamp_desc" in json.loads(line) for line in piped.stdout.splitlines())
    bad = runner.invoke(
        app, ["export", "-f", "xml", "--what", "events", "--out", "-", "-l", str(lake)]
    )
    assert bad.exit_code == 2
    missing = runner.invoke(
        app, ["export", "-f", "csv", "--what", "events", "--out", "-", "-l", str(tmp_path / "no")]
    )
    assert missing.exit_code == 1
    (line,) = missing.output.strip().splitlines()
    assert line.startswith("caltrail: error: ")
    assert "is not a caltrail lake" in line
