"""Reliability: property-based fuzzing of every parser module.

For each parser (evtx with both backends, registry, the four WMI forms and their dispatcher,
tsctst, tracerpt XML/CSV, tracefmt): random bytes, mutated real files (bit flips,
truncation, spliced chunks, huge lengths and counts in headers), and random text behind a
real header line. The harness (fuzzlib.run_parser) checks the contract: only ParseError
subclasses escape, every item is a record/issue/note whose record fits its lake table, the
parse ends within a time bound, and traced memory stays bounded whatever the lengths say.
Each parse runs in a child process (fuzzlib.parse_isolated): a parser that dies in native
code fails its test, naming the input it saved (CALTRAIL_FUZZ_CRASHES, default
TMPDIR/caltrail-fuzz-crashes), instead of killing pytest.

CI cost is kept low: CALTRAIL_FUZZ_EXAMPLES (default 20) examples per test. The long
campaign is tools/fuzz_campaign.py; what it found is kept in test_bug_*.py.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability import fuzzlib as F

EXAMPLES = int(os.environ.get("CALTRAIL_FUZZ_EXAMPLES", "20"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("CALTRAIL_FUZZ_RANDOM") is None,  # CI: same examples each run
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
NAMES = sorted(F.MODULES)


def _parse(name: str, data: bytes, backend: str = "rust") -> F.Outcome:
    return F.parse_isolated(name, data, backend)


@pytest.mark.parametrize("name", NAMES)
def test_seeds_parse_cleanly(name: str) -> None:
    """The unmutated seeds are read (sanity: the fuzzers start from real, valid inputs)."""
    seeds = F.seeds()[name]
    assert seeds, f"no seed input for {name}"
    outcomes = [_parse(name, data) for data in seeds]
    assert sum(o.records for o in outcomes) > 0


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(data=st.binary(max_size=4096))
def test_random_bytes(name: str, data: bytes) -> None:
    _parse(name, data)


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(rnd=st.randoms(use_true_random=False), pick=st.integers(min_value=0))
def test_mutated_real_files(name: str, rnd: random.Random, pick: int) -> None:
    seeds = F.seeds()[name]
    data = F.mutate(name, seeds[pick % len(seeds)], rnd)
    _parse(name, data)


@settings(FUZZ, max_examples=max(3, EXAMPLES // 4))
@given(rnd=st.randoms(use_true_random=False), pick=st.integers(min_value=0))
def test_mutated_evtx_python_backend(rnd: random.Random, pick: int) -> None:
    """The pure-Python backend (whose memory tracemalloc sees) on mutated EVTX files."""
    seeds = F.seeds()["evtx"]
    data = F.mutate_bytes(seeds[pick % len(seeds)], rnd, seeds)
    _parse("evtx", data[:70_000], backend="python")


@pytest.mark.parametrize("name", F.TEXT_MODULES)
@FUZZ
@given(
    text=st.text(max_size=2000),
    pick=st.integers(min_value=0),
    utf16=st.booleans(),
)
def test_random_text_behind_real_header(name: str, text: str, pick: int, utf16: bool) -> None:
    """The first lines of a real export (so sniffing and header checks pass), then anything."""
    seeds = F.seeds()[name]
    seed = seeds[pick % len(seeds)]
    encoding = "utf-16-le" if seed[:2] == b"\xff\xfe" else "utf-8"
    head = "".join(seed.decode(encoding, "replace").splitlines(keepends=True)[:3])
    body = head + text
    if utf16 and encoding == "utf-8":
        data = b"\xff\xfe" + body.encode("utf-16-le", "surrogatepass")
    else:
        data = body.encode(encoding, "surrogatepass")
    _parse(name, data)


@pytest.mark.parametrize("name", NAMES)
@FUZZ
@given(head=st.binary(max_size=512))
def test_sniff_never_raises(name: str, head: bytes) -> None:
    assert F.MODULES[name].sniff(head, "x.bin") in (True, False)


# -- lengths read from the file never size an allocation ---------------------------------


# EVTX fields that a lying value hurts most, checked with the slow pure-Python backend too.
PYTHON_FIELDS = (0x20, 0x2A, 0x1000 + 0x30, 0x1200 + 0x04)


@pytest.mark.parametrize(
    ("backend", "field", "value"),
    [("rust", f, v) for f in F.EVTX_FIELDS for v in (0xFFFFFFFF, 0x7FFFFFFF, 0x10000000)]
    + [("python", f, 0xFFFFFFFF) for f in PYTHON_FIELDS],
)
def test_evtx_huge_header_fields(backend: str, field: int, value: int) -> None:
    """EVTX header lengths/counts/offsets set to huge values: bounded time and memory, only
    ParseError. The chunk walker is Python for both backends, so tracemalloc sees it; the
    python backend is also checked on the fields that size records."""
    seed = F.seeds()["evtx"][0]
    data = bytearray(seed[:70_000])
    data[field : field + 4] = F.u32(value)
    outcome = _parse("evtx", bytes(data), backend=backend)
    assert outcome.peak_bytes < 64 * 1024 * 1024


def test_huge_numbers_in_text_exports_fit_the_lake() -> None:
    """Regression for the campaign's first finding: numbers beyond int32/int64 in text
    exports used to reach the Arrow writer and cost the whole file (see test_bug_int_overflow)."""
    rng = random.Random(0)
    for name in F.TEXT_MODULES:
        for seed in F.seeds()[name]:
            for _ in range(5):
                text = seed.decode("utf-16-le" if seed[:2] == b"\xff\xfe" else "utf-8", "replace")
                text = F._NUMBER.sub(lambda m: rng.choice(F.HUGE_TEXT) or "0", text)
                _parse(name, text.encode("utf-8"))
