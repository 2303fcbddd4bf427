"""Client HWIDs from registry exports of `HKLM\\SOFTWARE\\Microsoft\\MSLicensing`.

Sources:
- docs/FORMATS.md ("Registry exports"): regedit / `reg export` files,
  `Windows Registry Editor Version 5.00` (UTF-16LE with BOM) or `REGEDIT4` (ANSI);
  `"ClientHWID"=hex:02,00,...` with `\\`-continued lines; `hex(3):` is REG_BINARY too;
  `"Name"=-` deletes a value, `[-KEY]` deletes a key; TSS writes `Reg-HKLM-MSLicensing.txt`.
- docs/LICENSING.md ("The HWID"): `...\\MSLicensing\\HardwareID\\ClientHWID`
  (REG_BINARY, 20 bytes) and the stored CALs `...\\MSLicensing\\Store\\LICENSE000`, ....
- Microsoft docs, "How to add, modify, or delete registry subkeys and values by using a
  .reg file" (the `-` deletion syntax) and `reg query` (output layout).

Assumptions:
- Any hive prefix counts (`HKEY_LOCAL_MACHINE`, `HKLM`, `HKEY_USERS\\...`, Wow6432Node): a
  key whose path ends in `\\MSLicensing\\HardwareID` holds the HWID.
- [U] TSS's `.txt` may also be `reg query /s` output (`HKEY_...` key lines, then
  `    ClientHWID    REG_BINARY    0200...`); that layout is read too.
- `[-...\\MSLicensing]` or `[-...\\MSLicensing\\HardwareID]` is a deletion of the HWID: one
  record with deleted=True. Values under a deleted key are ignored, as regedit does.
- store_license_count: the number of `Store\\LICENSE<n>` keys in the file, known (0 or
  more) when the export covers the `MSLicensing` or `Store` key, else None.
- The client computer name is not in the export: `options.client_name`, else the file name
  without extensions and suffixes such as `_Reg-HKLM-MSLicensing`, `-MSLicensing`,
  `_MSLicensing` (or `_tsctst` for TSCTST output), else the parent folder's name (TSS
  `TSS_<host>_<yymmdd-hhmmss>...` and `MSRD-Results-<host>` folders give the host) [U].
- Records seen = ClientHWID values and HWID key deletions; an unreadable ClientHWID line is
  a quarantined issue.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO

from caltrail.parsers.base import ClientHwidRecord, FileNote, Item, ParseIssue, ParseOptions
from caltrail.parsers.errors import InvalidSignatureError
from caltrail.parsers.hwid import FLAG_UNCONVERTIBLE, normalize_hwid
from caltrail.parsers.textio import decode_head, iter_lines

NAME = "registry"
VERSION = "1"

HEADERS = ("windows registry editor version 5.00", "regedit4")
_HWID_KEY = re.compile(r"\\mslicensing\\hardwareid$", re.IGNORECASE)
_MSL_KEY = re.compile(r"\\mslicensing$", re.IGNORECASE)
_STORE_KEY = re.compile(r"\\mslicensing\\store$", re.IGNORECASE)
_STORE_LICENSE = re.compile(r"\\mslicensing\\store\\license\d+$", re.IGNORECASE)
_VALUE = re.compile(r'^\s*(?:"(?P<name>(?:[^"\\]|\\.)*)"|(?P<default>@))\s*=\s*(?P<data>.*)$')
_REG_QUERY_VALUE = re.compile(
    r"^\s+(?P<name>\S.*?)\s{2,}(?P<type>REG_[A-Z_]+)(?:\s+(?P<data>.*))?$"
)
_HEX = re.compile(r"^hex(?:\((?P<type>[0-9a-f]+)\))?:(?P<bytes>.*)$", re.IGNORECASE)
_EXTENSIONS = re.compile(r"\.(reg|txt|log|bak|out|dat|utf8|utf16|export)$", re.IGNORECASE)
_SUFFIX = re.compile(
    r"[\s_.\-]*(reg[_\-]?)?(hklm[_\-]?|hkey_local_machine[_\-]?)?(software[_\-]?)?"
    r"(microsoft[_\-]?)?mslicensing([_\-]?(hardwareid|export|backup))?$",
    re.IGNORECASE,
)
_TSCTST_SUFFIX = re.compile(r"[\s_.\-]*tsctst([_\-]?(output|out|log))?$", re.IGNORECASE)
_GENERIC_NAMES = frozenset(
    {"", "reg", "export", "registry", "hklm", "hwid", "clienthwid", "hardwareid", "mslicensing"}
    | {"tsctst", "output", "client"}
)
_TSS_FOLDER = re.compile(r"^TSS_(?P<name>[^_]+)_\d{6}-\d{6}", re.IGNORECASE)
_MSRD_FOLDER = re.compile(r"^MSRD-Results-(?P<name>.+)$", re.IGNORECASE)


def sniff(head: bytes, name: str) -> bool:
    """A regedit header (or `reg query` key lines) and a mention of MSLicensing."""
    text = decode_head(head)
    if "mslicensing" not in text.lower():
        return False
    for line in text.splitlines():
        stripped = line.strip().lstrip("\ufeff").lower()
        if not stripped:
            continue
        if stripped in HEADERS:
            return True
        return stripped.startswith(("hkey_", "hklm\\")) and "mslicensing" in stripped
    return False


def client_name_from_file_name(file_name: str) -> tuple[str | None, str]:
    """(client name, source) from a file name, then its parent folder; (None, "unknown")."""
    parts = [p for p in re.split(r"[/\\]", file_name) if p]
    if not parts:
        return None, "unknown"
    stem = parts[-1]
    while _EXTENSIONS.search(stem):
        stem = _EXTENSIONS.sub("", stem)
    stem = _TSCTST_SUFFIX.sub("", _SUFFIX.sub("", stem)).strip(" _-.")
    if stem.lower() not in _GENERIC_NAMES:
        return stem, "file name"
    if len(parts) >= 2:
        folder = parts[-2]
        for pattern in (_TSS_FOLDER, _MSRD_FOLDER):
            m = pattern.match(folder)
            if m:
                return m["name"], "folder name"
        if folder.strip():
            return folder.strip(), "folder name"
    return None, "unknown"


def _first_content_line(lines: Iterator[tuple[int, str]]) -> tuple[int, str] | None:
    for number, line in lines:
        if line.strip().lstrip("\ufeff"):
            return number, line.strip().lstrip("\ufeff")
    return None


def _logical_lines(lines: Iterator[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Join `\\`-continued value lines; yield (first line number, text)."""
    buffer: list[str] = []
    start = 0
    for number, line in lines:
        text = line.lstrip("\ufeff")
        if not buffer:
            start = number
        if text.rstrip().endswith("\\") and not text.lstrip().startswith("["):
            buffer.append(text.rstrip()[:-1].strip() if buffer else text.rstrip()[:-1])
            if len(buffer) < 1000:
                continue
        elif buffer:
            buffer.append(text.strip())
        else:
            buffer.append(text)
        yield start, "".join(buffer)
        buffer = []
    if buffer:
        yield start, "".join(buffer)


