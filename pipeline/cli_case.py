"""`caltrail simulate` and `caltrail demo`: ground-truth fleets and the one-command tour.

(Registered on pipeline.cli.app; kept apart so cli.py stays small.)
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli import DEFAULT_LAKE, LakeOpt, _run_ingest, app
from pipeline.ingest import IngestOptions, exit_code

SAMPLES = Path(__file__).resolve().parent.parent / "fixtures" / "samples"


@app.command("simulate")
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
    from fixtures.simulator import SCENARIOS, simulate

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


@app.command("demo")
def demo_cmd(
    lake: LakeOpt = DEFAULT_LAKE,
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
        from fixtures.simulator import simulate

        workdir = Path(tempfile.mkdtemp(prefix="caltrail-demo-"))
        source = workdir / "bundle"
        simulate(source, seed=seed, devices=80, days=200, scenario="standard")
    try:
        options = IngestOptions(lake=lake, tz="Europe/Berlin", tz_given=True, command="demo")
        summary = _run_ingest([source], options, as_json=False)
        show_case(lake)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
    raise typer.Exit(exit_code(summary, strict=False))


def show_case(lake: Path) -> None:
    """Print what the lake says about CALs (the diagnosis, once it exists)."""
    from pipeline.cli import _query, render

    columns, rows = _query(
        lake,
        "select action, count(*) as events, count(distinct client_name) as clients "
        "from licensing_events group by all order by events desc",
        {},
    )
    typer.echo("\nLicensing events by action:")
    typer.echo(render(columns, rows, "table"), nl=False)
