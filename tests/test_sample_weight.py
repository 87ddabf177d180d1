"""``sample_weight``: integer weights give the model of the rows repeated (the defining
property), on NumPy and on Dask arrays on a 2-process LocalCluster, for both mixtures."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGM

from daskgmm import BayesianGaussianMixture, GaussianMixture
from daskgmm.engine.passes import RowChunks
from daskgmm.engine.starts import state_from_responsibilities
from daskgmm.engine.survey import survey
from daskgmm.errors import InvalidDataError

from .conftest import make_blobs

COV_TYPES = ["full", "tied", "diag", "spherical"]
RTOL = 1e-10


@pytest.fixture(scope="module")
def data():
    X = make_blobs(1200, d=3, k=3)
    w = np.random.default_rng(5).integers(0, 4, size=len(X))
    return X, w, np.repeat(X, w, axis=0)


def _init(X, cov):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SkGM(3, covariance_type=cov, max_iter=1, random_state=0).fit(X)
    return {"weights_init": sk.weights_, "means_init": sk.means_,
            "precisions_init": sk.precisions_}


def _assert_same(a, b, rtol=RTOL):
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(a, attr), getattr(b, attr), rtol=rtol,
                                   atol=1e-13, err_msg=attr)
    np.testing.assert_allclose(a.lower_bounds_, b.lower_bounds_, rtol=rtol)
    assert a.n_iter_ == b.n_iter_ and a.converged_ == b.converged_


@pytest.mark.parametrize("cov", COV_TYPES)
def test_integer_weights_equal_repeated_rows(cov, data):
    X, w, repeated = data
    kw = dict(covariance_type=cov, tol=1e-6, **_init(X, cov))
    weighted = GaussianMixture(3, **kw).fit(X, sample_weight=w)
    _assert_same(weighted, GaussianMixture(3, **kw).fit(repeated))
    # ... and the same as scikit-learn's fit of the repeated rows
    _assert_same(weighted, SkGM(3, **kw).fit(repeated), rtol=1e-6)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_integer_weights_on_a_local_cluster(cov, data, client):
    X, w, repeated = data
    kw = dict(covariance_type=cov, tol=1e-6, **_init(X, cov))
    # Weights chunked unlike the data: they are rechunked to its rows.
    fitted = GaussianMixture(3, **kw).fit(da.from_array(X, chunks=(250, 3)),
                                          sample_weight=da.from_array(w, chunks=400))
    _assert_same(fitted, GaussianMixture(3, **kw).fit(repeated))


@pytest.mark.parametrize("cov", COV_TYPES)
def test_bayesian_integer_weights_equal_repeated_rows(cov, data):
    """The priors (the data's weighted mean and covariance) and every update."""
    X, w, repeated = data
    resp = np.random.default_rng(0).dirichlet(np.ones(3), size=len(X))
    kw = dict(n_components=3, covariance_type=cov, tol=0.0, max_iter=15,
              warm_start=True)

    def start(Z, r, weights=None):
        """Priors of the (weighted) data, then the parameters of responsibilities r."""
        est = BayesianGaussianMixture(**kw)
        est._validate_params()
        est._resolve(survey(RowChunks(Z, weights=weights), indices=None, moments=True,
                            digest=False, split_every=8)[0])
        model = est._make_model(3, 3)
        est._set_attributes(state_from_responsibilities(model, Z, r, weights))
        est.converged_, est.lower_bound_, est.n_features_in_ = False, -np.inf, 3
        return est

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = start(X, resp, w).fit(X, sample_weight=w)
        plain = start(repeated, np.repeat(resp, w, axis=0)).fit(repeated)
    np.testing.assert_allclose(weighted.mean_prior_, plain.mean_prior_, rtol=RTOL)
    np.testing.assert_allclose(weighted.covariance_prior_, plain.covariance_prior_,
                               rtol=RTOL)
    for attr in ("weights_", "means_", "covariances_", "degrees_of_freedom_"):
        np.testing.assert_allclose(getattr(weighted, attr), getattr(plain, attr),
                                   rtol=1e-9, err_msg=attr)
    np.testing.assert_allclose(weighted.lower_bounds_, plain.lower_bounds_, rtol=1e-9)


def test_zero_weights_equal_removed_rows(data):
    X, w, _ = data
    keep = w > 0
    kw = dict(covariance_type="full", tol=1e-6, **_init(X, "full"))
    _assert_same(GaussianMixture(3, **kw).fit(X, sample_weight=keep.astype(float)),
                 GaussianMixture(3, **kw).fit(X[keep]))


def test_weighted_score_is_the_weighted_mean(data):
    X, w, repeated = data
    gm = GaussianMixture(3, random_state=0).fit(X)
    assert gm.score(X, sample_weight=w) == pytest.approx(gm.score(repeated), rel=1e-12)
    dask_score = gm.score(da.from_array(X, chunks=300),
                          sample_weight=da.from_array(w, chunks=500))
    assert dask_score == pytest.approx(gm.score(repeated), rel=1e-12)


def test_weights_steer_the_kmeans_initialisation():
    """With every weight on one cluster's rows, a one-component fit is that cluster."""
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(size=(500, 2)), rng.normal(size=(500, 2)) + 20])
    w = np.r_[np.zeros(500), np.ones(500)]
    gm = GaussianMixture(1, random_state=0).fit(X, sample_weight=w)
    np.testing.assert_allclose(gm.means_[0], X[500:].mean(axis=0), rtol=1e-10)


@pytest.mark.parametrize(("weights", "match"), [
    (lambda n: -np.ones(n), "finite and non-negative"),
    (lambda n: np.r_[np.nan, np.ones(n - 1)], "finite and non-negative"),
    (lambda n: np.ones(n - 1), r"one weight per sample, shape \(1200,\)"),
    (lambda n: np.zeros(n), "must not be all zero"),
    (lambda n: np.array(["a"] * n), "numeric"),
])
def test_bad_weights_are_refused(data, weights, match):
    X, _, _ = data
    with pytest.raises(InvalidDataError, match=match):
        GaussianMixture(2).fit(X, sample_weight=weights(len(X)))


def test_bad_dask_weights_name_the_rows(data):
    X, _, _ = data
    w = np.ones(len(X))
    w[700] = -1.0
    with pytest.raises(InvalidDataError, match=r"rows 600\.\.899 .*first at row 700"):
        GaussianMixture(2, random_state=0).fit(da.from_array(X, chunks=(300, 3)),
                                               sample_weight=da.from_array(w, chunks=300))
