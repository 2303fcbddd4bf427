"""The WMI readers' usual rows read in bulk by Arrow's compute kernels (parsers.base.RowBlock).

Reading a usual Win32_TSIssuedLicense row one by one (caltrail/parsers/wmi/rows.py,
`RowReader._issued_cells`) costs about 7 µs of Python a row, most of a WMI reader's time.
The functions here are that function's rules written over the columns of a block of rows:
the integers, the status code or name, the DMTF and culture dates (the never sentinel, the
file's day/month order and zone), the WMI rendering of the HWID and its flag, the names
stripped. A block whose every row these rules read gives its table; a block with a row they
do not read (a date of another shape, an HWID in another rendering, a day on which the zone
changes its offset, a padded number, ...) gives None, and the caller reads the block's
`records()` one by one instead, the reference. So each block is read whole one way or the
other and its rows stay in order. tests/pipeline/test_row_blocks.py holds the two ways equal.

`block_table` reads any RowBlock by its rules: these, or the tracerpt CSV reader's
(pipeline/trace_blocks.py).
"""

from __future__ import annotations

import datetime as dt
from array import array
from collections.abc import Callable
from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

from caltrail.parsers.base import RowBlock
from caltrail.parsers.hwid import (
    FLAG_FREERDP_LEGACY,
    FLAG_STORE_APP_FF,
    FREERDP_LEGACY_HWID,
)
from caltrail.parsers.trace.tracerpt_csv import BLOCK_RULES as TRACE_RULES
from caltrail.parsers.wmi.codes import LICENSE_STATUS
from caltrail.parsers.wmi.dates import NEVER_UTC
from caltrail.parsers.wmi.rows import BLOCK_RULES, STATUS_NAMES
from caltrail.pipeline.block_kernels import (
    EMPTY,
    FALSE,
    NULL_INT,
    NULL_TEXT,
    PY_WHITESPACE,
    TS,
    all_true,
    any_true,
    i64,
    none_if_empty,
    str_scalar,
    stripped,
)
from caltrail.pipeline.schemas import ALL_SCHEMAS, LINEAGE_NAMES
from caltrail.pipeline.trace_blocks import trace_table

# dates.py's `_PLAIN_DMTF`: year, month, day, hour, minute, second at fixed places, then
# ".", the microseconds, the sign and the minutes east of UTC
_DMTF = r"^[0-9]{14}\.[0-9]{6}[+-][0-9]{3}$"
_DMTF_FILLER = pa.scalar("19700101000000.000000+000", pa.string())
_DMTF_WIDTH = 25
_DMTF_NEVER = "20380119031407.000000"  # the never sentinel's wall clock, any offset
# dates.py's `_PLAIN_CULTURE` (RE2 has no back-reference: one alternative per separator for
# the shape, found by RE2's fast engine; the groups are read only where a row has the shape)
_CULTURE_SHAPE = (
    r"^[0-9]{1,2}(?:/[0-9]{1,2}/|\.[0-9]{1,2}\.|-[0-9]{1,2}-)[0-9]{4} "
    r"[0-9]{1,2}:[0-9]{2}:[0-9]{2}(?: [AP]M)?$"
)
_CULTURE = (
    r"^(?P<a>[0-9]{1,2})[/.-](?P<b>[0-9]{1,2})[/.-](?P<year>[0-9]{4}) "
    r"(?P<hour>[0-9]{1,2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?: (?P<ampm>[AP]M))?$"
)
_WMI_HWID = r"^[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{8}){4}$"
_WMI_WIDTH = 44
_HWID_FILLER = pa.scalar("-".join(["0" * 8] * 5), pa.string())
_HWID_CHARS = 40
# where each character of the canonical HWID comes from in the WMI rendering: DWORD k's
# byte pairs (from 9 * k) in reverse order
_HWID_SOURCES = tuple(
    9 * k + 2 * pair + half for k in range(5) for pair in (3, 2, 1, 0) for half in (0, 1)
)
_US = 1_000_000
_DAY_US = 86_400 * _US
_MIN_US = -62_135_596_800 * _US  # 0001-01-01T00:00:00 UTC, datetime's first instant
_MAX_US = 253_402_300_800 * _US - 1  # 9999-12-31T23:59:59.999999 UTC, its last
_NEVER_US = int(NEVER_UTC.timestamp()) * _US
_DAYS_IN_MONTH = pa.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], pa.int64())
_NAME_CODES = pa.array(list(STATUS_NAMES), pa.string())
_NAME_CODE_VALUES = pa.array(list(STATUS_NAMES.values()), pa.int32())
_CODES = pa.array(list(LICENSE_STATUS), pa.int32())
_CODE_NAMES = pa.array(list(LICENSE_STATUS.values()), pa.string())


