"""Real ``dask scheduler`` and ``dask worker`` processes for tests.

The fault and TLS tests need a cluster whose processes the test controls: a worker is
killed with ``SIGKILL`` while a fit runs, or the scheduler only speaks TLS. A
:class:`distributed.LocalCluster` hides its processes, so :class:`ProcessCluster`
starts them with the ``dask`` command-line tool instead, exactly as a user would on a
real cluster::

    with ProcessCluster(tmp_path) as procs:
        procs.start_scheduler()
        procs.start_worker()
        procs.start_worker(nanny=True)
        with Client(procs.address) as client:
            procs.wait_for_workers(client, 2)
            ...

Every process is started in its own session (process group), so a worker started
behind a nanny is killed with its nanny; :meth:`ProcessCluster.close` kills every
process the helper started, by process group id, and waits for it. As a safety net
against a test run that dies before its teardown, workers give up on a vanished
scheduler after ``death_timeout`` seconds and the scheduler shuts itself down after
``idle_timeout`` seconds without work.

Each process writes its output to a log file in the helper's directory;
:meth:`ProcessCluster.logs` returns their tails for failure messages.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ClusterStartError", "ProcessCluster", "TLSFiles", "dask_executable"]


class ClusterStartError(RuntimeError):
    """A scheduler or worker process did not come up in time."""


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of one TLS identity: the CA to trust, a certificate and its key."""

    ca_file: Path
    cert: Path
    key: Path

    def cli_args(self) -> list[str]:
        """The ``dask scheduler``/``dask worker`` options that use these files."""
        return ["--tls-ca-file", str(self.ca_file), "--tls-cert", str(self.cert),
                "--tls-key", str(self.key)]


def dask_executable() -> str:
    """The ``dask`` command of the running interpreter's environment."""
    candidate = Path(sys.executable).with_name("dask")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("dask")
    if found is None:  # pragma: no cover - distributed installs the script
        raise ClusterStartError("the 'dask' command-line tool is not installed")
    return found


