"""Views declared `materialize: run`, kept in the lake per ingest run of each input file.

A row of such a view depends only on one input row and the reference tables, so, unlike the
views kept per state of the lake (caltrail/pipeline/materialize.py: rebuilt whole when the
lake changes), its rows are kept by ingest run: a diagnosis after a batch ingest computes the
batch's rows alone. Two views are kept so (`KEPT_PER_RUN`):
- `trace_licensing`, the licensing facts read out of trace messages: the costliest step of a
  diagnosis (RE2 group extraction over every message of a licensing module: about 20 s for
  2.4 M messages);
- `licensing_records`, the EVTX events of the licensing families with the event catalog's
  fields read out of each event's data (every copy of a record: `licensing_events` shows each
  record once, choosing among the copies as `events` does).
Each view reads its input view (`RunTable.input`), which a session points at the runs not
kept yet; the input is otherwise the source view (`RunTable.source`) itself.

Layout, under `LAKE/_derived/<view>-<stamp>/` (`stamp`: the SQL of queries/ up to the file
defining the view and the reference tables of LAKE/_ref, the patterns among them; not the
manifest):
- `part-<n>-<id>.parquet`: the rows of some runs, with `file_sha256` and `run_id`;
- `part-<n>-<id>.keys.parquet`: the (file_sha256, run_id) runs it covers, those that gave no
  row included (so they are not read again);
- `index.json`: the parts in use, replaced atomically; `complete` is the state of the lake
  (`coverage`: its manifest, and the stamp's queries) at which they covered every run.

A session reads the parts of the index, keeping only the rows of runs still visible (a file
ingested again with --force has a new run). Parts are added and merged under a lock file, so
two sessions never compute the same runs twice; a part the index no longer lists is removed
once it is `STALE_SECONDS` old (a session opened before may still read it).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from caltrail import queries
from caltrail.pipeline import kept

# Parts are merged into one when there are more than this (one is added per batch).
MAX_PARTS = 12
INDEX = "index.json"


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
    kept.replace_json({"parts": parts, "complete": complete}, folder / INDEX)


def _new_part_name(parts: list[str]) -> str:
    number = 1 + max((int(p.split("-")[1]) for p in parts), default=0)
    return f"part-{number:06d}-{uuid.uuid4().hex[:8]}"


def _files(folder: Path, parts: list[str], suffix: str) -> list[str]:
    return [str(folder / f"{name}{suffix}") for name in parts]


@dataclass(frozen=True)
class RunTable:
    """A view kept per ingest run: `table` computes the rows of what its `input` view shows,
    which is `source` (a committed-rows view of one raw table, one run per file) unless a
    session points it at some runs; `layer` is the query file defining `table` (an edit
    there or before it starts the kept rows again; an edit of a later layer does not). Every
    name is our own: none comes from user input."""

    table: str
    input: str
    source: str
    layer: str
    # the column each part is written in the order of: a session after a batch reads the
    # rows of a few hundred names (caltrail/pipeline/patch.py), and in parts sorted by name
    # the Parquet reader skips the row groups none of them falls in (the licensing records
    # of 50,000 devices: 0.30 s to read the touched names' rows unsorted, 0.02 s sorted; the
    # sort costs a sixth more on writing the fleet's part)
    order_by: str = "client_name"

    def directory(self, lake: Path) -> Path:
        """Where the rows are kept for the stamp of the queries and reference tables now."""
        stamp = kept.fingerprint(lake, manifest=False, upto=self.layer)
        return lake / kept.DERIVED_DIR / f"{self.table}-{stamp}"

    def coverage(self, lake: Path) -> str:
        """The state of the lake the rows depend on: the manifest (the runs) and the stamp's
        queries and reference tables."""
        return kept.fingerprint(lake, manifest=True, upto=self.layer)

    def complete_parts(self, lake: Path) -> list[Path] | None:
        """The part files when they cover the lake as it is now, else None."""
        lake = lake.resolve()
        folder = self.directory(lake)
        index = _read_index(folder)
        if index.get("complete") != self.coverage(lake):
            return None
        files = [folder / f"{name}.parquet" for name in _parts(index)]
        return files if files and all(f.is_file() for f in files) else None

    def kept_parts(self, lake: Path) -> list[str]:
        """The names of the parts the index lists (covering the lake or not), whose files
        are all there."""
        folder = self.directory(lake.resolve())
        return [
            name
            for name in _parts(_read_index(folder))
            if (folder / f"{name}.parquet").is_file()
            and (folder / f"{name}.keys.parquet").is_file()
        ]

    def shell_statements(self, lake: Path, statement: queries.Statement) -> list[str]:
        """The view for the shell's init script, paths relative to its `lake` variable: the
        kept parts, only the rows of runs still visible; when they do not cover the lake (an
        ingest since), the rows of the runs not kept yet are computed live when a query
        reads them (the declared statement, as `<table>_live` over the runs not covered):
        the shell opened after a batch reads the batch's rows alone. Nothing kept: the
        declared statement itself."""
        names = self.kept_parts(lake)
        if not names:
            return [statement.sql + ";"]
        prefix = f"{kept.DERIVED_DIR}/{self.directory(lake.resolve()).name}/"

        def files(suffix: str) -> str:
            # part names are made by _new_part_name (digits and hex): no user text
            return (
                "["
                + ", ".join(f"getvariable('lake') || '/{prefix}{n}{suffix}'" for n in names)
                + "]"
            )

        table = self.table
        out = [
            f"-- {table}: the rows kept in the lake per ingest run",
            f"set variable {table}_parts = {files('.parquet')};",
        ]
        kept_rows = (
            f"select * from read_parquet(getvariable('{table}_parts')) "
            "semi join visible_runs using (file_sha256, run_id)"
        )
        if self.complete_parts(lake) is not None:
            return [*out, f"create or replace view {table} as {kept_rows};"]
        return [
            *out,
            f"set variable {table}_keys = {files('.keys.parquet')};",
            f"-- ({table}_live computes the runs the kept parts do not cover)",
            f"create or replace view {self.input} as select * from {self.source} "
            f"anti join read_parquet(getvariable('{table}_keys')) using (file_sha256, run_id);",
            statement.sql_as(f"{table}_live") + ";",
            f"create or replace view {table} as {kept_rows}\nunion all\nselect * from {table}_live;",
        ]

    def attach(self, con: duckdb.DuckDBPyConnection, files: list[Path]) -> None:
        """Point the session's view at kept parts (paths as a bound value)."""
        con.execute(f"set variable {self.table}_parts = $files", {"files": [str(f) for f in files]})
        con.execute(
            f"create or replace view {self.table} as select * from "
            f"read_parquet(getvariable('{self.table}_parts')) "
            "semi join visible_runs using (file_sha256, run_id)"
        )

    def _add_part(
        self,
        con: duckdb.DuckDBPyConnection,
        folder: Path,
        parts: list[str],
        sql: str,
        keys_sql: str,
    ) -> str:
        """Write the rows of `sql` and the runs of `keys_sql` as a new part (rows first: a
        part counts once its keys file is there, and only once the index lists it)."""
        name = _new_part_name(parts)
        kept.replace(con, sql, folder / f"{name}.parquet")
        kept.replace(con, keys_sql, folder / f"{name}.keys.parquet")
        return name

    def _remove_unlisted(self, lake: Path, folder: Path, parts: list[str]) -> None:
        """Remove parts the index no longer lists, and folders of other stamps (edited
        queries or reference tables), once they are old enough."""
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
        for other in (lake / kept.DERIVED_DIR).glob(f"{self.table}-*"):
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

    def _runs_not_covered(
        self, con: duckdb.DuckDBPyConnection, folder: Path, parts: list[str]
    ) -> int:
        """Fill the temp table <table>_runs_new with the committed runs of the source that
        no part covers; returns how many runs there are in all."""
        now, new = f"{self.table}_runs_now", f"{self.table}_runs_new"
        con.execute(
            f"create or replace temp table {now} as "
            f"select distinct file_sha256, run_id from {self.source}"
        )
        covered = "select null::varchar as file_sha256, null::varchar as run_id where false"
        if parts:
            con.execute(
                f"set variable {self.table}_keys_files = $files",
                {"files": _files(folder, parts, ".keys.parquet")},
            )
            covered = (
                "select file_sha256, run_id "
                f"from read_parquet(getvariable('{self.table}_keys_files'))"
            )
        con.execute(f"create or replace temp table {new} as select * from {now} except ({covered})")
        [(runs,)] = con.execute(f"select count(*) from {now}").fetchall()
        return int(runs)

    def _compute_part(
        self, con: duckdb.DuckDBPyConnection, folder: Path, parts: list[str], all_runs: int
    ) -> str | None:
        """The rows of the runs in <table>_runs_new as a new part (None when there are
        none)."""
        new = f"{self.table}_runs_new"
        [(new_runs,)] = con.execute(f"select count(*) from {new}").fetchall()
        if new_runs == 0:
            return None
        if new_runs < all_runs:
            # the view over the new runs alone (its input view pointed at them; the source
            # shows one run per file, so the file says which). Not when every run is new:
            # the filter costs a third more than the whole.
            con.execute(
                f"create or replace view {self.input} as select * from {self.source} "
                f"where file_sha256 in (select file_sha256 from {new})"
            )
        try:
            return self._add_part(
                con,
                folder,
                parts,
                f"select * from main.{self.table} order by {self.order_by}",
                f"select * from {new}",
            )
        finally:
            con.execute(f"create or replace view {self.input} as select * from {self.source}")

    def _merge(self, con: duckdb.DuckDBPyConnection, folder: Path, parts: list[str]) -> str:
        """One part of the rows and runs of `parts` still visible (older runs of a file are
        dropped); the parts merged stay on disk until `_remove_unlisted` finds them stale."""
        rows, keys = f"{self.table}_merge_rows", f"{self.table}_merge_keys"
        con.execute(f"set variable {rows} = $f", {"f": _files(folder, parts, ".parquet")})
        con.execute(f"set variable {keys} = $k", {"k": _files(folder, parts, ".keys.parquet")})
        return self._add_part(
            con,
            folder,
            parts,
            f"select * from read_parquet(getvariable('{rows}')) "
            f"semi join visible_runs using (file_sha256, run_id) order by {self.order_by}",
            f"select * from read_parquet(getvariable('{keys}')) "
            "semi join visible_runs using (file_sha256, run_id)",
        )

    def provide(self, con: duckdb.DuckDBPyConnection, lake: Path) -> str:
        """Make the session's view read kept parts, computing (under the lock) the rows of
        the runs no part covers yet, and merging the parts when there are many. Returns
        'persisted' (nothing to compute), 'built', or 'live' (the lake cannot be written, or
        the source has no rows: the view stays as it is)."""
        lake = lake.resolve()
        folder = self.directory(lake)
        if not kept.writable(folder.parent) or not kept.writable(folder):
            return "live"
        state = self.coverage(lake)  # (before reading the runs: an ingest meanwhile is not covered)
        with kept.locked(folder / ".lock"):  # another session adding parts: wait
            parts = [
                p for p in _parts(_read_index(folder)) if (folder / f"{p}.keys.parquet").is_file()
            ]
            try:
                added = self._compute_part(
                    con, folder, parts, self._runs_not_covered(con, folder, parts)
                )
            finally:
                con.execute(f"drop table if exists {self.table}_runs_now")
            con.execute(f"drop table if exists {self.table}_runs_new")
            if added is not None:
                parts.append(added)
            if len(parts) > MAX_PARTS:
                parts = [self._merge(con, folder, parts)]
            _write_index(folder, parts, state)
            self._remove_unlisted(lake, folder, parts)
        if not parts:
            return "live"  # no source rows at all: the live view is empty and quick
        self.attach(con, [folder / f"{name}.parquet" for name in parts])
        return "built" if added is not None else "persisted"


# The trace facts (35_trace_licensing.sql).
TRACE = RunTable(
    table="trace_licensing",
    input="trace_licensing_input",
    source="trace_events",
    layer="35_trace_licensing.sql",
)
# The EVTX events of the licensing families, every copy (30_licensing_events.sql).
LICENSING = RunTable(
    table="licensing_records",
    input="licensing_records_input",
    source="events_all",
    layer="30_licensing_events.sql",
)
# Every view declared `materialize: run`, by name (a test holds it equal to the declarations).
KEPT_PER_RUN = {kept_view.table: kept_view for kept_view in (TRACE, LICENSING)}


__all__ = ["KEPT_PER_RUN", "LICENSING", "MAX_PARTS", "TRACE", "RunTable"]
