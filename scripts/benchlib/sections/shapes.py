"""``shapes``: covariance type × shape against scikit-learn, and against the GEMM floor.

Every row draws its own mixture in memory (:func:`benchlib.data.mixture_in_memory`, K
components in D dimensions, N rows), takes initial parameters from a 5-iteration
scikit-learn fit of the row's covariance type on 20,000 of its rows, then alternates
scikit-learn (default BLAS threads) and daskgmm (NumPy input, in process) from those
parameters, ``iters`` iterations each (``tol=0``), ``shape_repeats`` rounds; the first
iteration of every fit is dropped. The floor is ``N * flops_per_row / GEMM speed``
(:mod:`benchlib.flops`, float64), with the GEMM speed measured in the row's own rounds,
alternating with the two systems (the median of its rounds): this machine's speed drifts
by tens of percent from one minute to the next, so a speed measured once at the start of
the run would put some rows' floors at another speed than their fits. The run's first
GEMM speed is reported beside it.

The rows are issue 21's (its targets against scikit-learn; 2.5x the floor for every row);
``--quick`` divides N by 200 (chunks under ``COMPILED_MIN_ROWS`` rows then run the NumPy
kernel, as they do for a user, unless ``--kernel compiled``).
"""

from __future__ import annotations

import gc
from typing import Any

from benchlib import data, flops
from benchlib.fits import run_daskgmm, run_sklearn, summarise
from benchlib.report import at_most, fmt_s, fmt_x, row, simple_table
from benchlib.util import TIMES, alternate, log, median, ratio, rel_diff

ID = "shapes"
#: (covariance type, D, K, N): the rows of issue 21's table.
SHAPES = (
    ("full", 16, 8, 2_000_000),
    ("full", 32, 16, 100_000),
    ("full", 64, 16, 200_000),
    ("diag", 64, 64, 1_000_000),
    ("tied", 32, 16, 1_000_000),
    ("spherical", 32, 32, 1_000_000),
)
QUICK_DIVISOR = 200
INIT_ROWS = 20_000
#: Targets: (type, D, K, N) -> bound on daskgmm ÷ scikit-learn (issue 21).
VS_SKLEARN_ROW = {("full", 16, 8, 2_000_000): 0.08, ("full", 32, 16, 100_000): 0.20,
                  ("full", 64, 16, 200_000): 0.20, ("diag", 64, 64, 1_000_000): 0.20,
                  ("tied", 32, 16, 1_000_000): 0.05, ("spherical", 32, 32, 1_000_000): 0.10}
VS_SKLEARN_TYPE: dict[str, float] = {}
VS_FLOOR = 2.5


