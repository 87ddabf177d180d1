"""Model selection on real data sets with known classes: daskgmm's selector against R's mclust.

Run (from the repository root, with the project's virtualenv)::

    python scripts/bench_mclust.py                    # every data set, seeds 0-4, n_init 1 and 10
    python scripts/bench_mclust.py --quick            # iris, seed 0, n_init=1: a few seconds
    python scripts/bench_mclust.py --refresh-mclust   # run R's mclust again (needs Rscript)

For each data set, mclust (``Mclust``) chooses among the four models that match daskgmm's
covariance types (VVV = full, EEE = tied, VVI = diag, VII = spherical) and G = 1..k-max by
its BIC, and daskgmm's ``GaussianMixtureSelector(n_components=range(1, k_max + 1))``
chooses among the same candidates, with its defaults and with more restarts, for several
seeds. Both BICs are given in scikit-learn's sign (-2 log L + p log n, lower is better;
mclust reports 2 log L - p log n, higher is better, and counts p as daskgmm does: checked
below for every candidate). Agreement with the known classes is the adjusted Rand index
(ARI) of the chosen model's classification.

A daskgmm run passes ("ok") when it chose mclust's model or one with a better (lower) BIC
than mclust's, and its ARI is not clearly worse: not lower than mclust's by more than
``ARI_MARGIN``. ("mclust's model" is the same covariance type and number of components;
with one component full and tied are the same model.)

mclust's results are stored in ``scripts/bench-results/mclust-reference.json`` (its
choice, its BIC of every candidate, its ARI, the parameters of its chosen model, the R and
mclust versions, the date), so that the script runs without R: it then uses the stored
results and says so. The data sets that ship with mclust (GPL) are not stored in this
repository: without R they are skipped with a note. The stored parameters are checked on
every run whose data are available: daskgmm's BIC of mclust's parameters must equal
mclust's BIC and daskgmm's classification with them mclust's ARI.

Output: ``OUT/mclust-comparison.json`` (every figure) and ``OUT/mclust-comparison.md``
(the table, also printed).
"""

from __future__ import annotations

import argparse
import ast
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "bench-results" / "mclust-reference.json"

#: A daskgmm choice whose ARI is below mclust's by more than this is "clearly worse".
ARI_MARGIN = 0.05
#: BICs closer than this (relative) are equal: the same optimum found by both.
BIC_RTOL = 1e-6
#: mclust's model names for daskgmm's covariance types (G >= 2; with G = 1 mclust calls
#: them XXX, XXX, XXI and XII).
MODELS = {"VVV": "full", "EEE": "tied", "VVI": "diag", "VII": "spherical"}
ONE_COMPONENT = {"XXX": "full", "XXI": "diag", "XII": "spherical"}


@dataclass(frozen=True)
class DataSet:
    name: str
    source: str                  # "sklearn" or "mclust"
    item: str                    # loader (sklearn) or the R data set's name (mclust)
    label: str = ""              # mclust: the column with the known classes
    drop: tuple[str, ...] = ()   # mclust: further columns that are not measurements
    note: str = ""


DATASETS = {d.name: d for d in (
    DataSet("iris", "sklearn", "load_iris"),
    DataSet("wine", "sklearn", "load_wine"),
    DataSet("breast_cancer", "sklearn", "load_breast_cancer",
            note="the same measurements as mclust's wdbc; some features vary on the "
                 "scale of reg_covar (mclust's VVV K=3 has a covariance eigenvalue of "
                 "1.1e-7), so reg_covar=1e-6 alone costs daskgmm ~1000 in BIC there"),
    DataSet("digits", "sklearn", "load_digits",
            note="constant pixels: mclust finds every model but VII singular (NA BIC); "
                 "daskgmm's reg_covar keeps them finite"),
    DataSet("diabetes", "mclust", "diabetes", label="class"),
    DataSet("banknote", "mclust", "banknote", label="Status"),
    DataSet("thyroid", "mclust", "thyroid", label="Diagnosis"),
    DataSet("wdbc", "mclust", "wdbc", label="Diagnosis", drop=("ID",),
            note="the same measurements as scikit-learn's breast_cancer (see there)"),
    DataSet("cross", "mclust", "cross", label="group"),
)}
QUICK_DATASETS = ("iris",)

