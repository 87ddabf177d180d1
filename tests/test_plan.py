"""The fit plan: where a fit starts, how often it reads the data, degenerate solutions,
online EM's schedule, and the edge cases of weights and streams."""

from __future__ import annotations

import math
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import daskgmm
import daskgmm.engine.starts as starts
from daskgmm import GaussianMixture
from daskgmm.engine.degeneracy import degenerate_components
from daskgmm.engine.em import Candidate, best_candidate
from daskgmm.engine.passes import RowChunks
from daskgmm.engine.stepwise import Online, StepwiseOptions
from daskgmm.errors import InvalidDataError, InvalidParameterError
from daskgmm.models.gaussian import GaussianModel, GaussianParams

from .conftest import make_blobs


def grid_of_clusters(seed: int = 2, n: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    """Sixteen unit-variance clusters on a 4 x 4 grid of spacing 6 in the plane."""
    rng = np.random.default_rng(seed)
    centres = np.array([(i, j) for i in range(4) for j in range(4)], float) * 6.0
    return centres[rng.integers(16, size=n)] + rng.normal(size=(n, 2)), centres


# ---------------------------------------------------------------------------------------
# starts
# ---------------------------------------------------------------------------------------
def test_kmeans_on_data_larger_than_the_sample_keeps_the_best_of_several_runs(
        monkeypatch):
    """On these data one k-means++ run on the sample (scikit-learn's single run) leaves
    EM on a plateau 0.07 nats per sample below EM from the true centres; the best of
    ``KMEANS_RUNS`` runs finds every cluster."""
    monkeypatch.setattr(starts, "SAMPLE_ROWS", 1000)
    X, centres = grid_of_clusters()
    best = GaussianMixture(16, means_init=centres, tol=1e-6).fit(X).score(X)
    monkeypatch.setattr(starts, "KMEANS_RUNS", 1)
    one = GaussianMixture(16, random_state=0, chunk_rows=1000).fit(X).score(X)
    monkeypatch.undo()
    monkeypatch.setattr(starts, "SAMPLE_ROWS", 1000)
    default = GaussianMixture(16, random_state=0, chunk_rows=1000).fit(X).score(X)
    assert best - one > 0.03
    assert best - default < 1e-3


def test_kmeans_on_data_that_fit_the_sample_is_scikit_learns_start():
    """With all the rows in the sample, ``'kmeans'`` is scikit-learn's one k-means run:
    the same fit as scikit-learn's from the same seed."""
    from sklearn.mixture import GaussianMixture as SkGM

    X, _ = grid_of_clusters(n=3000)
    ours = GaussianMixture(16, random_state=3).fit(X)
    theirs = SkGM(16, random_state=3).fit(X)
    assert ours.lower_bound_ == pytest.approx(theirs.lower_bound_, rel=1e-6)
    assert np.sort(ours.weights_) == pytest.approx(np.sort(theirs.weights_), rel=1e-5)


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_robust_start_finds_the_clusters_without_a_pass(monkeypatch, kind):
    """``'robust'`` starts EM from its sample alone (one pass before EM: the survey)
    and ends on the optimum EM from the true centres reaches."""
    monkeypatch.setattr(starts, "SAMPLE_ROWS", 1000)
    X, centres = grid_of_clusters()
    best = GaussianMixture(16, means_init=centres, tol=1e-6).fit(X).score(X)
    data = X if kind == "numpy" else da.from_array(X, chunks=(1000, 2))
    gm = GaussianMixture(16, init_params="robust", random_state=0, chunk_rows=1000,
                         cache=False).fit(data)
    assert gm.passes_["survey"] == 1 and "init" not in gm.passes_
    assert best - gm.score(X) < 1e-3


def _wide_noise_and_two_narrow_modes(n: int = 2000, seed: int = 0):
    """Feature 0 uniform noise of sd 173, feature 1 two modes at -1 and +1 of sd 0.1:
    the clusters are told apart by the feature of small variance."""
    rng = np.random.default_rng(seed)
    y = rng.integers(2, size=n)
    X = np.column_stack([rng.uniform(-300, 300, n),
                         2.0 * y - 1 + rng.normal(scale=0.1, size=n)])
    return X, y


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_robust_seeds_from_scaled_values_split_along_a_feature_of_small_variance(cov):
    """k-means on raw values splits these rows along the wide noise (every seed of
    ``'robust'`` used to come from it); k-means on values scaled to unit variance
    splits them by the two modes, and the seed built from it (the rows assigned to
    the nearest scaled centre) has one component at each mode, and two missing ones
    (the rows with a hole) filled from their own centre."""
    X, y = _wide_noise_and_two_narrow_modes()
    holes = X.copy()
    holes[:2, 1] = np.nan
    filled = np.where(np.isnan(holes), np.nanmean(holes, axis=0), holes)
    sample = starts.SampleRows("wide", filled, None, True, holes=holes)
    model = GaussianModel(2, cov, 1e-6)
    cache = starts.KMeansCache()
    units = starts.unit_scale(filled, None)
    raw = cache.runs(sample, 2, 3, np.random.RandomState(0))
    scaled = cache.runs(sample, 2, 3, np.random.RandomState(0), units=units)
    raw_state = starts._from_assignment(model, filled, None, raw[0][1], holes)
    assert np.abs(raw_state.means[:, 1]).max() < 0.2          # both mix the modes
    state = starts._from_scaled_assignment(model, filled, None, scaled[0][1], units,
                                           holes)
    assert np.sort(state.means[:, 1]) == pytest.approx([-1, 1], abs=0.02)
    assert state.weights == pytest.approx([np.mean(y == 0), np.mean(y == 1)], abs=0.01) \
        or state.weights == pytest.approx([np.mean(y == 1), np.mean(y == 0)], abs=0.01)


def test_unit_scale_is_the_weighted_mean_and_deviation_with_constant_features_kept():
    rng = np.random.default_rng(1)
    rows = np.column_stack([rng.normal(5, 3, 500), np.full(500, 7.0)])
    w = rng.uniform(0.5, 2, 500)
    shift, scale = starts.unit_scale(rows, w)
    z = (rows - shift) / scale
    assert np.average(z[:, 0], weights=w) == pytest.approx(0, abs=1e-12)
    assert np.average(z[:, 0] ** 2, weights=w) == pytest.approx(1, rel=1e-12)
    assert scale[1] == 1.0 and np.abs(z[:, 1]).max() < 1e-12


def test_the_selector_defaults_to_the_robust_start():
    assert daskgmm.GaussianMixtureSelector().init_params == "robust"
    assert GaussianMixture().init_params == "kmeans"


# ---------------------------------------------------------------------------------------
# degenerate solutions
# ---------------------------------------------------------------------------------------
def _state(weights, means, covariances) -> GaussianParams:
    model = GaussianModel(len(weights), "full", 1e-6)
    cov = np.asarray(covariances, dtype=np.float64)
    chol, prec_chol = model.covariance.factorise(cov)
    return GaussianParams(model.covariance, np.asarray(weights, float), np.asarray(means),
                          cov, prec_chol, chol)


def test_a_component_on_a_few_collinear_rows_is_degenerate():
    """Few rows and a covariance flat in one direction (against the pooled one): a
    collapse. A small component with a sound covariance, or a flat one holding many
    rows, is not."""
    model = GaussianModel(3, "full", 1e-6)
    flat = np.diag([1.0, 1e-6])
    sound = np.eye(2)
    state = _state([0.495, 0.495, 0.01], [[0, 0], [9, 9], [4, 4]], [sound, sound, flat])
    assert degenerate_components(model, state, n_samples=500) == [2]  # 5 rows
    assert degenerate_components(model, state, n_samples=50_000) == []  # 500 rows
    small = _state([0.495, 0.495, 0.01], [[0, 0], [9, 9], [4, 4]],
                   [sound, sound, 0.5 * sound])
    assert degenerate_components(model, small, n_samples=500) == []


def test_a_degenerate_restart_loses_to_any_sound_one():
    model = GaussianModel(2, "full", 1e-6)
    state = _state([0.5, 0.5], [[0, 0], [5, 5]], [np.eye(2)] * 2)
    a = Candidate(0, model, state, np.zeros(2), lower_bound=-3.0, degenerate=[1])
    b = Candidate(1, model, state, np.zeros(2), lower_bound=-4.0)
    assert best_candidate([a, b], max_iter=10) is b
    b.degenerate = [0]
    assert best_candidate([a, b], max_iter=10) is a  # all degenerate: the usual rule


# ---------------------------------------------------------------------------------------
# online EM's schedule
# ---------------------------------------------------------------------------------------
class _Cand:
    def __init__(self, k: int) -> None:
        self.model = GaussianModel(k, "full", 1e-6)
        self.index = 0


@pytest.mark.parametrize("batch_chunks", [1, 2, 4])
def test_online_em_steps_as_often_whatever_the_chunking(batch_chunks):
    """The number of online steps per pass depends on the rows, not on the chunks: the
    same data in 20 or in 80 chunks take the same number of steps (give or take the
    rounding of one step per group)."""
    X = np.zeros((400_000, 4))
    steps = {}
    for n_chunks in (20, 80):
        chunks = RowChunks(X, chunk_rows=len(X) // n_chunks)
        online = Online(StepwiseOptions("online", batch_chunks), total_weight=len(X))
        online.begin(chunks, [_Cand(8)])
        steps[n_chunks] = online.n_groups
        assert sorted(i for g in online._groups for i in g) == list(range(n_chunks))
    assert abs(steps[20] - steps[80]) <= 0.1 * steps[80]
    assert 80 <= steps[80] <= 120


def test_online_em_on_chunks_of_different_sizes_reaches_batch_em():
    """The data in 4 or in 40 chunks: after 3 passes online EM is close to batch EM's
    optimum either way."""
    X = make_blobs(60_000, 4, 5, seed=1)
    best = GaussianMixture(5, random_state=0, tol=1e-8, max_iter=300).fit(X).score(X)
    for n_chunks in (4, 40):
        Xd = da.from_array(X, chunks=(len(X) // n_chunks, 4))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gm = GaussianMixture(5, random_state=0, algorithm="online", max_iter=3,
                                 tol=0.0, batch_chunks=2).fit(Xd)
        assert best - gm.score(X) < 2e-3
        assert gm.passes_["em"] == 3  # a group's chunks are read once per pass


# ---------------------------------------------------------------------------------------
# weights and streams
# ---------------------------------------------------------------------------------------
def two_clusters(n: int = 200_000) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.concatenate([rng.normal(-5, 1, (n // 2, 2)), rng.normal(5, 1, (n // 2, 2))])


@pytest.mark.parametrize("kind", ["numpy", "dask"])
def test_sparse_weights_still_give_a_start(kind):
    """12 non-zero weights in 200,000 rows: a uniform sample of the rows would hold
    none; the sample drawn in proportion to the weights holds them all."""
    X = two_clusters()
    w = np.zeros(len(X))
    w[np.random.default_rng(1).choice(len(X), 12, replace=False)] = 1.0
    data, weights = ((X, w) if kind == "numpy"
                     else (da.from_array(X, chunks=50_000), da.from_array(w, chunks=50_000)))
    for init in ("kmeans", "robust"):
        gm = GaussianMixture(2, random_state=0, init_params=init).fit(data,
                                                                      sample_weight=weights)
        means = np.sort(gm.means_[:, 0])
        assert means[0] < -2 and means[1] > 2


def test_weights_the_fit_cannot_use_are_refused_with_a_message():
    X = two_clusters(20_000)
    with pytest.raises(InvalidDataError, match="must not be all zero"):
        GaussianMixture(2).fit(da.from_array(X, chunks=5000),
                               sample_weight=da.zeros(len(X), chunks=5000))
    with pytest.raises(InvalidDataError, match="beyond the floating-point range"):
        GaussianMixture(2).fit(X, sample_weight=np.full(len(X), 1e308))


def test_online_em_skips_mini_batches_of_zero_weight_and_partial_fit_refuses_them():
    X = two_clusters(40_000)
    w = np.ones(len(X))
    w[:20_000] = 0.0  # whole groups and mini-batches of no weight
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(2, algorithm="online", random_state=0, max_iter=2,
                             chunk_rows=5000, batch_chunks=1).fit(X, sample_weight=w)
    assert np.all(np.isfinite(gm.means_))
    stream = GaussianMixture(2, random_state=0).partial_fit(X[20_000:])
    # A batch of no weight at all is refused, and leaves the model as it was.
    before = stream.means_.copy()
    for batch, weights in ((X[:100], np.zeros(100)),
                           (da.from_array(X[:100], chunks=50), da.zeros(100, chunks=50))):
        with pytest.raises(InvalidDataError, match="must not be all zero"):
            stream.partial_fit(batch, sample_weight=weights)
    np.testing.assert_array_equal(stream.means_, before)
    assert math.isfinite(stream.lower_bound_)


def test_partial_fit_after_changing_n_components_says_what_to_do():
    X = two_clusters(2000)
    gm = GaussianMixture(2, random_state=0).partial_fit(X)
    gm.set_params(n_components=3)
    with pytest.raises(InvalidParameterError, match=r"set_params\(n_components=2\)"):
        gm.partial_fit(X)
