"""The kept per-device views patched after a batch ingest, not computed whole again.

A view declared `patched per device` (caltrail/queries/__init__.py) holds rows that each
belong to a device of the kinds it groups by: a computer name, a HWID, a license. Computed
whole, `cal_events` and the layers above it took most of a first diagnosis after a batch
(40 s at 50,000 devices), for a batch that names a few hundred devices. So a session that
finds the kept files of an earlier state of the lake (the base) computes, for each such
view, only the rows of the devices the batch touched, and keeps the base's other rows:

1. The base is the latest state whose kept files are all there, computed by the same
   queries and reference tables, whose runs (`runs.<queries>-<stamp>.parquet`, written once
   a state's views are all kept) are all still visible: a batch only added runs.
2. What the batch touched (caltrail/queries/patch/prepare.sql): every device named by a row
   of a new file (of the inputs declared `per device`), and the devices a change of the
   fleet reaches (a server's new full listing or key pack snapshot, the end of the data
   moved, a server keyed for the first time, a trace file attributed to another server).
   Some changes reach devices no rule can name (a database rebuilt, a file read again, a
   WMI export naming no server attributed elsewhere, a counted license without a name): the
   state is then computed whole, and `reason` says why.
3. The names, licenses and license ids linked to a touched one by a CAL fact, to a fixed
   point (patch/closure.sql), then the HWIDs of their facts (patch/hwids.sql). A HWID links
   nothing (one HWID can be every FreeRDP client's): what reads a HWID across names reads
   every row of it, and what orders a HWID's licenses has files of its own
   (patch/licenses.sql, patch/licenses.after.sql).
4. Each patched view, in load order: its rows of the touched devices computed on a cursor of
   the session on which every view declared per device that it reads is a temp view of
   that view's rows of the touched devices of the kinds it groups by (`compute`); then kept
   in parts (pipeline/kept.py): those rows in its own file, and the base's files less the
   rows of those devices (`rows`). A `state` view (cal_facts_keyed) is not kept: its rows
   of the touched devices are what the patched views above read of it.

tests/pipeline/test_patch.py holds every kept view of a patched state equal to the same
state computed whole, after batches of each kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from caltrail import queries
from caltrail.pipeline import kept

SCHEMA = "patch"
# The tables of the session's `state` views computed whole (caltrail/pipeline/materialize.py):
# on the patch's cursor each stands for its view, as on the session's connection.
STATE_SCHEMA = "state"
PATCH_SQL = queries.QUERIES_DIR / "patch"
RUNS_PREFIX = "runs."
# A patched view is kept in parts (pipeline/kept.py): the base's parts less the rows of the
# touched devices, and the rows computed for them. With more parts than this, it is
# written whole again (each part is a file every query of the view opens).
MAX_PARTS = 8


@dataclass(frozen=True)
class Patched:
    """How a patched view is kept: `rows` (SQL) in its own file, with the earlier files
    `parts` less the rows `drops` (SQL: part, file_row_number) lists; `drops` None: `rows`
    is the whole view. `whole`: the whole view as one query."""

    rows: str
    parts: list[str]
    drops: str | None
    whole: str


class Unpatchable(Exception):
    """The base state cannot be patched into this one (message says why)."""


def runs_file(lake: Path, stamp: str) -> Path:
    """Where the runs of the state `stamp` are kept (its kept files were computed from them)."""
    queries_stamp = kept.fingerprint(lake, manifest=False)
    return kept.directory(lake) / f"{RUNS_PREFIX}{queries_stamp}-{stamp}.parquet"


def record_state(con: duckdb.DuckDBPyConnection, lake: Path, stamp: str) -> None:
    """Keep the runs of the state `stamp` (every view of it kept): a later state can be
    patched from it. Not when an ingest came meanwhile (the runs read may be a later
    state's)."""
    target = runs_file(lake, stamp)
    if target.is_file() or not kept.writable(target.parent):
        return
    kept.write(con, "select file_sha256, run_id from visible_runs", target)
    if kept.fingerprint(lake) != stamp:
        target.unlink(missing_ok=True)


def find_base(lake: Path, stamp: str, views: list[str]) -> str | None:
    """The latest other state of the same queries whose runs and kept `views` are all
    there (whether its runs are still visible is checked when patching)."""
    prefix = runs_file(lake, stamp).name.rsplit("-", 1)[0] + "-"

    def age(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:
            return 0.0

    for path in sorted(kept.directory(lake).glob(f"{prefix}*.parquet"), key=age, reverse=True):
        base = path.name[len(prefix) : -len(".parquet")]
        if base != stamp and all(kept.present(kept.view_file(lake, view, base)) for view in views):
            return base
    return None


def _sql_statements(name: str) -> list[str]:
    return [
        parsed.query.strip().rstrip(";")
        for parsed in duckdb.extract_statements((PATCH_SQL / name).read_text(encoding="utf-8"))
    ]


def _kinds(pairs: tuple[tuple[str, str], ...]) -> frozenset[str]:
    """The kinds of device `pairs` name (every kind, for a kind held in a column)."""
    if any(not kind.startswith("'") for kind, _ in pairs):
        return frozenset(queries.DEVICE_KINDS)
    return frozenset(kind.strip("'") for kind, _ in pairs)


def reader_kinds(pairs: tuple[tuple[str, str], ...]) -> frozenset[str]:
    """The kinds of device a view declared with `pairs` groups by: the views it reads are
    restricted to the rows of touched devices of these kinds (and to the rows of touched
    files and license ids, which every view reads with its devices). A view whose kind is a
    column (the findings: a HWID's or a name's) reads by every kind."""
    return _kinds(pairs) | {"file", "triple"}


# what a statement reads: a relation after from/join, a macro called, a view named in quotes
# as a call's first argument (a table macro's: excess_summary('hwid_excess_flags'))
_READS = re.compile(r"\b(?:from|join)\s+(\w+)|\b(\w+)\s*\(|\(\s*'(\w+)'", re.IGNORECASE)
_COMMENT = re.compile(r"--[^\n]*")


def _read_per_device(
    statement: queries.Statement, below: list[queries.Statement]
) -> list[queries.Statement]:
    """The views declared per device that `statement`'s view reads, through the plain views
    and macros below it (by the names its SQL and theirs hold). Only they are restricted
    for it: a view read whole that could have been restricted costs time, not rows."""
    by_name = {s.creates: s for s in below if s.creates}
    found: dict[str, queries.Statement] = {}
    seen: set[str] = set()
    pending = [statement.sql]
    while pending:
        sql = _COMMENT.sub("", pending.pop())
        for word in {name for found in _READS.findall(sql) for name in found if name}:
            read = by_name.get(word)
            if read is None or word in seen or word == statement.creates:
                continue
            seen.add(word)
            if read.per_device:
                found[word] = read
            elif read.materialize is None:  # a kept view is read as kept: not below it
                pending.append(read.sql)
    return [s for s in below if s.creates in found]


def touched_predicate(
    pairs: tuple[tuple[str, str], ...], kinds: frozenset[str] | None = None, alias: str = "v"
) -> str:
    """SQL: whether a row (`alias`) belongs to a touched device, by the declared pairs whose
    kind is one of `kinds` (all by default; validated words from our own query files:
    caltrail/queries/__init__.py). NULL, not false, for a row whose only untouched devices
    include a NULL one: negated, it goes through coalesce(..., false)."""
    tests = []
    for kind, column in pairs:
        if not kind.startswith("'"):  # (a kind held in a column: correlated)
            tests.append(
                f"exists (select 1 from {SCHEMA}.touched as t "
                f"where t.kind = {alias}.{kind} and t.key = {alias}.{column})"
            )
        elif kinds is None or kind.strip("'") in kinds:
            # (uncorrelated: a hash join built once, where a correlated test on a view of
            # millions of rows took 2.5 times as long, and one test alone a semi join)
            tests.append(
                f"{alias}.{column} in (select key from {SCHEMA}.touched where kind = {kind})"
            )
    return "(" + (" or ".join(tests) or "false") + ")"


def touched_rows(
    source: str, statement: queries.Statement, kinds: frozenset[str], by_kind: bool
) -> str:
    """SQL: the rows of `source` (a view or table of ours) that belong to a touched device of
    `kinds`, by the pairs `statement` declares per device, and its rows read with every
    device (`every_device_when_null`). `by_kind`: one query per kind, in the declared order,
    each less the rows of the kinds before (a row comes once): each is a semi join on one
    column, whose filter reaches the Parquet reader of a kept table, which then skips the row
    groups none of the keys falls in when the table is sorted by that column (per_run.py);
    the kinds tested together are one join the reader cannot use."""
    pairs = statement.per_device
    one_by_one = by_kind and all(kind.startswith("'") for kind, _ in pairs)
    tests = (
        [touched_predicate((pair,)) for pair in pairs if pair[0].strip("'") in kinds]
        if one_by_one
        else [touched_predicate(pairs, kinds)]
    )
    if statement.every_device_when_null is not None:
        tests.append(f"v.{statement.every_device_when_null} is null")
    if not one_by_one:
        return f"select * from {source} as v where ({' or '.join(tests)})"
    by_one = []
    for n, test in enumerate(tests):
        if n:
            test += f" and not coalesce({' or '.join(tests[:n])}, false)"
        by_one.append(f"select * from {source} as v where {test}")
    return "\nunion all\n".join(by_one) or f"select * from {source} as v where false"


@dataclass
class Patcher:
    """Patches the `patched per device` views of a session from the base state `base`."""

    con: duckdb.DuckDBPyConnection
    lake: Path
    stamp: str
    base: str
    views: list[str]  # every view kept per state (the base's files of each)
    state: str = "new"  # new | ready | off
    reason: str | None = None
    touched: dict[str, int] = field(default_factory=dict)
    # (view, kinds) -> the version of the touched set its shadow (a table of its rows of the
    # touched devices of those kinds) was made for; the version grows with the set
    shadows: dict[tuple[str, frozenset[str]], int] = field(default_factory=dict)
    # a patched view -> the version its rows (patch.rows_<view>) were computed for
    computed: dict[str, int] = field(default_factory=dict)
    version: int = 0
    # the cursor shadowed queries run on (`_shadow_cursor`): its temp views (name -> their
    # SQL) and the session's variables as last copied to it (name -> (text, type))
    cursor: duckdb.DuckDBPyConnection | None = None
    cursor_views: dict[str, str] = field(default_factory=dict)
    cursor_variables: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def find(
        cls, con: duckdb.DuckDBPyConnection, lake: Path, stamp: str, views: list[str]
    ) -> Patcher | None:
        base = find_base(lake, stamp, views)
        return None if base is None else cls(con, lake, stamp, base, views)

    def ready(self, inputs: list[queries.Statement]) -> bool:
        """Whether the views can be patched (prepared once; `inputs`: the statements loaded
        so far, the views declared per device among them)."""
        if self.state == "new":
            try:
                self._prepare(inputs)
                self.state = "ready"
            except (Unpatchable, duckdb.Error) as exc:
                self.give_up(str(exc))
        return self.state == "ready"

    def give_up(self, reason: str) -> None:
        """Compute the views left whole (`reason`: why)."""
        self.state, self.reason = "off", reason
        self.close()

    def _prepare(self, inputs: list[queries.Statement]) -> None:
        con = self.con
        con.execute(f"create schema if not exists {SCHEMA}")
        for view in [*self.views, "runs"]:
            path = (
                runs_file(self.lake, self.base)
                if view == "runs"
                else kept.view_file(self.lake, view, self.base)
            )
            # (names: declared views and our own; paths go in as bound values)
            kept.attach(con, f"{SCHEMA}.base_{view}", f"patch_base_{view}", path)
        for sql in _sql_statements("prepare.sql"):
            con.execute(sql)
        reasons = [r for (r,) in con.execute(f"select reason from {SCHEMA}.unpatchable").fetchall()]
        if reasons:
            raise Unpatchable("; ".join(reasons))
        for statement in inputs:
            if statement.per_device and not statement.patched:
                self._seed_new_rows(statement)
        self._close_over("patch.base_cal_links")

    def _seed_new_rows(self, statement: queries.Statement) -> None:
        """Every device a row of a touched file (a new one) names, in an input read per
        device (its rows of those files read once: a live view is computed each time)."""
        files = [column for kind, column in statement.per_device if kind == "'file'"]
        if not files:
            raise Unpatchable(f"{statement.creates} is read per device but names no file")
        pairs = [(kind, column) for kind, column in statement.per_device if kind != "'file'"]
        columns = ", ".join(sorted({column for _, column in pairs}))
        self.con.execute(
            f"create or replace table {SCHEMA}.seed_rows as select distinct {columns} "
            # (unqualified: a `state` view is a table of the session, shown by a temp view)
            f"from {statement.creates} as v "
            f"where v.{files[0]} in (select key from {SCHEMA}.touched where kind = 'file')"
        )
        for kind, column in pairs:
            self.con.execute(
                f"insert into {SCHEMA}.touched select distinct {kind}, {column} "
                f"from {SCHEMA}.seed_rows where {column} is not null"
            )

    def _close_over(self, links: str) -> None:
        """Add the devices linked to a touched one by `links` (the devices of each CAL fact:
        cal_links of a state), to a fixed point, then their HWIDs."""
        # (each input seeds its devices: one row per device from here on)
        self.con.execute(
            f"create or replace table {SCHEMA}.touched as select distinct * from {SCHEMA}.touched"
        )
        self.con.execute(f"create or replace view {SCHEMA}.links as select * from {links}")
        [step] = _sql_statements("closure.sql")
        while True:
            # (fetchall: a result left unfinished blocks the connection's next relation)
            [(added,)] = self.con.execute(step).fetchall()
            if not added:
                break
        for sql in _sql_statements("hwids.sql"):
            self.con.execute(sql)
        self._count_touched()
        self.version += 1

    def _count_touched(self) -> None:
        self.touched = dict(
            self.con.execute(
                f"select kind, count(*) from {SCHEMA}.touched group by kind"
            ).fetchall()
        )

    def _grows(self, name: str) -> bool:
        """Run patch/<name> (what a view reads of the fleet, before or after it is computed);
        whether it touched more devices (then closed over) or asks for the view to be
        computed again (rows in patch.redo). Devices it puts in patch.among_rows are
        touched as they are: every row of theirs is among the rows just computed."""
        if not (PATCH_SQL / name).is_file():
            return False
        count = f"select count(*) from {SCHEMA}.touched"
        [(before,)] = self.con.execute(count).fetchall()
        self.con.execute(f"create or replace table {SCHEMA}.redo (key varchar)")
        self.con.execute(f"create or replace table {SCHEMA}.among_rows (kind varchar, key varchar)")
        for sql in _sql_statements(name):
            self.con.execute(sql)
        [(after,)] = self.con.execute(count).fetchall()
        [(redo,)] = self.con.execute(f"select count(*) from {SCHEMA}.redo").fetchall()
        if after > before:
            self._close_over("main.cal_links")
        self.con.execute(
            f"insert into {SCHEMA}.touched select * from {SCHEMA}.among_rows "
            f"except select * from {SCHEMA}.touched"
        )
        self._count_touched()
        return after > before or bool(redo)

    def compute(self, statement: queries.Statement, below: list[queries.Statement]) -> None:
        """Compute the rows of the touched devices of `statement`'s view (defined live on
        the session) into patch.rows_<view>, with what its patch files add to the touched
        set first and after."""
        view = statement.creates or ""
        while True:
            self._grows(f"{view}.sql")
            self._compute(statement, below)
            if not self._grows(f"{view}.after.sql"):
                return

    def rows(self, statement: queries.Statement, below: list[queries.Statement]) -> Patched:
        """Compute the rows of the touched devices of a kept view (`compute`); returns how
        to keep the patched view: these rows, and the base's rows of the other devices."""
        view = statement.creates or ""
        self.compute(statement, below)
        touched = touched_predicate(statement.patched_by)
        whole = (
            f"select * from {SCHEMA}.base_{view} as v where not coalesce({touched}, false) "
            f"union all select * from {SCHEMA}.rows_{view}"
        )
        parts, drops = kept.parts_of(kept.view_file(self.lake, view, self.base))
        if len(parts) >= MAX_PARTS:
            return Patched(rows=whole, parts=[], drops=None, whole=whole)
        self.con.execute(
            f"set variable patch_parts_{view} = $parts", {"parts": [str(p) for p in parts]}
        )
        dropped = (
            "select parse_filename(filename) as part, file_row_number "
            f"from read_parquet(getvariable('patch_parts_{view}'), filename = true, "
            f"file_row_number = true) as v where {touched}"
        )
        if drops is not None:
            self.con.execute(f"set variable patch_drops_{view} = $drops", {"drops": str(drops)})
            dropped += f" union select * from read_parquet(getvariable('patch_drops_{view}'))"
        return Patched(
            rows=f"select * from {SCHEMA}.rows_{view}",
            parts=[p.name for p in parts],
            drops=dropped,
            whole=whole,
        )

    def _compute(self, statement: queries.Statement, below: list[queries.Statement]) -> None:
        """patch.rows_<view>: the view's rows of the touched devices (`_on_shadows`, reading
        by the kinds this view groups by)."""
        view = statement.creates or ""
        # (only the touched devices' rows: a device of another kind may show up partly)
        self._on_shadows(
            _read_per_device(statement, below),
            below,
            reader_kinds(statement.patched_by),
            f"create or replace table {SCHEMA}.rows_{view} as select * from main.{view} as v "
            f"where {touched_predicate(statement.patched_by)}",
        )
        self.computed[view] = self.version

    def _on_shadows(
        self,
        inputs: list[queries.Statement],
        below: list[queries.Statement],
        kinds: frozenset[str],
        sql: str,
    ) -> None:
        """Run `sql` on a cursor on which each of `inputs` (the views declared per device
        that the view it reads reads: `_read_per_device`) shows its touched rows of `kinds`,
        and each patch.input_<name> table stands for <name>, as each table of a `state` view
        computed whole (state.<name>) does."""
        shadows = {s.creates or "": self._shadow(s, kinds, below) for s in inputs}
        views = {
            name: f"select * from {STATE_SCHEMA}.{name}" for name in self._tables(STATE_SCHEMA)
        }
        views.update({name: f"select * from {table}" for name, table in shadows.items()})
        views.update(
            {
                name: f"select * from {SCHEMA}.input_{name}"
                for name in self._tables(SCHEMA, "input_")
            }
        )
        cursor = self._shadow_cursor()
        # (views of other names: a view may not read a view of its own name)
        for name in self.cursor_views.keys() - views.keys():
            cursor.execute(f"drop view if exists temp.{name}")
        for name, body in views.items():
            if self.cursor_views.get(name) != body:
                cursor.execute(f"create or replace temp view {name} as {body}")
        self.cursor_views = views
        cursor.execute(sql)

    def _tables(self, schema: str, prefix: str = "") -> list[str]:
        """The tables of `schema` whose names start with `prefix`, less the prefix."""
        return [
            name.removeprefix(prefix)
            for (name,) in self.con.execute(
                "select table_name from duckdb_tables() where schema_name = $s "
                "and starts_with(table_name, $prefix)",
                {"s": schema, "prefix": prefix},
            ).fetchall()
        ]

    def _shadow_cursor(self) -> duckdb.DuckDBPyConnection:
        """The cursor the shadowed queries run on (one for the patch: its temp views are
        replaced from one query to the next), with the session's variables as they are now:
        only those set or changed since the last query are copied (each copy is two
        statements, and a patch runs some thirty queries over forty variables)."""
        if self.cursor is None:
            self.cursor = self.con.cursor()
        current = {
            name: (value, kind)
            for name, value, kind in self.con.execute(
                "select name, value, type from duckdb_variables()"
            ).fetchall()
        }
        for name, seen in current.items():
            if self.cursor_variables.get(name) != seen:
                # typed: duckdb_variables() gives their text
                [(value,)] = self.con.execute("select getvariable($n)", {"n": name}).fetchall()
                self.cursor.execute(f"set variable {name} = $value", {"value": value})
        self.cursor_variables = current
        return self.cursor

    def _shadow(
        self, statement: queries.Statement, kinds: frozenset[str], below: list[queries.Statement]
    ) -> str:
        """The table of the rows of the touched devices (of `kinds`) of a view declared per
        device, made for the touched set as it is: from the rows just computed for it when
        they hold them all, else from the view; a plain view from the touched rows of the
        views it reads that are declared per device. (That holds its rows of the touched
        devices as the closure leaves them: a row of a touched license or license id names a
        touched name or none, as each CAL fact's devices are linked, patch/closure.sql.)"""
        view = statement.creates or ""
        if "hwid" in kinds:
            # made of every kind: a touched HWID's rows are most of it (one HWID can be every
            # FreeRDP client's), the other touched devices' add few, and it then serves
            # every later reader (more rows than a reader's kinds give cost time, not rows:
            # _read_per_device)
            kinds = frozenset(queries.DEVICE_KINDS)
        table = self._shadow_table(view, kinds)
        if self.shadows.get((view, kinds)) == self.version:
            return table
        made = [
            made_for
            for (made_of, made_for), version in self.shadows.items()
            if made_of == view and version == self.version and kinds < made_for
        ]
        if made:
            # one made for more kinds holds these rows: read from it, not the view, and only
            # these (more rows cost a reader time: the touched HWIDs' alone can be most of
            # one, the legacy FreeRDP HWID brought 440,000 rows of other names to a batch
            # of 500 devices, and name_evidence computed every one of those names before
            # keeping the touched ones: 0.15 s)
            rows = touched_rows(self._shadow_table(view, made[0]), statement, kinds, False)
            self.con.execute(f"create or replace table {table} as {rows}")
            self.shadows[(view, kinds)] = self.version
            return table
        # the rows computed for it hold them when it is patched by every kind they are read by
        read_by = kinds & _kinds(statement.per_device)
        computed = self.computed.get(view) == self.version and read_by <= _kinds(
            statement.patched_by
        )
        inputs = [] if computed or statement.materialize else _read_per_device(statement, below)
        if inputs:
            rows = touched_rows(f"main.{view}", statement, kinds, by_kind=False)
            self._on_shadows(inputs, below, kinds, f"create or replace table {table} as {rows}")
        else:
            # (unqualified: a `state` view is a table of the session, shown by a temp view; a view kept per run
            # is read by kind: its parts are sorted by name)
            source = f"{SCHEMA}.rows_{view}" if computed else view
            rows = touched_rows(source, statement, kinds, by_kind=statement.materialize == "run")
            self.con.execute(f"create or replace table {table} as {rows}")
        self.shadows[(view, kinds)] = self.version
        return table

    @staticmethod
    def _shadow_table(view: str, kinds: frozenset[str]) -> str:
        return f"{SCHEMA}.shadow_{view}_" + "_".join(sorted(kinds))

    def close(self) -> None:
        """Drop what patching kept in the session."""
        if self.cursor is not None:
            self.cursor.close()
            self.cursor = None
        self.con.execute(f"drop schema if exists {SCHEMA} cascade")


__all__ = [
    "MAX_PARTS",
    "SCHEMA",
    "STATE_SCHEMA",
    "Patched",
    "Patcher",
    "Unpatchable",
    "find_base",
    "reader_kinds",
    "record_state",
    "runs_file",
    "touched_predicate",
    "touched_rows",
]
