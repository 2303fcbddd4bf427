"""snapshot_listings: one row per license and snapshot, however many copies of the snapshot
the lake holds (the same export read in two folders, or in two forms): the copies' rows are
one, and that row says what a single copy says (a listing read once is its row as it is;
one read twice, the aggregate of its copies)."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo

from caltrail.pipeline.diagnose import open_case
from caltrail.pipeline.ingest import IngestOptions, ingest
from tests.queries.test_scenarios import KEYPACK_CSV, _issued_csv

# what a copy changes: the file it was read from
WHERE_READ = ("source_path", "line", "file_sha256")


def _listings(folders: list[Path], lake: Path) -> list[dict[str, object]]:
    ingest(folders, IngestOptions(lake=lake, tz=ZoneInfo("UTC")))
    con = open_case(lake)
    try:
        cursor = con.execute("select * from snapshot_listings order by license_key, snapshot_time")
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    finally:
        con.close()


def _export(folder: Path, snapshot_day: int) -> Path:
    folder.mkdir(parents=True)
    (folder / "LS09_Win32_TSLicenseKeyPack_20250501-0800.csv").write_text(
        KEYPACK_CSV, encoding="utf-8"
    )
    (folder / "LS09_Win32_TSIssuedLicense_20250501-0800.csv").write_text(
        _issued_csv(snapshot_day), encoding="utf-8"
    )
    return folder


def test_the_copies_of_a_snapshot_are_one_listing(tmp_path: Path) -> None:
    once = _listings([_export(tmp_path / "once" / "LS09", 60)], tmp_path / "lake-once")
    # the same export in a second folder, and a smaller one (an earlier snapshot's rows)
    # at the same time: every listing of the smaller one is read twice
    twice = _listings(
        [
            _export(tmp_path / "twice" / "a" / "LS09", 60),
            _export(tmp_path / "twice" / "b" / "LS09", 20),
        ],
        tmp_path / "lake-twice",
    )
    assert len(once) > 4
    assert len(twice) == len(once)
    for single, copies in zip(once, twice, strict=True):
        assert {k: v for k, v in copies.items() if k not in WHERE_READ} == {
            k: v for k, v in single.items() if k not in WHERE_READ
        }
    # a listing read twice names the first path of its copies, one read once its own
    paths = {str(row["source_path"]).split("/twice/")[1].split("/")[0] for row in twice}
    assert paths == {"a"}
