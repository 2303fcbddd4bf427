"""The diagnosis on fleets the first simulator scenarios did not play (the catalogue of
caltrail/fixtures/simulator/catalogue.py): one regression test per case the diagnosis got
wrong, each on a small simulated fleet with the behaviour, collected with the sources named.

Lakes are built once per module (small fleets, few months); several behaviours share a
fleet, as they do in a real collection.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pytest

from caltrail.fixtures.simulator import SimulationResult, simulate
from caltrail.pipeline.diagnose import dicts, findings, open_case
from caltrail.pipeline.ingest import IngestOptions, ingest
from tests.queries.live_plans import define_plans_live
from tools.accuracy import SOURCE_SETS
from tools.scoring import evaluate

MIX = {
    "seed": 31,
    "devices": 45,
    "days": 150,
    "scenario": "standard",
    "causes": {"script": 1, "vdi": 1, "duplicate-names": 1, "cloned": 1, "rebuilt": 1},
    "group_sizes": {"cloned": 3},
    "script_shutdown": 1.0,
    "cause_use": {"script": 0.95, "vdi": 0.55},
    "vdi_boot": "weekly",
    "clone_keep_name": True,
    "renamed": 3,
    "registry_layout": "tss",
    "problems": ("revoke-live",),
    "snapshot_every_days": 7,
}


class Case:
    def __init__(self, truth: dict[str, Any], lake: Path, sources: str) -> None:
        self.truth = truth
        self.lake = lake
        self.con = open_case(lake)
        self.found = findings(self.con)
        self.score = evaluate(truth, self.found, sources)

    def named(self, subject: str) -> list[dict[str, Any]]:
        return [f for f in self.found if f["subject"] == subject]

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        return dicts(self.con, sql, params)


def _lake(base: Path, name: str, bundle: Path, truth: dict[str, Any], sources: str) -> Case:
    drop = SOURCE_SETS[sources]
    files = [
        p
        for p in sorted(bundle.rglob("*"))
        if p.is_file()
        and p.name != "truth.json"
        and not any(part in p.relative_to(bundle).as_posix() for part in drop)
    ]
    lake = base / f"{name}-lake"
    ingest(files, IngestOptions(lake=lake, tz=ZoneInfo(truth["window"]["tz"])))
    return Case(truth, lake, sources)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Case]]:
    base = tmp_path_factory.mktemp("scenarios")
    out: dict[str, Case] = {}
    bundle = base / "mix"
    truth = simulate(bundle, **MIX).truth  # type: ignore[arg-type]
    out["mix"] = _lake(base, "mix", bundle, truth, "all")
    out["mix-snapshots"] = _lake(base, "mix-snapshots", bundle, truth, "snapshots")
    for name, kwargs in (
        ("versions", {"seed": 32, "devices": 45, "days": 150, "scenario": "versions"}),
        (
            "upgrade",
            {
                "seed": 33,
                "devices": 45,
                "days": 150,
                "scenario": "version-upgrade",
                "problems": ("mass-regeneration",),
                "regeneration_share": 0.6,
                "regeneration_db_rebuild": False,
            },
        ),
        (
            "seed",
            {
                "seed": 34,
                "devices": 45,
                "days": 120,
                "scenario": "seed-inputs",
                "problems": ("host-unlicensed",),
            },
        ),
    ):
        bundle = base / name
        truth = simulate(bundle, **kwargs).truth  # type: ignore[arg-type]
        out[name] = _lake(base, name, bundle, truth, "all")
        if name == "seed":  # the seed's exports alone, as its method collects them
            out["seed-snapshots"] = _lake(base, "seed-snapshots", bundle, truth, "snapshots")
        shutil.rmtree(bundle)
    yield out
    for case in out.values():
        case.con.close()


def _truth_name(case: Case, cause: str) -> list[str]:
    return [f["subject"] for f in case.truth["expected_findings"] if f["cause"] == cause]


def _both_ways(found: dict[str, Any], one: str, other: str) -> None:
    assert {found["cause"], found["alternative_cause"]} == {one, other}, found
    assert found["confidence"] != "high"
    assert found["decided_by"]
    assert found["alternative_fix"]


# ---------------------------------------------------------------- 1, 2: VDI and scripts


@pytest.mark.parametrize("lake", ["mix", "mix-snapshots"])
def test_script_at_every_shutdown_is_not_called_vdi_with_confidence(
    cases: dict[str, Case], lake: str
) -> None:
    """A script deleting MSLicensing at every shutdown of a machine used daily leaves what
    a VDI desktop booted daily leaves: both causes named, neither high."""
    case = cases[lake]
    (name,) = _truth_name(case, "script")
    (found,) = case.named(name)
    _both_ways(found, "script", "vdi")
    assert "gpresult" in found["decided_by"]


@pytest.mark.parametrize("lake", ["mix", "mix-snapshots"])
def test_vdi_rebooted_weekly_and_used_on_some_days_is_not_called_a_script_with_confidence(
    cases: dict[str, Case], lake: str
) -> None:
    case = cases[lake]
    (name,) = _truth_name(case, "vdi")
    (found,) = case.named(name)
    _both_ways(found, "vdi", "script")


# ---------------------------------------------------------------- 3: duplicate names


def test_duplicate_names_with_an_export_from_each_machine(cases: dict[str, Case]) -> None:
    """Registry exports are counted per machine (the folder each came from): two machines
    of one name, each with its own HWID, are two machines, not a corrupted store; the plan
    takes none of their CALs."""
    case = cases["mix"]
    (name,) = _truth_name(case, "duplicate-names")
    (found,) = case.named(name)
    assert found["cause"] == "duplicate-names"
    assert found["confidence"] == "high"
    assert found["evidence_counts"]["registry_machines"] == 2
    assert found["excess_cals"] == 0
    assert case.rows("select * from revoke_plan where client_name = $n", n=name) == []


@pytest.mark.parametrize(
    ("earlier_export", "expected"),
    [
        # in a folder of its own: a second machine, as far as the exports go
        ("earlier-run/clients/{name}_MSLicensing.reg", ("duplicate-names", "medium", "rebuilt")),
        # beside the later one: one machine's two exports, not one holding two HWIDs
        ("clients/{name}.reg", ("rebuilt", "high", None)),
    ],
)
def test_an_export_from_before_a_rebuild_decides_nothing_for_sure(
    tmp_path_factory: pytest.TempPathFactory, earlier_export: str, expected: tuple[str, ...]
) -> None:
    """A rebuilt machine collected twice, once before its rebuild and once after. An export
    carries no date. In another folder the two read as two machines, but the older HWID has
    been quiet through its CAL's renewal window: no `high` two machines, `duplicate-names`
    medium with the rebuilt machine as the alternative and what decides. In the same folder
    they are one machine's exports, neither holding two HWIDs: no corrupted store, the
    rebuilt machine it is."""
    base = tmp_path_factory.mktemp("export-before-rebuild")
    bundle = base / "bundle"
    truth = simulate(
        bundle, seed=9, devices=60, days=150, scenario="rebuilt", clients_with_registry=1.0
    ).truth
    exported = {p.name.split("_")[0] for p in (bundle / "clients").glob("*_MSLicensing.reg")}
    device = next(
        d
        for d in truth["devices"]
        if d["cause"] == "rebuilt" and len(d["hwids"]) == 2 and d["names"][0]["name"] in exported
    )
    name = device["names"][0]["name"]
    old, new = (h["hwid"] for h in device["hwids"])
    export = bundle / "clients" / f"{name}_MSLicensing.reg"
    text = export.read_text(encoding="utf-16")

    def as_reg(hwid: str) -> str:
        return ",".join(hwid[i : i + 2] for i in range(0, 40, 2))

    assert as_reg(new) in text
    assert as_reg(old) not in text
    earlier = bundle / earlier_export.format(name=name)
    earlier.parent.mkdir(parents=True, exist_ok=True)
    earlier.write_text(text.replace(as_reg(new), as_reg(old)), encoding="utf-16")
    case = _lake(base, "export-before-rebuild", bundle, truth, "all")
    try:
        (found,) = case.named(name.upper())
        assert found["evidence_counts"]["registry_hwids_one_export"] == 1
        assert (found["cause"], found["confidence"], found["alternative_cause"]) == expected
        if found["cause"] == "duplicate-names":
            assert found["evidence_counts"]["registry_machines"] == 2
            assert "when each registry export was taken" in found["decided_by"]
    finally:
        case.con.close()


def test_duplicate_names_from_snapshots_alone(cases: dict[str, Case]) -> None:
    """From weekly snapshots alone, the first machine's renewal is a later snapshot's moved
    expiry (IssueDate unchanged): its HWID is active after the second one came, two
    machines. Never a rebuilt machine with its live CAL counted as excess."""
    case = cases["mix-snapshots"]
    (name,) = _truth_name(case, "duplicate-names")
    (found,) = case.named(name)
    assert "duplicate-names" in (found["cause"], found["alternative_cause"]), found
    if found["cause"] != "duplicate-names":
        assert found["confidence"] != "high"
    moved = case.rows(
        "select count(*) as n from cal_events where client_name = $n and source = 'wmi' "
        "and fact = 'renewed' and detail like 'the expiry moved%'",
        n=name,
    )
    assert moved[0]["n"] > 0
    planned = case.rows(
        "select * from revoke_plan where client_name = $n and action = 'revoke'", n=name
    )
    assert planned == []


# ---------------------------------------------------------------- 4: renamed machines


@pytest.mark.parametrize("lake", ["mix", "mix-snapshots"])
def test_renamed_machines_are_not_clones(cases: dict[str, Case], lake: str) -> None:
    case = cases[lake]
    renamed = [d for d in case.truth["devices"] if d["renames"]]
    assert len(renamed) == 3
    subjects = {f["subject"] for f in case.found}
    for dev in renamed:
        assert not {h["hwid"] for h in dev["hwids"]} & subjects
        assert not {n["name"].upper() for n in dev["names"]} & subjects
    assert case.score.normal_flagged == []


def test_a_name_is_taken_from_the_snapshot_that_saw_it(cases: dict[str, Case]) -> None:
    """A license renewed after its machine was renamed: the snapshots before the renewal
    show the old name, the later ones the new; the old name's facts are not back-dated."""
    case = cases["mix-snapshots"]
    moved = case.rows(
        "select license_key, names from licenses where len(names) > 1 and not excess_by_name"
    )
    assert moved
    for lic in moved:
        listed = case.rows(
            "select ts, client_name from cal_events where license_key = $k and fact = 'listed' "
            "order by ts",
            k=lic["license_key"],
        )
        names = [r["client_name"] for r in listed]
        first_new = next(i for i, n in enumerate(names) if n != names[0])
        assert set(names[first_new:]) <= set(lic["names"]) - {names[0]}
        assert names[:first_new] == [names[0]] * first_new


