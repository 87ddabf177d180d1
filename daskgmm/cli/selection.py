"""Model-selection sweeps in batch runs.

A run is a sweep when ``model.n_components`` is a list or ``{min, max}`` or
``model.covariance_type`` is a list. ``daskgmm fit`` then fits a
:class:`daskgmm.GaussianMixtureSelector` (every candidate in shared passes, chosen by
``selection.criterion``) and writes, besides the usual outputs of the best model::

    output.dir/
        selection.json      the results table: one entry per candidate
        selection.png       the criterion against K, a line per covariance type (plots)

and a ``selection`` section in ``report.json`` naming the winner. The runner
(:mod:`daskgmm.cli.runner`) calls the hooks of this module; a single-model run passes
through them unchanged.
"""

from __future__ import annotations

import math
from typing import Any, TextIO

from daskgmm.diagnostics.progress import (
    ProgressObserver,
    fit_eta,
    format_clock,
    was_updated,
)

__all__ = ["SELECTION_FILE", "SELECTION_FORMAT", "SELECTION_PLOT", "SweepProgress",
           "describe_model", "format_sweep_iteration", "is_sweep", "make_estimator",
           "print_winner", "progress_observer", "selection_report", "split_fitted",
           "write_selection"]

SELECTION_FILE = "selection.json"
"""The results table of a sweep, in ``output.dir``."""

SELECTION_PLOT = "selection.png"
"""The criterion against the number of components, in ``output.dir``."""

SELECTION_FORMAT = "daskgmm-selection"


def is_sweep(config: Any) -> bool:
    """Whether the run configuration describes a sweep."""
    return bool(config.model.sweep)


def describe_model(config: Any) -> str:
    """What a run fits, for its first log line: ``'6 components (full)'`` or
    ``'40 candidates (K = 1..10 x full, tied, diag, spherical; by BIC)'``."""
    model = config.model
    if not is_sweep(config):
        return f"{model.n_components} components ({model.covariance_type})"
    sweep = model.sweep
    ks = sweep.get("n_components", [model.params.get("n_components")])
    types = sweep.get("covariance_type", [model.params.get("covariance_type")])
    if len(ks) > 2 and ks == list(range(ks[0], ks[-1] + 1)):
        k_text = f"{ks[0]}..{ks[-1]}"
    else:
        k_text = ", ".join(str(k) for k in ks)
    return (f"{len(ks) * len(types)} candidates (K = {k_text} x {', '.join(types)}; "
            f"by {config.selection.criterion.upper()})")


def make_estimator(config: Any, params: dict[str, Any]) -> Any:
    """The estimator a run fits: the model's own, or a selector for a sweep.

    Parameters
    ----------
    config : daskgmm.cli.config.RunConfig
    params : dict
        The estimator's keyword arguments (swept parameters as lists of values).

    Raises
    ------
    daskgmm.errors.InvalidParameterError
        A sweep the selector refuses (checked here, before any data is read).
    """
    cls = config.model.estimator_class()
    if not is_sweep(config):
        return cls(**params)
    from daskgmm.models.selection import GaussianMixtureSelector

    rest = dict(params)
    n_components = rest.pop("n_components")
    covariance_types = rest.pop("covariance_type")
    accepted = GaussianMixtureSelector().get_params(deep=False)
    shared = {k: v for k, v in rest.items() if k in accepted}
    extra = {k: v for k, v in rest.items() if k not in accepted}
    selector = GaussianMixtureSelector(
        n_components=n_components, covariance_types=covariance_types,
        criterion=config.selection.criterion, model=config.model.kind,
        early_stopping=config.selection.early_stopping, model_params=extra or None,
        **shared)
    selector._check_user_init(selector.candidates())
    return selector


def split_fitted(estimator: Any) -> tuple[Any, Any]:
    """``(selector, model)``: the fitted selector (None for a single model) and the
    mixture the run writes (the selector's best estimator)."""
    best = getattr(estimator, "best_estimator_", None)
    if best is None:
        return None, estimator
    return estimator, best


def progress_observer(config: Any, *, quiet: bool, verbose: int) -> ProgressObserver:
    """The run's progress display: one line per iteration for a sweep
    (:class:`SweepProgress`), one per restart otherwise."""
    cls = SweepProgress if is_sweep(config) else ProgressObserver
    return cls(quiet=quiet, verbose=verbose)


