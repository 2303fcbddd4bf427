"""Views kept in the lake (caltrail/pipeline/materialize.py, declared `materialize: lake` in
caltrail/queries): cal_events computed once per state of the lake, reused by later sessions,
rebuilt after an ingest, a temp table when the lake cannot be written; and the shell's init
script, which reads them and opens a copied or read-only lake."""

from __future__ import annotations

import io
import os
import re
import stat
import tempfile
from pathlib import Path

import pytest

from caltrail import queries
from caltrail.fixtures.simulator import simulate
from caltrail.pipeline import kept, materialize
from caltrail.pipeline.diagnose import open_case
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.session import connect, init_script_text, refresh


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("derived")
    first, second = base / "first", base / "second"
    simulate(first, seed=61, devices=20, days=30)
    simulate(second, seed=62, devices=20, days=30)
    return first, second


def kind_of(con: object, name: str) -> str:
    rows = con.execute(  # type: ignore[attr-defined]
        "select 'view' from duckdb_views() where view_name = $n and not temporary "
        "union all select 'table' from duckdb_tables() where table_name = $n",
        {"n": name},
    ).fetchall()
    return ",".join(sorted(r[0] for r in rows))


def definition(con: object) -> str:
    row = con.execute(  # type: ignore[attr-defined]
        "select sql from duckdb_views() where view_name = 'cal_events'"
    ).fetchone()
    return str(row[0])


def test_built_once_reused_and_rebuilt_after_ingest(
    tmp_path: Path, bundles: tuple[Path, Path]
) -> None:
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    # a session without derived tables leaves cal_events the live view (the layers above it
    # are not loaded: bound live, they take seconds and add nothing here)
    con = connect(lake, derive=False, through="40_cal_events")
    assert "read_parquet" not in definition(con)
    assert materialize.current_file(lake, "cal_events") is None
    live = con.execute("select count(*) from cal_events").fetchone()
    con.close()

    # the first session that needs them builds them once, in the lake
    con = open_case(lake)
    first = materialize.current_file(lake, "cal_events")
    assert first is not None
    assert first.parent.name == kept.DERIVED_DIR
    assert con.execute("select count(*) from cal_events").fetchone() == live
    con.close()
    # the next session reads the file, and so does the shell's init script
    con = connect(lake)
    assert "read_parquet" in definition(con)
    assert con.execute("select count(*) from cal_events").fetchone() == live
    con.close()
    assert first.name in init_script_text(lake)

    # an ingest changes the manifest: the file no longer matches, the next diagnosis rebuilds
    ingest([bundles[1]], IngestOptions(lake=lake))
    assert materialize.current_file(lake, "cal_events") is None
    con = connect(lake, derive=False, through="40_cal_events")
    assert "read_parquet" not in definition(con)
    fresh = con.execute("select count(*) from cal_events").fetchone()
    con.close()
    assert fresh is not None
    assert live is not None
    assert fresh[0] > live[0]
    assert materialize.current_file(lake, "cal_events") is None  # derive=False never writes
    con = connect(lake)  # a plain session builds the new state's file
    second = materialize.current_file(lake, "cal_events")
    assert second is not None
    assert second != first
    assert "read_parquet" in definition(con)
    con.close()
    refresh(lake)
    assert (
        materialize.current_file(lake, "cal_events") == second
    )  # already current: nothing rebuilt
    con = connect(lake)
    assert con.execute("select count(*) from cal_events").fetchone() == fresh
    con.close()


def test_a_session_through_a_layer_defines_no_layer_above(
    tmp_path: Path, bundles: tuple[Path, Path]
) -> None:
    """`connect(through=...)` (verify's session) stops loading queries/ after that file: the
    accounting is there, cal_events and the findings are not, and nothing is derived."""
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    con = connect(lake, derive=False, through="15_accounting")
    views = {v for (v,) in con.execute("select view_name from duckdb_views()").fetchall()}
    assert {"events", "parse_errors", "ingest_accounting"} <= views
    assert not views & {"cal_events", "licensing_events", "findings", "revoke_plan"}
    assert con.execute("select bool_and(balanced) from ingest_accounting").fetchone() == (True,)
    con.close()
    assert materialize.current_file(lake, "cal_events") is None


