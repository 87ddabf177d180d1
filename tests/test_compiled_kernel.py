"""The compiled E-step kernel (engine/fused.py) against the NumPy tile loop, the choice
between them, the tiled prediction kernels' memory, and the small-data pass."""

from __future__ import annotations

import re
import threading
import tracemalloc

import numpy as np
import pytest

from daskgmm.engine import estep
from daskgmm.engine.estep import Components, estep_statistics, make_plan
from daskgmm.errors import DegenerateComponentError, InvalidDataError, NonFiniteDataError

from .conftest import make_blobs

pytest.importorskip("numba")

COV_TYPES = ["full", "tied", "diag", "spherical"]


def _components(cov: str, X: np.ndarray, k: int, seed: int = 0,
                scale: float = 1.0) -> Components:
    """``k`` rows of ``X`` as means, unequal weights, the data's variance (times
    ``scale``) everywhere."""
    from daskgmm.engine import covariance as cov_types

    rng = np.random.default_rng(seed)
    d = X.shape[1]
    means = X[rng.choice(len(X), size=k, replace=False)]
    var = float(X.var(axis=0).mean()) * scale
    covariances = {"full": np.stack([var * np.eye(d) * (1 + 0.1 * j) for j in range(k)]),
                   "tied": var * np.eye(d), "diag": np.full((k, d), var),
                   "spherical": np.full(k, var)}[cov]
    weights = rng.uniform(0.5, 1.5, size=k)
    c = cov_types.get(cov)
    return Components.gaussian(c, weights / weights.sum(), means,
                               c.precisions_cholesky(covariances))


def _stats(X, w, comps, kernel, **kw):
    plan = make_plan(comps, X.mean(axis=0), kernel=kernel, tile_bytes=1, **kw)
    return estep_statistics(X, w, 0, plan).stats


def _assert_close(a, b, rtol):
    for sa, sb in zip(a, b, strict=True):
        assert sa.keys() == sb.keys()
        for key in sa:
            x, y = np.asarray(sa[key]), np.asarray(sb[key])
            scale = max(float(np.abs(x).max()), 1e-300)
            assert np.abs(x - y).max() <= rtol * scale, (key, np.abs(x - y).max() / scale)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_exponential_is_within_an_ulp(dtype):
    """The vectorised exponential of the softmax, over its whole domain [log(tiny) + 1,
    0], against NumPy's in float64: within one unit in the last place of ``dtype``."""
    from daskgmm.engine import fused

    lo = np.log(np.finfo(dtype).tiny) + 1.0
    x = np.concatenate([np.linspace(lo, 0.0, 200_001), [0.0, -1e-30, lo],
                        -np.random.default_rng(0).exponential(2.0, 50_000)]).astype(dtype)
    x = np.maximum(x, dtype(lo))
    got = x.copy()
    fused.exp_nonpositive(got)
    exact = np.exp(x.astype(np.longdouble))
    rel = np.abs(got.astype(np.longdouble) - exact) / exact
    assert float(rel.max()) <= 1.0 * np.finfo(dtype).eps


def test_compiled_centring_refuses_arrays_not_in_c_order():
    """The register transposes load and store four neighbours along the last axis, so
    they compile only for C-ordered data and tiles (Fortran-ordered data, whose
    neighbours lie a column apart, is a typing error, not wrong numbers)."""
    from numba.core.errors import TypingError

    from daskgmm.engine import fused

    X = np.asfortranarray(np.arange(64.0).reshape(8, 8))
    with pytest.raises(TypingError):
        fused._centre(X, 0, 8, np.zeros(8), np.zeros((9, 8)), 0)


def test_full_width_vectorises_with_512_bit_registers_where_the_cpu_has_them():
    """A loop in a function that calls ``_full_width()`` (the kernels' exponential loop)
    is compiled with 512-bit registers on a CPU with AVX-512 (the same loop without it,
    on CPUs LLVM tunes for 256 bits, is not); the attribute leaves results unchanged.
    Skipped on CPUs without AVX-512 (where there is nothing to widen)."""
    import llvmlite.binding as llvm
    from numba import njit

    from daskgmm.engine import fused

    if "+avx512f" not in llvm.get_host_cpu_features().flatten().split(","):
        pytest.skip("the CPU has no 512-bit vectors")

    # The kernels' own exponential loop, compiled afresh: machine code loaded from numba's
    # cache cannot be inspected.
    wide = njit(cache=False, nogil=True, fastmath={"contract"})(
        fused.exp_nonpositive.py_func)
    values = -np.linspace(0.0, 700.0, 1001)
    out = values.copy()
    wide(out)
    expected = values.copy()
    fused.exp_nonpositive(expected)
    np.testing.assert_array_equal(out, expected)
    assembly = "\n".join(wide.inspect_asm().values())
    assert re.search(r"vfmadd\w*pd\s+%zmm", assembly), "no 512-bit multiply-add"