# ---------------------------------------------------------------- 5: identical clones


@pytest.mark.parametrize("lake", ["mix", "mix-snapshots"])
def test_clones_that_kept_hwid_and_name(cases: dict[str, Case], lake: str) -> None:
    case = cases[lake]
    (expected,) = [f for f in case.truth["expected_findings"] if f["cause"] == "cloned"]
    assert len(expected["names"]) == 1
    (found,) = case.named(expected["subject"])
    assert found["cause"] == "cloned"
    assert found["subject_kind"] == "hwid"
    assert abs(found["excess_cals"] - expected["excess_cals"]) <= max(
        2, expected["excess_cals"] // 20
    )
    plan = case.rows("select * from revoke_plan where subject = $s", s=expected["subject"])
    assert any(r["action"] == "revoke" for r in plan)


# ---------------------------------------------------------------- 6: revoked in a snapshot


def test_a_cal_listed_revoked_stops_counting_at_once(cases: dict[str, Case]) -> None:
    """Snapshots only (no event 80, no trace): a CAL a snapshot lists with status 4 counts
    no longer from that snapshot on, and its device's next CAL is not excess."""
    case = cases["mix-snapshots"]
    revoked = case.rows("select * from licenses where revoked_in_snapshot order by license_key")
    accepted = [r for r in case.truth["revocations"] if r["accepted"]]
    assert len(revoked) == len(accepted) > 0
    for lic in revoked:
        assert lic["counted_until"] <= lic["revoked_at"] < lic["expires_at"]
        assert not lic["excess_by_name"]
    assert case.score.normal_flagged == []


