"""The Dask cluster a command computes on: started, joined or made by a factory.

:func:`connect` turns the ``cluster`` section into a :class:`distributed.Client`: by
default a :class:`distributed.LocalCluster` on 127.0.0.1 whose workers ignore Ctrl-C;
with ``address`` or ``scheduler_file`` an existing scheduler (refused after
:data:`PROBE_SECONDS` if what answers is not one); with ``factory`` a cluster class,
scaled or adapted. Errors are one line."""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from daskgmm.errors import (
    ClusterConnectionError,
    ClusterLostError,
    ClusterStalledError,
    ConfigError,
    MissingDependencyError,
    WorkerDiedError,
)

if TYPE_CHECKING:
    from daskgmm.cli.config import ClusterSection

__all__ = ["DEFAULT_TIMEOUT", "PROBE_SECONDS", "connect", "describe_client",
           "quiet_library_logs", "worker_failures"]

DEFAULT_TIMEOUT = 20.0
"""Seconds to wait for a scheduler (``cluster.connect_timeout`` or
``$DASKGMM_CONNECT_TIMEOUT`` override it)."""
PROBE_SECONDS = 5.0
"""Seconds a ``tcp://`` address gets to greet as a Dask scheduler does."""

_PACKAGES = {"dask_jobqueue": "dask-jobqueue", "dask_kubernetes": "dask-kubernetes",
             "dask_cloudprovider": "dask-cloudprovider", "dask_gateway": "dask-gateway",
             "dask_yarn": "dask-yarn", "coiled": "coiled"}
