"""The short cuts the text readers take for speed give what the general code gives.

Each fast path (taken for the parser-throughput targets of `make bench`) is held against
the slower, general reading it stands in for, on generated inputs that include the awkward
characters.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import html
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from caltrail.parsers import hwid as hwid_module
from caltrail.parsers.base import ParseOptions
from caltrail.parsers.hwid import HWID_LENGTH, hwid_from_dwords, normalize_hwid
from caltrail.parsers.textio import iter_blocks, iter_lines
from caltrail.parsers.trace import tracerpt_csv
from caltrail.parsers.trace.tracetime import _JUNK_RE, is_junk, parse_int
from caltrail.parsers.wmi import csv as wmi_csv
from caltrail.parsers.wmi import dates as wmidates
from caltrail.parsers.wmi import html as wmi_html
from caltrail.parsers.wmi import rows as wmirows
from caltrail.parsers.wmi.columns import column_key
from tests.parsers.items import parse_bytes

DATA = Path(__file__).parent / "data" / "exports"
CSV_TEXT = st.text(alphabet='",;ab \t\x00\né', max_size=14)


@given(CSV_TEXT, st.sampled_from([",", ";"]))
@settings(max_examples=1000)
def test_all_quoted_split_is_the_csv_module(text: str, delimiter: str) -> None:
    fast = wmi_csv._split_all_quoted(text, delimiter)
    if fast is not None:
        assert [fast] == list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))


@given(st.lists(st.text(alphabet='a"\\\n\x00\x1fé\u2028\ud800 ,', max_size=5), max_size=6))
def test_user_data_json_is_json_dumps(tail: list[str]) -> None:
    line = "p, Info, 1, 0, 0, 4, 0, 0, 0x0, 0x1, 0x2, 0, , , {0}, , 133410849570000000, 0, 0"
    header = ", ".join(tracerpt_csv.HEADER)
    record = tracerpt_csv._Parser(header.split(", "), tracerpt_csv.ParseOptions()).record(
        1, [*line.split(", "), *tail]
    )[1]
    if tail:
        assert record.fields["UserData"] == json.dumps(tail, ensure_ascii=False)


@given(st.text(alphabet="ab\t\x00\x07\x7f\x1f\ufffd é", max_size=30))
def test_is_junk_printable_shortcut(line: str) -> None:
    bad = line.count("\ufffd")
    assert is_junk(line) == (
        _JUNK_RE.search(line) is not None or (bad > 3 and bad * 10 > len(line))
    )


@given(st.text(alphabet="0123456789xX-+ _abf\u0663", max_size=22), st.sampled_from([32, 64]))
def test_parse_int_digits_shortcut(text: str, bits: int) -> None:
    value = parse_int(text, bits)
    if text.isascii() and text.isdigit():
        assert value == (int(text) if int(text) < 1 << (bits - 1) else None)


@given(st.lists(st.integers(0, 0xFFFFFFFF), min_size=5, max_size=5), st.booleans())
def test_wmi_dword_hwid_shortcut(dwords: list[int], upper: bool) -> None:
    raw = "-".join(f"{d:08X}" if upper else f"{d:08x}" for d in dwords)
    result = normalize_hwid(raw)
    assert result.hwid is not None
    assert len(result.hwid) == 2 * HWID_LENGTH
    assert result.hwid == hwid_from_dwords(dwords)
    # the general reading (a space after each dash keeps it off the short cut)
    assert normalize_hwid(raw.replace("-", "- ")).hwid == result.hwid


@given(
    st.sampled_from(["2023", "20*3"]),
    st.sampled_from(["10", "1*", "02"]),
    st.sampled_from(["05", "31", "**"]),
    st.sampled_from(["123456", "******", "12", "000000"]),
    st.sampled_from(["+060", "-300", "+***", "-000"]),
)
def test_dmtf_unknown_digits(year: str, month: str, day: str, frac: str, offset: str) -> None:
    text = f"{year}{month}{day}12*456.{frac}{offset}"
    result = wmidates.parse_dmtf(text)
    if "*" in year + month + day:
        assert result.value is None
        assert not result.fatal
        return
    if result.fatal:
        return  # e.g. 31 February
    micro = 0 if "*" in frac else int(frac.ljust(6, "0"))
    minutes = 0 if "*" in offset else int(offset[1:]) * (-1 if offset[0] == "-" else 1)
    zone = dt.timezone(dt.timedelta(minutes=minutes))
    expected = dt.datetime(int(year), int(month), int(day), 12, 0, 56, micro, tzinfo=zone)
    assert result.value == expected


@given(st.text(alphabet="ab\n\r\ufeff<", max_size=40), st.integers(1, 8))
def test_blocks_are_the_lines(text: str, chars: int) -> None:
    data = text.encode("utf-8")
    lines = [line + "\n" for _, line in iter_lines(io.BytesIO(data))]
    blocks = list(iter_blocks(io.BytesIO(data), chars))
    assert "".join(block for _, block in blocks) == "".join(lines)
    if blocks:
        assert blocks[-1][0] == len(lines)


def test_html_fed_in_blocks_reads_every_row() -> None:
    """Many rows (several feed blocks), a BOM at the start of some lines, CRLF ends."""
    sample = (DATA / "msrd_issued.html").read_bytes()
    row = (
        "<tr><td>LS01</td><td>{n}</td><td>u</td><td>X{n}</td><td>10/5/2023 12:34:56 PM</td>"
        "<td>12/13/2023 12:34:56 PM</td><td>2</td><td>3</td>"
        "<td>00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6</td></tr>"
    )
    rows = "\r\n".join(("\ufeff" if n % 7 == 0 else "") + row.format(n=n) for n in range(5000))
    data = sample.replace(b"</table>", rows.encode("utf-8") + b"\r\n</table>")
    items = parse_bytes(wmi_html, data)
    computers = [getattr(i, "issued_to_computer", None) for i in items]
    assert [f"X{n}" for n in range(5000)] == [c for c in computers if c and c.startswith("X")]


def test_html_rows_past_line_65535_keep_increasing_line_numbers() -> None:
    """libxml2's HTML parser stops counting at line 65,535: past it a row's line is the end
    of the block it was read in (never a repeated 65,535, never before the row)."""
    sample = (DATA / "msrd_issued.html").read_bytes()
    row = (
        "<tr><td>LS01</td><td>{n}</td><td>u</td><td>X{n}</td><td>10/5/2023 12:34:56 PM</td>"
        "<td>12/13/2023 12:34:56 PM</td><td>2</td><td>3</td>"
        "<td>00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6</td></tr>"
    )
    head, tail = sample.split(b"</table>", 1)
    first = head.count(b"\n") + 1  # the line of the first added row
    rows = "\n".join(row.format(n=n) for n in range(70_000))
    data = head + rows.encode("utf-8") + b"\n</table>" + tail
    items = parse_bytes(wmi_html, data)
    lines = {
        int(getattr(i, "license_id", 0)): i.line
        for i in items
        if str(getattr(i, "issued_to_computer", "")).startswith("X")
    }
    assert len(lines) == 70_000
    assert all(lines[n] == first + n for n in range(0, 60_000, 997))  # exact while counted
    late = [lines[n] for n in range(66_000, 70_000)]
    assert late == sorted(late)
    assert all(line >= first + n for line, n in zip(late, range(66_000, 70_000), strict=True))
    assert late[-1] <= data.count(b"\n") + 1  # within the file


# the WMI rendering as the reader once found it
_WMI_DWORDS = re.compile(r"[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{8}){4}")


def _wmi_hwid_before(raw: str) -> tuple[str | None, str, str | None]:
    """normalize_hwid of a string as it was when the WMI rendering was found by its regex
    (`_WMI_DWORDS`), not by its dashes and bytes.fromhex."""
    if _WMI_DWORDS.fullmatch(raw):
        dwords = [int(group, 16) for group in raw.split("-")]
        return tuple(hwid_module._finish(hwid_from_dwords(dwords), raw, None))
    return tuple(normalize_hwid(raw))


WMI_HWID_TEXT = st.builds(
    lambda groups: "-".join(groups),
    st.lists(
        st.text(alphabet="0123456789abcdefABCDF \t\u0663xg-", min_size=7, max_size=9),
        min_size=5,
        max_size=5,
    ),
)


@given(st.one_of(WMI_HWID_TEXT, st.text(alphabet="0Ff- \t", min_size=40, max_size=48)))
@settings(max_examples=1000)
def test_wmi_hwid_by_dashes_is_the_regex_reading(raw: str) -> None:
    assert tuple(normalize_hwid(raw)) == _wmi_hwid_before(raw)


def test_wmi_hwid_by_dashes_reads_the_usual_hwid() -> None:
    raw = "00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6"
    # each DWORD stored little-endian: 00000002 -> 02000000, 7D4EB2C0 -> c0b24e7d, ...
    assert normalize_hwid(raw) == (
        "02000000c0b24e7d10a9ff372b54eb75f67a7087",
        raw,
        None,
    )


# -- WMI rows: plain dates, plain issued-license rows, the inlined CSV split ---------------

ZONES = [
    wmidates.ZoneInfo("UTC"),
    wmidates.ZoneInfo("Europe/Berlin"),
    wmidates.ZoneInfo("America/New_York"),
    dt.UTC,
    dt.timezone(dt.timedelta(hours=14)),
]
TWO = st.sampled_from(["00", "01", "02", "03", "09", "10", "12", "13", "19", "23", "24", "29"])
DMTF_TEXT = st.builds(
    lambda y, mo, d, h, mi, s, frac, sign, off, pad: f"{pad}{y}{mo}{d}{h}{mi}{s}.{frac}{sign}{off}",
    st.sampled_from(["2023", "2038", "0001", "9999", "1999", "2*23", "\u0662023"]),
    TWO,
    st.sampled_from(["01", "05", "19", "28", "29", "30", "31", "32", "00"]),
    TWO,
    st.sampled_from(["00", "14", "59", "60", "*5"]),
    st.sampled_from(["00", "07", "59", "60"]),
    st.sampled_from(["000000", "123456", "00000", "*****1", "1234567"]),
    st.sampled_from(["+", "-"]),
    st.sampled_from(["000", "060", "-60", "999", "720", "***", "+60"]),
    st.sampled_from(["", "", "", " "]),
)
NEVER_TEXTS = st.sampled_from(
    [
        "20380119031407.000000+000",
        "20380119031407.000000-300",
        "20380119041407.000000+060",
        "20380118221407.000000-300",
        "1/19/2038 3:14:07 AM",
        "19.01.2038 03:14:07",
    ]
)
CULTURE_TEXT = st.builds(
    lambda a, s1, b, s2, y, h, mi, sec, ampm: f"{a}{s1}{b}{s2}{y} {h}:{mi}:{sec}{ampm}",
    st.sampled_from(["1", "5", "10", "12", "13", "31", "05", "0", "123"]),
    st.sampled_from(["/", ".", "-"]),
    st.sampled_from(["1", "5", "12", "13", "31", "05", "0"]),
    st.sampled_from(["/", ".", "-"]),
    st.sampled_from(["2023", "2024", "0099", "0000", "9999", "23", "2038"]),
    st.sampled_from(["0", "1", "9", "12", "13", "23", "24", "02"]),
    st.sampled_from(["00", "30", "59", "60", "5"]),
    st.sampled_from(["00", "56", "59", "60"]),
    st.sampled_from(["", " AM", " PM", " am", " P.M.", "  PM", "PM"]),
)
VALID_DMTF = st.builds(
    lambda t, micro, off: f"{t:%Y%m%d%H%M%S}.{micro:06d}{off:+04d}".replace("+-", "-"),
    st.datetimes(),  # wall-clock times, years 1 to 9999 (naive: the text gives the zone)
    st.integers(0, 999_999),
    st.integers(-999, 999),
)
VALID_CULTURE = st.builds(
    lambda t, form: form(t),
    st.datetimes(),
    st.sampled_from(
        [
            lambda t: f"{t.month}/{t.day}/{t.year:04d} {t.hour % 12 or 12}:{t:%M:%S %p}",
            lambda t: f"{t:%d.%m.%Y} {t.hour}:{t:%M:%S}",
            lambda t: f"{t:%m-%d-%Y %H:%M:%S}",
        ]
    ),
)
DATE_TEXT = st.one_of(
    VALID_DMTF,
    VALID_CULTURE,
    DMTF_TEXT,
    CULTURE_TEXT,
    NEVER_TEXTS,
    st.text("0123456789/.: APM+-", max_size=26),
)


def plain_date(text: str, order: str, zone: dt.tzinfo) -> wmidates.DateResult | None:
    """`plain_instant` as the DateResult `parse_wmi_date` gives (None: not a plain date)."""
    value = wmidates.plain_instant(text, order, zone)
    if value is None:
        return None
    if value is wmidates.NEVER_UTC:
        return wmidates.DateResult(None, never=True)
    return wmidates.DateResult(value)


@given(DATE_TEXT, st.sampled_from(["dmy", "mdy", "ymd"]), st.sampled_from(ZONES))
@settings(max_examples=1000)
def test_plain_date_is_parse_wmi_date(text: str, order: str, zone: dt.tzinfo) -> None:
    fast = plain_date(text, order, zone)
    if fast is not None:
        # repr: equal instants in different zones compare equal, the reprs do not
        assert repr(fast) == repr(wmidates.parse_wmi_date(text, order, zone))


def test_plain_date_reads_the_usual_shapes() -> None:
    utc = wmidates.ZoneInfo("UTC")
    for text in ("20231005123456.000000+060", "10/5/2023 12:34:56 PM", "05.10.2023 12:34:56"):
        assert plain_date(text, "mdy", utc) is not None


CELLS = {
    "licenseid": [
        *("5", "14106", " 5", "-1", "+3", "", None, "١٢", "0x1", "123456789012345678"),
        *("1234567890123456789", "99999999999999999999"),
    ],
    "keypackid": ["3", "", None, " 3", "x", "1234567890123456789"],
    "licensestatus": [
        *("1", "2", "Active", "active", "Unknown", "9", "2147483648", "", None),
        *(" 2", "Temp", "0004"),
    ],
    "shardwareid": [
        "00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6",
        "00000002-7d4eb2c0-37ffa910-75eb542b-87707af6",
        " 00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6",
        "FF000002-7D4EB2C0-37FFA910-75EB542B-87707AF6",
        "00000000-88461973-AEB1D747-5DBF0DE4-99C963D9",
        "020000007d4eb2c037ffa91075eb542b87707af6",
        "",
        "  ",
        None,
        "junk",
    ],
    "sissuedtocomputer": [None, "", " PC-1 ", "PC-1"],
    "sissuedtouser": [None, "", "u"],
    "pscomputername": [None, "", "LS01", " LS01 "],
    "__server": [None, "LS02"],
    "snapshottime": [None, "", "20251103140000.000000+000", "bad"],
}


@given(
    st.fixed_dictionaries(
        {
            **{key: st.sampled_from(cells) for key, cells in CELLS.items()},
            "issuedate": st.one_of(DATE_TEXT, st.sampled_from([None, "", " "])),
            "expirationdate": st.one_of(DATE_TEXT, st.sampled_from([None, "", " "])),
        }
    ),
    st.integers(0, len(CELLS) + 2),
    st.sampled_from(["dmy", "mdy"]),
    st.sampled_from(ZONES),
    st.sampled_from([(None, "unknown"), (dt.datetime(2025, 1, 2, tzinfo=dt.UTC), "option")]),
)
@settings(max_examples=1000)
def test_plain_issued_row_is_the_general_reading(
    values: dict[str, str | None],
    odd: int,
    order: str,
    zone: dt.tzinfo,
    snapshot: tuple[dt.datetime | None, str],
) -> None:
    # mostly the usual row with one cell (or none) drawn from the odd ones
    keys = [*CELLS, "issuedate", "expirationdate"]
    usual = {key: cells[0] for key, cells in CELLS.items()}
    usual |= {"issuedate": values["issuedate"], "expirationdate": values["expirationdate"]}
    if odd < len(keys):
        values = usual | {keys[odd]: values[keys[odd]]}
    reader = wmirows.RowReader(wmirows.ISSUED, order, zone, snapshot, ParseOptions())
    row = wmirows.Row(values, 7, "raw")
    fast = reader.plain(row)
    if fast is not None:
        assert repr([fast]) == repr(reader.general(row))


def test_plain_issued_row_reads_the_usual_row() -> None:
    reader = wmirows.RowReader(
        wmirows.ISSUED, "mdy", wmidates.ZoneInfo("UTC"), (None, "unknown"), ParseOptions()
    )
    values = {key: cells[0] for key, cells in CELLS.items()}
    values |= {"issuedate": "20231005123456.000000+060", "expirationdate": "1/4/2024 8:00:00 AM"}
    assert reader.plain(wmirows.Row(values, 1, "")) is not None


CSV_HEADER = '"LicenseId","sHardwareId","sIssuedToComputer","IssueDate","ExpirationDate"\n'


@given(st.lists(st.text(alphabet='",;ab \x00é\n', max_size=30), max_size=8))
@settings(max_examples=1000)
def test_csv_inline_split_is_split_fields(lines: list[str]) -> None:
    data = (CSV_HEADER + "\n".join(lines)).encode("utf-8")
    fast = list(wmi_csv._rows(io.BytesIO(data)))
    assert fast == list(wmi_csv._rows(io.BytesIO(data), plain=False))


# -- tracerpt CSV: the plain-row path and the quoted split ----------------------------------

TRACE_SAMPLE = (Path(__file__).parent / "data" / "traces" / "tracerpt_sample.csv").read_text()
TRACE_LINES = TRACE_SAMPLE.splitlines()
TRACE_ODD = [
    ", ",
    ",",
    '"',
    '""',
    " ",
    "",
    "0x",
    "0xZZ",
    "-1",
    "99999999999999999999",
    "133410849570000000",
    "1234",
    "EventTrace",
    "eventtrace",
    "Header",
    "\x07",
    "\ufffd",
    "\t",
    "é",
    "\\",  # (a JSON escape, as '"' is)
    '"a\\b, ""c"""',
]


