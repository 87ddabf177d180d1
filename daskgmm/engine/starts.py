"""Where EM starts: initial parameters from a sample in memory, and at most one pass.

Every start works from the **sample** the fit's first pass gathers
(:mod:`daskgmm.engine.survey`): at most :func:`sample_size` rows drawn uniformly, so
memory never grows with the number of rows. ``init_params`` names the start:

``'kmeans'`` (scikit-learn's meaning)
    k-means on the sample, then one pass over all the data for the statistics of the
    hard assignment to the centres, whose M-step gives the initial parameters. When the
    data fit the sample, this is scikit-learn's start exactly (one k-means++ run of
    ``KMeans`` on all the rows, no pass). On larger data the k-means keeps the best of
    :data:`KMEANS_RUNS` k-means++ runs on the sample (lowest inertia): one run misses
    well-separated clusters often enough at large K (two centres in one cluster, one
    centre for two clusters) that EM sits on a plateau.
``'robust'``
    No pass at all: k-means++ runs on the sample, short EM runs on the sample from the
    best of them, the best non-degenerate result by the sample's log-likelihood, then EM
    on the sample until it converges (the "emEM" strategy of Biernacki, Celeux and
    Govaert, 2003, with k-means seeds). The full-data EM starts from there. Half of the
    k-means seeds come from k-means on the sample's features scaled to unit variance:
    k-means is not invariant to the features' scales (a mixture is), so on raw values a
    feature of large variance decides every seed (with diabetes' insulin, sd 318 beside
    glucose's 64, seed 0 of a selection sweep reached full K=3 only in a basin 11 nats
    below the one scaled seeds find). mclust's hierarchical seeds are computed on
    scaled values for the same reason (its default ``hcUse="SVD"``; Scrucca and
    Raftery, 2015).
``'k-means++'``
    k-means++ seeding on the sample; each seed becomes a component holding that one row
    (scikit-learn's meaning).
``'random_from_data'``
    ``n_components`` distinct rows of non-zero weight, drawn uniformly from the sample
    (hence from the data), each a component.
``'random'``
    Uniform random responsibilities, normalised per row, drawn chunk by chunk in one
    pass over the data.

With missing values (``missing='marginalize'``), the starts work from the sample with
its holes filled by each feature's observed mean (:func:`fill_sample`; the rows with
nothing observed are left out): k-means, k-means++ and the rows drawn as components see
those rows. The hard assignment to k-means centres (in memory, or in the pass of
``'kmeans'``) puts each row with the centre nearest to its observed values and fills its
holes with that centre's values (:func:`fill_from_centres`) instead: filling with the
overall means would put the filled values far from their cluster and inflate every
start's covariances (one EM iteration after such a start was 0.5 nats per sample below
the optimum with 30% missing on well-separated clusters, 0.02 after a start filled from
the centres). The pass of ``'random'`` sees the chunks filled with the observed means
(:func:`filled_part`). The EM runs of ``'robust'`` on the sample marginalise the missing
values like the fit itself.

A model's restarts (``n_init``) each draw their own start from the model's random state.
With an integer seed, every model of a selection sweep draws what a separate fit with
that seed would draw; k-means runs on the same sample with the same random state are
computed once and shared by the covariance types (:class:`KMeansCache`).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daskgmm.diagnostics import observers
from daskgmm.engine import covariance as cov_types
from daskgmm.engine.degeneracy import degenerate_components
from daskgmm.engine.estep import (
    Components,
    assignment_statistics,
    hard_assignment_statistics,
    make_plan,
    random_assignment_statistics,
)
from daskgmm.engine.marginal import check_no_infinity, fill_missing
from daskgmm.engine.passes import PassPart
from daskgmm.engine.stats import PassResult, Stats
from daskgmm.engine.survey import sample_indices
from daskgmm.errors import InvalidDataError

__all__ = ["INIT_METHODS", "KMEANS_RUNS", "SAMPLE_ROWS", "KMeansCache", "Pending",
           "Reference", "centre_of", "fill_from_centres", "fill_sample", "filled_part",
           "identity_plan",
           "sample_size", "start_states", "state_from_responsibilities"]

#: Fewest rows in a start's sample (all of them when the data have fewer).
SAMPLE_ROWS = 20_000
#: Rows per component and feature the sample aims at (so that a component of a large
#: mixture still has rows enough for its covariance), up to :data:`SAMPLE_BYTES`.
SAMPLE_ROWS_PER_PARAMETER = 10
#: Largest sample (bytes of float64 rows).
SAMPLE_BYTES = 128 * 2**20
#: k-means++ runs on the sample behind ``'kmeans'`` on data larger than the sample.
KMEANS_RUNS = 10
#: k-means++ runs on the sample behind ``'robust'``.
ROBUST_KMEANS_RUNS = 10
#: Distinct k-means solutions (the lowest inertias) that ``'robust'`` runs short EM from.
ROBUST_SHORT_RUNS = 3
#: k-means++ runs on the sample scaled to unit variance behind ``'robust'``, and the
#: distinct solutions of them it runs short EM from (besides those on the raw values).
ROBUST_SCALED_KMEANS_RUNS = 5
ROBUST_SCALED_SHORT_RUNS = 2
#: Iterations of each short EM run of ``'robust'``.
ROBUST_SHORT_ITER = 10
#: Most EM iterations on the sample after the short runs.
ROBUST_SAMPLE_ITER = 200
#: The starts ``init_params`` may name.
INIT_METHODS = ("kmeans", "robust", "k-means++", "random", "random_from_data")


def sample_size(n_components: int, n_features: int) -> int:
    """Rows of the sample a start of ``n_components`` on ``n_features`` draws."""
    wanted = max(SAMPLE_ROWS, SAMPLE_ROWS_PER_PARAMETER * n_components * (n_features + 1))
    return min(wanted, max(SAMPLE_BYTES // (8 * n_features), 10 * n_components))


@dataclass(frozen=True)
class Reference:
    """The points initial statistics were accumulated about (unwhitened): the "state"
    an M-step of assignment statistics is given."""

    means: np.ndarray
    covariances_cholesky: None = None


def centre_of(state: Any) -> np.ndarray:
    """The weighted mean of a state's means: the centre every pass of a candidate (and
    of its restarts) accumulates second moments about."""
    means = np.asarray(state.means, dtype=np.float64)
    weights = getattr(state, "weights", None)
    if weights is None:
        return means.mean(axis=0)
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    return (weights @ means) / total if total > 0 else means.mean(axis=0)


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


def _canonical_order(centres: np.ndarray) -> np.ndarray:
    """Centres sorted lexicographically by their coordinates.

    k-means numbers its clusters in the order its random seeding found them, which
    differs between weighted rows and the same rows repeated; a fixed order makes the
    components of equivalent data come out in the same order.
    """
    return centres[np.lexsort(centres.T[::-1])]


def _mean(rows: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    return rows.mean(axis=0) if weights is None else np.average(rows, axis=0,
                                                                 weights=weights)


def fill_from_centres(rows: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``rows`` (float64) with each missing value replaced by that feature of the centre
    nearest to the row's observed values (squared Euclidean distance over them; a row
    with nothing observed goes to the first centre); ``rows`` when nothing misses."""
    observed = ~np.isnan(rows)
    if observed.all():
        return rows
    x = np.where(observed, rows, 0.0)
    c = np.asarray(centres, dtype=np.float64)
    d2 = observed.astype(np.float64) @ (c * c).T - 2.0 * (x @ c.T)  # + |x_o|², the same
    nearest = d2.argmin(axis=1)
    return np.where(observed, x, c[nearest])