_NO_HTTP = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def quiet_library_logs() -> None:
    """Silence distributed, tornado and asyncio for the rest of the process: a run that
    failed or was interrupted is being torn down, and they would print tracebacks of
    cancelled connections around the one-line message."""
    for name in ("distributed", "tornado", "asyncio", "bokeh"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


@contextlib.contextmanager
def worker_failures(info: dict[str, Any] | None = None) -> Iterator[None]:
    """Turn :class:`distributed.KilledWorker` into a :class:`WorkerDiedError` saying
    what to change (``info``: :func:`describe_client` facts, for the memory limit)."""
    from distributed import KilledWorker

    try:
        yield
    except KilledWorker as exc:
        limits = sorted(set((info or {}).get("worker_memory_limits", {}).values()))
        shown = [f"{v / 2**20:.0f} MiB" if v else "no limit" for v in limits]
        limit = f" (memory limit {', '.join(shown)})" if limits else ""
        raise WorkerDiedError(
            f"Dask workers{limit} died repeatedly while running the same task, most likely "
            "because they ran out of memory. Use smaller chunks (data.chunk_rows) or give "
            "the workers more memory (cluster.memory_limit); the worker logs say more"
        ) from exc


_STORAGE_ERRORS = ("OSError", "PermissionError", "FileNotFoundError", "ConnectionError",
                   "TimeoutError", "EndpointConnectionError", "ClientError")


#: The start of the record a worker logs, with a traceback, when its heartbeat finds the
#: scheduler gone: every time the cluster closes while a heartbeat is under way.
_HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat"


class _QuietUserErrors(logging.Filter):
    """Drop a worker's "Compute Failed" record for a daskgmm error or a storage failure
    (the client reports it in one line; the worker's traceback would only repeat it on
    the terminal of a local cluster), and its failed heartbeat (the scheduler closing
    with the command, after a user mistake too; a scheduler lost during a run is
    reported by the client)."""

    def filter(self, record: logging.LogRecord) -> bool:
        import daskgmm.errors as errors

        if str(record.msg).startswith(_HEARTBEAT_FAILED):
            return False
        if "Compute Failed" not in str(record.msg):
            return True
        with contextlib.suppress(Exception):
            text = record.getMessage()
            return not any(f"{name}(" in text for name in (*errors.__all__,
                                                           *_STORAGE_ERRORS))
        return True


def _quiet_plugin() -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class QuietUserErrors(WorkerPlugin):
        """Installs :class:`_QuietUserErrors` on a worker's logger."""

        name = "daskgmm-quiet-user-errors"

        def setup(self, worker: Any) -> None:
            logger = logging.getLogger("distributed.worker")
            if not any(isinstance(f, _QuietUserErrors) for f in logger.filters):
                logger.addFilter(_QuietUserErrors())

    return QuietUserErrors()


def describe_client(client: Any, kind: str) -> dict[str, Any]:
    """JSON-ready facts about the cluster: ``kind`` (local, remote, factory),
    ``scheduler_address``, ``n_workers``, ``threads``, ``worker_memory_limits``
    (address -> bytes, 0 for none) and ``dashboard_link`` (None without one)."""
    info = client.scheduler_info(n_workers=-1)
    workers = info.get("workers", {})
    link = None
    if "dashboard" in info.get("services", {}):
        with contextlib.suppress(Exception):
            link = client.dashboard_link
    return {"kind": kind, "scheduler_address": client.scheduler.address,
            "n_workers": len(workers),
            "threads": int(sum(int(w.get("nthreads") or 0) for w in workers.values())),
            "worker_memory_limits": {a: int(w.get("memory_limit") or 0)
                                     for a, w in sorted(workers.items())},
            "dashboard_link": link}


def _timeout(cfg: ClusterSection) -> float:
    if cfg.connect_timeout is not None:
        return float(cfg.connect_timeout)
    text = os.environ.get("DASKGMM_CONNECT_TIMEOUT")
    try:
        value = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ClusterConnectionError(
            f"DASKGMM_CONNECT_TIMEOUT must be a number of seconds > 0, got {text!r}")
    return value


_STALL_SETTINGS = ("; in the run's configuration these are cluster.memory_limit, "
                   "data.chunk_rows and cluster.stall_timeout")


@contextlib.contextmanager
def connect(cfg: ClusterSection | None = None, *, log: Callable[[str], None] | None = None
            ) -> Iterator[tuple[Any, dict[str, Any]]]:
    """Start or join the cluster of ``cfg`` (the defaults when None); yields ``(client,
    info)`` (:func:`describe_client`'s facts), with ``cfg.stall_timeout`` the engine's
    stall timeout inside the block. ``log`` receives one-line messages. Raises
    ClusterConnectionError, ClusterLostError or ClusterStalledError."""
    import dask

    from daskgmm.cli.config import ClusterSection
    from daskgmm.engine.watch import STALL_TIMEOUT_KEY

    cfg = cfg if cfg is not None else ClusterSection()
    timeout = _timeout(cfg)
    if cfg.factory is not None:
        starter = _factory(cfg, timeout)
    elif cfg.address is None and cfg.scheduler_file is None:
        starter = _local(cfg, timeout)
    else:
        starter = _remote(cfg, timeout)
    with starter as (client, kind):
        info = _wait_for_workers(client, cfg, kind, log, timeout)
        if kind == "local" and cfg.dashboard_address is None:
            info["dashboard_link"] = None  # (its HTTP server serves nothing)
        if info["dashboard_link"] and log is not None:
            log(f"Dask dashboard: {info['dashboard_link']}")
        try:
            with dask.config.set({STALL_TIMEOUT_KEY: cfg.stall_timeout}):
                yield client, info
        except (Exception, KeyboardInterrupt) as exc:
            quiet_library_logs()
            if isinstance(exc, ClusterStalledError):
                raise ClusterStalledError(f"{exc}{_STALL_SETTINGS}") from exc
            if isinstance(exc, Exception) and _lost(exc, client):
                raise ClusterLostError(
                    f"lost the connection to the Dask scheduler at "
                    f"{info['scheduler_address']} during the run (it stopped, or the "
                    "network failed); start it again and rerun the command (a fit with "
                    "checkpoint.dir continues with --resume)") from exc
            raise


def _lost(exc: BaseException, client: Any) -> bool:
    import concurrent.futures

    from distributed.comm.core import CommClosedError

    if "scheduler-connection-lost" in str(exc) or isinstance(exc, CommClosedError):
        return True
    return (isinstance(exc, concurrent.futures.CancelledError)
            and getattr(client, "status", "running") != "running")


def _wait_for_workers(client: Any, cfg: ClusterSection, kind: str, log: Any,
                      timeout: float) -> dict[str, Any]:
    wanted = min(cfg.wait_for_workers, cfg.n_workers) if kind == "local" \
        else cfg.wait_for_workers
    wait = cfg.wait_timeout or (600.0 if kind == "factory" else timeout)
    if len(client.scheduler_info(n_workers=-1).get("workers", {})) < wanted:
        if log is not None and kind != "local":
            log(f"waiting for {wanted} Dask worker(s) (at most {wait:g} s)")
        try:
            client.wait_for_workers(wanted, timeout=wait)
        except (TimeoutError, OSError) as exc:
            have = len(client.scheduler_info(n_workers=-1).get("workers", {}))
            hint = {"remote": f"start some with `dask worker {client.scheduler.address}`",
                    "factory": "check the batch system's queue and the cluster's logs",
                    "local": "check the worker logs above"}[kind]
            raise ClusterConnectionError(
                f"only {have} of the {wanted} Dask worker(s) asked for (cluster."
                f"wait_for_workers) joined the scheduler at {client.scheduler.address} "
                f"within {wait:g} s (cluster.wait_timeout); {hint}") from exc
    return describe_client(client, kind)


def _workers_ignore_ctrl_c() -> dict[str, Any]:
    """The dask configuration of worker processes that ignore Ctrl-C: forked by a fork
    server started here with SIGINT ignored (inherited through exec, so a Ctrl-C cannot
    kill the server while its interpreter starts; the command's handler is back as soon
    as the server is spawned), whose children restore that. Its preload
    (:mod:`daskgmm.cli.forkserver`) keeps an orphaned child's traceback quiet."""
    import multiprocessing.forkserver

    multiprocessing.forkserver.set_forkserver_preload(["daskgmm.cli.forkserver"])
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            multiprocessing.forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, previous)
    return {"distributed.worker.multiprocessing-method": "forkserver"}


