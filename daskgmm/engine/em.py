"""The EM driver: one pass over the chunks per iteration, the M-steps on the driver.

The driver knows statistics, M-steps and lower bounds only through the model of each
candidate (:class:`MixtureModel`). It advances every candidate in lock-step, so one read
of each chunk serves all the candidates still running, whatever their number of
components, covariance type or model (restarts of one estimator, or the models of a
selection sweep), and applies scikit-learn's rules: a candidate stops when its lower bound
changes by less than ``tol``; the best of several restarts is the first with the highest
final lower bound.

Other work can share EM's reads (:class:`Companion`): a selection sweep's candidates still
in their k-means initialisation, which join EM when ready, and the criteria of candidates
that have finished. Each candidate counts its own iterations, so one that joined late
still runs up to ``max_iter`` of them.

Checkpoints, progress and reports are observers (:mod:`daskgmm.diagnostics.observers`);
the driver only tells them what happened.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from daskgmm.diagnostics import observers
from daskgmm.engine.covariance import CovarianceType
from daskgmm.engine.estep import Components, estep_statistics, make_plan
from daskgmm.engine.passes import PassPart, RowChunks
from daskgmm.engine.stats import Stats, data_digest
from daskgmm.errors import CheckpointError


class MixtureModel(Protocol):
    """What the EM driver needs from the model of one candidate.

    ``state`` is the model's own parameter object (immutable); the driver only passes it
    back to the model.
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
    #: The digest of the data, once the pass that computes it has run (else None).
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


@dataclass
class EMOptions:
    """Settings of the EM loop (scikit-learn's meanings, plus ours)."""

    tol: float
    max_iter: int
    split_every: int = 8
    dtype: str = "float64"


class Companion(Protocol):
    """Work that shares EM's passes: candidates still initialising (they join EM when
    ready), or statistics of candidates that have finished."""

    def parts(self, candidates: Sequence[Candidate]) -> list[PassPart]:
        """What the next pass computes for it, given the candidates (empty: nothing
        now; EM ends when no candidate is running and no companion has parts)."""

    def receive(self, results: Sequence[Any]) -> list[Candidate]:
        """The results of its parts; returns candidates that join EM from the next
        pass."""


def run_em(chunks: RowChunks, candidates: list[Candidate], options: EMOptions, *,
           start_iteration: int = 0,
           expected_digest: str | None = None, record_digest: bool = False,
           callback: Callable[[IterationInfo], None] | None = None,
           companions: Sequence[Companion] = ()) -> str | None:
    """Run EM on every active candidate until each converges or has run ``max_iter``
    iterations.

    The candidates are updated in place; candidates that companions start are appended
    to ``candidates``.

    Parameters
    ----------
    chunks : RowChunks
        The data (and sample weights).
    candidates : list of Candidate
    options : EMOptions
    start_iteration : int
        Iterations already done (a resumed fit).
    expected_digest : str, optional
        The data digest a checkpoint recorded: the first pass digests the chunks it reads
        and refuses other data (:class:`~daskgmm.errors.CheckpointError`) before any
        M-step.
    record_digest : bool
        Digest the chunks in the first pass (and return the digest).
    callback : callable, optional
        Called with an :class:`IterationInfo` after every iteration (before observers).
    companions : sequence of Companion
        Work done in the same reads as the E-steps (:class:`Companion`). A pass with
        no E-step (only companions' parts) is not an iteration: observers and
        ``callback`` hear of EM iterations only.

    Returns
    -------
    str or None
        The data digest, when one was computed.
    """
    digest = None
    want_digest = record_digest or expected_digest is not None
    iteration = start_iteration
    while True:
        active = [c for c in candidates if c.active and c.n_iter < options.max_iter]
        extra = [(comp, comp.parts(candidates)) for comp in companions]
        extra = [(comp, parts) for comp, parts in extra if parts]
        if not active and not extra:
            break
        t0 = time.perf_counter()
        parts: list[PassPart] = []
        plan = None
        if active:
            entropy = any(c.model.wants_entropy for c in active)
            plan = make_plan([c.model.components(c.state) for c in active],
                             [c.centre for c in active],
                             dtype=options.dtype, entropy=entropy,
                             digest=want_digest and digest is None)
            parts.append(PassPart(estep_statistics, (plan,), kind="em"))
        for _, more in extra:
            parts.extend(more)
        results = chunks.map_reduce_many(parts, split_every=options.split_every)
        if plan is not None and plan.digest:
            digest = data_digest(results[0].digests, chunks.row_bounds)
            if expected_digest is not None and digest != expected_digest:
                raise CheckpointError(
                    "the checkpoint was written for other data: the data read now differ "
                    "from the data of the interrupted fit (their digests differ). Resume "
                    "with the original data, or delete the checkpoint to start afresh."
                )
        joining: list[Candidate] = []
        position = 1 if active else 0
        for comp, more in extra:
            joining.extend(comp.receive(results[position : position + len(more)]))
            position += len(more)
        if plan is not None:
            iteration += 1
            _update(active, results[0].stats, options.tol)
        candidates.extend(joining)
        if plan is None:
            continue
        seconds = time.perf_counter() - t0
        for cand in active:
            cand.seconds += seconds / len(active)
        info = IterationInfo(iteration, options.max_iter, list(candidates), seconds,
                             digest, updated=[c.index for c in active])
        if callback is not None:
            callback(info)
        observers.notify("iteration_finished", info)
    return digest


def _update(active: Sequence[Candidate], stats: Sequence[Stats], tol: float) -> None:
    """Every candidate's M-step, lower bound and convergence after an E-step."""
    for cand, st in zip(active, stats, strict=True):
        previous = cand.lower_bound
        cand.state = cand.model.m_step(st, cand.centre, cand.state)
        cand.lower_bound = float(cand.model.lower_bound(st, cand.state))
        cand.lower_bounds.append(cand.lower_bound)
        cand.n_iter += 1
        if abs(cand.lower_bound - previous) < tol:
            cand.converged = True
            cand.active = False


def best_candidate(candidates: Sequence[Candidate], max_iter: int) -> Candidate:
    """scikit-learn's choice among restarts: the first with the highest final lower
    bound (the last one when ``max_iter == 0``)."""
    if max_iter == 0:
        return candidates[-1]
    best: Candidate | None = None
    for cand in candidates:
        if (best is None or cand.lower_bound > best.lower_bound
                or best.lower_bound == -math.inf):
            best = cand
    assert best is not None
    return best
