"""The E-step of one chunk: plain NumPy, no Dask.

A pass ships one :class:`EStepPlan` to the workers (a single graph key): the Gaussian
components of every candidate mixture still running, grouped by covariance type into
batches whose operands are concatenated, so one batched GEMM serves the components of all
the candidates (restarts, or the models of a selection sweep) of a type. For each chunk,
:func:`estep_statistics` walks the rows in tiles; for every batch it computes the squared
Mahalanobis distances, each candidate's responsibilities by a log-sum-exp over its own
components, and the weighted statistics (:mod:`daskgmm.engine.stats`), accumulated in
float64.

The same tile loop serves the initialisation: :func:`assignment_statistics` takes the
responsibilities from a rule (the nearest centre, or uniform random numbers) instead of the
posterior.

Numerical care: every tile is centred on its group's ``centre`` in float64 before it is cast
to the compute dtype, so a large common offset never meets float32 rounding or a sum of
squares; responsibilities come from a log-sum-exp; full covariances accumulate whitened
second moments (see :mod:`daskgmm.engine.covariance.full`).
"""

from __future__ import annotations

import functools
import math
import os
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from daskgmm.engine import covariance as cov_types
from daskgmm.engine.covariance import Batch, CovarianceType
from daskgmm.engine.stats import PassResult, Stats
from daskgmm.engine.workspace import Workspace, workspace
from daskgmm.errors import DegenerateComponentError, InvalidDataError, NonFiniteDataError

#: Workspace bytes one tile of a candidate may take: the best size of the tile sweep of
#: ``scripts/bench.py`` for three of its four shapes (the fourth, full D=64 K=16, is 7%
#: faster at 8 MiB); 1 MiB tiles were 4-10% slower on one thread, and with two threads
#: in one process (NumPy input) an iteration took 0.75 s instead of 0.52 s (full D=16
#: K=8, N=2M): a tile's many short NumPy calls contend for the GIL.
TILE_BYTES = 4 * 2**20
#: Fewest rows in a tile.
MIN_TILE_ROWS = 256
#: At most this many candidates with the same centre, type and K share a group
#: (batched products).
BATCH_TILES = 8
#: Workspace bytes one tile of a whole group may take (its candidates' products side by
#: side): a group of many candidates gets tiles of fewer rows, so that the working
#: memory of a task stays bounded whatever the number of candidates.
BATCH_BYTES = 8 * 2**20
_LOG_2PI = math.log(2.0 * math.pi)
#: Responsibilities whose weight, relative to their row's largest, is below the square
#: root of the smallest normal number of the compute dtype (log: this value; float64
#: 1.5e-154, float32 1.1e-19) are zero. Kept, they are subnormal after normalisation or
#: in the products that follow, where every operation on one costs a microcode assist:
#: the scatter GEMM of a tile ran 180x slower with half its responsibilities subnormal;
#: and they weigh nothing next to the 10 eps every soft count receives.
LOG_CUT = {np.dtype(t).char: 0.5 * math.log(float(np.finfo(t).tiny))
           for t in (np.float32, np.float64)}


@dataclass(frozen=True, eq=False)
class Components:
    """The Gaussian components of one candidate mixture, as its E-step sees them.

    Attributes
    ----------
    covariance : CovarianceType
    means : ndarray of shape (K, D)
    precisions_cholesky : ndarray
        scikit-learn's parameterisation, in the covariance type's shape.
    log_constant : ndarray of shape (K,)
        Everything in the log of the weighted density but ``-0.5`` times the squared
        Mahalanobis distance: log-weights, ``log det L`` and ``-D/2 log 2π`` for a
        Gaussian mixture (and the variational terms of a Bayesian one).
    """

    covariance: CovarianceType
    means: np.ndarray
    precisions_cholesky: np.ndarray
    log_constant: np.ndarray

    @classmethod
    def gaussian(cls, covariance: str | CovarianceType, weights: np.ndarray,
                 means: np.ndarray, precisions_cholesky: np.ndarray) -> Components:
        """The components of a Gaussian mixture with these parameters."""
        cov = cov_types.get(covariance)
        means = np.asarray(means, dtype=np.float64)
        with np.errstate(divide="ignore"):
            log_weights = np.log(np.asarray(weights, dtype=np.float64))
        log_det = cov.log_det_cholesky(precisions_cholesky, means.shape[1])
        constant = log_weights + log_det - 0.5 * means.shape[1] * _LOG_2PI
        return cls(cov, means, np.asarray(precisions_cholesky, dtype=np.float64),
                   np.asarray(constant, dtype=np.float64))

    @property
    def n_components(self) -> int:
        """``K``."""
        return len(self.means)