def _client(target: Any, timeout: float, **kwargs: Any) -> Any:
    from distributed import Client

    client = Client(target, timeout=timeout, **kwargs)
    client.register_plugin(_quiet_plugin())
    return client


@contextlib.contextmanager
def _closed_if_interrupted() -> Iterator[None]:
    """Close, quietly, a cluster whose start was cut short (Ctrl-C): distributed keeps the
    half-built object and would close it again at exit, printing a traceback."""
    from distributed.deploy.spec import SpecCluster

    before = set(SpecCluster._instances)
    try:
        yield
    except BaseException:
        for cluster in set(SpecCluster._instances) - before:
            SpecCluster._instances.discard(cluster)
            with contextlib.suppress(BaseException):
                cluster.close(timeout=10)
        raise


@contextlib.contextmanager
def _local(cfg: ClusterSection, timeout: float) -> Iterator[tuple[Any, str]]:
    import dask
    from distributed import LocalCluster

    # No dashboard: the HTTP servers get no routes (and a free port, so no clash).
    quiet = cfg.dashboard_address is None
    with dask.config.set({**_workers_ignore_ctrl_c(), **(_NO_HTTP if quiet else {})}):
        try:
            with _closed_if_interrupted():
                cluster = LocalCluster(
                    n_workers=cfg.n_workers, threads_per_worker=cfg.threads_per_worker,
                    memory_limit=cfg.memory_limit, processes=True, host="127.0.0.1",
                    dashboard_address=cfg.dashboard_address or "127.0.0.1:0",
                    scheduler_kwargs={"dashboard": False} if quiet else None,
                    silence_logs=logging.WARN)
        except (OSError, TimeoutError, RuntimeError) as exc:
            raise ClusterConnectionError(
                f"could not start a local Dask cluster of {cfg.n_workers} worker(s): "
                f"{_reason(exc)}. Check the cluster section (n_workers, memory_limit, "
                "dashboard_address)") from exc
        with cluster, _client(cluster, timeout) as client:
            yield client, "local"


