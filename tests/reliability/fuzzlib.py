"""Fuzzing harness shared by tests/reliability/test_fuzz_parsers.py and tools/fuzz_campaign.py.

`run_parser(module, data)` feeds bytes to one parser module the way the pipeline does and
checks the parser contract (parsers/base.py, parsers/errors.py):

- the only exceptions are ParseError subclasses (raised before any record is yielded);
- every item is a record, a ParseIssue or a FileNote, and records fit their lake table's
  Arrow schema (the pipeline converts them; a wrong type would cost the whole file);
- the parse ends within a bound of CPU time (SIGPROF: a Python-level loop; faulthandler's
  wall-time backstop for a hang inside native code);
- traced memory stays under a bound that does not depend on length fields in the file.

`run_isolated(case)` does the same in a child process (pipeline.runner, the executor ingest
uses): a parser that dies in native code (a segmentation fault in lxml, an abort) or hangs
there costs that child, not the caller, and comes back as a `Crash`; `parse_isolated` turns
a crash into a test failure that names the saved input. The CI tests and the campaign
(tools/fuzz_campaign.py) both run this way.

Seeds are real inputs (the simulator's bundle, tests/parsers/data, a few small corpus
files), grouped by the parser that `pipeline.detect` picks for them.
"""

from __future__ import annotations

import faulthandler
import hashlib
import io
import os
import random
import re
import signal
import struct
import tempfile
import traceback
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa

from caltrail.parsers import readers
from caltrail.parsers.base import RECORD_TYPES, FileNote, ParseIssue, ParseOptions
from caltrail.parsers.errors import ParseError
from caltrail.pipeline.runner import ChildPool, Crash, crash_site
from caltrail.pipeline.schemas import ALL_SCHEMAS, LINEAGE_NAMES

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "parsers" / "data"
CORPUS = ROOT.parent / "shared" / "corpus"

#: Every parser module, by name (the registry detection uses).
MODULES: dict[str, ModuleType] = {m.NAME: m for m in readers()}  # type: ignore[misc]
TEXT_MODULES = tuple(n for n in MODULES if n != "evtx")

TIME_LIMIT_S = 20.0  # per parse; inputs are at most a few hundred KiB
MEMORY_LIMIT = 96 * 1024 * 1024  # traced peak, whatever the file claims about its lengths


class Hang(BaseException):
    """Raised by the CPU-time guard (BaseException: a parser's `except Exception` cannot eat it)."""


class ContractViolation(AssertionError):
    """A parser broke its contract; the message says how."""


@dataclass
class Outcome:
    records: int = 0
    issues: int = 0
    quarantined: int = 0
    notes: int = 0
    error: ParseError | None = None
    peak_bytes: int = 0
    by_table: dict[str, int] = field(default_factory=dict)


def wall_backstop(seconds: float) -> float:
    """Wall time after which a parse given `seconds` of CPU is taken to hang in native code
    (generous: a campaign runs niced on a shared machine, getting a fraction of a core)."""
    return seconds * 10 + 60


