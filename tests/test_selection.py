"""GaussianMixtureSelector: the right model, every candidate equal to a separate fit, the
criteria by their definitions, shared reads, early stopping, checkpoints, validation."""

from __future__ import annotations

import doctest
import math
import threading
import warnings
from collections import Counter

import dask.array as da
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

import daskgmm
from daskgmm import GaussianMixture, GaussianMixtureSelector
from daskgmm.engine import starts
from daskgmm.errors import CheckpointError, InvalidDataError, InvalidParameterError
from daskgmm.models import selection
from daskgmm.models.selection import cannot_win, criterion_values
from tests.conftest import make_blobs

TYPES = ("full", "tied", "diag", "spherical")
ATTRIBUTES = ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")


def five_components(n: int = 4000, d: int = 3, seed: int = 0) -> np.ndarray:
    """Five well-separated components with different, strongly correlated covariances
    (each a random rotation of variances 2, 0.3 and 0.05)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(5, d))
    centres *= 12.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    factors = []
    for _ in range(5):
        q, _ = np.linalg.qr(rng.normal(size=(d, d)))
        factors.append(q @ np.diag(np.sqrt([2.0, 0.3, 0.05][:d])))
    labels = rng.integers(5, size=n)
    noise = rng.normal(size=(n, d))
    return centres[labels] + np.einsum("nd,ned->ne", noise, np.array(factors)[labels])


@pytest.fixture(scope="module")
def five() -> np.ndarray:
    return five_components()


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300), initial=0.0))


def separate_fit(X, est, sample_weight=None, **params) -> GaussianMixture:
    """The fit of one candidate on its own, with the candidate's own settings."""
    gm = clone(est).set_params(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gm.fit(X, sample_weight=sample_weight)


def assert_same_fit(candidate, alone, X, tol=1e-10) -> None:
    for name in ATTRIBUTES:
        assert rel(getattr(candidate, name), getattr(alone, name)) <= tol, name
    assert candidate.n_iter_ == alone.n_iter_
    assert candidate.converged_ == alone.converged_
    assert rel(candidate.lower_bound_, alone.lower_bound_) <= tol
    assert rel(candidate.lower_bounds_, alone.lower_bounds_) <= tol


class PassCounter:
    """Observer: every pass (kind, chunks announced, chunk tasks done) and the labels."""

    def __init__(self) -> None:
        self.passes: list[list] = []
        self.labels: list[str] = []

    def fit_started(self, info) -> None:
        self.labels = list(info.labels)

    def pass_started(self, kind: str, n_chunks: int) -> None:
        self.passes.append([kind, n_chunks, 0])

    def chunks_done(self, count: int) -> None:
        self.passes[-1][2] += count

    def kinds(self) -> Counter:
        return Counter(kind for kind, _, _ in self.passes)

    def chunks_read(self) -> int:
        return sum(done for _, _, done in self.passes)


# ---------------------------------------------------------------------------------------
# the choice
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("criterion", ["bic", "aic", "icl"])
def test_picks_five_full_components(five, criterion):
    sel = GaussianMixtureSelector(n_components=range(1, 9), criterion=criterion,
                                  random_state=0).fit(five)
    assert sel.best_params_ == {"n_components": 5, "covariance_type": "full"}
    assert sel.best_estimator_ is sel.estimators_[sel.best_index_]
    assert sel.best_score_ == min(sel.results_[criterion])
    # The runner-up types are clearly worse at their own best K.
    scores = np.array(sel.results_[criterion])
    types = np.array(sel.results_["covariance_type"])
    for cov in ("tied", "diag", "spherical"):
        assert scores[types == cov].min() > sel.best_score_ + 50


def test_results_are_a_table(five):
    pd = pytest.importorskip("pandas")
    sel = GaussianMixtureSelector(n_components=[2, 5], covariance_types=["full", "diag"],
                                  random_state=0).fit(five)
    table = pd.DataFrame(sel.results_)
    assert list(table.columns) == [
        "n_components", "covariance_type", "bic", "aic", "icl", "lower_bound", "n_iter",
        "converged", "n_parameters", "seconds", "stopped_early", "degenerate",
        "degenerate_restarts"]
    assert len(table) == 4 == len(sel.estimators_)
    assert table["n_components"].tolist() == [2, 5, 2, 5]
    assert table["covariance_type"].tolist() == ["full", "full", "diag", "diag"]
    assert table["n_parameters"].tolist() == [est._n_parameters() for est in sel.estimators_]
    assert (table["seconds"] > 0).all()
    assert not table["stopped_early"].any()
    best = table.loc[table["bic"].idxmin()]
    assert (best["n_components"], best["covariance_type"]) == (5, "full")


# ---------------------------------------------------------------------------------------
# every candidate equals a separate fit
# ---------------------------------------------------------------------------------------
def test_every_candidate_equals_a_separate_fit_numpy(blobs):
    sel = GaussianMixtureSelector(n_components=[1, 2, 3], covariance_types=TYPES,
                                  n_init=2, random_state=7, chunk_rows=700).fit(blobs)
    assert len(sel.estimators_) == 12
    for i, est in enumerate(sel.estimators_):
        alone = separate_fit(blobs, est)
        assert_same_fit(est, alone, blobs)
        assert rel(sel.results_["bic"][i], alone.bic(blobs)) <= 1e-10
        assert rel(sel.results_["aic"][i], alone.aic(blobs)) <= 1e-10
        assert rel(sel.results_["lower_bound"][i], alone.lower_bound_) <= 1e-10


@pytest.mark.parametrize("init_params", ["k-means++", "random", "random_from_data"])
def test_every_initialisation_equals_a_separate_fit(blobs, init_params):
    sel = GaussianMixtureSelector(n_components=[2, 3], covariance_types=["full", "diag"],
                                  init_params=init_params, n_init=2, random_state=3,
                                  max_iter=20, chunk_rows=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sel.fit(blobs)
    for est in sel.estimators_:
        assert_same_fit(est, separate_fit(blobs, est), blobs)


def test_float32_and_weighted_candidates_equal_separate_fits(blobs):
    X = blobs.astype(np.float32)
    w = np.random.default_rng(0).integers(0, 4, size=len(X)).astype(np.float64)
    sel = GaussianMixtureSelector(n_components=[2, 3], covariance_types=["tied", "full"],
                                  random_state=0, chunk_rows=900).fit(X, sample_weight=w)
    for i, est in enumerate(sel.estimators_):
        assert est.means_.dtype == np.float32
        alone = separate_fit(X, est, sample_weight=w)
        assert_same_fit(est, alone, X)
        # Weighted criteria: weighted log-likelihood, n = the sum of the weights.
        ll = float(np.sum(w * alone.score_samples(X).astype(np.float64)))
        p = alone._n_parameters()
        assert rel(sel.results_["bic"][i], -2 * ll + p * math.log(w.sum())) <= 1e-6
        assert rel(sel.results_["aic"][i], -2 * ll + 2 * p) <= 1e-6


@pytest.mark.slow
def test_dask_candidates_equal_separate_fits_with_the_reads_of_one(client, monkeypatch):
    """On a 2-process LocalCluster: every candidate (all four types) equals its separate
    fit, and the sweep reads the data at most as often as its slowest candidate alone,
    plus one pass for the criteria."""
    monkeypatch.setattr(starts, "SAMPLE_ROWS", 800)  # so k-means needs a pass
    X = da.from_array(make_blobs(3000, 3, 3, seed=1), chunks=(600, 3))
    sweep = PassCounter()
    with daskgmm.observe(sweep):
        sel = GaussianMixtureSelector(n_components=[1, 3], covariance_types=TYPES,
                                      n_init=2, init_params="kmeans",
                                      random_state=0).fit(X)
    n_chunks = X.numblocks[0]
    alone_reads = []
    for i, est in enumerate(sel.estimators_):
        counter = PassCounter()
        with daskgmm.observe(counter):
            alone = separate_fit(X, est)
        assert_same_fit(est, alone, X)
        assert rel(sel.results_["bic"][i], alone.bic(X)) <= 1e-10
        alone_reads.append(counter.chunks_read())
        assert counter.kinds()["survey"] == counter.kinds()["init"] == 1
    assert sweep.labels == [f"K={k} {t} #{r}" for t in TYPES for k in (1, 3) for r in (0, 1)]
    kinds = sweep.kinds()
    # Every pass reads every chunk once, whatever the number of candidates: one survey
    # gathering every candidate's sample, one pass for all the k-means assignments, the
    # EM iterations, and one pass for the criteria of the candidates finishing last
    # (the others' rode the EM passes of those still running).
    assert all(announced == done == n_chunks for _, announced, done in sweep.passes)
    assert kinds["survey"] == kinds["init"] == 1 and kinds["score"] <= 1
    assert set(kinds) <= {"survey", "init", "em", "score"}
    assert kinds["em"] == max(sel.results_["n_iter"])
    assert sweep.chunks_read() <= max(alone_reads) + n_chunks
    assert sel.best_estimator_.passes_["criteria"] <= 1


class IterationLog:
    """Observer: every EM iteration's number and the candidates it updated."""

    def __init__(self) -> None:
        self.updates: dict[int, list[int]] = {}
        self.sizes: list[int] = []

    def iteration_finished(self, info) -> None:
        self.sizes.append(len(info.states))
        for state in info.states:
            if info.was_updated(state):
                self.updates.setdefault(state.index, []).append(info.iteration)


def test_candidates_whose_start_needs_a_pass_join_em_in_the_reads_of_others(monkeypatch):
    """A candidate whose k-means start needs a pass over the data (more rows than its
    sample) joins EM one pass after those that started from their sample (here the
    large K, whose sample is the whole data): that pass is their first EM iteration.
    Each then runs its own count of iterations (max_iter applies to each), iteration
    reports name exactly the candidates they updated, and each equals its separate fit."""
    monkeypatch.setattr(starts, "SAMPLE_ROWS", 800)
    X = make_blobs(3000, 3, 4, seed=3)
    log = IterationLog()
    sweep = PassCounter()
    with daskgmm.observe(log, sweep), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sel = GaussianMixtureSelector(n_components=[4, 80], covariance_types=["full"],
                                      init_params="kmeans", random_state=0,
                                      chunk_rows=500, max_iter=6, tol=0.0).fit(X)
    firsts = {index: its[0] for index, its in log.updates.items()}
    assert firsts == {1: 1, 0: 2}  # K=80 from its sample, K=4 after its pass
    assert sweep.kinds()["init"] == 0 and sweep.kinds()["survey"] == 1
    assert log.sizes[-1] == 2
    for index, its in log.updates.items():
        est = sel.estimators_[index]
        assert its == list(range(its[0], its[0] + 6)) and est.n_iter_ == 6
        assert len(est.lower_bounds_) == 6
    for est in sel.estimators_:
        assert_same_fit(est, separate_fit(X, est), X)


def test_bayesian_candidates_equal_separate_fits_with_one_moments_pass(blobs):
    from daskgmm import BayesianGaussianMixture

    counter = PassCounter()
    with daskgmm.observe(counter), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sel = GaussianMixtureSelector(
            n_components=[2, 4], covariance_types=["full", "diag", "spherical"],
            model="bayesian", random_state=0, chunk_rows=1000, max_iter=50,
            model_params={"weight_concentration_prior_type": "dirichlet_distribution"},
        ).fit(blobs)
    # The priors' moments ride the first pass, which also gathers the samples.
    assert counter.kinds()["survey"] == 1 and "moments" not in counter.kinds()
    for i, est in enumerate(sel.estimators_):
        assert isinstance(est, BayesianGaussianMixture)
        assert est.weight_concentration_prior_type == "dirichlet_distribution"
        alone = separate_fit(blobs, est)
        assert_same_fit(est, alone, blobs)
        assert rel(est.weight_concentration_, alone.weight_concentration_) <= 1e-10
        assert rel(sel.results_["bic"][i], alone.bic(blobs)) <= 1e-10


@pytest.mark.parametrize("algorithm", ["incremental", "online"])
def test_stepwise_candidates_equal_separate_fits(blobs, algorithm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sel = GaussianMixtureSelector(n_components=[2, 3], covariance_types=["full", "tied"],
                                      algorithm=algorithm, batch_chunks=2, random_state=0,
                                      chunk_rows=500, max_iter=15).fit(blobs)
    for est in sel.estimators_:
        assert est.algorithm == algorithm
        assert_same_fit(est, separate_fit(blobs, est), blobs)
    with pytest.raises(InvalidParameterError, match="early_stopping=True needs"):
        sel.set_params(early_stopping=True).fit(blobs)


# ---------------------------------------------------------------------------------------
# the criteria
# ---------------------------------------------------------------------------------------
def test_icl_is_bic_plus_twice_the_entropy(blobs):
    sel = GaussianMixtureSelector(n_components=[1, 2, 4], covariance_types=["full", "diag"],
                                  criterion="icl", random_state=0).fit(blobs)
    for i, est in enumerate(sel.estimators_):
        resp = est.predict_proba(blobs)
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.sum(np.where(resp > 0, resp * np.log(resp), 0.0))
        assert rel(sel.results_["icl"][i], est.bic(blobs) + 2 * entropy) <= 1e-10
        assert sel.results_["icl"][i] >= sel.results_["bic"][i]
    assert sel.best_score_ == min(sel.results_["icl"])


def test_criterion_values_formulas():
    values = criterion_values(-1000.0, -12.5, 400.0, 7)
    assert values["bic"] == pytest.approx(2000.0 + 7 * math.log(400.0))
    assert values["aic"] == pytest.approx(2014.0)
    assert values["icl"] == pytest.approx(values["bic"] + 25.0)


def test_module_examples_run():
    result = doctest.testmod(selection, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0


# ---------------------------------------------------------------------------------------
# early stopping
# ---------------------------------------------------------------------------------------
HALVING = [-4.0, -3.0, -2.5, -2.25, -2.125, -2.0625, -2.03125]


@pytest.mark.parametrize(("bounds", "best_now", "expected"), [
    # Gains halve: at most 10 * 1/32 more: criterion >= 2*100*(2.03125-0.3125)+10 = 353.75.
    (HALVING, 353.7, True),
    (HALVING, 353.8, False),
    # Too few iterations to judge.
    (HALVING[2:], -1e9, False),
    # Gains that grow again (EM leaving a saddle), or a decrease: never stopped.
    ([-4.0, -3.0, -2.5, -2.25, -2.2, -2.1, -1.9], -1e9, False),
    ([-4.0, -3.0, -2.5, -2.25, -2.125, -2.13, -2.12], -1e9, False),
])
def test_cannot_win_rule(bounds, best_now, expected):
    assert cannot_win(bounds, penalty=10.0, n=100, best_now=best_now) is expected


@pytest.mark.parametrize("criterion", ["bic", "icl"])
def test_early_stopping_keeps_the_choice_and_saves_passes(criterion):
    X = make_blobs(6000, 4, 4, seed=2)
    runs = {}
    for early in (False, True):
        counter = PassCounter()
        with daskgmm.observe(counter), warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            sel = GaussianMixtureSelector(n_components=range(1, 9), criterion=criterion,
                                          early_stopping=early, random_state=0,
                                          tol=1e-5).fit(X)
        runs[early] = (sel, counter.kinds()["em"])
    (plain, plain_passes), (early, early_passes) = runs[False], runs[True]
    assert early.best_params_ == plain.best_params_
    assert rel(early.best_score_, plain.best_score_) <= 1e-10
    stopped = np.array(early.results_["stopped_early"])
    assert stopped.any()
    assert not np.array(early.results_["converged"])[stopped].any()
    assert not np.array(plain.results_["stopped_early"]).any()
    assert early_passes < plain_passes
    # Candidates that were not stopped are untouched by the rule.
    for i in np.flatnonzero(~stopped):
        assert_same_fit(early.estimators_[i], plain.estimators_[i], X)


# ---------------------------------------------------------------------------------------
# checkpoints, warm start
# ---------------------------------------------------------------------------------------
def test_a_sweep_resumes_from_its_checkpoint(blobs, tmp_path):
    params = dict(n_components=[2, 3], covariance_types=["full", "spherical"], n_init=2,
                  random_state=0, tol=1e-6, chunk_rows=1000, init_params="kmeans")
    whole = GaussianMixtureSelector(max_iter=40, **params).fit(blobs)
    with pytest.warns(ConvergenceWarning):
        GaussianMixtureSelector(max_iter=3, checkpoint_dir=tmp_path, **params).fit(blobs)
    assert (tmp_path / "checkpoint.json").exists()
    counter = PassCounter()
    with daskgmm.observe(counter):
        resumed = GaussianMixtureSelector(max_iter=40, checkpoint_dir=tmp_path,
                                          **params).fit(blobs)
    assert counter.kinds()["init"] == 0  # no initialisation: it continued the checkpoint
    assert counter.kinds()["em"] == max(whole.results_["n_iter"]) - 3
    for a, b in zip(resumed.estimators_, whole.estimators_, strict=True):
        assert_same_fit(a, b, blobs, tol=0.0)
    assert resumed.results_["bic"] == whole.results_["bic"]
    with pytest.raises(CheckpointError, match="another configuration"):
        GaussianMixtureSelector(max_iter=40, checkpoint_dir=tmp_path,
                                **{**params, "covariance_types": ["full"]}).fit(blobs)


def test_warm_start_continues_every_candidate(blobs):
    sel = GaussianMixtureSelector(n_components=[2, 3], covariance_types=["diag"],
                                  random_state=0, max_iter=2, warm_start=True, tol=1e-8,
                                  init_params="kmeans")
    with pytest.warns(ConvergenceWarning):
        sel.fit(blobs)
    first = [est.lower_bound_ for est in sel.estimators_]
    with pytest.warns(ConvergenceWarning):
        sel.fit(blobs)
    assert all(est.n_iter_ == 2 for est in sel.estimators_)
    assert all(est.lower_bound_ > b for est, b in zip(sel.estimators_, first, strict=True))
    with pytest.raises(InvalidDataError, match="fitted on 3"):
        sel.fit(blobs[:, :2])
    with pytest.raises(InvalidParameterError, match="warm_start"):
        sel.set_params(n_components=[2]).fit(blobs)


# ---------------------------------------------------------------------------------------
# the best estimator's methods; scikit-learn conventions
# ---------------------------------------------------------------------------------------
def test_methods_delegate_to_the_best_estimator(five, tmp_path):
    sel = GaussianMixtureSelector(n_components=[4, 5], covariance_types=["full"],
                                  random_state=0).fit(five)
    best = sel.best_estimator_
    assert isinstance(best, GaussianMixture) and best.n_components == 5
    np.testing.assert_array_equal(sel.predict(five), best.predict(five))
    np.testing.assert_array_equal(sel.predict_proba(five), best.predict_proba(five))
    np.testing.assert_array_equal(sel.score_samples(five), best.score_samples(five))
    assert sel.score(five) == best.score(five)
    assert sel.bic(five) == best.bic(five) and sel.aic(five) == best.aic(five)
    assert rel(sel.bic(five), sel.best_score_) <= 1e-10
    assert sel.n_features_in_ == 3
    assert best.get_params()["checkpoint_dir"] is None
    best.save(tmp_path / "model")
    loaded = daskgmm.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict(five), best.predict(five))
    labels = sel.predict(da.from_array(five, chunks=1000))
    assert isinstance(labels, da.Array)
    np.testing.assert_array_equal(labels.compute(), best.predict(five))


def test_scikit_learn_conventions(blobs):
    from sklearn.exceptions import NotFittedError

    sel = GaussianMixtureSelector()
    assert sel.get_params()["n_components"] == range(1, 11)
    assert sel.candidates()[:2] == [(1, "full"), (2, "full")]
    assert len(sel.candidates()) == 40
    assert clone(sel).get_params() == sel.get_params()
    with pytest.raises(NotFittedError):
        sel.predict(blobs)
    single = GaussianMixtureSelector(n_components=2, covariance_types="diag").fit(blobs)
    assert single.candidates() == [(2, "diag")]
    assert single.best_params_ == {"n_components": 2, "covariance_type": "diag"}


def test_observers_see_one_label_per_candidate_and_restart(blobs):
    counter = PassCounter()
    with daskgmm.observe(counter):
        GaussianMixtureSelector(n_components=[1, 2], covariance_types=["tied"], n_init=3,
                                random_state=0).fit(blobs)
    assert counter.labels == ["K=1 tied #0", "K=1 tied #1", "K=1 tied #2",
                              "K=2 tied #0", "K=2 tied #1", "K=2 tied #2"]


# ---------------------------------------------------------------------------------------
# bad parameters
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "message"), [
    ({"n_components": 0}, r"n_components\[0\] must be an int >= 1, got 0"),
    ({"n_components": [2, "3"]}, r"n_components\[1\] must be an int >= 1, got '3'"),
    ({"n_components": [2, 2]}, "n_components lists 2 twice"),
    ({"n_components": []}, "n_components must list at least one value"),
    ({"n_components": "5"}, "n_components must be an int >= 1 or an iterable"),
    ({"covariance_types": ["full", "ful"]}, r"covariance_types\[1\] must be one of"),
    ({"covariance_types": []}, "covariance_types must be one of"),
    ({"n_components": [1, 2], "means_init": np.zeros((2, 3))},
     "means_init cannot be given with several n_components"),
    ({"n_components": 2, "precisions_init": np.ones((2, 3))},
     "precisions_init cannot be given with several covariance_types"),
    ({"model_params": {"reg_covar": 1e-3}}, "give 'reg_covar' as a parameter of the selector"),
    ({"model_params": {"bogus": 1}}, "'bogus' is not a parameter of GaussianMixture"),
])
def test_bad_parameters_are_named(blobs, params, message):
    with pytest.raises(InvalidParameterError, match=message):
        GaussianMixtureSelector(**params).fit(blobs)


def test_sklearn_validated_parameters(blobs):
    with pytest.raises(ValueError, match="criterion"):
        GaussianMixtureSelector(criterion="bic2").fit(blobs)
    with pytest.raises(ValueError, match="tol"):
        GaussianMixtureSelector(tol=-1.0).fit(blobs)


def test_more_components_than_samples_is_refused():
    X = np.random.default_rng(0).normal(size=(6, 2))
    with pytest.raises(InvalidDataError, match="largest n_components is 8 and n_samples = 6"):
        GaussianMixtureSelector(n_components=[2, 8]).fit(X)


def test_a_missing_model_is_named(monkeypatch, blobs):
    monkeypatch.setitem(selection.MODELS, "bayesian", ("daskgmm.models.no_such", "Nope"))
    with pytest.raises(InvalidParameterError, match=r"model='bayesian' needs daskgmm\.Nope"):
        GaussianMixtureSelector(model="bayesian").fit(blobs)


# ---------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------
def _workspace_bytes(plan, X) -> int:
    """Workspace a fresh thread needs for one chunk of a pass with ``plan``."""
    from daskgmm.engine.estep import estep_statistics
    from daskgmm.engine.workspace import workspace

    out = {}

    def run() -> None:
        estep_statistics(X, None, 0, plan)
        out["bytes"] = workspace().nbytes()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out["bytes"]


def test_working_memory_does_not_grow_with_the_candidates():
    """A pass with 40 candidates (K = 1..10, four types) needs no more per-chunk
    workspace than one with 8 (K = 1 and 10, four types): the buffers are named per
    covariance type and reused by every candidate, and tiles are sized per candidate."""
    from daskgmm.engine.estep import Components, make_plan
    from daskgmm.models.gaussian import GaussianModel

    rng = np.random.default_rng(0)
    D = 16
    X = rng.normal(size=(50_000, D))

    def components(k: int, cov: str) -> Components:
        shape = GaussianModel(k, cov, 1e-6).covariance.shape(k, D)
        prec = (np.broadcast_to(np.eye(D), shape) if cov in ("full", "tied")
                else np.ones(shape))
        return Components.gaussian(cov, np.full(k, 1 / k), rng.normal(size=(k, D)), prec)

    def workspace(ks) -> int:
        plan = make_plan([components(k, cov) for cov in TYPES for k in ks], np.zeros(D),
                         entropy=True)
        return _workspace_bytes(plan, X)

    forty, eight = workspace(range(1, 11)), workspace([1, 10])
    largest = _workspace_bytes(make_plan([components(10, "full")], np.zeros(D)), X)
    assert forty <= 1.05 * eight, (forty, eight)
    assert forty <= 4 * largest  # at most one set of buffers per covariance type
    from daskgmm.engine.estep import TILE_BYTES

    assert forty <= 4 * TILE_BYTES  # a tile's workspace per covariance type at most
