"""Degenerate solutions: components that buy likelihood by collapsing onto a few rows.

The likelihood of a Gaussian mixture is unbounded: a component that shrinks onto a few
rows lying close to a lower-dimensional subspace (collinear rows, rows with repeated
values of a rounded measurement) makes its density, and the likelihood, as large as
``reg_covar`` allows. EM finds such "spurious" maxima more often the more restarts it is
given and the larger ``K`` is (McLachlan and Peel, *Finite Mixture Models*, 2000,
section 3.10), and a model-selection criterion then rewards them. mclust stops EM when a
covariance becomes numerically singular and gives that model no BIC; with ``reg_covar``
the covariances here never become singular, so the collapse is recognised instead.

A component's **thinness** ``t`` compares its covariance, without ``reg_covar``, with
the covariance of the whole mixture (``S = sum_k w_k (Σ_k + (μ_k - μ)(μ_k - μ)ᵀ)``, the
data's covariance at an EM fixed point, which needs no pass over the data): the smallest
eigenvalue of ``S^{-1/2} (Σ_k - reg_covar I) S^{-1/2}`` for full covariances, the
smallest ratio of a variance to the mixture's for diagonal ones, and the variance over
the mixture's mean variance for spherical ones. A component is **degenerate** when

    t < RATIO (1e-4)   and   w_k n < FEW_ROWS (2) × (D + 1)

(it holds fewer rows than twice a full covariance's need). A tied covariance, shared by
every component, cannot collapse onto a few rows and is never degenerate.

The thresholds come from a study of real data sets with known classes against mclust
(``scripts/bench_mclust.py``): every component of mclust's chosen models and of the
sound winners had ``t >= 1.1e-3``; components on about ``D + 1`` nearly collinear rows
had ``6e-6 <= t <= 4e-5``, exact collapses ``t < 1e-12``.

Restarts and candidates with a degenerate component lose every comparison with those
without one (:func:`daskgmm.engine.em.best_candidate`, the selector), and the results
say which were affected.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FEW_ROWS", "RATIO", "degenerate_components", "thinness"]

#: A degenerate component holds fewer than this many times ``D + 1`` rows ...
FEW_ROWS = 2.0
#: ... and its thinness is below this.
RATIO = 1e-4


def thinness(kind: str, weights: np.ndarray, means: np.ndarray, covariances: np.ndarray,
             reg_covar: float) -> np.ndarray:
    """Each component's thinness (see the module docstring; 1 for a tied covariance)."""
    K, D = means.shape
    if kind == "tied":
        return np.ones(K)
    total = weights.sum()
    w = weights / total if total > 0 else np.full(K, 1.0 / K)
    mean = w @ means
    spread = means - mean
    between = np.einsum("k,ki,kj->ij", w, spread, spread)
    if kind == "spherical":
        own = np.maximum(covariances - reg_covar, 0.0)
        mixture = float(w @ covariances) + float(np.mean(np.diag(between)))
        return own / mixture if mixture > 0 else np.ones(K)
    if kind == "diag":
        own = np.maximum(covariances - reg_covar, 0.0)
        mixture = w @ covariances + np.diag(between)
        return (own / np.where(mixture > 0, mixture, 1.0)).min(axis=1)
    own = covariances - reg_covar * np.eye(D)
    mixture = np.einsum("k,kij->ij", w, covariances) + between
    try:
        inv_chol = np.linalg.inv(np.linalg.cholesky(mixture))
    except np.linalg.LinAlgError:
        return np.ones(K)
    return np.linalg.eigvalsh(inv_chol @ own @ inv_chol.T)[:, 0]


def degenerate_components(model: Any, state: Any, n_samples: float) -> list[int]:
    """The components of ``state`` (``model``'s covariance type and ``reg_covar``) that
    are degenerate for data of ``n_samples`` rows (total weight)."""
    weights = np.asarray(state.weights, dtype=np.float64)
    means = np.asarray(state.means, dtype=np.float64)
    covariances = np.asarray(state.covariances, dtype=np.float64)
    D = means.shape[1]
    t = thinness(model.covariance.name, weights, means, covariances,
                 float(getattr(model, "reg_covar", 0.0)))
    rows = weights * float(n_samples)
    return [int(k) for k in np.flatnonzero((rows < FEW_ROWS * (D + 1)) & (t < RATIO))]
