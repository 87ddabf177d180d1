"""The E-step and prediction kernels of rows with missing values (NaN), as plain NumPy.

References: today's complete-data kernel (``estep_statistics``) on complete data,
SciPy's multivariate normal on the observed features for the marginal densities, a
per-row loop over the conditional Gaussians for the statistics, and the monotonicity of
EM (and of the variational bound) that only a correct E-step gives.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from daskgmm.engine import covariance as cov_types
from daskgmm.engine.estep import Components, estep_statistics, make_plan
from daskgmm.engine.marginal import (
    available_case_moments,
    fill_missing,
    make_marginal_plan,
    marginal_predict_block,
    marginal_predict_proba_block,
    marginal_score_samples_block,
    marginal_statistics,
    missing_layout,
    observed_moment_statistics,
)
from daskgmm.engine.stats import add
from daskgmm.errors import NonFiniteDataError
from daskgmm.models.bayesian import BayesianModel, BayesianParams, Priors
from daskgmm.models.gaussian import GaussianModel, GaussianParams

COV_TYPES = ["full", "tied", "diag", "spherical"]


def _params(cov_name: str, K: int = 3, D: int = 4, seed: int = 0) -> GaussianParams:
    """A random, well-conditioned mixture of the covariance type."""
    rng = np.random.default_rng(seed)
    cov = cov_types.get(cov_name)
    weights = rng.dirichlet(np.full(K, 3.0))
    means = rng.normal(scale=3.0, size=(K, D))
    if cov_name == "full":
        A = rng.normal(scale=0.7, size=(K, D, D))
        covariances = A @ A.transpose(0, 2, 1) + 0.3 * np.eye(D)
    elif cov_name == "tied":
        A = rng.normal(scale=0.7, size=(D, D))
        covariances = A @ A.T + 0.3 * np.eye(D)
    elif cov_name == "diag":
        covariances = rng.uniform(0.3, 2.0, size=(K, D))
    else:
        covariances = rng.uniform(0.3, 2.0, size=K)
    chol, prec_chol = cov.factorise(covariances)
    return GaussianParams(cov, weights, means, covariances, prec_chol, chol)


def _dense(p: GaussianParams) -> np.ndarray:
    """Every component's covariance matrix, ``(K, D, D)``."""
    K, D = p.means.shape
    c = p.covariances
    return {"full": lambda: c, "tied": lambda: np.broadcast_to(c, (K, D, D)),
            "diag": lambda: np.stack([np.diag(v) for v in c]),
            "spherical": lambda: c[:, None, None] * np.eye(D)}[p.covariance.name]()


def _sample(p: GaussianParams, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(p.weights), size=n, p=p.weights)
    chol = np.linalg.cholesky(_dense(p))
    z = rng.normal(size=(n, p.means.shape[1]))
    return p.means[labels] + np.einsum("nde,ne->nd", chol[labels], z)


def _holes(X: np.ndarray, fraction: float, seed: int, empty: int = 0) -> np.ndarray:
    """``X`` with values missing completely at random and ``empty`` rows all missing."""
    rng = np.random.default_rng(seed)
    X = X.copy()
    X[rng.random(X.shape) < fraction] = np.nan
    if empty:
        X[rng.choice(len(X), size=empty, replace=False)] = np.nan
    return X


def _components(p: GaussianParams) -> Components:
    return Components.gaussian(p.covariance, p.weights, p.means, p.precisions_cholesky)


def _mplan(p: GaussianParams, **kw):
    return make_marginal_plan([_components(p)], p.weights @ p.means, **kw)


