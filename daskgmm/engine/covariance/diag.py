"""``'diag'``: every component has its own diagonal covariance (a variance per feature).

E-step. The tile is laid out once as ``Z = [x - c0, 1, (x - c0)²]ᵀ`` (``(2D + 1) x n``). One
GEMM with ``[p_k e_k, a_k - ½ Σ p_k e_k², -½ p_k]`` (``p_k`` the precisions, ``e_k = m_k - c0``,
``a_k`` the component's log-constant) gives every weighted log-density, and one GEMM
``(w r) Zᵀ`` gives the soft counts, the first moments and the second moments about ``c0``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from daskgmm.engine.covariance._base import (
    Batch,
    CovarianceType,
    degenerate_message,
    register,
)
from daskgmm.errors import DegenerateComponentError, InvalidParameterError


def positive_square_roots(values: np.ndarray) -> np.ndarray:
    """Square roots of variances; names the components with a non-positive one."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~(values > 0.0)
    if bad.any():
        rows = bad.reshape(len(bad), -1).any(axis=1) if bad.ndim > 1 else bad
        raise DegenerateComponentError(degenerate_message(
            [int(k) for k in np.nonzero(rows)[0]], "have a zero or negative variance"))
    return np.sqrt(values)


def check_positive(precisions: np.ndarray, name: str) -> None:
    """scikit-learn's check of user-given diagonal/spherical precisions."""
    if np.any(np.less_equal(precisions, 0.0)):
        raise InvalidParameterError(f"'{name} precision' should be positive")


def diagonal_consistency(cov: np.ndarray, prec_chol: np.ndarray, prec: np.ndarray
                         ) -> str | None:
    """Why diagonal/spherical (variances, precision factors, precisions) disagree."""
    if not (cov > 0.0).all():
        return "covariances_ has zero or negative variances"
    if not (prec_chol > 0.0).all():
        return "precisions_cholesky_ has zero or negative entries"
    if not np.allclose(prec_chol**2, prec, rtol=1e-6, atol=0.0):
        return "precisions_ do not equal the squares of precisions_cholesky_"
    if not np.allclose(cov * prec, 1.0, rtol=0.0, atol=1e-6):
        return "precisions_ are not the inverses of covariances_"
    return None


class Diag(CovarianceType):
    """Diagonal covariances, ``(K, D)``."""

    name = "diag"

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components, n_features)

    def n_parameters(self, n_components: int, n_features: int) -> int:
        return n_components * n_features

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
        return np.log(precisions_cholesky).sum(axis=1)

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
        constant = np.concatenate(log_constants) - 0.5 * (e * e * prec).sum(axis=1)
        weights = np.concatenate([e * prec, constant[:, None], -0.5 * prec], axis=1)
        return Batch(self, tuple(len(x) for x in means_c),
                     {"W": np.ascontiguousarray(weights, dtype=dtype)})

    def row_bytes(self, n_components: int, n_features: int, itemsize: int) -> int:
        return (3 * n_features + 2 + n_components) * itemsize

    def project(self, xt: np.ndarray, batch: Batch, ws: Any) -> np.ndarray:
        W = batch.arrays["W"]
        D, n = len(xt) - 1, xt.shape[1]
        Z = ws.get("diag.Z", (2 * D + 1, n), xt.dtype)
        Z[:D + 1] = xt
        np.multiply(xt[:D], xt[:D], out=Z[D + 1:])
        wlp = ws.get("wlp", (len(W), n), xt.dtype)
        for part in batch.slices:
            np.matmul(W[part], Z, out=wlp[part])
        return wlp

    def accumulate(self, xt: np.ndarray, wr: np.ndarray, w: np.ndarray | None, batch: Batch,
                   ws: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        D, n = len(xt) - 1, xt.shape[1]
        Z = ws.get("diag.Z", (2 * D + 1, n), xt.dtype)
        moments = ws.get("diag.moments", (len(wr), 2 * D + 1), xt.dtype)
        for part in batch.slices:
            np.matmul(wr[part], Z.T, out=moments[part])
        return moments[:, D], moments[:, :D], moments[:, D + 1:]

    def split(self, s2: np.ndarray, sizes: tuple[int, ...]) -> list[np.ndarray]:
        return np.split(s2, np.cumsum(sizes)[:-1])

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

    def add_to_diagonal(self, cov: np.ndarray, value: float) -> np.ndarray:
        cov += value
        return cov

    def expand(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values)[:, None]

    def outer(self, diff: np.ndarray) -> np.ndarray:
        return diff * diff


DIAG = register(Diag())
