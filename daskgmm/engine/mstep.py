"""The central M-step: from reduced sufficient statistics to new mixture parameters.

Plain NumPy, O(K·D³) work, run on the driver. The formulas match scikit-learn's
``_estimate_gaussian_parameters`` (including its ``10 * eps`` added to the soft counts
and ``reg_covar`` added to the diagonal) but start from statistics accumulated about
reference points (see :mod:`daskgmm.engine.kernels`).
"""

from __future__ import annotations

import numpy as np

from daskgmm.engine.params import MixtureParams
from daskgmm.errors import DegenerateComponentError

_EPS10 = 10 * np.finfo(np.float64).eps


def _degenerate_message(components: list[int], what: str) -> str:
    which = ", ".join(str(k) for k in components[:10])
    if len(components) > 10:
        which += ", ..."
    return (
        f"Fitting the mixture model failed because component(s) {which} {what}. "
        "Try fewer components (n_components), a larger reg_covar (e.g. 1e-4), or "
        "scaling the data."
    )


def precision_cholesky(covariances: np.ndarray, covariance_type: str) -> np.ndarray:
    """Cholesky factors of the precisions from covariances (scikit-learn's parameterisation).

    Raises
    ------
    DegenerateComponentError
        If a covariance is not positive definite; the message names the components.
    """
    cov = np.asarray(covariances, dtype=np.float64)
    if covariance_type in ("full", "tied"):
        stack = cov[None] if covariance_type == "tied" else cov
        try:
            chol = np.linalg.cholesky(stack)
        except np.linalg.LinAlgError:
            bad = [k for k in range(len(stack)) if not _is_positive_definite(stack[k])]
            what = ("have an ill-defined empirical covariance (not positive definite, "
                    "e.g. from collapsed or duplicated samples)")
            if covariance_type == "tied":
                what = "share a tied covariance that is not positive definite"
            raise DegenerateComponentError(_degenerate_message(bad or [0], what)) from None
        eye = np.broadcast_to(np.eye(cov.shape[-1]), stack.shape)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            prec_chol = np.linalg.solve(chol, eye).transpose(0, 2, 1)
            finite = np.isfinite(prec_chol @ prec_chol.transpose(0, 2, 1)).all(axis=(1, 2))
        if not finite.all():
            raise DegenerateComponentError(_degenerate_message(
                [int(k) for k in np.nonzero(~finite)[0]],
                "have a covariance too small to invert (its precision overflows)"))
        return prec_chol[0] if covariance_type == "tied" else prec_chol
    if np.any(~(cov > 0.0)):
        bad = sorted({int(k) for k in np.nonzero(~(cov > 0.0))[0]})
        raise DegenerateComponentError(
            _degenerate_message(bad, "have a zero or negative variance")
        )
    with np.errstate(over="ignore", divide="ignore"):
        prec_chol = 1.0 / np.sqrt(cov)
        finite = np.isfinite(prec_chol**2)
    if not finite.all():
        bad = sorted({int(k) for k in np.nonzero(~finite)[0]})
        raise DegenerateComponentError(_degenerate_message(
            bad, "have a variance too small to invert (its precision overflows)"))
    return prec_chol


def _is_positive_definite(matrix: np.ndarray) -> bool:
    try:
        np.linalg.cholesky(matrix)
    except np.linalg.LinAlgError:
        return False
    return True


def precision_cholesky_from_precisions(precisions: np.ndarray,
                                       covariance_type: str) -> np.ndarray:
    """Cholesky factors ``L`` with ``L Lᵀ = precision`` (as scikit-learn computes them)."""
    prec = np.asarray(precisions, dtype=np.float64)
    if covariance_type == "full":
        flipped = np.linalg.cholesky(prec[:, ::-1, ::-1])
        return np.ascontiguousarray(flipped[:, ::-1, ::-1])
    if covariance_type == "tied":
        return np.ascontiguousarray(np.linalg.cholesky(prec[::-1, ::-1])[::-1, ::-1])
    return np.sqrt(prec)


def covariances_from_precisions(precisions: np.ndarray, covariance_type: str) -> np.ndarray:
    """Invert precision matrices (or vectors) to covariances."""
    prec = np.asarray(precisions, dtype=np.float64)
    if covariance_type in ("full", "tied"):
        return np.linalg.inv(prec)
    return 1.0 / prec


def m_step(stats: dict[str, np.ndarray], reference: np.ndarray, ref_means: np.ndarray,
           covariance_type: str, reg_covar: float) -> MixtureParams:
    """New parameters from reduced statistics.

    Parameters
    ----------
    stats : dict
        ``nk``, ``sx`` and ``sxx`` as returned by :func:`daskgmm.engine.kernels.resp_statistics`,
        summed over all blocks.
    reference : ndarray of shape (D,)
        The point ``c0`` the blocks were centred on.
    ref_means : ndarray of shape (K, D)
        The per-component reference means ``c_k`` (used by ``'full'``).
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    reg_covar : float
        Added to the diagonal of every covariance.

    Returns
    -------
    MixtureParams
    """
    nk_raw = np.asarray(stats["nk"], dtype=np.float64)
    if np.any(nk_raw <= 0.0):
        empty = [int(k) for k in np.nonzero(nk_raw <= 0.0)[0]]
        raise DegenerateComponentError(
            _degenerate_message(empty, "lost all their samples (soft count 0)")
        )
    nk = nk_raw + _EPS10
    d = stats["sx"] / nk[:, None]  # mean - c0
    means = reference + d
    sxx = stats["sxx"]
    if covariance_type == "full":
        e = means - ref_means
        cov = sxx / nk[:, None, None] - e[:, :, None] * e[:, None, :]
        idx = np.arange(cov.shape[-1])
        cov[:, idx, idx] += reg_covar
    elif covariance_type == "tied":
        cov = (sxx - (nk[:, None] * d).T @ d) / nk.sum()
        cov.flat[:: cov.shape[0] + 1] += reg_covar
    else:
        cov = sxx / nk[:, None] - d * d + reg_covar
        if covariance_type == "spherical":
            cov = cov.mean(axis=1)
    return MixtureParams(
        covariance_type=covariance_type,
        weights=nk / nk.sum(),
        means=means,
        precisions_cholesky=precision_cholesky(cov, covariance_type),
        covariances=cov,
    )
