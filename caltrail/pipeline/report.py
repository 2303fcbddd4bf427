"""The case report: one self-contained HTML file (inline CSS and SVG, no external fetch).

Order: summary and findings first, then per device a timeline chart of each CAL's life
(issue to end of counting, renewals, revocation) with the names and HWIDs along it, the pool
over time with the recovery forecast, the revoke plan, server problems, and the inputs read
or skipped. Every value that comes from the logs goes through `esc` (names in logs are
attacker-controlled).
"""

from __future__ import annotations

import datetime as dt
import html
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb

from caltrail.pipeline.diagnose import Diagnosis, counted_per_day, diagnose, license_lives
from caltrail.pipeline.user_sql import Window

MAX_DEVICE_CHARTS = 40
MAX_BARS = 60
CHART_W = 1100
LABEL_W = 250

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#1d2430;
max-width:1200px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ccd}
h3{font-size:15px;margin:18px 0 4px}
table{border-collapse:collapse;width:100%;font-size:13px;margin:6px 0}
th,td{border:1px solid #d6dae3;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#eef1f6}td.num{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#667}.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #d6dae3;border-radius:6px;padding:8px 12px;min-width:150px}
.card b{display:block;font-size:22px}
.high{color:#0a6b2b}.medium{color:#8a5a00}.low{color:#a3262a}
code{font-size:12px;word-break:break-all}svg{display:block;margin:4px 0}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.sw{display:inline-block;width:12px;height:10px;margin-right:4px;vertical-align:middle}
"""


def esc(value: Any) -> str:
    """HTML-escape any value (None -> empty); quotes too, so it is safe in attributes."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return html.escape(value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    if isinstance(value, list | tuple):
        return html.escape(", ".join(str(v) for v in value), quote=True)
    return html.escape(str(value), quote=True)


def _day(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d")
    if isinstance(value, dt.date):
        return value.isoformat()
    return esc(value)


def _table(headers: list[str], body: list[list[str]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(body_row) + "</tr>" for body_row in body)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _td(value: Any, num: bool = False) -> str:
    cls = ' class="num"' if num else ""
    return f"<td{cls}>{esc(value)}</td>"


def _ts(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(0), dt.UTC).timestamp()
    return 0.0


def _axis(t0: float, t1: float, x0: float, width: float, y: float, height: float) -> str:
    """Month ticks with labels along the bottom of a chart."""
    out = []
    start = dt.datetime.fromtimestamp(t0, dt.UTC).replace(day=1, hour=0, minute=0, second=0)
    cur = start
    while cur.timestamp() <= t1:
        x = x0 + (cur.timestamp() - t0) / (t1 - t0) * width
        if x >= x0:
            out.append(
                f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{y:.1f}" stroke="#e3e6ee"/>'
                f'<text x="{x + 2:.1f}" y="{y + 12:.1f}" font-size="10" fill="#667">'
                f"{cur:%Y-%m}</text>"
            )
        cur = (cur + dt.timedelta(days=32)).replace(day=1)
    return "".join(out)


def device_chart(lives: list[dict[str, Any]], as_of: dt.datetime | None) -> str:
    """SVG: one bar per license, from issue to when it stopped counting."""
    shown = lives[-MAX_BARS:]
    if not shown:
        return '<p class="muted">No license of this subject has a known issue time.</p>'
    starts = [_ts(x["issued_at"]) for x in shown if x["issued_at"] is not None]
    ends = [_ts(x["counted_until"] or x["expires_at"]) for x in shown]
    t0 = min(starts) if starts else 0.0
    t1 = max([*ends, _ts(as_of) if as_of else 0.0, t0 + 86400])
    bar_h, gap = 11, 3
    width = CHART_W - LABEL_W - 10
    height = len(shown) * (bar_h + gap) + 8
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{height + 18}" '
        f'role="img" aria-label="CAL timeline">',
        f'<g transform="translate({LABEL_W},0)">',
        _axis(t0, t1, 0, width, height, height),
    ]
    if as_of is not None:
        x = (_ts(as_of) - t0) / (t1 - t0) * width
        parts.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#333" '
            f'stroke-dasharray="3,3"/>'
        )
    for i, life in enumerate(shown):
        y = 4 + i * (bar_h + gap)
        a = _ts(life["issued_at"]) if life["issued_at"] is not None else t0
        b = _ts(life["counted_until"] or life["expires_at"] or as_of)
        xa = (a - t0) / (t1 - t0) * width
        xb = max(xa + 2, (b - t0) / (t1 - t0) * width)
        if life["excess_by_name"]:
            color = "#d9534f"
        elif life["cal_type"] == "temporary":
            color = "#f0ad4e"
        else:
            color = "#4a90d9"
        dash = ' stroke="#333" stroke-dasharray="2,2"' if life["expiry_estimated"] else ""
        title = (
            f"license {life['license_id']} {life['cal_type'] or ''} name {life['client_name']} "
            f"HWID {life['hwid']} issued {_day(life['issued_at'])} "
            f"counted until {_day(life['counted_until'])}"
        )
        parts.append(
            f'<rect x="{xa:.1f}" y="{y}" width="{xb - xa:.1f}" height="{bar_h}" '
            f'fill="{color}"{dash}><title>{esc(title)}</title></rect>'
        )
        for r in life.get("renewals") or []:
            xr = (_ts(r) - t0) / (t1 - t0) * width
            parts.append(
                f'<line x1="{xr:.1f}" y1="{y - 1}" x2="{xr:.1f}" y2="{y + bar_h + 1}" '
                f'stroke="#123" stroke-width="2"/>'
            )
        if life["revoked_at"] is not None:
            xr = (_ts(life["revoked_at"]) - t0) / (t1 - t0) * width
            parts.append(
                f'<text x="{xr:.1f}" y="{y + bar_h - 1}" font-size="11" fill="#000">x</text>'
            )
        label = f"{life['client_name'] or '?'}  {(life['hwid'] or '')[:16]}"
        parts.append(
            f'<text x="-6" y="{y + bar_h - 2}" font-size="10" text-anchor="end" '
            f'font-family="monospace">{esc(label)}</text>'
        )
    parts.append("</g></svg>")
    note = ""
    if len(lives) > len(shown):
        note = f'<p class="muted">The last {len(shown)} of {len(lives)} licenses are shown.</p>'
    return "".join(parts) + note


def pool_chart(per_day: list[dict[str, Any]], diag: Diagnosis, installed: int | None) -> str:
    """SVG: permanent CALs counted per day, the installed line, and the recovery forecast."""
    if not per_day:
        return '<p class="muted">No license history to chart.</p>'
    # forecast: today's permanent CALs minus the excess permanent ones as they expire
    now_perm = per_day[-1]["permanent"]
    forecast = []
    returned = 0
    for r in diag.recovery:
        returned += int(r["back_permanent"] or 0)
        forecast.append((r["day"], max(now_perm - returned, 0)))
    points = [(r["day"], r["permanent"]) for r in per_day]
    all_days = [p[0] for p in points] + [f[0] for f in forecast]
    t0, t1 = _ts(min(all_days)), _ts(max(all_days)) + 86400
    top = max([p[1] for p in points] + [f[1] for f in forecast] + [installed or 0, 1]) * 1.1
    w, h = CHART_W - 60, 220

    def xy(day: Any, value: float) -> str:
        return f"{(_ts(day) - t0) / (t1 - t0) * w:.1f},{h - value / top * h:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_W}" height="{h + 30}" '
        f'role="img" aria-label="CAL pool over time"><g transform="translate(50,4)">',
        _axis(t0, t1, 0, w, h, h),
        f'<text x="-6" y="10" font-size="10" text-anchor="end">{int(top)}</text>',
        f'<text x="-6" y="{h}" font-size="10" text-anchor="end">0</text>',
        '<polyline fill="none" stroke="#4a90d9" stroke-width="2" points="'
        + " ".join(xy(d, v) for d, v in points)
        + '"/>',
    ]
    if forecast:
        parts.append(
            '<polyline fill="none" stroke="#2e8b57" stroke-width="2" stroke-dasharray="5,3" '
            'points="' + " ".join(xy(d, v) for d, v in forecast) + '"/>'
        )
    for snap in diag.pool_history:
        if snap["issued"] is None or snap["snapshot_time"] is None:
            continue
        if not t0 <= _ts(snap["snapshot_time"]) <= t1:
            continue
        x, y = xy(snap["snapshot_time"], float(snap["issued"])).split(",")
        parts.append(
            f'<circle cx="{x}" cy="{y}" r="4" fill="#8e44ad"><title>snapshot '
            f"{esc(snap['snapshot_time'])}: {esc(snap['issued'])} issued</title></circle>"
        )
    if installed:
        y = h - installed / top * h
        parts.append(
            f'<line x1="0" y1="{y:.1f}" x2="{w}" y2="{y:.1f}" stroke="#d9534f" '
            f'stroke-dasharray="6,3"/><text x="4" y="{y - 3:.1f}" font-size="10" '
            f'fill="#d9534f">installed {installed}</text>'
        )
    parts.append("</g></svg>")
    legend = (
        '<p class="legend"><span><i class="sw" style="background:#4a90d9"></i>permanent CALs '
        'counted (rebuilt from the logs)</span><span><i class="sw" style="background:#2e8b57">'
        "</i>forecast once the causes are fixed: excess CALs expire</span>"
        '<span><i class="sw" style="background:#8e44ad"></i>issued per key-pack snapshot</span>'
        '<span><i class="sw" style="background:#d9534f"></i>installed</span></p>'
    )
    return "".join(parts) + legend


def _findings_table(diag: Diagnosis) -> str:
    body = [
        [
            _td(f["cause"]),
            f"<td><code>{esc(f['subject'])}</code></td>",
            f'<td class="{esc(f["confidence"])}">{esc(f["confidence"])}</td>',
            _td(f["excess_cals"], num=True),
            _td(f["excess_now"], num=True),
            "<td>"
            + esc(f["reason"])
            + (f"<br><i>or: {esc(f['alternative_cause'])}</i>" if f["alternative_cause"] else "")
            + "</td>",
            _td(f["fix"]),
            _td(f["sources"]),
        ]
        for f in diag.device_findings
    ]
    if not body:
        return "<p>No device holds more CALs than it should.</p>"
    return _table(
        ["cause", "subject", "confidence", "excess CALs", "excess now", "why", "fix", "sources"],
        body,
    )


def render_report(
    con: duckdb.DuckDBPyConnection, lake: Path | None = None, span: Window | None = None
) -> str:
    """The whole report as one HTML string."""
    diag = diagnose(con)
    as_of = diag.as_of
    # the chart counts every server's CALs: its installed line is every pool's sum
    installed = sum(int(p["installed"]) for p in diag.pool if p["installed"] is not None) or None
    servers = {p["license_server"] for p in diag.pool}
    excess_total = sum(int(f["excess_cals"] or 0) for f in diag.device_findings if f["cause"])
    excess_now = sum(int(f["excess_now"] or 0) for f in diag.device_findings)
    by_cause = Counter(f["cause"] for f in diag.device_findings)
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">",
        f"<title>caltrail report</title><style>{CSS}</style></head><body>",
        "<h1>RDS Per Device CALs: diagnosis</h1>",
        f'<p class="muted">Data up to {esc(as_of)}; generated '
        f"{esc(dt.datetime.now(dt.UTC))}"
        + (f"; lake <code>{esc(lake)}</code>" if lake else "")
        + "</p>",
        "<h2>Summary</h2><div class=cards>",
        f"<div class=card><b>{len(diag.device_findings)}</b>device findings</div>",
        f"<div class=card><b>{excess_total}</b>excess CALs issued</div>",
        f"<div class=card><b>{excess_now}</b>excess CALs counted now</div>",
        f"<div class=card><b>{esc(diag.healthy_on) or '-'}</b>pool healthy again by expiry</div>",
    ]
    for pool in diag.pool[:6]:
        named = f"{pool['license_server']}, " if len(servers) > 1 else ""
        out.append(
            f"<div class=card><b>{esc(pool['issued'])} / {esc(pool['installed'])}</b>"
            f"per-device CALs issued / installed ({esc(named)}"
            f"{esc(pool['product_version'])})</div>"
        )
    out.append(f"<div class=card><b>{len(diag.server_findings)}</b>server problems</div></div>")
    if by_cause:
        out.append(
            "<p>" + "; ".join(f"{esc(c)}: {n}" for c, n in sorted(by_cause.items())) + "</p>"
        )
    out.append("<h2>Findings</h2>" + _findings_table(diag))
    out.append("<h2>Devices</h2>")
    out.append(
        '<p class="legend"><span><i class="sw" style="background:#4a90d9"></i>permanent</span>'
        '<span><i class="sw" style="background:#f0ad4e"></i>temporary</span>'
        '<span><i class="sw" style="background:#d9534f"></i>excess (superseded while it '
        "counted)</span><span>| renewal</span><span>x revoked</span><span>dashed outline: "
        "expiry estimated</span><span>dashed line: end of data</span></p>"
    )
    for f in diag.device_findings[:MAX_DEVICE_CHARTS]:
        if f["subject_kind"] not in ("hwid", "name"):
            continue
        lives = license_lives(con, f["subject_kind"], f["subject"])
        out.append(
            f"<h3>{esc(f['cause'])}: <code>{esc(f['subject'])}</code></h3>"
            f'<p class="muted">names: {esc(f["names"])}<br>HWIDs: '
            f"<code>{esc((f['hwids'] or [])[:12])}</code>"
            + (f" (+{len(f['hwids']) - 12} more)" if f["hwids"] and len(f["hwids"]) > 12 else "")
            + "</p>"
        )
        out.append(device_chart(lives, as_of))
    out.append("<h2>The pool over time</h2>")
    out.append(pool_chart(counted_per_day(con), diag, installed))
    out.append(_revoke_section(diag))
    out.append("<h2>Server problems</h2>")
    if diag.server_findings:
        out.append(
            _table(
                ["problem", "subject", "first", "last", "what it says", "fix"],
                [
                    [
                        _td(f["cause"]),
                        _td(f["subject"]),
                        _td(f["first_seen"]),
                        _td(f["last_seen"]),
                        _td(f["reason"]),
                        _td(f["fix"]),
                    ]
                    for f in diag.server_findings
                ],
            )
        )
    else:
        out.append("<p>No server problem in the events read.</p>")
    out.append("<h2>Inputs</h2>")
    out.append(
        _table(
            ["file", "kind", "status", "records", "bad", "error"],
            [
                [
                    f"<td><code>{esc(i['path'])}</code></td>",
                    _td(i["kind"]),
                    _td(i["status"]),
                    _td(i["records_ok"], num=True),
                    _td(i["records_bad"], num=True),
                    _td(i["error"]),
                ]
                for i in diag.inputs
            ],
        )
    )
    out.append(
        '<p class="muted">Facts per source: '
        + esc(", ".join(f"{k} {v}" for k, v in diag.sources.items()))
        + "</p></body></html>\n"
    )
    return "".join(out)


