"""``'diag'``: every component has its own diagonal covariance (a variance per feature).

E-step. The tile is laid out once as ``Z = [x - c0, 1, (x - c0)²]ᵀ`` (``(2D + 1) x n``). One
GEMM with ``[p_k e_k, a_k - ½ Σ p_k e_k², -½ p_k]`` (``p_k`` the precisions, ``e_k = m_k - c0``,
``a_k`` the component's log-constant) gives every weighted log-density, and one GEMM
``(w r) Zᵀ`` gives the soft counts, the first moments and the second moments about ``c0``.
"""

from __future__ import annotations

import numpy as np

from daskgmm.engine.covariance._base import Batch, register
from daskgmm.engine.covariance._variances import Variances


class Diag(Variances):
    """Diagonal covariances, ``(K, D)``."""

    name = "diag"
    per_feature = True

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components, n_features)

    def n_parameters(self, n_components: int, n_features: int) -> int:
        return n_components * n_features

    def log_det_cholesky(self, precisions_cholesky: np.ndarray,
                         n_features: int) -> np.ndarray:
        return np.log(precisions_cholesky).sum(axis=1)

    # -- E-step ------------------------------------------------------------------------
    def operands(self, means_c: list[np.ndarray], precisions_cholesky: list[np.ndarray],
                 log_constants: list[np.ndarray], dtype: np.dtype) -> Batch:
        e = np.concatenate(means_c)
        prec = np.concatenate(precisions_cholesky) ** 2
        constant = np.concatenate(log_constants) - 0.5 * (e * e * prec).sum(axis=1)
        weights = np.concatenate([e * prec, constant[:, None], -0.5 * prec], axis=1)
        return Batch(self, tuple(len(x) for x in means_c),
                     {"W": np.ascontiguousarray(weights, dtype=dtype)})

    def row_bytes(self, n_components: int, n_features: int, itemsize: int) -> int:
        return (3 * n_features + 2 + n_components) * itemsize

    def zero_statistic(self, n_components: int, n_features: int) -> np.ndarray:
        return np.zeros((n_components, n_features))

    # -- M-step ------------------------------------------------------------------------
    def scatter(self, s2: np.ndarray, nk_raw: np.ndarray, sx: np.ndarray, means: np.ndarray,
                c0: np.ndarray, ref_means: np.ndarray, ref_chol: np.ndarray | None
                ) -> np.ndarray:
        e = means - c0
        return s2 - 2.0 * e * sx + nk_raw[:, None] * e * e

    def precision_trace(self, scatter: np.ndarray, precisions: np.ndarray,
                        n_features: int) -> np.ndarray:
        return (precisions * scatter).sum(axis=1)

    def expand(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values)[:, None]

    def outer(self, diff: np.ndarray) -> np.ndarray:
        return diff * diff


DIAG = register(Diag())