@dataclass(frozen=True, eq=False)
class PlanGroup:
    """Candidates of one pass that share a centre, a covariance type and a number of
    components (restarts of one model): their batch of operands, walked in tiles of
    their own size.

    Attributes
    ----------
    batch : Batch
    centre : ndarray of shape (D,)
        ``c0``: every tile is centred on it (float64) before anything else.
    tile_rows : int
    """

    batch: Batch
    centre: np.ndarray
    tile_rows: int


@dataclass(frozen=True, eq=False)
class EStepPlan:
    """Everything a pass's chunk tasks need, shipped once per pass.

    Build it with :func:`make_plan`. A candidate's numbers depend only on its own
    group (its tiles, its centre, its batched products computed slice by slice), so
    sharing a pass with other candidates changes the cost, never the answer.

    Attributes
    ----------
    dtype : numpy.dtype
        Compute dtype of the products.
    groups : tuple of PlanGroup
    slots : tuple of (int, int, int)
        Per candidate (in order): its group and its component range in the group.
    entropy : bool
        Also compute ``ent`` (the responsibilities' negative entropy).
    digest : bool
        Also digest every chunk's bytes (to recognise the data later).
    kernel : {'auto', 'numpy', 'compiled'}
        Which E-step kernel runs a chunk (:func:`use_compiled`): the compiled one of
        :mod:`daskgmm.engine.fused`, the NumPy tile loop, or (``'auto'``) the compiled one
        for NumPy chunks of at least :data:`COMPILED_MIN_ROWS` rows where numba is
        installed.
    tile_bytes : int or None
        Workspace per tile of the compiled kernel; None: sized from the cache of the
        machine that runs the chunk (:func:`compiled_tile_bytes`).
    """

    dtype: np.dtype
    groups: tuple[PlanGroup, ...]
    slots: tuple[tuple[int, int, int], ...]
    entropy: bool = False
    digest: bool = False
    kernel: str = "auto"
    tile_bytes: int | None = None

    @property
    def n_candidates(self) -> int:
        """Number of candidate mixtures."""
        return len(self.slots)


