"""What ``'diag'`` and ``'spherical'`` share: covariances that are variances.

Both hold positive variances (one per feature, or one per component), so their
Cholesky factors, precisions and conversions are element-wise, and their E-step uses one
layout: the tile ``Z = [x - c0, 1, squares]ᵀ``, whose last rows are the squared centred
features (``'diag'``, ``D`` rows) or their sum (``'spherical'``, one row). One GEMM of
``Z`` with the type's operands ``W`` gives every weighted log-density, and one GEMM
``(w r) Zᵀ`` the soft counts, the first moments and the second-order statistic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from daskgmm.engine.covariance._base import Batch, CovarianceType, degenerate_message
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


class Variances(CovarianceType):
    """Base of the covariance types whose covariances are variances.

    A subclass sets :attr:`per_feature` (a variance per feature, or one per component)
    and provides the rest of the contract (shapes, operands, M-step pieces).
    """

    #: A variance per feature (``'diag'``) rather than one per component.
    per_feature: bool

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

    def check_precisions(self, precisions: np.ndarray, n_components: int,
                         n_features: int) -> None:
        check_positive(precisions, self.name)

    def check_consistency(self, covariances: np.ndarray, precisions_cholesky: np.ndarray,
                          precisions: np.ndarray) -> str | None:
        return diagonal_consistency(covariances, precisions_cholesky, precisions)

    # -- E-step ------------------------------------------------------------------------
    def _square_rows(self, n_features: int) -> int:
        return n_features if self.per_feature else 1

    def project(self, xt: np.ndarray, batch: Batch, ws: Any) -> np.ndarray:
        W = batch.arrays["W"]
        D, n = len(xt) - 1, xt.shape[1]
        Z = ws.get(f"{self.name}.Z", (D + 1 + self._square_rows(D), n), xt.dtype)
        Z[:D + 1] = xt
        if self.per_feature:
            np.multiply(xt[:D], xt[:D], out=Z[D + 1:])
        else:
            np.einsum("dn,dn->n", xt[:D], xt[:D], out=Z[D + 1])
        wlp = ws.get("wlp", (len(W), n), xt.dtype)
        for part in batch.slices:
            np.matmul(W[part], Z, out=wlp[part])
        return wlp

    def accumulate(self, xt: np.ndarray, wr: np.ndarray, w: np.ndarray | None, batch: Batch,
                   ws: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        D, n = len(xt) - 1, xt.shape[1]
        rows = D + 1 + self._square_rows(D)
        Z = ws.get(f"{self.name}.Z", (rows, n), xt.dtype)
        moments = ws.get(f"{self.name}.moments", (len(wr), rows), xt.dtype)
        for part in batch.slices:
            np.matmul(wr[part], Z.T, out=moments[part])
        second = moments[:, D + 1:] if self.per_feature else moments[:, D + 1]
        return moments[:, D], moments[:, :D], second

    def split(self, s2: np.ndarray, sizes: tuple[int, ...]) -> list[np.ndarray]:
        return np.split(s2, np.cumsum(sizes)[:-1])

    def add_to_diagonal(self, cov: np.ndarray, value: float) -> np.ndarray:
        cov += value
        return cov
