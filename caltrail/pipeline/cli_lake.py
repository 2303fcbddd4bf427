"""The lake commands: `caltrail ingest`, `verify` and `compact` (mounted on the app by
caltrail/pipeline/cli.py; `sql` is cli_sql.py, `shell` cli_shell.py)."""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from caltrail.pipeline import lake as L
from caltrail.pipeline.cli_common import (
    DEFAULT_LAKE,
    EXIT_LAKE,
    EtwManifestOpt,
    LakeOpt,
    ReadLakeOpt,
    TmfOpt,
    TzOpt,
    check_inputs,
    check_lake,
    decoding_files,
    fail,
    in_range,
    usage,
    when,
    zone_choice,
)
from caltrail.pipeline.cli_ingest import ingest_in_zone
from caltrail.pipeline.ingest import IngestOptions, exit_code
from caltrail.pipeline.output import plural


def ingest_cmd(
    paths: Annotated[
        list[Path],
        typer.Argument(metavar="PATHS...", help="Files, folders (recursive) or zip bundles."),
    ],
    lake: LakeOpt = DEFAULT_LAKE,
    tz: TzOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Re-read files already in the lake.")
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            metavar="NAME", help="EVTX backend: rust (fast, default) or python (pure Python)."
        ),
    ] = "rust",
    workers: Annotated[
        int, typer.Option(metavar="N", callback=in_range(1, 64), help="Parallel worker processes (1-64).")
    ] = 1,
    date_order: Annotated[
        str | None,
        typer.Option(
            metavar="ORDER",
            help="Day/month order of culture dates when the data cannot tell: dmy, mdy or ymd.",
        ),
    ] = None,
    culture: Annotated[
        str | None,
        typer.Option(metavar="CULTURE", help="Culture of the exporting machine, e.g. de-DE."),
    ] = None,
    snapshot_time: Annotated[
        str | None,
        typer.Option(
            metavar="WHEN",
            help="When the WMI snapshots were taken (ISO), if their names do not say.",
        ),
    ] = None,
    client_name: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="Client computer name for registry/TSCTST exports."),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit 4 when any record is quarantined.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON object.")
    ] = False,
    wait: Annotated[
        bool,
        typer.Option("--wait", help="Wait for another ingest on this lake instead of failing."),
    ] = False,
    patterns: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            exists=True,
            dir_okay=False,
            readable=True,
            help="Extra trace patterns (CSV with the columns of caltrail/queries/"
            "trace_patterns.csv); kept in the lake.",
        ),
    ] = None,
    compact: Annotated[
        bool,
        typer.Option(
            "--compact/--no-compact",
            help="After the run, merge the small files of tables that have many "
            "(thousands of small files make every query slow to start).",
        ),
    ] = True,
    max_seconds_per_file: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            callback=in_range(1),
            help="Work bound per file (1 or more): a file still being read after this many "
            "seconds is "
            "stopped, its rows so far kept, and the stop quarantined as 'budget_exceeded' "
            '(caltrail sql "select * from parse_errors").',
        ),
    ] = IngestOptions.max_seconds_per_file,
    etw_manifest: EtwManifestOpt = None,
    tmf: TmfOpt = None,
    derive: Annotated[
        bool,
        typer.Option(
            "--derive",
            help="After the run, compute the diagnosis layers the next query would (a "
            "minute at 50,000 devices), so a batch job pays it instead of the first analyst.",
        ),
    ] = False,
    recover: Annotated[
        bool,
        typer.Option(
            "--recover/--no-recover",
            help="Also read the deleted and overwritten EVTX records left in chunk slack "
            "(events.recovered = true). --no-recover reads the records the logs still count.",
        ),
    ] = True,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask",
            metavar="ADDRESS|local:N",
            help="Parse on a Dask distributed cluster: its scheduler (tcp://host:8786), or "
            "local:N to start N worker processes here. Inputs and lake must be on storage "
            "every worker sees at the same path (README, 'At scale'). Needs caltrail[dask].",
        ),
    ] = None,
) -> None:
    """Read logs into the lake: EVTX (any channel), WMI exports, registry, TSCTST, traces.

    Files already in the lake (same sha256) are skipped, so re-running is safe (--force
    reads them again, e.g. in another --tz).

    \b
    Example:  caltrail ingest ./case-1234.zip ./more-logs --lake ./lake --tz Europe/Berlin
    Example:  caltrail ingest ./siem-batch --lake ./lake --json --wait
    """
    if backend not in ("rust", "python"):
        usage(f"{backend!r}: choose rust or python", "--backend")
    if date_order is not None and date_order not in ("dmy", "mdy", "ymd"):
        usage(f"{date_order!r}: choose dmy, mdy or ymd", "--date-order")
    if dask is not None:
        # Dask loads only for a run that uses it
        from caltrail.pipeline.runner_dask import parse_address

        try:
            parse_address(dask)
        except ValueError as exc:
            usage(str(exc), "--dask")
    check_inputs(paths)
    choice = zone_choice(tz)
    if patterns is not None:
        check_patterns(patterns)
    decoding = decoding_files(etw_manifest, tmf)
    options = IngestOptions(
        lake=lake,
        force=force,
        backend=backend,
        workers=workers,
        date_order=date_order,
        culture=culture,
        snapshot_time=when(snapshot_time),
        client_name=client_name,
        wait_for_lock=wait,
        patterns=patterns,
        command="ingest",
        compact=compact,
        max_seconds_per_file=max_seconds_per_file,
        etw_manifests=decoding[0],
        tmf_dirs=decoding[1],
        recover=recover,
        dask=dask,
    )
    summary = ingest_in_zone(paths, options, choice, as_json)
    if derive and not summary.interrupted:
        from caltrail.pipeline.progress import derived_notice
        from caltrail.pipeline.session import refresh

        with derived_notice(lake) as on_build:
            refresh(lake, on_build)
    raise typer.Exit(exit_code(summary, strict))