def format_sweep_iteration(info: Any, *, max_iter: int | None = None,
                           eta: float | None = None, timing: bool = False,
                           n_candidates: int | None = None) -> str:
    """The log line of one EM iteration of a sweep.

    ``n_candidates`` is the sweep's number of candidates: those not in EM yet (their
    k-means still running) are counted as initialising. An iteration is a pass of the
    sweep; a candidate that started EM late may end after ``max_iter`` of them (each
    candidate runs at most ``max_iter`` iterations).

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> states = [NS(label="K=1 full #0", n_iter=2, converged=True, active=False),
    ...           NS(label="K=2 full #0", n_iter=3, converged=False, active=True),
    ...           NS(label="K=3 full #0", n_iter=3, converged=True, active=False)]
    >>> format_sweep_iteration(NS(iteration=3, states=states, seconds=0.5), max_iter=100)
    'iter 3/100  running 1/3  converged now: K=3 full #0'
    >>> format_sweep_iteration(NS(iteration=3, states=states, seconds=0.5), max_iter=100,
    ...                        n_candidates=5)
    'iter 3/100  running 1/5  initialising 2  converged now: K=3 full #0'
    """
    states = list(getattr(info, "states", []))
    iteration = int(info.iteration)
    counter = (f"{iteration}/{max_iter}" if max_iter and iteration <= max_iter
               else f"{iteration}")
    total = max(len(states), n_candidates or 0)
    running = sum(1 for s in states if getattr(s, "active", False))
    line = f"iter {counter}  running {running}/{total}"
    if total > len(states):
        line += f"  initialising {total - len(states)}"
    stopped = sum(1 for s in states
                  if not getattr(s, "active", True) and not getattr(s, "converged", False))
    if stopped:
        line += f"  stopped early {stopped}"
    done = [s.label for s in states if was_updated(info, s) and s.converged]
    if done:
        shown = ", ".join(done[:6]) + (f" and {len(done) - 6} more" if len(done) > 6 else "")
        line += f"  converged now: {shown}"
    if timing:
        line += f"  {float(info.seconds):.2f} s/iter"
    if eta is not None and running:
        line += f"  ETA {format_clock(eta)}"
    return line


class SweepProgress(ProgressObserver):
    """The progress display of a sweep: every EM iteration in one line that counts
    the candidates still running (:func:`format_sweep_iteration`), instead of a line
    per candidate."""

    _n_candidates: int | None = None

    def fit_started(self, info: Any) -> None:
        """A sweep starts: also take its number of candidates."""
        super().fit_started(info)
        self._n_candidates = getattr(info, "n_candidates", None)

    def iteration_finished(self, info: Any) -> None:
        """An EM iteration of the sweep is done: print its line, update the ETA."""
        self._iteration = int(info.iteration)
        max_iter = int(getattr(info, "max_iter", 0) or self.max_iter or 0)
        self._iteration_seconds.append(float(info.seconds))
        recent = self._iteration_seconds[-5:]
        self._eta = fit_eta(list(getattr(info, "states", [])), self._iteration, max_iter,
                            self.tol, sum(recent) / len(recent))
        self._print(format_sweep_iteration(info, max_iter=max_iter or None, eta=self._eta,
                                           timing=self.verbose >= 2,
                                           n_candidates=self._n_candidates))
        self._update_fit()


def selection_document(selector: Any) -> dict[str, Any]:
    """The content of ``selection.json``: the criterion, the winner and the table."""
    index = int(selector.best_index_)
    return {
        "format": SELECTION_FORMAT,
        "format_version": 1,
        "criterion": selector.criterion,
        "best": {"index": index, **selector.best_params_,
                 selector.criterion: _finite(selector.best_score_)},
        "n_candidates": len(selector.results_["n_components"]),
        "results": {key: [_finite(v) for v in values]
                    for key, values in selector.results_.items()},
    }


def write_selection(selector: Any, out: Any, *, plots: bool,
                    title: str | None = None) -> list[str]:
    """Write ``selection.json`` (and ``selection.png`` with ``plots``) into the run's
    output directory (a :class:`daskgmm.io.storage.OutputDirectory`, local or remote).

    Returns
    -------
    list of str
        The plot files written (names relative to the output directory).
    """
    from daskgmm.cli.outputs import write_figure, write_json

    write_json(out, SELECTION_FILE, selection_document(selector))
    if not plots:
        return []
    from daskgmm.diagnostics.plots import selection_figure

    write_figure(out, SELECTION_PLOT, selection_figure(selector.results_, selector.criterion,
                                                      title=title))
    return [SELECTION_PLOT]


def selection_report(selector: Any) -> dict[str, Any]:
    """The ``selection`` section of ``report.json``: what was swept and the winner."""
    results = selector.results_
    return {
        "criterion": selector.criterion,
        "best": {**selector.best_params_,
                 selector.criterion: _finite(selector.best_score_)},
        "n_candidates": len(results["n_components"]),
        "n_components": sorted(set(results["n_components"])),
        "covariance_types": list(dict.fromkeys(results["covariance_type"])),
        "n_init": int(selector.n_init),
        "early_stopping": bool(selector.early_stopping),
        "stopped_early": int(sum(results["stopped_early"])),
        "not_converged": int(sum(not c for c in results["converged"])),
        "table": SELECTION_FILE,
    }


def print_winner(selector: Any, out: TextIO) -> None:
    """One line on standard output naming the chosen model."""
    params = selector.best_params_
    name = selector.criterion.upper()
    n = len(selector.results_["n_components"])
    print(f"selected {params['n_components']} components ({params['covariance_type']}) "
          f"by {name} = {selector.best_score_:,.6g} among {n} candidates; the table is in "
          f"{SELECTION_FILE}", file=out)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
