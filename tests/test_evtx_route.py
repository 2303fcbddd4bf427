"""tools/evtx_route.sql, the EVTX conversion written in DuckDB that `make bench` times
against the reader's: every record it says it is sure of has the reader's values, field by
field (else the bench's comparison of the two would compare different work)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import corpus_path
from tools.evtx_route import compare

SAMPLES = Path(__file__).resolve().parents[1] / "caltrail" / "fixtures" / "samples"


def test_the_sample_records_read_as_the_reader_reads_them() -> None:
    result = compare(SAMPLES / "LS01" / "LS01_System.evtx", repeat=1)
    assert result.records > 0
    assert result.mismatched == 0, result.example
    # Remote Desktop licensing events are the shapes it is written for
    assert result.odd < result.records / 10


def test_corpus_records_it_is_sure_of_read_as_the_reader_reads_them() -> None:
    path = corpus_path("evtx", "EVTX-ATTACK-SAMPLES")
    for file in sorted(path.glob("*.evtx"))[:12]:
        result = compare(file, repeat=1)
        assert result.mismatched == 0, f"{file.name}: {result.example}"