# The columns a pattern cannot do without; the default table's others (groups_regex,
# operation, priority, example, note) may be left out (caltrail/queries/35_trace_licensing.sql).
PATTERN_COLUMNS_REQUIRED = ("name", "module_regex", "regex", "captures")


def check_patterns(path: Path) -> None:
    """A --patterns file has the columns a pattern needs and none the default pattern table
    lacks, and reads as CSV (a usage error otherwise, before the run: a file with other
    columns would be read as no pattern, one DuckDB cannot read would stop every session
    of the lake); its rows the lake will not use are named on stderr, with why."""
    from caltrail import queries
    from caltrail.pipeline.session import pattern_table_problems

    default = next(p for p in queries.data_files() if p.name == "trace_patterns.csv")
    with open(default, encoding="utf-8", newline="") as handle:
        expected = next(csv.reader(handle))
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            found = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        usage(f"cannot read {path}: {exc}", "--patterns")
    found = [c.strip() for c in found]
    missing = [c for c in PATTERN_COLUMNS_REQUIRED if c not in found]
    unknown = [c for c in found if c not in expected]
    if missing or unknown:
        what = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(unknown)}" if unknown else "",
            )
            if part
        )
        optional = [c for c in expected if c not in PATTERN_COLUMNS_REQUIRED]
        usage(
            f"{path}: columns do not match ({what}); expected {', '.join(expected)} "
            f"({', '.join(optional)} may be left out)",
            "--patterns",
        )
    # read as the lake will read it, beside the default table
    with tempfile.TemporaryDirectory() as ref:
        copy = Path(ref) / "user_trace_patterns.csv"
        shutil.copyfile(default, Path(ref) / default.name)
        shutil.copyfile(path, copy)
        problem, unused = pattern_table_problems(Path(ref))
    if problem is not None:
        said = problem.replace(str(copy), str(path))  # (DuckDB's message names the copy)
        usage(f"{path}: cannot be read as CSV ({said})", "--patterns")
    for name, why in unused:
        if name == "user_trace_patterns.csv":  # the whole file
            typer.echo(f"  ! {path}: {why}", err=True)
        else:
            typer.echo(f"  ! pattern {name} of {path} is not used: {why}", err=True)


def verify_cmd(
    lake: ReadLakeOpt = DEFAULT_LAKE,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check the lake's accounting: for every file, records seen = rows written + quarantined.

    Exit 0 when every file balances, 1 when one does not (listed).

    Example:  caltrail verify --lake ./lake
    """
    from caltrail.pipeline.verify import verify

    check_lake(lake)
    result = verify(lake)
    if as_json:
        typer.echo(json.dumps(result, default=str))
    else:
        typer.echo(
            f"{plural(result['files'], 'file')}, {plural(result['records_seen'], 'record')} "
            f"seen = {result['rows_written']:,} written + {result['quarantined']:,} "
            f"quarantined; {plural(len(result['mismatches']), 'file does', 'files do')} not "
            "balance"
        )
        for row in result["mismatches"]:
            typer.echo(
                f"  {row['path']}: seen {row['records_seen']}, written {row['written']}, quarantined {row['quarantined']}"
            )
    raise typer.Exit(0 if not result["mismatches"] else 1)


def compact_cmd(
    lake: ReadLakeOpt = DEFAULT_LAKE,
    min_files: Annotated[
        int,
        typer.Option(
            metavar="N",
            callback=in_range(2),
            help="Merge a table's small files once it has at least this many (2 or more).",
        ),
    ] = 32,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for an ingest on this lake instead of failing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Merge the lake's small Parquet files (every ingest does this unless --no-compact).

    Each input file adds files to the tables it has rows for; a lake fed thousands of small
    exports opens slowly until they are merged. Rows are copied unchanged; a crash leaves
    the lake as before or finished by the next command (see pipeline/compact.py). When the
    manifest (ingest_files) is merged, the next diagnosis computes its layers again, once.

    Example:  caltrail compact --lake ./lake
    """
    from caltrail.pipeline.compact import compact

    check_lake(lake)
    try:
        with L.writer_lock(lake, wait=wait):
            results = compact(lake, min_files=min_files)
    except L.LakeBusyError as exc:
        fail(str(exc), EXIT_LAKE)
    except (L.LakeError, OSError) as exc:
        fail(f"cannot compact the lake {lake}: {exc}; the lake is unchanged or complete", EXIT_LAKE)
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in results]))
    else:
        if not results:
            typer.echo(f"Nothing to merge: no table has {min_files} or more small files.")
        for r in results:
            typer.echo(
                f"{r.table}: {r.files_before} files -> {r.files_after} ({r.rows} rows merged)"
            )
            for reason in r.skipped:
                typer.echo(f"  left as it is: {reason}")
    import duckdb

    from caltrail.pipeline.session import SessionError, write_init_script
    from caltrail.pipeline.shell import INIT_SCRIPT

    try:
        write_init_script(lake)
    except (SessionError, duckdb.Error) as exc:  # the merge itself is complete
        typer.echo(f"  ! the lake's init script ({INIT_SCRIPT}) was not written: {exc}", err=True)


__all__ = ["check_patterns", "compact_cmd", "ingest_cmd", "verify_cmd"]
