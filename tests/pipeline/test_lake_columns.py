"""Columns built by the lake's writer equal what pyarrow builds from the same values."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from caltrail.pipeline.lake import column_array
from caltrail.pipeline.schemas import STR_MAP

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
