"""``'tied'``: all components of a mixture share one covariance matrix, ``(D, D)``.

E-step. The tile is projected once per mixture on the shared precision Cholesky factor
``L`` (one batched GEMM for all the mixtures of a batch); the distances to every mean are
then ``|y|² - 2 y·b_k + |b_k|²`` with ``b_k = (m_k - c0) L``, one GEMM per mixture. The
second-order statistic, ``sum_i w_i (x_i - c0)(x_i - c0)ᵀ``, does not depend on the
responsibilities: one GEMM per tile serves every mixture of the batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from daskgmm.engine.covariance._base import Batch, CovarianceType, register
from daskgmm.engine.covariance.full import (
    FULL,
    check_symmetric_positive_definite,
    consistency_problem,
    flipped_cholesky,
    inverse_transpose_lower,
    lower_cholesky,
)


class Tied(CovarianceType):
    """One covariance matrix shared by the components, ``(D, D)``."""

    name = "tied"
    per_component_shape = False

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_features, n_features)

    def n_parameters(self, n_components: int, n_features: int) -> int:
        return n_features * (n_features + 1) // 2

    # -- parameters --------------------------------------------------------------------
    def cholesky(self, covariances: np.ndarray) -> np.ndarray:
        cov = np.asarray(covariances, dtype=np.float64)
        return lower_cholesky(cov[None], "share a tied covariance that is not positive "
                                         "definite")[0]

    def precisions_cholesky_from_cholesky(self, chol: np.ndarray) -> np.ndarray:
        return inverse_transpose_lower(chol[None])[0]

    def precisions(self, precisions_cholesky: np.ndarray) -> np.ndarray:
        return precisions_cholesky @ precisions_cholesky.T

    def precisions_cholesky_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return flipped_cholesky(np.asarray(precisions, dtype=np.float64))

    def covariances_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return np.linalg.inv(np.asarray(precisions, dtype=np.float64))

    def covariance_cholesky_from_precisions_cholesky(self, prec_chol: np.ndarray
                                                     ) -> np.ndarray:
        return FULL.covariance_cholesky_from_precisions_cholesky(prec_chol[None])[0]

    def log_det_cholesky(self, precisions_cholesky: np.ndarray, n_features: int) -> float:
        return float(np.log(np.diagonal(precisions_cholesky)).sum())

    def check_precisions(self, precisions: np.ndarray, n_components: int,
                         n_features: int) -> None:
        check_symmetric_positive_definite(precisions, self.name)

    def check_consistency(self, covariances: np.ndarray, precisions_cholesky: np.ndarray,
                          precisions: np.ndarray) -> str | None:
        return consistency_problem(covariances[None], precisions_cholesky[None],
                                   precisions[None])

    # -- E-step ------------------------------------------------------------------------
    def operands(self, means_c: list[np.ndarray], precisions_cholesky: list[np.ndarray],
                 dtype: np.dtype) -> Batch:
        L = np.stack(precisions_cholesky)
        b = [m @ pc for m, pc in zip(means_c, precisions_cholesky, strict=True)]
        return Batch(self, tuple(len(m) for m in means_c), {
            "L": np.ascontiguousarray(L, dtype=dtype),
            "B": [np.ascontiguousarray(-2.0 * x, dtype=dtype) for x in b],
            "constant": [np.ascontiguousarray((x * x).sum(axis=1)[:, None], dtype=dtype)
                         for x in b],
        })

    def row_bytes(self, n_components: int, n_features: int, itemsize: int) -> int:
        return (2 * n_features + 2 * n_components + 1) * itemsize

    def project(self, xc: np.ndarray, batch: Batch, ws: Any) -> np.ndarray:
        L = batch.arrays["L"]
        n, D = xc.shape
        Y = ws.get("tied.Y", (len(L), n, D), xc.dtype)
        np.matmul(xc[None], L, out=Y)
        norms = ws.get("tied.norms", (len(L), n), xc.dtype)
        np.einsum("cnd,cnd->cn", Y, Y, out=norms)
        maha = ws.get("maha", (batch.n_components, n), xc.dtype)
        for c, part in enumerate(batch.slices):
            np.matmul(batch.arrays["B"][c], Y[c].T, out=maha[part])
            maha[part] += norms[c]
            maha[part] += batch.arrays["constant"][c]
        return maha

    def accumulate(self, xc: np.ndarray, wr: np.ndarray, w: np.ndarray | None, batch: Batch,
                   ws: Any) -> tuple[np.ndarray, np.ndarray]:
        n, D = xc.shape
        sx = ws.get("sx", (len(wr), D), xc.dtype)
        for part in batch.slices:
            np.matmul(wr[part], xc, out=sx[part])
        weighted = xc
        if w is not None:
            weighted = ws.get("tied.weighted", (n, D), xc.dtype)
            np.multiply(xc, w[:, None], out=weighted)
        T = ws.get("tied.T", (D, D), xc.dtype)
        np.matmul(weighted.T, xc, out=T)
        return sx, T

    def split(self, s2: np.ndarray, sizes: tuple[int, ...]) -> list[np.ndarray]:
        return [s2] * len(sizes)

    def zero_statistic(self, n_components: int, n_features: int) -> np.ndarray:
        return np.zeros((n_features, n_features))

    # -- M-step ------------------------------------------------------------------------
    def scatter(self, s2: np.ndarray, nk_raw: np.ndarray, sx: np.ndarray, means: np.ndarray,
                c0: np.ndarray, ref_means: np.ndarray, ref_chol: np.ndarray | None
                ) -> np.ndarray:
        e = means - c0
        cross = sx.T @ e
        return s2 - cross - cross.T + (nk_raw[:, None] * e).T @ e

    def precision_trace(self, scatter: np.ndarray, precisions: np.ndarray,
                        n_features: int) -> float:
        return float(np.einsum("ij,ij->", precisions, scatter))

    def empirical_covariances(self, scatter: np.ndarray, nk: np.ndarray,
                              reg_covar: float) -> np.ndarray:
        return self.add_to_diagonal(scatter / nk.sum(), reg_covar)

    def add_to_diagonal(self, cov: np.ndarray, value: float) -> np.ndarray:
        cov.flat[:: cov.shape[-1] + 1] += value
        return cov

    def expand(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values)[:, None, None]

    def pool(self, per_component: np.ndarray) -> np.ndarray:
        return per_component.mean(axis=0)

    def outer(self, diff: np.ndarray) -> np.ndarray:
        return diff[:, :, None] * diff[:, None, :]


TIED = register(Tied())