def _from_assignment(model: Any, rows: np.ndarray, weights: np.ndarray | None,
                     centres: np.ndarray, holes: np.ndarray | None = None) -> Any:
    """The M-step of the hard assignment of in-memory rows to ``centres`` (with
    missing values, of ``holes``, the rows as read, filled from their centres)."""
    if holes is not None:
        rows = fill_from_centres(holes, centres)
    return _assignment_m_step(model, rows, weights, centres, hard_assignment_statistics)


def _assignment_m_step(model: Any, rows: np.ndarray, weights: np.ndarray | None,
                       centres: np.ndarray, statistics: Callable[..., Any]) -> Any:
    """The M-step of ``statistics(rows, weights, 0, plan)`` (an assignment of the rows
    to ``centres``) under the identity plan of those centres about the rows' mean."""
    reference = _mean(rows, weights)
    plan = identity_plan([(model.covariance, centres)], reference)
    stats = statistics(rows, weights, 0, plan).stats[0]
    return model.m_step(stats, reference, Reference(np.asarray(centres)))


def unit_scale(rows: np.ndarray, weights: np.ndarray | None
               ) -> tuple[np.ndarray, np.ndarray]:
    """The (weighted) mean and standard deviation of every feature of in-memory rows,
    the deviation of a constant feature (to rounding) taken as 1: ``(rows - mean) /
    sd`` has unit variance."""
    mean = _mean(rows, weights)
    sd = np.sqrt(np.average((rows - mean) ** 2, axis=0, weights=weights))
    return mean, np.where(sd > 1e-12 * np.maximum(np.abs(mean), 1.0), sd, 1.0)