def make_plan(candidates: Sequence[Components], centre: np.ndarray, *,
              dtype: str | np.dtype = "float64", entropy: bool = False,
              digest: bool = False, tile_bytes: int | None = None,
              kernel: str = "auto") -> EStepPlan:
    """Group the candidates and precompute their operands.

    Parameters
    ----------
    candidates : sequence of Components
    centre : ndarray of shape (D,) or (n_candidates, D)
        The centre of every candidate (or one for all).
    dtype, entropy, digest :
        See :class:`EStepPlan`.
    tile_bytes : int, optional
        Workspace per tile of one candidate (default :data:`TILE_BYTES`; a group of
        several candidates at most :data:`BATCH_BYTES`, or ``tile_bytes`` if larger);
        tiles hold at least :data:`MIN_TILE_ROWS` rows. Up to :data:`BATCH_TILES`
        candidates with the same centre, type and number of components share a group
        (batched products). Given, it also sizes the compiled kernel's tiles (which
        otherwise follow the cache: :func:`compiled_tile_bytes`).
    kernel : {'auto', 'numpy', 'compiled'}
        See :class:`EStepPlan`.
    """
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {', '.join(KERNELS)}; got {kernel!r}")
    dtype = np.dtype(dtype)
    compiled_bytes = None if tile_bytes is None else int(tile_bytes)
    tile_bytes = TILE_BYTES if tile_bytes is None else int(tile_bytes)
    centres = np.asarray(centre, dtype=np.float64)
    if centres.ndim == 1:
        centres = np.broadcast_to(centres, (len(candidates), len(centres)))
    members: dict[tuple, list[int]] = {}
    keys: list[tuple] = []
    for index, cand in enumerate(candidates):
        base = (cand.covariance.name, cand.n_components, centres[index].tobytes())
        part = 0
        while len(members.get((*base, part), ())) >= BATCH_TILES:
            part += 1
        key = (*base, part)
        if key not in members:
            members[key] = []
            keys.append(key)
        members[key].append(index)
    groups = []
    slots: list[tuple[int, int, int]] = [(0, 0, 0)] * len(candidates)
    for g, key in enumerate(keys):
        parts = [candidates[i] for i in members[key]]
        cov, K = parts[0].covariance, parts[0].n_components
        c0 = np.ascontiguousarray(centres[members[key][0]])
        with np.errstate(over="ignore", invalid="ignore"):
            batch = cov.operands([p.means - c0 for p in parts],
                                 [p.precisions_cholesky for p in parts],
                                 [p.log_constant for p in parts], dtype)
        _check_operands(batch, dtype)
        per_candidate = tile_bytes // max(1, cov.row_bytes(K, len(c0), dtype.itemsize))
        per_group = (max(tile_bytes, BATCH_BYTES)
                     // max(1, cov.row_bytes(K * len(parts), len(c0), dtype.itemsize)))
        rows = max(MIN_TILE_ROWS, min(per_candidate, per_group))
        groups.append(PlanGroup(batch, c0, rows))
        for position, i in enumerate(members[key]):
            slots[i] = (g, position * K, (position + 1) * K)
    return EStepPlan(dtype, tuple(groups), tuple(slots), entropy, digest, kernel,
                     compiled_bytes)


def _check_operands(batch: Batch, dtype: np.dtype) -> None:
    """Refuse parameters whose products overflow the compute dtype."""
    arrays = [a for v in batch.arrays.values() for a in (v if isinstance(v, list) else [v])]
    _check_products(*arrays, dtype=dtype)


def _check_products(*arrays: np.ndarray, dtype: np.dtype) -> None:
    """Refuse operands or statistics that overflowed the compute dtype: a precision too
    large for it (the whitened second moments of a tile overflow before the operands do)."""
    if all(np.isfinite(a).all() for a in arrays):
        return
    raise _products_error(dtype)


def _products_error(dtype: np.dtype) -> DegenerateComponentError:
    return DegenerateComponentError(
        f"a component's precision is too large for {dtype} products (a variance near "
        f"zero): increase reg_covar, scale the data"
        + (", or fit with dtype='float64'." if dtype != np.float64 else ".")
    )


# --------------------------------------------------------------------------------------
# choosing the kernel
# --------------------------------------------------------------------------------------
#: Values of :attr:`EStepPlan.kernel` (and of the environment variable
#: ``DASKGMM_KERNEL``, which decides for plans that say ``'auto'``).
KERNELS = ("auto", "numpy", "compiled")
#: Under ``'auto'``, chunks of fewer rows run the NumPy tile loop: importing numba and
#: loading the cached kernels costs a process about half a second once, which a small
#: fit does not win back (the compiled kernel saves about 0.2 µs per row and candidate
#: at D=16, K=8).
COMPILED_MIN_ROWS = 20_000
#: Under ``'auto'``, a ``distributed`` worker whose memory limit is below this runs the
#: NumPy tile loop: numba and LLVM add about 120 MiB to a process (its resident memory
#: went from 59 to 179 MiB on import), which paused the out-of-core demo's workers of
#: 400 MiB (each holds about 165 MiB before any task).
COMPILED_MIN_WORKER_MEMORY = 2**30
#: A compiled tile's workspace is this fraction of the per-core cache
#: (:func:`cache_bytes`): the best of the tile sweep of ``scripts/bench.py`` (256 KiB of
#: a 2 MiB level-2 cache; 64 KiB tiles were up to 2x slower for full covariances, 2 MiB
#: ones 10-45% slower than the best).
COMPILED_CACHE_FRACTION = 1 / 8
#: Per-core cache assumed where the machine does not say.
DEFAULT_CACHE_BYTES = 1 * 2**20
#: Compiled tiles hold a multiple of this many rows (aligned rows).
COMPILED_ROW_MULTIPLE = 16
#: Fewest rows of a compiled tile, whatever the cache: fewer make the GEMMs inefficient
#: (full D=64 K=16: 16-row tiles took 2x the time of 64-row ones).
COMPILED_MIN_TILE_ROWS = 64
#: Where the cache's share gives fewer rows (many components of many features), tiles of
#: full covariances still hold this many if they fit in :data:`COMPILED_MAX_CACHE_FRACTION`
#: of the cache: each component's scatter product runs over the tile's rows, and 64 rows
#: were 20-26% slower than 128 for float32 at D=32 K=16, D=64 K=16 and D=48 K=24, 7-12%
#: for float64 at D=32 K=16 (2 MiB level-2 cache, one thread; float64 at D=64 K=16 and
#: D=48 K=24, whose 128-row tiles exceed half the cache, was 5% and 27% slower at 128;
#: 'diag' at D=64 K=64, 20% slower at 128 rows than at 96, keeps the cache's share).
COMPILED_GOOD_TILE_ROWS = {"full": 128}
#: The largest fraction of the per-core cache a tile of :data:`COMPILED_GOOD_TILE_ROWS`
#: rows may take.
COMPILED_MAX_CACHE_FRACTION = 1 / 2


@functools.cache
def _fused() -> Any:
    """The compiled kernels' module, or None without numba."""
    try:
        from daskgmm.engine import fused
    except ImportError:
        return None
    return fused


def compiled_available() -> bool:
    """Whether the compiled kernels can run here (numba is installed)."""
    return _fused() is not None


@functools.cache
def cache_bytes() -> int:
    """The largest per-core data cache of this machine (its level-2 cache on most), read
    from ``/sys/devices/system/cpu/cpu0/cache`` (:data:`DEFAULT_CACHE_BYTES` where that
    is missing)."""
    best = 0
    root = Path("/sys/devices/system/cpu/cpu0/cache")
    try:
        for index in root.glob("index*"):
            level = int((index / "level").read_text().strip())
            if level > 2 or (index / "type").read_text().strip() == "Instruction":
                continue
            size = (index / "size").read_text().strip().upper()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1:], 1)
            best = max(best, int(size.rstrip("KMG")) * scale)
    except (OSError, ValueError):
        best = 0
    return best or DEFAULT_CACHE_BYTES


