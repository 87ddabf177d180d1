"""A fit from Python on a distributed cluster that cannot make progress raises
:class:`ClusterStalledError` instead of waiting forever (daskgmm.engine.watch).

Real ``LocalCluster`` s with worker processes: workers paused by their memory threshold,
a cluster without workers, a cluster that loses all its workers in the middle of a fit.
The stall timeout is set low (``daskgmm.stall-timeout``) to keep the tests short.
"""

from __future__ import annotations

import contextvars
import threading
import time

import dask
import dask.array as da
import numpy as np
import pytest

from daskgmm import GaussianMixture
from daskgmm.engine.watch import DEFAULT_STALL_TIMEOUT, STALL_TIMEOUT_KEY, stall_timeout
from daskgmm.errors import ClusterStalledError
from tests.conftest import make_blobs


def test_stall_timeout_reads_the_dask_config():
    assert stall_timeout() == DEFAULT_STALL_TIMEOUT <= 120
    with dask.config.set({STALL_TIMEOUT_KEY: "5 minutes"}):
        assert stall_timeout() == 300
    with dask.config.set({STALL_TIMEOUT_KEY: 2.5}):
        assert stall_timeout() == 2.5
    for off in (None, 0, False):
        with dask.config.set({STALL_TIMEOUT_KEY: off}):
            assert stall_timeout() is None
    with dask.config.set({STALL_TIMEOUT_KEY: "soon"}), \
            pytest.raises(ValueError, match=r"daskgmm\.stall-timeout"):
        stall_timeout()


def _fit_error(model: GaussianMixture, X: da.Array, seconds: float = 60) -> BaseException:
    """The exception ``model.fit(X)`` raises, run in a thread so that a fit that waits
    forever (as it did before the watch) fails the test after ``seconds``."""
    outcome: dict[str, BaseException | None] = {}
    context = contextvars.copy_context()  # the observers of this thread

    def run() -> None:
        try:
            context.run(model.fit, X)
            outcome["error"] = None
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"the fit still waits on the cluster after {seconds} s"
    assert outcome["error"] is not None, "the fit ended without an error"
    return outcome["error"]


def _wait_for_paused_workers(client, n: int) -> None:
    """Until the scheduler knows ``n`` workers, all paused (``client.wait_for_workers``
    waits for *running* workers)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        if len(workers) == n and all(w["status"] == "paused" for w in workers):
            return
        time.sleep(0.1)
    raise AssertionError(f"the cluster's {n} workers did not pause")


def _data() -> da.Array:
    return da.from_array(make_blobs(20_000, 3, 3, seed=4), chunks=2_000)


@pytest.mark.slow
@pytest.mark.parametrize("cache", [False, True])
def test_a_fit_on_paused_workers_raises_within_the_timeout(cache):
    from distributed import Client, LocalCluster

    # The workers pause above 1% of their limit, i.e. at once (the threshold reaches the
    # worker processes through the nanny's copy of the configuration).
    with dask.config.set({"distributed.worker.memory.pause": 0.01}), \
            LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                         memory_limit="1GiB", dashboard_address=None) as cluster, \
            Client(cluster) as client, dask.config.set({STALL_TIMEOUT_KEY: 2}):
        _wait_for_paused_workers(client, 2)
        t0 = time.monotonic()
        error = _fit_error(GaussianMixture(3, max_iter=5, cache=cache, random_state=0),
                           _data())
        waited = time.monotonic() - t0
        workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    assert isinstance(error, ClusterStalledError), error
    message = str(error)
    assert 2 <= waited < 15, waited
    assert message.startswith("every one of the 2 Dask worker(s) has been paused for 2 s")
    for address in workers:  # each worker named, with its memory and limit
        assert f"{address} (" in message
    assert message.count("of 1.00 GiB") == 2
    assert "memory_limit" in message and "chunk_rows" in message
    assert "daskgmm.stall-timeout" in message


@pytest.mark.slow
def test_a_fit_on_a_cluster_without_workers_raises():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=0, dashboard_address=None) as cluster, \
            Client(cluster), dask.config.set({STALL_TIMEOUT_KEY: 1}):
        error = _fit_error(GaussianMixture(3, max_iter=5, random_state=0), _data())
    assert isinstance(error, ClusterStalledError), error
    assert str(error).startswith("the Dask cluster has had no workers for 1 s")


@pytest.mark.slow
def test_a_fit_whose_cluster_loses_all_its_workers_raises():
    from distributed import Client, LocalCluster

    X = da.from_array(make_blobs(200_000, 3, 3, seed=5), chunks=20_000)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      memory_limit="1GiB", dashboard_address=None) as cluster, \
            Client(cluster) as client, dask.config.set({STALL_TIMEOUT_KEY: 2}):
        client.wait_for_workers(2)
        model = GaussianMixture(3, max_iter=100_000, tol=0, cache=False, random_state=0)
        started = threading.Event()

        class Started:  # an observer: the fit is in its EM passes
            def pass_started(self, kind, n_chunks):
                if kind == "em":
                    started.set()

        def remove_workers():
            started.wait(60)
            time.sleep(0.5)
            cluster.scale(0)

        remover = threading.Thread(target=remove_workers)
        remover.start()
        from daskgmm.diagnostics import observers

        try:
            with observers.observe(Started()):
                error = _fit_error(model, X)
        finally:
            remover.join()
    assert isinstance(error, ClusterStalledError), error
    assert "has had no workers for 2 s" in str(error)
    assert not hasattr(model, "means_")  # nothing of the interrupted fit was kept


@pytest.mark.slow
def test_a_healthy_cluster_is_left_alone(client):
    """A fit whose passes outlast the watch's interval finishes (the watch looks, finds
    running workers, and does nothing) with the result of an unwatched fit."""
    X = _data()
    kwargs = dict(n_components=3, max_iter=2, tol=0, random_state=0, cache=False)
    with dask.config.set({STALL_TIMEOUT_KEY: 0.2}):
        watched = GaussianMixture(**kwargs).fit(X.map_blocks(_slowly, dtype=X.dtype))
    with dask.config.set({STALL_TIMEOUT_KEY: None}):
        unwatched = GaussianMixture(**kwargs).fit(X)
    np.testing.assert_array_equal(watched.means_, unwatched.means_)


def _slowly(block: np.ndarray) -> np.ndarray:
    time.sleep(0.1)
    return block
