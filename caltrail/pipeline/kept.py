"""Where computed views are kept in a lake (`LAKE/_derived`), and how a file gets there.

Shared by the two keepers: `materialize` (views kept once per state of the lake) and
`trace_facts` (the trace facts, kept per ingest run). Nothing here knows a view by name.

- `fingerprint(lake)`: what a kept file depends on: the manifest (every committed input file
  adds a manifest file), the SQL of caltrail/queries and the reference tables in LAKE/_ref.
  An ingest, an edited query or a new pattern table changes it, and the kept files of the
  old state stop being current. Only names, sizes and contents inside the lake count, so a
  lake copied elsewhere keeps its kept files current.
- Files are written under a temporary name and published by a hard link, which fails when
  the name exists: a kept file never changes once it is there (a session may be reading it;
  DuckDB opens a file more than once per query, and a file replaced in between reads as
  corrupt). Files of older states are removed once STALE_SECONDS old.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from caltrail import queries

if TYPE_CHECKING:
    import duckdb

DERIVED_DIR = "_derived"
FORMAT_VERSION = "2"
# Files of an older state are removed once this old (a session opened on that state may
# still be reading one).
STALE_SECONDS = 600.0


def fingerprint(lake: Path, manifest: bool = True, upto: str | None = None) -> str:
    """What the kept files of `lake` depend on, as a short hex digest. `manifest=False`
    leaves out the files ingested and `upto` the query files after the one named (a layer
    reads the files before it, never after)."""
    digest = hashlib.sha256()
    # the installed DuckDB package's version, read from its metadata (duckdb.__version__
    # says the same) rather than by loading DuckDB: `caltrail shell` checks the state of the
    # lake before it hands over to the DuckDB shell, and loading DuckDB takes longer than
    # the whole check
    digest.update(f"caltrail-derived {FORMAT_VERSION} duckdb {version('duckdb')}\n".encode())
    if manifest:
        for path in sorted((lake / "ingest_files").glob("*.parquet")):
            digest.update(f"m {path.name} {path.stat().st_size}\n".encode())
    for path in queries.sql_files():
        if upto is not None and path.name > upto:
            continue
        digest.update(f"q {path.name}\n".encode())
        digest.update(path.read_bytes())
    for path in sorted((lake / "_ref").glob("*.csv")):
        digest.update(f"r {path.name}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:24]


def directory(lake: Path) -> Path:
    return lake / DERIVED_DIR


def view_file(lake: Path, view: str, stamp: str) -> Path:
    """Where the kept file of `view` for the state `stamp` of the lake is (or would be)."""
    return directory(lake) / f"{view}-{stamp}.parquet"


def writable(folder: Path) -> bool:
    """Whether files can be made in `folder` (created if missing)."""
    try:
        folder.mkdir(exist_ok=True)
        probe = folder / f".probe.{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError:
        return False
    return True


def publish(tmp: Path, target: Path) -> None:
    """Give `tmp` the name `target` unless a file has it already (see the module's notes)."""
    try:
        os.link(tmp, target)  # fails if the target exists: the first one stays
    except FileExistsError:
        pass
    except OSError:  # a file system without hard links
        if not target.exists():
            os.replace(tmp, target)


def write(con: duckdb.DuckDBPyConnection, sql: str, target: Path) -> None:
    """Write the result of `sql` (our own SQL: a view's name) to `target`, atomically and
    only once (`publish`)."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        con.sql(sql).write_parquet(str(tmp), compression="zstd")
        publish(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the lock file `path` (waiting for another session that holds it): one session
    at a time builds a kept file; the next one waits, then reads what it wrote."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale(folder: Path, keep: set[str], now: float | None = None) -> None:
    """Remove the files of `folder` not named in `keep` once they are STALE_SECONDS old
    (files of older states, leftovers of killed builds)."""
    now = time.time() if now is None else now
    for path in folder.iterdir():
        if path.name in keep or (path.name.startswith(".") and path.name.endswith(".lock")):
            continue
        try:
            if path.is_file() and now - path.stat().st_mtime > STALE_SECONDS:
                path.unlink()
        except OSError:
            continue


__all__ = [
    "DERIVED_DIR",
    "STALE_SECONDS",
    "directory",
    "fingerprint",
    "locked",
    "publish",
    "remove_stale",
    "view_file",
    "writable",
    "write",
]
