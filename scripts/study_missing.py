"""Missing values: how good and how costly EM that marginalises them is.

Run (from the repository root, with the project's virtualenv)::

    python scripts/study_missing.py            # every figure (about 30 minutes)
    python scripts/study_missing.py --quick    # small sizes, a minute
    python scripts/study_missing.py --only estimator out-of-core

The first two sections study the kernel alone (plain NumPy, in memory, one thread: the
kernel of ``daskgmm.engine.marginal``, or today's ``estep_statistics``, and the
unchanged ``GaussianModel.m_step`` in a loop); the last two go through the estimators.

accuracy  A well-separated mixture (N=20,000 x 8, K=4, full covariances). With 10%, 25%
          and 50% of the values missing completely at random, three fits start from the
          same parameters: EM marginalising the missing values, and complete-data EM
          after mean imputation (each missing value replaced by its feature's observed
          mean); both are compared with the complete-data fit on the full table
          (components matched to it by the nearest means): the largest distance between
          matched means, in units of the complete fit's standard deviation along that
          feature, and the largest relative Frobenius distance between matched
          covariances.
timing    CPU seconds of the E-step kernel per 100,000-row chunk (D=16, K=8, 'full'
          and 'diag', float64, one thread, best of 5), with 0%, 10% and 30% of the
          values missing at random, next to today's kernel on the complete chunk; then
          ('full') with every row missing 5 of its 16 values, as a function of the
          number of distinct patterns of missing features in the chunk (rows drawn
          uniformly from a pool of 1 to 4,000 of the C(16, 5) = 4,368 patterns).
estimator The accuracy section again, through ``GaussianMixture`` with its default start
          (``init_params='kmeans'``, ``random_state=0``): ``missing='marginalize'`` on
          the table with holes, and ``missing='error'`` on the mean-imputed table, both
          compared with the estimator's fit of the complete table.
out-of-core
          Wall seconds per EM iteration (median of the iterations after the first, then
          the median over rounds) of ``GaussianMixture`` reading a Zarr store on a
          2-process ``distributed.LocalCluster`` (one thread each, ``cache=False``),
          D=16, K=8, 'full' and 'diag', with 0%, 10% and 30% of the values missing at
          random (``missing='marginalize'``), next to ``missing='error'`` on the
          complete store. The configurations are interleaved, round after round, so that
          the load of other processes on the machine spreads over all of them; the
          workers' CPU seconds per iteration (summed over both) are less disturbed by
          that load than the wall seconds.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np
from scipy.optimize import linear_sum_assignment

from daskgmm.engine import covariance as cov_types
from daskgmm.engine.estep import Components, estep_statistics, make_plan
from daskgmm.engine.marginal import (
    make_marginal_plan,
    marginal_statistics,
    missing_layout,
)
from daskgmm.models.gaussian import GaussianModel, GaussianParams


# --------------------------------------------------------------------------------------
# data and EM
# --------------------------------------------------------------------------------------
def mixture(K: int, D: int, separation: float, seed: int) -> GaussianParams:
    """A random full-covariance mixture whose means are ``separation`` apart on
    average (covariance eigenvalues between about 0.3 and 3)."""
    rng = np.random.default_rng(seed)
    A = rng.normal(scale=0.5, size=(K, D, D))
    covariances = A @ A.transpose(0, 2, 1) + 0.3 * np.eye(D)
    means = rng.normal(scale=separation / np.sqrt(2 * D), size=(K, D))
    chol, prec_chol = cov_types.FULL.factorise(covariances)
    return GaussianParams(cov_types.FULL, np.full(K, 1.0 / K), means, covariances,
                          prec_chol, chol)


def sample(p: GaussianParams, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    labels = rng.choice(len(p.weights), size=n, p=p.weights)
    z = rng.normal(size=(n, p.means.shape[1]))
    return p.means[labels] + np.einsum("nde,ne->nd", p.covariances_cholesky[labels], z)


def start_from(X: np.ndarray, K: int, seed: int) -> GaussianParams:
    """Equal weights, the data's covariance for every component, and K observed
    values of distinct rows (complete ones) as means: the same start for every fit."""
    rng = np.random.default_rng(seed)
    complete = np.flatnonzero(~np.isnan(X).any(axis=1))
    means = X[rng.choice(complete, size=K, replace=False)]
    covariance = np.cov(X[complete], rowvar=False)
    covariances = np.broadcast_to(covariance, (K, *covariance.shape)).copy()
    chol, prec_chol = cov_types.FULL.factorise(covariances)
    return GaussianParams(cov_types.FULL, np.full(K, 1.0 / K), means, covariances,
                          prec_chol, chol)


def em(X: np.ndarray, state: GaussianParams, *, marginal: bool, tol: float = 1e-7,
       max_iter: int = 1000) -> tuple[GaussianParams, int, float]:
    """EM to convergence of the mean log-likelihood (observed-data one with
    ``marginal``): the fitted parameters, iterations and final mean log-likelihood."""
    K = len(state.weights)
    model = GaussianModel(K, "full", reg_covar=1e-6)
    centre = state.weights @ state.means
    previous = -np.inf
    for iteration in range(1, max_iter + 1):
        components = [model.components(state)]
        if marginal:
            stats = marginal_statistics(X, None, 0,
                                        make_marginal_plan(components, centre)).stats[0]
        else:
            stats = estep_statistics(X, None, 0, make_plan(components, centre)).stats[0]
        mean_ll = float(stats["ll"] / stats["n"])
        state = model.m_step(stats, centre, state)
        if abs(mean_ll - previous) < tol:
            return state, iteration, mean_ll
        previous = mean_ll
    return state, max_iter, mean_ll


def distances(fit: GaussianParams, reference: GaussianParams) -> tuple[float, float]:
    """Largest standardised mean distance and largest relative Frobenius distance of
    the covariances, components matched by the nearest means."""
    cost = np.linalg.norm(fit.means[:, None] - reference.means[None], axis=2)
    rows, cols = linear_sum_assignment(cost)
    sd = np.sqrt(np.diagonal(reference.covariances, axis1=1, axis2=2))
    mean_gap = np.abs(fit.means[rows] - reference.means[cols]) / sd[cols]
    cov_gap = (np.linalg.norm(fit.covariances[rows] - reference.covariances[cols],
                              axis=(1, 2))
               / np.linalg.norm(reference.covariances[cols], axis=(1, 2)))
    return float(mean_gap.max()), float(cov_gap.max())


def accuracy(n: int, D: int, K: int, fractions: list[float]) -> None:
    truth = mixture(K, D, separation=12.0, seed=1)
    X = sample(truth, n, seed=2)
    start = start_from(X, K, seed=3)
    complete, iters, ll = em(X, start, marginal=False)
    dmean, dcov = distances(complete, truth)
    print(f"\naccuracy: N={n} x D={D}, K={K} 'full', well separated; complete-data fit "
          f"in {iters} iterations (mean log-likelihood {ll:.4f}; from the true "
          f"parameters: {dmean:.4f} sd, {dcov:.4f} relative); fits' distances to it, "
          "and weights:")
    print(f"{'missing':>8} {'method':>12} {'iter':>5} {'max |dmean|/sd':>15} "
          f"{'max rel dcov':>13}")
    rng = np.random.default_rng(4)
    for fraction in fractions:
        holes = X.copy()
        holes[rng.random(X.shape) < fraction] = np.nan
        holes = holes[~np.isnan(holes).all(axis=1)]  # no row without a value
        imputed = np.where(np.isnan(holes), np.nanmean(holes, axis=0), holes)
        fit_start = start_from(holes, K, seed=3)
        for name, data, marginal in (("marginal", holes, True),
                                     ("mean-impute", imputed, False)):
            fit, iters, _ = em(data, fit_start, marginal=marginal)
            dmean, dcov = distances(fit, complete)
            print(f"{fraction:>8.0%} {name:>12} {iters:>5} {dmean:>15.4f} {dcov:>13.4f}  "
                  + " ".join(f"{v:.3f}" for v in np.sort(fit.weights)))


# --------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------
def best_of(fn, *args, repeat: int = 5) -> float:
    """The shortest of ``repeat`` timings of ``fn(*args)``, in CPU seconds of this
    process (one BLAS thread: its wall time on an idle machine, and less disturbed
    than wall time by other processes on a loaded one)."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn(*args)
        times.append(time.process_time() - start)
    return min(times)


