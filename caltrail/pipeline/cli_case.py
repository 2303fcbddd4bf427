"""The case commands: `caltrail run`, `diagnose`, `timeline`, `report`, `simulate` and
`demo` (mounted on the app by caltrail/pipeline/cli.py)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from caltrail.pipeline.cli_common import (
    DEFAULT_LAKE,
    EXIT_LAKE,
    EXIT_USAGE,
    LakeOpt,
    fail,
    render,
    run_ingest,
    zone,
)
from caltrail.pipeline.ingest import IngestOptions, exit_code

if TYPE_CHECKING:
    import duckdb

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples"


def simulate_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write the bundle into.")],
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 7,
    devices: Annotated[int, typer.Option(min=1, help="Number of client devices.")] = 60,
    days: Annotated[int, typer.Option(min=1, help="Days simulated.")] = 180,
    scenario: Annotated[
        str, typer.Option(help="standard, clean, noisy, exhaustion, server-problems, or one cause.")
    ] = "standard",
    tz: Annotated[
        str, typer.Option(help="Site time zone of the simulated fleet.")
    ] = "Europe/Berlin",
) -> None:
    """Write a synthetic collection (EVTX, WMI exports, registry, TSCTST, trace) with its
    truth.json, by playing the license server's CAL rules over a fleet with known faults.

    Example:  caltrail simulate --out ./sim --seed 3 --devices 200 --days 365 --scenario noisy
    """
    from caltrail.fixtures.simulator import SCENARIOS, simulate

    if scenario not in SCENARIOS:
        raise typer.BadParameter(
            f"choose one of {', '.join(sorted(SCENARIOS))}", param_hint="--scenario"
        )
    try:
        result = simulate(out, seed=seed, devices=devices, days=days, scenario=scenario, tz=tz)
    except ValueError as exc:
        typer.echo(f"caltrail: error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"Wrote {len(result.files)} files and {result.truth_path} to {result.out}")


def demo_cmd(
    lake: LakeOpt = DEFAULT_LAKE,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="HTML report to write.", dir_okay=False)
    ] = Path("caltrail-report.html"),
    samples: Annotated[
        bool,
        typer.Option(
            "--samples", help="Use the committed sample collection instead of a fresh fleet."
        ),
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the fresh fleet.")] = 11,
) -> None:
    """Simulate a fleet (or take the bundled samples), ingest it and show what was found.

    Example:  caltrail demo --lake ./demo-lake
    """
    workdir: Path | None = None
    if samples:
        source = SAMPLES
        if not source.is_dir():
            typer.echo(f"caltrail: error: no samples at {source}", err=True)
            raise typer.Exit(1)
    else:
        from caltrail.fixtures.simulator import simulate

        workdir = Path(tempfile.mkdtemp(prefix="caltrail-demo-"))
        source = workdir / "bundle"
        simulate(source, seed=seed, devices=80, days=200, scenario="standard")
    try:
        options = IngestOptions(lake=lake, tz="Europe/Berlin", tz_given=True, command="demo")
        summary = run_ingest([source], options, as_json=False)
        show_case(lake, out)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    raise typer.Exit(exit_code(summary, strict=False))


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


def _open(lake: Path) -> duckdb.DuckDBPyConnection:
    import duckdb

    from caltrail.pipeline.diagnose import open_case
    from caltrail.pipeline.progress import derived_notice
    from caltrail.pipeline.session import SessionError

    try:
        with derived_notice(lake) as on_build:
            return open_case(lake, on_build=on_build)
    except (SessionError, duckdb.Error) as exc:
        return fail(str(exc), EXIT_LAKE)  # type: ignore[no-any-return]


def _print_findings(found: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "table":
        columns = list(FINDING_TABLE)
        rows = [tuple(f[c] for c in columns) for f in found]
    else:
        columns = list(found[0]) if found else list(FINDING_TABLE)
        rows = [tuple(f[c] for c in columns) for f in found]
    typer.echo(render(columns, rows, fmt), nl=False)


def show_case(lake: Path, report: Path | None = None) -> None:
    """Print the findings (most excess first, with the fix) and write the report."""
    from caltrail.pipeline.diagnose import diagnose
    from caltrail.pipeline.report import write_report

    con = _open(lake)
    diag = diagnose(con)
    typer.echo("\nFindings (most excess first):")
    _print_findings(diag.findings, "table")
    if diag.healthy_on is not None:
        typer.echo(f"Excess CALs back in the pool by expiry alone on {diag.healthy_on}.")
    if report is not None:
        write_report(con, report, lake)
        typer.echo(f"Report: {report}")


def diagnose_cmd(
    lake: LakeOpt = DEFAULT_LAKE,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, json (one object per line) or csv.")
    ] = "table",
) -> None:
    """Show why devices hold several CALs: one row per (cause, subject), most excess
    first, with confidence, reason and fix; server problems last.

    Example:  caltrail diagnose --lake ./lake --format json
    """
    if fmt not in ("table", "csv", "json"):
        raise typer.BadParameter("choose table, csv or json", param_hint="--format")
    from caltrail.pipeline.diagnose import findings

    _print_findings(findings(_open(lake)), fmt)


def timeline_cmd(
    lake: LakeOpt = DEFAULT_LAKE,
    hwid: Annotated[
        str | None, typer.Option("--hwid", help="A HWID (40 hex, any case or separators).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="A computer name.")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, csv or json.")] = "table",
) -> None:
    """The ordered CAL history of one HWID or one computer name: every fact with its
    source row, name/HWID changes, gaps, and each license's end.

    Example:  caltrail timeline --name BER-PC0042 --lake ./lake
    """
    if (hwid is None) == (name is None):
        raise typer.BadParameter("give exactly one of --hwid or --name")
    if fmt not in ("table", "csv", "json"):
        raise typer.BadParameter("choose table, csv or json", param_hint="--format")
    from caltrail.pipeline.diagnose import timeline

    con = _open(lake)
    try:
        columns, rows = timeline(con, hwid=hwid, name=name)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--hwid") from exc
    typer.echo(render(columns, rows, fmt), nl=False)


def report_cmd(
    lake: LakeOpt = DEFAULT_LAKE,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="HTML file to write.", dir_okay=False)
    ] = Path("caltrail-report.html"),
) -> None:
    """Write the case report: one self-contained HTML file (findings, per-device CAL
    timelines, the pool and its recovery, the revoke plan, server problems, inputs).

    Example:  caltrail report --lake ./lake --out case-1234.html
    """
    from caltrail.pipeline.report import write_report

    write_report(_open(lake), out, lake)
    typer.echo(f"Report: {out}")


def run_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files, folders or zip bundles.")],
    lake: LakeOpt = DEFAULT_LAKE,
    tz: Annotated[
        str, typer.Option("--tz", help="Time zone of sources without one.", callback=zone)
    ] = "UTC",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="HTML report to write.", dir_okay=False)
    ] = Path("caltrail-report.html"),
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="Parallel worker processes for the ingest (a bundle with large EVTX files "
            "or many files reads faster with one per core).",
        ),
    ] = 1,
    recover: Annotated[
        bool,
        typer.Option(
            "--recover/--no-recover",
            help="Also read the deleted and overwritten EVTX records left in chunk slack.",
        ),
    ] = True,
) -> None:
    """Ingest, diagnose and write the report: the one command for a collected case.

    Example:  caltrail run ./collected-logs.zip --tz Europe/Berlin --out case.html --workers 2
    """
    for p in paths:
        if not p.exists():
            typer.echo(f"caltrail: error: no such file or folder: {p}", err=True)
            raise typer.Exit(EXIT_USAGE)
    options = IngestOptions(
        lake=lake, tz=tz, tz_given=tz != "UTC", command="run", workers=workers, recover=recover
    )
    summary = run_ingest(paths, options, as_json=False)
    show_case(lake, out)
    raise typer.Exit(exit_code(summary, strict=False))


__all__ = ["demo_cmd", "diagnose_cmd", "report_cmd", "run_cmd", "show_case", "simulate_cmd", "timeline_cmd"]