def _key_of(text: str) -> tuple[str, bool] | None:
    """(key path, deleted) for a `[KEY]` / `[-KEY]` line or a `reg query` key line."""
    stripped = text.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        inner = stripped[1:-1].strip()
        if inner.startswith("-"):
            return inner[1:].strip(), True
        return inner, False
    if stripped.lower().startswith(("hkey_", "hklm\\")) and text[:1] not in " \t":
        return stripped, False
    return None


def _store_count(stream: BinaryIO) -> int | None:
    licenses: set[str] = set()
    covered = False
    for _, line in iter_lines(stream):
        key = _key_of(line)
        if key is None or key[1]:
            continue
        path = key[0]
        if _MSL_KEY.search(path) or _STORE_KEY.search(path):
            covered = True
        elif _STORE_LICENSE.search(path):
            covered = True
            licenses.add(path.lower())
    return len(licenses) if covered else None


def _hwid_from_data(data: str) -> tuple[str | None, str | None]:
    """(canonical hwid, flag) from the data of a ClientHWID value."""
    compact = re.sub(r"\s+", "", data)
    m = _HEX.match(compact)
    if m is None or (m["type"] is not None and int(m["type"], 16) != 3):
        return None, FLAG_UNCONVERTIBLE
    tokens = [t for t in m["bytes"].split(",") if t]
    if not all(re.fullmatch(r"[0-9a-fA-F]{1,2}", t) for t in tokens):
        return None, FLAG_UNCONVERTIBLE
    result = normalize_hwid(bytes(int(t, 16) for t in tokens))
    return result.hwid, result.flag


