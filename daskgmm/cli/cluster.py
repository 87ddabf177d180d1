"""Connecting to the Dask cluster a run computes on.

:func:`connect` turns the ``cluster`` section of a run configuration
(:class:`daskgmm.cli.config.ClusterConfig`) into a live :class:`distributed.Client`:

* with neither ``address`` nor ``scheduler_file``, it starts an embedded
  :class:`distributed.LocalCluster` (worker *processes*, so the GIL is not shared) and
  closes it afterwards;
* with ``address`` (``tcp://host:port``, ``tls://host:port``...) or ``scheduler_file``
  (written by ``dask scheduler --scheduler-file``), it connects to an existing scheduler,
  with TLS certificates from ``cluster.tls``, and leaves the cluster running afterwards.

The client is the default scheduler of ``dask.compute`` inside the ``with`` block, so
every pass of a fit runs on the cluster.

A scheduler that cannot be reached, a scheduler file that never appears and a cluster
without workers all raise :class:`ClusterConnectionError` with a message that says what
to check; nothing waits forever.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from daskgmm.errors import ClusterConnectionError, WorkerDiedError

__all__ = ["DEFAULT_TIMEOUT", "connect",
           "describe_client", "worker_failures"]

DEFAULT_TIMEOUT = 20.0
"""Seconds to wait for a scheduler (and its first worker) before giving up. The
environment variable ``DASKGMM_CONNECT_TIMEOUT`` overrides it."""


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.0f} MiB" if n_bytes else "no limit"


@contextlib.contextmanager
def worker_failures(info: dict[str, Any] | None = None) -> Iterator[None]:
    """Turn :class:`distributed.KilledWorker` raised inside the block into a
    :class:`WorkerDiedError` that says what to change.

    Parameters
    ----------
    info : dict, optional
        :func:`describe_client` facts, to quote the workers' memory limit.
    """
    from distributed import KilledWorker

    try:
        yield
    except KilledWorker as exc:
        limits = sorted(set((info or {}).get("worker_memory_limits", {}).values()))
        limit = f" (memory limit {', '.join(_size(v) for v in limits)})" if limits else ""
        raise WorkerDiedError(
            f"Dask workers{limit} died repeatedly while running the same task, most likely "
            "because they ran out of memory. Use smaller chunks (data.chunk_rows) or give "
            "the workers more memory (cluster.memory_limit); the worker logs say more"
        ) from exc


class _UserErrorLogFilter(logging.Filter):
    """Drop a worker's "Compute Failed" log record for a daskgmm user error.

    The error travels back to the client, which reports it in one line; the worker's
    log record (with a traceback) would only repeat it on the terminal of a local
    cluster. Other failures, which may be bugs, are still logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if "Compute Failed" not in str(record.msg):
            return True
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot be formatted: keep it
            return True
        return not any(f"{name}(" in text for name in _USER_ERRORS)


_USER_ERRORS = ("ConfigError", "DataSourceError", "DataNotFoundError", "InvalidDataError",
                "NonFiniteDataError", "ModelFormatError", "CheckpointError",
                "DegenerateComponentError")


class QuietUserErrors(WorkerPlugin):
    """Worker plugin installing :class:`_UserErrorLogFilter` on the worker's logger."""

    name = "daskgmm-quiet-user-errors"

    def setup(self, worker: Any) -> None:
        logger = logging.getLogger("distributed.worker")
        if not any(isinstance(f, _UserErrorLogFilter) for f in logger.filters):
            logger.addFilter(_UserErrorLogFilter())


def _default_timeout() -> float:
    text = os.environ.get("DASKGMM_CONNECT_TIMEOUT")
    if not text:
        return DEFAULT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        raise ClusterConnectionError(
            f"DASKGMM_CONNECT_TIMEOUT must be a number of seconds, got {text!r}"
        ) from None
    if not value > 0:
        raise ClusterConnectionError(
            f"DASKGMM_CONNECT_TIMEOUT must be > 0 seconds, got {text!r}"
        )
    return value


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _security(tls: Any) -> Any:
    """A :class:`distributed.security.Security` for ``cluster.tls`` (or None)."""
    if tls is None:
        return None
    from distributed.security import Security

    return Security(
        tls_ca_file=tls.ca_file,
        tls_client_cert=tls.cert_file,
        tls_client_key=tls.key_file,
        require_encryption=bool(tls.require_encryption),
    )


def _read_scheduler_file(path: str, timeout: float) -> str:
    """The scheduler address in a scheduler file, waiting up to ``timeout`` for it."""
    deadline = time.monotonic() + timeout
    problem = "it does not exist"
    while True:
        if os.path.isdir(path):
            raise ClusterConnectionError(
                f"cluster.scheduler_file {path} is a directory, not a scheduler file "
                "written by `dask scheduler --scheduler-file`"
            )
        if os.path.exists(path):
            try:
                with open(path, encoding="utf-8") as f:
                    address = json.load(f)["address"]
                if isinstance(address, str) and address:
                    return address
                problem = "it holds no scheduler address"
            except (OSError, ValueError, KeyError, TypeError) as exc:
                problem = f"it cannot be read as a scheduler file ({type(exc).__name__})"
        if time.monotonic() >= deadline:
            raise ClusterConnectionError(
                f"could not read the Dask scheduler address from {path}: {problem} "
                f"(waited {timeout:g} s). Is the scheduler running with "
                "--scheduler-file? Check cluster.scheduler_file"
            )
        time.sleep(0.1)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def describe_client(client: Any, kind: str) -> dict[str, Any]:
    """JSON-ready facts about the cluster behind ``client``.

    Parameters
    ----------
    client : distributed.Client
    kind : {'local', 'remote'}

    Returns
    -------
    dict
        ``kind``, ``scheduler_address``, ``n_workers``, ``threads`` (total),
        ``worker_memory_limits`` (address -> bytes, 0 for none) and ``dashboard_link``
        (None without a dashboard).
    """
    info = client.scheduler_info(n_workers=-1)
    workers = info.get("workers", {})
    try:
        link = client.dashboard_link if "dashboard" in info.get("services", {}) else None
    except Exception:  # no dashboard (e.g. bokeh missing)
        link = None
    return {
        "kind": kind,
        "scheduler_address": client.scheduler.address,
        "n_workers": len(workers),
        "threads": int(sum(int(w.get("nthreads") or 0) for w in workers.values())),
        "worker_memory_limits": {a: int(w.get("memory_limit") or 0)
                                 for a, w in sorted(workers.items())},
        "dashboard_link": link,
    }