def _import_cluster_class(path: str) -> type:
    from distributed.deploy.cluster import Cluster

    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or module_name).split(".")[0]
        raise MissingDependencyError(
            f"cluster.factory.class {path}: the module {exc.name or module_name} is not "
            f"installed; install it with `pip install {_PACKAGES.get(missing, missing)}`"
        ) from None
    cls = getattr(module, name, None)
    if cls is None:
        raise ConfigError(f"cluster.factory.class {path}: {module_name} has no {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Cluster)):
        raise ConfigError(f"cluster.factory.class {path}: not a Dask cluster class (a "
                          "subclass of distributed.deploy.Cluster)")
    return cls


@contextlib.contextmanager
def _factory(cfg: ClusterSection, timeout: float) -> Iterator[tuple[Any, str]]:
    spec = cfg.factory
    cls = _import_cluster_class(spec.class_)
    try:
        with _closed_if_interrupted():
            cluster = cls(**spec.options)
    except TypeError as exc:
        raise ConfigError(f"cluster.factory.options: {spec.class_} refused them: "
                          f"{_reason(exc)}") from exc
    except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
        raise ClusterConnectionError(f"could not start the cluster {spec.class_}: "
                                     f"{_reason(exc)}. Check cluster.factory.options") from exc
    with cluster:
        if spec.scale is not None:
            cluster.scale(spec.scale)
        elif spec.adapt is not None:
            cluster.adapt(minimum=spec.adapt.minimum, maximum=spec.adapt.maximum)
        with _client(cluster, timeout) as client:
            yield client, "factory"


def _read_scheduler_file(path: str, timeout: float) -> str:
    """The address in a scheduler file, waiting up to ``timeout`` for it."""
    deadline, problem = time.monotonic() + timeout, "it does not exist"
    while True:
        if os.path.isdir(path):
            raise ClusterConnectionError(f"cluster.scheduler_file {path} is a directory, "
                                         "not a scheduler file")
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            with open(path, encoding="utf-8") as handle:
                address = json.load(handle)["address"]
            if isinstance(address, str) and address:
                return address
            problem = "it holds no scheduler address"
        if time.monotonic() >= deadline:
            raise ClusterConnectionError(
                f"could not read the Dask scheduler address from {path}: {problem} (waited "
                f"{timeout:g} s). Is the scheduler running with --scheduler-file? Check "
                "cluster.scheduler_file")
        time.sleep(0.1)


def _probe(address: str, where: str) -> None:
    """Refuse a ``tcp://`` address where something else than a Dask scheduler listens
    (a scheduler greets first; a web server waits for a request)."""
    from distributed.comm import get_address_host_port

    host, port = get_address_host_port(address)
    try:
        sock = socket.create_connection((host, port), timeout=PROBE_SECONDS)
    except OSError as exc:
        raise ClusterConnectionError(
            f"could not connect to the Dask scheduler at {address}: {_reason(exc)}. Is it "
            f"running? Check {where}") from None
    with sock:
        sock.settimeout(PROBE_SECONDS)
        with contextlib.suppress(OSError):
            if sock.recv(8):
                return
    raise ClusterConnectionError(
        f"{address} ({where}) accepts connections but does not answer as a Dask "
        f"scheduler does (no greeting within {PROBE_SECONDS:g} s): check the host and "
        "the port")


@contextlib.contextmanager
def _remote(cfg: ClusterSection, timeout: float) -> Iterator[tuple[Any, str]]:
    address, where = cfg.address, "cluster.address"
    if address is None:
        address = _read_scheduler_file(cfg.scheduler_file, timeout)
        where = f"cluster.scheduler_file ({cfg.scheduler_file})"
    scheme = address.split("://", 1)[0].lower()
    if scheme == "ucx":
        from distributed.comm.registry import get_backend

        try:
            get_backend("ucx").get_connector()
        except Exception:  # not registered, or a stub whose connector is abstract
            raise ClusterConnectionError(
                f"{where} {address}: the ucx transport is not available in this "
                "installation (it needs the distributed-ucxx package and UCX); use a "
                "tcp:// or tls:// address") from None
    if scheme == "tcp":
        _probe(address, where)
    security = None
    if cfg.tls is not None:
        from distributed.security import Security

        security = Security(tls_ca_file=cfg.tls.ca_file, tls_client_cert=cfg.tls.cert_file,
                            tls_client_key=cfg.tls.key_file,
                            require_encryption=cfg.tls.require_encryption)
    try:
        client = _client(address, timeout, security=security, set_as_default=True)
    except (OSError, TimeoutError, ValueError, TypeError, ImportError) as exc:
        # (distributed raises TypeError for a tls:// scheduler reached without TLS.)
        raise ClusterConnectionError(
            f"could not connect to the Dask scheduler at {address}: {_reason(exc)}. Is it "
            f"running? Check {where}"
            + (" and the certificates in cluster.tls" if security is not None else "")
        ) from exc
    with client:
        yield client, "remote"