@pytest.mark.parametrize("squares", [0, 1, 2])
@pytest.mark.parametrize("n_features,n_rows", [(1, 3), (4, 4), (7, 66), (16, 64), (33, 97)])
@pytest.mark.parametrize("data_dtype,dtype", [(np.float64, np.float64),
                                              (np.float64, np.float32),
                                              (np.float32, np.float32)])
def test_compiled_centring_is_the_centred_transpose(n_features, n_rows, data_dtype, dtype,
                                                    squares):
    """The compiled centring (4 x 4 blocks transposed in registers, the features and rows
    beyond the last whole block one at a time) gives NumPy's ``(X - c).T`` rounded to the
    compute dtype, a row of ones and the squares or their sums, exactly; it reports a
    NaN, an infinity, or a float64 value that overflows float32, wherever it lies."""
    from daskgmm.engine import fused

    rng = np.random.default_rng(n_features * 1000 + n_rows)
    X = (rng.normal(size=(n_rows + 7, n_features)) * 10 + 5).astype(data_dtype)
    centre = rng.normal(size=n_features)
    r0 = 5
    xc = (X[r0:r0 + n_rows].astype(np.float64) - centre).T.astype(dtype)
    extra = {0: [], 1: [xc * xc], 2: [(xc * xc).sum(axis=0, dtype=dtype)[None]]}[squares]
    expected = np.concatenate([xc, np.ones((1, n_rows), dtype), *extra])
    out = np.full(expected.shape, 7, dtype)
    assert fused._centre(X, r0, n_rows, centre, out, squares) == 0
    np.testing.assert_array_equal(out[:n_features + 1], expected[:n_features + 1])
    if squares == 2:  # summed in another order
        np.testing.assert_allclose(out[-1], expected[-1], rtol=n_features * 2e-7)
    else:
        np.testing.assert_array_equal(out, expected)
    bad_values = [np.nan, np.inf, -np.inf] + ([1e39] if data_dtype != dtype else [])
    for value in bad_values:
        for i, d in [(0, 0), (n_rows - 1, n_features - 1),
                     (int(rng.integers(n_rows)), int(rng.integers(n_features)))]:
            Y = X.copy()
            Y[r0 + i, d] = value
            assert fused._centre(Y, r0, n_rows, centre, out, squares) > 0, (value, i, d)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_logarithm_is_within_three_ulps(dtype):
    """The vectorised logarithm of the softmax's row totals (float64 result) over the
    totals' range [1, K] and over positive normal numbers of every exponent, against
    NumPy's in extended precision: within three units in the last place of float64."""
    from daskgmm.engine import fused

    rng = np.random.default_rng(0)
    x = np.concatenate([np.linspace(1.0, 64.0, 100_001), rng.uniform(1.0, 5_000.0, 50_000),
                        2.0 ** rng.uniform(-125.0, 127.0, 50_000),
                        [1.0, np.nextafter(1.0, 2.0), 2.0, np.sqrt(2.0),
                         np.nextafter(np.sqrt(2.0), 1.0), np.finfo(np.float32).tiny]])
    x = x.astype(dtype)
    got = np.empty(len(x))
    fused.log_positive(x, got)
    exact = np.log(x.astype(np.longdouble))
    ulps = np.abs(got.astype(np.longdouble) - exact) / np.spacing(np.abs(exact).astype(float))
    assert got[x == 1].tolist() == [0.0] * int((x == 1).sum())
    assert float(ulps[x != 1].max()) <= 3.0


