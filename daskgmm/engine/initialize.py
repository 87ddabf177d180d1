"""Initial parameters for EM, computed without loading the data into memory.

``init_params`` has scikit-learn's meanings, adapted so that only passes over the chunks
and a bounded in-memory sample are needed:

``'kmeans'``
    k-means (scikit-learn's ``KMeans``, k-means++ seeding) on a uniform sample of at most
    :data:`SAMPLE_ROWS` rows, then Lloyd iterations as passes over all the chunks until
    the centres move less than scikit-learn's tolerance (at most :data:`LLOYD_MAX_PASSES`),
    then one pass for the statistics of the hard assignment to the centres.
``'k-means++'``
    k-means++ seeding (Arthur & Vassilvitskii, 2007) on the sample; each seed becomes a
    component holding that one sample, as in scikit-learn.
``'random_from_data'``
    ``n_components`` distinct rows drawn uniformly from the whole array, each a component.
``'random'``
    Uniform random responsibilities, normalised per row, drawn chunk by chunk.

Sample weights weight the k-means on the sample, the Lloyd passes and every statistic.

Initialisation works on *groups* of candidates: each group is one model (a number of
components and a covariance type) with its restarts, seeded by its own random state. The
groups share every read: one gather of the sample rows, then passes that each carry the
Lloyd steps of the sets of centres still moving and the assignment statistics of those
that have settled (:class:`KMeansStarts`; a selection sweep also runs the E-steps of the
candidates already started in them). A group seeded with an integer draws exactly what a
separate fit with that seed would draw.

Nothing here grows with the number of rows: samples are drawn in O(sample size)
(:func:`sample_indices`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskgmm.engine import covariance as cov_types
from daskgmm.engine.em import MixtureModel
from daskgmm.engine.estep import (
    Components,
    assignment_statistics,
    check_finite_block,
    check_weights_block,
    hard_assignment_statistics,
    lloyd_statistics,
    make_plan,
    random_assignment_statistics,
)
from daskgmm.engine.passes import PassPart, RowChunks
from daskgmm.engine.stats import Stats

#: Rows in the in-memory sample used to seed k-means.
SAMPLE_ROWS = 20_000
#: Most Lloyd passes over all the chunks after the sample's k-means has converged.
LLOYD_MAX_PASSES = 10
#: Lloyd stops when the squared centre shift is below this times the mean feature variance
#: (scikit-learn's KMeans convention).
LLOYD_TOL = 1e-4


@dataclass(frozen=True)
class Reference:
    """The points initial statistics were accumulated about (unwhitened)."""

    means: np.ndarray
    covariances_cholesky: None = None


@dataclass
class Group:
    """One model to initialise, with its restarts and its random state."""

    model: MixtureModel
    n_init: int
    random_state: np.random.RandomState


def sample_indices(n: int, size: int, rng: np.random.RandomState) -> np.ndarray:
    """``min(size, n)`` distinct indices below ``n``, uniformly, in draw order.

    Memory and time are O(size), whatever ``n`` is (unlike ``rng.choice(n, size,
    replace=False)``, which builds a permutation of all ``n``).
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


