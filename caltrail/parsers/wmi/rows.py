"""Shared logic of the WMI export parsers: columns, row -> record, the two-pass driver.

Every WMI export form (CSV, XML, HTML, Checkmk) is turned by its own module into a stream of
`Header` and `Row` items (column name -> cell text); this module checks the columns, reads
the cells into `IssuedLicenseRecord` / `KeypackRecord`, and decides the file-wide facts
(day/month order, zone, snapshot time) from a first pass over the file.

Sources: docs/LICENSING.md ("WMI classes", "Sentinels"), docs/FORMATS.md
("WMI exports"), Microsoft docs for Win32_TSIssuedLicense
and Win32_TSLicenseKeyPack.

Assumptions:
- [U] Column order is not fixed: columns are found by name, case-insensitively; unknown
  columns are ignored; the first of duplicate names wins.
- Required columns: Win32_TSIssuedLicense needs LicenseId, sHardwareId, sIssuedToComputer,
  ExpirationDate (the facts that tie a HWID to a name and a time); IssueDate may be missing
  (the "Script for RDS Per Devices CALs" of Microsoft's guidance on CALs issued several
  times exports Keypack ID, License ID, client name, Hardware ID and Expiration date only):
  then issue_date is None, a FileNote says so, and the diagnosis bounds the issue by the
  expiry (a permanent CAL's last issue or renewal lies 52-89 days before it).
  Win32_TSLicenseReportPerDeviceEntry (the per-device report of Win32_TSLicenseReport /
  RD Licensing Manager) needs sHardwareId, sIssuedToComputer, ExpirationDate; it has no
  LicenseId, KeyPackId or IssueDate, and adds CALType and ProductVersion(ID).
  Win32_TSLicenseKeyPack needs KeyPackId, TotalLicenses, IssuedLicenses.
- [U] Column names: `Select-Object` with calculated properties renames columns ("Keypack
  ID", "client name", "Hardware ID", "Expiration date"): a name is compared with its
  spaces, `_` and `-` removed, and a few spellings are aliases (`COLUMN_ALIASES`).
- [U] A snapshot time inside the data: no known export carries one; a column named
  SnapshotTime, CollectionTime, CollectedAt or ExportTime is used when present.
- The exporting server is PSComputerName, else __SERVER.
- A row whose cells cannot be read (an integer that is not one, a date that is not a date)
  is quarantined whole; a DMTF date with unknown date digits gives None and a warning.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from operator import itemgetter
from typing import BinaryIO, NamedTuple

from caltrail.parsers.base import (
    ZONE_ASSUMED,
    FileNote,
    IssuedLicenseRecord,
    Item,
    KeypackRecord,
    ParseIssue,
    ParseOptions,
    RowBlock,
)
from caltrail.parsers.errors import MissingColumnError
from caltrail.parsers.hwid import normalize_hwid, wmi_dwords_hwid
from caltrail.parsers.wmi.codes import LICENSE_STATUS, code_from_text, code_name
from caltrail.parsers.wmi.columns import column_key
from caltrail.parsers.wmi.dates import (
    NEVER_UTC,
    DateResult,
    OrderVotes,
    parse_wmi_date,
    plain_instant,
    resolve_date_order,
    resolve_snapshot,
    snapshot_notes,
)

ISSUED_CLASS = "Win32_TSIssuedLicense"
KEYPACK_CLASS = "Win32_TSLicenseKeyPack"
REPORT_ENTRY_CLASS = "Win32_TSLicenseReportPerDeviceEntry"
EXCERPT_CHARS = 200
SNAPSHOT_COLUMNS = ("snapshottime", "collectiontime", "collectedat", "exporttime")
UNLIMITED = frozenset({4294967295, -1})
_INTEGER = re.compile(r"[+-]?\d{1,20}")
# LicenseStatus as ConvertTo-Html and CIM exports write it ("Active"): the names whose
# general reading (`code_from_text`) gives their own code, for the plain-row path.
STATUS_NAMES = {
    name: code
    for code, name in LICENSE_STATUS.items()
    if code_from_text("license_status", name) == code
}
# The cells the plain-row path reads, in the order `RowReader._issued_cells` takes them.
PLAIN_KEYS = (
    *("licenseid", "keypackid", "licensestatus", "issuedate", "expirationdate"),
    *("shardwareid", "sissuedtocomputer", "sissuedtouser", "pscomputername", "__server"),
)
# Columns whose cells the plain-row path does not read: a table with any of them has its
# rows read as dicts (per-device report rows, a snapshot time in the data).
_NOT_PLAIN_KEYS = frozenset({"caltype", "productversion", "productversionid", *SNAPSHOT_COLUMNS})
# What a RowBlock of Win32_TSIssuedLicense rows asks its reader to know (RowBlock.rules),
# and how many rows a block holds (a few hundred kB of cell texts).
BLOCK_RULES = "wmi_issued"
BLOCK_ROWS = 8192
ISSUE_DATE_MISSING = (
    "not exported: bounded by the expiry (a permanent CAL's last issue or renewal lies "
    "52-89 days before it)"
)


@dataclass(frozen=True, slots=True)
class TableSpec:
    """What one WMI class needs: its required columns and its date columns.
    `license_id`: its rows name their license (Win32_TSIssuedLicense); the per-device
    report's entries do not."""

    wmi_class: str
    required: tuple[str, ...]
    dates: tuple[str, ...]
    license_id: bool = True


