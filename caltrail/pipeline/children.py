"""The parsing processes behind pipeline.runner.ChildPool: how a child is started, what it
runs, how it is stopped, kept between runs, and read after a crash.

A child is a fresh interpreter (subprocess) running `_child_main`: it imports what its
tasks need, says it is ready, then runs tasks sent over a socket (`(work, task)` pickled,
`work` by name) until the parent closes it or goes away. Its stderr is a file the parent
reads after a crash: faulthandler writes there where a fatal signal happened (and, asked by
SIGUSR1, where a stuck child is), never to the user's terminal.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import IO, Any

# Children kept running between runs (reused by the next run of this process).
SPARES = 1
STOP_WAIT_S = 2.0
# Set by pytest for every test phase; meaningless to a task, so it does not end a child.
_VOLATILE_ENV = frozenset({"PYTEST_CURRENT_TEST"})
_DUMP_SIGNAL = signal.SIGUSR1


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
class Child:
    process: subprocess.Popen[bytes]
    conn: Connection
    errors: IO[bytes]  # the child's stderr: what faulthandler wrote when it died
    env: dict[str, str]
    owner: int  # the pid that started it (a forked copy of the parent must not use it)
    preload: tuple[str, ...] = ()  # the modules it imported first
    ready: bool = False
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def start(cls, preload: tuple[str, ...]) -> Child:
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
        return cls(process, conn, errors, _environment(), os.getpid(), preload)

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
            return self.process.wait(STOP_WAIT_S)
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
            self.process.wait(STOP_WAIT_S)
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


_spares: list[Child] = []
_spares_lock = threading.Lock()


def take_child(preload: tuple[str, ...]) -> Child:
    with _spares_lock:
        while _spares:
            child = _spares.pop()
            # (a spare that imported other modules first is no child of this pool: one that
            # cannot import its modules must fail as it starts, not run with a spare's)
            if child.usable() and child.preload == preload:
                return child
            child.stop()
    return Child.start(preload)


def give_back(child: Child) -> None:
    with _spares_lock:
        if len(_spares) < SPARES and child.usable():
            _spares.append(child)
            return
    child.stop()


def spare_pids() -> list[int]:
    """Process ids of the children kept between runs: a measurement reads their CPU time
    and peak memory (tools/bench.py), which this process's own figures do not include."""
    with _spares_lock:
        return [c.process.pid for c in _spares if c.owner == os.getpid()]


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


__all__ = ["SPARES", "crash_site", "describe_exit", "spare_pids", "stop_spares", "take_child"]
