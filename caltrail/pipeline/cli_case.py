"""The case commands: `caltrail run`, `diagnose`, `timeline`, `report`, `simulate` and
`demo` (mounted on the app by caltrail/pipeline/cli.py)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from caltrail.pipeline import output
from caltrail.pipeline.cli_common import (
    DEFAULT_LAKE,
    EXIT_NO_DATA,
    EXIT_OK,
    EtwManifestOpt,
    FormatOpt,
    FromOpt,
    LakeOpt,
    MaxRowsOpt,
    OutputOpt,
    ReadLakeOpt,
    TmfOpt,
    ToOpt,
    TzOpt,
    check_inputs,
    decoding_files,
    fail,
    in_range,
    prepare_output,
    say,
    usage,
    zone_choice,
)
from caltrail.pipeline.cli_ingest import ingest_in_zone
from caltrail.pipeline.cli_query import (
    check_format,
    open_session,
    query_rows,
    window,
    write_relation,
)
from caltrail.pipeline.diagnose import FINDING_COLUMNS, Diagnosis, diagnose
from caltrail.pipeline.ingest import IngestOptions, exit_code
from caltrail.pipeline.output import plural
from caltrail.pipeline.user_sql import Window

if TYPE_CHECKING:
    import duckdb

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples"
DEFAULT_REPORT = Path("caltrail-report.html")

ReportOpt = Annotated[
    Path,
    typer.Option(
        "--out",
        "-o",
        metavar="FILE",
        dir_okay=False,
        help="HTML report to write (its folder is created when missing).",
    ),
]

# The findings' columns the table format shows (the others: --format csv or json).
FINDING_TABLE = (
    "cause",
    "subject",
    "confidence",
    "excess_cals",
    "excess_now",
    "reason",
    "alternative_cause",
    "fix",
)

# Findings that overlap the window (a finding whose dates are unknown is kept).
WINDOWED_FINDINGS = """
select {columns}
from findings
where ($from is null or last_seen is null or last_seen >= $from)
    and ($to is null or first_seen is null or first_seen < $to)
