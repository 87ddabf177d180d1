"""EM in steps smaller than a pass: incremental EM and online (stochastic) EM.

Both walk the chunks in *groups* of ``batch_chunks`` chunks (by default one per worker
thread, so a group is one parallel step), in an order shuffled every pass, and run an
M-step after every group instead of after every pass; ``max_iter`` still counts passes
over the data and ``tol`` applies per pass.

Incremental EM (Neal and Hinton, "A view of the EM algorithm that justifies incremental,
sparse, and other variants", 1998)
    In the first pass each group's statistics are kept and added to the totals, and the
    parameters already improve group by group instead of once at the pass's end: after
    group ``t`` (from 0) an M-step runs on running per-sample statistics scaled to the
    whole data, ``s <- (1 - γ_t) s + γ_t s_group / n_group`` with polynomial-decay
    weights ``γ_t = (η + 1) / (t + η + 1)``, ``η =`` :data:`FIRST_PASS_DECAY` (Shamir and
    Zhang, "Stochastic gradient descent for non-smooth optimization: convergence results
    and optimal averaging schemes", ICML 2013): group ``t`` weighs ``∝ t^η``, so the
    statistics of the first groups, computed with the parameters furthest from the
    answer, count less than with a plain average (step ``1/(t + 1)``) while the later
    parameters still rest on a large share of the pass. (On the 2M x 16, K=8 benchmark
    the model after one pass is within 5e-4 of batch EM's final mean log-likelihood with
    ``η = 3``, 1.2e-3 with the plain average.) The pass ends with an M-step on the plain
    totals of all the groups, so from then on, each
    group's fresh statistics replace its old ones in the totals, followed by an M-step
    on the totals. From the end of the first pass, every step increases the free energy
    ``F(q, θ) = E_q[log p(x, z | θ)] + H(q)`` of the responsibilities held, a lower
    bound of the log-likelihood that equals it when the responsibilities are the
    posterior. The bound reported per pass is ``F / n`` after the pass's last M-step
    (for the Bayesian mixture, its variational bound, which is computed the same way in
    batch EM), so it never decreases. The group statistics are held on the driver:
    ``n_groups x n_candidates x K (D² + D + 1) x 8`` bytes (about 3.4 MiB for 100 groups of
    one 'full' mixture with K=8, D=16); a fit that would need more than
    :data:`GROUP_STATS_BUDGET` is refused with advice.
Online EM (Cappé and Moulines, "On-line expectation-maximization algorithm for latent data
models", 2009)
    Running per-sample statistics ``s <- (1 - γ_t) s + γ_t s_group / n_group`` with
    ``γ_t = (t + learning_offset) ** -learning_decay`` (``γ_0 = 1``), and an M-step on
    ``n s`` after every group. The bound reported per pass is an estimate from the
    fresh statistics: the mean log-likelihood of the pass's groups, each under the
    parameters it was read with (the variational bound of the running statistics for the
    Bayesian mixture).

On a distributed cluster the next group's chunks are read right after a group's E-step
(:meth:`~daskgmm.engine.passes.RowChunks.prefetch`), while the driver runs the M-step,
and a group's E-step is one task per
chunk, next to its data, reduced on the driver: one scheduler round trip per step instead
of a graph of reads, tasks and combines (the same numbers). The round trip remains: with
small chunks a pass costs more than a pass of batch EM (see the README's figures).

Statistics of different steps are added in a frame that does not depend on the
parameters: second moments about the candidate's centre, unwhitened
(:meth:`daskgmm.engine.covariance.CovarianceType.canonical`).
"""

from __future__ import annotations

import functools
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daskgmm.diagnostics import observers
from daskgmm.engine.estep import estep_statistics, make_plan
from daskgmm.engine.initialize import Reference
from daskgmm.engine.passes import RowChunks, active_client, worker_slots
from daskgmm.engine.stats import Stats, add, scale, subtract
from daskgmm.errors import InvalidParameterError

#: ``η`` of the first pass of incremental EM: group ``t`` of the pass weighs ``∝ t^η`` in
#: the statistics of the M-steps during the pass.
FIRST_PASS_DECAY = 3

#: Largest driver memory the group statistics of incremental EM may take (bytes).
GROUP_STATS_BUDGET = 1 << 30
ALGORITHMS = ("batch", "incremental", "online")


@dataclass
class StepwiseOptions:
    """How a stepwise fit walks the data."""

    algorithm: str
    batch_chunks: int
    learning_decay: float = 0.7
    learning_offset: float = 10.0
    seed: int = 0