def _reference_rows(p: GaussianParams, X: np.ndarray, w: np.ndarray):
    """Per row and component, directly: log w_k + log N(x_o | μ_o, Σ_oo), the
    conditional mean x̂ and covariance Σ̃ (embedded in D x D)."""
    K, D = p.means.shape
    sigma = _dense(p)
    n = len(X)
    wlp = np.zeros((n, K))
    filled = np.zeros((n, K, D))
    cond = np.zeros((n, K, D, D))
    for i, x in enumerate(X):
        o, m = ~np.isnan(x), np.isnan(x)
        for k in range(K):
            S, mu = sigma[k], p.means[k]
            wlp[i, k] = math.log(p.weights[k])
            if o.any():
                wlp[i, k] += multivariate_normal(mu[o], S[np.ix_(o, o)]).logpdf(x[o])
            filled[i, k] = x
            if m.any():
                gain = S[np.ix_(m, o)] @ np.linalg.inv(S[np.ix_(o, o)]) if o.any() \
                    else np.zeros((m.sum(), 0))
                filled[i, k, m] = mu[m] + gain @ (x[o] - mu[o])
                cond[i, k][np.ix_(m, m)] = S[np.ix_(m, m)] - gain @ S[np.ix_(o, m)]
    return wlp, filled, cond


# --------------------------------------------------------------------------------------
# complete data: today's kernel
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cov", COV_TYPES)
def test_complete_data_gives_todays_statistics_bit_for_bit(cov):
    """Without NaN the kernel returns ``estep_statistics``' numbers exactly (weights,
    entropy, float32 products), plus ``n_empty = 0`` and ``n_obs = n D``."""
    p = _params(cov)
    X = _sample(p, 700, seed=1)
    w = np.random.default_rng(2).uniform(0.5, 2.0, len(X))
    for dtype in ("float64", "float32"):
        kw = {"dtype": dtype, "entropy": True}
        ours = marginal_statistics(X, w, 0, _mplan(p, **kw)).stats[0]
        today = estep_statistics(X, w, 0, make_plan([_components(p)], p.weights @ p.means,
                                                    **kw)).stats[0]
        for key, value in today.items():
            np.testing.assert_array_equal(ours[key], value, err_msg=key)
        assert ours["n_empty"] == 0.0 and ours["h_missing"] == 0.0
        assert ours["n_obs"] == pytest.approx(w.sum() * X.shape[1], rel=1e-15)


# --------------------------------------------------------------------------------------
# prediction against SciPy
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cov", COV_TYPES)
def test_scores_are_the_log_marginal_densities_of_the_observed_values(cov):
    """``score_samples`` of rows with holes (and of complete and empty rows) is the log
    of the mixture's density of the observed values computed with SciPy from the
    parameters; ``predict_proba`` and ``predict`` follow from the same densities, and
    a row with nothing observed gets the mixture weights."""
    p = _params(cov, seed=3)
    X = _holes(_sample(p, 150, seed=4), 0.35, seed=5, empty=4)
    wlp, _, _ = _reference_rows(p, X, np.ones(len(X)))
    expected = logsumexp(wlp, axis=1)
    plan = _mplan(p, tile_bytes=None, marginal_tile_bytes=1)  # many small tiles
    np.testing.assert_allclose(marginal_score_samples_block(X, 0, plan), expected,
                               rtol=1e-11, atol=1e-11)
    proba = marginal_predict_proba_block(X, 0, plan)
    np.testing.assert_allclose(proba, np.exp(wlp - expected[:, None]), rtol=1e-9,
                               atol=1e-12)
    np.testing.assert_array_equal(marginal_predict_block(X, 0, plan), wlp.argmax(axis=1))
    empty = np.isnan(X).all(axis=1)
    np.testing.assert_allclose(proba[empty], np.tile(p.weights, (empty.sum(), 1)),
                               rtol=1e-12)
    np.testing.assert_allclose(marginal_score_samples_block(X, 0, plan)[empty], 0.0,
                               atol=1e-12)


