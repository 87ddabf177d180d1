"""Where a fit starts and how often it reads the data: the figures of the fit plan.

Run from the repository root with the project's virtualenv (on a quiet machine)::

    python scripts/bench_starts.py              # every section, about 15 minutes
    python scripts/bench_starts.py --quick      # tiny, for the tests
    python scripts/bench_starts.py --only k32   # one section

Sections:

k32         Three data sets of N=200,000 rows, D=16, K=32 full-covariance clusters with
            centres drawn uniformly in [-10, 10]^16 (covariances ``A Aᵀ/D + I/2``,
            Dirichlet(5) weights; one per seed). For each: EM started from the true
            parameters (``tol=1e-6``, the reference), a default ``GaussianMixture(32)``
            (``init_params='kmeans'``) and ``init_params='robust'``, in memory: the gap
            to the reference in nats per sample (mean log-likelihood), the passes over the
            data by phase, the EM iterations and the wall time. Target: every gap
            ≤ 0.01.
strategies  The candidates studied for the start, on the same three data sets and on the
            stepwise benchmark's mixture (``daskgmm.generate_mixture``'s K=32, D=16,
            separation 4, N=200,000): one k-means++ run on the sample (what a default fit
            did before: scikit-learn's single run), the best of 3 and of 10 runs
            (``'kmeans'`` now), and ``'robust'``. Gap to the true-start EM, after EM with
            the default ``tol``.
modes       The default K=32 fit of the first data set from a Dask array persisted on a
            2-process LocalCluster and out of core from a Zarr store on it
            (``cache=False``): gap, chunk reads before the first EM iteration (counted as
            chunk tasks of the passes), passes by phase. Target: at most 2 passes before
            EM.
online      Online EM's mean log-likelihood after 1 and 3 passes with the data in 20 and
            in 80 chunks (groups of 2 chunks), against batch EM's converged value on the
            K=8 mixture of the stepwise benchmark (N=200,000): the schedule of steps no
            longer follows the chunking.

Output: ``OUT/bench-starts.json`` and ``OUT/bench-starts.md`` (the tables, also printed).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

SECTIONS = ("k32", "strategies", "modes", "online")


def uniform_centres(seed: int, n: int, d: int = 16, k: int = 32
                    ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The data set of the issue: centres uniform in [-10, 10]^d."""
    rng = np.random.default_rng(seed)
    means = rng.uniform(-10, 10, (k, d))
    a = rng.standard_normal((k, d, d))
    cov = a @ a.transpose(0, 2, 1) / d + 0.5 * np.eye(d)
    weights = rng.dirichlet(np.full(k, 5.0))
    return _draw(rng, n, weights, means, cov), {"weights": weights, "means": means,
                                                "covariances": cov}


