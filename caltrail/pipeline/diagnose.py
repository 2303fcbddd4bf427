"""The diagnosis as library functions: findings, timelines, recovery and revoke plans.

Everything is computed by the SQL of `queries/` (40 cal_events ... 55 plans); this module
opens a case (a lake), materialises the heavy layers once per connection so the views above
them are quick, and returns plain Python rows for the CLI, the report and the tests.

    from caltrail.pipeline.diagnose import open_case, diagnose
    con = open_case(Path("lake"))
    result = diagnose(con)
    result.findings[0]["cause"], result.findings[0]["fix"]
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from caltrail.parsers.hwid import normalize_hwid
from caltrail.pipeline.session import BuildProgress, connect


@dataclass
class Diagnosis:
    """What `diagnose` found; each list holds one dict per row of its view."""

    as_of: dt.datetime | None
    findings: list[dict[str, Any]] = field(default_factory=list)
    recovery: list[dict[str, Any]] = field(default_factory=list)
    revoke_plan: list[dict[str, Any]] = field(default_factory=list)  # PLAN_COLUMNS
    pool: list[dict[str, Any]] = field(default_factory=list)
    pool_history: list[dict[str, Any]] = field(default_factory=list)
    inputs: list[dict[str, Any]] = field(default_factory=list)
    sources: dict[str, int] = field(default_factory=dict)

    @property
    def device_findings(self) -> list[dict[str, Any]]:
        return [f for f in self.findings if f["subject_kind"] != "server"]

    @property
    def server_findings(self) -> list[dict[str, Any]]:
        return [f for f in self.findings if f["subject_kind"] == "server"]

    @property
    def healthy_on(self) -> dt.date | None:
        """The day the last excess permanent CAL is back in the pool by expiry (temporary
        CALs never come from the purchased pool: temporary_gone_on)."""
        days = [r["healthy_on"] for r in self.recovery if r.get("healthy_on") is not None]
        return max(days) if days else None

    @property
    def temporary_gone_on(self) -> dt.date | None:
        days = [r["temporary_gone_on"] for r in self.recovery if r.get("temporary_gone_on")]
        return max(days) if days else None


def open_case(
    lake: Path, materialise: bool = True, on_build: BuildProgress | None = None
) -> duckdb.DuckDBPyConnection:
    """A connection over `lake` with every view defined and the diagnosis layers computed:
    the views declared `materialize: lake|run` kept or built (`on_build`: see
    `session.connect`)."""
    return connect(lake, derive=materialise, on_build=on_build)


def rows(
    con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any] | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run `query` with bound parameters; returns (columns, rows)."""
    cursor = con.execute(query, params) if params else con.execute(query)
    columns = [d[0] for d in cursor.description or []]
    return columns, cursor.fetchall()


