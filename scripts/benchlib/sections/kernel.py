"""Timing the E-step kernel of one chunk in process, with one BLAS thread (what one Dask
task does), used by the ``profile`` and ``tiles`` sections."""

from __future__ import annotations

import contextlib
import statistics
import time
import tracemalloc
from collections.abc import Iterator
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits


def components(covariance_type: str, X: np.ndarray, k: int, seed: int = 0) -> Any:
    """Components for timing: ``k`` rows of ``X`` as means, equal weights, the data's
    variance as every variance (the parameters barely change the kernel's cost)."""
    from daskgmm.engine import covariance as cov_types
    from daskgmm.engine.estep import Components

    cov = cov_types.get(covariance_type)
    d = X.shape[1]
    means = X[np.random.default_rng(seed).choice(len(X), size=k, replace=False)]
    var = float(X.var(axis=0).mean())
    covariances = {"full": np.broadcast_to(var * np.eye(d), (k, d, d)).copy(),
                   "tied": var * np.eye(d), "diag": np.full((k, d), var),
                   "spherical": np.full(k, var)}[covariance_type]
    return Components.gaussian(cov, np.full(k, 1.0 / k), means,
                               cov.precisions_cholesky(covariances))


def components_from_init(covariance_type: str, init: dict[str, np.ndarray]) -> Any:
    """Components of a GaussianMixture's ``*_init`` parameters."""
    from daskgmm.engine import covariance as cov_types
    from daskgmm.engine.estep import Components

    cov = cov_types.get(covariance_type)
    pc = cov.precisions_cholesky_from_precisions(init["precisions_init"])
    return Components.gaussian(cov, init["weights_init"], init["means_init"], pc)


def plan_for(comps: Any, X: np.ndarray, dtype: str, tile_bytes: int | None = None,
             kernel: str = "numpy") -> Any:
    """The plan of one candidate; ``kernel`` 'numpy' (the NumPy tile loop, whose stages
    :func:`stage_profile` times) or 'compiled'."""
    from daskgmm.engine.estep import make_plan

    centre = np.average(comps.means, axis=0)
    return make_plan([comps], centre, dtype=dtype, tile_bytes=tile_bytes, kernel=kernel)


def kernel_seconds(X: np.ndarray, plan: Any, repeats: int) -> list[float]:
    """Seconds of ``estep_statistics`` on the chunk ``X``, one BLAS thread, after a
    warm-up call (so the thread's workspace is allocated and the compiled kernel
    loaded): the CPU time of the calling thread, which runs the BLAS too (one thread), so
    that other processes on a busy machine do not enter the figure (on a quiet one it is
    the wall time)."""
    from daskgmm.engine.estep import estep_statistics

    with threadpool_limits(limits=1, user_api="blas"):
        estep_statistics(X, None, 0, plan)
        out = []
        for _ in range(repeats):
            t0 = time.thread_time()
            estep_statistics(X, None, 0, plan)
            out.append(time.thread_time() - t0)
    return out


@contextlib.contextmanager
def timed_matmul() -> Iterator[list[float]]:
    """While active, every ``np.matmul(...)`` call (the kernels call it by that name) adds
    its wall time to ``acc[0]`` and 1 to ``acc[1]``."""
    real = np.matmul
    acc = [0.0, 0.0]

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        result = real(*args, **kwargs)
        acc[0] += time.perf_counter() - t0
        acc[1] += 1
        return result

    np.matmul = wrapper
    try:
        yield acc
    finally:
        np.matmul = real


def stage_profile(X: np.ndarray, plan: Any, repeats: int) -> dict[str, Any]:
    """The kernel's tile loop (as ``estep_statistics`` runs it, one candidate) with every
    stage timed: centring into the affine tile, ``project``, the softmax, ``accumulate``;
    the GEMMs inside them timed on their own (:func:`timed_matmul`)."""
    from daskgmm.engine import estep
    from daskgmm.engine.workspace import workspace

    group = plan.groups[0]
    batch = group.batch
    ws = workspace()
    stages = {"centre (element-wise)": 0.0, "project": 0.0, "softmax (element-wise)": 0.0,
              "accumulate": 0.0, "loop and sums": 0.0}

    def once(record: bool) -> None:
        acc = None
        for start in range(0, len(X), group.tile_rows):
            sl = slice(start, min(len(X), start + group.tile_rows))
            t0 = time.perf_counter()
            xt = estep._affine_tile(X, sl, group.centre, plan.dtype, ws, 0)
            t1 = time.perf_counter()
            wlp = batch.cov.project(xt, batch, ws)
            t2 = time.perf_counter()
            with np.errstate(over="ignore", under="ignore", invalid="ignore"):
                estep._softmax(wlp, ws, plan.entropy)
            t3 = time.perf_counter()
            nk, sx, s2 = batch.cov.accumulate(xt, wlp, None, batch, ws)
            t4 = time.perf_counter()
            if acc is None:
                acc = [nk.astype(np.float64), sx.astype(np.float64), s2.astype(np.float64)]
            else:
                acc[0] += nk
                acc[1] += sx
                np.add(acc[2], s2, out=acc[2])
            t5 = time.perf_counter()
            if record:
                for name, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4),
                                    strict=True):
                    stages[name] += dt

    with threadpool_limits(limits=1, user_api="blas"):
        once(False)
        with timed_matmul() as gemm:
            t0 = time.perf_counter()
            for _ in range(repeats):
                once(True)
            wall = time.perf_counter() - t0
    per = {name: v / repeats for name, v in stages.items()}
    return {"stages_s": per, "gemm_s": gemm[0] / repeats, "gemm_calls": gemm[1] / repeats,
            "wall_s": wall / repeats, "tile_rows": group.tile_rows,
            "n_tiles": -(-len(X) // group.tile_rows)}


def allocation_profile(X: np.ndarray, plan: Any) -> dict[str, Any]:
    """Memory the kernel allocates on a warm call (tracemalloc sees NumPy's
    allocations), and the extra time of a cold call (a fresh workspace)."""
    from daskgmm.engine.estep import estep_statistics
    from daskgmm.engine.workspace import workspace

    with threadpool_limits(limits=1, user_api="blas"):
        estep_statistics(X, None, 0, plan)
        tracemalloc.start()
        try:
            estep_statistics(X, None, 0, plan)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        cold, warm = [], []
        for _ in range(3):
            workspace().clear()
            t0 = time.perf_counter()
            estep_statistics(X, None, 0, plan)
            cold.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            estep_statistics(X, None, 0, plan)
            warm.append(time.perf_counter() - t0)
    return {"warm_call_peak_new_bytes": int(peak),
            "workspace_bytes": int(workspace().nbytes()),
            "cold_call_s": statistics.median(cold), "warm_call_s": statistics.median(warm),
            "cold_minus_warm_s": statistics.median(cold) - statistics.median(warm)}
