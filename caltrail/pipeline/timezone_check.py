"""Is the zone caltrail read zone-less times in the right one? The licensing facts that both a
zone-less source (trace text, culture dates) and the EVTX logs (UTC) name show the offset
between them; the SQL that pairs them and scores every zone is caltrail/queries/
36_time_zone.sql. This module asks it, for one ingest run or the whole lake, and says what
it found in one sentence; `--tz auto` (caltrail/pipeline/cli_common.py) reads the files
again in the zone it names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

from caltrail.pipeline.materialize import BuildProgress
from caltrail.pipeline.session import connect

# The layers the check reads (sources, licensing events, trace facts, the check itself):
# a session that stops there builds none of the diagnosis layers above.
LAYERS = "36_time_zone"
# Fewer facts aligned than this, or fewer than this share of the paired ones: no estimate.
MIN_ALIGNED = 10
MIN_SHARE = 0.6
# The temporary table of the checked run's pairs (a name of caltrail's, never user input).
PAIRS = "zone_check_pairs"


@dataclass
class ZoneCheck:
    """What the check found for the zone-less files of a run (or of the lake)."""

    read_in: list[str]  # the zones those files were read in
    facts: int  # their licensing facts (issued, renewed, upgraded, revoked)
    paired: int  # of them, with an EVTX event of the same client and action within hours
    best: str | None = None  # the zone that aligns the most (None: no pair at all)
    best_aligned: int = 0
    current_aligned: int = 0  # aligned in the zone they were read in
    alike: list[str] = field(default_factory=list)  # other zones that align as many
    offsets: list[tuple[int, int]] = field(default_factory=list)  # (minutes, aligned)

    @property
    def decided(self) -> bool:
        """Enough facts aligned, by a clear share of the pairs, to name a zone."""
        return self.best is not None and (
            self.best_aligned >= MIN_ALIGNED and self.best_aligned >= MIN_SHARE * self.paired
        )

    @property
    def fits(self) -> bool:
        """The zone the files were read in aligns them as well as the best one."""
        return self.decided and self.current_aligned >= self.best_aligned

    def to_dict(self) -> dict[str, Any]:
        return {
            "read_in": self.read_in,
            "facts": self.facts,
            "paired_with_evtx": self.paired,
            "best_zone": self.best,
            "best_aligned": self.best_aligned,
            "aligned_as_read": self.current_aligned,
            "zones_alike": self.alike,
            "offsets": [{"minutes": m, "aligned": n} for m, n in self.offsets],
            "decided": self.decided,
            "fits": self.fits,
        }

    def sentence(self) -> str:
        """The finding in one line."""
        read = " and ".join(self.read_in) or "UTC"
        if not self.paired:
            return (
                f"Time zone: none of the {self.facts} licensing facts read in {read} has an "
                "EVTX event to compare with; the zone cannot be checked"
            )
        if not self.decided and self.best_aligned < MIN_ALIGNED:
            return (
                f"Time zone: {self.best_aligned} licensing facts read in {read} line up with "
                f"the EVTX logs in {self.best}, too few to tell the zone ({MIN_ALIGNED} needed)"
            )
        if not self.decided:
            return (
                f"Time zone: only {self.best_aligned} of {self.paired} licensing facts read in "
                f"{read} line up with the EVTX logs in any one zone; the zone cannot be told"
            )
        also = (
            f" (or a zone with the same offsets: {', '.join(self.alike[:3])})" if self.alike else ""
        )
        if self.fits:
            return (
                f"Time zone: {read} fits; {self.current_aligned} of {self.paired} licensing "
                "facts line up with the EVTX logs"
            )
        # the offsets the zone gives (summer and winter time), not the stray pair or two
        # that a near coincidence of times makes
        seen = [offset_text(m) for m, n in self.offsets[:2] if 5 * n >= self.best_aligned]
        offsets = f" ({' / '.join(seen)})" if seen else ""
        return (
            f"Time zone: the times read in {read} fit {self.best}{also}: "
            f"{self.best_aligned} of {self.paired} licensing facts line up with the EVTX logs "
            f"in it{offsets}, {self.current_aligned} in {read}"
        )


def offset_text(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{rest:02d}"


def open_check(lake: Path, on_build: BuildProgress | None = None) -> duckdb.DuckDBPyConnection:
    """A session with the layers the check reads (SessionError when the lake cannot be
    opened; `on_build`: see `session.connect`)."""
    return connect(lake, through=LAYERS, on_build=on_build)


def check(con: duckdb.DuckDBPyConnection, run_id: str | None = None) -> ZoneCheck | None:
    """The check for the zone-less files of `run_id` (None: of the whole lake); None when
    there are no zone-less licensing facts."""
    read_in = [
        zone
        for (zone,) in con.execute(
            "select distinct read_in from zone_less_facts "
            "where $run is null or run_id = $run order by 1",
            {"run": run_id},
        ).fetchall()
    ]
    if not read_in:
        return None
    # the run's pairs read once (their EVTX side costs seconds in a large lake), then both
    # macros asked of them; the table is dropped after (the session may go on)
    con.execute(
        f"create or replace temp table {PAIRS} as select * from zone_offset_pairs_of($run)",
        {"run": run_id},
    )
    try:
        return _fit(con, run_id, read_in)
    finally:
        con.execute(f"drop table if exists {PAIRS}")


def _fit(con: duckdb.DuckDBPyConnection, run_id: str | None, read_in: list[str]) -> ZoneCheck:
    """`check` over the pairs in the temporary table PAIRS."""
    fits = con.execute(
        "select zone, facts_aligned, facts_paired, facts from zone_fit($run, q_pairs := $pairs)",
        {"run": run_id, "pairs": PAIRS},
    ).fetchall()
    offsets = con.execute(
        "select offset_minutes, facts_aligned from zone_offsets($run, q_pairs := $pairs) limit 4",
        {"run": run_id, "pairs": PAIRS},
    ).fetchall()
    (facts,) = con.execute(
        "select count(*) from zone_less_facts where $run is null or run_id = $run",
        {"run": run_id},
    ).fetchall()[0]
    result = ZoneCheck(read_in=read_in, facts=int(facts), paired=0)
    result.offsets = [(int(m), int(n)) for m, n in offsets]
    if not fits:
        (paired,) = con.execute(f"select count(distinct fact_id) from {PAIRS}").fetchall()[0]
        result.paired = int(paired)
        return result
    best, best_aligned, paired, _ = fits[0]
    result.paired = int(paired)
    result.best = str(best)
    result.best_aligned = int(best_aligned)
    result.alike = [str(z) for z, n, _, _ in fits[1:] if n == best_aligned][:10]
    aligned = {str(z): int(n) for z, n, _, _ in fits}
    result.current_aligned = min(aligned.get(z, 0) for z in read_in)
    return result


def earlier_zones(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, int]:
    """The zones the lake's other files were read in (those that read a time in an assumed
    zone), with how many files each."""
    rows = con.execute(
        """
        select split_part(notes['tz'], ' ', 1) as zone, count(*) as files
        from ingest_files
        where status in ('ok', 'quarantined') and notes['zone_assumed'] is not null
            and run_id <> $run
        group by 1
        order by 2 desc
        """,
        {"run": run_id},
    ).fetchall()
    return {str(zone): int(n) for zone, n in rows}


def zone_files(con: duckdb.DuckDBPyConnection, run_id: str) -> frozenset[str]:
    """The sha256 of the files of a run that read a time in an assumed zone."""
    rows = con.execute(
        "select sha256 from ingest_files where run_id = $run and notes['zone_assumed'] is not null",
        {"run": run_id},
    ).fetchall()
    return frozenset(str(sha) for (sha,) in rows)


__all__ = [
    "LAYERS",
    "MIN_ALIGNED",
    "MIN_SHARE",
    "ZoneCheck",
    "check",
    "earlier_zones",
    "offset_text",
    "open_check",
    "zone_files",
]