ISSUED = TableSpec(
    ISSUED_CLASS,
    ("LicenseId", "sHardwareId", "sIssuedToComputer", "ExpirationDate"),
    ("IssueDate", "ExpirationDate"),
)
REPORT_ENTRY = TableSpec(
    REPORT_ENTRY_CLASS,
    ("sHardwareId", "sIssuedToComputer", "ExpirationDate"),
    ("ExpirationDate",),
    license_id=False,
)
KEYPACK = TableSpec(
    KEYPACK_CLASS, ("KeyPackId", "TotalLicenses", "IssuedLicenses"), ("ExpirationDate",)
)


@dataclass(frozen=True, slots=True)
class Header:
    """The columns of a table (CSV header, first XML object, HTML header row).

    `spec` None means: decide from the column names. `form` is a FileNote value naming the
    export form ("Get-WmiObject | Export-Csv (Windows PowerShell 5.1)", ...).
    """

    spec: TableSpec | None
    columns: tuple[str, ...]
    form: str
    line: int


class Row(NamedTuple):
    """One data row: lower-cased column name -> cell text (None for a null value). A
    NamedTuple (immutable, and cheaper to make than a frozen dataclass: one per row)."""

    values: Mapping[str, str | None]
    line: int
    excerpt: str


class Cells(NamedTuple):
    """One data row as its cells in the order of the last Header's columns (as many): what
    the CSV and HTML readers give for the usual row, read without making a dict
    (`RowReader.plain_cells`; `RowReader.row_of` makes the `Row` when that path declines)."""

    texts: list[str]
    line: int
    excerpt: str


# `Cells((texts, line, excerpt))`, made in C: a NamedTuple's own constructor is Python code
# that costs a few percent of a row
new_cells = partial(tuple.__new__, Cells)
RowItem = Header | Row | Cells | ParseIssue | FileNote
RowSource = Callable[[BinaryIO], Iterator[RowItem]]


def spec_from_type_name(text: str) -> TableSpec | None:
    """The class named in a `#TYPE` line or an XML `Object Type` attribute."""
    lower = text.lower()
    if REPORT_ENTRY_CLASS.lower() in lower:
        return REPORT_ENTRY
    if ISSUED_CLASS.lower() in lower:
        return ISSUED
    if KEYPACK_CLASS.lower() in lower:
        return KEYPACK
    return None


def spec_from_columns(columns: Sequence[str]) -> TableSpec | None:
    """The class whose columns these are, or None."""
    names = {column_key(c) for c in columns}
    if "licenseid" in names:
        return ISSUED
    if "shardwareid" in names and names & {"caltype", "productversion", "productversionid"}:
        return REPORT_ENTRY
    if "shardwareid" in names:
        return ISSUED
    if "keypackid" in names and names & {"totallicenses", "issuedlicenses", "keypacktype"}:
        return KEYPACK
    return None


def looks_like_header(columns: Sequence[str]) -> bool:
    """The sniff test: LicenseId + sHardwareId, the per-device report's sHardwareId +
    sIssuedToComputer + ExpirationDate, or KeyPackId + TotalLicenses."""
    names = {column_key(c.strip().strip('"')) for c in columns}
    return (
        {"licenseid", "shardwareid"} <= names
        or {"shardwareid", "sissuedtocomputer", "expirationdate"} <= names
        or {"keypackid", "totallicenses"} <= names
    )


