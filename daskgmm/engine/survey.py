"""The survey: what a fit learns about the data in its first pass, before any EM.

One read of every chunk serves at once:

* the **sample**: the rows (and weights) at given indices, gathered into memory for the
  starts that work on a sample (:mod:`daskgmm.engine.starts`); its size is bounded, so
  nothing here grows with the number of rows;
* the **moments**: the (weighted) mean and covariance of the data, for models whose priors
  default to them (the Bayesian mixture), merged chunk by chunk with the pairwise formula
  for centred moments (Chan, Golub and LeVeque, 1983), so no reference point is needed;
* the **digests** of the chunks (to recognise the data when a checkpoint is resumed);
* the data checks: every value finite, every weight finite and non-negative, so bad
  data are refused before any time is spent on starts.

Each is a :class:`~daskgmm.engine.passes.PassPart`; the fit plan asks for the ones it
needs in one :meth:`~daskgmm.engine.passes.RowChunks.map_reduce_many`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from daskgmm.engine.estep import check_finite_block, check_weights_block, chunk_digest
from daskgmm.engine.passes import PassPart, RowChunks
from daskgmm.engine.stats import PassResult
from daskgmm.errors import InvalidDataError

__all__ = ["Moments", "Sample", "Survey", "digest_part", "moments_part", "sample_indices",
           "sample_part", "survey", "total_weight_part"]


@dataclass(frozen=True)
class Sample:
    """Rows gathered into memory: their indices (sorted, unique), values (float64) and
    sample weights (None without weights)."""

    indices: np.ndarray
    rows: np.ndarray
    weights: np.ndarray | None

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """The rows (and weights) at ``indices`` (a subset of :attr:`indices`), in the
        order given."""
        pos = np.searchsorted(self.indices, indices)
        return self.rows[pos], None if self.weights is None else self.weights[pos]


@dataclass(frozen=True)
class Moments:
    """Total weight, mean and centred scatter ``sum_i w_i (x_i - mean)(x_i - mean)ᵀ``."""

    n: float
    mean: np.ndarray
    scatter: np.ndarray

    def covariance(self) -> np.ndarray:
        """The covariance with ``ddof=1`` (weights count as repetitions)."""
        if not self.n > 1.0:
            raise InvalidDataError(
                f"the data's covariance needs a total sample weight above 1, got {self.n}.")
        return self.scatter / (self.n - 1.0)


@dataclass(frozen=True)
class Survey:
    """What the first pass found: the shape, the total weight, and the sample and moments
    when they were asked for."""

    n_samples: int
    n_features: int
    total_weight: float
    sample: Sample | None = None
    moments: Moments | None = None


def sample_indices(n: int, size: int, rng: np.random.RandomState) -> np.ndarray:
    """``min(size, n)`` distinct indices below ``n``, uniformly, in draw order.

    Memory and time are O(size), whatever ``n`` is (unlike ``rng.choice(n, size,
    replace=False)``, which builds a permutation of all ``n``). Draws nothing from
    ``rng`` when ``size >= n``.
    """
    if size >= n:
        return np.arange(n, dtype=np.int64)
    chosen: dict[int, None] = {}
    while len(chosen) < size:
        draw = rng.randint(0, n, size=size - len(chosen), dtype=np.int64)
        for value in draw.tolist():
            chosen.setdefault(value, None)
            if len(chosen) == size:
                break
    return np.fromiter(chosen, dtype=np.int64, count=size)


# ---------------------------------------------------------------------------------------
# the sample
# ---------------------------------------------------------------------------------------
def _checked(X: np.ndarray, weights: np.ndarray | None, row_start: int) -> None:
    check_finite_block(X, row_start)
    if weights is not None:
        check_weights_block(np.asarray(weights), row_start)


def _sample_chunk(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                  indices: np.ndarray) -> Sample:
    X = np.asarray(X)
    _checked(X, weights, row_start)
    lo, hi = np.searchsorted(indices, [row_start, row_start + len(X)])
    mine = indices[lo:hi]
    local = mine - row_start
    w = None if weights is None else np.asarray(weights, dtype=np.float64)[local]
    return Sample(mine, np.asarray(X[local], dtype=np.float64), w)


def _join_samples(*parts: Sample) -> Sample:
    weights = (None if parts[0].weights is None
               else np.concatenate([p.weights for p in parts]))
    return Sample(np.concatenate([p.indices for p in parts]),
                  np.concatenate([p.rows for p in parts]), weights)


def sample_part(indices: np.ndarray) -> PassPart:
    """The pass part gathering the rows at ``indices`` (sorted, unique); it also checks
    every value and weight of every chunk."""
    return PassPart(_sample_chunk, (np.asarray(indices, dtype=np.int64),), _join_samples,
                    kind="survey")


# ---------------------------------------------------------------------------------------
# the moments
# ---------------------------------------------------------------------------------------
def _moments_chunk(X: np.ndarray, weights: np.ndarray | None, row_start: int) -> Moments:
    X = np.asarray(X, dtype=np.float64)
    _checked(X, weights, row_start)
    D = X.shape[1]
    if weights is None:
        n = float(len(X))
        if n == 0:
            return Moments(0.0, np.zeros(D), np.zeros((D, D)))
        mean = X.mean(axis=0)
        xc = X - mean
        return Moments(n, mean, xc.T @ xc)
    w = np.asarray(weights, dtype=np.float64)
    n = float(w.sum())
    if not n > 0:
        return Moments(0.0, np.zeros(D), np.zeros((D, D)))
    mean = (w @ X) / n
    xc = X - mean
    return Moments(n, mean, (xc * w[:, None]).T @ xc)


def _merge_moments(*parts: Moments) -> Moments:
    total = parts[0]
    for part in parts[1:]:
        n = total.n + part.n
        if part.n == 0:
            continue
        if total.n == 0:
            total = part
            continue
        delta = part.mean - total.mean
        mean = total.mean + delta * (part.n / n)
        scatter = (total.scatter + part.scatter
                   + np.outer(delta, delta) * (total.n * part.n / n))
        total = Moments(n, mean, scatter)
    return total


def moments_part() -> PassPart:
    """The pass part computing the data's :class:`Moments`."""
    return PassPart(_moments_chunk, (), _merge_moments, kind="survey")


