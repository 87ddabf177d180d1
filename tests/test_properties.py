"""Property-based tests (hypothesis) of the chunk statistics and of ``fit``'s robustness.

(a) Chunking does not change the statistics. For random shapes (1-300 rows, 1-6
    features, 1-4 components), random row-chunk boundaries, tile sizes and reduction
    fan-ins, float32 or float64 data, float32 or float64 products, all four covariance
    types and one or two parameter sets at once, the per-chunk
    :func:`daskgmm.engine.estep.estep_statistics` summed with
    :func:`daskgmm.engine.passes.tree_reduce`/:func:`daskgmm.engine.stats.combine` equal
    the statistics of the whole array as one block (to 1e-12 of the terms' magnitude in
    float64, 1e-4 with float32 products; observed: 2e-15 and 1e-6), and the soft counts
    add up to the rows.
(b) ``fit`` fails only on purpose. On small random data, including duplicated rows,
    constant columns, as many rows as components and very large or small scales and
    offsets, :class:`daskgmm.GaussianMixture` either returns finite parameters (weights
    summing to one, covariances of the right shape) or raises a documented error: a
    :class:`daskgmm.errors.DaskGMMError` or the plain ``ValueError`` of scikit-learn's
    input validation. It never lets an ``IndexError``, ``ZeroDivisionError``,
    ``LinAlgError`` or a NumPy ``RuntimeWarning`` (overflow, invalid value; turned into
    errors as ``-W error`` would) escape. NumPy input and small
    ``dask.array.from_array`` input are both tried. Scales of 1e±30 to 1e±150 are
    checked separately and less strictly (RuntimeWarnings tolerated, ``precisions_``
    may overflow).

Parameters are drawn by hypothesis; the numbers themselves come from a NumPy generator
seeded by hypothesis, which keeps the examples cheap and reproducible.
"""

from __future__ import annotations

import warnings

import dask
import dask.array as da
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import InvalidParameterError

from daskgmm import GaussianMixture
from daskgmm.engine import covariance as cov_types
from daskgmm.engine.covariance import COVARIANCE_TYPES
from daskgmm.engine.estep import Components, estep_statistics, make_plan
from daskgmm.engine.passes import tree_reduce
from daskgmm.engine.stats import combine
from daskgmm.errors import DaskGMMError
from daskgmm.models.gaussian import GaussianParams

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------------------
# (a) chunked statistics == one-block statistics
# --------------------------------------------------------------------------------------
def random_params(rng: np.random.Generator, K: int, D: int, covariance_type: str,
                  offset: float) -> GaussianParams:
    """Valid random parameters: SPD covariances turned into precision Cholesky factors."""
    weights = rng.dirichlet(np.ones(K)) + 0.01
    weights /= weights.sum()
    means = rng.normal(scale=3.0, size=(K, D)) + offset
    if covariance_type in ("full", "tied"):
        shape = (K, D, D) if covariance_type == "full" else (D, D)
        A = rng.normal(size=shape)
        cov = A @ np.swapaxes(A, -1, -2) / D + 0.2 * np.eye(D)
    elif covariance_type == "diag":
        cov = rng.uniform(0.2, 3.0, size=(K, D))
    else:
        cov = rng.uniform(0.2, 3.0, size=K)
    ctype = cov_types.get(covariance_type)
    chol, prec_chol = ctype.factorise(cov)
    return GaussianParams(ctype, weights, means, cov, prec_chol, chol)


