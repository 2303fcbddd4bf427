"""HWID renderings -> one canonical form (parsers.hwid)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from caltrail.parsers.hwid import (
    FREERDP_LEGACY_HWID,
    HwidResult,
    hwid_from_dwords,
    hwid_from_registry_bytes,
    hwid_to_dwords,
    normalize_hwid,
    render_dwords,
    render_registry_hex,
    render_wmi,
)

# The documented example (docs/LICENSING.md, "The HWID"): TSCTST five DWORDs <-> registry bytes.
TSCTST = "0x00000002, 0x7d4eb2c0, 0x37ffa910, 0x75eb542b, 0x87707af6"
REGISTRY = "02,00,00,00,c0,b2,4e,7d,10,a9,ff,37,2b,54,eb,75,f6,7a,70,87"
CANONICAL = "02000000c0b24e7d10a9ff372b54eb75f67a7087"
WMI = "00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6"


def test_documented_example_every_rendering() -> None:
    for raw in (TSCTST, REGISTRY, f"hex:{REGISTRY}", f"hex(3):{REGISTRY}", WMI, CANONICAL):
        assert normalize_hwid(raw) == HwidResult(CANONICAL, raw, None), raw
    assert render_dwords(CANONICAL) == TSCTST
    assert render_registry_hex(CANONICAL) == REGISTRY
    assert render_wmi(CANONICAL) == WMI
    assert hwid_to_dwords(CANONICAL) == (0x2, 0x7D4EB2C0, 0x37FFA910, 0x75EB542B, 0x87707AF6)
    assert hwid_from_dwords([2, 0x7D4EB2C0, 0x37FFA910, 0x75EB542B, 0x87707AF6]) == CANONICAL
    assert hwid_from_registry_bytes(bytes.fromhex(CANONICAL)) == CANONICAL


@pytest.mark.parametrize(
    "raw",
    [
        "00000002:7d4eb2c0:37ffa910:75eb542b:87707af6",
        "00000002 7D4EB2C0 37FFA910 75EB542B 87707AF6",
        "{0x2,0x7D4EB2C0,0x37FFA910,0x75EB542B,0x87707AF6}",
        "0x000000027D4EB2C037FFA91075EB542B87707AF6",
        "02 00 00 00 C0 B2 4E 7D 10 A9 FF 37 2B 54 EB 75 F6 7A 70 87",
        "0200-0000-c0b2-4e7d-10a9-ff37-2b54-eb75-f67a-7087",
    ],
)
def test_separators_prefixes_and_case(raw: str) -> None:
    assert normalize_hwid(raw).hwid == CANONICAL


def test_bytes_and_int_sequences() -> None:
    data = bytes.fromhex(CANONICAL)
    assert normalize_hwid(data).hwid == CANONICAL
    assert normalize_hwid(list(data)).hwid == CANONICAL
    assert normalize_hwid(list(hwid_to_dwords(CANONICAL))).hwid == CANONICAL


def test_plain_hex_order_decided_by_platform_id() -> None:
    dword_order = "00000002" + "7d4eb2c037ffa91075eb542b87707af6"
    assert normalize_hwid(dword_order) == HwidResult(CANONICAL, dword_order, None)
    assert normalize_hwid(CANONICAL).flag is None
    # Windows Mobile sample (docs/FORMATS.md, "Registry exports"): platform id 0x00020001
    mobile = "010002000040056a0e9d010800204fac10406000"
    assert normalize_hwid(mobile).hwid == mobile


def test_plain_hex_ambiguous_uses_default_and_flags() -> None:
    raw = "00000000" + "11" * 16
    as_bytes = normalize_hwid(raw)
    assert as_bytes == HwidResult(raw, raw, "ambiguous_order")
    as_dwords = normalize_hwid(raw, plain_hex_order="dwords")
    assert as_dwords.flag == "ambiguous_order"
    assert as_dwords.hwid == hwid_from_dwords([0] + [0x11111111] * 4)


def test_freerdp_legacy_constant() -> None:
    digest = hashlib.md5(bytes(6)).hexdigest()
    assert digest == "7319468847d7b1aee40dbf5dd963c999"
    assert "00000000" + digest == FREERDP_LEGACY_HWID
    dwords = "0x00000000, 0x88461973, 0xaeb1d747, 0x5dbf0de4, 0x99c963d9"
    assert render_dwords(FREERDP_LEGACY_HWID) == dwords
    for raw in (dwords, FREERDP_LEGACY_HWID, "0000000088461973aeb1d7475dbf0de499c963d9"):
        assert normalize_hwid(raw) == HwidResult(FREERDP_LEGACY_HWID, raw, "freerdp_legacy")


def test_store_app_ff_flag() -> None:
    assert normalize_hwid("0x000000ff, 1, 2, 3, 4").flag == "store_app_ff"
    assert normalize_hwid("FF000001-00000001-00000002-00000003-00000004").flag == "store_app_ff"


@pytest.mark.parametrize(
    "raw",
    ["xyz", "0x00000002, 0x7d4eb2c0", "02,00,00", "1" * 39, "g" * 40, "0x100000000,1,2,3,4"],
)
def test_unconvertible_is_never_guessed(raw: str) -> None:
    assert normalize_hwid(raw) == HwidResult(None, raw, "unconvertible")


def test_unconvertible_sequences_and_bytes() -> None:
    assert normalize_hwid(b"\x02\x00").flag == "unconvertible"
    assert normalize_hwid([1, 2, 3]).flag == "unconvertible"
    assert normalize_hwid([256] * 20).flag == "unconvertible"


def test_empty_is_missing_not_unconvertible() -> None:
    assert normalize_hwid("  ") == HwidResult(None, "  ", None)


def test_renderers_reject_non_canonical() -> None:
    with pytest.raises(ValueError, match="canonical"):
        render_wmi("02000000")
    with pytest.raises(ValueError, match="5 DWORDs"):
        hwid_from_dwords([1, 2])


@given(st.binary(min_size=20, max_size=20))
def test_every_rendering_gives_one_canonical_value(data: bytes) -> None:
    canonical = data.hex()
    renderings: list[str | bytes | list[int]] = [
        data,
        list(data),
        list(hwid_to_dwords(canonical)),
        render_registry_hex(canonical),
        "hex:" + render_registry_hex(canonical),
        render_dwords(canonical),
        render_dwords(canonical).upper().replace("0X", "0x"),
        render_wmi(canonical),
        render_wmi(canonical).lower(),
        render_wmi(canonical).replace("-", " "),
    ]
    for raw in renderings:
        assert normalize_hwid(raw).hwid == canonical, raw
    plain = normalize_hwid(canonical)
    # A plain 40-hex string is read in byte order unless its platform id says otherwise.
    if plain.flag != "freerdp_legacy":
        assert plain.hwid in (
            canonical,
            hwid_from_dwords([int(canonical[i : i + 8], 16) for i in range(0, 40, 8)]),
        )


@given(
    st.one_of(st.text(max_size=80), st.binary(max_size=30), st.lists(st.integers(), max_size=25))
)
def test_never_raises(raw: str | bytes | list[int]) -> None:
    result = normalize_hwid(raw)
    assert result.hwid is None or len(result.hwid) == 40
