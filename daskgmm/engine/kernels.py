"""Per-chunk kernels: plain NumPy functions of a row block and the current parameters.

Nothing here knows about Dask. Each ``*_statistics`` function takes one row block
``X`` (``n_b x D``), the index of its first row in the whole array, and the parameters,
and returns a dict of float64 arrays whose sum over blocks is the statistic of the whole
array (see :func:`add_statistics`). The orchestration layer (:mod:`daskgmm.engine.passes`) maps
them over chunks and tree-reduces the results.

Numerical care
--------------
* Every block is first centred on a reference point ``c0`` shipped with the parameters
  (the weighted mean of the current means), so a large common offset never enters a sum
  of squares.
* ``'full'`` scatter matrices are accumulated about each component's *own* reference mean
  (the previous iteration's means), so they stay accurate however far apart the
  components are; ``'tied'``, ``'diag'`` and ``'spherical'`` second moments are taken
  about ``c0``.
* Responsibilities come from a log-sum-exp.
* A block is processed in row tiles so the ``n x K x D`` working arrays stay bounded
  whatever the chunk size and ``K``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from daskgmm.engine.params import MixtureParams
from daskgmm.errors import InvalidDataError, NonFiniteDataError

Stats = dict[str, np.ndarray]

#: Working memory one tile may use for its ``n x K x D`` arrays (bytes). Small enough to
#: stay in cache: on the reference machine 4 MiB tiles ran the full-covariance E-step
#: 1.6x faster than 16 MiB tiles.
TILE_BYTES = 4 * 2**20
_LOG_2PI = math.log(2.0 * math.pi)


def tile_rows_for(n_components: int, n_features: int, tile_bytes: int = TILE_BYTES) -> int:
    """Rows per tile so that one ``n x K x D`` float64 array takes about ``tile_bytes``."""
    return max(64, tile_bytes // (8 * max(1, n_components) * max(1, n_features)))


def _tiles(n: int, rows: int) -> Iterator[slice]:
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


# --------------------------------------------------------------------------------------
# log-densities and responsibilities
# --------------------------------------------------------------------------------------
def _maha_full(Xc: np.ndarray, params: MixtureParams, dtype: np.dtype) -> np.ndarray:
    K, D = params.means.shape
    pc = params.precisions_cholesky.astype(dtype, copy=False)
    # One GEMM for every component's projection: X @ [L_1 ... L_K].
    stacked = pc.transpose(1, 0, 2).reshape(D, K * D)
    offsets = ((params.means - params.centre)[:, None, :] @ params.precisions_cholesky)
    Y = Xc @ stacked
    Y -= offsets.reshape(1, K * D).astype(dtype, copy=False)
    Y *= Y
    # Sum over each component's D columns as a matrix-vector product: numpy's reduction
    # over a short trailing axis is several times slower.
    return (Y.reshape(len(Xc) * K, D) @ np.ones(D, dtype=dtype)).reshape(len(Xc), K)


def _maha_tied(Xc: np.ndarray, params: MixtureParams, dtype: np.dtype) -> np.ndarray:
    L = params.precisions_cholesky
    Y = Xc @ L.astype(dtype, copy=False)
    B = ((params.means - params.centre) @ L).astype(dtype, copy=False)
    out = Y @ (-2.0 * B.T)
    out += np.einsum("nd,nd->n", Y, Y)[:, None]
    out += np.einsum("kd,kd->k", B, B)[None, :]
    return out


def _maha_diag(Xc: np.ndarray, params: MixtureParams, dtype: np.dtype) -> np.ndarray:
    prec = params.precisions_cholesky**2
    m = params.means - params.centre
    out = Xc @ (-2.0 * m * prec).T.astype(dtype, copy=False)
    out += (Xc * Xc) @ prec.T.astype(dtype, copy=False)
    out += (m * m * prec).sum(axis=1).astype(dtype, copy=False)[None, :]
    return out


def _maha_spherical(Xc: np.ndarray, params: MixtureParams, dtype: np.dtype) -> np.ndarray:
    prec = params.precisions_cholesky**2
    m = params.means - params.centre
    out = Xc @ (-2.0 * m * prec[:, None]).T.astype(dtype, copy=False)
    out += np.einsum("nd,nd->n", Xc, Xc)[:, None] * prec.astype(dtype, copy=False)[None, :]
    out += ((m * m).sum(axis=1) * prec).astype(dtype, copy=False)[None, :]
    return out


_MAHALANOBIS: dict[str, Callable[[np.ndarray, MixtureParams, np.dtype], np.ndarray]] = {
    "full": _maha_full,
    "tied": _maha_tied,
    "diag": _maha_diag,
    "spherical": _maha_spherical,
}


def weighted_log_prob(Xc: np.ndarray, params: MixtureParams) -> np.ndarray:
    """``log w_k + log N(x | mu_k, Sigma_k)`` for a block already centred on ``params.centre``.

    Parameters
    ----------
    Xc : ndarray of shape (n, D)
        ``X - params.centre``, float64 or float32 (the computation runs in that dtype).
    params : MixtureParams

    Returns
    -------
    ndarray of shape (n, K)
    """
    dtype = Xc.dtype
    maha = _MAHALANOBIS[params.covariance_type](Xc, params, dtype)
    const = (
        -0.5 * params.n_features * _LOG_2PI + params.log_det + params.log_weights
    ).astype(dtype, copy=False)
    maha *= -0.5
    maha += const
    return maha


def log_prob_resp(Xc: np.ndarray, params: MixtureParams) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample log-likelihood and responsibilities of a centred block.

    Returns
    -------
    log_prob_norm : ndarray of shape (n,)
        ``log p(x_i)`` (log-sum-exp over components).
    resp : ndarray of shape (n, K)
        Posterior probabilities of the components.
    """
    wlp = weighted_log_prob(Xc, params)
    top = _row_max(wlp)
    top[~np.isfinite(top)] = 0.0
    wlp -= top[:, None]
    np.exp(wlp, out=wlp)
    total = wlp @ np.ones(wlp.shape[1], dtype=wlp.dtype)
    with np.errstate(divide="ignore", invalid="ignore"):
        wlp /= total[:, None]
        log_norm = np.log(total, dtype=np.float64) + top
    return log_norm, wlp


