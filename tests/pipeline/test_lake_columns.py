"""Columns built by the lake's writer equal what pyarrow builds from the same values."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import given
from hypothesis import strategies as st

from caltrail.pipeline.lake import TableBuffer, column_array
from caltrail.pipeline.schemas import LINEAGE_NAMES, STR_MAP

texts = st.text(max_size=12)
mappings = st.dictionaries(texts, st.none() | texts, max_size=6)


@given(st.lists(mappings, max_size=30))
def test_map_column_from_flat_lists_equals_pyarrow_conversion(
    values: list[dict[str, str | None]],
) -> None:
    built = column_array(values, STR_MAP)
    assert built.type == STR_MAP
    assert built.equals(pa.array(values, STR_MAP))
    assert built.to_pylist() == [list(v.items()) for v in values]


def test_a_missing_map_is_null_not_empty() -> None:
    built = column_array([{"a": "1"}, None, {}], STR_MAP)
    assert built.to_pylist() == [[("a", "1")], None, []]
    assert built.null_count == 1


def test_plain_columns_keep_their_declared_type() -> None:
    assert column_array([1, None, 3], pa.int32()).type == pa.int32()
    assert column_array(("x", None), pa.string()).to_pylist() == ["x", None]


def test_a_value_its_column_cannot_hold_costs_its_record_only(tmp_path: Path) -> None:
    """A batch whose conversion fails is converted again row by row: the row whose
    license_status is beyond int32 becomes a `value_misfit` issue naming its line, the
    others are written."""
    buffer = TableBuffer("issued_licenses", dict.fromkeys(LINEAGE_NAMES, "x"), tmp_path, "p")
    names = [n for n in buffer.schema.names if n not in LINEAGE_NAMES]

    def row(line: int, status: int) -> SimpleNamespace:
        values: dict[str, object] = dict.fromkeys(names)
        values.update(line=line, license_status=status, expiration_never=False)
        return SimpleNamespace(**values)

    for line, status in ((2, 1), (3, 2**40), (4, 4)):
        buffer.add(row(line, status))
    buffer.flush()
    assert buffer.count == 2
    assert [(i.kind, i.line, i.quarantined) for i in buffer.rejected] == [("value_misfit", 3, True)]
    assert "license_status" in buffer.rejected[0].message or "int" in buffer.rejected[0].message
    written = pq.read_table(buffer.staged[0].path)
    assert written.column("line").to_pylist() == [2, 4]
    assert written.column("license_status").to_pylist() == [1, 4]
