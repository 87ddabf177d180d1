"""Same initial parameters -> same fitted parameters as scikit-learn (<= 1e-6 relative)."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGM

from daskgmm import GaussianMixture

COV_TYPES = ["full", "tied", "diag", "spherical"]
RTOL = 1e-6


def _initial(X, cov, k=3):
    """Deliberately rough starting parameters (two EM steps from k-means)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = SkGM(k, covariance_type=cov, max_iter=1, random_state=0).fit(X)
    return {"weights_init": sk.weights_, "means_init": sk.means_,
            "precisions_init": sk.precisions_}


def _assert_same_fit(ours, ref):
    np.testing.assert_allclose(ours.weights_, ref.weights_, rtol=RTOL)
    np.testing.assert_allclose(ours.means_, ref.means_, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(ours.covariances_, ref.covariances_, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(ours.precisions_cholesky_, ref.precisions_cholesky_,
                               rtol=RTOL, atol=1e-12)
    assert ours.lower_bound_ == pytest.approx(ref.lower_bound_, rel=RTOL)
    np.testing.assert_allclose(ours.lower_bounds_, ref.lower_bounds_, rtol=RTOL)
    assert ours.n_iter_ == ref.n_iter_
    assert ours.converged_ == ref.converged_


def _pair(cov, X, **kw):
    init = _initial(X, cov)
    ref = SkGM(3, covariance_type=cov, tol=1e-5, **init, **kw).fit(X)
    ours = GaussianMixture(3, covariance_type=cov, tol=1e-5, **init, **kw)
    return ours, ref


@pytest.mark.parametrize("cov", COV_TYPES)
def test_parity_numpy(cov, blobs):
    ours, ref = _pair(cov, blobs)
    _assert_same_fit(ours.fit(blobs), ref)
    assert ref.n_iter_ > 3  # the comparison covers several iterations


@pytest.mark.parametrize("cov", COV_TYPES)
def test_parity_dask_on_local_cluster(cov, blobs, client):
    ours, ref = _pair(cov, blobs)
    X = da.from_array(blobs, chunks=(250, 3))
    assert len(client.scheduler_info()["workers"]) >= 2
    _assert_same_fit(ours.fit(X), ref)
    np.testing.assert_array_equal(ours.predict(X).compute(), ref.predict(blobs))


@pytest.mark.parametrize("cov", COV_TYPES)
def test_parity_dask_chunked_along_features(cov, blobs):
    """Any chunking is accepted: columns are merged into row chunks."""
    ours, ref = _pair(cov, blobs)
    X = da.from_array(blobs, chunks=(700, 2))
    _assert_same_fit(ours.fit(X), ref)


def test_parity_max_iter_not_converged(blobs):
    ours, ref = _pair("full", blobs, max_iter=2)
    with pytest.warns(ConvergenceWarning):
        ours.fit(blobs)
    _assert_same_fit(ours, ref)


def test_parity_float32_input(blobs):
    X32 = blobs.astype(np.float32)
    init = _initial(blobs, "diag")
    ref = SkGM(3, covariance_type="diag", tol=1e-5, **init).fit(X32.astype(np.float64))
    ours = GaussianMixture(3, covariance_type="diag", tol=1e-5, **init).fit(X32)
    _assert_same_fit(ours, ref)


def test_predictions_match_sklearn(blobs):
    ours, ref = _pair("full", blobs)
    ours.fit(blobs)
    np.testing.assert_array_equal(ours.predict(blobs), ref.predict(blobs))
    np.testing.assert_allclose(ours.predict_proba(blobs), ref.predict_proba(blobs),
                               rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(ours.score_samples(blobs), ref.score_samples(blobs), rtol=1e-9)
    assert ours.score(blobs) == pytest.approx(ref.score(blobs), rel=1e-9)
    assert ours.bic(blobs) == pytest.approx(ref.bic(blobs), rel=1e-9)
    assert ours.aic(blobs) == pytest.approx(ref.aic(blobs), rel=1e-9)


def test_warm_start_matches_sklearn(blobs):
    init = _initial(blobs, "full")
    kw = dict(covariance_type="full", tol=1e-6, max_iter=3, warm_start=True, **init)
    ref, ours = SkGM(3, **kw), GaussianMixture(3, **kw)
    for _ in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ref.fit(blobs)
            ours.fit(blobs)
        _assert_same_fit(ours, ref)


def test_iris_seed_example(iris):
    gm = GaussianMixture(n_components=3, random_state=0).fit(iris)
    expected = np.array([[5.006, 3.428, 1.462, 0.246], [5.917, 2.778, 4.205, 1.298],
                         [6.546, 2.949, 5.484, 1.987]])
    order = np.argsort(gm.means_[:, 2])
    np.testing.assert_allclose(gm.means_[order], expected, atol=2e-3)
    assert gm.lower_bound_ == pytest.approx(-1.2015, abs=1e-3)
    assert gm.converged_


def test_iris_out_of_core_equals_in_memory(iris):
    a = GaussianMixture(3, random_state=0, chunk_rows=40).fit(iris)
    b = GaussianMixture(3, random_state=0).fit(da.from_array(iris, chunks=(40, 4)))
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.covariances_, b.covariances_)