def block_table(block: RowBlock) -> pa.Table | None:
    """The rows of `block` as its table's columns (lineage aside), or None when some row
    must be read one by one (then read `block.records()`)."""
    read = _READERS.get(block.rules)
    if read is None or not len(block):
        return None
    try:
        return read(block)
    except pa.ArrowException:  # a value a kernel refuses: the per-row reading settles it
        return None


def issued_table(block: RowBlock) -> pa.Table | None:
    """`RowReader._issued_cells` over a block of Win32_TSIssuedLicense rows."""
    cells = {name: pa.array(texts, pa.string()) for name, texts in block.cells.items()}
    n = len(block)
    license_text = cells["licenseid"]
    if not all_true(_digits(license_text, 18)):
        return None
    keypack_text = none_if_empty(cells["keypackid"])
    if not all_true(pc.or_kleene(pc.is_null(keypack_text), _digits(keypack_text, 18))):
        return None
    status = _status(cells["licensestatus"])
    if status is None:
        return None
    order = str(block.facts["order"])
    zone = block.facts["zone"]
    assert isinstance(zone, dt.tzinfo)
    issue = _dates(cells["issuedate"], order, zone)
    expiry = _dates(cells["expirationdate"], order, zone)
    hwid = _hwids(cells["shardwareid"])
    if issue is None or expiry is None or hwid is None:
        return None
    server = pc.coalesce(stripped(cells["pscomputername"]), stripped(cells["__server"]))
    snapshot = pa.scalar(block.facts["snapshot_time"], TS)
    source = pa.scalar(block.facts["snapshot_time_source"], pa.string())
    columns: dict[str, pa.Array] = {
        "snapshot_time": pa.repeat(snapshot, n),
        "snapshot_time_source": pa.repeat(source, n),
        "license_server": server,
        "license_id": pc.cast(license_text, pa.int64()),
        "keypack_id": pc.cast(keypack_text, pa.int64()),
        "license_status": status,
        "license_status_name": pc.take(_CODE_NAMES, pc.index_in(status, value_set=_CODES)),
        "issue_date": issue[0],
        "issue_date_raw": issue[1],
        "expiration_date": expiry[0],
        "expiration_date_raw": expiry[1],
        "expiration_never": expiry[2],
        "issued_to_computer": stripped(cells["sissuedtocomputer"]),
        "issued_to_user": stripped(cells["sissuedtouser"]),
        "hwid": hwid[0],
        "hwid_raw": hwid[1],
        "hwid_flag": hwid[2],
        "line": pa.array(block.lines, pa.int64()),
        "cal_type": pa.nulls(n, pa.string()),
        "product_version": pa.nulls(n, pa.string()),
    }
    schema = ALL_SCHEMAS[block.table]
    fields = [f for f in schema if f.name not in LINEAGE_NAMES]
    return pa.Table.from_arrays(
        [columns[f.name].cast(f.type) for f in fields], schema=pa.schema(fields)
    )


# The bulk reading of each reader's rules (RowBlock.rules).
_READERS: dict[str, Callable[[RowBlock], pa.Table | None]] = {
    BLOCK_RULES: issued_table,
    TRACE_RULES: trace_table,
}


def _digits(texts: pa.Array, most: int) -> pa.Array:
    """`text.isdigit() and text.isascii() and len(text) <= most` (not empty)."""
    return pc.match_substring_regex(texts, f"^[0-9]{{1,{most}}}$")


def _status(texts: pa.Array) -> pa.Array | None:
    """LicenseStatus: none when empty, a number of up to 9 digits, or one of the names the
    general reading gives its own code; None when a row has anything else."""
    digits = _digits(texts, 9)
    named = pc.take(_NAME_CODE_VALUES, pc.index_in(texts, value_set=_NAME_CODES))
    empty = pc.equal(texts, EMPTY)
    if not all_true(pc.or_kleene(pc.or_kleene(empty, digits), pc.is_valid(named))):
        return None
    numbers = pc.cast(pc.if_else(digits, texts, NULL_TEXT), pa.int32())
    return pc.coalesce(numbers, named)