#: Rows whose nearest scaled centre is found at once (bounds a (rows, K) array).
_NEAREST_ROWS = 8192


def _from_scaled_assignment(model: Any, rows: np.ndarray, weights: np.ndarray | None,
                            centres: np.ndarray, units: tuple[np.ndarray, np.ndarray],
                            holes: np.ndarray | None = None) -> Any:
    """The M-step of the hard assignment of in-memory rows to the nearest of
    ``centres``, given and compared in ``units`` (the rows' :func:`unit_scale`; with
    missing values, of ``holes`` filled from their centres)."""
    shift, scale = units
    labels = np.empty(len(rows), dtype=np.intp)
    half_norms = 0.5 * np.einsum("kd,kd->k", centres, centres)
    for lo in range(0, len(rows), _NEAREST_ROWS):
        z = (rows[lo:lo + _NEAREST_ROWS] - shift) / scale
        labels[lo:lo + len(z)] = np.argmax(z @ centres.T - half_norms, axis=1)
    raw = centres * scale + shift
    if holes is not None:
        rows = np.where(np.isnan(holes), raw[labels], holes)

    def labelled(c: int, block: np.ndarray, xc: np.ndarray, sl: slice) -> None:
        block[...] = 0.0
        block[labels[sl], np.arange(block.shape[1])] = 1.0

    return _assignment_m_step(
        model, rows, weights, raw,
        lambda *args: assignment_statistics(*args, labelled))


def _points_state(model: Any, points: np.ndarray, weights: np.ndarray | None) -> Any:
    """Parameters of "each point is a component holding that one sample", as
    scikit-learn's one-hot initialisations give."""
    centre = points.mean(axis=0)
    K = len(points)
    plan = identity_plan([(model.covariance, points)], centre)

    def identity(c: int, block: np.ndarray, xc: np.ndarray, sl: slice) -> None:
        block[...] = np.eye(K)[:, sl]

    stats = assignment_statistics(points, weights, 0, plan, identity).stats[0]
    return model.m_step(stats, centre, Reference(points))


