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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daskgmm.engine.passes import RowChunks, active_client, worker_slots
from daskgmm.engine.starts import Reference
from daskgmm.engine.stats import Stats, add, scale, subtract
from daskgmm.errors import CheckpointError, InvalidParameterError

#: ``η`` of the first pass of incremental EM: group ``t`` of the pass weighs ``∝ t^η`` in
#: the statistics of the M-steps during the pass.
FIRST_PASS_DECAY = 3

#: Online EM steps about this many times per pass (see :class:`Online`).
ONLINE_STEPS_PER_PASS = 100
#: Fewest rows in a step of online EM.
ONLINE_MIN_STEP_ROWS = 1000

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
    statistics (``γ_0 = 1``: the first group replaces them); statistics of no weight
    change nothing."""
    if not float(fresh["n"]) > 0:
        return running
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


def check_budget(n_groups: int, candidates: Sequence[Any], n_features: int) -> None:
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


class _Stepwise:
    """What incremental and online EM share: groups of chunks in a shuffled order per
    pass, read ahead on a cluster, and the state they save with checkpoints."""

    whole_passes = False
    pass_kind = "group"
    wants_entropy = True
    name = ""

    def __init__(self, options: StepwiseOptions, total_weight: float,
                 state: StepwiseState | None = None) -> None:
        self.options = options
        self.total_weight = float(total_weight)
        self.state = state
        self._groups: list[list[int]] = []
        self._steps: list[int] = []
        self._number = 0

    @property
    def n_groups(self) -> int:
        """Steps in a pass."""
        return sum(self._steps)

    def _partition(self, chunks: RowChunks, candidates: Sequence[Any]) -> list[list[int]]:
        """The groups of chunks, and :attr:`_steps`: the steps each is read in."""
        groups = partition(chunks.n_chunks, self.options.batch_chunks)
        self._steps = [1] * len(groups)
        return groups

    def begin(self, chunks: RowChunks, candidates: Sequence[Any]) -> None:
        self._groups = self._partition(chunks, candidates)
        if self.state is not None:
            state, n_groups = self.state, len(self._groups)
            if ((state.position > 0 and sorted(state.order) != list(range(n_groups)))
                    or any(len(row) != n_groups for row in state.groups)
                    or state.position > self.n_groups):
                raise CheckpointError(
                    "the checkpoint is damaged (its groups do not match the data's "
                    "chunks); delete it to start afresh.")
        if self.state is None:
            C = len(candidates)
            self.state = StepwiseState(
                batch_chunks=self.options.batch_chunks, seed=self.options.seed,
                totals=[None] * C, groups=[[None] * len(self._groups) for _ in range(C)],
                running=[None] * C, pass_ll=[0.0] * C, pass_n=[0.0] * C)

    def walk(self, chunks: RowChunks, number: int) -> Iterator[tuple[int, RowChunks, Any]]:
        """The steps of pass ``number`` from where the pass stands: the groups in an
        order shuffled per pass, each read once (ahead, during the previous group's
        last step) and stepped through in :attr:`_steps` parts of its rows."""
        state = self.state
        self._number = number
        if state.position == 0:
            state.order = [int(g) for g in np.random.default_rng(
                [self.options.seed, number]).permutation(len(self._groups))]
        load = self._loader(chunks)
        slots = worker_slots()  # where each group's chunks are read, once per pass
        ahead: list[RowChunks] = []
        position = 0
        for k, g in enumerate(state.order):
            m = self._steps[g]
            if position + m <= state.position:
                position += m
                continue
            group = ahead.pop() if ahead else load(self._groups[g], slots)
            first = True
            for j in range(m):
                if position < state.position:
                    position += 1
                    continue
                read_ahead = (functools.partial(
                    _read_ahead, ahead, load, self._groups[state.order[k + 1]], slots)
                    if j == m - 1 and k + 1 < len(state.order) else None)
                yield position, group.rows_part(j, m, first=first), read_ahead
                first = False
                position += 1

    def _loader(self, chunks: RowChunks) -> Any:
        """How a group's chunks are read: ahead on a cluster, else when used."""
        return chunks.prefetch

    def on_group(self, active: Sequence[Any], stats: Sequence[Stats], position: int
                 ) -> None:
        state = self.state
        for cand, fresh in zip(active, stats, strict=True):
            i = cand.index
            state.pass_ll[i] += float(fresh["ll"])
            state.pass_n[i] += float(fresh["n"])
            self._step(cand, canonical_statistics(fresh, cand), position)
        state.updates += 1
        state.position += 1

    def end_pass(self, active: Sequence[Any]) -> list[float]:
        state = self.state
        bounds = [self._bound_of_pass(cand) for cand in active]
        for cand in active:
            state.pass_ll[cand.index], state.pass_n[cand.index] = 0.0, 0.0
        state.passes = self._number
        state.position = 0
        return bounds

    def _step(self, cand: Any, canon: Stats, position: int) -> None:
        raise NotImplementedError

    def _bound_of_pass(self, cand: Any) -> float:
        raise NotImplementedError


