"""The estimators with ``missing='marginalize'``: NaN marks a missing value and EM fits
the observed values.

References: today's fit on complete data (the same numbers), SciPy's multivariate normal
on each row's observed features (the marginal densities), the monotonicity of EM, the
fit without the rows that have no observed value, an uninterrupted fit (checkpoints), the
same fit on NumPy input (a 2-process cluster reading Zarr), and the criteria recomputed
from ``score_samples`` by the documented convention.
"""

from __future__ import annotations

import math
import warnings

import dask.array as da
import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import multivariate_normal
from sklearn.exceptions import ConvergenceWarning

import daskgmm
import daskgmm.engine.starts as starts
from daskgmm import BayesianGaussianMixture, GaussianMixture, GaussianMixtureSelector
from daskgmm.errors import InvalidDataError, NonFiniteDataError

from .conftest import make_blobs

COV_TYPES = ["full", "tied", "diag", "spherical"]


def _holes(X: np.ndarray, fraction: float, seed: int, empty: int = 0) -> np.ndarray:
    """``X`` with values missing completely at random, and its first ``empty`` rows
    missing every value."""
    rng = np.random.default_rng(seed)
    X = X.copy()
    X[rng.random(X.shape) < fraction] = np.nan
    X[:empty] = np.nan
    return X


def _separated(n: int = 2000, d: int = 4, seed: int = 0) -> np.ndarray:
    """Three well-separated spherical clusters."""
    rng = np.random.default_rng(seed)
    centres = np.array([[-6.0] * d, [0.0] * d, [6.0] * d])
    centres[1, 0] = 6.0
    return centres[rng.integers(3, size=n)] + rng.normal(size=(n, d))


def _dense_covariances(gm: GaussianMixture) -> np.ndarray:
    K, D = gm.means_.shape
    c = np.asarray(gm.covariances_, dtype=np.float64)
    return {"full": lambda: c, "tied": lambda: np.broadcast_to(c, (K, D, D)),
            "diag": lambda: np.stack([np.diag(v) for v in c]),
            "spherical": lambda: c[:, None, None] * np.eye(D)}[gm.covariance_type]()


def _scipy_marginal_log_density(gm: GaussianMixture, X: np.ndarray) -> np.ndarray:
    """``log sum_k w_k N(x_o | mu_k,o, Sigma_k,oo)`` row by row (0 for a row with no
    observed value)."""
    covs = _dense_covariances(gm)
    out = np.zeros(len(X))
    for i, row in enumerate(X):
        o = ~np.isnan(row)
        if not o.any():
            continue
        terms = [math.log(w) + multivariate_normal(m[o], c[np.ix_(o, o)]).logpdf(row[o])
                 for w, m, c in zip(gm.weights_, gm.means_, covs, strict=True)]
        out[i] = logsumexp(terms)
    return out


# ---------------------------------------------------------------------------------------
# complete data: today's fit
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["numpy", "dask"])
@pytest.mark.parametrize("cov", COV_TYPES)
def test_complete_data_give_todays_fit(cov, kind):
    """Without a NaN, ``missing='marginalize'`` fits what ``missing='error'`` fits (the
    same start, iterations and parameters, to 1e-9)."""
    X = make_blobs(2000, 3, 3)
    data = X if kind == "numpy" else da.from_array(X, chunks=(500, 3))
    today = GaussianMixture(3, covariance_type=cov, random_state=0).fit(data)
    ours = GaussianMixture(3, covariance_type=cov, random_state=0,
                           missing="marginalize").fit(data)
    assert ours.n_iter_ == today.n_iter_
    assert ours.lower_bound_ == pytest.approx(today.lower_bound_, rel=1e-9, abs=0)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(today, name), rtol=1e-9,
                                   atol=1e-12)
    assert ours.n_empty_rows_ == 0.0 and ours.observed_fraction_ == 1.0
    np.testing.assert_array_equal(ours.score_samples(X), today.score_samples(X))


