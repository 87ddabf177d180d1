"""Scheduler and worker classes for an embedded cluster that serves no HTTP at all.

A Dask scheduler and every Dask worker start an HTTP server unconditionally (for the
dashboard, Prometheus metrics and health checks). With ``cluster.dashboard_address:
null`` the embedded cluster of ``daskgmm fit`` uses these subclasses, whose
``start_http_server`` does nothing, so no port is opened beyond the scheduler's and the
workers' own communication ports (all on 127.0.0.1). The worker class is imported by
the worker processes, so this module imports nothing heavy.
"""

from __future__ import annotations

from typing import Any

from distributed import Scheduler, Worker

__all__ = ["SchedulerWithoutHTTP", "WorkerWithoutHTTP"]


class SchedulerWithoutHTTP(Scheduler):
    """A :class:`distributed.Scheduler` that never starts its HTTP server."""

    def start_http_server(self, routes: Any, dashboard_address: Any,
                          default_port: int = 0, ssl_options: Any = None) -> None:
        """Start nothing (no dashboard, metrics or health routes)."""


class WorkerWithoutHTTP(Worker):
    """A :class:`distributed.Worker` that never starts its HTTP server."""

    def start_http_server(self, routes: Any, dashboard_address: Any,
                          default_port: int = 0, ssl_options: Any = None) -> None:
        """Start nothing (no metrics or health routes)."""