def _trace_line(template: str, edits: list[tuple[int, str]]) -> str:
    pieces = template.split(", ")
    for at, text in edits:
        pieces[at % len(pieces)] = text
    return ", ".join(pieces)


def _read_trace(lines: list[str], plain: bool) -> list[str]:
    parser = tracerpt_csv._Parser(TRACE_LINES[0].split(", "), ParseOptions())
    return [repr(item) for item in parser.run(iter(enumerate(lines, start=2)), plain)]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(TRACE_LINES[1:]),
            st.lists(st.tuples(st.integers(0, 40), st.sampled_from(TRACE_ODD)), max_size=3),
            st.integers(0, 3),
        ),
        min_size=1,
        max_size=6,
    )
)
@settings(max_examples=1000)
def test_tracerpt_plain_rows_are_the_general_reading(
    rows: list[tuple[str, list[tuple[int, str]], int]],
) -> None:
    lines = [
        _trace_line(template, edits) + " " * pad + ("," if pad == 3 else "")
        for template, edits, pad in rows
    ]
    assert _read_trace(lines, plain=True) == _read_trace(lines, plain=False)


def test_tracerpt_plain_path_reads_the_usual_rows() -> None:
    parser = tracerpt_csv._Parser(TRACE_LINES[0].split(", "), ParseOptions())
    assert parser.plain(3, TRACE_LINES[2]) is not None  # with a quoted value
    assert parser.plain(4, TRACE_LINES[3]) is not None
    assert parser.plain(2, TRACE_LINES[1]) is None  # the EventTrace header row