@dataclass
class StepwiseState:
    """Where a stepwise fit stands (all of it goes into checkpoints).

    ``totals``, ``groups`` (incremental) and ``running`` (online, and incremental EM's
    first pass) are per candidate;
    ``pass_ll``/``pass_n`` accumulate the online bound's estimate over the current pass.
    """

    passes: int = 0
    position: int = 0
    order: list[int] = field(default_factory=list)
    updates: int = 0
    batch_chunks: int = 0
    seed: int = 0
    totals: list[Stats | None] = field(default_factory=list)
    groups: list[list[Stats | None]] = field(default_factory=list)
    running: list[Stats | None] = field(default_factory=list)
    pass_ll: list[float] = field(default_factory=list)
    pass_n: list[float] = field(default_factory=list)
    #: Chunk digests (row start -> CRC-32) taken in the first pass when checkpointing.
    digests: dict[int, int] = field(default_factory=dict)


def default_batch_chunks() -> int:
    """One chunk per worker thread of the active scheduler (the cores, in-process)."""
    client = active_client()
    if client is not None:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        threads = sum(int(w.get("nthreads") or 0) for w in workers)
        if threads > 0:
            return threads
    return os.cpu_count() or 1


def partition(n_chunks: int, batch_chunks: int) -> list[list[int]]:
    """The groups: runs of ``batch_chunks`` consecutive chunks."""
    return [list(range(a, min(n_chunks, a + batch_chunks)))
            for a in range(0, n_chunks, batch_chunks)]


def canonical_statistics(stats: Stats, candidate: Any) -> Stats:
    """A candidate's E-step statistics in the parameter-free frame."""
    state, centre = candidate.state, candidate.centre
    out = dict(stats)
    out["s2"] = candidate.model.covariance.canonical(
        stats["s2"], stats["nk"], stats["sx"], centre, np.asarray(state.means),
        state.covariances_cholesky)
    return out


def m_step_canonical(candidate: Any, stats: Stats) -> None:
    """The candidate's M-step on canonical statistics (about its centre, unwhitened)."""
    reference = Reference(np.tile(candidate.centre, (candidate.model.n_components, 1)))
    candidate.state = candidate.model.m_step(stats, candidate.centre, reference)


def _bound(candidate: Any, totals: Stats) -> float:
    """The per-pass bound of canonical totals and the candidate's current state."""
    model = candidate.model
    if hasattr(model, "free_energy"):
        return float(model.free_energy(totals, candidate.centre, candidate.state))
    return float(model.lower_bound(totals, candidate.state))


def online_step(running: Stats | None, fresh: Stats, updates: int, decay: float,
                offset: float) -> Stats:
    """One online update of per-sample running statistics with a group's canonical
    statistics (``γ_0 = 1``: the first group replaces them)."""
    per_sample = scale(fresh, 1.0 / float(fresh["n"]))
    step = gamma(updates, decay, offset)
    if running is None or step == 1.0:
        return per_sample
    return add(scale(running, 1.0 - step), scale(per_sample, step))


def first_pass_step(running: Stats | None, fresh: Stats, position: int) -> Stats:
    """Incremental EM's first-pass running per-sample statistics after the group at
    ``position`` of the pass (step ``(η + 1) / (position + η + 1)``, the first group
    replaces them)."""
    if not float(fresh["n"]) > 0:  # a group without weight changes nothing
        return running
    per_sample = scale(fresh, 1.0 / float(fresh["n"]))
    if running is None:
        return per_sample
    step = (FIRST_PASS_DECAY + 1) / (position + FIRST_PASS_DECAY + 1)
    return add(scale(running, 1.0 - step), scale(per_sample, step))


def check_budget(n_groups: int, candidates: list[Any], n_features: int) -> None:
    """Refuse incremental EM whose group statistics would not fit the budget."""
    size = sum(c.model.n_components * (n_features**2 + n_features + 1)
               for c in candidates) * 8 * n_groups
    if size > GROUP_STATS_BUDGET:
        raise InvalidParameterError(
            f"incremental EM would hold {size / 2**20:,.0f} MiB of group statistics on the "
            f"driver ({n_groups} groups of chunks), more than the "
            f"{GROUP_STATS_BUDGET / 2**20:,.0f} MiB allowed: use a larger batch_chunks "
            "(fewer groups), larger chunks, or algorithm='online'."
        )


