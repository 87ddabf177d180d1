"""``small``: scikit-learn's own small datasets with default settings, a whole fit
(initialisation included) of daskgmm against scikit-learn's.

iris (150 x 4, K=3 full), wine (178 x 13, K=3 full) and digits (1,797 x 64, K=10 diag),
as shipped with scikit-learn; ``GaussianMixture(K, covariance_type=...,
random_state=r).fit(X)`` with every other parameter at its default, the two libraries
alternating, round ``r`` using ``random_state=r`` for both; the figure is the median wall
time of the fits. Issue 21's target: no slower than scikit-learn.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from benchlib.report import at_most, fmt_s, fmt_x, row
from benchlib.util import TIMES, median, ratio, rotated

ID = "small"
#: (name, loader, K, covariance type)
DATASETS = (("iris", "load_iris", 3, "full"), ("wine", "load_wine", 3, "full"),
            ("digits", "load_digits", 10, "diag"))
TARGET = 1.0


def _fit_seconds(cls: Any, X: Any, k: int, cov: str, seed: int) -> tuple[float, int]:
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        model = cls(k, covariance_type=cov, random_state=seed).fit(X)
        return time.perf_counter() - t0, int(model.n_iter_)


def run(ctx: Any) -> dict[str, Any]:
    import sklearn.datasets
    from sklearn.mixture import GaussianMixture as SkGM

    from daskgmm import GaussianMixture as DgGM

    rounds = 3 if ctx.args.quick else 9
    systems = {"sklearn": SkGM, "daskgmm": DgGM}
    out = []
    for name, loader, k, cov in DATASETS:
        X = getattr(sklearn.datasets, loader)().data
        for cls in systems.values():  # warm-up: imports, first calls
            _fit_seconds(cls, X, k, cov, 0)
        times: dict[str, list[float]] = {s: [] for s in systems}
        iters: dict[str, list[int]] = {s: [] for s in systems}
        for r in range(rounds):
            for system in rotated(list(systems), r):
                seconds, n_iter = _fit_seconds(systems[system], X, k, cov, r)
                times[system].append(seconds)
                iters[system].append(n_iter)
        sk, dg = median(times["sklearn"]), median(times["daskgmm"])
        out.append({"dataset": name, "shape": list(X.shape), "n_components": k,
                    "covariance_type": cov, "rounds": rounds, "seconds": times,
                    "n_iter": iters, "sklearn_s": sk, "daskgmm_s": dg,
                    "daskgmm_over_sklearn": ratio(dg, sk)})
    return {"datasets": out}


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in res["datasets"]:
        n, d = r["shape"]
        out.append(row(ID, f"{r['dataset']} ({n}{TIMES}{d}, K={r['n_components']} "
                           f"{r['covariance_type']}, defaults): scikit-learn / daskgmm fit, "
                           f"median of {r['rounds']} alternating",
                       f"{fmt_s(r['sklearn_s'])} / {fmt_s(r['daskgmm_s'])} = "
                       f"{fmt_x(r['daskgmm_over_sklearn'])}",
                       f"≤ {TARGET}{TIMES}", at_most(r["daskgmm_over_sklearn"], TARGET),
                       raw=r["daskgmm_over_sklearn"]))
    return out