# ---------------------------------------------------------------- 7: event 81


def test_a_refusal_of_one_version_leaves_the_others_allowance(cases: dict[str, Case]) -> None:
    """Event 81 names a product version: a refused 2016 revocation throttles the 2016
    allowance only; its revoked count, installed count and "allowed after" date are read."""
    case = cases["versions"]
    refusals = case.rows("select * from revoke_refusals")
    assert {r["version_key"] for r in refusals} == {"2016"}
    (refusal,) = refusals
    assert refusal["allowed_after"] is not None
    occupied = case.rows("select version_key, count(*) as n from revoke_occupied group by all")
    assert {r["version_key"] for r in occupied} <= {"2016"}
    plan = case.rows("select * from revoke_plan where action = 'revoke'")
    pools = {
        r["version_key"]: r["installed"]
        for r in case.rows(
            "select version_key, sum(installed) as installed from revoke_pools group by all"
        )
    }
    assert set(pools) == {"2016", "2019"}
    for row in plan:
        if row["product_version"] and "2019" in row["product_version"]:
            assert row["revoke_limit"] == pools["2019"] // 5
            assert row["occupied_after"] <= row["revoke_limit"]


# ---------------------------------------------------------------- 8: still in use


def test_the_plan_never_takes_a_cal_still_in_use(cases: dict[str, Case]) -> None:
    """No planned revocation of a CAL renewed or presented after its successor came, of a
    CAL whose machine's HWID was seen after that, or of its holder's only CAL in use."""
    for name in ("mix", "mix-snapshots", "versions", "upgrade", "seed"):
        case = cases[name]
        bad = case.rows(
            """
            select p.license_key, p.cause
            from revoke_plan as p
            join licenses as l using (license_key)
            where p.action = 'revoke'
                and (l.last_renewed_seen > l.superseded_at
                    or l.expires_wmi - interval 89 day > l.superseded_at
                    or (p.cause not in ('cloned', 'freerdp') and exists (
                        select 1 from activity as a
                        where a.hwid = l.hwid and a.ts > l.superseded_at))
                    or not exists (
                        select 1 from licenses as n
                        where n.client_name = l.client_name and n.version_key = l.version_key
                            and n.license_server is not distinct from l.license_server
                            and n.issued_at > l.issued_at and n.counted_now))
            """
        )
        assert bad == [], name
    kept = cases["mix-snapshots"].rows("select keep_reason from revoke_plan where action = 'keep'")
    assert all(r["keep_reason"] for r in kept)