class Incremental(_Stepwise):
    """Incremental EM (see the module docstring): every group's statistics are kept;
    a group's fresh statistics replace its old ones in the totals, then an M-step."""

    name = "incremental"

    def begin(self, chunks: RowChunks, candidates: Sequence[Any]) -> None:
        super().begin(chunks, candidates)
        check_budget(len(self._groups), candidates, chunks.shape[1])

    def _step(self, cand: Any, canon: Stats, position: int) -> None:
        state, i = self.state, cand.index
        group = state.order[position]
        old = state.groups[i][group]
        state.groups[i][group] = canon
        total = state.totals[i]
        total = canon if total is None else (
            add(total, canon) if old is None else add(subtract(total, old), canon))
        state.totals[i] = total
        if state.passes > 0:
            m_step_canonical(cand, total)
            return
        state.running[i] = first_pass_step(state.running[i], canon, position)
        if state.running[i] is not None:
            m_step_canonical(cand, scale(state.running[i], self.total_weight))

    def _bound_of_pass(self, cand: Any) -> float:
        state, i = self.state, cand.index
        # Re-add the groups (no drift from a pass of additions and subtractions).
        total = add(*state.groups[i])
        state.totals[i] = total
        if state.passes == 0:
            m_step_canonical(cand, total)
            state.running[i] = None  # only the first pass uses it
        return _bound(cand, total)


class Online(_Stepwise):
    """Online EM (see the module docstring): running per-sample statistics and an
    M-step after every mini-batch.

    A group of ``batch_chunks`` chunks is read once and held in memory (on the workers
    on a cluster) while EM steps through it in mini-batches: each step takes the same
    share of the rows of every chunk of the group, about ``n /``
    :data:`ONLINE_STEPS_PER_PASS` rows in all (at least :data:`ONLINE_MIN_STEP_ROWS`,
    and ten rows per parameter of a component), so the number of steps per pass, and
    the schedule of step sizes, depend on the data's size and not on how the store is
    chunked.
    """

    name = "online"

    def _partition(self, chunks: RowChunks, candidates: Sequence[Any]) -> list[list[int]]:
        """Runs of at least ``batch_chunks`` consecutive chunks holding at least a step's
        rows each, and the number of steps of each."""
        n, D = chunks.shape
        K = max(c.model.n_components for c in candidates)
        step = max(ONLINE_MIN_STEP_ROWS, 10 * K * (D + 1),
                   math.ceil(n / ONLINE_STEPS_PER_PASS))
        sizes = [b - a for a, b in chunks.row_bounds]
        groups: list[list[int]] = []
        current: list[int] = []
        for i in range(len(sizes)):
            current.append(i)
            if (len(current) >= self.options.batch_chunks
                    and sum(sizes[j] for j in current) >= step):
                groups.append(current)
                current = []
        if current:
            if groups and sum(sizes[j] for j in current) < step:
                groups[-1].extend(current)
            else:
                groups.append(current)
        # Steps by cumulative rounding: round(n / step) in all, at least one per group.
        self._steps = []
        done = 0
        for g in groups:
            rows = sum(sizes[j] for j in g)
            count = round((done + rows) / step) - round(done / step)
            self._steps.append(max(1, min(count, min(sizes[j] for j in g))))
            done += rows
        return groups

    def _loader(self, chunks: RowChunks) -> Any:
        return chunks.resident  # held in memory while EM steps through its rows

    def _step(self, cand: Any, canon: Stats, position: int) -> None:
        state, i = self.state, cand.index
        if not float(canon["n"]) > 0:  # a mini-batch of zero weight changes nothing
            return
        state.running[i] = online_step(state.running[i], canon, state.updates,
                                       self.options.learning_decay,
                                       self.options.learning_offset)
        m_step_canonical(cand, scale(state.running[i], self.total_weight))

    def _bound_of_pass(self, cand: Any) -> float:
        state, i = self.state, cand.index
        if hasattr(cand.model, "free_energy"):
            return state.pass_ll[i] / state.pass_n[i]
        return _bound(cand, scale(state.running[i], self.total_weight))


@dataclass
class StreamState:
    """Where a stream of ``partial_fit`` batches stands: running per-sample statistics,
    the updates so far and the total weight seen."""

    running: Stats | None = None
    updates: int = 0
    weight: float = 0.0


class Stream:
    """``partial_fit``: one online step on each batch given (the whole batch is one
    group), with step ``(t + learning_offset) ** -learning_decay`` and an M-step on the
    running statistics scaled to the total weight seen so far."""

    name = "stream"
    whole_passes = True
    pass_kind = "group"
    wants_entropy = True
    state = None

    def __init__(self, stream: StreamState, learning_decay: float, learning_offset: float
                 ) -> None:
        self.stream = stream
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self._bounds: list[float] = []

    def begin(self, chunks: RowChunks, candidates: Sequence[Any]) -> None:
        pass

    def walk(self, chunks: RowChunks, number: int) -> Iterator[tuple[int, RowChunks, Any]]:
        yield 0, chunks, None

    def on_group(self, active: Sequence[Any], stats: Sequence[Stats], position: int
                 ) -> None:
        (cand,), (fresh,) = active, stats
        stream = self.stream
        stream.running = online_step(stream.running, canonical_statistics(fresh, cand),
                                     stream.updates, self.learning_decay,
                                     self.learning_offset)
        stream.updates += 1
        stream.weight += float(fresh["n"])
        if stream.running is not None:
            m_step_canonical(cand, scale(stream.running, stream.weight))
        n = float(fresh["n"])
        self._bounds = [float(fresh["ll"]) / n if n > 0 else cand.lower_bound]

    def end_pass(self, active: Sequence[Any]) -> list[float]:
        return self._bounds


def _read_ahead(into: list[RowChunks], load: Any, indices: list[int], slots: list[str]
                ) -> None:
    into.append(load(indices, slots))


def total_weight_of(chunks: RowChunks) -> float:
    """The data's total sample weight (the row count without weights)."""
    weight = chunks.total_weight
    return float(chunks.shape[0]) if weight is None else weight


def gamma(updates: int, decay: float, offset: float) -> float:
    """The online step size of update ``updates`` (``γ_0 = 1``)."""
    return 1.0 if updates == 0 else math.pow(updates + offset, -decay)
