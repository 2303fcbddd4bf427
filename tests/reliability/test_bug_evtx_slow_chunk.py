"""Fuzz campaign finding (the only one left after the int fixes): a slow EVTX chunk.

The input (data/evtx_slow_render_chunk.evtx, 105 KB) is a mutated simulator EVTX file whose
records defeat pyevtx-rs; each is rendered again by python-evtx (`_with_fallback`), which
takes ~0.17 s CPU per corrupted record, ~4 s for the chunk (>20 s under tracemalloc and a
loaded machine, which is how the campaign flagged it as a hang). It is not a hang: the work
bound (ParseOptions.max_seconds) is checked between chunks, so a file stops at most one
chunk past its budget with a "budget_exceeded" issue. This test keeps that bound.

Since then the second chance itself is bounded (0.2 s of CPU per record, 1 s per chunk:
test_bug_evtx_slow_fallback.py), so such a chunk now costs about a second at most.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from caltrail.parsers.base import ParseIssue, ParseOptions
from caltrail.parsers.evtx import reader as evtx
from tests.reliability.fuzzlib import time_bound

DATA = Path(__file__).parent / "data"


# Second campaign (seed 777): a one-chunk file of the same kind, ~3 s CPU, rust backend.
@pytest.mark.parametrize("name", ["evtx_slow_render_chunk.evtx", "evtx_slow_render_chunk2.evtx"])
def test_slow_chunk_stops_at_the_work_bound(name: str) -> None:
    # rust backend: it falls back to python-evtx for these records (the python backend
    # takes the same path, at the same cost)
    options = ParseOptions(file_name="System.evtx", backend="rust", max_seconds=0.5)
    started = time.process_time()
    with time_bound(120.0):
        items = list(evtx.parse(io.BytesIO((DATA / name).read_bytes()), options))
    cpu = time.process_time() - started
    kinds = [i.kind for i in items if isinstance(i, ParseIssue)]
    assert "budget_exceeded" in kinds or len(items) < 100  # one chunk: ends before the budget check
    assert cpu < 30.0  # budget + one chunk (~4 s CPU today)