def run_stepwise(chunks: RowChunks, candidates: list[Any], options: Any,
                 stepwise: StepwiseOptions, *, state: StepwiseState | None = None,
                 callback: Any = None, total_weight: float,
                 record_digests: bool = False) -> StepwiseState:
    """Run incremental or online EM on the candidates (updated in place).

    Parameters
    ----------
    chunks : RowChunks
    candidates : list of Candidate
    options : EMOptions
        ``max_iter`` (passes), ``tol`` (per pass), ``split_every``, ``dtype``.
    stepwise : StepwiseOptions
    state : StepwiseState, optional
        Where a resumed fit stands.
    callback : callable, optional
        Called after every group update with an
        :class:`~daskgmm.engine.em.IterationInfo` whose ``stepwise`` is the state.
    total_weight : float
        The data's total sample weight (rows without weights).
    record_digests : bool
        Digest every chunk read in the first pass (for checkpoints).
    """
    from daskgmm.engine.em import IterationInfo

    groups = partition(chunks.n_chunks, stepwise.batch_chunks)
    if state is None:
        C = len(candidates)
        state = StepwiseState(batch_chunks=stepwise.batch_chunks, seed=stepwise.seed,
                              totals=[None] * C,
                              groups=[[None] * len(groups) for _ in range(C)],
                              running=[None] * C, pass_ll=[0.0] * C, pass_n=[0.0] * C)
    if stepwise.algorithm == "incremental":
        check_budget(len(groups), candidates, chunks.shape[1])
    incremental = stepwise.algorithm == "incremental"
    while state.passes < options.max_iter:
        active = [i for i, c in enumerate(candidates) if c.active]
        if not active:
            break
        number = state.passes + 1
        if state.position == 0:
            state.order = [int(g) for g in
                           np.random.default_rng([stepwise.seed, number]).permutation(
                               len(groups))]
        t0 = time.perf_counter()
        ahead: list[RowChunks] = []
        slots = worker_slots()  # where each group's chunks are read, once per pass
        while state.position < len(groups):
            g = state.order[state.position]
            current = ahead.pop() if ahead else chunks.prefetch(groups[g], slots)
            # The next group's chunks are read after this group's E-step.
            read_ahead = (None if state.position + 1 == len(groups) else functools.partial(
                _read_ahead, ahead, chunks, groups[state.order[state.position + 1]], slots))
            plan = make_plan([candidates[i].model.components(candidates[i].state)
                              for i in active],
                             [candidates[i].centre for i in active], dtype=options.dtype,
                             entropy=True, digest=record_digests and state.passes == 0)
            result = current.map_reduce(
                estep_statistics, plan, split_every=options.split_every, kind="group",
                meanwhile=read_ahead)
            state.digests.update(result.digests)
            first_pass = incremental and state.passes == 0
            for i, fresh in zip(active, result.stats, strict=True):
                cand = candidates[i]
                canon = canonical_statistics(fresh, cand)
                state.pass_ll[i] += float(fresh["ll"])
                state.pass_n[i] += float(fresh["n"])
                if incremental:
                    old = state.groups[i][g]
                    state.groups[i][g] = canon
                    total = state.totals[i]
                    total = canon if total is None else (
                        add(total, canon) if old is None else add(subtract(total, old), canon))
                    state.totals[i] = total
                    if not first_pass:
                        m_step_canonical(cand, total)
                    else:
                        state.running[i] = first_pass_step(state.running[i], canon,
                                                           state.position)
                        if state.running[i] is not None:
                            m_step_canonical(cand, scale(state.running[i], total_weight))
                else:
                    state.running[i] = online_step(state.running[i], canon, state.updates,
                                                   stepwise.learning_decay,
                                                   stepwise.learning_offset)
                    m_step_canonical(cand, scale(state.running[i], total_weight))
            state.updates += 1
            state.position += 1
            if callback is not None and state.position < len(groups):
                callback(IterationInfo(state.passes, options.max_iter, list(candidates),
                                       time.perf_counter() - t0, stepwise=state))
            observers.notify("update_finished", number, state.position, len(groups))
        # The pass is complete.
        for i in active:
            cand = candidates[i]
            if incremental:
                # Re-add the groups (no drift from a pass of additions and subtractions).
                total = add(*state.groups[i])
                state.totals[i] = total
                if state.passes == 0:
                    m_step_canonical(cand, total)
                    state.running[i] = None  # only the first pass uses it
                bound = _bound(cand, total)
            elif hasattr(cand.model, "free_energy"):
                bound = state.pass_ll[i] / state.pass_n[i]
            else:
                bound = _bound(cand, scale(state.running[i], total_weight))
            previous = cand.lower_bound
            cand.lower_bound = bound
            cand.lower_bounds.append(bound)
            cand.n_iter = number
            if abs(bound - previous) < options.tol:
                cand.converged = True
                cand.active = False
            state.pass_ll[i], state.pass_n[i] = 0.0, 0.0
        state.passes = number
        state.position = 0
        seconds = time.perf_counter() - t0
        for i in active:
            candidates[i].seconds += seconds / len(active)
        info = IterationInfo(number, options.max_iter, list(candidates), seconds,
                             stepwise=state)
        if callback is not None:
            callback(info)
        observers.notify("iteration_finished", info)
    return state


def _read_ahead(into: list[RowChunks], chunks: RowChunks, indices: list[int],
                slots: list[str]) -> None:
    into.append(chunks.prefetch(indices, slots))


def total_weight_of(chunks: RowChunks) -> float:
    """The data's total sample weight (the row count without weights)."""
    weight = chunks.total_weight
    return float(chunks.shape[0]) if weight is None else weight


def gamma(updates: int, decay: float, offset: float) -> float:
    """The online step size of update ``updates`` (``γ_0 = 1``)."""
    return 1.0 if updates == 0 else math.pow(updates + offset, -decay)
