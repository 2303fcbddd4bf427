"""Views kept per ingest run (pipeline/per_run.py; the trace facts, and the EVTX licensing
records for the first two tests): a diagnosis after a batch computes the rows of the batch's
files alone, and what the kept parts give equals the live view, after a second batch, a
forced re-ingest, a merge of parts and new patterns."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from caltrail import queries
from caltrail.fixtures.simulator import simulate
from caltrail.pipeline import kept as kept_store
from caltrail.pipeline import materialize, per_run
from caltrail.pipeline.diagnose import open_case
from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.session import connect, init_script_text


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("trace_facts")
    first, second = base / "first", base / "second"
    simulate(first, seed=71, devices=20, days=20)
    simulate(second, seed=72, devices=20, days=20, license_server="LS-SECOND")
    return first, second


KEPT = [per_run.TRACE, per_run.LICENSING]


def live_facts(lake: Path, table: per_run.RunTable = per_run.TRACE) -> list[tuple[object, ...]]:
    """The rows computed live from every source row (the declared statement run again over
    the whole input, whatever is kept)."""
    con = connect(lake, derive=False, through=Path(table.layer).stem)
    try:
        (declared,) = [s for s in queries.statements() if s.creates == table.table]
        con.execute(f"create or replace view {table.input} as select * from {table.source}")
        con.execute(declared.sql)
        return sorted(con.execute(f"select * from {table.table}").fetchall(), key=repr)
    finally:
        con.close()


def kept_facts(lake: Path, table: per_run.RunTable = per_run.TRACE) -> list[tuple[object, ...]]:
    con = open_case(lake)
    try:
        assert f"{table.table}_parts" in view_sql(con, table.table)  # read from the kept parts
        return sorted(con.execute(f"select * from {table.table}").fetchall(), key=repr)
    finally:
        con.close()


def view_sql(con: duckdb.DuckDBPyConnection, view: str = per_run.TRACE.table) -> str:
    row = con.execute(
        "select sql from duckdb_views() where view_name = $view and not temporary",
        {"view": view},
    ).fetchone()
    return str(row[0]) if row else ""


def listed_parts(lake: Path, table: per_run.RunTable = per_run.TRACE) -> list[str]:
    """The parts the index lists."""
    loaded = json.loads((table.directory(lake.resolve()) / "index.json").read_text())
    return [str(p) for p in loaded["parts"]]


def part_runs(
    lake: Path, part: str, table: per_run.RunTable = per_run.TRACE
) -> set[tuple[str, str]]:
    keys = table.directory(lake.resolve()) / f"{part}.keys.parquet"
    rows = duckdb.execute("select * from read_parquet($p)", {"p": str(keys)}).fetchall()
    return {(str(a), str(b)) for a, b in rows}


def visible_trace_runs(lake: Path, source: str = per_run.TRACE.source) -> set[tuple[str, str]]:
    con = connect(lake, derive=False, through="10_sources")  # (builds nothing)
    try:
        rows = con.execute(f"select distinct file_sha256, run_id from {source}").fetchall()
        return {(str(a), str(b)) for a, b in rows}
    finally:
        con.close()


def first_bundle_kept(tmp_path: Path, bundles: tuple[Path, Path]) -> Path:
    """A lake with the first bundle ingested and its trace facts kept."""
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    kept_facts(lake)
    return lake


def edited_queries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of queries/*.sql that the fingerprints read instead (to edit one)."""
    import shutil

    from caltrail import queries

    copies = tmp_path / "queries"
    copies.mkdir()
    for path in queries.sql_files():
        shutil.copy(path, copies / path.name)
    monkeypatch.setattr(queries, "sql_files", lambda: sorted(copies.glob("*.sql")))
    return copies