@pytest.mark.parametrize("init", ["kmeans", "random"])
def test_complete_data_give_todays_start_from_a_pass(init, monkeypatch):
    """The same when the start needs a pass (data larger than the sample); with
    missing values every fit runs the survey (``'random'`` needs none otherwise)."""
    monkeypatch.setattr(starts, "SAMPLE_ROWS", 500)
    X = make_blobs(3000, 3, 3, seed=4)
    fits = [GaussianMixture(3, init_params=init, random_state=0, n_init=2, chunk_rows=500,
                            missing=missing).fit(X)
            for missing in ("error", "marginalize")]
    assert fits[1].passes_ == {"survey": 1.0, **fits[0].passes_}
    assert fits[1].passes_["init"] >= 1
    assert fits[1].lower_bounds_ == pytest.approx(fits[0].lower_bounds_, rel=1e-9, abs=0)
    np.testing.assert_allclose(fits[1].means_, fits[0].means_, rtol=1e-9, atol=1e-12)


def test_complete_data_give_todays_variational_fit():
    """The same for the Bayesian mixture (its default priors come from the
    available-case moments, which on complete data are the data's moments)."""
    X = make_blobs(1500, 3, 3)
    today = BayesianGaussianMixture(n_components=3, random_state=0).fit(X)
    ours = BayesianGaussianMixture(n_components=3, random_state=0,
                                   missing="marginalize").fit(X)
    assert ours.n_iter_ == today.n_iter_
    assert ours.lower_bound_ == pytest.approx(today.lower_bound_, rel=1e-9, abs=0)
    np.testing.assert_allclose(ours.means_, today.means_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.covariance_prior_, today.covariance_prior_, rtol=1e-9)


# ---------------------------------------------------------------------------------------
# what the fitted model computes
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cov", COV_TYPES)
def test_score_samples_is_the_marginal_density_of_the_observed_values(cov):
    """``score_samples`` of rows with NaN is the log of the fitted mixture's marginal
    density of their observed features (SciPy, row by row); ``predict_proba`` and
    ``predict`` follow from the same densities; ``score`` is their mean over the rows
    with an observed value."""
    X = _holes(make_blobs(1500, 4, 3, seed=1), 0.3, seed=2, empty=2)
    gm = GaussianMixture(3, covariance_type=cov, random_state=0,
                         missing="marginalize").fit(X)
    rows = X[:80]
    expected = _scipy_marginal_log_density(gm, rows)
    np.testing.assert_allclose(gm.score_samples(rows), expected, rtol=1e-9, atol=1e-9)
    proba = gm.predict_proba(rows)
    np.testing.assert_allclose(proba[:2], np.tile(gm.weights_, (2, 1)), rtol=1e-12)
    np.testing.assert_array_equal(gm.predict(rows)[2:], proba[2:].argmax(axis=1))
    assert gm.score(rows) == pytest.approx(expected.sum() / 78, rel=1e-12)


@pytest.mark.parametrize("cov", COV_TYPES)
def test_the_observed_data_log_likelihood_never_decreases(cov):
    """Every EM iteration increases the observed-data mean log-likelihood (what
    ``lower_bounds_`` holds), here with 30% of the values missing."""
    X = _holes(make_blobs(1500, 4, 3, seed=3), 0.3, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, covariance_type=cov, random_state=0, tol=0, max_iter=25,
                             init_params="random", missing="marginalize").fit(X)
    steps = np.diff(gm.lower_bounds_)
    assert steps.min() > -1e-12 * abs(gm.lower_bound_), steps
    assert gm.lower_bounds_[-1] > gm.lower_bounds_[0] + 0.05
    # ...and it is the observed-data log-likelihood: score() of the final parameters
    # is one E-step further, so at least the last bound.
    assert gm.score(X) >= gm.lower_bound_ - 1e-12


