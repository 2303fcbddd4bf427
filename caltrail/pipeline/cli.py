"""The `caltrail` command line: the app, and every command mounted on it from the module
that holds it (caltrail/pipeline/cli_lake.py: the lake; cli_case.py: cases; cli_export.py: exports). Thin: each
command parses options, calls a library function and renders its result; what the commands
share (exit codes, options, rendering) is caltrail/pipeline/cli_common.py. Exit status: see
cli_common.py and the README.
"""

from __future__ import annotations

import typer

from caltrail.pipeline import cli_case, cli_export, cli_lake

app = typer.Typer(
    name="caltrail",
    help=(
        "Rebuild the history of RDS Per Device CALs from license-server, session-host and "
        "client logs; find why one device holds several CALs, and plan the fix.\n\n"
        'Start with:  caltrail ingest ./collected-logs   then   caltrail sql "select ..."\n\n'
        "Exit status: 0 clean; 1 the lake cannot be opened or written, or a query failed; "
        "2 usage error; 3 some input unreadable; 4 records quarantined under --strict."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # locals hold log contents
    add_completion=False,
    rich_markup_mode=None,
)


# (order of `caltrail --help`)
for name, command in (
    ("run", cli_case.run_cmd),
    ("ingest", cli_lake.ingest_cmd),
    ("diagnose", cli_case.diagnose_cmd),
    ("timeline", cli_case.timeline_cmd),
    ("report", cli_case.report_cmd),
    ("export", cli_export.export_cmd),
    ("sql", cli_lake.sql_cmd),
    ("shell", cli_lake.shell_cmd),
    ("verify", cli_lake.verify_cmd),
    ("compact", cli_lake.compact_cmd),
    ("simulate", cli_case.simulate_cmd),
    ("demo", cli_case.demo_cmd),
):
    app.command(name)(command)


def main() -> None:
    """Console-script entry point."""
    import logging

    # python-evtx logs each record it cannot render at WARNING; caltrail reports those
    # records itself (parse_errors), so the library's own lines would only be noise.
    logging.getLogger("Evtx").setLevel(logging.ERROR)
    app()


__all__ = ["app", "main"]