def check_columns(spec: TableSpec, columns: Sequence[str], where: str) -> None:
    """Raise MissingColumnError naming the first required column that is absent."""
    names = {column_key(c) for c in columns}
    missing = [c for c in spec.required if c.lower() not in names]
    if missing:
        raise MissingColumnError(
            f"{where}: {spec.wmi_class} export lacks required column(s) "
            f"{', '.join(missing)}; found {', '.join(columns)[:300]}"
        )


def excerpt(text: str) -> str:
    """A short excerpt of raw text for a ParseIssue."""
    return text[:EXCERPT_CHARS]


class _BadCell(Exception):
    """A cell that cannot be read; the row is quarantined."""


class RowReader:
    """Reads rows of one table into records with the file-wide facts already decided."""

    def __init__(
        self,
        spec: TableSpec,
        order: str,
        zone: dt.tzinfo,
        snapshot: tuple[dt.datetime | None, str],
        options: ParseOptions,
    ) -> None:
        self.spec = spec
        self.order = order
        self.zone = zone
        self.snapshot = snapshot
        self.options = options
        self.keys: list[str] = []
        # the plain-row path's cells of a `Cells` row, by position (None: rows go as dicts)
        self._take: Callable[[list[str]], tuple[str, ...]] | None = None
        self._present: list[tuple[str, int]] = []  # (plain key, position) of those present
        self._pad = False

    def set_columns(self, columns: Sequence[str]) -> None:
        """The columns of the `Cells` rows that follow."""
        self.keys = keys = [column_key(c) for c in columns]
        self._take = None
        if self.spec is not ISSUED or len(set(keys)) != len(keys) or _NOT_PLAIN_KEYS & set(keys):
            return
        # an absent column reads as "" (which every cell of the plain path takes as none,
        # as it does an absent one): its position is that of a "" put after the cells
        width = len(keys)
        positions = [keys.index(k) if k in keys else width for k in PLAIN_KEYS]
        self._pad = width in positions
        self._take = itemgetter(*positions)
        self._present = [(k, p) for k, p in zip(PLAIN_KEYS, positions, strict=True) if p < width]

    @property
    def gives_blocks(self) -> bool:
        """Whether the `Cells` rows of this table can go out as RowBlocks (`block`)."""
        return self._take is not None

    @property
    def block_take(self) -> Callable[[list[str]], tuple[str, ...]]:
        """The cells of a `Cells` row that a RowBlock keeps: the plain path's, those of its
        columns the table has (a table that `gives_blocks` has at least the four required)."""
        return itemgetter(*(position for _, position in self._present))

    def block(
        self, cells: list[tuple[str, ...]], lines: list[int], excerpts: list[str]
    ) -> RowBlock:
        """Rows of a table that `gives_blocks` as one RowBlock: each row's `block_take`
        cells, line and excerpt; `_block_records` reads them one by one (the reference)."""
        n = len(lines)
        columns = {key: [""] * n for key in PLAIN_KEYS}  # (an absent column reads as "")
        for at, (key, _) in enumerate(self._present):
            columns[key] = list(map(itemgetter(at), cells))
        facts = {
            "order": self.order,
            "zone": self.zone,
            "snapshot_time": self.snapshot[0],
            "snapshot_time_source": self.snapshot[1],
        }
        return RowBlock(
            IssuedLicenseRecord.table,
            BLOCK_RULES,
            columns,
            lines,
            facts,
            partial(self._block_records, cells, lines, excerpts),
        )

    def _block_records(
        self, cells: list[tuple[str, ...]], lines: list[int], excerpts: list[str]
    ) -> Iterator[Item]:
        """The items of a block's rows read one by one: each row as the `Row` of the cells
        the general reading of such a table reads (it reads no other column of it)."""
        keys = [key for key, _ in self._present]
        for texts, line, text in zip(cells, lines, excerpts, strict=True):
            yield from self.convert(Row(dict(zip(keys, texts, strict=True)), line, text))

    def row_of(self, cells: Cells) -> Row:
        """The `Row` of `Cells`."""
        return Row(cell_values(self.keys, cells.texts), cells.line, cells.excerpt)

    def plain_cells(self, cells: Cells) -> IssuedLicenseRecord | None:
        """`plain(row_of(cells))` without the dict: the record of a row of plain cells of
        a Win32_TSIssuedLicense table, or None (then the caller reads `row_of(cells)`)."""
        take = self._take
        if take is None:
            return None
        texts = [*cells.texts, ""] if self._pad else cells.texts
        return self._issued_cells(take(texts), cells.line, self.snapshot)

    def convert(self, row: Row) -> list[Item]:
        """Exactly one record or one quarantined issue, then any warnings."""
        record = self.plain(row)
        if record is not None:
            return [record]
        return self.general(row)

    def plain(self, row: Row) -> IssuedLicenseRecord | None:
        """The record of a row of plain cells, or None: then `general` reads the row."""
        return self._issued_plain(row) if self.spec is not KEYPACK else None

    def general(self, row: Row) -> list[Item]:
        """`convert` without the plain-row path: every cell read by the helpers below."""
        warnings: list[Item] = []
        try:
            record = self._record(row, warnings)
        except _BadCell as exc:
            message = f"line {row.line}: {exc}"
            return [
                ParseIssue("bad_row", message, True, line=row.line, excerpt=excerpt(row.excerpt))
            ]
        return [record, *warnings]

    # -- cells -----------------------------------------------------------------------------
    # Cells are looked up by lower-cased column name (`values` keys); `name` is the column
    # as the messages show it. These run for every cell of every row: they stay small.

    def _int(self, values: Mapping[str, str | None], name: str) -> int | None:
        text = _cell(values, name.lower())
        if text is None:
            return None
        # (plain ASCII digits, the usual case, pass without the regex)
        if not (text.isascii() and text.isdigit() and len(text) <= 20) and not _INTEGER.fullmatch(
            text
        ):
            raise _BadCell(f"{name} is not an integer: {text!r}")
        value = int(text)
        if not -(1 << 63) <= value < (1 << 63):  # the lake's columns are int64
            raise _BadCell(f"{name} is outside the 64-bit integer range: {text!r}")
        return value

    def _count(self, values: Mapping[str, str | None], name: str) -> tuple[int | None, bool]:
        value = self._int(values, name)
        if value in UNLIMITED:
            return None, True
        return value, False

    def _code(self, row: Row, name: str, table: str, warnings: list[Item]) -> int | None:
        text = _cell(row.values, name.lower())
        if text is None:
            return None
        code = code_from_text(table, text)
        if code is None:
            warnings.append(
                ParseIssue(
                    "unknown_code",
                    f"line {row.line}: {name} {text!r} is neither a number nor a known name",
                    False,
                    line=row.line,
                    excerpt=excerpt(text),
                )
            )
        return code

    def _date(self, row: Row, name: str, warnings: list[Item]) -> DateResult:
        text = _cell(row.values, name.lower())
        result = parse_wmi_date(text, self.order, self.zone)
        if result.fatal:
            raise _BadCell(f"{name}: {result.problem}")
        if result.problem:
            warnings.append(
                ParseIssue(
                    "unknown_date",
                    f"line {row.line}: {name}: {result.problem}",
                    False,
                    line=row.line,
                    excerpt=excerpt(text or ""),
                )
            )
        return result

    def _snapshot(self, values: Mapping[str, str | None]) -> tuple[dt.datetime | None, str]:
        if self.snapshot[1] != "option":
            for column in SNAPSHOT_COLUMNS:
                if not values.get(column):  # absent or empty: the usual case
                    continue
                text = _cell(values, column)
                if text:
                    result = parse_wmi_date(text, self.order, self.zone)
                    if result.value is not None:
                        return result.value, "data"
        return self.snapshot

    # -- records ---------------------------------------------------------------------------

    def _record(self, row: Row, warnings: list[Item]) -> IssuedLicenseRecord | KeypackRecord:
        if self.spec is KEYPACK:
            return self._keypack(row, warnings)
        return self._issued(row, warnings)

    def _issued(self, row: Row, warnings: list[Item]) -> IssuedLicenseRecord:
        values = row.values
        license_id = self._int(values, "LicenseId")
        if license_id is None and self.spec.license_id:
            raise _BadCell("LicenseId is empty")
        keypack_id = self._int(values, "KeyPackId")
        status = self._code(row, "LicenseStatus", "license_status", warnings)
        issue = self._date(row, "IssueDate", warnings)
        expiry = self._date(row, "ExpirationDate", warnings)
        raw_hwid = _cell(values, "shardwareid")
        hwid = normalize_hwid(raw_hwid) if raw_hwid else None
        snapshot, source = self._snapshot(values)
        return IssuedLicenseRecord(
            snapshot_time=snapshot,
            snapshot_time_source=source,
            license_server=_server(values),
            license_id=license_id,
            keypack_id=keypack_id,
            license_status=status,
            license_status_name=code_name("license_status", status),
            issue_date=issue.value,
            issue_date_raw=values.get("issuedate") or None,
            expiration_date=expiry.value,
            expiration_date_raw=values.get("expirationdate") or None,
            expiration_never=expiry.never,
            issued_to_computer=_cell(values, "sissuedtocomputer"),
            issued_to_user=_cell(values, "sissuedtouser"),
            hwid=hwid.hwid if hwid else None,
            hwid_raw=raw_hwid,
            hwid_flag=hwid.flag if hwid else None,
            line=row.line,
            cal_type=_cell(values, "caltype"),
            product_version=self._product_version(row, warnings),
        )

    def _product_version(self, row: Row, warnings: list[Item]) -> str | None:
        """ProductVersion, else the name of ProductVersionID (per-device report rows)."""
        text = _cell(row.values, "productversion")
        if text is not None or _cell(row.values, "productversionid") is None:
            return text
        code = self._code(row, "ProductVersionID", "product_version_id", warnings)
        return code_name("product_version_id", code)

    def _issued_plain(self, row: Row) -> IssuedLicenseRecord | None:
        """`_issued` for a row of plain cells (what nearly every row of an export is), with
        the cell helpers inlined; None when a cell is not plain (padded, signed, a code name
        it does not know, a date `plain_instant` does not read, ...): the caller then takes
        the general path, whose record this equals (tests/parsers/test_fast_paths.py)."""
        get = row.values.get
        if get("caltype") or get("productversion") or get("productversionid"):
            return None  # a per-device report row: the general path reads those cells
        cells = tuple(map(get, PLAIN_KEYS))
        return self._issued_cells(cells, row.line, self._snapshot(row.values))

    def _issued_cells(
        self,
        cells: Sequence[str | None],
        line: int,
        snapshot: tuple[dt.datetime | None, str],
    ) -> IssuedLicenseRecord | None:
        """`_issued_plain` of the row's `PLAIN_KEYS` cells (None or "" for an absent one).

        Its rules (with `plain_instant`'s and `wmi_dwords_hwid`'s) are written again over
        columns in caltrail/pipeline/row_blocks.py, which ingest uses for RowBlocks: a change
        here is a change there (tests/pipeline/test_row_blocks.py holds the two equal)."""
        text, keypack_text, status_text, issue_raw, expiry_raw = cells[:5]
        raw_hwid, computer, user, server, other_server = cells[5:]
        if not (text and text.isdigit() and text.isascii() and len(text) <= 18):
            return None
        license_id = int(text)  # (at most 18 digits: within int64)
        if not keypack_text:
            keypack_id = None
        elif keypack_text.isdigit() and keypack_text.isascii() and len(keypack_text) <= 18:
            keypack_id = int(keypack_text)
        else:
            return None
        if not status_text:
            status = None
        elif status_text.isdigit() and status_text.isascii() and len(status_text) <= 9:
            status = int(status_text)  # (at most 9 digits: within int32)
        else:
            status = STATUS_NAMES.get(status_text)
            if status is None:
                return None
        # the two dates, unrolled (a loop with its lists cost more than the reading); the
        # raw cells are kept as found ("" is none); a never sentinel is no issue date
        if issue_raw:
            issue = plain_instant(issue_raw, self.order, self.zone)
            if issue is None:
                return None
            if issue is NEVER_UTC:
                issue = None
        else:
            issue_raw = issue = None
        if expiry_raw:
            expiry = plain_instant(expiry_raw, self.order, self.zone)
            if expiry is None:
                return None
            never = expiry is NEVER_UTC
            if never:
                expiry = None
        else:
            expiry_raw = expiry = None
            never = False
        if not raw_hwid:
            raw_hwid = hwid = hwid_flag = None
        elif (wmi := wmi_dwords_hwid(raw_hwid)) is not None:  # (the usual HWID: no padding)
            hwid, hwid_flag = wmi
        elif raw_hwid.strip() == raw_hwid:  # (no padding)
            hwid, hwid_flag = normalize_hwid(raw_hwid)[::2]
        else:
            return None
        # (positional: keywords cost three times as much for 18 fields; the order is the
        # class's, and the tests compare every field with the general path's record)
        return IssuedLicenseRecord(
            snapshot[0],
            snapshot[1],
            (server and server.strip()) or (other_server and other_server.strip()) or None,
            license_id,
            keypack_id,
            status,
            LICENSE_STATUS.get(status) if status is not None else None,
            issue,
            issue_raw,
            expiry,
            expiry_raw,
            never,
            (computer and computer.strip()) or None,
            (user and user.strip()) or None,
            hwid,
            raw_hwid,
            hwid_flag,
            line,
        )

    def _keypack(self, row: Row, warnings: list[Item]) -> KeypackRecord:
        values = row.values
        keypack_id = self._int(values, "KeyPackId")
        if keypack_id is None:
            raise _BadCell("KeyPackId is empty")
        keypack_type = self._code(row, "KeyPackType", "keypack_type", warnings)
        product_type = self._code(row, "ProductType", "product_type", warnings)
        version_id = self._code(row, "ProductVersionID", "product_version_id", warnings)
        total, total_unlimited = self._count(values, "TotalLicenses")
        issued, _ = self._count(values, "IssuedLicenses")
        available, available_unlimited = self._count(values, "AvailableLicenses")
        expiry = self._date(row, "ExpirationDate", warnings)
        snapshot, source = self._snapshot(values)
        return KeypackRecord(
            snapshot_time=snapshot,
            snapshot_time_source=source,
            license_server=_server(values),
            keypack_id=keypack_id,
            description=_cell(values, "description"),
            keypack_type=keypack_type,
            keypack_type_name=code_name("keypack_type", keypack_type),
            product_type=product_type,
            product_type_name=code_name("product_type", product_type),
            product_version=_cell(values, "productversion"),
            product_version_id=version_id,
            product_version_name=code_name("product_version_id", version_id),
            type_and_model=_cell(values, "typeandmodel"),
            total_licenses=total,
            total_unlimited=total_unlimited,
            issued_licenses=issued,
            available_licenses=available,
            available_unlimited=available_unlimited,
            expiration_date=expiry.value,
            expiration_date_raw=values.get("expirationdate") or None,
            expiration_never=expiry.never,
            line=row.line,
        )


