"""The EM driver: one pass over the chunks per iteration, the M-step on the driver.

The driver knows nothing about the estimator. It runs every restart in lock-step, so
one read of each chunk serves all restarts still running, and applies scikit-learn's
rules: the lower bound is the mean per-sample log-likelihood under the parameters the
E-step used, a restart stops when it changes by less than ``tol``, and the best restart
is the first with the highest final lower bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from daskgmm.diagnostics import observers
from daskgmm.engine.kernels import estep_statistics
from daskgmm.engine.mstep import m_step
from daskgmm.engine.params import MixtureParams
from daskgmm.engine.passes import RowChunks


@dataclass
class RestartState:
    """Where one restart of EM stands."""

    index: int
    params: MixtureParams
    lower_bound: float = -math.inf
    lower_bounds: list[float] = field(default_factory=list)
    n_iter: int = 0
    converged: bool = False
    active: bool = True  # False once converged; a restart that ran out of iterations
    # stays active, so a resumed fit with a larger max_iter continues it


@dataclass
class IterationInfo:
    """What a callback is told after every EM iteration."""

    iteration: int
    states: list[RestartState]
    seconds: float


@dataclass
class EMResult:
    """The best restart's outcome."""

    params: MixtureParams
    lower_bound: float
    lower_bounds: list[float]
    n_iter: int
    converged: bool
    restart: int
    seconds_per_iteration: list[float]


def run_em(chunks: RowChunks, initial: list[MixtureParams], *, tol: float, max_iter: int,
           reg_covar: float, split_every: int = 8, dtype: str = "float64",
           start_lower_bound: float = -math.inf,
           callback: Callable[[IterationInfo], None] | None = None,
           states: list[RestartState] | None = None, start_iteration: int = 0) -> EMResult:
    """Run EM from every initial parameter set and return the best restart.

    Parameters
    ----------
    chunks : RowChunks
        The data.
    initial : list of MixtureParams
        One entry per restart.
    tol, max_iter, reg_covar :
        scikit-learn's meanings.
    split_every : int
        Fan-in of the tree reduction.
    dtype : {'float64', 'float32'}
        Dtype of the chunk products (statistics are always accumulated in float64).
    start_lower_bound : float
        Lower bound before the first iteration (``lower_bound_`` for a warm start).
    callback : callable, optional
        Called with an :class:`IterationInfo` after every iteration.
    states, start_iteration :
        Resume from these restart states after ``start_iteration`` iterations.

    Returns
    -------
    EMResult
    """
    if states is None:
        states = [RestartState(i, p, lower_bound=start_lower_bound)
                  for i, p in enumerate(initial)]
    timings: list[float] = []
    cov = states[0].params.covariance_type
    for iteration in range(start_iteration + 1, max_iter + 1):
        active = [s for s in states if s.active]
        if not active:
            break
        t0 = time.perf_counter()
        stats = chunks.map_reduce(estep_statistics, [s.params for s in active], dtype,
                                  split_every=split_every, kind="em")
        for state, st in zip(active, stats, strict=True):
            previous = state.lower_bound
            state.lower_bound = float(st["ll"] / st["n"])
            state.lower_bounds.append(state.lower_bound)
            state.params = m_step(st, state.params.centre, state.params.means, cov, reg_covar)
            state.n_iter = iteration
            if abs(state.lower_bound - previous) < tol:
                state.converged = True
                state.active = False
        timings.append(time.perf_counter() - t0)
        info = IterationInfo(iteration, states, timings[-1])
        if callback is not None:
            callback(info)
        observers.notify("iteration_finished", info)
    return _best(states, max_iter, timings)


def _best(states: list[RestartState], max_iter: int, timings: list[float]) -> EMResult:
    if max_iter == 0:
        last = states[-1]
        return EMResult(last.params, -math.inf, [], 0, False, last.index, timings)
    best: RestartState | None = None
    for state in states:
        if (best is None or state.lower_bound > best.lower_bound
                or best.lower_bound == -math.inf):
            best = state
    assert best is not None
    return EMResult(best.params, best.lower_bound, list(best.lower_bounds), best.n_iter,
                    best.converged, best.index, timings)
