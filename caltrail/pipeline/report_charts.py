"""The case report's charts: inline SVG that scales with the page (a viewBox, no fixed
width), every value from the logs escaped.

- `device_chart`: one bar per license of a device, from issue to when it stopped counting,
  with renewals and revocations. Every license is drawn, thinner as there are more, so the
  onset of a cloned image or a wiping script is in the picture; past MAX_BARS the first and
  the last halves are drawn around a marked gap (the onset stays).
- `pool_chart`: the permanent CALs counted per day, the installed line, the snapshots'
  counts, and the forecast once the causes are fixed.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

CHART_W = 1000
LABEL_W = 230
AXIS_LABEL_W = 44  # the room a "2025-03" label needs
MAX_BARS = 500
LABEL_NAME = 18  # characters of a name in a bar's label (the label column holds ~36)
PLOT_H = 460  # the height bars share when there are many


def esc(value: Any) -> str:
    """HTML-escape any value (None -> empty); quotes too, so it is safe in attributes."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return html.escape(value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
    if isinstance(value, list | tuple):
        return html.escape(", ".join(str(v) for v in value), quote=True)
    return html.escape(str(value), quote=True)


def day(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d")
    if isinstance(value, dt.date):
        return value.isoformat()
    return esc(value)


def ts(value: Any) -> float:
    if isinstance(value, dt.datetime):
        return value.timestamp()
    if isinstance(value, dt.date):
        return dt.datetime.combine(value, dt.time(0), dt.UTC).timestamp()
    return 0.0


def _svg(width: int, height: int, label: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'preserveAspectRatio="xMinYMin meet" role="img" aria-label="{esc(label)}">'
    )


def axis(t0: float, t1: float, width: float, height: float) -> str:
    """Month lines with labels along the bottom of a plot `width` wide; a label that would
    not fit before the right edge is left out (its line stays)."""
    out = []
    cur = dt.datetime.fromtimestamp(t0, dt.UTC).replace(day=1, hour=0, minute=0, second=0)
    cur = cur.replace(microsecond=0)
    span = max(t1 - t0, 1.0)
    months = max(1, int(span / (30 * 86400)))
    every = 1 + (months * AXIS_LABEL_W) // int(width)  # thin the labels on a long span
    n = 0
    while cur.timestamp() <= t1:
        x = (cur.timestamp() - t0) / span * width
        if x >= 0:
            out.append(
                f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height:.1f}" stroke="#e3e6ee"/>'
            )
            if n % every == 0 and x + AXIS_LABEL_W <= width:
                out.append(
                    f'<text x="{x + 2:.1f}" y="{height + 12:.1f}" font-size="10" fill="#667">'
                    f"{cur:%Y-%m}</text>"
                )
            n += 1
        cur = (cur + dt.timedelta(days=32)).replace(day=1)
    return "".join(out)


def _shown(lives: list[dict[str, Any]]) -> tuple[list[dict[str, Any] | None], int]:
    """The bars drawn (None: the gap between the first and last halves), and how many
    licenses the gap stands for."""
    if len(lives) <= MAX_BARS:
        return list(lives), 0
    half = MAX_BARS // 2
    return [*lives[:half], None, *lives[-half:]], len(lives) - 2 * half