def _gapped_log_densities(dtype) -> np.ndarray:
    """Log-densities (K = 5, 96 rows) whose rows hold their maximum, values just above and
    just below the cut (:data:`daskgmm.engine.estep.LOG_CUT`) relative to it, and far
    below, in shuffled places."""
    cut = estep.LOG_CUT[np.dtype(dtype).char]
    rng = np.random.default_rng(0)
    rows = [rng.permutation([0.0, -1.0, cut + 0.5, cut - 0.5, 3 * cut]) for _ in range(96)]
    return (np.array(rows).T + rng.uniform(-50.0, 50.0, size=96)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("path", ["numpy", "compiled"])
def test_responsibilities_far_below_the_rows_largest_are_zero_never_subnormal(path, dtype):
    """Both softmaxes: a responsibility whose log lies below the cut relative to its row's
    largest is exactly zero, every other one is a normal number (subnormal operands cost a
    microcode assist per operation in the products that follow), rows sum to one and the
    log-likelihood is the exact log-sum-exp's."""
    from daskgmm.engine import fused
    from daskgmm.engine.workspace import Workspace

    wlp = _gapped_log_densities(dtype)
    cut = estep.LOG_CUT[np.dtype(dtype).char]
    K, m = wlp.shape
    wide = wlp.astype(np.float64)
    exact_ll = float(np.logaddexp.reduce(wide, axis=0).sum())
    below = (wide - wide.max(axis=0)) < cut
    r = wlp.copy()
    if path == "numpy":
        log_norm, _ = estep._softmax(r, Workspace(), False)
        ll = float(log_norm.sum())
    else:
        ll, _, bad = fused._softmax(r, np.empty(0), 0, dtype(cut), False, np.empty(m, dtype),
                                    np.empty(m, dtype), np.empty((K, m), dtype), np.empty(m))
        assert bad == 0
    assert below.sum() == 2 * m
    assert (r[below] == 0).all()
    assert (r[~below] >= np.finfo(dtype).tiny).all()
    np.testing.assert_allclose(r.sum(axis=0, dtype=np.float64), 1.0,
                               rtol=4 * np.finfo(dtype).eps)
    assert ll == pytest.approx(exact_ll, rel=1e-12 if dtype == np.float64 else 1e-6)


def test_compiled_softmax_reports_a_row_without_a_finite_maximum():
    """A row whose log-densities are all -inf has no finite log-likelihood: the compiled
    softmax counts it as bad (the NumPy path's log-likelihood is -inf there), as it does
    a NaN or +inf."""
    from daskgmm.engine import fused

    for value in (-np.inf, np.inf, np.nan):
        wlp = np.zeros((3, 8))
        wlp[:, 5] = value
        _, _, bad = fused._softmax(wlp, np.empty(0), 0, estep.LOG_CUT["d"], False,
                                   np.empty(8), np.empty(8), np.empty((3, 8)), np.empty(8))
        assert bad >= 1, value


@pytest.mark.parametrize("cov", COV_TYPES)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_compiled_kernel_equals_numpy_kernel(cov, weighted):
    """Same statistics (n, ll, nk, sx, s2, ent) from both kernels, float64, for a pass of
    three candidates (two restarts sharing a group, one of another K), many tiles and a
    short last one."""
    X = make_blobs(1_000, d=5) * 3.0 + 10.0
    w = np.random.default_rng(1).uniform(0, 3, size=len(X)) if weighted else None
    comps = [_components(cov, X, 3, 0), _components(cov, X, 3, 1), _components(cov, X, 4, 2)]
    a = _stats(X, w, comps, "numpy", entropy=True)
    b = _stats(X, w, comps, "compiled", entropy=True)
    _assert_close(a, b, 1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("cov", COV_TYPES)
def test_compiled_kernel_equals_numpy_kernel_in_float32(cov):
    """float32 products (float64 accumulation) from float64 data: the two kernels agree
    to float32 rounding; float32 data through the compiled kernel give the same."""
    X = make_blobs(1_000, d=5) * 3.0 + 10.0
    comps = [_components(cov, X, 3, 0)]
    a = _stats(X, None, comps, "numpy", dtype="float32")
    b = _stats(X, None, comps, "compiled", dtype="float32")
    _assert_close(a, b, 2e-6)
    if cov == "full":
        c = _stats(X.astype(np.float32), None, comps, "compiled", dtype="float32")
        _assert_close(b, c, 2e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("d", [1, 3, 4, 6, 13, 16, 33])
def test_compiled_scatter_is_the_weighted_product_in_its_lower_triangle(d, dtype):
    """``scatter_lower`` writes ``sum_i r_i y_i y_iᵀ`` on and below the diagonal (in 4 x 4
    blocks and the rows past the last whole block), leaves the blocks above the diagonal
    alone, for tiles of 1 to 97 rows."""
    from daskgmm.engine import fused

    rng = np.random.default_rng(d)
    tol = 1e-13 if dtype == "float64" else 2e-6
    for m in (1, 5, 64, 97):
        Y = rng.standard_normal((d, m)).astype(dtype)
        r = rng.uniform(0, 2, size=m).astype(dtype)
        out = np.full((d, d), np.nan, dtype=dtype)
        fused.scatter_lower(Y, r, out)
        expected = (Y.astype(np.float64) * r) @ Y.T.astype(np.float64)
        lower = np.tril(np.ones((d, d), bool))
        np.testing.assert_allclose(out[lower], expected[lower], rtol=tol,
                                   atol=tol * np.abs(expected).max())
        d4 = d - d % 4
        block = np.arange(d)[:, None] // 4 == np.arange(d)[None, :] // 4
        written = lower | (block & (np.arange(d)[:, None] < d4) & (np.arange(d)[None, :] < d4))
        assert np.isnan(out[~written]).all()
        assert not np.isnan(out[written]).any()


@pytest.mark.parametrize("cov", ["full", "tied"])
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-6)])
def test_compiled_scatter_equals_the_numpy_kernels_and_is_exactly_symmetric(
        cov, dtype, rtol):
    """The compiled kernels' second moments (one triangle, mirrored after the last tile)
    equal the NumPy kernel's, weighted, over many tiles and a short last one, with a
    number of features that is not a multiple of four; the result is exactly
    symmetric."""
    X = make_blobs(700, d=11) * 3.0 + 10.0
    w = np.random.default_rng(3).uniform(0, 3, size=len(X))
    comps = [_components(cov, X, 3, 0), _components(cov, X, 2, 1)]
    compiled = _stats(X, w, comps, "compiled", dtype=dtype)
    for st in compiled:
        np.testing.assert_array_equal(st["s2"], np.swapaxes(st["s2"], -1, -2))
    _assert_close(_stats(X, w, comps, "numpy", dtype=dtype), compiled, rtol)


