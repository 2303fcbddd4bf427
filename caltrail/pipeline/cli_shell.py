"""`caltrail shell`: the lake in the DuckDB shell (mounted on the app by
caltrail/pipeline/cli.py).

Kept light, as the shell should open at once: this module, and caltrail/pipeline/shell.py
which says whether the lake's init script is current, load neither DuckDB nor pyarrow;
bringing the lake up to date and writing the script (caltrail/pipeline/session.py, with
both) is loaded only when the script is not current.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from caltrail.pipeline.cli_common import DEFAULT_LAKE, EXIT_LAKE, ReadLakeOpt, check_lake, fail
from caltrail.pipeline.shell import SHELL_LAKE_ENV, current_script, duckdb_cli


def shell_cmd(
    lake: ReadLakeOpt = DEFAULT_LAKE,
    command: Annotated[
        str | None,
        typer.Option(
            "--command", "-c", metavar="SQL", help="Run one statement in the shell and exit."
        ),
    ] = None,
) -> None:
    """Open the lake in the DuckDB shell with every view and macro defined.

    The same as:  duckdb -init LAKE/caltrail.sql   (the init script is kept up to date by
    every ingest and diagnosis; the shell is installed with caltrail by the duckdb-cli
    package). The diagnosis layers are computed first when an ingest made them stale, so
    the shell opens at once; a read-only lake opens too (its layers then compute live).

    Example:  caltrail shell --lake ./lake
    """
    check_lake(lake)
    binary = duckdb_cli()
    if binary is None:
        fail("the DuckDB shell is not installed (pip install duckdb-cli)", EXIT_LAKE)
    script = current_script(lake) or up_to_date_script(lake)
    args = [binary, "-init", str(script)]
    if command is not None:
        args += ["-c", command]
    sys.stdout.flush()
    os.execve(binary, args, {**os.environ, SHELL_LAKE_ENV: str(lake.resolve())})


def up_to_date_script(lake: Path) -> Path:
    """The diagnosis layers computed when an ingest made them stale (a notice on a
    terminal while they are), then the shell's init script written for the lake as it is."""
    # DuckDB, pyarrow and the sessions load only on this path: the lake changed since its
    # script was written
    import duckdb

    from caltrail.pipeline.materialize import all_current
    from caltrail.pipeline.progress import derived_notice
    from caltrail.pipeline.session import SessionError, refresh, shell_script

    try:
        if not all_current(lake):
            with derived_notice(lake) as on_build:
                refresh(lake, on_build)
        return shell_script(lake)
    except (SessionError, duckdb.Error) as exc:
        fail(f"cannot open the lake {lake}: {exc}", EXIT_LAKE)
    except OSError as exc:
        fail(f"cannot write the shell's init script: {exc}", EXIT_LAKE)


__all__ = ["shell_cmd", "up_to_date_script"]
