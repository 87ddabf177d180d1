"""``cluster``: the same EM iterations on a NumPy array in process, on the array persisted
on a 2-process LocalCluster (distributed's default settings: 1 thread per worker, the
nanny's ``MALLOC_TRIM_THRESHOLD_``), and on a threaded LocalCluster (1 process, 2
threads); the systems alternate."""

from __future__ import annotations

import contextlib
from typing import Any

import dask.array as da

from benchlib import cluster, data
from benchlib.fits import summarise
from benchlib.report import at_most, fmt_s, fmt_x, row
from benchlib.util import TIMES, alternate, log, ratio

ID = "cluster"
TARGET = 1.15


def run(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    log(f"loading the base dataset into memory ({a.n_samples:,} rows)")
    X = data.load_in_memory(ctx.base["path"])
    held: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        held["processes"] = cluster.persist(ctx.client,
                                            da.from_array(X, chunks=(a.chunk_rows, -1)))
        stack.callback(cluster.wait_released, ctx.client)
        threaded = cluster.start_cluster(stack, 1, 2)
        ctx.clusters["threaded"] = {"n_workers": 1, "threads_per_worker": 2,
                                    "processes": True, **cluster.cluster_info(threaded)}
        held["threads"] = cluster.persist(threaded,
                                          da.from_array(X, chunks=(a.chunk_rows, -1)))
        stack.callback(held.clear)
        runs = alternate({
            "numpy": lambda: ctx.fit(X)[0],
            "processes": lambda: ctx.fit(held["processes"], client=ctx.client)[0],
            "threads": lambda: ctx.fit(held["threads"], client=threaded)[0],
        }, a.repeats)
    out = {name: summarise(records) for name, records in runs.items()}
    base = out["numpy"]["median_iter_s"]
    out["processes_over_numpy"] = ratio(out["processes"]["median_iter_s"], base)
    out["threads_over_numpy"] = ratio(out["threads"]["median_iter_s"], base)
    out["chunk_rows"] = a.chunk_rows
    out["n_samples"] = a.n_samples
    return out


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = [row(ID, f"daskgmm iteration, NumPy input in process (N={res['n_samples']:,}, "
                   f"{res['chunk_rows']:,}-row chunks)",
               fmt_s(res["numpy"]["median_iter_s"]), raw=res["numpy"]["median_iter_s"])]
    for key, label in (("processes", "persisted, LocalCluster 2 processes x 1 thread "
                                     "(default settings)"),
                       ("threads", "persisted, LocalCluster 1 process x 2 threads")):
        t = res[key]["median_iter_s"]
        r = res[f"{key}_over_numpy"]
        out.append(row(ID, f"daskgmm iteration, {label}: time / ratio to NumPy input",
                       f"{fmt_s(t)} / {fmt_x(r)}", f"≤ {TARGET}{TIMES}", at_most(r, TARGET),
                       raw=r))
    return out