def test_the_guard_keeps_a_cal_whose_hwid_comes_back(cases: dict[str, Case]) -> None:
    """A what-if on a name's superseded CAL: its HWID requests again after the newer CAL
    came (a second machine of that name after all). The plan keeps that CAL back, saying
    why, and plans the rest as before."""
    con = open_case(cases["mix-snapshots"].lake)
    try:
        cand = dicts(
            con,
            "select p.license_key, l.hwid, l.client_name, l.superseded_at from revoke_plan as p "
            "join licenses as l using (license_key) where p.action = 'revoke' "
            "and p.cause in ('vdi', 'script', 'rebuilt', 'corrupted-store') "
            "order by p.license_key limit 1",
        )[0]
        before = {r["license_key"] for r in dicts(con, "select license_key from revoke_plan")}
        # (activity is kept in the lake: a temp table of its rows shadows it for the views)
        con.execute("create temp table activity as select * from main.activity")
        define_plans_live(con)
        con.execute(
            "insert into activity by name select $t as ts, 'requested' as fact, "
            "'trace' as source, $h as hwid, $n as client_name",
            {"t": cand["superseded_at"] + dt.timedelta(days=3), "h": cand["hwid"],
             "n": cand["client_name"]},
        )  # fmt: skip
        plan = {r["license_key"]: r for r in dicts(con, "select * from revoke_plan")}
        assert set(plan) == before
        assert plan[cand["license_key"]]["action"] == "keep"
        assert "HWID was seen" in plan[cand["license_key"]]["keep_reason"]
    finally:
        con.close()


