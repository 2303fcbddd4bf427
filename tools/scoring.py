"""Scoring a diagnosis against the simulator's ground truth (truth.json).

Used by `python -m tools.accuracy` and the tests. A finding is *right* when its cause and
subject are those of an expected finding; *right as alternative* when the subject is an
expected one and the finding names the true cause as its `alternative_cause` (the sources
could not separate the two, and the finding says so); *wrong* otherwise. Server problems
and a fleet-wide regeneration are scored by (cause, subject) against truth.json's
`server_problems`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# truth.json server problem -> the cause of our finding (server or fleet kind)
SERVER_CAUSE = {
    "not-activated": "not-activated",
    "db-rebuilt": "database-rebuilt",
    "not-in-group": "host-not-in-group",
    "exhaustion": "cals-exhausted",
    "mass-regeneration": "mass-regeneration",
    "license-error": "license-error",
    "temp-license-expired": "temp-license-expired",
    "licensing-mode-not-configured": "licensing-mode-not-configured",
}

Key = tuple[str, str]


@dataclass
class FleetResult:
    """One fleet's findings against its truth."""

    scenario: str
    seed: int
    devices: int
    days: int
    sources: str = "all"
    expected: set[Key] = field(default_factory=set)
    found: set[Key] = field(default_factory=set)
    # found findings whose alternative_cause is the true cause of their subject
    alternative: set[Key] = field(default_factory=set)
    # (cause, subject, confidence) of every finding that is neither right nor right as
    # alternative
    wrong: list[tuple[str, str, str]] = field(default_factory=list)
    high: int = 0
    high_wrong: list[str] = field(default_factory=list)
    confidence: Counter[str] = field(default_factory=Counter)
    normal_flagged: list[str] = field(default_factory=list)
    excess: list[tuple[str, str, int, int | None]] = field(default_factory=list)
    server_expected: set[Key] = field(default_factory=set)
    server_found: set[Key] = field(default_factory=set)

    @property
    def exact(self) -> bool:
        return self.expected == self.found and self.server_expected == self.server_found


def _subject(kind: str, subject: str) -> str:
    return subject.lower() if kind == "hwid" else subject.upper()