"""

NO_DATA = (
    "No licensing data: nothing read holds a CAL fact (license-server events, WMI license "
    "exports, trace licensing messages, client HWIDs) or a license-server problem. This is "
    "not an all-clear: add the license server's logs and exports (README: What it reads)."
)


def simulate_cmd(
    out: Annotated[
        Path,
        typer.Option("--out", "-o", metavar="DIR", help="Folder to write the bundle into."),
    ],
    seed: Annotated[int, typer.Option(metavar="N", help="Random seed: same seed, same bytes.")] = 7,
    devices: Annotated[
        int,
        typer.Option(
            metavar="N",
            help="Number of client devices (each scenario needs a few; the error says how many).",
        ),
    ] = 60,
    days: Annotated[
        int, typer.Option(metavar="N", callback=in_range(14), help="Days simulated (14 or more).")
    ] = 180,
    scenario: Annotated[
        str,
        typer.Option(
            metavar="NAME",
            help="standard, clean, noisy, exhaustion, server-problems, or one cause.",
        ),
    ] = "standard",
    tz: Annotated[
        str, typer.Option(metavar="ZONE", help="Site time zone of the simulated fleet.")
    ] = "Europe/Berlin",
) -> None:
    """Write a synthetic collection (EVTX, WMI exports, registry, TSCTST, trace) with its
    truth.json, by playing the license server's CAL rules over a fleet with known faults.

    Example:  caltrail simulate --out ./sim --seed 3 --devices 200 --days 365 --scenario noisy
    """
    from caltrail.fixtures.simulator import SCENARIOS, simulate

    if scenario not in SCENARIOS:
        usage(f"{scenario!r}: choose one of {', '.join(sorted(SCENARIOS))}", "--scenario")
    site = zone_choice(tz).tz
    if site is None:
        usage("the simulated site needs a zone name, not auto", "--tz")
    if out.exists() and not out.is_dir():
        usage(f"{out} is a file; give a folder", "--out")
    try:
        result = simulate(out, seed=seed, devices=devices, days=days, scenario=scenario, tz=tz)
    except ValueError as exc:
        usage(str(exc), "--devices" if "devices" in str(exc) else "--out")
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}", 1)
    typer.echo(f"Wrote {plural(len(result.files), 'file')} and {result.truth_path} to {result.out}")
    typer.echo(
        f"Its trace text and file-name times are {site.key} wall-clock time: ingest it with "
        f"--tz {site.key} (or --tz auto), e.g. caltrail run {result.out} --tz {site.key}"
    )


def demo_cmd(
    lake: LakeOpt = DEFAULT_LAKE,
    out: ReportOpt = DEFAULT_REPORT,
    samples: Annotated[
        bool,
        typer.Option(
            "--samples", help="Use the committed sample collection instead of a fresh fleet."
        ),
    ] = False,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the fresh fleet.")] = 11,
) -> None:
    """Simulate a fleet (or take the bundled samples), ingest it and show what was found.

    Example:  caltrail demo --lake ./demo-lake
    """
    report = prepare_output(out, "--out")
    workdir: Path | None = None
    if samples:
        source = SAMPLES
        if not source.is_dir():
            fail(f"no samples at {source}", 1)
    else:
        from caltrail.fixtures.simulator import simulate

        workdir = Path(tempfile.mkdtemp(prefix="caltrail-demo-"))
        source = workdir / "bundle"
        simulate(source, seed=seed, devices=80, days=200, scenario="standard")
    try:
        options = IngestOptions(lake=lake, command="demo")
        summary = ingest_in_zone([source], options, zone_choice("Europe/Berlin"), as_json=False)
        has_data = show_case(lake, report)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    raise typer.Exit(exit_code(summary, strict=False) or (EXIT_OK if has_data else EXIT_NO_DATA))


def show_case(lake: Path, report: Path | None = None, span: Window | None = None) -> bool:
    """Print the findings (most excess first, with the fix) and write the report; returns
    whether the lake holds licensing data at all (when not, says so instead of an all-clear)."""
    from caltrail.pipeline.report import has_licensing_data, write_report

    con = open_session(lake, case=True)
    diag = diagnose(con)
    has_data = has_licensing_data(diag)
    if not has_data:
        say(NO_DATA)
    else:
        typer.echo("\nFindings (most excess first):")
        _print_findings(con, "table", output.DEFAULT_MAX_ROWS, sys.stdout, span or Window())
        if diag.healthy_on is not None:
            typer.echo(f"Excess CALs back in the pool by expiry alone on {diag.healthy_on}.")
    if report is not None:
        try:
            write_report(con, report, lake, span=span, diag=diag)
        except OSError as exc:
            fail(f"cannot write the report {report}: {exc.strerror or exc}", 1)
        typer.echo(f"Report: {report}")
    return has_data


def _print_findings(
    con: duckdb.DuckDBPyConnection, fmt: str, max_rows: int, stream: TextIO, span: Window
) -> int:
    columns = ", ".join(FINDING_TABLE) if fmt == "table" else FINDING_COLUMNS
    query = WINDOWED_FINDINGS.format(columns=columns)
    # (a finding's reason and fix are read whole: the table wraps them instead of cutting)
    return query_rows(con, query, span.params(), fmt, stream, max_rows, max_cell=None)


def diagnose_cmd(
    lake: ReadLakeOpt = DEFAULT_LAKE,
    fmt: FormatOpt = "table",
    max_rows: MaxRowsOpt = output.DEFAULT_MAX_ROWS,
    out: OutputOpt = None,
    time_from: FromOpt = None,
    time_to: ToOpt = None,
) -> None:
    """Show why devices hold several CALs: one row per (cause, subject), most excess
    first, with confidence, reason and fix; server problems last. With --from/--to, the
    findings active in that window.

    \b
    Example:  caltrail diagnose --lake ./lake --format json
    Example:  caltrail diagnose --from 2025-03-01 --to 2025-03-31 -f csv -o march.csv
    """
    check_format(fmt)
    span = window(time_from, time_to)
    target = prepare_output(out, "--output")
    con = open_session(lake, case=True)
    _stop_without_data(con, span)
    with output.output_stream(target, sys.stdout) as stream:
        count = _print_findings(con, fmt, max_rows, stream, span)
    if count == 0:
        say(
            "No finding: no device holds more CALs than it should and no server problem"
            + (f" in {span.describe()}" if span else "")
            + "."
        )
    if target is not None:
        say(f"Wrote {target}")


def timeline_cmd(
    lake: ReadLakeOpt = DEFAULT_LAKE,
    hwid: Annotated[
        str | None,
        typer.Option(
            "--hwid",
            metavar="HWID",
            help="A HWID in any rendering caltrail reads (40 hex, registry bytes, five "
            "DWORDs as TSCTST or WMI print them).",
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", metavar="NAME", help="A computer name.")
    ] = None,
    fmt: FormatOpt = "table",
    max_rows: MaxRowsOpt = output.DEFAULT_MAX_ROWS,
    out: OutputOpt = None,
    time_from: FromOpt = None,
    time_to: ToOpt = None,
) -> None:
    """The ordered CAL history of one HWID or one computer name: every fact with its
    source row, name/HWID changes, gaps, and each license's end.

    \b
    Example:  caltrail timeline --name BER-PC0042 --lake ./lake
    Example:  caltrail timeline --hwid 00000002-B839BE5E-D0FC3ED0-02DD01EC-EE9B5114 -f csv
    """
    from caltrail.pipeline import subjects

    if (hwid is None) == (name is None):
        usage("give exactly one of --hwid or --name", "--hwid / --name")
    check_format(fmt)
    span = window(time_from, time_to)
    if hwid is not None:
        try:
            candidates = subjects.hwid_candidates(hwid)
        except ValueError as exc:
            usage(str(exc), "--hwid")
    target = prepare_output(out, "--output")
    con = open_session(lake, case=True)
    if hwid is not None:
        subject = subjects.find_hwid(con, candidates)
        label = f"HWID {hwid}" + (f" ({candidates[0]})" if candidates[0] != hwid else "")
        if subject is None:
            say(f"no history for {label} in {lake}")
            raise typer.Exit(EXIT_OK)
        query, value = subjects.HWID_TIMELINE, subject
    else:
        assert name is not None
        label = f"name {name}"
        if not subjects.name_known(con, name):
            say(f"no history for {label} in {lake}")
            raise typer.Exit(EXIT_OK)
        query, value = subjects.NAME_TIMELINE, name
    with output.output_stream(target, sys.stdout) as stream:
        relation = con.sql(query, params={"subject": value, **span.params()})
        count = write_relation(relation, fmt, stream, max_rows)
    if count == 0 and span:
        say(f"no history for {label} in {span.describe()} (its whole history has facts)")
    if target is not None:
        say(f"Wrote {target}")


def report_cmd(
    lake: ReadLakeOpt = DEFAULT_LAKE,
    out: ReportOpt = DEFAULT_REPORT,
    time_from: FromOpt = None,
    time_to: ToOpt = None,
) -> None:
    """Write the case report: one self-contained HTML file (findings, per-device CAL
    timelines, the pool and its recovery, the revoke plan, server problems, inputs).

    \b
    Example:  caltrail report --lake ./lake --out case-1234.html
    Example:  caltrail report --from 2025-01-01 --out q1/case.html
    """
    from caltrail.pipeline.report import write_report

    span = window(time_from, time_to)
    report = prepare_output(out, "--out")
    assert report is not None
    con = open_session(lake, case=True)
    diag = diagnose(con)  # once, for the report and the no-data check
    try:
        write_report(con, report, lake, span=span, diag=diag)
    except OSError as exc:
        fail(f"cannot write the report {report}: {exc.strerror or exc}", 1)
    typer.echo(f"Report: {report}")
    _stop_without_data(con, span, diag)


def _stop_without_data(
    con: duckdb.DuckDBPyConnection, span: Window, diag: Diagnosis | None = None
) -> None:
    """Exit 5 with why when the lake, or the window, holds no licensing data: an empty
    result must never read as a healthy pool. `diag`: the session's diagnosis, when made."""
    from caltrail.pipeline.report import has_licensing_data, window_misses_data

    if not has_licensing_data(diag or diagnose(con)):
        say(NO_DATA)
        raise typer.Exit(EXIT_NO_DATA)
    missed = window_misses_data(con, span)
    if missed is not None:
        say(missed)
        raise typer.Exit(EXIT_NO_DATA)