def state_from_responsibilities(model: Any, X: np.ndarray, resp: np.ndarray,
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


# ---------------------------------------------------------------------------------------
# k-means on the sample
# ---------------------------------------------------------------------------------------
def _rng_token(rng: np.random.RandomState) -> str:
    state = rng.get_state()
    return hashlib.sha256(np.asarray(state[1]).tobytes() + repr(state[2:]).encode()
                          ).hexdigest()


@dataclass
class KMeansCache:
    """k-means runs on a sample, by (sample, number of components, random state): the
    models of a sweep that share a seed share their k-means (the covariance types of one
    number of components), and the random state is left where the runs leave it."""

    _runs: dict[tuple, tuple[list[tuple[float, np.ndarray]], tuple]] = field(
        default_factory=dict)

    def runs(self, sample: SampleRows, n_components: int, n_runs: int,
             rng: np.random.RandomState, *,
             units: tuple[np.ndarray, np.ndarray] | None = None
             ) -> list[tuple[float, np.ndarray]]:
        """``n_runs`` k-means++ runs (inertia, centres in canonical order) on the
        sample's rows, or on them in ``units`` (their :func:`unit_scale`), the centres
        in those units."""
        rows, weights = sample.rows, sample.weights
        key = (sample.key, n_components, n_runs, units is not None, _rng_token(rng))
        if key in self._runs:
            found, after = self._runs[key]
            rng.set_state(after)
            return found
        if units is not None:
            rows = (rows - units[0]) / units[1]
        found = [_kmeans(rows, weights, n_components, 1, rng) for _ in range(n_runs)]
        self._runs[key] = (found, rng.get_state())
        return found


#: Work on a sample of fewer values than this (rows x components x features) runs on one
#: thread: thread pools cost more than they save on small arrays.
SMALL_WORK = 2**24


def small_work(rows: int, n_components: int, n_features: int) -> Any:
    """A context that limits BLAS and OpenMP to one thread for small work (else none)."""
    import contextlib

    if rows * n_components * n_features >= SMALL_WORK:
        return contextlib.nullcontext()
    return _thread_controller().limit(limits=1)


@functools.cache
def _thread_controller() -> Any:
    """The process's thread pools (BLAS, and the OpenMP runtime of scikit-learn's
    k-means), listed once: ``threadpool_limits`` lists the loaded libraries at every
    call, about 3 ms (a sixth of a whole fit of scikit-learn's wine)."""
    import sklearn.cluster  # noqa: F401  (loads the OpenMP runtime its k-means uses)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _kmeans(rows: np.ndarray, weights: np.ndarray | None, n_components: int, n_init: int,
            rng: np.random.RandomState) -> tuple[float, np.ndarray]:
    from sklearn.cluster import KMeans

    with small_work(len(rows), n_components, rows.shape[1]):
        km = KMeans(n_clusters=n_components, n_init=n_init, random_state=rng).fit(
            rows, sample_weight=weights)
    return float(km.inertia_), _canonical_order(np.asarray(km.cluster_centers_,
                                                           dtype=np.float64))


# ---------------------------------------------------------------------------------------
# starts that need a pass
# ---------------------------------------------------------------------------------------
@dataclass
class Pending:
    """A restart whose start needs one pass over all the data: the hard assignment to
    k-means centres (``centres``), or random responsibilities (``seed``), about
    ``reference``."""

    model: Any
    reference: np.ndarray
    centres: np.ndarray | None = None
    seed: int | None = None

    def finish(self, stats: Stats) -> Any:
        """The initial state from the pass's statistics."""
        refs = (self.centres if self.centres is not None
                else np.tile(self.reference, (self.model.n_components, 1)))
        return self.model.m_step(stats, self.reference, Reference(np.asarray(refs)))


def _centre_filled_assignment(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                              plans: Sequence[Any], centres: Sequence[np.ndarray]
                              ) -> PassResult:
    """The hard-assignment statistics of a chunk that may miss values for several sets
    of centres (one single-candidate plan each): rows with nothing observed left out,
    the others filled from their nearest centre of each set
    (:func:`fill_from_centres`)."""
    X = np.asarray(X)
    check_no_infinity(X, row_start)
    keep = ~np.isnan(X).all(axis=1)
    if not keep.all():
        X = X[keep]
        weights = None if weights is None else np.asarray(weights)[keep]
    X = np.asarray(X, dtype=np.float64)
    stats = []
    for plan, sites in zip(plans, centres, strict=True):
        filled = fill_from_centres(X, sites)
        stats.extend(hard_assignment_statistics(filled, weights, row_start, plan).stats)
    return PassResult(stats)


