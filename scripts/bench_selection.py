"""Benchmark model selection in shared passes against separate fits and scikit-learn.

Run (from the repository root, with the project's virtualenv)::

    python scripts/bench_selection.py                 # N=500,000 x 8, K = 1..10 x 4 types
    python scripts/bench_selection.py --quick         # tiny: a few seconds

Everything runs out of core from a Zarr store (``cache=False``: every pass reads the
chunks again) on a LocalCluster of 2 worker processes with 1 thread each, with the same
settings for every fit (``tol``, ``max_iter``, ``n_init=1``, ``init_params='kmeans'``,
``random_state``):

sweep     ``GaussianMixtureSelector`` over every (K, covariance type) candidate.
separate  one ``daskgmm.GaussianMixture`` fit per candidate, one after the other, plus
          its ``bic(X)`` (the pass a user needs for the criterion).
early     the sweep with ``early_stopping=True``.
sklearn   scikit-learn's loop over the same candidates on the array in memory (fit and
          ``bic``), with its default BLAS threads.
memory    worker peak memory (``VmHWM``) of the sweep and of its most expensive candidate
          alone, each on a new LocalCluster whose workers were warmed up first.

Reads are counted twice: as chunk tasks, from the observer protocol (``pass_started`` /
``chunks_done``: the passes of the initialisation, of EM and of the criteria; the gather of
the k-means sample is not a pass and is not counted), and as bytes the worker processes
read from files (``rchar`` of ``/proc/PID/io``, over the array's size: includes the sample
gather). The targets are the issue's: reads per iteration equal to a single fit's, total
reads at most 1.1x the slowest candidate's alone, wall time at most 0.3x the separate
fits', worker peak at most 2x a single fit's.

Output: ``OUT/bench-selection.json`` (every figure, the results tables) and
``OUT/bench-selection.md`` (the table, also printed).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import logging
import math
import os
import platform
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

TARGET_READS_PER_ITERATION = 1.0
TARGET_TOTAL_READS = 1.1
TARGET_WALL_VS_SEPARATE = 0.3
TARGET_PEAK_VS_SINGLE = 2.0
TYPES = ("full", "tied", "diag", "spherical")

FULL = dict(n_samples=500_000, n_features=8, true_k=5, chunk_rows=50_000, k_max=10,
            types=TYPES, sklearn=True)
QUICK = dict(n_samples=20_000, n_features=3, true_k=3, chunk_rows=5_000, k_max=3,
             types=("full", "diag"), sklearn=True)


def log(message: str) -> None:
    print(f"[bench-selection {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
          flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a tiny run (a few seconds)")
    p.add_argument("--n-samples", type=int)
    p.add_argument("--n-features", type=int)
    p.add_argument("--chunk-rows", type=int)
    p.add_argument("--k-max", type=int, help="candidates K = 1..k-max")
    p.add_argument("--no-sklearn", action="store_true", help="skip scikit-learn's loop")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default="bench-data")
    p.add_argument("--out", default="bench-out")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    for key in ("n_samples", "n_features", "chunk_rows", "k_max"):
        if getattr(args, key) is None:
            setattr(args, key, defaults[key])
    args.true_k = defaults["true_k"]
    args.types = defaults["types"]
    args.sklearn = defaults["sklearn"] and not args.no_sklearn
    return args


# ---------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------
class PassCounter:
    """Observer: every pass's kind and the chunk tasks it ran."""

    def __init__(self) -> None:
        self.passes: list[list[Any]] = []

    def pass_started(self, kind: str, n_chunks: int) -> None:
        self.passes.append([kind, int(n_chunks), 0])

    def chunks_done(self, count: int) -> None:
        self.passes[-1][2] += int(count)

    def summary(self) -> dict[str, Any]:
        kinds = Counter(kind for kind, _, _ in self.passes)
        em = [done for kind, _, done in self.passes if kind == "em"]
        return {"passes": dict(kinds), "chunk_tasks": sum(d for _, _, d in self.passes),
                "em_chunk_tasks_per_iteration": sorted(set(em))}


