"""``'spherical'``: every component has a single variance, ``(K,)``.

E-step. The tile is laid out once as ``Z = [x - c0, 1, |x - c0|²]ᵀ`` (``(D + 2) x n``); one GEMM
with ``[p_k e_k, a_k - ½ p_k |e_k|², -½ p_k]`` (``e_k = m_k - c0``, ``a_k`` the log-constant)
gives every weighted log-density, and one GEMM ``(w r) Zᵀ`` the soft counts, the first
moments and the second-order statistic ``sum_i w_i r_ik |x_i - c0|²``.
"""

from __future__ import annotations

import numpy as np

from daskgmm.engine.covariance._base import Batch, register
from daskgmm.engine.covariance._variances import Variances


class Spherical(Variances):
    """One variance per component, ``(K,)``."""

    name = "spherical"
    per_feature = False

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components,)

    def n_parameters(self, n_components: int, n_features: int) -> int:
        return n_components

    def log_det_cholesky(self, precisions_cholesky: np.ndarray,
                         n_features: int) -> np.ndarray:
        return n_features * np.log(precisions_cholesky)

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

    def expand(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values)

    def outer(self, diff: np.ndarray) -> np.ndarray:
        return np.mean(diff * diff, axis=1)


SPHERICAL = register(Spherical())