def test_the_variational_bound_never_decreases():
    """The Bayesian mixture's bound (with the missing values' entropy) never decreases."""
    X = _holes(make_blobs(1500, 3, 3, seed=5), 0.25, seed=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        bg = BayesianGaussianMixture(n_components=4, random_state=0, tol=0, max_iter=30,
                                     missing="marginalize").fit(X)
    steps = np.diff(bg.lower_bounds_)
    assert steps.min() > -1e-9 * abs(bg.lower_bound_), steps


def test_well_separated_clusters_are_found_with_a_quarter_of_the_values_missing():
    """With 25% of the values missing at random the fitted means are within 0.1 of the
    complete-data fit's, and much closer than a fit after mean imputation."""
    X = _separated()
    holes = _holes(X, 0.25, seed=7)
    complete = GaussianMixture(3, random_state=0).fit(X)
    ours = GaussianMixture(3, random_state=0, missing="marginalize").fit(holes)
    imputed = GaussianMixture(3, random_state=0).fit(
        np.where(np.isnan(holes), np.nanmean(holes, axis=0), holes))

    def gap(gm):
        order = [np.argmin(np.linalg.norm(gm.means_ - m, axis=1)) for m in complete.means_]
        return (np.abs(gm.means_[order] - complete.means_).max(),
                np.abs(gm.covariances_[order] - complete.covariances_).max())

    (mean_gap, cov_gap), (mean_imp, cov_imp) = gap(ours), gap(imputed)
    assert mean_gap < 0.1 and cov_gap < 0.15
    assert cov_imp > 3 * cov_gap and mean_imp > mean_gap


# ---------------------------------------------------------------------------------------
# rows with nothing observed
# ---------------------------------------------------------------------------------------
def test_rows_with_nothing_observed_are_left_out_and_counted():
    """A fit with 30 extra rows of nothing but NaN is the fit without them (from the
    same initial parameters); they are counted in ``n_empty_rows_``, get the mixture
    weights as responsibilities and a score of 0."""
    X = _holes(make_blobs(1200, 3, 3, seed=8), 0.2, seed=9)
    X = X[~np.isnan(X).all(axis=1)]
    init = GaussianMixture(3, random_state=0).fit(np.nan_to_num(X, nan=0.0))
    given = {"weights_init": init.weights_, "means_init": init.means_,
             "precisions_init": init.precisions_}
    with_empty = np.concatenate([np.full((30, 3), np.nan), X])
    a = GaussianMixture(3, missing="marginalize", **given).fit(X)
    b = GaussianMixture(3, missing="marginalize", **given).fit(with_empty)
    assert a.n_iter_ == b.n_iter_
    np.testing.assert_allclose(b.means_, a.means_, rtol=1e-10)
    np.testing.assert_allclose(b.covariances_, a.covariances_, rtol=1e-10)
    assert b.lower_bound_ == pytest.approx(a.lower_bound_, rel=1e-12)
    assert (a.n_empty_rows_, b.n_empty_rows_) == (0.0, 30.0)
    assert b.observed_fraction_ == pytest.approx((~np.isnan(with_empty)).mean())
    np.testing.assert_allclose(b.predict_proba(with_empty[:30]),
                               np.tile(b.weights_, (30, 1)))
    np.testing.assert_allclose(b.score_samples(with_empty[:30]), 0.0, atol=1e-12)
    # BIC counts the rows with an observed value only.
    assert b.bic(with_empty) == pytest.approx(a.bic(X), rel=1e-12)


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random_from_data", "random",
                                  "robust"])
