"""Where parse tasks run: the seam between the ingest driver and the processes that parse.

An executor takes tasks and hands back, for each one, the work function's result or the
`Crash` that ended it: `executor.run(tasks, done)` calls `done(task, result_or_crash)` once
per task, in the order they finish. Two executors:

- `ChildPool` (the default, any number of workers): tasks run in child processes. Parsers
  call native code (pyevtx-rs, lxml/libxml2, pyarrow); a fault there (segmentation fault,
  abort, the OOM killer) ends the process it happens in, and here that is a child, never
  the run. The child's task is tried once more in a fresh child (a kill from outside says
  nothing about the task); a second death is the task's `Crash`. A child that does not
  answer long after the task's own time bound is stuck in native code: it is killed and
  the task gets a `Crash` with `hang=True` (not retried: it would cost the bound again).
  Children are started once and reused, for every task and every run of this Python
  process, while the environment they were started with is unchanged: one spare is kept
  between runs, so a process that calls `ingest()` hundreds of times starts one child, not
  one per call or per file.
- `InProcess`: tasks run in the calling process, with no isolation (a native fault ends
  the run). For debugging a parser (pdb, a profiler) and for tests that patch parser
  internals; chosen with the environment variable CALTRAIL_PARSE_IN_PROCESS=1.

Another executor (a cluster scheduler) implements the same `run` and `close`.

The work function must be importable by name (a module-level function: it is sent to the
child by reference) and its results small (a summary, not data: the child writes data to
disk itself). An exception it raises (a full disk) ends the run in the parent, as it would
in process; a child that cannot even start ends the run with `ChildStartError`. The child
processes themselves (start, stop, spares, crash reports) are pipeline/children.py.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Generic, Protocol, TypeVar

from caltrail.pipeline.children import (
    Child,
    crash_site,
    describe_exit,
    give_back,
    spare_pids,
    stop_spares,
    take_child,
)

T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

IN_PROCESS_ENV = "CALTRAIL_PARSE_IN_PROCESS"
# How long past a task's own time bound a silent child is given before it is killed as hung.
HANG_GRACE_S = 120.0
# How often a task is tried again in a fresh child after its child died (1: a second death
# is the task's; a single kill from outside, e.g. by the OOM killer, is not).
RETRIES = 1
START_TIMEOUT_S = 120.0  # a child that has not imported what it needs by then never will


@dataclass(frozen=True)
class Crash:
    """Why a task has no result: its process died (or hung and was stopped)."""

    reason: str  # one line: "was killed by SIGSEGV (a fault in native code) in x.py line 9"
    hang: bool = False
    code: int | None = None  # the process's exit status (-N: killed by signal N)
    report: str = ""  # the end of what it wrote to stderr (faulthandler's report)


class ChildStartError(RuntimeError):
    """A child process could not start (its imports failed): no task can run."""


class Executor(Protocol[T, R_co]):
    """Runs tasks; hands back each task's result or the Crash that ended it."""

    def run(self, tasks: Iterable[T], done: Callable[[T, R_co | Crash], None]) -> None: ...

    def close(self) -> None: ...


class InProcess(Generic[T, R]):
    """Runs each task in this process (no isolation)."""

    def __init__(self, work: Callable[[T], R]) -> None:
        self.work = work

    def run(self, tasks: Iterable[T], done: Callable[[T, R | Crash], None]) -> None:
        for task in tasks:
            done(task, self.work(task))

    def close(self) -> None:
        pass


@dataclass
class _Slot(Generic[T]):
    """One child of a run and the tasks it holds: the first is running, the others wait."""

    child: Child
    pending: deque[tuple[T, int]] = field(default_factory=deque)  # (task, deaths so far)
    since: float = 0.0  # when the first pending task started