def test_tracerpt_known_numbers_keep_their_misfits() -> None:
    # the number columns are read once per combination of texts: a text that is not a
    # number must reach the fields on the later rows that find the combination known too
    pieces = TRACE_LINES[3].split(", ")
    at_pid = [c.strip() for c in TRACE_LINES[0].split(",")].index("PID")
    pieces[at_pid] = "0xZZ"
    line = ", ".join(pieces)
    lines = [line, TRACE_LINES[3], line]
    parser = tracerpt_csv._Parser(TRACE_LINES[0].split(", "), ParseOptions())
    records = [parser.plain(n, text) for n, text in enumerate(lines, start=2)]
    assert [r.fields.get("PID") if r else "no record" for r in records] == ["0xZZ", None, "0xZZ"]
    assert [r.pid if r else -1 for r in records] == [None, 0xA1C, None]
    assert _read_trace(lines, plain=True) == _read_trace(lines, plain=False)


def _split_row_by_pieces(line: str) -> tuple[list[str], bool]:
    """split_row as it was before it searched from quote to quote: the line split at every
    ", ", then the pieces merged one by one while a piece starting with a quote holds an
    odd number of quotes."""
    stripped = line.rstrip()
    trailing_empty = stripped.endswith(",")
    if trailing_empty:
        stripped = stripped[:-1]
    pieces = stripped.split(", ")

    def finish(pieces: list[str]) -> list[str]:
        values = []
        for piece in pieces:
            value = piece.strip()
            if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
                value = value[1:-1].replace('""', '"')
            values.append(value)
        return values + [""] * trailing_empty

    merged: list[str] = []
    index = 0
    while index < len(pieces):
        piece = pieces[index]
        if piece.lstrip().startswith('"'):
            while piece.count('"') % 2 and index + 1 < len(pieces):
                index += 1
                piece = f"{piece}, {pieces[index]}"
            if piece.count('"') % 2:
                merged.append(piece.strip())
                return finish(merged + pieces[index + 1 :]), True
        merged.append(piece)
        index += 1
    return finish(merged), False