# The R side: export an mclust data set (X.csv, y.txt) or read X.csv, run Mclust over
# the four models and G = 1..gmax, write its choice, its BIC table, its parameter counts
# and the chosen model's parameters, one number per line at full precision.
R_PROGRAM = r"""
args <- commandArgs(trailingOnly = TRUE)
out <- args[1]; src <- args[2]; gmax <- as.integer(args[3])
models <- strsplit(args[4], ",")[[1]]
label <- args[5]
drop <- if (nzchar(args[6])) strsplit(args[6], ",")[[1]] else character(0)
export_only <- args[7] == "export-only"
suppressPackageStartupMessages(library(mclust))
put <- function(x, name) writeLines(sprintf("%.17g", as.vector(x)), file.path(out, name))
if (startsWith(src, "mclust:")) {
  name <- substring(src, 8)
  env <- new.env()
  data(list = name, package = "mclust", envir = env)
  d <- get(name, envir = env)
  writeLines(as.character(d[[label]]), file.path(out, "y.txt"))
  X <- data.matrix(d[, setdiff(names(d), c(label, drop)), drop = FALSE])
  put(t(X), "X.txt")
  writeLines(as.character(dim(X)), file.path(out, "shape.txt"))
}
if (export_only) quit(save = "no")
shape <- as.integer(readLines(file.path(out, "shape.txt")))
X <- matrix(as.numeric(readLines(file.path(out, "X.txt"))), nrow = shape[1],
            ncol = shape[2], byrow = TRUE)
ctrl <- emControl()
writeLines(c(
  paste0("r_version\t", R.version.string),
  paste0("mclust_version\t", as.character(packageVersion("mclust"))),
  paste0("hcUse\t", mclust.options("hcUse")),
  paste0("hcModelName\t", mclust.options("hcModelName")),
  paste0("subset\t", mclust.options("subset")),
  paste0("emControl_eps\t", sprintf("%.17g", ctrl$eps)),
  paste0("emControl_tol\t", paste(sprintf("%.17g", ctrl$tol), collapse = " "))),
  file.path(out, "versions.txt"))
t0 <- proc.time()[["elapsed"]]
bic <- mclustBIC(X, G = 1:gmax, modelNames = models)
m <- Mclust(X, x = bic)
seconds <- proc.time()[["elapsed"]] - t0
put(unclass(bic)[, models, drop = FALSE], "bic.txt")
put(sapply(models, function(mn) sapply(1:gmax, function(g) nMclustParams(mn, ncol(X), g))),
    "npar.txt")
writeLines(c(paste0("model\t", m$modelName), paste0("G\t", m$G),
             paste0("bic\t", sprintf("%.17g", m$bic)),
             paste0("loglik\t", sprintf("%.17g", m$loglik)),
             paste0("df\t", m$df), paste0("n\t", m$n), paste0("seconds\t", seconds)),
           file.path(out, "choice.txt"))
writeLines(as.character(m$classification), file.path(out, "class.txt"))
put(m$parameters$pro, "pro.txt")
put(m$parameters$mean, "mean.txt")
put(m$parameters$variance$sigma, "sigma.txt")
"""


def log(message: str) -> None:
    print(f"[bench-mclust {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr,
          flush=True)


