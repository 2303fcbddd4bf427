"""Column names of WMI exports as tools spell them, read as the class's columns.

Sources: docs/FORMATS.md ("WMI exports": columns are found by name);
Microsoft's guidance on RDS Per Device CALs issued several times to one device, whose
"Script for RDS Per Devices CALs" exports `Select-Object` calculated properties named
"Keypack ID", "License ID", "client name", "Hardware ID", "Expiration date".

Assumptions:
- [U] A column is compared with its spaces, `_` and `-` removed and lower-cased, and a few
  spellings are aliases of a class column (`COLUMN_ALIASES`).
"""

from __future__ import annotations

import re

# Column names as `Select-Object` calculated properties or report tools spell them: the
# name with spaces, `_` and `-` removed and lower-cased -> the class's column (lower case).
COLUMN_ALIASES = {
    "clientname": "sissuedtocomputer",
    "computername": "sissuedtocomputer",
    "clientcomputer": "sissuedtocomputer",
    "clientcomputername": "sissuedtocomputer",
    "issuedtocomputer": "sissuedtocomputer",
    "issuedtomachine": "sissuedtocomputer",
    "issuedtouser": "sissuedtouser",
    "clientuser": "sissuedtouser",
    "hardwareid": "shardwareid",
    "clienthardwareid": "shardwareid",
    "hwid": "shardwareid",
    "expirydate": "expirationdate",
    "expireson": "expirationdate",
    "issueddate": "issuedate",
    "issuedon": "issuedate",
    "status": "licensestatus",
}
# Columns compared without their spaces and separators ("Keypack ID" is KeyPackId).
_CANONICAL = frozenset(
    {
        "licenseid",
        "keypackid",
        "shardwareid",
        "sissuedtocomputer",
        "sissuedtouser",
        "issuedate",
        "expirationdate",
        "licensestatus",
        "caltype",
        "productversion",
        "productversionid",
        "pscomputername",
    }
)
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def column_key(name: str) -> str:
    """The key of a column in a Row's values: its name lower-cased, or the class column
    it spells (`COLUMN_ALIASES`; "Keypack ID" -> "keypackid", "client name" ->
    "sissuedtocomputer"). Other names are only lower-cased ("__GENUS" stays "__genus")."""
    lower = name.strip().lower()
    if lower in _CANONICAL:
        return lower
    squeezed = _NOT_ALNUM.sub("", lower)
    if squeezed in _CANONICAL:
        return squeezed
    return COLUMN_ALIASES.get(squeezed, lower)


__all__ = ["COLUMN_ALIASES", "column_key"]