def unit_components(cov_name: str, K: int, D: int, seed: int) -> Components:
    rng = np.random.default_rng(seed)
    cov = cov_types.get(cov_name)
    if cov_name == "full":
        A = rng.normal(scale=0.3, size=(K, D, D))
        covariances = A @ A.transpose(0, 2, 1) + np.eye(D)
    else:
        covariances = rng.uniform(0.5, 2.0, size=(K, D))
    _, prec_chol = cov.factorise(covariances)
    return Components.gaussian(cov, np.full(K, 1.0 / K), rng.normal(size=(K, D)), prec_chol)


def timing(n: int, D: int, K: int, pools: list[int]) -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(n, D))
    print(f"\ntiming: CPU seconds per chunk of {n} rows, D={D}, K={K}, float64, one "
          "thread (best of 5)")
    print(f"{'type':>5} {'missing':>8} {'patterns':>9} {'today':>8} {'marginal':>9}")
    for cov_name in ("full", "diag"):
        comp = unit_components(cov_name, K, D, seed=6)
        centre = np.zeros(D)
        today = best_of(estep_statistics, X, None, 0, make_plan([comp], centre))
        mplan = make_marginal_plan([comp], centre)
        for fraction in (0.0, 0.1, 0.3):
            holes = X.copy()
            holes[rng.random(X.shape) < fraction] = np.nan
            patterns = missing_layout(np.isnan(holes)).n_patterns
            seconds = best_of(marginal_statistics, holes, None, 0, mplan)
            print(f"{cov_name:>5} {fraction:>8.0%} {patterns:>9} {today:>8.3f} "
                  f"{seconds:>9.3f}")
    q = round(0.3 * D)
    print(f"\n'full', every row missing {q} of its {D} values: CPU seconds per chunk of "
          f"{n} rows by number of distinct patterns")
    print(f"{'patterns':>9} {'seconds':>8}")
    comp = unit_components("full", K, D, seed=6)
    mplan = make_marginal_plan([comp], np.zeros(D))
    for size in pools:
        pool = np.zeros((size, D), dtype=bool)
        for i in range(size):  # distinct subsets (the pool is far below C(D, q))
            while True:
                subset = np.zeros(D, dtype=bool)
                subset[rng.choice(D, size=q, replace=False)] = True
                if not (pool[:i] == subset).all(axis=1).any():
                    pool[i] = subset
                    break
        holes = np.where(pool[rng.integers(size, size=n)], np.nan, X)
        patterns = missing_layout(np.isnan(holes)).n_patterns
        seconds = best_of(marginal_statistics, holes, None, 0, mplan)
        print(f"{patterns:>9} {seconds:>8.3f}")