@contextmanager
def time_bound(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread once the parse has used `seconds` of CPU time (not wall
    time: a loaded machine must not turn a slow parse into a finding); exit the process,
    with a traceback of every thread, if even that cannot happen because native code does
    not return (after `wall_backstop(seconds)` of wall time)."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise Hang(f"parse did not finish within {seconds} s of CPU time")

    old = signal.signal(signal.SIGPROF, on_alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    faulthandler.dump_traceback_later(wall_backstop(seconds), exit=True)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)
        faulthandler.cancel_dump_traceback_later()


def options_for(name: str, backend: str = "python") -> ParseOptions:
    """Options a pipeline run would pass, with a file name that gives the name-based facts."""
    file_name = {
        "evtx": "System.evtx",
        "registry": "PC-0042_MSLicensing.reg",
        "tsctst": "CL-01_tsctst.txt",
        "wmi_csv": "LS01_Win32_TSIssuedLicense_20250322-2350.csv",
        "wmi_xml": "LS01_Win32_TSLicenseKeyPack_20250322-2350.xml",
        "wmi_html": "LS01_rdls_IssuedLicenses.html",
    }.get(name, f"fuzz_{name}.txt")
    return ParseOptions(file_name=file_name, backend=backend, max_seconds=TIME_LIMIT_S / 4)


def _check_record(record: Any) -> None:
    schema = ALL_SCHEMAS[record.table]
    names = [n for n in schema.names if n not in LINEAGE_NAMES]
    row = {n: getattr(record, n) for n in names}
    try:
        pa.Table.from_pylist([row], schema=pa.schema([schema.field(n) for n in names]))
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise ContractViolation(
            f"{type(record).__name__} does not fit table {record.table}: {exc}; row {row!r}"
        ) from exc


def run_parser(
    module: ModuleType,
    data: bytes,
    options: ParseOptions | None = None,
    *,
    seconds: float = TIME_LIMIT_S,
    memory: int | None = MEMORY_LIMIT,
    check_rows: bool = True,
) -> Outcome:
    """Parse `data` with `module`, enforcing the parser contract (raises ContractViolation,
    Hang, or whatever unexpected exception the parser let out)."""
    options = options or options_for(module.NAME)
    outcome = Outcome()
    tracing = memory is not None and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    try:
        with time_bound(seconds):
            try:
                for item in module.parse(io.BytesIO(data), options):
                    if isinstance(item, RECORD_TYPES):
                        outcome.records += 1
                        table = item.table  # type: ignore[attr-defined]
                        outcome.by_table[table] = outcome.by_table.get(table, 0) + 1
                        if check_rows and outcome.records <= 2000:
                            _check_record(item)
                    elif isinstance(item, ParseIssue):
                        outcome.issues += 1
                        outcome.quarantined += item.quarantined
                        if not isinstance(item.kind, str) or not isinstance(item.message, str):
                            raise ContractViolation(f"malformed ParseIssue {item!r}")
                    elif isinstance(item, FileNote):
                        outcome.notes += 1
                    else:
                        raise ContractViolation(f"parser yielded {type(item).__name__}: {item!r}")
            except ParseError as exc:
                if outcome.records:
                    raise ContractViolation(
                        f"ParseError after {outcome.records} records were yielded: {exc!r} "
                        "(a ParseError means the file is not of the format at all)"
                    ) from exc
                outcome.error = exc
    finally:
        if tracing:
            outcome.peak_bytes = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    if memory is not None and outcome.peak_bytes > memory + 64 * len(data):
        raise ContractViolation(
            f"traced memory peaked at {outcome.peak_bytes / 1e6:.1f} MB for a "
            f"{len(data)}-byte input"
        )
    return outcome


# ---------------------------------------------------------------------------
# In a child process: a native crash or hang costs the child, and the input is kept
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One fuzz input for one parser."""

    name: str
    data: bytes
    backend: str = "rust"


@dataclass(frozen=True)
class Failure:
    """A contract failure seen in the child: the exception's type, where, its traceback."""

    kind: str
    signature: str
    text: str
    hang: bool


def signature(exc: BaseException) -> str:
    """`Type at file.py:line [message]`: the innermost parser or pipeline frame, so one bug
    met by many inputs is one failure."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/parsers/" in f.filename or "/pipeline/" in f.filename]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    place = f"{Path(where.filename).name}:{where.lineno}" if where else "?"
    message = str(exc).split(";")[0][:80] if isinstance(exc, ContractViolation) else ""
    return f"{type(exc).__name__} at {place} {message}".strip()


def check(case: Case) -> Outcome | Failure:
    """`run_parser` on one case, its failure as data (runs in the child)."""
    try:
        return run_parser(MODULES[case.name], case.data, options_for(case.name, case.backend))
    except (Exception, Hang) as exc:
        text = "".join(traceback.format_exception(exc))
        return Failure(type(exc).__name__, signature(exc), text, isinstance(exc, Hang))


def _case_seconds(case: Case) -> float:
    return wall_backstop(TIME_LIMIT_S)  # (faulthandler's backstop ends the child first)


def run_isolated(
    case: Case, work: Callable[[Case], Outcome | Failure] = check
) -> Outcome | Failure | Crash:
    """`work(case)` in a long-lived child (restarted after a crash; never retried: a
    crash that happens once is a finding). `work` must be importable by name."""
    pool: ChildPool[Case, Outcome | Failure] = ChildPool(
        work, limit=_case_seconds, preload=(__name__,), retries=0
    )
    got: list[Outcome | Failure | Crash] = []
    try:
        pool.run([case], lambda _, result: got.append(result))
    finally:
        pool.close()
    return got[0]


def is_hang(result: Failure | Crash) -> bool:
    """A hang: the CPU-time guard fired, faulthandler's backstop ended the child (native
    code that never returns), or the runner stopped a silent child."""
    if isinstance(result, Failure):
        return result.hang
    return result.hang or "Timeout (" in result.report


def crash_key(result: Crash) -> str:
    """What makes two crashes the same: how the child ended and where."""
    how = "hang" if is_hang(result) else f"native crash (exit {result.code})"
    return f"{how}{crash_site(result.report)}"


def save_case(case: Case, folder: Path, stem: str, report: str) -> Path:
    """Write the input (`stem`.bin) and what is known about it (`stem`.txt); returns the
    input's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.bin"
    path.write_bytes(case.data)
    path.with_suffix(".txt").write_text(
        f"parser={case.name}\nbackend={case.backend}\nbytes={len(case.data)}\n\n{report}",
        encoding="utf-8",
    )
    return path


