"""DuckDB sessions over a lake: every view and macro of queries/ defined.

`connect(lake)` gives a connection for the CLI and tests; `write_init_script(lake)` writes
`LAKE/caltrail.sql`, the init script with which the DuckDB shell opens the lake with the
same views (`caltrail shell`, or `duckdb -init LAKE/caltrail.sql`).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from caltrail import queries
from caltrail.pipeline import lake as L
from caltrail.pipeline.schemas import ALL_SCHEMAS

INIT_SCRIPT = "caltrail.sql"
REF_DIR = "_ref"
# connect's progress hook: (table about to be built, its step, the number of steps)
BuildProgress = Callable[[str, int, int], None]


class SessionError(Exception):
    """The lake cannot be opened (message says why)."""


def prepare_lake(lake: Path) -> None:
    """Make a lake readable by the views: tables present (with an empty typed file), and the
    reference data copied into LAKE/_ref so the lake opens anywhere, even without caltrail.
    A compaction a crash interrupted is finished first (pipeline/compact.py)."""
    L.ensure_lake(lake)
    if L.pending_compactions(lake):
        # taking the writer lock finishes it, unless a writer holds the lock (and will
        # finish it itself) or the lake cannot be written
        try:
            with L.writer_lock(lake):
                pass
        except (L.LakeError, OSError):
            pass
    for table, schema in ALL_SCHEMAS.items():
        empty = L.table_dir(lake, table) / "_empty.parquet"
        if not empty.exists() or pq.read_schema(empty) != schema:
            L.write_parquet_atomic(schema.empty_table(), empty, lake / ".staging" / "tmp")
    ref = lake / REF_DIR
    ref.mkdir(exist_ok=True)
    for source in queries.data_files():
        target = ref / source.name
        if source.name.startswith("user_") and target.exists():
            continue  # the user's own table (e.g. --patterns): never overwritten by defaults
        if not target.exists() or target.read_bytes() != source.read_bytes():
            tmp = ref / f".{source.name}.{uuid.uuid4().hex[:8]}"
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)


def install_user_table(lake: Path, name: str, source: Path) -> None:
    """Copy a user's data table (e.g. a trace pattern file) into LAKE/_ref/user_<name>.csv,
    where the SQL and the DuckDB shell both read it."""
    prepare_lake(lake)
    target = lake / REF_DIR / f"user_{name}.csv"
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def connect(
    lake: Path,
    derive: bool = True,
    through: str | None = None,
    on_build: BuildProgress | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every view over `lake` defined.

    The derived tables (pipeline.derived) are read from the lake when current; when not,
    `derive` builds them as soon as the file defining them is loaded (persisted in the lake,
    or a temp table when it cannot be written), once per state of the lake. Left as live
    views (`derive=False`, for a session that only reads the source tables), every view
    above them re-binds the whole tree below when it is created, and every query recomputes
    it: seconds of CPU even on a small lake.

    `through` (a file name of queries/, e.g. "15_accounting") loads the layers up to that
    one only: a session that reads the source tables or the accounting (verify) opens in a
    fraction of a second, where binding every layer above them live takes seconds.

    `on_build(table, step, steps)` is called before each derived table this session builds
    (step counts from 1 over the trace facts and every derived table), for a progress line."""
    lake = lake.resolve()
    if not (lake / "ingest_files").is_dir():
        raise SessionError(
            f"{lake} is not a caltrail lake (no ingest_files/ in it); create one with "
            "`caltrail ingest PATH --lake " + str(lake) + "`"
        )
    prepare_lake(lake)
    con = duckdb.connect(":memory:")
    # The views read many small Parquet files, bound again by every layer above them:
    # caching their metadata halves the time a session takes to open.
    con.execute("set enable_object_cache = true")
    con.execute("set variable lake = $lake", {"lake": str(lake)})
    con.execute("set variable ref_dir = $ref", {"ref": str(lake / REF_DIR)})
    # the derived tables: provided as soon as the file defining the view is loaded, so the
    # views above bind to a file or table, not to the whole tree below
    from caltrail.pipeline import derived, trace_facts

    stamp = derived.fingerprint(lake)
    pending = [trace_facts.TABLE, *derived.TABLES]
    steps = len(pending)
    for path in queries.sql_files():
        if through is not None and path.stem > through:
            break
        try:
            con.execute(path.read_text(encoding="utf-8"))
        except duckdb.Error as exc:
            raise SessionError(f"{path.name}: {exc}") from exc
        for table in list(pending):  # in TABLES order: a table after those it reads
            defined = con.execute(
                "select count(*) from duckdb_views() where view_name = $t", {"t": table}
            ).fetchall()
            if defined[0][0] > 0:
                pending.remove(table)
                step = steps - len(pending)
                if table == trace_facts.TABLE:
                    _provide_trace_facts(con, lake, stamp, derive, on_build, step, steps)
                    continue
                current = derived.current_file(lake, table, stamp)
                if current is not None:
                    derived.attach(con, table, current)
                elif derive:
                    if on_build is not None:
                        on_build(table, step, steps)
                    try:
                        derived.provide(con, lake, table, stamp)
                    except duckdb.Error as exc:
                        raise SessionError(f"building {table}: {exc}") from exc
    return con


