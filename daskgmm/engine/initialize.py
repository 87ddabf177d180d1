"""Initial parameters for EM, computed without loading the data into memory.

``init_params`` has scikit-learn's meanings, adapted so that only passes over the chunks
(and a bounded in-memory sample) are needed:

``'kmeans'``
    k-means++ seeds and Lloyd iterations on a uniform sample of at most
    :data:`SAMPLE_ROWS` rows (scikit-learn's ``KMeans`` on the sample), then Lloyd
    iterations as distributed passes over all the chunks until the centres move less than
    scikit-learn's tolerance, then one pass for the statistics of the hard assignment.
``'k-means++'``
    k-means++ seeding (Arthur & Vassilvitskii, 2007) on the sample; each seed becomes a
    component with one sample, as in scikit-learn.
``'random_from_data'``
    ``n_components`` distinct rows drawn uniformly from the whole array.
``'random'``
    Uniform random responsibilities, normalised per row, drawn chunk by chunk.

Restarts (``n_init > 1``) are initialised together: their Lloyd iterations and
statistics share every pass over the data.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

from daskgmm.engine.kernels import (
    check_finite_block,
    hard_label_statistics,
    kmeans_statistics,
    random_resp_statistics,
    resp_statistics,
)
from daskgmm.engine.mstep import (
    covariances_from_precisions,
    m_step,
    precision_cholesky_from_precisions,
)
from daskgmm.engine.params import MixtureParams
from daskgmm.engine.passes import RowChunks
from daskgmm.errors import InvalidDataError

#: Rows in the in-memory sample used to seed k-means.
SAMPLE_ROWS = 20_000
#: Most distributed Lloyd passes after the sample's k-means has converged.
LLOYD_MAX_PASSES = 10
#: Lloyd stops when the squared centre shift is below this times the mean feature variance
#: (scikit-learn's KMeans convention).
LLOYD_TOL = 1e-4


def _sample(chunks: RowChunks, rng: np.random.RandomState, size: int) -> np.ndarray:
    n = chunks.shape[0]
    idx = np.arange(n) if n <= size else np.sort(rng.choice(n, size=size, replace=False))
    rows = chunks.take_rows(idx)
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        # Name the chunk of the first bad sampled row, as a pass over it would.
        first = int(idx[np.argmin(finite)])
        start, stop = next(b for b in chunks.row_bounds if b[0] <= first < b[1])
        in_chunk = (idx >= start) & (idx < stop)
        block = np.zeros((stop - start, rows.shape[1]))
        block[idx[in_chunk] - start] = rows[in_chunk]
        check_finite_block(block, start)
    return rows


def _params_from_points(points: np.ndarray, covariance_type: str,
                        reg_covar: float) -> MixtureParams:
    """Each point is a component holding that single sample (scikit-learn's one-hot init)."""
    c0 = points.mean(axis=0)
    pc = points - c0
    stats = resp_statistics(pc, np.eye(len(points)), pc, covariance_type)
    return m_step(stats, c0, points, covariance_type, reg_covar)


def _kmeans_centres(chunks: RowChunks, n_components: int, n_init: int,
                    rng: np.random.RandomState, split_every: int) -> list[np.ndarray]:
    sample = _sample(chunks, rng, SAMPLE_ROWS)
    centres = []
    for _ in range(n_init):
        km = KMeans(n_clusters=n_components, n_init=1, random_state=rng).fit(sample)
        centres.append(np.asarray(km.cluster_centers_, dtype=np.float64))
    if len(sample) == chunks.shape[0]:
        return centres  # the sample is the whole array: k-means has run on all of it
    reference = sample.mean(axis=0)
    threshold = LLOYD_TOL * float(np.mean(np.var(sample, axis=0)))
    active = list(range(n_init))
    for _ in range(LLOYD_MAX_PASSES):
        stats = chunks.map_reduce(kmeans_statistics, [centres[i] for i in active], reference,
                                  split_every=split_every, kind="kmeans")
        still = []
        for i, st in zip(active, stats, strict=True):
            counts = st["counts"]
            new = centres[i].copy()
            filled = counts > 0
            new[filled] = reference + st["sums"][filled] / counts[filled, None]
            shift = float(((new - centres[i]) ** 2).sum())
            centres[i] = new
            if shift > threshold:
                still.append(i)
        active = still
        if not active:
            break
    return centres


def initial_parameters(chunks: RowChunks, *, n_components: int, covariance_type: str,
                       reg_covar: float, init_params: str, n_init: int,
                       random_state: np.random.RandomState,
                       weights_init: np.ndarray | None = None,
                       means_init: np.ndarray | None = None,
                       precisions_init: np.ndarray | None = None,
                       split_every: int = 8) -> list[MixtureParams]:
    """Initial parameters of every restart.

    User-given ``weights_init``, ``means_init`` and ``precisions_init`` replace the
    corresponding initialised values, as in scikit-learn; when all three are given the
    data are not read.

    Returns
    -------
    list of MixtureParams
        ``n_init`` entries.
    """
    K, cov = n_components, covariance_type
    if weights_init is not None and means_init is not None and precisions_init is not None:
        computed: Sequence[MixtureParams | None] = [None] * n_init
    elif init_params == "kmeans":
        centres = _kmeans_centres(chunks, K, n_init, random_state, split_every)
        stats = chunks.map_reduce(hard_label_statistics, centres, cov, split_every=split_every,
                                  kind="init")
        computed = [
            m_step(st, c.mean(axis=0), c, cov, reg_covar)
            for st, c in zip(stats, centres, strict=True)
        ]
    elif init_params == "k-means++":
        sample = _sample(chunks, random_state, SAMPLE_ROWS)
        computed = []
        for _ in range(n_init):
            _, idx = kmeans_plusplus(sample, K, random_state=random_state)
            computed.append(_params_from_points(sample[idx], cov, reg_covar))
    elif init_params == "random_from_data":
        computed = []
        for _ in range(n_init):
            idx = random_state.choice(chunks.shape[0], size=K, replace=False)
            order = np.argsort(idx)
            rows = np.empty((K, chunks.shape[1]))
            rows[order] = chunks.take_rows(idx[order])
            computed.append(_params_from_points(rows, cov, reg_covar))
    elif init_params == "random":
        seeds = [int(random_state.randint(np.iinfo(np.int32).max)) for _ in range(n_init)]
        reference = chunks.take_rows(np.array([0]))[0]
        stats = chunks.map_reduce(random_resp_statistics, seeds, K, reference, cov,
                                  split_every=split_every, kind="init")
        ref_means = np.broadcast_to(reference, (K, chunks.shape[1]))
        computed = [m_step(st, reference, ref_means, cov, reg_covar)
                    for st in stats]
    else:  # pragma: no cover - validated by the estimator
        raise ValueError(f"unknown init_params {init_params!r}")

    return [
        _override(p, cov, weights_init, means_init, precisions_init) for p in computed
    ]


def _override(params: MixtureParams | None, covariance_type: str,
              weights_init: np.ndarray | None, means_init: np.ndarray | None,
              precisions_init: np.ndarray | None) -> MixtureParams:
    if params is None and (weights_init is None or means_init is None
                           or precisions_init is None):
        raise InvalidDataError("initial parameters are incomplete")  # pragma: no cover
    weights = params.weights if weights_init is None else weights_init
    means = params.means if means_init is None else means_init
    if precisions_init is None:
        prec_chol, covariances = params.precisions_cholesky, params.covariances
    else:
        prec_chol = precision_cholesky_from_precisions(precisions_init, covariance_type)
        covariances = covariances_from_precisions(precisions_init, covariance_type)
    return MixtureParams(covariance_type, np.asarray(weights, dtype=np.float64),
                         np.asarray(means, dtype=np.float64), prec_chol, covariances)