def generated(seed: int, n: int, d: int, k: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A mixture drawn as ``daskgmm generate`` draws it (separation 4)."""
    from daskgmm.io.generate import sample_parameters

    truth = sample_parameters(d, k, seed=seed)
    rng = np.random.default_rng([seed, 1])
    return _draw(rng, n, truth["weights"], truth["means"], truth["covariances"]), truth


def _draw(rng: np.random.Generator, n: int, weights: np.ndarray, means: np.ndarray,
          cov: np.ndarray) -> np.ndarray:
    labels = rng.choice(len(weights), size=n, p=weights)
    X = np.empty((n, means.shape[1]))
    chol = np.linalg.cholesky(cov)
    for j in range(len(weights)):
        idx = np.flatnonzero(labels == j)
        X[idx] = rng.standard_normal((idx.size, means.shape[1])) @ chol[j].T + means[j]
    return X


def reference(X: Any, truth: dict[str, np.ndarray], Xmem: np.ndarray) -> float:
    """Mean log-likelihood of EM started from the true parameters."""
    from daskgmm import GaussianMixture

    gm = GaussianMixture(len(truth["weights"]), weights_init=truth["weights"],
                         means_init=truth["means"],
                         precisions_init=np.linalg.inv(truth["covariances"]), tol=1e-6,
                         max_iter=500).fit(X)
    return float(gm.score(Xmem))


class Reads:
    """Observer: chunk tasks of every pass, and those before the first EM pass."""

    def __init__(self) -> None:
        self.chunks = 0
        self.before_em: int | None = None

    def pass_started(self, kind: str, n_chunks: int) -> None:
        if kind in ("em", "group") and self.before_em is None:
            self.before_em = self.chunks

    def chunks_done(self, count: int) -> None:
        self.chunks += count


def fit(X: Any, Xmem: np.ndarray, k: int, **kw: Any) -> dict[str, Any]:
    import daskgmm

    reads = Reads()
    t0 = time.perf_counter()
    with warnings.catch_warnings(), daskgmm.observe(reads):
        warnings.simplefilter("ignore")
        gm = daskgmm.GaussianMixture(k, **kw).fit(X)
    seconds = time.perf_counter() - t0
    return {"score": float(gm.score(Xmem)), "n_iter": int(gm.n_iter_),
            "passes": gm.passes_, "seconds": seconds, "chunk_reads": reads.chunks,
            "reads_before_em": reads.before_em}


def section_k32(args: argparse.Namespace, out: dict[str, Any]) -> list[str]:
    rows = []
    lines = ["| data set | start | gap (nats/sample) | passes before EM | EM iterations "
             "| seconds |", "| --- | --- | --- | --- | --- | --- |"]
    for seed in args.seeds:
        X, truth = uniform_centres(seed, args.n)
        ref = reference(X, truth, X)
        for init in ("kmeans", "robust"):
            r = fit(X, X, 32, random_state=seed, init_params=init)
            r.update(seed=seed, init=init, gap=ref - r["score"], reference=ref)
            rows.append(r)
            before = r["passes"].get("survey", 0) + r["passes"].get("init", 0)
            lines.append(f"| seed {seed} | {init} | {r['gap']:.4f} | {before:g} | "
                         f"{r['n_iter']} | {r['seconds']:.1f} |")
            print(lines[-1], flush=True)
    worst = max(r["gap"] for r in rows)
    lines.append(f"\nLargest gap {worst:.4f} (target ≤ 0.01: "
                 f"{'met' if worst <= 0.01 else 'not met'}).")
    out["k32"] = rows
    return lines


def section_strategies(args: argparse.Namespace, out: dict[str, Any]) -> list[str]:
    import daskgmm.engine.starts as starts

    sets = [(f"uniform centres, seed {s}", *uniform_centres(s, args.n)) for s in args.seeds]
    sets.append(("generate_mixture K=32 (stepwise benchmark's)",
                 *generated(0, args.n, 16, 32)))
    strategies = [("k-means, 1 run on the sample", "kmeans", 1),
                  ("k-means, best of 3", "kmeans", 3),
                  ("k-means, best of 10 ('kmeans')", "kmeans", 10),
                  ("'robust'", "robust", None)]
    rows = []
    header = "| data set | " + " | ".join(name for name, _, _ in strategies) + " |"
    lines = [header, "|" + " --- |" * (len(strategies) + 1)]
    saved = starts.KMEANS_RUNS
    try:
        for name, X, truth in sets:
            ref = reference(X, truth, X)
            cells = []
            for label, init, runs in strategies:
                if runs is not None:
                    starts.KMEANS_RUNS = runs
                gaps = []
                for seed in range(args.repeats):
                    r = fit(X, X, 32, random_state=100 + seed, init_params=init)
                    gaps.append(ref - r["score"])
                    rows.append({"data": name, "strategy": label, "seed": 100 + seed,
                                 "gap": ref - r["score"], "seconds": r["seconds"]})
                starts.KMEANS_RUNS = saved
                cells.append(f"{np.mean(gaps):.4f} (worst {max(gaps):.4f})")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
            print(lines[-1], flush=True)
    finally:
        starts.KMEANS_RUNS = saved
    lines.append(f"\nMean gap over {args.repeats} seeds (worst), nats per sample, after EM "
                 "with the default tol.")
    out["strategies"] = rows
    return lines


def section_modes(args: argparse.Namespace, out: dict[str, Any]) -> list[str]:
    import dask.array as da
    import zarr
    from benchlib.cluster import start_cluster

    X, truth = uniform_centres(args.seeds[0], args.n)
    ref = reference(X, truth, X)
    rows = []
    lines = ["| input | start | gap | chunk reads before EM (chunks) | passes by phase | "
             "seconds |", "| --- | --- | --- | --- | --- | --- |"]
    with contextlib.ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        client = start_cluster(stack, 2, 1, quiet=True)
        path = str(Path(tmp) / "k32.zarr")
        rows_per_chunk = max(1000, args.n // 20)
        zarr.create_array(path, data=X, chunks=(rows_per_chunk, X.shape[1]))
        inputs = {"persisted on a 2-process LocalCluster":
                  (lambda: client.persist(da.from_array(X, chunks=(rows_per_chunk, 16))),
                   {}),
                  "Zarr, out of core (cache=False)":
                  (lambda: da.from_zarr(path), {"cache": False})}
        with client.as_current():
            for what, (make, extra) in inputs.items():
                data = make()
                for init in ("kmeans", "robust"):
                    r = fit(data, X, 32, random_state=args.seeds[0], init_params=init,
                            **extra)
                    r.update(input=what, init=init, gap=ref - r["score"],
                             n_chunks=data.numblocks[0])
                    rows.append(r)
                    phases = ", ".join(f"{k} {v:g}" for k, v in r["passes"].items())
                    lines.append(f"| {what} | {init} | {r['gap']:.4f} | "
                                 f"{r['reads_before_em']} ({r['n_chunks']}) | {phases} | "
                                 f"{r['seconds']:.1f} |")
                    print(lines[-1], flush=True)
    worst = max(r["reads_before_em"] / r["n_chunks"] for r in rows)
    lines.append(f"\nMost passes before EM: {worst:g} (target ≤ 2: "
                 f"{'met' if worst <= 2 else 'not met'}).")
    out["modes"] = rows
    return lines


def section_online(args: argparse.Namespace, out: dict[str, Any]) -> list[str]:
    import dask.array as da

    from daskgmm import GaussianMixture

    X, _ = generated(0, args.n, 16, 8)
    batch = GaussianMixture(8, random_state=0, tol=1e-7, max_iter=500).fit(X)
    best = float(batch.score(X))
    rows = []
    lines = ["| chunks | gap after 1 pass | after 3 passes | steps per pass |",
             "| --- | --- | --- | --- |"]
    for n_chunks in (20, 80):
        Xd = da.from_array(X, chunks=(-(-len(X) // n_chunks), X.shape[1]))
        gaps = []
        for passes in (1, 3):
            steps = Steps()
            import daskgmm

            with warnings.catch_warnings(), daskgmm.observe(steps):
                warnings.simplefilter("ignore")
                gm = GaussianMixture(8, random_state=0, algorithm="online",
                                     batch_chunks=2, max_iter=passes, tol=0.0).fit(Xd)
            gaps.append(best - float(gm.score(X)))
        rows.append({"n_chunks": n_chunks, "gap_1": gaps[0], "gap_3": gaps[1],
                     "steps_per_pass": steps.per_pass})
        lines.append(f"| {n_chunks} | {gaps[0]:.4f} | {gaps[1]:.5f} | {steps.per_pass} |")
        print(lines[-1], flush=True)
    out["online"] = rows
    return lines


class Steps:
    """Observer: the steps of the last pass of online EM."""

    def __init__(self) -> None:
        self.per_pass = 0

    def update_finished(self, number: int, position: int, n_groups: int) -> None:
        self.per_pass = n_groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for the tests")
    parser.add_argument("--only", choices=SECTIONS, action="append",
                        help="run only this section (repeatable)")
    parser.add_argument("--out", default="bench-out", help="output directory")
    args = parser.parse_args(argv)
    args.n = 20_000 if args.quick else 200_000
    args.seeds = [0] if args.quick else [0, 1, 2]
    args.repeats = 1 if args.quick else 3
    sections = args.only or list(SECTIONS)
    out: dict[str, Any] = {"date": _dt.datetime.now().isoformat(timespec="seconds"),
                           "machine": platform.platform(), "quick": args.quick}
    report = [f"# Starts and passes ({out['date']}, N={args.n:,})", ""]
    for name in sections:
        print(f"== {name}", flush=True)
        report += [f"## {name}", "",
                   *globals()[f"section_{name}"](args, out), ""]
    target = Path(args.out)
    target.mkdir(parents=True, exist_ok=True)
    (target / "bench-starts.json").write_text(json.dumps(out, indent=1, default=float))
    (target / "bench-starts.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
