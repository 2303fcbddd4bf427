"""The per-device pool found empty in a key pack listing (Win32_TSLicenseKeyPack), with no
event collected: `cals-exhausted` for the server (snapshot_pool_findings), from the permanent
per-device packs of a version together, not from a temporary or built-in pack, nor from one
pack of several; and not twice where the System log already says so (event 21)."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

from caltrail.fixtures.simulator import simulate
from caltrail.fixtures.simulator.wmi import KEYPACK_PROPS
from tests.queries.test_snapshot_db_resets import rows_of, server_findings

COLUMNS = (*KEYPACK_PROPS, "PSComputerName")
START = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)
# (key pack id, type, product type, version, total, available); -1: unlimited
Pack = tuple[int, int, int, str, int, int]
BUILT_IN: Pack = (2, 6, 0, "Windows 2000 Server", -1, -1)


def _listing(folder: Path, day: int, packs: list[Pack], copy: str = "") -> None:
    """A Win32_TSLicenseKeyPack export of server LS09 taken on `day` (its time in the name);
    `copy`: another export of the same listing (its columns in reverse order, `copy` in its
    name)."""
    folder.mkdir(parents=True, exist_ok=True)
    taken = START + dt.timedelta(days=day)
    columns = COLUMNS[::-1] if copy else COLUMNS
    lines = [",".join(f'"{c}"' for c in columns)]
    for pack_id, pack_type, product_type, version, total, available in packs:
        issued = 0 if total < 0 else total - available
        version_id = {"Windows Server 2019": 6, "Windows Server 2016": 5}.get(version, 0)
        cells = {
            "KeyPackId": pack_id,
            "KeyPackType": pack_type,
            "ProductType": product_type,
            "ProductVersion": version,
            "ProductVersionID": version_id,
            "TotalLicenses": total,
            "IssuedLicenses": issued,
            "AvailableLicenses": available,
            "Description": "A02-10.01-S",
            "TypeAndModel": "RDS Per Device CAL",
            "PSComputerName": "LS09",
        }
        lines.append(",".join(f'"{cells.get(c, "")}"' for c in columns))
    name = f"LS09_Win32_TSLicenseKeyPack_{taken:%Y%m%d-%H%M}{copy}.csv"
    (folder / name).write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")


def test_a_version_whose_packs_are_all_taken_is_exhausted(tmp_path: Path) -> None:
    folder = tmp_path / "LS09"
    temporary: Pack = (3, 4, 0, "Windows Server 2019", -1, -1)
    # a volume pack of 20 and a retail pack of 10 (Windows Server 2019), a 2016 pack with
    # CALs left: 2019's pool has 5 on day 10, none on days 20 and 30
    _listing(
        folder,
        10,
        [
            BUILT_IN,
            temporary,
            (4, 2, 0, "Windows Server 2019", 20, 5),
            (5, 1, 0, "Windows Server 2019", 10, 0),
            (6, 2, 0, "Windows Server 2016", 8, 3),
        ],
    )
    for day in (20, 30):
        _listing(
            folder,
            day,
            [
                BUILT_IN,
                temporary,
                (4, 2, 0, "Windows Server 2019", 20, 0),
                (5, 1, 0, "Windows Server 2019", 10, 0),
                # (the two exports differ: one identical to another is read once)
                (6, 2, 0, "Windows Server 2016", 8, day // 10),
            ],
        )
    (found,) = server_findings(folder, tmp_path / "lake")
    assert (found["cause"], found["subject"], found["confidence"], found["sources"]) == (
        "cals-exhausted",
        "LS09",
        "high",
        ["wmi"],
    )
    assert found["reason"] == (
        "none of the 30 permanent per-device CALs of Windows Server 2019 was available in 2 of "
        "its 3 key pack listing(s) (the first 2025-03-21, the last 2025-03-31)"
    )
    assert found["evidence_counts"] == {"listings_empty": 2, "listings": 3}
    assert found["first_seen"] == START + dt.timedelta(days=20)
    assert found["last_seen"] == START + dt.timedelta(days=30)
    # one row per empty listing: its first per-device pack's line
    assert [Path(str(r["source_path"])).name for r in found["evidence_rows"]] == [  # type: ignore[union-attr]
        "LS09_Win32_TSLicenseKeyPack_20250321-0800.csv",
        "LS09_Win32_TSLicenseKeyPack_20250331-0800.csv",
    ]


def test_a_listing_exported_twice_counts_its_packs_once(tmp_path: Path) -> None:
    """Two exports of one listing (a collector that keeps a CSV and another form of each
    run): the pool's history and the finding count each pack once."""
    folder = tmp_path / "LS09"
    for copy in ("", "-ps7"):
        _listing(folder, 10, [BUILT_IN, (4, 2, 0, "Windows Server 2019", 20, 2)], copy)
        _listing(folder, 20, [BUILT_IN, (4, 2, 0, "Windows Server 2019", 20, 0)], copy)
    (found,) = server_findings(folder, tmp_path / "lake")
    assert found["reason"] == (
        "none of the 20 permanent per-device CALs of Windows Server 2019 was available in 1 of "
        "its 2 key pack listing(s) (2025-03-21)"
    )
    history = rows_of(
        tmp_path / "lake",
        "select installed, issued, available from cal_pool_history order by snapshot_time",
    )
    assert [tuple(r.values()) for r in history] == [(20, 18, 2), (20, 20, 0)]


def test_no_finding_while_some_pack_of_the_version_has_cals(tmp_path: Path) -> None:
    folder = tmp_path / "LS09"
    for day in (10, 20):
        _listing(
            folder,
            day,
            [
                BUILT_IN,
                # a temporary pack with none left is not the permanent pool
                (3, 4, 0, "Windows Server 2022", 15, 0),
                (4, 2, 0, "Windows Server 2019", 20, 0),
                (5, 1, 0, "Windows Server 2019", 10, day // 10),  # 1, then 2
                # a per-user pack with none left is not the per-device pool
                (7, 2, 1, "Windows Server 2025", 5, 0),
                # an unlimited per-device pack
                (8, 2, 0, "Windows Server 2016", -1, -1),
            ],
        )
    assert server_findings(folder, tmp_path / "lake") == []


def test_the_system_log_finding_stands_and_the_listings_add_none(tmp_path: Path) -> None:
    """A fleet whose pool ran out (the simulator's exhaustion scenario): with the license
    server's System log, its events' finding; without it, the key pack listings'."""
    bundle = tmp_path / "bundle"
    simulate(bundle, seed=14, devices=40, days=90, scenario="exhaustion", snapshot_every_days=7)
    without = tmp_path / "without-events"
    shutil.copytree(bundle, without)
    for path in without.rglob("*.evtx"):
        path.unlink()
    with_events = [
        f for f in server_findings(bundle, tmp_path / "lake") if f["cause"] == "cals-exhausted"
    ]
    from_listings = [
        f for f in server_findings(without, tmp_path / "lake2") if f["cause"] == "cals-exhausted"
    ]
    assert [(f["subject"], f["sources"]) for f in with_events] == [("LS01", ["evtx"])]
    assert [(f["subject"], f["sources"], f["confidence"]) for f in from_listings] == [
        ("LS01", ["wmi"], "high")
    ]