def pending_parts(pending: Sequence[Pending], fill_values: np.ndarray | None = None
                  ) -> tuple[list[PassPart], list[list[int]]]:
    """The pass parts computing the statistics of ``pending`` starts (one part per kind),
    and, per part, the positions in ``pending`` its candidates stand for. With
    ``fill_values`` (the observed means: values may be missing), the assignment fills
    each row from its nearest centre, the random responsibilities see the rows filled
    with ``fill_values``."""
    parts, owners = [], []
    assign = [i for i, p in enumerate(pending) if p.centres is not None]
    if assign and fill_values is not None:
        plans = [identity_plan([(pending[i].model.covariance, pending[i].centres)],
                               pending[i].reference) for i in assign]
        parts.append(PassPart(_centre_filled_assignment,
                              (plans, [pending[i].centres for i in assign]), kind="init"))
        owners.append(assign)
    elif assign:
        plan = identity_plan([(pending[i].model.covariance, pending[i].centres)
                              for i in assign],
                             np.stack([pending[i].reference for i in assign]))
        parts.append(PassPart(hard_assignment_statistics, (plan,), kind="init"))
        owners.append(assign)
    random = [i for i, p in enumerate(pending) if p.centres is None]
    if random:
        plan = identity_plan([(pending[i].model.covariance,
                               np.tile(pending[i].reference,
                                       (pending[i].model.n_components, 1)))
                              for i in random],
                             np.stack([pending[i].reference for i in random]))
        parts.append(filled_part(
            PassPart(random_assignment_statistics,
                     (plan, [pending[i].seed for i in random]), kind="init"),
            fill_values))
        owners.append(random)
    return parts, owners


def finish_pending(pending: Sequence[Pending], owners: Sequence[Sequence[int]],
                   results: Sequence[Any]) -> list[Any]:
    """The initial states of ``pending`` from the results of :func:`pending_parts`."""
    states: list[Any] = [None] * len(pending)
    for positions, result in zip(owners, results, strict=True):
        for i, stats in zip(positions, result.stats, strict=True):
            states[i] = pending[i].finish(stats)
    return states


# ---------------------------------------------------------------------------------------
# the starts
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SampleRequest:
    """The sample a start asks the survey for: rows at ``indices`` (uniform), or
    ``size`` rows drawn in proportion to the sample weights with ``seed``."""

    indices: np.ndarray | None = None
    seed: int | None = None
    size: int = 0
    #: ``'random_from_data'``: ``indices`` are the rows of every restart in turn (in
    #: draw order), ``points`` each; a few rows, read where they lie.
    points: int = 0


@dataclass(frozen=True)
class SampleRows:
    """A start's sample in memory: its rows, their weights (None: rows count once each,
    as rows drawn in proportion to their weights do), whether it is the whole data, and
    a key that identifies it (for :class:`KMeansCache`). ``holes``: the rows as read,
    with their missing values, when ``rows`` are them filled (:func:`fill_sample`)."""

    key: Any
    rows: np.ndarray
    weights: np.ndarray | None
    whole: bool
    points: int = 0
    holes: np.ndarray | None = None

    @property
    def em_rows(self) -> np.ndarray:
        """The rows EM on the sample reads (with their missing values: it marginalises
        them)."""
        return self.rows if self.holes is None else self.holes


