"""A license database emptied between two full Win32_TSIssuedLicense listings, seen in the
listings alone (snapshot_db_resets, snapshot_server_findings): found where the unexpired
permanent CALs of one listing are gone from the next; high only when the later listing's
license ids start again; not found where CALs left by expiring or stayed listed as revoked;
and not twice where the System log already says so."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

from caltrail.pipeline.diagnose import dicts, open_case
from caltrail.pipeline.ingest import IngestOptions, ingest
from tests.queries.test_scenarios import simulate_regeneration_wave

COLUMNS = (
    "LicenseId",
    "KeyPackId",
    "LicenseStatus",
    "sIssuedToComputer",
    "sIssuedToUser",
    "sHardwareId",
    "IssueDate",
    "ExpirationDate",
    "PSComputerName",
)
START = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)
# (license id, status, day issued, day it expires): 2 Active, 1 Temporary, 4 Revoked
Row = tuple[int, int, int, int]


def _day(n: int) -> str:
    t = START + dt.timedelta(days=n)
    return f"{t.month}/{t.day}/{t.year} {t.hour}:{t.minute:02d}:00 AM"


def _listing(folder: Path, day: int, rows: list[Row]) -> None:
    """A Win32_TSIssuedLicense export of server LS09 taken on `day` (its time in the name)."""
    folder.mkdir(parents=True, exist_ok=True)
    taken = START + dt.timedelta(days=day)
    lines = [",".join(f'"{c}"' for c in COLUMNS)]
    for lid, status, issued, expires in rows:
        hwid = f"00000002-AAAA0000-BBBB0000-CCCC0000-{lid:08X}"
        cells = (lid, 4, status, f"PC-{lid}", "user", hwid, _day(issued), _day(expires), "LS09")
        lines.append(",".join(f'"{c}"' for c in cells))
    name = f"LS09_Win32_TSIssuedLicense_{taken:%Y%m%d-%H%M}.csv"
    (folder / name).write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")


def rows_of(lake: Path, sql: str) -> list[dict[str, object]]:
    con = open_case(lake)
    try:
        return dicts(con, sql)
    finally:
        con.close()


def server_findings(folder: Path, lake: Path) -> list[dict[str, object]]:
    """Ingest `folder` into `lake` (times in UTC); the server findings (test_snapshot_pool_findings
    uses it too)."""
    ingest([folder], IngestOptions(lake=lake, tz=ZoneInfo("UTC")))
    return rows_of(
        lake,
        "select cause, subject, confidence, reason, decided_by, evidence_counts, sources, "
        "evidence_rows, first_seen, last_seen "
        "from findings where subject_kind = 'server' order by cause",
    )


# eight permanent CALs listed on day 30, each valid until day 90
BEFORE: list[Row] = [(300 + i, 2, 20 + i, 90) for i in range(8)]


def test_a_database_emptied_between_two_listings_is_found(tmp_path: Path) -> None:
    folder = tmp_path / "LS09"
    _listing(folder, 30, BEFORE)
    # a week later: none of them, and temporary CALs numbered from 1 again
    _listing(folder, 37, [(1, 1, 35, 125), (2, 1, 36, 126)])
    (found,) = server_findings(folder, tmp_path / "lake")
    assert (found["cause"], found["subject"], found["confidence"]) == (
        "database-rebuilt",
        "LS09",
        "high",
    )
    assert found["evidence_counts"] == {
        "listings_compared": 1,
        "cals_missing": 8,
        "cals_unexpired": 8,
    }
    assert found["sources"] == ["wmi"]
    assert "8 of the 8 permanent CALs" in str(found["reason"])
    assert "the highest 2, below the lowest before, 300" in str(found["reason"])
    # the rows of the CALs gone, then the later listing
    rows = list(found["evidence_rows"])  # type: ignore[call-overload]
    assert len(rows) == 9
    assert all("20250331" in row["source_path"] for row in rows[:-1])
    assert "20250407" in rows[-1]["source_path"]
    # the CALs it took stopped counting when it was emptied, before the new database's
    # first CAL (issued on day 35), not at the later listing (day 37)
    ends = rows_of(
        tmp_path / "lake",
        "select license_id, counted_until from licenses where license_id::integer >= 300",
    )
    assert len(ends) == 8
    assert {e["counted_until"] for e in ends} == {START + dt.timedelta(days=35)}


def test_listings_that_keep_the_earlier_ids_give_a_medium_finding(tmp_path: Path) -> None:
    # the later listing has one of the eight and nothing new: a database emptied, or an
    # export cut short
    folder = tmp_path / "LS09"
    _listing(folder, 30, BEFORE)
    _listing(folder, 37, BEFORE[:1])
    (found,) = server_findings(folder, tmp_path / "lake")
    assert (found["cause"], found["confidence"]) == ("database-rebuilt", "medium")
    assert "cut short, or filtered by status" in str(found["decided_by"])
    # not sure enough to date the CALs' end earlier: they leave at the later listing
    ends = rows_of(
        tmp_path / "lake",
        "select distinct counted_until from licenses where license_id::integer > 300",
    )
    assert ends == [{"counted_until": START + dt.timedelta(days=37)}]


def test_cals_that_expired_or_were_revoked_are_no_reset(tmp_path: Path) -> None:
    # five of the eight expire before the later listing; one is revoked (listed as such);
    # temporary CALs come and go; the two others stay
    before = [(300 + i, 2, 20 + i, 33 if i < 5 else 90) for i in range(8)]
    before += [(400, 1, 25, 115), (401, 1, 26, 116)]
    after = [(305, 4, 25, 90), (306, 2, 26, 90), (307, 2, 27, 90), (308, 1, 35, 125)]
    folder = tmp_path / "LS09"
    _listing(folder, 30, before)
    _listing(folder, 37, after)
    assert server_findings(folder, tmp_path / "lake") == []
    # ... and so are a few CALs gone among many (below the share a rebuild leaves)
    folder = tmp_path / "LS09b"
    many = [(500 + i, 2, 20, 90) for i in range(40)]
    _listing(folder, 30, many)
    _listing(folder, 37, many[6:])
    assert server_findings(folder, tmp_path / "lake-b") == []


def test_the_system_log_finding_is_not_repeated(tmp_path: Path) -> None:
    """A simulated fleet whose database is rebuilt amid weekly snapshots: with the System
    log collected, one finding, the events'; with the snapshots alone, one, the
    snapshots'."""
    bundle = tmp_path / "fleet"
    result = simulate_regeneration_wave(bundle)
    assert any(p["problem"] == "db-rebuilt" for p in result.truth["server_problems"])
    rebuilt = [
        f
        for f in server_findings(bundle, tmp_path / "with-events")
        if f["cause"] == "database-rebuilt"
    ]
    assert [(f["subject"], f["sources"]) for f in rebuilt] == [("LS01", ["evtx"])]
    for rel in result.files:
        if rel.endswith(".evtx") or "trace" in rel or rel.startswith("clients/"):
            (bundle / rel).unlink()
    shutil.rmtree(tmp_path / "with-events")
    rebuilt = [
        f
        for f in server_findings(bundle, tmp_path / "snapshots-only")
        if f["cause"] == "database-rebuilt"
    ]
    assert [(f["subject"], f["sources"], f["confidence"]) for f in rebuilt] == [
        ("LS01", ["wmi"], "high")
    ]
