"""Client hardware id (HWID) renderings, converted to caltrail's one canonical form.

Sources:
- MS-RDPELE 2.2.2.3.1 CLIENT_HARDWARE_ID: PlatformId (4 bytes) + Data1..Data4 (4 bytes each),
  20 bytes, each field a little-endian 32-bit integer on the wire.
- docs/LICENSING.md ("The HWID"): the registry value
  `HKLM\\SOFTWARE\\Microsoft\\MSLicensing\\HardwareID\\ClientHWID` holds those 20 bytes
  (REG_BINARY); TSCTST prints them as five DWORDs
  (`HWID: 0x00000002, 0x7d4eb2c0, 0x37ffa910, 0x75eb542b, 0x87707af6`).
- docs/LICENSING.md ("WMI classes"): `Win32_TSIssuedLicense.sHardwareId` has no documented
  rendering.

Canonical form: the 20 bytes in registry (wire) order, i.e. each DWORD little-endian, as 40
lower-case hex characters. For the TSCTST example above that is
`02000000c0b24e7d10a9ff372b54eb75f67a7087`.

Assumptions:
- [U] `sHardwareId` rendering. We read five separated groups as five DWORDs (the form our
  simulator writes: `00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6`), 20 separated groups as
  bytes, and a plain 40-hex string by looking at the platform id: real platform ids are
  small numbers with a non-zero low byte and a zero high byte (2 for Windows clients,
  0x000000ff, 0x00020001 in a Windows Mobile sample), so `02000000...` is byte order and
  `00000002...` DWORD order. When the first four bytes cannot tell (e.g. `00000000`), the
  string is read in `DEFAULT_PLAIN_HEX_ORDER` and flagged "ambiguous_order".
- FreeRDP before 2.0.0-rc4 (and with `/old-license`) zeroes a 20-byte buffer, leaves the
  platform id 0 and writes the raw MD5 digest of six zero bytes
  (`7319468847d7b1aee40dbf5dd963c999`) at offset 4, and sends the buffer as is. Its canonical
  form is therefore `FREERDP_LEGACY_HWID` = `00000000` + that digest, i.e. the DWORDs
  0x00000000, 0x88461973, 0xaeb1d747, 0x5dbf0de4, 0x99c963d9. Flag "freerdp_legacy".
- [U] The Microsoft Store Remote Desktop app has been reported to change its HWID over time,
  with HWIDs "starting with ff" (docs/LICENSING.md, "Odd clients"). Which rendering the reports used is not
  known, so a HWID whose canonical form or whose DWORD rendering starts with `ff` is flagged
  "store_app_ff". The flag is a hint for the diagnosis; it never changes the value.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence
from typing import Literal, NamedTuple

PlainHexOrder = Literal["bytes", "dwords"]

#: How a plain 40-hex string is read when its platform id does not tell the order.
DEFAULT_PLAIN_HEX_ORDER: PlainHexOrder = "bytes"

HWID_LENGTH = 20

#: platform id 0 + MD5(six zero bytes), canonical (registry) order.
FREERDP_LEGACY_HWID = "00000000" + "7319468847d7b1aee40dbf5dd963c999"

FLAG_UNCONVERTIBLE = "unconvertible"
FLAG_FREERDP_LEGACY = "freerdp_legacy"
FLAG_STORE_APP_FF = "store_app_ff"
FLAG_AMBIGUOUS_ORDER = "ambiguous_order"

_SEPARATORS = re.compile(r"[\s,;:\-_.]+")
_HEX = re.compile(r"[0-9a-f]+")
_REG_PREFIX = re.compile(r"^hex(\([0-9a-f]+\))?:", re.IGNORECASE)
# The sHardwareId rendering (five DWORDs, `-` between): the common case, read without the
# general tokenising below (same result: wmi_dwords_hwid).
_WMI_LENGTH = 44  # five groups of 8 hex digits and their 4 dashes
_DWORDS_BE = struct.Struct(">5I")
_DWORDS_LE = struct.Struct("<5I")


class HwidResult(NamedTuple):
    """The outcome of normalising one HWID rendering (a NamedTuple: immutable, and cheap
    to make, one per row of an export).

    Attributes:
        hwid: canonical 40 lower-case hex chars, or None when `raw` cannot be converted
            (or is empty).
        raw: the input as text, as found (bytes and int sequences rendered as hex).
        flag: None, or one of "unconvertible", "freerdp_legacy", "store_app_ff",
            "ambiguous_order".
    """

    hwid: str | None
    raw: str
    flag: str | None


def hwid_from_registry_bytes(b: bytes) -> str:
    """Canonical HWID from the 20 REG_BINARY bytes of `ClientHWID` (already in our order)."""
    if len(b) != HWID_LENGTH:
        raise ValueError(f"a HWID has {HWID_LENGTH} bytes, found {len(b)}")
    return bytes(b).hex()


def hwid_from_dwords(dwords: Sequence[int]) -> str:
    """Canonical HWID from five 32-bit integers (PlatformId, Data1..Data4)."""
    if len(dwords) != 5:
        raise ValueError(f"a HWID has 5 DWORDs, found {len(dwords)}")
    out = bytearray()
    for value in dwords:
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"DWORD out of range: {value!r}")
        out += int(value).to_bytes(4, "little")
    return out.hex()


def hwid_to_dwords(hwid: str) -> tuple[int, ...]:
    """The five DWORDs (PlatformId, Data1..Data4) of a canonical HWID."""
    data = _canonical_bytes(hwid)
    return tuple(int.from_bytes(data[i : i + 4], "little") for i in range(0, HWID_LENGTH, 4))


def render_registry_hex(hwid: str) -> str:
    """The `.reg` rendering of the value bytes: `02,00,00,00,c0,...`."""
    return ",".join(f"{b:02x}" for b in _canonical_bytes(hwid))


def render_dwords(hwid: str) -> str:
    """The TSCTST rendering: `0x00000002, 0x7d4eb2c0, ...`."""
    return ", ".join(f"0x{d:08x}" for d in hwid_to_dwords(hwid))


def render_wmi(hwid: str) -> str:
    """The simulator's `sHardwareId` rendering: `00000002-7D4EB2C0-37FFA910-75EB542B-87707AF6`."""
    return "-".join(f"{d:08X}" for d in hwid_to_dwords(hwid))


