"""The chunk kernels and the Gaussian M-step, tested as plain NumPy (no Dask).

References are direct formulas: scikit-learn's own log-densities and parameter estimates,
SciPy's multivariate normal, and explicit loops.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture as SkGM
from sklearn.mixture._gaussian_mixture import (
    _estimate_gaussian_parameters,
    _estimate_log_gaussian_prob,
)

from daskgmm.engine import covariance as cov_types
from daskgmm.engine.estep import (
    Components,
    estep_statistics,
    make_plan,
    predict_proba_block,
    score_samples_block,
    score_statistics,
)
from daskgmm.engine.passes import tree_reduce
from daskgmm.engine.starts import Reference
from daskgmm.engine.stats import combine
from daskgmm.engine.workspace import workspace
from daskgmm.models.gaussian import GaussianModel, GaussianParams

from .conftest import make_blobs

COV_TYPES = ["full", "tied", "diag", "spherical"]


def _params(X, cov, k=3, seed=0) -> GaussianParams:
    sk = SkGM(k, covariance_type=cov, max_iter=2, random_state=seed).fit(X)
    return GaussianParams.from_precisions_cholesky(cov, sk.weights_, sk.means_,
                                                   sk.precisions_cholesky_, sk.covariances_)


def _plan(params, *, centre=None, **kw):
    comp = Components.gaussian(params.covariance, params.weights, params.means,
                               params.precisions_cholesky)
    c0 = params.weights @ params.means if centre is None else centre
    return make_plan([comp], c0, **kw)


def _resp(X, p):
    log_prob = (_estimate_log_gaussian_prob(X, p.means, p.precisions_cholesky,
                                            p.covariance.name) + np.log(p.weights))
    top = log_prob.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(log_prob - top).sum(axis=1)) + top[:, 0]
    return log_norm, np.exp(log_prob - log_norm[:, None])


@pytest.mark.parametrize("cov", COV_TYPES)
def test_log_prob_matches_direct_formula(cov):
    X = make_blobs(500)
    p = _params(X, cov)
    log_norm, resp = _resp(X, p)
    np.testing.assert_allclose(score_samples_block(X, 0, _plan(p)), log_norm, rtol=1e-10)
    np.testing.assert_allclose(predict_proba_block(X, 0, _plan(p)), resp, atol=1e-12)


def test_full_log_prob_against_scipy():
    from scipy.stats import multivariate_normal

    X = make_blobs(200)
    p = _params(X, "full")
    mix = np.stack([multivariate_normal(p.means[k], p.covariances[k]).pdf(X) * p.weights[k]
                    for k in range(3)], axis=1)
    np.testing.assert_allclose(score_samples_block(X, 0, _plan(p)), np.log(mix.sum(1)),
                               rtol=1e-10, atol=1e-9)


def test_log_sum_exp_survives_far_points():
    X = make_blobs(50)
    p = _params(X, "full")
    far = np.vstack([X, X[:1] + 1e3])  # exp() of its log-densities underflows
    assert np.isfinite(score_samples_block(far, 0, _plan(p))).all()
    np.testing.assert_allclose(predict_proba_block(far, 0, _plan(p)).sum(axis=1), 1.0)


@pytest.mark.parametrize("cov", COV_TYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_statistics_and_m_step_match_sklearn(cov, weighted):
    """E-step statistics + M-step equal scikit-learn's estimates from its own
    responsibilities (times the sample weights)."""
    X = make_blobs(800)
    p = _params(X, cov)
    w = np.random.default_rng(3).uniform(0, 3, size=len(X)) if weighted else None
    (st,) = estep_statistics(X, w, 0, _plan(p)).stats
    new = GaussianModel(3, cov, 1e-6).m_step(st, p.weights @ p.means, p)
    log_norm, resp = _resp(X, p)
    wr = resp if w is None else resp * w[:, None]
    nk, means, covs = _estimate_gaussian_parameters(X, wr, 1e-6, cov)
    if cov == "tied" and weighted:
        # scikit-learn's tied formula takes sum_i x_i x_iᵀ unweighted (its rows of
        # responsibilities sum to one); the weighted scatter is:
        covs = sum((wr[:, k, None] * (X - means[k])).T @ (X - means[k]) for k in range(3))
        covs = covs / nk.sum() + 1e-6 * np.eye(X.shape[1])
    np.testing.assert_allclose(new.means, means, rtol=1e-10)
    np.testing.assert_allclose(new.covariances, covs, rtol=1e-9)
    np.testing.assert_allclose(new.weights, nk / nk.sum(), rtol=1e-12)
    ll = log_norm.sum() if w is None else log_norm @ w
    assert st["ll"] == pytest.approx(ll, rel=1e-12)
    assert st["n"] == pytest.approx(len(X) if w is None else w.sum())


@pytest.mark.parametrize("cov", COV_TYPES)
def test_chunk_sums_equal_one_block(cov):
    X = make_blobs(1000)
    p = _params(X, cov)
    plan = _plan(p)
    whole = estep_statistics(X, None, 0, plan).stats[0]
    bounds = [0, 7, 300, 301, 650, 1000]
    parts = [estep_statistics(X[a:b], None, a, plan) for a, b in itertools.pairwise(bounds)]
    summed = tree_reduce(parts, combine, 2).stats[0]
    for key in whole:
        np.testing.assert_allclose(summed[key], whole[key], rtol=1e-11, atol=1e-9)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_tiles_do_not_change_statistics(cov):
    X = make_blobs(1000)
    p = _params(X, cov)
    a = estep_statistics(X, None, 0, _plan(p, tile_bytes=1)).stats[0]  # 256-row tiles
    b = estep_statistics(X, None, 0, _plan(p, tile_bytes=2**30)).stats[0]
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-11, atol=1e-9)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_large_offset_gives_same_covariances(cov):
    """Data shifted by 1e6: second moments about reference points do not cancel."""
    X = make_blobs(2000)
    p = _params(X, cov)
    shifted = GaussianParams(p.covariance, p.weights, p.means + 1e6, p.covariances,
                             p.precisions_cholesky, p.covariances_cholesky)
    model = GaussianModel(3, cov, 1e-6)
    c0, c1 = p.weights @ p.means, shifted.weights @ shifted.means
    st0 = estep_statistics(X, None, 0, _plan(p)).stats[0]
    st1 = estep_statistics(X + 1e6, None, 0, _plan(shifted)).stats[0]
    new0, new1 = model.m_step(st0, c0, p), model.m_step(st1, c1, shifted)
    np.testing.assert_allclose(new1.covariances, new0.covariances, rtol=1e-7)
    np.testing.assert_allclose(new1.means - 1e6, new0.means, atol=1e-8)
    # The raw formula sum(r x x^T)/n - mu mu^T loses everything at this offset:
    Xs = X + 1e6
    naive = (Xs.T @ Xs) / len(Xs) - np.outer(Xs.mean(0), Xs.mean(0))
    assert not np.allclose(naive, np.cov(X.T, bias=True), rtol=1e-6)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_candidates_sharing_a_pass_get_what_they_would_alone(cov):
    """Models of other sizes share one read and get, bit for bit, what each would get
    alone."""
    X = make_blobs(600)
    ps = [_params(X, cov, k=k, seed=s) for k, s in [(3, 0), (2, 1), (4, 2)]]
    comps = [Components.gaussian(p.covariance, p.weights, p.means, p.precisions_cholesky)
             for p in ps]
    c0 = X.mean(axis=0)
    plan = make_plan(comps, c0)
    assert len(plan.groups) == 3  # one group per model (restarts of one would share)
    together = estep_statistics(X, None, 0, plan).stats
    for comp, st in zip(comps, together, strict=True):
        alone = estep_statistics(X, None, 0, make_plan([comp], c0)).stats[0]
        for key in st:
            np.testing.assert_array_equal(st[key], alone[key])


@pytest.mark.parametrize("cov", COV_TYPES)
def test_restarts_share_batched_products_bit_for_bit(cov):
    X = make_blobs(600)
    ps = [_params(X, cov, seed=s) for s in range(3)]
    comps = [Components.gaussian(p.covariance, p.weights, p.means, p.precisions_cholesky)
             for p in ps]
    c0 = X.mean(axis=0)
    plan = make_plan(comps, c0)
    assert len(plan.groups) == 1 and plan.groups[0].batch.n_components == 9
    for comp, st in zip(comps, estep_statistics(X, None, 0, plan).stats, strict=True):
        alone = estep_statistics(X, None, 0, make_plan([comp], c0)).stats[0]
        for key in st:
            np.testing.assert_array_equal(st[key], alone[key])


def test_mixed_covariance_types_share_a_pass():
    X = make_blobs(500)
    ps = [_params(X, cov) for cov in COV_TYPES]
    comps = [Components.gaussian(p.covariance, p.weights, p.means, p.precisions_cholesky)
             for p in ps]
    plan = make_plan(comps, X.mean(axis=0))
    assert {g.batch.cov.name for g in plan.groups} == set(COV_TYPES)
    for p, st in zip(ps, estep_statistics(X, None, 0, plan).stats, strict=True):
        log_norm, _ = _resp(X, p)
        assert st["ll"] == pytest.approx(log_norm.sum(), rel=1e-12)


def test_float32_compute_accumulates_in_float64():
    X = make_blobs(5000)
    p = _params(X, "full")
    model = GaussianModel(3, "full", 1e-6)
    c0 = p.weights @ p.means
    a = estep_statistics(X, None, 0, _plan(p)).stats[0]
    b = estep_statistics(X, None, 0, _plan(p, dtype="float32")).stats[0]
    assert all(np.asarray(v).dtype == np.float64 for v in b.values())
    np.testing.assert_allclose(model.m_step(b, c0, p).covariances,
                               model.m_step(a, c0, p).covariances, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_float32_compute_with_large_offset(cov):
    """Centring happens in float64 before the cast, so an offset of 1e6 costs nothing."""
    X = make_blobs(5000)
    p = _params(X, cov)
    shifted = GaussianParams(p.covariance, p.weights, p.means + 1e6, p.covariances,
                             p.precisions_cholesky, p.covariances_cholesky)
    model = GaussianModel(3, cov, 1e-6)
    a = estep_statistics(X, None, 0, _plan(p, dtype="float32")).stats[0]
    b = estep_statistics(X + 1e6, None, 0, _plan(shifted, dtype="float32")).stats[0]
    np.testing.assert_allclose(model.m_step(b, shifted.weights @ shifted.means,
                                            shifted).covariances,
                               model.m_step(a, p.weights @ p.means, p).covariances,
                               rtol=1e-5)


def test_entropy_statistic_is_the_responsibilities_negative_entropy():
    X = make_blobs(400)
    p = _params(X, "diag")
    st = estep_statistics(X, None, 0, _plan(p, entropy=True)).stats[0]
    _, resp = _resp(X, p)
    expected = np.sum(np.where(resp > 0, resp * np.log(resp), 0.0))
    assert st["ent"] == pytest.approx(expected, rel=1e-10)
    scored = score_statistics(X, None, 0, _plan(p))
    assert scored["ent"] == pytest.approx(expected, rel=1e-10)


def test_digest_changes_with_one_value():
    X = make_blobs(300)
    p = _params(X, "full")
    a = estep_statistics(X, None, 0, _plan(p, digest=True)).digests
    Y = X.copy()
    Y[150, 2] = np.nextafter(Y[150, 2], 0)
    b = estep_statistics(Y, None, 0, _plan(p, digest=True)).digests
    assert set(a) == {0} and a != b


def test_steady_state_tiles_reuse_the_workspace():
    """After a first chunk, later chunks of the same shape allocate no new buffers."""
    X = make_blobs(4000)
    p = _params(X, "full")
    plan = _plan(p, tile_bytes=1)
    estep_statistics(X[:2000], None, 0, plan)
    ws = workspace()
    before = {key: buf.ctypes.data for key, buf in ws._buffers.items()}
    estep_statistics(X[2000:], None, 2000, plan)
    after = {key: buf.ctypes.data for key, buf in ws._buffers.items()}
    assert before == after


@pytest.mark.parametrize("kernel", ["numpy", "compiled"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_every_workspace_buffer_starts_on_a_cache_line(kernel, dtype):
    """The buffers an E-step leaves in its thread's workspace start at multiples of 64
    bytes (so a tile's rows start on cache lines), and hold what they were asked for."""
    from daskgmm.engine.workspace import ALIGNMENT, Workspace

    if kernel == "compiled":
        pytest.importorskip("numba")
    X = make_blobs(1500)

    def run() -> dict:
        estep_statistics(X, None, 0, _plan(_params(X, "full"), kernel=kernel, dtype=dtype))
        return dict(workspace()._buffers)

    with ThreadPoolExecutor(1) as pool:  # a fresh thread: a fresh workspace
        buffers = pool.submit(run).result()
    assert buffers
    for key, buf in buffers.items():
        assert buf.ctypes.data % ALIGNMENT == 0, key
    ws = Workspace()
    for size in (1, 3, 1000):
        a = ws.get(f"b{size}", (size,), np.float32)
        assert a.ctypes.data % ALIGNMENT == 0 and a.shape == (size,)
        a[:] = 7  # writable, and of its own
        assert (ws.get(f"b{size}", (size,), np.float32) == 7).all()


@pytest.mark.parametrize("kernel", ["numpy", "compiled"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cov", COV_TYPES)
def test_statistics_do_not_depend_on_what_the_workspace_held(cov, dtype, kernel):
    """A chunk's statistics are the same bits when every workspace buffer holds NaN
    before the chunk (whatever an earlier chunk, or the allocator, left there)."""
    if kernel == "compiled":
        pytest.importorskip("numba")
    X = make_blobs(1500)
    plan = _plan(_params(X, cov), kernel=kernel, dtype=dtype, tile_bytes=1)

    def run() -> tuple:
        first = estep_statistics(X, None, 0, plan)
        for buf in workspace()._buffers.values():
            buf[...] = np.nan
        return first, estep_statistics(X, None, 0, plan)

    with ThreadPoolExecutor(1) as pool:
        clean, poisoned = pool.submit(run).result()
    for a, b in zip(clean.stats, poisoned.stats, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("cov", COV_TYPES)
def test_hard_assignment_statistics_give_sklearn_kmeans_initialisation(cov):
    """The one-hot statistics of the nearest centres, through the M-step, equal
    scikit-learn's _estimate_gaussian_parameters of the same labels."""
    from daskgmm.engine.estep import hard_assignment_statistics
    from daskgmm.engine.starts import identity_plan

    X = make_blobs(700)
    centres = X[[3, 300, 600]] + 0.1
    plan = identity_plan([(cov_types.get(cov), centres)], centres.mean(axis=0))
    st = hard_assignment_statistics(X, None, 0, plan).stats[0]
    state = GaussianModel(3, cov, 1e-6).m_step(st, centres.mean(axis=0), Reference(centres))
    labels = ((X[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    _, means, covs = _estimate_gaussian_parameters(X, np.eye(3)[labels], 1e-6, cov)
    np.testing.assert_allclose(state.means, means, rtol=1e-12)
    np.testing.assert_allclose(state.covariances, covs, rtol=1e-10)


def test_degenerate_component_is_named():
    from daskgmm.errors import DegenerateComponentError

    cov = np.stack([np.eye(2), np.zeros((2, 2)), np.eye(2)])
    with pytest.raises(DegenerateComponentError, match=r"component\(s\) 1 .*"):
        cov_types.get("full").precisions_cholesky(cov)
    with pytest.raises(DegenerateComponentError, match="increase reg_covar"):
        cov_types.get("spherical").precisions_cholesky(np.array([1.0, 0.0]))


@pytest.mark.parametrize("n_features", [16, 63, 64, 130])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_affine_tile_is_the_centred_transpose_with_a_row_of_ones(n_features, dtype):
    """Narrow rows are transposed in one call, wide ones block by block (a last block
    shorter than the others included): the same numbers either way."""
    from daskgmm.engine.estep import _affine_tile

    rng = np.random.default_rng(n_features)
    X = rng.normal(size=(1000, n_features)) + 1e3
    centre = X.mean(axis=0)
    sl = slice(37, 37 + 301)
    xt = _affine_tile(X, sl, centre, np.dtype(dtype), workspace(), 0)
    expected = (X[sl] - centre).T.astype(dtype)
    assert xt.shape == (n_features + 1, 301) and xt.dtype == dtype
    np.testing.assert_array_equal(xt[:n_features], expected)
    np.testing.assert_array_equal(xt[n_features], 1.0)