def run_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="PATHS...", help="Files, folders or zip bundles."),
    ],
    lake: LakeOpt = DEFAULT_LAKE,
    tz: TzOpt = None,
    out: ReportOpt = DEFAULT_REPORT,
    workers: Annotated[
        int,
        typer.Option(
            metavar="N",
            callback=in_range(1, 64),
            help="Parallel worker processes for the ingest, 1-64 (a bundle with large EVTX "
            "files or many files reads faster with one per core).",
        ),
    ] = 1,
    recover: Annotated[
        bool,
        typer.Option(
            "--recover/--no-recover",
            help="Also read the deleted and overwritten EVTX records left in chunk slack.",
        ),
    ] = True,
    force: Annotated[
        bool,
        typer.Option("--force", help="Re-read files already in the lake (e.g. in another --tz)."),
    ] = False,
    etw_manifest: EtwManifestOpt = None,
    tmf: TmfOpt = None,
) -> None:
    """Ingest, diagnose and write the report: the one command for a collected case.

    Exit 5 when nothing read holds licensing data (the report says so too).

    \b
    Example:  caltrail run ./collected-logs.zip --tz Europe/Berlin --out case.html
    Example:  caltrail run ./collected-logs --tz auto --workers 2
    """
    check_inputs(paths)
    choice = zone_choice(tz)
    report = prepare_output(out, "--out")
    manifests, tmf_dirs = decoding_files(etw_manifest, tmf)
    options = IngestOptions(
        lake=lake,
        command="run",
        workers=workers,
        force=force,
        recover=recover,
        etw_manifests=manifests,
        tmf_dirs=tmf_dirs,
    )
    summary = ingest_in_zone(paths, options, choice, as_json=False)
    has_data = show_case(lake, report)
    raise typer.Exit(exit_code(summary, strict=False) or (EXIT_OK if has_data else EXIT_NO_DATA))


__all__ = [
    "demo_cmd",
    "diagnose_cmd",
    "report_cmd",
    "run_cmd",
    "show_case",
    "simulate_cmd",
    "timeline_cmd",
]
