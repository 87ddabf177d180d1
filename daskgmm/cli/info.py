"""``daskgmm info DIR``: what a saved model holds, and the run that made it.

:func:`describe` loads the model with :func:`daskgmm.load` and, when it belongs to a
``daskgmm fit`` run (``DIR`` is the run or its ``model/``), adds the highlights of the
run's ``report.json`` (data, configuration, criteria, timings, the selection of a
sweep); :func:`render_text` prints them."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from daskgmm.cli.selection import sweep_text
from daskgmm.diagnostics.report import REPORT_FORMAT, json_ready
from daskgmm.errors import ModelFormatError
from daskgmm.io.locations import Location, storage_errors

__all__ = ["MAX_REPORT_BYTES", "describe", "render_text"]

MAX_REPORT_BYTES = 64 * 2**20
"""A ``report.json`` larger than this is not read (daskgmm never writes one)."""
_SHOWN_MEAN_FEATURES = 4


def _read_report(loc: Location) -> tuple[dict[str, Any] | None, str | None]:
    """The run report at ``loc`` (None and why not)."""
    try:
        data = loc.head(MAX_REPORT_BYTES + 1)
    except OSError as exc:
        return None, type(exc).__name__
    if len(data) > MAX_REPORT_BYTES:
        return None, "larger than a run report can be"
    try:
        report = json.loads(data)
    except (ValueError, RecursionError) as exc:
        return None, type(exc).__name__
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        return None, "not a daskgmm run report"
    return report, None


def _variances(model: Any) -> np.ndarray:
    """Each component's mean variance per feature (trace / D)."""
    cov = np.asarray(model.covariances_, dtype=np.float64)
    k, d = np.shape(model.means_)
    return {"full": lambda: np.trace(cov, axis1=1, axis2=2) / d,
            "tied": lambda: np.full(k, np.trace(cov) / d),
            "diag": lambda: cov.mean(axis=1),
            "spherical": lambda: cov.reshape(k)}[model.covariance_type]()


def _section(report: dict[str, Any], key: str) -> dict[str, Any]:
    value = report.get(key)
    return value if isinstance(value, dict) else {}


def describe(directory: Location) -> dict[str, Any]:
    """The facts ``daskgmm info`` shows, JSON-ready: ``model_dir``, ``model`` (class,
    sizes, convergence, ``params``, ``components``), ``report`` (None outside a run) and
    ``report_problem``; ModelFormatError when no valid model is there."""
    import daskgmm

    with storage_errors("info", directory):
        if not directory.exists():
            raise ModelFormatError(f"nothing at {directory.display}; give a saved model or "
                                   "a `daskgmm fit` output directory")
        model_dir, run_dir = directory, None
        if directory.join("model", "model.json").exists():
            model_dir, run_dir = directory.join("model"), directory
        elif directory.name == "model" and directory.parent.join("report.json").exists():
            run_dir = directory.parent
        model = daskgmm.load(model_dir.url, storage_options=model_dir.storage_options or None)
        report, problem = (_read_report(run_dir.join("report.json")) if run_dir
                           else (None, None))
    shape = _section(report or {}, "data").get("shape")
    n_samples = shape[0] if isinstance(shape, list) and shape and isinstance(shape[0], int) \
        else None
    weights = np.asarray(model.weights_, dtype=np.float64)
    means = np.asarray(model.means_, dtype=np.float64)
    sds = np.sqrt(np.clip(_variances(model), 0, None))
    summary: dict[str, Any] = {
        "model_dir": model_dir.display,
        "model": {
            "class": type(model).__name__, "covariance_type": model.covariance_type,
            "n_components": len(weights), "n_features": int(means.shape[1]),
            "converged": bool(model.converged_), "n_iter": int(model.n_iter_),
            "lower_bound": float(model.lower_bound_),
            "params": {k: v if isinstance(v, bool | int | float | str | None) else str(v)
                       for k, v in model.get_params().items()
                       if not isinstance(v, np.ndarray) and k != "checkpoint_dir"},
            "components": [{
                "index": k, "weight": float(weights[k]),
                "expected_rows": round(float(weights[k]) * n_samples) if n_samples else None,
                "mean": means[k], "mean_norm": float(np.linalg.norm(means[k])),
                "sd": float(sds[k])} for k in range(len(weights))]},
        "report": None, "report_problem": problem}
    if report is not None:
        fit = _section(report, "fit")
        summary["report"] = {
            "path": run_dir.join("report.json").display, "name": report.get("name"),
            "created": report.get("created"), "data": _section(report, "data"),
            "config": _section(report, "config"),
            "fit": {k: fit.get(k) for k in ("converged", "n_iter", "mean_log_likelihood",
                                            "lower_bound", "bic", "aic", "n_parameters",
                                            "resumed_from_iteration", "warnings")},
            "timing": _section(report, "timing"),
            "memory": {k: _section(report, "memory").get(k)
                       for k in ("max_worker_peak_bytes", "max_peak_fraction_of_limit",
                                 "driver_peak_bytes")},
            "cluster": {k: _section(report, "cluster").get(k)
                        for k in ("kind", "n_workers", "threads", "scheduler_address")},
            "selection": report.get("selection")}
    return json_ready(summary)


