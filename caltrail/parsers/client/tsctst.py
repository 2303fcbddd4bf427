"""Client HWIDs and stored CALs from TSCTST output (the Terminal Server client license dump).

Sources: docs/FORMATS.md ("TSCTST output"): no verbatim capture is
public; labels from a re-implementation: `TS Certificate Version:`, `HWID: 0x00000002,
0x7d4eb2c0, ...`, `Client Platform ID:`, `Company Name:`, `Issuer:`, `Scope:`,
`Issued to machine:`, `Issued to user:`, `License ID:`, `Valid from:`, `Expires on:`.
docs/LICENSING.md ("The HWID") for the five-DWORD HWID rendering.

Assumptions:
- [U] Spacing and label case vary: a label is any `Words:` at the start of a line, matched
  case-insensitively with runs of spaces collapsed; a few spellings are aliases
  (`Hardware ID`, `Expires`, `Valid to`, `Valid until`). Unknown labels are ignored.
- One license per block; a block starts at `TS Certificate Version` or at a second `HWID:`
  in the current block. A block with none of HWID, License ID, Issued to machine is not a
  license (no record).
- [U] Date format of `Valid from` / `Expires on`: culture dates (order inferred from the
  file's values like WMI exports, else --date-order / --culture), DMTF, ctime-like English
  (`Thu Oct 05 12:34:56 2023`), read in `options.tz`. An unreadable date gives None and a
  warning issue; the record is kept.
- client_name is `options.client_name` (source "option"), else "Issued to machine"
  (source "data"), else the file or folder name as for registry exports.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from caltrail.parsers.base import (
    ZONE_ASSUMED,
    ClientHwidRecord,
    FileNote,
    Item,
    ParseIssue,
    ParseOptions,
)
from caltrail.parsers.client.registry import client_name_from_file_name
from caltrail.parsers.errors import InvalidSignatureError
from caltrail.parsers.hwid import normalize_hwid
from caltrail.parsers.textio import decode_head, iter_lines
from caltrail.parsers.wmi.dates import (
    UTC,
    OrderVotes,
    is_culture_date,
    is_dmtf,
    parse_culture,
    parse_dmtf,
    resolve_date_order,
)

NAME = "tsctst"
VERSION = "2"

_LABEL = re.compile(r"^\s*(?P<label>[A-Za-z][A-Za-z ]{0,40}?)\s*:\s*(?P<value>.*?)\s*$")
LABELS = {
    "ts certificate version": "version",
    "hwid": "hwid",
    "hardware id": "hwid",
    "client platform id": "platform_id",
    "company name": "company",
    "issuer": "issuer",
    "scope": "scope",
    "issued to machine": "machine",
    "issued to user": "user",
    "license id": "license_id",
    "valid from": "valid_from",
    "expires on": "expires_on",
    "expires": "expires_on",
    "valid to": "expires_on",
    "valid until": "expires_on",
}
_SNIFF_HWID = re.compile(r"(?im)^\s*hwid\s*:\s*(0x)?[0-9a-f]")
_SNIFF_OTHER = re.compile(
    r"(?im)^\s*(ts\s+certificate\s+version|issued\s+to\s+machine|client\s+platform\s+id"
    r"|license\s+id)\s*:"
)
_TEXT_FORMATS = (
    "%a %b %d %H:%M:%S %Y",
    "%a %b %d %Y %H:%M:%S",
    "%A, %B %d, %Y %H:%M:%S",
    "%A, %B %d, %Y %I:%M:%S %p",
    "%B %d, %Y %H:%M:%S",
    "%d %B %Y %H:%M:%S",
)


def sniff(head: bytes, name: str) -> bool:
    """A `HWID: 0x...` line and one more TSCTST label at line starts."""
    text = decode_head(head)
    return bool(_SNIFF_HWID.search(text) and _SNIFF_OTHER.search(text))


def _label(line: str) -> tuple[str, str] | None:
    m = _LABEL.match(line)
    if m is None:
        return None
    key = LABELS.get(" ".join(m["label"].lower().split()))
    return (key, m["value"]) if key else None


@dataclass
class _Block:
    line: int
    fields: dict[str, str] = field(default_factory=dict)
    hwid_line: int = 0

    def is_license(self) -> bool:
        return any(k in self.fields for k in ("hwid", "license_id", "machine"))


def _blocks(stream: BinaryIO) -> Iterator[_Block]:
    block: _Block | None = None
    for number, line in iter_lines(stream):
        found = _label(line.lstrip("\ufeff"))
        if found is None:
            continue
        key, value = found
        starts = key == "version" or (
            key == "hwid" and block is not None and "hwid" in block.fields
        )
        if block is None or (starts and block.fields):
            if block is not None:
                yield block
            block = _Block(number)
        if key == "hwid":
            block.hwid_line = number
        block.fields.setdefault(key, value)
    if block is not None:
        yield block


def _parse_date(text: str | None, order: str, zone: dt.tzinfo) -> tuple[dt.datetime | None, bool]:
    """(UTC value, understood); empty or "..." is None and understood."""
    if text is None or not text.strip() or text.strip(". ") == "":
        return None, True
    text = text.strip()
    if is_dmtf(text):
        result = parse_dmtf(text)
        return result.value, not result.fatal
    if is_culture_date(text):
        result = parse_culture(text, order, zone)
        return result.value, not result.fatal
    for fmt in _TEXT_FORMATS:
        try:
            local = dt.datetime.strptime(text, fmt)  # noqa: DTZ007 - zone added next
        except ValueError:
            continue
        return local.replace(tzinfo=zone).astimezone(UTC), True
    return None, False


def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]:
    """One ClientHwidRecord per license block."""
    if not stream.seekable():
        stream = io.BytesIO(stream.read())
    start = stream.tell()
    votes = OrderVotes()
    labelled = 0
    for block in _blocks(stream):
        labelled += 1
        votes.add(block.fields.get("valid_from"))
        votes.add(block.fields.get("expires_on"))
    if labelled == 0:
        raise InvalidSignatureError("no TSCTST labels (HWID:, Issued to machine:, ...) found")
    stream.seek(start)
    zone = options.tz
    order, order_note = resolve_date_order(votes, options)
    if order_note is not None:
        yield order_note
    yield FileNote(ZONE_ASSUMED, "TSCTST dates have no zone")
    for block in _blocks(stream):
        if not block.is_license():
            continue
        f = block.fields
        line = block.hwid_line or block.line
        if options.client_name:
            client: str | None = options.client_name
            source = "option"
        elif f.get("machine"):
            client, source = f["machine"], "data"
        else:
            client, source = client_name_from_file_name(options.file_name)
        raw = f.get("hwid") or None
        hwid = normalize_hwid(raw) if raw else None
        dates: dict[str, dt.datetime | None] = {}
        for key in ("valid_from", "expires_on"):
            value, understood = _parse_date(f.get(key), order, zone)
            dates[key] = value
            if not understood:
                yield ParseIssue(
                    "bad_date",
                    f"line {block.line}: {key} {f.get(key)!r} is not a date we can read",
                    False,
                    line=block.line,
                    excerpt=(f.get(key) or "")[:200],
                )
        yield ClientHwidRecord(
            client_name=client,
            client_name_source=source,
            hwid=hwid.hwid if hwid else None,
            hwid_raw=raw,
            hwid_flag=hwid.flag if hwid else None,
            source_kind="tsctst",
            key_path=None,
            deleted=False,
            store_license_count=None,
            license_id=f.get("license_id") or None,
            issuer=f.get("issuer") or None,
            scope=f.get("scope") or None,
            issued_to_user=f.get("user") or None,
            valid_from=dates["valid_from"],
            valid_from_raw=f.get("valid_from") or None,
            expires_on=dates["expires_on"],
            expires_on_raw=f.get("expires_on") or None,
            line=line,
            platform_id=f.get("platform_id") or None,
        )


__all__ = ["LABELS", "NAME", "VERSION", "parse", "sniff"]