def device_chart(
    lives: list[dict[str, Any]],
    as_of: dt.datetime | None,
    window: tuple[dt.datetime | None, dt.datetime | None] = (None, None),
) -> str:
    """SVG: one bar per license, from issue to when it stopped counting; `window` limits
    the time axis (licenses outside it are left out)."""
    start, end = window
    if start is not None or end is not None:
        lives = [
            x
            for x in lives
            if (end is None or x["issued_at"] is None or x["issued_at"] < end)
            and (start is None or _end(x, as_of) is None or ts(_end(x, as_of)) >= ts(start))
        ]
    if not lives:
        return '<p class="muted">No license of this subject has a known issue time.</p>'
    bars, hidden = _shown(lives)
    drawn = [x for x in bars if x is not None]
    starts = [ts(x["issued_at"]) for x in drawn if x["issued_at"] is not None]
    ends = [ts(_end(x, as_of)) for x in drawn if _end(x, as_of) is not None]
    t0 = min(starts) if starts else (ts(as_of) - 86400 if as_of else 0.0)
    t1 = max([*ends, ts(as_of) if as_of else 0.0, t0 + 86400])
    if start is not None:
        t0 = max(t0, ts(start))
    if end is not None:
        t1 = min(t1, ts(end))
    span = max(t1 - t0, 1.0)
    bar_h = 11 if len(bars) <= 40 else max(2, min(11, PLOT_H // len(bars) - 1))
    gap = 3 if bar_h >= 9 else 1
    plot_w = CHART_W - LABEL_W - 10
    height = len(bars) * (bar_h + gap) + 8

    def x_of(value: float) -> float:
        return min(max((value - t0) / span * plot_w, 0.0), plot_w)

    parts = [
        _svg(CHART_W, height + 18, "CAL timeline"),
        f'<g transform="translate({LABEL_W},0)">',
        axis(t0, t1, plot_w, height),
    ]
    if as_of is not None and t0 <= ts(as_of) <= t1:
        x = x_of(ts(as_of))
        parts.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#333" '
            f'stroke-dasharray="3,3"/>'
        )
    last_label_y = -100.0
    previous: dict[str, Any] | None = None
    for i, life in enumerate(bars):
        y = 4 + i * (bar_h + gap)
        if life is None:
            parts.append(
                f'<text x="-6" y="{y + bar_h}" font-size="10" text-anchor="end" fill="#667">'
                f"… {hidden} more licenses …</text>"
                f'<line x1="0" y1="{y + bar_h / 2}" x2="{plot_w}" y2="{y + bar_h / 2}" '
                f'stroke="#999" stroke-dasharray="1,4"/>'
            )
            last_label_y = y + bar_h
            previous = None
            continue
        parts.append(_bar(life, y, bar_h, x_of, as_of))
        # every bar is labelled when there is room; otherwise the first one and each one
        # whose name or HWID changes, where the label does not overlap the last one
        changed = previous is None or (life["client_name"], life["hwid"]) != (
            previous["client_name"],
            previous["hwid"],
        )
        if bar_h >= 9 or (changed and y + bar_h - last_label_y >= 10):
            name = str(life["client_name"] or "?")
            short = name if len(name) <= LABEL_NAME else name[: LABEL_NAME - 1] + "…"
            label = f"{short}  {(life['hwid'] or '')[:16]}"
            parts.append(
                f'<text x="-6" y="{y + min(bar_h, 9) - 1}" font-size="10" text-anchor="end" '
                f'font-family="monospace"><title>{esc(name)}</title>{esc(label)}</text>'
            )
            last_label_y = y + bar_h
        previous = life
    parts.append("</g></svg>")
    note = ""
    if hidden:
        note = (
            f'<p class="muted">{len(lives)} licenses: the first {MAX_BARS // 2} and the last '
            f"{MAX_BARS // 2} are drawn, {hidden} in between are not.</p>"
        )
    return f'<figure class="chart">{"".join(parts)}</figure>{note}'


def _end(life: dict[str, Any], as_of: dt.datetime | None) -> Any:
    return life["counted_until"] or life["expires_at"] or as_of


def _bar(life: dict[str, Any], y: int, bar_h: int, x_of: Any, as_of: dt.datetime | None) -> str:
    a = ts(life["issued_at"]) if life["issued_at"] is not None else None
    xa = x_of(a) if a is not None else 0.0
    xb = max(xa + 2, x_of(ts(_end(life, as_of))))
    if life["excess_by_name"]:
        color = "#d9534f"
    elif life["cal_type"] == "temporary":
        color = "#f0ad4e"
    else:
        color = "#4a90d9"
    dash = ' stroke="#333" stroke-dasharray="2,2"' if life["expiry_estimated"] else ""
    title = (
        f"license {life['license_id']} {life['cal_type'] or ''} name {life['client_name']} "
        f"HWID {life['hwid']} issued {day(life['issued_at'])} "
        f"counted until {day(life['counted_until'])}"
    )
    out = [
        f'<rect x="{xa:.1f}" y="{y}" width="{xb - xa:.1f}" height="{bar_h}" '
        f'fill="{color}"{dash}><title>{esc(title)}</title></rect>'
    ]
    for r in life.get("renewals") or []:
        xr = x_of(ts(r))
        out.append(
            f'<line x1="{xr:.1f}" y1="{y - 1}" x2="{xr:.1f}" y2="{y + bar_h + 1}" '
            f'stroke="#123" stroke-width="2"/>'
        )
    if life["revoked_at"] is not None:
        xr = x_of(ts(life["revoked_at"]))
        out.append(f'<text x="{xr:.1f}" y="{y + bar_h - 1}" font-size="11" fill="#000">x</text>')
    return "".join(out)


def pool_chart(
    per_day: list[dict[str, Any]],
    recovery: list[dict[str, Any]],
    pool_history: list[dict[str, Any]],
    installed: int | None,
) -> str:
    """SVG: permanent CALs counted per day, the installed line, and the recovery forecast."""
    if not per_day:
        return '<p class="muted">No license history to chart.</p>'
    # forecast: today's permanent CALs minus the excess permanent ones as they expire
    now_perm = per_day[-1]["permanent"]
    forecast = []
    returned = 0
    for r in recovery:
        returned += int(r["back_permanent"] or 0)
        forecast.append((r["day"], max(now_perm - returned, 0)))
    points = [(r["day"], r["permanent"]) for r in per_day]
    all_days = [p[0] for p in points] + [f[0] for f in forecast]
    t0, t1 = ts(min(all_days)), ts(max(all_days)) + 86400
    top = max([p[1] for p in points] + [f[1] for f in forecast] + [installed or 0, 1]) * 1.1
    w, h = CHART_W - 60, 220

    def xy(when: Any, value: float) -> str:
        return f"{(ts(when) - t0) / (t1 - t0) * w:.1f},{h - value / top * h:.1f}"

    parts = [
        _svg(CHART_W, h + 30, "CAL pool over time"),
        '<g transform="translate(50,4)">',
        axis(t0, t1, w, h),
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
    for snap in pool_history:
        if snap["issued"] is None or snap["snapshot_time"] is None:
            continue
        if not t0 <= ts(snap["snapshot_time"]) <= t1:
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
    return f'<figure class="chart">{"".join(parts)}</figure>{legend}'


__all__ = ["CHART_W", "MAX_BARS", "axis", "day", "device_chart", "esc", "pool_chart", "ts"]
