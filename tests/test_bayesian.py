"""``daskgmm.BayesianGaussianMixture`` against scikit-learn's, on NumPy, on Dask arrays on
a 2-process LocalCluster, through checkpoints and saved models."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture as SkBGM

from daskgmm import BayesianGaussianMixture, load

from .conftest import make_blobs

COV_TYPES = ["full", "tied", "diag", "spherical"]
PRIORS = ["dirichlet_process", "dirichlet_distribution"]


def _from_responsibilities(cls, X, resp, **kw):
    """An estimator initialised from ``resp`` as scikit-learn's ``_initialize`` does,
    ready to iterate with ``warm_start``."""
    est = cls(n_components=resp.shape[1], warm_start=True, **kw)
    est._check_parameters(X)
    est._initialize(X, resp)
    est.converged_, est.lower_bound_, est.n_features_in_ = False, -np.inf, X.shape[1]
    return est


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("cov", COV_TYPES)
def test_iterations_match_sklearn_from_the_same_responsibilities(cov, prior):
    X = make_blobs(1500, d=3, k=3)
    resp = np.random.default_rng(0).dirichlet(np.ones(4), size=len(X))
    kw = dict(covariance_type=cov, weight_concentration_prior_type=prior, max_iter=25,
              tol=0.0)
    ref = _from_responsibilities(SkBGM, X, resp, **kw)
    ours = _from_responsibilities(BayesianGaussianMixture, X, resp, **kw)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=1e-10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ref.fit(X)
        ours.fit(X)
    # scikit-learn's 'tied' bounds are 1-element arrays: ravel them.
    np.testing.assert_allclose(ours.lower_bounds_, np.ravel(ref.lower_bounds_), rtol=1e-8)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_",
                 "mean_precision_", "degrees_of_freedom_"):
        np.testing.assert_allclose(getattr(ours, attr), getattr(ref, attr), rtol=1e-8,
                                   atol=1e-12, err_msg=attr)
    np.testing.assert_allclose(np.asarray(ours.weight_concentration_),
                               np.asarray(ref.weight_concentration_), rtol=1e-8)


def _aligned(model):
    order = np.lexsort(np.asarray(model.means_).T[::-1])
    return order


@pytest.mark.parametrize("cov", COV_TYPES)
def test_well_separated_data_give_sklearns_solution(cov):
    """Different initialisations (daskgmm's k-means numbers its clusters in another
    order), the same optimum. (A Dirichlet-process prior makes the optimum depend on the
    order of the components, so the order-free Dirichlet distribution is compared.)"""
    rng = np.random.default_rng(1)
    centres = np.array([[0.0, 0.0], [12.0, 0.0], [0.0, 12.0]])
    X = np.concatenate([c + rng.normal(size=(700, 2)) for c in centres])
    kw = dict(n_components=3, covariance_type=cov, tol=1e-9, max_iter=500, random_state=0,
              weight_concentration_prior_type="dirichlet_distribution")
    ref = SkBGM(**kw).fit(X)
    ours = BayesianGaussianMixture(**kw).fit(X)
    a, b = _aligned(ours), _aligned(ref)
    np.testing.assert_allclose(ours.weights_[a], ref.weights_[b], rtol=1e-4)
    np.testing.assert_allclose(ours.means_[a], ref.means_[b], rtol=1e-4, atol=1e-6)
    cov_a = ours.covariances_ if cov == "tied" else ours.covariances_[a]
    cov_b = ref.covariances_ if cov == "tied" else ref.covariances_[b]
    np.testing.assert_allclose(cov_a, cov_b, rtol=1e-4)
    assert ours.lower_bound_ == pytest.approx(float(np.ravel(ref.lower_bound_)[0]),
                                              rel=1e-6)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_dask_on_a_local_cluster_equals_numpy(cov, client):
    X = make_blobs(3000, d=3, k=3)
    kw = dict(n_components=4, covariance_type=cov, random_state=0, n_init=2, tol=1e-6)
    a = BayesianGaussianMixture(**kw).fit(X)
    b = BayesianGaussianMixture(**kw, chunk_rows=1000).fit(da.from_array(X, chunks=500))
    # The same chunking and BLAS threads: the same numbers.
    c = BayesianGaussianMixture(**kw).fit(np.asarray(X))
    np.testing.assert_array_equal(a.means_, c.means_)
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-9)
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=1e-9)
    assert b.lower_bounds_ == pytest.approx(a.lower_bounds_, rel=1e-10)
    labels = b.predict(da.from_array(X, chunks=500))
    assert isinstance(labels, da.Array)
    np.testing.assert_array_equal(labels.compute(), a.predict(X))


def test_dirichlet_process_switches_off_superfluous_components():
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    X = np.concatenate([c + rng.normal(size=(1000, 2)) for c in centres])
    kw = dict(n_components=8, random_state=0, max_iter=500, weight_concentration_prior=1e-3)
    model = BayesianGaussianMixture(**kw).fit(X)
    assert (model.weights_ > 0.05).sum() == 3
    assert (SkBGM(**kw).fit(X).weights_ > 0.05).sum() == 3


def test_save_load_and_to_sklearn(tmp_path):
    X = make_blobs(800, d=3, k=3)
    for prior in PRIORS:
        for cov in COV_TYPES:
            model = BayesianGaussianMixture(n_components=3, covariance_type=cov,
                                            weight_concentration_prior_type=prior,
                                            random_state=0).fit(X)
            loaded = load(model.save(tmp_path / f"{prior}-{cov}"))
            assert type(loaded) is BayesianGaussianMixture
            np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
            np.testing.assert_array_equal(loaded.score_samples(X), model.score_samples(X))
            assert loaded.covariance_prior_ == pytest.approx(model.covariance_prior_)
            sk = model.to_sklearn()
            np.testing.assert_allclose(sk.predict_proba(X), model.predict_proba(X),
                                       rtol=1e-9, atol=1e-12)


def test_checkpoint_resume_is_identical(tmp_path):
    X = make_blobs(2000, d=3, k=3)
    kw = dict(n_components=4, random_state=0, tol=0.0, n_init=2, chunk_rows=500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clean = BayesianGaussianMixture(max_iter=12, **kw).fit(X)
        BayesianGaussianMixture(max_iter=5, checkpoint_dir=tmp_path, **kw).fit(X)
        resumed = BayesianGaussianMixture(max_iter=12, checkpoint_dir=tmp_path, **kw).fit(X)
    np.testing.assert_array_equal(resumed.means_, clean.means_)
    np.testing.assert_array_equal(resumed.covariances_, clean.covariances_)
    assert resumed.lower_bounds_ == clean.lower_bounds_


def test_prior_mistakes_are_refused():
    X = make_blobs(100, d=3, k=2)
    with pytest.raises(ValueError, match=r"'degrees_of_freedom_prior' should be greater "
                                         r"than 2, but got 1\.000"):
        BayesianGaussianMixture(degrees_of_freedom_prior=1.0).fit(X)
    with pytest.raises(ValueError, match=r"'full covariance_prior' should have the shape"):
        BayesianGaussianMixture(covariance_prior=np.eye(2)).fit(X)
    with pytest.raises(ValueError, match=r"'tied precision' should be symmetric"):
        BayesianGaussianMixture(covariance_type="tied",
                                covariance_prior=-np.eye(3)).fit(X)