def _fixed_width(texts: pa.Array, width: int) -> bytes:
    """The bytes of a column of texts of `width` ASCII characters each, back to back (every
    text has that width: the callers fill the others in first)."""
    offsets = pa.Array.from_buffers(pa.int32(), 1, [None, texts.buffers()[1]], offset=texts.offset)
    start = offsets[0].as_py()
    data = texts.buffers()[2]
    assert data is not None
    part: bytes = data.slice(start, width * len(texts)).to_pybytes()
    return part


def _digit_column(data: bytes, width: int, at: int) -> pa.Array:
    """The digit at place `at` of each text of `_fixed_width(texts, width)`, as int64
    (byte slicing by a step runs in C; a compute kernel per place costs more)."""
    places = data[at::width]
    digits = pa.Array.from_buffers(pa.uint8(), len(places), [None, pa.py_buffer(places)])
    return pc.subtract(digits.cast(pa.int64()), i64(ord("0")))


def _number(data: bytes, width: int, start: int, stop: int) -> pa.Array:
    """The decimal number at places [start, stop) of each text of `_fixed_width`."""
    value = _digit_column(data, width, start)
    for at in range(start + 1, stop):
        value = pc.add(pc.multiply(value, i64(10)), _digit_column(data, width, at))
    return value


def _group(match: pa.StructArray, name: str) -> pa.Array:
    """A group of a regex match as int64; 0 where the row did not match."""
    return pc.fill_null(pc.cast(pc.struct_field(match, name), pa.int64()), i64(0))


def _dates(
    raw: pa.Array, order: str, zone: dt.tzinfo
) -> tuple[pa.Array, pa.Array, pa.Array] | None:
    """(instant, raw text, never) of a date column as `plain_instant` reads it (an empty
    cell: none, none, false), or None when a row holds a date `plain_instant` would not
    read here."""
    empty = pc.equal(raw, EMPTY)
    is_dmtf = pc.match_substring_regex(raw, _DMTF)
    is_culture = pc.match_substring_regex(raw, _CULTURE_SHAPE)
    if not all_true(pc.or_kleene(empty, pc.or_kleene(is_dmtf, is_culture))):
        return None
    sentinel = pc.and_kleene(is_dmtf, pc.starts_with(raw, _DMTF_NEVER))
    # the wall clock's fields, read only from the shapes the column has
    any_dmtf, any_culture = any_true(is_dmtf), any_true(is_culture)
    if not (any_dmtf or any_culture):  # every cell empty
        return pa.nulls(len(raw), TS), none_if_empty(raw), pc.fill_null(sentinel, FALSE)
    micro: pa.Array | pa.Scalar = i64(0)
    offset: pa.Array | pa.Scalar = i64(0)
    if any_dmtf:
        *wall_fields, micro, offset = _dmtf_fields(raw, is_dmtf)
    if any_culture:
        culture = _culture_fields(raw, is_culture, order)
        if culture is None:
            return None
        if any_dmtf:
            culture = tuple(
                pc.if_else(is_culture, c, d) for c, d in zip(culture, wall_fields, strict=True)
            )
        wall_fields = list(culture)
    year, month, day, hour, minute, second = wall_fields
    dated = pc.and_kleene(pc.invert(empty), pc.invert(sentinel))
    valid = pc.and_kleene(
        pc.and_kleene(_between(year, 1, 9999), _between(month, 1, 12)),
        pc.and_kleene(
            pc.and_kleene(_between(hour, 0, 23), _between(minute, 0, 59)),
            _between(second, 0, 59),
        ),
    )
    valid = pc.and_kleene(valid, _day_valid(year, month, day, valid))
    if not all_true(pc.or_kleene(pc.invert(dated), valid)):
        return None
    days = _days_from_civil(
        pc.if_else(dated, year, i64(1970)),
        pc.if_else(dated, month, i64(1)),
        pc.if_else(dated, day, i64(1)),
    )
    seconds = pc.add(pc.multiply(pc.add(pc.multiply(hour, i64(60)), minute), i64(60)), second)
    wall = pc.add(pc.add(pc.multiply(days, i64(_DAY_US)), pc.multiply(seconds, i64(_US))), micro)
    # what to subtract from the wall clock: the DMTF offset, or the zone's offset that day
    if any_culture:
        culture_days = pc.if_else(pc.and_kleene(dated, is_culture), days, NULL_INT)
        zone_offset = _zone_offsets(culture_days, zone)
        if zone_offset is None:
            return None
        offset = pc.if_else(is_culture, zone_offset, offset) if any_dmtf else zone_offset
    instant = pc.subtract(wall, offset)
    in_range = pc.and_kleene(
        pc.greater_equal(instant, i64(_MIN_US)), pc.less_equal(instant, i64(_MAX_US))
    )
    if not all_true(pc.or_kleene(pc.invert(dated), in_range)):
        return None
    # the never sentinel: its DMTF text, the instant, or a culture date with its wall clock
    local_never = pc.and_kleene(is_culture, pc.equal(wall, i64(_NEVER_US)))
    never = pc.or_kleene(
        sentinel, pc.and_kleene(dated, pc.or_kleene(pc.equal(instant, i64(_NEVER_US)), local_never))
    )
    never = pc.fill_null(never, FALSE)
    value = pc.if_else(pc.or_kleene(pc.invert(dated), never), NULL_INT, instant)
    return value.cast(TS), none_if_empty(raw), never


