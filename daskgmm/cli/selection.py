"""What a model-selection sweep (a list or ``{min, max}`` in ``model.n_components``, a
list in ``model.covariance_type``) adds to a batch run: ``selection.json``,
``selection.png`` and a ``selection`` section in ``report.json``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from daskgmm.cli.config import RunConfig

__all__ = ["SELECTION_FILE", "SELECTION_PLOT", "describe_model", "print_winner",
           "selection_report", "write_selection"]

SELECTION_FILE = "selection.json"
SELECTION_PLOT = "selection.png"


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def describe_model(config: RunConfig) -> str:
    """What a run fits, for its first line: ``'6 components (full)'`` or
    ``'40 candidates (K = 1..10 x full, tied, diag, spherical; by BIC)'``."""
    model = config.model
    sweep = model.sweep
    if not sweep:
        return f"{model.n_components} components ({model.covariance_type})"
    ks = sweep.get("n_components", [model.n_components])
    types = sweep.get("covariance_type", [model.covariance_type])
    return (f"{len(ks) * len(types)} candidates ({sweep_text(ks, types)}; by "
            f"{config.selection.criterion.upper()})")


def sweep_text(ks: list[int], types: list[str]) -> str:
    """``'K = 1..10 x full, diag'``: a sweep's numbers of components and types."""
    k_text = (f"{ks[0]}..{ks[-1]}" if len(ks) > 2 and ks == list(range(ks[0], ks[-1] + 1))
              else ", ".join(map(str, ks)))
    return f"K = {k_text} x {', '.join(types)}"


def write_selection(selector: Any, out: Any, *, plots: bool, title: str) -> list[str]:
    """Write ``selection.json`` (and ``selection.png`` with ``plots``) into the run's
    :class:`~daskgmm.io.storage.OutputDirectory`; returns the plots written."""
    from daskgmm.cli.outputs import write_figure, write_json

    write_json(out, SELECTION_FILE, {
        "format": "daskgmm-selection", "format_version": 1,
        "criterion": selector.criterion,
        "best": {"index": int(selector.best_index_), **selector.best_params_,
                 selector.criterion: _finite(selector.best_score_)},
        "n_candidates": len(selector.results_["n_components"]),
        "results": {key: [_finite(v) for v in values]
                    for key, values in selector.results_.items()}})
    if not plots:
        return []
    from daskgmm.diagnostics.plots import selection_figure

    write_figure(out, SELECTION_PLOT, selection_figure(selector.results_, selector.criterion,
                                                      title=title))
    return [SELECTION_PLOT]


def selection_report(selector: Any) -> dict[str, Any]:
    """The ``selection`` section of ``report.json``: what was swept, and the winner."""
    results = selector.results_
    return {"criterion": selector.criterion,
            "best": {**selector.best_params_,
                     selector.criterion: _finite(selector.best_score_)},
            "n_candidates": len(results["n_components"]),
            "n_components": sorted(set(results["n_components"])),
            "covariance_types": list(dict.fromkeys(results["covariance_type"])),
            "n_init": int(selector.n_init), "early_stopping": bool(selector.early_stopping),
            "stopped_early": int(sum(results["stopped_early"])),
            "not_converged": int(sum(not c for c in results["converged"])),
            "table": SELECTION_FILE}


def print_winner(selector: Any, out: TextIO) -> None:
    """One line on standard output naming the chosen model."""
    params, n = selector.best_params_, len(selector.results_["n_components"])
    print(f"selected {params['n_components']} components ({params['covariance_type']}) "
          f"by {selector.criterion.upper()} = {selector.best_score_:,.6g} among {n} "
          f"candidates; the table is in {SELECTION_FILE}", file=out)
