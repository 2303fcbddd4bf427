"""Small pieces the bulk readers of RowBlocks share (pipeline/row_blocks.py for the WMI
readers, pipeline/trace_blocks.py for tracerpt CSV): typed constants, the whitespace
Python's `str.strip` removes, and the tests of a boolean column every rule asks.
"""

from __future__ import annotations

from functools import lru_cache

import pyarrow as pa
import pyarrow.compute as pc

# Every character Python's str.strip() removes (those for which str.isspace() is true; a
# test holds the two equal): utf8_trim with them strips a cell as the per-row reading does.
PY_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)

# Constants as typed Arrow scalars: a Python number or text given to a compute function is
# converted on every call, and that conversion tries to import an optional module each time
# (0.1 ms a call, more than the kernels of a block).
TS = pa.timestamp("us", tz="UTC")
FALSE = pa.scalar(False)
NULL_TEXT = pa.scalar(None, pa.string())
NULL_INT = pa.scalar(None, pa.int64())
EMPTY = pa.scalar("", pa.string())


@lru_cache(maxsize=256)
def i64(value: int) -> pa.Int64Scalar:
    return pa.scalar(value, pa.int64())


@lru_cache(maxsize=64)
def str_scalar(value: str) -> pa.StringScalar:
    return pa.scalar(value, pa.string())


def any_true(mask: pa.Array) -> bool:
    """Whether some row of a boolean column is true."""
    return bool(pc.any(pc.fill_null(mask, FALSE)).as_py())


def all_true(mask: pa.Array) -> bool:
    """Whether every row of a boolean column is true (a null is not)."""
    return bool(pc.all(pc.fill_null(mask, FALSE)).as_py())


def none_if_empty(texts: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(texts, EMPTY), NULL_TEXT, texts)


def stripped(texts: pa.Array) -> pa.Array:
    """`(text and text.strip()) or None`."""
    return none_if_empty(pc.utf8_trim(texts, characters=PY_WHITESPACE))