# --------------------------------------------------------------------------------------
# statistics against the conditional expectations, row by row
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cov", COV_TYPES)
def test_statistics_are_the_conditional_expectations(cov):
    """Counts, first and second moments (in the type's frame), log-likelihood and
    entropies of incomplete rows equal a per-row computation of the responsibilities
    from the observed values and of the conditional means and covariances of the
    missing ones; empty rows are only counted."""
    p = _params(cov, seed=6)
    X = _holes(_sample(p, 120, seed=7), 0.3, seed=8, empty=3)
    w = np.random.default_rng(9).uniform(0.5, 2.0, len(X))
    c0 = p.weights @ p.means
    st = marginal_statistics(X, w, 0, _mplan(p, entropy=True)).stats[0]

    wlp, filled, cond = _reference_rows(p, X, w)
    empty = np.isnan(X).all(axis=1)
    log_norm = logsumexp(wlp, axis=1)
    r = np.exp(wlp - log_norm[:, None])
    wr = (w * ~empty)[:, None] * r
    nk = wr.sum(axis=0)
    sx = np.einsum("nk,nkd->kd", wr, filled - c0)
    about_c0 = (np.einsum("nk,nkd,nke->kde", wr, filled - c0, filled - c0)
                + np.einsum("nk,nkde->kde", wr, cond))
    logdet = np.array([[np.linalg.slogdet(2 * np.pi * np.e * c[np.ix_(m, m)])[1]
                        if m.any() else 0.0 for c in cond[i]]
                       for i, m in enumerate(np.isnan(X))])
    assert st["n"] == pytest.approx(w[~empty].sum(), rel=1e-14)
    assert st["n_empty"] == pytest.approx(w[empty].sum(), rel=1e-14)
    assert st["n_obs"] == pytest.approx(((~np.isnan(X)).sum(axis=1) * w).sum(), rel=1e-14)
    assert st["ll"] == pytest.approx((w * log_norm)[~empty].sum(), rel=1e-11)
    assert st["ent"] == pytest.approx(np.sum(wr * np.log(r)), rel=1e-10)
    assert st["h_missing"] == pytest.approx(np.sum(wr * 0.5 * logdet), rel=1e-10)
    np.testing.assert_allclose(st["nk"], nk, rtol=1e-11)
    np.testing.assert_allclose(st["sx"], sx, rtol=1e-10, atol=1e-10)
    name = p.covariance.name
    if name == "full":  # whitened about each component's mean by L_k
        e = p.means - c0
        about_mean = (about_c0 - np.einsum("kd,ke->kde", sx, e)
                      - np.einsum("kd,ke->kde", e, sx) + nk[:, None, None]
                      * np.einsum("kd,ke->kde", e, e))
        L = p.precisions_cholesky
        expected = L.transpose(0, 2, 1) @ about_mean @ L
    elif name == "tied":
        expected = about_c0.sum(axis=0)
    elif name == "diag":
        expected = np.diagonal(about_c0, axis1=1, axis2=2)
    else:
        expected = np.trace(about_c0, axis1=1, axis2=2)
    np.testing.assert_allclose(st["s2"], expected, rtol=1e-10, atol=1e-9)


def test_one_plan_serves_several_candidates_as_separate_plans_would():
    """Candidates of different types, sizes and centres in one plan get the numbers
    each would get alone."""
    ps = [_params("full", K=3, seed=10), _params("diag", K=2, seed=11),
          _params("tied", K=4, seed=12)]
    X = _holes(_sample(ps[0], 300, seed=13), 0.2, seed=14, empty=2)
    centres = np.stack([p.weights @ p.means for p in ps])
    together = marginal_statistics(X, None, 0, make_marginal_plan(
        [_components(p) for p in ps], centres, entropy=True)).stats
    for p, st in zip(ps, together, strict=True):
        alone = marginal_statistics(X, None, 0, _mplan(p, entropy=True)).stats[0]
        for key, value in alone.items():
            np.testing.assert_array_equal(st[key], value, err_msg=key)