# quotes, "" escapes, separators with and without their space, blanks (tab and U+3000
# included), non-ASCII and a control character
SPLIT_PARTS = ['"', '""', '"q"', 'x, "y', ",", ", ", ",,", " ", "  ", "\t", "\u3000", "a", "é", "\x01"]


@given(st.lists(st.sampled_from(SPLIT_PARTS), max_size=16))
@example(['"q"', ", ", "a", ", ", '"', "a", ", ", "a", '"', ", ", "a"])
@example(["a", ", ", ' "', ", ", '""', ", ", '"', ",", " "])
@example(["a", '"', ", ", '"q"', '""', ", ", '"'])
@settings(max_examples=2000)
def test_split_row_is_the_split_by_pieces(parts: list[str]) -> None:
    line = "".join(parts)
    assert tracerpt_csv.split_row(line) == _split_row_by_pieces(line)


@given(st.text(alphabet=st.sampled_from('", a\t\x01é\u3000'), max_size=30))
@settings(max_examples=2000)
def test_split_row_is_the_split_by_pieces_on_any_text(line: str) -> None:
    assert tracerpt_csv.split_row(line) == _split_row_by_pieces(line)


def test_split_row_reads_the_sample_rows_as_the_split_by_pieces() -> None:
    for line in TRACE_LINES:
        assert tracerpt_csv.split_row(line) == _split_row_by_pieces(line)


