"""The ingest driver: input paths in, lake rows out, one manifest row per file.

For each input file: hash it; skip it when the manifest already has that sha256 (unless
`force`); detect its format by content; run the parser; route records to their table,
issues to `parse_errors`, notes to the manifest row. Rows are staged as Parquet in batches
(memory bounded whatever the file size) and committed in groups (see pipeline.lake).
A file that cannot be read becomes a manifest row with status "error" and the run goes on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from parsers.base import RECORD_TYPES, FileNote, ParseIssue, ParseOptions
from parsers.errors import ParseError
from pipeline import lake as L
from pipeline.detect import detect
from pipeline.inputs import InputFile, InputProblem, cleanup, discover

VERSION = "0.1.0"
COMMIT_EVERY_FILES = 200
COMMIT_EVERY_SECONDS = 2.0


@dataclass
class IngestOptions:
    """Everything a run needs to know; defaults are what `caltrail ingest` uses."""

    lake: Path = Path("caltrail-lake")
    tz: str = "UTC"
    tz_given: bool = False
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
    staged: list[L.StagedFile] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0

    @property
    def records_seen(self) -> int:
        return self.records_ok + self.records_bad

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
    elapsed_s: float = 0.0
    interrupted: bool = False

    def add(self, result: FileResult) -> None:
        self.files[result.status] += 1
        self.records_seen += result.records_seen
        self.records_ok += result.records_ok
        self.records_quarantined += result.records_bad
        self.warnings += result.warnings
        self.rows.update(result.rows)
        if result.status in ("error", "quarantined") and len(self.problems) < 1000:
            self.problems.append(
                {"path": result.display, "status": result.status, "message": result.error or ""}
            )

    def to_dict(self) -> dict[str, Any]:
        return {
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
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=False)


ProgressFn = Callable[[str, FileResult | None, int], None]
"""progress(event, result, total): event is "total" (total known), "file" (one done)."""


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


def parse_file(task: FileTask) -> FileResult:
    """Parse one file into staged Parquet. Never raises for bad content."""
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
    rows = L.open_buffers(task.stage, lineage, f"{task.sha256[:16]}-{task.index:06d}")
    record_types = RECORD_TYPES
    try:
        with open(task.path, "rb") as stream:
            for item in module.parse(stream, task.parse_options):
                if isinstance(item, record_types):
                    rows.buffers[item.table].add(item)  # type: ignore[union-attr]
                elif isinstance(item, ParseIssue):
                    rows.buffers["parse_errors"].add(L.IssueAdapter(item))
                    if item.quarantined:
                        result.records_bad += 1
                    else:
                        result.warnings += 1
                elif isinstance(item, FileNote):
                    result.notes[item.key] = item.value
        for buffer in rows.buffers.values():
            buffer.flush()
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


def _worker_init() -> None:
    # Ctrl-C goes to the whole process group: the parent decides, workers just stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# ---------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------


def ingest(
    paths: Iterable[Path], options: IngestOptions, progress: ProgressFn | None = None
) -> IngestSummary:
    """Ingest files, folders and zips into the lake. Returns the run summary."""
    started = time.time()
    lake = options.lake
    run_id = L.new_run_id()
    summary = IngestSummary(run_id=run_id, lake=str(lake))
    with L.writer_lock(lake, wait=options.wait_for_lock):
        L.sweep_orphans(lake)
        if options.patterns is not None:
            from pipeline.session import install_user_table

            install_user_table(lake, "trace_patterns", options.patterns)
        stage = L.staging_dir(lake, run_id)
        stage.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="caltrail-"))
        try:
            _run(list(paths), options, run_id, stage, workdir, summary, progress)
        except KeyboardInterrupt:
            summary.interrupted = True
        finally:
            cleanup(workdir)
            L.sweep_orphans(lake)
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
                    "tz": options.tz,
                    "backend": options.backend,
                    "workers": str(options.workers),
                    "force": str(options.force),
                },
                "summary": summary.to_json(),
            },
        )
    from pipeline.session import write_init_script

    write_init_script(lake)
    return summary


def _run(
    paths: list[Path],
    options: IngestOptions,
    run_id: str,
    stage: Path,
    workdir: Path,
    summary: IngestSummary,
    progress: ProgressFn | None,
) -> None:
    known = set() if options.force else L.known_hashes(options.lake)
    seen_this_run: set[str] = set()
    tasks: list[FileTask] = []
    committer = _Committer(options.lake, run_id)
    base_notes = (("tz", f"{options.tz} ({'from --tz' if options.tz_given else 'default'})"),)
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
                summary.already_ingested += 1
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

    try:
        if options.workers <= 1 or total <= 1:
            for task in tasks:
                done(parse_file(task))
                _drop_extracted(task, workdir)
        else:
            _run_parallel(tasks, options.workers, done, workdir)
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
    parse_options = ParseOptions(
        file_name=found.display,
        file_mtime=mtime,
        tz=options.tz,
        date_order=options.date_order,
        culture=options.culture,
        snapshot_time=options.snapshot_time,
        client_name=options.client_name,
        backend=options.backend,
        max_seconds=options.max_seconds_per_file,
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
    )


def _drop_extracted(task: FileTask, workdir: Path) -> None:
    # Zip members were extracted for this run only: free the disk as we go.
    if workdir in task.path.parents:
        task.path.unlink(missing_ok=True)


def _run_parallel(
    tasks: list[FileTask], workers: int, done: Callable[[FileResult], None], workdir: Path
) -> None:
    pending = list(reversed(tasks))
    context = get_context("spawn")  # fork + threads in native parsers is a known deadlock trap
    while pending:
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init) as pool:
            running: dict[Future[FileResult], FileTask] = {}
            broken = False
            while (pending or running) and not broken:
                while pending and len(running) < workers * 2:
                    task = pending.pop()
                    running[pool.submit(parse_file, task)] = task
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    task = running.pop(future)
                    try:
                        done(future.result())
                    except BrokenProcessPool:
                        broken = True
                        done(_crashed(task))
                    _drop_extracted(task, workdir)
            if broken:
                # The pool died (a worker crashed): what was in flight is retried alone.
                for future, task in running.items():
                    future.cancel()
                    pending.append(task)
                running.clear()


def _crashed(task: FileTask) -> FileResult:
    result = FileResult(task.display, task.sha256, task.size, task.mtime, "error")
    result.error = "the worker process parsing this file crashed (native parser failure)"
    result.started = result.finished = time.time()
    for path in task.stage.glob(f"*__{task.sha256[:16]}-{task.index:06d}-*.parquet"):
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