def _dmtf_fields(raw: pa.Array, is_dmtf: pa.Array) -> tuple[pa.Array, ...]:
    """(year, month, day, hour, minute, second, microsecond, offset in µs east of UTC) of
    the DMTF dates, by their digits at fixed places (other texts are read as the DMTF date
    of 1970-01-01, and set aside by the caller's masks)."""
    data = _fixed_width(pc.if_else(is_dmtf, raw, _DMTF_FILLER), _DMTF_WIDTH)
    places = ((0, 4), (4, 6), (6, 8), (8, 10), (10, 12), (12, 14), (15, 21))
    fields = [_number(data, _DMTF_WIDTH, a, b) for a, b in places]
    offset = pc.multiply(_number(data, _DMTF_WIDTH, 22, 25), i64(60 * _US))
    west = pc.equal(_digit_column(data, _DMTF_WIDTH, 21), i64(ord("-") - ord("0")))
    return (*fields, pc.if_else(west, pc.negate(offset), offset))


def _culture_fields(raw: pa.Array, is_culture: pa.Array, order: str) -> tuple[pa.Array, ...] | None:
    """(year, month, day, hour, minute, second) of the culture dates, as plain_instant reads
    them with the file's order (0 in other rows); None when a row's are not read here."""
    if order not in ("dmy", "mdy"):
        return None
    match = pc.extract_regex(raw, _CULTURE)
    year = _group(match, "year")
    year = pc.if_else(pc.less(year, i64(100)), pc.add(year, i64(2000)), year)
    a, b = _group(match, "a"), _group(match, "b")
    day, month = (a, b) if order == "dmy" else (b, a)
    hour = _group(match, "hour")
    ampm = pc.struct_field(match, "ampm")
    twelve = pc.and_kleene(is_culture, pc.not_equal(ampm, EMPTY))
    if not all_true(pc.or_kleene(pc.invert(twelve), _between(hour, 1, 12))):
        return None
    pm = pc.if_else(pc.equal(ampm, str_scalar("PM")), i64(12), i64(0))
    hour = pc.if_else(twelve, pc.add(pc.modulo(hour, i64(12)), pm), hour)
    return year, month, day, hour, _group(match, "minute"), _group(match, "second")


def _between(values: pa.Array, low: int, high: int) -> pa.Array:
    return pc.and_kleene(pc.greater_equal(values, i64(low)), pc.less_equal(values, i64(high)))


def _day_valid(year: pa.Array, month: pa.Array, day: pa.Array, valid: pa.Array) -> pa.Array:
    """Whether `day` is a day of its month (rows not `valid` are looked up as January)."""
    month = pc.if_else(valid, month, i64(1))
    leap = pc.or_kleene(
        pc.and_kleene(
            pc.equal(pc.modulo(year, i64(4)), i64(0)),
            pc.not_equal(pc.modulo(year, i64(100)), i64(0)),
        ),
        pc.equal(pc.modulo(year, i64(400)), i64(0)),
    )
    last = pc.take(_DAYS_IN_MONTH, pc.subtract(month, i64(1)))
    last = pc.add(last, pc.if_else(pc.and_kleene(leap, pc.equal(month, i64(2))), i64(1), i64(0)))
    return pc.and_kleene(pc.greater_equal(day, i64(1)), pc.less_equal(day, last))