def _normal_subjects(truth: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for d in truth["devices"]:
        if d["cause"] != "normal":
            continue
        out |= {n["name"].upper() for n in d["names"]}
        out |= {h["hwid"].lower() for h in d["hwids"]}
    return out


def evaluate(
    truth: dict[str, Any], found: list[dict[str, Any]], sources: str = "all"
) -> FleetResult:
    """Compare one fleet's findings with its truth."""
    res = FleetResult(
        truth["scenario"], truth["seed"], truth["devices_requested"], truth["days"], sources
    )
    expected_excess: dict[Key, int] = {}
    true_cause: dict[str, str] = {}
    for f in truth["expected_findings"]:
        key = (f["cause"], _subject(f["subject_kind"], f["subject"]))
        res.expected.add(key)
        true_cause[key[1]] = key[0]
        expected_excess[key] = int(f["excess_cals"])
    normal = _normal_subjects(truth)
    for f in found:
        if f["subject_kind"] in ("server", "fleet"):
            res.server_found.add((f["cause"], str(f["subject"]).upper()))
            continue
        key = (f["cause"], _subject(f["subject_kind"], f["subject"]))
        res.found.add(key)
        res.confidence[f["confidence"]] += 1
        right = key in res.expected
        truly = true_cause.get(key[1])
        if not right and truly is not None and f.get("alternative_cause") == truly:
            res.alternative.add(key)
        elif not right:
            res.wrong.append((key[0], key[1], str(f["confidence"])))
        if f["confidence"] == "high":
            res.high += 1
            if not right:
                res.high_wrong.append(f"{key[0]}:{key[1]}")
        if key[1] in normal:
            res.normal_flagged.append(f"{key[0]}:{key[1]}")
        if key in expected_excess:
            res.excess.append((key[0], key[1], expected_excess[key], f.get("excess_cals")))
    for p in truth.get("server_problems", []):
        cause = SERVER_CAUSE.get(p["problem"])
        if cause is not None:
            res.server_expected.add((cause, str(p["subject"]).upper()))
    # only the server causes the simulator plays are scored
    res.server_found = {s for s in res.server_found if s[0] in SERVER_CAUSE.values()}
    return res


def score(results: list[FleetResult]) -> dict[str, dict[str, float | int]]:
    """Precision and recall per cause over all fleets (device and server causes); `alt`
    counts findings right as alternative (their subject's true cause named beside), and
    recall_with_alt counts them as found."""
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    alt: Counter[str] = Counter()
    for r in results:
        alt_subjects = {s for _, s in r.alternative}
        for exp, got in ((r.expected, r.found), (r.server_expected, r.server_found)):
            for cause, _ in got & exp:
                tp[cause] += 1
            for cause, _ in got - exp:
                fp[cause] += 1
            for cause, subject in exp - got:
                fn[cause] += 1
                if subject in alt_subjects:
                    alt[cause] += 1
    out: dict[str, dict[str, float | int]] = {}
    for cause in sorted(set(tp) | set(fp) | set(fn)):
        t, p, n, a = tp[cause], fp[cause], fn[cause], alt[cause]
        out[cause] = {
            "tp": t,
            "fp": p,
            "fn": n,
            "alt": a,
            "precision": t / (t + p) if t + p else 1.0,
            "recall": t / (t + n) if t + n else 1.0,
            "recall_with_alt": (t + a) / (t + n) if t + n else 1.0,
        }
    return out


def summary(results: list[FleetResult]) -> dict[str, Any]:
    """The figures the README quotes for a group of fleets."""
    pairs = [e for r in results for e in r.excess]
    total = sum(e[2] for e in pairs)
    err = sum(abs((e[3] or 0) - e[2]) for e in pairs)
    confidence: Counter[str] = Counter()
    for r in results:
        confidence.update(r.confidence)
    return {
        "fleets": len(results),
        "fleets_exact": sum(1 for r in results if r.exact),
        "device_findings": sum(confidence.values()),
        "confidence": dict(sorted(confidence.items())),
        "high": sum(r.high for r in results),
        "high_wrong": [f"{r.scenario}/{r.seed}: {w}" for r in results for w in r.high_wrong],
        "normal_flagged": [
            f"{r.scenario}/{r.seed}: {n}" for r in results for n in r.normal_flagged
        ],
        "excess_exact": sum(1 for e in pairs if e[3] == e[2]),
        "excess_findings": len(pairs),
        "excess_truth": total,
        "excess_abs_error": err,
    }


def report(results: list[FleetResult], label: str) -> str:
    lines = [f"== {label}: {len(results)} fleet(s)"]
    lines.append(
        f"{'cause':<30} {'tp':>4} {'alt':>4} {'fp':>4} {'fn':>4} {'precision':>10} "
        f"{'recall':>7} {'+alt':>6}"
    )
    for cause, s in score(results).items():
        lines.append(
            f"{cause:<30} {s['tp']:>4} {s['alt']:>4} {s['fp']:>4} {s['fn']:>4} "
            f"{s['precision']:>10.3f} {s['recall']:>7.3f} {s['recall_with_alt']:>6.3f}"
        )
    totals = summary(results)
    lines.append(
        f"fleets exactly right: {totals['fleets_exact']}/{totals['fleets']}; device findings "
        f"{totals['device_findings']} {totals['confidence']}; high {totals['high']}, wrong among them: "
        f"{len(totals['high_wrong'])} {totals['high_wrong'] or ''}"
    )
    lines.append(
        f"normal devices flagged: {len(totals['normal_flagged'])} {totals['normal_flagged'] or ''}"
    )
    share = (
        totals["excess_abs_error"] / totals["excess_truth"] * 100 if totals["excess_truth"] else 0.0
    )
    lines.append(
        f"excess CALs: {totals['excess_exact']}/{totals['excess_findings']} findings exact; total truth "
        f"{totals['excess_truth']}, absolute error {totals['excess_abs_error']} ({share:.1f}%)"
    )
    for r in results:
        misses = sorted((r.expected - r.found) | (r.server_expected - r.server_found))
        extra = sorted((r.found - r.expected) | (r.server_found - r.server_expected))
        if misses or extra:
            lines.append(
                f"  {r.scenario} seed={r.seed} sources={r.sources}: missed {misses} extra {extra}"
            )
    return "\n".join(lines)


__all__ = ["SERVER_CAUSE", "FleetResult", "evaluate", "report", "score", "summary"]