@pytest.mark.parametrize("cov", ["full", "diag"])
def test_compiled_candidates_sharing_a_pass_get_what_they_would_alone(cov):
    X = make_blobs(700, d=4)
    comps = [_components(cov, X, 3, s) for s in range(3)] + [_components(cov, X, 2, 7)]
    together = _stats(X, None, comps, "compiled")
    for comp, st in zip(comps, together, strict=True):
        alone = _stats(X, None, [comp], "compiled")[0]
        for key in st:
            np.testing.assert_array_equal(st[key], alone[key])


def _error(X, comps, kernel, bad_row=None, **kw):
    """The exception of a chunk starting at row 100: its type and message, with the
    tile's row range (tiles differ between the kernels) replaced by ``rows T`` once
    checked to hold ``bad_row``."""
    with pytest.raises((NonFiniteDataError, InvalidDataError, DegenerateComponentError)) as e:
        estep_statistics(X, None, 100, make_plan(comps, np.zeros(X.shape[1]), kernel=kernel,
                                                 tile_bytes=1, **kw))
    message = str(e.value)
    found = re.search(r"rows (\d+)\.\.(\d+) ", message)
    if found and bad_row is not None:
        assert int(found[1]) <= 100 + bad_row <= int(found[2]), message
        message = message.replace(found[0], "rows T ")
    return type(e.value), message


def test_compiled_kernel_raises_the_numpy_kernels_errors():
    """NaN data, data too large for float32, a row whose squared distances overflow and
    float32 second moments that overflow: the same exception and message from both kernels
    (naming the tile that holds the row at fault)."""
    X = make_blobs(300, d=3)
    comps = [_components("full", X, 2)]
    bad = X.copy()
    bad[250, 1] = np.nan
    huge = X.copy()
    huge[210, 0] = 1e39
    assert _error(bad, comps, "numpy") == _error(bad, comps, "compiled")
    assert _error(bad, comps, "compiled")[0] is NonFiniteDataError
    kind, message = _error(huge, comps, "compiled", 210, dtype="float32")
    assert (kind, message) == _error(huge, comps, "numpy", 210, dtype="float32")
    assert kind is InvalidDataError
    far = X.copy()
    far[5] = 1e200  # finite, but its squared distances overflow
    kind, message = _error(far, comps, "compiled", 5)
    assert (kind, message) == _error(far, comps, "numpy", 5)
    # Variances ~1e-37: the whitened second moments of a tile overflow float32.
    tight = [_components("full", X, 2, scale=1e-37)]
    kind, message = _error(X, tight, "compiled", dtype="float32")
    assert (kind, message) == _error(X, tight, "numpy", dtype="float32")
    assert kind is DegenerateComponentError


