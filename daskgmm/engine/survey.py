"""The survey: what a fit learns about the data in its first pass, before any EM.

One read of every chunk serves at once:

* the **sample**: the rows (and weights) at given indices, gathered into memory for the
  starts that work on a sample (:mod:`daskgmm.engine.starts`); its size is bounded, so
  nothing here grows with the number of rows; with sample weights, on data larger than
  the sample, rows drawn in proportion to their weights instead (so that weights as
  sparse as 12 non-zero in 400,000 rows still give a sample to start from);
* the **moments**: the (weighted) mean and covariance of the data, for models whose priors
  default to them (the Bayesian mixture), merged chunk by chunk with the pairwise formula
  for centred moments (Chan, Golub and LeVeque, 1983), so no reference point is needed;
* the **digests** of the chunks (to recognise the data when a checkpoint is resumed);
* the data checks: every value finite, every weight finite and non-negative, so bad
  data are refused before any time is spent on starts;
* with missing values (NaN, ``missing='marginalize'``): the **observed moments**
  (:class:`~daskgmm.engine.marginal.ObservedMoments`): the weight of the rows with
  nothing observed, the observed values, each feature's observed mean (what the starts
  fill the sample's holes with) and, for the priors, the available-case covariance.
  A NaN is then no error; an infinity still is.

Each is a :class:`~daskgmm.engine.passes.PassPart`; the fit plan asks for the ones it
needs in one :meth:`~daskgmm.engine.passes.RowChunks.map_reduce_many`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from daskgmm.engine.estep import check_finite_block, check_weights_block, chunk_digest
from daskgmm.engine.marginal import (
    ObservedMoments,
    check_no_infinity,
    merge_observed,
    observed_moments_chunk,
)
from daskgmm.engine.passes import PassPart, RowChunks
from daskgmm.engine.stats import PassResult
from daskgmm.errors import InvalidDataError

__all__ = ["Moments", "Sample", "Survey", "WeightedRows", "digest_part", "moments_part",
           "observed_part", "sample_indices", "sample_part", "survey", "total_weight_part",
           "weighted_part"]


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
class WeightedRows:
    """Rows drawn with probability proportional to their sample weight, without
    replacement (Efraimidis and Spirakis, 2006: the rows of the largest keys
    ``log(u) / w``, ``u`` uniform): a sample of the weighted data whose rows count once
    each. ``keys`` are kept for merging."""

    keys: np.ndarray
    rows: np.ndarray


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
    #: ``(seed, size) -> rows`` drawn in proportion to the sample weights.
    weighted: dict[tuple[int, int], np.ndarray] | None = None
    #: Data that may miss values: what the pass found of them (None: none may miss).
    observed: ObservedMoments | None = None

    @property
    def empty_weight(self) -> float:
        """The weight of the rows with no observed value (left out of the fit)."""
        return 0.0 if self.observed is None else self.observed.empty

    @property
    def fill_values(self) -> np.ndarray | None:
        """What the starts fill missing values with: each feature's observed mean (None
        for data that may not miss values)."""
        return None if self.observed is None else self.observed.means()

    def observed_fraction(self) -> float:
        """The share of the values (weighted) that are observed."""
        if self.observed is None or not self.total_weight > 0:
            return 1.0
        return self.observed.observed_values / (self.n_features * self.total_weight)


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
def _checked(X: np.ndarray, weights: np.ndarray | None, row_start: int,
             missing: bool = False) -> None:
    if missing:
        check_no_infinity(X, row_start)
    else:
        check_finite_block(X, row_start)
    if weights is not None:
        check_weights_block(np.asarray(weights), row_start)


def _sample_chunk(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                  indices: np.ndarray, missing: bool = False) -> Sample:
    X = np.asarray(X)
    _checked(X, weights, row_start, missing)
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


def sample_part(indices: np.ndarray, missing: bool = False) -> PassPart:
    """The pass part gathering the rows at ``indices`` (sorted, unique); it also checks
    every value and weight of every chunk (NaN allowed if ``missing``)."""
    return PassPart(_sample_chunk, (np.asarray(indices, dtype=np.int64), missing),
                    _join_samples, kind="survey")


def _weighted_chunk(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                    seed: int, size: int, missing: bool = False) -> WeightedRows:
    X = np.asarray(X)
    w = np.asarray(weights, dtype=np.float64)
    _checked(X, w, row_start, missing)
    u = np.random.default_rng([seed, row_start]).random(len(w))
    with np.errstate(divide="ignore"):
        keys = np.where(w > 0, np.log(u) / np.where(w > 0, w, 1.0), -np.inf)
    keep = np.flatnonzero(np.isfinite(keys))
    if len(keep) > size:
        keep = keep[np.argpartition(-keys[keep], size - 1)[:size]]
    keep.sort()
    return WeightedRows(keys[keep], np.asarray(X[keep], dtype=np.float64))


def _join_weighted(size: int, *parts: WeightedRows) -> WeightedRows:
    keys = np.concatenate([p.keys for p in parts])
    rows = np.concatenate([p.rows for p in parts])
    if len(keys) > size:
        keep = np.sort(np.argpartition(-keys, size - 1)[:size])
        keys, rows = keys[keep], rows[keep]
    return WeightedRows(keys, rows)


def weighted_part(seed: int, size: int, missing: bool = False) -> PassPart:
    """The pass part drawing ``size`` rows in proportion to their sample weights (rows of
    zero weight never), seeded by ``seed`` and each chunk's first row."""
    return PassPart(_weighted_chunk, (int(seed), int(size), missing),
                    functools.partial(_join_weighted, int(size)), kind="survey")


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


