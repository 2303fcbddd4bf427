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
import shutil
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import pyarrow as pa

try:  # orjson writes a row several times faster; the standard library is the fallback
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    orjson = None  # type: ignore[assignment]

FORMATS: tuple[str, ...] = ("table", "csv", "json")
DEFAULT_MAX_ROWS = 40
TABLE_BLOCK = 1000
MAX_CELL = 80
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


def safe_csv_cell(value: Any) -> Any:
    """Neutralise spreadsheet formulas: a text cell starting with = + - @ gets a leading '."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _columns(batch: pa.RecordBatch, converters: list[Convert | None]) -> list[list[Any]]:
    """The batch's columns as Python lists, each value converted."""
    out = []
    for column, convert in zip(batch.columns, converters, strict=True):
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


def _cell_text(value: Any, max_cell: int | None) -> str:
    """A value as one table cell: line breaks shown as ⏎ (a row stays a row), cut at
    `max_cell` characters (None: never)."""
    text = "" if value is None else str(value)
    if "\n" in text or "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", " ⏎ ")
    if max_cell is not None and len(text) > max_cell:
        text = text[: max_cell - 1] + "…"
    return text


def _min_width(name: str, cells: list[str]) -> int:
    """The width under which a column is not squeezed: its longest word, up to 40
    characters in a column of single words (a HWID, an FQDN, a time stay whole) and 24 in
    prose, and at least the header's first 12 characters."""
    words = [w for c in cells for w in c.split()]
    cap = 40 if all(" " not in c.strip() for c in cells) else 24
    longest = max((len(w) for w in words), default=0)
    natural = max([len(name), *(len(c) for c in cells)])
    return min(natural, max(min(longest, cap), min(len(name), 12), 1))


def table_width() -> int:
    """The width a table is laid out in: the terminal's, or 160 characters in a file."""
    if sys.stdout.isatty():
        return max(60, shutil.get_terminal_size((160, 24)).columns)
    return 160


def table_text(
    names: list[str],
    rows: list[list[Any]],
    skipped_after: int | None = None,
    width: int | None = None,
    right: list[bool] | None = None,
    max_cell: int | None = MAX_CELL,
) -> str:
    """Rows as a plain text table with box-drawing borders (no colour; safe to paste into a
    case note). A cell wraps at blanks within its column, a word longer than the column is
    cut across lines; `right`: the columns aligned right (numbers).

    `skipped_after`: the row index after which a line of dots stands for rows not shown.
    Every column gets at least its shortest readable width (`_min_width`); when not all fit
    in `width`, the first ones are shown and a `…` column, and a last line says how many
    there are."""
    width = width or table_width()
    cells = [[_cell_text(v, max_cell) for v in row] for row in rows]
    minimum = [_min_width(n, [r[i] for r in cells]) for i, n in enumerate(names)]
    natural = [max([len(n), *(len(r[i]) for r in cells)]) for i, n in enumerate(names)]
    shown = _columns_that_fit(minimum, width)
    widths = _widths(
        [minimum[i] for i in shown if i is not None],
        [natural[i] for i in shown if i is not None],
        width - 3 * len(shown) - 1,
    )
    it = iter(widths)
    column_widths = [1 if i is None else next(it) for i in shown]
    aligned = [False if i is None or right is None else right[i] for i in shown]

    def line(left: str, middle: str, end: str) -> str:
        return left + middle.join("─" * (w + 2) for w in column_widths) + end

    def row_lines(values: list[str]) -> list[str]:
        wrapped = [_wrap(v, w) for v, w in zip(values, column_widths, strict=True)]
        height = max((len(w) for w in wrapped), default=1)
        out = []
        for k in range(height):
            parts = []
            for lines, w, r in zip(wrapped, column_widths, aligned, strict=True):
                text = lines[k] if k < len(lines) else ""
                parts.append(text.rjust(w) if r else text.ljust(w))
            out.append("│ " + " │ ".join(parts) + " │")
        return out

    text = [line("┌", "┬", "┐")]
    text += row_lines(["…" if i is None else names[i] for i in shown])
    text.append(line("├", "┼", "┤"))
    for k, row in enumerate(cells):
        text += row_lines(["…" if i is None else row[i] for i in shown])
        if skipped_after is not None and k == skipped_after:
            text += row_lines(["·" for _ in shown])
    text.append(line("└", "┴", "┘"))
    if None in shown:
        count = len(shown) - 1
        text.append(f"{len(names)} columns ({count} shown; --format csv or json has them all)")
    return "\n".join(text) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    if len(text) <= width:
        return [text]
    return textwrap.wrap(text, width, break_on_hyphens=False) or [""]


def _widths(minimum: list[int], natural: list[int], room: int) -> list[int]:
    """Column widths: each its minimum, the room left shared among the columns that want
    more, in proportion to what they want, none past its natural width."""
    widths = list(minimum)
    spare = room - sum(widths)
    while spare > 0:
        wanting = [i for i, w in enumerate(widths) if w < natural[i]]
        if not wanting:
            break
        want = sum(natural[i] - widths[i] for i in wanting)
        given = 0
        for i in wanting:
            extra = max(1, (natural[i] - widths[i]) * spare // want)
            extra = min(extra, natural[i] - widths[i], spare - given)
            widths[i] += extra
            given += extra
            if given >= spare:
                break
        spare -= given
        if given == 0:
            break
    return widths


def _columns_that_fit(minimum: list[int], width: int) -> list[int | None]:
    """The columns shown, in order, with None where the hidden ones are: the first ones,
    while their minimum widths and borders fit (a query names its important columns first)."""
    if sum(m + 3 for m in minimum) + 1 <= width:
        return list(range(len(minimum)))
    shown: list[int] = []
    used = 1 + 4  # the table's left border and the `…` column
    for index, least in enumerate(minimum):
        if used + least + 3 > width and shown:
            break
        used += least + 3
        shown.append(index)
    return [*shown, None]


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
    "table_text",
    "text_converter",
    "unique_names",
    "write",
    "write_csv",
    "write_json",
    "write_table",
]
