"""``'full'``: every component has its own covariance matrix.

E-step. One batched GEMM projects the affine tile ``[x - c0, 1]`` on every component's
extended factor ``[L_kᵀ, -L_kᵀ (m_k - c0)]`` at once, giving the whitened rows
``Y_k = L_kᵀ (x - m_k)`` laid out ``(K, D, n)`` (the sample axis innermost, so that the
element-wise passes run along contiguous rows); the squared Mahalanobis distances are the
column sums of ``Y_k²``. The scatter statistic reuses those whitened rows: after scaling
``Y_k`` by ``sqrt(w r_k)`` one more batched GEMM gives
``M_k = sum_i w_i r_ik y_ik y_ikᵀ = L_kᵀ S_k L_k``, where ``S_k`` is the scatter about the
previous mean ``m_k``. No centred ``n x K x D`` copy of the data is built, and the
accumulation is well conditioned (``M_k`` is close to ``n_k I``).

M-step. ``S_k = C_k M_k C_kᵀ`` with ``C_k = L_k⁻ᵀ`` the Cholesky factor of the previous
covariance (kept by the M-step that produced ``L_k``), then shifted from the previous to
the new mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.linalg import solve_triangular
from scipy.linalg.lapack import dtrtri as _trtri

from daskgmm.engine.covariance._base import (
    Batch,
    CovarianceType,
    degenerate_message,
    register,
)
from daskgmm.errors import DegenerateComponentError, InvalidParameterError

#: ``Y Yᵀ`` of one buffer goes to a symmetric rank-k update, which halves the flops; with
#: few features in float32 this environment's symmetric update is slower than a general
#: product, so below this many features a float32 tile scales a copy instead
#: (``(Y r) Yᵀ``, measured: 1.5x faster at D=16, 25% slower at D=64).
SCALED_COPY_BELOW = 32


def is_positive_definite(matrix: np.ndarray) -> bool:
    """Whether ``matrix`` has a Cholesky factor (is symmetric positive definite)."""
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return False
    return True


def lower_cholesky(stack: np.ndarray, what: str) -> np.ndarray:
    """Lower Cholesky factors of a stack of matrices; names the failing ones."""
    try:
        return np.linalg.cholesky(stack)
    except np.linalg.LinAlgError:
        bad = [k for k in range(len(stack)) if not is_positive_definite(stack[k])]
        raise DegenerateComponentError(degenerate_message(bad or [0], what)) from None


def inverse_transpose_lower(chol: np.ndarray) -> np.ndarray:
    """``C⁻ᵀ`` (upper triangular, exact zeros below the diagonal) of a stack of lower
    triangular ``C``: LAPACK's triangular inverse of each (scikit-learn solves
    ``C X = I``; the two agree to rounding). One ``trtri`` per component takes about a
    microsecond at D=4, where SciPy's batched ``solve_triangular`` took 50 µs to 10 ms
    (its broadcasting, and BLAS threads woken for 4 x 4 solves on a busy machine): most
    of the M-step of a small fit."""
    chol = np.asarray(chol, dtype=np.float64)
    out = np.empty(chol.shape, dtype=np.float64)
    for k, factor in enumerate(chol):
        inverse, info = _trtri(factor, lower=1, overwrite_c=0)
        if info != 0:  # a zero on the diagonal: the solves give the infinities
            eye = np.broadcast_to(np.eye(chol.shape[-1]), chol.shape)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                inverse = solve_triangular(chol, eye, lower=True, check_finite=False)
            return np.ascontiguousarray(inverse.transpose(0, 2, 1))
        out[k] = inverse.T
    return out


def flipped_cholesky(prec: np.ndarray) -> np.ndarray:
    """Upper triangular ``L`` with ``L Lᵀ = prec`` (scikit-learn's flipped Cholesky)."""
    flipped = np.linalg.cholesky(prec[..., ::-1, ::-1])
    return np.ascontiguousarray(flipped[..., ::-1, ::-1])


def check_symmetric_positive_definite(prec: np.ndarray, name: str) -> None:
    """scikit-learn's check of user-given precision matrices."""
    for matrix in prec.reshape(-1, *prec.shape[-2:]):
        if not (np.allclose(matrix, matrix.T) and np.all(np.linalg.eigvalsh(matrix) > 0.0)):
            raise InvalidParameterError(f"'{name} precision' should be symmetric, "
                                        "positive-definite")


def consistency_problem(cov: np.ndarray, prec_chol: np.ndarray, prec: np.ndarray
                        ) -> str | None:
    """Why a stack of (covariance, precision factor, precision) is not one model."""
    if not np.allclose(cov, cov.swapaxes(-1, -2), rtol=1e-10, atol=0.0):
        return "covariances_ are not symmetric"
    if not all(is_positive_definite(c) for c in cov.reshape(-1, *cov.shape[-2:])):
        return "covariances_ are not positive definite"
    if np.any(np.tril(prec_chol, -1)):
        return "precisions_cholesky_ are not upper triangular"
    if np.any(np.diagonal(prec_chol, axis1=-2, axis2=-1) <= 0.0):
        return "precisions_cholesky_ have a non-positive diagonal"
    rebuilt = prec_chol @ prec_chol.swapaxes(-1, -2)
    if not np.allclose(rebuilt, prec, rtol=1e-6, atol=1e-12 * np.abs(prec).max()):
        return "precisions_ do not equal precisions_cholesky_ times its transpose"
    eye = np.broadcast_to(np.eye(cov.shape[-1]), cov.shape)
    if not np.allclose(cov @ prec, eye, rtol=0.0, atol=1e-6):
        return "precisions_ are not the inverses of covariances_"
    return None


class Full(CovarianceType):
    """Full covariance matrices, ``(K, D, D)``."""

    name = "full"

    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        return (n_components, n_features, n_features)

    def n_parameters(self, n_components: int, n_features: int) -> int:
        return n_components * n_features * (n_features + 1) // 2

    # -- parameters --------------------------------------------------------------------
    def cholesky(self, covariances: np.ndarray) -> np.ndarray:
        return lower_cholesky(
            np.asarray(covariances, dtype=np.float64),
            "have an ill-defined empirical covariance (not positive definite, e.g. from "
            "collapsed or duplicated samples)")

    def precisions_cholesky_from_cholesky(self, chol: np.ndarray) -> np.ndarray:
        return inverse_transpose_lower(chol)

    def precisions(self, precisions_cholesky: np.ndarray) -> np.ndarray:
        return precisions_cholesky @ precisions_cholesky.transpose(0, 2, 1)

    def precisions_cholesky_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return flipped_cholesky(np.asarray(precisions, dtype=np.float64))

    def covariances_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        return np.linalg.inv(np.asarray(precisions, dtype=np.float64))

    def covariance_cholesky_from_precisions_cholesky(self, prec_chol: np.ndarray
                                                     ) -> np.ndarray:
        # L is upper triangular, so C = L⁻ᵀ is lower triangular.
        eye = np.broadcast_to(np.eye(prec_chol.shape[-1]), prec_chol.shape)
        inverse = solve_triangular(prec_chol, eye, lower=False, check_finite=False)
        return np.ascontiguousarray(inverse.transpose(0, 2, 1))

    def log_det_cholesky(self, precisions_cholesky: np.ndarray,
                         n_features: int) -> np.ndarray:
        return np.log(np.diagonal(precisions_cholesky, axis1=1, axis2=2)).sum(axis=1)

    def check_precisions(self, precisions: np.ndarray, n_components: int,
                         n_features: int) -> None:
        check_symmetric_positive_definite(precisions, self.name)

    def check_consistency(self, covariances: np.ndarray, precisions_cholesky: np.ndarray,
                          precisions: np.ndarray) -> str | None:
        return consistency_problem(covariances, precisions_cholesky, precisions)

    # -- E-step ------------------------------------------------------------------------
    def operands(self, means_c: list[np.ndarray], precisions_cholesky: list[np.ndarray],
                 log_constants: list[np.ndarray], dtype: np.dtype) -> Batch:
        L = np.concatenate(precisions_cholesky)
        offsets = np.einsum("kd,kde->ke", np.concatenate(means_c), L)
        factors = np.concatenate([L.transpose(0, 2, 1), -offsets[:, :, None]], axis=2)
        return Batch(self, tuple(len(m) for m in means_c), {
            "LT": np.ascontiguousarray(factors, dtype=dtype),
            "constant": np.ascontiguousarray(np.concatenate(log_constants)[:, None],
                                             dtype=dtype)})

    def row_bytes(self, n_components: int, n_features: int, itemsize: int) -> int:
        scaled = n_features < SCALED_COPY_BELOW and itemsize == 4
        return (n_components * (n_features * (2 if scaled else 1) + 1)
                + n_features + 1) * itemsize

    def project(self, xt: np.ndarray, batch: Batch, ws: Any) -> np.ndarray:
        LT = batch.arrays["LT"]
        K, D, n = len(LT), len(xt) - 1, xt.shape[1]
        Y = ws.get("full.Y", (K, D, n), xt.dtype)
        np.matmul(LT, xt, out=Y)
        wlp = ws.get("wlp", (K, n), xt.dtype)
        np.einsum("kdn,kdn->kn", Y, Y, out=wlp)
        wlp *= -0.5
        wlp += batch.arrays["constant"]
        return wlp

    def accumulate(self, xt: np.ndarray, wr: np.ndarray, w: np.ndarray | None, batch: Batch,
                   ws: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        K, D, n = len(wr), len(xt) - 1, xt.shape[1]
        nk, sx = self.first_moments(xt, wr, batch, ws)
        Y = ws.get("full.Y", (K, D, n), xt.dtype)
        S = ws.get("full.S", (K, D, D), xt.dtype)
        if xt.dtype == np.float32 and D < SCALED_COPY_BELOW:
            scaled = ws.get("full.scaled", (K, D, n), xt.dtype)
            np.multiply(Y, wr[:, None, :], out=scaled)
            np.matmul(scaled, Y.transpose(0, 2, 1), out=S)
        else:
            np.sqrt(wr, out=wr)
            Y *= wr[:, None, :]
            np.matmul(Y, Y.transpose(0, 2, 1), out=S)
        return nk, sx, S

    def split(self, s2: np.ndarray, sizes: tuple[int, ...]) -> list[np.ndarray]:
        return np.split(s2, np.cumsum(sizes)[:-1])

    def zero_statistic(self, n_components: int, n_features: int) -> np.ndarray:
        return np.zeros((n_components, n_features, n_features))

    # -- M-step ------------------------------------------------------------------------
    def scatter(self, s2: np.ndarray, nk_raw: np.ndarray, sx: np.ndarray, means: np.ndarray,
                c0: np.ndarray, ref_means: np.ndarray, ref_chol: np.ndarray | None
                ) -> np.ndarray:
        about_ref = s2 if ref_chol is None else ref_chol @ s2 @ ref_chol.transpose(0, 2, 1)
        s_ref = sx - nk_raw[:, None] * (ref_means - c0)
        e = means - ref_means
        cross = s_ref[:, :, None] * e[:, None, :]
        out = about_ref - cross - cross.transpose(0, 2, 1)
        out += nk_raw[:, None, None] * e[:, :, None] * e[:, None, :]
        return out

    def canonical(self, s2: np.ndarray, nk_raw: np.ndarray, sx: np.ndarray,
                  centre: np.ndarray, ref_means: np.ndarray, ref_chol: np.ndarray | None
                  ) -> np.ndarray:
        about_ref = s2 if ref_chol is None else ref_chol @ s2 @ ref_chol.transpose(0, 2, 1)
        e = ref_means - centre
        s_ref = sx - nk_raw[:, None] * e
        cross = s_ref[:, :, None] * e[:, None, :]
        out = about_ref + cross + cross.transpose(0, 2, 1)
        out += nk_raw[:, None, None] * e[:, :, None] * e[:, None, :]
        return out

    def precision_trace(self, scatter: np.ndarray, precisions: np.ndarray,
                        n_features: int) -> np.ndarray:
        return np.einsum("kij,kij->k", precisions, scatter)

    def add_to_diagonal(self, cov: np.ndarray, value: float) -> np.ndarray:
        idx = np.arange(cov.shape[-1])
        cov[..., idx, idx] += value
        return cov

    def expand(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values)[:, None, None]

    def outer(self, diff: np.ndarray) -> np.ndarray:
        return diff[:, :, None] * diff[:, None, :]


FULL = register(Full())