def _value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=f"A run is 'ok' when the selector chose mclust's model or one with a lower "
               f"BIC, and its ARI is at most {ARI_MARGIN} below mclust's.")
    p.add_argument("--quick", action="store_true",
                   help="iris only, seed 0, n_init=1, mclust's stored results")
    p.add_argument("--datasets", help="comma-separated, from: " + ", ".join(DATASETS))
    p.add_argument("--seeds", default="0,1,2,3,4", help="random_state values (default 0-4)")
    p.add_argument("--n-init", default="1,10",
                   help="n_init settings of the selector, comma-separated (default 1,10)")
    p.add_argument("--k-max", type=int, default=9, help="candidates K = 1..k-max (default 9)")
    p.add_argument("--init", default=None,
                   help="the selector's init_params (any name it accepts, e.g. kmeans or "
                        "robust); default: the selector's own default")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any further GaussianMixtureSelector parameter (repeatable), e.g. "
                        "--set reg_covar=1e-5; VALUE is a Python literal or a string")
    p.add_argument("--refresh-mclust", action="store_true",
                   help="run mclust in R for the chosen data sets and store its results")
    p.add_argument("--rscript", default=shutil.which("Rscript") or "",
                   help="the Rscript program (default: found on PATH); '' = no R")
    p.add_argument("--reference", default=str(REFERENCE),
                   help="mclust's stored results (JSON)")
    p.add_argument("--out", default="bench-out", help="directory for the outputs")
    p.add_argument("--rebuild", metavar="JSON",
                   help="rebuild the table and report from a run's mclust-comparison.json "
                        "(no fits)")
    args = p.parse_args(argv)
    if args.quick:
        args.datasets = args.datasets or ",".join(QUICK_DATASETS)
        args.seeds, args.n_init = "0", "1"
    names = args.datasets.split(",") if args.datasets else list(DATASETS)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        p.error(f"unknown data set(s) {', '.join(unknown)}; choose from "
                + ", ".join(DATASETS))
    args.datasets = names
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.n_init = [int(s) for s in args.n_init.split(",")]
    extra = {}
    for item in args.set:
        name, sep, text = item.partition("=")
        if not sep or not name:
            p.error(f"--set wants NAME=VALUE, got {item!r}")
        extra[name.strip()] = _value(text.strip())
    if args.init is not None:
        extra["init_params"] = args.init
    args.selector_options = extra
    if args.refresh_mclust and not args.rscript:
        p.error("--refresh-mclust needs R: Rscript was not found (give --rscript PATH)")
    return args


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
def fingerprint(X: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(X, dtype=np.float64).tobytes()).hexdigest()


def load_sklearn(spec: DataSet) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, spec.item)()
    return np.ascontiguousarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)


def write_matrix(X: np.ndarray, workdir: Path) -> None:
    (workdir / "X.txt").write_text("\n".join(f"{v:.17g}" for v in X.ravel()) + "\n",
                                   encoding="ascii")
    (workdir / "shape.txt").write_text(f"{X.shape[0]}\n{X.shape[1]}\n", encoding="ascii")


def read_numbers(path: Path) -> np.ndarray:
    return np.array([float("nan") if v.strip() == "NA" else float(v)
                     for v in path.read_text(encoding="ascii").split()])


