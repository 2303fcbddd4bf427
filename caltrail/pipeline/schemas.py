"""One declared Arrow schema per lake table.

Column names of the record tables are the field names of the record dataclasses in
`parsers.base` (a test holds them equal), plus the lineage columns every row carries.
Timestamps are UTC, microsecond precision. Column names are a contract with analysts who
write their own SQL: add columns, never rename or drop them.
"""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")
STR_MAP = pa.map_(pa.string(), pa.string())

LINEAGE = [
    pa.field("source_path", pa.string(), nullable=False),
    pa.field("file_sha256", pa.string(), nullable=False),
    pa.field("parser", pa.string(), nullable=False),  # "name/version"
    pa.field("run_id", pa.string(), nullable=False),
]

EVENTS = pa.schema(
    [
        pa.field("time_created", TS),
        pa.field("filetime", pa.int64()),  # record header FILETIME, raw 100 ns ticks since 1601
        pa.field("record_id", pa.int64()),
        pa.field("event_id", pa.int32()),  # low 16 bits
        pa.field("qualifiers", pa.int32()),
        pa.field("version", pa.int32()),
        pa.field("level", pa.int32()),
        pa.field("task", pa.int32()),
        pa.field("opcode", pa.int32()),
        pa.field("keywords", pa.string()),
        pa.field("provider", pa.string()),
        pa.field("provider_guid", pa.string()),
        pa.field("event_source_name", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("computer", pa.string()),
        pa.field("user_sid", pa.string()),
        pa.field("activity_id", pa.string()),
        pa.field("related_activity_id", pa.string()),
        pa.field("process_id", pa.int64()),
        pa.field("thread_id", pa.int64()),
        pa.field("data", STR_MAP),
        pa.field("chunk", pa.int32()),
        pa.field("offset", pa.int64()),
        # read from chunk slack (a deleted or overwritten record); NULL in lakes written
        # before the column existed: read it as false
        pa.field("recovered", pa.bool_()),
        *LINEAGE,
    ]
)

TRACE_EVENTS = pa.schema(
    [
        pa.field("ts", TS),
        pa.field("ts_raw", pa.string()),
        pa.field("cpu", pa.int32()),
        pa.field("pid", pa.int64()),
        pa.field("tid", pa.int64()),
        pa.field("provider", pa.string()),
        pa.field("event_id", pa.int32()),
        pa.field("level", pa.string()),
        pa.field("function", pa.string()),
        pa.field("message", pa.string()),
        pa.field("fields", STR_MAP),
        pa.field("line", pa.int64()),
        pa.field("raw", pa.bool_()),
        *LINEAGE,
    ]
)

ISSUED_LICENSES = pa.schema(
    [
        pa.field("snapshot_time", TS),
        pa.field("snapshot_time_source", pa.string()),
        pa.field("license_server", pa.string()),
        pa.field("license_id", pa.int64()),
        pa.field("keypack_id", pa.int64()),
        pa.field("license_status", pa.int32()),
        pa.field("license_status_name", pa.string()),
        pa.field("issue_date", TS),
        pa.field("issue_date_raw", pa.string()),
        pa.field("expiration_date", TS),
        pa.field("expiration_date_raw", pa.string()),
        pa.field("expiration_never", pa.bool_()),
        pa.field("issued_to_computer", pa.string()),
        pa.field("issued_to_user", pa.string()),
        pa.field("hwid", pa.string()),
        pa.field("hwid_raw", pa.string()),
        pa.field("hwid_flag", pa.string()),
        pa.field("line", pa.int64()),
        # Win32_TSLicenseReportPerDeviceEntry rows only (CALType, ProductVersion)
        pa.field("cal_type", pa.string()),
        pa.field("product_version", pa.string()),
        *LINEAGE,
    ]
)

KEYPACKS = pa.schema(
    [
        pa.field("snapshot_time", TS),
        pa.field("snapshot_time_source", pa.string()),
        pa.field("license_server", pa.string()),
        pa.field("keypack_id", pa.int64()),
        pa.field("description", pa.string()),
        pa.field("keypack_type", pa.int32()),
        pa.field("keypack_type_name", pa.string()),
        pa.field("product_type", pa.int32()),
        pa.field("product_type_name", pa.string()),
        pa.field("product_version", pa.string()),
        pa.field("product_version_id", pa.int32()),
        pa.field("product_version_name", pa.string()),
        pa.field("type_and_model", pa.string()),
        pa.field("total_licenses", pa.int64()),
        pa.field("total_unlimited", pa.bool_()),
        pa.field("issued_licenses", pa.int64()),
        pa.field("available_licenses", pa.int64()),
        pa.field("available_unlimited", pa.bool_()),
        pa.field("expiration_date", TS),
        pa.field("expiration_date_raw", pa.string()),
        pa.field("expiration_never", pa.bool_()),
        pa.field("line", pa.int64()),
        *LINEAGE,
    ]
)

CLIENT_HWIDS = pa.schema(
    [
        pa.field("client_name", pa.string()),
        pa.field("client_name_source", pa.string()),
        pa.field("hwid", pa.string()),
        pa.field("hwid_raw", pa.string()),
        pa.field("hwid_flag", pa.string()),
        pa.field("source_kind", pa.string()),
        pa.field("key_path", pa.string()),
        pa.field("deleted", pa.bool_()),
        pa.field("store_license_count", pa.int32()),
        pa.field("license_id", pa.string()),
        pa.field("issuer", pa.string()),
        pa.field("scope", pa.string()),
        pa.field("issued_to_user", pa.string()),
        pa.field("valid_from", TS),
        pa.field("valid_from_raw", pa.string()),
        pa.field("expires_on", TS),
        pa.field("expires_on_raw", pa.string()),
        pa.field("line", pa.int64()),
        pa.field("platform_id", pa.string()),  # TSCTST "Client Platform ID"
        *LINEAGE,
    ]
)

PARSE_ERRORS = pa.schema(
    [
        pa.field("file_sha256", pa.string(), nullable=False),
        pa.field("source_path", pa.string(), nullable=False),
        pa.field("parser", pa.string()),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("quarantined", pa.bool_(), nullable=False),  # False: a warning, data was read
        pa.field("chunk", pa.int32()),
        pa.field("offset", pa.int64()),
        pa.field("line", pa.int64()),
        pa.field("excerpt", pa.string()),
        pa.field("run_id", pa.string(), nullable=False),
    ]
)

INGEST_FILES = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),  # as given (zip members: zip!member)
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime", TS),
        pa.field("kind", pa.string()),  # detected format ("evtx", "wmi_csv", ...) or None
        pa.field("parser", pa.string()),  # "name/version"
        # ok | quarantined (some records lost) | error (file unreadable) | skipped (not a
        # format we read) | duplicate (same sha256 already ingested; not re-read)
        pa.field("status", pa.string(), nullable=False),
        pa.field("records_seen", pa.int64(), nullable=False),
        pa.field("records_ok", pa.int64(), nullable=False),
        pa.field("records_bad", pa.int64(), nullable=False),
        pa.field("warnings", pa.int64(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("notes", STR_MAP),  # FileNotes: backend, tz, date_order, snapshot_time_source
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("started", TS, nullable=False),
        pa.field("finished", TS, nullable=False),
    ]
)

RUNS = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("started", TS, nullable=False),
        pa.field("finished", TS, nullable=False),
        pa.field("command", pa.string()),
        pa.field("caltrail_version", pa.string()),
        pa.field("options", STR_MAP),
        pa.field("summary", pa.string()),  # the JSON summary printed by `ingest --json`
    ]
)

RECORD_SCHEMAS: dict[str, pa.Schema] = {
    "events": EVENTS,
    "trace_events": TRACE_EVENTS,
    "issued_licenses": ISSUED_LICENSES,
    "keypacks": KEYPACKS,
    "client_hwids": CLIENT_HWIDS,
}

ALL_SCHEMAS: dict[str, pa.Schema] = {
    **RECORD_SCHEMAS,
    "parse_errors": PARSE_ERRORS,
    "ingest_files": INGEST_FILES,
    "runs": RUNS,
}

LINEAGE_NAMES = tuple(f.name for f in LINEAGE)