@given(st.text(alphabet="0123456789abcdefxXABG_+- ", max_size=20), st.sampled_from([32, 64]))
def test_parse_int_hex_shortcut(text: str, bits: int) -> None:
    text = "0x" + text
    value = parse_int(text, bits)
    if text.isalnum() and text.isascii():
        try:
            expected: int | None = int(text[2:], 16)
        except ValueError:
            expected = None
        if expected is not None and not expected < 1 << (bits - 1):
            expected = None
        assert value == expected


# -- WMI rows as Cells (CSV and HTML): read by position, without a dict --------------------

# the columns a generated header is drawn from: the plain path's, others it ignores, and
# those that send a table's rows to the dict path (per-device report, snapshot time)
HEADER_KEYS = [
    *("LicenseId", "KeyPackId", "LicenseStatus", "IssueDate", "ExpirationDate"),
    *("sHardwareId", "sIssuedToComputer", "sIssuedToUser", "PSComputerName", "__SERVER"),
    *("Scope", "Path", "License ID", "CALType", "SnapshotTime", "ProductVersion"),
]
ROW_CELLS = {
    "licenseid": [c for c in CELLS["licenseid"] if c is not None],
    "keypackid": ["3", "", " 3", "x"],
    "licensestatus": [c for c in CELLS["licensestatus"] if c is not None],
    "shardwareid": [c for c in CELLS["shardwareid"] if c is not None],
    "sissuedtocomputer": ["", " PC-1 ", "PC-1"],
    "sissuedtouser": ["", "u", " "],
    "pscomputername": ["", "LS01", " LS01 "],
    "__server": ["", "LS02", " "],
    "snapshottime": ["", "20251103140000.000000+000"],
    "caltype": ["", "Per Device"],
    "productversion": ["", "Windows Server 2019"],
}


