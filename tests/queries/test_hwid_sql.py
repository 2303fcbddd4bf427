"""One HWID canonical form: the SQL macros that read HWIDs out of trace text give what
caltrail/parsers/hwid.py gives for every rendering Windows and the exports print."""

from __future__ import annotations

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from caltrail import queries
from caltrail.parsers.hwid import (
    normalize_hwid,
    render_dwords,
    render_registry_hex,
    render_wmi,
)

HWID_MACROS = (
    "hwid_dword_le",
    "hwid_plain_hex",
    "hwid_tokens",
    "hwid_from_tokens",
    "hwid_from_text",
)


def macros() -> duckdb.DuckDBPyConnection:
    """A connection holding the HWID macros exactly as the query files define them."""
    con = duckdb.connect()
    found = [
        s
        for s in queries.statements()
        if s.object_kind == "macro"
        and (s.creates or "").startswith("hwid_")
        and "as table" not in s.sql  # the timelines: not about the form
    ]
    assert set(HWID_MACROS) <= {s.creates for s in found}
    for statement in found:
        con.execute(statement.sql)
    return con


CON = macros()


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16), st.sampled_from([1, 2, 3]))
def test_sql_and_python_agree_on_every_rendering(data: bytes, platform: int) -> None:
    canonical = (platform.to_bytes(4, "little") + data).hex()
    renderings = [
        render_registry_hex(canonical),
        render_registry_hex(canonical).upper().replace(",", " "),
        render_dwords(canonical),
        render_wmi(canonical),
        canonical,
        canonical.upper(),
    ]
    # one query for the six (the macros' expression is compiled per query: the cost)
    sql = CON.execute(
        "select list(hwid_from_text(r) order by i) from unnest(?::varchar[]) "
        "with ordinality as t(r, i)",
        [renderings],
    ).fetchone()
    assert sql is not None
    for rendering, from_sql in zip(renderings, sql[0], strict=True):
        assert normalize_hwid(rendering).hwid == canonical, rendering
        assert from_sql == canonical, rendering


def test_both_refuse_what_is_no_hwid() -> None:
    for text in ("", "0x12", "not a hwid", "02,00,00"):
        (sql,) = CON.execute("select hwid_from_text(?)", [text]).fetchone() or (None,)
        assert sql is None, text
        assert normalize_hwid(text).hwid is None, text
