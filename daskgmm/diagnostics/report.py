"""Pieces of ``report.json``: library versions, iteration timings, information criteria.

:class:`FitRecorder` is a fit observer (see :mod:`daskgmm.diagnostics.observers`) that records when
the passes and EM iterations of a fit happen, so a report can split the wall time into
initialisation and EM and list the seconds of every iteration.
"""

from __future__ import annotations

import math
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from typing import Any

__all__ = ["REPORT_FORMAT_VERSION", "FitRecorder", "information_criteria",
           "iteration_table", "library_versions", "memory_summary"]

REPORT_FORMAT_VERSION = 1

_LIBRARIES = {
    "daskgmm": "daskgmm",
    "dask": "dask",
    "distributed": "distributed",
    "numpy": "numpy",
    "scipy": "scipy",
    "zarr": "zarr",
    "scikit-learn": "scikit-learn",
    "h5py": "h5py",
    "matplotlib": "matplotlib",
}


def library_versions() -> dict[str, str | None]:
    """Versions of Python and of the libraries a fit depends on.

    Returns
    -------
    dict
        ``python`` and one entry per library (``None`` when it is not installed).
    """
    out: dict[str, str | None] = {"python": platform.python_version()}
    for key, dist in _LIBRARIES.items():
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = None
    return out


class FitRecorder:
    """Record the timing of the passes and EM iterations of a fit.

    Call :meth:`start` just before ``fit``; then use the recorder as an observer.

    Attributes
    ----------
    seconds : dict
        EM iteration number -> wall time of that iteration (seconds).
    passes : list of dict
        ``{"kind", "n_chunks", "seconds"}`` of every pass over the chunks.
    first_iteration : int or None
        The first iteration number seen (greater than 1 for a fit resumed from a
        checkpoint).
    """

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self.passes: list[dict[str, Any]] = []
        self.first_iteration: int | None = None
        self._started: float | None = None
        self._em_started: float | None = None
        self._pass: tuple[str, int, float] | None = None

    def start(self) -> None:
        """Mark the start of the fit."""
        self._started = time.perf_counter()

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
        now = time.perf_counter()
        if self.first_iteration is None:
            self.first_iteration = int(info.iteration)
            self._em_started = now - float(info.seconds)
        self.seconds[int(info.iteration)] = float(info.seconds)

    def timing(self, fit_seconds: float) -> dict[str, float]:
        """Split ``fit_seconds`` (the wall time of ``fit``) into init and EM.

        Returns
        -------
        dict
            ``fit_seconds``, ``init_seconds`` (from the start of the fit to the start
            of the first EM iteration: validation, caching and initialisation),
            ``em_seconds`` (the sum of the iteration times) and
            ``seconds_per_iteration`` (their mean, NaN-free: 0 without iterations).
        """
        em = float(sum(self.seconds.values()))
        if self._started is not None and self._em_started is not None:
            init = max(0.0, self._em_started - self._started)
        else:
            init = max(0.0, fit_seconds - em)
        n = len(self.seconds)
        return {
            "fit_seconds": round(fit_seconds, 4),
            "init_seconds": round(init, 4),
            "em_seconds": round(em, 4),
            "seconds_per_iteration": round(em / n, 4) if n else 0.0,
        }


def iteration_table(lower_bounds: list[float], seconds: dict[int, float]
                    ) -> list[dict[str, Any]]:
    """One entry per EM iteration of the kept restart.

    Parameters
    ----------
    lower_bounds : list of float
        ``lower_bounds_`` of the fitted estimator (iteration ``i`` at index ``i - 1``).
    seconds : dict
        Iteration -> seconds (:attr:`FitRecorder.seconds`); iterations missing from it
        (run before a resume) get ``None``.

    Returns
    -------
    list of dict
        ``{"iteration", "log_likelihood", "change", "seconds"}``; ``change`` is None
        for the first iteration.
    """
    table = []
    for i, value in enumerate(lower_bounds, start=1):
        change = float(value) - float(lower_bounds[i - 2]) if i > 1 else None
        table.append({
            "iteration": i,
            "log_likelihood": _finite_or_none(value),
            "change": _finite_or_none(change),
            "seconds": round(seconds[i], 6) if i in seconds else None,
        })
    return table


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def information_criteria(mean_log_likelihood: float, n_samples: int,
                         n_parameters: int) -> dict[str, float | None]:
    """BIC and AIC from the mean per-sample log-likelihood of the final parameters.

    ``bic = -2 n L + p log n`` and ``aic = -2 n L + 2 p``, as
    ``sklearn.mixture.GaussianMixture.bic`` / ``aic`` compute them.

    Returns
    -------
    dict
        ``log_likelihood`` (total), ``mean_log_likelihood``, ``n_parameters``, ``bic``,
        ``aic`` (None when the log-likelihood is not finite).
    """
    total = float(mean_log_likelihood) * n_samples
    if not math.isfinite(total):
        return {"log_likelihood": None, "mean_log_likelihood": None,
                "n_parameters": int(n_parameters), "bic": None, "aic": None}
    return {
        "log_likelihood": total,
        "mean_log_likelihood": float(mean_log_likelihood),
        "n_parameters": int(n_parameters),
        "bic": -2.0 * total + n_parameters * math.log(n_samples),
        "aic": -2.0 * total + 2.0 * n_parameters,
    }


def memory_summary(monitor: Any) -> dict[str, Any]:
    """:meth:`daskgmm.diagnostics.memory.MemoryMonitor.summary` plus the highest peaks.

    Returns
    -------
    dict
        ``workers`` (address -> ``peak_bytes``, ``limit_bytes``,
        ``peak_fraction_of_limit``), ``driver_peak_bytes``, ``max_worker_peak_bytes``
        and ``max_peak_fraction_of_limit`` (None when no worker has a limit).
    """
    summary = dict(monitor.summary())
    workers = summary.get("workers", {})
    peaks = [w["peak_bytes"] for w in workers.values()]
    fractions = [w["peak_fraction_of_limit"] for w in workers.values()
                 if w.get("peak_fraction_of_limit") is not None]
    summary["max_worker_peak_bytes"] = max(peaks) if peaks else None
    summary["max_peak_fraction_of_limit"] = max(fractions) if fractions else None
    return summary