def dicts(
    con: duckdb.DuckDBPyConnection, query: str, params: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    columns, result = rows(con, query, params)
    return [dict(zip(columns, row, strict=True)) for row in result]


FINDING_COLUMNS = (
    "cause, subject_kind, subject, waste, confidence, excess_cals, excess_permanent, "
    "excess_temporary, excess_now, excess_now_permanent, excess_now_temporary, cals, names, "
    "hwids, first_seen, last_seen, cadence_days, reason, alternative_cause, alternative_fix, "
    "decided_by, fix, sources, evidence_counts, evidence_rows, meaning"
)


def findings(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every finding, most excess first (device findings before server problems)."""
    # (through Arrow: the same Python values, the maps made dicts again, in 0.29 s instead of
    # 0.42 s for the 3,700 findings of a 50,000-device fleet, whose lists and maps cost most.
    # Not the route of `dicts`: Arrow gives a sum of integers (DuckDB's HUGEINT) as a
    # Decimal, where the plans' and the pool's rows have ints; the findings have no such sum.)
    table = con.sql(f"select {FINDING_COLUMNS} from findings").to_arrow_table()
    maps = [column.name for column in table.schema if pa.types.is_map(column.type)]
    result: list[dict[str, Any]] = table.to_pylist()
    for row in result:
        for name in maps:
            if row[name] is not None:
                row[name] = dict(row[name])
    return result


# The revocation plan's columns the report reads, its two times as the days (UTC) it prints.
# Read whole, the 48,793 rows of a 50,000-device fleet took 0.58 s to become Python values
# (a time with its zone costs most); these 0.12-0.16 s. (The whole plan: the revoke_plan view.)
PLAN_COLUMNS = (
    "action, license_server, product_version, batch, "
    "timezone('UTC', revoke_on)::date as revoke_on, revoke_limit, installed, "
    "timezone('UTC', next_batch_on)::date as next_batch_on, client_name, keep_reason"
)


def diagnose(con: duckdb.DuckDBPyConnection) -> Diagnosis:
    """The whole diagnosis of an opened case."""
    # (fetchall: a result left unfinished blocks the connection's next relation)
    as_of = con.execute("select as_of from as_of").fetchall()
    result = Diagnosis(as_of=as_of[0][0] if as_of else None)
    result.findings = findings(con)
    result.recovery = dicts(con, "select * from cal_recovery order by day")
    result.revoke_plan = dicts(con, f"select {PLAN_COLUMNS} from revoke_plan")
    result.pool = dicts(con, "select * from cal_pool order by license_server, product_version")
    result.pool_history = dicts(
        con,
        "select * from cal_pool_history order by license_server, product_version, snapshot_time",
    )
    result.inputs = dicts(
        con,
        "select path, kind, parser, status, records_ok, records_bad, error "
        "from ingest_files order by status <> 'ok', path",
    )
    result.sources = {
        str(k): int(v)
        for k, v in con.execute(
            "select source, count(*) from cal_events group by source order by source"
        ).fetchall()
    }
    return result


def timeline(
    con: duckdb.DuckDBPyConnection, hwid: str | None = None, name: str | None = None
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The ordered history of one HWID or one computer name (user values are bound)."""
    if (hwid is None) == (name is None):
        raise ValueError("give exactly one of hwid or name")
    if hwid is not None:
        canonical = normalize_hwid(hwid).hwid
        if canonical is None:
            raise ValueError(f"not a HWID (20 bytes as hex, bytes or five DWORDs): {hwid!r}")
        return rows(con, "select * from hwid_timeline($hwid)", {"hwid": canonical})
    return rows(con, "select * from name_timeline($name)", {"name": name})


def license_lives(con: duckdb.DuckDBPyConnection, kind: str, subject: str) -> list[dict[str, Any]]:
    """Each license of a finding's subject (a HWID or a name), for the report's charts."""
    column = "hwid" if kind == "hwid" else "client_name"
    return dicts(
        con,
        f"""
        select
            l.license_key,
            l.license_id,
            l.client_name,
            l.hwid,
            l.cal_type,
            l.issued_at,
            l.counted_until,
            l.expires_at,
            l.expiry_estimated,
            l.revoked_at,
            l.replaced_at,
            l.excess_by_name,
            (
                select list(e.ts order by e.ts)
                from cal_events as e
                where e.license_key = l.license_key and e.fact = 'renewed' and e.source <> 'evtx'
            ) as renewals
        from licenses as l
        where l.{column} = $subject
        order by l.issued_at
        """,
        {"subject": subject},
    )


def counted_per_day(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Permanent per-device CALs counted per day (rebuilt from the licenses)."""
    return dicts(
        con,
        """
        with span as (
            -- from the first log record (CALs issued before the logs are only partly known)
            select
                coalesce(
                    (select min(ts) from cal_events where source in ('trace', 'evtx')),
                    (select min(issued_at) from licenses)
                )::date as d0,
                (select as_of from as_of)::date as d1
        ),
        days as (
            select unnest(generate_series(d0, d1, interval 1 day))::date as day from span
        )
        select
            d.day,
            count(l.license_key) filter (where l.cal_type = 'permanent') as permanent,
            count(l.license_key) filter (where l.cal_type = 'temporary') as temporary,
            count(l.license_key) filter (where l.excess_by_name and l.cal_type = 'permanent')
                as excess
        from days as d
        cross join span as s
        left join licenses as l
            on (case when l.issue_seen then l.issued_at::date else s.d0 end) <= d.day
            and d.day < l.counted_until::date
        group by d.day
        order by d.day
        """,
    )


__all__ = [
    "Diagnosis",
    "counted_per_day",
    "diagnose",
    "dicts",
    "findings",
    "license_lives",
    "open_case",
    "rows",
    "timeline",
]
