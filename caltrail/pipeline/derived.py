"""Derived tables kept in the lake: computed once per state of the lake, not per session.

`cal_events` (every CAL fact on one time axis, queries/40_cal_events.sql `cal_events_live`)
is what every diagnosis layer reads, and computing it reads the whole lake. It is kept as
`LAKE/_derived/cal_events-<fingerprint>.parquet`, and so are the layers a diagnosis reads
many times (`licenses`, the evidence, the findings...: TABLES), where the fingerprint covers
what the result depends on: the manifest (`ingest_files/*.parquet`: every committed file adds a
manifest file), the SQL of queries/ and the reference tables in `LAKE/_ref`. A later ingest,
an edited query or a new pattern table changes the fingerprint, and the file is rebuilt the
next time a diagnosis needs it (`ensure`), or right after an ingest (`refresh`).

A session (`pipeline.session.connect`) reads the file when it is current and otherwise
builds it (`provide`) right after the view is defined, before the layers above are: left a
live view, every view above re-binds the whole tree below when it is created, and every query
recomputes it (seconds of CPU even on a small lake). So the first session after an ingest pays
the computation once, and later ones read it. Files are written atomically (temp name, then
os.replace); on a lake that cannot be written (read-only media, permissions) the table is
computed into the session only (a temp table).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from caltrail import queries

if TYPE_CHECKING:
    from caltrail.pipeline.session import BuildProgress

DERIVED_DIR = "_derived"
FORMAT_VERSION = "1"
# Files of an older state are removed once this old (a session opened on that state may
# still be reading one).
STALE_SECONDS = 600.0
# table -> the view that computes it, in the order they build on each other (a table is
# built after those it reads, so that it reads their persisted copies)
TABLES = {
    "licensing_problems": "licensing_problems",
    "file_license_servers": "file_license_servers",
    "cal_events": "cal_events_live",
    "db_rebuilds": "db_rebuilds",
    "as_of": "as_of",
    "licenses": "licenses",
    "hwid_evidence": "hwid_evidence",
    "name_evidence": "name_evidence",
    "device_findings": "device_findings",
    "findings": "findings",
}
# Not kept: the plan layer (revoke_plan, cal_recovery). It is quick on the kept layers, and a
# what-if (a temp table `cal_pool` with more CALs installed, shadowing the view) re-plans.

# The one the DuckDB shell computes when it opens a lake without a current copy (the others
# stay live views there: computing them all would make the shell slow to open).
SHELL_TABLES = ("cal_events",)


def fingerprint(lake: Path, manifest: bool = True, upto: str | None = None) -> str:
    """What the derived tables of `lake` depend on, as a short hex digest. `manifest=False`
    leaves out the files ingested and `upto` the query files after the one named (the trace
    facts, pipeline/trace_facts.py, are kept per ingest run: they depend on the layers up to
    theirs and on the reference tables only; a layer reads the files before it, never after)."""
    digest = hashlib.sha256()
    digest.update(f"caltrail-derived {FORMAT_VERSION} duckdb {duckdb.__version__}\n".encode())
    if manifest:
        for path in sorted((lake / "ingest_files").glob("*.parquet")):
            digest.update(f"m {path.name} {path.stat().st_size}\n".encode())
    for path in queries.sql_files():
        if upto is not None and path.name > upto:
            continue
        digest.update(f"q {path.name}\n".encode())
        digest.update(path.read_bytes())
    ref = lake / "_ref"
    for path in sorted(ref.glob("*.csv")):
        digest.update(f"r {path.name}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:24]


def derived_path(lake: Path, table: str, stamp: str) -> Path:
    return lake / DERIVED_DIR / f"{table}-{stamp}.parquet"


def current_file(lake: Path, table: str = "cal_events", stamp: str | None = None) -> Path | None:
    """The persisted file of `table` for the lake as it is now (its `fingerprint`, computed
    when not given), if there is one."""
    lake = lake.resolve()
    path = derived_path(lake, table, stamp or fingerprint(lake))
    return path if path.is_file() else None


def attach(con: duckdb.DuckDBPyConnection, table: str, path: Path) -> None:
    """Point the view `table` at a persisted file (the path goes in as a bound value)."""
    variable = f"{table}_file"
    con.execute(f"set variable {variable} = $path", {"path": str(path)})
    con.execute(
        f"create or replace view {table} as select * from read_parquet(getvariable('{variable}'))"
    )


def writable(directory: Path) -> bool:
    try:
        directory.mkdir(exist_ok=True)
        probe = directory / f".probe.{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return False
    return True


def _remove_stale(lake: Path, table: str, keep: Path) -> None:
    """Remove the files of other states of the lake (of any table: one no longer in TABLES
    too) once they are old enough, and the leftovers of killed builds."""
    now = time.time()
    stamp = keep.name[len(table) + 1 : -len(".parquet")]
    for path in (lake / DERIVED_DIR).glob("*.parquet"):
        try:
            current = (
                path.name.endswith(f"-{stamp}.parquet") and path.name.rsplit("-", 1)[0] in TABLES
            )
            if not current and now - path.stat().st_mtime > STALE_SECONDS:
                path.unlink()
        except OSError:
            continue
    for path in (lake / DERIVED_DIR).glob(f".{table}-*.tmp"):
        try:
            if now - path.stat().st_mtime > STALE_SECONDS:
                path.unlink()  # left by a build that was killed
        except OSError:
            continue


def _publish(tmp: Path, target: Path) -> None:
    """Give `tmp` the name `target` unless a file has it already. A kept file never changes
    once it exists: a session may be reading it (DuckDB opens a file more than once per
    query, and a file replaced in between reads as corrupt: "Invalid data")."""
    try:
        os.link(tmp, target)  # fails if the target exists: the first one stays
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links
        if not target.exists():
            os.replace(tmp, target)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the lock file `path` (waiting for another session that holds it): one session
    at a time builds a derived table; the next one waits, then reads what it wrote."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def build(con: duckdb.DuckDBPyConnection, lake: Path, table: str = "cal_events") -> Path | None:
    """Compute `table` from its live view and persist it; None when the lake cannot be
    written. The session's view is pointed at the new file."""
    lake = lake.resolve()
    directory = lake / DERIVED_DIR
    if not writable(directory):
        return None
    stamp = fingerprint(lake)
    target = derived_path(lake, table, stamp)
    tmp = directory / f".{table}-{stamp}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        con.sql(f"select * from main.{TABLES[table]}").write_parquet(str(tmp), compression="zstd")
        _publish(tmp, target)
    except (OSError, duckdb.IOException):
        return None
    finally:
        tmp.unlink(missing_ok=True)
    _remove_stale(lake, table, target)
    attach(con, table, target)
    return target


