"""Estimator conventions (scikit-learn, dask-ml), initialisation and reproducibility."""

from __future__ import annotations

import inspect
import threading

import dask
import dask.array as da
import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.mixture import GaussianMixture as SkGM

import daskgmm
from daskgmm import GaussianMixture
from daskgmm.errors import InvalidDataError

from .conftest import make_blobs

SKLEARN_SIGNATURE = [
    "n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init",
    "init_params", "weights_init", "means_init", "precisions_init", "random_state",
    "warm_start", "verbose", "verbose_interval",
]


def test_constructor_mirrors_sklearn():
    ours = inspect.signature(GaussianMixture).parameters
    theirs = inspect.signature(SkGM).parameters
    assert list(ours)[: len(SKLEARN_SIGNATURE)] == SKLEARN_SIGNATURE
    for name in SKLEARN_SIGNATURE:
        assert ours[name].default == theirs[name].default, name
        assert ours[name].kind == theirs[name].kind, name
    for name in list(ours)[len(SKLEARN_SIGNATURE):]:
        assert ours[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_get_set_params_and_clone():
    gm = GaussianMixture(4, covariance_type="diag", chunk_rows=100, split_every=3)
    assert gm.get_params()["chunk_rows"] == 100
    gm.set_params(n_components=5)
    copy = clone(gm)
    assert copy.get_params() == gm.get_params()
    assert not hasattr(copy, "means_")


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score"])
def test_not_fitted(method, blobs):
    with pytest.raises(NotFittedError):
        getattr(GaussianMixture(2), method)(blobs)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_components": 0}, "'n_components' parameter .* must be an int in the range"),
        ({"covariance_type": "fll"}, "'covariance_type' parameter .* must be a str among"),
        ({"tol": -1.0}, "'tol' parameter"),
        ({"reg_covar": -1e-3}, "'reg_covar' parameter"),
        ({"init_params": "magic"}, "'init_params' parameter"),
        ({"split_every": 1}, "'split_every' parameter"),
        ({"chunk_rows": 0}, "'chunk_rows' parameter"),
    ],
)
def test_invalid_parameters(params, match, blobs):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(**params).fit(blobs)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"weights_init": [0.5, 0.6]}, "'weights' should be normalized"),
        ({"weights_init": [1.0]}, "'weights' should have the shape"),
        ({"means_init": np.zeros((2, 2))}, "'means' should have the shape"),
        ({"precisions_init": -np.ones((2, 3)), "covariance_type": "diag"},
         "'diag precision' should be positive"),
    ],
)
def test_invalid_initial_parameters(kw, match, blobs):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(2, **kw).fit(blobs)


def test_too_few_samples():
    with pytest.raises(InvalidDataError, match="n_samples >= n_components"):
        GaussianMixture(5).fit(da.ones((3, 2), chunks=(2, 2)))


@pytest.mark.parametrize("shape", [(10,), (4, 3, 2)])
def test_dask_input_must_be_2d(shape):
    with pytest.raises(InvalidDataError, match="2-D array"):
        GaussianMixture(1).fit(da.ones(shape))


def test_dask_input_must_be_numeric():
    with pytest.raises(InvalidDataError, match="numeric"):
        GaussianMixture(1).fit(da.from_array(np.array([["a", "b"], ["c", "d"]])))


def test_feature_count_checked_at_predict(blobs):
    gm = GaussianMixture(2, random_state=0).fit(da.from_array(blobs, chunks=500))
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        gm.predict(da.ones((10, 2)))


def test_dask_in_lazy_dask_out(blobs):
    X = da.from_array(blobs, chunks=(700, 3))
    gm = GaussianMixture(3, random_state=0).fit(X)
    for method, shape in [("predict", (3000,)), ("predict_proba", (3000, 3)),
                          ("score_samples", (3000,))]:
        out = getattr(gm, method)(X)
        assert isinstance(out, da.Array), method
        assert out.shape == shape
        assert out.chunks[0] == X.chunks[0]
        np.testing.assert_allclose(out.compute(), getattr(gm, method)(blobs))
    assert isinstance(gm.predict(blobs), np.ndarray)


