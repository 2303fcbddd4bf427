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
in process; a child that cannot even start ends the run with `ChildStartError`.
"""

from __future__ import annotations

import atexit
import faulthandler
import importlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import IO, Any, Generic, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)

IN_PROCESS_ENV = "CALTRAIL_PARSE_IN_PROCESS"
# How long past a task's own time bound a silent child is given before it is killed as hung.
HANG_GRACE_S = 120.0
# How often a task is tried again in a fresh child after its child died (1: a second death
# is the task's; a single kill from outside, e.g. by the OOM killer, is not).
RETRIES = 1
# Children kept running between runs (reused by the next run of this process).
SPARES = 1
_STOP_WAIT_S = 2.0
START_TIMEOUT_S = 120.0  # a child that has not imported what it needs by then never will
# Set by pytest for every test phase; meaningless to a task, so it does not end a child.
_VOLATILE_ENV = frozenset({"PYTEST_CURRENT_TEST"})
_DUMP_SIGNAL = signal.SIGUSR1


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


# ---------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------


# The child's program: the parent's import path, then `_child_main`. A child is a fresh
# interpreter (subprocess), not a multiprocessing "spawn": that re-runs the caller's main
# module in the child, which fails for a script without an `if __name__ == "__main__"` guard.
# (Not fork either: forking a parent that runs DuckDB or pyarrow threads can deadlock.)
_BOOT = "import sys; sys.path[:] = {path!r}; from {module} import _child_main; _child_main()"


def _child_main() -> None:
    """A child's life: import what tasks need, then run tasks until the parent goes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    faulthandler.enable(all_threads=False)  # a fatal signal: where, to stderr (the parent's file)
    faulthandler.register(_DUMP_SIGNAL, all_threads=True)  # a hang: the parent asks where
    conn = Connection(int(sys.argv[1]))
    threading.Thread(target=_exit_with_parent, args=(int(sys.argv[2]),), daemon=True).start()
    for name in conn.recv():
        importlib.import_module(name)
    conn.send(("ready", os.getpid()))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        work, task = request
        try:
            reply: tuple[str, Any] = ("ok", work(task))
        except Exception as exc:  # the parent raises it (work's own failure, e.g. ENOSPC)
            reply = ("raised", exc)
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # a reply that does not pickle
            conn.send(("raised", RuntimeError(f"result could not be sent back: {exc}")))


def _exit_with_parent(parent: int) -> None:
    # A SIGKILLed parent cannot stop its children: a child notices it has been re-parented
    # and ends, instead of finishing a large file for nobody.
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(0)


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in _VOLATILE_ENV}


