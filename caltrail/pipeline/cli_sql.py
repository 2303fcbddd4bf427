"""`caltrail sql`: a user's SQL over the lake, statement by statement, streamed to a table,
CSV or JSON (mounted on the app by caltrail/pipeline/cli.py; the statements are run by
caltrail/pipeline/user_sql.py, the rows written by caltrail/pipeline/output.py)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from caltrail.pipeline import output
from caltrail.pipeline.cli_common import (
    DEFAULT_LAKE,
    EXIT_LAKE,
    FormatOpt,
    FromOpt,
    MaxRowsOpt,
    OutputOpt,
    ReadLakeOpt,
    ToOpt,
    fail,
    prepare_output,
    say,
    usage,
)
from caltrail.pipeline.cli_query import check_format, open_session, window, write_relation
from caltrail.pipeline.output import plural

if TYPE_CHECKING:
    import duckdb

    from caltrail.pipeline import user_sql


def sql_cmd(
    query: Annotated[
        str | None,
        typer.Argument(
            metavar="QUERY",
            help="DuckDB SQL over the lake's views; several statements run in order; - reads "
            "the query from stdin.",
            show_default=False,
        ),
    ] = None,
    lake: ReadLakeOpt = DEFAULT_LAKE,
    file: Annotated[
        Path | None,
        typer.Option("--file", metavar="FILE", dir_okay=False, help="Read the query from FILE."),
    ] = None,
    fmt: FormatOpt = "table",
    max_rows: MaxRowsOpt = output.DEFAULT_MAX_ROWS,
    out: OutputOpt = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            metavar="NAME=VALUE",
            help="Bound parameter, used as $NAME in the query (repeatable).",
        ),
    ] = None,
    time_from: FromOpt = None,
    time_to: ToOpt = None,
    time_column: Annotated[
        str | None,
        typer.Option(
            "--time-column",
            metavar="COLUMN",
            help="The result column --from/--to filter on (default: the first TIMESTAMP or "
            "DATE column), unless the query uses $from / $to itself.",
        ),
    ] = None,
) -> None:
    """Run SQL over the lake, with every view and macro defined.

    Values go in as bound parameters, never into the SQL text. The session is in memory:
    CREATE, DROP, INSERT and SET change it, never the lake (and say so). The table format
    shows at most --max-rows rows; CSV and JSON stream every row.

    \b
    Example:  caltrail sql "select action, count(*) from licensing_events group by all"
    Example:  caltrail sql 'select * from events where computer like $pc' -p pc=LS01% -f csv
    Example:  caltrail sql --file query.sql --from 2025-03-01 --to 2025-03-31 -f json -o out.jsonl
    """
    import duckdb

    from caltrail.pipeline import user_sql

    check_format(fmt)
    text = _query_text(query, file)
    params: dict[str, str] = {}
    for item in param or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            usage(f"expected NAME=VALUE, got {item!r}", "--param")
        params[name] = value
    span = window(time_from, time_to)
    target = prepare_output(out, "--output")
    con = open_session(lake)
    try:
        script = user_sql.parse(con, text, params, span, time_column)
    except user_sql.SqlUsageError as exc:
        usage(str(exc), "QUERY")
    except duckdb.Error as exc:
        fail(f"query failed: {exc}", EXIT_LAKE)
    with output.output_stream(target, sys.stdout) as stream:
        _run_script(con, script, fmt, max_rows, stream)
    if target is not None:
        say(f"Wrote {target}")


def _query_text(query: str | None, file: Path | None) -> str:
    """The query from the argument, stdin (`-`) or --file; usage errors for none, two, an
    empty one, or an argument that is a mistyped option."""
    if query is not None and file is not None:
        usage("give the query as an argument or with --file, not both", "--file")
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            usage(f"cannot read {file}: {exc}", "--file")
    elif query == "-":
        text = sys.stdin.read()
    elif query is None:
        usage("give a query, - to read it from stdin, or --file FILE", "QUERY")
    else:
        if OPTION_LIKE.fullmatch(query):
            usage(f"no such option: {query.split('=')[0]}", "QUERY")
        text = query
    if not text.strip():
        usage("the query is empty", "QUERY")
    return text


# A word that is only an option name (`--fromat=csv`), not SQL (a SQL comment has a blank
# or a newline after its dashes, and a line that is only a comment holds no statement).
OPTION_LIKE = re.compile(r"--?[A-Za-z][\w-]*(=\S*)?")


def _run_script(
    con: duckdb.DuckDBPyConnection,
    script: user_sql.Script,
    fmt: str,
    max_rows: int,
    stream: TextIO,
) -> None:
    import duckdb

    from caltrail.pipeline import user_sql

    results = 0
    try:
        for ran in user_sql.run(con, script):
            if ran.relation is not None:
                if results and fmt != "json":
                    stream.write("\n")  # results apart (each CSV result has its header)
                write_relation(ran.relation, fmt, stream, max_rows)
                results += 1
            elif ran.wrote_rows is not None:
                say(f"statement {ran.number} ({ran.kind}) wrote {plural(ran.wrote_rows, 'row')}")
            elif ran.session_only:
                say(
                    f"note: statement {ran.number} ({ran.kind}) changed this session only; "
                    "nothing in the lake changed (caltrail sql opens a fresh in-memory "
                    "session over the lake's files each time)"
                )
            else:
                say(f"note: statement {ran.number} ({ran.kind}) ran")
    except user_sql.SqlUsageError as exc:
        usage(str(exc), "--from/--to")
    except duckdb.Error as exc:
        fail(f"query failed: {exc}", EXIT_LAKE)


__all__ = ["sql_cmd"]
