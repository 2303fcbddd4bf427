"""`caltrail export`: the lake's events, CAL facts or findings as a SIEM takes them
(pipeline/export.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from caltrail.pipeline.cli_common import (
    DEFAULT_LAKE,
    EXIT_LAKE,
    FromOpt,
    ReadLakeOpt,
    ToOpt,
    check_lake,
    fail,
    prepare_output,
    usage,
)
from caltrail.pipeline.cli_query import window

if TYPE_CHECKING:
    import duckdb


def export_cmd(
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            "-f",
            metavar="FORMAT",
            help="ecs (Elastic Common Schema NDJSON), timesketch (JSONL) or csv.",
        ),
    ],
    what: Annotated[
        str, typer.Option("--what", metavar="WHAT", help="events, cal-facts or findings.")
    ],
    out: Annotated[
        str,
        typer.Option(
            "--out",
            "-o",
            metavar="FILE",
            help="File to write (replaced when complete; its folder is created), or - for "
            "stdout.",
        ),
    ],
    lake: ReadLakeOpt = DEFAULT_LAKE,
    start: FromOpt = None,
    end: ToOpt = None,
) -> None:
    """Stream the lake's events, CAL facts or findings as NDJSON or CSV for a SIEM.

    Findings carry a stable id (event.id): the same finding on the same evidence has the
    same id in every run.

    Example:  caltrail export -f ecs --what findings --out findings.ndjson --lake ./lake
    """
    import duckdb

    from caltrail.pipeline import export
    from caltrail.pipeline.session import SessionError

    if fmt not in export.FORMATS:
        usage(f"{fmt!r}: choose ecs, timesketch or csv", "--format")
    if what not in export.WHATS:
        usage(f"{what!r}: choose events, cal-facts or findings", "--what")
    bounds = window(start, end)
    target = None if out == "-" else prepare_output(Path(out), "--out")
    check_lake(lake)
    try:
        con = _session(lake, what)
        with con:
            count = export.export_to(con, what, fmt, target, bounds.start, bounds.end, stdout=sys.stdout)
    except (SessionError, duckdb.Error) as exc:
        fail(str(exc), EXIT_LAKE)
    except BrokenPipeError:  # `caltrail export ... | head`: the reader has what it wanted
        sys.stderr.close()
        raise typer.Exit(0) from None
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}", EXIT_LAKE)
    if target is not None:
        typer.echo(f"{count} {what} written to {target} ({fmt})", err=True)


def _session(lake: Path, what: str) -> duckdb.DuckDBPyConnection:
    """Events need the source views only (a fraction of a second); CAL facts and findings
    the diagnosis layers (kept in the lake once computed)."""
    from caltrail.pipeline.diagnose import open_case
    from caltrail.pipeline.progress import derived_notice
    from caltrail.pipeline.session import connect

    if what == "events":
        return connect(lake, derive=False, through="10_sources")
    with derived_notice(lake) as on_build:
        return open_case(lake, on_build=on_build)