@pytest.mark.parametrize("table", KEPT, ids=[t.table for t in KEPT])
def test_a_batch_computes_its_own_runs_and_equals_live(
    tmp_path: Path, bundles: tuple[Path, Path], table: per_run.RunTable
) -> None:
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    first_runs = visible_trace_runs(lake, table.source)
    assert first_runs, "the simulated bundle has files of this source"
    assert kept_facts(lake, table) == live_facts(lake, table)
    [first_part] = listed_parts(lake, table)
    assert part_runs(lake, first_part, table) == first_runs

    ingest([bundles[1]], IngestOptions(lake=lake))
    # the new state of the lake is not covered until a session computes the batch's runs
    assert table.complete_parts(lake) is None
    kept = kept_facts(lake, table)
    parts = listed_parts(lake, table)
    assert parts[0] == first_part
    assert len(parts) == 2
    assert part_runs(lake, parts[1], table) == visible_trace_runs(lake, table.source) - first_runs
    assert kept == live_facts(lake, table)
    assert {row[-1] for row in kept} >= {run for _, run in first_runs}
    # and the shell's init script reads the parts too
    assert f"{table.table}-" in init_script_text(lake)


@pytest.mark.parametrize("table", KEPT, ids=[t.table for t in KEPT])
def test_a_forced_reingest_hides_the_older_run(
    tmp_path: Path, bundles: tuple[Path, Path], table: per_run.RunTable
) -> None:
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    before = kept_facts(lake, table)
    ingest([bundles[0]], IngestOptions(lake=lake, force=True))
    after = kept_facts(lake, table)
    assert len(after) == len(before)  # the same rows, of the new run only
    assert {row[-1] for row in after}.isdisjoint({row[-1] for row in before})
    assert after == live_facts(lake, table)