# --------------------------------------------------------------------------------------
# through the estimators
# --------------------------------------------------------------------------------------
def estimator_accuracy(n: int, D: int, K: int, fractions: list[float]) -> None:
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from daskgmm import GaussianMixture

    truth = mixture(K, D, separation=12.0, seed=1)
    X = sample(truth, n, seed=2)

    def fit(data: np.ndarray, missing: str) -> GaussianMixture:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return GaussianMixture(K, random_state=0, tol=1e-6, max_iter=1000,
                                   missing=missing).fit(data)

    complete = fit(X, "error")
    dmean, dcov = distances(_as_params(complete), truth)
    print(f"\nestimator accuracy: N={n} x D={D}, K={K} 'full', well separated, "
          f"GaussianMixture(random_state=0); complete-data fit in {complete.n_iter_} "
          f"iterations (from the truth: {dmean:.4f} sd, {dcov:.4f} relative); fits' "
          "distances to it, and weights:")
    print(f"{'missing':>8} {'method':>12} {'iter':>5} {'max |dmean|/sd':>15} "
          f"{'max rel dcov':>13} {'empty rows':>11}")
    rng = np.random.default_rng(4)
    for fraction in fractions:
        holes = X.copy()
        holes[rng.random(X.shape) < fraction] = np.nan
        imputed = np.where(np.isnan(holes), np.nanmean(holes, axis=0), holes)
        for name, gm in (("marginal", fit(holes, "marginalize")),
                         ("mean-impute", fit(imputed, "error"))):
            dmean, dcov = distances(_as_params(gm), _as_params(complete))
            empty = getattr(gm, "n_empty_rows_", 0.0)
            print(f"{fraction:>8.0%} {name:>12} {gm.n_iter_:>5} {dmean:>15.4f} "
                  f"{dcov:>13.4f} {empty:>11.0f}  "
                  + " ".join(f"{v:.3f}" for v in np.sort(gm.weights_)))


def _as_params(gm) -> GaussianParams:
    return GaussianParams.from_precisions_cholesky("full", gm.weights_, gm.means_,
                                                   gm.precisions_cholesky_,
                                                   gm.covariances_)


def _worker_cpu_seconds() -> float:
    return time.process_time()


class _IterationTimes:
    """An observer keeping the wall seconds of every EM iteration and, with a client,
    the CPU seconds the workers had spent at its end (summed over the workers)."""

    def __init__(self, client=None) -> None:
        self.seconds: list[float] = []
        self.cpu: list[float] = []
        self._client = client

    def iteration_finished(self, info) -> None:
        self.seconds.append(float(info.seconds))
        if self._client is not None:
            self.cpu.append(sum(self._client.run(_worker_cpu_seconds).values()))


