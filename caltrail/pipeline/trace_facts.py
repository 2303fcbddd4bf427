"""The trace facts (`trace_licensing`, declared `materialize: run`) kept in the lake per
ingest run of each trace file.

Reading the licensing facts out of trace messages is the costliest step of a diagnosis (RE2
group extraction over every message of a licensing module: about 20 s for 2.4 M messages).
A message's fact depends only on its row and on the patterns, so, unlike the views kept per
state of the lake (caltrail/pipeline/materialize.py: rebuilt whole when the lake changes),
the facts are kept by ingest run: a diagnosis after a batch ingest computes those of the
batch's trace files alone. The view computes the facts of the rows its input view
`trace_licensing_input` shows; a session points that input at the runs not kept yet.

Layout, under `LAKE/_derived/trace_licensing-<stamp>/` (`stamp`: the SQL of queries/ up to
`LAYER` and the reference tables of LAKE/_ref, the patterns among them; not the manifest):
- `part-<n>-<id>.parquet`: the facts of some runs, with `file_sha256` and `run_id`;
- `part-<n>-<id>.keys.parquet`: the (file_sha256, run_id) runs it covers, those that gave no
  fact included (so they are not read again);
- `index.json`: the parts in use, replaced atomically; `complete` is the state of the lake
  (`coverage`: its manifest, and the stamp's queries) at which they covered every run.

A session reads the parts of the index, keeping only the rows of runs still visible (a file
ingested again with --force has a new run). Parts are added and merged under a lock file, so
two sessions never compute the same runs twice; a part the index no longer lists is removed
once it is `STALE_SECONDS` old (a session opened before may still read it).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import duckdb

from caltrail import queries
from caltrail.pipeline import kept

TABLE = "trace_licensing"
INPUT = "trace_licensing_input"
# The query file defining it: an edit there (or before it) starts the kept facts again; an
# edit of a later layer does not.
LAYER = "35_trace_licensing.sql"
# Parts are merged into one when there are more than this (one is added per batch).
MAX_PARTS = 12
INDEX = "index.json"


def directory(lake: Path) -> Path:
    """Where the facts are kept for the stamp of the queries and reference tables now."""
    stamp = kept.fingerprint(lake, manifest=False, upto=LAYER)
    return lake / kept.DERIVED_DIR / f"{TABLE}-{stamp}"


def _read_index(folder: Path) -> dict[str, object]:
    try:
        loaded = json.loads((folder / INDEX).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"parts": [], "complete": None}
    return loaded if isinstance(loaded, dict) else {"parts": [], "complete": None}


def _parts(index: dict[str, object]) -> list[str]:
    parts = index.get("parts")
    return [str(p) for p in parts] if isinstance(parts, list) else []


def _write_index(folder: Path, parts: list[str], complete: str) -> None:
    tmp = folder / f".{INDEX}.{uuid.uuid4().hex[:8]}"
    tmp.write_text(json.dumps({"parts": parts, "complete": complete}), encoding="utf-8")
    os.replace(tmp, folder / INDEX)


def coverage(lake: Path) -> str:
    """The state of the lake the facts depend on: the manifest (the runs) and the stamp's
    queries and reference tables."""
    return kept.fingerprint(lake, manifest=True, upto=LAYER)


def complete_parts(lake: Path) -> list[Path] | None:
    """The part files when they cover the lake as it is now, else None."""
    lake = lake.resolve()
    folder = directory(lake)
    index = _read_index(folder)
    if index.get("complete") != coverage(lake):
        return None
    files = [folder / f"{name}.parquet" for name in _parts(index)]
    return files if files and all(f.is_file() for f in files) else None


def kept_parts(lake: Path) -> list[str]:
    """The names of the parts the index lists (covering the lake or not), whose files are
    all there."""
    folder = directory(lake.resolve())
    return [
        name
        for name in _parts(_read_index(folder))
        if (folder / f"{name}.parquet").is_file() and (folder / f"{name}.keys.parquet").is_file()
    ]


def shell_statements(lake: Path, statement: queries.Statement) -> list[str]:
    """`trace_licensing` for the shell's init script, paths relative to its `lake` variable:
    the kept parts, only the rows of runs still visible; when they do not cover the lake (an
    ingest since), the facts of the runs not kept yet are computed live when a query reads
    them (the declared statement, as `trace_licensing_live` over the runs not covered): the
    shell opened after a batch extracts the batch's trace messages alone. Nothing kept: the
    declared statement itself."""
    names = kept_parts(lake)
    if not names:
        return [statement.sql + ";"]
    prefix = f"{kept.DERIVED_DIR}/{directory(lake.resolve()).name}/"

    def files(suffix: str) -> str:
        # part names are made by _new_part_name (digits and hex): no user text
        return "[" + ", ".join(f"getvariable('lake') || '/{prefix}{n}{suffix}'" for n in names) + "]"

    out = [
        f"-- {TABLE}: the facts kept in the lake per ingest run",
        f"set variable {TABLE}_parts = {files('.parquet')};",
    ]
    kept_rows = (
        f"select * from read_parquet(getvariable('{TABLE}_parts')) "
        "semi join visible_runs using (file_sha256, run_id)"
    )
    if complete_parts(lake) is not None:
        return [*out, f"create or replace view {TABLE} as {kept_rows};"]
    return [
        *out,
        f"set variable {TABLE}_keys = {files('.keys.parquet')};",
        f"-- ({TABLE}_live computes the runs the kept parts do not cover)",
        f"create or replace view {INPUT} as select * from trace_events "
        f"anti join read_parquet(getvariable('{TABLE}_keys')) using (file_sha256, run_id);",
        statement.sql_as(f"{TABLE}_live") + ";",
        f"create or replace view {TABLE} as {kept_rows}\nunion all\nselect * from {TABLE}_live;",
    ]


def attach(con: duckdb.DuckDBPyConnection, files: list[Path]) -> None:
    """Point the session's `trace_licensing` at kept parts (paths as a bound value)."""
    con.execute(f"set variable {TABLE}_parts = $files", {"files": [str(f) for f in files]})
    con.execute(
        f"create or replace view {TABLE} as select * from "
        f"read_parquet(getvariable('{TABLE}_parts')) "
        "semi join visible_runs using (file_sha256, run_id)"
    )


