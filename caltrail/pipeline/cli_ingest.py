"""Running an ingest from the command line (`caltrail ingest`, `run`, `demo`): the progress
bar, the summary (human or one JSON object, a fatal failure included), and the time-zone
checks after it: the files read in an assumed zone, whether the EVTX logs agree with that
zone (caltrail/pipeline/timezone_check.py; with --tz auto the files are read again in the
zone they agree with), and whether the lake's earlier files were read in another zone."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

import typer

from caltrail.pipeline import lake as L
from caltrail.pipeline.cli_common import EXIT_LAKE, ZoneChoice, fail, one_line, say
from caltrail.pipeline.ingest import SUMMARY_SCHEMA_VERSION, IngestOptions, IngestSummary, ingest
from caltrail.pipeline.output import plural
from caltrail.pipeline.runner import ChildStartError


def stderr_is_terminal() -> bool:
    """Whether progress can be drawn: stderr is a terminal (stdout may be a pipe of JSON)."""
    return sys.stderr.isatty()


def run_ingest(paths: list[Path], options: IngestOptions, as_json: bool) -> IngestSummary:
    """Run an ingest with a progress bar (on stderr when it is a terminal, --json or not);
    a fatal failure is one line, and with --json also a JSON object on stdout. The summary
    is printed by the caller."""
    from caltrail.pipeline.progress import ingest_progress

    if options.wait_for_lock:
        holder = L.lock_holder(options.lake)
        if holder is not None:
            say(f"caltrail: waiting for {holder} to finish writing {options.lake} ...")
    try:
        with ingest_progress(enabled=stderr_is_terminal()) as progress:
            return ingest(paths, options, progress)
    except L.LakeBusyError as exc:
        _fatal("lake_busy", str(exc), as_json, options)
    except ChildStartError as exc:  # no file can be parsed: the installation, not the input
        _fatal(getattr(exc, "kind", "parser_unavailable"), str(exc), as_json, options)
    except (L.LakeError, OSError) as exc:
        _fatal(
            "lake_unwritable",
            f"cannot write the lake {options.lake}: {exc}. Files committed before the failure "
            "are complete and visible, nothing partial is visible; fix the cause and re-run "
            "the same command to finish (files already in the lake are skipped)",
            as_json,
            options,
        )


# How the files of `--tz auto`'s first pass (read in UTC) are labelled.
AUTO_FIRST_PASS = "--tz auto, unless the EVTX logs show another zone"


@dataclass
class ZoneReport:
    """What the time-zone checks after an ingest found (printed after its summary)."""

    check: dict[str, Any] | None = None  # timezone_check.ZoneCheck.to_dict()
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reread: dict[str, Any] | None = None  # --tz auto: the zone and the run that re-read

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "warnings": self.warnings,
            "notes": self.notes,
            "auto": self.reread,
        }


def ingest_in_zone(
    paths: list[Path], options: IngestOptions, choice: ZoneChoice, as_json: bool
) -> IngestSummary:
    """An ingest in the zone --tz chose, its summary printed with what the time-zone checks
    found: the files read in an assumed zone (in the summary), whether the EVTX logs agree
    with that zone (and, for --tz auto, the files read again in the zone they agree with),
    and whether the lake's earlier files were read in another zone."""
    from caltrail.pipeline.progress import print_summary

    options = replace(options, tz=choice.tz)
    if choice.auto:  # read in UTC first: the check below may find the zone and read again
        options = replace(options, tz_source=AUTO_FIRST_PASS)
    summary = run_ingest(paths, options, as_json)
    report = _zone_report(paths, options, choice, summary, as_json)
    if as_json:
        data = summary.to_dict()
        data["time_zone"] = report.to_dict()
        typer.echo(json.dumps(data))
        return summary
    print_summary(summary)
    for line in report.notes:
        typer.echo(line)
    for line in report.warnings:
        typer.echo(f"  ! {line}")
    return summary


def _zone_report(
    paths: list[Path],
    options: IngestOptions,
    choice: ZoneChoice,
    summary: IngestSummary,
    as_json: bool,
) -> ZoneReport:
    from caltrail.pipeline import timezone_check
    from caltrail.pipeline.ingest import zone_name
    from caltrail.pipeline.session import SessionError

    report = ZoneReport()
    if not summary.zone_assumed and choice.tz is None and not choice.auto:
        return report
    import duckdb

    from caltrail.pipeline.progress import derived_notice

    try:
        with derived_notice(options.lake) as on_build:
            con = timezone_check.open_check(options.lake, on_build)
    except (SessionError, duckdb.Error, OSError) as exc:
        report.warnings.append(f"the time zone could not be checked: {one_line(str(exc))}")
        return report
    try:
        check = timezone_check.check(con, summary.run_id) if summary.zone_assumed else None
        earlier = timezone_check.earlier_zones(con, summary.run_id)
        reread = timezone_check.zone_files(con, summary.run_id)
    except duckdb.Error as exc:
        report.warnings.append(f"the time zone could not be checked: {one_line(str(exc))}")
        return report
    finally:
        con.close()
    zone = zone_name(options.zone)
    if check is not None:
        report.check = check.to_dict()
        if choice.auto and check.decided and not check.fits and check.best is not None:
            best = ZoneInfo(check.best)
            again = replace(
                options,
                tz=best,
                tz_source=f"--tz auto: {check.best_aligned} of {check.paired} licensing facts "
                "line up with the EVTX logs",
                reread=reread,
                force=False,
            )
            second = run_ingest(paths, again, as_json)
            report.reread = {"zone": check.best, "run_id": second.run_id, "files": len(reread)}
            report.notes.append(
                f"{check.sentence()}; --tz auto read the {plural(len(reread), 'file')} again "
                f"in {check.best} (run {second.run_id})"
            )
            # the summary tells where the files stand now: read in the zone found
            summary.zone, summary.zone_assumed = second.zone, second.zone_assumed
            summary.files.update({k: v for k, v in second.files.items() if k == "error"})
            zone = check.best
        elif choice.auto:
            report.notes.append(
                check.sentence() + ("" if check.fits else f"; --tz auto kept {zone}")
            )
        elif check.fits or not check.decided:
            report.notes.append(check.sentence())
        else:
            report.warnings.append(
                f"{check.sentence()}. Run the same command again with --tz {check.best} "
                "--force (or --tz auto)"
            )
    other = {z: n for z, n in earlier.items() if z != zone}
    if other and (choice.tz is not None or choice.auto or summary.zone_assumed):
        listed = ", ".join(f"{plural(n, 'file')} in {z}" for z, n in other.items())
        report.warnings.append(
            f"times without a zone are read in {zone} now, but the lake holds files read "
            f"earlier in another zone ({listed}); to read them in {zone}, ingest them again "
            f"with --tz {zone} --force"
        )
    return report


def error_json(kind: str, message: str, code: int, lake: Path) -> str:
    """The --json answer of a run that could not be done: one object, the summary's schema
    version, an `error` object (kind, message) and the exit status the command returns."""
    return json.dumps(
        {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "lake": str(lake.absolute()),
            "error": {"kind": kind, "message": one_line(message)},
            "exit_status": code,
        }
    )


def _fatal(kind: str, message: str, as_json: bool, options: IngestOptions) -> NoReturn:
    if as_json:  # a scheduler reads stdout: the failure as JSON there too
        typer.echo(error_json(kind, message, EXIT_LAKE, options.lake))
    fail(message, EXIT_LAKE)


__all__ = ["ZoneReport", "error_json", "ingest_in_zone", "run_ingest", "stderr_is_terminal"]
