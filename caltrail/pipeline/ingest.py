"""The ingest driver: input paths in, lake rows out, one manifest row per file.

For each input file: hash it; skip it when the manifest already has that sha256 (unless
`force`); detect its format by content; run the parser; route records to their table,
issues to `parse_errors`, notes to the manifest row. Rows are staged as Parquet in batches
(memory bounded whatever the file size) and committed in groups (see pipeline.lake).
A file that cannot be read becomes a manifest row with status "error" and the run goes on.

Files are parsed by an executor (pipeline.runner): by default in long-lived child processes,
so a parser that dies in native code costs its file (status "error", the reason in the
manifest and the summary), never the run.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from caltrail import __version__
from caltrail.parsers import READERS, range_readers
from caltrail.parsers.base import (
    BUDGET_EXCEEDED,
    RECORD_TYPES,
    ZONE_ASSUMED,
    FileNote,
    Item,
    ParseIssue,
    ParseOptions,
    RangeReader,
    RowBlock,
)
from caltrail.parsers.errors import ParseError
from caltrail.pipeline import etw_files, row_blocks, runner
from caltrail.pipeline import lake as L
from caltrail.pipeline.bounded import WorkBoundReached, open_bounded
from caltrail.pipeline.compact import compact
from caltrail.pipeline.detect import detect
from caltrail.pipeline.inputs import InputFile, InputProblem, cleanup, discover

VERSION = __version__
COMMIT_EVERY_FILES = 200
COMMIT_EVERY_SECONDS = 2.0
# A large file whose reader reads byte ranges (base.RangeReader: EVTX) is split across
# workers: files from SPLIT_MIN_BYTES on, in parts of about PART_BYTES at most (the reader
# chooses the boundaries). Below about 48 MB a split gains less than starting the worker
# processes costs.
SPLIT_MIN_BYTES = 48 * 1024 * 1024
PART_BYTES = 64 * 1024 * 1024
# Test hook, read where the file is parsed: "SUBSTRING=MODE" makes parse_file fail for a
# file whose display name contains SUBSTRING; MODE is raise (a Python exception), exit
# (os._exit), segv, kill (SIGKILL), abort (SIGABRT, as glibc does on a corrupted heap),
# hang (never returns) or enospc (the lake's disk is full); killmid stages the rows of the
# first MID_FILE_ITEMS items, then SIGKILLs its process, once per file (a marker in the
# staging folder tells the retry it is one): a worker killed mid-file.
CRASH_HOOK_ENV = "CALTRAIL_TEST_CRASH"
MID_FILE_ITEMS = 100
# What a parsing child imports before its first file (while the parent hashes the inputs).
PRELOAD = ("caltrail.pipeline.ingest", *READERS)


@dataclass
class IngestOptions:
    """Everything a run needs to know; defaults are what `caltrail ingest` uses."""

    lake: Path = Path("caltrail-lake")
    # the zone of times written without one (settled by the CLI, caltrail/pipeline/
    # cli_common.py); None: not given, read as UTC and reported as an assumption
    tz: dt.tzinfo | None = None
    tz_source: str = "--tz"  # where `tz` came from, as the manifest names it
    force: bool = False
    backend: str = "rust"
    workers: int = 1
    date_order: str | None = None
    culture: str | None = None
    snapshot_time: dt.datetime | None = None
    client_name: str | None = None
    max_seconds_per_file: float = 1800.0
    wait_for_lock: bool = False
    patterns: Path | None = None  # user trace patterns, copied into LAKE/_ref
    command: str = "ingest"
    compact: bool = True  # merge the small files of tables that have many (pipeline/compact.py)
    etw_manifests: tuple[Path, ...] = ()  # manifests for raw .etl events (--etw-manifest)
    tmf_dirs: tuple[Path, ...] = ()  # WPP TMF files for raw .etl messages (--tmf)
    recover: bool = True  # EVTX: also read the records left in chunk slack (--no-recover)
    # files to read again although the lake holds them (sha256), e.g. in the zone that
    # `--tz auto` found; `force` reads every file again
    reread: frozenset[str] = frozenset()
    dask: str | None = None  # parse on a Dask cluster: its scheduler address, or local:N

    @property
    def zone(self) -> dt.tzinfo:
        """The zone the parsers read zone-less times in."""
        return self.tz if self.tz is not None else dt.UTC

    @property
    def zone_label(self) -> str:
        """The zone as the manifest and the summary name it, with where it came from."""
        if self.tz is None:
            given = "--tz not given" if self.tz_source == "--tz" else self.tz_source
            return f"UTC (assumed: {given})"
        return f"{zone_name(self.tz)} (from {self.tz_source})"


def zone_name(tz: dt.tzinfo) -> str:
    """An IANA name (`Europe/Berlin`), or the zone's own name (`UTC`)."""
    return str(getattr(tz, "key", None) or tz.tzname(None) or tz)