def test_a_cal_a_client_says_it_holds_is_evidence(cases: dict[str, Case]) -> None:
    """TSCTST output names the CAL its client holds (HWID, expiry, issuer): that CAL is in
    use on a machine, and the plan never revokes it."""
    case = cases["mix"]
    dumps = [f for f in case.truth["client_files"] if f["kind"] == "tsctst"]
    assert dumps
    held = {r["license_key"] for r in case.rows("select license_key from client_held_cals")}
    by_seq = {c["seq"]: c for c in case.truth["cals"]}
    for dump in dumps:
        device = case.truth["devices"][dump["device"]]
        latest = max((by_seq[s] for s in device["cals"]), key=lambda c: c["issued"])
        keys = {
            r["license_key"]
            for r in case.rows("select license_key from licenses where license_id = $i",
                               i=str(latest["license_id"]))
        }  # fmt: skip
        assert keys & held, dump
    issuers = case.rows(
        "select distinct license_server from cal_events where source = 'client' "
        "and detail like 'tsctst%'"
    )
    assert issuers == [{"license_server": "LS01"}]
    planned = case.rows(
        "select license_key from revoke_plan where action = 'revoke' "
        "and license_key in (select license_key from client_held_cals)"
    )
    assert planned == []


# ---------------------------------------------------------------- 10: version upgrades


def test_a_cal_of_an_older_version_is_not_excess(cases: dict[str, Case]) -> None:
    """A move to a newer version gives every device a CAL of it (event 82): the older
    version's CAL is the device's CAL of that version, not an excess one."""
    case = cases["upgrade"]
    versions = case.rows(
        "select product_version, count(*) as n, count(*) filter (where excess_by_name) as x "
        "from licenses where counted group by all"
    )
    assert {r["product_version"] for r in versions} >= {
        "Windows Server 2019",
        "Windows Server 2022",
    }
    regenerated = {
        n["name"].upper() for d in case.truth["devices"] if d["regenerated_on"] for n in d["names"]
    }
    excess = case.rows(
        "select client_name from licenses where excess_by_name and product_version like '%2019%'"
    )
    assert {r["client_name"] for r in excess} <= regenerated
    assert case.score.normal_flagged == []


# ---------------------------------------------------------------- 11: gone from a listing


def test_a_cal_missing_from_a_later_full_listing_stops_counting(cases: dict[str, Case]) -> None:
    """A temporary CAL captured by one weekly snapshot and upgraded before the next: the
    next listing no longer shows it, so it stopped counting by then (never excess for 90
    days)."""
    case = cases["mix-snapshots"]
    gone = case.rows(
        "select * from licenses where cal_type = 'temporary' and unlisted_at is not null"
    )
    assert gone
    for lic in gone:
        assert lic["counted_until"] <= lic["unlisted_at"] < lic["expires_at"]
    normal = {
        n["name"].upper()
        for d in case.truth["devices"]
        if d["cause"] == "normal"
        for n in d["names"]
    }
    excess = case.rows("select client_name from licenses where excess_by_name")
    assert not {r["client_name"] for r in excess} & normal


# ---------------------------------------------------------------- 12: fleet-wide events


def test_a_fleet_wide_regeneration_is_one_finding(cases: dict[str, Case]) -> None:
    case = cases["upgrade"]
    regenerated = [d for d in case.truth["devices"] if d["regenerated_on"]]
    assert len(regenerated) >= 5
    (fleet,) = [f for f in case.found if f["cause"] == "mass-regeneration"]
    assert fleet["subject_kind"] == "fleet"
    assert fleet["confidence"] == "high"
    names = {n["name"].upper() for d in regenerated for n in d["names"]}
    assert len(set(fleet["names"]) & names) >= 0.8 * len(names)
    assert fleet["excess_cals"] > 0
    assert not [f for f in case.found if f["subject_kind"] == "name"]
    assert case.score.server_found >= {("mass-regeneration", "LS01")}