def _row_max(a: np.ndarray) -> np.ndarray:
    """Maximum of each row; for few columns, column by column (numpy's reduction over a
    short trailing axis is slow)."""
    if a.shape[1] > 32:
        return a.max(axis=1)
    top = a[:, 0].copy()
    for k in range(1, a.shape[1]):
        np.maximum(top, a[:, k], out=top)
    return top


def _centred(X: np.ndarray, row_start: int, params: MixtureParams) -> np.ndarray:
    check_finite_block(X, row_start)
    return np.asarray(X, dtype=np.float64) - params.centre


def predict_block(X: np.ndarray, row_start: int, params: MixtureParams) -> np.ndarray:
    """Most probable component of each row (int64)."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return weighted_log_prob(_centred(X, row_start, params), params).argmax(axis=1)


def predict_proba_block(X: np.ndarray, row_start: int, params: MixtureParams) -> np.ndarray:
    """Responsibilities of each row (float64, rows sum to one)."""
    with np.errstate(under="ignore"):
        return log_prob_resp(_centred(X, row_start, params), params)[1]


def score_samples_block(X: np.ndarray, row_start: int, params: MixtureParams) -> np.ndarray:
    """Log-likelihood of each row under the mixture (float64)."""
    with np.errstate(under="ignore"):
        return log_prob_resp(_centred(X, row_start, params), params)[0]


# --------------------------------------------------------------------------------------
# sufficient statistics
# --------------------------------------------------------------------------------------
def resp_statistics(Xc: np.ndarray, resp: np.ndarray, ref_offsets: np.ndarray,
                    covariance_type: str) -> Stats:
    """Sufficient statistics of a centred block for given responsibilities.

    Parameters
    ----------
    Xc : ndarray of shape (n, D)
        The block minus the reference point ``c0``.
    resp : ndarray of shape (n, K)
        Responsibilities (each row sums to one).
    ref_offsets : ndarray of shape (K, D)
        ``c_k - c0``: each component's reference mean relative to ``c0``; used by
        ``'full'`` only.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}

    Returns
    -------
    dict
        ``nk`` (K,) soft counts; ``sx`` (K, D) ``sum_i r_ik (x_i - c0)``; ``sxx``:
        ``sum_i r_ik (x_i - c_k)(x_i - c_k)ᵀ`` (K, D, D) for ``'full'``,
        ``sum_i (x_i - c0)(x_i - c0)ᵀ`` (D, D) for ``'tied'`` and
        ``sum_i r_ik (x_i - c0)²`` (K, D) for ``'diag'`` and ``'spherical'``. float64.
    """
    f64 = np.float64
    nk = resp.sum(axis=0, dtype=f64)
    sx = (resp.T @ Xc).astype(f64, copy=False)
    if covariance_type == "full":
        # A[k] = sqrt(r_k) * (X - c_k); one batched GEMM gives every scatter matrix.
        A = Xc[None, :, :] - ref_offsets.astype(Xc.dtype, copy=False)[:, None, :]
        A *= np.sqrt(resp.T)[:, :, None]
        sxx = (A.transpose(0, 2, 1) @ A).astype(f64, copy=False)
    elif covariance_type == "tied":
        sxx = (Xc.T @ Xc).astype(f64, copy=False)
    else:
        sxx = (resp.T @ (Xc * Xc)).astype(f64, copy=False)
    return {"nk": nk, "sx": sx, "sxx": sxx}


def check_finite_block(X: np.ndarray, row_start: int) -> None:
    """Raise :class:`NonFiniteDataError` naming the chunk if ``X`` holds NaN or Inf.

    ``X`` is a whole chunk whose first row is row ``row_start`` of the array.
    """
    if np.isfinite(X).all():
        return
    bad_rows = ~np.isfinite(X).all(axis=1)
    first = row_start + int(np.argmax(bad_rows))
    raise NonFiniteDataError(
        f"the data contain NaN or infinite values: {int(bad_rows.sum())} row(s) in the chunk "
        f"of rows {row_start}..{row_start + len(X) - 1} (first at row {first}). Remove or "
        "impute them before fitting (e.g. X[da.isfinite(X).all(axis=1)])."
    )


def _check_log_likelihood(log_norm: np.ndarray, row_start: int, n: int) -> None:
    if np.isfinite(log_norm).all():
        return
    raise InvalidDataError(
        f"the log-likelihood of rows {row_start}..{row_start + n - 1} overflowed although the "
        "data are finite: the values are too large for the model's precisions. Scale the data "
        "(e.g. standardise each feature) or increase reg_covar."
    )


def estep_statistics(X: np.ndarray, row_start: int, params_list: Sequence[MixtureParams],
                     dtype: str = "float64", tile_rows: int | None = None) -> list[Stats]:
    """E-step of one row block for one or several mixtures (restarts share the read).

    Parameters
    ----------
    X : ndarray of shape (n, D)
        Raw row block.
    row_start : int
        Index of the block's first row in the whole array (for error messages).
    params_list : sequence of MixtureParams
        Current parameters of every restart still running.
    dtype : {'float64', 'float32'}
        Dtype of the products; statistics are accumulated in float64 either way.
    tile_rows : int, optional
        Rows per tile; by default chosen from ``K`` and ``D`` (see :func:`tile_rows_for`).

    Returns
    -------
    list of dict
        One dict per mixture: the keys of :func:`resp_statistics` plus ``ll`` (sum of the
        rows' log-likelihoods) and ``n`` (row count), as float64 arrays.
    """
    out = []
    compute = np.dtype(dtype)
    check_finite_block(X, row_start)
    for params in params_list:
        K, D = params.means.shape
        rows = tile_rows or tile_rows_for(K, D)
        ref_offsets = params.means - params.centre
        acc: Stats | None = None
        ll = 0.0
        for sl in _tiles(len(X), rows):
            tile = X[sl]
            # Centre in float64, then cast: a large offset must not meet float32 rounding.
            with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                Xc = (tile - params.centre).astype(compute, copy=False)
                log_norm, resp = log_prob_resp(Xc, params)
            _check_log_likelihood(log_norm, row_start + sl.start, len(tile))
            ll += float(log_norm.sum(dtype=np.float64))
            part = resp_statistics(Xc, resp, ref_offsets, params.covariance_type)
            acc = part if acc is None else add_statistics(acc, part)
        if acc is None:
            acc = _empty_stats(K, D, params.covariance_type)
        acc["ll"] = np.float64(ll)
        acc["n"] = np.float64(len(X))
        out.append(acc)
    return out


def _empty_stats(K: int, D: int, covariance_type: str) -> Stats:
    sxx_shape = {"full": (K, D, D), "tied": (D, D)}.get(covariance_type, (K, D))
    return {"nk": np.zeros(K), "sx": np.zeros((K, D)), "sxx": np.zeros(sxx_shape)}


def _nearest(Xc: np.ndarray, centres_c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest centre and the squared distance to it (centred inputs)."""
    d2 = Xc @ (-2.0 * centres_c.T)
    d2 += np.einsum("kd,kd->k", centres_c, centres_c)[None, :]
    labels = d2.argmin(axis=1)
    best = d2[np.arange(len(Xc)), labels] + np.einsum("nd,nd->n", Xc, Xc)
    return labels, np.maximum(best, 0.0)


def _one_hot(labels: np.ndarray, K: int) -> np.ndarray:
    resp = np.zeros((len(labels), K))
    resp[np.arange(len(labels)), labels] = 1.0
    return resp


def kmeans_statistics(X: np.ndarray, row_start: int, centres_list: Sequence[np.ndarray],
                      reference: np.ndarray) -> list[Stats]:
    """One Lloyd step's statistics for one or several sets of centres.

    Parameters
    ----------
    X : ndarray of shape (n, D)
    row_start : int
    centres_list : sequence of ndarray of shape (K, D)
    reference : ndarray of shape (D,)
        Point the data are centred on (same for every block).

    Returns
    -------
    list of dict
        ``counts`` (K,), ``sums`` (K, D) of ``x - reference``, ``inertia`` (scalar).
    """
    out = []
    check_finite_block(X, row_start)
    Xc = np.asarray(X, dtype=np.float64) - reference
    for centres in centres_list:
        K = len(centres)
        labels, d2 = _nearest(Xc, centres - reference)
        resp = _one_hot(labels, K)
        out.append({
            "counts": resp.sum(axis=0),
            "sums": resp.T @ Xc,
            "inertia": np.float64(d2.sum()),
        })
    return out


def _tiled_statistics(X: np.ndarray, reference: np.ndarray, ref_offsets: np.ndarray,
                      covariance_type: str,
                      responsibilities: Callable[[np.ndarray], np.ndarray]) -> Stats:
    """:func:`resp_statistics` of a block, tile by tile, with ``responsibilities(Xc)``
    giving each centred tile's responsibilities (bounded working memory)."""
    K, D = ref_offsets.shape
    stats = _empty_stats(K, D, covariance_type)
    for sl in _tiles(len(X), tile_rows_for(K, D)):
        Xc = np.asarray(X[sl], dtype=np.float64) - reference
        part = resp_statistics(Xc, responsibilities(Xc), ref_offsets, covariance_type)
        stats = add_statistics(stats, part)
    stats["n"] = np.float64(len(X))
    return stats


def hard_label_statistics(X: np.ndarray, row_start: int, centres_list: Sequence[np.ndarray],
                          covariance_type: str) -> list[Stats]:
    """Statistics of the hard assignment of every row to its nearest centre.

    Used to turn k-means centres into initial mixture parameters, as scikit-learn does
    with ``init_params='kmeans'``. Second moments are taken about the centres
    themselves (``c0`` is their mean).
    """
    check_finite_block(X, row_start)
    out = []
    for centres in centres_list:
        c0 = centres.mean(axis=0)
        offsets = centres - c0
        out.append(_tiled_statistics(
            X, c0, offsets, covariance_type,
            lambda Xc, offsets=offsets: _one_hot(_nearest(Xc, offsets)[0], len(offsets))))
    return out


def random_resp_statistics(X: np.ndarray, row_start: int, seeds: Sequence[int],
                           n_components: int, reference: np.ndarray,
                           covariance_type: str) -> list[Stats]:
    """Statistics of uniformly random, normalised responsibilities (``init_params='random'``).

    The random numbers of a block come from ``default_rng([seed, row_start])``, drawn
    tile after tile, so the result depends only on the seed, the data and the chunking.
    """
    check_finite_block(X, row_start)
    offsets = np.zeros((n_components, X.shape[1]))
    out = []
    for seed in seeds:
        rng = np.random.default_rng([seed, row_start])

        def uniform(Xc: np.ndarray, rng: np.random.Generator = rng) -> np.ndarray:
            resp = rng.uniform(size=(len(Xc), n_components))
            resp /= resp.sum(axis=1, keepdims=True)
            return resp

        out.append(_tiled_statistics(X, reference, offsets, covariance_type, uniform))
    return out


# --------------------------------------------------------------------------------------
# combining
# --------------------------------------------------------------------------------------
def add_statistics(*parts):
    """Sum statistics key-wise; lists (one entry per restart) are summed element-wise.

    This is the combine step of the tree reduction: it is associative, and the
    reduction tree fixes the order, so results are reproducible bit for bit.
    """
    first = parts[0]
    if isinstance(first, list):
        return [add_statistics(*items) for items in zip(*parts, strict=True)]
    return {key: sum((p[key] for p in parts[1:]), start=first[key]) for key in first}
