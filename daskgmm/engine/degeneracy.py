"""Degenerate solutions: components that buy likelihood by collapsing onto a few rows.

The likelihood of a Gaussian mixture is unbounded: a component that shrinks onto a few
rows lying close to a lower-dimensional subspace (collinear rows, rows with repeated
values) makes its density, and the likelihood, as large as ``reg_covar`` allows. EM finds
such "spurious" maxima more often the more restarts it is given and the larger ``K`` is
(McLachlan and Peel, *Finite Mixture Models*, 2000, section 3.10), and a model-selection
criterion then rewards them. mclust stops EM when a covariance becomes numerically
singular and gives the model no BIC; with ``reg_covar`` the covariances here never
become singular, so the collapse is recognised instead:

a component is **degenerate** when it holds few rows, ``n_k = w_k n <`` :data:`FEW_ROWS`
``× (D + 1)``, and its covariance is nearly singular relative to the mixture's pooled
within-component covariance ``S = sum_j w_j Σ_j``: the smallest eigenvalue of
``S^{-1/2} Σ_k S^{-1/2}`` is below :data:`RATIO` (for diagonal and spherical
covariances, the smallest ratio of a variance to the pooled one).

Restarts and candidates with a degenerate component lose every comparison with those
without one (:func:`daskgmm.engine.em.best_candidate`, the selector); the tables say
which were affected.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FEW_ROWS", "RATIO", "degenerate_components"]

#: A degenerate component holds fewer than this many times ``D + 1`` rows.
FEW_ROWS = 3.0
#: ... and its covariance's smallest eigenvalue, relative to the pooled covariance's in
#: the same direction, is below this.
RATIO = 1e-3


def _relative_spread(kind: str, weights: np.ndarray, covariances: np.ndarray
                     ) -> np.ndarray:
    """Per component: the smallest eigenvalue of its covariance relative to the pooled
    within-component covariance (1 for a tied covariance)."""
    K = len(weights)
    w = weights / weights.sum() if weights.sum() > 0 else np.full(K, 1.0 / K)
    if kind == "tied":
        return np.ones(K)
    if kind == "spherical":
        pooled = float(w @ covariances)
        return covariances / pooled if pooled > 0 else np.ones(K)
    if kind == "diag":
        pooled = w @ covariances
        return (covariances / np.where(pooled > 0, pooled, 1.0)).min(axis=1)
    pooled = np.einsum("k,kij->ij", w, covariances)
    try:
        inv_chol = np.linalg.inv(np.linalg.cholesky(pooled))
    except np.linalg.LinAlgError:
        return np.ones(K)
    whitened = inv_chol @ covariances @ inv_chol.T
    return np.linalg.eigvalsh(whitened)[:, 0]


def degenerate_components(model: Any, state: Any, n_samples: float) -> list[int]:
    """The components of ``state`` (weights and covariances of ``model``'s covariance
    type) that are degenerate for data of ``n_samples`` rows (total weight)."""
    weights = np.asarray(state.weights, dtype=np.float64)
    covariances = np.asarray(state.covariances, dtype=np.float64)
    D = np.shape(state.means)[1]
    rows = weights * float(n_samples)
    spread = _relative_spread(model.covariance.name, weights, covariances)
    return [int(k) for k in np.flatnonzero((rows < FEW_ROWS * (D + 1)) & (spread < RATIO))]
