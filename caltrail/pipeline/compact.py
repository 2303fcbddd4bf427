"""Compaction: many small Parquet files of a table merged into a few larger ones.

Every ingested input file adds at least one file to each table it has rows for, and a
registry or WMI export of one client adds a file of one row. At 50,000 devices a lake holds
thousands of such files (7,300 in `client_hwids` alone), and a DuckDB session reads the footer
of every one each time a view over the table is bound: opening the lake took 9 s, 1.4 s once
the files were merged. So an ingest ends by merging the small files of each table that has
many (`caltrail ingest --no-compact` skips it; `caltrail compact` runs it on its own).

Rows are copied unchanged, lineage columns included, so which rows the views show (those
with a manifest row, pipeline/lake.py) is the same before and after. Compaction holds the
writer lock, so no ingest adds or removes files meanwhile.

Crash safety. The merged file is written under LAKE/.compact, then a journal naming the
output and its inputs is written there (atomically), then the output is renamed into the
table, then the inputs are deleted, then the journal. Whoever takes the writer lock next
finishes an interrupted compaction (`pipeline.lake.finish_compactions`): with the output in
the table, the inputs still there are deleted; without it, the unpublished output is deleted
and the inputs stay. Between the rename and the deletions (milliseconds, or until that
recovery after a crash), a reader would see the merged rows twice; a session
(`pipeline.session.connect`) runs the recovery first when no one holds the lock.

A query running while files are merged can fail with "file not found" for an input it had
listed just before it was deleted; running it again works.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from caltrail.pipeline import lake as L
from caltrail.pipeline.schemas import ALL_SCHEMAS

# A file is small below SMALL_FILE_BYTES; a table is compacted once it has MIN_SMALL_FILES
# of them (a few dozen footers cost a session little). Inputs are grouped into outputs of
# about OUTPUT_BYTES (compressed input size), written in row groups of ROW_GROUP_ROWS.
# A session pays per file, not per byte, so only small files are worth rewriting: under
# SMALL_FILE_BYTES on disk and of fewer than SMALL_FILE_ROWS rows. The full batches of a
# large input (pipeline/lake.py BATCH_ROWS) are left alone however well they compress (20,000
# generated trace events make 70 KB: merging a 1 GB input's 73 batches took the ingest
# process from 135 to 370 MB), and merging costs about 10 us a row (the corpus EVTX: 150
# files, 0.9 s on top of a 4.5 s ingest). The files worth merging are one-row client exports
# of a few KB and the events of small logs.
SMALL_FILE_BYTES = 1024 * 1024
SMALL_FILE_ROWS = 10_000
MIN_SMALL_FILES = 32
OUTPUT_BYTES = 64 * 1024 * 1024
ROW_GROUP_ROWS = 128 * 1024
# ... or of fewer rows once the rows read and not yet written hold this much: 128 K trace
# events (a message and its fields each) took the ingest process past 350 MB.
PENDING_BYTES = 32 * 1024 * 1024
# Small files read ahead of the merge, each by a thread of its own.
READ_AHEAD = 2


@dataclass
class TableCompaction:
    """What compaction did to one table."""

    table: str
    files_before: int
    files_after: int
    rows: int
    skipped: list[str] = field(default_factory=list)  # files left as they are, with why

    def to_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "files_before": self.files_before,
            "files_after": self.files_after,
            "rows": self.rows,
            "skipped": self.skipped,
        }


def table_files(lake: Path, table: str) -> list[Path]:
    """The data files of a table (not the typed `_empty.parquet` every table has)."""
    directory = L.table_dir(lake, table)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.parquet") if p.name != "_empty.parquet")


def small_files(lake: Path, table: str) -> list[Path]:
    return [
        p
        for p in table_files(lake, table)
        if p.stat().st_size < SMALL_FILE_BYTES and _rows(p) < SMALL_FILE_ROWS
    ]


def _rows(path: Path) -> int:
    """A file's row count from its footer (read for small files only); 0 when the footer
    cannot be read: such a file is offered to the merge, which reports it and leaves it."""
    try:
        return int(pq.read_metadata(path).num_rows)
    except (OSError, pa.ArrowException):
        return 0


def needs_compaction(lake: Path, min_files: int | None = None) -> list[str]:
    """The tables with at least `min_files` (default MIN_SMALL_FILES) small files."""
    return [t for t in ALL_SCHEMAS if len(small_files(lake, t)) >= (min_files or MIN_SMALL_FILES)]


def _groups(files: list[Path], output_bytes: int) -> list[list[Path]]:
    """Consecutive runs of files of about `output_bytes` each; a last group of one file is
    left alone (merging one file gains nothing)."""
    groups: list[list[Path]] = [[]]
    size = 0
    for path in files:
        if groups[-1] and size + path.stat().st_size > output_bytes:
            groups.append([])
            size = 0
        groups[-1].append(path)
        size += path.stat().st_size
    return [g for g in groups if len(g) > 1]


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table | str:
    """`table` with the columns of `schema` (absent ones null), or why it cannot be: a file
    of an older caltrail with a column that is no longer in the schema, or of another type,
    is left as it is (the views read it with union_by_name) rather than lose anything."""
    for name in table.schema.names:
        if schema.get_field_index(name) < 0:
            return f"column {name} is not in the current schema"
    columns = []
    for schema_field in schema:
        if schema_field.name in table.schema.names:
            column = table.column(schema_field.name)
            if column.type != schema_field.type:
                return f"column {schema_field.name} is {column.type}, not {schema_field.type}"
            columns.append(column)
        else:
            columns.append(pa.nulls(table.num_rows, schema_field.type))
    return pa.Table.from_arrays(columns, schema=schema)


def _read(path: Path) -> pa.Table | str:
    """A small file's rows, or why they cannot be read. (`ParquetFile.read`, not
    `pq.read_table`: the dataset the latter builds for each file cost a third of reading a
    small one.)"""
    try:
        return pq.ParquetFile(path).read(use_threads=False)
    except (OSError, pa.ArrowException) as exc:
        return f"unreadable: {exc}"


def _read_ahead(paths: list[Path]) -> Iterator[tuple[Path, pa.Table | str]]:
    """Each of `paths` with its rows (`_read`), in order, the next READ_AHEAD files read
    meanwhile by threads. A small file's read is mostly fixed costs (its footer, a reader
    per column) during which pyarrow releases the GIL: the events of 150 small EVTX files
    were read in 140 ms so, against 300 ms one after the other with `pq.read_table`, and
    compacting the corpus's 153 files took 0.45 s against 0.65 s (docs/SPEED.md §1). At
    most READ_AHEAD files wait in memory beside the rows pending a write."""
    with ThreadPoolExecutor(max_workers=READ_AHEAD) as pool:
        pending: deque[tuple[Path, Future[pa.Table | str]]] = deque()
        for path in paths:
            pending.append((path, pool.submit(_read, path)))
            if len(pending) > READ_AHEAD:
                done, future = pending.popleft()
                yield done, future.result()
        while pending:
            done, future = pending.popleft()
            yield done, future.result()


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _write_journal(path: Path, entry: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(entry), encoding="utf-8")
    _fsync(tmp)
    os.replace(tmp, path)


def _merge(lake: Path, table: str, inputs: list[Path], result: TableCompaction) -> None:
    """Merge `inputs` into one new file of `table`, following the journal protocol."""
    schema = ALL_SCHEMAS[table]
    work = lake / L.COMPACT_DIR
    work.mkdir(exist_ok=True)
    ident = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    output_name = f"compact-{ident}.parquet"
    tmp = work / f"{ident}.parquet.tmp"
    merged: list[Path] = []
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression=L.COMPRESSION) as writer:
            pending: list[pa.Table] = []
            pending_rows = pending_bytes = 0
            for path, read in _read_ahead(inputs):
                conformed = read if isinstance(read, str) else _conform(read, schema)
                if isinstance(conformed, str):
                    result.skipped.append(f"{path.name}: {conformed}")
                    continue
                pending.append(conformed)
                pending_rows += conformed.num_rows
                pending_bytes += conformed.nbytes
                merged.append(path)
                if pending_rows >= ROW_GROUP_ROWS or pending_bytes >= PENDING_BYTES:
                    writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                    rows += pending_rows
                    pending, pending_rows, pending_bytes = [], 0, 0
            if pending:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                rows += pending_rows
        if len(merged) < 2:
            tmp.unlink()
            return
        _fsync(tmp)
        journal = work / f"{ident}.json"
        _write_journal(
            journal,
            {"table": table, "output": output_name, "inputs": [p.name for p in merged]},
        )
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # published: from here on, recovery completes the compaction instead of undoing it
    os.replace(tmp, L.table_dir(lake, table) / output_name)
    for path in merged:
        path.unlink(missing_ok=True)
    journal.unlink()
    result.rows += rows


def compact_table(
    lake: Path,
    table: str,
    min_files: int | None = None,
    output_bytes: int | None = None,
) -> TableCompaction:
    """Merge the small files of one table, when it has at least `min_files` (default
    MIN_SMALL_FILES) of them. The caller holds the writer lock."""
    before = len(table_files(lake, table))
    result = TableCompaction(table, before, before, 0)
    small = small_files(lake, table)
    if len(small) >= (min_files or MIN_SMALL_FILES):
        for group in _groups(small, output_bytes or OUTPUT_BYTES):
            _merge(lake, table, group, result)
    result.files_after = len(table_files(lake, table))
    return result


def compact(
    lake: Path,
    tables: list[str] | None = None,
    min_files: int | None = None,
    output_bytes: int | None = None,
) -> list[TableCompaction]:
    """Compact the tables of `lake` (all by default) that have at least `min_files` small
    files. The caller holds the writer lock. Returns one entry per table that changed or
    has files left as they were."""
    results = []
    for table in tables or list(ALL_SCHEMAS):
        result = compact_table(lake, table, min_files, output_bytes)
        if result.files_after != result.files_before or result.skipped:
            results.append(result)
    return results


__all__ = [
    "MIN_SMALL_FILES",
    "TableCompaction",
    "compact",
    "compact_table",
    "needs_compaction",
    "small_files",
    "table_files",
]