def test_fit_predict_equals_fit_then_predict(blobs):
    X = da.from_array(blobs, chunks=(700, 3))
    labels = GaussianMixture(3, random_state=1, max_iter=30).fit_predict(X)
    gm = GaussianMixture(3, random_state=1, max_iter=30).fit(X)
    np.testing.assert_array_equal(labels.compute(), gm.predict(X).compute())


def test_fitted_attributes_are_numpy(blobs):
    gm = GaussianMixture(3, random_state=0).fit(da.from_array(blobs, chunks=500))
    for attr in ["weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"]:
        assert isinstance(getattr(gm, attr), np.ndarray), attr
    assert gm.n_features_in_ == 3
    assert isinstance(gm.converged_, bool) and isinstance(gm.n_iter_, int)
    assert len(gm.lower_bounds_) == gm.n_iter_
    np.testing.assert_allclose(
        gm.precisions_ @ gm.covariances_, np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-8)


def test_to_sklearn_is_equivalent(blobs):
    gm = GaussianMixture(3, covariance_type="tied", random_state=0).fit(blobs)
    sk = gm.to_sklearn()
    assert isinstance(sk, SkGM)
    np.testing.assert_array_equal(sk.predict(blobs), gm.predict(blobs))
    np.testing.assert_allclose(sk.score_samples(blobs), gm.score_samples(blobs), rtol=1e-10)


