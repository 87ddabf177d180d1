"""Connecting to the Dask cluster a run computes on, and watching it while the run lasts.

:func:`connect` turns the ``cluster`` section of a run configuration
(:class:`daskgmm.cli.config.ClusterConfig`) into a live :class:`distributed.Client`:

* by default it starts an **embedded local cluster** of worker *processes* on 127.0.0.1.
  Its HTTP server (the dashboard, which serves worker pages and logs without
  authentication) listens on 127.0.0.1 only, and with ``dashboard_address: null`` no
  HTTP server is started at all, on the scheduler or on the workers. The worker
  processes ignore Ctrl-C (the terminal sends it to every process of the foreground
  group): the command handles it once and shuts them down itself;
* with ``address`` or ``scheduler_file`` it joins an **existing scheduler** (TLS
  certificates from ``cluster.tls``) and leaves it running afterwards;
* with ``factory`` it **starts a cluster class** (``dask_jobqueue.SLURMCluster``,
  ``dask_kubernetes.operator.KubeCluster``...), scales or adapts it, and closes it
  afterwards.

In every case the run waits for ``wait_for_workers`` workers (at most ``wait_timeout``
seconds), and a :class:`Watchdog` follows the cluster during the run: when every worker
has been paused, or there has been no worker, for ``stall_timeout`` seconds, the run is
stopped with :class:`~daskgmm.errors.ClusterStalledError`; when the scheduler goes away,
with :class:`~daskgmm.errors.ClusterLostError`. Nothing waits forever without a word.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from daskgmm.cli.guards import WRITE_ERRNOS
from daskgmm.errors import (
    ClusterConnectionError,
    ClusterLostError,
    ClusterStalledError,
    ConfigError,
    MissingDependencyError,
    WorkerDiedError,
)

__all__ = ["DEFAULT_TIMEOUT", "Watchdog", "connect", "describe_client",
           "quiet_library_logs", "worker_failures"]

DEFAULT_TIMEOUT = 20.0
"""Seconds to wait for a scheduler to answer before giving up. The environment variable
``DASKGMM_CONNECT_TIMEOUT`` or ``cluster.connect_timeout`` overrides it."""

# Packages to install for the cluster classes users name most often.
_PACKAGES = {
    "dask_jobqueue": "dask-jobqueue",
    "dask_kubernetes": "dask-kubernetes",
    "dask_cloudprovider": "dask-cloudprovider",
    "dask_gateway": "dask-gateway",
    "dask_yarn": "dask-yarn",
    "coiled": "coiled",
    "distributed": "distributed",
}


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
        if any(f"{name}(" in text for name in _user_error_names()):
            return False
        return _USER_OS_ERROR.search(text) is None


# An OSError the user must fix (disk full, read-only, permission denied), as a worker's
# "Compute Failed" record shows it: OSError(28, 'No space left on device').
_USER_OS_ERROR = re.compile(
    r"\b(?:OSError|PermissionError|FileExistsError)\((?:"
    + "|".join(str(code) for code in sorted(WRITE_ERRNOS)) + r"),")


def _user_error_names() -> tuple[str, ...]:
    import daskgmm.errors as errors

    return tuple(name for name in errors.__all__
                 if isinstance(getattr(errors, name), type)
                 and issubclass(getattr(errors, name), errors.DaskGMMError))


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
    kind : {'local', 'remote', 'factory'}

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


# ---------------------------------------------------------------------------------------
# The watchdog
# ---------------------------------------------------------------------------------------


def _interrupt_main_thread() -> None:
    """Raise KeyboardInterrupt in the main thread, waking it from a blocking wait."""
    import _thread

    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        # A real signal interrupts a blocking lock wait at once (EINTR).
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
    else:
        _thread.interrupt_main()


class Watchdog:
    """Stop a run whose cluster cannot make progress.

    A daemon thread looks at the scheduler's view of the workers every ``interval``
    seconds. When every worker has been paused (memory above the pause threshold), or
    there has been no worker at all, for more than ``timeout`` seconds, it records the
    reason and interrupts the main thread; :func:`connect` turns that interruption into
    a :class:`ClusterStalledError` carrying the reason. If the main thread does not
    stop within ``grace`` seconds (for instance because Ctrl-C is ignored), the message
    is printed and the process exits with code 2.

    Parameters
    ----------
    client : distributed.Client
    timeout : float
        Seconds of no progress possible before giving up.
    interval : float
        Seconds between two looks.
    grace : float
        Seconds the main thread gets to stop after the interruption.
    interrupt : callable, optional
        What to do when giving up (default: interrupt the main thread).
    """

    def __init__(self, client: Any, timeout: float, *, interval: float = 1.0,
                 grace: float = 30.0, interrupt: Callable[[], None] | None = None) -> None:
        self.client = client
        self.timeout = float(timeout)
        self.interval = float(interval)
        self.grace = float(grace)
        self.interrupt = interrupt or _interrupt_main_thread
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _state(self) -> tuple[str | None, int]:
        """``('paused' | 'no workers' | None, number of workers)`` now."""
        info = self.client.scheduler_info(n_workers=-1)
        workers = info.get("workers", {})
        if not workers:
            return "no workers", 0
        statuses = [str(w.get("status", "running")) for w in workers.values()]
        if all(s == "paused" for s in statuses):
            return "paused", len(workers)
        return None, len(workers)

    def _message(self, state: str, n_workers: int, limits: list[int]) -> str:
        waited = f"{self.timeout:g} s"
        if state == "no workers":
            return (f"the cluster has had no workers for {waited}, so the run cannot "
                    "progress; start workers (or check why they exit), or raise "
                    "cluster.stall_timeout")
        limit = (f" (memory limit {', '.join(sorted({_size(v) for v in limits}))})"
                 if limits else "")
        return (f"every one of the {n_workers} Dask worker(s){limit} has been paused for "
                f"{waited}: their memory is above the pause threshold (80% of the limit) "
                "and does not come down, so the run cannot progress; give them more memory "
                "(cluster.memory_limit) or use smaller chunks (data.chunk_rows)")

    def _run(self) -> None:
        since: float | None = None
        last: str | None = None
        while not self._stop.wait(self.interval):
            try:
                state, n_workers = self._state()
            except Exception:  # the scheduler may be going away; connect() reports it
                continue
            now = time.monotonic()
            if state is None or state != last:
                since = now if state is not None else None
                last = state
                continue
            if since is not None and now - since >= self.timeout:
                limits = []
                with contextlib.suppress(Exception):
                    info = self.client.scheduler_info(n_workers=-1)
                    limits = [int(w.get("memory_limit") or 0)
                              for w in info.get("workers", {}).values()]
                self.reason = self._message(state, n_workers, [v for v in limits if v])
                if self.interrupt is _interrupt_main_thread:
                    quiet_library_logs()
                self.interrupt()
                if not self._stop.wait(self.grace):
                    _stderr(f"daskgmm: error: {self.reason}")
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
            self._thread.join(timeout=5)


# ---------------------------------------------------------------------------------------
# connect
# ---------------------------------------------------------------------------------------


def _lost_connection(exc: BaseException, client: Any) -> bool:
    """Whether ``exc`` comes from losing the scheduler (not from the computation)."""
    from distributed.comm.core import CommClosedError

    if "scheduler-connection-lost" in str(exc):
        return True
    if isinstance(exc, concurrent.futures.CancelledError | CommClosedError):
        return getattr(client, "status", "running") != "running" or isinstance(
            exc, CommClosedError)
    return False


def quiet_library_logs() -> None:
    """Silence the loggers of distributed, tornado and asyncio for the rest of the
    process: a run that has failed (or was interrupted) is being torn down, and they
    would print tracebacks of cancelled connections around the one-line message."""
    for name in ("distributed", "distributed.client", "tornado", "tornado.application",
                 "asyncio"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


def _quiet_teardown() -> None:
    """:func:`quiet_library_logs` (a failed run's cluster is being torn down)."""
    quiet_library_logs()


@contextlib.contextmanager
def connect(cluster_config: Any = None, *, timeout: float | None = None,
            log: Callable[[str], None] | None = _stderr,
            watch: bool = True) -> Iterator[tuple[Any, dict]]:
    """Start or join the Dask cluster described by ``cluster_config``.

    Parameters
    ----------
    cluster_config : daskgmm.cli.config.ClusterConfig, optional
        The ``cluster`` section of a run configuration; ``None`` means the defaults (a
        local cluster of two single-threaded worker processes).
    timeout : float, optional
        Seconds to wait for the scheduler to answer and for a scheduler file to appear.
        Defaults to ``cluster_config.connect_timeout``, else
        ``$DASKGMM_CONNECT_TIMEOUT``, else 20 s.
    log : callable, optional
        Receives one-line messages (the dashboard link); ``None`` for silence.
    watch : bool, default True
        Run a :class:`Watchdog` (with ``cluster_config.stall_timeout``) inside the block.

    Yields
    ------
    client : distributed.Client
        Set as the default scheduler inside the block.
    info : dict
        :func:`describe_client` facts (``kind`` is ``'local'``, ``'remote'`` or
        ``'factory'``).

    Raises
    ------
    ClusterConnectionError
        The scheduler cannot be reached within ``timeout``, the scheduler file does not
        appear or holds no address, or too few workers join within
        ``cluster.wait_timeout``.
    ClusterStalledError
        Inside the block: every worker paused, or no worker, for ``stall_timeout``.
    ClusterLostError
        Inside the block: the connection to the scheduler was lost.
    MissingDependencyError
        ``cluster.factory.class`` is in a package that is not installed.
    """
    if cluster_config is None:
        from daskgmm.cli.config import ClusterConfig

        cluster_config = ClusterConfig()
    if timeout is None:
        timeout = getattr(cluster_config, "connect_timeout", None) or _default_timeout()
    timeout = float(timeout)
    address = getattr(cluster_config, "address", None)
    scheduler_file = getattr(cluster_config, "scheduler_file", None)
    factory = getattr(cluster_config, "factory", None)
    if factory is not None:
        cm = _factory(cluster_config, timeout)
    elif address is None and scheduler_file is None:
        cm = _local(cluster_config, timeout)
    else:
        cm = _remote(address, scheduler_file, getattr(cluster_config, "tls", None),
                     timeout)
    stall = getattr(cluster_config, "stall_timeout", None) if watch else None
    with cm as (client, info):
        _wait_for_workers(client, cluster_config, info, log, timeout)
        info = {**info, **{k: v for k, v in describe_client(client, info["kind"]).items()
                           if k != "dashboard_link"}}
        if info.get("dashboard_link") and log is not None:
            log(f"Dask dashboard: {info['dashboard_link']}")
        watchdog = Watchdog(client, stall) if stall else None
        try:
            with watchdog or contextlib.nullcontext():
                yield client, info
        except KeyboardInterrupt as exc:
            _quiet_teardown()
            if watchdog is not None and watchdog.reason is not None:
                raise ClusterStalledError(watchdog.reason) from exc
            raise
        except Exception as exc:
            if _lost_connection(exc, client):
                _quiet_teardown()
                where = info.get("scheduler_address") or "the scheduler"
                raise ClusterLostError(
                    f"lost the connection to the Dask scheduler at {where} during the run "
                    "(it stopped, or the network failed); start it again and rerun the "
                    "command (a fit with checkpoint.dir continues with --resume)"
                ) from exc
            if not isinstance(exc, ClusterConnectionError):
                from daskgmm.cli.guards import is_user_error

                if is_user_error(exc):
                    _quiet_teardown()
            raise


def _wait_for_workers(client: Any, cfg: Any, info: dict, log: Any,
                      connect_timeout: float) -> None:
    wanted = int(getattr(cfg, "wait_for_workers", 1) or 1)
    wait = getattr(cfg, "wait_timeout", None)
    if wait is None:
        wait = 600.0 if info["kind"] == "factory" else connect_timeout
    wait = float(wait)
    if info["kind"] == "local":
        wanted = min(wanted, int(getattr(cfg, "n_workers", wanted)))
    if len(client.scheduler_info(n_workers=-1).get("workers", {})) >= wanted:
        return
    if log is not None and info["kind"] != "local":
        log(f"waiting for {wanted} Dask worker(s) (at most {wait:g} s)")
    try:
        client.wait_for_workers(wanted, timeout=wait)
    except (TimeoutError, OSError) as exc:
        have = len(client.scheduler_info(n_workers=-1).get("workers", {}))
        hint = {"remote": f"start some with `dask worker {info['scheduler_address']}`",
                "factory": "check the batch system's queue and the cluster's logs",
                "local": "check the worker logs above"}[info["kind"]]
        raise ClusterConnectionError(
            f"only {have} of the {wanted} Dask worker(s) asked for (cluster."
            f"wait_for_workers) joined the scheduler at {info['scheduler_address']} within "
            f"{wait:g} s (cluster.wait_timeout); {hint}"
        ) from exc


# ---------------------------------------------------------------------------------------
# The embedded local cluster
# ---------------------------------------------------------------------------------------


def _loopback(address: str) -> str:
    """``':8787'`` -> ``'127.0.0.1:8787'`` (config validation allows loopback only)."""
    host, sep, port = str(address).strip().rpartition(":")
    if not sep:
        host, port = "", str(address).strip()
    if host in ("", "localhost"):
        host = "127.0.0.1"
    if host == "::1":
        host = "[::1]"
    return f"{host}:{port}"


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Processes started inside the block ignore SIGINT (inherited through exec)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _embedded_cluster(cfg: Any) -> Any:
    """A SpecCluster like :class:`distributed.LocalCluster`, bound to 127.0.0.1, with a
    loopback-only dashboard or no HTTP server at all."""
    from dask.utils import parse_bytes
    from distributed import Nanny, Scheduler, SpecCluster
    from distributed.security import Security
    from distributed.worker_memory import parse_memory_limit

    from daskgmm.cli.embedded import SchedulerWithoutHTTP, WorkerWithoutHTTP

    http = cfg.dashboard_address is not None
    security = Security()
    memory = cfg.memory_limit
    if isinstance(memory, str) and memory.strip().lower() == "auto":
        memory = parse_memory_limit("auto", 1, cfg.n_workers)
    elif isinstance(memory, str):
        memory = parse_bytes(memory)
    scheduler = {
        "cls": Scheduler if http else SchedulerWithoutHTTP,
        "options": {"host": "127.0.0.1", "port": 0, "protocol": "tcp://",
                    "security": security, "services": {}, "dashboard": http,
                    "dashboard_address": _loopback(cfg.dashboard_address) if http else None},
    }
    worker_options = {"host": "127.0.0.1", "protocol": "tcp://", "security": security,
                      "nthreads": cfg.threads_per_worker, "memory_limit": memory,
                      "services": {}, "dashboard": False, "dashboard_address": None,
                      "silence_logs": logging.WARN}
    if not http:
        worker_options["worker_class"] = WorkerWithoutHTTP
    worker = {"cls": Nanny, "options": worker_options}
    with _sigint_ignored():
        return SpecCluster(scheduler=scheduler, workers=dict.fromkeys(range(cfg.n_workers),
                                                                      worker),
                           worker=worker, silence_logs=logging.WARN, security=security,
                           name="daskgmm")


@contextlib.contextmanager
def _local(cfg: Any, timeout: float) -> Iterator[tuple[Any, dict]]:
    from distributed import Client

    try:
        cluster = _embedded_cluster(cfg)
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
            if cfg.dashboard_address is None:
                info["dashboard_link"] = None
            yield client, info


# ---------------------------------------------------------------------------------------
# A cluster class named in the configuration
# ---------------------------------------------------------------------------------------


def _import_cluster_class(path: str) -> type:
    module_name, _, name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = (exc.name or module_name).split(".")[0]
        package = _PACKAGES.get(missing, missing)
        raise MissingDependencyError(
            f"cluster.factory.class {path}: the module {exc.name or module_name} is not "
            f"installed; install it with `pip install {package}`"
        ) from None
    cls = getattr(module, name, None)
    if cls is None:
        raise ConfigError(f"cluster.factory.class {path}: {module_name} has no {name!r}")
    from distributed.deploy.cluster import Cluster

    if not (isinstance(cls, type) and issubclass(cls, Cluster)):
        raise ConfigError(f"cluster.factory.class {path}: not a Dask cluster class (a "
                          "subclass of distributed.deploy.Cluster)")
    return cls


@contextlib.contextmanager
def _factory(cfg: Any, timeout: float) -> Iterator[tuple[Any, dict]]:
    from distributed import Client

    spec = cfg.factory
    cls = _import_cluster_class(spec.class_)
    options = dict(spec.options)
    try:
        cluster = cls(**options)
    except TypeError as exc:
        raise ConfigError(f"cluster.factory.options: {spec.class_} refused them: "
                          f"{_reason(exc)}") from exc
    except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
        raise ClusterConnectionError(
            f"could not start the cluster {spec.class_}: {_reason(exc)}. Check "
            "cluster.factory.options"
        ) from exc
    with cluster:
        if spec.scale is not None:
            cluster.scale(spec.scale)
        elif spec.adapt is not None:
            cluster.adapt(minimum=spec.adapt.minimum, maximum=spec.adapt.maximum)
        try:
            client = Client(cluster, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ClusterConnectionError(
                f"could not connect to the cluster {spec.class_}: {_reason(exc)}"
            ) from exc
        with client:
            client.register_plugin(QuietUserErrors())
            yield client, describe_client(client, "factory")


# ---------------------------------------------------------------------------------------
# An existing scheduler
# ---------------------------------------------------------------------------------------


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
        yield client, describe_client(client, "remote")
