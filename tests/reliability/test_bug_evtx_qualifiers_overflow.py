"""Campaign finding: one EVTX record whose EventID is beyond 32 bits cost its whole file.

The input (data/evtx_qualifiers_overflow.evtx, 69,632 bytes: a file header and one chunk of a
mutated simulator EVTX, cut from the fuzz campaign's finding) holds 50 readable records. For
one of them the EVTX reader takes Qualifiers as `event_id >> 16` without keeping it to 16
bits, which gives 2**62; the `events.qualifiers` column is int32, so the Arrow conversion of
the file's rows fails and the file is recorded as "internal error in evtx/1" with no rows:
49 sound records lost with the bad one. A bad record must cost itself only (docs/GUARANTEES.md,
"3. Nothing is lost silently").

The fix is general: a batch whose Arrow conversion fails is converted again row by row,
and each record whose value its column cannot hold is quarantined (`value_misfit`) with the
column's complaint; the file's other records are kept.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from caltrail.pipeline.ingest import IngestOptions, ingest
from caltrail.pipeline.verify import verify

DATA = Path(__file__).parent / "data"


def test_one_record_with_a_huge_event_id_costs_only_itself(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    summary = ingest([DATA / "evtx_qualifiers_overflow.evtx"], IngestOptions(lake=lake))
    assert "error" not in summary.files, summary.problems
    assert summary.records_ok >= 49
    assert verify(lake)["mismatches"] == []
    con = duckdb.connect()
    kinds = con.execute(
        "select kind, count(*) from read_parquet(?) group by kind",
        [str(lake / "parse_errors" / "**" / "*.parquet")],
    ).fetchall()
    assert ("value_misfit", 1) in kinds, kinds


def test_the_fifth_campaigns_two_findings_cost_only_their_records(tmp_path: Path) -> None:
    """The same class met again by a later campaign (mutated records whose Opcode reads as
    2**60, and whose Qualifiers read as 2**62): each such record is quarantined as
    value_misfit, the files' other records are kept and the accounting balances."""
    lake = tmp_path / "lake"
    files = [DATA / "evtx_opcode_overflow.evtx", DATA / "evtx_qualifiers_overflow_2.evtx"]
    summary = ingest(files, IngestOptions(lake=lake))
    assert "error" not in summary.files, summary.problems
    assert summary.records_ok > 0
    assert verify(lake)["mismatches"] == []
    con = duckdb.connect()
    (misfits,) = con.execute(
        "select count(*) from read_parquet(?) where kind = 'value_misfit'",
        [str(lake / "parse_errors" / "**" / "*.parquet")],
    ).fetchone() or (0,)
    assert misfits >= 2