def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]:
    """ClientHwidRecords for every ClientHWID value (and HWID key deletion) in the export."""
    start = stream.tell() if stream.seekable() else 0
    first = _first_content_line(iter_lines(stream))
    if first is None:
        raise InvalidSignatureError("empty file: expected a registry export")
    header = first[1].lower()
    reg_query = False
    if header not in HEADERS:
        if _key_of(first[1]) is None:
            raise InvalidSignatureError(
                f"line {first[0]}: expected 'Windows Registry Editor Version 5.00' or "
                f"'REGEDIT4', found {first[1][:60]!r}"
            )
        reg_query = True
    store_count: int | None = None
    if stream.seekable():
        stream.seek(start)
        store_count = _store_count(stream)
        stream.seek(start)
    client: str | None = options.client_name
    source = "option"
    if not client:
        client, source = client_name_from_file_name(options.file_name)
    form = "reg query output" if reg_query else first[1]
    yield FileNote("registry_format", form)
    yield FileNote("client_name", client or "unknown")
    yield FileNote("client_name_source", source)
    yield FileNote("store_license_count", "unknown" if store_count is None else str(store_count))

    def record(
        line: int, key: str, hwid: str | None, raw: str | None, flag: str | None, deleted: bool
    ) -> ClientHwidRecord:
        return ClientHwidRecord(
            client_name=client,
            client_name_source=source,
            hwid=hwid,
            hwid_raw=raw,
            hwid_flag=flag,
            source_kind="registry",
            key_path=key,
            deleted=deleted,
            store_license_count=store_count,
            license_id=None,
            issuer=None,
            scope=None,
            issued_to_user=None,
            valid_from=None,
            valid_from_raw=None,
            expires_on=None,
            expires_on_raw=None,
            line=line,
        )

    key: str | None = None
    key_deleted = False
    for number, text in _logical_lines(iter_lines(stream)):
        found = _key_of(text)
        if found is not None:
            key, key_deleted = found
            if key_deleted and (_HWID_KEY.search(key) or _MSL_KEY.search(key)):
                yield record(number, key, None, None, None, True)
            continue
        if key is None or key_deleted or not _HWID_KEY.search(key):
            continue
        m = _VALUE.match(text)
        if m is not None:
            if (m["name"] or "").lower() != "clienthwid":
                continue
            data = m["data"].strip()
            if data == "-":
                yield record(number, key, None, None, None, True)
                continue
            hwid, flag = _hwid_from_data(data)
            yield record(number, key, hwid, re.sub(r"\s+", "", data), flag, False)
            continue
        q = _REG_QUERY_VALUE.match(text)
        if q is not None and reg_query:
            if q["name"].strip().lower() != "clienthwid":
                continue
            data = (q["data"] or "").strip()
            if q["type"] == "REG_BINARY" and re.fullmatch(r"(?:[0-9a-fA-F]{2})+", data):
                result = normalize_hwid(bytes.fromhex(data))
                yield record(number, key, result.hwid, data, result.flag, False)
            else:
                yield record(number, key, None, data, FLAG_UNCONVERTIBLE, False)
            continue
        if "clienthwid" in text.lower():
            yield ParseIssue(
                "bad_value",
                f"line {number}: a ClientHWID line that is not a registry value",
                True,
                line=number,
                excerpt=text[:200],
            )
        elif text.strip():
            yield ParseIssue(
                "bad_line",
                f"line {number}: unreadable line under {key}",
                False,
                line=number,
                excerpt=text[:200],
            )


__all__ = ["NAME", "VERSION", "client_name_from_file_name", "parse", "sniff"]