class ProcessCluster:
    """A scheduler and workers started as separate ``dask`` processes on 127.0.0.1.

    Parameters
    ----------
    directory : path
        Where the scheduler file, the logs and the workers' scratch space go.
    tls : TLSFiles, optional
        Run every process with these TLS files (the scheduler on ``tls://``).
    env : dict, optional
        Extra environment variables for every process.
    startup_timeout : float
        Seconds to wait for the scheduler file to appear.
    death_timeout, idle_timeout : float
        Safety nets: a worker exits when the scheduler has been gone this long; the
        scheduler exits after this long without work.
    """

    def __init__(self, directory: str | os.PathLike, *, tls: TLSFiles | None = None,
                 env: dict[str, str] | None = None, startup_timeout: float = 60.0,
                 death_timeout: float = 60.0, idle_timeout: float = 600.0) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.scheduler_file = self.directory / "scheduler.json"
        self.tls = tls
        self.env = {**os.environ, **(env or {})}
        # The processes must not inherit a pytest-specific or stale dask configuration.
        self.env.pop("DASK_SCHEDULER_ADDRESS", None)
        self.startup_timeout = startup_timeout
        self.death_timeout = death_timeout
        self.idle_timeout = idle_timeout
        self.address: str | None = None
        self.processes: list[subprocess.Popen] = []
        self._logs: list[tuple[str, Path, Any]] = []

    # -- starting ------------------------------------------------------------------------
    def _spawn(self, label: str, args: list[str]) -> subprocess.Popen:
        log_path = self.directory / f"{label}.log"
        log = open(log_path, "wb")  # closed in close()
        proc = subprocess.Popen(
            [dask_executable(), *args], stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=self.env, cwd=self.directory,
            start_new_session=True,
        )
        self.processes.append(proc)
        self._logs.append((label, log_path, log))
        return proc

    def start_scheduler(self) -> str:
        """Start ``dask scheduler`` on a free port; return its address once it listens."""
        if self.address is not None:
            raise ClusterStartError("the scheduler is already running")
        args = ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                "--scheduler-file", str(self.scheduler_file),
                "--idle-timeout", f"{self.idle_timeout}s"]
        if self.tls is not None:
            args += ["--protocol", "tls", *self.tls.cli_args()]
        self.scheduler_file.unlink(missing_ok=True)  # never read a stale one
        proc = self._spawn("scheduler", args)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise ClusterStartError(
                    f"dask scheduler exited with code {proc.returncode}:\n{self.logs()}")
            try:
                info = json.loads(self.scheduler_file.read_text())
                self.address = str(info["address"])
                return self.address
            except (OSError, ValueError, KeyError):
                time.sleep(0.05)
        raise ClusterStartError(
            f"dask scheduler wrote no scheduler file within {self.startup_timeout} s:\n"
            f"{self.logs()}")

    def use_scheduler(self, scheduler_file: str | os.PathLike) -> str:
        """Start workers for a scheduler started elsewhere, given its scheduler file."""
        info = json.loads(Path(scheduler_file).read_text())
        self.scheduler_file = Path(scheduler_file)
        self.address = str(info["address"])
        return self.address

    def start_worker(self, *, nanny: bool = False, nthreads: int = 1,
                     memory_limit: str = "1GiB", name: str | None = None
                     ) -> subprocess.Popen:
        """Start one ``dask worker`` process (behind a nanny if ``nanny``).

        Without a nanny the returned process *is* the worker, so killing it loses the
        worker for good; with a nanny, killing the worker process (see
        :meth:`worker_pids`) makes the nanny start a new one.
        """
        if self.address is None:
            raise ClusterStartError("start the scheduler first")
        index = sum(label != "scheduler" for label, _, _ in self._logs)
        name = name or f"worker-{index}"
        args = ["worker", "--scheduler-file", str(self.scheduler_file),
                "--nworkers", "1", "--nthreads", str(nthreads),
                "--memory-limit", memory_limit, "--host", "127.0.0.1",
                "--no-dashboard", "--death-timeout", f"{self.death_timeout}s",
                "--local-directory", str(self.directory / f"worker-{index}"),
                "--name", name, "--nanny" if nanny else "--no-nanny"]
        if self.tls is not None:
            args += self.tls.cli_args()
        return self._spawn(name, args)

    # -- inspecting ----------------------------------------------------------------------
    def wait_for_workers(self, client: Any, n: int, timeout: float = 60.0) -> None:
        """Block until ``n`` workers are connected, or raise :class:`ClusterStartError`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(client.scheduler_info(n_workers=-1)["workers"]) >= n:
                return
            dead = [p for p in self.processes if p.poll() is not None]
            if dead:
                raise ClusterStartError(
                    f"{len(dead)} dask process(es) exited while waiting for {n} "
                    f"workers:\n{self.logs()}")
            time.sleep(0.1)
        raise ClusterStartError(
            f"fewer than {n} workers connected within {timeout} s:\n{self.logs()}")

    @staticmethod
    def worker_pids(client: Any) -> dict[str, int]:
        """The process id of every connected worker, by worker address."""
        return {address: int(pid) for address, pid in client.run(os.getpid).items()}

    def logs(self, tail: int = 4000) -> str:
        """The last ``tail`` characters of every process's log, labelled."""
        parts = []
        for label, path, log in self._logs:
            if not log.closed:
                log.flush()
            try:
                text = path.read_text(errors="replace")
            except OSError:
                text = "(no log)"
            parts.append(f"--- {label} ---\n{text[-tail:]}")
        return "\n".join(parts)

    # -- stopping ------------------------------------------------------------------------
    @staticmethod
    def kill_pid(pid: int) -> None:
        """``SIGKILL`` one process (a worker, by its pid), ignoring one already gone."""
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        """Kill every process started here (with its children) and wait for them."""
        for proc in self.processes:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: pgid == pid
                except ProcessLookupError:
                    pass
        for proc in self.processes:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL cannot be caught
                pass
        for _, _, log in self._logs:
            log.close()

    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
