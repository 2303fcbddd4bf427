"""A user's SQL text (`caltrail sql`), run statement by statement over a session of the lake.

The text may hold several statements; each runs in order on one connection, so a later one
sees what an earlier one created (`create temp table t as ...; select ... from t`). What a
statement is decides what is done with it:

- a query (SELECT, FROM-first, VALUES, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN, PRAGMA, CALL, PIVOT)
  gives rows, streamed to the writer a batch at a time (`rows`);
- COPY and EXPORT write files the user named: they run and say how many rows they wrote;
- anything else (CREATE, DROP, INSERT, SET, ...) changes the session only: the session is an
  in-memory DuckDB over the lake's Parquet files, opened afresh by every command, so nothing
  in the lake changes, and the caller says so (`Ran.session_only`).

Values go in as bound parameters (`-p NAME=VALUE` binds `$NAME`); each statement is given the
parameters it names. A time window (`--from/--to`) is bound as `$from` / `$to` into a
statement that names them; a query that does not is read as a subquery filtered on a time
column of its result (the first TIMESTAMP or DATE column, or the one named), the bounds
bound as parameters and the column name quoted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb

ROW_STATEMENTS = frozenset({"SELECT", "EXPLAIN", "PRAGMA", "CALL", "MULTI", "RELATION"})
FILE_STATEMENTS = frozenset({"COPY", "EXPORT"})
WINDOW_PARAMS = ("from", "to")
TIME_TYPES = ("TIMESTAMP", "DATE")


class SqlUsageError(ValueError):
    """The SQL text or the values given with it cannot be run as asked (a usage error)."""


@dataclass(frozen=True)
class Window:
    """A time window: `start` inclusive, `end` exclusive (UTC datetimes, None: open)."""

    start: dt.datetime | None = None
    end: dt.datetime | None = None

    def __bool__(self) -> bool:
        return self.start is not None or self.end is not None

    def params(self) -> dict[str, dt.datetime | None]:
        """The bounds as the bound parameters $from and $to (None: unbounded)."""
        return {"from": self.start, "to": self.end}

    def describe(self) -> str:
        def day(value: dt.datetime | None) -> str:
            return "…" if value is None else value.isoformat().replace("+00:00", "Z")

        return f"{day(self.start)} to {day(self.end)} (end excluded)"


def quote_identifier(name: str) -> str:
    """A column or table name as a SQL identifier: in double quotes, inner quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


@dataclass
class Ran:
    """What one statement did."""

    number: int
    kind: str  # the statement type, e.g. SELECT, DROP
    relation: duckdb.DuckDBPyRelation | None = None  # rows to write (queries)
    session_only: bool = False  # changed the session, not the lake
    wrote_rows: int | None = None  # COPY: rows written to the user's file
    window_column: str | None = None  # the result column the window filtered on


@dataclass
class Script:
    """A user's SQL text split into statements, with the parameters each one takes."""

    statements: list[duckdb.Statement]
    params: dict[str, Any] = field(default_factory=dict)
    window: Window = field(default_factory=Window)
    time_column: str | None = None


def parse(
    con: duckdb.DuckDBPyConnection,
    text: str,
    params: dict[str, Any],
    window: Window,
    time_column: str | None = None,
) -> Script:
    """Split `text` into statements and check the parameters against them.

    Raises SqlUsageError for an empty text, a parameter no statement uses, a statement's
    parameter without a value, a -p that takes the window's names; duckdb.ParserException for
    text that is not SQL."""
    if not text.strip():
        raise SqlUsageError("the query is empty")
    statements = list(con.extract_statements(text))
    if not statements:
        raise SqlUsageError("the query holds no statement (only comments or blanks)")
    taken = set(params) & set(WINDOW_PARAMS)
    if taken and window:
        raise SqlUsageError(
            f"-p {sorted(taken)[0]}=... and --from/--to both set ${sorted(taken)[0]}: keep one"
        )
    named: set[str] = set()
    for number, statement in enumerate(statements, 1):
        wanted = set(statement.named_parameters)
        named |= wanted
        missing = wanted - set(params) - (set(WINDOW_PARAMS) if window else set())
        if missing:
            name = sorted(missing)[0]
            raise SqlUsageError(
                f"statement {number} uses ${name}: give its value with -p {name}=VALUE"
                + (" or --from/--to" if name in WINDOW_PARAMS else "")
            )
    unused = set(params) - named
    if unused:
        raise SqlUsageError(f"-p {sorted(unused)[0]}: the query has no ${sorted(unused)[0]}")
    return Script(statements, params, window, time_column)


