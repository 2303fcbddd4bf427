"""Many crashes, outside CI: kill `caltrail ingest` again and again and check the lake.

    .venv/bin/python -m tools.crash_loop --kills 50 --every-rename

1. --kills N: SIGKILL the ingest's process group at a random moment (uniform over one clean
   run's duration), one to three times in a row on the same lake, then a plain re-run; after
   each kill the lake must read completely and balance, and after the re-run it must equal
   one clean run (same files, statuses, per-file counts, view row counts).
2. --every-rename: crash the process just before and just after *every* rename of the write
   protocol in turn (the simulated fleet as input), then re-run and compare.

The checks are those of tests/reliability/test_crash_safety.py. Prints one line per trial
and a summary; exit status 1 when any trial failed.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.conftest import (  # noqa: E402
    build_input,
    kill_group,
    lake_state,
    run_caltrail,
    start_caltrail,
)
from tests.reliability.test_crash_safety import (  # noqa: E402
    check_after_crash,
    count_renames,
    crash_run,
    rerun_and_compare,
)


def random_kills(source: Path, work: Path, kills: int, seed: int, workers: int) -> int:
    clean = work / "clean"
    started = time.monotonic()
    done = run_caltrail("ingest", source, "--lake", clean, "--json")
    elapsed = time.monotonic() - started
    state = lake_state(clean)
    print(f"clean run: {elapsed:.1f} s, exit {done.returncode}, {state['counts']}")
    rng = random.Random(seed)
    failures = 0
    for trial in range(kills):
        lake = work / f"lake{trial}"
        delays = []
        try:
            for _ in range(rng.choice((1, 1, 2, 3))):
                delay = rng.uniform(0.2, elapsed * 1.1)
                delays.append(round(delay, 2))
                proc = start_caltrail(
                    "ingest", source, "--lake", lake, "--workers", str(workers), "--json"
                )
                time.sleep(delay)
                kill_group(proc)
                check_after_crash(lake, state)
            rerun_and_compare(lake, source, state, done.returncode)
            print(f"kill trial {trial}: ok (killed at {delays} s)")
        except Exception:
            failures += 1
            print(f"kill trial {trial}: FAILED (killed at {delays} s), lake kept at {lake}")
            traceback.print_exc()
            continue
        shutil.rmtree(lake, ignore_errors=True)
    return failures


def every_rename(source: Path, work: Path) -> int:
    reference = work / "rename-ref"
    total = count_renames(reference, source)
    state = lake_state(reference)
    print(f"{total} renames in one run of {source}")
    failures = 0
    for at in range(1, total + 1):
        for when in ("before", "after"):
            lake = work / f"rename-{at}-{when}"
            try:
                done = crash_run(lake, source, at, when)
                assert done.returncode == 137, done.stderr[-1000:]
                check_after_crash(lake, state)
                rerun = run_caltrail("ingest", source, "--lake", lake, "--json")
                assert rerun.returncode == 0, rerun.stderr
                after = lake_state(lake)
                assert after["counts"] == state["counts"], (after["counts"], state["counts"])
                assert after["files"] == state["files"]
                print(f"crash {when} rename {at}/{total}: ok")
                shutil.rmtree(lake, ignore_errors=True)
            except Exception:
                failures += 1
                print(f"crash {when} rename {at}/{total}: FAILED, lake kept at {lake}")
                traceback.print_exc()
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--every-rename", action="store_true")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="caltrail-crash-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"crash loop: seed {args.seed}, work {work}")
    source = build_input(work / "input")
    failures = random_kills(source, work, args.kills, args.seed, args.workers)
    if args.every_rename:
        failures += every_rename(source / "fleet", work)
    print(f"\n{failures} failed trials")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
