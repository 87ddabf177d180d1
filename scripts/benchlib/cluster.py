"""LocalClusters for the measurements, persisted arrays, and worker memory."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from benchlib.util import high_water, log, rss


def start_cluster(stack: contextlib.ExitStack, n_workers: int, threads: int,
                  quiet: bool = False) -> Any:
    """A LocalCluster of worker processes with distributed's default settings (the
    nanny's environment included), closed with ``stack``; its client."""
    from distributed import Client, LocalCluster

    if not quiet:
        log(f"starting LocalCluster(n_workers={n_workers}, threads_per_worker={threads})")
    cluster = stack.enter_context(LocalCluster(
        n_workers=n_workers, threads_per_worker=threads, processes=True,
        dashboard_address=":0", silence_logs=logging.ERROR))
    client = stack.enter_context(Client(cluster, set_as_default=False))
    client.wait_for_workers(n_workers)
    return client


def _worker_blas() -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_info

    return [{"internal_api": d.get("internal_api"), "num_threads": d.get("num_threads"),
             "prefix": d.get("prefix")} for d in threadpool_info()]


def _worker_env() -> dict[str, str | None]:
    return {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                           "MKL_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_")}


def cluster_info(client: Any) -> dict[str, Any]:
    workers = client.scheduler_info(n_workers=-1)["workers"]
    return {
        "n_workers": len(workers),
        "threads": {a: w.get("nthreads") for a, w in workers.items()},
        "memory_limit_bytes": {a: w.get("memory_limit") for a, w in workers.items()},
        "worker_blas": next(iter(client.run(_worker_blas).values()), None),
        "worker_env": next(iter(client.run(_worker_env).values()), None),
    }


def persist(client: Any, array: Any) -> Any:
    """``array`` computed and held in the cluster's memory."""
    from distributed import wait

    with client.as_current(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Sending large graph" for from_array(X)
        persisted = client.persist(array)
        wait(persisted)
    return persisted


def wait_released(client: Any, timeout: float = 20.0) -> None:
    """Wait until the cluster holds no data (after dropping persisted collections)."""
    gc.collect()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(client.has_what().values()):
            break
        time.sleep(0.1)
    client.run(gc.collect)


def worker_high_water(client: Any) -> int | None:
    """Largest peak RSS over the workers: exact, where sampling can miss a short peak."""
    values = [v for v in client.run(high_water).values() if v is not None]
    return max(values) if values else None


def _warm_worker(k: int, d: int) -> int:
    """Import what a fit uses and run the chunk kernel on a small block; the RSS after.

    So that a worker's "baseline" already holds the libraries and BLAS buffers, and the
    growth above it measures what the chunks and the kernel's working arrays take. Both
    kernels run: chunks of ``COMPILED_MIN_ROWS`` rows or more take the compiled one, and
    numba's first use in a process (about 100 MiB of libraries and machine code) is not
    growth with the data.
    """
    import dask.array  # noqa: F401
    import zarr  # noqa: F401

    from daskgmm.engine.estep import (
        Components,
        compiled_available,
        estep_statistics,
        make_plan,
    )

    pc = np.broadcast_to(np.eye(d), (k, d, d)).copy()
    comps = Components.gaussian("full", np.full(k, 1.0 / k), np.zeros((k, d)), pc)
    block = np.random.default_rng(0).standard_normal((256, d))
    kernels = ("numpy", "compiled") if compiled_available() else ("numpy",)
    for dtype in ("float64", "float32"):
        for kernel in kernels:
            estep_statistics(block, None, 0,
                             make_plan([comps], np.zeros(d), dtype=dtype, kernel=kernel))
    gc.collect()
    return rss()


@contextlib.contextmanager
def fresh_cluster(k: int, d: int) -> Iterator[tuple[Any, int]]:
    """A new LocalCluster (2 processes x 1 thread) with warmed-up workers, and the
    largest worker RSS after the warm-up.

    Memory peaks are taken on fresh worker processes: a long-lived worker's RSS depends
    on what it ran before. (``client.restart()`` is not used: two restarts about 15 s
    apart can lose the workers, see distributed's ``lost-worker-timeout``.)
    """
    with contextlib.ExitStack() as stack:
        client = start_cluster(stack, 2, 1, quiet=True)
        yield client, max(client.run(_warm_worker, k, d).values())
