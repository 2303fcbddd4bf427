"""The confidence rule as a property: on random mixes of behaviours (the simulator's "mix"
scenario, whose causes, cadences, renames, revocations, version moves, fleet-wide events and
host problems are drawn from its seed) collected with random source sets, no normal device
is flagged, every `high` finding is right, and a finding that names an alternative says
which source would decide and is not high.

CALTRAIL_PROPERTY_EXAMPLES sets how many fleets (3 in CI, each a few seconds);
CALTRAIL_PROPERTY_RANDOM=1 draws new ones each run (the default replays the same draws, so
a failure in CI is reproducible).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caltrail.fixtures.simulator import simulate
from caltrail.pipeline.diagnose import findings, open_case
from caltrail.pipeline.ingest import IngestOptions, ingest
from tools.accuracy import SOURCE_SETS
from tools.scoring import evaluate

EXAMPLES = int(os.environ.get("CALTRAIL_PROPERTY_EXAMPLES", "3"))
RANDOM = os.environ.get("CALTRAIL_PROPERTY_RANDOM") == "1"


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=not RANDOM,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    seed=st.integers(min_value=0, max_value=100_000),
    sources=st.sampled_from(sorted(SOURCE_SETS)),
    devices=st.integers(min_value=32, max_value=55),
    days=st.integers(min_value=60, max_value=140),
)
def test_no_normal_device_flagged_and_every_high_finding_right(
    seed: int, sources: str, devices: int, days: int
) -> None:
    work = Path(tempfile.mkdtemp(prefix="caltrail-property-"))
    try:
        bundle, lake = work / "bundle", work / "lake"
        result = simulate(bundle, seed=seed, devices=devices, days=days, scenario="mix")
        kept = [
            bundle / rel
            for rel in result.files
            if not any(part in rel for part in SOURCE_SETS[sources])
        ]
        ingest(kept, IngestOptions(lake=lake, tz=ZoneInfo(result.truth["window"]["tz"])))
        con = open_case(lake)
        try:
            found = findings(con)
        finally:
            con.close()
        res = evaluate(result.truth, found, sources)
        where = f"mix seed={seed} devices={devices} days={days} sources={sources}"
        assert res.normal_flagged == [], where
        assert res.high_wrong == [], where
        for f in found:
            if f["alternative_cause"] is not None:
                assert f["confidence"] != "high", (where, f["cause"], f["subject"])
                assert f["decided_by"], (where, f["cause"], f["subject"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
