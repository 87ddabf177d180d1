"""The chunk kernels and the M-step, tested as plain NumPy (no Dask)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGM
from sklearn.mixture._gaussian_mixture import (
    _estimate_gaussian_parameters,
    _estimate_log_gaussian_prob,
)

from daskgmm.engine.kernels import (
    add_statistics,
    estep_statistics,
    kmeans_statistics,
    log_prob_resp,
    resp_statistics,
    weighted_log_prob,
)
from daskgmm.engine.mstep import m_step, precision_cholesky
from daskgmm.engine.params import MixtureParams
from daskgmm.engine.passes import tree_reduce

from .conftest import make_blobs

COV_TYPES = ["full", "tied", "diag", "spherical"]


def _params(X, cov, k=3, seed=0):
    sk = SkGM(k, covariance_type=cov, max_iter=2, random_state=seed).fit(X)
    return MixtureParams(cov, sk.weights_, sk.means_, sk.precisions_cholesky_,
                         sk.covariances_)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_log_prob_matches_direct_formula(cov):
    X = make_blobs(500)
    p = _params(X, cov)
    expected = _estimate_log_gaussian_prob(X, p.means, p.precisions_cholesky, cov)
    expected = expected + np.log(p.weights)
    got = weighted_log_prob(X - p.centre, p)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_full_log_prob_against_scipy():
    from scipy.stats import multivariate_normal

    X = make_blobs(200)
    p = _params(X, "full")
    got = weighted_log_prob(X - p.centre, p)
    for k in range(3):
        ref = multivariate_normal(p.means[k], p.covariances[k]).logpdf(X) + np.log(p.weights[k])
        np.testing.assert_allclose(got[:, k], ref, rtol=1e-10, atol=1e-9)


def test_log_sum_exp_survives_far_points():
    X = make_blobs(50)
    p = _params(X, "full")
    far = np.vstack([X, X[:1] + 1e3])  # exp() of its log-densities underflows
    log_norm, resp = log_prob_resp(far - p.centre, p)
    assert np.isfinite(log_norm).all()
    np.testing.assert_allclose(resp.sum(axis=1), 1.0)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_statistics_and_m_step_match_sklearn(cov):
    """E-step statistics + M-step equal scikit-learn's parameter estimates."""
    X = make_blobs(800)
    p = _params(X, cov)
    (st,) = estep_statistics(X, 0, [p])
    new = m_step(st, p.centre, p.means, cov, 1e-6)
    log_norm, resp = log_prob_resp(X - p.centre, p)
    nk, means, covs = _estimate_gaussian_parameters(X, resp, 1e-6, cov)
    np.testing.assert_allclose(new.means, means, rtol=1e-10)
    np.testing.assert_allclose(new.covariances, covs, rtol=1e-9)
    np.testing.assert_allclose(new.weights, nk / nk.sum(), rtol=1e-12)
    assert st["ll"] == pytest.approx(log_norm.sum(), rel=1e-12)
    assert st["n"] == len(X)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_chunk_sums_equal_one_block(cov):
    X = make_blobs(1000)
    p = _params(X, cov)
    (whole,) = estep_statistics(X, 0, [p])
    bounds = [0, 7, 300, 301, 650, 1000]
    parts = [estep_statistics(X[a:b], a, [p]) for a, b in itertools.pairwise(bounds)]
    (summed,) = tree_reduce(parts, add_statistics, 2)
    for key in whole:
        np.testing.assert_allclose(summed[key], whole[key], rtol=1e-11, atol=1e-9)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_tiles_do_not_change_statistics(cov):
    X = make_blobs(1000)
    p = _params(X, cov)
    (a,) = estep_statistics(X, 0, [p], tile_rows=64)
    (b,) = estep_statistics(X, 0, [p], tile_rows=100_000)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-11, atol=1e-9)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_large_offset_gives_same_covariances(cov):
    """Data shifted by 1e6: second moments about a reference point do not cancel."""
    X = make_blobs(2000)
    p = _params(X, cov)
    shifted = MixtureParams(cov, p.weights, p.means + 1e6, p.precisions_cholesky,
                            p.covariances)
    (st0,) = estep_statistics(X, 0, [p])
    (st1,) = estep_statistics(X + 1e6, 0, [shifted])
    new0 = m_step(st0, p.centre, p.means, cov, 1e-6)
    new1 = m_step(st1, shifted.centre, shifted.means, cov, 1e-6)
    np.testing.assert_allclose(new1.covariances, new0.covariances, rtol=1e-7)
    np.testing.assert_allclose(new1.means - 1e6, new0.means, atol=1e-8)
    # The raw formula sum(r x x^T)/n - mu mu^T loses everything at this offset:
    Xs = X + 1e6
    naive = (Xs.T @ Xs) / len(Xs) - np.outer(Xs.mean(0), Xs.mean(0))
    assert not np.allclose(naive, np.cov(X.T, bias=True), rtol=1e-6)


