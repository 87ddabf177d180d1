"""Peak memory of the Dask workers (and of this process) while something runs."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

import psutil


def _rss() -> int:
    return psutil.Process().memory_info().rss


class MemoryMonitor:
    """Sample the resident memory of every worker and of the driver in the background.

    Use as a context manager around a fit. ``client`` may be ``None`` (only the driver is
    sampled). Sampling runs in a daemon thread every ``interval`` seconds, and once more
    when the block ends; not when it fails (its figures are of no use then, and a
    failure such as a lost scheduler would make that sample wait).

    Attributes
    ----------
    worker_peak : dict
        Worker address -> highest RSS seen (bytes).
    worker_limit : dict
        Worker address -> its ``memory_limit`` (bytes, 0 if none).
    driver_peak : int
        Highest RSS of this process (bytes).
    """

    def __init__(self, client: Any = None, interval: float = 0.25) -> None:
        self.client = client
        self.interval = interval
        self.worker_peak: dict[str, int] = {}
        self.worker_limit: dict[str, int] = {}
        self.driver_peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        """Take one sample now."""
        self.driver_peak = max(self.driver_peak, _rss())
        if self.client is None:
            return
        try:
            rss = self.client.run(_rss)
        except Exception:  # a worker may be leaving; the next sample will see the rest
            return
        for address, value in rss.items():
            self.worker_peak[address] = max(self.worker_peak.get(address, 0), int(value))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> MemoryMonitor:
        if self.client is not None:
            info = self.client.scheduler_info(n_workers=-1)["workers"]
            self.worker_limit = {a: int(w.get("memory_limit") or 0) for a, w in info.items()}
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="daskgmm-memory",
                                        daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if exc is not None:
            # The block failed: its figures will not be reported, and the failure may be
            # a lost scheduler, with which a sample (``client.run``) blocks until the
            # client gives up reconnecting (its connect timeout, 20 s for the command
            # line). The daemon thread, perhaps stuck in such a sample, is left to end.
            if self._thread is not None:
                self._thread.join(timeout=self.interval)
            return
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures: per-worker peak and limit, their ratio, the driver's peak."""
        workers = {
            address: {
                "peak_bytes": peak,
                "limit_bytes": self.worker_limit.get(address, 0),
                "peak_fraction_of_limit": (peak / self.worker_limit[address]
                                           if self.worker_limit.get(address) else None),
            }
            for address, peak in sorted(self.worker_peak.items())
        }
        return {"workers": workers, "driver_peak_bytes": self.driver_peak}
