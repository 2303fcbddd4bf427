"""Helpers for the reliability tests: run the real CLI in a subprocess, build a multi-file
input (simulated fleet + a few corpus files + parser samples + a zip), and look at a lake
the way a reader would (every view's row count, every Parquet file readable)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from caltrail.pipeline.schemas import ALL_SCHEMAS
from tools import bench

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT.parent / "shared" / "corpus"
DATA = ROOT / "tests" / "parsers" / "data"

_BIN = Path(sys.executable).parent / "caltrail"
CALTRAIL = (
    [str(_BIN)]
    if _BIN.exists()
    else [sys.executable, "-c", "from caltrail.pipeline.cli import main; main()"]
)

# A few corpus EVTX files of different shapes (when the public corpus is beside the checkout).
CORPUS_PICKS = (
    "evtx/derived/mutants/System__chunk5_rand64_seed5.evtx",
    "evtx/derived/mutants/System__trunc_mid_chunk13.evtx",
)


def run_caltrail(
    *args: str | Path, timeout: float = 300, env_tmp: Path | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run the CLI and wait; env_tmp: the TMPDIR it sees (where zip members are extracted)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.pop("CALTRAIL_LAKE", None)
    if env_tmp is not None:
        env["TMPDIR"] = str(env_tmp)
    return subprocess.run(
        [*CALTRAIL, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        check=False,
        **kwargs,
    )


def start_caltrail(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start the CLI in its own process group (killpg reaches its workers too)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", NO_COLOR="1", **(env or {}))
    env.pop("CALTRAIL_LAKE", None)
    return subprocess.Popen(
        [*CALTRAIL, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )


SLOW_WRITER = """
import os, sys, time
delay, real = float(os.environ["CALTRAIL_TEST_RENAME_DELAY"]), os.replace
def replace(src, dst, *args, **kwargs):
    time.sleep(delay)
    real(src, dst, *args, **kwargs)
os.replace = replace
import caltrail.pipeline.ingest
caltrail.pipeline.ingest.COMMIT_EVERY_SECONDS = 0.0  # a commit per file: many states to see
from caltrail.pipeline.cli import main
sys.argv = ["caltrail", *sys.argv[1:]]
main()
"""


def start_slow_caltrail(delay: float, *args: str | Path) -> subprocess.Popen[str]:
    """The CLI on a slow disk: every rename of the write protocol waits `delay` seconds and
    every file is committed on its own (parsing in a child process is fast enough for a
    whole input to fit one commit window otherwise), so an ingest passes through many
    committed states a reader can observe."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", CALTRAIL_TEST_RENAME_DELAY=str(delay))
    env.pop("CALTRAIL_LAKE", None)
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_WRITER, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate(timeout=60)


def build_input(dest: Path, with_corpus: bool = True) -> Path:
    """A multi-file input: simulated fleet (EVTX, WMI CSV, registry, TSCTST, trace text),
    the parser sample exports (WMI XML/HTML, Checkmk, tracerpt XML/CSV), a zip bundle of
    some of them, and a few corpus EVTX files when the corpus is present (else a generated
    log of the same size in their place)."""
    from caltrail.fixtures.simulator import simulate

    dest.mkdir(parents=True, exist_ok=True)
    simulate(dest / "fleet", seed=5, devices=17, days=20, trace_days=2, session_log_days=5)
    shutil.copytree(DATA / "exports", dest / "exports")
    shutil.copytree(DATA / "traces", dest / "traces")
    with zipfile.ZipFile(dest / "bundle.zip", "w", zipfile.ZIP_DEFLATED) as bundle:
        sim2 = dest / ".sim2"
        simulate(sim2, seed=6, devices=17, days=14, trace_days=1, session_log_days=2)
        for path in sorted(sim2.rglob("*")):
            if path.is_file() and path.name != "truth.json":
                bundle.write(path, f"case/{path.relative_to(sim2)}")
        shutil.rmtree(sim2)
    if with_corpus and CORPUS.is_dir():
        (dest / "corpus").mkdir()
        for rel in CORPUS_PICKS:
            source = CORPUS / rel
            if source.exists():
                shutil.copy(source, dest / "corpus" / source.name)
    elif with_corpus:
        # no corpus beside the checkout: a generated log stands for its large files (the
        # Dask tests split one and kill a worker on it)
        (dest / "corpus").mkdir()
        # (more than the 1 MiB the Dask tests split at; the bench's generator)
        bench.write_large_evtx(dest / "corpus" / "stand-in.evtx", 1_400_000)
    return dest


