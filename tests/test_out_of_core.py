"""Fits over a Zarr array on disk 2.5 times the workers' total memory limit (2.5 GiB
against 2 x 512 MiB; about 4 times what the workers have free once they have imported
their libraries): a Gaussian mixture, and a variational one with sample weights."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import psutil
import pytest

from daskgmm import BayesianGaussianMixture, GaussianMixture
from daskgmm.diagnostics.memory import MemoryMonitor

pytestmark = pytest.mark.slow

# A worker that has imported dask.array holds ~200 MiB before it reads anything when
# xarray is installed (dask.array imports it, and with it pandas and pyarrow), ~60 MiB
# without; reading and fitting 12.8 MiB chunks adds ~120 MiB. The limit leaves room for
# both, whatever is installed, well below the 80% at which a worker pauses.
WORKER_LIMIT = 512 * 2**20
N_WORKERS = 2
N_FEATURES = 16
CHUNK_ROWS = 100_000
# 2.5x the workers' total memory limit (2.5 GiB).
N_SAMPLES = int(2.5 * N_WORKERS * WORKER_LIMIT / (8 * N_FEATURES)) // CHUNK_ROWS * CHUNK_ROWS


def _write_mixture(path, means, scales):
    """Write a two-component mixture chunk by chunk (never all of it in memory).

    Uncompressed: random floats hardly compress, and zstd on 2.5 GiB costs seconds to
    write and, in every pass of the fits, to read; what is tested is the out-of-core fit,
    not the codec (the chunks on disk take 2.5 GiB either way)."""
    import zarr

    z = zarr.create_array(store=str(path), shape=(N_SAMPLES, N_FEATURES),
                          chunks=(CHUNK_ROWS, N_FEATURES), dtype="float64",
                          compressors=None)
    for i, start in enumerate(range(0, N_SAMPLES, CHUNK_ROWS)):
        rng = np.random.default_rng([42, i])
        labels = rng.random(CHUNK_ROWS) < 0.3
        block = rng.normal(size=(CHUNK_ROWS, N_FEATURES))
        block *= np.where(labels[:, None], scales[1], scales[0])
        block += np.where(labels[:, None], means[1], means[0])
        z[start : start + CHUNK_ROWS] = block


def _worker_warnings(client):
    logs = client.get_worker_logs()
    bad = ("Pausing worker", "Restarting worker", "exceeded", "Memory use is high",
           "spill")
    return [msg for lines in logs.values() for _, msg in lines
            if any(b in msg for b in bad)]


def test_fit_zarr_two_and_a_half_times_the_workers_memory_limit(tmp_path):
    from distributed import Client, LocalCluster

    means = np.stack([np.zeros(N_FEATURES), np.full(N_FEATURES, 4.0)])
    scales = np.array([1.0, 0.5])
    path = tmp_path / "big.zarr"
    _write_mixture(path, means, scales)
    X = da.from_zarr(str(path))
    assert 2.45 <= X.nbytes / (N_WORKERS * WORKER_LIMIT) <= 2.5  # what the name says

    with LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, processes=True,
                      memory_limit=WORKER_LIMIT, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids_before = client.run(os.getpid)
        driver_before = psutil.Process().memory_info().rss
        with MemoryMonitor(client, interval=0.2) as monitor:
            gm = GaussianMixture(2, covariance_type="full", random_state=0, max_iter=20,
                                 tol=1e-4).fit(X)
            # The variational mixture, with sample weights generated lazily (1 or 2,
            # independent of the components): the same store, the same bounds.
            weights = da.random.default_rng(0).integers(1, 3, size=len(X),
                                                        chunks=CHUNK_ROWS)
            bgm = BayesianGaussianMixture(n_components=2, random_state=0, max_iter=20,
                                          tol=1e-2).fit(X, sample_weight=weights)
        pids_after = client.run(os.getpid)
        spilled = client.run(lambda dask_worker: dask_worker.data.spilled_total.memory)
        warnings = _worker_warnings(client)

    assert pids_after == pids_before, "a worker was restarted"
    assert set(spilled.values()) == {0}, f"workers spilled to disk: {spilled}"
    assert not warnings, warnings
    for address, peak in monitor.worker_peak.items():
        # The worker pauses at 80% of its limit; stay well clear of it.
        assert peak < 0.8 * WORKER_LIMIT, (address, peak / 2**20)
    # The driver never held the data: it grew by far less than the array's size (the
    # test process's own size depends on the tests that ran before).
    assert monitor.driver_peak - driver_before < X.nbytes / 16

    assert gm.converged_
    order = np.argsort(gm.means_[:, 0])
    np.testing.assert_allclose(gm.means_[order], means, atol=0.01)
    np.testing.assert_allclose(gm.weights_[order], [0.7, 0.3], atol=0.01)
    expected_cov = np.stack([np.eye(N_FEATURES) * s**2 for s in scales])
    np.testing.assert_allclose(gm.covariances_[order], expected_cov, atol=0.01)

    assert bgm.converged_
    order = np.argsort(bgm.means_[:, 0])
    np.testing.assert_allclose(bgm.means_[order], means, atol=0.01)
    np.testing.assert_allclose(bgm.weights_[order], [0.7, 0.3], atol=0.01)
    np.testing.assert_allclose(bgm.covariances_[order], expected_cov, atol=0.01)