@given(
    st.lists(st.sampled_from(HEADER_KEYS), min_size=1, max_size=12),
    st.data(),
    st.sampled_from(["dmy", "mdy"]),
    st.sampled_from(ZONES),
    st.sampled_from([(None, "unknown"), (dt.datetime(2025, 1, 2, tzinfo=dt.UTC), "option")]),
)
@settings(max_examples=1000)
def test_plain_cells_are_the_general_reading(
    drawn: list[str],
    data: st.DataObject,
    order: str,
    zone: dt.tzinfo,
    snapshot: tuple[dt.datetime | None, str],
) -> None:
    # a header with the required columns, in any order, with repeats and others
    columns = [*drawn, "LicenseId", "sHardwareId", "sIssuedToComputer", "ExpirationDate"]
    columns = data.draw(st.permutations(columns))
    date = st.one_of(DATE_TEXT, st.sampled_from(["", " "]))
    texts = []
    for column in columns:
        key = column_key(column)
        cells = ROW_CELLS.get(key)
        if key in ("issuedate", "expirationdate"):
            texts.append(data.draw(date))
        else:
            texts.append(data.draw(st.sampled_from(cells or ["", "x"])))
    reader = wmirows.RowReader(wmirows.ISSUED, order, zone, snapshot, ParseOptions())
    reader.set_columns(columns)
    cells = wmirows.Cells(texts, 7, "raw")
    fast = reader.plain_cells(cells)
    if fast is not None:
        assert repr([fast]) == repr(reader.general(reader.row_of(cells)))