def provide(
    con: duckdb.DuckDBPyConnection, lake: Path, table: str, stamp: str | None = None
) -> str:
    """Make `table` a computed one in this session: the persisted file when it is current,
    else built and persisted now, else (lake not writable) a temp table. Returns how:
    'persisted', 'built' or 'temp'."""
    lake = lake.resolve()
    existing = current_file(lake, table, stamp)
    if existing is not None:
        attach(con, table, existing)
        return "persisted"
    directory = lake / DERIVED_DIR
    if writable(directory):
        with locked(directory / f".{table}.lock"):
            existing = current_file(lake, table, stamp)  # built while this one waited
            if existing is not None:
                attach(con, table, existing)
                return "persisted"
            if build(con, lake, table) is not None:
                return "built"
    con.execute(f"create or replace temp table {table} as select * from main.{TABLES[table]}")
    return "temp"


def ensure(con: duckdb.DuckDBPyConnection, lake: Path) -> dict[str, str]:
    """`provide` every derived table (a session opened with `connect(derive=False)`)."""
    from caltrail.pipeline import trace_facts

    stamp = fingerprint(lake.resolve())
    how = {}
    if current_file(lake, "cal_events", stamp) is None:
        how[trace_facts.TABLE] = trace_facts.provide(con, lake)
    how.update({table: provide(con, lake, table, stamp) for table in TABLES})
    return how


def refresh(lake: Path, on_build: BuildProgress | None = None) -> None:
    """Bring the derived tables of `lake` up to date (after an ingest). Does nothing on a
    lake that cannot be written or opened. (`on_build`: see `session.connect`.)"""
    from caltrail.pipeline.session import SessionError, connect, write_init_script

    try:
        con = connect(lake, on_build=on_build)
    except (SessionError, duckdb.Error, OSError):
        return
    try:
        ensure(con, lake)
    finally:
        con.close()
    try:
        write_init_script(lake)  # the shell then reads the persisted table too
    except OSError:
        pass


__all__ = [
    "DERIVED_DIR",
    "attach",
    "build",
    "current_file",
    "ensure",
    "fingerprint",
    "locked",
    "provide",
    "refresh",
    "writable",
]
