"""Two license servers in one lake (queries/40_cal_events.sql, 55_plans.sql). Each server's
database numbers its own key packs and licenses, so their ids overlap: a license is keyed by
its server first, database generations are counted per server, and each server has its own
20% revocation allowance. One lake holding both servers' logs gives what a lake per server
gives."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from caltrail.fixtures.simulator import simulate
from caltrail.fixtures.simulator.scenarios import CAUSES
from caltrail.pipeline.diagnose import open_case
from caltrail.pipeline.ingest import IngestOptions, ingest

# the same first license id on both servers: every id of the smaller fleet exists on both
FIRST_ID = 1000
# no VDI pool: its machine names (VDI-W11-001, ...) carry no site, so both fleets would have
# them, and two machines of one name are a finding of their own (duplicate names)
CAUSES_LS01 = {cause: 1 for cause in CAUSES if cause != "vdi"}
CAUSES_LS02 = {"cloned": 1, "script": 1}


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("servers")
    one, two = base / "bundle-ls01", base / "bundle-ls02"
    simulate(one, seed=81, devices=30, days=90, first_license_id=FIRST_ID, causes=CAUSES_LS01)
    # the second server's database is rebuilt mid-way and its revocations hit the limit
    simulate(
        two,
        seed=82,
        devices=30,
        days=90,
        scenario="server-problems",
        license_server="LS02",
        site="HAM",
        first_license_id=FIRST_ID,
        causes=CAUSES_LS02,
    )
    # a trace dump whose path names no server: the first server's, one line longer
    trace = next(one.rglob("*lserver_trace.txt"))
    loose = base / "loose" / "lserver_trace.txt"
    loose.parent.mkdir()
    loose.write_bytes(trace.read_bytes() + b"\r\n")
    # the first server's logs without its snapshots, its trace in a folder naming no server
    bare = base / "bare"
    shutil.copytree(one, bare / "logs")
    for snapshot in (bare / "logs").rglob("*Win32_TS*"):
        snapshot.unlink()
    (bare / "logs" / trace.relative_to(one)).rename(bare / "lserver_trace.txt")
    # the first fleet's history played again on a third server: the same names at the
    # same times on two servers
    twin = base / "bundle-ls03"
    simulate(
        twin,
        seed=81,
        devices=30,
        days=90,
        license_server="LS03",
        first_license_id=FIRST_ID + 5000,
        causes=CAUSES_LS01,
    )
    out = {}
    for name, paths in (
        ("LS01", [one]),
        ("LS02", [two]),
        ("both", [one, two]),
        ("loose", [one, two, loose.parent]),
        ("bare", [bare, two]),
        ("twins", [one, twin]),
    ):
        out[name] = base / f"lake-{name}"
        ingest(paths, IngestOptions(lake=out[name], tz=ZoneInfo("Europe/Berlin")))
    return out


def rows(lake: Path, query: str) -> list[tuple[Any, ...]]:
    con = open_case(lake)
    try:
        return sorted(con.execute(query).fetchall(), key=repr)
    finally:
        con.close()


LICENSES = (
    "select license_server, license_key, generation, client_name, hwid, cal_type, issued_at, "
    "expires_at, counted_until, excess_by_name from licenses"
)


def test_the_servers_license_ids_overlap(lakes: dict[str, Path]) -> None:
    ids = [
        {r[0] for r in rows(lakes[name], "select license_id from licenses")}
        for name in ("LS01", "LS02")
    ]
    assert len(ids[0] & ids[1]) >= 20  # (what merged licenses before they were keyed by server)


def test_one_lake_of_two_servers_gives_each_servers_licenses(lakes: dict[str, Path]) -> None:
    alone = rows(lakes["LS01"], LICENSES) + rows(lakes["LS02"], LICENSES)
    both = rows(lakes["both"], LICENSES)
    assert both == sorted(alone, key=repr)
    assert {r[0] for r in both} == {"LS01", "LS02"}
    assert all(r[1].startswith(f"{r[0]}/g") for r in both)


def test_database_generations_are_counted_per_server(lakes: dict[str, Path]) -> None:
    generations = rows(
        lakes["both"],
        "select license_server, list(distinct generation order by generation) "
        "from licenses group by all",
    )
    assert generations == [("LS01", [0]), ("LS02", [0, 1])]
    rebuilds = rows(lakes["both"], "select license_server, generation from db_rebuilds")
    assert ("LS02", 1) in rebuilds
    assert all(server != "LS01" for server, _ in rebuilds)


def test_findings_are_each_servers(lakes: dict[str, Path]) -> None:
    query = "select cause, subject, excess_cals from findings"
    alone = rows(lakes["LS01"], query) + rows(lakes["LS02"], query)
    assert rows(lakes["both"], query) == sorted(alone, key=repr)


def test_each_server_has_its_own_revocation_allowance(lakes: dict[str, Path]) -> None:
    query = (
        "select license_server, product_version, license_key, action, installed, revoke_limit "
        "from revoke_plan"
    )
    alone = rows(lakes["LS01"], query) + rows(lakes["LS02"], query)
    both = rows(lakes["both"], query)
    assert both == sorted(alone, key=repr)
    assert {r[0] for r in both} == {"LS01", "LS02"}
    over = rows(lakes["both"], "select * from revoke_plan where occupied_after > revoke_limit")
    assert over == []


def trace_servers(lake: Path) -> list[tuple[Any, ...]]:
    return rows(
        lake,
        "select f.license_server, f.attributed_by, parse_filename(i.path) from "
        "file_license_servers as f join ingest_files as i on i.sha256 = f.file_sha256 "
        "where i.path like '%trace%'",
    )


def test_a_trace_whose_path_names_no_server_is_attributed_by_its_licenses(
    lakes: dict[str, Path],
) -> None:
    assert trace_servers(lakes["loose"]) == [
        ("LS01", "content", "lserver_trace.txt"),
        ("LS01", "path", "LS01_lserver_trace.txt"),
        ("LS02", "path", "LS02_lserver_trace.txt"),
    ]
    # its facts are the first server's: the licenses are those of the lake without it
    assert rows(lakes["loose"], LICENSES) == rows(lakes["both"], LICENSES)


def test_a_trace_of_no_known_server_is_keyed_under_the_unknown_server(
    lakes: dict[str, Path],
) -> None:
    """The first server is known by its events alone: no snapshot lists its licenses, and
    the trace's path names no server."""
    assert rows(lakes["bare"], "select * from license_servers") == [("LS01",), ("LS02",)]
    assert trace_servers(lakes["bare"]) == [
        ("LS02", "path", "LS02_lserver_trace.txt"),
        (None, None, "lserver_trace.txt"),
    ]
    # the unattributed file's facts, and they alone, are keyed under '?'
    keys = rows(
        lakes["bare"],
        "select f.license_server is null as unknown, count(*), count(*) filter "
        "(where e.license_key like '?/%') from cal_events as e join file_license_servers as f "
        "using (file_sha256) where e.source = 'trace' and e.license_key is not null group by all",
    )
    assert keys[0][0] is False
    assert keys[0][2] == 0
    assert keys[1][0] is True
    assert keys[1][1] == keys[1][2] > 0
    # the second server's licenses are those of its own lake
    own = f"{LICENSES} where license_server = 'LS02'"
    assert rows(lakes["bare"], own) == rows(lakes["LS02"], own)


def test_a_lake_of_one_server_attributes_every_trace_to_it(lakes: dict[str, Path]) -> None:
    attributed = rows(lakes["LS02"], "select distinct license_server from file_license_servers")
    assert attributed == [("LS02",)]


def test_an_event_is_linked_to_a_license_of_the_server_that_logged_it(
    lakes: dict[str, Path],
) -> None:
    """Two servers issue to the same names at the same times: each server's EVTX issuance
    events take the licenses of its own trace and snapshots."""
    linked = rows(
        lakes["twins"],
        "select f.license_server, split_part(e.license_key, '/', 1), count(*) "
        "from cal_events as e join file_license_servers as f using (file_sha256) "
        "where e.source = 'evtx' and e.license_key is not null group by all",
    )
    assert linked == [("LS01", "LS01", linked[0][2]), ("LS03", "LS03", linked[1][2])]
    assert linked[0][2] == linked[1][2] > 0
