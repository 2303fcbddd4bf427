"""DuckDB sessions over a lake: every view and macro of caltrail/queries defined.

`connect(lake)` gives a connection for the CLI and tests (the computed views kept or built
by caltrail/pipeline/materialize.py); `write_init_script(lake)` writes `LAKE/caltrail.sql`,
the init script with which the DuckDB shell opens the lake with the same views (`caltrail
shell`, or `duckdb -init LAKE/caltrail.sql`; what the shell needs before it opens, without
DuckDB, is caltrail/pipeline/shell.py); `refresh(lake)` brings the kept views up to date
after an ingest (`caltrail ingest --derive`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import NoReturn

import duckdb
import pyarrow.parquet as pq

from caltrail import queries
from caltrail.pipeline import kept, materialize
from caltrail.pipeline import lake as L
from caltrail.pipeline.materialize import BuildProgress
from caltrail.pipeline.schemas import ALL_SCHEMAS
from caltrail.pipeline.shell import (
    COMPUTED_LINE,
    INIT_SCRIPT,
    KEPT_LINE,
    NONE,
    SHELL_LAKE_ENV,
    STATE_LINE,
    current_script,
    written_for,
)

REF_DIR = "_ref"


class SessionError(Exception):
    """The lake cannot be opened (message says why)."""


def prepare_lake(lake: Path) -> None:
    """Make a lake readable by the views: tables present (with an empty typed file), the
    reference data copied into LAKE/_ref so the lake opens anywhere, even without caltrail,
    and the lake's identity file (which the shell's init script looks for). A compaction a
    crash interrupted is finished first (caltrail/pipeline/compact.py). Writes only what is
    missing or out of date; on a lake it cannot write, leaves it as it is."""
    try:
        _prepare(lake)
    except OSError:
        pass  # a read-only lake: the session reads what is there


def _prepare(lake: Path) -> None:
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
            L.ensure_lake(lake)
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
    if lake_id(lake) is None:
        (ref / f"lake-{uuid.uuid4().hex}.id").write_bytes(b"")


def lake_id(lake: Path) -> str | None:
    """The lake's identity (kept by a copy of the lake), from LAKE/_ref/lake-<id>.id."""
    found = sorted((lake / REF_DIR).glob("lake-*.id"))
    return found[0].name[len("lake-") : -len(".id")] if found else None


# The rows of a user's pattern table the trace_patterns view does not use, with why (a row
# with no regex switches a default off, as meant: not one of them), and the row saying that
# no row of the file could be read.
_UNUSED_PATTERNS = (
    "select name, problem from trace_patterns where origin = 'user' and problem is not null "
    "and regex is not null or name = 'user_trace_patterns.csv' order by name"
)


def pattern_table_problems(ref_dir: Path) -> tuple[str | None, list[tuple[str, str]]]:
    """What the trace_patterns view makes of the pattern tables in `ref_dir` (the default
    and the user's, as a lake's _ref holds them), read by the view itself: why it cannot
    read them at all (None: it can; a quote left open stops every query of the patterns),
    and the user's rows it does not use, with why."""
    con = duckdb.connect(":memory:")
    try:
        con.execute("set variable lake = $ref", {"ref": str(ref_dir)})
        con.execute("set variable ref_dir = $ref", {"ref": str(ref_dir)})
        materialize.pattern_session(con)
        rows = con.execute(_UNUSED_PATTERNS).fetchall()
    except (duckdb.Error, materialize.BuildError) as exc:
        return str(exc).splitlines()[0], []
    finally:
        con.close()
    return None, [(str(name), str(problem)) for name, problem in rows]


def _unreadable_patterns(lake: Path) -> SessionError | None:
    """The error to give when a query of `lake` failed because DuckDB cannot read the user's
    pattern table in it (put there by hand: `ingest --patterns` refuses such a file); None
    when it can, or there is none."""
    user = lake / REF_DIR / "user_trace_patterns.csv"
    if not user.is_file():
        return None
    problem, _ = pattern_table_problems(lake / REF_DIR)
    if problem is None:
        return None
    return SessionError(
        f"{user} cannot be read as CSV ({problem}); correct it, or remove it to use the "
        "default trace patterns alone"
    )


def _raise_opening_error(lake: Path, exc: materialize.BuildError | duckdb.Error) -> NoReturn:
    """Raise what defining the views of `lake` failing with `exc` means: the user's pattern
    table DuckDB cannot read, when that is why (looked for only once something failed); a
    build error as a SessionError; DuckDB's own error as it is."""
    unreadable = _unreadable_patterns(lake)
    if unreadable is not None:
        raise unreadable from exc
    if isinstance(exc, materialize.BuildError):
        raise SessionError(str(exc)) from exc
    raise exc