def simulate_regeneration_wave(bundle: Path) -> SimulationResult:
    """A fleet of 40 devices over 120 days with one fleet-wide HWID regeneration (weekly
    snapshots): tests/pipeline/test_patch.py patches it too."""
    return simulate(
        bundle,
        seed=290,
        devices=40,
        days=120,
        scenario="mass-regeneration",
        snapshot_every_days=7,
    )


def test_a_machine_away_during_the_regeneration_belongs_to_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A laptop away when the workaround ran takes its new HWID when it comes back, weeks
    after the wave's tail: counted with the wave, never a `rebuilt` machine of its own."""
    base = tmp_path_factory.mktemp("regeneration")
    bundle = base / "bundle"
    truth = simulate_regeneration_wave(bundle).truth
    case = _lake(base, "regeneration", bundle, truth, "snapshots+events")
    try:
        late = [
            d
            for d in truth["devices"]
            if d["regenerated_on"]
            and len(d["hwids"]) == 2
            and dt.date.fromisoformat(d["hwids"][1]["first_seen"][:10])
            > dt.date.fromisoformat(d["regenerated_on"]) + dt.timedelta(days=30)
        ]
        assert late  # the fleet holds such a laptop (else the test would test nothing)
        (fleet,) = [f for f in case.found if f["cause"] == "mass-regeneration"]
        assert {n["name"].upper() for d in late for n in d["names"]} <= set(fleet["names"])
        assert case.score.normal_flagged == []
        assert not [f for f in case.found if f["cause"] == "rebuilt"]
    finally:
        case.con.close()


