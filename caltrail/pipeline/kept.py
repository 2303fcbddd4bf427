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
- A view patched after a batch (caltrail/pipeline/patch.py) is kept in parts: its file
  `<view>-<stamp>.parquet` holds the rows computed for that state, and
  `<view>-<stamp>.parts.json` names the files of earlier states whose rows it keeps, less the
  rows `<view>-<stamp>.drops.parquet` lists (part name and row number). The view's file is
  written last: once there, the state's parts are too (`parts_of`, `select_rows`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

from caltrail import queries

if TYPE_CHECKING:
    import duckdb

DERIVED_DIR = "_derived"
PARTS_SUFFIX = ".parts.json"
DROPS_SUFFIX = ".drops.parquet"
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


def _write(
    con: duckdb.DuckDBPyConnection, sql: str, target: Path, place: Callable[[Path, Path], None]
) -> None:
    """Write the result of `sql` under a temporary name, then `place` it at `target`."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        # zstd at level 1 (DuckDB's default is 3): a first diagnosis of 50,000 devices keeps
        # 16 M rows, written faster (two runs each: 50.9 and 52.5 s -> 48.9 and 50.0 s) in
        # files 4% larger (427 against 410 MB), read at the same speed
        con.execute(
            f"copy (\n{sql}\n) to $path (format parquet, compression zstd, compression_level 1)",
            {"path": str(tmp)},
        )
        place(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write(con: duckdb.DuckDBPyConnection, sql: str, target: Path) -> None:
    """Write the result of `sql` (our own SQL: a view's name) to `target`, atomically and
    only once (`publish`)."""
    _write(con, sql, target, publish)


def _beside(path: Path, suffix: str) -> Path:
    return path.with_name(path.name.removesuffix(".parquet") + suffix)


def parts_of(path: Path) -> tuple[list[Path], Path | None]:
    """The files holding the rows of the kept view whose file is `path` (that file last), and
    the file of the rows dropped from the earlier ones (None: every row counts)."""
    manifest = _beside(path, PARTS_SUFFIX)
    try:
        loaded = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [path], None
    return [path.parent / str(name) for name in loaded["parts"]] + [path], _beside(
        path, DROPS_SUFFIX
    )


def present(path: Path) -> bool:
    """Whether the kept view whose file is `path` has every file it reads: its own, and its
    parts and drops when it is kept in parts (the parts of an earlier state are removed once
    the lake moves on to other queries; a state of the queries before is then gone)."""
    parts, drops = parts_of(path)
    return all(p.is_file() for p in parts) and (drops is None or drops.is_file())


def discard(path: Path) -> None:
    """Remove the kept view whose file is `path`, with its parts manifest and drops (not the
    parts, which are other states' files): one whose parts are gone, before it is built
    again under the same name."""
    for stale in (_beside(path, PARTS_SUFFIX), _beside(path, DROPS_SUFFIX), path):
        stale.unlink(missing_ok=True)


def select_rows(parts: str, drops: str | None) -> str:
    """SQL: the rows of a kept view from `parts` (an SQL expression: the list of its files)
    less those `drops` (the expression of its drops file, None when there is none) lists."""
    if drops is None:
        return f"select * from read_parquet({parts})"
    return (
        "select * exclude (filename, file_row_number) "
        f"from read_parquet({parts}, filename = true, file_row_number = true) as r "
        f"anti join read_parquet({drops}) as d "
        "on d.part = parse_filename(r.filename) and d.file_row_number = r.file_row_number"
    )


def attach(con: duckdb.DuckDBPyConnection, name: str, variable: str, path: Path) -> None:
    """Define the view `name` (ours) as the kept view whose file is `path`, its files named by
    the DuckDB variables `variable` and `<variable>_drops` (bound values, not SQL text)."""
    parts, drops = parts_of(path)
    con.execute(f"set variable {variable} = $paths", {"paths": [str(p) for p in parts]})
    if drops is not None:
        con.execute(f"set variable {variable}_drops = $drops", {"drops": str(drops)})
    rows = select_rows(
        f"getvariable('{variable}')", None if drops is None else f"getvariable('{variable}_drops')"
    )
    con.execute(f"create or replace view {name} as {rows}")


def replace(con: duckdb.DuckDBPyConnection, sql: str, target: Path) -> None:
    """Write the result of `sql` to `target`, replacing it atomically (a file that names
    its state: see `write` for the files a session may be reading)."""
    _write(con, sql, target, os.replace)


def replace_json(data: object, target: Path) -> None:
    """Write `data` as JSON to `target`, replacing it atomically (an index of files)."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, target)


def write_parts(
    con: duckdb.DuckDBPyConnection, target: Path, own: str, parts: list[str], drops: str
) -> None:
    """Keep a view in parts: the rows of `own` in `target` (written last, once), earlier
    files named by `parts` and the rows of them `drops` gives (part, file_row_number)."""
    replace(con, drops, _beside(target, DROPS_SUFFIX))
    replace_json({"parts": parts}, _beside(target, PARTS_SUFFIX))
    write(con, own, target)


def referenced(folder: Path, stamp: str) -> set[str]:
    """The names of the files the state `stamp` keeps or reads (its parts of earlier
    states)."""
    names = {p.name for p in folder.glob(f"*-{stamp}.*")}
    for manifest in folder.glob(f"*-{stamp}{PARTS_SUFFIX}"):
        try:
            names.update(str(n) for n in json.loads(manifest.read_text(encoding="utf-8"))["parts"])
        except (OSError, ValueError, KeyError):
            continue
    return names


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
    "DROPS_SUFFIX",
    "PARTS_SUFFIX",
    "STALE_SECONDS",
    "attach",
    "directory",
    "discard",
    "fingerprint",
    "locked",
    "parts_of",
    "present",
    "publish",
    "referenced",
    "remove_stale",
    "replace",
    "replace_json",
    "select_rows",
    "view_file",
    "writable",
    "write",
    "write_parts",
]
