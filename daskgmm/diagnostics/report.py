"""The report of a batch run (``report.json``) and the figures it is made of.

:class:`RunReport` is what ``daskgmm fit`` writes into its output directory and returns:
the configuration (credentials masked), library versions, the data, the fit
(:class:`FitSummary`: convergence, every iteration's objective and seconds, passes,
information criteria, warnings), timings, memory, the cluster, the outputs and, for a
sweep, the selection. :class:`FitRecorder` is a fit observer (see
:mod:`daskgmm.diagnostics.observers`) that records when the passes and EM iterations
happen, so that the report can split the wall time into initialisation and EM.
"""

from __future__ import annotations

import dataclasses
import math
import platform
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

__all__ = ["REPORT_FORMAT", "REPORT_FORMAT_VERSION", "FitRecorder", "FitSummary",
           "RunReport", "information_criteria", "iteration_table", "json_ready",
           "library_versions", "memory_summary"]

REPORT_FORMAT = "daskgmm-report"
REPORT_FORMAT_VERSION = 1
_LIBRARIES = ("daskgmm", "dask", "distributed", "numpy", "scipy", "zarr", "scikit-learn",
              "h5py", "matplotlib")


def library_versions() -> dict[str, str | None]:
    """Python's version and each library's (None when it is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def json_ready(value: Any) -> Any:
    """``value`` with NumPy scalars and arrays as Python ones and non-finite floats as
    None (JSON has neither)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def information_criteria(mean_log_likelihood: float, n_samples: float,
                         parameters: int) -> dict[str, float | None]:
    """``log_likelihood`` (total), ``mean_log_likelihood``, ``n_parameters``,
    ``bic = -2 n L + p log n`` and ``aic = -2 n L + 2 p`` (None when not finite)."""
    total = float(mean_log_likelihood) * n_samples
    if not math.isfinite(total):
        return {"log_likelihood": None, "mean_log_likelihood": None,
                "n_parameters": int(parameters), "bic": None, "aic": None}
    return {"log_likelihood": total, "mean_log_likelihood": float(mean_log_likelihood),
            "n_parameters": int(parameters),
            "bic": -2.0 * total + parameters * math.log(n_samples),
            "aic": -2.0 * total + 2.0 * parameters}


def iteration_table(lower_bounds: list[float], seconds: dict[int, float]
                    ) -> list[dict[str, Any]]:
    """One entry per EM iteration of the kept restart: ``iteration``,
    ``log_likelihood``, ``change`` (None for the first) and ``seconds`` (None for the
    iterations run before a resume)."""
    table = []
    for i, value in enumerate(lower_bounds, start=1):
        change = float(value) - float(lower_bounds[i - 2]) if i > 1 else None
        table.append({"iteration": i, "log_likelihood": json_ready(float(value)),
                      "change": json_ready(change),
                      "seconds": round(seconds[i], 6) if i in seconds else None})
    return table


def memory_summary(monitor: Any) -> dict[str, Any]:
    """:meth:`daskgmm.diagnostics.memory.MemoryMonitor.summary` plus the highest worker
    peak and the highest fraction of a limit (None when no worker has a limit)."""
    summary = dict(monitor.summary())
    workers = summary.get("workers", {}).values()
    peaks = [w["peak_bytes"] for w in workers]
    fractions = [w["peak_fraction_of_limit"] for w in workers
                 if w.get("peak_fraction_of_limit") is not None]
    summary["max_worker_peak_bytes"] = max(peaks) if peaks else None
    summary["max_peak_fraction_of_limit"] = max(fractions) if fractions else None
    return summary


class FitRecorder:
    """Record the timing of the passes and EM iterations of a fit (an observer).

    Attributes
    ----------
    seconds : dict
        EM iteration -> its wall time.
    passes : list of dict
        ``{"kind", "n_chunks", "seconds"}`` of every pass over the chunks.
    first_iteration : int or None
        The first iteration seen (above 1 for a fit resumed from a checkpoint).
    """

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self.passes: list[dict[str, Any]] = []
        self.first_iteration: int | None = None
        self._started = time.perf_counter()
        self._em_started: float | None = None
        self._pass: tuple[str, int, float] | None = None

    def pass_started(self, kind: str, n_chunks: int) -> None:
        """A pass starts."""
        self._pass = (kind, int(n_chunks), time.perf_counter())

    def pass_finished(self) -> None:
        """The current pass is done."""
        if self._pass is not None:
            kind, n_chunks, t0 = self._pass
            self.passes.append({"kind": kind, "n_chunks": n_chunks,
                                "seconds": time.perf_counter() - t0})
            self._pass = None

    def iteration_finished(self, info: Any) -> None:
        """An EM iteration is done."""
        if self.first_iteration is None:
            self.first_iteration = int(info.iteration)
            self._em_started = time.perf_counter() - float(info.seconds)
        self.seconds[int(info.iteration)] = float(info.seconds)

    def pass_counts(self) -> dict[str, int]:
        """How many passes of each kind ran."""
        counts: dict[str, int] = {}
        for entry in self.passes:
            counts[entry["kind"]] = counts.get(entry["kind"], 0) + 1
        return dict(sorted(counts.items()))

    def timing(self, fit_seconds: float) -> dict[str, float]:
        """``fit_seconds``, ``init_seconds`` (up to the first EM iteration),
        ``em_seconds`` and ``seconds_per_iteration`` (0 without iterations)."""
        em = float(sum(self.seconds.values()))
        init = (self._em_started - self._started if self._em_started is not None
                else fit_seconds - em)
        n = len(self.seconds)
        return {"fit_seconds": round(fit_seconds, 4), "init_seconds": round(max(0, init), 4),
                "em_seconds": round(em, 4),
                "seconds_per_iteration": round(em / n, 4) if n else 0.0}


@dataclass
class FitSummary:
    """What the fit of a run found (the ``fit`` section of ``report.json``).

    ``passes`` counts the passes of each kind the fit ran (a pass over a part of the
    data counts as one); ``data_reads`` is the fitted estimator's ``passes_``, the reads
    of the whole data by phase. With ``missing='marginalize'``, ``n_empty_rows`` and
    ``observed_fraction`` are the estimator's ``n_empty_rows_`` and
    ``observed_fraction_`` (None otherwise), and the log-likelihood and criteria count
    only the rows with an observed value, as the estimator's ``bic`` does."""

    estimator: str
    converged: bool
    n_iter: int
    lower_bound: float | None
    resumed_from_iteration: int
    iterations: list[dict[str, Any]]
    passes: dict[str, int]
    weighted: bool
    sum_of_weights: float | None
    log_likelihood: float | None
    mean_log_likelihood: float | None
    n_parameters: int
    bic: float | None
    aic: float | None
    data_reads: dict[str, float] = field(default_factory=dict)
    n_empty_rows: float | None = None
    observed_fraction: float | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class RunReport:
    """The report of a batch run, as ``report.json`` holds it (:meth:`to_json`)."""

    name: str | None
    created: str
    config_file: str | None
    config: dict[str, Any]
    data: dict[str, Any]
    fit: FitSummary
    timing: dict[str, float]
    memory: dict[str, Any]
    cluster: dict[str, Any]
    outputs: dict[str, Any]
    selection: dict[str, Any] | None = None
    versions: dict[str, str | None] = field(default_factory=library_versions)

    def to_json(self) -> dict[str, Any]:
        """The JSON document (format header first; no selection for a single model)."""
        body = json_ready(self)
        if body["selection"] is None:
            del body["selection"]
        return {"format": REPORT_FORMAT, "format_version": REPORT_FORMAT_VERSION, **body}