# --------------------------------------------------------------------------------------
# EM with the kernel
# --------------------------------------------------------------------------------------
def _start(p: GaussianParams, seed: int) -> GaussianParams:
    """``p`` disturbed: means moved, covariances inflated."""
    rng = np.random.default_rng(seed)
    cov = p.covariance
    covariances = p.covariances * 1.5
    chol, prec_chol = cov.factorise(covariances)
    return GaussianParams(cov, np.full(len(p.weights), 1 / len(p.weights)),
                          p.means + rng.normal(scale=1.0, size=p.means.shape),
                          covariances, prec_chol, chol)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_em_never_decreases_the_observed_data_log_likelihood(cov):
    """The kernel and the unchanged Gaussian M-step make an EM whose observed-data
    log-likelihood never decreases (and rises well above its start)."""
    truth = _params(cov, seed=15)
    X = _holes(_sample(truth, 400, seed=16), 0.3, seed=17, empty=5)
    state = _start(truth, seed=18)
    model = GaussianModel(3, cov, reg_covar=0.0)
    centre = state.weights @ state.means
    bounds = []
    for _ in range(30):
        plan = make_marginal_plan([model.components(state)], centre)
        stats = marginal_statistics(X, None, 0, plan).stats[0]
        bounds.append(float(stats["ll"]))
        state = model.m_step(stats, centre, state)
    steps = np.diff(bounds)
    assert steps.min() > -1e-9 * abs(bounds[-1]), steps
    assert bounds[-1] > bounds[0] + 10.0


@pytest.mark.parametrize("cov", COV_TYPES)
def test_variational_bound_with_missing_entropy_never_decreases(cov):
    """The Bayesian mixture's bound, which with missing values adds ``h_missing`` (the
    entropy of the missing values' variational distribution), never decreases: the
    kernel's E-step is the optimal ``q(z, x_m)`` for the variational posterior, whose
    M-step is unchanged."""
    truth = _params(cov, seed=19)
    X = _holes(_sample(truth, 400, seed=20), 0.3, seed=21, empty=5)
    K, D = truth.means.shape
    start = _start(truth, seed=22)
    prior_cov = {"full": np.eye(D), "tied": np.eye(D), "diag": np.ones(D),
                 "spherical": np.array(1.0)}[cov]
    priors = Priors(1.0 / K, 1.0, np.nanmean(X, axis=0), float(D), prior_cov)
    model = BayesianModel(K, cov, 0.0, "dirichlet_process", priors)
    dof = np.full(K, D + 5.0) if cov != "tied" else np.array(D + 5.0)
    state = BayesianParams(cov_types.get(cov), np.stack([np.full(K, 5.0), np.full(K, 5.0)]),
                           np.full(K, 5.0), start.means, dof, start.covariances,
                           start.precisions_cholesky, start.covariances_cholesky)
    centre = np.nanmean(X, axis=0)
    bounds = []
    for _ in range(30):
        plan = make_marginal_plan([model.components(state)], centre, entropy=True)
        stats = marginal_statistics(X, None, 0, plan).stats[0]
        state = model.m_step(stats, centre, state)
        assert float(stats["h_missing"]) > 0.0
        bounds.append(model.lower_bound(stats, state))
    steps = np.diff(bounds)
    assert steps.min() > -1e-9 * abs(bounds[-1]), steps
    assert bounds[-1] > bounds[0] + 10.0


