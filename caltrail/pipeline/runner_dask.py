"""Parse tasks on a Dask distributed cluster: the third executor behind pipeline.runner's seam.

`caltrail ingest --dask ADDRESS` sends each parse task (a file, or a chunk range of a large
EVTX file) to the workers of a running cluster (`tcp://scheduler:8786`); `--dask local:N`
starts a cluster of N worker processes on this machine for the run. The driver keeps
everything that makes the lake safe: the writer lock, hashing, the skip of files already in
the lake, and the commit (pipeline/lake.py). A worker only reads its input and writes its
staged Parquet files under `LAKE/.staging/<run>/`, as a local child does; so the inputs and
the lake must be on storage every worker sees at the same path (docs/AT_SCALE.md).

A worker that dies while parsing (a native fault, the OOM killer, a kill from outside) is
replaced by its nanny and the scheduler gives the task to another worker; when the task has
killed `allowed-failures + 1` workers the scheduler gives up on it (KilledWorker) and the
file is recorded as an error, retried by the next run, exactly as a twice-crashed local
child. What a killed attempt staged is never committed: only the files the successful
attempt lists are (its names are the same, so a retry overwrites them whole), and the next
run's sweep removes the rest.

What Dask cannot do that the local pool does: kill a task stuck in native code (a worker
thread cannot be stopped). The per-file work bound (--max-seconds-per-file) still stops
every parser in Python; a parse stuck in native code holds its worker until the cluster's
operator restarts it.
"""

# distributed's Client, LocalCluster and as_completed carry no annotations
# mypy: disallow-untyped-calls=False

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Generic, TypeVar

from caltrail import __version__
from caltrail.pipeline.runner import RETRIES, ChildStartError, Crash

T = TypeVar("T")
R = TypeVar("R")

LOCAL_PREFIX = "local:"
CONNECT_TIMEOUT_S = 30.0  # reaching the scheduler, and then at least one worker
MAX_LOCAL_WORKERS = 64
# The scheduler of a cluster started here. A worker's death is blamed on every task the
# scheduler had given it, running or waiting; a saturation of 1.0 gives a one-thread worker
# only the task it runs, so a death is blamed on that task alone. Then a task is given up
# on (KilledWorker) after RETRIES + 1 deaths, as in the local pool.
LOCAL_SCHEDULER = {
    "distributed.scheduler.allowed-failures": RETRIES,
    "distributed.scheduler.worker-saturation": 1.0,
}
# A cluster set up by others may give a worker waiting tasks too (Dask's default saturation
# is 1.1), and blame them for its death: a task given up on is submitted once more before it
# is recorded as a crash, so a file that only waited beside a fatal one is still read.
REMOTE_RESUBMITS = 1
KILLED_REASON = (
    "ended the Dask worker process that ran it, on every attempt the scheduler allows "
    "(a fault in native code, the out-of-memory killer, or a kill from outside)"
)


class DaskError(ChildStartError):
    """The cluster cannot run tasks (Dask missing, scheduler unreachable, no worker, a
    worker with another caltrail): no file can be parsed, so the run does not start."""

    kind = "cluster_unavailable"  # the --json error object's kind


def parse_address(address: str) -> tuple[str, int]:
    """('local', N) for `local:N`, ('remote', ADDRESS) with N = 0 otherwise; ValueError
    for a malformed `local:` form."""
    if address.startswith(LOCAL_PREFIX):
        count = address[len(LOCAL_PREFIX) :]
        if not count.isdigit() or not 1 <= int(count) <= MAX_LOCAL_WORKERS:
            raise ValueError(
                f"--dask {address!r}: local:N needs N between 1 and {MAX_LOCAL_WORKERS}"
            )
        return "local", int(count)
    if not address.strip():
        raise ValueError("--dask needs a scheduler address (tcp://host:8786) or local:N")
    return address, 0


def _worker_version() -> str:
    # runs on each worker: the caltrail it would parse with
    return __version__


class DaskExecutor(Generic[T, R]):
    """Runs tasks on a Dask cluster; see the module docstring."""

    def __init__(self, work: Callable[[T], R], address: str) -> None:
        try:
            # the dask extra: optional, and only a --dask run loads it
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:
            raise DaskError(
                "--dask needs Dask: install caltrail with its dask extra "
                "(pip install 'caltrail[dask]')"
            ) from exc
        self.work = work
        self.cluster: Any = None
        where, count = parse_address(address)
        self.resubmits = 0 if where == "local" else REMOTE_RESUBMITS
        # Dask's own log lines (a worker that died, a nanny restarting it) are not the
        # user's: what happened to a file is in the summary and the manifest.
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
        try:
            if where == "local":
                with dask.config.set(LOCAL_SCHEDULER):
                    self.cluster = LocalCluster(
                        n_workers=count,
                        threads_per_worker=1,  # parsers are CPU-bound Python: a process each
                        processes=True,
                        dashboard_address=":0",  # a free port: never "8787 is already in use"
                        silence_logs=logging.CRITICAL,
                    )
                self.client: Any = Client(self.cluster, timeout=CONNECT_TIMEOUT_S)
            else:
                self.client = Client(where, timeout=CONNECT_TIMEOUT_S)
            self.client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            self.close()
            raise DaskError(f"cannot use the Dask cluster at {address}: {exc}") from exc
        versions = set(self.client.run(_worker_version).values())
        if versions != {__version__}:
            self.close()
            raise DaskError(
                f"the Dask workers run caltrail {', '.join(sorted(versions))}, this driver "
                f"{__version__}: install the same caltrail on every worker"
            )

    @property
    def workers(self) -> int:
        """How many tasks the cluster runs at once (its worker threads)."""
        return max(1, int(sum(self.client.nthreads().values())))

    def run(self, tasks: Iterable[T], done: Callable[[T, R | Crash], None]) -> None:
        # the dask extra (present: __init__ imported it)
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        run_key = uuid.uuid4().hex[:12]
        numbers = itertools.count()
        by_key: dict[str, tuple[T, int]] = {}  # (task, times given up on by the scheduler)
        pending = as_completed()

        def submit(task: T, given_up: int) -> None:
            # pure=False and a key of our own: two files never share a result
            key = f"caltrail-parse-{run_key}-{next(numbers):06d}"
            by_key[key] = (task, given_up)
            pending.add(self.client.submit(self.work, task, key=key, pure=False))

        for task in tasks:
            submit(task, 0)
        try:
            for future in pending:
                task, given_up = by_key.pop(future.key)
                if future.status == "error":
                    error = future.exception()
                    if not isinstance(error, KilledWorker):
                        raise error  # the work's own failure (the lake's disk is full)
                    if given_up < self.resubmits:
                        submit(task, given_up + 1)
                    else:
                        done(task, Crash(KILLED_REASON))
                else:
                    done(task, future.result())
                future.release()
        finally:
            if by_key:  # interrupted (Ctrl-C, an error): what has not run is dropped
                self.client.cancel(list(pending.futures))

    def close(self) -> None:
        client, self.client = getattr(self, "client", None), None
        if client is not None:
            client.close()
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            cluster.close()


__all__ = ["DaskError", "DaskExecutor", "parse_address"]
