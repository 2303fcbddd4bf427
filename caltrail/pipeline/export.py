"""Exports a SIEM takes as they are: `caltrail export --format ecs|timesketch|csv --what
events|cal-facts|findings`.

- `ecs`: one JSON document per line in the Elastic Common Schema: `@timestamp`,
  `ecs.version`, `message`, `event.*`, `host.name`, `log.level`, `user.name`, `related.*`,
  `rule.*`; the Windows event fields under `winlog.*` as Winlogbeat names them; what ECS has
  no field for under `caltrail.*` (a CAL fact's license and HWID, a finding's cause, excess
  and fix, every row's lineage).
- `timesketch`: one JSON object per line with the fields Timesketch's importer requires
  (`message`, `datetime` in ISO 8601, `timestamp_desc`) and `timestamp` (microseconds),
  then the same fields flattened (`event_code`, `winlog_channel`, ...).
- `csv`: the same flattened fields as columns, fixed per `--what` (a map or a list is one
  JSON cell; cells that a spreadsheet would run as a formula are neutralised).

Rows are streamed from DuckDB in Arrow batches and written as they come: memory does not
follow the size of the lake. A file is written under a temporary name and renamed when
complete. The fields used and their types are data (`export_fields.csv`, with where each is
defined); the tests hold every document to it.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import duckdb

from caltrail.pipeline.output import safe_csv_cell

FORMATS = ("ecs", "timesketch", "csv")
WHATS = ("events", "cal-facts", "findings")
ECS_VERSION = "8.11.0"
FIELDS_FILE = Path(__file__).with_name("export_fields.csv")
BATCH_ROWS = 10_000
# Windows event levels (the System/Level of a record), as ECS's log.level keyword.
LEVELS = {0: "information", 1: "critical", 2: "error", 3: "warning", 4: "information", 5: "verbose"}

# The rows of each --what: the view, its time column, and the window on it ($start, $end:
# bound, NULL for an open end). Findings overlap the window when seen in it at all. A row
# without a time has no place on a timeline (ECS requires @timestamp, Timesketch datetime):
# it is left out, and `caltrail sql` reads it. Rows come in time order, the same every run
# (DuckDB sorts out of core: memory stays bounded whatever the lake's size).
_QUERIES = {
    "events": """
        select * exclude (run_id, parser, dup_count) from events
        where time_created is not null
          and ($start is null or time_created >= $start) and ($end is null or time_created < $end)
        order by time_created, computer, channel, record_id
    """,
    "cal-facts": """
        select * from cal_events
        where ts is not null
          and ($start is null or ts >= $start) and ($end is null or ts < $end)
        order by ts, source_path, source_line, fact
    """,
    "findings": """
        select * from finding_exports
        where ($start is null or coalesce(last_seen, seen_at) >= $start)
          and ($end is null or coalesce(first_seen, seen_at) < $end)
        order by seen_at, finding_id
    """,
}
_DESCRIPTIONS = {
    "events": "Event Recorded",
    "cal-facts": "CAL Fact",
    "findings": "Finding Last Seen",
}


def _iso(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        return stamp.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _str(value: object) -> str | None:
    return None if value is None else str(value)


def _pairs(value: Any) -> Any:
    """A DuckDB/Arrow map as a dict (Arrow gives a list of (key, value) pairs)."""
    if isinstance(value, list) and all(isinstance(p, tuple) and len(p) == 2 for p in value):
        return {str(k): v for k, v in value}
    return value


def _prune(doc: dict[str, Any]) -> dict[str, Any]:
    """Without the fields that have no value (ECS: a field absent rather than null)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict) and key not in ("event_data", "evidence_counts"):
            value = _prune(value)
            if value:
                out[key] = value
        elif value is not None and value != [] and value != "":
            out[key] = value
    return out


