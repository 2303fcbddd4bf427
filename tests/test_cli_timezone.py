"""Time zones cannot shift a case silently: every file read in an assumed zone is named in
the summary; the licensing facts that zone-less sources and the EVTX logs (UTC) both name
show which --tz fits (said, and used with --tz auto); an ingest in another zone than the
lake's earlier files says so; `run --force` reads files again."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from caltrail.fixtures.simulator import simulate
from caltrail.parsers.base import ParseOptions
from caltrail.pipeline import timezone_check
from caltrail.pipeline.cli import app

runner = CliRunner(env={"NO_COLOR": "1", "COLUMNS": "200"})


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small fleet whose trace text and file-name times are Europe/Berlin wall clock."""
    out = tmp_path_factory.mktemp("tz") / "bundle"
    simulate(out, seed=5, devices=12, days=60, scenario="clean", tz="Europe/Berlin")
    return out


def ingest(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, ["ingest", *args])
    return result.exit_code, result.stdout, result.stderr


def trace_times(lake: Path) -> list[str]:
    result = runner.invoke(
        app, ["sql", "select ts from trace_events order by ts", "--lake", str(lake), "-f", "csv"]
    )
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()[1:]


def test_an_assumed_zone_is_named_and_the_zone_that_fits_is_said(
    bundle: Path, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    code, out, err = ingest(str(bundle), "--lake", str(lake))
    assert code == 0, err
    assert "read times written without a zone in UTC (assumed: --tz not given)" in out
    # the count line says so too: no bare "0 warnings" above the list
    assert "0 record warnings; 4 files read in an assumed zone (below)" in out
    assert "(trace text has no zone)" in out
    assert "! Time zone: the times read in UTC fit Europe/Berlin" in out
    assert "--tz Europe/Berlin --force (or --tz auto)" in out
    # the offsets seen are named (summer and winter time in the 60 days simulated)
    assert "line up with the EVTX logs in it (UTC+0" in out
    code, out, _ = ingest(str(bundle), "--lake", str(tmp_path / "json"), "--json")
    summary = json.loads(out)
    assert summary["zone"] == "UTC (assumed: --tz not given)"
    assert any(f["what"] == "trace text has no zone" for f in summary["zone_assumed"])
    check = summary["time_zone"]["check"]
    assert check["best_zone"] == "Europe/Berlin"
    assert check["decided"]
    assert not check["fits"]
    assert check["best_aligned"] > check["aligned_as_read"]


def test_tz_auto_reads_those_files_again_in_the_zone_that_fits(
    bundle: Path, tmp_path: Path
) -> None:
    auto, explicit = tmp_path / "auto", tmp_path / "explicit"
    code, out, err = ingest(str(bundle), "--lake", str(auto), "--tz", "auto")
    assert code == 0, err
    assert "--tz auto read the" in out
    assert "again in Europe/Berlin" in out
    code, out, err = ingest(str(bundle), "--lake", str(explicit), "--tz", "Europe/Berlin")
    assert code == 0, err
    assert "Time zone: Europe/Berlin fits" in out
    assert "!" not in out.split("Elapsed")[-1]
    assert trace_times(auto) == trace_times(explicit)
    notes = runner.invoke(
        app,
        # (the latest run by when it finished: two runs' ids within one second do not sort)
        ["sql", "select distinct notes['tz'] from ingest_files where notes['zone_assumed'] "
         "is not null and run_id = (select arg_max(run_id, finished) from ingest_files)",
         "--lake", str(auto), "-f", "csv"],
    )  # fmt: skip
    assert "Europe/Berlin (from --tz auto:" in notes.stdout


def test_tz_auto_without_evtx_logs_keeps_utc_and_says_why(bundle: Path, tmp_path: Path) -> None:
    trace = bundle / "LS01" / "LS01_lserver_trace.txt"
    code, out, err = ingest(str(trace), "--lake", str(tmp_path / "lake"), "--tz", "auto")
    assert code == 0, err
    # the assumption is named as --tz auto's, not as "--tz not given"
    assert "in UTC (assumed: --tz auto, unless the EVTX logs show another zone)" in out
    assert "has an EVTX event to compare with; the zone cannot be checked" in out
    assert "--tz auto kept UTC" in out


def test_another_zone_than_the_lake_holds_is_said(bundle: Path, tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    ingest(str(bundle), "--lake", str(lake), "--tz", "Europe/Berlin")
    code, out, _ = ingest(str(bundle), "--lake", str(lake), "--tz", "UTC")
    assert code == 0
    assert "times without a zone are read in UTC now" in out
    assert "in Europe/Berlin" in out
    assert "--tz UTC --force" in out


def test_run_force_reads_the_files_again_in_the_new_zone(bundle: Path, tmp_path: Path) -> None:
    lake, report = tmp_path / "lake", tmp_path / "case.html"
    first = runner.invoke(app, ["run", str(bundle), "--lake", str(lake), "--out", str(report)])
    assert first.exit_code == 0, first.output
    before = trace_times(lake)
    again = runner.invoke(
        app, ["run", str(bundle), "--lake", str(lake), "--out", str(report), "--tz", "Europe/Berlin"]
    )
    assert "Files: 0 new" in again.stdout  # without --force nothing is read again...
    assert trace_times(lake) == before
    forced = runner.invoke(
        app,
        ["run", str(bundle), "--lake", str(lake), "--out", str(report),
         "--tz", "Europe/Berlin", "--force"],
    )  # fmt: skip
    assert forced.exit_code == 0, forced.output
    assert "Files: 0 new" not in forced.stdout
    after = trace_times(lake)
    assert len(after) == len(before)
    assert after != before  # an hour or two earlier in UTC


def test_a_zone_with_a_half_hour_offset(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    simulate(bundle, seed=9, devices=12, days=60, scenario="clean", tz="Asia/Kolkata")
    lake = tmp_path / "lake"
    code, _, err = ingest(str(bundle), "--lake", str(lake))
    assert code == 0, err
    con = timezone_check.open_check(lake)
    try:
        check = timezone_check.check(con)
    finally:
        con.close()
    assert check is not None
    assert check.best == "Asia/Kolkata"
    assert check.offsets[0][0] == 330
    assert "UTC+05:30" in check.sentence()


def test_the_sentence_names_the_zone_offsets_not_stray_pairs() -> None:
    """A few facts split between summer and winter time still name both offsets; a pair or
    two that line up by a near coincidence of times are not named."""
    few = timezone_check.ZoneCheck(
        read_in=["UTC"], facts=15, paired=15, best="Europe/Berlin", best_aligned=15,
        offsets=[(120, 9), (60, 6)],
    )  # fmt: skip
    assert "in it (UTC+02:00 / UTC+01:00), 0 in UTC" in few.sentence()
    many = timezone_check.ZoneCheck(
        read_in=["UTC"], facts=300, paired=300, best="America/New_York", best_aligned=298,
        offsets=[(-300, 298), (15, 1), (-15, 1)],
    )  # fmt: skip
    assert "in it (UTC-05:00), 0 in UTC" in many.sentence()


def test_the_zone_travels_to_worker_processes() -> None:
    options = ParseOptions(tz=ZoneInfo("Europe/Berlin"))
    assert pickle.loads(pickle.dumps(options)).tz == ZoneInfo("Europe/Berlin")


def test_simulate_says_which_tz_its_bundle_needs(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["simulate", "--out", str(tmp_path / "sim"), "--devices", "8", "--days", "14",
         "--scenario", "clean", "--tz", "America/Denver"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "--tz America/Denver" in result.stdout


# The pairs as first written: every EVTX licensing event read, none set aside by its time.
EVERY_EVENT_PAIRS = """
with evtx as (
    select time_created, timezone('UTC', time_created) as utc_wall, client_name, action
    from licensing_events
    where provider_family = 'licensing' and action in ('issued', 'renewed', 'upgraded', 'revoked')
        and client_name is not null and time_created is not null
),
pairs as (
    select z.*, e.time_created as utc, epoch(z.wall - e.utc_wall) / 60.0 as minutes
    from zone_less_facts as z
    join evtx as e
        on e.client_name = z.client_name and e.action = z.action
        and e.utc_wall between z.wall - interval 15 hour and z.wall + interval 15 hour
    where z.run_id = $run
)
select * exclude (minutes), (round(minutes / 15) * 15)::integer as offset_minutes
from pairs
where abs(minutes - round(minutes / 15) * 15) <= 2
order by all
"""


def test_a_runs_pairs_are_the_lakes_pairs_of_that_run(bundle: Path, tmp_path: Path) -> None:
    # the check reads one run's pairs, with the EVTX events taken by the span of its facts:
    # the same pairs as those of the whole lake, of that run
    lake = tmp_path / "lake"
    other = tmp_path / "other"  # a second site: other files, its own run
    simulate(other, seed=6, devices=8, days=30, scenario="clean", tz="Europe/Berlin", site="HAM")
    ingest(str(bundle), "--lake", str(lake))
    ingest(str(other), "--lake", str(lake), "--tz", "Europe/Berlin")
    con = timezone_check.open_check(lake)
    runs = [r for (r,) in con.execute("select distinct run_id from zone_less_facts").fetchall()]
    assert len(runs) == 2
    for run in runs:
        own = con.execute(
            "select * from zone_offset_pairs_of($run) order by all", {"run": run}
        ).fetchall()
        lake_wide = con.execute(
            "select * from zone_offset_pairs where run_id = $run order by all", {"run": run}
        ).fetchall()
        every_event = con.execute(EVERY_EVENT_PAIRS, {"run": run}).fetchall()
        assert own
        assert own == lake_wide == every_event
    con.close()