def normalize_hwid(
    raw: str | bytes | Sequence[int],
    plain_hex_order: PlainHexOrder = DEFAULT_PLAIN_HEX_ORDER,
) -> HwidResult:
    """Convert any known HWID rendering to the canonical form; never guesses.

    Accepted: 20 bytes; a sequence of 20 byte values or of 5 DWORDs; text with 20 byte groups
    (`02,00,00,00,...`, optionally `hex:`/`hex(3):` prefixed), 5 DWORD groups (`0x00000002,
    0x7d4eb2c0, ...` or `00000002-7D4EB2C0-...`), or 40 hex digits (plain or in other even
    groupings), any case, `0x` prefixes, separators `-`, `:`, `,`, `;`, `.`, `_`, spaces.
    """
    if isinstance(raw, str):  # (the usual input: tested first)
        return _from_text(raw, plain_hex_order)
    if isinstance(raw, bytes | bytearray | memoryview):
        data = bytes(raw)
        text = data.hex()
        if len(data) != HWID_LENGTH:
            return HwidResult(None, text, FLAG_UNCONVERTIBLE)
        return _finish(data.hex(), text, None)
    return _from_ints(list(raw))


def _from_ints(values: list[object]) -> HwidResult:
    text = ",".join(str(v) for v in values)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return HwidResult(None, text, FLAG_UNCONVERTIBLE)
    ints = [int(v) for v in values if isinstance(v, int)]
    if len(ints) == HWID_LENGTH and all(0 <= v <= 0xFF for v in ints):
        return _finish(bytes(ints).hex(), text, None)
    if len(ints) == 5 and all(0 <= v <= 0xFFFFFFFF for v in ints):
        return _finish(hwid_from_dwords(ints), text, None)
    return HwidResult(None, text, FLAG_UNCONVERTIBLE)


def wmi_dwords_hwid(raw: str) -> tuple[str, str | None] | None:
    """(canonical HWID, flag) of the WMI rendering `00000002-7D4EB2C0-...` (nearly every
    HWID a WMI export holds), as `normalize_hwid` reads it, without its result tuple; None
    for any other text (then ask `normalize_hwid`). (Also written over columns in
    caltrail/pipeline/row_blocks.py.)

    Read without the regex: of its 40 other characters, bytes.fromhex makes 20 bytes only
    when all are hex digits (it skips spaces, leaving fewer digits, and refuses anything
    else), which is what the pattern `[0-9A-Fa-f]{8}(?:-[0-9A-Fa-f]{8}){4}` matches. The five DWORDs as written (big-endian
    hex), each stored little-endian, as hwid_from_dwords writes them."""
    if not (len(raw) == _WMI_LENGTH and raw[8] == raw[17] == raw[26] == raw[35] == "-"):
        return None
    try:
        data = bytes.fromhex(raw.replace("-", ""))
    except ValueError:
        return None
    if len(data) != HWID_LENGTH:
        return None
    hwid = _DWORDS_LE.pack(*_DWORDS_BE.unpack(data)).hex()
    return hwid, _flag(hwid, None)


