"""``float32``: ``dtype='float32'`` against ``'float64'`` on the same data, in process
(NumPy input) and persisted on the main cluster; speed and the difference of the fitted
means and covariances (``max |a - b| / max |b|``)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import dask.array as da

from benchlib import cluster, data
from benchlib.fits import summarise
from benchlib.report import at_least, at_most, fmt_s, fmt_x, row
from benchlib.util import TIMES, alternate, log, ratio, rel_diff

ID = "float32"
TARGET_SPEEDUP = 2.0
TARGET_REL_DIFF = 1e-4


def run(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    log("loading the base dataset into memory")
    X = data.load_in_memory(ctx.base["path"])
    fitted: dict[str, Any] = {}
    held: dict[str, Any] = {}

    def system(where: str, dtype: str) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            if where == "numpy":
                record, gm = ctx.fit(X, dtype=dtype)
            else:
                record, gm = ctx.fit(held["X"], client=ctx.client, dtype=dtype)
            fitted[(where, dtype)] = gm
            return record
        return go

    with contextlib.ExitStack() as stack:
        held["X"] = cluster.persist(ctx.client, da.from_array(X, chunks=(a.chunk_rows, -1)))
        stack.callback(cluster.wait_released, ctx.client)
        stack.callback(held.clear)
        runs = alternate({f"{w}_{dt}": system(w, dt) for w in ("numpy", "cluster")
                          for dt in ("float64", "float32")}, a.repeats)
    out: dict[str, Any] = {name: summarise(records) for name, records in runs.items()}
    for where in ("numpy", "cluster"):
        g64, g32 = fitted[(where, "float64")], fitted[(where, "float32")]
        out[where] = {
            "speedup": ratio(out[f"{where}_float64"]["median_iter_s"],
                             out[f"{where}_float32"]["median_iter_s"]),
            "means_rel_diff": rel_diff(g32.means_, g64.means_),
            "covariances_rel_diff": rel_diff(g32.covariances_, g64.covariances_),
            "weights_rel_diff": rel_diff(g32.weights_, g64.weights_),
        }
    out["rel_diff_definition"] = "max|a-b| / max|b| over the whole array"
    return out


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for where, label in (("numpy", "NumPy input"), ("cluster", "persisted, 2 processes")):
        r = res[where]
        out.append(row(ID, f"{label}: iteration float64 / float32, speed-up",
                       f"{fmt_s(res[f'{where}_float64']['median_iter_s'])} / "
                       f"{fmt_s(res[f'{where}_float32']['median_iter_s'])}, "
                       f"{fmt_x(r['speedup'])}", f"≥ {TARGET_SPEEDUP}{TIMES}",
                       at_least(r["speedup"], TARGET_SPEEDUP), raw=r["speedup"]))
        worst = max(r["means_rel_diff"], r["covariances_rel_diff"])
        out.append(row(ID, f"{label}: float32 vs float64 means_ / covariances_ "
                           "(max abs diff ÷ max abs value)",
                       f"{r['means_rel_diff']:.1e} / {r['covariances_rel_diff']:.1e}",
                       f"≤ {TARGET_REL_DIFF:g}", at_most(worst, TARGET_REL_DIFF), raw=worst))
    return out
