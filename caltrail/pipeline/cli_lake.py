"""The lake commands: `caltrail ingest`, `sql`, `shell`, `verify` and `compact` (mounted on
the app by caltrail/pipeline/cli.py)."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from caltrail.pipeline import lake as L
from caltrail.pipeline import output
from caltrail.pipeline.cli_common import (
    DEFAULT_LAKE,
    EXIT_LAKE,
    FormatOpt,
    FromOpt,
    LakeOpt,
    MaxRowsOpt,
    OutputOpt,
    ReadLakeOpt,
    ToOpt,
    TzOpt,
    check_format,
    check_inputs,
    check_lake,
    fail,
    ingest_in_zone,
    open_session,
    plural,
    prepare_output,
    say,
    usage,
    when,
    window,
    write_relation,
    zone_choice,
)
from caltrail.pipeline.ingest import IngestOptions, exit_code

if TYPE_CHECKING:
    import duckdb

    from caltrail.pipeline import user_sql


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
        int, typer.Option(metavar="N", min=1, max=64, help="Parallel worker processes (1-64).")
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
            min=1,
            help="Work bound per file: a file still being read after this many seconds is "
            "stopped, its rows so far kept, and the stop quarantined as 'budget_exceeded' "
            '(caltrail sql "select * from parse_errors").',
        ),
    ] = IngestOptions.max_seconds_per_file,
    etw_manifest: Annotated[
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
    ] = None,
    tmf: Annotated[
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
    ] = None,
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
    check_inputs(paths)
    choice = zone_choice(tz)
    if patterns is not None:
        check_patterns(patterns)
    decoding = _decoding_files(etw_manifest, tmf)
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
    )
    summary = ingest_in_zone(paths, options, choice, as_json)
    if derive and not summary.interrupted:
        from caltrail.pipeline.progress import derived_notice
        from caltrail.pipeline.session import refresh

        with derived_notice(lake) as on_build:
            refresh(lake, on_build)
    raise typer.Exit(exit_code(summary, strict))


def check_patterns(path: Path) -> None:
    """A --patterns file has the columns of the default pattern table (a usage error
    otherwise, before the run: a file with other columns would be read as no pattern)."""
    from caltrail import queries

    default = next(p for p in queries.data_files() if p.name == "trace_patterns.csv")
    with open(default, encoding="utf-8", newline="") as handle:
        expected = next(csv.reader(handle))
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            found = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        usage(f"cannot read {path}: {exc}", "--patterns")
    found = [c.strip() for c in found]
    missing = [c for c in expected if c not in found]
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
        usage(
            f"{path}: columns do not match ({what}); expected {', '.join(expected)}", "--patterns"
        )


def _decoding_files(
    manifests: list[Path] | None, tmf: list[Path] | None
) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """The --etw-manifest / --tmf paths, each checked now (a usage error, not a failed run)."""
    from caltrail.pipeline import etw_files

    paths = tuple(manifests or ()), tuple(tmf or ())
    try:
        etw_files.load(*paths)
    except etw_files.DecodingFilesError as exc:
        usage(str(exc), "--etw-manifest / --tmf")
    return paths


def sql_cmd(
    query: Annotated[
        str | None,
        typer.Argument(
            metavar="QUERY",
            help="DuckDB SQL over the lake's views; several statements run in order; - reads "
            "the query from stdin.",
            show_default=False,
        ),
    ] = None,
    lake: ReadLakeOpt = DEFAULT_LAKE,
    file: Annotated[
        Path | None,
        typer.Option("--file", metavar="FILE", dir_okay=False, help="Read the query from FILE."),
    ] = None,
    fmt: FormatOpt = "table",
    max_rows: MaxRowsOpt = output.DEFAULT_MAX_ROWS,
    out: OutputOpt = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            "-p",
            metavar="NAME=VALUE",
            help="Bound parameter, used as $NAME in the query (repeatable).",
        ),
    ] = None,
    time_from: FromOpt = None,
    time_to: ToOpt = None,
    time_column: Annotated[
        str | None,
        typer.Option(
            "--time-column",
            metavar="COLUMN",
            help="The result column --from/--to filter on (default: the first TIMESTAMP or "
            "DATE column), unless the query uses $from / $to itself.",
        ),
    ] = None,
) -> None:
    """Run SQL over the lake, with every view and macro defined.

    Values go in as bound parameters, never into the SQL text. The session is in memory:
    CREATE, DROP, INSERT and SET change it, never the lake (and say so). The table format
    shows at most --max-rows rows; CSV and JSON stream every row.

    \b
    Example:  caltrail sql "select action, count(*) from licensing_events group by all"
    Example:  caltrail sql 'select * from events where computer like $pc' -p pc=LS01% -f csv
    Example:  caltrail sql --file query.sql --from 2025-03-01 --to 2025-03-31 -f json -o out.jsonl
    """
    import duckdb

    from caltrail.pipeline import user_sql

    check_format(fmt)
    text = _query_text(query, file)
    params: dict[str, str] = {}
    for item in param or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            usage(f"expected NAME=VALUE, got {item!r}", "--param")
        params[name] = value
    span = window(time_from, time_to)
    target = prepare_output(out, "--output")
    con = open_session(lake)
    try:
        script = user_sql.parse(con, text, params, span, time_column)
    except user_sql.SqlUsageError as exc:
        usage(str(exc), "QUERY")
    except duckdb.Error as exc:
        fail(f"query failed: {exc}", EXIT_LAKE)
    with output.output_stream(target, sys.stdout) as stream:
        _run_script(con, script, fmt, max_rows, stream)
    if target is not None:
        say(f"Wrote {target}")


def _query_text(query: str | None, file: Path | None) -> str:
    """The query from the argument, stdin (`-`) or --file; usage errors for none, two, an
    empty one, or an argument that is a mistyped option."""
    if query is not None and file is not None:
        usage("give the query as an argument or with --file, not both", "--file")
    if file is not None:
        try:
            text = file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            usage(f"cannot read {file}: {exc}", "--file")
    elif query == "-":
        text = sys.stdin.read()
    elif query is None:
        usage("give a query, - to read it from stdin, or --file FILE", "QUERY")
    else:
        if OPTION_LIKE.fullmatch(query):
            usage(f"no such option: {query.split('=')[0]}", "QUERY")
        text = query
    if not text.strip():
        usage("the query is empty", "QUERY")
    return text


# A word that is only an option name (`--fromat=csv`), not SQL (a SQL comment has a blank
# or a newline after its dashes, and a line that is only a comment holds no statement).
OPTION_LIKE = re.compile(r"--?[A-Za-z][\w-]*(=\S*)?")


def _run_script(
    con: duckdb.DuckDBPyConnection,
    script: user_sql.Script,
    fmt: str,
    max_rows: int,
    stream: TextIO,
) -> None:
    import duckdb

    from caltrail.pipeline import user_sql

    results = 0
    try:
        for ran in user_sql.run(con, script):
            if ran.relation is not None:
                if results and fmt != "json":
                    stream.write("\n")  # results apart (each CSV result has its header)
                write_relation(ran.relation, fmt, stream, max_rows)
                results += 1
            elif ran.wrote_rows is not None:
                say(f"statement {ran.number} ({ran.kind}) wrote {plural(ran.wrote_rows, 'row')}")
            elif ran.session_only:
                say(
                    f"note: statement {ran.number} ({ran.kind}) changed this session only; "
                    "nothing in the lake changed (caltrail sql opens a fresh in-memory "
                    "session over the lake's files each time)"
                )
            else:
                say(f"note: statement {ran.number} ({ran.kind}) ran")
    except user_sql.SqlUsageError as exc:
        usage(str(exc), "--from/--to")
    except duckdb.Error as exc:
        fail(f"query failed: {exc}", EXIT_LAKE)


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
    from caltrail.pipeline.materialize import all_current
    from caltrail.pipeline.progress import derived_notice
    from caltrail.pipeline.session import SHELL_LAKE_ENV, duckdb_cli, refresh, shell_script

    check_lake(lake)
    binary = duckdb_cli()
    if binary is None:
        fail("the DuckDB shell is not installed (pip install duckdb-cli)", EXIT_LAKE)
        return
    if not all_current(lake):
        with derived_notice(lake) as on_build:
            refresh(lake, on_build)
    try:
        script = shell_script(lake)
    except OSError as exc:
        fail(f"cannot write the shell's init script: {exc}", EXIT_LAKE)
    args = [binary, "-init", str(script)]
    if command is not None:
        args += ["-c", command]
    sys.stdout.flush()
    os.execve(binary, args, {**os.environ, SHELL_LAKE_ENV: str(lake.resolve())})


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
            min=2,
            help="Merge a table's small files once it has at least this many.",
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
        return
    if not results:
        typer.echo(f"Nothing to merge: no table has {min_files} or more small files.")
    for r in results:
        typer.echo(f"{r.table}: {r.files_before} files -> {r.files_after} ({r.rows} rows merged)")
        for reason in r.skipped:
            typer.echo(f"  left as it is: {reason}")
    from caltrail.pipeline.session import write_init_script

    write_init_script(lake)


__all__ = ["compact_cmd", "ingest_cmd", "shell_cmd", "sql_cmd", "verify_cmd"]
