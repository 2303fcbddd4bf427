"""Result writers (caltrail/pipeline/output.py): valid JSON for every DuckDB type, CSV cells
as a spreadsheet reads them, a table of at most N rows that still counts every row, atomic
files."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from caltrail.pipeline import output, text_table

TYPES = """
select
    'nan'::double as nan, 'inf'::double as inf, '-inf'::double as ninf, -1.5::double as x,
    interval 1 day + interval 3 hour + interval 1.5 second as iv,
    interval 14 month as months, interval (-2) hour as back,
    'x\\x00y'::blob as blob, true as yes, false as no,
    [1, 2] as list, {'a': 1, 'b': 'nan'::double} as struct, map {'k': 'v'} as map,
    1.25::decimal(6, 2) as dec, 12345678901234567890::hugeint as huge,
    timestamptz '2025-03-01 10:00:00+00' as ts, date '2025-03-01' as day,
    time '10:00:01' as clock, null as nothing, '=1+1' as formula
"""


def batches(sql: str, rows: int = 1024) -> tuple[object, object]:
    con = duckdb.connect()
    reader = con.sql(sql).to_arrow_reader(rows)
    return reader.schema, reader


def test_json_is_valid_for_every_type() -> None:
    schema, reader = batches(TYPES)
    out = io.StringIO()
    assert output.write_json(schema, reader, out) == 1  # type: ignore[arg-type]
    text = out.getvalue()
    row = json.loads(text, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert row["nan"] is None
    assert row["inf"] is None
    assert row["ninf"] is None
    assert row["x"] == -1.5
    assert row["iv"] == "P1DT3H1.5S"
    assert row["months"] == "P1Y2M"
    assert row["back"] == "PT-2H"
    assert row["blob"] == "780079"  # hex
    assert row["yes"] is True
    assert row["no"] is False
    assert row["list"] == [1, 2]
    assert row["struct"] == {"a": 1, "b": None}
    assert row["map"] == {"k": "v"}
    assert row["dec"] == 1.25
    assert row["huge"] == 12345678901234567890
    assert row["ts"] == "2025-03-01T10:00:00+00:00"
    assert row["day"] == "2025-03-01"
    assert row["clock"] == "10:00:01"
    assert row["nothing"] is None


def test_csv_cells() -> None:
    schema, reader = batches(TYPES)
    out = io.StringIO()
    output.write_csv(schema, reader, out)  # type: ignore[arg-type]
    header, row = list(csv.reader(io.StringIO(out.getvalue())))
    cell = dict(zip(header, row, strict=True))
    assert cell["yes"] == "true"
    assert cell["no"] == "false"
    assert cell["nan"] == "NaN"
    assert cell["inf"] == "Infinity"
    assert cell["ninf"] == "-Infinity"
    assert cell["iv"] == "P1DT3H1.5S"
    assert cell["blob"] == "780079"
    assert json.loads(cell["struct"]) == {"a": 1, "b": None}
    assert json.loads(cell["map"]) == {"k": "v"}
    assert cell["ts"] == "2025-03-01T10:00:00+00:00"
    assert cell["nothing"] == ""
    assert cell["formula"] == "'=1+1"
    assert cell["x"] == "-1.5"  # a number, not a formula


def test_iso_durations() -> None:
    assert output.iso_duration() == "PT0S"
    assert output.iso_duration(months=25) == "P2Y1M"
    assert output.iso_duration(days=3, nanoseconds=90 * 60 * 10**9) == "P3DT1H30M"
    assert output.iso_duration(nanoseconds=1_000) == "PT0.000001S"


def test_table_shows_at_most_n_rows_and_counts_all() -> None:
    schema, reader = batches("select range as n, 'row ' || range as label from range(1000)", 64)
    out = io.StringIO()
    assert output.write_table(schema, reader, out, max_rows=10) == 1000  # type: ignore[arg-type]
    text = out.getvalue()
    assert text.rstrip().endswith("1,000 rows (10 shown; --max-rows 0 shows all)")
    shown = [line for line in text.splitlines() if "row " in line]
    assert len(shown) == 10
    # the first half and the last half, as the DuckDB shell shows them
    assert "row 0 " in shown[0]
    assert "row 4 " in shown[4]
    assert "row 995" in shown[5]
    assert "row 999" in shown[-1]
    assert "·" in text


def test_table_zero_max_rows_shows_every_row() -> None:
    schema, reader = batches("select range as n from range(2500)", 100)
    out = io.StringIO()
    output.write_table(schema, reader, out, max_rows=0)  # type: ignore[arg-type]
    numbers = [line.strip("│ ") for line in out.getvalue().splitlines() if line.startswith("│")]
    assert [int(n) for n in numbers if n.isdigit()] == list(range(2500))
    assert out.getvalue().rstrip().endswith("2,500 rows")


def test_table_keeps_identifiers_whole_and_hides_middle_columns() -> None:
    hwid = "02000000e5100f70ba772d2a44e8cde8a2f24791"
    names = [f"column_{i}" for i in range(30)]
    text = text_table.table_text(names, [[hwid] * 30], width=120)
    assert hwid in text  # never cut or wrapped
    assert "30 columns (" in text
    assert all(len(line) <= 120 for line in text.splitlines())
    small = text_table.table_text(["a", "note"], [[1, "a long text " * 20]], width=60, max_cell=None)
    assert all(len(line) <= 60 for line in small.splitlines())
    assert "text" in small


def test_table_cells_are_never_markup_and_stay_on_their_row() -> None:
    text = text_table.table_text(["v"], [["[bold]x\nsecond line"]], width=80)
    assert "[bold]x ⏎ second line" in text


def test_output_stream_is_atomic(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old\n", encoding="utf-8")

    def fail_half_way() -> None:
        with output.output_stream(target, io.StringIO()) as handle:
            handle.write("partial")
            raise RuntimeError("query failed half way")

    with pytest.raises(RuntimeError):
        fail_half_way()
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]
    with output.output_stream(target, io.StringIO()) as handle:
        handle.write("new\n")
    assert target.read_text(encoding="utf-8") == "new\n"


@pytest.mark.parametrize("zone", ["UTC", "Etc/UTC", "Europe/Berlin"])
def test_times_read_the_same_whatever_the_path(zone: str) -> None:
    """UTC times are read without their zone (fast) and written with it: the same text as
    the time read with its zone, micro- and whole seconds, nulls; another zone keeps its own."""
    micros = [0, 1_740_823_200_000_000, 1_740_823_200_123_456, None, -1]
    column = pa.array(micros, pa.timestamp("us", tz=zone))
    expected = [None if v is None else v.isoformat() for v in column.to_pylist()]
    out = io.StringIO()
    schema = pa.schema([pa.field("t", column.type)])
    output.write_json(schema, [pa.record_batch([column], schema=schema)], out)
    assert [json.loads(line)["t"] for line in out.getvalue().splitlines()] == expected
    assert expected[2].endswith(".123456+00:00" if zone != "Europe/Berlin" else ".123456+01:00")


def test_csv_cells_lose_terminal_escapes_before_the_formula_check() -> None:
    """A log value with terminal escapes cannot recolour a terminal that prints the CSV, nor
    hide a formula behind them; JSON keeps the value, escaped."""
    assert output.safe_csv_cell("PC\x07\x1b[31mRED\x1b[0m") == "PC\x07RED"
    assert output.safe_csv_cell("\x1b[31m=1+1") == "'=1+1"
    assert output.safe_csv_cell("a\x1b]0;title\x07b") == "a0;title\x07b"  # ESC ] goes
    column = pa.array(["\x1b[2J"])
    schema = pa.schema([pa.field("name", pa.string())])
    out = io.StringIO()
    output.write_json(schema, [pa.record_batch([column], schema=schema)], out)
    assert json.loads(out.getvalue())["name"] == "\x1b[2J"
    assert "\\u001b" in out.getvalue()