@dataclass
class FileResult:
    """What happened to one input file (becomes its manifest row)."""

    display: str
    sha256: str
    size: int
    mtime: float | None
    status: str
    kind: str | None = None
    parser: str | None = None
    records_ok: int = 0
    records_bad: int = 0
    warnings: int = 0
    error: str | None = None
    notes: dict[str, str] = field(default_factory=dict)
    # The notes made of counts, typed: the parts of a file read in ranges add them up.
    counted: dict[str, FileNote] = field(default_factory=dict)
    staged: list[L.StagedFile] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0

    @property
    def records_seen(self) -> int:
        return self.records_ok + self.records_bad

    def add_counted(self, note: FileNote) -> None:
        """A note of counts (FileNote.counted): added to the same note seen before (another
        range of the file), and its text written as the file's note."""
        known = self.counted.get(note.key)
        total = known.plus(note) if known else note
        self.counted[note.key] = total
        self.notes[note.key] = total.value

    def manifest_row(self, run_id: str) -> dict[str, Any]:
        def ts(value: float | None) -> dt.datetime | None:
            return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)

        return {
            "path": self.display,
            "sha256": self.sha256,
            "size": self.size,
            "mtime": ts(self.mtime),
            "kind": self.kind,
            "parser": self.parser,
            "status": self.status,
            "records_seen": self.records_seen,
            "records_ok": self.records_ok,
            "records_bad": self.records_bad,
            "warnings": self.warnings,
            "error": self.error,
            "notes": self.notes,
            "run_id": run_id,
            "started": ts(self.started),
            "finished": ts(self.finished),
        }


# The `--json` summary's shape: a scheduler reads `schema_version` before anything else.
# 2: absolute `lake`, `results` (one entry per input file), the error object on a failure.
SUMMARY_SCHEMA_VERSION = 2