def test_plain_cells_read_the_usual_row() -> None:
    reader = wmirows.RowReader(
        wmirows.ISSUED, "mdy", wmidates.ZoneInfo("UTC"), (None, "unknown"), ParseOptions()
    )
    columns = ["PSComputerName", "LicenseId", "IssueDate", "ExpirationDate", "sHardwareId"]
    reader.set_columns([*columns, "sIssuedToComputer"])  # no KeyPackId, __SERVER, ...
    texts = ["LS01", "5", "20231005123456.000000+060", "1/4/2024 8:00:00 AM"]
    texts += ["00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6", "PC-1"]
    assert reader.plain_cells(wmirows.Cells(texts, 1, "")) is not None


@given(DATE_TEXT, st.sampled_from(["dmy", "mdy", "ymd"]), st.sampled_from(ZONES))
@settings(max_examples=1000)
def test_plain_instant_is_parse_wmi_date(text: str, order: str, zone: dt.tzinfo) -> None:
    value = wmidates.plain_instant(text, order, zone)
    if value is not None:
        general = wmidates.parse_wmi_date(text, order, zone)
        if value is wmidates.NEVER_UTC:
            assert general == (None, True, None, False)
        else:
            assert repr((value, False, None, False)) == repr(tuple(general))


@given(st.one_of(WMI_HWID_TEXT, st.text(alphabet="0Ff- \t", min_size=40, max_size=48)))
def test_wmi_dwords_hwid_is_normalize_hwid(raw: str) -> None:
    fast = hwid_module.wmi_dwords_hwid(raw)
    if fast is not None:
        assert fast == normalize_hwid(raw)[::2]


@contextlib.contextmanager
def _general_rows_only() -> Iterator[None]:
    """Every WMI row read by the general path (no plain-row path, no Cells path)."""
    with (
        mock.patch.object(wmirows.RowReader, "plain", return_value=None),
        mock.patch.object(wmirows.RowReader, "plain_cells", return_value=None),
    ):
        yield


def _plain_and_general(module: ModuleType, data: bytes, **options: object) -> None:
    plain = parse_bytes(module, data, **options)
    with _general_rows_only():
        general = parse_bytes(module, data, **options)
    assert repr(plain) == repr(general)


@pytest.mark.parametrize(
    "name", ["wmiobject_ps51_issued.csv", "report_per_device_entries.csv", "msrd_issued.html"]
)
@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_wmi_files_read_as_the_general_path_reads_them(name: str, tz: str) -> None:
    module = wmi_html if name.endswith(".html") else wmi_csv
    _plain_and_general(module, (DATA / name).read_bytes(), tz=wmidates.ZoneInfo(tz))


def _as_convertto_html(rows: list[list[str]]) -> str:
    """A table as ConvertTo-Html writes it (cell text HTML-escaped, one row a line)."""
    head = "<!DOCTYPE html>\n<html>\n<head>\n<title>HTML TABLE</title>\n</head><body>\n<table>\n"
    header = "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>\n"
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n" for row in rows[1:]
    )
    return head + "<colgroup><col/></colgroup>\n" + header + body + "</table>\n</body></html>\n"


def test_simulated_exports_read_as_the_general_path_reads_them(tmp_path: Path) -> None:
    """The simulator's three Export-Csv forms, and each as a ConvertTo-Html table."""
    from caltrail.fixtures import simulator

    simulator.simulate(
        tmp_path, seed=5, devices=40, days=90, snapshot_forms=("ps51", "ps7", "cim"), trace=False
    )
    paths = sorted(tmp_path.rglob("*Win32_TSIssuedLicense*.csv"))
    assert len(paths) >= 3
    for path in paths:
        data = path.read_bytes()
        options = {"tz": wmidates.ZoneInfo("Europe/Berlin"), "file_name": path.name}
        _plain_and_general(wmi_csv, data, **options)
        text = data.decode("utf-8-sig", errors="replace")
        rows = [r for r in csv.reader(io.StringIO(text)) if r and not r[0].startswith("#")]
        page = _as_convertto_html(rows).encode("utf-8")
        _plain_and_general(wmi_html, page, **options)
        html_rows = list(wmi_html._rows(io.BytesIO(page)))
        assert html_rows == list(wmi_html._rows(io.BytesIO(page), plain=False))
        assert sum(isinstance(i, wmirows.Cells) for i in html_rows) == len(rows) - 1
        table = wmi_html._PlainTable()
        assert list(table.rows(io.BytesIO(page))) == html_rows
        assert table.complete  # (read without going back to lxml)


# -- WMI HTML: the plain ConvertTo-Html reader against lxml ------------------------------

