"""The `caltrail` command line: the app, and every command mounted on it from the module
that holds it (caltrail/pipeline/cli_lake.py: the lake; cli_sql.py: SQL; cli_shell.py: the
DuckDB shell; cli_case.py: cases; cli_search.py: searching events; cli_export.py: exports).
A command's module is imported only when that command runs (`COMMANDS`; `caltrail --help`
imports them all to list them): `caltrail shell` must not wait for the pyarrow, DuckDB and
ingest code the other commands load. Thin: each command parses options, calls a library
function and renders its result; what the commands share (exit codes, options, one-line
errors) is caltrail/pipeline/cli_common.py, what the querying ones share (sessions,
windows, rendering) cli_query.py, and the ingest that ingest, run and demo run
caltrail/pipeline/cli_ingest.py. Exit status: see cli_common.py and the README.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping
from typing import Annotated, Any

import typer

from caltrail.pipeline.cli_common import CaltrailCommand, CaltrailGroup, show_version

# Every command: its name, and the function that holds it as "module:function", in the order
# of `caltrail --help`.
COMMANDS = {
    "run": "caltrail.pipeline.cli_case:run_cmd",
    "ingest": "caltrail.pipeline.cli_lake:ingest_cmd",
    "diagnose": "caltrail.pipeline.cli_case:diagnose_cmd",
    "timeline": "caltrail.pipeline.cli_case:timeline_cmd",
    "report": "caltrail.pipeline.cli_case:report_cmd",
    "search": "caltrail.pipeline.cli_search:search_cmd",
    "sql": "caltrail.pipeline.cli_sql:sql_cmd",
    "export": "caltrail.pipeline.cli_export:export_cmd",
    "shell": "caltrail.pipeline.cli_shell:shell_cmd",
    "verify": "caltrail.pipeline.cli_lake:verify_cmd",
    "compact": "caltrail.pipeline.cli_lake:compact_cmd",
    "simulate": "caltrail.pipeline.cli_case:simulate_cmd",
    "demo": "caltrail.pipeline.cli_case:demo_cmd",
}


def load_command(name: str) -> Any:
    """The click command of `name` (one of COMMANDS), its module imported now: built as
    typer builds a command mounted on the app (a one-command app gives just that command)."""
    module, function = COMMANDS[name].split(":")
    one = typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False, add_completion=False)
    # `caltrail sql "-- a comment\nselect ..."`: a query may start with "--", which is not
    # an option; the command itself refuses what only looks like a mistyped option.
    settings = {"ignore_unknown_options": True} if name == "sql" else {}
    one.command(name, cls=CaltrailCommand, context_settings=settings)(
        getattr(importlib.import_module(module), function)
    )
    return typer.main.get_command(one)


class LazyCommands(MutableMapping[str, Any]):
    """The app's commands by name (all of COMMANDS), each loaded the first time it is asked
    for: its name is known, and offered for a mistyped one ("Did you mean 'shell'?"),
    without its module."""

    def __init__(self) -> None:
        self.loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self.loaded:
            if name not in COMMANDS:
                raise KeyError(name)
            self.loaded[name] = load_command(name)
        return self.loaded[name]

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or name in self.loaded  # (without loading it)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys([*COMMANDS, *self.loaded]))

    def __len__(self) -> int:
        return len(dict.fromkeys([*COMMANDS, *self.loaded]))

    def __setitem__(self, name: str, command: Any) -> None:
        self.loaded[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError(f"the command {name} cannot be removed")


class LazyGroup(CaltrailGroup):
    """The app's group, its `commands` a LazyCommands: a click group finds a command by
    name there (get_command), and offers the names there for a mistyped one."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = LazyCommands()

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.commands)  # the names alone: nothing loaded for listing them


app = typer.Typer(
    name="caltrail",
    cls=LazyGroup,
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


def main() -> None:
    """Console-script entry point."""
    import logging

    # python-evtx logs each record it cannot render at WARNING; caltrail reports those
    # records itself (parse_errors), so the library's own lines would only be noise.
    logging.getLogger("Evtx").setLevel(logging.ERROR)
    app()


__all__ = ["COMMANDS", "LazyGroup", "app", "load_command", "main"]