class ChildPool(Generic[T, R]):
    """Runs tasks in `workers` long-lived child processes (see the module docstring).

    `limit(task)` is the task's own time bound in seconds (None: unbounded); a child silent
    for HANG_GRACE_S past it is killed. `preload` names modules each child imports before
    its first task (paid while the parent prepares the run, not by the first task).
    """

    def __init__(
        self,
        work: Callable[[T], R],
        workers: int = 1,
        limit: Callable[[T], float | None] = lambda task: None,
        preload: tuple[str, ...] = (),
        retries: int = RETRIES,
    ) -> None:
        self.work = work
        self.workers = max(1, workers)
        self.limit = limit
        self.preload = preload
        self.retries = retries
        # One worker: a second task waits in the child's pipe, so the child starts it while
        # the parent commits the first. More: one each, so no task waits behind a long one.
        self.depth = 2 if self.workers == 1 else 1
        self.idle: list[Child] = []

    def warm(self) -> None:
        """Start (or take a spare) child now, so its start overlaps the caller's work."""
        if not self.idle:
            self.idle.append(take_child(self.preload))

    def close(self) -> None:
        for child in self.idle:
            give_back(child)
        self.idle = []

    def run(self, tasks: Iterable[T], done: Callable[[T, R | Crash], None]) -> None:
        queue: deque[tuple[T, int]] = deque((task, 0) for task in tasks)
        if not queue:
            return
        slots: list[_Slot[T]] = []
        for _ in range(min(self.workers, len(queue))):
            child = self.idle.pop() if self.idle else take_child(self.preload)
            slots.append(_Slot(child))
        try:
            while queue or any(slot.pending for slot in slots):
                for slot in slots:
                    self._fill(slot, queue)
                busy = {slot.child.conn: slot for slot in slots if slot.pending}
                ready = wait(list(busy), timeout=self._next_deadline(slots))
                if not ready:
                    self._stop_hung(slots, queue, done)
                    continue
                for conn in ready:
                    slot = busy[conn]  # type: ignore[index]
                    self._receive(slot, queue, done)
        finally:
            for slot in slots:
                if slot.pending:  # interrupted (Ctrl-C, an error): its task is abandoned
                    slot.child.kill()
                else:
                    self.idle.append(slot.child)

    def _fill(self, slot: _Slot[T], queue: deque[tuple[T, int]]) -> None:
        while queue and len(slot.pending) < self.depth:
            task, deaths = queue.popleft()
            if not slot.pending:
                slot.since = time.monotonic()
            slot.pending.append((task, deaths))
            if not slot.child.send(self.work, task):
                break  # dead: noticed (EOF) by the wait that follows

    def _receive(
        self, slot: _Slot[T], queue: deque[tuple[T, int]], done: Callable[[T, R | Crash], None]
    ) -> None:
        try:
            kind, value = slot.child.conn.recv()
        except (EOFError, OSError):
            self._child_died(slot, queue, done)
            return
        if kind == "ready":
            slot.child.ready = True
            slot.since = time.monotonic()  # its first task starts now
            return
        task, _ = slot.pending.popleft()
        slot.since = time.monotonic()
        if kind == "raised":
            raise value
        done(task, value)

    def _child_died(
        self, slot: _Slot[T], queue: deque[tuple[T, int]], done: Callable[[T, R | Crash], None]
    ) -> None:
        code = slot.child.exit_code()
        stderr = slot.child.stderr()
        slot.child.close()
        if not slot.child.ready:
            last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "")
            raise ChildStartError(
                f"the parser process could not start ({describe_exit(code)}"
                + (f": {last[:200]}" if last else "")
                + f"); run with {IN_PROCESS_ENV}=1 to see the whole error"
            )
        site = crash_site(stderr)
        (task, deaths), *waiting = slot.pending
        slot.pending.clear()
        queue.extendleft(reversed(waiting))  # not started: they go first, unharmed
        deaths += 1
        if deaths > self.retries:
            times = "" if deaths == 1 else (", twice" if deaths == 2 else f", {deaths} times")
            done(task, Crash(describe_exit(code) + site + times, code=code, report=stderr))
        else:
            queue.appendleft((task, deaths))
        slot.child = Child.start(self.preload)

    def _deadline(self, slot: _Slot[T]) -> float | None:
        """When the slot's running task is overdue (monotonic time; None: no bound). Until
        its child is ready, the child's start is what is timed (a start can take seconds
        on a loaded machine: a task's clock starts when its child can run it)."""
        if not slot.pending:
            return None
        if not slot.child.ready:
            return slot.child.started + START_TIMEOUT_S
        limit = self.limit(slot.pending[0][0])
        return None if limit is None else slot.since + limit + HANG_GRACE_S

    def _next_deadline(self, slots: list[_Slot[T]]) -> float | None:
        """Seconds until the first deadline (None: none)."""
        deadlines = [d for d in map(self._deadline, slots) if d is not None]
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _stop_hung(
        self,
        slots: list[_Slot[T]],
        queue: deque[tuple[T, int]],
        done: Callable[[T, R | Crash], None],
    ) -> None:
        now = time.monotonic()
        for slot in slots:
            deadline = self._deadline(slot)
            if deadline is None or now < deadline:
                continue
            if not slot.child.ready:
                slot.child.kill()
                raise ChildStartError(
                    f"the parser process did not start within {START_TIMEOUT_S:g} s"
                )
            limit = self.limit(slot.pending[0][0])
            stack = slot.child.stack_now()
            slot.child.kill()
            (task, _), *waiting = slot.pending
            slot.pending.clear()
            queue.extendleft(reversed(waiting))
            reason = (
                f"did not answer {HANG_GRACE_S:g} s after its {limit:g} s work bound "
                f"(stuck{crash_site(stack)}) and was stopped"
            )
            done(task, Crash(reason, hang=True, code=slot.child.process.returncode, report=stack))
            slot.child = Child.start(self.preload)


def executor_for(
    work: Callable[[T], R],
    workers: int,
    limit: Callable[[T], float | None] = lambda task: None,
    preload: tuple[str, ...] = (),
) -> ChildPool[T, R] | InProcess[T, R]:
    """The executor a run uses: child processes, unless CALTRAIL_PARSE_IN_PROCESS=1."""
    if os.environ.get(IN_PROCESS_ENV, "") not in ("", "0"):
        return InProcess(work)
    return ChildPool(work, workers, limit, preload)


__all__ = [
    "HANG_GRACE_S",
    "IN_PROCESS_ENV",
    "ChildPool",
    "ChildStartError",
    "Crash",
    "Executor",
    "InProcess",
    "crash_site",
    "describe_exit",
    "executor_for",
    "spare_pids",
    "stop_spares",
]
