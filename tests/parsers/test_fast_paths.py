"""The short cuts the text readers take for speed give what the general code gives.

Each fast path (issue 7, parser throughput) is held against the slower, general reading it
stands in for, on generated inputs that include the awkward characters.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from parsers import tracerpt_csv, wmi_csv, wmi_html, wmidates
from parsers.hwid import HWID_LENGTH, hwid_from_dwords, normalize_hwid
from parsers.textio import iter_blocks, iter_lines
from parsers.tracetime import _JUNK_RE, is_junk, parse_int
from tests.parsers.items import parse_bytes

DATA = Path(__file__).parent / "data" / "exports"
CSV_TEXT = st.text(alphabet='",;ab \t\x00\né', max_size=14)


@given(CSV_TEXT, st.sampled_from([",", ";"]))
@settings(max_examples=2000)
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
