"""Datasets and initial parameters.

Zarr stores are generated once into the data directory (``daskgmm.io.generate``) and
reused; the out-of-core measurements never load them into the driver. The covariance
type × shape table uses mixtures drawn in memory (:func:`mixture_in_memory`).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from benchlib.util import MIB, log

SEED = 0
INIT_SAMPLE_ROWS = 50_000
INIT_MAX_ITER = 10
#: The keys of a GaussianMixture's initial parameters.
INIT_KEYS = ("weights_init", "means_init", "precisions_init")


def ensure_dataset(data_dir: Path, n: int, d: int, k: int, chunk_rows: int,
                   seed: int = SEED) -> dict[str, Any]:
    """Generate a float64 Zarr dataset, or reuse the one already there."""
    import zarr

    from daskgmm.io.generate import generate_mixture

    chunk_rows = min(chunk_rows, n)
    path = Path(data_dir) / f"gmm_n{n}_d{d}_k{k}_c{chunk_rows}_s{seed}_float64.zarr"
    expected = {"generator": "daskgmm", "n_samples": n, "n_features": d, "n_components": k,
                "chunk_rows": chunk_rows, "seed": seed, "dtype": "float64", "dataset": "X"}
    info = {"path": str(path.resolve()), "shape": [n, d], "n_components": k,
            "chunk_rows": chunk_rows, "seed": seed, "bytes": n * d * 8}
    if path.exists():
        try:
            attrs = dict(zarr.open_group(str(path), mode="r").attrs)
            if all(attrs.get(key) == value for key, value in expected.items()):
                log(f"reusing {path}")
                return {**info, "reused": True}
            log(f"{path} does not match the parameters; regenerating it")
        except Exception as exc:  # unreadable: regenerate
            log(f"{path} is unreadable ({type(exc).__name__}: {exc}); regenerating it")
    log(f"generating {path} ({n:,} x {d}, K={k}, {n * d * 8 / MIB:.0f} MiB)")
    generate_mixture(str(path), n, d, k, seed=seed, chunk_rows=chunk_rows,
                     dtype="float64", overwrite=True)
    return {**info, "reused": False}


def open_zarr(path: str) -> Any:
    """The data array as a lazy Dask array, chunked as stored."""
    import dask.array as da

    return da.from_zarr(path, component="X")


def sample_rows(path: str, size: int, seed: int) -> np.ndarray:
    """A uniform sample of rows, read from the store (the array is never loaded)."""
    import zarr

    z = zarr.open_array(path, path="X", mode="r")
    n = z.shape[0]
    if n <= size:
        return np.asarray(z[...])
    idx = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    return np.asarray(z.get_orthogonal_selection((idx, slice(None))))


def load_in_memory(path: str) -> np.ndarray:
    import zarr

    return np.ascontiguousarray(zarr.open_array(path, path="X", mode="r")[...])


def mixture_in_memory(n: int, d: int, k: int, seed: int = SEED) -> np.ndarray:
    """``n`` rows of a random K-component mixture in D dimensions, drawn in memory
    (float64; the parameters of :func:`daskgmm.io.generate.sample_parameters`)."""
    from daskgmm.io.generate import sample_parameters

    truth = sample_parameters(d, k, seed=seed)
    rng = np.random.default_rng([seed, 7])
    labels = rng.choice(k, size=n, p=truth["weights"])
    X = np.empty((n, d))
    chols = np.linalg.cholesky(truth["covariances"])
    for j in range(k):
        idx = np.flatnonzero(labels == j)
        X[idx] = rng.standard_normal((idx.size, d)) @ chols[j].T + truth["means"][j]
    return X


def initial_parameters(sample: np.ndarray, k: int, covariance_type: str = "full",
                       seed: int = SEED, max_iter: int = INIT_MAX_ITER
                       ) -> dict[str, np.ndarray]:
    """weights/means/precisions from a short scikit-learn fit on a sample of rows."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as SkGM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SkGM(k, covariance_type=covariance_type, max_iter=max_iter, random_state=seed)
        sk.fit(sample)
    return {"weights_init": sk.weights_, "means_init": sk.means_,
            "precisions_init": sk.precisions_}


def cold_start_parameters(sample: np.ndarray, k: int, seed: int = SEED
                          ) -> dict[str, np.ndarray]:
    """A cold start for full covariances: ``k`` distinct rows of the sample as means,
    equal weights, and every precision the inverse of the sample's covariance."""
    rng = np.random.default_rng([seed, 11])
    means = sample[rng.choice(len(sample), size=k, replace=False)]
    precision = np.linalg.inv(np.cov(sample, rowvar=False))
    precision = 0.5 * (precision + precision.T)
    return {"weights_init": np.full(k, 1.0 / k), "means_init": np.array(means),
            "precisions_init": np.broadcast_to(precision, (k, *precision.shape)).copy()}


def kmeans_start_parameters(sample: np.ndarray, k: int, seed: int = SEED
                            ) -> dict[str, np.ndarray]:
    """The start a default fit gets, from a sample: k-means centres as means, the
    clusters' shares as weights and the inverses of their covariances (plus 1e-6 on the
    diagonal, scikit-learn's reg_covar) as precisions."""
    from sklearn.cluster import KMeans

    labels = KMeans(k, n_init=1, random_state=seed).fit_predict(sample)
    d = sample.shape[1]
    means, weights, precisions = [], [], []
    for j in range(k):
        rows = sample[labels == j]
        means.append(rows.mean(axis=0))
        weights.append(len(rows) / len(sample))
        cov = (np.cov(rows, rowvar=False) if len(rows) > 1 else np.zeros((d, d)))
        precision = np.linalg.inv(cov + 1e-6 * np.eye(d))
        precisions.append(0.5 * (precision + precision.T))
    return {"weights_init": np.asarray(weights), "means_init": np.asarray(means),
            "precisions_init": np.asarray(precisions)}


def truth_parameters(path: str) -> dict[str, np.ndarray]:
    """The generating mixture's parameters as an initialisation."""
    from daskgmm.io.generate import load_truth

    t = load_truth(path)
    precisions = np.linalg.inv(t["covariances"])
    precisions = 0.5 * (precisions + precisions.transpose(0, 2, 1))
    return {"weights_init": t["weights"] / t["weights"].sum(), "means_init": t["means"],
            "precisions_init": precisions}
