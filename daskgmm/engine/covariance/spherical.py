"""``'spherical'``: every component has a single variance, ``(K,)``.

E-step. The tile is laid out once as ``Z = [x - c0, 1, |x - c0|²]ᵀ`` (``(D + 2) x n``); one GEMM
with ``[p_k e_k, a_k - ½ p_k |e_k|², -½ p_k]`` (``e_k = m_k - c0``, ``a_k`` the log-constant)
gives every weighted log-density, and one GEMM ``(w r) Zᵀ`` the soft counts, the first
moments and the second-order statistic ``sum_i w_i r_ik |x_i - c0|²``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from daskgmm.engine.covariance._base import Batch, CovarianceType, register
from daskgmm.engine.covariance.diag import (
    check_positive,
    diagonal_consistency,
    positive_square_roots,
)


class Spherical(CovarianceType):
    """One variance per component, ``(K,)``."""

    name = "spherical"

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components,)

    def n_parameters(self, n_components: int, n_features: int) -> int:
        return n_components

    # -- parameters --------------------------------------------------------------------
    def cholesky(self, covariances: np.ndarray) -> np.ndarray:
        return positive_square_roots(covariances)

    def precisions_cholesky_from_cholesky(self, chol: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore", divide="ignore"):
            return 1.0 / chol

    def precisions(self, precisions_cholesky: np.ndarray) -> np.ndarray:
        return precisions_cholesky**2

    def precisions_cholesky_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return np.sqrt(np.asarray(precisions, dtype=np.float64))

    def covariances_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return 1.0 / np.asarray(precisions, dtype=np.float64)

    def covariance_cholesky_from_precisions_cholesky(self, prec_chol: np.ndarray
                                                     ) -> np.ndarray:
        return 1.0 / prec_chol

    def log_det_cholesky(self, precisions_cholesky: np.ndarray,
                         n_features: int) -> np.ndarray:
        return n_features * np.log(precisions_cholesky)

    def check_precisions(self, precisions: np.ndarray, n_components: int,
                         n_features: int) -> None:
        check_positive(precisions, self.name)

    def check_consistency(self, covariances: np.ndarray, precisions_cholesky: np.ndarray,
                          precisions: np.ndarray) -> str | None:
        return diagonal_consistency(covariances, precisions_cholesky, precisions)

    # -- E-step ------------------------------------------------------------------------
    def operands(self, means_c: list[np.ndarray], precisions_cholesky: list[np.ndarray],
                 log_constants: list[np.ndarray], dtype: np.dtype) -> Batch:
        e = np.concatenate(means_c)
        prec = np.concatenate(precisions_cholesky) ** 2
        constant = np.concatenate(log_constants) - 0.5 * (e * e).sum(axis=1) * prec
        weights = np.concatenate([e * prec[:, None], constant[:, None], -0.5 * prec[:, None]],
                                 axis=1)
        return Batch(self, tuple(len(x) for x in means_c),
                     {"W": np.ascontiguousarray(weights, dtype=dtype)})

    def row_bytes(self, n_components: int, n_features: int, itemsize: int) -> int:
        return (2 * n_features + 3 + n_components) * itemsize

    def project(self, xt: np.ndarray, batch: Batch, ws: Any) -> np.ndarray:
        W = batch.arrays["W"]
        D, n = len(xt) - 1, xt.shape[1]
        Z = ws.get("spherical.Z", (D + 2, n), xt.dtype)
        Z[:D + 1] = xt
        np.einsum("dn,dn->n", xt[:D], xt[:D], out=Z[D + 1])
        wlp = ws.get("wlp", (len(W), n), xt.dtype)
        for part in batch.slices:
            np.matmul(W[part], Z, out=wlp[part])
        return wlp

    def accumulate(self, xt: np.ndarray, wr: np.ndarray, w: np.ndarray | None, batch: Batch,
                   ws: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        D, n = len(xt) - 1, xt.shape[1]
        Z = ws.get("spherical.Z", (D + 2, n), xt.dtype)
        moments = ws.get("spherical.moments", (len(wr), D + 2), xt.dtype)
        for part in batch.slices:
            np.matmul(wr[part], Z.T, out=moments[part])
        return moments[:, D], moments[:, :D], moments[:, D + 1]

    def split(self, s2: np.ndarray, sizes: tuple[int, ...]) -> list[np.ndarray]:
        return np.split(s2, np.cumsum(sizes)[:-1])

    def zero_statistic(self, n_components: int, n_features: int) -> np.ndarray:
        return np.zeros(n_components)

    # -- M-step ------------------------------------------------------------------------
    def scatter(self, s2: np.ndarray, nk_raw: np.ndarray, sx: np.ndarray, means: np.ndarray,
                c0: np.ndarray, ref_means: np.ndarray, ref_chol: np.ndarray | None
                ) -> np.ndarray:
        # The mean over features of the diagonal scatter.
        e = means - c0
        total = s2 - 2.0 * np.einsum("kd,kd->k", e, sx) + nk_raw * np.einsum("kd,kd->k", e, e)
        return total / means.shape[1]

    def precision_trace(self, scatter: np.ndarray, precisions: np.ndarray,
                        n_features: int) -> np.ndarray:
        # The spherical scatter is the mean over the features of the diagonal one.
        return precisions * scatter * n_features

    def add_to_diagonal(self, cov: np.ndarray, value: float) -> np.ndarray:
        cov += value
        return cov

    def expand(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values)

    def outer(self, diff: np.ndarray) -> np.ndarray:
        return np.mean(diff * diff, axis=1)


SPHERICAL = register(Spherical())