def test_kernel_choice(monkeypatch):
    """'auto' compiles NumPy chunks of at least COMPILED_MIN_ROWS rows; 'numpy' never;
    DASKGMM_KERNEL decides for 'auto' plans; without numba 'auto' runs NumPy and
    'compiled' says what to install."""
    comps = [_components("diag", make_blobs(50, d=2), 2)]
    plan = make_plan(comps, np.zeros(2))
    small = np.zeros((estep.COMPILED_MIN_ROWS - 1, 2))
    large = np.zeros((estep.COMPILED_MIN_ROWS, 2))
    assert not estep.use_compiled(plan, small)
    assert estep.use_compiled(plan, large)
    assert not estep.use_compiled(plan, large.astype(np.int64))
    assert not estep.use_compiled(make_plan(comps, np.zeros(2), kernel="numpy"), large)
    assert estep.use_compiled(make_plan(comps, np.zeros(2), kernel="compiled"), small)
    monkeypatch.setenv("DASKGMM_KERNEL", "numpy")
    assert not estep.use_compiled(plan, large)
    monkeypatch.setenv("DASKGMM_KERNEL", "compiled")
    assert estep.use_compiled(plan, small)
    monkeypatch.setenv("DASKGMM_KERNEL", "fast")
    with pytest.raises(ValueError, match="DASKGMM_KERNEL"):
        estep.use_compiled(plan, small)
    monkeypatch.delenv("DASKGMM_KERNEL")
    with pytest.raises(ValueError, match="kernel must be one of"):
        make_plan(comps, np.zeros(2), kernel="fast")
    monkeypatch.setattr(estep, "_fused", lambda: None)
    assert not estep.use_compiled(plan, large)
    with pytest.raises(ImportError, match="numba"):
        estep.use_compiled(make_plan(comps, np.zeros(2), kernel="compiled"), small)


def _choice_in_a_worker(plan, X):
    return estep.use_compiled(plan, X)


