"""`caltrail search`: EVTX and trace records by event id, provider, computer, text, regular
expression and time window, in the table, CSV and JSON formats; every value bound."""

from __future__ import annotations

import json
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from caltrail.pipeline.cli import app
from caltrail.pipeline.ingest import IngestOptions, ingest

runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "160"})
SAMPLES = Path(__file__).resolve().parents[1] / "caltrail" / "fixtures" / "samples"


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("search") / "lake"
    ingest([SAMPLES], IngestOptions(lake=path, tz=ZoneInfo("Europe/Berlin")))
    return path


def search(lake: Path, *args: str) -> list[dict[str, object]]:
    result = runner.invoke(app, ["search", *args, "--lake", str(lake), "-f", "json"])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_everything_without_a_filter_oldest_first(lake: Path) -> None:
    rows = search(lake)
    sources = {r["source"] for r in rows}
    assert sources == {"evtx", "trace"}
    times = [r["ts"] for r in rows if r["ts"] is not None]
    assert times == sorted(times)
    count = runner.invoke(
        app,
        ["sql", "select (select count(*) from events) + (select count(*) from trace_events)",
         "--lake", str(lake), "-f", "csv"],
    )  # fmt: skip
    assert len(rows) == int(count.stdout.split()[-1])


def test_filters_each_match_what_they_say(lake: Path) -> None:
    every = search(lake)
    licensing = search(lake, "--provider", "LICENSING", "-e", "4146")
    assert licensing
    assert all(
        r["event_id"] == 4146 and "licensing" in str(r["provider"]).lower() for r in licensing
    )
    name = next(str(r["computer"]) for r in every if r["computer"])
    short = name.split(".")[0].lower()
    on_it = search(lake, "--computer", short)
    assert on_it
    assert {r["computer"] for r in on_it} == {name}
    assert all(r["source"] == "evtx" for r in on_it)
    trace = search(lake, "--source", "trace")
    assert trace
    assert {r["source"] for r in trace} == {"trace"}


def test_text_and_regex(lake: Path) -> None:
    every = search(lake)
    message = next(str(r["text"]) for r in every if r["source"] == "trace" and r["text"])
    word = message.split()[0]
    hits = search(lake, word.upper())
    assert hits
    assert all(word.lower() in str(r["text"]).lower() for r in hits)
    by_regex = search(lake, "--regex", "^" + word.replace(".", r"\."))
    assert by_regex
    assert all(str(r["text"]).startswith(word) for r in by_regex)
    hostile = search(lake, "'; drop view events; --")
    assert hostile == []
    assert search(lake)  # the lake is unchanged


def test_time_window(lake: Path) -> None:
    every = search(lake)
    days = sorted({str(r["ts"])[:10] for r in every if r["ts"]})
    day = days[len(days) // 2]
    inside = search(lake, "--from", day, "--to", day)
    assert inside
    assert {str(r["ts"])[:10] for r in inside} == {day}
    assert len(inside) == sum(1 for r in every if str(r["ts"])[:10] == day)


def test_formats_and_no_match(lake: Path, tmp_path: Path) -> None:
    table = runner.invoke(app, ["search", "-e", "4146", "--lake", str(lake), "--max-rows", "4"])
    assert table.exit_code == 0
    assert "(4 shown; --max-rows 0 shows all)" in table.stdout
    target = tmp_path / "hits" / "hits.csv"
    csv_out = runner.invoke(
        app, ["search", "-e", "4146", "--lake", str(lake), "-f", "csv", "-o", str(target)]
    )
    assert csv_out.exit_code == 0
    assert target.read_text(encoding="utf-8").startswith(
        "ts,source,computer,provider,event_id,text,"
    )
    none = runner.invoke(app, ["search", "no such text anywhere 42", "--lake", str(lake)])
    assert none.exit_code == 0
    assert "No record matches." in none.stderr
    bad = runner.invoke(app, ["search", "--regex", "(", "--lake", str(lake)])
    assert bad.exit_code == 2
    assert "not a regular expression" in bad.stderr