class NativeCrash(AssertionError):
    """The parser's process died (or hung) on an input; the message names the saved input."""


class ChildFailure(AssertionError):
    """The parser broke its contract in the child; the message carries its traceback."""


def crash_folder() -> Path:
    """Where the CI fuzz tests keep inputs that crashed a parser (CALTRAIL_FUZZ_CRASHES)."""
    default = Path(tempfile.gettempdir()) / "caltrail-fuzz-crashes"
    return Path(os.environ.get("CALTRAIL_FUZZ_CRASHES", default))


def parse_isolated(
    name: str, data: bytes, backend: str = "rust", work: Callable[[Case], Any] = check
) -> Outcome:
    """`run_parser` in a child: the Outcome, or a test failure (the input saved on a crash)."""
    case = Case(name, data, backend)
    result = run_isolated(case, work)
    if isinstance(result, Crash):
        stem = f"{name}-{hashlib.sha256(data).hexdigest()[:16]}"
        path = save_case(case, crash_folder(), stem, f"{result.reason}\n\n{result.report}")
        raise NativeCrash(
            f"{name} ({backend}): the parser process {result.reason}; "
            f"input saved to {path} ({len(data)} bytes)"
        )
    if isinstance(result, Failure):
        raise ChildFailure(f"{name} ({backend}): {result.signature}\n{result.text}")
    return result


# ---------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------


@cache
def simulated_bundle() -> Path:
    """A small simulated fleet (EVTX, WMI CSV, registry, TSCTST, trace text), made once."""
    import tempfile

    from caltrail.fixtures.simulator import simulate

    out = Path(tempfile.mkdtemp(prefix="caltrail-fuzz-seeds-"))
    simulate(out / "bundle", seed=11, devices=17, days=14, trace_days=1, session_log_days=3)
    return out / "bundle"


def _seed_candidates() -> list[Path]:
    paths = [p for p in sorted(DATA.rglob("*")) if p.is_file() and not p.name.endswith(".json")]
    paths += [p for p in sorted(simulated_bundle().rglob("*")) if p.is_file()]
    text_samples = CORPUS / "etl" / "text-samples"
    if text_samples.is_dir():
        paths += sorted(p for p in text_samples.iterdir() if p.is_file())
    etl_corpus = CORPUS / "etl"  # raw .etl of every header form, compressed buffers too
    if etl_corpus.is_dir():
        paths += sorted(p for p in etl_corpus.rglob("*.etl") if p.stat().st_size <= 64_000)
    mutants = CORPUS / "evtx" / "derived" / "mutants"
    if mutants.is_dir():
        paths += sorted(p for p in mutants.iterdir() if p.stat().st_size <= 200_000)[:3]
    return paths


@cache
def seeds() -> dict[str, tuple[bytes, ...]]:
    """Seed inputs per parser name."""
    from caltrail.pipeline.detect import detect

    found: dict[str, list[bytes]] = {name: [] for name in MODULES}
    for path in _seed_candidates():
        detection = detect(path, path.name)
        if detection.parser is None:
            continue
        data = path.read_bytes()
        if len(data) > 300_000:
            data = data[:300_000]
        found[detection.parser.NAME].append(data)
    return {name: tuple(values) for name, values in found.items()}


# ---------------------------------------------------------------------------
# Mutations (deterministic given a random.Random: the campaign and hypothesis share them)
# ---------------------------------------------------------------------------

HUGE_U32 = (0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x10000000, 0xFFFF, 0x10000, 0)
HUGE_TEXT = (
    "99999999999999999999999999",
    "-1",
    "4294967295",
    "18446744073709551616",
    "0x" + "F" * 40,
    "1e400",
    "NaN",
    "",
)

# EVTX header fields where a lying length or count hurts most: file header (first chunk,
# last chunk, next record, header size, version, header block size, chunk count, flags),
# chunk header (record numbers, header size, last/free offsets), first record (size).
EVTX_FIELDS = (
    0x08, 0x10, 0x18, 0x20, 0x24, 0x28, 0x2A, 0x78,
    0x1000 + 0x08, 0x1000 + 0x18, 0x1000 + 0x28, 0x1000 + 0x2C, 0x1000 + 0x30, 0x1000 + 0x34,
    0x1200 + 0x04, 0x1200 + 0x08, 0x1200 + 0x18, 0x1200 + 0x1C, 0x1200 + 0x20,
)  # fmt: skip