def test_every_start_works_from_observed_values(init, monkeypatch):
    """Every start (on a sample smaller than the data, so that ``'kmeans'`` and
    ``'random'`` read a filled pass) gives finite parameters although a fifth of the
    rows have nothing observed (a start on one of them would not: the starts of single
    rows draw three of them); from ``'kmeans'`` and ``'robust'`` the fit finds the
    three clusters."""
    monkeypatch.setattr(starts, "SAMPLE_ROWS", 500)
    X = _holes(_separated(3000, 3), 0.2, seed=10, empty=600)
    X = X[np.random.default_rng(0).permutation(len(X))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(3, init_params=init, random_state=0, chunk_rows=500,
                             missing="marginalize", max_iter=200).fit(X)
    assert np.isfinite(gm.means_).all() and np.isfinite(gm.lower_bounds_).all()
    assert gm.n_empty_rows_ >= 600
    if init in ("kmeans", "robust"):
        truth = np.array([[-6.0] * 3, [6.0, 0.0, 0.0], [6.0] * 3])
        gaps = np.linalg.norm(gm.means_[:, None] - truth[None], axis=2).min(axis=0)
        assert gaps.max() < 0.3


def test_no_observed_value_at_all_is_an_error():
    X = np.full((50, 3), np.nan)
    with pytest.raises(InvalidDataError, match="no row of the data has an observed value"):
        GaussianMixture(2, missing="marginalize").fit(X)
    X[:, :2] = make_blobs(50, 2, 2)
    with pytest.raises(InvalidDataError, match=r"feature\(s\) \[2\] have no observed value"):
        GaussianMixture(2, missing="marginalize").fit(X)


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_nan_without_the_option_is_an_error_that_names_it(kind):
    X = _holes(make_blobs(600, 3, 2), 0.1, seed=11)
    data = X if kind == "numpy" else da.from_array(X, chunks=(200, 3))
    with pytest.raises(NonFiniteDataError, match="missing='marginalize'"):
        GaussianMixture(2).fit(data)
    fitted = GaussianMixture(2, random_state=0).fit(make_blobs(600, 3, 2))
    with pytest.raises(NonFiniteDataError, match="missing='marginalize'"):
        out = fitted.predict(data)
        if kind == "dask":
            out.compute()


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_infinity_is_still_an_error(kind):
    X = make_blobs(600, 3, 2)
    X[5, 1] = np.inf
    X[7, 0] = np.nan
    data = X if kind == "numpy" else da.from_array(X, chunks=(200, 3))
    with pytest.raises(ValueError, match="infinit"):
        GaussianMixture(2, missing="marginalize").fit(data)


# ---------------------------------------------------------------------------------------
# everywhere a fit runs: a cluster over Zarr, checkpoints, stepwise EM, the selector
# ---------------------------------------------------------------------------------------
def test_zarr_on_a_cluster_gives_the_numpy_fit(client, tmp_path):
    """Out of core (a Zarr store read by a 2-process cluster, ``cache=False``) the fit
    with missing values equals the in-memory one with the same chunks; predictions are
    lazy and equal too."""
    import zarr

    X = _holes(make_blobs(3000, 4, 3, seed=12), 0.25, seed=13, empty=3)
    z = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=X.shape,
                          chunks=(1000, 4), dtype="float64")
    z[:] = X
    data = da.from_zarr(str(tmp_path / "x.zarr"))
    settings = {"covariance_type": "full", "random_state": 0, "missing": "marginalize",
                "max_iter": 3}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        here = GaussianMixture(3, chunk_rows=1000, **settings).fit(X)
        there = GaussianMixture(3, cache=False, **settings).fit(data)
    np.testing.assert_allclose(there.means_, here.means_, rtol=1e-12)
    assert there.lower_bounds_ == pytest.approx(here.lower_bounds_, rel=1e-12)
    assert there.n_empty_rows_ == here.n_empty_rows_ >= 3
    scores = there.score_samples(data)
    assert isinstance(scores, da.Array)
    np.testing.assert_allclose(scores.compute(), here.score_samples(X), rtol=1e-12)


@pytest.mark.parametrize("algorithm", ["batch", "incremental"])
def test_a_resumed_fit_equals_an_uninterrupted_one(tmp_path, algorithm):
    X = _holes(make_blobs(3000, 3, 3, seed=14), 0.25, seed=15, empty=4)
    settings = {"random_state": 0, "chunk_rows": 500, "missing": "marginalize",
                "algorithm": algorithm, "tol": 1e-6}
    whole = BayesianGaussianMixture(n_components=3, **settings).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        BayesianGaussianMixture(n_components=3, max_iter=2, checkpoint_dir=tmp_path,
                                **settings).fit(X)
    resumed = BayesianGaussianMixture(n_components=3, checkpoint_dir=tmp_path,
                                      **settings).fit(X)
    assert resumed.lower_bounds_ == whole.lower_bounds_
    np.testing.assert_array_equal(resumed.means_, whole.means_)
    assert resumed.n_empty_rows_ == whole.n_empty_rows_ >= 4
    # A checkpoint of missing='marginalize' is not resumed by a fit refusing NaN.
    with pytest.raises(daskgmm.errors.CheckpointError, match="missing"):
        BayesianGaussianMixture(n_components=3, checkpoint_dir=tmp_path,
                                **{**settings, "missing": "error"}).fit(
            np.nan_to_num(X))


