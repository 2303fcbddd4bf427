"""The executor seam (pipeline/runner.py): tasks in, each task's result or Crash out.

The work functions below run in child processes, so they are module-level (sent by name)
and keep their state in files, not in this process's memory.
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import time
from pathlib import Path

import pytest

from caltrail.pipeline import children, runner
from caltrail.pipeline.runner import ChildPool, ChildStartError, Crash, InProcess


def echo(task: str) -> tuple[str, int]:
    return task, os.getpid()


def misbehave(task: str) -> tuple[str, int]:
    """'segv', 'kill', 'abort', 'exit' die that way; 'once:FILE' is killed the first time
    only (FILE marks it); 'enospc' raises; 'sleep' never returns; others are echoed."""
    if task == "segv":
        ctypes.string_at(0)  # a real invalid read
    if task == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if task == "abort":
        os.abort()
    if task == "exit":
        os._exit(70)
    if task.startswith("once:"):
        marker = Path(task[5:])
        if not marker.exists():
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
    if task == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device")
    if task == "sleep":
        while True:
            time.sleep(60)
    return task, os.getpid()


def run(
    pool: ChildPool[str, tuple[str, int]] | InProcess[str, tuple[str, int]], tasks: list[str]
) -> list[tuple[str, tuple[str, int] | Crash]]:
    got: list[tuple[str, tuple[str, int] | Crash]] = []
    try:
        pool.run(tasks, lambda task, result: got.append((task, result)))
    finally:
        pool.close()
    return got


def test_results_come_back_in_order_from_one_child_reused_across_runs() -> None:
    first = run(ChildPool(echo), ["a", "b", "c"])
    assert [task for task, _ in first] == ["a", "b", "c"]
    assert [result for _, result in first] == [(t, first[0][1][1]) for t in "abc"]
    pid = first[0][1][1]
    assert pid != os.getpid()
    second = run(ChildPool(echo), ["d"])
    assert second == [("d", ("d", pid))]  # the spare child of the first run


def test_a_changed_environment_starts_a_new_child(monkeypatch: pytest.MonkeyPatch) -> None:
    ((_, (_, before)),) = run(ChildPool(echo), ["a"])
    monkeypatch.setenv("CALTRAIL_TEST_SOMETHING", "1")
    ((_, (_, after)),) = run(ChildPool(echo), ["a"])
    assert after != before


@pytest.mark.parametrize(
    ("task", "words"),
    [
        ("segv", "was killed by SIGSEGV (a fault in native code) in "),
        ("kill", "was killed by SIGKILL (from outside"),
        ("abort", "was killed by SIGABRT (native code aborted"),
        ("exit", "exited with status 70"),
    ],
)
def test_a_task_that_kills_its_child_twice_is_a_crash_and_costs_only_itself(
    task: str, words: str
) -> None:
    got = run(ChildPool(misbehave), ["a", task, "b"])
    assert [t for t, _ in got] == ["a", task, "b"]
    crash = got[1][1]
    assert isinstance(crash, Crash)
    assert crash.reason.startswith(words), crash.reason
    assert crash.reason.endswith(", twice")  # tried again in a fresh child first
    assert not crash.hang
    if task == "segv":  # faulthandler's report: the innermost frame (no caltrail frame here)
        assert "(string_at), twice" in crash.reason
        assert "Segmentation fault" in crash.report
    assert got[0][1][0] == "a"
    assert got[2][1][0] == "b"
    assert got[2][1][1] != got[0][1][1]  # b ran in a new child


def test_a_child_killed_once_from_outside_costs_nothing(tmp_path: Path) -> None:
    task = f"once:{tmp_path / 'killed'}"
    got = run(ChildPool(misbehave), ["a", task, "b"])
    assert [result for _, result in got][1] == (task, got[1][1][1])
    assert (tmp_path / "killed").exists()


def test_with_no_retries_a_single_death_is_a_crash(tmp_path: Path) -> None:
    task = f"once:{tmp_path / 'killed'}"
    ((_, crash),) = run(ChildPool(misbehave, retries=0), [task])
    assert isinstance(crash, Crash)
    assert crash.reason == "was killed by SIGKILL (from outside, e.g. by the out-of-memory killer)"
    assert crash.code == -signal.SIGKILL


@pytest.mark.parametrize("workers", [1, 2])
def test_several_workers_share_the_tasks_and_a_crash_costs_its_task(workers: int) -> None:
    tasks = ["a", "b", "segv", "c", "d", "kill", "e"]
    got = dict(run(ChildPool(misbehave, workers=workers), tasks))
    assert set(got) == set(tasks)
    assert isinstance(got["segv"], Crash)
    assert isinstance(got["kill"], Crash)
    assert all(got[t][0] == t for t in "abcde")
    if workers == 2:
        assert len({got[t][1] for t in "abcde"}) >= 2


def test_a_silent_child_is_stopped_as_hung(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "HANG_GRACE_S", 0.5)
    # (preloaded: a task's clock starts when its child is ready, imports done)
    pool: ChildPool[str, tuple[str, int]] = ChildPool(
        misbehave, limit=lambda task: 0.5, preload=(__name__,)
    )
    got = run(pool, ["a", "sleep", "b"])
    crash = got[1][1]
    assert isinstance(crash, Crash)
    assert crash.hang
    assert "did not answer 0.5 s after its 0.5 s work bound" in crash.reason
    assert "(misbehave)" in crash.reason  # where it was stuck
    assert got[2][1][0] == "b", got


def test_the_work_functions_own_error_ends_the_run_in_the_parent() -> None:
    seen: list[str] = []
    pool: ChildPool[str, tuple[str, int]] = ChildPool(misbehave)
    with pytest.raises(OSError, match="No space left") as raised:
        pool.run(["a", "enospc", "b"], lambda task, result: seen.append(task))
    pool.close()
    assert raised.value.errno == errno.ENOSPC
    assert seen == ["a"]


def test_an_interrupted_run_kills_its_busy_child() -> None:
    pool: ChildPool[str, tuple[str, int]] = ChildPool(misbehave)
    pids: list[int] = []

    def done(task: str, result: tuple[str, int] | Crash) -> None:
        assert not isinstance(result, Crash)
        pids.append(result[1])
        raise KeyboardInterrupt  # Ctrl-C after the first result, "sleep" is running

    with pytest.raises(KeyboardInterrupt):
        pool.run(["a", "sleep"], done)
    pool.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)


def test_a_child_that_cannot_start_is_one_clear_error() -> None:
    pool: ChildPool[str, tuple[str, int]] = ChildPool(echo, preload=("caltrail.no_such_module",))
    with pytest.raises(ChildStartError) as raised:
        run(pool, ["a"])
    message = str(raised.value)
    assert "the parser process could not start (exited with status 1: " in message
    assert "No module named 'caltrail.no_such_module'" in message
    assert runner.IN_PROCESS_ENV in message
    assert "\n" not in message


def test_a_spare_child_of_other_modules_is_not_taken() -> None:
    """Children are kept between runs; a pool whose children import other modules first
    starts its own (here one that cannot start: a spare would have hidden the error)."""
    first: ChildPool[str, tuple[str, int]] = ChildPool(echo)
    run(first, ["a"])
    first.close()
    assert children.spare_pids()
    pool: ChildPool[str, tuple[str, int]] = ChildPool(echo, preload=("caltrail.no_such_module",))
    with pytest.raises(ChildStartError):
        run(pool, ["a"])


def test_in_process_runs_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(runner.IN_PROCESS_ENV, "1")
    executor = runner.executor_for(echo, workers=2)
    assert isinstance(executor, InProcess)
    assert run(executor, ["a"]) == [("a", ("a", os.getpid()))]
    monkeypatch.setenv(runner.IN_PROCESS_ENV, "0")
    assert isinstance(runner.executor_for(echo, workers=1), ChildPool)


def test_the_crash_site_is_the_innermost_caltrail_frame() -> None:
    report = (
        "Fatal Python error: Segmentation fault\n\n"
        "Current thread 0x1 (most recent call first):\n"
        '  File "/venv/lxml/etree.py", line 4 in feed\n'
        '  File "/src/caltrail/parsers/wmi/html.py", line 225 in _rows\n'
        '  File "/src/caltrail/pipeline/ingest.py", line 9 in parse_file\n'
    )
    assert runner.crash_site(report) == " in caltrail/parsers/wmi/html.py line 225 (_rows)"
    # a hang's dump of every thread: the thread watching for the parent is skipped
    dump = (
        "Thread 0x2 (most recent call first):\n"
        '  File "/src/caltrail/pipeline/runner.py", line 144 in _exit_with_parent\n\n'
        "Thread 0x1 (most recent call first):\n"
        '  File "/x/y.py", line 3 in spin\n'
    )
    assert runner.crash_site(dump) == " in y.py line 3 (spin)"
    assert runner.crash_site("") == ""
