"""The contract every parser follows, and the record types they emit.

A parser module exposes::

    NAME: str                     # stable parser name, stored in every row's lineage ("evtx", "wmi_csv", ...)
    VERSION: str                  # bumped when its output changes
    def sniff(head: bytes, name: str) -> bool
        # True when the first bytes of a file (up to 64 KiB) look like this format.
        # Detection is by content; `name` is only a tie-breaker, never required.
    def parse(stream: BinaryIO, options: ParseOptions) -> Iterator[Item]
        # Yields records (one of the dataclasses below), ParseIssue for what could not be
        # read, and FileNote for facts about the whole file (assumptions made, choices taken);
        # RowBlock (rows given as their cells, read in bulk by the caller) only when
        # options.row_blocks asks for it.

Parsers are pure: bytes in, items out. They never write files, never import pyarrow,
duckdb or typer, and never raise for bad *content*: a corrupt record becomes a ParseIssue
and the parser goes on. Only a file that is not of the format at all (wrong magic, empty)
raises a ParseError subclass, before any record is yielded.

Accounting: for every file, records seen = records yielded + issues with quarantined=True.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, ClassVar, Protocol


@dataclass(frozen=True, slots=True)
class ParseIssue:
    """Something in a file that could not be read (or was read with a doubt).

    Attributes:
        kind: short machine name of the problem ("bad_chunk_magic", "bad_row", ...).
        message: human sentence, evtx-rs style: where, what was expected, what was found.
        quarantined: True when a record/row/chunk was lost (it counts in records seen);
            False for a warning about data that was still read (e.g. a chunk checksum
            mismatch whose records all parsed).
        chunk: EVTX chunk index, when the issue is inside a chunk.
        offset: byte offset in the file.
        line: 1-based line number for text formats.
        excerpt: a short raw excerpt (text, or hex for binary), at most a few hundred chars.
    """

    kind: str
    message: str
    quarantined: bool = True
    chunk: int | None = None
    offset: int | None = None
    line: int | None = None
    excerpt: str = ""


@dataclass(frozen=True, slots=True)
class FileNote:
    """A fact about a whole file, stored in `ingest_files.notes` (MAP key -> value).

    Examples: ("date_order", "dmy (inferred from a day above 12)"), ("zone_assumed", "trace
    text has no zone"), ("snapshot_time_source", "file name"), ("chunks", "27 readable of 27").

    A note made of counts (built with `FileNote.counted`) also carries them, typed: a file
    read in byte ranges by several workers gets one such note per range, and the driver
    adds them up (`plus`) instead of parsing the text. Other notes are the same in every
    range.
    """

    key: str
    value: str
    counts: tuple[tuple[str, int], ...] = ()
    form: str = ""  # str.format template over the counts' names
    optional: tuple[str, ...] = ()  # counts appended as ", N name" when above zero

    @classmethod
    def counted(
        cls, key: str, counts: Mapping[str, int], form: str, optional: tuple[str, ...] = ()
    ) -> FileNote:
        """A note of counts: `value` is `form` filled in, then each `optional` count above
        zero ("12 found, 3 recovered" + ", 5 not examined")."""
        values = {name: int(n) for name, n in counts.items()}
        parts = [form.format_map(values)] if form else []
        parts += [f"{values[name]} {name}" for name in optional if values.get(name)]
        return cls(key, ", ".join(parts), tuple(values.items()), form, optional)

    def plus(self, other: FileNote) -> FileNote:
        """This note and the same note of another range of the file, counts added."""
        totals = dict(self.counts)
        for name, n in other.counts:
            totals[name] = totals.get(name, 0) + n
        return FileNote.counted(self.key, totals, self.form, self.optional)


@dataclass(slots=True)
class ParseOptions:
    """What the user told us about a file. Every field has a safe default.

    Attributes:
        file_name: the name (or path) the file had in its collection, for facts that only the
            name gives (a client name, an export date). Never opened by the parser.
        file_mtime: modification time of the file (UTC), last-resort snapshot time.
        tz: the zone of timestamps written without one (text dumps, culture dates, times in
            file names), settled once by the caller (`caltrail --tz`); a tzinfo, never a name
            looked up here, and picklable (the options go to worker processes). A parser that
            reads a time in it says so with FileNote(ZONE_ASSUMED, what was read in it).
        date_order: "dmy", "mdy" or "ymd" when the user forces it; None to infer.
        culture: a culture name such as "en-US" or "de-DE", used when date_order is None and
            the values do not settle the order.
        snapshot_time: forced snapshot time for WMI exports (UTC).
        client_name: forced client computer name for registry / TSCTST exports.
        backend: EVTX backend, "rust" or "python".
        max_seconds: work bound per file; a parser stops (with a ParseIssue) past it.
        etw_manifests: instrumentation manifests (XML bytes) for the manifest-based events
            of raw .etl files (`ingest --etw-manifest FILE`).
        tmf_files: (name, bytes) of WPP trace message format files for the WPP messages of
            raw .etl files (`ingest --tmf DIR`).
        recover: EVTX only: also read the deleted and overwritten records left in chunk
            slack (EventRecord.recovered); False reads allocated records only.
        row_blocks: the caller reads the usual rows of a table in bulk: a parser that can
            may then yield RowBlock items in place of those rows' records (WMI exports).
    """

    file_name: str = ""
    file_mtime: dt.datetime | None = None
    tz: dt.tzinfo = dt.UTC
    date_order: str | None = None
    culture: str | None = None
    snapshot_time: dt.datetime | None = None
    client_name: str | None = None
    backend: str = "rust"
    max_seconds: float = 600.0
    etw_manifests: tuple[bytes, ...] = ()
    tmf_files: tuple[tuple[str, bytes], ...] = ()
    recover: bool = True
    row_blocks: bool = False


@dataclass(frozen=True, slots=True)
class RowBlock:
    """Consecutive rows of one table in their usual shape, given as their cell texts for a
    caller that reads them in bulk (asked for with `ParseOptions.row_blocks`).

    Attributes:
        table: the lake table of the rows' records.
        rules: names the reading the rows need ("wmi_issued"); a caller that does not
            know it reads `records()`.
        cells: cell name -> one text per row ("" for an empty or absent cell).
        lines: each row's line number.
        facts: the file-wide facts the rows are read with (date order, zone, snapshot).
        records: the reference: the very items `parse` yields for these rows without
            blocks, read one by one. A caller that cannot read every row of the block the
            bulk way reads them all this way, so the rows stay in order.
    """

    table: str
    rules: str
    cells: Mapping[str, list[str]]
    lines: list[int]
    facts: Mapping[str, object]
    records: Callable[[], Iterator[Item]]

    def __len__(self) -> int:
        return len(self.lines)


# ---------------------------------------------------------------------------
# Records. One dataclass per lake table; field names are the table's column names
# (pipeline/schemas.py declares the same columns with their Arrow types, and a test holds
# the two equal). Lineage columns (source_path, file_sha256, parser, run_id) are added by
# the pipeline; location columns (chunk/offset/line) are filled by the parser.
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class EventRecord:
    """One EVTX record, any provider (table `events`).

    Attributes:
        time_created: UTC timestamp from the record header FILETIME (microsecond precision).
        filetime: raw FILETIME, 100 ns ticks since 1601-01-01 UTC (int64).
        record_id: EventRecordID.
        event_id: low 16 bits of EventID (the EVTX EventID element).
        qualifiers: the Qualifiers attribute (classic events), else None.
        version, level, task, opcode: System values; None where the record has none.
        keywords: the 64-bit keyword mask as text ("0x8080000000000000").
        provider, provider_guid, event_source_name: from <Provider>.
        channel, computer: from <System>.
        user_sid: <Security UserID>.
        activity_id, related_activity_id: from <Correlation>.
        process_id, thread_id: from <Execution>.
        data: named EventData fields by name; unnamed <Data> as param1..paramN; <Binary> as
            "Binary"; UserData flattened to dotted names ("EventXML.Param1").
        chunk: chunk index in the file; offset: byte offset of the record in the file.
        recovered: True for a record read from where Windows had let it go (the slack of a
            chunk past its last record, or a block whose chunk header is unusable): a deleted
            or overwritten record, not one the log still counts (evtx/recovery.py).
    """

    table: ClassVar[str] = "events"
    time_created: dt.datetime | None
    filetime: int
    record_id: int
    event_id: int | None
    qualifiers: int | None
    version: int | None
    level: int | None
    task: int | None
    opcode: int | None
    keywords: str | None
    provider: str | None
    provider_guid: str | None
    event_source_name: str | None
    channel: str | None
    computer: str | None
    user_sid: str | None
    activity_id: str | None
    related_activity_id: str | None
    process_id: int | None
    thread_id: int | None
    data: dict[str, str | None]
    chunk: int
    offset: int
    recovered: bool = False


@dataclass(slots=True)
class TraceRecord:
    """One decoded trace record from a text rendering of an ETL file (table `trace_events`).

    Attributes:
        ts: UTC timestamp (None when the line had no parseable time).
        ts_raw: the timestamp text as found.
        cpu, pid, tid: processor number, process and thread id (ints; hex in the source).
        provider: module in brackets (tracefmt) or Provider Name (tracerpt).
        event_id: event id where the format has one.
        level: level name or number as text.
        function: WPP function name where decoded.
        message: the message text (wrapped lines joined with newlines).
        fields: other named values (EventData/UserData/DebugData items, CSV user data).
        line: 1-based first line of the record in the file (text/CSV) or line of <Event>.
        raw: True when the line matched no known prefix and is kept verbatim in `message`.
    """

    table: ClassVar[str] = "trace_events"
    ts: dt.datetime | None
    ts_raw: str | None
    cpu: int | None
    pid: int | None
    tid: int | None
    provider: str | None
    event_id: int | None
    level: str | None
    function: str | None
    message: str | None
    fields: dict[str, str | None]
    line: int
    raw: bool = False

    @classmethod
    def bare(
        cls,
        line: int,
        message: str | None = None,
        fields: dict[str, str | None] | None = None,
        raw: bool = False,
    ) -> TraceRecord:
        """A record that knows nothing but where it is (and its message or fields): what a
        reader starts from before it reads the values, or keeps for a line it cannot read
        (`raw`)."""
        return cls(
            ts=None,
            ts_raw=None,
            cpu=None,
            pid=None,
            tid=None,
            provider=None,
            event_id=None,
            level=None,
            function=None,
            message=message,
            fields={} if fields is None else fields,
            line=line,
            raw=raw,
        )


@dataclass(slots=True)
class IssuedLicenseRecord:
    """One row of a `Win32_TSIssuedLicense` snapshot (table `issued_licenses`).

    Attributes:
        snapshot_time: when the snapshot was taken (UTC); snapshot_time_source says how we
            know ("option", "data", "file name", "file mtime").
        license_server: the exporting server (PSComputerName / __SERVER), raw.
        license_id, keypack_id: WMI keys.
        license_status: number; license_status_name: its name (0 Unknown ... 6 Concurrent).
        issue_date, expiration_date: UTC; expiration_never: the 2038-01-19 sentinel was seen.
        issue_date_raw, expiration_date_raw: the cells as found (DMTF or culture text), so
            a reading of a culture date can be checked against its text.
        issued_to_computer, issued_to_user: as exported (raw; SQL normalises names).
        hwid: canonical 40 lower-case hex chars, or None when hwid_raw cannot be converted.
        hwid_raw: sHardwareId as found; hwid_flag: "freerdp_legacy", "unconvertible", ...
        line: 1-based line (CSV) or row/object index (XML, HTML).
        cal_type, product_version: CALType and ProductVersion of a
            `Win32_TSLicenseReportPerDeviceEntry` row (the per-device report, which has no
            LicenseId, KeyPackId or IssueDate); None for `Win32_TSIssuedLicense` rows.
    """

    table: ClassVar[str] = "issued_licenses"
    snapshot_time: dt.datetime | None
    snapshot_time_source: str
    license_server: str | None
    license_id: int | None
    keypack_id: int | None
    license_status: int | None
    license_status_name: str | None
    issue_date: dt.datetime | None
    issue_date_raw: str | None
    expiration_date: dt.datetime | None
    expiration_date_raw: str | None
    expiration_never: bool
    issued_to_computer: str | None
    issued_to_user: str | None
    hwid: str | None
    hwid_raw: str | None
    hwid_flag: str | None
    line: int
    cal_type: str | None = None
    product_version: str | None = None


@dataclass(slots=True)
class KeypackRecord:
    """One row of a `Win32_TSLicenseKeyPack` snapshot (table `keypacks`).

    Counts equal to 4294967295 or -1 mean unlimited: stored as None with *_unlimited True.
    expiration_date_raw: the cell as found.
    """

    table: ClassVar[str] = "keypacks"
    snapshot_time: dt.datetime | None
    snapshot_time_source: str
    license_server: str | None
    keypack_id: int | None
    description: str | None
    keypack_type: int | None
    keypack_type_name: str | None
    product_type: int | None
    product_type_name: str | None
    product_version: str | None
    product_version_id: int | None
    product_version_name: str | None
    type_and_model: str | None
    total_licenses: int | None
    total_unlimited: bool
    issued_licenses: int | None
    available_licenses: int | None
    available_unlimited: bool
    expiration_date: dt.datetime | None
    expiration_date_raw: str | None
    expiration_never: bool
    line: int


@dataclass(slots=True)
class ClientHwidRecord:
    """A HWID found on a client (table `client_hwids`): registry export or TSCTST output.

    Attributes:
        client_name: raw client name; client_name_source: "option", "file name",
            "folder name", "data".
        hwid / hwid_raw / hwid_flag: as for issued licenses.
        source_kind: "registry" or "tsctst".
        key_path: registry key the value was under (registry only).
        deleted: True when the export deletes this value or key ("Name"=- or [-KEY]).
        store_license_count: number of Store\\LICENSE00N keys in the same export.
        license_id, issuer, scope, issued_to_user, valid_from, expires_on: TSCTST fields
            (the dates in UTC; valid_from_raw, expires_on_raw: their text as found).
        line: 1-based line where the value starts.
        platform_id: TSCTST `Client Platform ID` as found (its meaning is not public).
    """

    table: ClassVar[str] = "client_hwids"
    client_name: str | None
    client_name_source: str
    hwid: str | None
    hwid_raw: str | None
    hwid_flag: str | None
    source_kind: str
    key_path: str | None
    deleted: bool
    store_license_count: int | None
    license_id: str | None
    issuer: str | None
    scope: str | None
    issued_to_user: str | None
    valid_from: dt.datetime | None
    valid_from_raw: str | None
    expires_on: dt.datetime | None
    expires_on_raw: str | None
    line: int
    platform_id: str | None = None


Record = EventRecord | TraceRecord | IssuedLicenseRecord | KeypackRecord | ClientHwidRecord
Item = Record | ParseIssue | FileNote | RowBlock

RECORD_TYPES: tuple[type, ...] = (
    EventRecord,
    TraceRecord,
    IssuedLicenseRecord,
    KeypackRecord,
    ClientHwidRecord,
)


class ParserModule(Protocol):
    """What pipeline.detect expects of a parser module."""

    NAME: str
    VERSION: str

    def sniff(self, head: bytes, name: str) -> bool: ...

    def parse(self, stream: BinaryIO, options: ParseOptions) -> Iterator[Item]: ...


class RangeReader(ParserModule, Protocol):
    """A reader that can read a large file in byte ranges, each on its own worker.

    `plan_ranges` cuts a file of `size` bytes (whose first RANGE_HEAD bytes are `head`) into
    at most `parts` ranges [start, stop) on boundaries of the format's independent units
    (EVTX: 64 KiB chunks), or returns [] when it would not split it. `parse_range` reads
    one range (`stop` None: to the end of the file). The ranges together yield what `parse`
    yields; the notes of counts come once per range (`FileNote.plus` adds them up).
    """

    RANGE_HEAD: int

    def plan_ranges(self, head: bytes, size: int, parts: int) -> list[tuple[int, int | None]]: ...

    def parse_range(
        self, stream: BinaryIO, options: ParseOptions, start: int, stop: int | None
    ) -> Iterator[Item]: ...


# The FileNote key a parser gives when it read a time in `ParseOptions.tz` (its value says
# what: "trace text has no zone", "culture dates", ...); the ingest driver then records the
# zone itself in the file's `tz` note, and the run summary names the file.
ZONE_ASSUMED = "zone_assumed"


# The kind of the issue that ends a file at its work bound (every parser, and ingest's
# bounded stream, pipeline/bounded.py, name it alike).
BUDGET_EXCEEDED = "budget_exceeded"


@dataclass(slots=True)
class Budget:
    """A work bound for one file: parsers call `exceeded()` in their loops."""

    max_seconds: float
    started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = time.monotonic()

    def exceeded(self) -> bool:
        return time.monotonic() - self.started > self.max_seconds