def _read_chars() -> int:
    """Bytes this process has read through read(2)-like calls (Linux ``rchar``)."""
    with open("/proc/self/io", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    return 0


def _high_water() -> int:
    """This process's peak resident memory (``VmHWM``), bytes."""
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _warm(d: int) -> int:
    """Import and run what a fit runs on a tiny block; the RSS afterwards."""
    import psutil
    import zarr  # noqa: F401

    from daskgmm.engine.estep import Components, estep_statistics, make_plan

    comps = [Components.gaussian(cov, np.ones(2) / 2, np.zeros((2, d)),
                                 np.broadcast_to(np.eye(d), (2, d, d)) if cov == "full"
                                 else np.eye(d) if cov == "tied" else
                                 np.ones((2, d)) if cov == "diag" else np.ones(2))
             for cov in TYPES]
    estep_statistics(np.zeros((512, d)), None, 0, make_plan(comps, np.zeros(d),
                                                            entropy=True))
    gc.collect()
    return psutil.Process().memory_info().rss


def workers_read(client: Any) -> int:
    return sum(client.run(_read_chars).values())


@contextlib.contextmanager
def cluster(n_workers: int = 2):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as local, \
            Client(local) as client:
        client.wait_for_workers(n_workers)
        yield client


def timed(func, *args, **kwargs) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = func(*args, **kwargs)
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------------------------------
# the systems
# ---------------------------------------------------------------------------------------
def common(args: argparse.Namespace) -> dict[str, Any]:
    return dict(tol=args.tol, max_iter=args.max_iter, n_init=1, init_params="kmeans",
                random_state=args.seed)


def run_sweep(X: Any, client: Any, args: argparse.Namespace, *, early: bool
              ) -> dict[str, Any]:
    import daskgmm

    counter = PassCounter()
    before = workers_read(client)
    with daskgmm.observe(counter), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sel, seconds = timed(daskgmm.GaussianMixtureSelector(
            n_components=range(1, args.k_max + 1), covariance_types=args.types,
            early_stopping=early, cache=False, **common(args)).fit, X)
    return {"seconds": seconds, "bytes_read": workers_read(client) - before,
            **counter.summary(), "best": sel.best_params_, "best_score": sel.best_score_,
            "results": sel.results_, "selector": sel}


def run_separate(X: Any, client: Any, args: argparse.Namespace, specs: list[tuple]
                 ) -> dict[str, Any]:
    import daskgmm

    fits = []
    for k, cov in specs:
        counter = PassCounter()
        before = workers_read(client)
        with daskgmm.observe(counter), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            gm = daskgmm.GaussianMixture(k, covariance_type=cov, cache=False,
                                         **common(args)).fit(X)
            fit_reads = counter.summary()
            bic = gm.bic(X)
            seconds = time.perf_counter() - t0
        fits.append({"n_components": k, "covariance_type": cov, "seconds": seconds,
                     "bic": bic, "n_iter": gm.n_iter_, "bytes_read":
                     workers_read(client) - before, "fit": fit_reads, "model": gm})
    best = min(fits, key=lambda f: f["bic"])
    return {"seconds": sum(f["seconds"] for f in fits), "fits": fits,
            "best": {"n_components": best["n_components"],
                     "covariance_type": best["covariance_type"]}}


def run_sklearn(path: str, args: argparse.Namespace, specs: list[tuple]) -> dict[str, Any]:
    import zarr
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    X = np.ascontiguousarray(zarr.open_array(path, path="X", mode="r")[...])
    t0 = time.perf_counter()
    scores = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k, cov in specs:
            gm = SkGaussianMixture(k, covariance_type=cov, **common(args)).fit(X)
            scores.append(gm.bic(X))
    seconds = time.perf_counter() - t0
    best = specs[int(np.argmin(scores))]
    return {"seconds": seconds,
            "best": {"n_components": best[0], "covariance_type": best[1]}}


def _worker_peak(X_path: str, args: argparse.Namespace, what: str,
                 specs: list[tuple]) -> dict[str, int]:
    """Worker peak memory of the sweep or of one fit, on a new cluster."""
    import daskgmm

    with cluster() as client:
        warm = max(client.run(_warm, args.n_features).values())
        X = daskgmm.open_array(X_path, dataset="X", chunk_rows=args.chunk_rows)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if what == "sweep":
                daskgmm.GaussianMixtureSelector(
                    n_components=range(1, args.k_max + 1), covariance_types=args.types,
                    cache=False, **common(args)).fit(X)
            else:
                k, cov = specs[0]
                daskgmm.GaussianMixture(k, covariance_type=cov, cache=False,
                                        **common(args)).fit(X)
        peak = max(client.run(_high_water).values())
    return {"peak_bytes": peak, "warm_bytes": warm, "growth_bytes": peak - warm}


# ---------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------
def ensure_data(args: argparse.Namespace) -> str:
    import zarr

    from daskgmm.io.generate import generate_mixture

    path = Path(args.data_dir) / (f"select_n{args.n_samples}_d{args.n_features}_"
                                  f"k{args.true_k}_c{args.chunk_rows}_s{args.seed}.zarr")
    if path.exists():
        try:
            attrs = dict(zarr.open_group(str(path), mode="r").attrs)
            if attrs.get("n_samples") == args.n_samples:
                log(f"reusing {path}")
                return str(path)
        except Exception:  # an unreadable leftover: write it again
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"generating {path}")
    generate_mixture(str(path), args.n_samples, args.n_features, args.true_k,
                     seed=args.seed, chunk_rows=args.chunk_rows, overwrite=True)
    return str(path)