def _copy(con: duckdb.DuckDBPyConnection, sql: str, target: Path) -> None:
    """Write the result of `sql` to `target` atomically."""
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        con.sql(sql).write_parquet(str(tmp), compression="zstd")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _new_part_name(parts: list[str]) -> str:
    number = 1 + max((int(p.split("-")[1]) for p in parts), default=0)
    return f"part-{number:06d}-{uuid.uuid4().hex[:8]}"


def _add_part(
    con: duckdb.DuckDBPyConnection, folder: Path, parts: list[str], sql: str, keys_sql: str
) -> str:
    """Write the facts of `sql` and the runs of `keys_sql` as a new part (facts first: a part
    counts once its keys file is there, and only once the index lists it)."""
    name = _new_part_name(parts)
    _copy(con, sql, folder / f"{name}.parquet")
    _copy(con, keys_sql, folder / f"{name}.keys.parquet")
    return name


def _files(folder: Path, parts: list[str], suffix: str) -> list[str]:
    return [str(folder / f"{name}{suffix}") for name in parts]


def _remove_unlisted(lake: Path, folder: Path, parts: list[str]) -> None:
    """Remove parts the index no longer lists, and folders of other stamps (edited queries
    or patterns), once they are old enough."""
    now = time.time()
    keep = {f"{name}{suffix}" for name in parts for suffix in (".parquet", ".keys.parquet")}
    for path in folder.iterdir():
        try:
            if path.name in keep or path.name in (INDEX, ".lock"):
                continue
            if now - path.stat().st_mtime > kept.STALE_SECONDS:
                path.unlink()
        except OSError:
            continue
    for other in (lake / kept.DERIVED_DIR).glob(f"{TABLE}-*"):
        if other == folder or not other.is_dir():
            continue
        try:
            if now - max(p.stat().st_mtime for p in [other, *other.iterdir()]) > (
                kept.STALE_SECONDS
            ):
                for path in other.iterdir():
                    path.unlink()
                other.rmdir()
        except OSError:
            continue


