"""Query results written a batch at a time: an aligned text table of at most N rows, CSV, or
JSON lines.

Every writer reads Arrow record batches (DuckDB streams a query into them) and keeps no more
than one batch in memory, so a query of millions of rows costs what one batch costs:

- **table**: what a person reads. At most `max_rows` rows are shown (the first half and the
  last half, as the DuckDB shell does) under a line "X rows (N shown)"; every row is still
  counted. `max_rows=0` shows them all, in blocks of `TABLE_BLOCK` rows (each block a table
  of its own, so no more than a block is held). Long cells are cut at `MAX_CELL` characters.
- **csv**: what a spreadsheet reads. Booleans `true`/`false`, times ISO 8601, intervals ISO
  8601 durations, blobs hex, lists/structs/maps as JSON text, and a text cell that would be
  read as a formula (starting with = + - @, tab or CR) gets a leading `'`.
- **json**: one object per line (JSON Lines), valid JSON: NaN and infinities are `null`,
  times and intervals ISO 8601, blobs hex, decimals numbers, nested values nested.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa

from caltrail.pipeline.text_table import MAX_CELL, table_text

try:  # orjson writes a row several times faster; the standard library is the fallback
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    orjson = None  # type: ignore[assignment]

FORMATS: tuple[str, ...] = ("table", "csv", "json")
DEFAULT_MAX_ROWS = 40
TABLE_BLOCK = 1000
BATCH_ROWS = 2048

Convert = Callable[[Any], Any]


# ---------------------------------------------------------------------------
# Values: one converter per column, chosen once from its Arrow type
# ---------------------------------------------------------------------------


def iso_duration(months: int = 0, days: int = 0, nanoseconds: int = 0) -> str:
    """An interval as an ISO 8601 duration: `P1Y2M3DT4H5M6.5S`, `PT0S` when empty. A
    negative part keeps its sign (`P-1DT2H`): DuckDB intervals may mix signs."""
    years, months = int(months / 12), months - 12 * int(months / 12)
    date = "".join(f"{v}{u}" for v, u in ((years, "Y"), (months, "M"), (days, "D")) if v)
    sign = "-" if nanoseconds < 0 else ""
    rest = abs(nanoseconds)
    hours, rest = divmod(rest, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds, nanos = divmod(rest, 1_000_000_000)
    time = ""
    if hours:
        time += f"{sign}{hours}H"
    if minutes:
        time += f"{sign}{minutes}M"
    if seconds or nanos:
        fraction = f".{nanos:09d}".rstrip("0") if nanos else ""
        time += f"{sign}{seconds}{fraction}S"
    if not date and not time:
        return "PT0S"
    return "P" + date + ("T" + time if time else "")


def _interval(value: Any) -> str:
    return iso_duration(value.months, value.days, value.nanoseconds)


def _duration(value: dt.timedelta) -> str:
    micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
    days, rest = divmod(abs(micros), 86_400_000_000)
    sign = -1 if micros < 0 else 1
    return iso_duration(0, sign * days, sign * rest * 1000)


def _iso(value: Any) -> str:
    return str(value.isoformat())


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _float_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def json_converter(kind: pa.DataType) -> Convert | None:
    """How a non-null value of this Arrow type becomes a JSON value (None: as it is)."""
    if pa.types.is_floating(kind):
        return _finite
    if pa.types.is_decimal(kind):
        if kind.scale <= 0:
            return int
        return lambda v: _finite(float(v))
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return lambda v: bytes(v).hex()
    if pa.types.is_fixed_size_binary(kind):
        return lambda v: bytes(v).hex()
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_time(kind):
        return _iso
    if pa.types.is_duration(kind):
        return _duration
    if pa.types.is_interval(kind):
        return _interval
    if pa.types.is_dictionary(kind):
        return json_converter(kind.value_type)
    if pa.types.is_map(kind):
        key, item = json_converter(kind.key_type), json_converter(kind.item_type)
        return lambda v: {
            str(k if key is None or k is None else key(k)): _apply(item, x) for k, x in v
        }
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        inner = json_converter(kind.value_type)
        if inner is None:
            return None
        return lambda v: [_apply(inner, x) for x in v]
    if pa.types.is_struct(kind):
        fields = [
            (kind.field(i).name, json_converter(kind.field(i).type)) for i in range(kind.num_fields)
        ]
        if all(c is None for _, c in fields):
            return None
        return lambda v: {name: _apply(c, v.get(name)) for name, c in fields}
    if isinstance(kind, pa.ExtensionType):
        return json_converter(kind.storage_type)
    return None


def _apply(convert: Convert | None, value: Any) -> Any:
    return value if value is None or convert is None else convert(value)


def _nested(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_map(kind)
        or pa.types.is_list(kind)
        or pa.types.is_large_list(kind)
        or pa.types.is_fixed_size_list(kind)
        or pa.types.is_struct(kind)
    )


def _json_text(value: Any) -> str:
    if orjson is not None:
        return orjson.dumps(value).decode()
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def text_converter(kind: pa.DataType) -> Convert | None:
    """How a non-null value of this Arrow type is written as text (a CSV or table cell)."""
    if pa.types.is_boolean(kind):
        return lambda v: "true" if v else "false"
    if pa.types.is_floating(kind):
        return _float_text
    if pa.types.is_dictionary(kind):
        return text_converter(kind.value_type)
    if _nested(kind):
        as_json = json_converter(kind)
        return lambda v: _json_text(_apply(as_json, v))
    if isinstance(kind, pa.ExtensionType):
        return text_converter(kind.storage_type)
    return json_converter(kind)


# A terminal's escape sequences (ESC [ ... final byte, or ESC and one byte): a log value
# holding them would recolour or move the cursor of whoever prints the CSV on a terminal.
TERMINAL_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_]?)")


def safe_csv_cell(value: Any) -> Any:
    """A text cell made inert: terminal escape sequences removed (JSON keeps them, escaped),
    then a spreadsheet formula neutralised (a cell starting with = + - @ gets a leading ')."""
    if not isinstance(value, str):
        return value
    if "\x1b" in value:
        value = TERMINAL_ESCAPE.sub("", value)
    if value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


UTC_NAMES = frozenset({"UTC", "Etc/UTC", "+00:00", "Z", "GMT", "Etc/GMT"})


def _utc_timestamps(kind: pa.DataType) -> bool:
    return pa.types.is_timestamp(kind) and kind.tz in UTC_NAMES


def _columns(batch: pa.RecordBatch, converters: list[Convert | None]) -> list[list[Any]]:
    """The batch's columns as Python lists, each value converted."""
    out = []
    for column, convert in zip(batch.columns, converters, strict=True):
        if convert is _iso and _utc_timestamps(column.type):
            # the lake's times are UTC: read without the zone (pyarrow looks the zone up for
            # every value, about 30 µs each) and written with it, the same text as _iso
            naive = column.cast(pa.timestamp(column.type.unit))
            out.append([None if v is None else v.isoformat() + "+00:00" for v in naive.to_pylist()])
            continue
        values = column.to_pylist()
        if convert is not None:
            values = [None if v is None else convert(v) for v in values]
        out.append(values)
    return out


def unique_names(names: Iterable[str]) -> list[str]:
    """Column names made unique for JSON keys (`a`, `a_2`, ...): a query may repeat one."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        count = seen.get(name, 0) + 1
        seen[name] = count
        out.append(name if count == 1 else f"{name}_{count}")
    return out


# ---------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------


def write_json(schema: pa.Schema, batches: Iterable[pa.RecordBatch], out: TextIO) -> int:
    """JSON Lines, one object per row; returns the number of rows."""
    names = unique_names(schema.names)
    converters = [json_converter(f.type) for f in schema]
    count = 0
    for batch in batches:
        columns = _columns(batch, converters)
        lines = [
            _json_text(dict(zip(names, row, strict=True))) for row in zip(*columns, strict=True)
        ]
        if lines:
            out.write("\n".join(lines) + "\n")
        count += batch.num_rows
    return count


def _text_column(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _text_column(kind.value_type)
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def write_csv(
    schema: pa.Schema, batches: Iterable[pa.RecordBatch], out: TextIO, header: bool = True
) -> int:
    """CSV with a header row, formula-safe; returns the number of rows. Only text columns
    are neutralised: a number such as -1.5 is written as it is."""
    writer = csv.writer(out, lineterminator="\n")
    if header:
        writer.writerow([safe_csv_cell(n) for n in schema.names])
    converters = [text_converter(f.type) for f in schema]
    texts = [i for i, f in enumerate(schema) if _text_column(f.type)]
    count = 0
    for batch in batches:
        columns = _columns(batch, converters)
        for i in texts:
            columns[i] = [safe_csv_cell(v) for v in columns[i]]
        writer.writerows(zip(*columns, strict=True))
        count += batch.num_rows
    return count


def plural(n: int, word: str, words: str | None = None) -> str:
    """`1 row`, `2,000 rows` (`words`: an irregular plural)."""
    return f"{n:,} " + (word if n == 1 else (words or word + "s"))


def _numeric(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    )


def write_table(
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    out: TextIO,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_cell: int | None = MAX_CELL,
) -> int:
    """A text table of at most `max_rows` rows (0: all, in blocks) and the line "X rows
    (N shown)"; cells cut at `max_cell` characters (None: whole, wrapped). Returns the
    number of rows."""
    names = list(schema.names)
    converters = [text_converter(f.type) for f in schema]
    right = [_numeric(f.type) for f in schema]

    def table(rows: list[list[Any]], skipped_after: int | None = None) -> str:
        if not names:
            return ""
        return table_text(names, rows, skipped_after, right=right, max_cell=max_cell)

    if max_rows <= 0:
        total = 0
        block: list[list[Any]] = []
        for batch in batches:
            total += batch.num_rows
            block.extend(_rows([batch], converters))
            while len(block) >= TABLE_BLOCK:
                out.write(table(block[:TABLE_BLOCK]))
                block = block[TABLE_BLOCK:]
        if block or total == 0:
            out.write(table(block))
        out.write(f"{plural(total, 'row')}\n")
        return total
    head_size, tail_size = -(-max_rows // 2), max_rows // 2
    head: list[pa.RecordBatch] = []  # the first max_rows rows
    head_rows = 0
    tail: list[pa.RecordBatch] = []  # at least the last tail_size rows
    tail_rows = 0
    total = 0
    for batch in batches:
        total += batch.num_rows
        if head_rows < max_rows:
            take = batch.slice(0, max_rows - head_rows)
            head.append(take)
            head_rows += take.num_rows
        tail.append(batch.slice(max(0, batch.num_rows - tail_size)))
        tail_rows += tail[-1].num_rows
        while tail and tail_rows - tail[0].num_rows >= tail_size:
            tail_rows -= tail.pop(0).num_rows
    if total <= max_rows:
        out.write(table(_rows(head, converters)))
        out.write(f"{plural(total, 'row')}\n")
        return total
    first = _rows(head, converters)[:head_size]
    last = _rows(tail, converters)[-tail_size:] if tail_size else []
    out.write(table(first + last, skipped_after=len(first) - 1))
    out.write(
        f"{plural(total, 'row')} ({len(first) + len(last):,} shown; --max-rows 0 shows all)\n"
    )
    return total


def _rows(batches: list[pa.RecordBatch], converters: list[Convert | None]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for batch in batches:
        rows.extend(list(r) for r in zip(*_columns(batch, converters), strict=True))
    return rows


def write(
    fmt: str,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    out: TextIO,
    max_rows: int = DEFAULT_MAX_ROWS,
    header: bool = True,
    max_cell: int | None = MAX_CELL,
) -> int:
    """Write a result in `fmt` (table, csv or json); returns the number of rows."""
    if fmt == "json":
        return write_json(schema, batches, out)
    if fmt == "csv":
        return write_csv(schema, batches, out, header=header)
    return write_table(schema, batches, out, max_rows, max_cell)


@contextmanager
def output_stream(path: Path | None, stdout: TextIO) -> Iterator[TextIO]:
    """Where a result goes: `stdout`, or `path` written atomically (a temporary file beside
    it, renamed into place when the writing ends without an error; removed otherwise)."""
    if path is None:
        yield stdout
        return
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


__all__ = [
    "BATCH_ROWS",
    "DEFAULT_MAX_ROWS",
    "FORMATS",
    "MAX_CELL",
    "TABLE_BLOCK",
    "iso_duration",
    "json_converter",
    "output_stream",
    "plural",
    "safe_csv_cell",
    "text_converter",
    "unique_names",
    "write",
    "write_csv",
    "write_json",
    "write_table",
]
