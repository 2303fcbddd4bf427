"""The per-file work bound, kept by the stream a parser reads.

`caltrail ingest --max-seconds-per-file` bounds the time one file may take. The trace and
EVTX parsers check the bound themselves between lines and chunks (their issue names the
line or chunk); the others do not, and a parser may read a file in several passes. So
ingest opens every input with `open_bounded`: each read past the deadline raises
`WorkBoundReached`, which ends that file with one quarantined `budget_exceeded` issue while
the rows read before it are kept. Every parser, every pass and every read (lxml's included)
is bounded the same way, and the parsers stay pure (bytes in, records out).

Reads are checked, not parsing: a parser that spends long on bytes it already read stops at
its next read (reads are of at most `BUFFER_BYTES` here, a few milliseconds of parsing).
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

BUFFER_BYTES = 256 * 1024
# The clock the deadlines are read from (a test sets one that advances a second per read).
CLOCK: Callable[[], float] = time.monotonic


class WorkBoundReached(Exception):
    """A read past the file's deadline: the rest of the file is not read."""

    def __init__(self, seconds: float, offset: int, size: int) -> None:
        super().__init__(
            f"stopped after {seconds:g} s (work bound per file, --max-seconds-per-file) at "
            f"byte {offset:,} of {size:,}; the rest of the file was not read"
        )
        self.offset = offset


class _DeadlineFile(io.FileIO):
    """A file whose reads raise `WorkBoundReached` once `clock()` passes the deadline.
    (`io.BufferedReader` reads its raw file by `readinto` and `readall`, called by name, so
    the checks below see every read.)"""

    def __init__(
        self, path: str | os.PathLike[str], seconds: float, clock: Callable[[], float]
    ) -> None:
        super().__init__(path, "rb")
        self._seconds = seconds
        self._clock = clock
        self._deadline = clock() + seconds
        self._size = os.fstat(self.fileno()).st_size

    def _check(self) -> None:
        if self._clock() > self._deadline:
            raise WorkBoundReached(self._seconds, self.tell(), self._size)

    def readinto(self, buffer: WriteableBuffer, /) -> int | None:
        self._check()
        return super().readinto(buffer)

    def readall(self) -> bytes:
        self._check()
        return super().readall()


def open_bounded(
    path: str | os.PathLike[str],
    seconds: float,
    clock: Callable[[], float] | None = None,
) -> io.BufferedReader:
    """`open(path, "rb")` whose reads raise `WorkBoundReached` after `seconds` (of `clock`,
    by default `CLOCK`)."""
    raw = _DeadlineFile(path, seconds, clock or CLOCK)
    try:
        return io.BufferedReader(raw, BUFFER_BYTES)
    except BaseException:
        raw.close()
        raise


__all__ = ["BUFFER_BYTES", "WorkBoundReached", "open_bounded"]
