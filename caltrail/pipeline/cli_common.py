"""What every caltrail command shares: exit codes, the --lake option, time zone and date
arguments, running an ingest with its progress and summary, failing with one line, and
rendering rows as a table, CSV or JSON.

Exit status (all commands):
    0  clean
    1  the lake cannot be opened or written (busy, disk full, permissions), the parsing
       process cannot start, or a query failed
    2  usage error (bad option or argument)
    3  some input could not be read (listed in the summary and in ingest_files)
    4  records were quarantined and --strict was given
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from caltrail.pipeline import lake as L
from caltrail.pipeline.ingest import IngestOptions, IngestSummary, ingest
from caltrail.pipeline.runner import ChildStartError

EXIT_OK = 0
EXIT_LAKE = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_QUARANTINED = 4


def lake_location(value: Path | None) -> Path | None:
    """The lake's path: a folder, or a file:// URI of one. Object storage (s3://, ...) has no
    atomic rename and no lock, which the lake's commit relies on: refused (docs/AT_SCALE.md)."""
    if value is None:
        return None
    text = str(value)  # a Path has folded "scheme://" into "scheme:/"
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]+):/", text)
    if scheme is None:
        return value
    if scheme.group(1).lower() == "file":
        return Path(text[len("file:") :])
    raise typer.BadParameter(
        f"{scheme.group(1)}:// lakes are not supported yet: the lake needs a local or shared "
        "POSIX filesystem (docs/AT_SCALE.md)",
        param_hint="--lake",
    )


LakeOpt = Annotated[
    Path,
    typer.Option(
        "--lake",
        "-l",
        help="Lake directory (created if missing); a file:// URI is taken as its path.",
        envvar="CALTRAIL_LAKE",
        callback=lake_location,
    ),
]
DEFAULT_LAKE = Path("caltrail-lake")


def zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise typer.BadParameter(
            f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)"
        ) from exc
    return value


def when(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise typer.BadParameter(
            f"not an ISO date/time: {value!r} (e.g. 2025-11-03T14:00Z)"
        ) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def run_ingest(paths: list[Path], options: IngestOptions, as_json: bool) -> IngestSummary:
    from caltrail.pipeline.progress import ingest_progress, print_summary

    def failed(kind: str, message: str) -> Any:
        if as_json:  # a scheduler reads stdout: the failure as JSON there too
            typer.echo(error_json(kind, message, EXIT_LAKE, options.lake))
        return fail(message, EXIT_LAKE)

    try:
        with ingest_progress(enabled=not as_json and sys.stderr.isatty()) as progress:
            summary = ingest(paths, options, progress)
    except L.LakeBusyError as exc:
        failed("lake_busy", str(exc))
    except ChildStartError as exc:  # no file can be parsed: the installation, not the input
        failed(getattr(exc, "kind", "parser_unavailable"), str(exc))
    except (L.LakeError, OSError) as exc:
        failed(
            "lake_unwritable",
            f"cannot write the lake {options.lake}: {exc}. Files committed before the failure "
            "are complete and visible, nothing partial is visible; fix the cause and re-run "
            "the same command to finish (files already in the lake are skipped)",
        )
    if as_json:
        typer.echo(summary.to_json())
    else:
        print_summary(summary)
    return summary


def error_json(kind: str, message: str, code: int, lake: Path) -> str:
    """The --json answer of a run that could not be done: one object, the summary's schema
    version, an `error` object (kind, message) and the exit status the command returns."""
    from caltrail.pipeline.ingest import SUMMARY_SCHEMA_VERSION

    return json.dumps(
        {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "lake": str(lake.absolute()),
            "error": {"kind": kind, "message": message},
            "exit_status": code,
        }
    )


def fail(message: str, code: int) -> Any:
    typer.echo(f"caltrail: error: {message}", err=True)
    raise typer.Exit(code)


def cell(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): cell(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [cell(v) for v in value]
    return value


def safe_csv_cell(value: Any) -> Any:
    """Neutralise spreadsheet formulas: a text cell starting with = + - @ gets a leading '."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def render(columns: list[str], rows: list[tuple[Any, ...]], fmt: str) -> str:
    """Render query results as a text table, CSV (formula-safe) or JSON lines."""
    if fmt == "json":
        return "".join(
            json.dumps(dict(zip(columns, map(cell, row), strict=True)), default=str) + "\n"
            for row in rows
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(
                [
                    safe_csv_cell(cell(v))
                    if not isinstance(v, dict | list)
                    else json.dumps(cell(v), default=str)
                    for v in row
                ]
            )
        return out.getvalue()
    from caltrail.pipeline.progress import table_text

    return table_text(columns, rows)


__all__ = [
    "DEFAULT_LAKE",
    "EXIT_LAKE",
    "EXIT_OK",
    "EXIT_QUARANTINED",
    "EXIT_UNREADABLE",
    "EXIT_USAGE",
    "LakeOpt",
    "cell",
    "error_json",
    "fail",
    "render",
    "run_ingest",
    "safe_csv_cell",
    "when",
    "zone",
]