def sizes(quick: bool) -> list[tuple[str, int, int, int]]:
    if not quick:
        return list(SHAPES)
    return [(c, d, k, max(2_000, n // QUICK_DIVISOR)) for c, d, k, n in SHAPES]


def run(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    gemm = ctx.gemm["float64"]["flops_per_s"]
    out_rows = []
    for (cov, d, k, n), (_, _, _, n_full) in zip(sizes(a.quick), SHAPES, strict=True):
        log(f"shapes: {cov} D={d} K={k} N={n:,}")
        X = data.mixture_in_memory(n, d, k, seed=data.SEED)
        init = data.initial_parameters(X[:INIT_ROWS], k, cov, max_iter=5)
        fitted: dict[str, Any] = {}

        def sk_run(X=X, init=init, cov=cov, k=k, fitted=fitted) -> dict[str, Any]:
            record, fitted["sklearn"] = run_sklearn(X, init, k=k, iters=a.iters,
                                                    covariance_type=cov)
            return record

        def dg_run(X=X, init=init, cov=cov, k=k, fitted=fitted) -> dict[str, Any]:
            record, fitted["daskgmm"] = run_daskgmm(X, init, k=k, iters=a.iters,
                                                    covariance_type=cov,
                                                    interval=a.monitor_interval)
            return record

        def gemm_run() -> dict[str, Any]:
            return flops.measure_gemm("float64", ctx.gemm["float64"]["size"])

        runs = alternate({"sklearn": sk_run, "daskgmm": dg_run, "gemm": gemm_run},
                         a.shape_repeats)
        sk, dg = summarise(runs["sklearn"]), summarise(runs["daskgmm"])
        row_gemm = median([g["flops_per_s"] for g in runs["gemm"]])
        fl = flops.flops_per_row(cov, k, d)
        floor = n * fl["total"] / row_gemm
        target_sk = VS_SKLEARN_ROW.get((cov, d, k, n_full), VS_SKLEARN_TYPE.get(cov))
        out_rows.append({
            "covariance_type": cov, "n_features": d, "n_components": k, "n_samples": n,
            "sklearn": sk, "daskgmm": dg,
            "sklearn_iter_s": sk["median_iter_s"], "daskgmm_iter_s": dg["median_iter_s"],
            "daskgmm_over_sklearn": ratio(dg["median_iter_s"], sk["median_iter_s"]),
            "flops_per_row": fl, "gemm_flops_per_s": row_gemm, "floor_s": floor,
            "daskgmm_over_floor": ratio(dg["median_iter_s"], floor),
            "sklearn_over_floor": ratio(sk["median_iter_s"], floor),
            "target_vs_sklearn": target_sk,
            "means_rel_diff_vs_sklearn": rel_diff(fitted["daskgmm"].means_,
                                                  fitted["sklearn"].means_),
            "covariances_rel_diff_vs_sklearn": rel_diff(fitted["daskgmm"].covariances_,
                                                        fitted["sklearn"].covariances_),
        })
        del X, sk_run, dg_run
        fitted.clear()
        gc.collect()
    return {"gemm_float64_flops_per_s": gemm, "iters": a.iters,
            "repeats": a.shape_repeats, "init_rows": INIT_ROWS, "rows": out_rows}


def _label(r: dict[str, Any]) -> str:
    return (f"{r['covariance_type']} D={r['n_features']} K={r['n_components']} "
            f"N={r['n_samples']:,}")


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in res["rows"]:
        bound = r["target_vs_sklearn"]
        out.append(row(ID, f"{_label(r)}: scikit-learn / daskgmm s/iter, ratio",
                       f"{fmt_s(r['sklearn_iter_s'])} / {fmt_s(r['daskgmm_iter_s'])} = "
                       f"{fmt_x(r['daskgmm_over_sklearn'])}",
                       "—" if bound is None else f"≤ {bound}{TIMES}",
                       None if bound is None else at_most(r["daskgmm_over_sklearn"], bound),
                       raw=r["daskgmm_over_sklearn"]))
        out.append(row(ID, f"{_label(r)}: floor ({r['flops_per_row']['total']:,} flop/row) "
                           f"/ daskgmm ÷ floor",
                       f"{fmt_s(r['floor_s'])} / {fmt_x(r['daskgmm_over_floor'])}",
                       f"≤ {VS_FLOOR}{TIMES}", at_most(r["daskgmm_over_floor"], VS_FLOOR),
                       raw=r["daskgmm_over_floor"]))
    return out


def markdown(res: dict[str, Any]) -> str:
    body = []
    for r in res["rows"]:
        diff = max(r["means_rel_diff_vs_sklearn"], r["covariances_rel_diff_vs_sklearn"])
        body.append([r["covariance_type"], r["n_features"], r["n_components"],
                     f"{r['n_samples']:,}", fmt_s(r["sklearn_iter_s"]),
                     fmt_s(r["daskgmm_iter_s"]), fmt_x(r["daskgmm_over_sklearn"]),
                     f"{r['flops_per_row']['total']:,}",
                     f"{r['gemm_flops_per_s'] / 1e9:.1f}", fmt_s(r["floor_s"]),
                     fmt_x(r["daskgmm_over_floor"]), fmt_x(r["sklearn_over_floor"]),
                     f"{diff:.1e}"])
    return (f"## Covariance type {TIMES} shape (NumPy input, float64, per iteration)\n\n"
            f"Floor = N {TIMES} flop/row ÷ the square float64 GEMM's speed (default threads) "
            "measured in the row's own alternating rounds (the run's first measurement: "
            f"{res['gemm_float64_flops_per_s'] / 1e9:.1f} GFLOP/s).\n\n"
            + simple_table(["type", "D", "K", "N", "scikit-learn", "daskgmm", "ratio",
                            "flop/row", "GEMM GFLOP/s", "floor", "daskgmm ÷ floor",
                            "sklearn ÷ floor", "max rel. diff vs sklearn"], body) + "\n")