# --------------------------------------------------------------------------------------
# chunks, tiles, empty rows, errors
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cov", COV_TYPES)
def test_statistics_add_up_over_chunks_and_do_not_depend_on_tiles(cov):
    """Two halves' statistics add up to the whole chunk's, and tiles of 64 rows (cut
    inside patterns) give the numbers of one tile; appending rows with nothing
    observed changes only ``n_empty``."""
    p = _params(cov, seed=23)
    X = _holes(_sample(p, 600, seed=24), 0.25, seed=25)
    w = np.random.default_rng(26).uniform(0.5, 2.0, len(X))
    plan = _mplan(p, entropy=True)
    whole = marginal_statistics(X, w, 0, plan).stats[0]
    halves = add(marginal_statistics(X[:250], w[:250], 0, plan).stats[0],
                 marginal_statistics(X[250:], w[250:], 250, plan).stats[0])
    small = marginal_statistics(X, w, 0, _mplan(p, entropy=True,
                                                marginal_tile_bytes=1)).stats[0]
    X_empty = np.vstack([X, np.full((7, X.shape[1]), np.nan)])
    w_empty = np.concatenate([w, np.full(7, 2.0)])
    with_empty = marginal_statistics(X_empty, w_empty, 0, plan).stats[0]
    assert with_empty["n_empty"] == pytest.approx(whole["n_empty"] + 14.0, rel=1e-14)
    for key in whole:
        for other in (halves, small):
            np.testing.assert_allclose(other[key], whole[key], rtol=1e-12, atol=1e-9,
                                       err_msg=key)
        if key != "n_empty":
            np.testing.assert_allclose(with_empty[key], whole[key], rtol=1e-12,
                                       atol=1e-9, err_msg=key)


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_float32_data_and_products(cov):
    """float32 data with holes and float32 products for the complete rows give the
    float64 statistics to float32 accuracy (incomplete rows are computed in
    float64)."""
    p = _params(cov, seed=34)
    X = _holes(_sample(p, 400, seed=35), 0.2, seed=36)
    ref = marginal_statistics(X, None, 0, _mplan(p)).stats[0]
    low = marginal_statistics(X.astype(np.float32), None, 0,
                              _mplan(p, dtype="float32")).stats[0]
    for key, value in ref.items():
        np.testing.assert_allclose(low[key], value, rtol=1e-4, atol=1e-3, err_msg=key)


@pytest.mark.parametrize("D", [5, 60])
def test_layout_groups_rows_by_pattern(D):
    """Every incomplete row is listed once, sorted by number of missing features and
    pattern; patterns are distinct; complete and empty rows are apart (with one
    64-bit key per row, and with wider rows)."""
    X = _holes(np.ones((500, D)), 0.3 if D == 5 else 0.02, seed=27, empty=6)
    layout = missing_layout(np.isnan(X))
    missing = np.isnan(X)
    listed = np.concatenate([layout.complete, layout.empty, layout.rows])
    np.testing.assert_array_equal(np.sort(listed), np.arange(len(X)))
    np.testing.assert_array_equal(layout.incomplete, np.sort(layout.rows))
    np.testing.assert_array_equal(missing[layout.rows],
                                  layout.patterns[layout.pattern_of_row])
    assert len(np.unique(layout.patterns, axis=0)) == layout.n_patterns
    assert (np.diff(layout.pattern_of_row) >= 0).all()
    assert (np.diff(layout.patterns.sum(axis=1)) >= 0).all()
    np.testing.assert_array_equal(layout.empty, np.flatnonzero(missing.all(axis=1)))
    assert len(layout.empty) >= 6 and (~missing[layout.complete]).all()


def test_infinity_is_refused_naming_the_rows():
    """NaN is a missing value; an infinity is an error naming the chunk's rows."""
    p = _params("full")
    X = _holes(_sample(p, 50, seed=28), 0.2, seed=29)
    X[17, 2] = -np.inf
    with pytest.raises(NonFiniteDataError, match=r"infinite values: 1 row.*first at row 117"):
        marginal_statistics(X, None, 100, _mplan(p))
    with pytest.raises(NonFiniteDataError, match="first at row 117"):
        marginal_score_samples_block(X, 100, _mplan(p))