@pytest.mark.slow
def test_auto_leaves_workers_with_little_memory_to_numpy():
    """Under 'auto', a worker process with a memory limit below
    COMPILED_MIN_WORKER_MEMORY runs NumPy (numba would take ~120 MiB of it); one without
    a limit compiles, as the driver does."""
    from distributed import Client, LocalCluster

    plan = make_plan([_components("diag", make_blobs(50, d=2), 2)], np.zeros(2))
    large = np.zeros((estep.COMPILED_MIN_ROWS, 2))
    assert estep.use_compiled(plan, large)
    for limit, compiled in (("512MiB", False), (0, True)):
        with LocalCluster(n_workers=1, threads_per_worker=1, memory_limit=limit,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            assert client.submit(_choice_in_a_worker, plan, large).result() is compiled


def _tile_rows_seen(monkeypatch) -> list[int]:
    """The tile rows of every later call of the compiled kernel, in order."""
    seen = []
    real = estep._fused().group_statistics

    def spy(*args):
        seen.append(args[7])  # tile rows
        return real(*args)

    monkeypatch.setattr(estep._fused(), "group_statistics", spy)
    return seen


def test_compiled_tiles_follow_the_cache(monkeypatch):
    """Tiles of the compiled kernel take a fraction of the per-core cache (at least
    COMPILED_MIN_TILE_ROWS rows), or the plan's tile_bytes."""
    assert estep.cache_bytes() >= 32 * 2**10
    X = make_blobs(5_000, d=4)
    comps = [_components("spherical", X, 3)]
    seen = _tile_rows_seen(monkeypatch)
    estep_statistics(X, None, 0, make_plan(comps, X.mean(0), kernel="compiled"))
    monkeypatch.setattr(estep, "cache_bytes", lambda: 2**20)
    estep_statistics(X, None, 0, make_plan(comps, X.mean(0), kernel="compiled"))
    estep_statistics(X, None, 0, make_plan(comps, X.mean(0), kernel="compiled",
                                           tile_bytes=1))
    per_row = estep._fused().row_bytes("spherical", 3, 4, 8)
    rows = int(estep.COMPILED_CACHE_FRACTION * 2**20) // per_row
    assert seen[1] == rows // estep.COMPILED_ROW_MULTIPLE * estep.COMPILED_ROW_MULTIPLE
    assert seen[2] == estep.COMPILED_MIN_TILE_ROWS


def test_compiled_tiles_of_wide_full_rows_hold_enough_rows_for_the_products(monkeypatch):
    """Where the cache's share holds fewer than COMPILED_GOOD_TILE_ROWS rows of full
    covariances (many components of many features), the tile takes that many if they fit
    in COMPILED_MAX_CACHE_FRACTION of the cache; otherwise, for other types, or with the
    plan's tile_bytes, the cache's share (at least COMPILED_MIN_TILE_ROWS)."""
    monkeypatch.setattr(estep, "cache_bytes", lambda: 2**21)
    good = estep.COMPILED_GOOD_TILE_ROWS["full"]
    share = estep.COMPILED_CACHE_FRACTION * 2**21
    narrow = int(share // 300)  # plenty of rows: the cache's share decides
    assert estep.compiled_tile_rows("full", 300) == narrow // 16 * 16 > good
    wide = int(share // (good - 30)) + 1  # the share holds fewer than `good` rows
    assert estep.compiled_tile_rows("full", wide) == good
    assert estep.compiled_tile_rows("diag", wide) == (good - 31) // 16 * 16
    too_wide = int(estep.COMPILED_MAX_CACHE_FRACTION * 2**21 // good) + 1
    assert estep.compiled_tile_rows("full", too_wide) == estep.COMPILED_MIN_TILE_ROWS
    assert estep.compiled_tile_rows("full", wide, tile_bytes=wide * 70) == 64  # as given
    seen = _tile_rows_seen(monkeypatch)
    X = make_blobs(3_000, d=32)
    estep_statistics(X, None, 0, make_plan([_components("full", X, 16)], X.mean(0),
                                           kernel="compiled"))
    per_row = estep._fused().row_bytes("full", 16, 32, 8)
    assert share // per_row < good <= seen[0] == good


@pytest.mark.parametrize("func", ["predict_block", "predict_proba_block",
                                  "score_samples_block", "score_statistics"])
def test_prediction_kernels_peak_is_the_output_plus_a_tile(func):
    """A 20,000-row chunk at K=300 (full): the kernels' new memory at their peak is their
    output plus one tile's workspace (untiled, the (n, K) float64 log-densities alone are
    48 MB)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20_000, 4))
    comps = _components("full", X, 300)
    plan = make_plan([comps], X.mean(axis=0))
    kernel = getattr(estep, func)
    args = (X, None, 0, plan) if func == "score_statistics" else (X, 0, plan)
    out_bytes = {"predict_block": 8 * len(X), "predict_proba_block": 8 * len(X) * 300,
                 "score_samples_block": 8 * len(X), "score_statistics": 0}[func]
    result = {}

    def run() -> None:  # a fresh thread: its workspace is allocated inside the measure
        tracemalloc.start()
        try:
            result["value"] = kernel(*args)
            result["peak"] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    tile = estep.TILE_BYTES
    assert result["peak"] <= out_bytes + 3 * tile, (result["peak"] - out_bytes) / 2**20
    if func == "predict_proba_block":
        np.testing.assert_allclose(result["value"].sum(axis=1), 1.0)


def test_small_passes_run_in_the_calling_thread():
    """A pass over NumPy input of fewer than SERIAL_VALUES values runs every chunk in
    the calling thread (no pool); a larger one hands them to the pool's threads."""
    from daskgmm.engine.passes import SERIAL_VALUES, RowChunks

    def kernel(block, weights, row_start):
        return {threading.current_thread().name}

    def union(*parts):
        return set().union(*parts)

    rows = SERIAL_VALUES // 4 - 1
    small = RowChunks(np.zeros((rows, 4)), chunk_rows=rows // 3 + 1)
    assert small.n_chunks == 3
    assert small.map_reduce(kernel, combine=union) == {threading.current_thread().name}
    large = RowChunks(np.zeros((SERIAL_VALUES // 4 + 4, 4)), chunk_rows=SERIAL_VALUES // 8)
    names = large.map_reduce(kernel, combine=union)
    import os

    if (os.cpu_count() or 1) > 1:
        assert all(name.startswith("daskgmm-chunk") for name in names)


def test_inverse_transpose_lower_equals_triangular_solves():
    from scipy.linalg import solve_triangular

    from daskgmm.engine.covariance.full import inverse_transpose_lower

    A = np.random.default_rng(0).normal(size=(5, 6, 6))
    C = np.linalg.cholesky(A @ A.transpose(0, 2, 1) + np.eye(6))
    expected = solve_triangular(C, np.broadcast_to(np.eye(6), C.shape), lower=True)
    got = inverse_transpose_lower(C)
    np.testing.assert_allclose(got, expected.transpose(0, 2, 1), rtol=1e-13, atol=1e-15)
    assert not np.tril(got, -1).any() and got.flags.c_contiguous