def test_parts_are_merged(
    tmp_path: Path, bundles: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(per_run, "MAX_PARTS", 1)
    lake = first_bundle_kept(tmp_path, bundles)
    ingest([bundles[0]], IngestOptions(lake=lake, force=True))  # an older run to drop
    ingest([bundles[1]], IngestOptions(lake=lake))
    kept = kept_facts(lake)
    parts = listed_parts(lake)
    assert len(parts) == 1
    assert part_runs(lake, parts[0]) == visible_trace_runs(lake)  # no run of the old one
    assert kept == live_facts(lake)


def test_new_patterns_recompute_every_run(tmp_path: Path, bundles: tuple[Path, Path]) -> None:
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    kept_facts(lake)
    old = per_run.TRACE.directory(lake.resolve())
    patterns = tmp_path / "patterns.csv"
    patterns.write_text(
        '"name","module_regex","regex","captures","operation","priority","example","note"\n'
        '"simulator","","","","","","",""\n',  # the simulator's wording switched off
        encoding="utf-8",
    )
    ingest([bundles[1]], IngestOptions(lake=lake, patterns=patterns))
    new = per_run.TRACE.directory(lake.resolve())
    assert new != old
    kept = kept_facts(lake)
    assert kept == live_facts(lake)
    assert all(row[10] != "simulator" for row in kept)  # (the pattern column)
    assert part_runs(lake, listed_parts(lake)[0]) == visible_trace_runs(lake)


def test_a_part_left_by_a_killed_session_is_ignored(
    tmp_path: Path, bundles: tuple[Path, Path]
) -> None:
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    folder = per_run.TRACE.directory(lake.resolve())
    folder.mkdir(parents=True)
    # facts written, then killed before the keys file and the index
    (folder / "part-000001-deadbeef.parquet").write_bytes(b"PAR1 not finished")
    assert kept_facts(lake) == live_facts(lake)
    assert "part-000001-deadbeef" not in listed_parts(lake)


def test_two_sessions_at_once_compute_the_runs_once(
    tmp_path: Path, bundles: tuple[Path, Path]
) -> None:
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    connect(lake, derive=False, through="10_sources").close()  # prepared before the race
    script = (
        "import sys; from pathlib import Path; from caltrail.pipeline.diagnose import open_case; "
        "open_case(Path(sys.argv[1])).close()"
    )
    root = Path(__file__).resolve().parents[2]
    racers = [
        subprocess.Popen([sys.executable, "-c", script, str(lake)], cwd=root) for _ in range(2)
    ]
    assert [racer.wait(timeout=300) for racer in racers] == [0, 0]
    # the second waited, then found the runs covered: one part was ever written
    assert len(listed_parts(lake)) == 1
    assert len(list(per_run.TRACE.directory(lake.resolve()).glob("part-*.parquet"))) == 2
    assert kept_facts(lake) == live_facts(lake)


def test_only_an_edit_up_to_the_trace_layer_starts_them_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:

    lake = tmp_path / "lake"
    (lake / "ingest_files").mkdir(parents=True)
    copies = edited_queries(tmp_path, monkeypatch)
    trace_stamp, lake_stamp = per_run.TRACE.directory(lake), kept_store.fingerprint(lake)

    with open(copies / "55_plans.sql", "a", encoding="utf-8") as later:
        later.write("\n-- an edit of a later layer\n")
    assert kept_store.fingerprint(lake) != lake_stamp  # the derived tables are built again
    assert per_run.TRACE.directory(lake) == trace_stamp  # the trace facts are kept

    with open(copies / per_run.TRACE.layer, "a", encoding="utf-8") as own:
        own.write("\n-- an edit of the trace layer\n")
    assert per_run.TRACE.directory(lake) != trace_stamp


def test_the_shell_after_a_batch_reads_the_kept_facts_and_the_batchs_live(
    tmp_path: Path, bundles: tuple[Path, Path]
) -> None:
    from caltrail.pipeline.shell import duckdb_cli

    binary = duckdb_cli()
    assert binary, "duckdb-cli is a dependency of caltrail"
    lake = tmp_path / "lake"
    ingest([bundles[0]], IngestOptions(lake=lake))
    kept_facts(lake)  # the first bundle's facts kept
    ingest([bundles[1]], IngestOptions(lake=lake))  # writes the init script
    script = (lake / "caltrail.sql").read_text(encoding="utf-8")
    assert "anti join read_parquet" in script  # the second bundle's runs: computed live
    expected = len(live_facts(lake))
    batch = len(visible_trace_runs(lake)) - len(part_runs(lake, listed_parts(lake)[0]))
    out = subprocess.run(
        [
            binary,
            "-init",
            "caltrail.sql",
            "-csv",
            "-noheader",
            "-c",
            "select count(*) from trace_licensing; "
            "select count(distinct (file_sha256, run_id)) from trace_licensing_input",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=lake,
        check=True,
    ).stdout.split()
    assert out[-2:] == [str(expected), str(batch)]


def test_kept_facts_still_cover_the_lake_after_an_edit_of_a_later_layer(
    tmp_path: Path, bundles: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:

    lake = first_bundle_kept(tmp_path, bundles)
    assert per_run.TRACE.complete_parts(lake) is not None
    copies = edited_queries(tmp_path, monkeypatch)
    with open(copies / "40_cal_events.sql", "a", encoding="utf-8") as later:
        later.write("\n-- an edit of a later layer\n")
    assert materialize.current_file(lake, "cal_events") is None  # cal_events is built again ...
    assert per_run.TRACE.complete_parts(lake) is not None  # ... from the kept facts
    ingest([bundles[1]], IngestOptions(lake=lake))
    assert per_run.TRACE.complete_parts(lake) is None  # new runs: not covered


def test_unlisted_parts_and_other_stamps_are_removed_once_stale(
    tmp_path: Path, bundles: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(per_run, "MAX_PARTS", 1)
    lake = first_bundle_kept(tmp_path, bundles)
    folder = per_run.TRACE.directory(lake.resolve())
    other = folder.with_name("trace_licensing-0123456789abcdef01234567")  # an older stamp
    other.mkdir()
    (other / "index.json").write_text('{"parts": [], "complete": null}', encoding="utf-8")
    ingest([bundles[1]], IngestOptions(lake=lake))
    kept_facts(lake)  # two parts merged into one: the two stay a while for open sessions
    assert len(list(folder.glob("part-*.keys.parquet"))) == 3
    assert other.is_dir()

    monkeypatch.setattr(kept_store, "STALE_SECONDS", -1.0)
    ingest([bundles[1]], IngestOptions(lake=lake, force=True))
    kept = kept_facts(lake)
    listed = listed_parts(lake)
    assert sorted(p.name for p in folder.glob("part-*")) == sorted(
        f"{name}{suffix}" for name in listed for suffix in (".keys.parquet", ".parquet")
    )
    assert not other.exists()
    assert kept == live_facts(lake)