@dataclass
class IngestSummary:
    """The end-of-run summary (printed as a table, or as one JSON object with --json)."""

    run_id: str
    lake: str
    files: Counter[str] = field(default_factory=Counter)
    records_seen: int = 0
    records_ok: int = 0
    records_quarantined: int = 0
    warnings: int = 0
    already_ingested: int = 0
    rows: Counter[str] = field(default_factory=Counter)
    problems: list[dict[str, str]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)  # one per input file
    elapsed_s: float = 0.0
    interrupted: bool = False
    compacted: list[dict[str, Any]] = field(default_factory=list)
    compact_error: str | None = None
    # the shell's init script could not be written after the run (the lake is complete):
    # e.g. a user pattern table put in the lake by hand that DuckDB cannot read
    init_script_error: str | None = None
    zone: str = ""  # the zone zone-less times were read in, and where it came from
    zone_assumed: list[dict[str, str]] = field(default_factory=list)  # files that did

    def add(self, result: FileResult) -> None:
        self.files[result.status] += 1
        self.records_seen += result.records_seen
        self.records_ok += result.records_ok
        self.records_quarantined += result.records_bad
        self.warnings += result.warnings
        self.rows.update(result.rows)
        if ZONE_ASSUMED in result.notes and len(self.zone_assumed) < 1000:
            self.zone_assumed.append({"path": result.display, "what": result.notes[ZONE_ASSUMED]})
        self.results.append(file_entry(result))
        if result.status in ("error", "quarantined") and len(self.problems) < 1000:
            self.problems.append(
                {"path": result.display, "status": result.status, "message": result.error or ""}
            )

    def skip(self, result: FileResult) -> None:
        """A file whose content is already in the lake: listed, not read."""
        self.already_ingested += 1
        self.results.append(file_entry(result))

    def to_dict(self, with_results: bool = True) -> dict[str, Any]:
        data = {
            "schema_version": SUMMARY_SCHEMA_VERSION,
            "run_id": self.run_id,
            "lake": self.lake,
            "files": dict(sorted(self.files.items())),
            "files_total": sum(self.files.values()),
            "records_seen": self.records_seen,
            "records_ok": self.records_ok,
            "records_quarantined": self.records_quarantined,
            "warnings": self.warnings,
            "already_ingested": self.already_ingested,
            "rows": dict(sorted(self.rows.items())),
            "elapsed_s": round(self.elapsed_s, 3),
            "interrupted": self.interrupted,
            "problems": self.problems,
            "compacted": self.compacted,
            "compact_error": self.compact_error,
            "init_script_error": self.init_script_error,
            "zone": self.zone,
            "zone_assumed": self.zone_assumed,
        }
        if with_results:
            data["results"] = self.results
        return data

    def to_json(self, with_results: bool = True) -> str:
        return json.dumps(self.to_dict(with_results), sort_keys=False)


def file_entry(result: FileResult) -> dict[str, Any]:
    """One input file in the --json summary: what a scheduler needs to act on it."""
    return {
        "path": result.display,
        "sha256": result.sha256 or None,
        "status": result.status,
        "records_seen": result.records_seen,
        "records_ok": result.records_ok,
        "records_quarantined": result.records_bad,
        "warnings": result.warnings,
        "rows": dict(sorted(result.rows.items())),
        "problems": [result.error] if result.error else [],
    }


