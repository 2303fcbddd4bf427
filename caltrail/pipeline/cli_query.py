"""What the commands that query the lake share (`sql`, `search`, `diagnose`, `timeline`,
`report`, `export`): the output format, the --from/--to window, opening a session, and
streaming a query's rows to the chosen format. Apart from caltrail/pipeline/cli_common.py
because it loads pyarrow (the writers of caltrail/pipeline/output.py) and DuckDB, which a
command that queries nothing (`caltrail shell`) does without.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from caltrail.pipeline import output
from caltrail.pipeline.cli_common import EXIT_LAKE, check_lake, fail, usage, when
from caltrail.pipeline.user_sql import Window

if TYPE_CHECKING:
    import duckdb


def check_format(fmt: str) -> str:
    if fmt not in output.FORMATS:
        usage(f"{fmt!r}: choose table, csv or json", "--format")
    return fmt


def window(start: str | None, end: str | None) -> Window:
    """--from/--to as a window (start included, end excluded: a date alone as --to ends
    after that day, a time is included)."""
    lower = when(start, "--from")
    upper = when(end, "--to")
    if upper is not None and end is not None:
        date_only = re.fullmatch(r"\s*\d{4}-\d{2}-\d{2}\s*", end) is not None
        upper += dt.timedelta(days=1) if date_only else dt.timedelta(microseconds=1)
    if lower is not None and upper is not None and upper <= lower:
        usage(f"the window ends before it starts ({start} to {end})", "--from/--to")
    return Window(lower, upper)


def open_session(lake: Path, case: bool = False) -> duckdb.DuckDBPyConnection:
    """A session over `lake` (`case`: the diagnosis layers computed too), with a notice on a
    terminal while kept views are built; exit 1 with one line when it cannot be opened."""
    import duckdb

    from caltrail.pipeline.diagnose import open_case
    from caltrail.pipeline.progress import derived_notice
    from caltrail.pipeline.session import SessionError, connect

    check_lake(lake)
    try:
        with derived_notice(lake) as on_build:
            if case:
                return open_case(lake, on_build=on_build)
            return connect(lake, on_build=on_build)
    except (SessionError, duckdb.Error, OSError) as exc:
        fail(f"cannot open the lake {lake}: {exc}", EXIT_LAKE)


def write_relation(
    relation: duckdb.DuckDBPyRelation,
    fmt: str,
    out: TextIO,
    max_rows: int = output.DEFAULT_MAX_ROWS,
    max_cell: int | None = output.MAX_CELL,
) -> int:
    """Stream a relation's rows to `out` in `fmt` (table cells cut at `max_cell`
    characters, None: whole); exit 1 with one line when the query fails. Returns the number
    of rows."""
    import duckdb
    import pyarrow as pa

    try:
        reader = relation.to_arrow_reader(output.BATCH_ROWS)
        return output.write(fmt, reader.schema, reader, out, max_rows=max_rows, max_cell=max_cell)
    except (duckdb.Error, pa.ArrowException) as exc:
        fail(f"query failed: {exc}", EXIT_LAKE)
    except BrokenPipeError:
        raise  # `| head` has what it wanted: the app's group ends quietly
    except OSError as exc:
        if exc.errno is None:  # the error of a query, raised through its Arrow stream
            fail(f"query failed: {exc}", EXIT_LAKE)
        fail(f"cannot write the result: {exc.strerror or exc}", EXIT_LAKE)


def query_rows(
    con: duckdb.DuckDBPyConnection,
    query: str,
    params: dict[str, Any],
    fmt: str,
    out: TextIO,
    max_rows: int = output.DEFAULT_MAX_ROWS,
    max_cell: int | None = output.MAX_CELL,
) -> int:
    """One of caltrail's own queries (values bound), streamed to `out`."""
    import duckdb

    try:
        relation = con.sql(query, params=params) if params else con.sql(query)
    except duckdb.Error as exc:
        fail(f"query failed: {exc}", EXIT_LAKE)
    return write_relation(relation, fmt, out, max_rows, max_cell)


__all__ = [
    "check_format",
    "open_session",
    "query_rows",
    "window",
    "write_relation",
]
