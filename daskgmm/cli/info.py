"""``daskgmm info DIR``: what a saved model (or a ``daskgmm fit`` output directory) holds.

:func:`describe` gathers the facts as a JSON-ready dict (``daskgmm info --json``):
the model (class, sizes, convergence, parameters, one entry per component) loaded and
validated with :func:`daskgmm.load`, and, for a fit output directory, the highlights of
its ``report.json`` (data, configuration, criteria, timings, memory, cluster).
:func:`render_text` turns them into the readable summary: a table of the components,
then the data and the configuration as YAML.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from daskgmm.errors import ModelFormatError

__all__ = ["MAX_REPORT_BYTES", "describe", "render_text"]

MAX_REPORT_BYTES = 64 * 2**20
"""A ``report.json`` larger than this is not read (it would not be one daskgmm wrote)."""

_SHOWN_MEAN_FEATURES = 4


def _finite(value: Any) -> Any:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _variances(model: Any) -> np.ndarray:
    """Each component's mean variance per feature (trace / D), from ``covariances_``."""
    cov = np.asarray(model.covariances_, dtype=np.float64)
    k, d = np.shape(model.means_)
    kind = model.covariance_type
    if kind == "full":
        return np.trace(cov, axis1=1, axis2=2) / d
    if kind == "tied":
        return np.full(k, np.trace(cov) / d)
    if kind == "diag":
        return cov.mean(axis=1)
    return cov.reshape(k)


