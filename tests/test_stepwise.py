"""Incremental and online EM, and ``partial_fit``."""

from __future__ import annotations

import json
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from daskgmm import BayesianGaussianMixture, GaussianMixture
from daskgmm.diagnostics.observers import observe
from daskgmm.engine.stepwise import partition
from daskgmm.errors import CheckpointError

COV_TYPES = ["full", "tied", "diag", "spherical"]


def _separated(n=6000, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0, 0.0], [0.0, 8.0, 0.0], [8.0, 0.0, 0.0]])  # in order
    labels = rng.integers(3, size=n)
    return centres[labels] + rng.normal(size=(n, 3)) * np.array([1.0, 0.5, 0.8]), centres


def _sorted_means(model):
    """The means in a fixed order: by their rounded coordinates."""
    means = np.asarray(model.means_)
    return means[np.lexsort(np.round(means, 0).T[::-1])]


@pytest.fixture(scope="module")
def overlapping():
    from .conftest import make_blobs

    return make_blobs(8000, d=3, k=3)


@pytest.mark.parametrize("cov", COV_TYPES)
@pytest.mark.parametrize("estimator", [GaussianMixture, BayesianGaussianMixture])
def test_incremental_bound_never_decreases(cov, estimator, overlapping):
    kw = dict(covariance_type=cov, random_state=0, tol=0.0, max_iter=8, chunk_rows=500,
              algorithm="incremental", batch_chunks=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = (GaussianMixture(3, **kw) if estimator is GaussianMixture
                 else BayesianGaussianMixture(n_components=3, **kw)).fit(overlapping)
    assert len(model.lower_bounds_) == 8
    steps = np.diff(model.lower_bounds_)
    assert np.all(steps >= -1e-9 * np.abs(model.lower_bounds_[1:])), steps


def test_incremental_reaches_batch_ems_answer(overlapping):
    kw = dict(covariance_type="full", random_state=0, tol=1e-9, max_iter=500, chunk_rows=400)
    batch = GaussianMixture(3, **kw).fit(overlapping)
    incremental = GaussianMixture(3, algorithm="incremental", batch_chunks=2,
                                  **kw).fit(overlapping)
    assert incremental.lower_bound_ == pytest.approx(batch.lower_bound_, abs=1e-7)
    np.testing.assert_allclose(_sorted_means(incremental), _sorted_means(batch), atol=1e-4)
    assert incremental.n_iter_ < batch.n_iter_


@pytest.mark.parametrize("cov", COV_TYPES)
def test_incremental_first_pass_improves_group_by_group(cov, overlapping):
    """The first pass of incremental EM steps after every group (on weighted statistics
    of the groups seen so far, scaled to the data), so after one pass its model is
    better than batch EM's after one iteration from the same start (it was the same
    model when the first pass only collected statistics)."""
    kw = dict(covariance_type=cov, random_state=0, tol=0.0, max_iter=1, chunk_rows=500)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        batch = GaussianMixture(3, **kw).fit(overlapping)
        incremental = GaussianMixture(3, algorithm="incremental", batch_chunks=2,
                                      **kw).fit(overlapping)
    assert incremental.score(overlapping) > batch.score(overlapping) + 1e-4


def test_first_pass_weights_group_t_by_a_polynomial_of_degree_eta():
    """After T groups the first-pass statistics are the groups' per-sample statistics
    weighted ∝ (t+1)(t+2)...(t+η) (Shamir and Zhang's polynomial-decay averaging)."""
    from daskgmm.engine.stepwise import FIRST_PASS_DECAY, first_pass_step

    rng = np.random.default_rng(0)
    groups = [{"n": np.float64(n), "ll": np.float64(n * v), "ent": np.float64(0.0),
               "nk": np.array([n * v]), "sx": np.array([[n]]), "s2": np.array([[[n]]])}
              for n, v in zip(rng.integers(5, 50, size=12), rng.normal(size=12),
                              strict=True)]
    running = None
    for t, group in enumerate(groups):
        running = first_pass_step(running, group, t)
    t = np.arange(len(groups))
    weights = np.prod([t + m for m in range(1, FIRST_PASS_DECAY + 1)], axis=0)
    expected = sum(w * g["ll"] / g["n"] for w, g in zip(weights, groups, strict=True))
    assert float(running["ll"]) == pytest.approx(expected / weights.sum(), rel=1e-12)
    assert float(running["n"]) == pytest.approx(1.0)
    empty = {key: np.zeros_like(value) for key, value in groups[0].items()}
    assert first_pass_step(running, empty, 12) is running  # no weight: no change


@pytest.mark.parametrize("cov", COV_TYPES)
def test_first_pass_weighting_beats_the_plain_average(cov, overlapping, monkeypatch):
    """Down-weighting the first groups' statistics (computed with the parameters
    furthest from the answer) gives a better model after one pass than the plain
    average of the groups seen so far (η = 0)."""
    import daskgmm.engine.stepwise as stepwise

    kw = dict(covariance_type=cov, random_state=0, tol=0.0, max_iter=1, chunk_rows=500,
              algorithm="incremental", batch_chunks=1)
    scores = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for eta in (0, stepwise.FIRST_PASS_DECAY):
            monkeypatch.setattr(stepwise, "FIRST_PASS_DECAY", eta)
            scores[eta] = GaussianMixture(3, **kw).fit(overlapping).score(overlapping)
    assert scores[stepwise.FIRST_PASS_DECAY] > scores[0] + 1e-5, scores


@pytest.mark.parametrize("algorithm", ["batch", "incremental", "online"])
@pytest.mark.parametrize("cov", COV_TYPES)
def test_every_algorithm_finds_the_components(algorithm, cov):
    X, centres = _separated()
    gm = GaussianMixture(3, covariance_type=cov, random_state=0, algorithm=algorithm,
                         chunk_rows=300, batch_chunks=2, max_iter=20, tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(X)
    np.testing.assert_allclose(_sorted_means(gm), centres, atol=0.1)


@pytest.mark.parametrize("algorithm", ["incremental", "online"])
def test_stepwise_with_sample_weights_restarts_and_a_cluster(algorithm, client):
    """The rows of the component at the origin weigh 4, the others 1: the fitted mixing
    weights are the weighted shares (4/6, 1/6, 1/6 for equal counts), far from the
    shares of rows (1/3 each) that a fit ignoring the weights would give."""
    X, centres = _separated(4000)
    first = np.linalg.norm(X, axis=1) < 4.0  # the component at the origin
    w = np.where(first, 4.0, 1.0)
    gm = GaussianMixture(3, random_state=0, algorithm=algorithm, n_init=2, max_iter=15,
                         tol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm.fit(da.from_array(X, chunks=(250, 3)), sample_weight=da.from_array(w, chunks=250))
    np.testing.assert_allclose(_sorted_means(gm), centres, atol=0.1)
    order = np.lexsort(np.round(gm.means_, 0).T[::-1])
    counts = np.array([first.sum(), (X[:, 1] > 4).sum(), (X[:, 0] > 4).sum()], float)
    weighted = counts * [4.0, 1.0, 1.0] / (counts * [4.0, 1.0, 1.0]).sum()
    np.testing.assert_allclose(gm.weights_[order], weighted, atol=0.01)
    assert np.abs(weighted - counts / counts.sum()).min() > 0.1  # the weights matter


def test_partial_fit_over_the_chunks_is_close_to_fit():
    X, _ = _separated(20000)
    full = GaussianMixture(3, random_state=0).fit(X)
    stream = GaussianMixture(3, random_state=0)
    for _ in range(3):
        for start in range(0, len(X), 1000):
            stream.partial_fit(X[start : start + 1000])
    np.testing.assert_allclose(_sorted_means(stream), _sorted_means(full), atol=1e-2)
    assert stream.n_iter_ == 60
    # A Dask batch works the same way, and a mismatched batch is refused.
    stream.partial_fit(da.from_array(X[:2000], chunks=500))
    with pytest.raises(ValueError, match="features"):
        stream.partial_fit(X[:100, :2])


class _Crash(Exception):
    pass


@pytest.mark.parametrize("crash_pass", [1, 2])
@pytest.mark.parametrize("algorithm", ["incremental", "online"])
def test_checkpoint_mid_pass_resumes_identically(algorithm, crash_pass, tmp_path,
                                                 overlapping):
    kw = dict(covariance_type="full", random_state=0, tol=0.0, max_iter=4, chunk_rows=500,
              algorithm=algorithm, batch_chunks=3, n_init=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clean = GaussianMixture(3, **kw).fit(overlapping)

        class CrashMidPass:
            """Simulates a killed run: stops the fit in the middle of a pass."""

            def update_finished(self, number, position, n_groups):
                if number == crash_pass and position == 3:
                    raise _Crash

        with observe(CrashMidPass()), pytest.raises(_Crash):
            GaussianMixture(3, checkpoint_dir=tmp_path, **kw).fit(overlapping)
        saved = json.loads((tmp_path / "checkpoint.json").read_text())
        assert saved["iteration"] == crash_pass - 1
        assert saved["stepwise"]["position"] == 3
        resumed = GaussianMixture(3, checkpoint_dir=tmp_path, **kw).fit(overlapping)
    # The resumed fit reads what the interrupted one had not: the rest of the pass and
    # the passes after it, its data checked in those reads (no pass of its own).
    n_chunks = len(range(0, len(overlapping), 500))
    groups = partition(n_chunks, 3)
    done = sum(len(groups[g]) for g in saved["stepwise"]["order"][:3]) / n_chunks
    assert set(resumed.passes_) == {"em"}
    if algorithm == "incremental":
        assert resumed.passes_["em"] == pytest.approx(clean.passes_["em"]
                                                      - (crash_pass - 1) - done)
    else:
        assert resumed.passes_["em"] < clean.passes_["em"] - (crash_pass - 1)
    np.testing.assert_array_equal(resumed.means_, clean.means_)
    np.testing.assert_array_equal(resumed.covariances_, clean.covariances_)
    assert resumed.lower_bounds_ == clean.lower_bounds_

    other = overlapping.copy()
    other[4321, 1] += 1e-9
    with pytest.raises(CheckpointError, match="other data"):
        GaussianMixture(3, checkpoint_dir=tmp_path, **kw).fit(other)


def test_bad_stepwise_parameters_are_refused(overlapping):
    with pytest.raises(ValueError, match="learning_decay"):
        GaussianMixture(2, algorithm="online", learning_decay=0.4).fit(overlapping)
    with pytest.raises(ValueError, match="algorithm"):
        GaussianMixture(2, algorithm="stochastic").fit(overlapping)


@pytest.mark.parametrize("algorithm", ["incremental", "online"])
def test_stepwise_on_a_cluster_equals_the_same_fit_in_process(algorithm, client, overlapping):
    """On a cluster each group's chunks are read ahead and its E-step runs as one task
    per chunk reduced on the driver: the same numbers as NumPy input in this process."""
    kw = dict(covariance_type="full", random_state=0, tol=0.0, max_iter=3,
              algorithm=algorithm, batch_chunks=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        local = GaussianMixture(3, chunk_rows=1000, **kw).fit(overlapping)
        remote = GaussianMixture(3, **kw).fit(da.from_array(overlapping, chunks=(1000, 3)))
    np.testing.assert_allclose(remote.means_, local.means_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(remote.covariances_, local.covariances_, rtol=1e-12,
                               atol=1e-12)
    np.testing.assert_allclose(remote.lower_bounds_, local.lower_bounds_, rtol=1e-12)