def observed_part(pairs: bool) -> PassPart:
    """The pass part computing the :class:`~daskgmm.engine.marginal.ObservedMoments` of
    data that may miss values (with the pair statistics of the covariance if
    ``pairs``)."""
    return PassPart(observed_moments_chunk, (bool(pairs),), merge_observed, kind="survey")


def _available_case(observed: ObservedMoments) -> Moments:
    """The data's mean and covariance from the observed values (available-case, see
    :func:`~daskgmm.engine.marginal.available_case_moments`) as :class:`Moments` whose
    :meth:`~Moments.covariance` is that covariance."""
    mean, covariance = observed.mean_and_covariance()
    n = observed.rows
    return Moments(n, mean, covariance * (n - 1.0))


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
    with np.errstate(over="ignore"):
        return float(w.sum())


def _add(*values: float) -> float:
    with np.errstate(over="ignore"):
        return float(np.sum(values))


def total_weight_part() -> PassPart:
    """The pass part summing the sample weights (the row count without weights)."""
    return PassPart(_weight_chunk, (), _add, kind="survey")


def survey(chunks: RowChunks, *, indices: np.ndarray | None, moments: bool,
           digest: bool, split_every: int, weighted: Sequence[tuple[int, int]] = (),
           missing: bool = False) -> tuple[Survey, dict[int, int] | None]:
    """One pass for the total weight and whatever of the sample (``indices``), the rows
    drawn in proportion to the weights (``(seed, size)`` requests), moments and digests
    is asked for; returns the survey and the chunk digests (None unless asked for).

    With ``missing`` (values may be NaN), it also computes the observed moments, and
    the moments asked for are the available-case ones."""
    parts: list[PassPart] = [total_weight_part()]
    if indices is not None:
        parts.append(sample_part(indices, missing))
    requests = sorted(set(weighted))
    parts.extend(weighted_part(seed, size, missing) for seed, size in requests)
    if missing:
        parts.append(observed_part(pairs=moments))
    elif moments:
        parts.append(moments_part())
    if digest:
        parts.append(digest_part())
    results = list(chunks.map_reduce_many(parts, split_every=split_every, kind="survey"))
    total = results.pop(0)
    sample = results.pop(0) if indices is not None else None
    drawn = {req: results.pop(0).rows for req in requests}
    observed = results.pop(0) if missing else None
    found = results.pop(0) if moments and not missing else None
    digests = results.pop(0).digests if digest else None
    if not math.isfinite(total):
        raise InvalidDataError(
            f"the sample weights add up to {total}, beyond the floating-point range: "
            "scale them down (only their ratios matter to the fit, and BIC counts their "
            "sum as the number of samples).")
    if observed is not None and moments:
        found = _available_case(observed)
    return (Survey(chunks.shape[0], chunks.shape[1], total, sample, found, drawn or None,
                   observed), digests)
