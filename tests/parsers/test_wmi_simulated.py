"""The WMI, registry and TSCTST parsers against a small simulated fleet (fixtures.simulator).

The simulator writes each snapshot in three Export-Csv forms (ps51 DMTF, ps7 en-US, cim
de-DE) and records in truth.json what the license database held: the three forms must give
the same licenses, as many as truth says, at the snapshot time truth says.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from caltrail.parsers import reader_for
from caltrail.parsers.base import (
    ClientHwidRecord,
    FileNote,
    IssuedLicenseRecord,
    Item,
    KeypackRecord,
    ParseIssue,
    ParseOptions,
)
from caltrail.parsers.client import registry, tsctst

simulator = pytest.importorskip("caltrail.fixtures.simulator")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("fleet")
    simulator.simulate(
        out,
        seed=3,
        devices=17,
        days=60,
        snapshot_forms=("ps51", "ps7", "cim"),
        clients_with_registry=1.0,
        clients_with_tsctst=1.0,
        trace=False,
    )
    return out, json.loads((out / "truth.json").read_text())


def parse(module: Any, path: Path, root: Path, tz: str) -> list[Item]:
    """Read `path` with `module`, or (None) with the reader detection picks."""
    options = ParseOptions(file_name=path.relative_to(root).as_posix(), tz=ZoneInfo(tz))
    if module is None:
        module = reader_for(path.read_bytes()[:65536], path.name)
        assert module is not None
    with path.open("rb") as stream:
        return list(module.parse(stream, options))


def test_snapshot_forms_agree_with_truth(bundle: tuple[Path, dict[str, Any]]) -> None:
    root, truth = bundle
    tz = truth["options"]["tz"]
    by_time: dict[str, list[list[tuple[object, ...]]]] = {}
    assert truth["snapshots"]
    for snap in truth["snapshots"]:
        path = root / snap["issued_file"]
        wmi = reader_for(path.read_bytes()[:65536], path.name)
        assert wmi is not None
        assert wmi.NAME in ("wmi_csv", "wmi_xml", "wmi_html")
        items = parse(wmi, path, root, tz)
        assert [i for i in items if isinstance(i, ParseIssue)] == []
        recs = [i for i in items if isinstance(i, IssuedLicenseRecord)]
        assert len(recs) == snap["rows"]
        expected_time = dt.datetime.fromisoformat(snap["time"].replace("Z", "+00:00"))
        assert {(r.snapshot_time, r.snapshot_time_source) for r in recs} == {
            (expected_time, "file name")
        }
        assert all(r.hwid for r in recs)
        # the simulated fleet has FreeRDP thin clients and Store-app devices (platform 0xff)
        assert {r.hwid_flag for r in recs} <= {None, "freerdp_legacy", "store_app_ff"}
        rows = sorted(
            (r.license_id, r.keypack_id, r.license_status, r.issue_date, r.expiration_date,
             r.expiration_never, r.issued_to_computer, r.hwid)
            for r in recs
        )  # fmt: skip
        by_time.setdefault(snap["time"], []).append(rows)
        keypacks = parse(None, root / snap["keypack_file"], root, tz)
        assert [i for i in keypacks if isinstance(i, ParseIssue)] == []
        assert any(isinstance(i, KeypackRecord) for i in keypacks)
    for forms in by_time.values():
        assert all(rows == forms[0] for rows in forms[1:])


def test_truth_hwids_match_parsed_hwids(bundle: tuple[Path, dict[str, Any]]) -> None:
    root, truth = bundle
    truth_hwids = {c["hwid"] for c in truth["cals"]}
    snap = truth["snapshots"][0]
    items = parse(None, root / snap["issued_file"], root, truth["options"]["tz"])
    parsed = {i.hwid for i in items if isinstance(i, IssuedLicenseRecord)}
    assert parsed <= truth_hwids


def test_client_files(bundle: tuple[Path, dict[str, Any]]) -> None:
    root, truth = bundle
    tz = truth["options"]["tz"]
    seen = 0
    for entry in truth["client_files"]:
        path = root / entry["file"]
        module = registry if entry["kind"] == "registry" else tsctst
        if not module.sniff(path.read_bytes()[:65536], path.name):
            assert module is tsctst  # a client with no license in its store
            continue
        items = parse(module, path, root, tz)
        assert [i for i in items if isinstance(i, ParseIssue)] == []
        recs = [i for i in items if isinstance(i, ClientHwidRecord)]
        assert recs
        assert all(r.hwid or r.deleted for r in recs)
        notes = {i.key: i.value for i in items if isinstance(i, FileNote)}
        if module is registry:
            assert notes["client_name_source"] == "file name"
        seen += 1
    assert seen