def compiled_tile_bytes() -> int:
    """Workspace of a compiled tile on this machine."""
    return int(COMPILED_CACHE_FRACTION * cache_bytes())


def compiled_tile_rows(name: str, per_row: int, tile_bytes: int | None = None) -> int:
    """Rows of a compiled tile of covariance type ``name`` whose workspace is ``per_row``
    bytes a row: as many as ``tile_bytes`` hold (None: :func:`compiled_tile_bytes`, raised
    to :data:`COMPILED_GOOD_TILE_ROWS` where those fit in
    :data:`COMPILED_MAX_CACHE_FRACTION` of the cache), a multiple of
    :data:`COMPILED_ROW_MULTIPLE`, at least :data:`COMPILED_MIN_TILE_ROWS`."""
    budget = compiled_tile_bytes() if tile_bytes is None else tile_bytes
    rows = max(1, budget // per_row) // COMPILED_ROW_MULTIPLE * COMPILED_ROW_MULTIPLE
    good = COMPILED_GOOD_TILE_ROWS.get(name, 0)
    if (tile_bytes is None and rows < good
            and good * per_row <= COMPILED_MAX_CACHE_FRACTION * cache_bytes()):
        rows = good
    return max(COMPILED_MIN_TILE_ROWS, rows)


def use_compiled(plan: EStepPlan, X: Any) -> bool:
    """Whether the chunk ``X`` runs the compiled kernel under ``plan``: a NumPy array of
    float32 or float64 with numba installed, when the plan (or, for ``'auto'``, the
    environment variable ``DASKGMM_KERNEL``) says ``'compiled'``, or under ``'auto'``
    when it has at least :data:`COMPILED_MIN_ROWS` rows and the process is not a
    worker with less than :data:`COMPILED_MIN_WORKER_MEMORY` of memory limit.

    Raises
    ------
    ImportError
        If ``'compiled'`` is asked for without numba.
    """
    kernel = plan.kernel
    if kernel == "auto":
        kernel = os.environ.get("DASKGMM_KERNEL", "auto")
        if kernel not in KERNELS:
            raise ValueError(f"DASKGMM_KERNEL must be one of {', '.join(KERNELS)}; got "
                             f"{kernel!r}")
    if kernel == "numpy":
        return False
    if kernel == "compiled" and not compiled_available():
        raise ImportError("the compiled E-step kernel needs numba: pip install numba (or "
                          "use the NumPy kernel: DASKGMM_KERNEL=numpy)")
    fits = isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype in _COMPILED_DTYPES
    if kernel == "compiled":
        return fits
    return (fits and len(X) >= COMPILED_MIN_ROWS and _room_for_the_compiler()
            and compiled_available())


def _room_for_the_compiler() -> bool:
    """False in a ``distributed`` worker whose memory limit is below
    :data:`COMPILED_MIN_WORKER_MEMORY`; True elsewhere (no limit, or not a worker)."""
    dist = sys.modules.get("distributed")
    if dist is None:
        return True
    try:
        worker = dist.get_worker()
    except ValueError:  # not in a worker's task
        return True
    limit = getattr(getattr(worker, "memory_manager", None), "memory_limit", None)
    return not limit or limit >= COMPILED_MIN_WORKER_MEMORY


_COMPILED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _compiled_group(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                    plan: EStepPlan, group: PlanGroup, n_candidates: int, ws: Workspace
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """One group's statistics of a chunk from the compiled kernel; the same errors as
    the NumPy tile loop."""
    fused = _fused()
    batch = group.batch
    K, D = batch.n_components // n_candidates, X.shape[1]
    name = batch.cov.name
    rows = compiled_tile_rows(name, fused.row_bytes(name, K, D, plan.dtype.itemsize),
                              plan.tile_bytes)
    acc, ll, ent, status = fused.group_statistics(
        X, weights, group.centre, batch, n_candidates, plan.dtype, plan.entropy, rows, ws)
    code, first = int(status[0]), int(status[1])
    if code == fused.NONFINITE_TILE:
        check_finite_block(X, row_start)
        raise _too_large_error(row_start + first, row_start + min(len(X), first + rows) - 1,
                               plan.dtype)
    if code == fused.LOG_LIKELIHOOD_OVERFLOW:
        _check_log_likelihood(np.array([np.nan]), row_start + first,
                              min(len(X), first + rows) - first)
    if code == fused.PRODUCTS_OVERFLOW:
        raise _products_error(plan.dtype)
    return acc, ll, ent


# --------------------------------------------------------------------------------------
# the tile loop
# --------------------------------------------------------------------------------------
def _tiles(n: int, rows: int) -> Iterator[slice]:
    for start in range(0, n, rows):
        yield slice(start, min(n, start + rows))


def check_finite_block(X: np.ndarray, row_start: int) -> None:
    """Raise :class:`NonFiniteDataError` naming the rows if ``X`` holds NaN or Inf."""
    if np.isfinite(X).all():
        return
    bad_rows = ~np.isfinite(X).all(axis=1)
    first = row_start + int(np.argmax(bad_rows))
    raise NonFiniteDataError(
        f"the data contain NaN or infinite values: {int(bad_rows.sum())} row(s) in the chunk "
        f"of rows {row_start}..{row_start + len(X) - 1} (first at row {first}). Remove or "
        "impute them before fitting (e.g. X[da.isfinite(X).all(axis=1)]), or, if NaN "
        "marks missing values, pass missing='marginalize'."
    )


def check_weights_block(w: np.ndarray, row_start: int) -> None:
    """Raise :class:`InvalidDataError` if sample weights are negative or not finite."""
    if np.isfinite(w).all() and (w >= 0).all():
        return
    bad = ~(np.isfinite(w) & (w >= 0))
    first = row_start + int(np.argmax(bad))
    raise InvalidDataError(
        f"sample_weight must be finite and non-negative: {int(bad.sum())} bad value(s) in "
        f"rows {row_start}..{row_start + len(w) - 1} (first at row {first}, value "
        f"{w[first - row_start]!r})."
    )


#: Rows of at least this many features are transposed into a tile block by block.
_BLOCKED_TRANSPOSE_FROM = 64
_TRANSPOSE_BLOCK_ROWS = 128


def _affine_tile(X: np.ndarray, sl: slice, centre: np.ndarray, dtype: np.dtype,
                 ws: Workspace, row_start: int) -> np.ndarray:
    """Rows ``sl`` of the chunk ``X`` minus ``centre``, transposed, with a last row of
    ones: ``(D + 1, n)`` in the compute dtype (see :meth:`CovarianceType.project`).

    The difference is computed in the wider of the data's and the centre's (float64)
    precision and rounded once to the compute dtype, so a large common offset never meets
    float32 rounding. Non-finite values anywhere in the tile raise
    :class:`NonFiniteDataError` naming the chunk's rows; values beyond the compute
    dtype's range after centring raise :class:`InvalidDataError`."""
    tile = X[sl]
    n, D = tile.shape
    xt = ws.get("xt", (D + 1, n), dtype)
    xc = xt[:D]
    with np.errstate(over="ignore", invalid="ignore"):
        if D < _BLOCKED_TRANSPOSE_FROM:
            np.subtract(tile.T, centre[:, None], out=xc, casting="same_kind")
        else:
            # Wide rows: transposing a whole tile walks X with a stride of a full row
            # per element; blocks of rows that stay in the L1 cache are 1.4-1.7x
            # faster for D >= 64 (and slower below). The same subtractions either way.
            for j in range(0, n, _TRANSPOSE_BLOCK_ROWS):
                block = slice(j, j + _TRANSPOSE_BLOCK_ROWS)
                np.subtract(tile[block].T, centre[:, None], out=xc[:, block],
                            casting="same_kind")
        # NaN and infinities reach the sum; a sum that overflowed is checked exactly.
        suspicious = not np.isfinite(xc.sum())
    if suspicious:
        check_finite_block(np.asarray(X), row_start)
        if not np.isfinite(xc).all():
            raise _too_large_error(row_start + sl.start, row_start + sl.stop - 1, dtype)
    xt[D] = 1.0
    return xt


def _too_large_error(first: int, last: int, dtype: np.dtype) -> InvalidDataError:
    return InvalidDataError(
        f"rows {first}..{last} hold values too large for {dtype} products (beyond "
        f"{np.finfo(dtype).max:.3g} after centring): scale the data"
        + (", or fit with dtype='float64'." if dtype != np.float64 else ".")
    )


def _weights_tile(weights: np.ndarray | None, sl: slice, dtype: np.dtype, ws: Workspace
                  ) -> np.ndarray | None:
    if weights is None:
        return None
    w = ws.get("w", (sl.stop - sl.start,), dtype)
    w[...] = weights[sl]
    return w


def _softmax(wlp: np.ndarray, ws: Workspace, keep_log: bool
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalise one candidate's weighted log-probabilities ``(K, n)`` into
    responsibilities, in place. Returns ``log p(x)`` (float64) and, if asked, the negative
    entropy of each row's responsibilities."""
    n = wlp.shape[1]
    top = ws.get("softmax.top", (n,), wlp.dtype)
    np.max(wlp, axis=0, out=top)
    top[~np.isfinite(top)] = 0.0
    wlp -= top
    cut = LOG_CUT[wlp.dtype.char]
    dropped = ws.get("softmax.dropped", wlp.shape, np.bool_)
    np.less(wlp, cut, out=dropped)
    np.maximum(wlp, cut, out=wlp)
    shifted = None
    if keep_log:
        shifted = ws.get("softmax.shifted", wlp.shape, wlp.dtype)
        shifted[...] = wlp
    np.exp(wlp, out=wlp)
    np.copyto(wlp, 0.0, where=dropped)
    total = ws.get("softmax.total", (n,), wlp.dtype)
    np.sum(wlp, axis=0, out=total)
    with np.errstate(divide="ignore"):  # a row without a finite maximum: -inf
        log_total = np.log(total, dtype=np.float64)
    log_norm = log_total + top
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(1.0, total, out=total)
    wlp *= total
    neg_entropy = None
    if keep_log:
        # sum_k r log r = sum_k r (a_k - top) - log(total), with a the log-probabilities.
        with np.errstate(invalid="ignore"):
            neg_entropy = (np.einsum("kn,kn->n", wlp, shifted).astype(np.float64)
                           - log_total)
    return log_norm, neg_entropy


def _check_log_likelihood(log_norm: np.ndarray, row_start: int, n: int) -> None:
    if np.isfinite(log_norm).all():
        return
    raise InvalidDataError(
        f"the log-likelihood of rows {row_start}..{row_start + n - 1} overflowed although "
        "the data are finite: the values are too large (or too far from the model) for "
        "the floating-point range. Scale the data (e.g. standardise each feature); if the "
        "data are already scaled, increase reg_covar."
    )


def chunk_digest(X: np.ndarray, weights: np.ndarray | None) -> int:
    """CRC-32 of a chunk's bytes (and its weights'): recognises the same data later."""
    value = zlib.crc32(memoryview(np.ascontiguousarray(X)).cast("B"))
    if weights is not None:
        value = zlib.crc32(memoryview(np.ascontiguousarray(weights)).cast("B"), value)
    return value


Responsibilities = Callable[[int, np.ndarray, np.ndarray, slice], None]


def assignment_statistics(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                          plan: EStepPlan, responsibilities: Responsibilities | None
                          ) -> PassResult:
    """Statistics of one chunk: the tile loop shared by the E-step and the
    initialisation passes.

    ``responsibilities(c, block, xc, sl)`` (when given) overwrites candidate ``c``'s rows
    ``block`` of its group's ``(K, n)`` weighted log-densities with its responsibilities
    for the tile ``sl`` (``xc`` is the centred tile, ``(n, D)``); without it they are the
    posterior.
    """
    ws = workspace()
    D = X.shape[1]
    C = plan.n_candidates
    ll = np.zeros(C)
    ent = np.zeros(C)
    total_weight = float(len(X))
    if weights is not None:
        check_weights_block(np.asarray(weights), row_start)
        total_weight = float(np.sum(weights, dtype=np.float64))
    members = [[(c, s, e) for c, (g, s, e) in enumerate(plan.slots) if g == gi]
               for gi in range(len(plan.groups))]
    compiled = responsibilities is None and use_compiled(plan, X)
    if compiled:
        X = np.ascontiguousarray(X)
        fused_types = _fused().SUPPORTED
    per_group = []
    for group, cands in zip(plan.groups, members, strict=True):
        batch = group.batch
        if compiled and batch.cov.name in fused_types:
            acc, group_ll, group_ent = _compiled_group(X, weights, row_start, plan, group,
                                                       len(cands), ws)
            for j, (c, _, _) in enumerate(cands):
                ll[c] += group_ll[j]
                ent[c] += group_ent[j]
            per_group.append(acc)
            continue
        acc = {"nk": np.zeros(batch.n_components), "sx": np.zeros((batch.n_components, D)),
               "s2": None}
        for sl in _tiles(len(X), group.tile_rows):
            xt = _affine_tile(X, sl, group.centre, plan.dtype, ws, row_start)
            w = _weights_tile(weights, sl, plan.dtype, ws)
            wlp = batch.cov.project(xt, batch, ws)
            for c, start, stop in cands:
                block = wlp[start:stop]
                if responsibilities is not None:
                    responsibilities(c, block, xt[:D].T, sl)
                    continue
                with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                    log_norm, neg_ent = _softmax(block, ws, plan.entropy)
                _check_log_likelihood(log_norm, row_start + sl.start, len(log_norm))
                ll[c] += float(log_norm.sum() if w is None else log_norm @ w)
                if neg_ent is not None:
                    ent[c] += float(neg_ent.sum() if w is None else neg_ent @ w)
            if w is not None:
                wlp *= w
            with np.errstate(over="ignore", invalid="ignore"):
                nk, sx, s2 = batch.cov.accumulate(xt, wlp, w, batch, ws)
            _check_products(s2, dtype=plan.dtype)
            acc["nk"] += nk
            acc["sx"] += sx
            if acc["s2"] is None:
                acc["s2"] = s2.astype(np.float64)
            else:
                np.add(acc["s2"], s2, out=acc["s2"])
        per_group.append(acc)
    stats: list[Stats] = []
    for c, (g, start, stop) in enumerate(plan.slots):
        batch = plan.groups[g].batch
        acc = per_group[g]
        s2 = (batch.cov.split(acc["s2"], batch.sizes)[start // (stop - start)]
              if acc["s2"] is not None else batch.cov.zero_statistic(stop - start, D))
        item = {"n": np.float64(total_weight), "ll": np.float64(ll[c]),
                "nk": acc["nk"][start:stop].copy(), "sx": acc["sx"][start:stop].copy(),
                "s2": np.array(s2, dtype=np.float64)}
        if plan.entropy:
            item["ent"] = np.float64(ent[c])
        stats.append(item)
    digests = {row_start: chunk_digest(X, weights)} if plan.digest else {}
    return PassResult(stats, digests)


def estep_statistics(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                     plan: EStepPlan) -> PassResult:
    """E-step statistics of one chunk for every candidate of the plan.

    Parameters
    ----------
    X : ndarray of shape (n, D)
        The chunk (float32 or float64), as read.
    weights : ndarray of shape (n,) or None
        Sample weights of its rows.
    row_start : int
        Index of its first row in the whole array (for error messages and digests).
    plan : EStepPlan

    Returns
    -------
    PassResult
    """
    return assignment_statistics(X, weights, row_start, plan, None)


# --------------------------------------------------------------------------------------
# initialisation: statistics of responsibilities given by a rule
# --------------------------------------------------------------------------------------
def _one_hot_nearest(c: int, block: np.ndarray, xc: np.ndarray, sl: slice) -> None:
    labels = block.argmax(axis=0)
    block[...] = 0.0
    block[labels, np.arange(block.shape[1])] = 1.0


def hard_assignment_statistics(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                               plan: EStepPlan) -> PassResult:
    """Statistics of assigning every row to its nearest centre (a plan with identity
    precisions, whose distances are Euclidean), as scikit-learn's
    ``init_params='kmeans'`` does with the k-means labels."""
    return assignment_statistics(X, weights, row_start, plan, _one_hot_nearest)


def random_assignment_statistics(X: np.ndarray, weights: np.ndarray | None,
                                 row_start: int, plan: EStepPlan,
                                 seeds: Sequence[int]) -> PassResult:
    """Statistics of uniformly random, normalised responsibilities (``init_params=
    'random'``), drawn tile after tile from ``default_rng([seed, row_start])``: they
    depend only on the seed, the data and the chunking."""
    rngs = [np.random.default_rng([int(s), row_start]) for s in seeds]

    def draw(c: int, block: np.ndarray, xc: np.ndarray, sl: slice) -> None:
        resp = rngs[c].uniform(size=(block.shape[1], block.shape[0]))
        resp /= resp.sum(axis=1, keepdims=True)
        block[...] = resp.T

    return assignment_statistics(X, weights, row_start, plan, draw)


# --------------------------------------------------------------------------------------
# prediction
# --------------------------------------------------------------------------------------
def _log_density_tiles(X: np.ndarray, row_start: int, plan: EStepPlan
                       ) -> Iterator[tuple[slice, np.ndarray]]:
    """``log w_k + log N(x | k)`` of the plan's single candidate, tile by tile: ``(rows,
    (K, m) float64)``, the array in this thread's workspace (overwritten by the next
    tile). Non-finite data raise :class:`NonFiniteDataError` naming the chunk's rows."""
    ws = workspace()
    group = plan.groups[0]
    for sl in _tiles(len(X), group.tile_rows):
        xt = _affine_tile(X, sl, group.centre, plan.dtype, ws, row_start)
        wlp = group.batch.cov.project(xt, group.batch, ws)
        if wlp.dtype != np.float64:
            wide = ws.get("predict.wlp", wlp.shape, np.float64)
            wide[...] = wlp
            wlp = wide
        yield sl, wlp


def _normalise_tile(wlp: np.ndarray, ws: Workspace) -> np.ndarray:
    """Turn a tile's weighted log-densities ``(K, m)`` (float64) into responsibilities in
    place; returns ``log p(x)`` of its rows (in the workspace)."""
    m = wlp.shape[1]
    top = ws.get("predict.top", (m,), np.float64)
    np.max(wlp, axis=0, out=top)
    top[~np.isfinite(top)] = 0.0
    wlp -= top
    np.exp(wlp, out=wlp)
    total = ws.get("predict.total", (m,), np.float64)
    np.sum(wlp, axis=0, out=total)
    wlp /= total
    np.log(total, out=total)
    total += top
    return total


def predict_block(X: np.ndarray, row_start: int, plan: EStepPlan) -> np.ndarray:
    """Most probable component of each row (int64), tile by tile: the labels and one
    tile's workspace."""
    labels = np.empty(len(X), dtype=np.int64)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for sl, wlp in _log_density_tiles(X, row_start, plan):
            np.argmax(wlp, axis=0, out=labels[sl])
    return labels


def predict_proba_block(X: np.ndarray, row_start: int, plan: EStepPlan,
                        out_dtype: str = "float64") -> np.ndarray:
    """Responsibilities of each row ``(n, K)`` (rows sum to one), tile by tile: the
    output and one tile's workspace."""
    ws = workspace()
    out = np.empty((len(X), plan.groups[0].batch.n_components), dtype=out_dtype)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        for sl, wlp in _log_density_tiles(X, row_start, plan):
            _normalise_tile(wlp, ws)
            out[sl] = wlp.T
    return out


def score_samples_block(X: np.ndarray, row_start: int, plan: EStepPlan,
                        out_dtype: str = "float64") -> np.ndarray:
    """Log-likelihood of each row under the mixture, tile by tile: the output and one
    tile's workspace."""
    ws = workspace()
    out = np.empty(len(X), dtype=out_dtype)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        for sl, wlp in _log_density_tiles(X, row_start, plan):
            out[sl] = _normalise_tile(wlp, ws)
    return out


def score_statistics(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                     plan: EStepPlan) -> Stats:
    """``n``, ``ll`` and the responsibilities' negative entropy ``ent`` of one chunk under
    the plan's single candidate (for the final criteria of a fit), tile by tile."""
    ws = workspace()
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    ll = ent = 0.0
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        for sl, wlp in _log_density_tiles(X, row_start, plan):
            log_norm = _normalise_tile(wlp, ws)
            r_log_r = ws.get("predict.rlogr", wlp.shape, np.float64)
            np.log(wlp, out=r_log_r)
            r_log_r *= wlp
            r_log_r[wlp <= 0] = 0.0
            neg_ent = r_log_r.sum(axis=0)
            ll += float(log_norm.sum() if w is None else log_norm @ w[sl])
            ent += float(neg_ent.sum() if w is None else neg_ent @ w[sl])
    n = float(len(X)) if w is None else float(w.sum())
    return {"n": np.float64(n), "ll": np.float64(ll), "ent": np.float64(ent)}