ProgressFn = Callable[[str, FileResult | None, int], None]
"""progress(event, result, total): event is "total" (total known), "file" (one done),
"compact" (the files are read; small files are being merged)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------
# One file (runs in the main process or in a worker)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FileTask:
    """What a worker needs to parse one file (picklable)."""

    path: Path
    display: str
    sha256: str
    size: int
    mtime: float | None
    index: int
    run_id: str
    stage: Path
    parse_options: ParseOptions
    base_notes: tuple[tuple[str, str], ...]
    # A byte range of a file whose reader reads ranges: (part number, start, stop or None).
    part: tuple[int, int, int | None] | None = None
    zone_label: str = ""  # the file's `tz` note, when it reads a time in the assumed zone

    @property
    def prefix(self) -> str:
        """Staged file names of this task: `<table>__<prefix>-<n>.parquet`."""
        base = f"{self.sha256[:16]}-{self.index:06d}"
        return base if self.part is None else f"{base}-p{self.part[0]:04d}"


def _crash_hook(task: FileTask) -> None:
    hook = os.environ.get(CRASH_HOOK_ENV)
    if not hook or "=" not in hook:
        return
    needle, mode = hook.rsplit("=", 1)
    if needle not in task.display or (task.part is not None and task.part[0] != 0):
        return
    if mode == "killmid":
        return  # _mid_file_hook's
    if mode == "exit":
        os._exit(70)
    if mode == "segv":  # a real invalid read, as a native parser bug makes
        import ctypes  # a test hook's only use of it

        ctypes.string_at(0)
    if mode in ("kill", "abort"):
        how = signal.SIGKILL if mode == "kill" else signal.SIGABRT
        signal.pthread_kill(threading.get_ident(), how)  # this thread, as a real fault
    if mode == "hang":
        while True:
            time.sleep(3600)
    if mode == "enospc":
        raise OSError(28, "No space left on device")
    raise RuntimeError(f"test crash hook for {task.display}")


def _mid_file_hook(task: FileTask, items: Iterator[Any], rows: L.FileRows) -> Iterator[Any]:
    """The items, or (test hook "SUBSTRING=killmid") the first MID_FILE_ITEMS of them,
    their rows staged, and a SIGKILL: once per file."""
    hook = os.environ.get(CRASH_HOOK_ENV, "")
    needle, _, mode = hook.rpartition("=")
    marker = task.stage / f".killed-{task.prefix}"
    if mode != "killmid" or not needle or needle not in task.display or marker.exists():
        yield from items
        return
    for n, item in enumerate(items):
        yield item
        if n + 1 == MID_FILE_ITEMS:
            for buffer in rows.buffers.values():
                buffer.flush()
            marker.touch()
            signal.pthread_kill(threading.get_ident(), signal.SIGKILL)


@contextmanager
def _few_collections() -> Iterator[None]:
    """Parsing allocates millions of short-lived, acyclic objects while a batch of rows
    stays alive: the default GC thresholds rescan that batch over and over. Collect
    rarely while a file is parsed (nothing is leaked: cycles are still collected)."""
    old = gc.get_threshold()
    gc.set_threshold(100_000, 50, 100)
    try:
        yield
    finally:
        gc.set_threshold(*old)


def parse_file(task: FileTask) -> FileResult:
    """Parse one file (or one part of it) into staged Parquet. Never raises for bad
    content."""
    with _few_collections():
        return _parse_file(task)


def _parse_file(task: FileTask) -> FileResult:
    result = FileResult(
        task.display, task.sha256, task.size, task.mtime, status="ok", started=time.time()
    )
    result.notes.update(task.base_notes)
    try:
        detection = detect(task.path, task.display)
    except OSError as exc:
        return _finish(result, "error", f"cannot read: {exc.strerror or exc}")
    if detection.parser is None:
        return _finish(result, "skipped", detection.reason)
    module = detection.parser
    result.kind = module.NAME
    result.parser = f"{module.NAME}/{module.VERSION}"
    lineage = {
        "source_path": task.display,
        "file_sha256": task.sha256,
        "parser": result.parser,
        "run_id": task.run_id,
    }
    rows = L.open_buffers(task.stage, lineage, task.prefix)
    try:
        _crash_hook(task)
        with open_bounded(task.path, task.parse_options.max_seconds) as stream:
            if task.part is not None:
                ranged: RangeReader = module  # type: ignore[assignment]  # planned as one
                items = ranged.parse_range(stream, task.parse_options, task.part[1], task.part[2])
            else:
                items = module.parse(stream, task.parse_options)
            if CRASH_HOOK_ENV in os.environ:
                items = _mid_file_hook(task, iter(items), rows)
            try:
                _take_items(items, rows, result, task.zone_label)
            except WorkBoundReached as exc:  # the rows read before it are kept
                stop = ParseIssue(BUDGET_EXCEEDED, str(exc), offset=exc.offset)
                rows.buffers["parse_errors"].add(L.IssueAdapter(stop))
                result.records_bad += 1
        # parse_errors comes last (DATA_TABLES), so it also receives the records another
        # table rejected at its flush because a value does not fit its column.
        for buffer in rows.buffers.values():
            buffer.flush()
            for issue in buffer.rejected:
                rows.buffers["parse_errors"].add(L.IssueAdapter(issue))
                result.records_bad += 1
    except ParseError as exc:
        _discard(rows)
        return _finish(result, "error", str(exc), keep_counts=False)
    except OSError as exc:
        _discard(rows)
        if exc.errno in (28, 122):  # ENOSPC, EDQUOT: the lake's disk, not the input
            raise
        return _finish(result, "error", f"read error: {exc.strerror or exc}", keep_counts=False)
    except Exception as exc:  # a parser bug must cost one file, never the run
        _discard(rows)
        return _finish(
            result,
            "error",
            f"internal error in {result.parser}: {type(exc).__name__}: {exc}",
            keep_counts=False,
        )
    result.records_ok = sum(b.count for t, b in rows.buffers.items() if t != "parse_errors")
    result.rows = {t: b.count for t, b in rows.buffers.items() if b.count}
    result.staged = rows.staged()
    if result.records_bad:
        return _finish(
            result, "quarantined", f"{result.records_bad} records quarantined (see parse_errors)"
        )
    return _finish(result, "ok", None)


def _take_items(
    items: Iterable[Item], rows: L.FileRows, result: FileResult, zone_label: str
) -> None:
    """Each item a parser yields into the file's rows and its result's counts and notes."""
    record_types = RECORD_TYPES
    for item in items:
        if isinstance(item, record_types):
            rows.buffers[item.table].add(item)  # type: ignore[union-attr]
        elif isinstance(item, RowBlock):
            table = row_blocks.block_table(item)
            if table is not None:
                rows.buffers[item.table].add_table(table)
            else:  # a row the bulk reading does not read: the block's rows one by one
                _take_items(item.records(), rows, result, zone_label)
        elif isinstance(item, ParseIssue):
            rows.buffers["parse_errors"].add(L.IssueAdapter(item))
            if item.quarantined:
                result.records_bad += 1
            else:
                result.warnings += 1
        elif isinstance(item, FileNote):
            if item.counts:
                result.add_counted(item)
            else:
                result.notes[item.key] = item.value
            if item.key == ZONE_ASSUMED:  # the zone is named once, here
                result.notes["tz"] = zone_label


def _discard(rows: L.FileRows) -> None:
    for staged in rows.staged():
        staged.path.unlink(missing_ok=True)


def _finish(
    result: FileResult, status: str, error: str | None, keep_counts: bool = True
) -> FileResult:
    result.status = status
    result.error = error
    if not keep_counts:
        result.records_ok = result.records_bad = 0
        result.staged = []
        result.rows = {}
    result.finished = time.time()
    return result


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def ingest(
    paths: Iterable[Path], options: IngestOptions, progress: ProgressFn | None = None
) -> IngestSummary:
    """Ingest files, folders and zips into the lake. Returns the run summary."""
    started = time.time()
    # absolute: the summary names it, and Dask workers (another working directory, another
    # machine) reach the staging area and the inputs by the same paths
    lake = options.lake = options.lake.absolute()
    run_id = L.new_run_id()
    summary = IngestSummary(run_id=run_id, lake=str(lake), zone=options.zone_label)
    with L.writer_lock(lake, wait=options.wait_for_lock):
        L.sweep_orphans(lake)
        if options.patterns is not None:
            # session (and DuckDB) stay out of the parsing children, which import this module
            from caltrail.pipeline.session import install_user_table

            install_user_table(lake, "trace_patterns", options.patterns)
        stage = L.staging_dir(lake, run_id)
        stage.mkdir(parents=True, exist_ok=True)
        # Zip members are extracted inside the run's staging folder: a killed run's leftovers
        # are swept by the next run (a system temp folder would keep them forever).
        workdir = stage / "extract"
        workdir.mkdir(parents=True, exist_ok=True)
        try:
            _run(list(paths), options, run_id, stage, workdir, summary, progress)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            cleanup(workdir)
            L.sweep_orphans(lake)
        if options.compact and not summary.interrupted:
            _compact(lake, summary, progress)
        summary.elapsed_s = time.time() - started
        L.write_run(
            lake,
            {
                "run_id": run_id,
                "started": dt.datetime.fromtimestamp(started, dt.UTC),
                "finished": dt.datetime.now(dt.UTC),
                "command": options.command,
                "caltrail_version": VERSION,
                "options": {
                    "tz": options.zone_label,
                    "backend": options.backend,
                    "recover": str(options.recover),
                    "workers": str(options.workers),
                    "force": str(options.force),
                    "dask": options.dask or "",
                },
                "summary": summary.to_json(with_results=False),  # the manifest has them
            },
        )
    _write_init_script(lake, summary)
    return summary


def _write_init_script(lake: Path, summary: IngestSummary) -> None:
    """The shell's init script for the lake's new state. What the run committed is
    complete either way, so a lake DuckDB cannot open (a user pattern table broken by hand)
    is reported in the summary, not raised; a disk error is raised (the CLI says what the
    lake holds, and the exit status tells a batch job the disk needs room)."""
    # session (and DuckDB) stay out of the parsing children, which import this module
    import duckdb

    from caltrail.pipeline.session import SessionError, write_init_script
    from caltrail.pipeline.shell import INIT_SCRIPT

    try:
        write_init_script(lake)
    except (SessionError, duckdb.Error) as exc:
        summary.init_script_error = (
            f"the lake is complete, but its init script ({INIT_SCRIPT}) was not written: {exc}"
        )


def _compact(lake: Path, summary: IngestSummary, progress: ProgressFn | None) -> None:
    """Merge small files after the run. What the run committed is complete either way, so
    a failure here (a full disk) is reported in the summary, not raised; Ctrl-C finishes
    or undoes the merge under way and ends the run as interrupted."""
    try:
        if progress is not None:
            progress("compact", None, 0)
        summary.compacted = [c.to_dict() for c in compact(lake)]
    except (OSError, pa.ArrowException) as exc:
        summary.compact_error = f"merging small files failed (the lake is complete): {exc}"
    except KeyboardInterrupt:
        L.finish_compactions(lake)
        summary.interrupted = True
        summary.compact_error = "interrupted while merging small files (the lake is complete)"


def _run(
    paths: list[Path],
    options: IngestOptions,
    run_id: str,
    stage: Path,
    workdir: Path,
    summary: IngestSummary,
    progress: ProgressFn | None,
) -> None:
    executor: runner.Executor[FileTask, FileResult]
    if options.dask:
        # only a --dask run needs it (the parsing children never do)
        from caltrail.pipeline.runner_dask import DaskExecutor

        dask = DaskExecutor[FileTask, FileResult](parse_file, options.dask)
        executor, workers = dask, dask.workers
    else:
        pool = runner.executor_for(parse_file, options.workers, _task_seconds, PRELOAD)
        if isinstance(pool, runner.ChildPool):
            pool.warm()  # the child starts while the inputs are hashed
        executor, workers = pool, options.workers
    try:
        _read_all(paths, options, run_id, stage, workdir, summary, progress, executor, workers)
    finally:
        executor.close()


def _task_seconds(task: FileTask) -> float:
    return task.parse_options.max_seconds


def _read_all(
    paths: list[Path],
    options: IngestOptions,
    run_id: str,
    stage: Path,
    workdir: Path,
    summary: IngestSummary,
    progress: ProgressFn | None,
    executor: runner.Executor[FileTask, FileResult],
    workers: int,
) -> None:
    known = set() if options.force else L.known_hashes(options.lake) - options.reread
    seen_this_run: set[str] = set()
    tasks: list[FileTask] = []
    committer = _Committer(options.lake, run_id)
    base_notes: tuple[tuple[str, str], ...] = ()
    for found in discover(paths, workdir):
        if isinstance(found, InputProblem):
            result = FileResult(found.display, "", 0, None, "error", error=found.message)
            result.started = result.finished = time.time()
            committer.add(result, summary)
            continue
        task_or_result = _prepare(
            found, len(tasks), run_id, stage, options, base_notes, known, seen_this_run
        )
        if isinstance(task_or_result, FileResult):
            if task_or_result.status == "already_ingested":
                summary.skip(task_or_result)
            else:
                committer.add(task_or_result, summary)
            continue
        tasks.append(task_or_result)
    total = len(tasks)
    if progress:
        progress("total", None, total)

    def done(result: FileResult) -> None:
        committer.add(result, summary)
        if progress:
            progress("file", result, total)

    assembler = _Assembler(done, workdir)
    queue: list[FileTask] = []
    for task in tasks:
        # a large EVTX file is split by chunk ranges only when there are workers to share it
        parts = _plan_parts(task, workers) if workers > 1 else [task]
        assembler.expect(task, len(parts))
        queue.extend(parts)

    def finished(task: FileTask, outcome: FileResult | runner.Crash) -> None:
        if isinstance(outcome, runner.Crash):
            outcome = _crashed(task, outcome)
        assembler.add(task, outcome)

    try:
        executor.run(queue, finished)
    finally:
        committer.flush()


def _prepare(
    found: InputFile,
    index: int,
    run_id: str,
    stage: Path,
    options: IngestOptions,
    base_notes: tuple[tuple[str, str], ...],
    known: set[str],
    seen_this_run: set[str],
) -> FileTask | FileResult:
    found = replace(found, path=found.path.absolute())  # workers may run elsewhere (Dask)
    try:
        size = found.path.stat().st_size
        digest = sha256_file(found.path)
    except OSError as exc:
        result = FileResult(
            found.display, "", 0, found.mtime, "error", error=f"cannot read: {exc.strerror or exc}"
        )
        result.started = result.finished = time.time()
        return result
    if digest in known:
        return FileResult(found.display, digest, size, found.mtime, "already_ingested")
    if digest in seen_this_run:
        result = FileResult(
            found.display,
            digest,
            size,
            found.mtime,
            "duplicate",
            error="same content as another file of this run; read once",
        )
        result.started = result.finished = time.time()
        return result
    seen_this_run.add(digest)
    mtime = dt.datetime.fromtimestamp(found.mtime, dt.UTC) if found.mtime is not None else None
    manifests, tmf_files = etw_files.load(options.etw_manifests, options.tmf_dirs)
    parse_options = ParseOptions(
        file_name=found.display,
        file_mtime=mtime,
        tz=options.zone,
        date_order=options.date_order,
        culture=options.culture,
        snapshot_time=options.snapshot_time,
        client_name=options.client_name,
        backend=options.backend,
        max_seconds=options.max_seconds_per_file,
        etw_manifests=manifests,
        tmf_files=tmf_files,
        recover=options.recover,
        row_blocks=True,  # the WMI readers' usual rows read by Arrow (pipeline/row_blocks.py)
    )
    return FileTask(
        found.path,
        found.display,
        digest,
        size,
        found.mtime,
        index,
        run_id,
        stage,
        parse_options,
        base_notes,
        zone_label=options.zone_label,
    )


def _drop_extracted(task: FileTask, workdir: Path) -> None:
    # Zip members were extracted for this run only: free the disk as we go.
    if workdir in task.path.parents:
        task.path.unlink(missing_ok=True)


def _plan_parts(task: FileTask, workers: int) -> list[FileTask]:
    """The tasks for one file: itself, or, for a large file a reader reads in ranges, its
    byte ranges (base.RangeReader)."""
    if task.size < SPLIT_MIN_BYTES:
        return [task]
    readers = range_readers()
    try:
        with open(task.path, "rb") as handle:
            head = handle.read(max(r.RANGE_HEAD for r in readers))
    except OSError:
        return [task]
    parts = max(workers, -(-task.size // PART_BYTES))
    for reader in readers:
        if reader.sniff(head, task.display):
            ranges = reader.plan_ranges(head, task.size, parts)
            if len(ranges) < 2:
                return [task]
            return [replace(task, part=(n, start, stop)) for n, (start, stop) in enumerate(ranges)]
    return [task]


def _merge_parts(parts: list[FileResult]) -> FileResult:
    """One file's result from the results of its parts (in part order)."""
    first = parts[0]
    merged = FileResult(first.display, first.sha256, first.size, first.mtime, "ok")
    merged.started = min(p.started for p in parts)
    merged.kind = next((p.kind for p in parts if p.kind), None)
    merged.parser = next((p.parser for p in parts if p.parser), None)
    failed = [p for p in parts if p.status in ("error", "skipped")]
    if failed:
        for part in parts:
            for staged in part.staged:
                staged.path.unlink(missing_ok=True)
        merged.notes.update(first.notes)
        return _finish(merged, failed[0].status, failed[0].error, keep_counts=False)
    for part in parts:
        for key, value in part.notes.items():
            if key not in part.counted:
                merged.notes.setdefault(key, value)  # the same in every part
        for note in part.counted.values():
            merged.add_counted(note)  # added up over the parts
        merged.records_ok += part.records_ok
        merged.records_bad += part.records_bad
        merged.warnings += part.warnings
        for table, count in part.rows.items():
            merged.rows[table] = merged.rows.get(table, 0) + count
        merged.staged.extend(part.staged)
    merged.notes["parts"] = str(len(parts))
    if merged.records_bad:
        return _finish(
            merged, "quarantined", f"{merged.records_bad} records quarantined (see parse_errors)"
        )
    return _finish(merged, "ok", None)