def max_rel_diff(sweep: Any, separate: list[dict[str, Any]]) -> float:
    worst = 0.0
    for est, fit in zip(sweep.estimators_, separate, strict=True):
        for name in ("weights_", "means_", "covariances_"):
            a, b = np.asarray(getattr(est, name)), np.asarray(getattr(fit["model"], name))
            worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))))
    return worst


def figures(args: argparse.Namespace, data_bytes: int, n_chunks: int,
            sweep: dict[str, Any], early: dict[str, Any], separate: dict[str, Any],
            sklearn: dict[str, Any] | None, memory: dict[str, Any]) -> dict[str, Any]:
    fits = separate["fits"]
    slowest = max(fits, key=lambda f: f["fit"]["chunk_tasks"])
    slowest_reads = slowest["fit"]["chunk_tasks"]
    per_iteration_single = sorted({r for f in fits
                                   for r in f["fit"]["em_chunk_tasks_per_iteration"]})
    out = {
        "n_candidates": len(fits),
        "n_chunks": n_chunks,
        "data_bytes": data_bytes,
        "reads_per_iteration": {"sweep": sweep["em_chunk_tasks_per_iteration"],
                                "single_fit": per_iteration_single},
        "reads_per_iteration_equal": (sweep["em_chunk_tasks_per_iteration"]
                                      == per_iteration_single == [n_chunks]),
        "sweep_chunk_tasks": sweep["chunk_tasks"],
        "slowest_candidate": {"n_components": slowest["n_components"],
                              "covariance_type": slowest["covariance_type"],
                              "chunk_tasks": slowest_reads,
                              "passes": slowest["fit"]["passes"]},
        "total_reads_vs_slowest": sweep["chunk_tasks"] / slowest_reads,
        "separate_chunk_tasks": sum(f["fit"]["chunk_tasks"] for f in fits),
        "sweep_data_reads_by_bytes": sweep["bytes_read"] / data_bytes,
        "slowest_data_reads_by_bytes": slowest["bytes_read"] / data_bytes,
        "separate_data_reads_by_bytes": sum(f["bytes_read"] for f in fits) / data_bytes,
        "sweep_seconds": sweep["seconds"],
        "separate_seconds": separate["seconds"],
        "wall_vs_separate": sweep["seconds"] / separate["seconds"],
        "early_seconds": early["seconds"],
        "early_chunk_tasks": early["chunk_tasks"],
        "early_stopped": int(sum(early["results"]["stopped_early"])),
        "early_same_choice": early["best"] == sweep["best"],
        "same_choice_as_separate": sweep["best"] == separate["best"],
        "max_rel_diff_sweep_vs_separate": max_rel_diff(sweep["selector"], fits),
        "memory": memory,
        "peak_vs_single": memory["sweep"]["peak_bytes"] / memory["single"]["peak_bytes"],
        "growth_vs_single": (memory["sweep"]["growth_bytes"]
                             / max(1, memory["single"]["growth_bytes"])),
        "best": {"sweep": sweep["best"], "separate": separate["best"],
                 "early": early["best"]},
    }
    if sklearn is not None:
        out["sklearn_seconds"] = sklearn["seconds"]
        out["wall_vs_sklearn"] = sweep["seconds"] / sklearn["seconds"]
        out["best"]["sklearn"] = sklearn["best"]
    return out


