"""The subject of `caltrail timeline`: a HWID in any rendering caltrail reads, or a computer
name, resolved to what the lake holds, and the timeline queries with a time window.

A HWID is read by the same code as the parsers (caltrail/parsers/hwid.py): registry bytes,
five DWORDs as TSCTST (`0x00000002, 0x7d4eb2c0, ...`) or the WMI export
(`00000002-7D4EB2C0-...`) print them, or 40 hex digits. A plain 40-hex string whose platform
id does not tell its byte order is tried in both orders, and the one the lake holds is taken.
"""

from __future__ import annotations

import duckdb

from caltrail.parsers.hwid import FLAG_AMBIGUOUS_ORDER, normalize_hwid

# The timeline macros' rows (caltrail/queries/45_timelines.sql) inside the window; rows of
# unknown time are kept only when no window is given.
HWID_TIMELINE = """
select * from hwid_timeline($subject)
where ($from is null or ts >= $from) and ($to is null or ts < $to)
"""
NAME_TIMELINE = """
select * from name_timeline($subject)
where ($from is null or ts >= $from) and ($to is null or ts < $to)
"""


def hwid_candidates(text: str) -> list[str]:
    """The canonical forms a user's HWID may stand for, most likely first (one, or two for
    a plain 40-hex string of unknown byte order). ValueError when it is no HWID."""
    result = normalize_hwid(text.strip())
    if result.hwid is None:
        raise ValueError(
            f"not a HWID: {text!r} (expected 20 bytes: 40 hex digits, registry bytes "
            "02,00,..., or five DWORDs 0x00000002, ... / 00000002-...)"
        )
    found = [result.hwid]
    if result.flag == FLAG_AMBIGUOUS_ORDER:
        for order in ("bytes", "dwords"):
            other = normalize_hwid(text.strip(), plain_hex_order=order).hwid
            if other is not None and other not in found:
                found.append(other)
    return found


def find_hwid(con: duckdb.DuckDBPyConnection, candidates: list[str]) -> str | None:
    """The first candidate the lake has a history for, or None."""
    for hwid in candidates:
        (count,) = con.execute(
            "select count(*) from license_life where hwid = $hwid", {"hwid": hwid}
        ).fetchall()[0]
        if count:
            return hwid
    return None


def name_known(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the lake has a history for this computer name (normalised as every name)."""
    (count,) = con.execute(
        "select count(*) from license_life where client_name = norm_name($name)", {"name": name}
    ).fetchall()[0]
    return bool(count)


__all__ = ["HWID_TIMELINE", "NAME_TIMELINE", "find_hwid", "hwid_candidates", "name_known"]