def test_available_case_moments_and_filling():
    """Per-feature observed means and pairwise-available covariances, summed over two
    chunks with integer weights, equal NumPy's on the rows repeated and restricted to
    those observing each pair; ``fill_missing`` fills a copy."""
    X = _holes(_sample(_params("full", seed=30), 200, seed=31), 0.3, seed=32) + 100.0
    w = np.random.default_rng(33).integers(1, 4, len(X)).astype(float)
    ref = np.full(X.shape[1], 100.0)
    stats = add(observed_moment_statistics(X[:90], w[:90], 0, ref),
                observed_moment_statistics(X[90:], w[90:], 90, ref))
    mean, covariance = available_case_moments(stats, ref)
    R = np.repeat(X, w.astype(int), axis=0)
    np.testing.assert_allclose(mean, np.nanmean(R, axis=0), rtol=1e-13)
    D = X.shape[1]
    for i in range(D):
        for j in range(D):
            both = R[~np.isnan(R[:, i]) & ~np.isnan(R[:, j])][:, [i, j]]
            assert covariance[i, j] == pytest.approx(np.cov(both.T)[0, 1], rel=1e-10)
    before = X.copy()
    filled = fill_missing(X, mean)
    np.testing.assert_array_equal(X, before)
    np.testing.assert_array_equal(filled[~np.isnan(X)], X[~np.isnan(X)])
    np.testing.assert_array_equal(filled, np.where(np.isnan(X), mean, X))


@pytest.mark.parametrize("compiled", [True, False])
def test_missing_blocks_inverses_and_log_determinants(compiled, monkeypatch):
    """The missing blocks' inverses and half log-determinants, compiled or by batched
    LAPACK, equal NumPy's ``inv`` and ``slogdet``; a block that is not positive definite
    is refused."""
    from daskgmm.engine import estep, marginal
    from daskgmm.errors import DegenerateComponentError

    if not compiled:
        monkeypatch.setattr(estep, "_fused", lambda: None)
    elif estep._fused() is None:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(40)
    for q in (1, 2, 5, 9):
        A = rng.normal(size=(3, 7, q, q))
        A = A @ np.swapaxes(A, -1, -2) + 0.1 * np.eye(q)
        half_log_det, inverse = marginal._missing_blocks(A)
        np.testing.assert_allclose(inverse, np.linalg.inv(A), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(2 * half_log_det, np.linalg.slogdet(A)[1], rtol=1e-12)
    A[1, 4] = -np.eye(q)
    with pytest.raises(DegenerateComponentError, match="not positive definite"):
        marginal._missing_blocks(A)


def test_observed_moments_merge_exactly_about_chunk_references():
    """Chunks' observed moments, each about its own observed means, merged about the
    first one's, give the available-case moments of the whole (with weights, and an
    offset of 1e6 that a common reference of 0 would cancel to a few digits), the
    weight of the rows with nothing observed and the observed values."""
    from daskgmm.engine.marginal import merge_observed, observed_moments_chunk

    X = _holes(_sample(_params("full", seed=41), 300, seed=42), 0.3, seed=43,
               empty=4) + 1e6
    w = np.random.default_rng(44).integers(1, 4, len(X)).astype(float)
    parts = [observed_moments_chunk(X[a:b], w[a:b], a, pairs=True)
             for a, b in ((0, 100), (100, 130), (130, 300))]
    merged = merge_observed(*parts)
    mean, covariance = merged.mean_and_covariance()
    ref = np.nanmean(X, axis=0)
    exact = available_case_moments(observed_moment_statistics(X, w, 0, ref), ref)
    np.testing.assert_allclose(mean, exact[0], rtol=1e-15)
    np.testing.assert_allclose(covariance, exact[1], rtol=1e-8)
    np.testing.assert_allclose(merged.means(), mean, rtol=1e-15)
    empty = np.isnan(X).all(axis=1)
    assert merged.empty == w[empty].sum() and merged.rows == w[~empty].sum()
    assert merged.observed_values == pytest.approx((~np.isnan(X)).sum(axis=1) @ w)
    light = merge_observed(*[observed_moments_chunk(X[a:b], w[a:b], a, pairs=False)
                             for a, b in ((0, 100), (100, 300))])
    assert not light.has_pairs
    np.testing.assert_allclose(light.means(), mean, rtol=1e-15)
