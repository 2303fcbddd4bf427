"""The case report: one self-contained HTML file (inline CSS and SVG, no external fetch).

Order: a table of contents, the summary and the findings (each linked to its device's
chart), then per device a timeline chart of each CAL's life (issue to end of counting,
renewals, revocation; every CAL, caltrail/pipeline/report_charts.py) with the names and
HWIDs along it, the pool over time with the recovery forecast, the revoke plan, server
problems, and the inputs read or skipped. A banner says when there is no licensing data at
all (no all-clear from an empty lake) and when times were read in a zone the EVTX logs do
not agree with. The style (caltrail/pipeline/report.css) holds from 800 px to print. Every
value that comes from the logs goes through `esc` (names in logs are attacker-controlled).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import uuid
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from caltrail.pipeline import timezone_check
from caltrail.pipeline.diagnose import Diagnosis, counted_per_day, diagnose, license_lives
from caltrail.pipeline.output import plural
from caltrail.pipeline.report_charts import day, device_chart, esc, pool_chart, ts
from caltrail.pipeline.user_sql import Window

MAX_DEVICE_CHARTS = 40
HWID_RE = re.compile(r"[0-9a-f]{40}")

NO_DATA_BANNER = (
    "No licensing data: nothing read holds a CAL fact (license-server events, WMI license "
    "exports, trace licensing messages, client HWIDs) or a license-server problem. The empty "
    "findings below are not an all-clear: add the license server's logs and exports."
)


def css() -> str:
    return resources.files("caltrail.pipeline").joinpath("report.css").read_text(encoding="utf-8")


def has_licensing_data(diag: Diagnosis) -> bool:
    """Whether anything the diagnosis reads was found: a CAL fact of any source, or a
    license-server problem. Without it an empty findings list means no data, not health."""
    return bool(diag.sources) or bool(diag.server_findings)


def licensing_span(con: duckdb.DuckDBPyConnection) -> tuple[Any, Any]:
    """The first and last time of the lake's licensing facts (None, None: none)."""
    rows = con.execute("select min(ts), max(ts) from cal_events").fetchall()
    return (rows[0][0], rows[0][1]) if rows else (None, None)


def window_misses_data(con: duckdb.DuckDBPyConnection, span: Window) -> str | None:
    """When the window holds none of the lake's licensing facts, a sentence that says so and
    where they are (an empty answer in such a window is no all-clear); else None."""
    if not span:
        return None
    first, last = licensing_span(con)
    if first is None or last is None:
        return None
    if (span.end is not None and span.end <= first) or (
        span.start is not None and span.start > last
    ):
        return (
            f"No licensing data in the window {span.describe()}: the lake's licensing facts "
            f"run from {day(first)} to {day(last)}. No finding there is not an all-clear."
        )
    return None


def subject_html(value: Any) -> str:
    """A finding's subject whole: a HWID may wrap only between its five DWORDs, a name not
    at all."""
    text = "" if value is None else str(value)
    if HWID_RE.fullmatch(text):
        return (
            '<code class="hwid">'
            + "<wbr>".join(text[i : i + 8] for i in range(0, 40, 8))
            + "</code>"
        )
    return f'<span class="name">{esc(text)}</span>'