def _runs_not_covered(con: duckdb.DuckDBPyConnection, folder: Path, parts: list[str]) -> int:
    """Fill the temp table trace_runs_new with the committed runs of trace files that no
    part covers; returns how many runs there are in all."""
    con.execute(
        "create or replace temp table trace_runs_now as "
        "select distinct file_sha256, run_id from trace_events"
    )
    covered = "select null::varchar as file_sha256, null::varchar as run_id where false"
    if parts:
        con.execute(
            "set variable trace_keys_files = $files",
            {"files": _files(folder, parts, ".keys.parquet")},
        )
        covered = "select file_sha256, run_id from read_parquet(getvariable('trace_keys_files'))"
    con.execute(
        f"create or replace temp table trace_runs_new as select * from trace_runs_now except ({covered})"
    )
    [(runs,)] = con.execute("select count(*) from trace_runs_now").fetchall()
    return int(runs)


def _compute_part(
    con: duckdb.DuckDBPyConnection, folder: Path, parts: list[str], all_runs: int
) -> str | None:
    """The facts of the runs in trace_runs_new as a new part (None when there are none)."""
    [(new_runs,)] = con.execute("select count(*) from trace_runs_new").fetchall()
    if new_runs == 0:
        return None
    if new_runs < all_runs:
        # the live view over the new runs alone (its input view pointed at them; trace_events
        # shows one run per file, so the file says which). Not when every run is new: the
        # filter costs a third more than the whole.
        con.execute(
            f"create or replace view {INPUT} as select * from trace_events "
            "where file_sha256 in (select file_sha256 from trace_runs_new)"
        )
    try:
        return _add_part(
            con, folder, parts, f"select * from main.{TABLE}", "select * from trace_runs_new"
        )
    finally:
        con.execute(f"create or replace view {INPUT} as select * from trace_events")


def _merge(con: duckdb.DuckDBPyConnection, folder: Path, parts: list[str]) -> str:
    """One part of the facts and runs of `parts` still visible (older runs of a file are
    dropped); the parts merged stay on disk until `_remove_unlisted` finds them stale."""
    con.execute("set variable trace_merge_facts = $f", {"f": _files(folder, parts, ".parquet")})
    con.execute("set variable trace_merge_keys = $k", {"k": _files(folder, parts, ".keys.parquet")})
    return _add_part(
        con,
        folder,
        parts,
        "select * from read_parquet(getvariable('trace_merge_facts')) "
        "semi join visible_runs using (file_sha256, run_id)",
        "select * from read_parquet(getvariable('trace_merge_keys')) "
        "semi join visible_runs using (file_sha256, run_id)",
    )


def provide(con: duckdb.DuckDBPyConnection, lake: Path) -> str:
    """Make the session's `trace_licensing` read kept parts, computing (under the lock) the
    facts of the runs no part covers yet, and merging the parts when there are many.
    Returns 'persisted' (nothing to compute), 'built', or 'live' (the lake cannot be written,
    or it has no trace rows: the view stays as it is)."""
    lake = lake.resolve()
    folder = directory(lake)
    if not kept.writable(folder.parent) or not kept.writable(folder):
        return "live"
    state = coverage(lake)  # (before reading the runs: an ingest meanwhile is not covered)
    with kept.locked(folder / ".lock"):  # another session adding parts: wait
        parts = [p for p in _parts(_read_index(folder)) if (folder / f"{p}.keys.parquet").is_file()]
        try:
            added = _compute_part(con, folder, parts, _runs_not_covered(con, folder, parts))
        finally:
            con.execute("drop table if exists trace_runs_now")
        con.execute("drop table if exists trace_runs_new")
        if added is not None:
            parts.append(added)
        if len(parts) > MAX_PARTS:
            parts = [_merge(con, folder, parts)]
        _write_index(folder, parts, state)
        _remove_unlisted(lake, folder, parts)
    if not parts:
        return "live"  # no trace rows at all: the live view is empty and quick
    attach(con, [folder / f"{name}.parquet" for name in parts])
    return "built" if added is not None else "persisted"


__all__ = [
    "MAX_PARTS",
    "TABLE",
    "attach",
    "complete_parts",
    "coverage",
    "directory",
    "kept_parts",
    "provide",
    "shell_statements",
]
