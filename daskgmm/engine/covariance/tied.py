"""``'tied'``: all components of a mixture share one covariance matrix, ``(D, D)``.

E-step. The affine tile ``[x - c0, 1]`` is projected once per mixture on its shared precision
Cholesky factor ``L`` (extended by a 1 so that the ones survive; one batched GEMM for all the
mixtures of a batch) into ``[y, 1]``; the weighted log-densities are then
``[b_k, a_k - ½|b_k|²]·[y, 1] - ½|y|²`` with ``b_k = (m_k - c0) L`` and ``a_k`` the
log-constant, one GEMM per mixture. The second-order statistic,
``sum_i w_i (x_i - c0)(x_i - c0)ᵀ``, does not depend on the responsibilities: one GEMM per tile
serves every mixture of the batch.
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
                 log_constants: list[np.ndarray], dtype: np.dtype) -> Batch:
        D = len(precisions_cholesky[0])
        LT = np.zeros((len(precisions_cholesky), D + 1, D + 1))
        LT[:, :D, :D] = np.transpose(precisions_cholesky, (0, 2, 1))
        LT[:, D, D] = 1.0
        B = []
        for m, pc, a in zip(means_c, precisions_cholesky, log_constants, strict=True):
            b = m @ pc
            B.append(np.concatenate([b, (a - 0.5 * (b * b).sum(axis=1))[:, None]], axis=1))
        # The candidates of a batch have the same number of components: one (C, K, D + 1)
        # array.
        return Batch(self, tuple(len(m) for m in means_c),
                     {"LT": np.ascontiguousarray(LT, dtype=dtype),
                      "B": np.ascontiguousarray(np.stack(B), dtype=dtype)})

    def row_bytes(self, n_components: int, n_features: int, itemsize: int) -> int:
        return (3 * n_features + 3 + n_components) * itemsize

    def project(self, xt: np.ndarray, batch: Batch, ws: Any) -> np.ndarray:
        LT = batch.arrays["LT"]
        D, n = len(xt) - 1, xt.shape[1]
        Y = ws.get("tied.Y", (len(LT), D + 1, n), xt.dtype)
        np.matmul(LT, xt, out=Y)
        half_norms = ws.get("tied.norms", (len(LT), n), xt.dtype)
        np.einsum("cdn,cdn->cn", Y[:, :D], Y[:, :D], out=half_norms)
        half_norms *= 0.5
        wlp = ws.get("wlp", (batch.n_components, n), xt.dtype)
        for c, part in enumerate(batch.slices):
            np.matmul(batch.arrays["B"][c], Y[c], out=wlp[part])
            wlp[part] -= half_norms[c]
        return wlp

    def accumulate(self, xt: np.ndarray, wr: np.ndarray, w: np.ndarray | None, batch: Batch,
                   ws: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        D, n = len(xt) - 1, xt.shape[1]
        nk, sx = self.first_moments(xt, wr, batch, ws)
        xc = xt[:D]
        weighted = xc
        if w is not None:
            weighted = ws.get("tied.weighted", (D, n), xt.dtype)
            np.multiply(xc, w, out=weighted)
        T = ws.get("tied.T", (D, D), xt.dtype)
        np.matmul(weighted, xc.T, out=T)
        return nk, sx, T

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
