"""Code tables of the RDS licensing WMI classes, both ways (number -> name, name -> number).

Sources: docs/LICENSING.md ("WMI classes": Win32_TSIssuedLicense and
Win32_TSLicenseKeyPack), from Microsoft's WMI class documentation.

Assumptions:
- [U] ProductVersionID 5-8 (2016, 2019, 2022, 2025): no primary source; named
  "2016 (unconfirmed)" etc. Codes outside the tables (e.g. ProductType 3 or
  ProductVersionID 0 in the Checkmk sample) keep their number and get no name.
- [U] CIM exports sometimes carry names instead of numbers; names are matched
  case-insensitively, ignoring spaces, `-`, `_` and a trailing "(unconfirmed)".
"""

from __future__ import annotations

import re
from collections.abc import Mapping

LICENSE_STATUS: Mapping[int, str] = {
    0: "Unknown",
    1: "Temporary",
    2: "Active",
    3: "Upgrade",
    4: "Revoked",
    5: "Pending",
    6: "Concurrent",
}

KEYPACK_TYPE: Mapping[int, str] = {
    0: "unknown",
    1: "retail",
    2: "volume",
    3: "concurrent",
    4: "temporary",
    5: "open",
    6: "built-in",
}

PRODUCT_TYPE: Mapping[int, str] = {
    0: "per device",
    1: "per user",
    2: "invalid",
}

PRODUCT_VERSION_ID: Mapping[int, str] = {
    2: "2008",
    3: "2008 R2",
    4: "2012",
    5: "2016 (unconfirmed)",
    6: "2019 (unconfirmed)",
    7: "2022 (unconfirmed)",
    8: "2025 (unconfirmed)",
}

#: Extra spellings seen or plausible in CIM / localised exports ([U]).
_ALIASES: Mapping[str, Mapping[str, int]] = {
    "license_status": {"temp": 1, "permanent": 2, "issued": 2},
    "keypack_type": {"builtin": 6, "retailpurchase": 1, "volumelicense": 2},
    "product_type": {"device": 0, "user": 1, "perdevicecal": 0, "perusercal": 1},
    "product_version_id": {
        "windowsserver2008": 2,
        "windowsserver2008r2": 3,
        "windowsserver2012": 4,
        "windowsserver2016": 5,
        "windowsserver2019": 6,
        "windowsserver2022": 7,
        "windowsserver2025": 8,
    },
}

TABLES: Mapping[str, Mapping[int, str]] = {
    "license_status": LICENSE_STATUS,
    "keypack_type": KEYPACK_TYPE,
    "product_type": PRODUCT_TYPE,
    "product_version_id": PRODUCT_VERSION_ID,
}

_INT = re.compile(r"[+-]?\d+")


def _key(text: str) -> str:
    text = text.lower().replace("(unconfirmed)", "")
    return re.sub(r"[\s\-_.]+", "", text)


_REVERSE: dict[str, dict[str, int]] = {
    table: {**{_key(name): code for code, name in codes.items()}, **_ALIASES.get(table, {})}
    for table, codes in TABLES.items()
}


def code_name(table: str, code: int | None) -> str | None:
    """The name of `code` in `table` ("license_status", "keypack_type", ...), or None."""
    if code is None:
        return None
    return TABLES[table].get(code)


def code_from_text(table: str, text: str) -> int | None:
    """Read a code given as a number or as its name; None when it is neither.

    >>> code_from_text("license_status", "2"), code_from_text("license_status", "Active")
    (2, 2)
    """
    text = text.strip()
    if (text.isascii() and text.isdigit()) or _INT.fullmatch(text):
        value = int(text)
        # Codes are small enums stored as int32: a number beyond that is no known code.
        return value if -(1 << 31) <= value < (1 << 31) else None
    return _REVERSE[table].get(_key(text))


__all__ = [
    "KEYPACK_TYPE",
    "LICENSE_STATUS",
    "PRODUCT_TYPE",
    "PRODUCT_VERSION_ID",
    "TABLES",
    "code_from_text",
    "code_name",
]
