"""Shared fixtures: a real multi-process LocalCluster and small reference data sets."""

from __future__ import annotations

import numpy as np
import pytest

# Session fixtures of real servers on 127.0.0.1 (moto's S3 server, an HTTP file server).
from tests.servers import http_server, s3_server  # noqa: F401


@pytest.fixture(scope="session")
def cluster():
    """A LocalCluster with two worker processes, shared by the whole session."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit="1GiB") as local:
        yield local


@pytest.fixture
def client(cluster):
    """A Client on the session's LocalCluster, active for the duration of a test."""
    from distributed import Client

    with Client(cluster) as c:
        yield c


def make_blobs(n: int = 3000, d: int = 3, k: int = 3, seed: int = 0,
               offset: float = 0.0) -> np.ndarray:
    """Overlapping anisotropic Gaussian blobs (so EM takes a few iterations)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(k, d))
    labels = rng.integers(k, size=n)
    mixing = rng.normal(size=(k, d, d)) * 0.6 + np.eye(d)
    X = centres[labels] + np.einsum("nd,nde->ne", rng.normal(size=(n, d)), mixing[labels])
    return X + offset


@pytest.fixture(scope="session")
def blobs() -> np.ndarray:
    return make_blobs()


@pytest.fixture(scope="session")
def iris() -> np.ndarray:
    from sklearn.datasets import load_iris

    return load_iris().data
