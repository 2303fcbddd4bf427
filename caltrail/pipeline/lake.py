"""The lake: a directory of Parquet files, one sub-directory per table.

Layout::

    LAKE/
      events/<file-sha16>-<run>-<n>.parquet      data rows (zstd), any number per input file
      trace_events/ issued_licenses/ keypacks/ client_hwids/ parse_errors/
      ingest_files/<run>-<n>.parquet             the manifest: one row per input file
      runs/<run>.parquet                         one row per ingest run
      .staging/<run>/                            files being written (never read by views)
      .compact/                                  merges in progress (pipeline/compact.py)
      .lock                                      held by the one writer (flock; on shared
                                                 storage, docs/AT_SCALE.md)
      caltrail.sql                               init script for the DuckDB shell

Atomicity, the rule that makes a crash harmless: a data file is written under .staging
and renamed into its table directory when complete; the manifest rows for a group of input
files are written (again by rename) only after all their data files are in place; and the
views only show data rows whose (file_sha256, run_id) has a manifest row. A crash at any
moment leaves rows that no view shows, and the input files without a manifest row are read
again by the next run. `sweep_orphans` deletes such leftovers. Small files are merged
later by pipeline/compact.py, which keeps every row as it is.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from caltrail.parsers.base import ParseIssue
from caltrail.pipeline.schemas import ALL_SCHEMAS, LINEAGE_NAMES, PARSE_ERRORS, RECORD_SCHEMAS

# Rows buffered per table before a Parquet file is written. The buffer is most of what the
# parsing process holds: with 50,000 trace events (message and fields) a batch it peaked at
# about 260 MB on a 130 MB tracerpt XML, with 20,000 at 170 MB, in the same time (EVTX
# ingest too); compaction merges the smaller files afterwards.
BATCH_ROWS = 20_000
COMPRESSION = "zstd"
COMPACT_DIR = ".compact"
DATA_TABLES = (*RECORD_SCHEMAS, "parse_errors")


class LakeError(Exception):
    """A lake that cannot be opened or written (message says why and what to do)."""


class LakeBusyError(LakeError):
    """Another process is writing to the lake."""


def new_run_id() -> str:
    """A run id: UTC time to the second plus a random suffix (two runs within one second
    do not sort: the manifest's `finished` orders runs)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{now}-{uuid.uuid4().hex[:8]}"


def table_dir(lake: Path, table: str) -> Path:
    return lake / table


def staging_dir(lake: Path, run_id: str) -> Path:
    return lake / ".staging" / run_id


def ensure_lake(lake: Path) -> None:
    """Create the lake directories (idempotent); a clear error when that is impossible."""
    try:
        for table in ALL_SCHEMAS:
            table_dir(lake, table).mkdir(parents=True, exist_ok=True)
        (lake / ".staging").mkdir(exist_ok=True)
    except OSError as exc:
        raise LakeError(f"cannot create the lake at {lake}: {exc.strerror or exc}") from exc


@contextmanager
def writer_lock(lake: Path, wait: bool = False) -> Iterator[None]:
    """Hold the lake's writer lock; LakeBusyError at once if another writer holds it."""
    ensure_lake(lake)
    path = lake / ".lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LakeBusyError(
                f"the lake {lake} is being written by {holder}; wait for it to finish, "
                "or pass --wait to queue behind it"
            ) from exc
        handle.seek(0)
        handle.truncate()
        # the host too: on shared storage the writer may be another machine's process
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        try:
            finish_compactions(lake)
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)


