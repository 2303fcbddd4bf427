"""A CPU-time bound for a pure-Python call that has no bound of its own (python-evtx).

python-evtx, the second chance for records pyevtx-rs cannot render, walks a record's
template with no limit: a damaged template can make it build about a million nodes for one
record (0.1-0.2 s of CPU), and every record of the chunk that uses the template pays it
again. `CpuBound.call` runs such a call under a profile hook (`sys.setprofile`, this thread
only) that checks the thread's CPU time every few dozen calls and raises `TooSlow` past the
bound. CPU time, not wall time: a loaded machine must not cut records an idle one keeps.
(The hook sees calls: a loop that calls nothing is not stopped; python-evtx's work is
calls, a node object per token.)

`TooSlow` is a BaseException, so the `except Exception` of the code it interrupts (python-
evtx's, the fast renderer's) cannot swallow it. It is raised only in frames of the bounded
code (`within`: python-evtx and the fast renderer), never in a finalizer or a callback that
happens to run meanwhile. The cyclic garbage collector is paused during the call: a
collection's time depends on the whole process's heap, not on the record (a test process
holding a corpus paid 0.1 s pauses), and its callbacks must not run under the hook. Where a
profiler already holds the hook (cProfile), the call runs unbounded rather than blinding the
profiler; the time is still counted.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")

_CHECK_EVERY = 64  # profile events between clock reads (a read costs about a call)


class TooSlow(BaseException):
    """The call used up its CPU time; `seconds` says how much it had."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"stopped after {seconds:g} s of CPU time")
        self.seconds = seconds


class CpuBound:
    """`per_call` seconds of CPU time for each call, `total` for all calls together; stopped
    only in code whose file starts with one of `within` (any code when empty)."""

    def __init__(self, per_call: float, total: float, within: tuple[str, ...] = ()) -> None:
        self.per_call = per_call
        self.total = total
        self.within = within
        self.used = 0.0

    def spent(self) -> bool:
        """True once the calls together have used `total`."""
        return self.used >= self.total

    def call(self, fn: Callable[..., R], *args: Any) -> R:
        """`fn(*args)`, or TooSlow once it has used its share of CPU time."""
        allowed = min(self.per_call, self.total - self.used)
        start = time.thread_time()
        if sys.getprofile() is not None:  # someone is profiling: do not take their hook
            try:
                return fn(*args)
            finally:
                self.used += time.thread_time() - start
        deadline = start + allowed
        within = self.within
        events = 0

        def check(frame: Any, event: str, arg: Any) -> None:
            nonlocal events
            events += 1
            if (
                events % _CHECK_EVERY == 0
                and time.thread_time() > deadline
                and (not within or frame.f_code.co_filename.startswith(within))
            ):
                raise TooSlow(allowed)  # (CPython removes the hook and unwinds the call)

        collecting = gc.isenabled()
        gc.disable()
        sys.setprofile(check)
        try:
            return fn(*args)
        finally:
            sys.setprofile(None)
            if collecting:
                gc.enable()
            self.used += time.thread_time() - start


__all__ = ["CpuBound", "TooSlow"]
