"""The parameters of a Gaussian mixture, as they travel between the driver and the workers.

One :class:`MixtureParams` is shipped to the workers once per EM iteration (as a single
graph key). It carries what the chunk kernels need and nothing they would have to
recompute per chunk: the Cholesky factors of the precisions, their log-determinants, the
log-weights and a reference point used to centre the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def log_det_cholesky(precisions_cholesky: np.ndarray, covariance_type: str,
                     n_features: int) -> np.ndarray | float:
    """Log-determinant of the Cholesky factors of the precisions.

    Parameters
    ----------
    precisions_cholesky : ndarray
        Shape ``(K, D, D)`` for ``'full'``, ``(D, D)`` for ``'tied'``, ``(K, D)`` for
        ``'diag'`` and ``(K,)`` for ``'spherical'``.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    n_features : int

    Returns
    -------
    ndarray of shape (K,) or float
        ``log det L_k``, which equals ``-0.5 log det Sigma_k``.
    """
    pc = precisions_cholesky
    if covariance_type == "full":
        return np.log(np.diagonal(pc, axis1=1, axis2=2)).sum(axis=1)
    if covariance_type == "tied":
        return float(np.log(np.diagonal(pc)).sum())
    if covariance_type == "diag":
        return np.log(pc).sum(axis=1)
    return n_features * np.log(pc)


@dataclass(frozen=True, eq=False)
class MixtureParams:
    """Parameters of one mixture, with the quantities the E-step derives from them.

    Attributes
    ----------
    covariance_type : str
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, D)
    precisions_cholesky : ndarray
        scikit-learn's parameterisation, shape depending on ``covariance_type``.
    covariances : ndarray or None
        Kept for the estimator's ``covariances_``; the kernels do not use it.
    """

    covariance_type: str
    weights: np.ndarray
    means: np.ndarray
    precisions_cholesky: np.ndarray
    covariances: np.ndarray | None = None
    log_weights: np.ndarray = field(init=False, repr=False)
    log_det: np.ndarray = field(init=False, repr=False)
    centre: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"unknown covariance_type {self.covariance_type!r}")
        # C-contiguous float64 always: the memory layout decides the order of the BLAS
        # sums, and a resumed fit must repeat an uninterrupted one bit for bit.
        means = np.ascontiguousarray(self.means, dtype=np.float64)
        weights = np.ascontiguousarray(self.weights, dtype=np.float64)
        object.__setattr__(self, "means", means)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "precisions_cholesky",
                           np.ascontiguousarray(self.precisions_cholesky, dtype=np.float64))
        with np.errstate(divide="ignore"):
            object.__setattr__(self, "log_weights", np.log(weights))
        object.__setattr__(
            self,
            "log_det",
            log_det_cholesky(self.precisions_cholesky, self.covariance_type, means.shape[1]),
        )
        # The data are centred on this point before any product, so a large common offset
        # (say 1e6) never enters a sum of squares.
        total = weights.sum()
        w = weights / total if total > 0 else np.full_like(weights, 1.0 / len(weights))
        object.__setattr__(self, "centre", w @ means)

    @property
    def n_components(self) -> int:
        """Number of mixture components ``K``."""
        return self.means.shape[0]

    @property
    def n_features(self) -> int:
        """Number of features ``D``."""
        return self.means.shape[1]

    def precisions(self) -> np.ndarray:
        """Precision matrices (or vectors) ``L Lᵀ`` in scikit-learn's shapes."""
        pc = self.precisions_cholesky
        if self.covariance_type == "full":
            return pc @ pc.transpose(0, 2, 1)
        if self.covariance_type == "tied":
            return pc @ pc.T
        return pc**2