def fill_sample(sample: SampleRows, values: np.ndarray | None) -> SampleRows:
    """``sample`` without its rows that have no observed value and with every other
    missing value replaced by its feature's entry of ``values`` (the observed means);
    the sample itself when ``values`` is None or nothing misses."""
    if values is None:
        return sample
    missing = np.isnan(sample.rows)
    if not missing.any():
        return sample
    keep = ~missing.all(axis=1)
    rows = sample.rows[keep]
    weights = None if sample.weights is None else sample.weights[keep]
    return SampleRows(sample.key, fill_missing(rows, values), weights, sample.whole,
                      sample.points, holes=rows)


def _filled_chunk(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                  kernel: Callable[..., Any], values: np.ndarray, *args: Any) -> Any:
    """``kernel`` on a chunk whose rows with nothing observed are left out and whose
    other missing values are ``values``."""
    X = np.asarray(X)
    check_no_infinity(X, row_start)
    missing = np.isnan(X)
    if missing.any():
        keep = ~missing.all(axis=1)
        if not keep.all():
            X = X[keep]
            weights = None if weights is None else np.asarray(weights)[keep]
        X = fill_missing(X, values)
    return kernel(X, weights, row_start, *args)


def filled_part(part: PassPart, values: np.ndarray | None) -> PassPart:
    """``part`` reading every chunk filled as :func:`fill_sample` fills the sample
    (``part`` itself when ``values`` is None)."""
    if values is None:
        return part
    return PassPart(_filled_chunk, (part.kernel, np.asarray(values), *part.args),
                    part.combine, part.kind)


def draw_sample(method: str, n_components: int, n_samples: int, n_features: int,
                rng: np.random.RandomState, weighted: bool, n_init: int = 1
                ) -> SampleRequest | None:
    """The sample a start of ``n_components`` asks for (None for starts that need no
    sample): uniformly drawn rows, or, for weighted data larger than the sample, rows
    drawn in proportion to their weights; ``'random_from_data'`` on unweighted data
    draws just its rows, ``n_components`` per restart."""
    if method == "random":
        return None
    if method == "random_from_data" and not weighted:
        draws = [sample_indices(n_samples, n_components, rng) for _ in range(n_init)]
        return SampleRequest(indices=np.concatenate(draws), points=n_components)
    size = sample_size(n_components, n_features)
    if weighted and size < n_samples:
        return SampleRequest(seed=int(rng.randint(np.iinfo(np.int32).max)), size=size)
    return SampleRequest(indices=np.sort(sample_indices(n_samples, size, rng)))


def sample_rows(request: SampleRequest, survey: Any) -> SampleRows:
    """The rows of ``request`` from the survey that gathered them."""
    if request.indices is None:
        rows = survey.weighted[(request.seed, request.size)]
        return SampleRows(("weighted", request.seed, request.size), rows, None, False)
    rows, weights = survey.sample.take(request.indices)
    key = hashlib.sha256(request.indices.tobytes()).hexdigest()
    return SampleRows(key, rows, weights, len(request.indices) == survey.n_samples,
                      request.points)


@dataclass
class StartContext:
    """What a start may use: the k-means cache, how to run EM on a sample, and the
    first row of the data (for ``'random'``)."""

    cache: KMeansCache
    #: ``em(states, model, rows, weights, max_iter, tol) -> (states, bounds)``
    em: Callable[..., tuple[list[Any], list[float]]]
    tol: float = 1e-3
    first_row: Callable[[], np.ndarray] | None = None


def _nonzero(weights: np.ndarray | None, n: int) -> np.ndarray:
    return np.arange(n) if weights is None else np.flatnonzero(weights > 0)


