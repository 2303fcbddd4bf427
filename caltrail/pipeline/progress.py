"""Terminal output: the ingest progress bar, the derived-tables notice and the run summary
(rich); query results are written by caltrail/pipeline/output.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from caltrail.pipeline import materialize
from caltrail.pipeline.ingest import FileResult, IngestSummary, ProgressFn
from caltrail.pipeline.output import plural

if TYPE_CHECKING:
    from caltrail.pipeline.session import BuildProgress

STATUS_WORDS = {
    "ok": "read",
    "quarantined": "read, some records quarantined",
    "error": "unreadable",
    "skipped": "not a log caltrail reads",
    "duplicate": "duplicate content (read once)",
}


@contextmanager
def ingest_progress(enabled: bool) -> Iterator[ProgressFn | None]:
    """A progress bar on stderr while files are parsed (no bar when not a terminal)."""
    if not enabled:
        yield None
        return
    console = Console(stderr=True)
    with Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[records]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task("ingesting", total=None, records=plural(0, "record"))
        records = 0

        def update(event: str, result: FileResult | None, total: int) -> None:
            nonlocal records
            if event == "total":
                bar.update(task, total=total)
            elif event == "compact":
                bar.update(task, description="merging small files")
            elif result is not None:
                records += result.records_seen
                bar.update(
                    task,
                    advance=1,
                    records=plural(records, "record"),
                    description=_short(result.display),
                )

        yield update


@contextmanager
def derived_notice(lake: Path) -> Iterator[BuildProgress | None]:
    """A spinner on stderr while a session builds the lake's derived tables (the first
    session after an ingest: a minute on a 50,000-device lake, where a silent terminal
    looks hung). Yields the `on_build` hook for `connect` / `open_case`, which names the
    table being built and how many steps there are; None (and nothing shown) when the
    tables are current or stderr is not a terminal."""
    building = (
        sys.stderr.isatty()
        and (lake / "ingest_files").is_dir()
        and not materialize.all_current(lake)
    )
    if not building:
        yield None
        return
    console = Console(stderr=True)
    # (short enough for an 80-column terminal: a wrapped status line hides its end)
    with console.status(
        "Computing the diagnosis layers (once per state of the lake) ..."
    ) as status:

        def on_build(table: str, step: int, steps: int) -> None:
            status.update(f"Computing {table} ({step}/{steps}; once per state of the lake) ...")

        yield on_build


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1) :]


def print_summary(summary: IngestSummary) -> None:
    """The human summary of a run: files by status, records, problems, time."""
    console = Console(highlight=False, soft_wrap=True)
    data = summary.to_dict()
    files = ", ".join(f"{n} {STATUS_WORDS.get(s, s)}" for s, n in data["files"].items()) or "none"
    console.print(f"Lake: {data['lake']}  (run {data['run_id']})")
    console.print(
        f"Files: {data['files_total']:,} new ({files}); {data['already_ingested']:,} already in "
        "the lake"
    )
    console.print(
        f"Records: {plural(data['records_seen'], 'record')} seen = {data['records_ok']:,} "
        f"written + {data['records_quarantined']:,} quarantined; "
        f"{plural(data['warnings'], 'record warning')}"
        # an assumed zone is a warning about whole files: counted here too, so that
        # "0 warnings" never reads as all clear above the list of them
        + (
            f"; {plural(len(data['zone_assumed']), 'file')} read in an assumed zone (below)"
            if data["zone_assumed"]
            else ""
        )
    )
    if data["rows"]:
        console.print("Rows: " + ", ".join(f"{t} {n}" for t, n in data["rows"].items()))
    if data["zone_assumed"]:
        console.print(
            f"  ! {plural(len(data['zone_assumed']), 'file')} read times written without a "
            f"zone in {data['zone']}:",
            markup=False,
        )
        for item in data["zone_assumed"][:20]:
            console.print(f"      {item['path']} ({item['what']})", markup=False)
        if len(data["zone_assumed"]) > 20:
            console.print(f"      ... and {len(data['zone_assumed']) - 20} more (ingest_files.notes)")
    for problem in data["problems"][:20]:
        console.print(f"  ! {problem['path']}: {problem['message']}", markup=False)
    if len(data["problems"]) > 20:
        console.print(f"  ... and {len(data['problems']) - 20} more (see the ingest_files view)")
    if data["interrupted"]:
        console.print(
            "Interrupted: files finished before the interruption are in the lake; run again to finish."
        )
    for item in data["compacted"]:
        console.print(
            f"Compacted {item['table']}: {item['files_before']} files -> {item['files_after']}"
        )
    if data["compact_error"]:
        console.print(f"  ! {data['compact_error']}", markup=False)
    if data["init_script_error"]:
        console.print(f"  ! {data['init_script_error']}", markup=False)
    console.print(f"Elapsed: {data['elapsed_s']:.1f} s")