def _gather(chunks: RowChunks, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The rows (and weights) at ``indices``, in that order, checked finite."""
    order = np.argsort(indices, kind="stable")
    sorted_idx = indices[order]
    rows = np.empty((len(indices), chunks.shape[1]))
    rows[order] = chunks.take_rows(sorted_idx)
    weights = None
    w = chunks.take_weights(sorted_idx)
    if w is not None:
        weights = np.empty(len(indices))
        weights[order] = w
    if weights is not None and not (np.isfinite(weights) & (weights >= 0)).all():
        # Name the chunk of the first bad sampled weight, as a pass over it would.
        position = int(np.argmin(np.isfinite(weights) & (weights >= 0)))
        first = int(indices[position])
        start, stop = next(b for b in chunks.row_bounds if b[0] <= first < b[1])
        block = np.ones(stop - start)
        block[first - start] = weights[position]
        check_weights_block(block, start)
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        # Name the chunk of the first bad sampled row, as a pass over it would.
        first = int(indices[np.argmin(finite)])
        start, stop = next(b for b in chunks.row_bounds if b[0] <= first < b[1])
        block = np.zeros((stop - start, rows.shape[1]))
        block[first - start] = rows[np.argmin(finite)]
        check_finite_block(block, start)
    return rows, weights


def _points_statistics(points: np.ndarray, weights: np.ndarray | None,
                       cov: cov_types.CovarianceType) -> tuple[Stats, np.ndarray]:
    """Statistics of "each point is a component holding that one sample" (about the
    points' mean), as scikit-learn's one-hot initialisations give."""
    centre = points.mean(axis=0)
    K = len(points)
    plan = identity_plan([(cov, points)], centre)

    def identity(c: int, block: np.ndarray, xc: np.ndarray, sl: slice) -> None:
        block[...] = np.eye(K)[:, sl]

    result = assignment_statistics(points, weights, 0, plan, identity)
    return result.stats[0], centre


def identity_plan(sets: Sequence[tuple[cov_types.CovarianceType, np.ndarray]],
                   centre: np.ndarray):
    """A plan whose log-densities are minus half the squared Euclidean distances to the
    given centres (``centre``: one point for all sets, or one per set)."""
    D = np.shape(centre)[-1]
    comps = []
    for cov, centres in sets:
        K = len(centres)
        eye = {"full": np.broadcast_to(np.eye(D), (K, D, D)), "tied": np.eye(D),
               "diag": np.ones((K, D)), "spherical": np.ones(K)}[cov.name]
        comps.append(Components(cov, np.asarray(centres, dtype=np.float64),
                                np.array(eye, dtype=np.float64), np.zeros(K)))
    return make_plan(comps, centre)


def _sample(chunks: RowChunks, groups: Sequence[Group]
            ) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Each group's seeding sample, drawn from its random state; one gather for all."""
    n = chunks.shape[0]
    drawn = [sample_indices(n, SAMPLE_ROWS, g.random_state) for g in groups]
    union = np.unique(np.concatenate(drawn))
    rows, weights = _gather(chunks, union)
    out = []
    for idx in drawn:
        pos = np.searchsorted(union, idx)
        out.append((rows[pos], None if weights is None else weights[pos]))
    return out


def _kmeans_seeds(chunks: RowChunks, groups: Sequence[Group]
                  ) -> tuple[list[list[np.ndarray]], list[np.ndarray], np.ndarray]:
    """Every group's k-means centres on its sample (per restart), the mean of each
    sample, and the first group's sample rows."""
    from sklearn.cluster import KMeans

    samples = _sample(chunks, groups)
    centres: list[list[np.ndarray]] = []
    for g, (rows, w) in zip(groups, samples, strict=True):
        sets = []
        for _ in range(g.n_init):
            km = KMeans(n_clusters=g.model.n_components, n_init=1,
                        random_state=g.random_state).fit(rows, sample_weight=w)
            sets.append(_canonical_order(np.asarray(km.cluster_centers_, dtype=np.float64)))
        centres.append(sets)
    means = [rows.mean(axis=0) if w is None else np.average(rows, axis=0, weights=w)
             for rows, w in samples]
    return centres, means, samples[0][0]


class KMeansStarts:
    """``init_params='kmeans'`` for several groups, as parts of passes over the data.

    Every restart of every group goes through its own stages: Lloyd passes over all the
    chunks until its centres move less than the tolerance (at most
    :data:`LLOYD_MAX_PASSES`), then one pass for the statistics of the hard assignment,
    whose M-step gives its initial parameters. :meth:`parts` says what the next pass
    must compute for the restarts still initialising, :meth:`receive` takes the results
    and returns the restarts that became ready. A restart's numbers do not depend on the
    others, so the passes can carry other work too: the EM driver runs the E-steps of
    the restarts already started in the same reads
    (:func:`daskgmm.engine.em.run_em`'s ``companions``), and :func:`initial_states` runs
    them alone.
    """

    def __init__(self, chunks: RowChunks, groups: Sequence[Group]) -> None:
        self.groups = list(groups)
        self.centres, self.references, rows0 = _kmeans_seeds(chunks, self.groups)
        self._reference = self.references[0]
        self._threshold = LLOYD_TOL * float(np.mean(np.var(rows0, axis=0)))
        units = [(gi, r) for gi, g in enumerate(self.groups) for r in range(g.n_init)]
        # The sample is the whole array: k-means ran on all of it, no Lloyd pass.
        whole = len(rows0) == chunks.shape[0]
        self._lloyd: list[tuple[int, int]] = [] if whole else units
        self._assign: list[tuple[int, int]] = units if whole else []
        self._passes = dict.fromkeys(units, 0)
        self._asked: tuple[list[tuple[int, int]], list[tuple[int, int]]] = ([], [])

    def pending(self) -> bool:
        """Whether some restart still needs a pass."""
        return bool(self._lloyd or self._assign)

    def parts(self, candidates: Sequence[Any] = ()) -> list[PassPart]:
        """What the next pass computes for the restarts still initialising."""
        self._asked = (list(self._lloyd), list(self._assign))
        out = []
        if self._lloyd:
            sets = [self.centres[gi][r] for gi, r in self._lloyd]
            out.append(PassPart(lloyd_statistics, (sets, self._reference), _add_lists,
                                "kmeans"))
        if self._assign:
            plan = identity_plan(
                [(self.groups[gi].model.covariance, self.centres[gi][r])
                 for gi, r in self._assign],
                np.stack([self.references[gi] for gi, _ in self._assign]))
            out.append(PassPart(hard_assignment_statistics, (plan,), kind="init"))
        return out

    def receive(self, results: Sequence[Any]) -> list[tuple[int, int, Any]]:
        """Take a pass's results (in the order of :meth:`parts`); return ``(group,
        restart, initial state)`` of every restart that became ready."""
        lloyd, assign = self._asked
        results = list(results)
        ready = []
        if assign:
            result = results.pop()
            for (gi, r), st in zip(assign, result.stats, strict=True):
                g = self.groups[gi]
                state = g.model.m_step(st, self.references[gi],
                                       Reference(np.asarray(self.centres[gi][r])))
                ready.append((gi, r, state))
            self._assign = [u for u in self._assign if u not in assign]
        if lloyd:
            (stats,) = results
            for unit, st in zip(lloyd, stats, strict=True):
                gi, r = unit
                counts = st["counts"]
                new = self.centres[gi][r].copy()
                filled = counts > 0
                new[filled] = self._reference + st["sums"][filled] / counts[filled, None]
                shift = float(((new - self.centres[gi][r]) ** 2).sum())
                self.centres[gi][r] = new
                self._passes[unit] += 1
                if shift <= self._threshold or self._passes[unit] >= LLOYD_MAX_PASSES:
                    self._lloyd.remove(unit)
                    self._assign.append(unit)
        return ready


def _canonical_order(centres: np.ndarray) -> np.ndarray:
    """Centres sorted lexicographically by their coordinates.

    k-means numbers its clusters in the order its random seeding found them, which
    differs between weighted rows and the same rows repeated; a fixed order makes the
    components of equivalent data come out in the same order.
    """
    return centres[np.lexsort(centres.T[::-1])]


def _add_lists(*parts: list[Stats]) -> list[Stats]:
    from daskgmm.engine.stats import add

    return [add(*items) for items in zip(*parts, strict=True)]


def initial_states(chunks: RowChunks, groups: Sequence[Group], init_params: str, *,
                   split_every: int = 8) -> list[list[Any]]:
    """Initial parameters of every restart of every group.

    Returns
    -------
    list of list
        Per group, one model state per restart.
    """
    if init_params == "kmeans":
        starts = KMeansStarts(chunks, groups)
        states: list[list[Any]] = [[None] * g.n_init for g in groups]
        while starts.pending():
            results = chunks.map_reduce_many(starts.parts(), split_every=split_every)
            for gi, r, state in starts.receive(results):
                states[gi][r] = state
        return states
    if init_params == "k-means++":
        from sklearn.cluster import kmeans_plusplus

        samples = _sample(chunks, groups)
        out = []
        for g, (rows, w) in zip(groups, samples, strict=True):
            states = []
            for _ in range(g.n_init):
                _, idx = kmeans_plusplus(rows, g.model.n_components,
                                         random_state=g.random_state, sample_weight=w)
                states.append(_state_from_points(g.model, rows[idx],
                                                 None if w is None else w[idx]))
            out.append(states)
        return out
    if init_params == "random_from_data":
        out = []
        for g in groups:
            states = []
            for _ in range(g.n_init):
                idx = _nonzero_weight_indices(chunks, g.model.n_components, g.random_state)
                rows, w = _gather(chunks, idx)
                states.append(_state_from_points(g.model, rows, w))
            out.append(states)
        return out
    if init_params == "random":
        flat_groups = _expand(groups)
        seeds = [int(g.random_state.randint(np.iinfo(np.int32).max))
                 for g in groups for _ in range(g.n_init)]
        reference = chunks.take_rows(np.array([0]))[0]
        refs = [np.tile(reference, (g.model.n_components, 1)) for g in flat_groups]
        plan = identity_plan([(g.model.covariance, r) for g, r in zip(flat_groups, refs,
                                                                        strict=True)],
                              reference)
        result = chunks.map_reduce(random_assignment_statistics, plan, seeds,
                                   split_every=split_every, kind="init")
        return _regroup(groups, [
            g.model.m_step(st, reference, Reference(r))
            for g, r, st in zip(flat_groups, refs, result.stats, strict=True)])
    raise ValueError(f"unknown init_params {init_params!r}")  # pragma: no cover


def _expand(groups: Sequence[Group]) -> list[Group]:
    return [g for g in groups for _ in range(g.n_init)]


def _regroup(groups: Sequence[Group], flat: list[Any]) -> list[list[Any]]:
    out, start = [], 0
    for g in groups:
        out.append(flat[start : start + g.n_init])
        start += g.n_init
    return out


def state_from_responsibilities(model: MixtureModel, X: np.ndarray, resp: np.ndarray,
                                sample_weight: np.ndarray | None = None) -> Any:
    """Parameters from given responsibilities of in-memory data (scikit-learn's
    ``_initialize(X, resp)``), the rows weighted by ``sample_weight``."""
    X = np.asarray(X, dtype=np.float64)
    resp = np.asarray(resp, dtype=np.float64)
    centre = X.mean(axis=0)
    refs = np.tile(centre, (model.n_components, 1))
    plan = identity_plan([(model.covariance, refs)], centre)

    def given(c: int, block: np.ndarray, xc: np.ndarray, sl: slice) -> None:
        block[...] = resp[sl].T

    weights = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    stats = assignment_statistics(X, weights, 0, plan, given).stats[0]
    return model.m_step(stats, centre, Reference(refs))


def _state_from_points(model: MixtureModel, points: np.ndarray,
                       weights: np.ndarray | None) -> Any:
    stats, centre = _points_statistics(points, weights, model.covariance)
    return model.m_step(stats, centre, Reference(points))


def _nonzero_weight_indices(chunks: RowChunks, size: int, rng: np.random.RandomState
                            ) -> np.ndarray:
    """``size`` distinct row indices drawn uniformly among rows of non-zero weight."""
    idx = sample_indices(chunks.shape[0], size, rng)
    if chunks.weights is None:
        return idx
    for _ in range(100):
        w = chunks.take_weights(np.sort(idx))
        keep = np.sort(idx)[w > 0]
        if len(keep) == size:
            return idx
        extra = sample_indices(chunks.shape[0], size, rng)
        idx = np.unique(np.concatenate([keep, extra]))[:size]
    raise ValueError("could not draw rows of non-zero sample weight")  # pragma: no cover