HTML_HEAD = (
    '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN"  "x.dtd">\n'
    '<html xmlns="http://www.w3.org/1999/xhtml">\n<head>\n<title>HTML TABLE</title>\n'
    '<script>alert("<tr><td>")</script>\n</head><body>\n<table>\n'
    "<colgroup><col/><col/><col/></colgroup>\n"
)
HTML_HEADER = "<tr><th>LicenseId</th><th>sHardwareId</th><th>sIssuedToComputer</th>"
HTML_HEADER += "<th>ExpirationDate</th></tr>"
# awkward characters: markup, entities, NUL, controls, spaces Python strips, BOM, line ends
CELL_TEXT = st.text(
    alphabet="ab5 <>&;/\"'\x00\x01\t\x0b\x0c\x1c\x7f\x85\xa0\u2028\ufeff\ufffdé\r\n", max_size=6
)
HTML_LINE = st.one_of(
    st.lists(CELL_TEXT, min_size=0, max_size=5).map(
        lambda cells: "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"
    ),
    st.sampled_from(
        [
            "<tr><td>7</td><td>00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6</td>"
            "<td>PC-1</td><td>1/4/2024 8:00:00 AM</td></tr>",
            "",
            "  ",
            "\t",
            "</table>",
            "</body></html>",
            "<table>",
            HTML_HEADER,
            "<tr><td>1</td><td>x</td>",
            "<TR><TD>1</TD></TR>",
            '<tr class="x"><td>1</td></tr>',
            "<tr><th>a</th></tr>",
            "<!--",
            "-->",
            "\ufeff<tr><td>2</td></tr>",
        ]
    ),
)


@given(
    st.lists(HTML_LINE, max_size=12),
    st.sampled_from(["\n", "\r\n"]),
    st.sampled_from([HTML_HEAD, HTML_HEAD + "<p>before</p>\n", "<table>\n", "<html><table>"]),
)
# (a header row again inside a comment, after the real one: no plain rows after it)
@example(["<!--", HTML_HEADER, "<tr><td></td></tr>"], "\n", "<html><table>")
@settings(max_examples=1000)
def test_plain_html_rows_are_lxml_rows(lines: list[str], end: str, head: str) -> None:
    text = head + HTML_HEADER + "\n" + "\n".join(lines) + "\n</table>\n</body></html>\n"
    data = text.replace("\n", end).encode("utf-8")
    plain = list(wmi_html._rows(io.BytesIO(data)))
    assert plain == list(wmi_html._rows(io.BytesIO(data), plain=False))


def test_plain_html_reads_the_plain_shape_alone() -> None:
    """The sample's shape is read without going back to lxml."""
    data = (DATA / "msrd_issued.html").read_bytes()
    table = wmi_html._PlainTable()
    items = list(table.rows(io.BytesIO(data)))
    assert table.complete
    assert items == list(wmi_html._rows(io.BytesIO(data), plain=False))


@pytest.mark.parametrize("odd_at", [None, 30_000, 69_990])
def test_plain_html_past_line_65535_is_lxml(odd_at: int | None) -> None:
    """Past line 65,535 lxml numbers a row by the end of its feed block: the plain reader
    does too, wherever the blocks end (rows of varied lengths); a row lxml must read (at
    `odd_at`) sends the file back to lxml, the rows given kept."""
    row = "<tr><td>{n}</td><td>00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6</td><td>{pad}</td>"
    row += "<td>1/4/2024 8:00:00 AM</td></tr>"
    rows = [row.format(n=n, pad="x" * (n * 7919 % 97)) for n in range(70_000)]
    if odd_at is not None:
        rows[odd_at] = rows[odd_at].replace("<td>x", "<td>&amp;x")
    data = (HTML_HEAD + HTML_HEADER + "\n" + "\n".join(rows) + "\n</table>\n").encode()
    plain = list(wmi_html._rows(io.BytesIO(data)))
    assert len(plain) == 70_001
    assert plain == list(wmi_html._rows(io.BytesIO(data), plain=False))


def test_plain_html_leaves_a_long_line_to_lxml() -> None:
    row = "<tr><td>7</td><td>00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6</td><td>{}</td>"
    row += "<td>1/4/2024 8:00:00 AM</td></tr>"
    lines = [row.format("PC-1"), row.format("x" * 70_000), row.format("PC-2")]
    data = (HTML_HEAD + HTML_HEADER + "\n" + "\n".join(lines) + "\n</table>\n").encode()
    table = wmi_html._PlainTable()
    assert len(list(table.rows(io.BytesIO(data)))) == 2  # the header and the first row
    assert not table.complete
    plain = list(wmi_html._rows(io.BytesIO(data)))
    assert plain == list(wmi_html._rows(io.BytesIO(data), plain=False))
    assert len(plain) == 4