def _from_text(raw: str, order: PlainHexOrder) -> HwidResult:
    wmi = wmi_dwords_hwid(raw)
    if wmi is not None:
        return HwidResult(wmi[0], raw, wmi[1])
    text = raw.strip().strip("{}[]()\"'").strip()
    if not text:
        return HwidResult(None, raw, None)
    text = _REG_PREFIX.sub("", text.lower())
    tokens = [t for t in _SEPARATORS.split(text) if t]
    tokens = [t[2:] if t.startswith("0x") and len(t) > 2 else t for t in tokens]
    if not tokens or not all(_HEX.fullmatch(t) for t in tokens):
        return HwidResult(None, raw, FLAG_UNCONVERTIBLE)
    if len(tokens) == HWID_LENGTH and all(len(t) <= 2 for t in tokens):
        return _finish("".join(t.zfill(2) for t in tokens), raw, None)
    if len(tokens) == 5 and all(len(t) <= 8 for t in tokens):
        return _finish(hwid_from_dwords([int(t, 16) for t in tokens]), raw, None)
    joined = "".join(tokens)
    if len(joined) == 2 * HWID_LENGTH and all(len(t) % 2 == 0 for t in tokens):
        return _plain_hex(joined, raw, order)
    return HwidResult(None, raw, FLAG_UNCONVERTIBLE)


def _plausible_platform_id(value: int) -> bool:
    """A real platform id: non-zero low byte, zero high byte (2, 0xff, 0x00020001, ...)."""
    return value & 0xFF != 0 and value >> 24 == 0


def _plain_hex(hex40: str, raw: str, order: PlainHexOrder) -> HwidResult:
    as_bytes = hex40
    as_dwords = hwid_from_dwords([int(hex40[i : i + 8], 16) for i in range(0, 40, 8)])
    if FREERDP_LEGACY_HWID in (as_bytes, as_dwords):
        return HwidResult(FREERDP_LEGACY_HWID, raw, FLAG_FREERDP_LEGACY)
    if _plausible_platform_id(int.from_bytes(bytes.fromhex(hex40[:8]), "little")):
        return _finish(as_bytes, raw, None)
    if _plausible_platform_id(int(hex40[:8], 16)):
        return _finish(as_dwords, raw, None)
    return HwidResult(as_bytes if order == "bytes" else as_dwords, raw, FLAG_AMBIGUOUS_ORDER)


def _finish(hwid: str, raw: str, flag: str | None) -> HwidResult:
    return HwidResult(hwid, raw, _flag(hwid, flag))


def _flag(hwid: str, flag: str | None) -> str | None:
    """The flag a canonical HWID carries: what its value says, else `flag`."""
    if hwid == FREERDP_LEGACY_HWID:
        return FLAG_FREERDP_LEGACY
    # canonical starts with ff, or the DWORD rendering does (high byte of PlatformId = byte 3)
    if hwid.startswith("ff") or hwid[6:8] == "ff":
        return FLAG_STORE_APP_FF
    return flag


def _canonical_bytes(hwid: str) -> bytes:
    if len(hwid) != 2 * HWID_LENGTH or not _HEX.fullmatch(hwid):
        raise ValueError(f"not a canonical HWID (40 lower-case hex chars): {hwid!r}")
    return bytes.fromhex(hwid)


__all__ = [
    "DEFAULT_PLAIN_HEX_ORDER",
    "FLAG_AMBIGUOUS_ORDER",
    "FLAG_FREERDP_LEGACY",
    "FLAG_STORE_APP_FF",
    "FLAG_UNCONVERTIBLE",
    "FREERDP_LEGACY_HWID",
    "HwidResult",
    "hwid_from_dwords",
    "hwid_from_registry_bytes",
    "hwid_to_dwords",
    "normalize_hwid",
    "render_dwords",
    "render_registry_hex",
    "render_wmi",
    "wmi_dwords_hwid",
]