def test_restarts_share_one_read():
    X = make_blobs(600)
    ps = [_params(X, "diag", seed=s) for s in range(3)]
    together = estep_statistics(X, 0, ps)
    for p, st in zip(ps, together, strict=False):
        (alone,) = estep_statistics(X, 0, [p])
        for key in st:
            np.testing.assert_array_equal(st[key], alone[key])


def test_float32_compute_accumulates_in_float64():
    X = make_blobs(5000)
    p = _params(X, "full")
    (a,) = estep_statistics(X, 0, [p], dtype="float64")
    (b,) = estep_statistics(X, 0, [p], dtype="float32")
    assert all(v.dtype == np.float64 for v in np.atleast_1d(*b.values()))
    new_a = m_step(a, p.centre, p.means, "full", 1e-6)
    new_b = m_step(b, p.centre, p.means, "full", 1e-6)
    np.testing.assert_allclose(new_b.covariances, new_a.covariances, rtol=1e-4, atol=1e-5)


def test_float32_compute_with_large_offset():
    """Centring happens in float64 before the cast, so an offset of 1e6 costs nothing."""
    X = make_blobs(5000)
    p = _params(X, "full")
    shifted = MixtureParams("full", p.weights, p.means + 1e6, p.precisions_cholesky)
    (a,) = estep_statistics(X, 0, [p], dtype="float32")
    (b,) = estep_statistics(X + 1e6, 0, [shifted], dtype="float32")
    new_a = m_step(a, p.centre, p.means, "full", 1e-6)
    new_b = m_step(b, shifted.centre, shifted.means, "full", 1e-6)
    np.testing.assert_allclose(new_b.covariances, new_a.covariances, rtol=1e-5)


def test_kmeans_statistics_match_direct():
    X = make_blobs(500)
    centres = X[[0, 100, 200]]
    (st,) = kmeans_statistics(X, 0, [centres], X.mean(axis=0))
    d2 = ((X[:, None, :] - centres[None]) ** 2).sum(-1)
    labels = d2.argmin(1)
    np.testing.assert_array_equal(st["counts"], np.bincount(labels, minlength=3))
    for k in range(3):
        np.testing.assert_allclose(st["sums"][k] / st["counts"][k] + X.mean(axis=0),
                                   X[labels == k].mean(0))
    assert st["inertia"] == pytest.approx(d2.min(1).sum())


def test_resp_statistics_full_scatter_is_direct():
    X = make_blobs(300)
    rng = np.random.default_rng(1)
    resp = rng.dirichlet(np.ones(3), size=len(X))
    ref = X[:3]
    st = resp_statistics(X, resp, ref, "full")
    for k in range(3):
        diff = X - ref[k]
        np.testing.assert_allclose(st["sxx"][k], (resp[:, k, None] * diff).T @ diff,
                                   rtol=1e-12)


def test_precision_cholesky_names_degenerate_component():
    from daskgmm.errors import DegenerateComponentError

    cov = np.stack([np.eye(2), np.zeros((2, 2)), np.eye(2)])
    with pytest.raises(DegenerateComponentError, match=r"component\(s\) 1 .*reg_covar"):
        precision_cholesky(cov, "full")
    with pytest.raises(DegenerateComponentError, match="reg_covar"):
        precision_cholesky(np.array([1.0, 0.0]), "spherical")