def _provide_trace_facts(
    con: duckdb.DuckDBPyConnection,
    lake: Path,
    stamp: str,
    derive: bool,
    on_build: BuildProgress | None,
    step: int,
    steps: int,
) -> None:
    """The kept trace facts when they cover the lake; else, when this session is to build
    cal_events (derive, and no current copy), the facts of the runs not kept yet computed
    first (pipeline/trace_facts.py). Otherwise the view stays live."""
    from caltrail.pipeline import derived, trace_facts

    files = trace_facts.complete_parts(lake)
    if files is not None:
        trace_facts.attach(con, files)
    elif derive and derived.current_file(lake, "cal_events", stamp) is None:
        if on_build is not None:
            on_build(trace_facts.TABLE, step, steps)
        try:
            trace_facts.provide(con, lake)
        except duckdb.Error as exc:
            raise SessionError(f"building {trace_facts.TABLE}: {exc}") from exc


def quote_literal(value: str) -> str:
    """A SQL string literal (only for the shell init script, which is a file, not a query)."""
    return "'" + value.replace("'", "''") + "'"


def init_script_text(lake: Path) -> str:
    lake = lake.resolve()
    parts = [
        "-- caltrail: open this lake in the DuckDB shell with every view and macro defined:",
        f"--   duckdb -init {lake / INIT_SCRIPT}",
        "-- (or `caltrail shell --lake LAKE`). Regenerated by every ingest; do not edit.",
        ".bail on",
        "set enable_object_cache = true;",
        f"set variable lake = {quote_literal(str(lake))};",
        f"set variable ref_dir = {quote_literal(str(lake / REF_DIR))};",
    ]
    for path in queries.sql_files():
        parts.append(f"-- {path.name}")
        parts.append(path.read_text(encoding="utf-8"))
    from caltrail.pipeline import derived, trace_facts

    stamp = derived.fingerprint(lake)
    kept = trace_facts.shell_sql(lake)
    if kept is not None:
        parts.append("-- trace_licensing: the facts kept in the lake per ingest run")
        parts.append(kept)
    for table, live in derived.TABLES.items():
        current = derived.current_file(lake, table, stamp)
        if current is not None:
            parts.append(f"-- {table}: the copy kept in the lake (current when this was written)")
            parts.append(
                f"create or replace view {table} as "
                f"select * from read_parquet({quote_literal(str(current))});"
            )
        elif table in derived.SHELL_TABLES:
            parts.append(f"-- {table}: computed once when the shell opens")
            parts.append(f"create or replace temp table {table} as select * from {live};")
    parts.append(".bail off")
    return "\n".join(parts) + "\n"


def write_init_script(lake: Path) -> Path:
    """Write LAKE/caltrail.sql atomically; returns its path."""
    prepare_lake(lake)
    target = lake / INIT_SCRIPT
    tmp = lake / f".{INIT_SCRIPT}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(init_script_text(lake), encoding="utf-8")
    os.replace(tmp, target)
    return target


def duckdb_cli() -> str | None:
    """The DuckDB shell installed with caltrail (PyPI duckdb-cli), else one on PATH."""
    import sys

    beside = Path(sys.executable).parent / "duckdb"
    if beside.exists():
        return str(beside)
    return shutil.which("duckdb")