def install_user_table(lake: Path, name: str, source: Path) -> None:
    """Copy a user's data table (e.g. a trace pattern file) into LAKE/_ref/user_<name>.csv,
    where the SQL and the DuckDB shell both read it."""
    prepare_lake(lake)
    target = lake / REF_DIR / f"user_{name}.csv"
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def spill_directory() -> str:
    """Where a session's DuckDB spills what does not fit in memory: a folder of the system's
    temp folder, one per connection (DuckDB's default is `.tmp` in the current folder, which
    left gigabytes in a user's working folder after a large diagnosis). DuckDB removes a
    folder it created when its connection closes, with what is in it: a folder shared by
    two connections of one process would lose the other's spill."""
    return str(
        Path(tempfile.gettempdir()) / f"caltrail-duckdb-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    )


def connect(
    lake: Path,
    derive: bool = True,
    through: str | None = None,
    on_build: BuildProgress | None = None,
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with every view over `lake` defined.

    The computed views (declared `materialize: lake|run` in caltrail/queries) are read from
    the lake when current; when not, `derive` builds them as soon as the statement defining
    them is run (caltrail/pipeline/materialize.py). Left live (`derive=False`, for a session
    that only reads the source tables), every view above them re-binds the whole tree below
    when it is created, and every query recomputes it: seconds of CPU even on a small lake.

    `through` (a query file's stem, e.g. "15_accounting") loads the layers up to that one
    only: a session that reads the source tables or the accounting (verify) opens in a
    fraction of a second.

    `on_build(view, step, steps)` is called before each view this session builds."""
    lake = lake.resolve()
    if not (lake / "ingest_files").is_dir():
        raise SessionError(
            f"{lake} is not a caltrail lake (no ingest_files/ in it); create one with "
            "`caltrail ingest PATH --lake " + str(lake) + "`"
        )
    prepare_lake(lake)
    con = duckdb.connect(":memory:", config={"temp_directory": spill_directory()})
    # The views read many small Parquet files, bound again by every layer above them:
    # caching their metadata halves the time a session takes to open.
    con.execute("set enable_object_cache = true")
    # An in-memory database checkpoints too (since DuckDB 1.4), once its log of changes
    # passes the threshold; there it only vacuums deleted rows (none: a session's tables are
    # created or replaced whole), and one checkpoint took 0.3-0.5 s of a diagnosis after a
    # batch at 50,000 devices.
    con.execute("set checkpoint_threshold = '1TB'")
    con.execute("set variable lake = $lake", {"lake": str(lake)})
    con.execute("set variable ref_dir = $ref", {"ref": str(lake / REF_DIR)})
    loader = materialize.Loader(con, lake, derive=derive, on_build=on_build)
    try:
        loader.run(queries.statements(through=through))
    except (materialize.BuildError, duckdb.Error) as exc:
        con.close()
        _raise_opening_error(lake, exc)
    if through is None and "built" in loader.built.values():
        try:  # the shell then reads what was just kept (written from this session)
            write_init_script(lake, con=con)
        except (OSError, SessionError, duckdb.Error):
            pass
    return con


def refresh(lake: Path, on_build: BuildProgress | None = None) -> None:
    """Bring the kept views of `lake` up to date (after an ingest) and rewrite the shell's
    init script to read them. Does nothing on a lake that cannot be written or opened."""
    if not kept.writable(kept.directory(lake)):
        return
    try:
        con = connect(lake, on_build=on_build)  # writes the script when it built something
    except (SessionError, duckdb.Error, OSError):
        return
    try:
        if current_script(lake) is None:
            write_init_script(lake, con=con)
    except (OSError, duckdb.Error):
        pass
    finally:
        con.close()


# ---------------------------------------------------------------------------
# The DuckDB shell
# ---------------------------------------------------------------------------


def init_script_text(lake: Path, con: duckdb.DuckDBPyConnection | None = None) -> str:
    """The shell's init script. It holds no path: it finds its lake by the lake's identity
    file, so that a lake copied to another folder or machine opens itself. It looks in
    `$CALTRAIL_SHELL_LAKE` (set by `caltrail shell`), then in the working directory, then in
    the folders one and two levels below it; it stops with a message when it finds no copy
    of its lake there, or two (the DuckDB shell cannot tell which script it was started
    with). It says which lake it opened. `con`: a session on the lake to write the generated
    queries on (one is opened when not given).

    Its header says the state of the lake it was written for and which `lake`-kind views it
    reads from their kept files, and which it computes on opening (caltrail/pipeline/
    shell.py reads it: `caltrail shell` opens the shell at once when the script is current)."""
    lake = lake.resolve()
    ident = lake_id(lake)
    if ident is None:
        raise SessionError(f"{lake} has no identity file; run an ingest on it first")
    marker = f"{REF_DIR}/lake-{ident}.id"  # a hex digest: no user text goes into the script
    stamp = kept.fingerprint(lake)
    # (before the statements: a view kept in between is then said to be computed, which
    # only makes the next `caltrail shell` write the script again)
    views = materialize.lake_views()
    kept_views = [v for v in views if materialize.current_file(lake, v, stamp) is not None]
    computed = [v for v in views if v not in kept_views]
    parts = [
        "-- caltrail: open this lake in the DuckDB shell with every view and macro defined:",
        "--   duckdb -init LAKE/caltrail.sql     (or: caltrail shell --lake LAKE)",
        "-- Rewritten by every ingest and diagnosis; do not edit.",
        f"{STATE_LINE}{stamp}",
        f"{KEPT_LINE}{' '.join(kept_views) or NONE}",
        f"{COMPUTED_LINE}{' '.join(computed) or NONE}",
        ".bail on",
        "set enable_object_cache = true;",
        "set variable lake = (",
        "    with candidates as (",
        f"        select 1 as rank, getenv('{SHELL_LAKE_ENV}') as dir",
        f"        where getenv('{SHELL_LAKE_ENV}') <> ''",
        f"            and exists (select 1 from glob(getenv('{SHELL_LAKE_ENV}') || '/{marker}'))",
        "        union all",
        f"        select 2, regexp_replace(file, '/?{marker}$', '') from glob('{marker}')",
        "        union all",
        f"        select 3, regexp_replace(file, '/{marker}$', '') from glob('*/{marker}')",
        "        union all",
        f"        select 4, regexp_replace(file, '/{marker}$', '') from glob('*/*/{marker}')",
        "    ),",
        "    best as (select * from candidates qualify rank = min(rank) over ())",
        "    select case",
        "        when count(*) = 0 then error('caltrail: this lake was not found; open it from '",
        "            || 'its folder or the one above it, or use: caltrail shell --lake LAKE')",
        "        when count(distinct dir) > 1 then error('caltrail: several copies of this lake '",
        "            || 'below the working directory; cd into the one to open')",
        "        else coalesce(nullif(min(dir), ''), '.') end",
        "    from best",
        ");",
        f"set variable ref_dir = getvariable('lake') || '/{REF_DIR}';",
        *_shell_statements(lake, con),
        ".bail off",
        "select 'caltrail lake: ' || getvariable('lake') as opened;",
    ]
    return "\n".join(parts) + "\n"


def _shell_statements(lake: Path, con: duckdb.DuckDBPyConnection | None) -> list[str]:
    # the generated views' queries follow the pattern table: written on a session that
    # reads the same reference tables the shell will (the caller's, or a connection with
    # only the pattern views and the macros: a whole session costs more than the script)
    if con is not None:
        return list(materialize.shell_statements(lake, con))
    lake = lake.resolve()
    own = duckdb.connect(":memory:")
    try:
        own.execute("set variable lake = $lake", {"lake": str(lake)})
        own.execute("set variable ref_dir = $ref", {"ref": str(lake / REF_DIR)})
        materialize.pattern_session(own)
        return list(materialize.shell_statements(lake, own))
    except (materialize.BuildError, duckdb.Error) as exc:
        _raise_opening_error(lake, exc)
    finally:
        own.close()


def write_init_script(
    lake: Path, target: Path | None = None, con: duckdb.DuckDBPyConnection | None = None
) -> Path:
    """Write the init script atomically (LAKE/caltrail.sql, or `target`); returns its path.
    `con`: an open session on the lake to write it from (else one is opened)."""
    prepare_lake(lake)
    target = target or lake / INIT_SCRIPT
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    tmp.write_text(init_script_text(lake, con), encoding="utf-8")
    os.replace(tmp, target)
    return target


def shell_script(lake: Path) -> Path:
    """An init script for `caltrail shell`: the lake's own (rewritten when it is not current:
    written for another state of the lake, or computing views on opening that are kept
    now); on a lake that cannot be written, its own when written for its present state
    (it computes what is not kept), else one in a temporary folder (a read-only lake still
    opens)."""
    own = lake / INIT_SCRIPT
    if current_script(lake) is not None:
        return own
    try:
        return write_init_script(lake)
    except OSError:
        if written_for(own) == kept.fingerprint(lake.resolve()):
            return own
        folder = Path(tempfile.mkdtemp(prefix="caltrail-shell-"))
        return write_init_script(lake, folder / INIT_SCRIPT)


__all__ = [
    "BuildProgress",
    "SessionError",
    "connect",
    "init_script_text",
    "install_user_table",
    "lake_id",
    "prepare_lake",
    "refresh",
    "shell_script",
    "write_init_script",
]
