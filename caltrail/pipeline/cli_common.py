"""What every caltrail command shares: exit codes, the app's group (one-line errors), the
common options (--lake, --format, --max-rows, --output, --from/--to, --tz), settling the time
zone, checking paths, and failing with one line. Light on purpose (typer and the standard
library): every command loads it, `caltrail shell` among them, which must open at once; what
the commands that query the lake share (a session, a window, streaming rows: DuckDB and
pyarrow) is caltrail/pipeline/cli_query.py.

Exit status (all commands):
    0  clean
    1  the lake cannot be opened or written (busy, disk full, permissions), the parsing
       process cannot start, or a query failed
    2  usage error (bad option or argument, missing input path, empty query)
    3  some input could not be read (listed in the summary and in ingest_files)
    4  records were quarantined and --strict was given
    5  no licensing data: nothing the diagnosis reads was found, or none in the --from/--to
       window (run, diagnose, report)
"""

from __future__ import annotations

import datetime as dt
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from caltrail import __version__

EXIT_OK = 0
EXIT_LAKE = 1
EXIT_USAGE = 2
EXIT_UNREADABLE = 3
EXIT_QUARANTINED = 4
EXIT_NO_DATA = 5

DEBUG_ENV = "CALTRAIL_DEBUG"  # set to 1: an internal error shows its traceback


class CaltrailGroup(TyperGroup):
    """The app's command group: every error a user can cause is one line on stderr
    ("caltrail: error: ..."), never a usage block or a traceback; an unexpected exception
    (a bug) is one line too, with the way to see its traceback."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except typer.TyperException as exc:  # usage errors and the like
            code = getattr(exc, "exit_code", EXIT_USAGE)
            ctx = getattr(exc, "ctx", None)
            where = f" (see {ctx.command_path} -h)" if ctx is not None else ""
            say(f"caltrail: error: {one_line(exc.format_message())}{where}")
        except typer.Abort:
            say("caltrail: aborted")
            code = EXIT_LAKE
        except BrokenPipeError:  # `caltrail sql ... | head`: the reader has what it wanted
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            code = EXIT_LAKE
        except Exception as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            say(
                f"caltrail: internal error: {type(exc).__name__}: {one_line(str(exc))} "
                f"(a bug; {DEBUG_ENV}=1 shows where)"
            )
            code = EXIT_LAKE
        if not isinstance(code, int):
            code = EXIT_OK
        if standalone_mode:
            sys.exit(code)
        return code


class PlainArgument(TyperArgument):
    """An argument shown by its metavariable alone: typer would add the Python type after
    it (`PATHS... <list[Path]>`) and braces around it in the usage line."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw
        return name if self.required or name.startswith("[") else f"[{name}]"