def _revoke_section(diag: Diagnosis) -> str:
    out = ["<h2>Recovery and revoke plan</h2>"]
    left = diag.recovery[0]["excess_left"] if diag.recovery else 0
    out.append(
        f"<p>{esc(left)} excess CALs still count at the end of the data; by expiry alone the "
        f"last returns on <b>{esc(diag.healthy_on) or '-'}</b>.</p>"
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
            [
                _td(server),
                _td(product),
                _td(batch, num=True),
                _td(first["revoke_on"]),
                _td(len(items), num=True),
                _td(f"{first['revoke_limit']} of {first['installed']}"),
                _td(first["next_batch_on"]),
                _td(sorted({str(i["client_name"]) for i in items})[:8]),
            ]
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
    expiring = sum(1 for r in diag.revoke_plan if r["action"] == "expires-first")
    if expiring:
        out.append(
            f"<p>{expiring} excess CALs expire before their turn and need no revocation.</p>"
        )
    return "".join(out)


def has_licensing_data(diag: Diagnosis) -> bool:
    """Whether anything the diagnosis reads was found: a CAL fact of any source, or a
    license-server problem. Without it an empty findings list means no data, not health."""
    return bool(diag.sources) or bool(diag.server_findings)


def write_report(
    con: duckdb.DuckDBPyConnection,
    out: Path,
    lake: Path | None = None,
    span: Window | None = None,
) -> Path:
    """Write the report to `out` (atomically) and return its path."""
    text = render_report(con, lake, span)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


__all__ = [
    "device_chart",
    "esc",
    "has_licensing_data",
    "pool_chart",
    "render_report",
    "write_report",
]
