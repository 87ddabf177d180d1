"""Timing one fit of daskgmm or of scikit-learn from given initial parameters.

Every fit runs a fixed number of EM iterations (``max_iter=iters, tol=0``) from the
initial parameters it is given (``weights_init/means_init/precisions_init``), so the
initialisation is excluded. daskgmm's iteration times come from an observer's
``iteration_finished`` (``info.seconds``: the E-step pass, the reduction and the M-step),
scikit-learn's from its ``verbose=2`` printout. The time of one iteration of a system is
the median of the per-iteration times of all its fits, the first iteration of every fit
dropped (:func:`summarise`).
"""

from __future__ import annotations

import contextlib
import io
import re
import time
import warnings
from typing import Any

import numpy as np

from benchlib.util import drop_first, median, rss


class Recorder:
    """Observer: iteration times, the chunks of every pass, the parameters after every
    iteration (when ``keep_states``)."""

    def __init__(self, keep_states: bool = False) -> None:
        self.iteration_seconds: list[float] = []
        self.passes: list[tuple[str, int]] = []
        self.keep_states = keep_states
        self.states: list[dict[str, np.ndarray]] = []
        self.bounds: list[float] = []

    def pass_started(self, kind: str, n_chunks: int) -> None:
        self.passes.append((kind, int(n_chunks)))

    def iteration_finished(self, info: Any) -> None:
        self.iteration_seconds.append(float(info.seconds))
        if info.states:
            self.bounds.append(float(info.states[0].lower_bound))
        if self.keep_states and info.states:
            state = info.states[0].state
            self.states.append({
                "weights": np.array(state.weights), "means": np.array(state.means),
                "precisions_cholesky": np.array(state.precisions_cholesky)})


def run_daskgmm(X: Any, init: dict[str, np.ndarray], *, k: int, iters: int,
                covariance_type: str = "full", client: Any = None, n_init: int = 1,
                dtype: str = "float64", chunk_rows: int | None = None,
                count_reads: bool = False, interval: float = 0.25, **params: Any
                ) -> tuple[dict[str, Any], Any]:
    """One daskgmm fit with the given initial parameters; its timings and memory.

    ``params`` go to ``GaussianMixture`` (e.g. ``algorithm``, ``batch_chunks``).
    """
    from sklearn.exceptions import ConvergenceWarning

    from daskgmm import GaussianMixture
    from daskgmm.diagnostics.memory import MemoryMonitor
    from daskgmm.diagnostics.observers import observe

    recorder = Recorder()
    params.setdefault("tol", 0.0)
    gm = GaussianMixture(
        k, covariance_type=covariance_type, max_iter=iters, n_init=n_init, dtype=dtype,
        cache=False, chunk_rows=chunk_rows, weights_init=init["weights_init"],
        means_init=init["means_init"], precisions_init=init["precisions_init"], **params)
    task_stream = None
    with contextlib.ExitStack() as stack:
        if client is not None:
            stack.enter_context(client.as_current())
        if count_reads and client is not None:
            from distributed import get_task_stream

            task_stream = stack.enter_context(get_task_stream(client))
        driver_before = rss()
        monitor = stack.enter_context(MemoryMonitor(client, interval=interval))
        stack.enter_context(observe(recorder))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        gm.fit(X)
        wall = time.perf_counter() - t0
    iter_s = recorder.iteration_seconds
    em_chunks = [n for kind, n in recorder.passes if kind == "em"]
    record: dict[str, Any] = {
        "covariance_type": covariance_type, "n_init": n_init, "dtype": dtype,
        "chunk_rows": chunk_rows, "wall_s": wall, "n_iter": int(gm.n_iter_),
        "wall_per_iter_s": wall / max(1, gm.n_iter_), "iter_s": iter_s,
        "median_iter_s_drop_first": median(drop_first(iter_s)),
        "em_passes": len(em_chunks), "em_chunks_per_pass": em_chunks,
        "other_passes": [p for p in recorder.passes if p[0] != "em"],
        "memory": monitor.summary(),
        "driver_rss_before_bytes": driver_before,
        "driver_growth_bytes": monitor.driver_peak - driver_before,
        "worker_peak_max_bytes": max(monitor.worker_peak.values(), default=None),
        "lower_bound": float(gm.lower_bound_),
    }
    if task_stream is not None:
        from dask.utils import key_split

        read_prefix = key_split(X.name)
        keys = [key_split(t["key"]) for t in task_stream.data]
        record["task_stream_reads"] = sum(1 for key in keys if key == read_prefix)
        record["task_stream_read_prefix"] = read_prefix
    return record, gm


_SKLEARN_VERBOSE = re.compile(r"Iteration (\d+)\s+time lapse ([0-9.eE+-]+)s")


def run_sklearn(X: np.ndarray, init: dict[str, np.ndarray], *, k: int, iters: int,
                covariance_type: str = "full", blas_threads: int | None = None
                ) -> tuple[dict[str, Any], Any]:
    """scikit-learn's fit; ``blas_threads`` limits BLAS (None: its default threads)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import GaussianMixture as SkGM
    from threadpoolctl import threadpool_limits

    sk = SkGM(k, covariance_type=covariance_type, tol=0.0, max_iter=iters, verbose=2,
              verbose_interval=1, weights_init=init["weights_init"],
              means_init=init["means_init"], precisions_init=init["precisions_init"])
    out = io.StringIO()
    with threadpool_limits(limits=blas_threads, user_api="blas"), \
            contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        sk.fit(X)
        wall = time.perf_counter() - t0
    iter_s = [float(s) for _, s in _SKLEARN_VERBOSE.findall(out.getvalue())]
    return {
        "covariance_type": covariance_type, "blas_threads": blas_threads or "default",
        "wall_s": wall, "n_iter": int(sk.n_iter_), "wall_per_iter_s": wall / iters,
        "iter_s": iter_s, "median_iter_s_drop_first": median(drop_first(iter_s)),
        "lower_bound": float(sk.lower_bound_),
    }, sk


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the per-iteration times of several fits of one system."""
    pooled = [s for r in records for s in drop_first(r["iter_s"])]
    return {
        "fits": records,
        "iter_s_pooled_drop_first": pooled,
        "median_iter_s": median(pooled),
        "median_wall_per_iter_s": median([r["wall_per_iter_s"] for r in records]),
    }
