"""Passes over out-of-core data: batch EM against incremental and online EM.

Run from the repository root with the project's virtualenv (on a quiet machine)::

    python scripts/bench_stepwise.py            # N=2,000,000, D=16, K=8 and K=32
    python scripts/bench_stepwise.py --quick    # tiny, for the tests

For each K, a Zarr dataset (N rows, D features, a K-component mixture, ``--chunk-rows``
rows per chunk) is fitted out of core on a LocalCluster (2 worker processes x 1 thread) by
``GaussianMixture(algorithm='batch' | 'incremental' | 'online')``, full covariances, all
three from the same start: with ``--start default`` (the default) the start a default
``GaussianMixture`` computes (``init_params='kmeans'``: the best of several k-means++
runs on its sample, then the hard assignment over all the data), with ``--start robust``
that of ``init_params='robust'``; computed here from a 50,000-row sample, with ``--start
kmeans`` one k-means++ run's (k-means centres, the clusters' shares and the inverses of
their covariances: a default fit's start before the fit plan); with ``--start cold``, K
random rows as means, equal
weights and every precision the inverse of the data's covariance. Incremental and
online EM walk the chunks in groups of ``--batch-chunks`` chunks (one per worker: a group
is one parallel step), so a pass has ``n_chunks / batch_chunks`` M-steps.

The curve: the mean log-likelihood per sample of all N rows under the parameters held
after each pass (pass 0: the initial parameters). For incremental and online EM it is
computed by scoring the data (``GaussianMixture.score``, one extra pass, not counted) with
the parameters an observer recorded at the end of the pass. For batch EM it is the lower
bound batch EM reports at the next iteration, which is exactly that number (the mean
log-likelihood under the parameters the E-step uses); the final parameters are scored.
The engine's own per-pass bounds (incremental: the free energy; online: the estimate of
the pass's groups) are kept in the JSON too.

Batch EM runs until its bound changes by less than ``--batch-tol`` in a pass (or
``--batch-max-passes``); its final value is the reference. Figures: the passes each
algorithm needs to come within 1e-3 (batch, incremental) or 1e-2 (online) of it; targets:
incremental ≤ 25% of batch EM's passes, online ≤ 3 passes.

A second reading takes "batch EM's converged lower bound" as the fit with the estimator's
default ``tol=1e-3`` (scikit-learn's) would give it, read off the same batch curve: that
fit stops after iteration ``i``, the first ``i >= 2`` whose bound (the mean ll after pass
``i - 1``) is within ``tol`` of the previous one; it has read the data ``i`` times and
holds the parameters after pass ``i``. Its passes and final value replace batch EM's in
the same targets.

``--from-json PATH`` rebuilds the readings, the table and the plot from the curves of an
earlier run's ``stepwise.json`` (no fits).

Output: ``OUT/stepwise.json``, ``OUT/stepwise.md`` (the table) and ``OUT/stepwise.png``
(the gap to batch EM's final value against the pass, log scale).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import cluster, data
from benchlib.fits import Recorder
from benchlib.report import simple_table
from benchlib.util import json_default, log, machine_info, versions

FULL = dict(n_samples=2_000_000, chunk_rows=25_000, batch_max_passes=300,
            stepwise_passes=10)
QUICK = dict(n_samples=20_000, chunk_rows=1_000, batch_max_passes=40, stepwise_passes=4)
TOL_INCREMENTAL = 1e-3
TOL_ONLINE = 1e-2
TARGET_INCREMENTAL_SHARE = 0.25
TARGET_ONLINE_PASSES = 3
#: The estimator's default tol (scikit-learn's), for the second reading.
DEFAULT_TOL = 1e-3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-samples", type=int, default=None)
    p.add_argument("--n-features", type=int, default=16)
    p.add_argument("--components", default="8,32", help="comma-separated K (default 8,32)")
    p.add_argument("--chunk-rows", type=int, default=None,
                   help="rows per chunk (default 25,000: 80 chunks of 2M rows)")
    p.add_argument("--batch-chunks", type=int, default=2,
                   help="chunks per group of incremental/online EM (default 2: one per "
                        "worker)")
    p.add_argument("--batch-max-passes", type=int, default=None)
    p.add_argument("--batch-tol", type=float, default=1e-6,
                   help="batch EM stops when its bound changes less than this in a pass")
    p.add_argument("--stepwise-passes", type=int, default=None,
                   help="passes of incremental and online EM (default 10; --quick 4)")
    p.add_argument("--start", choices=("default", "robust", "kmeans", "cold"),
                   default="default",
                   help="initial parameters of all three algorithms: the estimator's own "
                        "start (default: init_params='kmeans'; robust: 'robust'), or "
                        "those computed here from a sample (kmeans: one k-means++ run, "
                        "the start a default fit got before the fit plan; cold)")
    p.add_argument("--data-dir", default="bench-data")
    p.add_argument("--out", default="bench-out")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--from-json", default=None,
                   help="rebuild the readings, table and plot from this stepwise.json")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.components = [int(s) for s in args.components.split(",") if s.strip()]
    except ValueError:
        p.error("--components must list integers")
    for name in ("n_samples", "n_features", "chunk_rows", "batch_chunks", "batch_max_passes",
                 "stepwise_passes"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not args.components or min(args.components) < 1:
        p.error("--components must list positive integers")
    return args


def fit(X: Any, client: Any, k: int, init: dict[str, np.ndarray], algorithm: str,
        max_iter: int, tol: float, batch_chunks: int) -> tuple[Recorder, Any, float]:
    from sklearn.exceptions import ConvergenceWarning

    from daskgmm import GaussianMixture
    from daskgmm.diagnostics.observers import observe

    recorder = Recorder(keep_states=True)
    gm = GaussianMixture(k, covariance_type="full", max_iter=max_iter, tol=tol, cache=False,
                         algorithm=algorithm, batch_chunks=batch_chunks, **init)
    with client.as_current(), observe(recorder), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        gm.fit(X)
        wall = time.perf_counter() - t0
    return recorder, gm, wall


def score(X: Any, client: Any, weights: np.ndarray, means: np.ndarray,
          precisions_cholesky: np.ndarray) -> float:
    """Mean log-likelihood per sample of ``X`` under the given parameters (one pass)."""
    from daskgmm import GaussianMixture

    precisions = precisions_cholesky @ precisions_cholesky.transpose(0, 2, 1)
    gm = GaussianMixture(len(means), covariance_type="full", max_iter=0,
                         weights_init=weights, means_init=means, precisions_init=precisions)
    with client.as_current(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X[: len(means) + 1])  # max_iter=0: takes the given parameters, no pass
        return float(gm.score(X))


def estimator_start(X: Any, client: Any, k: int, init_params: str
                    ) -> dict[str, np.ndarray]:
    """The start ``GaussianMixture(k, init_params=...)`` computes (a fit with
    ``max_iter=0``: its survey and, for 'kmeans', the assignment pass), as initial
    parameters."""
    from daskgmm import GaussianMixture

    gm = GaussianMixture(k, covariance_type="full", max_iter=0, init_params=init_params,
                         random_state=data.SEED, cache=False)
    with client.as_current(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(X)
    return {"weights_init": gm.weights_, "means_init": gm.means_,
            "precisions_init": gm.precisions_}


def passes_within(curve: list[float], reference: float, tol: float) -> int | None:
    """First pass whose value is within ``tol`` below ``reference`` (None: never)."""
    for p, value in enumerate(curve):
        if reference - value <= tol:
            return p
    return None


def default_tol_fit(curve: list[float], tol: float = DEFAULT_TOL) -> tuple[int, float] | None:
    """Passes and final mean ll of a batch fit stopped by ``tol`` (scikit-learn's rule),
    from batch EM's curve (``curve[p]``: the mean ll after ``p`` passes); None when the
    curve is too short to see it stop."""
    for i in range(2, len(curve)):
        if abs(curve[i - 1] - curve[i - 2]) < tol:
            return i, curve[i]
    return None


def targets(out: dict[str, Any], reference: float, batch_passes: int | None
            ) -> dict[str, Any]:
    """Where incremental and online EM stand against one reading of the targets: batch
    EM's value ``reference``, reached in ``batch_passes`` passes."""
    inc = passes_within(out["incremental"]["curve"], reference, TOL_INCREMENTAL)
    onl = passes_within(out["online"]["curve"], reference, TOL_ONLINE)
    share = None if batch_passes in (None, 0) or inc is None else inc / batch_passes
    return {"incremental_passes_to_1e-3": inc, "incremental_share": share,
            "incremental_met": share is not None and share <= TARGET_INCREMENTAL_SHARE,
            "online_passes_to_1e-2": onl,
            "online_met": onl is not None and onl <= TARGET_ONLINE_PASSES}


def readings(out: dict[str, Any]) -> None:
    """Add both readings of the targets to one K's results (from its curves)."""
    curve = out["batch"]["curve"]
    out["reference_ll"] = curve[-1]
    out["batch_passes_to_1e-3"] = passes_within(curve, curve[-1], TOL_INCREMENTAL)
    out.update(targets(out, curve[-1], out["batch_passes_to_1e-3"]))
    stopped = default_tol_fit(curve)
    out["default_tol"] = None if stopped is None else {
        "tol": DEFAULT_TOL, "batch_passes": stopped[0], "reference_ll": stopped[1],
        **targets(out, stopped[1], stopped[0])}


def run_k(args: argparse.Namespace, client: Any, k: int) -> dict[str, Any]:
    d = args.n_features
    ds = data.ensure_dataset(Path(args.data_dir), args.n_samples, d, k, args.chunk_rows)
    X = data.open_zarr(ds["path"])
    if args.start in ("default", "robust"):
        init = estimator_start(X, client, k, "kmeans" if args.start == "default"
                               else "robust")
    else:
        sample = data.sample_rows(ds["path"], data.INIT_SAMPLE_ROWS, data.SEED)
        init = (data.kmeans_start_parameters(sample, k) if args.start == "kmeans"
                else data.cold_start_parameters(sample, k))
    n_chunks = int(X.npartitions)
    pc0 = np.linalg.cholesky(init["precisions_init"][:, ::-1, ::-1])[:, ::-1, ::-1]
    ll0 = score(X, client, init["weights_init"], init["means_init"], pc0)
    out: dict[str, Any] = {"dataset": ds, "n_chunks": n_chunks,
                           "groups_per_pass": math.ceil(n_chunks / args.batch_chunks),
                           "initial_ll": ll0}
    log(f"K={k}: {n_chunks} chunks of {args.chunk_rows:,} rows, groups of "
        f"{args.batch_chunks} chunks; initial mean ll {ll0:.5f}")
    for algorithm in ("batch", "incremental", "online"):
        batch = algorithm == "batch"
        log(f"K={k}: {algorithm}")
        rec, gm, wall = fit(X, client, k, init, algorithm,
                            args.batch_max_passes if batch else args.stepwise_passes,
                            args.batch_tol if batch else 0.0, args.batch_chunks)
        last = rec.states[-1]
        final = score(X, client, last["weights"], last["means"], last["precisions_cholesky"])
        if batch:
            # bounds[p] is the mean ll under the parameters after pass p (p >= 1).
            curve = [ll0, *rec.bounds[1:], final]
            how = "bounds of the next iteration; the last pass scored"
        else:
            curve = [ll0] + [score(X, client, s["weights"], s["means"],
                                   s["precisions_cholesky"]) for s in rec.states[:-1]]
            curve.append(final)
            how = "scored after every pass"
        out[algorithm] = {"passes": len(rec.states), "wall_s": wall,
                          "pass_seconds": rec.iteration_seconds, "curve": curve,
                          "curve_method": how, "engine_bounds": rec.bounds,
                          "converged": bool(gm.converged_)}
    readings(out)
    return out


def count(value: int | None, run: int) -> str:
    """Passes to a target, or ``> run`` when the run never got there."""
    return f"> {run}" if value is None else str(value)


def target_cells(reading: dict[str, Any], r: dict[str, Any]) -> list[str]:
    """The table cells of one reading (:func:`targets`) of one K's results ``r``."""
    return [count(reading["incremental_passes_to_1e-3"], r["incremental"]["passes"]),
            "n/a" if reading["incremental_share"] is None
            else f"{reading['incremental_share']:.0%}",
            "yes" if reading["incremental_met"] else "**NO**",
            count(reading["online_passes_to_1e-2"], r["online"]["passes"]),
            "yes" if reading["online_met"] else "**NO**"]


def markdown(args: argparse.Namespace, results: dict[str, Any]) -> str:

    body = []
    for k, r in results.items():
        body.append([k, f"{r['reference_ll']:.5f}", f"{r['batch']['passes']}",
                     count(r["batch_passes_to_1e-3"], r["batch"]["passes"]),
                     *target_cells(r, r)])
    head = (f"# Incremental and online EM against batch EM\n\n- N={args.n_samples:,}, "
            f"D={args.n_features}, full covariances, out of core (Zarr, cache=False) on a "
            f"LocalCluster 2 processes x 1 thread; {args.chunk_rows:,}-row chunks, groups of "
            f"{args.batch_chunks} chunks ("
            + ", ".join(f"K={k}: {r['n_chunks']} chunks, {r['groups_per_pass']} groups per "
                        "pass" for k, r in results.items())
            + f")\n- batch EM until its bound changes < {args.batch_tol:g} per pass (at most "
            f"{args.batch_max_passes}); incremental and online EM "
            f"{args.stepwise_passes} passes; the same start for all three ({args.start})\n"
            "- passes counted from the initial parameters (pass 0) to the first pass within "
            "the tolerance of batch EM's final mean log-likelihood per sample\n\n")
    table = simple_table(
        ["K", "batch final mean ll", "batch passes run", "batch passes to 1e-3",
         "incremental passes to 1e-3", "incremental ÷ batch", f"≤ "
         f"{TARGET_INCREMENTAL_SHARE:.0%}?", "online passes to 1e-2",
         f"≤ {TARGET_ONLINE_PASSES}?"], body)
    second = []
    for k, r in results.items():
        d = r.get("default_tol")
        if d is None:
            second.append([k, "did not stop", "", "", "", "", "", ""])
            continue
        second.append([k, f"{d['reference_ll']:.5f}", str(d["batch_passes"]),
                       *target_cells(d, r)])
    table += (f"\n\nSecond reading: batch EM as a fit with the default tol={DEFAULT_TOL:g} "
              "stops (its passes and final value from the same curve):\n\n"
              + simple_table(
                  ["K", "final mean ll", "batch passes", "incremental passes to 1e-3",
                   "incremental ÷ batch", f"≤ {TARGET_INCREMENTAL_SHARE:.0%}?",
                   "online passes to 1e-2", f"≤ {TARGET_ONLINE_PASSES}?"], second))
    curves = []
    for k, r in results.items():
        curves.append(f"\nK={k}, mean log-likelihood after each pass:\n")
        n = max(len(r[a]["curve"]) for a in ("incremental", "online"))
        rows = [[p] + [f"{r[a]['curve'][p]:.5f}" if p < len(r[a]["curve"]) else ""
                       for a in ("batch", "incremental", "online")] for p in range(n)]
        curves.append(simple_table(["pass", "batch", "incremental", "online"], rows))
    return head + table + "\n" + "\n".join(curves) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4.5), squeeze=False)
    for ax, (k, r) in zip(axes[0], results.items(), strict=True):
        ref = r["reference_ll"]
        for algorithm in ("batch", "incremental", "online"):
            gap = np.maximum(ref - np.asarray(r[algorithm]["curve"]), 1e-7)
            ax.semilogy(range(len(gap)), gap, marker="o", markersize=3, label=algorithm)
        for tol, style in ((TOL_INCREMENTAL, ":"), (TOL_ONLINE, "--")):
            ax.axhline(tol, color="grey", linestyle=style, linewidth=0.8)
        ax.set_title(f"K={k}")
        ax.set_xlabel("pass over the data")
        ax.set_ylabel("batch EM's final mean ll minus mean ll")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def rebuild(args: argparse.Namespace) -> int:
    """``--from-json``: the readings, table and plot again from a run's curves."""
    source = Path(args.from_json)
    doc = json.loads(source.read_text(encoding="utf-8"))
    for r in doc["results"].values():
        readings(r)
    saved = argparse.Namespace(**{**vars(args), **doc["params"]})
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "stepwise.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=json_default) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / "stepwise.json")
    text = markdown(saved, doc["results"])
    (out_dir / "stepwise.md").write_text(text, encoding="utf-8")
    plot(doc["results"], out_dir / "stepwise.png")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.from_json:
        return rebuild(args)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    meta = {"machine": machine_info(), "versions": versions()}
    results: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        client = cluster.start_cluster(stack, 2, 1)
        for k in args.components:
            results[str(k)] = run_k(args, client, k)
    meta["seconds_total"] = round(time.perf_counter() - started, 1)
    doc = {"created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
           "command": [sys.executable, *sys.argv], **meta, "params": vars(args),
           "targets": {"incremental_share_of_batch_passes": TARGET_INCREMENTAL_SHARE,
                       "incremental_tol": TOL_INCREMENTAL, "online_passes": TARGET_ONLINE_PASSES,
                       "online_tol": TOL_ONLINE},
           "results": results}
    tmp = out_dir / "stepwise.json.tmp"
    tmp.write_text(json.dumps(doc, indent=1, default=json_default) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / "stepwise.json")
    text = markdown(args, results)
    (out_dir / "stepwise.md").write_text(text, encoding="utf-8")
    plot(results, out_dir / "stepwise.png")
    print(text)
    log(f"wrote {out_dir}/stepwise.json, stepwise.md, stepwise.png "
        f"({meta['seconds_total']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
