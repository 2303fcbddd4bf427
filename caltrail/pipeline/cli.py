"""The `caltrail` command line: the app, and every command mounted on it from the module
that holds it (caltrail/pipeline/cli_lake.py: the lake; cli_sql.py: SQL; cli_shell.py: the
DuckDB shell; cli_case.py: cases; cli_search.py: searching events; cli_export.py: exports). Thin: each command parses options, calls a library
function and renders its result; what the commands share (exit codes, options, one-line
errors, rendering) is caltrail/pipeline/cli_common.py, and the ingest that ingest, run and
demo run is caltrail/pipeline/cli_ingest.py. Exit status: see cli_common.py and the README.
"""

from __future__ import annotations

from typing import Annotated

import typer

from caltrail.pipeline import cli_case, cli_export, cli_lake, cli_search, cli_shell, cli_sql
from caltrail.pipeline.cli_common import CaltrailCommand, CaltrailGroup, show_version

app = typer.Typer(
    name="caltrail",
    cls=CaltrailGroup,
    help=(
        "Rebuild the history of RDS Per Device CALs from license-server, session-host and "
        "client logs; find why one device holds several CALs, and plan the fix.\n\n"
        "\b\n"
        "Start with:  caltrail run ./collected-logs --tz auto --out case.html\n"
        '        or:  caltrail ingest ./collected-logs   then   caltrail sql "select ..."\n\n'
        "Exit status: 0 clean; 1 the lake cannot be opened or written, or a query failed; "
        "2 usage error; 3 some input unreadable; 4 records quarantined under --strict; "
        "5 no licensing data found (or none in the --from/--to window)."
    ),
    context_settings={"help_option_names": ["-h", "--help"]},
    invoke_without_command=True,
    pretty_exceptions_enable=False,  # CaltrailGroup reports every error in one line
    add_completion=False,
    rich_markup_mode=None,
)


@app.callback()
def _top(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            is_eager=True,
            callback=show_version,
            help="Print caltrail's version and exit.",
        ),
    ] = False,
) -> None:
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())


# (order of `caltrail --help`)
for name, command in (
    ("run", cli_case.run_cmd),
    ("ingest", cli_lake.ingest_cmd),
    ("diagnose", cli_case.diagnose_cmd),
    ("timeline", cli_case.timeline_cmd),
    ("report", cli_case.report_cmd),
    ("search", cli_search.search_cmd),
    ("sql", cli_sql.sql_cmd),
    ("export", cli_export.export_cmd),
    ("shell", cli_shell.shell_cmd),
    ("verify", cli_lake.verify_cmd),
    ("compact", cli_lake.compact_cmd),
    ("simulate", cli_case.simulate_cmd),
    ("demo", cli_case.demo_cmd),
):
    # `caltrail sql "-- a comment\nselect ..."`: a query may start with "--", which is not
    # an option; the command itself refuses what only looks like a mistyped option.
    settings = {"ignore_unknown_options": True} if name == "sql" else {}
    app.command(name, cls=CaltrailCommand, context_settings=settings)(command)


def main() -> None:
    """Console-script entry point."""
    import logging

    # python-evtx logs each record it cannot render at WARNING; caltrail reports those
    # records itself (parse_errors), so the library's own lines would only be noise.
    logging.getLogger("Evtx").setLevel(logging.ERROR)
    app()


__all__ = ["app", "main"]