def _read_report(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        size = path.stat().st_size
        if size > MAX_REPORT_BYTES:
            return None, f"{size / 2**20:.0f} MiB, larger than a run report can be"
        with open(path, encoding="utf-8") as handle:
            report = json.load(handle)
    except (OSError, ValueError, RecursionError) as exc:
        return None, f"{type(exc).__name__}"
    if not isinstance(report, dict) or report.get("format") != "daskgmm-report":
        return None, "not a daskgmm run report"
    return report, None


def _section(report: dict[str, Any], key: str) -> dict[str, Any]:
    value = report.get(key)
    return value if isinstance(value, dict) else {}


def describe(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The facts ``daskgmm info`` shows, JSON-ready.

    Parameters
    ----------
    directory : path-like
        A saved model, or a ``daskgmm fit`` output directory (its ``model/`` and
        ``report.json`` are used).

    Returns
    -------
    dict
        ``model_dir``, ``model`` (``class``, ``covariance_type``, ``n_components``,
        ``n_features``, ``converged``, ``n_iter``, ``lower_bound``, ``params`` and
        ``components``: ``index``, ``weight``, ``expected_rows``, ``mean``,
        ``mean_norm``, ``sd``), ``report`` (None without one) and ``report_problem``.

    Raises
    ------
    daskgmm.errors.ModelFormatError
        No model there, or a damaged one (as :func:`daskgmm.load` says).
    """
    import daskgmm

    root = Path(os.path.abspath(os.fspath(directory)))
    if not root.exists():
        raise ModelFormatError(f"no such directory: {root}; give a saved model or a "
                               "`daskgmm fit` output directory")
    model_dir, report_path = root, None
    if (root / "model").is_dir() and not (root / "model.json").exists():
        model_dir = root / "model"
        if (root / "report.json").exists():
            report_path = root / "report.json"
    model = daskgmm.load(model_dir)
    report, problem = _read_report(report_path) if report_path else (None, None)

    n_samples = None
    if report is not None:
        shape = _section(report, "data").get("shape")
        if isinstance(shape, list) and shape and isinstance(shape[0], int):
            n_samples = shape[0]
    weights = np.asarray(model.weights_, dtype=np.float64)
    means = np.asarray(model.means_, dtype=np.float64)
    sds = np.sqrt(np.clip(_variances(model), 0, None))
    components = [{
        "index": k,
        "weight": _finite(weights[k]),
        "expected_rows": round(float(weights[k]) * n_samples) if n_samples else None,
        "mean": _json_ready(means[k]),
        "mean_norm": _finite(np.linalg.norm(means[k])),
        "sd": _finite(sds[k]),
    } for k in range(len(weights))]
    params = {k: v for k, v in model.get_params().items()
              if not isinstance(v, np.ndarray) and k != "checkpoint_dir"}
    summary: dict[str, Any] = {
        "model_dir": str(model_dir),
        "model": {
            "class": type(model).__name__,
            "covariance_type": model.covariance_type,
            "n_components": len(weights),
            "n_features": int(means.shape[1]),
            "converged": bool(getattr(model, "converged_", False)),
            "n_iter": int(getattr(model, "n_iter_", 0)),
            "lower_bound": _finite(getattr(model, "lower_bound_", None)),
            "params": _json_ready(params),
            "components": components,
        },
        "report": None,
        "report_problem": problem,
    }
    if report is not None:
        fit = _section(report, "fit")
        summary["report"] = _json_ready({
            "path": str(report_path),
            "name": report.get("name"),
            "created": report.get("created"),
            "data": _section(report, "data"),
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
        })
    return summary


def _number(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "-"


def _yaml(value: Any, indent: int = 2) -> list[str]:
    import yaml

    text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=88)
    return [" " * indent + line for line in text.rstrip().splitlines()]


def render_text(summary: dict[str, Any]) -> str:
    """The readable form of :func:`describe`'s facts."""
    model = summary["model"]
    status = (f"converged after {model['n_iter']} iterations" if model["converged"]
              else f"did NOT converge in {model['n_iter']} iterations")
    lines = [
        f"model {summary['model_dir']}",
        f"  {model['class']}: {model['n_components']} components x {model['n_features']} "
        f"features, {model['covariance_type']} covariances",
        f"  {status}; lower bound {_number(model['lower_bound'], '.6g')} ("
        + ("variational lower bound" if "Bayesian" in model["class"] else
           "mean log-likelihood")
        + " per sample at the last EM iteration)",
        "",
        "components (weight; expected rows = weight x n_samples; |mean|; sd = root mean "
        "variance per feature):",
    ]
    shown = min(model["n_features"], _SHOWN_MEAN_FEATURES)
    more = "" if model["n_features"] <= shown else ", ..."
    lines.append(f"  {'#':>4}  {'weight':>8}  {'rows':>12}  {'|mean|':>10}  {'sd':>10}  "
                 f"mean{' (first ' + str(shown) + ')' if more else ''}")
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
                  f"{report.get('created')})".replace("run  (", "run (")]
    lines.append(f"  mean log-likelihood per sample of the final model: "
                 f"{_number(fit.get('mean_log_likelihood'), '.6g')}")
    lines.append(f"  BIC / AIC: {_number(fit.get('bic'), '.6g')} / "
                 f"{_number(fit.get('aic'), '.6g')}")
    lines.append(f"  wall time: {_number(timing.get('total_seconds'), '.1f')} s (init "
                 f"{_number(timing.get('init_seconds'), '.1f')} s, EM "
                 f"{_number(timing.get('em_seconds'), '.1f')} s, "
                 f"{_number(timing.get('seconds_per_iteration'), '.2f')} s/iter)")
    peak = memory.get("max_worker_peak_bytes")
    if isinstance(peak, int | float):
        fraction = memory.get("max_peak_fraction_of_limit")
        share = (f" ({100 * fraction:.0f}% of its limit)"
                 if isinstance(fraction, int | float) else "")
        lines.append(f"  worker peak memory: {peak / 2**20:.0f} MiB{share}")
    cluster = report["cluster"]
    lines.append(f"  cluster: {cluster.get('kind')}, {cluster.get('n_workers')} worker(s)")
    data = dict(report["data"])
    rows = data.get("chunks_rows")
    if isinstance(rows, list) and len(rows) > 8:
        data["chunks_rows"] = (f"{len(rows):,} chunks of {rows[0]:,} rows"
                               + (f" (the last {rows[-1]:,})" if rows[-1] != rows[0] else ""))
    lines += ["", "data:", *_yaml(data), "", "config:", *_yaml(report["config"])]
    return "\n".join(lines)