def _cell(values: Mapping[str, str | None], key: str) -> str | None:
    """The text of a cell (`key` lower-cased), stripped; None when absent, null or blank."""
    value = values.get(key)
    if value is None:
        return None
    return value.strip() or None


def cell_values(keys: Sequence[str], texts: Sequence[str]) -> dict[str, str | None]:
    """Column key -> cell text; the first of repeated names wins."""
    values: dict[str, str | None] = {}
    for key, text in zip(keys, texts, strict=True):
        values.setdefault(key, text)
    return values


def _server(values: Mapping[str, str | None]) -> str | None:
    """The exporting server: PSComputerName, else __SERVER."""
    return _cell(values, "pscomputername") or _cell(values, "__server")


def _spec_for(header: Header) -> TableSpec:
    spec = header.spec or spec_from_columns(header.columns)
    if spec is None:
        raise MissingColumnError(
            f"line {header.line}: no Win32_TSIssuedLicense or Win32_TSLicenseKeyPack columns "
            f"(LicenseId/sHardwareId or KeyPackId/TotalLicenses); found "
            f"{', '.join(header.columns)[:300]}"
        )
    check_columns(spec, header.columns, f"line {header.line}")
    return spec


def read_tables(stream: BinaryIO, options: ParseOptions, source: RowSource) -> Iterator[Item]:
    """The driver: first pass for file-wide facts (when seekable), second pass for records."""
    seekable = stream.seekable()
    votes = OrderVotes()
    data_snapshot_text: str | None = None
    if seekable:
        start = stream.tell()
        spec: TableSpec | None = None
        keys: list[str] = []
        first_pass = source(stream)
        try:
            for item in first_pass:
                if isinstance(item, Header):
                    spec = _spec_for(item)
                    keys = [column_key(c) for c in item.columns]
                elif isinstance(item, Row | Cells) and spec is not None:
                    if isinstance(item, Cells):
                        item = Row(cell_values(keys, item.texts), item.line, "")
                    for column in spec.dates:
                        votes.add(item.values.get(column.lower()))
                    if data_snapshot_text is None:
                        data_snapshot_text = next(
                            (item.values[c] for c in SNAPSHOT_COLUMNS if item.values.get(c)),
                            None,
                        )
                    if votes.full:
                        break
        finally:
            close = getattr(first_pass, "close", None)
            if close is not None:
                close()
        stream.seek(start)
    zone = options.tz
    order, order_note = resolve_date_order(votes, options, always_note=not seekable)
    data_time = None
    if data_snapshot_text:
        data_time = parse_wmi_date(data_snapshot_text, order, zone).value
    snapshot = resolve_snapshot(options, data_time, zone)
    notes: list[FileNote] = []
    if order_note is not None:
        notes.append(order_note)
    assumed = [
        what
        for what, applies in (
            ("culture dates", votes.culture),
            ("snapshot time from the file name", snapshot[1] == "file name"),
            ("dates not checked first (stream read once): culture dates if any", not seekable),
        )
        if applies
    ]
    if assumed:
        notes.append(FileNote(ZONE_ASSUMED, "; ".join(assumed)))
    if not seekable:
        notes.append(FileNote("date_order_pass", "stream not seekable: order not inferred"))
    notes.extend(snapshot_notes(*snapshot))
    yield from notes
    reader: RowReader | None = None
    said: set[FileNote] = set()
    # the rows of the next RowBlock (options.row_blocks), gathered inline: a method call a
    # row would cost more than the appends
    take: Callable[[list[str]], tuple[str, ...]] | None = None
    block_cells: list[tuple[str, ...]] = []
    block_lines: list[int] = []
    block_excerpts: list[str] = []
    try:
        for item in source(stream):
            if isinstance(item, Cells):  # (the usual row: tested first)
                if take is not None:
                    texts, line, raw = item
                    block_cells.append(take(texts))
                    block_lines.append(line)
                    block_excerpts.append(raw[:EXCERPT_CHARS])
                    if len(block_lines) >= BLOCK_ROWS:
                        assert reader is not None  # (take is the reader's)
                        yield reader.block(block_cells, block_lines, block_excerpts)
                        block_cells, block_lines, block_excerpts = [], [], []
                    continue
                if reader is None:  # pragma: no cover - sources always send a Header first
                    continue
                record = reader.plain_cells(item)
                if record is not None:
                    yield record
                else:
                    yield from reader.convert(reader.row_of(item))
                continue
            if block_lines and reader is not None:  # (before a Header changes the reader)
                yield reader.block(block_cells, block_lines, block_excerpts)
                block_cells, block_lines, block_excerpts = [], [], []
            if isinstance(item, Header):
                spec = _spec_for(item)
                reader = RowReader(spec, order, zone, snapshot, options)
                reader.set_columns(item.columns)
                take = reader.block_take if options.row_blocks and reader.gives_blocks else None
                header_notes = [
                    FileNote("wmi_class", spec.wmi_class),
                    FileNote("export_form", item.form),
                ]
                if spec is not KEYPACK and "issuedate" not in {column_key(c) for c in item.columns}:
                    header_notes.append(FileNote("issue_date", ISSUE_DATE_MISSING))
                for note in header_notes:
                    if note not in said:
                        said.add(note)
                        yield note
            elif isinstance(item, Row):
                if reader is None:  # pragma: no cover - sources always send a Header first
                    continue
                yield from reader.convert(item)
            else:
                yield item
    except Exception:
        # The reading stopped (the caller's work bound, a read error): the rows gathered
        # were read, and are given before the error goes on, as they would be without
        # blocks.
        if block_lines and reader is not None:
            yield reader.block(block_cells, block_lines, block_excerpts)
        raise
    if block_lines and reader is not None:
        yield reader.block(block_cells, block_lines, block_excerpts)


__all__ = [
    "BLOCK_ROWS",
    "BLOCK_RULES",
    "ISSUED",
    "ISSUED_CLASS",
    "KEYPACK",
    "KEYPACK_CLASS",
    "PLAIN_KEYS",
    "REPORT_ENTRY",
    "REPORT_ENTRY_CLASS",
    "STATUS_NAMES",
    "Cells",
    "Header",
    "Row",
    "RowItem",
    "RowReader",
    "RowSource",
    "TableSpec",
    "check_columns",
    "excerpt",
    "looks_like_header",
    "new_cells",
    "read_tables",
    "spec_from_columns",
    "spec_from_type_name",
]
