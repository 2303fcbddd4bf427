"""Accuracy of the diagnosis against the simulator's ground truth.

    python -m tools.accuracy            # both matrices (15-25 minutes on 2 cores)
    python -m tools.accuracy --quick    # a few fleets of each group
    python -m tools.accuracy --group catalogue --json

For each fleet: simulate (caltrail.fixtures.simulator), keep the sources a collection of
that kind brings back (`SOURCE_SETS`: everything, snapshots only, snapshots and client
exports, snapshots and the trace, snapshots and the event logs), ingest into a fresh lake,
diagnose, and score the findings against truth.json (tools/scoring.py): per cause and per
scenario, right, right as the named alternative, wrong, missed; how many findings were
`high` and how many of those were wrong; normal devices flagged; excess CALs against the
truth's count.

Two groups are reported apart: `base`, the scenarios the simulator had first (one cadence
per cause, the assumptions the rules were first written from), and `catalogue`, the
behaviours written from what Windows does with their parameters drawn per seed and device
(caltrail/fixtures/simulator/catalogue.py, docs/SCENARIOS.md). Both are the simulator's
model of Windows, not field data; README ("How good is the diagnosis") says what the
figures can and cannot show.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from tools.scoring import FleetResult, evaluate, report, score, summary

# what a collection brought back: the parts of the bundle's paths left out
SOURCE_SETS: dict[str, tuple[str, ...]] = {
    "all": (),
    "snapshots": (".evtx", "trace", "clients/"),
    "snapshots+clients": (".evtx", "trace"),
    "snapshots+trace": (".evtx", "clients/"),
    "snapshots+events": ("trace", "clients/"),
}

# scenario, seed, devices, days, simulate() options, source set
Fleet = tuple[str, int, int, int, dict[str, Any], str]

BASE_MATRIX: tuple[Fleet, ...] = (
    ("standard", 1, 60, 180, {}, "all"),
    ("standard", 2, 80, 150, {}, "all"),
    ("standard", 3, 120, 240, {}, "all"),
    ("clean", 4, 60, 120, {}, "all"),
    ("cloned", 5, 60, 120, {}, "all"),
    ("vdi", 6, 60, 120, {}, "all"),
    ("script", 7, 60, 120, {}, "all"),
    ("duplicate-names", 8, 60, 120, {}, "all"),
    ("rebuilt", 9, 60, 150, {}, "all"),
    ("corrupted-store", 10, 60, 150, {}, "all"),
    ("freerdp", 11, 60, 120, {}, "all"),
    ("store-app", 12, 60, 150, {}, "all"),
    ("server-problems", 13, 60, 150, {}, "all"),
    ("exhaustion", 14, 60, 120, {}, "all"),
    ("standard", 17, 250, 200, {}, "all"),
    ("standard", 18, 60, 150, {"trace_days": 30, "snapshot_every_days": 30}, "all"),
    (
        "standard",
        19,
        60,
        150,
        {"snapshot_forms": ("ps51", "ps7", "cim"), "culture": "en-US"},
        "all",
    ),
    ("standard", 20, 80, 365, {"tz": "America/New_York"}, "all"),
    ("standard", 21, 60, 150, {"snapshot_every_days": 7}, "snapshots+clients"),
    ("noisy", 15, 80, 180, {}, "all"),
    ("noisy", 16, 120, 240, {}, "all"),
)


def catalogue_matrix(quick: bool = False) -> list[Fleet]:
    """Each catalogue scenario at several sizes, lengths and source sets, and the random
    mix over many seeds (every fleet's parameters are drawn from its seed)."""
    from caltrail.fixtures.simulator.catalogue import CATALOGUE

    sizes = ((40, 120), (80, 180), (150, 240))
    sets = tuple(SOURCE_SETS)
    fleets: list[Fleet] = []
    for i, scenario in enumerate(c for c in CATALOGUE if c != "mix"):
        for j in range(1 if quick else 3):
            devices, days = sizes[(i + j) % len(sizes)]
            source = sets[(i + 2 * j) % len(sets)]
            options: dict[str, Any] = {}
            if source != "all" and scenario != "seed-inputs":
                options["snapshot_every_days"] = 7
            fleets.append((scenario, 200 + 10 * i + j, devices, days, options, source))
    for k in range(3 if quick else 14):
        devices, days = sizes[k % len(sizes)]
        fleets.append(("mix", 500 + k, devices, days, {}, sets[k % len(sets)]))
    return fleets


def run_fleet(fleet: Fleet, work: Path) -> FleetResult:
    """Simulate, ingest, diagnose one fleet in `work` (removed afterwards)."""
    from caltrail.fixtures.simulator import simulate
    from caltrail.pipeline.diagnose import findings, open_case
    from caltrail.pipeline.ingest import IngestOptions, ingest

    scenario, seed, devices, days, options, sources = fleet
    bundle = work / f"{scenario}-{seed}"
    lake = work / f"{scenario}-{seed}-lake"
    try:
        result = simulate(
            bundle, seed=seed, devices=devices, days=days, scenario=scenario, **options
        )
        for rel in result.files:
            if any(part in rel for part in SOURCE_SETS[sources]):
                (bundle / rel).unlink()
        ingest(
            [bundle],
            IngestOptions(lake=lake, tz=ZoneInfo(result.truth["window"]["tz"])),
        )
        con = open_case(lake)
        try:
            found = findings(con)
        finally:
            con.close()
        return evaluate(result.truth, found, sources)
    finally:
        shutil.rmtree(bundle, ignore_errors=True)
        shutil.rmtree(lake, ignore_errors=True)


def per_scenario(results: list[FleetResult]) -> str:
    """One line per scenario: fleets, expected findings, right, right as alternative,
    wrong, missed, high findings wrong, normal devices flagged, and the excess CALs of the
    expected findings found (the truth's count, and the absolute error of ours)."""
    lines = [
        f"{'scenario':<26} {'fleets':>6} {'exact':>5} {'expected':>8} {'right':>5} "
        f"{'alt':>4} {'wrong':>5} {'missed':>6} {'high':>4} {'high wrong':>10} {'normal':>6} "
        f"{'excess':>7} {'error':>6}"
    ]
    by: dict[str, list[FleetResult]] = {}
    for r in results:
        by.setdefault(r.scenario, []).append(r)
    for scenario, rs in sorted(by.items()):
        alt_subjects = sum(len(r.alternative) for r in rs)
        lines.append(
            f"{scenario:<26} {len(rs):>6} {sum(r.exact for r in rs):>5} "
            f"{sum(len(r.expected) for r in rs):>8} {sum(len(r.found & r.expected) for r in rs):>5} "
            f"{alt_subjects:>4} {sum(len(r.wrong) for r in rs):>5} "
            f"{sum(len(r.expected - r.found) for r in rs) - alt_subjects:>6} "
            f"{sum(r.high for r in rs):>4} {sum(len(r.high_wrong) for r in rs):>10} "
            f"{sum(len(r.normal_flagged) for r in rs):>6} "
            f"{sum(e[2] for r in rs for e in r.excess):>7} "
            f"{sum(abs((e[3] or 0) - e[2]) for r in rs for e in r.excess):>6}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few fleets of each group")
    parser.add_argument("--group", choices=("base", "catalogue", "both"), default="both")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON")
    args = parser.parse_args(argv)
    groups: dict[str, list[Fleet]] = {}
    if args.group in ("base", "both"):
        groups["base"] = list(BASE_MATRIX[::5] if args.quick else BASE_MATRIX)
    if args.group in ("catalogue", "both"):
        groups["catalogue"] = catalogue_matrix(args.quick)
    work = Path(tempfile.mkdtemp(prefix="caltrail-accuracy-"))
    results: dict[str, list[FleetResult]] = {g: [] for g in groups}
    try:
        for group, fleets in groups.items():
            for fleet in fleets:
                r = run_fleet(fleet, work)
                results[group].append(r)
                print(
                    f"{group:<9} {fleet[0]:<24} seed={fleet[1]:<4} devices={fleet[2]:<4} "
                    f"days={fleet[3]:<4} sources={fleet[5]:<18} expected={len(r.expected)} "
                    f"found={len(r.found)} exact={r.exact}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(
            json.dumps(
                {g: {"causes": score(rs), "summary": summary(rs)} for g, rs in results.items()},
                indent=1,
            )
        )
    else:
        for group, rs in results.items():
            print(report(rs, group))
            print(per_scenario(rs))
            print()
    # the rule that must hold: no normal device flagged, every high finding right
    ok = all(not r.normal_flagged and not r.high_wrong for rs in results.values() for r in rs)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
