"""``profile``: where one iteration's time goes, for the base shape (full covariances).

- The kernel of one chunk (``chunk_rows`` rows of the base data, the base initial
  parameters), in process, one BLAS thread: the compiled kernel against the NumPy one;
  the NumPy tile loop stage by stage, and its GEMMs alone (every ``np.matmul`` call of the
  kernel timed, same shapes), float64 and float32. Element-wise = everything in the
  stages but the GEMMs. The scheduling figures below use the compiled kernel's time
  where numba is installed.
- Allocation: new memory at the peak of a warm kernel call (tracemalloc), and the extra
  time of a call with a fresh workspace.
- Scheduling: the iteration on the main cluster (persisted data) minus the kernel time of
  all chunks divided by the 2 workers; likewise in process (NumPy input, a thread per
  core). It holds the Dask overhead, the reduction and the driver's M-step.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import zarr

from benchlib import cluster, data
from benchlib.fits import summarise
from benchlib.report import fmt_mib, fmt_s, row
from benchlib.sections import kernel
from benchlib.util import TIMES, median

ID = "profile"


def run(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    path = ctx.base["path"]
    X = zarr.open_array(path, path="X", mode="r")[: a.chunk_rows]
    comps = kernel.components_from_init("full", ctx.init)
    reps = 2 if a.quick else 5
    out: dict[str, Any] = {"chunk_rows": len(X)}
    from daskgmm.engine.estep import compiled_available

    compiled = compiled_available()
    for dtype in ("float64", "float32"):
        plan = kernel.plan_for(comps, X, dtype)
        total = median(kernel.kernel_seconds(X, plan, reps))
        stages = kernel.stage_profile(X, plan, reps)
        elementwise = sum(stages["stages_s"].values()) - stages["gemm_s"]
        out[dtype] = {"kernel_s": total, "kernel_per_row_s": total / len(X),
                      **stages, "elementwise_and_loop_s": elementwise,
                      "gemm_fraction": stages["gemm_s"] / stages["wall_s"],
                      "allocation": kernel.allocation_profile(X, plan)}
        if compiled:
            fast = kernel.plan_for(comps, X, dtype, kernel="compiled")
            t = median(kernel.kernel_seconds(X, fast, reps))
            out[dtype]["compiled"] = {"kernel_s": t, "kernel_per_row_s": t / len(X),
                                      "speedup": total / t,
                                      "allocation": kernel.allocation_profile(X, fast)}
    n_chunks = -(-a.n_samples // a.chunk_rows)
    best = out["float64"].get("compiled", out["float64"])
    kernel_all = best["kernel_per_row_s"] * a.n_samples
    with contextlib.ExitStack() as stack:
        held = {"X": cluster.persist(ctx.client, data.open_zarr(path))}
        stack.callback(cluster.wait_released, ctx.client)
        stack.callback(held.clear)
        fits = [ctx.fit(held["X"], client=ctx.client)[0] for _ in range(a.repeats)]
    iteration = summarise(fits)["median_iter_s"]
    workers = 2
    out["cluster"] = {"iteration_s": iteration, "n_chunks": n_chunks, "workers": workers,
                      "kernel_all_chunks_s": kernel_all,
                      "kernel_share_s": kernel_all / workers,
                      "scheduling_and_driver_s": iteration - kernel_all / workers}
    X_all = data.load_in_memory(path)
    threads = os.cpu_count() or 1
    fits = [ctx.fit(X_all)[0] for _ in range(a.repeats)]
    iteration = summarise(fits)["median_iter_s"]
    out["numpy"] = {"iteration_s": iteration, "threads": threads,
                    "kernel_share_s": kernel_all / threads,
                    "scheduling_and_driver_s": iteration - kernel_all / threads}
    return out


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for dtype in ("float64", "float32"):
        r = res[dtype]
        st = r["stages_s"]
        if "compiled" in r:
            c = r["compiled"]
            out.append(row(ID, f"kernel, one {res['chunk_rows']:,}-row chunk, 1 thread, "
                               f"{dtype}: compiled / NumPy, speed-up; compiled's new memory "
                               "at a warm call's peak",
                           f"{fmt_s(c['kernel_s'])} / {fmt_s(r['kernel_s'])}, "
                           f"{c['speedup']:.2f}{TIMES}; "
                           f"{fmt_mib(c['allocation']['warm_call_peak_new_bytes'])}",
                           raw=c["speedup"]))
        out.append(row(ID, f"NumPy kernel, one {res['chunk_rows']:,}-row chunk, 1 thread, "
                           f"{dtype} ({r['n_tiles']} tiles of {r['tile_rows']} rows): total "
                           "= GEMM + element-wise & loop",
                       f"{fmt_s(r['wall_s'])} = {fmt_s(r['gemm_s'])} "
                       f"({r['gemm_fraction']:.0%}) + {fmt_s(r['elementwise_and_loop_s'])}; "
                       f"{r['kernel_per_row_s'] * 1e9:.0f} ns/row",
                       raw=r["kernel_per_row_s"]))
        out.append(row(ID, f"NumPy kernel stages, {dtype}: " + ", ".join(st),
                       ", ".join(fmt_s(v) for v in st.values()), raw=st))
        al = r["allocation"]
        out.append(row(ID, f"allocation, {dtype}: new memory at a warm call's peak; workspace; "
                           "cold call - warm call",
                       f"{fmt_mib(al['warm_call_peak_new_bytes'])}; "
                       f"{fmt_mib(al['workspace_bytes'])}; {fmt_s(al['cold_minus_warm_s'])}",
                       raw=al["warm_call_peak_new_bytes"]))
    for key, label in (("cluster", "persisted, 2 processes"), ("numpy", "NumPy input")):
        r = res[key]
        out.append(row(ID, f"iteration ({label}) = kernel time of all chunks ÷ workers + "
                           "scheduling, reduction, M-step",
                       f"{fmt_s(r['iteration_s'])} = {fmt_s(r['kernel_share_s'])} + "
                       f"{fmt_s(r['scheduling_and_driver_s'])}",
                       raw=r["scheduling_and_driver_s"]))
    return out