class _Assembler:
    """Collects the results of the parts of split files; hands on whole files."""

    def __init__(self, done: Callable[[FileResult], None], workdir: Path) -> None:
        self.done = done
        self.workdir = workdir
        self.expected: dict[int, int] = {}
        self.parts: dict[int, dict[int, FileResult]] = {}

    def expect(self, task: FileTask, parts: int) -> None:
        self.expected[task.index] = parts

    def add(self, task: FileTask, result: FileResult) -> None:
        if task.part is None:
            self.done(result)
            _drop_extracted(task, self.workdir)
            return
        got = self.parts.setdefault(task.index, {})
        got[task.part[0]] = result
        if len(got) == self.expected[task.index]:
            del self.parts[task.index]
            self.done(_merge_parts([got[n] for n in sorted(got)]))
            _drop_extracted(task, self.workdir)


def _crashed(task: FileTask, crash: runner.Crash) -> FileResult:
    """The result of a task whose process died (or hung): the file is an error, with why."""
    result = FileResult(task.display, task.sha256, task.size, task.mtime, "error")
    where = "" if task.part is None else f" (bytes {task.part[1]}-{task.part[2] or task.size})"
    if crash.hang:
        # not "the worker process ...": a hang is not retried by the next run (lake.py), it
        # would cost the whole work bound again; --force retries it
        result.error = f"the parser reading this file{where} {crash.reason}"
    else:
        result.error = (
            f"the worker process parsing this file{where} crashed: it {crash.reason}; "
            "the rest of the run went on"
        )
    result.started = result.finished = time.time()
    for path in task.stage.glob(f"*__{task.prefix}-*.parquet"):
        path.unlink(missing_ok=True)
    return result


class _Committer:
    """Groups finished files and commits them to the lake (data first, manifest last)."""

    def __init__(self, lake: Path, run_id: str) -> None:
        self.lake = lake
        self.run_id = run_id
        self.pending: list[FileResult] = []
        self.seq = 0
        self.last = time.monotonic()

    def add(self, result: FileResult, summary: IngestSummary) -> None:
        summary.add(result)
        self.pending.append(result)
        if (
            len(self.pending) >= COMMIT_EVERY_FILES
            or time.monotonic() - self.last > COMMIT_EVERY_SECONDS
        ):
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        staged = [s for r in self.pending for s in r.staged]
        L.commit(
            self.lake,
            self.run_id,
            staged,
            [r.manifest_row(self.run_id) for r in self.pending],
            self.seq,
        )
        self.seq += 1
        self.pending = []
        self.last = time.monotonic()


def exit_code(summary: IngestSummary, strict: bool) -> int:
    """0 clean; 3 some input unreadable; 4 records quarantined under --strict."""
    if summary.files.get("error"):
        return 3
    if strict and summary.records_quarantined:
        return 4
    return 0


__all__ = ["FileResult", "IngestOptions", "IngestSummary", "exit_code", "ingest", "parse_file"]