@contextlib.contextmanager
def connect(cluster_config: Any = None, *, timeout: float | None = None,
            log: Callable[[str], None] | None = _stderr) -> Iterator[tuple[Any, dict]]:
    """Start or join the Dask cluster described by ``cluster_config``.

    Parameters
    ----------
    cluster_config : daskgmm.cli.config.ClusterConfig, optional
        The ``cluster`` section of a run configuration; ``None`` means the defaults (a
        local cluster of two single-threaded worker processes).
    timeout : float, optional
        Seconds to wait for the scheduler to answer, for a scheduler file to appear and
        for a remote cluster to have at least one worker. Defaults to
        ``cluster_config.connect_timeout`` when the configuration has it, else to
        ``$DASKGMM_CONNECT_TIMEOUT``, else to 20 s.
    log : callable, optional
        Receives one-line messages (the dashboard link); ``None`` for silence. Defaults
        to printing on stderr.

    Yields
    ------
    client : distributed.Client
        Set as the default scheduler inside the block.
    info : dict
        :func:`describe_client` facts (``kind`` is ``'local'`` or ``'remote'``).

    Raises
    ------
    ClusterConnectionError
        The scheduler cannot be reached within ``timeout``, the scheduler file does not
        appear or holds no address, or the remote cluster has no worker.

    Examples
    --------
    >>> from daskgmm.cli.config import ClusterConfig
    >>> with connect(ClusterConfig(n_workers=1)) as (client, info):  # doctest: +SKIP
    ...     print(info["kind"], info["n_workers"])
    local 1
    """
    if cluster_config is None:
        from daskgmm.cli.config import ClusterConfig

        cluster_config = ClusterConfig()
    if timeout is None:
        timeout = getattr(cluster_config, "connect_timeout", None) or _default_timeout()
    timeout = float(timeout)
    address = getattr(cluster_config, "address", None)
    scheduler_file = getattr(cluster_config, "scheduler_file", None)
    if address is None and scheduler_file is None:
        cm = _local(cluster_config, timeout)
    else:
        cm = _remote(address, scheduler_file, getattr(cluster_config, "tls", None), timeout)
    with cm as (client, info):
        if info.get("dashboard_link") and log is not None:
            log(f"Dask dashboard: {info['dashboard_link']}")
        yield client, info


@contextlib.contextmanager
def _local(cfg: Any, timeout: float) -> Iterator[tuple[Any, dict]]:
    from distributed import Client, LocalCluster

    dashboard = cfg.dashboard_address is not None
    try:
        cluster = LocalCluster(
            n_workers=cfg.n_workers,
            threads_per_worker=cfg.threads_per_worker,
            processes=True,
            memory_limit=cfg.memory_limit,
            # Without a dashboard the scheduler still serves HTTP (health, metrics): on a
            # free port, rather than on 8787, which may be taken.
            dashboard_address=cfg.dashboard_address if dashboard else ":0",
            scheduler_kwargs=None if dashboard else {"dashboard": False},
        )
    except (OSError, TimeoutError) as exc:
        raise ClusterConnectionError(
            f"could not start a local Dask cluster of {cfg.n_workers} worker(s): "
            f"{_reason(exc)}. Check the cluster section (n_workers, memory_limit, "
            "dashboard_address)"
        ) from exc
    with cluster:
        try:
            client = Client(cluster, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ClusterConnectionError(
                f"could not connect to the local Dask cluster: {_reason(exc)}"
            ) from exc
        with client:
            client.register_plugin(QuietUserErrors())
            info = describe_client(client, "local")
            if not dashboard:
                info["dashboard_link"] = None
            yield client, info


@contextlib.contextmanager
def _remote(address: str | None, scheduler_file: str | None, tls: Any,
            timeout: float) -> Iterator[tuple[Any, dict]]:
    from distributed import Client

    where = "cluster.address"
    if address is None:
        assert scheduler_file is not None
        address = _read_scheduler_file(scheduler_file, timeout)
        where = f"cluster.scheduler_file ({scheduler_file})"
    security = _security(tls)
    try:
        client = Client(address, security=security, timeout=timeout,
                        set_as_default=True)
    except (OSError, TimeoutError, ValueError, TypeError, ImportError) as exc:
        # (distributed raises TypeError for a tls:// scheduler reached without TLS.)
        raise ClusterConnectionError(
            f"could not connect to the Dask scheduler at {address}: {_reason(exc)}. "
            f"Is it running? Check {where}"
            + (" and the certificates in cluster.tls" if security is not None else "")
        ) from exc
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except (TimeoutError, OSError) as exc:
            raise ClusterConnectionError(
                f"the Dask scheduler at {address} has no workers (waited {timeout:g} s). "
                f"Start some with `dask worker {address}`"
            ) from exc
        yield client, describe_client(client, "remote")