def start_states(method: str, model: Any, n_init: int, rng: np.random.RandomState,
                 sample: SampleRows | None, ctx: StartContext) -> list[Any]:
    """The start of every restart: a model state, or a :class:`Pending` pass."""
    K = model.n_components
    if method == "random":
        first = ctx.first_row()
        return [Pending(model, first, seed=int(rng.randint(np.iinfo(np.int32).max)))
                for _ in range(n_init)]
    rows, weights = sample.rows, sample.weights
    if method == "random_from_data" and sample.points:
        return [_points_state(model, rows[r * K:(r + 1) * K],
                              None if weights is None else weights[r * K:(r + 1) * K])
                for r in range(n_init)]
    n_nonzero = len(_nonzero(weights, len(rows)))
    if n_nonzero < K:
        raise InvalidDataError(
            f"only {n_nonzero} rows have a non-zero sample weight, "
            f"fewer than n_components={K}: fit fewer components, or give the rows "
            "weights.")
    if method == "kmeans":
        reference = _mean(rows, weights)
        out = []
        for _ in range(n_init):
            if sample.whole:
                _, centres = _kmeans(rows, weights, K, 1, rng)
                out.append(_from_assignment(model, rows, weights, centres, sample.holes))
            else:
                runs = ctx.cache.runs(sample, K, KMEANS_RUNS, rng)
                centres = min(runs, key=lambda run: run[0])[1]
                out.append(Pending(model, reference, centres=centres))
        return out
    if method == "k-means++":
        from sklearn.cluster import kmeans_plusplus

        out = []
        for _ in range(n_init):
            _, idx = kmeans_plusplus(rows, K, random_state=rng, sample_weight=weights)
            out.append(_points_state(model, rows[idx],
                                     None if weights is None else weights[idx]))
        return out
    if method == "random_from_data":
        candidates = _nonzero(weights, len(rows))
        out = []
        for _ in range(n_init):
            pick = candidates[sample_indices(len(candidates), K, rng)]
            out.append(_points_state(model, rows[pick],
                                     None if weights is None else weights[pick]))
        return out
    if method == "robust":
        return [_robust(model, sample, rng, ctx) for _ in range(n_init)]
    raise ValueError(f"unknown init_params {method!r}")  # pragma: no cover


def _distinct(runs: list[tuple[float, np.ndarray]], count: int) -> list[np.ndarray]:
    """The centres of the ``count`` runs of lowest inertia, each solution once."""
    distinct: list[np.ndarray] = []
    for _, centres in sorted(runs, key=lambda run: run[0]):
        if not any(np.array_equal(centres, seen) for seen in distinct):
            distinct.append(centres)
        if len(distinct) == count:
            break
    return distinct


def _robust(model: Any, sample: SampleRows, rng: np.random.RandomState,
            ctx: StartContext) -> Any:
    """``'robust'``: short EM runs from the best k-means solutions on the sample, the
    best non-degenerate one continued on the sample (see the module docstring)."""
    K = model.n_components
    rows, weights = sample.rows, sample.weights
    raw = _distinct(ctx.cache.runs(sample, K, ROBUST_KMEANS_RUNS, rng), ROBUST_SHORT_RUNS)
    units = unit_scale(rows, weights)
    scaled = _distinct(ctx.cache.runs(sample, K, ROBUST_SCALED_KMEANS_RUNS, rng,
                                      units=units), ROBUST_SCALED_SHORT_RUNS)
    starts = ([_from_assignment(model, rows, weights, c, sample.holes) for c in raw]
              + [_from_scaled_assignment(model, rows, weights, c, units, sample.holes)
                 for c in scaled])
    n_rows = float(len(rows) if weights is None else weights.sum())
    with observers.silenced(), small_work(len(rows), K, rows.shape[1]):
        states, bounds = ctx.em(starts, model, sample.em_rows, weights, ROBUST_SHORT_ITER,
                                0.0)
        order = sorted(range(len(states)), key=lambda i: -bounds[i]
                       if math.isfinite(bounds[i]) else math.inf)
        fine = [i for i in order
                if not degenerate_components(model, states[i], n_rows)]
        best = states[(fine or order)[0]]
        if sample.whole:
            return best
        states, _ = ctx.em([best], model, sample.em_rows, weights, ROBUST_SAMPLE_ITER,
                           ctx.tol)
    return states[0]