def lock_holder(lake: Path) -> str | None:
    """Who holds the lake's writer lock now ("pid N"), or None when nobody does (a look
    only: the lock is released at once; for a message, not for deciding)."""
    path = lake / ".lock"
    try:
        with open(path, "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                return handle.read().strip() or "another process"
            fcntl.flock(handle, fcntl.LOCK_UN)
    except OSError:
        return None
    return None


def pending_compactions(lake: Path) -> list[Path]:
    """Journals of compactions a crash interrupted (pipeline/compact.py)."""
    directory = lake / COMPACT_DIR
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def finish_compactions(lake: Path) -> int:
    """Complete or undo the compactions a crash interrupted (the caller holds the writer
    lock). A journal whose output is in its table was published: the inputs still there
    are deleted. Otherwise the unpublished output is, and the inputs stay. Returns the
    number of journals handled."""
    directory = lake / COMPACT_DIR
    if not directory.is_dir():
        return 0
    handled = 0
    for journal in pending_compactions(lake):
        try:
            entry = json.loads(journal.read_text(encoding="utf-8"))
            table_path = table_dir(lake, str(entry["table"]))
            if (table_path / str(entry["output"])).exists():
                for name in entry["inputs"]:
                    (table_path / str(name)).unlink(missing_ok=True)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # unreadable journal: its output is left unpublished, inputs untouched
        (directory / journal.name.replace(".json", ".parquet.tmp")).unlink(missing_ok=True)
        journal.unlink()
        handled += 1
    for leftover in directory.glob("*.tmp"):
        # an output written before its journal was, or a journal being written: never
        # published (an output whose journal could not be read above stays with it)
        journal = leftover.with_name(leftover.name.replace(".parquet.tmp", ".json"))
        if leftover.name.endswith(".json.tmp") or not journal.exists():
            leftover.unlink(missing_ok=True)
    return handled


def write_parquet_atomic(table: pa.Table, final: Path, staging: Path) -> None:
    """Write `table` under `staging`, fsync, then rename it to `final` (same filesystem)."""
    staging.mkdir(parents=True, exist_ok=True)
    tmp = staging / f".{final.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pq.write_table(table, tmp, compression=COMPRESSION)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class StagedFile:
    """A complete data file waiting in .staging for its commit."""

    table: str
    path: Path
    rows: int


class TableBuffer:
    """Rows of one table for one input file, flushed to staged Parquet in batches."""

    def __init__(self, table: str, lineage: dict[str, str], stage: Path, prefix: str) -> None:
        self.table = table
        self.schema: pa.Schema = ALL_SCHEMAS[table]
        self._names = [n for n in self.schema.names if n not in LINEAGE_NAMES]
        self._get = attrgetter(*self._names)
        self._lineage = lineage
        self._stage = stage
        self._prefix = prefix
        self._rows: list[tuple[Any, ...]] = []
        # rows already in Arrow (row_blocks), in order with `_rows` (converted first)
        self._tables: list[pa.Table] = []
        self.staged: list[StagedFile] = []
        self.count = 0
        # Records whose values do not fit this table's columns (an EventID of 64 bits, a
        # count beyond int64): the driver moves them to parse_errors as quarantined.
        self.rejected: list[ParseIssue] = []

    def add(self, record: object) -> None:
        self._rows.append(self._get(record))
        self.count += 1
        if len(self._rows) >= BATCH_ROWS:
            self.flush()

    def add_table(self, table: pa.Table) -> None:
        """Rows already read into Arrow (every column of the table but the lineage, in
        the schema's order), after the records added before them."""
        self._rows_to_table()
        for name, array in self._lineage_arrays(len(table)).items():
            table = table.append_column(self.schema.field(name), array)
        self._tables.append(table.select(self.schema.names).cast(self.schema))
        self.count += len(table)
        if sum(map(len, self._tables)) >= BATCH_ROWS:
            self.flush()

    def _rows_to_table(self) -> None:
        """The records added so far as one more Arrow table of `_tables`."""
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        try:
            table = self._arrow(rows)
        except ROW_VALUE_ERRORS:
            rows = self._reject_misfits(rows)
            if not rows:
                return
            table = self._arrow(rows)
        self._tables.append(table)

    def flush(self) -> None:
        self._rows_to_table()
        if not self._tables:
            return
        tables, self._tables = self._tables, []
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        final = self._stage / f"{self.table}__{self._prefix}-{len(self.staged):04d}.parquet"
        write_parquet_atomic(table, final, self._stage / "tmp")
        self.staged.append(StagedFile(self.table, final, len(table)))

    def _arrow(self, rows: list[tuple[Any, ...]]) -> pa.Table:
        columns: dict[str, Any] = dict(zip(self._names, zip(*rows, strict=True), strict=True))
        columns.update(self._lineage_arrays(len(rows)))
        arrays = [column_array(columns[f.name], f.type) for f in self.schema]
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def _lineage_arrays(self, n: int) -> dict[str, pa.Array]:
        """The lineage columns this table has, each its one value `n` times."""
        return {
            name: pa.repeat(pa.scalar(value, pa.string()), n)
            for name, value in self._lineage.items()
            if name in self.schema.names
        }

    def _reject_misfits(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The rows that convert, each tried alone; the others become quarantine issues.
        Only reached when a batch fails, so the row-by-row cost is paid for bad input only:
        one bad value must cost its record, never the file's other rows."""
        kept: list[tuple[Any, ...]] = []
        where = {
            name: self._names.index(name)
            for name in ("chunk", "offset", "line")
            if name in self._names
        }
        for row in rows:
            try:
                self._arrow([row])
            except ROW_VALUE_ERRORS as exc:
                located = {name: row[i] for name, i in where.items()}
                self.rejected.append(
                    ParseIssue(
                        VALUE_MISFIT,
                        f"a {self.table} record has a value its column cannot hold: {exc}",
                        chunk=located.get("chunk"),
                        offset=located.get("offset"),
                        line=located.get("line"),
                    )
                )
            else:
                kept.append(row)
        self.count -= len(rows) - len(kept)
        return kept


# What pyarrow raises when a Python value does not fit its column's type.
ROW_VALUE_ERRORS = (pa.ArrowException, OverflowError, TypeError, ValueError)
VALUE_MISFIT = "value_misfit"


def column_array(values: Any, kind: pa.DataType) -> pa.Array:
    """One column of Python values as an Arrow array of its declared type.

    A map column (EventData, notes) is built from flat key and value lists: pyarrow's
    conversion of a list of dicts costs about 5 us a row, the flat lists a quarter of that
    (a quarter of EVTX ingest's Arrow time, measured by `make bench`)."""
    if isinstance(values, pa.Array):
        return values
    if not pa.types.is_map(kind) or any(d is None for d in values):
        return pa.array(values, kind)
    offsets = [0]
    keys: list[str] = []
    items: list[Any] = []
    end = 0
    for mapping in values:
        keys.extend(mapping)
        items.extend(mapping.values())
        end += len(mapping)
        offsets.append(end)
    return pa.MapArray.from_arrays(
        pa.array(offsets, pa.int32()),
        pa.array(keys, kind.key_type),
        pa.array(items, kind.item_type),
        type=kind,
    )


class IssueAdapter:
    """Gives a ParseIssue the column names of `parse_errors`."""

    __slots__ = ("chunk", "excerpt", "kind", "line", "message", "offset", "quarantined")

    def __init__(self, issue: ParseIssue) -> None:
        self.kind = issue.kind
        self.message = issue.message
        self.quarantined = issue.quarantined
        self.chunk = issue.chunk
        self.offset = issue.offset
        self.line = issue.line
        self.excerpt = issue.excerpt[:512] if issue.excerpt else None


@dataclass
class FileRows:
    """Every row one input file produced, staged and waiting for commit."""

    buffers: dict[str, TableBuffer] = field(default_factory=dict)

    def staged(self) -> list[StagedFile]:
        return [s for b in self.buffers.values() for s in b.staged]


def open_buffers(stage: Path, lineage: dict[str, str], prefix: str) -> FileRows:
    rows = FileRows()
    for table in DATA_TABLES:
        rows.buffers[table] = TableBuffer(table, lineage, stage, prefix)
    return rows


def commit(
    lake: Path, run_id: str, staged: Iterable[StagedFile], manifest: list[dict[str, Any]], seq: int
) -> None:
    """Move staged data files into their tables, then write the manifest rows that show them."""
    for item in staged:
        final = table_dir(lake, item.table) / item.path.name.split("__", 1)[1]
        os.replace(item.path, final)
    if manifest:
        table = pa.Table.from_pylist(manifest, schema=ALL_SCHEMAS["ingest_files"])
        write_parquet_atomic(
            table,
            table_dir(lake, "ingest_files") / f"{run_id}-{seq:05d}.parquet",
            staging_dir(lake, run_id) / "tmp",
        )


def write_run(lake: Path, row: dict[str, Any]) -> None:
    table = pa.Table.from_pylist([row], schema=ALL_SCHEMAS["runs"])
    write_parquet_atomic(
        table,
        table_dir(lake, "runs") / f"{row['run_id']}.parquet",
        staging_dir(lake, row["run_id"]),
    )


# Manifest statuses that do not make a content "already ingested": a "duplicate" row is
# written when a run *discovers* a second copy, possibly before the first copy was read; if
# the run dies in between, only the duplicate row exists and the content was never read.
NOT_INGESTED = frozenset({"duplicate"})
# An "error" that says nothing about the file (its worker was killed, e.g. by the OOM killer,
# or a parser bug) is retried by the next run instead of being skipped forever.
RETRIED_ERRORS = ("the worker process", "internal error in")


def known_hashes(lake: Path) -> set[str]:
    """sha256 of every file already read into the manifest (pyarrow: no DuckDB needed)."""
    directory = table_dir(lake, "ingest_files")
    hashes: set[str] = set()
    if not directory.exists():
        return hashes
    for path in sorted(directory.glob("*.parquet")):
        try:
            table = pq.read_table(path, columns=["sha256", "status", "error"])
        except (OSError, pa.ArrowInvalid) as exc:
            raise LakeError(f"manifest file {path} is unreadable: {exc}") from exc
        for sha, status, error in zip(
            table.column("sha256").to_pylist(),
            table.column("status").to_pylist(),
            table.column("error").to_pylist(),
            strict=True,
        ):
            if status in NOT_INGESTED:
                continue
            if status == "error" and (error or "").startswith(RETRIED_ERRORS):
                continue
            hashes.add(sha)
    return hashes


def sweep_orphans(lake: Path) -> int:
    """Delete what crashed runs left in .staging. Returns the number of files removed.

    Data files renamed into a table without their manifest rows stay (views ignore them).
    """
    root = lake / ".staging"
    removed = 0
    if root.exists():
        for run in root.iterdir():
            if run.name == SHARED_TMP:
                removed += _sweep_shared_tmp(run)
                continue
            removed += sum(1 for p in run.rglob("*") if p.is_file())
            shutil.rmtree(run, ignore_errors=True)
    return removed


SHARED_TMP = "tmp"  # .staging/tmp: scratch of writers that do not hold the lock (see below)
STALE_TMP_SECONDS = 3600.0


def _sweep_shared_tmp(directory: Path) -> int:
    """`.staging/tmp` is also used without the writer lock: by readers preparing a lake
    (session.prepare_lake writes the typed `_empty.parquet` files) and by an ingest that has
    released the lock (write_init_script). Deleting the directory under them made their
    rename fail ("No such file or directory") when a second ingest started at that moment;
    so only files old enough to be a crash's leftovers are removed, never the directory."""
    removed = 0
    limit = time.time() - STALE_TMP_SECONDS
    for path in directory.iterdir():
        try:
            if path.is_file() and path.stat().st_mtime < limit:
                path.unlink()
                removed += 1
        except OSError:
            pass
    return removed


def empty_issue_table() -> pa.Table:
    return PARSE_ERRORS.empty_table()