def test_a_session_names_each_table_it_builds(tmp_path: Path, bundles: tuple[Path, Path]) -> None:
    """`connect(on_build=...)` (the CLI's progress line) is told of each table before it is
    built, in build order with its step of all; a later session, which builds nothing, is
    told nothing."""
    from caltrail.pipeline import per_run

    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    calls: list[tuple[str, int, int]] = []
    connect(lake, on_build=lambda *call: calls.append(call)).close()
    views = materialize.lake_views()
    kept_per_run = list(per_run.KEPT_PER_RUN)
    of_the_state = queries.declared("state")  # (temp tables of the building session)
    steps = len(kept_per_run) + len(views) + len(of_the_state)
    # (in the order queries/ defines them: the licensing records, licensing_problems, the
    # trace facts, ...)
    assert sorted(table for table, _, _ in calls) == sorted([*kept_per_run, *views, *of_the_state])
    assert [(step, of) for _, step, of in calls] == [(n, steps) for n in range(1, steps + 1)]
    assert [table for table, _, _ in calls if table in views] == views
    calls.clear()
    open_case(lake, on_build=lambda *call: calls.append(call)).close()
    assert calls == []


def test_persisted_equals_live(tmp_path: Path, bundles: tuple[Path, Path]) -> None:
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    # every derived table computed live first (no copy in the lake yet; the exports and the
    # search, which no derived table reads, are not loaded): the layers are loaded one file at a time and
    # each derived table is computed right after its file, into a temp table of its name
    # that the views above then read, as a session's temp fallback does (bound over the
    # whole live tree below, each view above took minutes)
    con = connect(lake, derive=False, through="35_trace_licensing")
    computed: list[str] = []
    loaded = {s.creates for s in queries.statements(through="35_trace_licensing")}
    for table in materialize.lake_views():
        if table in loaded:  # (licensing_problems: bound live below cal_events, cheaply)
            con.execute(f"create temp table live_{table} as select * from main.{table}")
            computed.append(table)
    for statement in queries.statements():
        if statement.file <= "35_trace_licensing.sql" or statement.file >= "60":
            continue
        con.execute(materialize.generated_sql(con, statement))
        if statement.materialize == "lake" and statement.creates:
            table = statement.creates
            con.execute(f"create temp table live_{table} as select * from main.{table}")
            con.execute(f"create temp table {table} as select * from live_{table}")
            computed.append(table)
    assert computed == materialize.lake_views()
    # ... equals the copy a diagnosis keeps, row for row and type for type
    open_case(lake).close()
    for table in materialize.lake_views():
        kept_file = materialize.current_file(lake, table)
        assert kept_file is not None, table
        con.execute("set variable kept = $p", {"p": str(kept_file)})
        for query in (
            f"select * from live_{table} except all select * from read_parquet(getvariable('kept'))",
            f"select * from read_parquet(getvariable('kept')) except all select * from live_{table}",
        ):
            assert con.execute(f"select count(*) from ({query})").fetchone() == (0,), table
        types = con.execute("describe select * from read_parquet(getvariable('kept'))").fetchall()
        live = con.execute(f"describe live_{table}").fetchall()
        assert [t[:2] for t in types] == [t[:2] for t in live], table
    assert con.execute("select count(*) from live_findings").fetchone() != (0,)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through read-only permissions")
def test_read_only_lake_falls_back_to_a_temp_table(
    tmp_path: Path, bundles: tuple[Path, Path]
) -> None:
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    connect(lake).close()  # the lake prepared (reference tables in place)
    mode = lake.stat().st_mode
    lake.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        con = open_case(lake)
        assert kind_of(con, "cal_events") == "table,view"
        assert not (lake / kept.DERIVED_DIR).exists()
        assert con.execute("select count(*) from findings").fetchone() is not None
    finally:
        lake.chmod(mode)


