"""tools/accuracy.py's per-scenario table: its sums are those of the fleets' results."""

from __future__ import annotations

from tools.accuracy import per_scenario
from tools.scoring import FleetResult


def test_per_scenario_adds_up_each_scenarios_fleets() -> None:
    a = FleetResult("vdi-weekly", 1, 40, 120, expected={("vdi", "A")}, found={("script", "A")})
    a.alternative = {("script", "A")}
    a.excess = [("vdi", "A", 10, 8)]
    b = FleetResult("vdi-weekly", 2, 40, 120, expected={("vdi", "B")}, found={("vdi", "B")})
    b.excess = [("vdi", "B", 5, None)]  # no excess counted: all 5 missed
    c = FleetResult("renamed", 3, 40, 120, normal_flagged=["cloned:X"])
    lines = per_scenario([a, b, c]).splitlines()
    header = lines[0].replace("high wrong", "high_wrong").split()
    rows = {line.split()[0]: dict(zip(header, line.split(), strict=True)) for line in lines[1:]}
    assert rows["vdi-weekly"]["fleets"] == "2"
    assert rows["vdi-weekly"]["right"] == "1"
    assert rows["vdi-weekly"]["alt"] == "1"
    assert rows["vdi-weekly"]["excess"] == "15"
    assert rows["vdi-weekly"]["error"] == "7"
    assert rows["vdi-weekly"]["normal"] == "0"
    assert rows["renamed"]["normal"] == "1"
    assert rows["renamed"]["excess"] == "0"