def test_stepwise_algorithms_reach_batch_em():
    """Incremental EM's bound (the free energy with the missing values' entropy)
    never decreases from its first full pass, and ends on batch EM's optimum; online
    EM ends close to it; ``partial_fit`` takes batches with holes."""
    X = _holes(_separated(6000, 3, seed=16), 0.25, seed=17, empty=5)
    settings = {"random_state": 0, "chunk_rows": 500, "missing": "marginalize",
                "tol": 1e-7}
    batch = GaussianMixture(3, **settings).fit(X)
    incremental = GaussianMixture(3, algorithm="incremental", **settings).fit(X)
    assert np.diff(incremental.lower_bounds_[1:]).min() > -1e-12
    assert incremental.score(X) == pytest.approx(batch.score(X), abs=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        online = GaussianMixture(3, algorithm="online", max_iter=5, **settings).fit(X)
    assert batch.score(X) - online.score(X) < 1e-3
    stream = GaussianMixture(3, random_state=0, missing="marginalize")
    order = np.random.default_rng(0).permutation(len(X))
    for part in np.array_split(X[order], 6):
        stream.partial_fit(part)
    assert batch.score(X) - stream.score(X) < 1e-2


def test_the_selector_chooses_with_missing_values():
    """The selector finds the three clusters with 20% of the values missing; its BIC
    is ``-2 sum_i log p(x_i,o) + p log n`` with ``n`` the rows with an observed value,
    recomputed from the chosen model's ``score_samples``."""
    X = _holes(_separated(1500, 3, seed=18), 0.2, seed=19, empty=6)
    sel = GaussianMixtureSelector(n_components=range(1, 5),
                                  covariance_types=("full", "spherical"), random_state=0,
                                  missing="marginalize").fit(X)
    assert sel.best_params_["n_components"] == 3
    best = sel.best_estimator_
    assert best.missing == "marginalize" and sel.n_empty_rows_ >= 6
    n = (~np.isnan(X)).any(axis=1).sum()
    bic = -2 * best.score_samples(X).sum() + best._n_parameters() * math.log(n)
    assert sel.best_score_ == pytest.approx(bic, rel=1e-9)
    assert best.bic(X) == pytest.approx(bic, rel=1e-9)


# ---------------------------------------------------------------------------------------
# the Bayesian priors, saving
# ---------------------------------------------------------------------------------------
def test_priors_take_the_available_case_moments():
    """The default ``mean_prior`` is each feature's observed mean and the default
    ``covariance_prior`` each pair's covariance over the rows observing both; a
    covariance that is not positive definite gives way to its diagonal, with a
    warning."""
    X = _holes(make_blobs(2000, 3, 3, seed=20), 0.3, seed=21)
    bg = BayesianGaussianMixture(n_components=2, max_iter=2, missing="marginalize",
                                 random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        bg.fit(X)
    np.testing.assert_allclose(bg.mean_prior_, np.nanmean(X, axis=0), rtol=1e-12)
    import pandas as pd

    np.testing.assert_allclose(bg.covariance_prior_, pd.DataFrame(X).cov().to_numpy(),
                               rtol=1e-10)
    # Features 0 and 1 observed together only where they nearly coincide, feature 2
    # with each where it opposes them: no positive definite matrix has these pairs.
    rng = np.random.default_rng(22)
    z = rng.normal(size=(3000, 1))
    Y = np.hstack([z, z + 0.01 * rng.normal(size=(3000, 1)), rng.normal(size=(3000, 1))])
    Y[1000:2000, 2] = -Y[1000:2000, 0]
    Y[2000:, 2] = -Y[2000:, 1]
    Y[1000:2000, 1] = np.nan
    Y[2000:, 0] = np.nan
    Y[:1000, 2] = np.nan
    with pytest.warns(UserWarning, match="not positive definite"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            bg = BayesianGaussianMixture(n_components=2, max_iter=2, missing="marginalize",
                                         random_state=0).fit(Y)
    prior = bg.covariance_prior_
    np.testing.assert_array_equal(prior, np.diag(np.diag(prior)))


def test_saved_model_keeps_the_option(tmp_path):
    X = _holes(make_blobs(800, 3, 2, seed=23), 0.2, seed=24)
    gm = GaussianMixture(2, random_state=0, missing="marginalize").fit(X)
    gm.save(tmp_path / "m")
    loaded = daskgmm.load(tmp_path / "m")
    assert loaded.missing == "marginalize"
    np.testing.assert_array_equal(loaded.score_samples(X), gm.score_samples(X))
