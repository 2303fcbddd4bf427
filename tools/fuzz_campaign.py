"""The long fuzzing campaign over every parser (run outside CI; minutes to hours).

    .venv/bin/python -m tools.fuzz_campaign --minutes 10 --out ./fuzz-out
    nice -n 19 .venv/bin/python -m tools.fuzz_campaign --per-parser 60 --out ./campaign

Feeds each parser mutated real files (bit flips, truncation, spliced chunks, huge lengths
and counts in EVTX headers, huge numbers and junk in text exports), random bytes, and random
text behind real header lines, through the same contract check as the CI tests
(tests/reliability/fuzzlib.py: only ParseError escapes, records fit the lake schema, time
and memory bounded). Every input runs in a child process (fuzzlib.run_isolated): a parser
that dies in native code, or hangs there, costs that child, and the campaign goes on.

Findings are of three kinds, counted per parser: failures (the contract broken in Python:
an exception, a record that does not fit, memory), crashes (the child died: a segmentation
fault, an abort) and hangs (the time guard fired, or the child had to be stopped). Each
distinct finding (exception type and parser line; for a crash or hang, how the child ended
and the innermost caltrail frame) is saved once as OUT/<parser>-<n>.bin with a .txt report.

--minutes M: all parsers in turn for M minutes in all. --per-parser M: one parser after
another, M minutes each (--parsers a,b to choose). OUT/summary.json holds the figures
(inputs, seconds, findings per parser) and is rewritten every minute, so a campaign
stopped early still says what ran. Exit status 1 when anything was found.

With --hypothesis N, the CI property tests then run once with N examples per test and fresh
randomness (they shrink what they find).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from caltrail.pipeline.runner import Crash, spare_pids  # noqa: E402
from tests.reliability import fuzzlib as F  # noqa: E402


@dataclass
class Tally:
    """What one parser's share of the campaign did."""

    inputs: int = 0
    seconds: float = 0.0  # wall time
    cpu_seconds: float = 0.0  # the parsing child's CPU time (what a niced campaign got)
    failures: int = 0  # inputs that broke the contract in Python
    crashes: int = 0  # inputs whose child died
    hangs: int = 0  # inputs that hit the time guard or were stopped
    distinct: list[str] = field(default_factory=list)  # keys of the distinct findings


def one_input(name: str, rng: random.Random) -> F.Case:
    """A random input for `name`: random bytes, random text behind a real header, or a
    real file mutated one to four times."""
    seeds = F.seeds()[name]
    roll = rng.random()
    if roll < 0.08:
        backend = "python" if name == "evtx" and rng.random() < 0.2 else "rust"
        return F.Case(name, rng.randbytes(rng.randint(0, 4096)), backend)
    if roll < 0.18 and name != "evtx":
        seed = rng.choice(seeds)
        encoding = "utf-16-le" if seed[:2] == b"\xff\xfe" else "utf-8"
        head = "".join(seed.decode(encoding, "replace").splitlines(keepends=True)[:3])
        tail = "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randint(0, 3000)))
        return F.Case(name, (head + tail).encode(encoding, "surrogatepass"))
    data = rng.choice(seeds)
    for _ in range(rng.choice((1, 1, 2, 4))):
        data = F.mutate(name, data, rng)
    if name == "evtx" and rng.random() < 0.1:
        return F.Case(name, data[:140_000], "python")
    return F.Case(name, data)


