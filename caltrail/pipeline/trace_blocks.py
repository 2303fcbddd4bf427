"""The tracerpt CSV reader's usual rows read in bulk by Arrow's compute kernels
(parsers.base.RowBlock, rules "tracerpt_csv").

Reading a usual row one by one (caltrail/parsers/trace/tracerpt_csv.py, `_Parser.plain`)
costs about 8 µs of Python. Here the reader only joins each row's values with a separator
(splitting in Python only the rows with quotes), and these functions are `plain`'s rules
over a block's columns: the values split and stripped, the header and EventTrace rows
left to the reader, Event ID / PID / TID / Processor Number read as `parse_int` reads them (each
distinct text once: a trace repeats a few), the FILETIME clock, the message and the user
data's JSON list, and the `fields` map in `plain`'s order (the kept columns that are not
empty, "UserData", then "UserData.0", "UserData.1", ...). A block with a row these rules do
not read (a clock that is not a FILETIME, a number column holding text, too few or too many
values, ...) gives None, and the caller reads the block's `records()` one by one instead,
the reference. tests/pipeline/test_trace_blocks.py holds the two ways equal.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from caltrail.parsers.base import RowBlock
from caltrail.parsers.trace.tracerpt_csv import (
    BLOCK_SEPARATOR,
    MAX_PLAIN_TAIL,
    BlockLayout,
)
from caltrail.parsers.trace.tracetime import (
    FILETIME_PLAUSIBLE_MAX,
    FILETIME_PLAUSIBLE_MIN,
    parse_int,
)
from caltrail.pipeline.block_kernels import (
    EMPTY,
    NULL_TEXT,
    PY_WHITESPACE,
    TS,
    all_true,
    any_true,
    i64,
    none_if_empty,
    str_scalar,
)
from caltrail.pipeline.schemas import ALL_SCHEMAS, LINEAGE_NAMES

_FILETIME = r"^[0-9]{18}$"  # `plain`'s FILETIME: 18 ASCII digits
_UNIX_EPOCH_US = 11_644_473_600 * 1_000_000  # 1970-01-01 in µs after 1601-01-01
_USER_DATA_KEYS = [f"UserData.{i}" for i in range(MAX_PLAIN_TAIL)]


def trace_table(block: RowBlock) -> pa.Table | None:
    """`_Parser.plain` over a block of tracerpt CSV rows (see the module's notes). The
    reader gathers neither the CSV header again nor an EventTrace row (`block_text`)."""
    layout = block.facts["layout"]
    assert isinstance(layout, BlockLayout)
    width = len(layout.fixed)
    values = _values(block)
    lengths = pc.list_value_length(values)
    shortest, longest = pc.min_max(lengths).values()
    if shortest.as_py() < width or longest.as_py() > width + MAX_PLAIN_TAIL:
        return None
    provider = pc.list_element(values, layout.name)
    clock_text = pc.list_element(values, layout.clock)
    ts = _filetimes(clock_text)
    numbers = [_numbers(pc.list_element(values, at), bits) for at, bits in layout.ints]
    if ts is None or any(n is None for n in numbers):
        return None
    event_id, pid, tid, cpu = numbers
    has_tail = pc.greater(lengths, pa.scalar(width, pa.int32()))
    tail = pc.list_slice(values, width, width + MAX_PLAIN_TAIL, return_fixed_size_list=False)
    message = pc.if_else(has_tail, pc.binary_join(tail, str_scalar(", ")), NULL_TEXT)
    n = len(block)
    columns: dict[str, pa.Array] = {
        "ts": ts,
        "ts_raw": clock_text,  # (a FILETIME: never empty)
        "cpu": cpu,
        "pid": pid,
        "tid": tid,
        "provider": none_if_empty(provider),
        "event_id": event_id,
        "level": none_if_empty(pc.list_element(values, layout.level)),
        "function": pa.nulls(n, pa.string()),
        "message": message,
        "fields": _fields(values, layout, has_tail, _json_lists(tail)),
        "line": pa.array(block.lines, pa.int64()),
        "raw": pa.repeat(pa.scalar(False), n),
    }
    schema = ALL_SCHEMAS[block.table]
    fields = [f for f in schema if f.name not in LINEAGE_NAMES]
    return pa.Table.from_arrays(
        [columns[f.name].cast(f.type) for f in fields], schema=pa.schema(fields)
    )


def _values(block: RowBlock) -> pa.ListArray:
    """Each row's values: split at the separator, and stripped as `plain` strips them (the
    rows the reader split are as it left them: stripped, a quoted value's padding kept)."""
    lists = pc.split_pattern(pa.array(block.cells["values"], pa.string()), BLOCK_SEPARATOR)
    flat = pc.list_flatten(lists)
    trimmed = pc.utf8_trim(flat, characters=PY_WHITESPACE)
    split_here = block.cells["split_here"]
    if any(split_here):
        as_split = pa.array([flag == "1" for flag in split_here], pa.bool_())
        trimmed = pc.if_else(pc.take(as_split, pc.list_parent_indices(lists)), flat, trimmed)
    return pa.ListArray.from_arrays(lists.offsets, trimmed)


def _filetimes(clock: pa.Array) -> pa.Array | None:
    """Clock-Time as `plain` reads a FILETIME (100 ns ticks since 1601, to the µs below);
    None unless every row's is one."""
    if not all_true(pc.match_substring_regex(clock, _FILETIME)):
        return None
    ticks = pc.cast(clock, pa.int64())
    low, high = pc.min_max(ticks).values()
    if low.as_py() < FILETIME_PLAUSIBLE_MIN or high.as_py() >= FILETIME_PLAUSIBLE_MAX:
        return None
    micros = pc.subtract(pc.divide(ticks, i64(10)), i64(_UNIX_EPOCH_US))
    return pc.cast(micros, TS)


def _numbers(texts: pa.Array, bits: int) -> pa.Array | None:
    """A number column read by `parse_int` (empty: none), each distinct text once; None when
    a text is not a number (`plain` keeps such a text in `fields`)."""
    distinct = pc.unique(texts)
    found = distinct.to_pylist()
    read = [parse_int(t, bits) if t else None for t in found]
    if any(value is None and t for value, t in zip(read, found, strict=True)):
        return None
    numbers = pa.array(read, pa.int32() if bits == 32 else pa.int64())
    return pc.take(numbers, pc.index_in(texts, value_set=distinct))


def _fields(
    values: pa.ListArray, layout: BlockLayout, has_tail: pa.Array, user_data: pa.Array
) -> pa.MapArray:
    """The `fields` map of each row, in `plain`'s order: the kept columns that are not empty,
    then, when the row has user data, "UserData" (its JSON list, `user_data`) and
    "UserData.0", ... .

    The map's entries are the row's values at kept positions (when not empty) and at the
    user-data positions, in the order of the values, with one entry more per row that has
    user data ("UserData") placed before the row's first user-data value. Worked out as
    indices (into the values and the key names), the strings taken once at the end."""
    width = len(layout.fixed)
    flat = pc.list_flatten(values)
    parents = pc.list_parent_indices(values)
    starts = values.offsets
    positions = pc.subtract(_arange(len(flat)), pc.take(starts, parents))
    kept_at = [False] * (width + MAX_PLAIN_TAIL)
    for at in layout.kept:
        kept_at[at] = True
    kept_at[width:] = [True] * MAX_PLAIN_TAIL
    entry = pc.and_(
        pc.take(pa.array(kept_at, pa.bool_()), positions),
        pc.or_(pc.not_equal(flat, EMPTY), pc.greater_equal(positions, i64(width))),
    )
    # where each row's entries start: the entries of the values before its first, and one
    # "UserData" entry for each row with user data before it
    entries_before = _exclusive_sum(pc.cast(entry, pa.int32()))
    tails_before = _exclusive_sum(pc.cast(has_tail, pa.int32()))
    offsets = pc.add(pc.take(entries_before, starts), tails_before)
    # each value entry's place: its number among the entries, moved on by the "UserData"
    # entries before it (the earlier rows', and its own row's when it is user data)
    sources = pc.indices_nonzero(entry).cast(pa.int32())
    entry_positions = pc.take(positions, sources)
    in_tail = pc.cast(pc.greater_equal(entry_positions, i64(width)), pa.int32())
    moved = pc.add(pc.take(tails_before, pc.take(parents, sources)), in_tail)
    places = pc.add(_arange(len(sources)), moved)
    # each "UserData" entry's place: after its row's kept entries
    tailed = pc.indices_nonzero(has_tail)
    row_starts = pc.take(starts, tailed)
    kept_counts = pc.subtract(
        pc.take(entries_before, pc.add(row_starts, pa.scalar(width, pa.int32()))),
        pc.take(entries_before, row_starts),
    )
    user_places = pc.add(pc.take(offsets, tailed), kept_counts)
    order = pc.inverse_permutation(pa.concat_arrays([places, user_places.cast(pa.int32())]))
    # the strings: values (then the JSON lists after them) and key names (then "UserData")
    user_data = pc.filter(user_data, has_tail)
    value_index = pa.concat_arrays(
        [sources, pc.add(_arange(len(user_data)), pa.scalar(len(flat), pa.int32()))]
    )
    names = pa.array([*layout.fixed, *_USER_DATA_KEYS, "UserData"], pa.string())
    user_key = pa.scalar(len(names) - 1, pa.int32())
    key_index = pa.concat_arrays([entry_positions, pa.repeat(user_key, len(user_data))])
    map_items = pc.take(pa.concat_arrays([flat, user_data]), pc.take(value_index, order))
    map_keys = pc.take(names, pc.take(key_index, order))
    kind = ALL_SCHEMAS["trace_events"].field("fields").type
    return pa.MapArray.from_arrays(offsets, map_keys, map_items, type=kind)


def _json_lists(tail: pa.ListArray) -> pa.Array:
    """Each row's user data as `plain` writes fields["UserData"]: a JSON list of strings
    (a printable line holds no control character, so only quotes and backslashes are
    escaped)."""
    flat = pc.list_flatten(tail)
    if any_true(pc.match_substring_regex(flat, r'["\\]')):
        flat = pc.replace_substring(pc.replace_substring(flat, "\\", "\\\\"), '"', '\\"')
    joined = pc.binary_join(pa.ListArray.from_arrays(_offsets_of(tail), flat), str_scalar('", "'))
    return pc.binary_join_element_wise(str_scalar('["'), joined, str_scalar('"]'), EMPTY)


def _offsets_of(lists: pa.ListArray) -> pa.Array:
    """The offsets of `lists`' values as `list_flatten` gives them (from 0)."""
    return pc.subtract(lists.offsets, lists.offsets[0])


def _exclusive_sum(counts: pa.Array) -> pa.Array:
    """0, then the running sum of `counts` (one value more than it has)."""
    return pa.concat_arrays([pa.array([0], pa.int32()), pc.cumulative_sum(counts)])


_RANGE: list[pa.Array] = [pa.array(range(1 << 16), pa.int32())]


def _arange(n: int) -> pa.Array:
    """0, 1, ..., n - 1 (a slice of one array, made again larger when too short)."""
    if len(_RANGE[0]) < n:
        _RANGE[0] = pa.array(range(max(n, 2 * len(_RANGE[0]))), pa.int32())
    return _RANGE[0].slice(0, n)
