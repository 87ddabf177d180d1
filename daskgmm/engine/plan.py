"""The fit plan: the one driver behind every estimator's ``fit``, ``partial_fit`` and the
selection sweep.

A fit is described as a list of models to fit (:class:`ModelSpec`: a model, its
restarts, its random state and its start) and a :class:`FitPlan` (EM options, the
algorithm, a checkpointer, whether criteria are wanted); :func:`run_plan` carries it out
and returns, per model, its restarts, the best one, its criteria and the passes read by
phase (:class:`PlanResult`). The estimators only describe and adopt; nothing about
passes, starts or resuming lives in them.

The schedule, for ``P`` the passes over the data:

1. **Resume** (with a checkpoint): the candidates are read back; the first pass of EM
   also digests the chunks and refuses other data before any M-step uses them (batch EM
   checks the whole pass; incremental and online EM each group as it is read).
2. **Survey** (one pass, when some start needs a sample or a model needs the data's
   moments): the union of the models' samples, the moments, the chunk digests a
   checkpoint needs, the total weight, and the checks of every value.
3. **Starts** (:mod:`daskgmm.engine.starts`): in memory from the sample, except
   ``'kmeans'`` on data larger than the sample and ``'random'``, which need one pass;
   with batch EM that pass is shared with the first E-steps of the models already
   started (they join EM when ready). A default fit therefore reads the data at most
   twice before its first EM iteration (the survey and the assignment pass), and once
   with ``init_params='robust'``.
4. **EM** (:func:`daskgmm.engine.em.run_em`) with the algorithm, every candidate in
   lock-step.
5. **Criteria** (when asked for): the log-likelihood and responsibilities' entropy of
   each model's best restart under its final parameters; a model's criteria ride the
   next EM pass of the models still running, so only the models that finish last need a
   pass of their own.

The best restart of a model is the first with the highest final bound among those
without a degenerate component (:mod:`daskgmm.engine.degeneracy`).

With missing values (``EMOptions.missing == 'marginalize'``) every fresh fit runs the
survey (it measures the rows with nothing observed, which the fit leaves out, and the
observed means that fill the starts' sample), the starts work from the filled sample
(:func:`~daskgmm.engine.starts.fill_sample`), and EM and the criteria run the
marginalising E-step (:data:`~daskgmm.engine.em.MISSING`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daskgmm.engine.em import (
    Algorithm,
    Batch,
    Candidate,
    DataCheck,
    EMOptions,
    EStepKernel,
    IterationInfo,
    ReadLog,
    best_candidate,
    mark_degenerate,
    run_em,
)
from daskgmm.engine.estep import Components, check_finite_block
from daskgmm.engine.marginal import ObservedMoments, fill_missing
from daskgmm.engine.passes import PassPart, RowChunks, one_blas_thread
from daskgmm.engine.starts import (
    KMeansCache,
    Pending,
    StartContext,
    centre_of,
    draw_sample,
    fill_sample,
    finish_pending,
    pending_parts,
    sample_rows,
    start_states,
)
from daskgmm.engine.survey import Moments, Sample, Survey, digest_part, survey
from daskgmm.errors import CheckpointError, InvalidDataError

__all__ = ["FitPlan", "ModelSpec", "PlanResult", "criterion_values", "run_plan"]


def criterion_values(log_likelihood: float, neg_entropy: float, n: float,
                     n_parameters: int) -> dict[str, float]:
    """BIC, AIC and ICL of a fitted mixture (lower is better).

    ``BIC = -2 log L + p log n``, ``AIC = -2 log L + 2 p`` and ``ICL = BIC + 2 H`` with
    ``H = -sum_i sum_k r_ik log r_ik`` (``neg_entropy = -H``), ``log L`` the (weighted)
    log-likelihood, ``p`` the free parameters and ``n`` the number of samples (the sum
    of the weights with sample weights).

    With missing values, ``log L = sum_i w_i log p(x_i,o)`` is the observed-data
    log-likelihood, ``n`` counts the rows with at least one observed value, ``p`` is
    unchanged and ``H`` is the entropy of the responsibilities given the observed
    values.

    Examples
    --------
    >>> v = criterion_values(-100.0, -5.0, 50, 3)
    >>> round(v["bic"], 6), v["aic"], round(v["icl"] - v["bic"], 6)
    (211.736069, 206.0, 10.0)
    """
    bic = -2.0 * log_likelihood + n_parameters * math.log(n)
    return {"bic": bic, "aic": -2.0 * log_likelihood + 2.0 * n_parameters,
            "icl": bic - 2.0 * neg_entropy}


@dataclass
class ModelSpec:
    """One model to fit, with its restarts.

    Attributes
    ----------
    label : str
        For people, e.g. ``'K=3 full'`` (restarts get ``' #r'``).
    n_components : int
        ``K`` (the size of a start's sample depends on it).
    build : callable
        ``build(survey) -> model`` (:class:`~daskgmm.engine.em.MixtureModel`), called
        once the survey is known (the Bayesian mixture's priors default to the data's
        moments).
    n_init : int
        Restarts.
    random_state : numpy.random.RandomState
        Draws the sample and the starts.
    init : str
        The start (:data:`daskgmm.engine.starts.INIT_METHODS`).
    given : callable, optional
        ``given(model) -> state``: the one state to start from instead of ``init``
        (a warm start, or initial values given in full).
    adjust : callable, optional
        ``adjust(state, model) -> state``: puts user-given initial values into computed
        starts.
    start_bound : float
        The bound the candidates start from (a warm start's previous bound).
    needs_moments : bool
        ``build`` needs the survey's moments.
    centre : ndarray, optional
        The centre of the candidates' passes (default: that of the first restart's
        start); a stream of ``partial_fit`` batches keeps its first.
    fitted_components : callable, optional
        ``fitted_components(best) -> Components``: the components the fitted estimator
        predicts with (e.g. cast to the data's dtype), for the criteria; by default
        the model's components of the best state.
    """

    label: str
    n_components: int
    build: Callable[[Survey], Any]
    n_init: int
    random_state: np.random.RandomState
    init: str = "kmeans"
    given: Callable[[Any], Any] | None = None
    adjust: Callable[[Any, Any], Any] | None = None
    start_bound: float = -math.inf
    needs_moments: bool = False
    fitted_components: Callable[[Candidate], Components] | None = None
    centre: np.ndarray | None = None

    @property
    def n_candidates(self) -> int:
        """Restarts (one when starting from a given state)."""
        return 1 if self.given is not None else self.n_init

    def restart_labels(self) -> list[str]:
        """The label of each restart: ``'<label> #r'``."""
        return [f"{self.label} #{r}" for r in range(self.n_candidates)]


@dataclass
class FitPlan:
    """How to fit the models.

    Attributes
    ----------
    specs : list of ModelSpec
    options : EMOptions
    algorithm : callable
        ``algorithm(total_weight, resumed_state) -> Algorithm`` (``resumed_state`` is
        the stepwise state of a checkpoint, or None).
    checkpointer : optional
        A :class:`daskgmm.serialize.checkpoint.Checkpointer`: resume from it, and call
        it after every iteration.
    criteria : bool
        Compute each model's criteria (:func:`criterion_values`).
    callbacks : list of callable
        Called with every :class:`~daskgmm.engine.em.IterationInfo` (before observers),
        e.g. early stopping.
    """

    specs: list[ModelSpec]
    options: EMOptions
    algorithm: Callable[[float, Any], Algorithm] = lambda total, state: Batch()
    checkpointer: Any = None
    criteria: bool = False
    callbacks: list[Callable[[IterationInfo], None]] = field(default_factory=list)


@dataclass
class PlanResult:
    """What a plan produced.

    Attributes
    ----------
    candidates : list of list of Candidate
        Per model, its restarts (in order).
    best : list of Candidate
        Per model, its best restart.
    criteria : list of dict or None
        Per model, ``bic``, ``aic``, ``icl``, ``log_likelihood``, ``neg_entropy`` and
        ``n`` (when asked for).
    passes : dict
        Passes over the data by phase (``survey``, ``init``, ``em``, ``criteria``,
        ``verify``): chunk reads divided by the number of chunks.
    survey : Survey
    resumed : bool
        Whether the fit continued from a checkpoint.
    """

    candidates: list[list[Candidate]]
    best: list[Candidate]
    criteria: list[dict[str, float]] | None
    passes: dict[str, float]
    survey: Survey
    resumed: bool = False


# ---------------------------------------------------------------------------------------
# companions: work that shares batch EM's passes
# ---------------------------------------------------------------------------------------
class _PendingStarts:
    """Starts that need a pass; their candidates join EM once it has run. With missing
    values, the pass sees the chunks filled with ``fill_values``."""

    phase = "init"

    def __init__(self, pending: list[tuple[int, int, Pending]], join: Callable,
                 fill_values: np.ndarray | None = None) -> None:
        self._pending = pending
        self._join = join
        self._fill = fill_values
        self._owners: list[list[int]] = []

    def parts(self, candidates: Sequence[Candidate]) -> list[PassPart]:
        if not self._pending:
            return []
        parts, self._owners = pending_parts([p for _, _, p in self._pending], self._fill)
        return parts

    def receive(self, results: Sequence[Any]) -> list[Candidate]:
        states = finish_pending([p for _, _, p in self._pending], self._owners, results)
        ready = [(si, r, s) for (si, r, _), s in zip(self._pending, states, strict=True)]
        self._pending = []
        return self._join(ready)


class _Criteria:
    """The criteria of every model whose restarts have all finished, in the next pass
    (shared with the E-steps of the models still running)."""

    phase = "criteria"

    def __init__(self, specs: list[ModelSpec], counts: list[int], owner: list[int],
                 max_iter: int, n_features: int, finish: Callable,
                 kernel: EStepKernel) -> None:
        self._specs = specs
        self._kernel = kernel
        self._counts = counts
        self._owner = owner
        self._max_iter = max_iter
        self._D = n_features
        self._finish = finish
        self.found: dict[int, dict[str, float]] = {}
        self._asked: list[tuple[int, Candidate]] = []

    def parts(self, candidates: Sequence[Candidate]) -> list[PassPart]:
        groups: dict[int, list[Candidate]] = {}
        for cand in candidates:
            groups.setdefault(self._owner[cand.index], []).append(cand)
        ready = [si for si, group in sorted(groups.items())
                 if si not in self.found and len(group) == self._counts[si]
                 and not any(c.active and c.n_iter < self._max_iter for c in group)]
        return self.parts_for({si: groups[si] for si in ready})

    def parts_for(self, groups: dict[int, list[Candidate]]) -> list[PassPart]:
        """The pass part scoring the best restart of each of ``groups``."""
        self._asked = [(si, self._finish(si, sorted(group, key=lambda c: c.index)))
                       for si, group in sorted(groups.items())]
        if not self._asked:
            return []
        comps = [self._components(si, best) for si, best in self._asked]
        plan = self._kernel.make_plan(comps,
                                      np.stack([best.centre for _, best in self._asked]),
                                      entropy=True)
        return [PassPart(self._kernel.statistics, (plan,), kind="score")]

    def _components(self, si: int, best: Candidate) -> Components:
        spec = self._specs[si]
        if spec.fitted_components is not None:
            return spec.fitted_components(best)
        return best.model.components(best.state)

    def receive(self, results: Sequence[Any]) -> list[Candidate]:
        (result,) = results
        for (si, best), st in zip(self._asked, result.stats, strict=True):
            values = criterion_values(float(st["ll"]), float(st["ent"]), float(st["n"]),
                                      best.model.n_parameters(self._D))
            values.update(log_likelihood=float(st["ll"]), neg_entropy=float(st["ent"]),
                          n=float(st["n"]))
            self.found[si] = values
        self._asked = []
        return []


# ---------------------------------------------------------------------------------------
# the driver
# ---------------------------------------------------------------------------------------
def _sample_em(options: EMOptions) -> Callable[..., tuple[list[Any], list[float]]]:
    """EM on rows in memory (a start's sample), several starts of one model in
    lock-step."""

    def em(states: list[Any], model: Any, rows: np.ndarray, weights: np.ndarray | None,
           max_iter: int, tol: float) -> tuple[list[Any], list[float]]:
        chunks = RowChunks(rows, weights=weights)
        centre = centre_of(states[0])
        cands = [Candidate(i, model, s, centre) for i, s in enumerate(states)]
        run_em(chunks, cands, dataclasses.replace(options, tol=tol, max_iter=max_iter))
        return [c.state for c in cands], [c.lower_bound for c in cands]

    return em


def _moments_to_json(moments: Moments | None) -> dict[str, Any]:
    if moments is None:
        return {}
    return {"moments": {"n": moments.n, "mean": moments.mean.tolist(),
                        "scatter": moments.scatter.tolist()}}


def _observed_to_json(observed: ObservedMoments | None) -> dict[str, Any]:
    if observed is None:
        return {}
    return {"observed": {"reference": observed.reference.tolist(),
                         "count": observed.stats["count"].tolist(),
                         "sum": observed.stats["sum"].tolist(),
                         "empty": observed.empty, "rows": observed.rows}}


def _observed_from_json(extra: dict[str, Any], n_features: int) -> ObservedMoments | None:
    raw = extra.get("observed")
    if raw is None:
        return None
    arrays = [np.asarray(raw[key], dtype=np.float64) for key in ("reference", "count", "sum")]
    if any(a.shape != (n_features,) for a in arrays):
        raise CheckpointError("the checkpoint's observed-value counts have the wrong "
                              "shape; delete it to start afresh.")
    reference, count, total = arrays
    return ObservedMoments(reference, {"count": count, "sum": total}, float(raw["empty"]),
                           float(raw["rows"]))


def _moments_from_json(extra: dict[str, Any], n_features: int) -> Moments | None:
    raw = extra.get("moments")
    if raw is None:
        return None
    mean = np.asarray(raw["mean"], dtype=np.float64)
    scatter = np.asarray(raw["scatter"], dtype=np.float64)
    if mean.shape != (n_features,) or scatter.shape != (n_features, n_features):
        raise CheckpointError("the checkpoint's data moments have the wrong shape; delete "
                              "it to start afresh.")
    return Moments(float(raw["n"]), mean, scatter)


class _Run:
    """One execution of a plan (the state :func:`run_plan` needs along the way)."""

    def __init__(self, chunks: RowChunks, plan: FitPlan) -> None:
        self.chunks = chunks
        self.plan = plan
        self.options = plan.options
        self.reads = ReadLog(chunks.n_chunks)
        self.n, self.D = chunks.shape
        self.counts = [spec.n_candidates for spec in plan.specs]
        self.owner = [si for si, c in enumerate(self.counts) for _ in range(c)]
        self.first = [sum(self.counts[:si]) for si in range(len(self.counts))]
        self.models: list[Any] = []
        self.criteria: _Criteria | None = None

    # -- helpers -----------------------------------------------------------------------
    def callback(self, info: IterationInfo) -> None:
        for cb in self.plan.callbacks:
            cb(info)
        if self.plan.checkpointer is not None:
            self.plan.checkpointer(info)

    def finish_spec(self, si: int, group: list[Candidate]) -> Candidate:
        mark_degenerate(group, self.total_weight)
        return best_candidate(group, self.options.max_iter)

    def join(self, ready: list[tuple[int, int, Any]]) -> list[Candidate]:
        """Candidates of the restarts ``(spec, restart, state)`` whose starts are ready
        (a spec's restarts share the centre of its first)."""
        out = []
        centres: dict[int, np.ndarray] = {}
        for si, r, state in sorted(ready, key=lambda item: (item[0], item[1])):
            spec = self.plan.specs[si]
            if spec.adjust is not None:
                state = spec.adjust(state, self.models[si])
            if si not in centres:
                centres[si] = centre_of(state) if spec.centre is None else spec.centre
            out.append(Candidate(self.first[si] + r, self.models[si], state, centres[si],
                                 spec.restart_labels()[r], lower_bound=spec.start_bound))
        return out

    # -- the schedule ------------------------------------------------------------------
    def run(self) -> PlanResult:
        plan = self.plan
        resumed = None
        if plan.checkpointer is not None:
            resumed = plan.checkpointer.load(self.model_for_resume)
        if resumed is not None:
            candidates = self.resume(resumed)
        else:
            candidates = self.fresh()
        candidates.sort(key=lambda c: c.index)
        groups: list[list[Candidate]] = [[] for _ in plan.specs]
        for cand in candidates:
            groups[self.owner[cand.index]].append(cand)
        best = [self.finish_spec(si, g) for si, g in enumerate(groups)]
        scores = None
        if plan.criteria:
            missing = {si: g for si, g in enumerate(groups)
                       if si not in self.criteria.found}
            if missing or self.verify_pending:
                parts = self.criteria.parts_for(missing)
                if self.verify_pending:
                    parts.append(digest_part())
                results = self.reads.run(self.chunks, parts, "criteria",
                                         split_every=self.options.split_every)
                if self.verify_pending:
                    self.verify(results.pop())
                if missing:
                    self.criteria.receive(results)
            scores = [self.criteria.found[si] for si in range(len(plan.specs))]
        elif self.verify_pending:
            (result,) = self.reads.run(self.chunks, [digest_part()], "verify",
                                       split_every=self.options.split_every)
            self.verify(result)
        return PlanResult(groups, best, scores, self.reads.passes(), self.survey,
                          resumed is not None)

    def verify(self, result: Any) -> None:
        self.check.take(result.digests, self.chunks.row_bounds)
        self.verify_pending = False

    def make_criteria(self) -> None:
        if self.plan.criteria:
            self.criteria = _Criteria(self.plan.specs, self.counts, self.owner,
                                      self.options.max_iter, self.D, self.finish_spec,
                                      self.options.kernel)

    def model_for_resume(self, index: int) -> Any:
        if index >= len(self.owner):
            raise ValueError(f"{index + 1} candidates or more, the fit has "
                             f"{len(self.owner)}")
        if not self.models:
            extra = self.plan.checkpointer.extra
            moments = _moments_from_json(extra, self.D)
            observed = _observed_from_json(extra, self.D)
            total = float(extra.get("total_weight", self.n))
            self.survey = Survey(self.n, self.D, total, None, moments,
                                 observed=observed)
            self.models = [spec.build(self.survey) for spec in self.plan.specs]
        return self.models[self.owner[index]]

    def resume(self, resumed: Any) -> list[Candidate]:
        plan, options = self.plan, self.options
        if len(resumed.candidates) != len(self.owner):
            raise CheckpointError(
                f"the checkpoint in {plan.checkpointer.directory} holds "
                f"{len(resumed.candidates)} candidates, this fit has {len(self.owner)}; "
                "delete it to start afresh.")
        if resumed.iteration > options.max_iter:
            raise CheckpointError(
                f"the checkpoint in {plan.checkpointer.directory} is at iteration "
                f"{resumed.iteration}, beyond max_iter={options.max_iter}; raise max_iter "
                "to at least that to resume, or delete the checkpoint to start afresh.")
        self.total_weight = self.survey.total_weight - self.survey.empty_weight
        candidates = list(resumed.candidates)
        algorithm = plan.algorithm(self.total_weight, resumed.stepwise)
        if resumed.stepwise is not None:
            self.check = DataCheck(chunks=resumed.stepwise.digests)
        else:
            self.check = DataCheck(expected=resumed.digest)
        self.make_criteria()
        left = (any(c.active for c in candidates) and resumed.iteration < options.max_iter)
        self.verify_pending = not left and self.check.record
        if left:
            run_em(self.chunks, candidates, options, algorithm,
                   start_iteration=resumed.iteration, check=self.check,
                   callback=self.callback,
                   companions=[self.criteria] if self.criteria and algorithm.whole_passes
                   else (), reads=self.reads)
        return candidates

    def gather(self, indices: np.ndarray) -> Survey:
        """A survey of just the rows at ``indices`` (sorted, unique), read from the
        chunks that hold them (counted as a start's reads)."""
        chunks = self.chunks
        starts = np.array([a for a, _ in chunks.row_bounds])
        touched = len(np.unique(np.searchsorted(starts, indices, side="right")))
        self.reads.add("init", touched)
        rows = chunks.take_rows(indices)
        finite = np.isfinite(rows).all(axis=1)
        if not finite.all():
            # The error names the chunk of the first bad row read.
            bad = int(np.argmin(finite))
            first = int(indices[bad])
            start, stop = next(b for b in chunks.row_bounds if b[0] <= first < b[1])
            block = np.zeros((stop - start, self.D))
            block[first - start] = rows[bad]
            check_finite_block(block, start)
        return Survey(self.n, self.D, float(self.n), Sample(indices, rows, None))

    def fresh(self) -> list[Candidate]:
        plan, options, chunks = self.plan, self.options, self.chunks
        specs = plan.specs
        checkpointer = plan.checkpointer
        # What each model's start needs from the data.
        weighted = chunks.weights is not None
        draws = [None if spec.given is not None
                 else draw_sample(spec.init, spec.n_components, self.n, self.D,
                                  spec.random_state, weighted, spec.n_init)
                 for spec in specs]
        uniform = [d.indices for d in draws if d is not None and d.indices is not None]
        by_weight = [(d.seed, d.size) for d in draws if d is not None and d.indices is None]
        moments = any(spec.needs_moments for spec in specs)
        missing = options.marginalize
        few = (all(d is None or d.points for d in draws) and not moments
               and not missing)
        if uniform and few and checkpointer is None:
            # Only a few rows (random rows as the components): read where they lie.
            self.survey = self.gather(np.unique(np.concatenate(uniform)))
            self.check = DataCheck()
        elif uniform or by_weight or moments or missing:
            indices = np.unique(np.concatenate(uniform)) if uniform else None
            self.reads.add("survey", chunks.n_chunks)
            self.survey, digests = survey(chunks, indices=indices, moments=moments,
                                          digest=checkpointer is not None,
                                          split_every=options.split_every,
                                          weighted=by_weight, missing=missing)
            self.check = (DataCheck.of_survey(digests, chunks.row_bounds)
                          if digests is not None else DataCheck())
        else:
            total = chunks.total_weight
            self.survey = Survey(self.n, self.D, float(self.n if total is None else total))
            self.check = DataCheck(record=checkpointer is not None)
        self.verify_pending = False
        total = self.survey.total_weight
        if not total > 0:
            raise InvalidDataError("sample_weight must not be all zero: the data have no "
                                   "weight to fit.")
        if not math.isfinite(total):
            raise InvalidDataError(
                f"the sample weights add up to {total}, beyond the "
                "floating-point range: scale them down.")
        # Rows with nothing observed are left out of the fit.
        self.total_weight = total - self.survey.empty_weight
        observed = self.survey.observed
        never = ([] if observed is None
                 else np.flatnonzero(~(observed.stats["count"] > 0)).tolist())
        if never and self.total_weight > 0:
            raise InvalidDataError(
                f"feature(s) {never[:10]}{' ...' if len(never) > 10 else ''} have no "
                "observed value (every value is NaN, or in rows of zero weight): a mixture "
                "cannot estimate them; drop those columns.")
        if not self.total_weight > 0:
            raise InvalidDataError(
                "no row of the data has an observed value (every value is NaN, or the "
                "rows with values all have zero weight): there is nothing to fit.")
        self.models = [spec.build(self.survey) for spec in specs]
        if checkpointer is not None:
            checkpointer.extra = {**_moments_to_json(self.survey.moments),
                                  **_observed_to_json(self.survey.observed),
                                  "total_weight": total}
        # The starts.
        cache = KMeansCache()
        first_row: list[np.ndarray] = []
        fill = self.survey.fill_values  # None unless values may be missing

        def row0() -> np.ndarray:
            if not first_row:
                self.reads.add("init", 1)
                row = chunks.take_rows(np.array([0]))[0]
                first_row.append(row if fill is None else fill_missing(row, fill))
            return first_row[0]

        ctx = StartContext(cache, _sample_em(options), options.tol, row0)
        ready: list[tuple[int, int, Any]] = []
        pending: list[tuple[int, int, Pending]] = []
        for si, (spec, model) in enumerate(zip(specs, self.models, strict=True)):
            sample = (None if draws[si] is None
                      else fill_sample(sample_rows(draws[si], self.survey), fill))
            states = ([spec.given(model)] if spec.given is not None
                      else start_states(spec.init, model, spec.n_init, spec.random_state,
                                        sample, ctx))
            for r, state in enumerate(states):
                (pending if isinstance(state, Pending) else ready).append((si, r, state))
        algorithm = plan.algorithm(self.total_weight, None)
        self.make_criteria()
        companions: list[Any] = []
        # A checkpoint holds every candidate's EM state, and incremental and online EM
        # walk groups of chunks: then the starts' pass runs before EM.
        share = algorithm.whole_passes and checkpointer is None
        if pending and not share:
            starts = _PendingStarts(pending, self.join, fill)
            parts = starts.parts([])
            ready_now = starts.receive(self.reads.run(chunks, parts, "init",
                                                      split_every=options.split_every))
            candidates = self.join(ready) + ready_now
        else:
            candidates = self.join(ready)
            if pending:
                companions.append(_PendingStarts(pending, self.join, fill))
        if self.criteria is not None and algorithm.whole_passes:
            companions.append(self.criteria)
        run_em(chunks, candidates, options, algorithm, check=self.check,
               callback=self.callback, companions=companions, reads=self.reads)
        return candidates


def run_plan(chunks: RowChunks, plan: FitPlan) -> PlanResult:
    """Carry out ``plan`` on ``chunks`` (see the module docstring).

    BLAS runs one thread in this process meanwhile: the chunk tasks bring the
    parallelism, and the driver's M-steps factorise matrices of ``D x D``, too small for
    threads to pay (on two busy cores, threaded LAPACK on iris-sized matrices made a fit
    several times slower)."""
    with one_blas_thread():
        return _Run(chunks, plan).run()