@dataclass
class _Child:
    process: subprocess.Popen[bytes]
    conn: Connection
    errors: IO[bytes]  # the child's stderr: what faulthandler wrote when it died
    env: dict[str, str]
    owner: int  # the pid that started it (a forked copy of the parent must not use it)
    ready: bool = False
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, preload: tuple[str, ...]) -> _Child:
        ours, theirs = socket.socketpair()
        errors = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the child)
        boot = _BOOT.format(path=sys.path, module=__name__)
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", boot, str(theirs.fileno()), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errors,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            errors.close()
            raise
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        conn.send(preload)
        return cls(process, conn, errors, _environment(), os.getpid())

    def usable(self) -> bool:
        return (
            self.owner == os.getpid()
            and self.process.poll() is None
            and self.env == _environment()  # tasks see the environment of their run
        )

    def send(self, work: Callable[[Any], Any], task: Any) -> bool:
        """Hand the child a task; False when it is already dead."""
        try:
            self.conn.send((work, task))
        except OSError:
            return False
        return True

    def exit_code(self) -> int | None:
        """How the child ended (it has closed its end: it is gone or going)."""
        try:
            return self.process.wait(_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.process.returncode

    def stderr(self) -> str:
        """The end of what the child wrote to stderr (faulthandler's report of a crash)."""
        try:
            self.errors.seek(0, os.SEEK_END)
            self.errors.seek(max(0, self.errors.tell() - 65536))
            return self.errors.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def stack_now(self) -> str:
        """What the (stuck) child is doing: faulthandler's dump of its threads."""
        try:
            start = self.errors.seek(0, os.SEEK_END)
            self.process.send_signal(_DUMP_SIGNAL)
            time.sleep(0.5)  # the dump is written by a signal handler: a moment
            self.errors.seek(start)
            return self.errors.read(65536).decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def kill(self) -> None:
        if self.owner == os.getpid() and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.close()

    def stop(self) -> None:
        """Ask the child to end (it does, between tasks), then make sure it did."""
        if self.owner != os.getpid():
            return
        try:
            self.conn.send(None)
        except OSError:
            pass
        try:
            self.process.wait(_STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            self.kill()
        self.close()

    def close(self) -> None:
        self.conn.close()
        self.errors.close()


_HERE = __file__.replace("\\", "/")  # the child's loop: never where anything happened
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<func>\S+)', re.M)


def crash_site(report: str) -> str:
    """' in caltrail/parsers/x.py line N (func)': the innermost caltrail frame of the last
    stack in a faulthandler report (the innermost frame when none is caltrail's), or ''.
    The thread that watches for the parent's death is not where anything happened."""
    last = report.rsplit("Fatal Python error", 1)[-1].rsplit("Timeout (", 1)[-1]
    for stack in last.split("\n\n"):
        frames = list(_FRAME.finditer(stack))
        if not frames or any(f["func"] == _exit_with_parent.__name__ for f in frames):
            continue
        paths = [f["file"].replace("\\", "/") for f in frames]
        ours = [n for n, path in enumerate(paths) if "/caltrail/" in path and path != _HERE]
        n = ours[0] if ours else 0
        path = paths[n]
        # the package-relative path (caltrail/parsers/x.py), or just the file name
        where = "caltrail/" + path.rsplit("/caltrail/", 1)[1] if ours else path.rsplit("/", 1)[-1]
        return f" in {where} line {frames[n]['line']} ({frames[n]['func']})"
    return ""


_spares: list[_Child] = []
_spares_lock = threading.Lock()


def _take_child(preload: tuple[str, ...]) -> _Child:
    with _spares_lock:
        while _spares:
            child = _spares.pop()
            if child.usable():
                return child
            child.stop()
    return _Child.start(preload)


def _give_back(child: _Child) -> None:
    with _spares_lock:
        if len(_spares) < SPARES and child.usable():
            _spares.append(child)
            return
    child.stop()


@atexit.register
def stop_spares() -> None:
    """End the children kept between runs (done when this process exits)."""
    with _spares_lock:
        children = list(_spares)
        _spares.clear()
    for child in children:
        child.stop()


# Why a child may have been killed, by signal (the others are named by strsignal).
_CAUSES = {
    signal.SIGSEGV: "a fault in native code",
    signal.SIGBUS: "a fault in native code",
    signal.SIGILL: "a fault in native code",
    signal.SIGFPE: "a fault in native code",
    signal.SIGABRT: "native code aborted, e.g. on a corrupted heap",
    signal.SIGKILL: "from outside, e.g. by the out-of-memory killer",
}


def describe_exit(code: int | None) -> str:
    """How a child ended, in words: 'was killed by SIGSEGV (a fault in native code)'."""
    if code is None:
        return "stopped answering"
    if code >= 0:
        return f"exited with status {code}"
    try:
        number = signal.Signals(-code)
    except ValueError:
        return f"was killed by signal {-code}"
    cause = _CAUSES.get(number) or signal.strsignal(number) or ""
    return f"was killed by {number.name}" + (f" ({cause})" if cause else "")


@dataclass
class _Slot(Generic[T]):
    """One child of a run and the tasks it holds: the first is running, the others wait."""

    child: _Child
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
        self.idle: list[_Child] = []

    def warm(self) -> None:
        """Start (or take a spare) child now, so its start overlaps the caller's work."""
        if not self.idle:
            self.idle.append(_take_child(self.preload))

    def close(self) -> None:
        for child in self.idle:
            _give_back(child)
        self.idle = []

    def run(self, tasks: Iterable[T], done: Callable[[T, R | Crash], None]) -> None:
        queue: deque[tuple[T, int]] = deque((task, 0) for task in tasks)
        if not queue:
            return
        slots: list[_Slot[T]] = []
        for _ in range(min(self.workers, len(queue))):
            child = self.idle.pop() if self.idle else _take_child(self.preload)
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
        slot.child = _Child.start(self.preload)

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
            slot.child = _Child.start(self.preload)


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
    "describe_exit",
    "executor_for",
    "stop_spares",
]