def _event_doc(row: dict[str, Any]) -> dict[str, Any]:
    code = _str(row["event_id"])
    return {
        "@timestamp": _iso(row["time_created"]),
        "ecs": {"version": ECS_VERSION},
        "message": f"{row['provider'] or '?'} event {code} in {row['channel'] or '?'} "
        f"on {row['computer'] or '?'}",
        "event": {
            "kind": "event",
            "code": code,
            "provider": row["provider"],
            "dataset": "caltrail.events",
            "module": "caltrail",
        },
        "host": {"name": row["computer"]},
        "log": {"level": LEVELS.get(row["level"]) if row["level"] is not None else None},
        "winlog": {
            "channel": row["channel"],
            "record_id": _str(row["record_id"]),
            "event_id": code,
            "provider_name": row["provider"],
            "provider_guid": row["provider_guid"],
            "computer_name": row["computer"],
            "event_data": _pairs(row["data"]) or None,
            "process": {"pid": row["process_id"], "thread": {"id": row["thread_id"]}},
            "user": {"identifier": row["user_sid"]},
            "activity_id": row["activity_id"],
            "related_activity_id": row["related_activity_id"],
            "keywords": [row["keywords"]] if row["keywords"] else None,
            "opcode": _str(row["opcode"]),
            "task": _str(row["task"]),
            "version": row["version"],
        },
        "caltrail": {
            "source_path": row["source_path"],
            "file_sha256": row["file_sha256"],
            "chunk": row["chunk"],
            "offset": row["offset"],
            "recovered": bool(row["recovered"]),
        },
    }


def _fact_doc(row: dict[str, Any]) -> dict[str, Any]:
    device = row["client_name"] or row["hwid"] or "?"
    hosts = [h for h in (row["client_name"], row["license_server"], row["session_host"]) if h]
    return {
        "@timestamp": _iso(row["ts"]),
        "ecs": {"version": ECS_VERSION},
        "message": f"CAL {row['fact']} for {device}"
        + (f" by {row['license_server']}" if row["license_server"] else "")
        + f" ({row['source']})",
        "event": {
            "kind": "event",
            "action": row["fact"],
            "dataset": "caltrail.cal_facts",
            "module": "caltrail",
        },
        "host": {"name": row["client_name"]},
        "user": {"name": row["user_name"]},
        "related": {
            "hosts": sorted(set(hosts)) or None,
            "user": [row["user_name"]] if row["user_name"] else None,
        },
        "caltrail": {
            "cal": {
                "fact": row["fact"],
                "source": row["source"],
                "license_server": row["license_server"],
                "license_key": row["license_key"],
                "license_id": row["license_id"],
                "keypack_id": row["keypack_id"],
                "generation": row["generation"],
                "client_name": row["client_name"],
                "client_name_raw": row["client_name_raw"],
                "hwid": row["hwid"],
                "hwid_raw": row["hwid_raw"],
                "hwid_flag": row["hwid_flag"],
                "cal_type": row["cal_type"],
                "expires": _iso(row["expires"]),
                "session_host": row["session_host"],
                "detail": row["detail"],
            },
            "source_path": row["source_path"],
            "source_line": row["source_line"],
            "file_sha256": row["file_sha256"],
        },
    }


def _finding_doc(row: dict[str, Any]) -> dict[str, Any]:
    subject = f"{row['subject_kind']} {row['subject']}"
    return {
        "@timestamp": _iso(row["seen_at"]),
        "ecs": {"version": ECS_VERSION},
        "message": f"{row['cause']}: {subject}: {row['reason']}",
        "event": {
            "kind": "alert",
            "id": row["finding_id"],
            "action": row["cause"],
            "reason": row["reason"],
            "start": _iso(row["first_seen"]),
            "end": _iso(row["last_seen"]),
            "dataset": "caltrail.findings",
            "module": "caltrail",
        },
        "rule": {"name": row["cause"], "description": row["meaning"]},
        "host": {"name": row["subject"] if row["subject_kind"] == "name" else None},
        "related": {"hosts": list(row["names"] or []) or None},
        "caltrail": {
            "finding": {
                "id": row["finding_id"],
                "cause": row["cause"],
                "subject_kind": row["subject_kind"],
                "subject": row["subject"],
                "confidence": row["confidence"],
                "waste": row["waste"],
                "excess_cals": row["excess_cals"],
                "excess_permanent": row["excess_permanent"],
                "excess_now": row["excess_now"],
                "cals": row["cals"],
                "names": row["names"],
                "hwids": row["hwids"],
                "first_seen": _iso(row["first_seen"]),
                "last_seen": _iso(row["last_seen"]),
                "cadence_days": row["cadence_days"],
                "alternative_cause": row["alternative_cause"],
                "fix": row["fix"],
                "sources": row["sources"],
                "evidence_counts": _pairs(row["evidence_counts"]),
                "evidence_rows": row["evidence_rows"],
            }
        },
    }


