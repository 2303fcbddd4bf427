"""Diagnosis SQL (40 cal_events ... 50 findings) against simulated fleets with known truth."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from caltrail.fixtures.simulator import simulate
from caltrail.parsers.hwid import normalize_hwid, render_dwords, render_registry_hex, render_wmi
from caltrail.pipeline.diagnose import findings, open_case, timeline
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.session import connect
from tools.scoring import evaluate

FLEETS = {
    # name: (scenario, seed, devices, days)
    "standard-a": ("standard", 41, 50, 150),
    "standard-b": ("standard", 43, 60, 120),
    "clean": ("clean", 42, 40, 120),
    "server": ("server-problems", 44, 45, 150),
}


class Case:
    def __init__(self, truth: dict[str, Any], lake: Path) -> None:
        self.truth = truth
        self.lake = lake
        self.con = open_case(lake)
        self.found = findings(self.con)


def _build(base: Path, name: str, drop: tuple[str, ...] = ()) -> Case:
    scenario, seed, devices, days = FLEETS[name.split(":")[0]]
    bundle = base / f"{name.replace(':', '-')}-bundle"
    result = simulate(bundle, seed=seed, devices=devices, days=days, scenario=scenario)
    for rel in result.files:
        if any(part in rel for part in drop):
            (bundle / rel).unlink()
    lake = base / f"{name.replace(':', '-')}-lake"
    ingest([bundle], IngestOptions(lake=lake, tz=ZoneInfo("Europe/Berlin")))
    shutil.rmtree(bundle)
    return Case(result.truth, lake)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    base = tmp_path_factory.mktemp("diagnosis")
    out = {name: _build(base, name) for name in FLEETS}
    # the same standard fleet with only the WMI snapshot, and with only the event logs
    out["snapshot-only"] = _build(base, "standard-a:wmi", drop=(".evtx", "trace", "clients/"))
    out["events-only"] = _build(base, "standard-a:evtx", drop=(".csv", "trace", "clients/"))
    return out


@pytest.mark.parametrize("name", list(FLEETS))
def test_findings_match_truth(cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    res = evaluate(case.truth, case.found)
    assert res.found == res.expected
    assert res.server_found == res.server_expected
    assert res.normal_flagged == []


def test_clean_fleet_has_no_device_finding(cases: dict[str, Case]) -> None:
    assert [f for f in cases["clean"].found if f["subject_kind"] != "server"] == []


@pytest.mark.parametrize("name", ["standard-a", "standard-b"])
def test_excess_counts_close_to_truth(cases: dict[str, Case], name: str) -> None:
    case = cases[name]
    res = evaluate(case.truth, case.found)
    for cause, subject, expected, got in res.excess:
        assert got is not None
        assert abs(got - expected) <= max(2, expected // 50), (cause, subject, expected, got)


def test_every_finding_has_evidence_fix_and_confidence(cases: dict[str, Case]) -> None:
    for f in cases["standard-a"].found:
        assert f["fix"], f
        assert f["confidence"] in ("high", "medium", "low")
        assert f["reason"]
        assert f["sources"]
        assert f["first_seen"] <= f["last_seen"]
        if f["subject_kind"] != "server":
            assert f["evidence_rows"], f
            assert all(r["source_path"] for r in f["evidence_rows"])


def test_duplicate_names_are_not_waste(cases: dict[str, Case]) -> None:
    dup = [f for f in cases["standard-a"].found if f["cause"] == "duplicate-names"]
    assert dup
    assert all(f["excess_cals"] == 0 for f in dup)
    con = cases["standard-a"].con
    waste = con.execute(
        "select waste from cause_catalog where cause = 'duplicate-names'"
    ).fetchone()
    assert waste == (False,)


def test_linked_facts_are_not_double_counted(cases: dict[str, Case]) -> None:
    con = cases["standard-a"].con
    # every EVTX issuance event that has a trace twin shares its license
    unlinked = con.execute(
        "select count(*) from cal_events where source = 'evtx' and fact = 'issued' "
        "and license_key is null"
    ).fetchone()
    assert unlinked == (0,)
    n_licenses, n_keys = con.execute(
        "select count(*), count(distinct license_key) from licenses"
    ).fetchone()  # type: ignore[misc]
    assert n_licenses == n_keys
    truth_cals = len(cases["standard-a"].truth["cals"])
    # a license seen in the trace and the snapshot is one row; truth also lists CALs that
    # expired before the window and left no trace
    assert n_licenses <= truth_cals


def test_issued_licenses_dedup_snapshots(cases: dict[str, Case]) -> None:
    con = cases["standard-a"].con
    rows, distinct = con.execute(
        "select count(*), count(distinct (keypack_id, license_id)) from issued_license_rows"
    ).fetchone()  # type: ignore[misc]
    (deduped,) = con.execute("select count(*) from issued_licenses").fetchone()  # type: ignore[misc]
    assert deduped == distinct <= rows


def test_timelines_bind_user_values(cases: dict[str, Case]) -> None:
    con = cases["standard-a"].con
    cloned = next(f for f in cases["standard-a"].found if f["cause"] == "cloned")
    hwid = cloned["subject"]
    upper = "-".join([hwid[:8].upper(), hwid[8:]])
    columns, rows = timeline(con, hwid=upper)
    assert rows
    assert "name_changed" in columns
    assert any(r[columns.index("name_changed")] for r in rows)
    vdi = next(f for f in cases["standard-a"].found if f["cause"] == "vdi")
    columns, rows = timeline(con, name=vdi["subject"].lower() + ".contoso.local")
    assert rows
    assert any(r[columns.index("hwid_changed")] for r in rows)
    # a hostile value is only ever a bound parameter
    columns, rows = timeline(con, name="x'); drop view findings; --")
    assert rows == []
    assert con.execute("select count(*) from findings").fetchone()


def test_timeline_reads_a_hwid_in_any_rendering_the_parsers_read(cases: dict[str, Case]) -> None:
    """One canonicaliser (parsers/hwid.py) for user input and logs alike: a HWID typed as
    TSCTST prints it, as a registry export or as WMI renders it gives the same history."""
    con = cases["standard-a"].con
    hwid = next(f for f in cases["standard-a"].found if f["cause"] == "cloned")["subject"]
    _, canonical_rows = timeline(con, hwid=hwid)
    assert canonical_rows
    for rendering in (render_dwords(hwid), render_registry_hex(hwid), render_wmi(hwid)):
        assert timeline(con, hwid=rendering)[1] == canonical_rows, rendering
    with pytest.raises(ValueError, match="not a HWID"):
        timeline(con, hwid="nope")


def test_store_app_macro_agrees_with_the_parsers_flag(cases: dict[str, Case]) -> None:
    """The SQL's Store-app test (hwid_store_app) and parsers/hwid.py's store_app_ff flag
    say the same of every canonical HWID, whichever rendering made it start with ff."""
    con = cases["standard-a"].con
    samples = [
        "ff" + "00" * 19,
        "020000ff" + "11" * 16,
        "02000000" + "ff" * 16,
        "000000ff" + "ab" * 16,
        "ffffffff" + "00" * 16,
        "02000000c0b24e7d10a9ff372b54eb75f67a7087",
    ]
    got = dict(
        con.execute(
            "select h, hwid_store_app(h) from unnest($hs::varchar[]) as t(h)", {"hs": samples}
        ).fetchall()
    )
    for h in samples:
        assert got[h] == (normalize_hwid(bytes.fromhex(h)).flag == "store_app_ff"), h


def test_devices_and_names_views(cases: dict[str, Case]) -> None:
    con = cases["standard-a"].con
    shared = con.execute(
        "select hwid, name_count from devices where name_count > 1 order by hwid"
    ).fetchall()
    expected = sorted(
        (f["subject"], len(f["names"]))
        for f in cases["standard-a"].truth["expected_findings"]
        if f["subject_kind"] == "hwid"
    )
    assert shared == expected
    churn = con.execute("select client_name from names where hwid_count > 2").fetchall()
    assert {r[0] for r in churn} >= {
        f["subject"].upper()
        for f in cases["standard-a"].truth["expected_findings"]
        if f["cause"] in ("vdi", "script")
    }


def test_snapshot_only_case(cases: dict[str, Case]) -> None:
    found = cases["snapshot-only"].found
    assert found
    for f in found:
        assert f["sources"] == ["wmi"]
    causes = {f["cause"] for f in found}
    assert {"cloned", "freerdp"} <= causes


def test_events_only_case_says_what_it_cannot_tell(cases: dict[str, Case]) -> None:
    found = [f for f in cases["events-only"].found if f["subject_kind"] != "server"]
    assert found
    assert {f["cause"] for f in found} == {"reissued-without-hwid"}
    for f in found:
        assert "cannot" in f["reason"]
        assert f["excess_cals"] is None
        assert f["confidence"] == "low"


def test_thresholds_are_one_table(cases: dict[str, Case]) -> None:
    con = cases["standard-a"].con
    names = {r[0] for r in con.execute("select name from diagnosis_thresholds").fetchall()}
    assert {"link_tolerance_seconds", "revoke_limit_share", "vdi_next_day_share_min"} <= names
    # a NULL HWID matches nothing and leaves the session usable
    assert con.execute("select * from hwid_timeline($h)", {"h": None}).fetchall() == []
    assert con.execute("select count(*) from findings").fetchone()


def test_accuracy_scoring() -> None:
    from tools.scoring import FleetResult, evaluate, score

    r = FleetResult("standard", 1, 10, 20)
    r.expected = {("vdi", "A"), ("cloned", "h1"), ("script", "C")}
    r.found = {("vdi", "A"), ("script", "B"), ("vdi", "C")}
    r.alternative = {("vdi", "C")}
    table = score([r])
    assert table["vdi"] == {
        "tp": 1, "fp": 1, "fn": 0, "alt": 0,
        "precision": 0.5, "recall": 1.0, "recall_with_alt": 1.0,
    }  # fmt: skip
    assert table["cloned"]["recall"] == 0.0
    assert table["script"]["precision"] == 0.0
    # C was found as vdi with script named beside: a miss, recalled with the alternative
    assert (table["script"]["recall"], table["script"]["recall_with_alt"]) == (0.0, 1.0)
    # evaluate: a high finding that is wrong is listed; a right alternative is not wrong
    truth = {
        "scenario": "x", "seed": 1, "devices_requested": 2, "days": 30, "server_problems": [],
        "expected_findings": [
            {"cause": "script", "subject_kind": "name", "subject": "PC-1", "excess_cals": 3},
        ],
        "devices": [{"cause": "normal", "names": [{"name": "PC-2"}], "hwids": []}],
    }  # fmt: skip
    found = [
        {"cause": "vdi", "subject_kind": "name", "subject": "pc-1", "confidence": "medium",
         "alternative_cause": "script", "excess_cals": 3},
        {"cause": "rebuilt", "subject_kind": "name", "subject": "PC-2", "confidence": "high",
         "alternative_cause": None, "excess_cals": 1},
    ]  # fmt: skip
    res = evaluate(truth, found)
    assert res.alternative == {("vdi", "PC-1")}
    assert res.high_wrong == ["rebuilt:PC-2"]
    assert res.normal_flagged == ["rebuilt:PC-2"]
    assert res.wrong == [("rebuilt", "PC-2", "high")]


def test_rebuild_generation_and_end_equal_the_as_of_joins(cases: dict[str, Case]) -> None:
    """The list macros of queries/38_snapshots.sql give what an as-of join on db_rebuilds
    gives: the generation at a time (its server's rebuilds at or before it) and its server's
    first rebuild after it, ties and NULL times included; a fact of an unknown server (NULL)
    counts every server's rebuilds."""
    con = connect(cases["server"].lake, derive=False, through="38_snapshots")
    con.execute(
        "create temp table rebuilds as select server, t as rebuilt_at, "
        "row_number() over (partition by server order by t) as generation "
        "from (select distinct 'LS' || (i % 2) as server, timestamptz '2025-01-01 00:00:00+00' "
        "+ to_hours((hash(i, 'rebuild') % 5000)::integer) as t from range(8) as r(i))"
    )
    con.execute(
        "create temp table times as select case when i % 3 = 0 then null else 'LS' || (i % 2) "
        "end as server, case when i % 50 = 0 then null else timestamptz "
        "'2024-12-01 00:00:00+00' + to_hours((hash(i) % 6000)::integer) end as t "
        "from range(3000) as r(i) union all select server, rebuilt_at from rebuilds"
    )
    con.execute(
        "create temp table any_server as select rebuilt_at, row_number() over "
        "(order by rebuilt_at) as generation from rebuilds"
    )
    by_join = con.execute(
        "select x.server, x.t, coalesce(g.generation, 0), e.rebuilt_at from times as x "
        "asof left join rebuilds as g on x.server = g.server and x.t >= g.rebuilt_at "
        "asof left join rebuilds as e on x.server = e.server and x.t < e.rebuilt_at "
        "where x.server is not null "
        "union all "
        "select x.server, x.t, coalesce(g.generation, 0), e.rebuilt_at from times as x "
        "asof left join any_server as g on x.t >= g.rebuilt_at "
        "asof left join any_server as e on x.t < e.rebuilt_at "
        "where x.server is null order by all"
    ).fetchall()
    by_list = con.execute(
        "select x.server, x.t, rebuild_generation(l.times, x.server, x.t), "
        "rebuild_after(l.times, x.server, x.t) from times as x, "
        "(select list({'server': server, 'at': rebuilt_at} order by rebuilt_at, server) as times "
        "from rebuilds) as l order by all"
    ).fetchall()
    assert by_list == by_join
    assert {row[2] for row in by_list if row[0] is not None} >= {0, 1, 2}
    assert max(row[2] for row in by_list if row[0] is None) > max(
        row[2] for row in by_list if row[0] is not None
    )