def _days_from_civil(year: pa.Array, month: pa.Array, day: pa.Array) -> pa.Array:
    """Days since 1970-01-01 of a proleptic Gregorian date (years 1-9999), H. Hinnant's
    `days_from_civil`: the year counted from March, in eras of 400 years."""
    y = pc.subtract(year, pc.if_else(pc.less_equal(month, i64(2)), i64(1), i64(0)))
    era = pc.divide(y, i64(400))  # (y >= 0: integer division is the floor)
    yoe = pc.subtract(y, pc.multiply(era, i64(400)))
    shifted = pc.modulo(pc.add(month, i64(9)), i64(12))  # March 0 ... February 11
    doy = pc.add(
        pc.divide(pc.add(pc.multiply(shifted, i64(153)), i64(2)), i64(5)), pc.subtract(day, i64(1))
    )
    doe = pc.add(
        pc.add(pc.multiply(yoe, i64(365)), pc.divide(yoe, i64(4))),
        pc.subtract(doy, pc.divide(yoe, i64(100))),
    )
    return pc.subtract(pc.add(pc.multiply(era, i64(146_097)), doe), i64(719_468))


def _zone_offsets(days: pa.Array, zone: dt.tzinfo) -> pa.Array | None:
    """The zone's UTC offset in µs on each local day (null where `days` is null), or None
    when one of the days is one on which the zone changes its offset: a wall clock that day
    may be in a gap or a fold, which the per-row reading settles."""
    distinct = [d for d in pc.unique(days).to_pylist() if d is not None]
    offsets = [_day_offset(zone, d) for d in distinct]
    if any(o is None for o in offsets):
        return None
    if not distinct:
        return pa.nulls(len(days), pa.int64())
    where = pc.index_in(days, value_set=pa.array(distinct, pa.int64()))
    return pc.take(pa.array(offsets, pa.int64()), where)


_EPOCH = dt.date(1970, 1, 1)
_SAMPLES = (*(dt.time(hour) for hour in range(24)), dt.time(23, 59, 59, 999_999))


@lru_cache(maxsize=65_536)
def _day_offset(zone: dt.tzinfo, day: int) -> int | None:
    """The zone's offset (µs east of UTC) through local day `day`, or None when it changes
    that day: sampled at every hour and the day's last instant, each in both folds (a gap
    or fold at a sample gives two offsets; a change between samples, two neighbours that
    differ)."""
    date = _EPOCH + dt.timedelta(days=day)
    found = {
        dt.datetime.combine(date, time, zone).replace(fold=fold).utcoffset()
        for time in _SAMPLES
        for fold in (0, 1)
    }
    if len(found) != 1:
        return None
    (offset,) = found
    return 0 if offset is None else offset // dt.timedelta(microseconds=1)


def _hwids(raw: pa.Array) -> tuple[pa.Array, pa.Array, pa.Array] | None:
    """(hwid, raw, flag) as `wmi_dwords_hwid` reads the WMI rendering (an empty cell: all
    none), or None when a row has another rendering (normalize_hwid's general reading)."""
    empty = pc.equal(raw, EMPTY)
    if not all_true(pc.or_kleene(empty, pc.match_substring_regex(raw, _WMI_HWID))):
        return None
    text = pc.if_else(empty, NULL_TEXT, raw)
    # each DWORD (eight hex digits from 9 * k) written little-endian: its byte pairs
    # reversed, every row at once by byte slicing (a kernel per pair cost 0.8 µs a row)
    data = _fixed_width(pc.if_else(empty, _HWID_FILLER, raw), _WMI_WIDTH)
    n = len(raw)
    swapped = bytearray(_HWID_CHARS * n)
    for place, source in enumerate(_HWID_SOURCES):
        swapped[place::_HWID_CHARS] = data[source::_WMI_WIDTH]
    offsets = pa.py_buffer(array("i", range(0, _HWID_CHARS * (n + 1), _HWID_CHARS)).tobytes())
    hwid = pa.Array.from_buffers(
        pa.string(), n, [None, offsets, pa.py_buffer(bytes(swapped.lower()))]
    )
    hwid = pc.if_else(empty, NULL_TEXT, hwid)
    store_app = pc.or_kleene(
        pc.starts_with(hwid, "ff"), pc.equal(pc.utf8_slice_codeunits(hwid, 6, 8), str_scalar("ff"))
    )
    flag = pc.if_else(
        pc.equal(hwid, str_scalar(FREERDP_LEGACY_HWID)),
        str_scalar(FLAG_FREERDP_LEGACY),
        pc.if_else(store_app, str_scalar(FLAG_STORE_APP_FF), NULL_TEXT),
    )
    return hwid, text, flag


__all__ = ["PY_WHITESPACE", "block_table", "issued_table"]