def test_to_sklearn_keeps_the_feature_names(blobs):
    """A model fitted on a DataFrame converts to one that predicts on DataFrames
    without scikit-learn's "X does not have valid feature names" warning."""
    import warnings

    import pandas as pd

    frame = pd.DataFrame(blobs, columns=["a", "b", "c"])
    sk = GaussianMixture(3, random_state=0).fit(frame).to_sklearn()
    assert list(sk.feature_names_in_) == ["a", "b", "c"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sk.predict(frame)
    assert not hasattr(GaussianMixture(3, random_state=0).fit(blobs).to_sklearn(),
                       "feature_names_in_")


def test_sample(blobs):
    gm = GaussianMixture(3, random_state=0).fit(blobs)
    X, y = gm.sample(5000)
    assert X.shape == (5000, 3) and y.shape == (5000,)
    assert np.bincount(y, minlength=3) / 5000 == pytest.approx(gm.weights_, abs=0.03)


@pytest.mark.parametrize("init", ["kmeans", "k-means++", "random", "random_from_data"])
@pytest.mark.parametrize("cov", ["full", "spherical"])
def test_init_methods_fit_well_and_reproducibly(init, cov, blobs):
    X = da.from_array(blobs, chunks=(600, 3))
    kw = dict(covariance_type=cov, init_params=init, random_state=3, max_iter=300)
    a = GaussianMixture(3, **kw).fit(X)
    b = GaussianMixture(3, **kw).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    ref = SkGM(3, covariance_type=cov, n_init=5, random_state=0).fit(blobs)
    # A good optimum: within 1% of scikit-learn's best of five restarts.
    assert a.lower_bound_ > ref.lower_bound_ - 0.01 * abs(ref.lower_bound_)


class ChunkReads:
    """A Dask array whose chunk reads are counted, and an observer that notes the reads
    made before the first EM pass."""

    def __init__(self, data: np.ndarray, chunk_rows: int) -> None:
        self.count = 0
        self.before_em: int | None = None
        self.lock = threading.Lock()
        self.X = da.from_array(data, chunks=(chunk_rows, data.shape[1])).map_blocks(
            self._read, dtype=data.dtype, meta=np.empty((0, 0), data.dtype))
        self.n_chunks = self.X.numblocks[0]

    def _read(self, block: np.ndarray) -> np.ndarray:
        with self.lock:
            self.count += 1
        return block

    def pass_started(self, kind: str, n_chunks: int) -> None:
        if kind == "em" and self.before_em is None:
            self.before_em = self.count


@pytest.mark.parametrize("init, passes", [("kmeans", 2), ("robust", 1)])
def test_a_fit_reads_the_data_at_most_twice_before_em(monkeypatch, init, passes):
    """With more rows than the start's sample, ``'kmeans'`` reads every chunk twice
    before its first EM iteration (the survey gathering the sample, then the hard
    assignment), ``'robust'`` once (the survey), and each EM iteration once; the passes
    by phase are reported in ``passes_``."""
    import daskgmm.engine.starts as starts

    monkeypatch.setattr(starts, "SAMPLE_ROWS", 500)
    data = ChunkReads(make_blobs(4000), 500)
    with daskgmm.observe(data):
        gm = GaussianMixture(3, random_state=0, init_params=init, cache=False).fit(data.X)
    assert data.before_em == passes * data.n_chunks
    assert data.count == (passes + gm.n_iter_) * data.n_chunks
    expected = {"survey": 1.0, "em": float(gm.n_iter_)}
    if passes == 2:
        expected["init"] = 1.0
    assert gm.passes_ == expected
    assert gm.converged_


def test_n_init_keeps_best(blobs):
    single = [GaussianMixture(3, init_params="random", random_state=s, max_iter=200)
              .fit(blobs).lower_bound_ for s in range(1)]
    multi = GaussianMixture(3, init_params="random", n_init=4, random_state=0,
                            max_iter=200).fit(blobs)
    assert multi.lower_bound_ >= max(single) - 1e-12


def test_bit_identical_across_schedulers(blobs, client):
    """Same data, chunking and seed: the same bits on a cluster, threads, and in-process."""
    X = da.from_array(blobs, chunks=(300, 3))
    kw = dict(covariance_type="full", random_state=7, split_every=3)
    on_cluster = GaussianMixture(3, **kw).fit(X)
    with dask.config.set(scheduler="threads"):
        threaded = GaussianMixture(3, **kw).fit(X)
    in_process = GaussianMixture(3, chunk_rows=300, **kw).fit(blobs)
    for other in (threaded, in_process):
        np.testing.assert_array_equal(on_cluster.means_, other.means_)
        np.testing.assert_array_equal(on_cluster.covariances_, other.covariances_)
        assert on_cluster.lower_bounds_ == other.lower_bounds_


def test_results_independent_of_chunking_and_fan_in(blobs):
    init = dict(weights_init=[0.3, 0.3, 0.4], means_init=blobs[[0, 1000, 2000]],
                tol=0.0, max_iter=25, random_state=0)
    with pytest.warns(ConvergenceWarning):
        fits = [
            GaussianMixture(3, chunk_rows=rows, split_every=fan, **init).fit(blobs)
            for rows, fan in [(3000, 8), (128, 2), (1000, 5)]
        ]
    for other in fits[1:]:
        np.testing.assert_allclose(other.means_, fits[0].means_, rtol=1e-9)
        np.testing.assert_allclose(other.covariances_, fits[0].covariances_, rtol=1e-9)


def test_verbose_prints_progress(blobs, capsys):
    GaussianMixture(3, random_state=0, verbose=1, verbose_interval=2, max_iter=5,
                    tol=0).fit(blobs)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Initialization: 1 candidate(s) over 3,000 samples")
    iterations = [line.split()[:2] for line in lines[1:-1]]
    assert iterations == [["Iteration", "2"], ["Iteration", "4"], ["Iteration", "5"]]
    assert "lower bound" in lines[1] and "change" in lines[1] and "time" not in lines[1]
    # The passes by phase: the survey gathering the k-means sample, and 5 of EM.
    assert lines[-1] == "Read the data 6 times (survey 1, em 5)"


def test_verbose_2_adds_passes_and_timing(blobs, capsys):
    GaussianMixture(3, random_state=0, verbose=2, verbose_interval=1, max_iter=2,
                    tol=0, chunk_rows=1000).fit(blobs)
    out = capsys.readouterr().out
    assert "survey pass:" in out  # the first pass: the sample for the k-means start
    assert out.count("time lapse") == 2 and "Fit finished in" in out