@pytest.fixture(scope="session")
def multi_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_input(tmp_path_factory.mktemp("input"))


@pytest.fixture(scope="session")
def baseline(multi_input: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One clean, uninterrupted ingest of `multi_input`: what every other lake must equal."""
    lake = tmp_path_factory.mktemp("clean") / "lake"
    started = time.monotonic()
    done = run_caltrail("ingest", multi_input, "--lake", lake, "--json")
    elapsed = time.monotonic() - started
    assert done.returncode in (0, 3), done.stderr
    state = lake_state(lake)
    # The corpus files add most events; without the corpus the fleet alone gives a few hundred.
    assert state["counts"]["events_all"] > (1000 if CORPUS.is_dir() else 200)
    assert state["unbalanced"] == []
    return {"state": state, "elapsed": elapsed, "rc": done.returncode, "lake": lake}


# -- looking at a lake ----------------------------------------------------------------------

# Views that are cheap and cover every raw table and the accounting.
CORE_VIEWS = (
    "ingest_files",
    "events_all",
    "events",
    "trace_events",
    "issued_license_rows",
    "keypack_rows",
    "client_hwids",
    "parse_errors",
    "ingest_accounting",
)


CORE_SQL = ("00_macros.sql", "10_sources.sql", "15_accounting.sql")


def connect_core(lake: Path) -> Any:
    """A session with the source and accounting views only (pipeline.session.connect also
    builds the diagnosis layers, which costs seconds per session on a loaded machine)."""
    import duckdb

    from caltrail import queries
    from caltrail.pipeline.session import prepare_lake

    lake = lake.resolve()
    prepare_lake(lake)
    con = duckdb.connect(":memory:")
    con.execute("set variable lake = $lake", {"lake": str(lake)})
    con.execute("set variable ref_dir = $ref", {"ref": str(lake / "_ref")})
    for path in queries.sql_files():
        if path.name in CORE_SQL:
            con.execute(path.read_text(encoding="utf-8"))
    return con


def connect_all(lake: Path) -> Any:
    from caltrail.pipeline.session import connect

    return connect(lake)


def every_view_answers(lake: Path) -> list[str]:
    """Open the lake as `caltrail sql` does (every view and macro) and read one row of each
    view; returns the view names."""
    con = connect_all(lake)
    names = view_names(con)
    for name in names:
        con.execute(f'select * from "{name}" limit 1').fetchall()
    con.close()
    return names


def view_names(con: Any) -> list[str]:
    rows = con.execute(
        "select view_name from duckdb_views() where not internal order by view_name"
    ).fetchall()
    return [r[0] for r in rows]


def lake_state(lake: Path, all_views: bool = False) -> dict[str, Any]:
    """Row counts of the views (all of them with all_views), the per-file manifest state and
    the accounting; what two lakes holding the same records agree on."""
    con = connect_all(lake) if all_views else connect_core(lake)
    names = view_names(con) if all_views else list(CORE_VIEWS)
    counts = {name: con.execute(f'select count(*) from "{name}"').fetchone()[0] for name in names}
    files = sorted(
        con.execute(
            "select path, sha256, status, records_seen, records_ok, records_bad from ingest_files"
        ).fetchall()
    )
    unbalanced = con.execute("select path from ingest_accounting where not balanced").fetchall()
    duplicated = con.execute(
        'select count(*) from (select file_sha256, record_id, chunk, "offset", count(*) n '
        "from events_all group by all having n > 1)"
    ).fetchone()[0]
    con.close()
    return {
        "counts": counts,
        "files": files,
        "unbalanced": unbalanced,
        "duplicated_events": duplicated,
    }


def assert_parquet_readable(lake: Path) -> int:
    """Every .parquet file in a table directory reads completely (no partial file is ever
    visible where a reader looks); no temp file sits in a table directory."""
    checked = 0
    for table in ALL_SCHEMAS:
        directory = lake / table
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            assert path.suffix == ".parquet", f"stray file in a table directory: {path}"
            pq.read_table(path)  # raises on a truncated or corrupt file
            checked += 1
    return checked


def wait_for(predicate: Any, timeout: float = 60.0, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(step)
    return False
