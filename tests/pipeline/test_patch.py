"""The per-device kept views patched after a batch ingest (pipeline/patch.py) equal the same
state of the lake computed whole, view by view and row by row, after batches of each kind:
a new license server and site, the same server later (the end of the data moves) without
and with its WMI exports, session hosts and clients alone, and a file read again (which is
computed whole)."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import pytest

from caltrail import queries
from caltrail.fixtures.simulator import simulate
from caltrail.pipeline import kept, materialize, patch
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.session import connect
from tests.queries.test_scenarios import simulate_regeneration_wave


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A lake of a small fleet with every view kept (the base state), and the fleet's
    bundle."""
    base = tmp_path_factory.mktemp("patch")
    bundle, lake = base / "fleet", base / "lake"
    simulate(bundle, seed=71, devices=24, days=40)
    ingest([bundle], IngestOptions(lake=lake))
    connect(lake).close()
    return lake, bundle


def keep_only(bundle: Path, keep: Callable[[Path], bool]) -> Path:
    for path in [p for p in bundle.rglob("*") if p.is_file()]:
        if not keep(path):
            path.unlink()
    return bundle


def new_server_and_site(out: Path, _fleet: Path) -> Path:
    simulate(out, seed=8, devices=20, days=14, license_server="LS-BATCH", site="HAM")
    return out


def same_server_later(out: Path, _fleet: Path) -> Path:
    # its license ids above the fleet's: the server's database goes on (ids numbered from
    # below the fleet's would be a database rebuilt between the two listings, whose new
    # generation is computed whole)
    simulate(out, seed=72, devices=24, days=20, start=dt.date(2025, 4, 1), first_license_id=9000)
    return out


def same_server_later_rebuilt(out: Path, _fleet: Path) -> Path:
    """The same server later, its listings numbered from 1: a database emptied between the
    fleet's last listing and the batch's first (a new generation: computed whole)."""
    simulate(out, seed=72, devices=24, days=20, start=dt.date(2025, 4, 1), first_license_id=1)
    return out


def same_server_later_without_wmi(out: Path, fleet: Path) -> Path:
    return keep_only(same_server_later(out, fleet), lambda p: "Win32_" not in p.name)


def hosts_and_clients_later(out: Path, fleet: Path) -> Path:
    later = same_server_later(out, fleet)
    return keep_only(later, lambda p: not p.name.startswith("LS01"))


def same_server_another_site_without_wmi(out: Path, _fleet: Path) -> Path:
    """Devices of another site on the fleet's server at the same time, without the server's
    WMI exports: their FreeRDP clients present the fleet's FreeRDP HWID, so their licenses
    fall between the fleet's in that HWID's order."""
    simulate(out, seed=73, devices=20, days=40, site="HAM")
    return keep_only(out, lambda p: "Win32_" not in p.name)


def the_same_devices_on_another_server(out: Path, _fleet: Path) -> Path:
    """new_server_and_site's devices, their files written by another server: the same names
    and snapshot times (facts tied in time, listed in any order)."""
    simulate(out, seed=8, devices=20, days=14, license_server="LS-OTHER", site="HAM")
    return out


def fleet_trace_again(out: Path, fleet: Path) -> Path:
    """The fleet's trace file read again (--force gives it a new run: the older is hidden)."""
    out.mkdir()
    for path in fleet.rglob("*trace*"):
        shutil.copy(path, out / path.name)
    return out


BATCHES: dict[str, Callable[[Path, Path], Path]] = {
    "new server and site": new_server_and_site,
    "same server later": same_server_later,
    "same server later, its database rebuilt": same_server_later_rebuilt,
    "same server later, no WMI": same_server_later_without_wmi,
    "hosts and clients later": hosts_and_clients_later,
    "same server, another site, no WMI": same_server_another_site_without_wmi,
    "a file read again": fleet_trace_again,
}


def kept_rows(lake: Path, view: str) -> list[tuple[Any, ...]]:
    """The rows of a kept view, from its file or its parts."""
    path = materialize.current_file(lake, view)
    assert path is not None, f"{view} is not kept"
    con = duckdb.connect()
    kept.attach(con, "rows", "files", path)
    return sorted(con.execute("select * from rows").fetchall(), key=repr)