def read_table(path: Path) -> dict[str, str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return dict(line.split("\t", 1) for line in lines if "\t" in line)


def run_r(rscript: str, workdir: Path, spec: DataSet, k_max: int, *, export_only: bool
          ) -> None:
    program = workdir / "mclust.R"
    program.write_text(R_PROGRAM, encoding="utf-8")
    source = f"mclust:{spec.item}" if spec.source == "mclust" else "X.txt"
    cmd = [rscript, "--vanilla", str(program), str(workdir), source, str(k_max),
           ",".join(MODELS), spec.label or "-", ",".join(spec.drop),
           "export-only" if export_only else "fit"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"Rscript failed on {spec.name} ({proc.returncode}): "
                           + proc.stderr[-2000:])


def load_mclust_data(rscript: str, spec: DataSet, workdir: Path
                     ) -> tuple[np.ndarray, np.ndarray]:
    """An mclust data set's measurements and known classes, exported by R."""
    run_r(rscript, workdir, spec, 1, export_only=True)
    n, d = (int(v) for v in (workdir / "shape.txt").read_text(encoding="ascii").split())
    X = read_numbers(workdir / "X.txt").reshape(n, d)
    y = np.array((workdir / "y.txt").read_text(encoding="utf-8").splitlines())
    return X, y


# ---------------------------------------------------------------------------------------
# mclust
# ---------------------------------------------------------------------------------------
def daskgmm_parameters(model: str, G: int, pro: np.ndarray, mean: np.ndarray,
                       sigma: np.ndarray, d: int) -> dict[str, Any]:
    """mclust's parameters (``pro``, ``mean`` d x G, ``variance$sigma`` d x d x G, all
    column-major) in daskgmm's layout for its covariance type."""
    cov_type = MODELS.get(model) or ONE_COMPONENT[model]
    means = mean.reshape(G, d)
    full = sigma.reshape(G, d, d).transpose(0, 2, 1)
    covariances = {"full": full, "tied": full[0],
                   "diag": np.diagonal(full, axis1=1, axis2=2),
                   "spherical": full[:, 0, 0]}[cov_type]
    return {"covariance_type": cov_type, "weights": pro.tolist(), "means": means.tolist(),
            "covariances": np.asarray(covariances).tolist()}


def run_mclust(rscript: str, spec: DataSet, X: np.ndarray, y: np.ndarray, k_max: int,
               workdir: Path) -> dict[str, Any]:
    """Run Mclust on X in R; its choice, BIC table, parameter counts and parameters."""
    from sklearn.metrics import adjusted_rand_score

    write_matrix(X, workdir)
    run_r(rscript, workdir, spec, k_max, export_only=False)
    n, d = X.shape
    names = list(MODELS)
    bic = -read_numbers(workdir / "bic.txt").reshape(len(names), k_max)   # sklearn's sign
    npar = read_numbers(workdir / "npar.txt").reshape(len(names), k_max)
    choice = read_table(workdir / "choice.txt")
    versions = read_table(workdir / "versions.txt")
    G = int(choice["G"])
    labels = (workdir / "class.txt").read_text(encoding="ascii").split()
    params = daskgmm_parameters(choice["model"], G, read_numbers(workdir / "pro.txt"),
                                read_numbers(workdir / "mean.txt"),
                                read_numbers(workdir / "sigma.txt"), d)
    return {
        "source": spec.source, "n": n, "d": d, "classes": len(np.unique(y)),
        "x_sha256": fingerprint(X),
        "model": choice["model"], "n_components": G,
        "covariance_type": params["covariance_type"],
        "bic": -float(choice["bic"]), "loglik": float(choice["loglik"]),
        "n_parameters": int(choice["df"]),
        "ari": float(adjusted_rand_score(y, labels)),
        "seconds": float(choice["seconds"]),
        "bic_table": {m: [None if math.isnan(v) else float(v) for v in row]
                      for m, row in zip(names, bic, strict=True)},
        "n_parameters_table": {m: [int(v) for v in row]
                               for m, row in zip(names, npar, strict=True)},
        "parameters": params,
        "versions": versions,
    }


# ---------------------------------------------------------------------------------------
# daskgmm
# ---------------------------------------------------------------------------------------
def precisions_cholesky(cov_type: str, covariances: np.ndarray) -> np.ndarray:
    """scikit-learn's ``precisions_cholesky_`` of the covariances (P with P P^T = inv)."""
    if cov_type in ("diag", "spherical"):
        return 1.0 / np.sqrt(covariances)
    full = covariances[None] if cov_type == "tied" else covariances
    d = full.shape[-1]
    chol = np.linalg.cholesky(full)
    inv = np.stack([np.linalg.solve(c, np.eye(d)) for c in chol])   # L^-1, lower
    out = np.swapaxes(inv, 1, 2)
    return out[0] if cov_type == "tied" else out


def mixture_from(params: dict[str, Any]) -> Any:
    """A fitted ``daskgmm.GaussianMixture`` holding the given parameters."""
    import daskgmm

    cov_type = params["covariance_type"]
    weights = np.asarray(params["weights"], dtype=np.float64)
    means = np.asarray(params["means"], dtype=np.float64)
    covariances = np.asarray(params["covariances"], dtype=np.float64)
    gm = daskgmm.GaussianMixture(len(weights), covariance_type=cov_type)
    gm.weights_, gm.means_, gm.covariances_ = weights, means, covariances
    gm.precisions_cholesky_ = precisions_cholesky(cov_type, covariances)
    gm.precisions_ = (1.0 / covariances if cov_type in ("diag", "spherical")
                      else np.linalg.inv(covariances))
    gm.n_features_in_ = means.shape[1]
    gm.converged_, gm.n_iter_, gm.lower_bound_ = True, 0, float("nan")
    return gm


def check_reference(X: np.ndarray, y: np.ndarray, ref: dict[str, Any]) -> dict[str, Any]:
    """daskgmm's BIC and classification with mclust's stored parameters."""
    from sklearn.metrics import adjusted_rand_score

    gm = mixture_from(ref["parameters"])
    bic = float(gm.bic(X))
    ari = float(adjusted_rand_score(y, gm.predict(X)))
    return {"bic_daskgmm": bic, "bic_mclust": ref["bic"],
            "bic_rel_diff": abs(bic - ref["bic"]) / abs(ref["bic"]),
            "ari_daskgmm": ari, "ari_mclust": ref["ari"],
            "ari_diff": abs(ari - ref["ari"])}


def run_selector(X: np.ndarray, y: np.ndarray, seed: int, n_init: int, k_max: int,
                 options: dict[str, Any]) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score

    import daskgmm

    sel = daskgmm.GaussianMixtureSelector(n_components=range(1, k_max + 1),
                                          random_state=seed, n_init=n_init, **options)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sel.fit(X)
    seconds = time.perf_counter() - t0
    best = sel.best_estimator_
    res = sel.results_
    return {
        "seed": seed, "n_init": n_init, "init_params": sel.get_params()["init_params"],
        "n_components": int(sel.best_params_["n_components"]),
        "covariance_type": sel.best_params_["covariance_type"],
        "bic": float(res["bic"][sel.best_index_]),
        "ari": float(adjusted_rand_score(y, best.predict(X))),
        "smallest_component_rows": float(np.min(best.weights_) * X.shape[0]),
        "seconds": seconds,
        "candidates": {"n_components": [int(k) for k in res["n_components"]],
                       "covariance_type": list(res["covariance_type"]),
                       "bic": [float(b) for b in res["bic"]],
                       "n_parameters": [int(p) for p in res["n_parameters"]]},
    }


def candidate_list(run: dict[str, Any]) -> list[dict[str, Any]]:
    """A run's candidates, one dict each (they are stored as columns, like results_)."""
    cols = run["candidates"]
    if isinstance(cols, list):   # the layout of older runs
        return cols
    return [dict(zip(cols, values, strict=True)) for values in zip(*cols.values(),
                                                                    strict=True)]


#: What a comparison row keeps of mclust's stored results.
MCLUST_SUMMARY = ("model", "n_components", "covariance_type", "bic", "ari", "n", "d",
                  "classes")


def slim_row(row: dict[str, Any]) -> dict[str, Any]:
    """A row as stored: mclust's summary only, the candidates as columns."""
    run = dict(row["run"])
    cands = candidate_list(run)
    run["candidates"] = {key: [c[key] for c in cands]
                         for key in ("n_components", "covariance_type", "bic")}
    return {"dataset": row["dataset"],
            "mclust": {k: row["mclust"][k] for k in MCLUST_SUMMARY}, "run": run}


# ---------------------------------------------------------------------------------------
# judging
# ---------------------------------------------------------------------------------------
def same_model(k1: int, c1: str, k2: int, c2: str) -> bool:
    if k1 != k2:
        return False
    return c1 == c2 or (k1 == 1 and {c1, c2} <= {"full", "tied"})


def verdict(run: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Whether a selector run chose mclust's model or a better BIC, ARI not clearly worse."""
    same = same_model(run["n_components"], run["covariance_type"], ref["n_components"],
                      ref["covariance_type"])
    delta = run["bic"] - ref["bic"]
    better = delta <= BIC_RTOL * abs(ref["bic"])
    ari_ok = run["ari"] >= ref["ari"] - ARI_MARGIN
    at_mclust = [c["bic"] for c in candidate_list(run)
                 if same_model(c["n_components"], c["covariance_type"],
                               ref["n_components"], ref["covariance_type"])]
    why = []
    if not (same or better):
        why.append("another model with a worse BIC")
    if not ari_ok:
        why.append(f"ARI {run['ari'] - ref['ari']:+.3f}")
    return {"same_model": same, "bic_minus_mclust": delta, "better_or_equal_bic": better,
            "ari_not_clearly_worse": ari_ok, "ok": (same or better) and ari_ok,
            "why_not": "; ".join(why),
            "bic_at_mclust_model": min(at_mclust) if at_mclust else None}


def parameter_counts_agree(run: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """Candidates whose daskgmm n_parameters differs from mclust's count (none expected)."""
    out = []
    for c in candidate_list(run):
        model = next(m for m, t in MODELS.items() if t == c["covariance_type"])
        counts = ref["n_parameters_table"][model]
        if c["n_components"] <= len(counts) and counts[c["n_components"] - 1] != \
                c["n_parameters"]:
            out.append(f"{model} G={c['n_components']}: mclust "
                       f"{counts[c['n_components'] - 1]}, daskgmm {c['n_parameters']}")
    return out


def model_name(k: int, cov_type: str) -> str:
    return f"{cov_type} K={k}"


COLUMNS = ("data set", "n x d", "classes", "mclust: model", "mclust: BIC", "mclust: ARI",
           "seed", "n_init", "daskgmm: model", "daskgmm: BIC", "ΔBIC", "ΔBIC at mclust's",
           "daskgmm: ARI", "smallest n_k", "ok")


def table_rows(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out = []
    for r in rows:
        ref, run, v = r["mclust"], r["run"], r["verdict"]
        at = v["bic_at_mclust_model"]
        out.append((
            r["dataset"], f"{ref['n']} x {ref['d']}", str(ref["classes"]),
            f"{model_name(ref['n_components'], ref['covariance_type'])} ({ref['model']})",
            f"{ref['bic']:.1f}", f"{ref['ari']:.3f}",
            str(run["seed"]), str(run["n_init"]),
            model_name(run["n_components"], run["covariance_type"]),
            f"{run['bic']:.1f}", f"{v['bic_minus_mclust']:+.1f}",
            "-" if at is None else f"{at - ref['bic']:+.1f}",
            f"{run['ari']:.3f}", f"{run['smallest_component_rows']:.1f}",
            "yes" if v["ok"] else "no: " + v["why_not"]))
    return out


SUMMARY_COLUMNS = ("data set", "mclust: model", "mclust: BIC", "mclust: ARI", "n_init",
                   "daskgmm's choices (runs)", "ok")


def summary_rows(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """One line per data set and n_init: the selector's choices over the seeds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["run"]["n_init"]), []).append(r)
    out = []
    for (name, n_init), mine in groups.items():
        ref = mine[0]["mclust"]
        counts: dict[str, int] = {}
        for r in mine:
            key = model_name(r["run"]["n_components"], r["run"]["covariance_type"])
            counts[key] = counts.get(key, 0) + 1
        out.append((name, model_name(ref["n_components"], ref["covariance_type"]),
                    f"{ref['bic']:.1f}", f"{ref['ari']:.3f}", str(n_init),
                    ", ".join(f"{k} ({c})" for k, c in counts.items()),
                    f"{sum(r['verdict']['ok'] for r in mine)} of {len(mine)}"))
    return out


def markdown(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------
def load_reference(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        return {"datasets": {}}
    return json.loads(p.read_text(encoding="utf-8"))


def compact_json(obj: Any, indent: int = 0) -> str:
    """JSON with one key per line and every array of numbers on one line."""
    pad = " " * (indent + 1)
    if isinstance(obj, dict) and obj:
        items = [f"{pad}{json.dumps(k)}: {compact_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    return json.dumps(obj)


def save_reference(path: str, doc: dict[str, Any]) -> None:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(compact_json(doc) + "\n", encoding="utf-8")
    os.replace(tmp, p)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rebuild:
        write_report(json.loads(Path(args.rebuild).read_text(encoding="utf-8")),
                     Path(args.out))
        return 0
    reference = load_reference(args.reference)
    stored = reference.setdefault("datasets", {})
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    checks: dict[str, Any] = {}
    refreshed = False
    with tempfile.TemporaryDirectory(prefix="bench-mclust-") as tmp:
        for name in args.datasets:
            spec = DATASETS[name]
            workdir = Path(tmp) / name
            workdir.mkdir()
            if spec.source == "sklearn":
                X, y = load_sklearn(spec)
            elif args.rscript:
                X, y = load_mclust_data(args.rscript, spec, workdir)
            else:
                notes.append(f"{name}: skipped: it ships with R's mclust (GPL) and is not "
                             "stored here, and R is not available")
                continue
            ref = stored.get(name)
            if ref is not None and ref.get("k_max") != args.k_max:
                ref = None if args.rscript else ref
            if ref is not None and ref["x_sha256"] != fingerprint(X):
                notes.append(f"{name}: the stored mclust results are of other data "
                             "(fingerprint differs)")
                ref = None
            if args.refresh_mclust or (ref is None and args.rscript):
                log(f"{name}: running mclust in R")
                ref = run_mclust(args.rscript, spec, X, y, args.k_max, workdir)
                ref.update(k_max=args.k_max, date=_dt.date.today().isoformat(),
                           note=spec.note)
                if args.refresh_mclust:
                    stored[name] = ref
                    refreshed = True
                else:
                    notes.append(f"{name}: mclust was run now (R available, nothing "
                                 f"stored for k_max={args.k_max}); --refresh-mclust "
                                 "stores its results")
            elif ref is None:
                notes.append(f"{name}: skipped: no stored mclust results for k_max="
                             f"{args.k_max} and R is not available")
                continue
            else:
                notes.append(f"{name}: mclust's results are the stored ones ("
                             f"{ref['versions']['r_version']}, mclust "
                             f"{ref['versions']['mclust_version']}, {ref['date']})")
            if ref["k_max"] != args.k_max:
                notes.append(f"{name}: mclust's stored results are for G = 1.."
                             f"{ref['k_max']}, the selector's candidates K = 1.."
                             f"{args.k_max}")
            checks[name] = check_reference(X, y, ref)
            for n_init in args.n_init:
                for seed in args.seeds:
                    log(f"{name}: selector, n_init={n_init}, seed={seed}")
                    try:
                        run = run_selector(X, y, seed, n_init, args.k_max,
                                           args.selector_options)
                    except (ValueError, TypeError) as exc:
                        # an unknown parameter (TypeError) or a refused value
                        if not (isinstance(exc, TypeError)
                                or type(exc).__name__ == "InvalidParameterError"):
                            raise
                        print(f"bench_mclust: GaussianMixtureSelector refused the options "
                              f"{args.selector_options}: {exc}", file=sys.stderr)
                        return 2
                    mismatched = parameter_counts_agree(run, ref)
                    checks[name].setdefault("n_parameters_mismatches", []).extend(mismatched)
                    rows.append(slim_row({"dataset": name, "mclust": ref, "run": run}))
    if refreshed:
        reference["about"] = (
            "R's mclust (Mclust over VVV, EEE, VVI, VII and G = 1..k_max, its defaults) "
            "on each data set, by scripts/bench_mclust.py --refresh-mclust. BICs are in "
            "scikit-learn's sign (-2 log L + p log n, lower is better). Only results are "
            "stored, not mclust's data.")
        save_reference(args.reference, {"about": reference["about"], "datasets": stored})
        log(f"mclust's results written to {args.reference}")

    doc = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "commit": git_commit(), "platform": platform.platform(),
        "python": sys.version.split()[0],
        "settings": {"datasets": args.datasets, "seeds": args.seeds, "n_init": args.n_init,
                     "k_max": args.k_max, "selector_options": args.selector_options,
                     "ari_margin": ARI_MARGIN, "bic_rtol": BIC_RTOL},
        "rows": rows, "notes": notes, "reference_checks": checks,
    }
    write_report(doc, Path(args.out))
    return 0


def git_commit() -> str | None:
    try:
        proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE,
                              capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return proc.stdout.strip() or None


def write_report(doc: dict[str, Any], out: Path) -> None:
    """The table, its summary and legend, printed and written to OUT (the verdicts are
    judged again from each row's figures, so that a rebuilt report follows this rule)."""
    rows = doc["rows"] = [slim_row(r) for r in doc["rows"]]
    for r in rows:
        r["verdict"] = verdict(r["run"], r["mclust"])
    body = table_rows(rows)
    summary = []
    for n_init in sorted({r["run"]["n_init"] for r in rows}):
        mine = [r for r in rows if r["run"]["n_init"] == n_init]
        ok = sum(r["verdict"]["ok"] for r in mine)
        same = sum(r["verdict"]["same_model"] for r in mine)
        summary.append(f"n_init={n_init}: ok on {ok} of {len(mine)} runs; mclust's model "
                       f"chosen on {same}")
    options = doc["settings"]["selector_options"]
    legend = [
        f"ok = the selector chose mclust's model, or one whose BIC is lower than mclust's "
        f"(within {BIC_RTOL:g} relative counts as equal), and its ARI is not clearly worse "
        f"(not more than {ARI_MARGIN} below mclust's).",
        "BIC in scikit-learn's sign (-2 log L + p log n; lower is better); ΔBIC = "
        "daskgmm's BIC - mclust's; 'ΔBIC at mclust's' = daskgmm's BIC of mclust's (K, "
        "covariance type) - mclust's (positive: daskgmm found a worse optimum for that "
        "model); smallest n_k = the chosen model's smallest weight * n.",
        "selector options: " + (json.dumps(options) if options else "its defaults")
        + (f" (init_params={rows[0]['run']['init_params']!r})" if rows else ""),
    ]
    check_lines = []
    for name, c in doc["reference_checks"].items():
        mism = c.get("n_parameters_mismatches", [])
        check_lines.append(
            f"{name}: daskgmm's BIC of mclust's parameters {c['bic_daskgmm']:.4f} vs "
            f"mclust's {c['bic_mclust']:.4f} (relative difference {c['bic_rel_diff']:.1e}); "
            f"ARI of daskgmm's classification with them {c['ari_daskgmm']:.3f} vs "
            f"{c['ari_mclust']:.3f}; parameter counts "
            + ("equal for every candidate" if not mism else "DIFFER: " + "; ".join(mism)))
    notes = list(doc["notes"])
    for name in dict.fromkeys(r["dataset"] for r in rows):
        note = f"{name}: {DATASETS[name].note}" if name in DATASETS else ""
        if DATASETS.get(name) and DATASETS[name].note and note not in notes:
            notes.append(note)
    doc["notes"] = notes
    report = (markdown(SUMMARY_COLUMNS, summary_rows(rows)) + "\n"
              + markdown(COLUMNS, body) + "\n"
              + "\n".join(f"- {s}" for s in summary + legend + notes) + "\n\n"
              + "mclust's stored parameters, checked with daskgmm:\n\n"
              + "\n".join(f"- {line}" for line in check_lines) + "\n")
    doc.update(columns=list(COLUMNS), table=[list(r) for r in body], summary=summary)
    out.mkdir(parents=True, exist_ok=True)
    (out / "mclust-comparison.md").write_text(report, encoding="utf-8")
    (out / "mclust-comparison.json").write_text(compact_json(doc) + "\n", encoding="utf-8")
    print(report)

if __name__ == "__main__":
    sys.exit(main())