class Campaign:
    def __init__(self, out: Path, seed: int) -> None:
        self.out = out
        self.seed = seed
        self.rng = random.Random(seed)
        self.tallies: dict[str, Tally] = {}
        self.found: dict[str, Path] = {}
        self.started = time.time()
        self.last_write = 0.0
        out.mkdir(parents=True, exist_ok=True)

    def run_one(self, name: str) -> None:
        case = one_input(name, self.rng)
        tally = self.tallies.setdefault(name, Tally())
        began, cpu = time.monotonic(), _child_cpu()
        result = F.run_isolated(case)
        tally.seconds += time.monotonic() - began
        if cpu is not None and (after := _child_cpu()) is not None and after[0] == cpu[0]:
            tally.cpu_seconds += after[1] - cpu[1]  # (unknown when the child was replaced)
        tally.inputs += 1
        if isinstance(result, F.Outcome):
            return
        if isinstance(result, Crash):
            if F.is_hang(result):
                tally.hangs += 1
            else:
                tally.crashes += 1
            key = f"{name}: {F.crash_key(result)}"
            report = f"{key}\n{result.reason}\n\n{result.report}"
        else:
            if result.hang:
                tally.hangs += 1
            else:
                tally.failures += 1
            key = f"{name}: {result.signature}"
            report = f"{key}\n\n{result.text}"
        if key in self.found:
            return
        path = F.save_case(case, self.out, f"{name}-{len(self.found):03d}", report)
        self.found[key] = path
        tally.distinct.append(key)
        print(f"NEW  {key}  [{case.backend}]  -> {path}", flush=True)

    def write_summary(self, final: bool = False) -> None:
        summary = {
            "seed": self.seed,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "finished": final,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "parsers": {name: asdict(t) for name, t in sorted(self.tallies.items())},
            "findings": {key: str(path) for key, path in sorted(self.found.items())},
        }
        temporary = self.out / ".summary.json.tmp"
        temporary.write_text(json.dumps(summary, indent=2), encoding="utf-8")
        os.replace(temporary, self.out / "summary.json")
        self.last_write = time.monotonic()

    def loop(self, names: list[str], minutes: float) -> None:
        """Run the parsers of `names` in turn for `minutes`."""
        end = time.monotonic() + minutes * 60
        for name in _cycle(names):
            if time.monotonic() >= end:
                return
            self.run_one(name)
            if time.monotonic() - self.last_write > 60:
                self.write_summary()
                done = sum(t.inputs for t in self.tallies.values())
                print(f"... {done} inputs, {len(self.found)} distinct findings", flush=True)


def _child_cpu() -> tuple[int, float] | None:
    """(pid, CPU seconds so far) of the parsing child kept between inputs, from /proc."""
    pids = spare_pids()
    if not pids:
        return None
    try:
        fields = Path(f"/proc/{pids[0]}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return pids[0], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _cycle(names: list[str]) -> Iterator[str]:
    while True:
        yield from names


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="all parsers in turn")
    parser.add_argument(
        "--per-parser", type=float, metavar="MINUTES", help="one parser after another"
    )
    parser.add_argument("--parsers", help="comma-separated parser names (default: all)")
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
    names = sorted(F.MODULES) if not args.parsers else args.parsers.split(",")
    unknown = [n for n in names if n not in F.MODULES]
    if unknown:
        parser.error(f"unknown parser(s) {', '.join(unknown)}; known: {', '.join(F.MODULES)}")
    plan = f"{args.per_parser:g} min per parser" if args.per_parser else f"{args.minutes:g} min"
    print(f"caltrail fuzz campaign: seed {args.seed}, {plan}, out {args.out}", flush=True)
    campaign = Campaign(args.out, args.seed)
    # stopped by a scheduler or `kill`: end as on Ctrl-C, with the final summary written
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.per_parser:
            for name in names:
                print(f"--- {name}", flush=True)
                campaign.loop([name], args.per_parser)
                campaign.write_summary()
        else:
            campaign.loop(names, args.minutes)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    campaign.write_summary(final=True)
    print()
    for name, t in sorted(campaign.tallies.items()):
        print(
            f"  {name:14} {t.inputs:7d} inputs {t.seconds / 60:6.1f} min "
            f"(CPU {t.cpu_seconds / 60:5.1f} min)  "
            f"failures {t.failures}  crashes {t.crashes}  hangs {t.hangs}  "
            f"distinct {len(t.distinct)}"
        )
    print(f"\n{len(campaign.found)} distinct findings")
    for key, path in sorted(campaign.found.items()):
        print(f"  {key}  {path}")
    status = 1 if campaign.found else 0
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
