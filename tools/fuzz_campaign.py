"""The long fuzzing campaign over every parser (run outside CI; minutes, not seconds).

    .venv/bin/python -m tools.fuzz_campaign --minutes 10 --out ./fuzz-out

Loops over the parser modules, feeding each mutated real files (bit flips, truncation,
spliced chunks, huge lengths and counts in EVTX headers, huge numbers and junk in text
exports), random bytes, and random text behind real header lines, through the same contract
check as the CI tests (tests/reliability/fuzzlib.py: only ParseError escapes, records fit the
lake schema, time and memory bounded). Each distinct failure (exception type + the parser
line it came from) is saved once as OUT/<parser>-<n>.bin with a .txt traceback, and listed
at the end. Exit status 1 when anything was found.

Then, with --hypothesis, the CI property tests run once with many examples
(CALTRAIL_FUZZ_EXAMPLES) and fresh randomness, to shrink what they find.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability import fuzzlib as F  # noqa: E402


def signature(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/parsers/" in f.filename or "/pipeline/" in f.filename]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    place = f"{Path(where.filename).name}:{where.lineno}" if where else "?"
    message = str(exc).split(";")[0][:80] if isinstance(exc, F.ContractViolation) else ""
    return f"{type(exc).__name__} at {place} {message}".strip()


def one_input(name: str, rng: random.Random) -> tuple[bytes, str]:
    seeds = F.seeds()[name]
    roll = rng.random()
    if roll < 0.08:
        return rng.randbytes(rng.randint(0, 4096)), "python" if rng.random() < 0.2 else "rust"
    if roll < 0.18 and name != "evtx":
        seed = rng.choice(seeds)
        encoding = "utf-16-le" if seed[:2] == b"\xff\xfe" else "utf-8"
        head = "".join(seed.decode(encoding, "replace").splitlines(keepends=True)[:3])
        tail = "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randint(0, 3000)))
        return (head + tail).encode(encoding, "surrogatepass"), "rust"
    data = rng.choice(seeds)
    for _ in range(rng.choice((1, 1, 2, 4))):
        data = F.mutate(name, data, rng)
    backend = "python" if name == "evtx" and rng.random() < 0.1 else "rust"
    if backend == "python":
        data = data[:140_000]
    return data, backend


def campaign(minutes: float, out: Path, seed: int) -> dict[str, tuple[str, Path]]:
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    names = sorted(F.MODULES)
    found: dict[str, tuple[str, Path]] = {}
    counts = dict.fromkeys(names, 0)
    end = time.monotonic() + minutes * 60
    last_report = time.monotonic()
    while time.monotonic() < end:
        name = names[sum(counts.values()) % len(names)]
        data, backend = one_input(name, rng)
        counts[name] += 1
        try:
            F.run_parser(F.MODULES[name], data, F.options_for(name, backend))
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                break
            key = f"{name}: {signature(exc)}"
            if key not in found:
                n = len(found)
                path = out / f"{name}-{n:03d}.bin"
                path.write_bytes(data)
                path.with_suffix(".txt").write_text(
                    f"{key}\nbackend={backend}\n\n" + "".join(traceback.format_exception(exc)),
                    encoding="utf-8",
                )
                found[key] = (backend, path)
                print(f"NEW  {key}  -> {path}", flush=True)
        if time.monotonic() - last_report > 60:
            last_report = time.monotonic()
            print(f"... {sum(counts.values())} inputs, {len(found)} distinct failures", flush=True)
    print(f"\n{sum(counts.values())} inputs in {minutes:g} min:")
    for name in names:
        print(f"  {name:22} {counts[name]:7d}")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/caltrail-fuzz"))
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument(
        "--hypothesis",
        type=int,
        default=0,
        metavar="N",
        help="then run tests/reliability/test_fuzz_parsers.py with N examples per test",
    )
    args = parser.parse_args()
    print(f"caltrail fuzz campaign: seed {args.seed}, {args.minutes:g} min, out {args.out}")
    found = campaign(args.minutes, args.out, args.seed)
    print(f"\n{len(found)} distinct failures")
    for key, (backend, path) in sorted(found.items()):
        print(f"  {key}  [{backend}]  {path}")
    status = 1 if found else 0
    if args.hypothesis:
        env = dict(
            os.environ, CALTRAIL_FUZZ_EXAMPLES=str(args.hypothesis), CALTRAIL_FUZZ_RANDOM="1"
        )
        test = ROOT / "tests" / "reliability" / "test_fuzz_parsers.py"
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test)],
            cwd=ROOT,
            env=env,
            check=False,
        )
        status = status or result.returncode
    return status


if __name__ == "__main__":
    raise SystemExit(main())