def mutate_bytes(data: bytes, rng: random.Random, pool: tuple[bytes, ...] = ()) -> bytes:
    """One to four random byte-level mutations: bit flips, truncation, spliced or duplicated
    chunks, huge little-endian lengths/counts (at EVTX header fields or anywhere)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        n = len(buf)
        if op == 0 and n:  # bit flips
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(n)
                buf[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # truncation
            del buf[rng.randrange(n) :]
        elif op == 2 and pool:  # splice a chunk of another seed in
            other = rng.choice(pool)
            if other:
                a = rng.randrange(len(other))
                b = min(len(other), a + rng.choice((16, 512, 4096, 65536)))
                at = rng.randrange(n + 1)
                buf[at : at + rng.choice((0, b - a))] = other[a:b]
        elif op == 3 and n:  # duplicate or delete a region
            a = rng.randrange(n)
            b = min(n, a + rng.choice((1, 64, 4096, 65536)))
            if rng.random() < 0.5:
                buf[a:a] = buf[a:b]
            else:
                del buf[a:b]
        elif op in (4, 5) and n >= 4:  # huge length/count in a header field
            if op == 4:
                offsets = [o for o in EVTX_FIELDS if o + 4 <= n]
                at = rng.choice(offsets) if offsets else 0
            else:
                at = rng.randrange(n - 3)
            width = rng.choice((2, 4, 8)) if at + 8 <= n else (2 if at + 4 > n else 4)
            value = rng.choice(HUGE_U32) & ((1 << (8 * width)) - 1)
            buf[at : at + width] = value.to_bytes(width, "little")
        elif op == 6:  # random bytes overwrite
            at = rng.randrange(n + 1)
            buf[at : at + rng.randint(1, 32)] = rng.randbytes(rng.randint(1, 32))
    return bytes(buf)


_NUMBER = re.compile(r"\d+")


def mutate_text(data: bytes, rng: random.Random, pool: tuple[bytes, ...] = ()) -> bytes:
    """Line-level mutations of a text export: lines dropped, duplicated, shuffled, spliced
    from other seeds; numbers replaced by huge or negative ones; separators and quotes
    inserted; a line cut in half; the encoding switched (UTF-8 / UTF-16LE with BOM)."""
    encoding = "utf-16-le" if data[:2] == b"\xff\xfe" else "utf-8"
    text = data.decode(encoding, errors="replace")
    bom = text[:1] == "\ufeff"
    lines = text.splitlines(keepends=True) or [""]
    others = [
        ln
        for other in pool[:8]
        for ln in other.decode(
            "utf-16-le" if other[:2] == b"\xff\xfe" else "utf-8", "replace"
        ).splitlines(keepends=True)[:200]
    ]
    for _ in range(rng.randint(1, 5)):
        op = rng.randrange(9)
        i = rng.randrange(len(lines)) if lines else 0
        if op == 0 and lines:
            del lines[i]
        elif op == 1 and lines:
            lines.insert(i, lines[i] * rng.choice((1, 2, 50)))
        elif op == 2 and others:
            lines.insert(i, rng.choice(others))
        elif op == 3 and lines:
            matches = list(_NUMBER.finditer(lines[i]))
            if matches:
                m = rng.choice(matches)
                lines[i] = lines[i][: m.start()] + rng.choice(HUGE_TEXT) + lines[i][m.end() :]
        elif op == 4 and lines:
            cut = rng.randrange(len(lines[i]) + 1)
            lines[i] = lines[i][:cut]
        elif op == 5 and lines:
            at = rng.randrange(len(lines[i]) + 1)
            junk = rng.choice(
                ('"', ",", ";", "\t", "<", ">", "&", "&amp;", "]]>", "\x00", "\u202e", "=", "\\")
            )
            lines[i] = lines[i][:at] + junk * rng.randint(1, 3) + lines[i][at:]
        elif op == 6:
            rng.shuffle(lines)
        elif op == 7 and lines:
            lines[i] = "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randint(0, 40)))
            lines[i] += "\r\n"
        elif op == 8 and lines:
            lines[i] = lines[i].replace("\r\n", "\n") if rng.random() < 0.5 else lines[i]
    out = "".join(lines)
    if bom and not out.startswith("\ufeff"):
        out = "\ufeff" + out
    if rng.random() < 0.1:
        encoding = "utf-8" if encoding != "utf-8" else "utf-16-le"
        if encoding == "utf-16-le" and not out.startswith("\ufeff"):
            out = "\ufeff" + out
    return out.encode(encoding, errors="surrogatepass")


def mutate(name: str, data: bytes, rng: random.Random) -> bytes:
    pool = seeds()[name]
    if name == "evtx" or rng.random() < 0.3:
        return mutate_bytes(data, rng, pool)
    return mutate_text(data, rng, pool)


def u32(value: int) -> bytes:
    return struct.pack("<I", value & 0xFFFFFFFF)