def out_of_core(n: int, D: int, K: int, chunk_rows: int, rounds: int, iterations: int
                ) -> None:
    import tempfile
    import warnings

    import dask.array as da
    import zarr
    from distributed import Client, LocalCluster
    from sklearn.exceptions import ConvergenceWarning

    from daskgmm import GaussianMixture
    from daskgmm.diagnostics import observers

    fractions = (0.0, 0.1, 0.3)
    truth = mixture(K, D, separation=12.0, seed=7)
    with tempfile.TemporaryDirectory() as directory:
        stores = {}
        for fraction in fractions:
            path = f"{directory}/x{fraction}.zarr"
            z = zarr.create_array(store=path, shape=(n, D), chunks=(chunk_rows, D),
                                  dtype="float64")
            for i, start in enumerate(range(0, n, chunk_rows)):
                rows = min(chunk_rows, n - start)
                block = sample(truth, rows, seed=1000 + i)
                holes = np.random.default_rng([8, i]).random(block.shape) < fraction
                block[holes] = np.nan
                z[start:start + rows] = block
            stores[fraction] = path
        configs = [(cov, fraction, "marginalize") for cov in ("full", "diag")
                   for fraction in fractions]
        configs += [(cov, 0.0, "error") for cov in ("full", "diag")]
        found: dict[tuple, list[float]] = {c: [] for c in configs}
        cpu: dict[tuple, list[float]] = {c: [] for c in configs}
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            for r in range(rounds):
                for config in configs[r % len(configs):] + configs[:r % len(configs)]:
                    cov, fraction, missing = config
                    times = _IterationTimes(client)
                    with observers.observe(times), warnings.catch_warnings():
                        warnings.simplefilter("ignore", ConvergenceWarning)
                        GaussianMixture(K, covariance_type=cov, random_state=0, tol=0,
                                        max_iter=iterations, cache=False,
                                        missing=missing).fit(da.from_zarr(stores[fraction]))
                    found[config].append(float(np.median(times.seconds[1:])))
                    cpu[config].append(float(np.median(np.diff(times.cpu))))
    print(f"\nout of core: Zarr, N={n:,} x D={D} in chunks of {chunk_rows:,} rows, K={K}, "
          "2 worker processes of 1 thread, cache=False; wall seconds and the workers' CPU "
          f"seconds per EM iteration (median of {rounds} interleaved rounds; a loaded "
          "machine: CPU seconds are the steadier)")
    print(f"{'type':>5} {'missing':>8} {'option':>12} {'wall s':>8} {'vs complete':>12} "
          f"{'CPU s':>8} {'vs complete':>12}")
    for cov in ("full", "diag"):
        rows = [((cov, 0.0, "error"), 0.0, "error")]
        rows += [((cov, f, "marginalize"), f, "marginalize") for f in fractions]
        base = float(np.median(found[rows[0][0]]))
        base_cpu = float(np.median(cpu[rows[0][0]]))
        for config, fraction, option in rows:
            value = float(np.median(found[config]))
            value_cpu = float(np.median(cpu[config]))
            print(f"{cov:>5} {fraction:>8.0%} {option:>12} {value:>8.3f} "
                  f"{value / base:>12.2f} {value_cpu:>8.3f} {value_cpu / base_cpu:>12.2f}")


SECTIONS = ("accuracy", "timing", "estimator", "out-of-core")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a minute)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS),
                        help="the sections to run (default: all)")
    args = parser.parse_args()
    run = set(args.only)
    if args.quick:
        if "accuracy" in run:
            accuracy(2000, 8, 4, [0.1, 0.25, 0.5])
        if "timing" in run:
            timing(10_000, 16, 8, [1, 100, 1000])
        if "estimator" in run:
            estimator_accuracy(2000, 8, 4, [0.1, 0.25, 0.5])
        if "out-of-core" in run:
            out_of_core(40_000, 16, 8, 10_000, rounds=1, iterations=3)
    else:
        if "accuracy" in run:
            accuracy(20_000, 8, 4, [0.1, 0.25, 0.5])
        if "timing" in run:
            timing(100_000, 16, 8, [1, 10, 100, 1000, 4000])
        if "estimator" in run:
            estimator_accuracy(20_000, 8, 4, [0.1, 0.25, 0.5])
        if "out-of-core" in run:
            out_of_core(800_000, 16, 8, 100_000, rounds=3, iterations=4)


if __name__ == "__main__":
    main()
