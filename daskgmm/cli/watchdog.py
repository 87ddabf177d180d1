"""A thread that stops a run whose cluster cannot make progress, until the engine
detects stalls itself (then :func:`daskgmm.cli.cluster.connect` only maps the engine's
:class:`~daskgmm.errors.ClusterStalledError` and this module goes).

When every worker has been paused, or there has been none, for ``timeout`` seconds, the
:class:`Watchdog` records why and interrupts the main thread; if that does not stop
within ``grace`` seconds the message is printed and the process exits with code 2."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Watchdog"]


def _interrupt_main_thread() -> None:
    import _thread

    if callable(signal.getsignal(signal.SIGINT)):
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    else:
        _thread.interrupt_main()


class Watchdog:
    """Stop a run whose cluster has had only paused workers, or none, for ``timeout``
    seconds (see the module docstring)."""

    def __init__(self, client: Any, timeout: float, *, interval: float = 1.0,
                 grace: float = 30.0, interrupt: Callable[[], None] | None = None) -> None:
        self.client, self.timeout = client, float(timeout)
        self.interval, self.grace = float(interval), float(grace)
        self.interrupt = interrupt or _interrupt_main_thread
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _state(self) -> tuple[str | None, int, list[int]]:
        workers = self.client.scheduler_info(n_workers=-1).get("workers", {})
        limits = [int(w.get("memory_limit") or 0) for w in workers.values()]
        if not workers:
            return "no workers", 0, limits
        paused = all(str(w.get("status", "running")) == "paused" for w in workers.values())
        return ("paused" if paused else None), len(workers), limits

    def _message(self, state: str, n_workers: int, limits: list[int]) -> str:
        waited = f"{self.timeout:g} s"
        if state == "no workers":
            return (f"the cluster has had no workers for {waited}, so the run cannot "
                    "progress; start workers (or check why they exit), or raise "
                    "cluster.stall_timeout")
        sizes = sorted({f"{v / 2**20:.0f} MiB" for v in limits if v})
        limit = f" (memory limit {', '.join(sizes)})" if sizes else ""
        return (f"every one of the {n_workers} Dask worker(s){limit} has been paused for "
                f"{waited}: their memory is above the pause threshold (80% of the limit) "
                "and does not come down, so the run cannot progress; give them more memory "
                "(cluster.memory_limit) or use smaller chunks (data.chunk_rows)")

    def _run(self) -> None:
        since, last = None, None
        while not self._stop.wait(self.interval):
            try:
                state, n_workers, limits = self._state()
            except Exception:  # the scheduler may be going away; connect() reports it
                continue
            now = time.monotonic()
            if state is None or state != last:
                since, last = (now if state is not None else None), state
                continue
            if since is not None and now - since >= self.timeout:
                self.reason = self._message(state, n_workers, limits)
                if self.interrupt is _interrupt_main_thread:
                    from daskgmm.cli.cluster import quiet_library_logs

                    quiet_library_logs()
                self.interrupt()
                if not self._stop.wait(self.grace):
                    print(f"daskgmm: error: {self.reason}", file=sys.stderr, flush=True)
                    os._exit(2)
                return

    def __enter__(self) -> Watchdog:
        self._thread = threading.Thread(target=self._run, name="daskgmm-watchdog",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            with contextlib.suppress(RuntimeError):
                self._thread.join(timeout=5)