def run(con: duckdb.DuckDBPyConnection, script: Script) -> Iterator[Ran]:
    """Run each statement in order; a query's rows are read when its `relation` is (before the
    next statement runs, so read it before asking for the next). Raises duckdb.Error when a
    statement fails and SqlUsageError when a window cannot be applied."""
    attached = False
    for number, statement in enumerate(script.statements, 1):
        kind = statement.type.name
        values = _values(statement, script)
        if kind in ROW_STATEMENTS:
            relation = con.sql(statement, params=values) if values else con.sql(statement)
            if relation is None:
                continue
            window_column = None
            if script.window and kind == "SELECT" and not _names_window(statement):
                relation, window_column = _windowed(con, statement, relation, script)
            yield Ran(number, kind, relation=relation, window_column=window_column)
        elif kind in FILE_STATEMENTS:
            result = con.sql(statement, params=values) if values else con.sql(statement)
            counted = result.fetchall() if result is not None else []
            rows = (
                int(counted[0][0]) if counted and counted[0] and counted[0][0] is not None else None
            )
            yield Ran(number, kind, wrote_rows=rows)
        else:
            result = con.sql(statement, params=values) if values else con.sql(statement)
            if result is not None:
                result.fetchall()
            attached = attached or kind == "ATTACH"
            yield Ran(number, kind, session_only=not attached)


def _names_window(statement: duckdb.Statement) -> bool:
    return bool(set(statement.named_parameters) & set(WINDOW_PARAMS))


def _values(statement: duckdb.Statement, script: Script) -> dict[str, Any]:
    wanted = set(statement.named_parameters)
    values = {k: v for k, v in script.params.items() if k in wanted}
    if script.window:
        values.update({k: v for k, v in script.window.params().items() if k in wanted})
    return values


def _windowed(
    con: duckdb.DuckDBPyConnection,
    statement: duckdb.Statement,
    relation: duckdb.DuckDBPyRelation,
    script: Script,
) -> tuple[duckdb.DuckDBPyRelation, str]:
    """The query read as a subquery, its rows kept when their time column is in the window."""
    columns = list(relation.columns)
    types = [str(t).upper() for t in relation.types]
    if script.time_column is not None:
        if script.time_column not in columns:
            raise SqlUsageError(
                f"--time-column {script.time_column}: the result has no such column "
                f"(it has {', '.join(columns[:12])})"
            )
        column = script.time_column
    else:
        found = [c for c, t in zip(columns, types, strict=True) if t.startswith(TIME_TYPES)]
        if not found:
            raise SqlUsageError(
                "--from/--to: the result has no TIMESTAMP or DATE column to filter on; name "
                "one with --time-column, or write $from / $to in the query"
            )
        column = found[0]
    body = statement.query.rstrip().rstrip(";")
    conditions = []
    values = _values(statement, script)
    if script.window.start is not None:
        conditions.append(f"q.{quote_identifier(column)} >= $from")
        values["from"] = script.window.start
    if script.window.end is not None:
        conditions.append(f"q.{quote_identifier(column)} < $to")
        values["to"] = script.window.end
    # (the newline ends a trailing line comment of the user's query before the parenthesis)
    wrapped = f"select q.* from (\n{body}\n) as q where {' and '.join(conditions)}"
    return con.sql(wrapped, params=values), column


__all__ = [
    "FILE_STATEMENTS",
    "ROW_STATEMENTS",
    "Ran",
    "Script",
    "SqlUsageError",
    "Window",
    "parse",
    "quote_identifier",
    "run",
]
