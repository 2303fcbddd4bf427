"""Plans (55_plans.sql): cal_recovery and revoke_plan, incl. a plan pushed against the 20% limit."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest

from caltrail.fixtures.simulator import simulate
from caltrail.pipeline.diagnose import dicts, open_case
from caltrail.pipeline.ingest import IngestOptions, ingest
from tests.queries.live_plans import define_plans_live


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("plans")
    out = {}
    # server-problems: an administrator's revocation campaign hits the limit (event 81)
    for name, scenario, seed in (("standard", "standard", 51), ("limit", "server-problems", 52)):
        bundle = base / f"{name}-bundle"
        simulate(bundle, seed=seed, devices=50, days=150, scenario=scenario)
        lake = base / f"{name}-lake"
        ingest([bundle], IngestOptions(lake=lake, tz=ZoneInfo("Europe/Berlin")))
        out[name] = lake
    # the same collection without its key-pack exports: event 81 alone says how many CALs
    # of the version are installed
    files = [
        p for p in sorted((base / "limit-bundle").rglob("*.*"))
        if "KeyPack" not in p.name and p.name != "truth.json"
    ]  # fmt: skip
    lake = base / "no-keypacks-lake"
    ingest(files, IngestOptions(lake=lake, tz=ZoneInfo("Europe/Berlin")))
    out["no-keypacks"] = lake
    return out


def revoked_still_counted(con: duckdb.DuckDBPyConnection) -> list[Any]:
    """Expiry of each CAL already revoked and not yet expired: those seen in licenses, plus
    the ones only the last event 81 counts (expiring 89 days after it)."""
    known = [
        r[0]
        for r in con.execute(
            "select expires_at from licenses where (revoked_at is not null or "
            "revoked_in_snapshot) and expires_at > (select as_of from as_of)"
        ).fetchall()
    ]
    refused = con.execute(
        "select try_cast(data['param3'] as bigint), time_created from licensing_events "
        "where action = 'revoke-refused' order by time_created desc limit 1"
    ).fetchone()
    if refused is not None and refused[0] is not None:
        known += [refused[1] + dt.timedelta(days=89)] * max(refused[0] - len(known), 0)
    return known


def occupied_limit_ok(con: duckdb.DuckDBPyConnection) -> list[tuple[Any, int, int]]:
    """For every planned revocation time: (time, occupied, limit) of its product version.

    Occupied = CALs already revoked and not yet expired (seen in licenses, or only counted
    by the last event 81), plus planned ones revoked by then and not yet expired.
    """
    plan = dicts(con, "select * from revoke_plan where action = 'revoke'")
    known = revoked_still_counted(con)
    out = []
    for t in sorted({r["revoke_on"] for r in plan}):
        active = [e for e in known if e > t]
        active += [r["expires_at"] for r in plan if r["revoke_on"] <= t < r["expires_at"]]
        limit = plan[0]["revoke_limit"]
        out.append((t, len(active), limit))
    return out


def test_recovery_counts_down_to_the_healthy_day(lakes: dict[str, Path]) -> None:
    con = open_case(lakes["standard"])
    rows = dicts(con, "select * from cal_recovery order by day")
    assert rows
    start = con.execute("select count(*) from excess_licenses where counted_now").fetchone()
    assert start is not None
    assert sum(r["back_to_pool"] for r in rows) == start[0]
    # permanent and temporary CALs are counted apart: the pool is healthy when the last
    # excess permanent CAL is back (temporary ones never came from it)
    assert sum(r["back_permanent"] + r["back_temporary"] for r in rows) <= start[0]
    lefts = [r["excess_left"] for r in rows]
    assert lefts == sorted(lefts, reverse=True)
    assert lefts[-1] == 0
    assert [r["excess_left_temporary"] for r in rows][-1] == 0
    healthy = {r["healthy_on"] for r in rows}
    assert len(healthy) == 1
    last_permanent = max((r["day"] for r in rows if r["back_permanent"]), default=rows[0]["day"])
    assert healthy.pop() == last_permanent


def test_plan_revokes_superseded_permanent_cals_oldest_first(lakes: dict[str, Path]) -> None:
    con = open_case(lakes["standard"])
    plan = dicts(con, "select * from revoke_plan")
    assert plan
    keys = [r["license_key"] for r in plan]
    ok = con.execute(
        "select count(*) from licenses where license_key in (select unnest($k)) "
        "and excess_by_name and cal_type = 'permanent' and counted_now",
        {"k": keys},
    ).fetchone()
    assert ok == (len(keys),)
    assert all(r["cause"] != "duplicate-names" for r in plan)
    first = [r for r in plan if r["batch"] == 1]
    later = [r for r in plan if r["batch"] is not None and r["batch"] > 1]
    if first and later:
        # within the allowance, the oldest go first
        assert max(r["issued_at"] for r in first) <= min(r["issued_at"] for r in later)
        assert all(r["next_batch_on"] is not None for r in first)


@pytest.mark.parametrize("installed", [500, 60, 20, 7])
def test_plan_never_exceeds_the_allowance(lakes: dict[str, Path], installed: int) -> None:
    """Shrink the installed pool (a temp table shadows the cal_pool view) so hundreds of
    excess CALs and the already-revoked ones compete for a handful of slots."""
    con = open_case(lakes["limit"])
    con.execute(
        "create or replace temp table cal_pool as "
        "select * replace ($n::hugeint as installed) from main.cal_pool",
        {"n": installed},
    )
    define_plans_live(con)
    checks = occupied_limit_ok(con)
    limit = math.floor(installed * 0.2)
    revoked = con.execute(
        "select count(*) from licenses where revoked_at is not null or revoked_in_snapshot"
    ).fetchone()
    assert revoked is not None
    assert revoked[0] > 0  # the campaign revoked some: they count against the allowance
    for t, occupied, plan_limit in checks:
        assert plan_limit == limit
        assert occupied <= limit, (t, occupied, limit)
    planned = con.execute("select count(*) from revoke_plan where action = 'revoke'").fetchone()
    assert planned is not None
    if limit > 0:
        assert planned[0] > 0
    else:
        assert planned[0] == 0


def test_first_batch_waits_for_the_refused_revocations(lakes: dict[str, Path]) -> None:
    con = open_case(lakes["limit"])
    refused = con.execute(
        "select count(*) from licensing_events where action = 'revoke-refused'"
    ).fetchone()
    assert refused is not None
    assert refused[0] > 0
    for _, occupied, limit in occupied_limit_ok(con):
        assert occupied <= limit


def step_by_step_plan(
    active: list[dt.datetime], t0: dt.datetime, limit: int, expiries: list[dt.datetime]
) -> list[tuple[dt.datetime, str, int]]:
    """The plan's rule played one candidate at a time (the recursive form the view replaced):
    each candidate's slot is the earliest time, not before the previous slot, at which fewer
    than `limit` revoked CALs are still inside their validity. Returns (slot, action,
    occupied_after) per candidate."""
    out = []
    slot = t0
    active = [e for e in active if e > t0]
    for expires in expiries:
        alive = sorted(e for e in active if e > slot)
        if len(alive) >= limit:
            slot = alive[len(alive) - limit]
        active = [e for e in active if e > slot]
        if slot < expires:
            active.append(expires)
            out.append((slot, "revoke", len(active)))
        else:
            out.append((slot, "expires-first", len(active)))
    return out


@pytest.mark.parametrize("installed", [60, 20, 7])
def test_plan_equals_the_step_by_step_rule(lakes: dict[str, Path], installed: int) -> None:
    """The view computes every slot at once (k-th smallest of a growing prefix); it must give
    exactly the slots, actions and occupancy of playing the rule candidate by candidate."""
    con = open_case(lakes["limit"])
    con.execute(
        "create or replace temp table cal_pool as "
        "select * replace ($n::hugeint as installed) from main.cal_pool",
        {"n": installed},
    )
    define_plans_live(con)
    limit = math.floor(installed * 0.2)
    plan = dicts(con, "select * from revoke_plan order by issued_at, license_key")
    t0 = con.execute("select as_of from as_of").fetchone()[0]  # type: ignore[index]
    known = revoked_still_counted(con)
    expected = step_by_step_plan(known, t0, limit, [r["expires_at"] for r in plan])
    assert len(plan) > limit  # the limit binds
    got = [(r["revoke_on"] if r["action"] == "revoke" else None, r["action"]) for r in plan]
    for (slot, action, occupied), row, (revoke_on, got_action) in zip(
        expected, plan, got, strict=True
    ):
        assert got_action == action
        assert row["occupied_after"] == occupied
        if action == "revoke":
            assert revoke_on is not None
            assert revoke_on >= slot
            assert revoke_on.date() == slot.date()


def test_event_81_gives_the_allowance_without_key_packs(lakes: dict[str, Path]) -> None:
    """No key-pack export collected: the installed count of the version's last event 81
    makes its allowance (no plan at all before), its revoked count occupies it until the
    date the event gives (the first) and the longest validity (the others)."""
    con = open_case(lakes["no-keypacks"])
    pools = dicts(con, "select * from revoke_pools")
    (refused,) = dicts(
        con,
        "select arg_max(try_cast(data['param4'] as bigint), time_created) as installed, "
        "arg_max(try_cast(data['param3'] as bigint), time_created) as revoked "
        "from licensing_events where action = 'revoke-refused'",
    )
    assert [(p["installed_from"], p["installed"]) for p in pools] == [
        ("event 81", refused["installed"])
    ]
    plan = dicts(con, "select * from revoke_plan where action = 'revoke'")
    assert plan
    assert {r["revoke_limit"] for r in plan} == {math.floor(refused["installed"] * 0.2)}
    assert all(r["occupied_after"] <= r["revoke_limit"] for r in plan)
    (refusal,) = dicts(con, "select * from revoke_refusals")
    assert refusal["allowed_after"] is not None
    occupied = dicts(con, "select expires_at from revoke_occupied order by expires_at")
    assert len(occupied) >= refused["revoked"]
    # with the key packs, the same lake plans against their installed count
    con = open_case(lakes["limit"])
    assert {p["installed_from"] for p in dicts(con, "select * from revoke_pools")} == {"key packs"}