def test_a_store_corrupted_in_the_regeneration_is_not_counted_with_it(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A machine whose store was corrupted in the days of a fleet-wide regeneration: its
    registry export holds both HWIDs, which the wave's deletion of MSLicensing would not
    have left, so it is a `corrupted-store` of its own (high), not one of the wave's names.
    (Mix seed 658: that machine's new HWID came a day after the wave began.)"""
    base = tmp_path_factory.mktemp("regeneration-corrupted")
    bundle = base / "bundle"
    truth = simulate(bundle, seed=658, devices=40, days=120, scenario="mix").truth
    case = _lake(base, "regeneration-corrupted", bundle, truth, "all")
    try:
        (corrupted,) = [d for d in truth["devices"] if d["cause"] == "corrupted-store"]
        assert corrupted["stale_registry_hwids"]  # its export holds the old HWID too
        name = corrupted["names"][0]["name"].upper()
        (fleet,) = [f for f in case.found if f["cause"] == "mass-regeneration"]
        switched = dt.date.fromisoformat(corrupted["hwids"][1]["first_seen"][:10])
        assert fleet["first_seen"].date() <= switched <= fleet["last_seen"].date()
        assert name not in fleet["names"]
        assert [(f["cause"], f["confidence"]) for f in case.found if f["subject"] == name] == [
            ("corrupted-store", "high")
        ]
        assert case.score.normal_flagged == []
    finally:
        case.con.close()


def test_a_database_rebuilt_unseen_makes_no_clones(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Snapshots alone do not show a rebuilt database (events 9 and 52 are not collected):
    every HWID then gets a new CAL while its old one seems to count until the next listing
    or its expiry. That overlap is not sure (the old CAL was last seen before), so it is
    no evidence of a second machine: no `cloned` finding of a normal device."""
    base = tmp_path_factory.mktemp("rebuilt-unseen")
    bundle = base / "bundle"
    truth = simulate(
        bundle,
        seed=291,
        devices=60,
        days=150,
        scenario="mass-regeneration",
        regeneration_db_rebuild=True,
        snapshot_every_days=7,
    ).truth
    case = _lake(base, "rebuilt-unseen", bundle, truth, "snapshots")
    try:
        assert any(p["problem"] == "db-rebuilt" for p in truth["server_problems"])
        assert case.score.normal_flagged == []
        assert not [f for f in case.found if f["cause"] == "cloned"]
        assert [f for f in case.found if f["cause"] == "mass-regeneration"]
    finally:
        case.con.close()


# ---------------------------------------------------------------- the seed's inputs


def test_the_seeds_exports_and_a_trace_without_operations(cases: dict[str, Case]) -> None:
    """Per-device CAL exports without IssueDate, per-device report entries and a trace
    naming no operation are read and diagnose the fleet as the full exports do."""
    case = cases["seed"]
    rows = case.rows(
        "select count(*) filter (where license_id is null) as report, "
        "count(*) filter (where issue_date is null and license_id is not null) as seed "
        "from issued_license_rows"
    )[0]
    assert rows["report"] > 0
    assert rows["seed"] > 0
    seen = case.rows("select count(*) as n from cal_events where fact = 'seen'")[0]["n"]
    assert seen > 100
    assert case.score.expected - case.score.alternative <= case.score.found | {
        k for k in case.score.expected if k[0] in ("vdi", "script")
    }
    assert case.score.normal_flagged == []
    assert case.score.high_wrong == []
    # issue dates bounded by the expiry when not exported: never after the first listing
    unbounded = case.rows(
        "select count(*) as n from licenses where not issue_seen and issued_at > first_listed"
    )
    assert unbounded[0]["n"] == 0


def test_the_seeds_exports_alone_find_clones_and_freerdp(cases: dict[str, Case]) -> None:
    """The seed's per-device export and the per-device report date no issue: a CAL stands
    by its first listing (its device held it, under that name and HWID, by then), so the
    HWIDs several names present are found from those exports alone."""
    case = cases["seed-snapshots"]
    wanted = {k for k in case.score.expected if k[0] in ("cloned", "freerdp")}
    assert wanted
    assert wanted <= case.score.found
    assert case.score.normal_flagged == []
    assert case.score.high_wrong == []
    # every finding says why (no reason lost to a count the exports cannot give)
    assert all(f["reason"] for f in case.found)


def test_session_host_licensing_events_are_findings(cases: dict[str, Case]) -> None:
    case = cases["seed"]
    (host,) = [
        p["subject"]
        for p in case.truth["server_problems"]
        if p["problem"] == "licensing-mode-not-configured"
    ]
    found = [f for f in case.found if f["cause"] == "licensing-mode-not-configured"]
    assert [f["subject"] for f in found] == [host]
    assert found[0]["fix"]


# ---------------------------------------------------------------- every finding


@pytest.mark.parametrize(
    "lake", ["mix", "mix-snapshots", "versions", "upgrade", "seed", "seed-snapshots"]
)
def test_confidence_rule(cases: dict[str, Case], lake: str) -> None:
    """No normal device flagged; every high finding right; a finding naming an alternative
    says which source would decide and is not high."""
    case = cases[lake]
    assert case.score.normal_flagged == []
    assert case.score.high_wrong == []
    for f in case.found:
        if f["alternative_cause"] is not None:
            assert f["confidence"] != "high", f
            assert f["decided_by"], f
        if f["subject_kind"] != "server" and f["excess_cals"] is not None:
            # temporary and permanent CALs are counted apart (a CAL of no known type is in
            # neither)
            assert f["excess_permanent"] + f["excess_temporary"] <= f["excess_cals"]
            assert f["excess_now_permanent"] + f["excess_now_temporary"] <= f["excess_now"]


# ---------------------------------------------------------------- 9: LicenseStatus

KEYPACK_CSV = """\
"KeyPackId","Description","KeyPackType","ProductType","ProductVersion","ProductVersionID",\
"TotalLicenses","IssuedLicenses","AvailableLicenses","ExpirationDate","PSComputerName"
"3","A02-10.01-S","4","0","Windows Server 2019","6","-1","1","-1","","LS09"
"4","A02-10.01-S","2","0","Windows Server 2019","6","100","6","94","","LS09"
"7","A02-10.00-S","2","0","Windows Server 2016","5","50","0","50","","LS09"
"""
ISSUED_COLUMNS = (
    "LicenseId,KeyPackId,LicenseStatus,sIssuedToComputer,sIssuedToUser,sHardwareId,"
    "IssueDate,ExpirationDate,PSComputerName"
)
# license id, key pack, status, name, HWID (last DWORD), issued (day), expires (day)
ISSUED_ROWS = (
    (11, 4, 2, "PC-1", "00000001", 1, 80),
    (12, 4, 0, "PC-1", "00000001", 10, 75),
    (13, 4, 5, "PC-1", "00000001", 20, 90),
    (14, 4, 6, "PC-1", "00000001", 25, 85),
    (15, 3, 1, "PC-2", "00000002", 5, 95),
    (16, 99, 2, "PC-3", "00000003", 8, 70),
    (17, 4, 3, "PC-4", "00000004", 9, 72),
)


def _issued_csv(snapshot_day: int) -> str:
    start = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)

    def day(n: int) -> str:
        t = start + dt.timedelta(days=n)
        return f"{t.month}/{t.day}/{t.year} {t.hour}:{t.minute:02d}:00 AM"

    lines = [",".join(f'"{c}"' for c in ISSUED_COLUMNS.split(","))]
    for lid, kp, status, name, last, issued, expires in ISSUED_ROWS:
        if issued > snapshot_day:
            continue
        hwid = f"00000002-AAAA0000-BBBB0000-CCCC0000-{last}"
        cells = (lid, kp, status, name, "user", hwid, day(issued), day(expires), "LS09")
        lines.append(",".join(f'"{c}"' for c in cells))
    return "\r\n".join(lines) + "\r\n"


@pytest.fixture(scope="module")
def statuses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[duckdb.DuckDBPyConnection]:
    base = tmp_path_factory.mktemp("statuses")
    folder = base / "LS09"
    folder.mkdir()
    (folder / "LS09_Win32_TSLicenseKeyPack_20250501-0800.csv").write_text(
        KEYPACK_CSV, encoding="utf-8"
    )
    (folder / "LS09_Win32_TSIssuedLicense_20250501-0800.csv").write_text(
        _issued_csv(60), encoding="utf-8"
    )
    lake = base / "lake"
    ingest([folder], IngestOptions(lake=lake, tz=ZoneInfo("UTC")))
    con = open_case(lake)
    yield con
    con.close()


def test_license_status_is_read_as_documented(statuses: duckdb.DuckDBPyConnection) -> None:
    """Pending (5) and Concurrent (6) take no CAL from the pool: never counted, never
    excess, never revoked; Unknown (0) counts but is never revoked; Upgrade (3) is a
    permanent CAL; a temporary CAL is counted apart from the permanent ones."""
    rows = {
        r["license_id"]: r
        for r in dicts(
            statuses,
            "select license_id, cal_type, counted, revocable, counted_now, excess_by_name "
            "from licenses",
        )
    }
    assert (rows["13"]["counted"], rows["14"]["counted"]) == (False, False)
    assert (rows["13"]["excess_by_name"], rows["14"]["excess_by_name"]) == (False, False)
    assert (rows["12"]["counted"], rows["12"]["revocable"]) == (True, False)
    assert (rows["17"]["cal_type"], rows["17"]["revocable"]) == ("permanent", True)
    assert rows["15"]["cal_type"] == "temporary"
    candidates = {
        r["license_id"] for r in dicts(statuses, "select license_id from revoke_candidates")
    }
    assert not candidates & {"12", "13", "14", "15"}


def test_an_unknown_key_pack_gets_no_guessed_version(statuses: duckdb.DuckDBPyConnection) -> None:
    """A license whose key pack no export shows, on a server of two versions: its version
    is not known (never one picked at random), and the plan cannot place it."""
    (row,) = dicts(statuses, "select product_version from licenses where license_id = '16'")
    assert row["product_version"] is None
    (known,) = dicts(statuses, "select product_version from licenses where license_id = '11'")
    assert known["product_version"] == "Windows Server 2019"