def table(f: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    mib = 2**20

    def met(ok: bool) -> str:
        return "yes" if ok else "no"

    slowest = f["slowest_candidate"]
    rows = [
        ("candidates; chunks of the array", f"{f['n_candidates']}; {f['n_chunks']}", "", ""),
        ("chunk reads per EM iteration: sweep / single fit",
         f"{f['reads_per_iteration']['sweep']} / {f['reads_per_iteration']['single_fit']}",
         "equal", met(f["reads_per_iteration_equal"])),
        (f"chunk reads in all: sweep / slowest candidate alone (K={slowest['n_components']} "
         f"{slowest['covariance_type']})",
         f"{f['sweep_chunk_tasks']} / {slowest['chunk_tasks']} = "
         f"{f['total_reads_vs_slowest']:.3f}x", f"<= {TARGET_TOTAL_READS}x",
         met(f["total_reads_vs_slowest"] <= TARGET_TOTAL_READS)),
        ("chunk reads of the separate fits (fit + bic)", f"{f['separate_chunk_tasks']}", "",
         ""),
        ("data read by the workers (bytes / array size): sweep, slowest alone, separate",
         f"{f['sweep_data_reads_by_bytes']:.1f}, {f['slowest_data_reads_by_bytes']:.1f}, "
         f"{f['separate_data_reads_by_bytes']:.1f}", "", ""),
        ("wall time: sweep / separate fits",
         f"{f['sweep_seconds']:.1f} s / {f['separate_seconds']:.1f} s = "
         f"{f['wall_vs_separate']:.3f}x", f"<= {TARGET_WALL_VS_SEPARATE}x",
         met(f["wall_vs_separate"] <= TARGET_WALL_VS_SEPARATE)),
    ]
    if "sklearn_seconds" in f:
        rows.append(("wall time: sweep (out of core) / scikit-learn's loop (in memory)",
                     f"{f['sweep_seconds']:.1f} s / {f['sklearn_seconds']:.1f} s = "
                     f"{f['wall_vs_sklearn']:.3f}x", "", ""))
    rows += [
        ("early stopping: wall time, chunk reads, candidates stopped, same choice",
         f"{f['early_seconds']:.1f} s, {f['early_chunk_tasks']}, {f['early_stopped']}, "
         f"{met(f['early_same_choice'])}", "", ""),
        ("worker peak memory: sweep / most expensive candidate alone",
         f"{f['memory']['sweep']['peak_bytes'] / mib:.0f} MiB / "
         f"{f['memory']['single']['peak_bytes'] / mib:.0f} MiB = "
         f"{f['peak_vs_single']:.2f}x", f"<= {TARGET_PEAK_VS_SINGLE}x",
         met(f["peak_vs_single"] <= TARGET_PEAK_VS_SINGLE)),
        ("worker memory growth above a warm worker: sweep / single",
         f"{f['memory']['sweep']['growth_bytes'] / mib:.0f} MiB / "
         f"{f['memory']['single']['growth_bytes'] / mib:.0f} MiB", "", ""),
        ("largest relative difference, sweep candidates vs separate fits",
         f"{f['max_rel_diff_sweep_vs_separate']:.1e}", "<= 1e-10",
         met(f["max_rel_diff_sweep_vs_separate"] <= 1e-10)),
        ("chosen model: sweep / separate / scikit-learn",
         " / ".join(f"K={b['n_components']} {b['covariance_type']}"
                    for b in (f["best"]["sweep"], f["best"]["separate"],
                              f["best"].get("sklearn", {"n_components": "-",
                                                        "covariance_type": ""}))),
         "", ""),
    ]
    return rows


def markdown(rows: list[tuple[str, str, str, str]]) -> str:
    lines = ["| measurement | figure | target | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    import daskgmm

    path = ensure_data(args)
    specs = [(k, cov) for cov in args.types for k in range(1, args.k_max + 1)]
    data_bytes = args.n_samples * args.n_features * 8
    with cluster() as client:
        X = daskgmm.open_array(path, dataset="X", chunk_rows=args.chunk_rows)
        n_chunks = int(X.numblocks[0])
        # Warm the workers up (imports, first reads) so that the measured runs read
        # only what they need.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            daskgmm.GaussianMixture(1, max_iter=1, cache=False).fit(X)
        log(f"sweep of {len(specs)} candidates on {args.n_samples:,} x {args.n_features} "
            f"({n_chunks} chunks)")
        sweep = run_sweep(X, client, args, early=False)
        log(f"sweep: {sweep['seconds']:.1f} s; separate fits")
        separate = run_separate(X, client, args, specs)
        log(f"separate: {separate['seconds']:.1f} s; early stopping")
        early = run_sweep(X, client, args, early=True)
    sklearn = None
    if args.sklearn:
        log("scikit-learn's loop in memory")
        sklearn = run_sklearn(path, args, specs)
    log("worker peak memory (new clusters)")
    expensive = [(args.k_max, args.types[0])]
    memory = {"sweep": _worker_peak(path, args, "sweep", specs),
              "single": _worker_peak(path, args, "single", expensive),
              "single_model": {"n_components": args.k_max, "covariance_type": args.types[0]}}
    result = figures(args, data_bytes, n_chunks, sweep, early, separate, sklearn, memory)
    rows = table(result)
    text = markdown(rows)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count()},
        "params": {k: v for k, v in vars(args).items()},
        "figures": result,
        "results": {"sweep": sweep["results"], "early": early["results"],
                    "separate": [{k: v for k, v in f.items() if k != "model"}
                                 for f in separate["fits"]]},
        "table": rows,
    }
    (out / "bench-selection.json").write_text(json.dumps(doc, indent=2,
                                                         default=_json_default))
    (out / "bench-selection.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