_DOCS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "events": _event_doc,
    "cal-facts": _fact_doc,
    "findings": _finding_doc,
}


def ecs_documents(rows: Iterator[dict[str, Any]], what: str) -> Iterator[dict[str, Any]]:
    make = _DOCS[what]
    for row in rows:
        yield _prune(make(row))


# Objects kept whole when flattening (one field, one CSV cell): their keys come from the data.
_LEAVES = frozenset({"winlog.event_data", "caltrail.finding.evidence_counts"})


def flatten(doc: dict[str, Any], sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """{"event": {"code": "1"}} -> {"event.code": "1"} (sep "_" for Timesketch)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        path = f"{prefix}.{key}" if prefix else key
        name = path.replace(".", sep) if sep != "." else path
        if isinstance(value, dict) and path not in _LEAVES:
            out.update(flatten(value, sep, path))
        else:
            out[name] = value
    return out


def _micros(iso: str) -> int:
    stamp = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    delta = stamp - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def timesketch_document(doc: dict[str, Any], what: str) -> dict[str, Any]:
    flat = flatten({k: v for k, v in doc.items() if k not in ("@timestamp", "message")}, "_")
    when = doc["@timestamp"]
    return {
        "message": doc["message"],
        "datetime": when,
        "timestamp": _micros(when),
        "timestamp_desc": _DESCRIPTIONS[what],
        **flat,
    }


def csv_columns(what: str) -> list[str]:
    """The CSV's columns for `what`: every field its documents can have, in order."""
    template = {
        "events": _event_doc,
        "cal-facts": _fact_doc,
        "findings": _finding_doc,
    }[what](_AnyRow())
    return list(flatten(template))


class _AnyRow(dict[str, Any]):
    """A row whose every column has a value: gives the full shape of a document."""

    def __missing__(self, key: str) -> Any:
        return 1 if key in ("level", "recovered") else "x"


def _json(value: Any) -> str:
    return json.dumps(value, default=_iso, ensure_ascii=False, separators=(",", ":"))


def _rows(
    con: duckdb.DuckDBPyConnection, what: str, start: Any, end: Any
) -> Iterator[dict[str, Any]]:
    # a relation's reader streams: DuckDB produces a batch when the previous one is taken
    relation = con.sql(_QUERIES[what], params={"start": start, "end": end})
    reader: Any = relation.to_arrow_reader(BATCH_ROWS)
    for batch in reader:
        yield from batch.to_pylist()


def write_export(
    con: duckdb.DuckDBPyConnection,
    what: str,
    fmt: str,
    out: IO[str],
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> int:
    """Stream the rows of `what` between `start` and `end` to `out` in `fmt`; returns the
    number of rows written."""
    if what not in WHATS or fmt not in FORMATS:
        raise ValueError(f"unknown export {what!r} as {fmt!r}")
    docs = ecs_documents(_rows(con, what, start, end), what)
    count = 0
    if fmt == "csv":
        columns = csv_columns(what)
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for doc in docs:
            flat = flatten(doc)
            writer.writerow(
                [
                    _json(v) if isinstance(v, dict | list) else safe_csv_cell(v)
                    for v in (flat.get(c) for c in columns)
                ]
            )
            count += 1
        return count
    for doc in docs:
        line = timesketch_document(doc, what) if fmt == "timesketch" else doc
        out.write(_json(line) + "\n")
        count += 1
    return count


def export_to(
    con: duckdb.DuckDBPyConnection,
    what: str,
    fmt: str,
    target: Path | None,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    stdout: IO[str] | None = None,
) -> int:
    """Write the export to `target` (atomically: a temporary name, renamed when complete),
    or to `stdout` when target is None."""
    if target is None:
        assert stdout is not None
        return write_export(con, what, fmt, stdout, start, end)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as handle:
            count = write_export(con, what, fmt, handle, start, end)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


__all__ = [
    "ECS_VERSION",
    "FIELDS_FILE",
    "FORMATS",
    "WHATS",
    "csv_columns",
    "export_to",
    "flatten",
    "write_export",
]