def _number(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def _yaml(value: Any) -> list[str]:
    import yaml

    text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=88)
    return ["  " + line for line in text.rstrip().splitlines()]


def render_text(summary: dict[str, Any]) -> str:
    """The readable form of :func:`describe`'s facts."""
    model = summary["model"]
    status = (f"converged after {model['n_iter']} iterations" if model["converged"]
              else f"did NOT converge in {model['n_iter']} iterations")
    objective = ("variational lower bound" if "Bayesian" in model["class"]
                 else "mean log-likelihood")
    shown = min(model["n_features"], _SHOWN_MEAN_FEATURES)
    more = "" if model["n_features"] <= shown else ", ..."
    lines = [f"model {summary['model_dir']}",
             f"  {model['class']}: {model['n_components']} components x "
             f"{model['n_features']} features, {model['covariance_type']} covariances",
             f"  {status}; lower bound {_number(model['lower_bound'], '.6g')} ({objective} "
             "per sample at the last EM iteration)", "",
             "components (weight; expected rows = weight x n_samples; |mean|; sd = root "
             "mean variance per feature):",
             f"  {'#':>4}  {'weight':>8}  {'rows':>12}  {'|mean|':>10}  {'sd':>10}  mean"
             + (f" (first {shown})" if more else "")]
    for c in model["components"]:
        mean = ", ".join(_number(v, ".4g") for v in c["mean"][:shown]) + more
        rows = f"{c['expected_rows']:,}" if c["expected_rows"] is not None else "-"
        lines.append(f"  {c['index']:>4}  {_number(c['weight'], '.4f'):>8}  {rows:>12}  "
                     f"{_number(c['mean_norm'], '.4g'):>10}  {_number(c['sd'], '.4g'):>10}  "
                     f"[{mean}]")
    report = summary.get("report")
    if report is None:
        if summary.get("report_problem"):
            lines += ["", f"run report: unreadable ({summary['report_problem']})"]
        return "\n".join(lines)
    fit, timing, memory = report["fit"], report["timing"], report["memory"]
    lines += ["", f"run {report.get('name') or ''} ({report['path']}, created "
                  f"{report.get('created')})".replace("run  (", "run ("),
              f"  mean log-likelihood per sample of the final model: "
              f"{_number(fit.get('mean_log_likelihood'), '.6g')}",
              f"  BIC / AIC: {_number(fit.get('bic'), '.6g')} / "
              f"{_number(fit.get('aic'), '.6g')}",
              f"  wall time: {_number(timing.get('total_seconds'), '.1f')} s (init "
              f"{_number(timing.get('init_seconds'), '.1f')} s, EM "
              f"{_number(timing.get('em_seconds'), '.1f')} s, "
              f"{_number(timing.get('seconds_per_iteration'), '.2f')} s/iter)"]
    peak = memory.get("max_worker_peak_bytes")
    if isinstance(peak, int | float):
        fraction = memory.get("max_peak_fraction_of_limit")
        share = f" ({100 * fraction:.0f}% of its limit)" if isinstance(fraction, float) \
            else ""
        lines.append(f"  worker peak memory: {peak / 2**20:.0f} MiB{share}")
    cluster = report["cluster"]
    lines.append(f"  cluster: {cluster.get('kind')}, {cluster.get('n_workers')} worker(s)")
    selection = report.get("selection")
    if isinstance(selection, dict) and isinstance(selection.get("best"), dict):
        best, criterion = selection["best"], selection.get("criterion", "bic")
        swept = sweep_text(list(selection.get("n_components") or []),
                           list(selection.get("covariance_types") or []))
        lines.append(
            f"  selected {best.get('n_components')} components "
            f"({best.get('covariance_type')}) by {str(criterion).upper()} = "
            f"{_number(best.get(criterion), ',.6g')} among {selection.get('n_candidates')} "
            f"candidates ({swept}; table: {selection.get('table')})")
    data = dict(report["data"])
    rows = data.get("chunks_rows")
    if isinstance(rows, list) and len(rows) > 8:
        data["chunks_rows"] = f"{len(rows):,} chunks of {rows[0]:,} rows"
    lines += ["", "data:", *_yaml(data), "", "config:", *_yaml(report["config"])]
    return "\n".join(lines)
