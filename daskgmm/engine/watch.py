"""Watching a distributed cluster while the driver waits on it.

A fit on a ``distributed`` cluster spends its time waiting on futures. When every worker
is paused (its memory above the pause threshold, ``distributed.worker.memory.pause``) or
the cluster has no worker at all, nothing the fit waits for can finish, and
``distributed`` waits forever without a word. :class:`ClusterWatch` follows the
scheduler's view of the workers while the driver waits: a daemon thread looks once per
``interval`` seconds, from the first ``interval`` of a wait on (a wait shorter than that
costs a thread start and nothing else). When the cluster has been stalled for ``timeout``
seconds, with none of the awaited tasks finishing meanwhile, the wait ends with
:class:`~daskgmm.errors.ClusterStalledError` naming the workers, their memory and limit,
and what to do.

The timeout is the Dask config value ``daskgmm.stall-timeout`` (seconds, or a duration
such as ``"5 minutes"``; ``None`` or 0 switches the watching off), by default
:data:`DEFAULT_STALL_TIMEOUT` (120 s)::

    with dask.config.set({"daskgmm.stall-timeout": 600}):
        model.fit(X)

or the environment variable ``DASK_DASKGMM__STALL_TIMEOUT=600``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import dask
from dask.utils import format_bytes, parse_timedelta

from daskgmm.errors import ClusterStalledError

__all__ = ["DEFAULT_STALL_TIMEOUT", "STALL_TIMEOUT_KEY", "ClusterWatch", "stall_timeout"]

#: Dask config key of the stall timeout.
STALL_TIMEOUT_KEY = "daskgmm.stall-timeout"
#: Seconds a cluster may stay stalled (all workers paused, or none) before a fit gives up.
DEFAULT_STALL_TIMEOUT = 120.0
#: Longest time between two looks at the cluster (seconds).
MAX_INTERVAL = 1.0


def stall_timeout() -> float | None:
    """The stall timeout in seconds (config ``daskgmm.stall-timeout``), None if off."""
    value = dask.config.get(STALL_TIMEOUT_KEY, DEFAULT_STALL_TIMEOUT)
    if value is None or value is False:
        return None
    try:
        seconds = float(parse_timedelta(value, default="seconds"))
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(
            f"dask config {STALL_TIMEOUT_KEY!r} must be a number of seconds or a duration "
            f"such as '5 minutes' (or None to switch stall detection off); got {value!r}"
        ) from exc
    return seconds if seconds > 0 else None


def _worker_line(address: str, info: dict) -> str:
    """``address (memory of limit, share)`` of one worker."""
    memory = (info.get("metrics") or {}).get("memory")
    limit = int(info.get("memory_limit") or 0)
    if memory is None:
        return f"{address} (memory unknown, limit {format_bytes(limit) if limit else 'none'})"
    if not limit:
        return f"{address} ({format_bytes(int(memory))}, no limit)"
    return (f"{address} ({format_bytes(int(memory))} of {format_bytes(limit)}, "
            f"{memory / limit:.0%})")


class ClusterWatch:
    """Give up waiting on a cluster that cannot make progress.

    Use it around one wait of the driver (a pass, a persist)::

        with ClusterWatch(client) as watch:
            for future in watch.completed(distributed.as_completed(futures)):
                ...
            total = watch.result(total_future)

    Parameters
    ----------
    client : distributed.Client
    timeout : float, optional
        Seconds of stall before giving up; default :func:`stall_timeout`. ``None`` or 0
        turns the watch into a no-op.
    interval : float, optional
        Seconds between two looks at the scheduler (default ``min(1, timeout / 4)``).
    """

    def __init__(self, client: Any, timeout: float | None = -1.0, *,
                 interval: float | None = None) -> None:
        self.client = client
        self.timeout = stall_timeout() if timeout == -1.0 else (timeout or None)
        self.interval = (interval if interval is not None
                         else min(MAX_INTERVAL, (self.timeout or 4.0) / 4))
        self.reason: str | None = None
        self._stop = threading.Event()
        self._progress = 0
        self._on_stall: list[Callable[[], Any]] = []
        self._thread: threading.Thread | None = None

    # -- the watching thread -----------------------------------------------------------
    def _look(self) -> tuple[str | None, dict]:
        """``('paused' | 'no workers' | None, workers)`` as the scheduler sees them now."""
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        if not workers:
            return "no workers", {}
        if all(str(w.get("status", "running")) == "paused" for w in workers.values()):
            return "paused", workers
        return None, workers

    def _message(self, state: str, workers: dict) -> str:
        waited = f"{self.timeout:g} s"
        setting = (f"(the time allowed is dask config {STALL_TIMEOUT_KEY!r}, "
                   f"now {self.timeout:g} s)")
        if state == "no workers":
            return (f"the Dask cluster has had no workers for {waited}, so the fit cannot "
                    "progress: start workers, or find out why they exit (a memory limit "
                    f"too small for a chunk?) {setting}")
        listed = "; ".join(_worker_line(a, w) for a, w in sorted(workers.items()))
        return (f"every one of the {len(workers)} Dask worker(s) has been paused for "
                f"{waited}: {listed}. Their memory is above their pause threshold "
                "(dask config distributed.worker.memory.pause, by default 80% of the "
                "limit) and does not come down, so the fit cannot progress. Give the "
                "workers more "
                "memory (memory_limit), use smaller chunks (chunk_rows), or free what "
                f"they hold (data persisted by other work) {setting}")

    def _run(self) -> None:
        since: float | None = None
        seen = self._progress
        while not self._stop.wait(self.interval):
            try:
                state, workers = self._look()
            except Exception:  # the scheduler may be going away: the wait reports it
                continue
            now = time.monotonic()
            if state is None or self._progress != seen:
                since, seen = None, self._progress
                continue
            if since is None:
                since = now
            elif now - since >= self.timeout:
                self.reason = self._message(state, workers)
                for callback in self._on_stall:
                    callback()
                return

    def __enter__(self) -> ClusterWatch:
        if self.timeout is not None and self.client is not None:
            self._thread = threading.Thread(target=self._run, name="daskgmm-cluster-watch",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if (exc is not None and self.reason is not None
                and not isinstance(exc, ClusterStalledError)):
            # The wait failed because the stall was acted on (its futures cleared).
            raise ClusterStalledError(self.reason) from exc

    # -- waits that give up ------------------------------------------------------------
    def _check(self) -> None:
        if self.reason is not None:
            raise ClusterStalledError(self.reason)

    def progressed(self) -> None:
        """Note that an awaited task finished (the cluster is not stalled)."""
        self._progress += 1

    def completed(self, completed: Any) -> Iterator[Any]:
        """Iterate over a ``distributed.as_completed``; it stops when the cluster
        stalls (and :meth:`__exit__` raises)."""
        self._on_stall.append(completed.clear)
        if self.reason is not None:
            completed.clear()
        for item in completed:
            self.progressed()
            yield item
        self._check()

    def result(self, future: Any) -> Any:
        """``future.result()``, or :class:`ClusterStalledError` when the cluster stalls."""
        if self._thread is None:
            return future.result()
        while True:
            try:
                return future.result(timeout=self.interval)
            except TimeoutError:
                if future.status == "error":  # the task's own TimeoutError
                    raise
                self._check()

    def wait(self, futures: Sequence[Any]) -> None:
        """``distributed.wait(futures)``, or :class:`ClusterStalledError` when the cluster
        stalls."""
        from distributed import wait

        pending = list(futures)
        if self._thread is None:
            wait(pending)
            return
        while pending:
            try:
                wait(pending, timeout=self.interval)
                return
            except TimeoutError:
                self._check()
                left = [f for f in pending if not f.done()]
                if len(left) < len(pending):
                    self.progressed()
                pending = left
