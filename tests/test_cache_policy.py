"""``cache='auto'``: when a fit holds the data in memory (RowChunks.cached).

Not for a fit that reads the data once or twice; without a cluster, never a lazy array
larger than a quarter of the available memory or 2 GiB (the issue: a max_iter=0 fit
loaded 3.2 GB into the driver); on a cluster, at most half of the workers' *free*
memory.
"""

from __future__ import annotations

import threading

import dask
import dask.array as da
import numpy as np
import pytest

from daskgmm import GaussianMixture
from daskgmm.engine import passes
from daskgmm.engine.passes import RowChunks
from tests.conftest import make_blobs


def _counting(X: da.Array) -> tuple[da.Array, list[int]]:
    """``X`` whose every chunk read adds one to the returned counter."""
    count = [0]
    lock = threading.Lock()

    def read(block: np.ndarray) -> np.ndarray:
        with lock:
            count[0] += 1
        return block

    return X.map_blocks(read, dtype=X.dtype, meta=np.empty((0, 0), X.dtype)), count


@pytest.mark.parametrize(("max_iter", "cached"), [(1, False), (3, True)])
def test_auto_caches_only_a_fit_that_reads_the_data_more_than_twice(max_iter, cached):
    """A fit reads its data max_iter times and once to initialise: cached, each of the
    10 chunks is read once (by the persist); not cached, each pass reads them again."""
    X, count = _counting(da.from_array(make_blobs(5000, 3, 3, seed=1), chunks=500))
    with dask.config.set(scheduler="threads"):
        GaussianMixture(3, max_iter=max_iter, tol=0, cache="auto",
                        random_state=0).fit(X)
    if cached:
        assert count[0] == 10
    else:
        assert count[0] >= 10 * min(2, max_iter + 1)


def test_auto_without_a_cluster_never_loads_a_large_lazy_array():
    """A lazily generated array of 2 GiB and a chunk (never computed here) is not
    persisted in this process, however much memory the machine has."""
    rows = (passes.LOCAL_CACHE_BYTES // 32) + 500_000
    X = da.random.default_rng(0).normal(size=(rows, 4), chunks=(500_000, 4))
    chunks = RowChunks(X)
    with dask.config.set(scheduler="threads"), chunks.cached("auto") as cached:
        assert cached is chunks
    assert passes.LOCAL_CACHE_BYTES <= 2 * 2**30 and passes.LOCAL_CACHE_FRACTION <= 0.25


def test_auto_without_a_cluster_uses_the_available_memory():
    import psutil

    budget = passes._scheduler_memory()
    assert budget <= passes.LOCAL_CACHE_FRACTION * psutil.virtual_memory().available * 1.1


@pytest.mark.slow
def test_auto_on_a_cluster_counts_the_workers_free_memory(client):
    """Half of what the workers can still take (limit less what each process holds),
    not half of their limits."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    limits = sum(w["memory_limit"] for w in workers)
    held = sum(w["metrics"]["memory"] for w in workers)
    assert held > 0
    budget = passes._scheduler_memory()
    assert budget < 0.5 * limits
    assert budget == pytest.approx(0.5 * (limits - held), rel=0.1)