class CaltrailCommand(TyperCommand):
    """A command whose arguments read as their metavariables (PlainArgument)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if type(param) is TyperArgument:
                param.__class__ = PlainArgument  # same state, plainer help


def one_line(text: str) -> str:
    """A message on one line: its lines joined, runs of blanks made one."""
    return re.sub(r"\s+", " ", text).strip()


def say(message: str) -> None:
    """One line on stderr."""
    typer.echo(message, err=True)


def fail(message: str, code: int) -> NoReturn:
    say(f"caltrail: error: {one_line(message)}")
    raise typer.Exit(code)


def usage(message: str, option: str | None = None) -> NoReturn:
    """A usage error (exit 2), naming the option when there is one."""
    raise typer.BadParameter(message, param_hint=option)


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"caltrail {__version__}")
        raise typer.Exit(EXIT_OK)


# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------

DEFAULT_LAKE = Path("caltrail-lake")


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
        metavar="DIR",
        help="Lake directory (created if missing); a file:// URI is taken as its path.",
        envvar="CALTRAIL_LAKE",
        callback=lake_location,
    ),
]
ReadLakeOpt = Annotated[
    Path,
    typer.Option(
        "--lake",
        "-l",
        metavar="DIR",
        help="Lake directory (made by `caltrail ingest`); a file:// URI is taken as its path.",
        envvar="CALTRAIL_LAKE",
        callback=lake_location,
    ),
]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format", "-f", metavar="FORMAT", help="table, csv or json (one object per line)."
    ),
]
def in_range(low: float, high: float | None = None) -> Callable[[float], float]:
    """An option's bounds, checked by a callback rather than typer's `min=`/`max=`, which
    print as `[x>=1]` or `[1<=x<=64]` in the help (the help text says the bounds in words)."""

    def check(value: float) -> float:
        if value < low or (high is not None and value > high):
            bounds = f"from {low:g} to {high:g}" if high is not None else f"of {low:g} or more"
            raise typer.BadParameter(f"{value:g}: give a number {bounds}")
        return value

    return check


MaxRowsOpt = Annotated[
    int,
    typer.Option(
        "--max-rows",
        metavar="N",
        callback=in_range(0),
        help="Rows the table format shows (the first and last halves; every row is counted); "
        "0 shows all. CSV and JSON always hold every row.",
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        dir_okay=False,
        help="Write the result to FILE (atomically: complete or not there) instead of stdout.",
    ),
]
FromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        metavar="WHEN",
        help="Start of the time window (ISO date or time, UTC unless it has an offset).",
    ),
]
ToOpt = Annotated[
    str | None,
    typer.Option(
        "--to",
        metavar="WHEN",
        help="End of the time window: a date alone includes that whole day.",
    ),
]
EtwManifestOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--etw-manifest",
        metavar="FILE",
        exists=True,
        dir_okay=False,
        readable=True,
        help="Instrumentation manifest (.man XML) to decode the manifest-based events of "
        "raw .etl traces; repeatable. Without one they are kept raw (hex).",
    ),
]
TmfOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--tmf",
        metavar="PATH",
        exists=True,
        readable=True,
        help="Folder of WPP .tmf files (or one file) to format the WPP messages of raw "
        ".etl traces; repeatable. Without them they are kept with their GUID and raw "
        "arguments.",
    ),
]
TzOpt = Annotated[
    str | None,
    typer.Option(
        "--tz",
        metavar="ZONE",
        help="Zone of times written without one (trace text, culture dates, file-name "
        "times): an IANA name such as Europe/Berlin, or auto (estimated from times the "
        "EVTX logs give in UTC). Not given: UTC, named in the summary as an assumption.",
    ),
]


# ---------------------------------------------------------------------------
# Time zones and windows
# ---------------------------------------------------------------------------

AUTO_ZONE = "auto"


def zone(value: str) -> ZoneInfo:
    """An IANA zone name as a tzinfo (the one place a zone is looked up by name); a usage
    error for anything else."""
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise typer.BadParameter(
            f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin, or auto)",
            param_hint="--tz",
        ) from exc


@dataclass(frozen=True)
class ZoneChoice:
    """What --tz said: a zone, auto, or nothing (then UTC is assumed and reported)."""

    tz: ZoneInfo | None = None
    auto: bool = False


def zone_choice(value: str | None) -> ZoneChoice:
    if value is None:
        return ZoneChoice()
    if value.strip().lower() == AUTO_ZONE:
        return ZoneChoice(auto=True)
    return ZoneChoice(tz=zone(value.strip()))


def when(value: str | None, option: str = "--snapshot-time") -> dt.datetime | None:
    """An ISO date or date-time as UTC (a value without an offset is UTC)."""
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        usage(f"not an ISO date or time: {value!r} (e.g. 2025-11-03 or 2025-11-03T14:00Z)", option)
    return parsed.astimezone(dt.UTC) if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


# ---------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------


def prepare_output(path: Path | None, option: str) -> Path | None:
    """Make sure a file can be written at `path` before any work starts: its folder is
    created when missing; a folder at `path`, or a folder that cannot be made, is a usage
    error."""
    if path is None:
        return None
    if path.is_dir():
        usage(f"{path} is a folder; give a file name", option)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        usage(f"cannot create the folder {path.parent}: {exc.strerror or exc}", option)
    if not os.access(path.parent, os.W_OK):
        usage(f"cannot write into {path.parent} (permission denied)", option)
    return path


def check_inputs(paths: list[Path]) -> None:
    """Every input path exists; else a usage error before anything is created."""
    for path in paths:
        if not path.exists():
            usage(f"no such file or folder: {path}", "PATHS")


def decoding_files(
    manifests: list[Path] | None, tmf: list[Path] | None
) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """The --etw-manifest / --tmf paths, each checked now (a usage error, not a failed run)."""
    # the ETW decoding loads only for a command that is given the option
    from caltrail.pipeline import etw_files

    paths = tuple(manifests or ()), tuple(tmf or ())
    try:
        etw_files.load(*paths)
    except etw_files.DecodingFilesError as exc:
        usage(str(exc), "--etw-manifest / --tmf")
    return paths


def check_lake(lake: Path) -> None:
    """A command that reads a lake: it must be one (exit 1, with what to do)."""
    if not (lake / "ingest_files").is_dir():
        fail(
            f"{lake} is not a caltrail lake (no ingest_files/ in it); create one with "
            f"`caltrail ingest PATH --lake {lake}`",
            EXIT_LAKE,
        )


__all__ = [
    "AUTO_ZONE",
    "DEFAULT_LAKE",
    "EXIT_LAKE",
    "EXIT_NO_DATA",
    "EXIT_OK",
    "EXIT_QUARANTINED",
    "EXIT_UNREADABLE",
    "EXIT_USAGE",
    "CaltrailCommand",
    "CaltrailGroup",
    "FormatOpt",
    "FromOpt",
    "LakeOpt",
    "MaxRowsOpt",
    "OutputOpt",
    "ReadLakeOpt",
    "ToOpt",
    "TzOpt",
    "ZoneChoice",
    "check_inputs",
    "check_lake",
    "fail",
    "one_line",
    "prepare_output",
    "say",
    "show_version",
    "usage",
    "when",
    "zone",
    "zone_choice",
]
