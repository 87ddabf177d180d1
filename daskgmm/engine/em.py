"""The EM loop: E-steps over groups of chunks, M-steps on the driver, one loop for every
algorithm.

The loop knows statistics, M-steps and lower bounds only through the model of each
candidate (:class:`MixtureModel`), and how often the parameters change only through the
algorithm (:class:`Algorithm`): batch EM reads the whole data for each M-step
(:class:`Batch`); incremental and online EM (:mod:`daskgmm.engine.stepwise`) walk the
chunks in groups and step after each. It advances every candidate in lock-step, so one
read of each chunk serves all the candidates still running, whatever their number of
components, covariance type or model (restarts of one estimator, or the models of a
selection sweep), and applies scikit-learn's rules: a candidate stops when its lower bound
changes by less than ``tol`` in a pass; the best of several restarts is the first with the
highest final lower bound (:func:`best_candidate`), among those without a degenerate
component.

Other work can share batch EM's reads (:class:`Companion`): starts that need a pass, and
the criteria of candidates that have finished. Each candidate counts its own iterations,
so one that joined late still runs up to ``max_iter`` of them.

The E-step is the complete-data kernel of :mod:`daskgmm.engine.estep`, or, for data
whose missing values (NaN) are marginalised, that of :mod:`daskgmm.engine.marginal`
(:class:`EStepKernel`, chosen by :attr:`EMOptions.missing`); the rest of the loop is the
same for both.

Checkpoints, progress and reports are observers (:mod:`daskgmm.diagnostics.observers`)
or the ``callback``; the loop only tells them what happened.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from daskgmm.diagnostics import observers
from daskgmm.engine import estep, marginal
from daskgmm.engine.covariance import CovarianceType
from daskgmm.engine.degeneracy import degenerate_components
from daskgmm.engine.estep import Components
from daskgmm.engine.passes import PassPart, RowChunks
from daskgmm.engine.stats import Stats, data_digest
from daskgmm.errors import CheckpointError

__all__ = ["MISSING", "Algorithm", "Batch", "Candidate", "Companion", "DataCheck",
           "EMOptions", "EStepKernel", "FitInfo", "IterationInfo", "MixtureModel",
           "ReadLog", "best_candidate", "estep_kernel", "run_em"]


class MixtureModel(Protocol):
    """What the EM loop needs from the model of one candidate.

    ``state`` is the model's own parameter object (immutable); the loop only passes it
    back to the model. A state has ``weights`` (K,), ``means`` (K, D), ``covariances``
    (in the covariance type's shape) and ``covariances_cholesky``.
    """

    n_components: int
    covariance: CovarianceType
    #: Whether the lower bound needs the responsibilities' entropy (``stats['ent']``).
    wants_entropy: bool
    #: What :meth:`lower_bound` measures, for people: a short name for progress lines
    #: and a description for plots and reports.
    objective: str
    objective_description: str

    def components(self, state: Any) -> Components:
        """The Gaussian components the E-step evaluates."""

    def m_step(self, stats: Stats, centre: np.ndarray, state: Any) -> Any:
        """New parameters from the statistics the E-step computed with ``state``."""

    def lower_bound(self, stats: Stats, state: Any) -> float:
        """The quantity whose change decides convergence, from the E-step's statistics
        and the M-step's new ``state``."""

    def n_parameters(self, n_features: int) -> int:
        """Free parameters (the penalty of BIC and AIC)."""

    def state_to_arrays(self, state: Any) -> dict[str, np.ndarray]:
        """The state as named arrays (checkpoints)."""

    def state_from_arrays(self, arrays: dict[str, np.ndarray], n_features: int) -> Any:
        """The state from named arrays, validated."""


@dataclass
class Candidate:
    """Where one candidate (a model and its current parameters) stands.

    ``centre`` is the point its passes centre the data on, fixed for the whole fit (so a
    resumed fit repeats an uninterrupted one bit for bit); restarts of one model share
    it, so their products are batched.
    """

    index: int
    model: MixtureModel
    state: Any
    centre: np.ndarray
    label: str = ""
    lower_bound: float = -math.inf
    lower_bounds: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    # False once converged; a candidate that ran out of iterations stays active, so a
    # resumed fit with a larger max_iter continues it.
    active: bool = True
    seconds: float = 0.0
    #: Components found degenerate (:mod:`daskgmm.engine.degeneracy`) at the end.
    degenerate: list[int] = field(default_factory=list)


@dataclass
class FitInfo:
    """What observers are told when a fit starts."""

    max_iter: int
    n_candidates: int
    n_chunks: int
    n_samples: int
    algorithm: str
    labels: list[str]
    tol: float = 0.0


@dataclass
class IterationInfo:
    """What observers are told after every EM iteration."""

    iteration: int
    max_iter: int
    states: list[Candidate]
    seconds: float
    #: The digest of the data, once a pass has computed it (else None).
    digest: str | None = None
    #: Incremental and online EM: where the fit stands within its passes
    #: (:class:`daskgmm.engine.stepwise.StepwiseState`).
    stepwise: Any = None
    #: The indices of the candidates this iteration updated (None: every candidate
    #: whose ``n_iter`` equals ``iteration``). Candidates that joined EM late (a
    #: selection sweep) have run fewer iterations than the pass's number.
    updated: list[int] | None = None

    def was_updated(self, candidate: Any) -> bool:
        """Whether this iteration updated ``candidate``."""
        if self.updated is not None:
            return candidate.index in self.updated
        return candidate.n_iter == self.iteration


@dataclass(frozen=True)
class EStepKernel:
    """The E-step a fit runs, and the prediction that goes with it.

    ``make_plan(components, centres, *, dtype, entropy, digest)`` builds a pass's plan
    (its ``digest`` attribute says whether the chunks are digested);
    ``statistics(X, weights, row_start, plan)`` is the chunk kernel, returning a
    :class:`~daskgmm.engine.stats.PassResult`; ``predict``, ``predict_proba`` and
    ``score_samples`` (``(X, row_start, plan, ...)``) evaluate the rows of a chunk under
    a plan of one candidate."""

    make_plan: Callable[..., Any]
    statistics: Callable[..., Any]
    predict: Callable[..., np.ndarray]
    predict_proba: Callable[..., np.ndarray]
    score_samples: Callable[..., np.ndarray]


#: ``missing=`` -> the E-step: NaN is an error (the complete-data kernel), or marks a
#: missing value that the E-step marginalises (:mod:`daskgmm.engine.marginal`; on
#: complete chunks it is the complete-data kernel, to the bit).
MISSING: dict[str, EStepKernel] = {
    "error": EStepKernel(estep.make_plan, estep.estep_statistics, estep.predict_block,
                         estep.predict_proba_block, estep.score_samples_block),
    "marginalize": EStepKernel(marginal.make_marginal_plan, marginal.marginal_statistics,
                               marginal.marginal_predict_block,
                               marginal.marginal_predict_proba_block,
                               marginal.marginal_score_samples_block),
}


def estep_kernel(missing: str) -> EStepKernel:
    """The E-step for ``missing`` (a key of :data:`MISSING`)."""
    return MISSING[missing]


@dataclass
class EMOptions:
    """Settings of the EM loop (scikit-learn's meanings, plus ours).

    ``missing``: ``'error'`` (NaN is refused) or ``'marginalize'`` (NaN marks a
    missing value; see :data:`MISSING`)."""

    tol: float
    max_iter: int
    split_every: int = 8
    dtype: str = "float64"
    missing: str = "error"

    @property
    def kernel(self) -> EStepKernel:
        """The E-step of these options."""
        return estep_kernel(self.missing)

    @property
    def marginalize(self) -> bool:
        """Whether values may be missing (NaN)."""
        return self.missing == "marginalize"


@dataclass
class ReadLog:
    """Chunk reads of a fit, by phase (``'survey'``, ``'init'``, ``'em'``,
    ``'criteria'``, ``'verify'``)."""

    n_chunks: int
    reads: dict[str, int] = field(default_factory=dict)

    def add(self, phase: str, n_chunks: int) -> None:
        self.reads[phase] = self.reads.get(phase, 0) + int(n_chunks)

    def passes(self) -> dict[str, float]:
        """Passes over the data by phase (chunk reads / number of chunks)."""
        return {phase: count / max(1, self.n_chunks) for phase, count in self.reads.items()}

    def run(self, chunks: RowChunks, parts: Sequence[PassPart], phase: str, *,
            split_every: int, meanwhile: Callable[[], Any] | None = None) -> list[Any]:
        """``chunks.map_reduce_many(parts)``, counted under ``phase`` (the later parts of
        the rows of a resident group of chunks read nothing anew)."""
        if chunks.rereads:
            self.add(phase, chunks.n_chunks)
        return chunks.map_reduce_many(parts, split_every=split_every, meanwhile=meanwhile)


class Companion(Protocol):
    """Work that shares batch EM's passes: starts that need a pass (their candidates
    join EM when ready), or statistics of candidates that have finished."""

    #: The phase its reads are counted under when a pass carries nothing else.
    phase: str

    def parts(self, candidates: Sequence[Candidate]) -> list[PassPart]:
        """What the next pass computes for it, given the candidates (empty: nothing
        now; EM ends when no candidate is running and no companion has parts)."""

    def receive(self, results: Sequence[Any]) -> list[Candidate]:
        """The results of its parts; returns candidates that join EM from the next
        pass."""


class DataCheck:
    """Recognising the data: chunk digests recorded in a fit's first pass, and checked
    against a checkpoint's in the first reads of a resumed fit, before any M-step uses
    them.

    Parameters
    ----------
    record : bool
        Digest the chunks (a checkpoint will need them).
    expected : str, optional
        The digest of all the chunks that a batch checkpoint recorded.
    chunks : dict, optional
        ``row_start -> digest`` of the chunks a stepwise checkpoint recorded (they
        are checked as they are read, and the others recorded).
    """

    def __init__(self, *, record: bool = False, expected: str | None = None,
                 chunks: dict[int, int] | None = None) -> None:
        self.record = record or expected is not None or chunks is not None
        self.expected = expected
        #: ``row_start -> digest`` (the dict given as ``chunks``, updated in place).
        self.known: dict[int, int] = {} if chunks is None else chunks
        self.checked: set[int] = set()
        self.digest: str | None = None

    @classmethod
    def of_survey(cls, digests: dict[int, int], bounds: Sequence[tuple[int, int]]
                  ) -> DataCheck:
        """The digests a survey pass just took of every chunk (nothing left to read)."""
        check = cls(record=True)
        check.take(digests, bounds)
        return check

    def wanted(self, bounds: Sequence[tuple[int, int]]) -> bool:
        """Whether the next read of these chunks must digest them."""
        if not self.record:
            return False
        return any(start not in self.checked for start, _ in bounds)

    def take(self, digests: dict[int, int], all_bounds: Sequence[tuple[int, int]]) -> None:
        """Record (and check) the digests of chunks just read; raises
        :class:`~daskgmm.errors.CheckpointError` on data that differ from a
        checkpoint's."""
        for start, value in digests.items():
            if self.known.get(start, value) != value:
                raise _other_data()
            self.known[start] = value
            self.checked.add(start)
        if self.digest is None and all(s in self.known for s, _ in all_bounds):
            self.digest = data_digest(self.known, all_bounds)
            if self.expected is not None and self.digest != self.expected:
                raise _other_data()


def _other_data() -> CheckpointError:
    return CheckpointError(
        "the checkpoint was written for other data: the data read now differ from the "
        "data of the interrupted fit (their digests differ). Resume with the original "
        "data, or delete the checkpoint to start afresh.")


class Algorithm(Protocol):
    """How often EM updates the parameters within a pass.

    The loop calls, for each pass: :meth:`walk` for the groups of chunks to read (with
    the work to do while each is read), :meth:`on_group` with every active candidate's
    fresh E-step statistics of each group (the algorithm runs the M-steps), and
    :meth:`end_pass` for each candidate's bound of the pass.
    """

    #: ``'batch'``, ``'incremental'``, ``'online'`` or ``'stream'``.
    name: str
    #: A pass is one read of all the chunks (companions can share it).
    whole_passes: bool
    #: The kind of pass observers are told about (``'em'`` or ``'group'``).
    pass_kind: str
    #: The E-steps also compute the responsibilities' entropy (for the bound).
    wants_entropy: bool
    #: Where the algorithm stands within a pass (saved with checkpoints), or None.
    state: Any

    def begin(self, chunks: RowChunks, candidates: Sequence[Candidate]) -> None:
        """Called once before the first pass (the candidates are all there)."""

    def walk(self, chunks: RowChunks, number: int
             ) -> Iterator[tuple[int, RowChunks, Callable[[], Any] | None]]:
        """The groups of pass ``number`` still to read: ``(position, chunks,
        meanwhile)``."""

    def on_group(self, active: Sequence[Candidate], stats: Sequence[Stats],
                 position: int) -> None:
        """Update the active candidates from a group's statistics."""

    def end_pass(self, active: Sequence[Candidate]) -> list[float]:
        """The bound of the pass for each active candidate."""


class Batch:
    """Batch EM: the whole data per M-step (scikit-learn's algorithm)."""

    name = "batch"
    whole_passes = True
    pass_kind = "em"
    wants_entropy = False
    state = None

    def __init__(self) -> None:
        self._bounds: list[float] = []

    def begin(self, chunks: RowChunks, candidates: Sequence[Candidate]) -> None:
        pass

    def walk(self, chunks: RowChunks, number: int
             ) -> Iterator[tuple[int, RowChunks, Callable[[], Any] | None]]:
        yield 0, chunks, None

    def on_group(self, active: Sequence[Candidate], stats: Sequence[Stats],
                 position: int) -> None:
        self._bounds = []
        for cand, st in zip(active, stats, strict=True):
            cand.state = cand.model.m_step(st, cand.centre, cand.state)
            self._bounds.append(float(cand.model.lower_bound(st, cand.state)))

    def end_pass(self, active: Sequence[Candidate]) -> list[float]:
        return self._bounds


def run_em(chunks: RowChunks, candidates: list[Candidate], options: EMOptions,
           algorithm: Algorithm | None = None, *, start_iteration: int = 0,
           check: DataCheck | None = None,
           callback: Callable[[IterationInfo], None] | None = None,
           companions: Sequence[Companion] = (), reads: ReadLog | None = None) -> None:
    """Run EM on every active candidate until each converges or has run ``max_iter``
    iterations (passes).

    The candidates are updated in place; candidates that companions start are appended
    to ``candidates``.

    Parameters
    ----------
    chunks : RowChunks
        The data (and sample weights).
    candidates : list of Candidate
    options : EMOptions
    algorithm : Algorithm, default Batch()
    start_iteration : int
        Passes already done (a resumed fit).
    check : DataCheck, optional
        Digests to record or check in the first reads of each chunk.
    callback : callable, optional
        Called with an :class:`IterationInfo` after every pass (before observers) and,
        for algorithms that step within a pass, after every step but a pass's last.
    companions : sequence of Companion
        Work done in the same reads as batch EM's E-steps. A pass with no E-step (only
        companions' parts) is not an iteration: observers and ``callback`` hear of EM
        iterations only.
    reads : ReadLog, optional
        Counts the chunk reads.
    """
    algorithm = Batch() if algorithm is None else algorithm
    check = DataCheck() if check is None else check
    reads = ReadLog(chunks.n_chunks) if reads is None else reads
    kernel = options.kernel
    iteration = start_iteration
    algorithm.begin(chunks, candidates)
    while True:
        active = [c for c in candidates if c.active and c.n_iter < options.max_iter]
        extra = [(comp, comp.parts(candidates)) for comp in companions]
        extra = [(comp, parts) for comp, parts in extra if parts]
        if not active and not extra:
            break
        if not active:  # only the companions' work: not an iteration
            parts = [p for _, more in extra for p in more]
            results = reads.run(chunks, parts, extra[0][0].phase,
                                split_every=options.split_every)
            candidates.extend(_receive(extra, results, 0))
            continue
        t0 = time.perf_counter()
        number = iteration + 1
        joining: list[Candidate] = []
        entropy = algorithm.wants_entropy or any(c.model.wants_entropy for c in active)
        for position, group, meanwhile in algorithm.walk(chunks, number):
            plan = kernel.make_plan([c.model.components(c.state) for c in active],
                                    [c.centre for c in active], dtype=options.dtype,
                                    entropy=entropy, digest=check.wanted(group.row_bounds))
            parts = [PassPart(kernel.statistics, (plan,), kind=algorithm.pass_kind)]
            if algorithm.whole_passes:
                parts.extend(p for _, more in extra for p in more)
            results = reads.run(group, parts, "em", split_every=options.split_every,
                                meanwhile=meanwhile)
            if plan.digest:
                check.take(results[0].digests, chunks.row_bounds)
            algorithm.on_group(active, results[0].stats, position)
            if algorithm.whole_passes:
                joining = _receive(extra, results, 1)
            else:
                more = algorithm.state.position < algorithm.n_groups
                if more and callback is not None:
                    callback(IterationInfo(iteration, options.max_iter, list(candidates),
                                           time.perf_counter() - t0, check.digest,
                                           stepwise=algorithm.state))
                observers.notify("update_finished", number, algorithm.state.position,
                                 algorithm.n_groups)
        bounds = algorithm.end_pass(active)
        for cand, bound in zip(active, bounds, strict=True):
            previous = cand.lower_bound
            cand.lower_bound = bound
            cand.lower_bounds.append(bound)
            cand.n_iter += 1
            if abs(bound - previous) < options.tol:
                cand.converged = True
                cand.active = False
        iteration = number
        candidates.extend(joining)
        seconds = time.perf_counter() - t0
        for cand in active:
            cand.seconds += seconds / len(active)
        info = IterationInfo(iteration, options.max_iter, list(candidates), seconds,
                             check.digest, stepwise=algorithm.state,
                             updated=[c.index for c in active])
        if callback is not None:
            callback(info)
        observers.notify("iteration_finished", info)


def _receive(extra: Sequence[tuple[Companion, list[PassPart]]], results: Sequence[Any],
             position: int) -> list[Candidate]:
    joining: list[Candidate] = []
    for comp, more in extra:
        joining.extend(comp.receive(results[position : position + len(more)]))
        position += len(more)
    return joining


def mark_degenerate(candidates: Sequence[Candidate], n_samples: float) -> None:
    """Record every candidate's degenerate components (:mod:`daskgmm.engine.degeneracy`)."""
    for cand in candidates:
        cand.degenerate = degenerate_components(cand.model, cand.state, n_samples)


def best_candidate(candidates: Sequence[Candidate], max_iter: int) -> Candidate:
    """scikit-learn's choice among restarts: the first with the highest final lower
    bound (the last one when ``max_iter == 0``), except that a restart with a degenerate
    component (:attr:`Candidate.degenerate`) loses to any restart without one."""
    if max_iter == 0:
        return candidates[-1]
    sound = [c for c in candidates if not c.degenerate] or list(candidates)
    best: Candidate | None = None
    for cand in sound:
        if (best is None or cand.lower_bound > best.lower_bound
                or best.lower_bound == -math.inf):
            best = cand
    assert best is not None
    return best