@st.composite
def chunking_problems(draw):
    n = draw(st.integers(1, 300))
    cuts = draw(st.sets(st.integers(1, max(1, n - 1)), max_size=12)) if n > 1 else set()
    return {
        "n": n,
        "D": draw(st.integers(1, 6)),
        "K": draw(st.integers(1, 4)),
        "covariance_type": draw(st.sampled_from(COVARIANCE_TYPES)),
        "data_dtype": draw(st.sampled_from(["float64", "float32"])),
        "compute_dtype": draw(st.sampled_from(["float64", "float32"])),
        "bounds": [0, *sorted(cuts), n],
        "tile_bytes": draw(st.one_of(st.none(), st.integers(1, 2**14))),
        "split_every": draw(st.integers(2, 5)),
        "n_params": draw(st.integers(1, 2)),
        "offset": draw(st.sampled_from([0.0, 5.0, -1e3])),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def _magnitudes(X: np.ndarray, params: GaussianParams, centre: np.ndarray
                ) -> dict[str, float]:
    """Bounds on the sums of absolute terms of each statistic, to scale tolerances."""
    n = len(X)
    X64 = X.astype(np.float64)
    Xc = np.abs(X64 - centre).max(initial=0.0)
    if params.covariance.name == "full":  # whitened about each component's mean
        y = np.einsum("nkd,kde->nke", X64[:, None, :] - params.means[None],
                      params.precisions_cholesky)
        second = float((y**2).sum(axis=2).max(initial=0.0))
    else:
        second = Xc**2 * X.shape[1]
    return {"nk": n, "sx": n * (1.0 + Xc), "s2": n * (1.0 + second), "n": n}


@settings(max_examples=500, **SETTINGS)
@given(problem=chunking_problems())
def test_chunked_statistics_equal_one_block(problem):
    rng = np.random.default_rng(problem["seed"])
    n, D, K, cov = problem["n"], problem["D"], problem["K"], problem["covariance_type"]
    params = [random_params(rng, K, D, cov, problem["offset"])
              for _ in range(problem["n_params"])]
    labels = rng.integers(K, size=n)
    X = (params[0].means[labels] + rng.normal(size=(n, D))).astype(problem["data_dtype"])
    compute = problem["compute_dtype"]
    comps = [Components.gaussian(p.covariance, p.weights, p.means, p.precisions_cholesky)
             for p in params]
    centre = params[0].weights @ params[0].means
    whole = estep_statistics(X, None, 0, make_plan(comps, centre, dtype=compute)).stats
    plan = make_plan(comps, centre, dtype=compute, tile_bytes=problem["tile_bytes"])
    parts = [
        estep_statistics(X[a:b], None, a, plan)
        for a, b in zip(problem["bounds"][:-1], problem["bounds"][1:], strict=True)
    ]
    chunked = tree_reduce(parts, combine, problem["split_every"]).stats

    rtol = 1e-12 if compute == "float64" else 1e-4
    assert len(chunked) == len(whole) == len(params)
    for got, ref, p in zip(chunked, whole, params, strict=True):
        assert set(got) == set(ref) == {"nk", "sx", "s2", "ll", "n"}
        magnitude = _magnitudes(X, p, centre)
        # The log-likelihood's terms are bounded by the log-likelihood's own size.
        magnitude["ll"] = n + abs(float(ref["ll"]))
        for key, ref_value in ref.items():
            assert got[key].dtype == np.float64, key
            assert got[key].shape == ref_value.shape, key
            assert np.all(np.isfinite(got[key])), key
            np.testing.assert_allclose(got[key], ref_value, rtol=0,
                                       atol=rtol * magnitude[key], err_msg=key)
        assert got["n"] == n
        np.testing.assert_allclose(got["nk"].sum(), n, rtol=1e-9 if compute == "float64"
                                   else 1e-5)
        assert np.all(got["nk"] >= 0)


# --------------------------------------------------------------------------------------
# (b) fit either works or fails on purpose
# --------------------------------------------------------------------------------------
MODERATE_SCALES = (1.0, 1e-8, 1e8)
EXTREME_SCALES = (1e-150, 1e-100, 1e-30, 1e30, 1e100, 1e150)


@st.composite
def fit_problems(draw, scales=MODERATE_SCALES):
    K = draw(st.integers(1, 4))
    n = draw(st.one_of(st.just(K), st.integers(1, 60)))
    D = draw(st.integers(1, 4))
    return {
        "n": n,
        "D": D,
        "K": K,
        "covariance_type": draw(st.sampled_from(COVARIANCE_TYPES)),
        "init_params": draw(st.sampled_from(
            ["kmeans", "k-means++", "random", "random_from_data"])),
        "n_init": draw(st.integers(1, 2)),
        "max_iter": draw(st.integers(1, 30)),
        "reg_covar": draw(st.sampled_from([1e-6, 1e-3, 0.0])),
        "dtype": draw(st.sampled_from(["float64", "float32"])),
        "duplicates": draw(st.sampled_from([0, 1, 2])),  # none / half / all rows equal
        "constant_columns": draw(st.integers(0, D)),
        "scale": draw(st.sampled_from(scales)),
        "offset": draw(st.sampled_from([0.0, 1e6, -1e12])),
        "data_dtype": draw(st.sampled_from(["float64", "float32"])),
        "dask_chunks": draw(st.one_of(st.none(), st.integers(1, 25))),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def make_data(problem: dict) -> np.ndarray:
    rng = np.random.default_rng(problem["seed"])
    n, D, K = problem["n"], problem["D"], problem["K"]
    centres = rng.normal(scale=4.0, size=(K, D))
    X = centres[rng.integers(K, size=n)] + rng.normal(size=(n, D))
    if problem["duplicates"] == 1 and n > 1:
        X[n // 2:] = X[rng.integers(max(1, n // 2), size=n - n // 2)]
    elif problem["duplicates"] == 2:
        X[:] = X[0]
    X[:, : problem["constant_columns"]] = 1.5
    dtype = np.dtype(problem["data_dtype"])
    # Huge or tiny, but representable: non-finite data is test_bad_input's business.
    limit = float(np.finfo(dtype).max) ** 0.5
    scale = min(max(problem["scale"], 1.0 / limit), limit / 1e3)
    return (X * scale + problem["offset"]).astype(dtype)


def _is_documented(exc: BaseException) -> bool:
    if isinstance(exc, DaskGMMError):
        return True
    # scikit-learn's parameter and input validation (validate_data, check_array).
    return type(exc) in (ValueError, InvalidParameterError)


def _estimator(problem: dict) -> GaussianMixture:
    return GaussianMixture(
        problem["K"], covariance_type=problem["covariance_type"],
        init_params=problem["init_params"], n_init=problem["n_init"],
        max_iter=problem["max_iter"], reg_covar=problem["reg_covar"], dtype=problem["dtype"],
        random_state=problem["seed"] % 1000,
    )


def check_fit(problem: dict, *, runtime_warnings: str = "error",
              finite: tuple[str, ...] = ("weights_", "means_", "covariances_",
                                         "precisions_", "precisions_cholesky_")) -> None:
    """Fit; accept a documented error or finite fitted attributes ``finite``.

    ``runtime_warnings="error"`` turns NumPy's RuntimeWarnings into exceptions, as
    ``python -W error`` would: they must not escape either.
    """
    X = make_data(problem)
    if problem["dask_chunks"] is not None:
        X = da.from_array(X, chunks=(problem["dask_chunks"], -1))
    gm = _estimator(problem)
    with warnings.catch_warnings(), dask.config.set(scheduler="synchronous"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter(runtime_warnings, RuntimeWarning)
        try:
            gm.fit(X)
        except Exception as exc:
            if not _is_documented(exc):
                raise AssertionError(
                    f"undocumented {type(exc).__name__} from fit: {exc}") from exc
            assert len(str(exc)) > 20, f"an error without a useful message: {exc!r}"
            return
    K, D = problem["K"], problem["D"]
    for name in finite:
        assert np.all(np.isfinite(getattr(gm, name))), (name, getattr(gm, name))
    assert gm.means_.shape == (K, D)
    assert np.all(gm.weights_ >= 0)
    # Fitted attributes keep float32 input's dtype, as in scikit-learn.
    assert gm.means_.dtype == np.dtype(problem["data_dtype"])
    np.testing.assert_allclose(gm.weights_.sum(), 1.0,
                               rtol=1e-9 if problem["data_dtype"] == "float64" else 1e-6)
    assert np.isfinite(gm.lower_bound_)
    assert len(gm.lower_bounds_) == gm.n_iter_ <= problem["max_iter"]


@settings(max_examples=600, **SETTINGS)
@given(problem=fit_problems())
def test_fit_succeeds_or_raises_a_documented_error(problem):
    """Scales 1e-8..1e8, offsets up to 1e12; RuntimeWarnings count as failures."""
    check_fit(problem)


@settings(max_examples=300, **SETTINGS)
@given(problem=fit_problems(EXTREME_SCALES))
def test_extreme_scales_raise_only_documented_errors(problem):
    """Scales 1e±30..1e±150: no undocumented exception (RuntimeWarnings tolerated and
    ``precisions_`` may overflow)."""
    check_fit(problem, runtime_warnings="ignore",
              finite=("weights_", "means_", "covariances_", "precisions_cholesky_"))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("dask_chunks", [None, 3])
def test_fit_all_rows_equal(covariance_type, dask_chunks):
    """Deterministic anchor of the property: collapsed data, no regularisation."""
    check_fit({"n": 10, "D": 2, "K": 2, "covariance_type": covariance_type,
               "init_params": "kmeans", "n_init": 1, "max_iter": 5, "reg_covar": 0.0,
               "dtype": "float64", "duplicates": 2, "constant_columns": 0, "scale": 1.0,
               "offset": 0.0, "data_dtype": "float64", "dask_chunks": dask_chunks,
               "seed": 0})


# Values of the order of 1e-155: variances near 1e-310 (subnormal), precisions beyond
# the float64 range.
TINY = np.array([[0.3], [-1.1], [0.9], [2.0]]) * 1e-155


def test_tiny_scale_fit_has_finite_precisions():
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = GaussianMixture(2, covariance_type="tied", reg_covar=0.0, max_iter=5,
                                 random_state=0).fit(TINY)
    except DaskGMMError:
        return
    assert np.all(np.isfinite(gm.precisions_)), gm.precisions_


@pytest.mark.parametrize(
    ("X", "covariance_type", "dtype"),
    [(TINY * 1e1, "spherical", "float64"),
     (TINY * 1e1, "diag", "float64"),
     (np.array([[0.3, 1.0], [-1.1, 2.0], [0.9, 0.5], [2.0, -1.0]]) * 1e40, "spherical",
      "float32")],
    ids=["spherical-tiny", "diag-tiny", "float32-products-huge"],
)
def test_overflow_raises_documented_error_without_runtime_warning(X, covariance_type,
                                                                  dtype):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(DaskGMMError,
                           match=r"overflowed|variance|covariance|too large for"):
            GaussianMixture(2, covariance_type=covariance_type, reg_covar=0.0,
                            max_iter=5, dtype=dtype, random_state=0).fit(X)


def test_float32_second_moments_that_overflow_are_a_documented_error():
    """Found by the property test above: two rows 1e-8 apart and reg_covar=0 give a
    precision whose operands fit float32 but whose whitened second moments overflow it;
    the fit must refuse with the documented error, not a RuntimeWarning."""
    check_fit({"n": 2, "D": 2, "K": 1, "covariance_type": "full",
               "init_params": "k-means++", "n_init": 1, "max_iter": 1, "reg_covar": 0.0,
               "dtype": "float32", "duplicates": 0, "constant_columns": 1, "scale": 1e-08,
               "offset": 0.0, "data_dtype": "float64", "dask_chunks": None, "seed": 2})