@pytest.mark.parametrize("name", list(BATCHES))
def test_a_patched_state_equals_the_state_computed_whole(
    tmp_path: Path, fleet: tuple[Path, Path], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet_lake, bundle = fleet
    lake = tmp_path / "lake"
    shutil.copytree(fleet_lake, lake)
    batch = BATCHES[name](tmp_path / "batch", bundle)
    ingest([batch], IngestOptions(lake=lake, force=True))
    whole = tmp_path / "whole"
    shutil.copytree(lake, whole, ignore=shutil.ignore_patterns(kept.DERIVED_DIR))

    patchers: list[patch.Patcher] = []
    patched: list[str] = []
    compute = patch.Patcher.compute

    def spied(self: patch.Patcher, statement: Any, below: Any) -> None:
        patchers.append(self)
        patched.append(statement.creates)
        compute(self, statement, below)

    monkeypatch.setattr(patch.Patcher, "compute", spied)
    connect(lake).close()
    monkeypatch.undo()
    connect(whole).close()

    declared = [s.creates for s in queries.statements() if s.patched]
    if name in ("a file read again", "same server later, its database rebuilt"):
        # computed whole: the older run's rows go; a new database generation rekeys the
        # server's licenses
        assert patched == []
    else:
        assert patched == declared
        touched = patchers[0].touched
        assert touched.get("file", 0) > 0
        assert touched.get("name", 0) > 0
    for view in materialize.lake_views():
        assert kept_rows(lake, view) == kept_rows(whole, view), view


def test_the_devices_touched_are_a_part_of_the_fleet(
    tmp_path: Path, fleet: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of another server and site touches its own devices (and those sharing a HWID
    or name with them), not the whole fleet: the patch saves work."""
    fleet_lake, bundle = fleet
    lake = tmp_path / "lake"
    shutil.copytree(fleet_lake, lake)
    ingest([new_server_and_site(tmp_path / "batch", bundle)], IngestOptions(lake=lake))
    found: list[dict[str, int]] = []
    close = patch.Patcher.close

    def spied(self: patch.Patcher) -> None:
        if self.state == "ready":
            found.append(dict(self.touched))
        close(self)

    monkeypatch.setattr(patch.Patcher, "close", spied)
    connect(lake).close()
    [touched] = found
    licenses = len(kept_rows(lake, "licenses"))
    assert 0 < touched["license"] < licenses * 0.7


def test_a_state_records_its_runs_and_the_next_finds_it(
    tmp_path: Path, fleet: tuple[Path, Path]
) -> None:
    fleet_lake, bundle = fleet
    lake = tmp_path / "lake"
    shutil.copytree(fleet_lake, lake)
    first = kept.fingerprint(lake.resolve())
    assert patch.runs_file(lake.resolve(), first).is_file()
    ingest([new_server_and_site(tmp_path / "batch", bundle)], IngestOptions(lake=lake))
    second = kept.fingerprint(lake.resolve())
    views = materialize.lake_views()
    assert patch.find_base(lake.resolve(), second, views) == first
    # a state some kept file of which is gone is no base
    materialize.current_file(lake, "licenses", first).unlink()  # type: ignore[union-attr]
    assert patch.find_base(lake.resolve(), second, views) is None


def test_the_touched_predicate_reads_the_declared_pairs() -> None:
    con = duckdb.connect()
    con.execute("create schema patch")
    con.execute(
        "create table patch.touched as select * from (values ('name', 'PC1'), ('hwid', 'H2')) t(kind, key)"
    )
    con.execute(
        "create table rows as select * from (values ('PC1', 'H9', 'name'), ('PC3', 'H2', 'hwid'), "
        "('PC3', 'H3', 'name'), (null, null, 'name')) t(client_name, hwid, subject_kind)"
    )
    plain = patch.touched_predicate((("'name'", "client_name"), ("'hwid'", "hwid")))
    assert con.execute(
        f"select client_name, hwid from rows as v where {plain} order by all"
    ).fetchall() == [
        ("PC1", "H9"),
        ("PC3", "H2"),
    ]
    # the rows kept from the base: a row of no touched device, its devices NULL or not
    assert con.execute(
        f"select client_name, hwid from rows as v where not coalesce({plain}, false) order by all"
    ).fetchall() == [("PC3", "H3"), (None, None)]
    by_column = patch.touched_predicate((("subject_kind", "hwid"),))
    assert con.execute(f"select hwid from rows as v where {by_column}").fetchall() == [("H2",)]


def test_rows_read_with_every_device_are_declared_on_a_view_read_per_device() -> None:
    view = "create view v as select 1 as client_name, 'f' as file_sha256"
    [statement] = queries._file_statements(
        "ok.sql",
        "-- per device: 'name' client_name, 'file' file_sha256\n"
        f"-- read with every device: client_name is null\n{view}",
    )
    assert statement.every_device_when_null == "client_name"
    with pytest.raises(queries.QueryFileError, match="not read per device"):
        queries._file_statements(
            "bad.sql", f"-- read with every device: client_name is null\n{view}"
        )


@pytest.mark.parametrize("by_kind", [True, False])
@pytest.mark.parametrize("nameless", [None, "client_name"])
def test_the_touched_rows_come_once_whichever_way_they_are_read(
    by_kind: bool, nameless: str | None
) -> None:
    """A kept table read one kind at a time gives each row once (a row of a touched name in
    a touched file, too), the same rows as the kinds tested together; the rows of no name
    come with every device where the view says so."""
    con = duckdb.connect()
    con.execute("create schema patch")
    con.execute(
        "create table patch.touched as select * from "
        "(values ('name', 'PC1'), ('file', 'F2'), ('hwid', 'H1')) t(kind, key)"
    )
    con.execute(
        "create table rows as select * from (values ('PC1', 'F1'), ('PC1', 'F2'), "
        "('PC2', 'F2'), ('PC2', 'F1'), (null, 'F1'), (null, 'F2'), ('PC1', null)) "
        "t(client_name, file_sha256)"
    )
    statement = queries.Statement(
        file="test.sql",
        sql="",
        creates="rows",
        object_kind="view",
        materialize="run",
        per_device=(("'name'", "client_name"), ("'file'", "file_sha256")),
        every_device_when_null=nameless,
    )
    sql = patch.touched_rows("rows", statement, frozenset({"name", "file"}), by_kind=by_kind)
    got = sorted(con.execute(sql).fetchall(), key=repr)
    expected = [("PC1", "F1"), ("PC1", "F2"), ("PC1", None), ("PC2", "F2"), (None, "F2")]
    if nameless:
        expected.append((None, "F1"))
    assert got == sorted(expected, key=repr)
    # by name alone: the touched file's other rows are not read
    by_name = patch.touched_rows("rows", statement, frozenset({"name"}), by_kind=by_kind)
    assert ("PC2", "F2") not in con.execute(by_name).fetchall()


@pytest.mark.parametrize("max_parts", [patch.MAX_PARTS, 2])
def test_a_state_patched_from_a_patched_state_equals_it_computed_whole(
    tmp_path: Path, fleet: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, max_parts: int
) -> None:
    """Two batches, each patched: the second state's views are kept in three parts (the
    fleet's rows, less those of the devices each batch touched, and each batch's rows), or
    written whole again once they have `max_parts` parts. Files no state reads are removed at
    once here: the parts a state reads stay."""
    monkeypatch.setattr(patch, "MAX_PARTS", max_parts)
    monkeypatch.setattr(kept, "STALE_SECONDS", -1.0)
    fleet_lake, bundle = fleet
    lake = tmp_path / "lake"
    shutil.copytree(fleet_lake, lake)
    for n, make in enumerate([new_server_and_site, the_same_devices_on_another_server]):
        ingest([make(tmp_path / f"batch-{n}", bundle)], IngestOptions(lake=lake))
        connect(lake).close()
    whole = tmp_path / "whole"
    shutil.copytree(lake, whole, ignore=shutil.ignore_patterns(kept.DERIVED_DIR))
    connect(whole).close()
    for view in materialize.lake_views():
        assert kept_rows(lake, view) == kept_rows(whole, view), view
    path = materialize.current_file(lake, "cal_events")
    assert path is not None
    parts, drops = kept.parts_of(path)
    if max_parts == 2:
        assert (len(parts), drops) == (1, None)
    else:
        assert len(parts) == 3
        assert drops is not None


@pytest.mark.parametrize("failing_view", ["cal_facts_keyed", "licenses"])
def test_a_patch_that_fails_computes_the_rest_whole(
    tmp_path: Path, fleet: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, failing_view: str
) -> None:
    """An error while patching a view (a bug, a file gone) costs the patch, not the
    session: that view and those above are computed whole, and the state is right. (The
    state view cal_facts_keyed, patched first, is then computed whole too.)"""
    fleet_lake, bundle = fleet
    lake = tmp_path / "lake"
    shutil.copytree(fleet_lake, lake)
    ingest([new_server_and_site(tmp_path / "batch", bundle)], IngestOptions(lake=lake))
    compute = patch.Patcher.compute
    given_up: list[str | None] = []

    def failing(self: patch.Patcher, statement: Any, below: Any) -> None:
        if statement.creates == failing_view:
            raise duckdb.IOException("the base's file went away")
        compute(self, statement, below)

    close = patch.Patcher.close

    def spied(self: patch.Patcher) -> None:
        given_up.append(self.reason)
        close(self)

    monkeypatch.setattr(patch.Patcher, "compute", failing)
    monkeypatch.setattr(patch.Patcher, "close", spied)
    connect(lake).close()
    assert any(reason and f"patching {failing_view}" in reason for reason in given_up)
    events_patched = failing_view != "cal_facts_keyed"
    cal_events = materialize.current_file(lake, "cal_events")
    assert (kept.parts_of(cal_events)[1] is not None) == events_patched  # type: ignore[arg-type]
    assert kept.parts_of(materialize.current_file(lake, "licenses"))[1] is None  # type: ignore[arg-type]
    whole = tmp_path / "whole"
    shutil.copytree(lake, whole, ignore=shutil.ignore_patterns(kept.DERIVED_DIR))
    connect(whole).close()
    for view in materialize.lake_views():
        assert kept_rows(lake, view) == kept_rows(whole, view), view


def _trace(folder: Path, name: str, lines: list[str]) -> Path:
    """A trace file of the fleet's server (LS01, by its path) holding `lines`."""
    folder.mkdir(parents=True)
    stamp = "[0]13B0.2000::{}/2025-10:00:00.000000 [lserver]"
    text = "".join(f"{stamp.format(day)}{line}\r\n" for day, line in lines)
    (folder / f"LS01_{name}_trace.txt").write_text(text, encoding="utf-8")
    return folder


def test_a_fact_naming_no_computer_is_read_with_its_license(
    tmp_path: Path, fleet: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Trace lines naming a license id but no computer (one lake's request, another's
    renewal) are facts of that license: once they are in the base, a batch touching its
    device computes them again (they are not found by name), and the state equals it
    computed whole."""
    fleet_lake, bundle = fleet
    lake = tmp_path / "lake"
    shutil.copytree(fleet_lake, lake)
    [fleet_trace] = bundle.rglob("*lserver_trace.txt")
    issued = [
        line.split(" [lserver]")[1]
        for line in fleet_trace.read_text(encoding="utf-8").splitlines()
        if "TLSIssueLicense" in line and "ClientName=" in line and "LicenseId=" in line
    ]
    device = issued[0].split("ClientName=")[1].split()[0]
    ids = [
        (line.split("LicenseId=")[1].split()[0], line.split("KeyPackId=")[1].split()[0])
        for line in issued
        if f"ClientName={device} " in line
    ]
    nameless = [
        (day, line)
        for license_id, keypack in ids
        for day, line in [
            ("03/20", f"TLSRequestLicense: Operation=request LicenseId={license_id} Result=Ok"),
            (
                "03/21",
                f"TLSRenewLicense: Operation=renew LicenseId={license_id} "
                f"KeyPackId={keypack} Result=Success",
            ),
        ]
    ]
    ingest([_trace(tmp_path / "nameless" / "LS01", "nameless", nameless)], IngestOptions(lake=lake))
    connect(lake).close()
    later = [("04/02", f"TLSRequestLicense: Operation=request ClientName={device} Result=Ok")]
    ingest([_trace(tmp_path / "later" / "LS01", "later", later)], IngestOptions(lake=lake))
    touched: list[set[str]] = []
    close = patch.Patcher.close

    def spied(self: patch.Patcher) -> None:
        if self.state == "ready":
            keys = self.con.execute("select key from patch.touched where kind = 'triple'")
            touched.append({key for (key,) in keys.fetchall()})
        close(self)

    monkeypatch.setattr(patch.Patcher, "close", spied)
    connect(lake).close()
    assert {f"LS01/g0/{license_id}" for license_id, _ in ids} <= touched[0]
    whole = tmp_path / "whole"
    shutil.copytree(lake, whole, ignore=shutil.ignore_patterns(kept.DERIVED_DIR))
    connect(whole).close()
    for view in materialize.lake_views():
        assert kept_rows(lake, view) == kept_rows(whole, view), view
    con = duckdb.connect()
    events = materialize.current_file(lake, "cal_events")
    assert events is not None
    kept.attach(con, "events", "files", events)
    [(facts,)] = con.execute(
        "select count(*) from events where client_name is null and source = 'trace'"
    ).fetchall()
    assert facts >= len(nameless)


def test_a_finding_whose_own_columns_change_has_its_excess_computed_again(
    tmp_path: Path, fleet: tuple[Path, Path]
) -> None:
    """An excess row carries its finding's cause, confidence and alternative: when they
    change (here: the base's copy of one finding altered, the batch touching none of its
    devices), every excess row of that finding is computed again, not only those of the
    licenses and names the batch touched."""
    fleet_lake, bundle = fleet
    lake = tmp_path / "lake"
    shutil.copytree(fleet_lake, lake)
    con = duckdb.connect()
    findings = materialize.current_file(lake, "findings")
    excess = materialize.current_file(lake, "excess_licenses")
    assert findings is not None
    assert excess is not None
    [(kind, subject)] = con.execute(
        "select subject_kind, subject from read_parquet($p) "
        "where waste and len(excess_licenses) > 0 order by subject limit 1",
        {"p": str(findings)},
    ).fetchall()
    altered = "case when subject_kind = $k and subject = $s then 'altered' else confidence end"
    for path in (findings, excess):
        copy = tmp_path / path.name
        con.execute(
            f"copy (select * replace ({altered} as confidence) from read_parquet($p)) "
            f"to '{copy}' (format parquet)",
            {"p": str(path), "k": kind, "s": subject},
        )
        shutil.copy(copy, path)
    ingest([new_server_and_site(tmp_path / "batch", bundle)], IngestOptions(lake=lake))
    connect(lake).close()
    patched = materialize.current_file(lake, "excess_licenses")
    assert patched is not None
    assert kept.parts_of(patched)[1] is not None  # patched, not computed whole
    kept.attach(con, "excess", "files", patched)
    assert con.execute(
        "select count(*) from excess where subject_kind = $k and subject = $s",
        {"k": kind, "s": subject},
    ).fetchall() != [(0,)]
    assert con.execute("select count(*) from excess where confidence = 'altered'").fetchall() == [
        (0,)
    ]
    whole = tmp_path / "whole"
    shutil.copytree(lake, whole, ignore=shutil.ignore_patterns(kept.DERIVED_DIR))
    connect(whole).close()
    assert kept_rows(lake, "excess_licenses") == kept_rows(whole, "excess_licenses")


def test_a_patched_state_whose_parts_are_gone_is_computed_again(
    tmp_path: Path, fleet: tuple[Path, Path]
) -> None:
    """A patched state reads its base's files; once they are removed (the lake moved on to
    other queries, whose sessions remove other states' files), that state is built again
    (here whole: no base is left) rather than read with a file missing."""
    fleet_lake, bundle = fleet
    lake = tmp_path / "lake"
    shutil.copytree(fleet_lake, lake)
    base = kept.fingerprint(lake)
    ingest([new_server_and_site(tmp_path / "batch", bundle)], IngestOptions(lake=lake))
    connect(lake).close()
    cal_events = materialize.current_file(lake, "cal_events")
    assert cal_events is not None
    assert kept.parts_of(cal_events)[1] is not None  # patched: the base's file is a part
    for path in kept.directory(lake).glob(f"*-{base}.parquet"):
        path.unlink()
    assert materialize.current_file(lake, "cal_events") is None
    assert patch.find_base(lake, kept.fingerprint(lake), materialize.lake_views()) is None
    connect(lake).close()
    rebuilt = materialize.current_file(lake, "cal_events")
    assert rebuilt is not None
    assert kept.parts_of(rebuilt) == ([rebuilt], None)
    whole = tmp_path / "whole"
    shutil.copytree(lake, whole, ignore=shutil.ignore_patterns(kept.DERIVED_DIR))
    connect(whole).close()
    for view in materialize.lake_views():
        assert kept_rows(lake, view) == kept_rows(whole, view), view


def test_a_base_with_a_counted_license_of_no_name_is_computed_whole(
    tmp_path: Path, fleet: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Licenses without a computer name are ordered as one holder's across the fleet
    (licenses.excess_by_name): no device's rows could be patched alone."""
    fleet_lake, bundle = fleet
    lake = tmp_path / "lake"
    shutil.copytree(fleet_lake, lake)
    licenses = materialize.current_file(lake, "licenses")
    assert licenses is not None
    duckdb.execute(
        "copy (select * replace (case when row_number() over (order by counted desc, "
        "license_key) = 1 then null "
        "else client_name end as client_name) from read_parquet($p)) to '"
        + str(tmp_path / "nameless.parquet")
        + "' (format parquet)",
        {"p": str(licenses)},
    )
    shutil.copy(tmp_path / "nameless.parquet", licenses)
    ingest([new_server_and_site(tmp_path / "batch", bundle)], IngestOptions(lake=lake))
    reasons: list[str | None] = []
    close = patch.Patcher.close

    def spied(self: patch.Patcher) -> None:
        reasons.append(self.reason)
        close(self)

    monkeypatch.setattr(patch.Patcher, "close", spied)
    connect(lake).close()
    assert any(r and "issued to no computer name" in r for r in reasons)


def test_the_shell_reads_a_patched_state_in_parts(tmp_path: Path, fleet: tuple[Path, Path]) -> None:
    """The DuckDB shell's init script reads a patched view's parts less its dropped rows,
    paths relative to the lake as ever: the same rows as a caltrail session."""
    from tests.pipeline.test_shell import run_shell

    fleet_lake, bundle = fleet
    lake = tmp_path / "lake"
    shutil.copytree(fleet_lake, lake)
    ingest([new_server_and_site(tmp_path / "batch", bundle)], IngestOptions(lake=lake))
    connect(lake).close()  # patched, and the script written again
    script = (lake / "caltrail.sql").read_text(encoding="utf-8")
    assert kept.DROPS_SUFFIX in script
    assert str(tmp_path) not in script
    views = [s.creates for s in queries.statements() if s.patched and s.materialize == "lake"]
    # (the shell is another DuckDB version: rows are counted, not compared as text)
    digest = "count(*), count(distinct v::varchar)"
    ask = "".join(f"select '{view}', {digest} from {view} as v;\n" for view in views)
    shell = run_shell(ask, tmp_path, "lake/caltrail.sql").split()
    con = connect(lake)
    try:
        for view in views:
            [(count, rows)] = con.execute(f"select {digest} from {view} as v").fetchall()
            assert f"{view},{count},{rows}" in shell, view
    finally:
        con.close()


def test_a_fleet_with_a_regeneration_wave_is_patched_alike(tmp_path: Path) -> None:
    """A regeneration wave is a finding of the fleet: its excess CALs are those of every
    name of the wave, which a batch elsewhere does not touch. The patched state lists them
    as the state computed whole does (excess_licenses patched too)."""
    bundle, lake = tmp_path / "fleet", tmp_path / "lake"
    simulate_regeneration_wave(bundle)
    ingest([bundle], IngestOptions(lake=lake))
    con = connect(lake)
    try:
        [(waves,)] = con.execute(
            "select count(*) from findings where subject_kind = 'fleet'"
        ).fetchall()
    finally:
        con.close()
    assert waves == 1  # (else this would test nothing)
    ingest([new_server_and_site(tmp_path / "batch", bundle)], IngestOptions(lake=lake))
    whole = tmp_path / "whole"
    shutil.copytree(lake, whole, ignore=shutil.ignore_patterns(kept.DERIVED_DIR))
    connect(lake).close()
    assert kept.parts_of(materialize.current_file(lake, "excess_licenses"))[1] is not None  # type: ignore[arg-type]
    connect(whole).close()
    for view in materialize.lake_views():
        assert kept_rows(lake, view) == kept_rows(whole, view), view