# ---------------------------------------------------------------------------------------
# the digests
# ---------------------------------------------------------------------------------------
def _digest_chunk(X: np.ndarray, weights: np.ndarray | None, row_start: int) -> PassResult:
    return PassResult([], {row_start: chunk_digest(np.asarray(X), weights)})


def digest_part() -> PassPart:
    """The pass part digesting every chunk (a :class:`~daskgmm.engine.stats.PassResult`
    with no statistics)."""
    return PassPart(_digest_chunk, (), kind="verify")


def _weight_chunk(X: np.ndarray, weights: np.ndarray | None, row_start: int) -> float:
    if weights is None:
        return float(len(X))
    w = np.asarray(weights, dtype=np.float64)
    check_weights_block(w, row_start)
    return float(w.sum())


def _add(*values: float) -> float:
    return float(sum(values))


def total_weight_part() -> PassPart:
    """The pass part summing the sample weights (the row count without weights)."""
    return PassPart(_weight_chunk, (), _add, kind="survey")


def survey(chunks: RowChunks, *, indices: np.ndarray | None, moments: bool,
           digest: bool, split_every: int) -> tuple[Survey, dict[int, int] | None]:
    """One pass for the total weight and whatever of the sample, moments and digests is
    asked for; returns the survey and the chunk digests (None unless asked for)."""
    parts: list[PassPart] = [total_weight_part()]
    if indices is not None:
        parts.append(sample_part(indices))
    if moments:
        parts.append(moments_part())
    if digest:
        parts.append(digest_part())
    results = list(chunks.map_reduce_many(parts, split_every=split_every, kind="survey"))
    total = results.pop(0)
    sample = results.pop(0) if indices is not None else None
    found = results.pop(0) if moments else None
    digests = results.pop(0).digests if digest else None
    return Survey(chunks.shape[0], chunks.shape[1], total, sample, found), digests