def test_unwritable_derived_dir_falls_back_to_a_temp_table(
    tmp_path: Path, bundles: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    monkeypatch.setattr(kept, "writable", lambda directory: False)
    con = connect(lake)
    assert materialize.current_file(lake, "cal_events") is None
    assert kind_of(con, "cal_events") == "table,view"
    for view in materialize.lake_views():
        assert kind_of(con, view) == "table,view", view  # each one a temp table


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_is_told_while_the_derived_table_is_built(
    tmp_path: Path, bundles: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from caltrail.pipeline.progress import derived_notice

    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with derived_notice(lake) as on_build:
        assert on_build is not None
        connect(lake, on_build=on_build).close()
    said = terminal.getvalue()
    # (the opening line may be replaced before the spinner's first frame: a fast build
    # shows only the per-table lines)
    assert "once per state of the lake" in said
    # each table named as it is built (those the spinner's frames caught)
    assert re.search(r"Computing \w+ \(\d+/\d+; once per state of the lake\)", said)
    assert materialize.current_file(lake, "cal_events") is not None

    quiet = _Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    with derived_notice(lake) as on_build:  # current now: nothing to say
        assert on_build is None
        connect(lake).close()
    assert quiet.getvalue() == ""


def test_ingest_derive_builds_them_with_the_run(tmp_path: Path, bundles: tuple[Path, Path]) -> None:
    from typer.testing import CliRunner

    from caltrail.pipeline.cli import app

    runner = CliRunner()
    plain, derive = tmp_path / "plain", tmp_path / "derive"
    done = runner.invoke(app, ["ingest", str(bundles[0]), "--lake", str(plain), "--json"])
    assert done.exit_code == 0, done.output
    assert materialize.current_file(plain, "cal_events") is None  # by default the first query pays
    done = runner.invoke(
        app, ["ingest", str(bundles[0]), "--lake", str(derive), "--json", "--derive"]
    )
    assert done.exit_code == 0, done.output
    for table in materialize.lake_views():
        assert materialize.current_file(derive, table) is not None, table
    # and the shell's init script reads them
    assert "_derived" in (derive / "caltrail.sql").read_text(encoding="utf-8")


def test_a_session_spills_into_its_own_temp_folder(
    tmp_path: Path, bundles: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a large diagnosis spills goes to a folder of the system's temp folder, gone when
    the session closes (DuckDB's default, `.tmp` in the current folder, once left 51 GB in
    a user's working folder)."""
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    con = connect(lake)
    spill = Path(str(con.execute("select current_setting('temp_directory')").fetchone()[0]))
    assert spill.parent == Path(tempfile.gettempdir())
    con.execute("set memory_limit = '64MB'")
    con.execute("set preserve_insertion_order = false")
    sql = "select count(*) from (select md5(range::varchar) as m from range(2000000) order by m)"
    assert con.execute(sql).fetchone() == (2_000_000,)
    assert spill.is_dir()  # (the sort did not fit in 64 MB)
    con.close()
    assert not spill.exists()
    assert list(work.iterdir()) == []


def test_a_sessions_views_are_created_unbound_and_answer_as_bound_ones(
    tmp_path: Path, bundles: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    connect(lake).close()  # (the kept views built)
    bound_state = "select is_bound from duckdb_views() where view_name = 'revoke_steps'"
    plan = "select * from revoke_steps order by all"
    con = connect(lake)
    assert con.execute(bound_state).fetchone() == (False,)
    unbound = con.execute(plan).fetchall()
    assert con.execute(bound_state).fetchone() == (True,)  # bound by the query
    con.close()
    monkeypatch.setattr(materialize, "_defers", lambda: False)  # as before the option
    con = connect(lake)
    assert con.execute(bound_state).fetchone() == (True,)
    assert con.execute(plan).fetchall() == unbound
    assert unbound  # (the sample's plan has steps)
    con.close()