def _table(headers: list[str], body: list[str]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return (
        f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def _td(value: Any, kind: str = "") -> str:
    cls = f' class="{kind}"' if kind else ""
    return f"<td{cls}>{esc(value)}</td>"


def _overlaps(finding: dict[str, Any], span: Window) -> bool:
    first, last = finding.get("first_seen"), finding.get("last_seen")
    if span.start is not None and last is not None and last < span.start:
        return False
    return not (span.end is not None and first is not None and first >= span.end)


def _findings_table(found: list[tuple[int, dict[str, Any]]], charted: set[int]) -> str:
    body = []
    for n, f in found:
        subject = subject_html(f["subject"])
        if n in charted:
            subject = f'<a href="#device-{n}">{subject}</a>'
        body.append(
            f'<tr id="finding-{n}">'
            + _td(f["cause"], "word")
            + f"<td>{subject}</td>"
            + f'<td class="word {esc(f["confidence"])}">{esc(f["confidence"])}</td>'
            + _td(f["excess_cals"], "num")
            + _split(f["excess_now_permanent"], f["excess_now_temporary"])
            + '<td class="prose">'
            + esc(f["reason"])
            + (f"<br><i>or: {esc(f['alternative_cause'])}</i>" if f["alternative_cause"] else "")
            + (f"<br><i>decided by: {esc(f['decided_by'])}</i>" if f["decided_by"] else "")
            + "</td>"
            + '<td class="prose">'
            + esc(f["fix"])
            + (f"<br><i>or: {esc(f['alternative_fix'])}</i>" if f["alternative_fix"] else "")
            + "</td>"
            + "<td>"
            + esc(f["sources"])
            + _recovered_note(f)
            + "</td>"
            + "</tr>"
        )
    return _table(
        [
            "cause",
            "subject",
            "confidence",
            "excess CALs",
            "excess now (permanent / temporary)",
            "why",
            "fix",
            "sources",
        ],
        body,
    )


def _recovered_note(finding: dict[str, Any]) -> str:
    """Says how many of a finding's evidence rows are EVTX records recovered from chunk
    slack (deleted or overwritten: docs/EVTX_RECOVERY.md), so a reader weighs them."""
    rows = finding.get("evidence_rows") or []
    recovered = sum(1 for r in rows if r.get("recovered"))
    if not recovered:
        return ""
    return f"<br><i>{recovered} of {len(rows)} evidence rows recovered from slack</i>"


def _split(permanent: Any, temporary: Any) -> str:
    """A permanent / temporary count pair as a table cell."""
    return f'<td class="num">{esc(permanent or 0)} / {esc(temporary or 0)}</td>'


def _zone_banner(con: duckdb.DuckDBPyConnection) -> str:
    """A banner when times were read in a zone the EVTX logs disagree with, or in UTC
    because no zone was given and nothing could check it."""
    try:
        check = timezone_check.check(con)
    except duckdb.Error:
        return ""
    if check is None:
        return ""
    if check.decided and not check.fits:
        return (
            f'<div class="banner warn">{esc(check.sentence())}. Every time those files give '
            f"is off by that much: ingest them again with --tz {esc(check.best)} --force.</div>"
        )
    if not check.decided and "UTC" in check.read_in:
        return f'<div class="banner info">{esc(check.sentence())}.</div>'
    return ""


def render_report(
    con: duckdb.DuckDBPyConnection,
    lake: Path | None = None,
    span: Window | None = None,
    diag: Diagnosis | None = None,
) -> str:
    """The whole report as one HTML string (`span`: the findings and charts of a window;
    `diag`: the session's diagnosis when the caller has it already)."""
    span = span or Window()
    diag = diag or diagnose(con)
    as_of = diag.as_of
    has_data = has_licensing_data(diag)
    # the chart counts every server's CALs: its installed line is every pool's sum
    installed = sum(int(p["installed"]) for p in diag.pool if p["installed"] is not None) or None
    servers = {p["license_server"] for p in diag.pool}
    numbered = list(enumerate(diag.findings, 1))
    devices = [(n, f) for n, f in numbered if f["subject_kind"] != "server" and _overlaps(f, span)]
    problems = [(n, f) for n, f in numbered if f["subject_kind"] == "server" and _overlaps(f, span)]
    charted = {n for n, f in devices[:MAX_DEVICE_CHARTS] if f["subject_kind"] in ("hwid", "name")}
    excess_total = sum(int(f["excess_cals"] or 0) for _, f in devices if f["cause"])
    # temporary CALs never come from the purchased pool: counted apart
    now_permanent = sum(int(f["excess_now_permanent"] or 0) for _, f in devices)
    now_temporary = sum(int(f["excess_now_temporary"] or 0) for _, f in devices)
    by_cause = Counter(f["cause"] for _, f in devices)
    meta = [f"Data up to {esc(as_of)}" if as_of else "No licensing data"]
    meta.append(f"generated {esc(dt.datetime.now(dt.UTC))}")
    if lake:
        meta.append(f"lake <code>{esc(lake)}</code>")
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">",
        f"<title>caltrail report</title><style>{css()}</style></head><body>",
        "<h1>RDS Per Device CALs: diagnosis</h1>",
        f'<p class="muted">{"; ".join(meta)}</p>',
    ]
    if span:
        out.append(
            f'<div class="banner info">Window: {esc(span.describe())}. Findings active in it '
            "and the licenses that counted in it are shown.</div>"
        )
    if not has_data:
        out.append(f'<div class="banner warn">{esc(NO_DATA_BANNER)}</div>')
    elif (missed := window_misses_data(con, span)) is not None:
        out.append(f'<div class="banner warn">{esc(missed)}</div>')
    out.append(_zone_banner(con))
    out.append(
        '<nav class="toc" aria-label="Contents">'
        '<a href="#summary">Summary</a><a href="#findings">Findings</a>'
        f'<a href="#devices">Devices ({len(charted)})</a><a href="#pool">The pool</a>'
        '<a href="#plan">Recovery and revoke plan</a><a href="#server">Server problems</a>'
        '<a href="#inputs">Inputs</a></nav>'
    )
    out += [
        '<h2 id="summary">Summary</h2><div class=cards>',
        f"<div class=card><b>{len(devices)}</b>device findings</div>",
        f"<div class=card><b>{excess_total}</b>excess CALs issued</div>",
        f"<div class=card><b>{now_permanent}</b>excess permanent CALs counted now</div>",
        f"<div class=card><b>{now_temporary}</b>excess temporary CALs counted now</div>",
        f"<div class=card><b>{esc(diag.healthy_on) or '-'}</b>pool healthy again by expiry</div>",
    ]
    for pool in diag.pool[:6]:
        named = f"{pool['license_server']}, " if len(servers) > 1 else ""
        out.append(
            f"<div class=card><b>{esc(pool['issued'])} / {esc(pool['installed'])}</b>"
            f"per-device CALs issued / installed ({esc(named)}"
            f"{esc(pool['product_version'])})</div>"
        )
    out.append(f"<div class=card><b>{len(problems)}</b>server problems</div></div>")
    if by_cause:
        out.append(
            "<p>" + "; ".join(f"{esc(c)}: {n}" for c, n in sorted(by_cause.items())) + "</p>"
        )
    out.append('<h2 id="findings">Findings</h2>')
    if devices:
        out.append(_findings_table(devices, charted))
    elif has_data:
        out.append("<p>No device holds more CALs than it should.</p>")
    else:
        out.append("<p>No finding, because there is no licensing data to judge.</p>")
    out.append(_devices_section(con, devices, charted, as_of, span))
    out.append('<h2 id="pool">The pool over time</h2>')
    per_day = [
        r
        for r in counted_per_day(con)
        if (span.start is None or ts(r["day"]) >= ts(span.start) - 86400)
        and (span.end is None or ts(r["day"]) < ts(span.end))
    ]
    out.append(pool_chart(per_day, diag.recovery, diag.pool_history, installed))
    out.append(_revoke_section(diag))
    out.append(_server_section(problems))
    out.append(_inputs_section(con, diag))
    out.append("</body></html>\n")
    return "".join(out)


def _devices_section(
    con: duckdb.DuckDBPyConnection,
    devices: list[tuple[int, dict[str, Any]]],
    charted: set[int],
    as_of: dt.datetime | None,
    span: Window,
) -> str:
    out = [
        '<h2 id="devices">Devices</h2>',
        '<p class="legend"><span><i class="sw" style="background:#4a90d9"></i>permanent</span>'
        '<span><i class="sw" style="background:#f0ad4e"></i>temporary</span>'
        '<span><i class="sw" style="background:#d9534f"></i>excess (superseded while it '
        "counted)</span><span>| renewal</span><span>x revoked</span><span>dashed outline: "
        "expiry estimated</span><span>dashed line: end of data</span></p>",
    ]
    for n, f in devices:
        if n not in charted:
            continue
        lives = license_lives(con, f["subject_kind"], f["subject"])
        hwids = f["hwids"] or []
        out.append(
            f'<h3 id="device-{n}">{esc(f["cause"])}: {subject_html(f["subject"])}'
            f'<a class="back" href="#finding-{n}">back to the finding</a></h3>'
            f'<p class="muted">{plural(len(lives), "license")}; names: '
            f"{esc(f['names'])}<br>HWIDs: "
            + ", ".join(subject_html(h) for h in hwids[:12])
            + (f" (+{len(hwids) - 12} more)" if len(hwids) > 12 else "")
            + "</p>"
        )
        out.append(device_chart(lives, as_of, (span.start, span.end)))
    hidden = len([1 for n, f in devices if f["subject_kind"] in ("hwid", "name")]) - len(charted)
    if hidden > 0:
        out.append(
            f'<p class="muted">{plural(hidden, "more device")} without a chart here '
            "(caltrail timeline --hwid / --name shows any device).</p>"
        )
    return "".join(out)


def _server_section(problems: list[tuple[int, dict[str, Any]]]) -> str:
    out = ['<h2 id="server">Server problems</h2>']
    if not problems:
        out.append("<p>No server problem in the events read.</p>")
        return "".join(out)
    out.append(
        _table(
            ["problem", "subject", "first", "last", "what it says", "fix"],
            [
                f'<tr id="finding-{n}">'
                + _td(f["cause"], "word")
                + f"<td>{subject_html(f['subject'])}</td>"
                + _td(f["first_seen"], "when")
                + _td(f["last_seen"], "when")
                + '<td class="prose">'
                + esc(f["reason"])
                + _recovered_note(f)
                + "</td>"
                + _td(f["fix"], "prose")
                + "</tr>"
                for n, f in problems
            ],
        )
    )
    return "".join(out)


def _inputs_section(con: duckdb.DuckDBPyConnection, diag: Diagnosis) -> str:
    zones = dict(
        con.execute(
            "select path, notes['tz'] from ingest_files where notes['zone_assumed'] is not null"
        ).fetchall()
    )
    body = [
        "<tr>"
        + f'<td class="path"><code>{esc(i["path"])}</code></td>'
        + _td(i["kind"], "word")
        + _td(i["status"], "word")
        + _td(i["records_ok"], "num")
        + _td(i["records_bad"], "num")
        + _td(zones.get(i["path"]))
        + _td(i["error"], "prose")
        + "</tr>"
        for i in diag.inputs
    ]
    return (
        '<h2 id="inputs">Inputs</h2>'
        + _table(["file", "kind", "status", "records", "bad", "times read in", "error"], body)
        + '<p class="muted">Facts per source: '
        + (esc(", ".join(f"{k} {v}" for k, v in diag.sources.items())) or "none")
        + "</p>"
    )


def _revoke_section(diag: Diagnosis) -> str:
    out = ['<h2 id="plan">Recovery and revoke plan</h2>']
    left = int(diag.recovery[0]["excess_left"] or 0) if diag.recovery else 0
    temporary = (
        f" (the excess temporary CALs, which never came from the pool, are gone on "
        f"{esc(diag.temporary_gone_on)})"
        if diag.temporary_gone_on
        else ""
    )
    out.append(
        f"<p>{plural(left, 'excess permanent CAL')} still {'counts' if left == 1 else 'count'} "
        "at the end of the data; by expiry alone "
        f"the last returns on <b>{esc(diag.healthy_on) or '-'}</b>{temporary}.</p>"
    )
    batches: dict[Any, list[dict[str, Any]]] = {}
    for r in diag.revoke_plan:
        if r["action"] == "revoke":
            key = (r["license_server"], r["product_version"], r["batch"])
            batches.setdefault(key, []).append(r)
    if not batches:
        out.append("<p>Nothing to revoke.</p>")
        return "".join(out)
    body = []
    for (server, product, batch), items in list(batches.items())[:30]:
        first = items[0]
        body.append(
            "<tr>"
            + _td(server, "word")
            + _td(product)
            + _td(batch, "num")
            + _td(day(first["revoke_on"]), "when")
            + _td(len(items), "num")
            + _td(f"{first['revoke_limit']} of {first['installed']}")
            + _td(day(first["next_batch_on"]), "when")
            + _td(sorted({str(i["client_name"]) for i in items})[:8], "prose")
            + "</tr>"
        )
    out.append(
        _table(
            [
                "license server",
                "product",
                "batch",
                "revoke on",
                "licenses",
                "allowance (20%)",
                "next batch",
                "names (first 8)",
            ],
            body,
        )
    )
    kept = [r for r in diag.revoke_plan if r["action"] == "keep"]
    if kept:
        reasons = Counter(str(r["keep_reason"]) for r in kept)
        out.append(
            f"<p>{plural(len(kept), 'excess CAL')} kept out of the plan: "
            + "; ".join(f"{esc(reason)} ({n})" for reason, n in reasons.most_common())
            + "</p>"
        )
    expiring = sum(1 for r in diag.revoke_plan if r["action"] == "expires-first")
    if expiring:
        out.append(
            f"<p>{plural(expiring, 'excess CAL')} "
            + (
                "expires before its turn and needs"
                if expiring == 1
                else "expire before their turn and need"
            )
            + " no revocation.</p>"
        )
    return "".join(out)


def write_report(
    con: duckdb.DuckDBPyConnection,
    out: Path,
    lake: Path | None = None,
    span: Window | None = None,
    diag: Diagnosis | None = None,
) -> Path:
    """Write the report to `out` (atomically: a temporary file beside it, renamed) and
    return its path."""
    text = render_report(con, lake, span, diag)
    tmp = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


__all__ = [
    "MAX_DEVICE_CHARTS",
    "device_chart",
    "esc",
    "has_licensing_data",
    "licensing_span",
    "pool_chart",
    "render_report",
    "subject_html",
    "window_misses_data",
    "write_report",
]
