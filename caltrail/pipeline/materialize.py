"""Computed views: how each one declared in caltrail/queries is kept, built and attached.

A query file declares, above a costly view, how it is kept (caltrail/queries/__init__.py):

- `lake`: computed once per state of the lake (`kept.fingerprint`) and kept as
  `LAKE/_derived/<view>-<fingerprint>.parquet`. A session reads the file when it is current;
  when it is not, the session (with `derive`) computes it right after the view is defined,
  before the views above it are: left live, every view above would re-bind the whole tree
  below it when created, and every query would recompute it. On a lake that cannot be
  written the result is a temp table of the session.
- `run`: kept per ingest run of each input file (the trace facts and the EVTX licensing
  records: caltrail/pipeline/per_run.py), so a session after a batch ingest computes the
  batch's part alone.
- `state`: a table of the session that builds the kept views of a new state, which read
  it (`state.<view>`, shown as the view by a temp view); not kept (nothing reads it once
  they are kept, and writing it cost seconds).

`Loader` runs the statements of caltrail/queries on a connection and acts on these
declarations; `shell_statements` writes the same for the DuckDB shell's init script, with
every path relative to the `lake` variable so that a copied lake opens itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path

import duckdb

from caltrail import queries
from caltrail.pipeline import kept, patch, per_run, trace_query

# (view about to be built, its step, the number of steps): for a progress line
BuildProgress = Callable[[str, int, int], None]


class BuildError(Exception):
    """A declared view could not be computed (message names it)."""


def current_file(lake: Path, view: str, stamp: str | None = None) -> Path | None:
    """The kept file of a `lake`-kind view for the lake as it is now, if there is one."""
    lake = lake.resolve()
    path = kept.view_file(lake, view, stamp or kept.fingerprint(lake))
    return path if kept.present(path) else None


def generated_through() -> str | None:
    """The last query file (stem) that declares a generated view: a session loaded through it
    can write every generated query."""
    files = [Path(s.file).stem for s in queries.statements() if s.generated]
    return max(files) if files else None


def pattern_session(con: duckdb.DuckDBPyConnection) -> None:
    """Define on `con` (its `lake` and `ref_dir` variables set) only what writing the
    generated queries reads: the scalar macros and the pattern views (a table macro binds
    the tables it reads when it is defined). Writing the shell's init
    script needs no more, and a whole session through the trace layer binds every view below
    it (most of the script's cost)."""
    for statement in queries.statements(through=generated_through()):
        scalar_macro = statement.object_kind == "macro" and " as table" not in statement.sql
        if scalar_macro or statement.creates in trace_query.PATTERN_VIEWS:
            _execute(con, statement)


def lake_views() -> list[str]:
    return queries.declared("lake")


def all_current(lake: Path, stamp: str | None = None) -> bool:
    """Whether every `lake`-kind view has a current kept file (nothing to build); `stamp`:
    the lake's fingerprint when the caller has it."""
    lake = lake.resolve()
    stamp = stamp or kept.fingerprint(lake)
    return all(current_file(lake, view, stamp) is not None for view in lake_views())


def _variable(view: str) -> str:
    return f"kept_{view}"


def attach(con: duckdb.DuckDBPyConnection, view: str, path: Path) -> None:
    """Define `view` as its kept file, or files (paths go in as bound values)."""
    kept.attach(con, view, _variable(view), path)


@dataclass
class Loader:
    """Runs the statements of caltrail/queries on `con`, keeping the declared views.

    `derive`: build what is not current (else leave it a live view). `on_build` is called
    before each view this loader builds."""

    con: duckdb.DuckDBPyConnection
    lake: Path
    derive: bool = True
    on_build: BuildProgress | None = None
    built: dict[str, str] = field(default_factory=dict)  # view -> 'built' | 'temp' | ...

    def __post_init__(self) -> None:
        self.lake = self.lake.resolve()
        self.stamp = kept.fingerprint(self.lake)
        self.steps = sum(len(queries.declared(kind)) for kind in ("lake", "run", "state"))
        self.step = 0
        self.loaded: list[queries.Statement] = []
        # the kept files of an earlier state, to patch the per-device views from
        # (caltrail/pipeline/patch.py); looked for only when some view is to be built
        self.patcher: patch.Patcher | None = None
        # some kept view of this state is to be built by this session
        self.building = self.derive and not all_current(self.lake, self.stamp)
        if self.building:
            self.patcher = patch.Patcher.find(self.con, self.lake, self.stamp, lake_views())

    def run(self, statements: list[queries.Statement]) -> None:
        try:
            for statement in statements:
                self.execute(statement)
            if self.derive and all_current(self.lake, self.stamp):
                patch.record_state(self.con, self.lake, self.stamp)
        finally:
            if self.patcher is not None:
                self.patcher.close()

    def execute(self, statement: queries.Statement) -> None:
        self.loaded.append(statement)
        if statement.materialize == "lake" and statement.creates:
            self.step += 1
            self._lake_view(statement, statement.creates)
        elif statement.materialize == "run" and statement.creates:
            self.step += 1
            self._run_view(statement)
        elif statement.materialize == "state" and statement.creates:
            self.step += 1
            self._state_view(statement, statement.creates)
        else:
            self._plain(statement)

    def _state_view(self, statement: queries.Statement, view: str) -> None:
        """A view the kept views of a state read, not kept itself: computed into a table
        (shown by a temp view of the view's name, which shadows the view for every view
        reading it) when some kept view is to be built, else left live. One declared
        `patched per device`, when the state is patched from a base: only the touched
        devices' rows are computed, for the patched views above (the view itself stays
        live, whole for any other reader)."""
        self._plain(statement)
        if not self.building:
            return
        if self.on_build is not None:
            self.on_build(view, self.step, self.steps)
        patcher = self.patcher
        if statement.patched and patcher is not None and patcher.ready(self.loaded):
            try:
                patcher.compute(statement, self.loaded[:-1])
                self.built[view] = "patched"
                return
            except duckdb.Error as exc:
                # patching failed: this view and those above are computed whole
                patcher.give_up(f"patching {view}: {exc}")
        try:
            # (a table of a schema of its own, which the patch's cursor sees too, shown on
            # this connection by a temp view: a temp table is this connection's alone)
            state = patch.STATE_SCHEMA
            self.con.execute(f"create schema if not exists {state}")
            self.con.execute(f"create or replace table {state}.{view} as select * from main.{view}")
            self.con.execute(f"create or replace temp view {view} as select * from {state}.{view}")
        except duckdb.Error as exc:
            raise BuildError(f"building {view}: {exc}") from exc
        self.built[view] = "temp"

    def _plain(self, statement: queries.Statement) -> None:
        _execute(self.con, statement)

    def _lake_view(self, statement: queries.Statement, view: str) -> None:
        existing = current_file(self.lake, view, self.stamp)
        if existing is not None:
            attach(self.con, view, existing)
            return
        self._plain(statement)
        if self.derive:
            if self.on_build is not None:
                self.on_build(view, self.step, self.steps)
            patcher = self.patcher
            compute: Callable[[], patch.Patched] | None = None
            if statement.patched and patcher is not None and patcher.ready(self.loaded):
                compute = partial(patcher.rows, statement, self.loaded[:-1])
            keep = patcher.base if patcher is not None else None
            try:
                try:
                    self.built[view] = provide(
                        self.con, self.lake, view, self.stamp, compute=compute, also_keep=keep
                    )
                except duckdb.Error as exc:
                    if compute is None or patcher is None:
                        raise
                    # patching failed: this view and those above are computed whole
                    patcher.give_up(f"patching {view}: {exc}")
                    self.built[view] = provide(
                        self.con, self.lake, view, self.stamp, also_keep=keep
                    )
            except duckdb.Error as exc:
                raise BuildError(f"building {view}: {exc}") from exc

    def _run_view(self, statement: queries.Statement) -> None:
        view = statement.creates or ""
        keeper = _run_table(statement)
        files = keeper.complete_parts(self.lake)
        if files is not None:  # (the live view is not defined first: binding it costs)
            keeper.attach(self.con, files)
            return
        self._plain(statement)
        # computed now only when a lake-kind view above will read it (this session builds
        # one); else it stays live and costs nothing until a query reads it
        if self.building:
            if self.on_build is not None:
                self.on_build(view, self.step, self.steps)
            try:
                self.built[view] = keeper.provide(self.con, self.lake)
            except duckdb.Error as exc:
                raise BuildError(f"building {view}: {exc}") from exc


def _run_table(statement: queries.Statement) -> per_run.RunTable:
    keeper = per_run.KEPT_PER_RUN.get(statement.creates or "")
    if keeper is None:
        raise BuildError(
            f"{statement.file}: {statement.creates} is declared `materialize: run`, "
            "but caltrail/pipeline/per_run.py does not know how to keep it"
        )
    return keeper


def _execute(con: duckdb.DuckDBPyConnection, statement: queries.Statement) -> None:
    sql = generated_sql(con, statement)
    if (statement.object_kind == "view" or statement.generated is not None) and _defers():
        sql = _VIEW_HEAD.sub(r"\1 with (defer_binding) as", sql, count=1)
    try:
        con.execute(sql)
    except duckdb.Error as exc:
        raise BuildError(f"{statement.file}: {exc}") from exc


# A session's views are created unbound (DuckDB's DEFER_BINDING): each is bound when a query
# reads it, as it is anyway, and not also when it is created, where binding a view binds the
# whole tree of views below it again: a session opens in well under half the time. (Not in
# the DuckDB shell's init script: the shell installed predates the option.)
_VIEW_HEAD = re.compile(r"^(\s*create\s+or\s+replace\s+view\s+\w+)\s+as\b", re.I | re.M)


@cache
def _defers() -> bool:
    """Whether this DuckDB creates a view unbound on request (2.0 does; the versions the
    package range allows before it refuse the option: their views are bound as before)."""
    with duckdb.connect() as probe:
        try:
            probe.execute("create view probe with (defer_binding) as select 1")
        except duckdb.Error:
            return False
    return True


def generated_sql(con: duckdb.DuckDBPyConnection, statement: queries.Statement) -> str:
    """The statement to run: its own SQL, or, for a view declared `generated`, the view
    defined by the query caltrail/pipeline/trace_query.py writes for it on `con`."""
    if statement.generated is None:
        return statement.sql
    write = trace_query.GENERATORS.get(statement.generated)
    if write is None:
        raise BuildError(f"{statement.file}: no query writer for {statement.generated}")
    return f"create or replace view {statement.generated} as {write(con)}"


def provide(
    con: duckdb.DuckDBPyConnection,
    lake: Path,
    view: str,
    stamp: str | None = None,
    compute: Callable[[], patch.Patched] | None = None,
    also_keep: str | None = None,
) -> str:
    """Make `view` (defined live on `con`) a computed one: its kept file when current, else
    built and kept now, else (lake not writable) a temp table. Returns how: 'persisted',
    'built' (or 'patched': `compute` gave its rows in parts, see caltrail/pipeline/patch.py)
    or 'temp'. `also_keep`: the stamp of another state whose files stay (the base
    of a patch)."""
    lake = lake.resolve()
    stamp = stamp or kept.fingerprint(lake)
    existing = current_file(lake, view, stamp)
    if existing is not None:
        attach(con, view, existing)
        return "persisted"
    folder = kept.directory(lake)
    patched: patch.Patched | None = None
    if kept.writable(folder):
        with kept.locked(folder / f".{view}.lock"):
            existing = current_file(lake, view, stamp)  # built while this one waited
            if existing is not None:
                attach(con, view, existing)
                return "persisted"
            target = kept.view_file(lake, view, stamp)
            if target.is_file():
                kept.discard(target)  # (its parts are gone: current_file said so)
            patched = compute() if compute is not None else None  # (its errors go up)
            try:
                if patched is None:
                    kept.write(con, f"select * from main.{view}", target)
                elif patched.drops is None:
                    kept.write(con, patched.rows, target)
                else:
                    kept.write_parts(con, target, patched.rows, patched.parts, patched.drops)
            except (OSError, duckdb.IOException):
                pass  # (a full disk): computed into the session below
            else:
                _remove_stale(lake, stamp, also_keep)
                attach(con, view, target)
                return "built" if patched is None else "patched"
    if patched is None and compute is not None:
        patched = compute()
    rows = f"select * from main.{view}" if patched is None else patched.whole
    con.execute(f"create or replace temp table {view} as {rows}")
    return "temp"


def _remove_stale(lake: Path, stamp: str, also_keep: str | None = None) -> None:
    """Kept files of other states of the lake (of any view, one no longer declared too),
    but those of `also_keep`."""
    folder = kept.directory(lake)
    stamps = [stamp] if also_keep is None else [stamp, also_keep]
    keep = {name for s in stamps for name in kept.referenced(folder, s)}
    kept.remove_stale(folder, keep | {p.name for p in folder.iterdir() if p.is_dir()})


# ---------------------------------------------------------------------------
# The DuckDB shell's init script
# ---------------------------------------------------------------------------


def shell_statements(lake: Path, con: duckdb.DuckDBPyConnection) -> Iterator[str]:
    """The statements of caltrail/queries for the shell's init script: a `lake`-kind view
    with a current kept file is defined as that file (its live definition is left out, so
    the shell binds nothing below it), one without is computed once when the shell opens (a
    temp table); the trace facts read their kept parts; every path is
    relative to the `lake` variable the script sets first. `con`: a session on the lake
    (through the trace layer at least), on which the generated queries are written."""
    lake = lake.resolve()
    stamp = kept.fingerprint(lake)
    for statement in queries.statements():
        view = statement.creates
        if statement.materialize == "lake" and view:
            path = current_file(lake, view, stamp)
            if path is not None:
                yield f"-- {view}: kept in the lake (current when this script was written)"
                yield _shell_kept(view, path)
                continue
            # not kept for this state of the lake (an ingest since, without --derive):
            # computed into the shell's session once, so the views above bind to a table
            yield generated_sql(con, statement) + ";"
            yield f"create or replace temp table {view} as select * from main.{view};"
            continue
        if statement.materialize == "run" and view:
            yield from _run_table(statement).shell_statements(lake, statement)
            continue
        yield generated_sql(con, statement) + ";"


def _shell_kept(view: str, path: Path) -> str:
    # the files' names are made of views' names, hex digests and our suffixes: no user text
    def relative(file: Path) -> str:
        return f"getvariable('lake') || '/{kept.DERIVED_DIR}/{file.name}'"

    parts, drops = kept.parts_of(path)
    variable = _variable(view)
    lines = [f"set variable {variable} = [{', '.join(relative(p) for p in parts)}];"]
    if drops is not None:
        lines.append(f"set variable {variable}_drops = {relative(drops)};")
    rows = kept.select_rows(
        f"getvariable('{variable}')", None if drops is None else f"getvariable('{variable}_drops')"
    )
    return "\n".join([*lines, f"create or replace view {view} as {rows};"])


__all__ = [
    "BuildError",
    "BuildProgress",
    "Loader",
    "all_current",
    "attach",
    "current_file",
    "generated_sql",
    "generated_through",
    "lake_views",
    "provide",
    "shell_statements",
]
