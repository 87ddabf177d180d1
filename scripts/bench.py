"""Benchmark daskgmm: in process and on Dask clusters, against scikit-learn and against the
GEMM floor, in memory and out of core.

Run from the repository root with the project's virtualenv (on a quiet machine)::

    python scripts/bench.py                        # everything, full size
    python scripts/bench.py --quick                # everything, tiny (about a minute)
    python scripts/bench.py --only shapes,profile  # a subset

Measurements (``--only`` takes these ids; each module of ``scripts/benchlib/sections``
documents its method):

gemm      square-GEMM speed, float64 and float32 (the floors' denominator)
cluster   NumPy input in process vs persisted on a 2-process LocalCluster (default
          settings) vs a threaded LocalCluster (1 process, 2 threads)
shapes    covariance type × shape table against scikit-learn and the GEMM floor
small     scikit-learn's iris, wine and digits, default settings: whole fits vs scikit-learn
float32   float32 vs float64, NumPy input and persisted: speed and fitted differences
ninit     n_init=4 vs n_init=1 out of core: time, chunk reads, worker memory
chunks    per-chunk overhead: the same data in 10, 100 and 1,000 chunks
profile   one iteration: compiled vs NumPy kernel; GEMM vs element-wise vs allocation vs
          scheduling
tiles     tile-size sweep of the compiled kernel (make_plan(tile_bytes=...))
ooc       out of core from Zarr vs bare read + in-memory iteration
memory    worker memory flat in N (N vs 4N out of core, fresh clusters)
bigk      K=128, D=64 out of core at several chunk sizes: worker memory
selection a sweep of K x covariance types vs separate fits and scikit-learn's loop
          (runs scripts/bench_selection.py)
stepwise  batch vs incremental vs online EM: passes to batch EM's answer
          (runs scripts/bench_stepwise.py)

Every timed fit runs ``--iters`` EM iterations (``tol=0``) from given initial parameters;
the time of one iteration is the median of the per-iteration times of all fits of a
system, the first iteration of each fit dropped. Systems that are compared alternate,
``--repeats`` rounds, in one process.

Output: ``OUT/bench.json`` (machine, versions, BLAS, parameters, every raw timing and
derived figure, the rows), ``OUT/bench.md`` (one row per figure with its target and
"met?", plus the shape and tile tables); the table is also printed. Datasets are generated
once into ``--data-dir`` and reused. The exit status is 1 if a section failed (its
traceback is in bench.json), 0 otherwise, whether or not the targets are met.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time
import traceback
from typing import Any

from benchlib import report
from benchlib.context import Context
from benchlib.sections import BY_ID, SECTIONS
from benchlib.util import blas_info, log, machine_info, ru_maxrss, versions

FULL = dict(n_samples=2_000_000, chunk_rows=100_000, iters=5, repeats=3, shape_repeats=2,
            bigk_samples=100_000, bigk_chunks="10000,50000")
QUICK = dict(n_samples=40_000, chunk_rows=10_000, iters=3, repeats=1, shape_repeats=1,
             bigk_samples=4_000, bigk_chunks="1000,4000")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Measurement ids for --only: " + ", ".join(BY_ID))
    p.add_argument("--n-samples", type=int, default=None,
                   help="rows of the base dataset (default 2,000,000; --quick 40,000)")
    p.add_argument("--n-features", type=int, default=16)
    p.add_argument("--n-components", type=int, default=8)
    p.add_argument("--chunk-rows", type=int, default=None,
                   help="rows per chunk of the base dataset (default 100,000; --quick 10,000)")
    p.add_argument("--iters", type=int, default=None,
                   help="EM iterations per fit (default 5; --quick 3)")
    p.add_argument("--repeats", type=int, default=None,
                   help="alternating rounds per comparison (default 3; --quick 1)")
    p.add_argument("--shape-repeats", type=int, default=None,
                   help="alternating rounds per row of the shape table (default 2; --quick 1)")
    p.add_argument("--bigk-samples", type=int, default=None,
                   help="rows of the K=128, D=64 dataset (default 100,000; --quick 4,000)")
    p.add_argument("--bigk-chunks", default=None,
                   help="comma-separated chunk sizes for bigk (default 10000,50000)")
    p.add_argument("--chunk-counts", default="10,100,1000",
                   help="numbers of chunks of the 'chunks' section (default 10,100,1000)")
    p.add_argument("--data-dir", default="bench-data")
    p.add_argument("--out", default="bench-out")
    p.add_argument("--quick", action="store_true", help="shrink everything")
    p.add_argument("--only", default=None, help="comma-separated measurement ids")
    p.add_argument("--kernel", choices=("auto", "numpy", "compiled"), default="auto",
                   help="E-step kernel of every fit (DASKGMM_KERNEL; default auto: the "
                        "compiled one for chunks of 20,000 rows or more)")
    p.add_argument("--monitor-interval", type=float, default=0.25,
                   help="seconds between two memory samples")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        for x in wanted:
            if x not in BY_ID:
                p.error(f"unknown measurement id {x!r}; choose from {', '.join(BY_ID)}")
        args.ids = [s.ID for s in SECTIONS if s.ID in wanted]
    else:
        args.ids = list(BY_ID)
    try:
        args.bigk_chunks = sorted({int(s) for s in str(args.bigk_chunks).split(",")
                                   if s.strip()})
        args.chunk_counts = sorted({int(s) for s in str(args.chunk_counts).split(",")
                                    if s.strip()})
    except ValueError:
        p.error("--bigk-chunks and --chunk-counts must list integers")
    if len(args.chunk_counts) < 2 or min(args.chunk_counts) < 1:
        p.error("--chunk-counts must list at least two positive integers")
    for name in ("n_samples", "n_features", "n_components", "chunk_rows", "iters", "repeats",
                 "shape_repeats", "bigk_samples"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.bigk_chunks or min(args.bigk_chunks) < 1:
        p.error("--bigk-chunks must list positive integers")
    if args.n_samples < args.n_components:
        p.error("--n-samples must be >= --n-components")
    return args


def header(args: argparse.Namespace, meta: dict[str, Any]) -> str:
    m = meta["machine"]
    return (
        "# daskgmm benchmark\n\n"
        f"- machine: {m['cpu_model']}, {m['logical_cores']} cores, {m['ram_gib']} GiB; load "
        f"average at start {m['loadavg_at_start'][0]:.2f}, at end "
        f"{m['loadavg_at_end'][0]:.2f}; {meta['seconds_total']:.0f} s in all\n"
        f"- base data: N={args.n_samples:,}, D={args.n_features}, K={args.n_components}, full "
        f"covariances, {args.chunk_rows:,}-row chunks, float64 Zarr\n"
        f"- {args.iters} EM iterations per fit (tol=0) from the same initial parameters; "
        f"{args.repeats} alternating round(s) per comparison ({args.shape_repeats} in the "
        "shape table); time per iteration = median of the per-iteration times, first "
        "iteration of each fit dropped\n"
        f"- E-step kernel: {args.kernel} (numba "
        f"{meta['versions'].get('numba', 'not installed')})\n"
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["DASKGMM_KERNEL"] = args.kernel  # inherited by the clusters' workers
    log(f"measurements: {','.join(args.ids)}; N={args.n_samples:,}, D={args.n_features}, "
        f"K={args.n_components}, chunk_rows={args.chunk_rows:,}, iters={args.iters}, "
        f"repeats={args.repeats}")
    started = time.perf_counter()
    meta: dict[str, Any] = {"machine": machine_info(), "versions": versions(),
                            "blas": blas_info()}
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    timing: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    extra: list[str] = []
    with contextlib.ExitStack() as stack:
        ctx = Context(args, stack)
        for section in SECTIONS:
            if section.ID not in args.ids:
                continue
            log(f"--- {section.ID} ---")
            t0, load0 = time.perf_counter(), os.getloadavg()
            try:
                results[section.ID] = section.run(ctx)
                rows.extend(section.rows(results[section.ID]))
                if hasattr(section, "markdown"):
                    extra.append(section.markdown(results[section.ID]))
            except Exception as exc:
                errors[section.ID] = "".join(traceback.format_exception(exc))
                results.pop(section.ID, None)
                log(f"{section.ID} FAILED: {type(exc).__name__}: {exc}")
                last = errors[section.ID].strip().splitlines()[-1]
                rows.append(report.row(section.ID, "FAILED (traceback in bench.json)",
                                       last[:200], met=False))
            timing[section.ID] = {"seconds": round(time.perf_counter() - t0, 1),
                                  "loadavg_before": list(load0),
                                  "loadavg_after": list(os.getloadavg())}
            gc.collect()
        log("shutting down the clusters")
        datasets, clusters = ctx.datasets, ctx.clusters
    meta["machine"]["loadavg_at_end"] = list(os.getloadavg())
    meta["seconds_total"] = round(time.perf_counter() - started, 1)
    meta["driver_max_rss_bytes"] = ru_maxrss()
    params = dict(vars(args))
    doc = {**meta, "params": params, "datasets": datasets, "clusters": clusters,
           "section_seconds": timing, "results": results, "errors": errors}
    report.write_report(ctx.out_dir, doc, rows,
                        header(args, meta), "\n".join(extra))
    print(report.markdown_table(rows))
    log(f"wrote {ctx.out_dir / 'bench.json'} and {ctx.out_dir / 'bench.md'} "
        f"({meta['seconds_total']:.0f} s)")
    for name, tb in errors.items():
        print(f"\n{name} failed:\n{tb}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
