"""scripts/bench_mclust.py: mclust's stored results are reproduced by daskgmm, and the
script's quick mode (without R) prints and writes its comparison table."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_mclust.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_mclust", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.fixture(scope="module")
def reference(bench):
    return json.loads(bench.REFERENCE.read_text(encoding="utf-8"))["datasets"]


def test_stored_mclust_results_match_daskgmm(bench, reference):
    """For every stored data set that scikit-learn ships: the data are the ones mclust saw
    (fingerprint), mclust's choice is the best of its stored BIC table, daskgmm's BIC of
    mclust's stored parameters equals mclust's BIC within mclust's EM tolerance (and is not
    worse: daskgmm evaluates the parameters of mclust's last M-step, mclust reports the
    log-likelihood of the E-step before it), daskgmm's classification with them agrees
    with mclust's ARI, and daskgmm counts the free parameters of every (model, G) as
    mclust does."""
    sklearn_sets = [n for n, r in reference.items() if r["source"] == "sklearn"]
    assert {"iris", "wine", "breast_cancer"} <= set(sklearn_sets)
    for name in sklearn_sets:
        ref = reference[name]
        X, y = bench.load_sklearn(bench.DATASETS[name])
        assert bench.fingerprint(X) == ref["x_sha256"], name
        table = {m: [math.inf if v is None else v for v in row]
                 for m, row in ref["bic_table"].items()}
        best_model = min(table, key=lambda m: min(table[m]))
        assert min(table[best_model]) == ref["bic"], name
        assert (best_model, int(np.argmin(table[best_model])) + 1) in {
            (ref["model"], ref["n_components"]),
            ("EEE", 1) if ref["model"] == "XXX" else (ref["model"], ref["n_components"])}
        check = bench.check_reference(X, y, ref)
        assert check["bic_rel_diff"] <= 2e-5, (name, check)
        assert check["bic_daskgmm"] <= ref["bic"] + 1e-9 * abs(ref["bic"]), (name, check)
        assert check["ari_diff"] <= 0.02, (name, check)

        # daskgmm's penalty p, read off its public bic() and score() on a few rows with
        # arbitrary parameters, against mclust's stored count, for every model at
        # K = 1, 2 and the largest (every candidate is compared in the quick run's
        # n_parameters_mismatches, for iris's d).
        d = ref["d"]
        rng = np.random.default_rng(0)
        Z = rng.normal(size=(20, d))
        for model, counts in ref["n_parameters_table"].items():
            cov_type = bench.MODELS[model]
            for k in sorted({1, 2, len(counts)}):   # the counts are linear in K
                count = counts[k - 1]
                covariances = {"full": np.broadcast_to(np.eye(d), (k, d, d)),
                               "tied": np.eye(d), "diag": np.ones((k, d)),
                               "spherical": np.ones(k)}[cov_type]
                gm = bench.mixture_from({"covariance_type": cov_type,
                                         "weights": np.full(k, 1.0 / k),
                                         "means": rng.normal(size=(k, d)),
                                         "covariances": covariances})
                p = (gm.bic(Z) + 2 * gm.score(Z) * len(Z)) / math.log(len(Z))
                assert round(p) == count and abs(p - count) < 1e-6, (name, model, k, p)


def test_quick_mode_without_r(bench, reference, tmp_path, capsys):
    """--quick without R: iris is compared with mclust's stored results, the mclust data
    set is skipped with a note, the table has its columns, and every verdict follows the
    stated rule from the row's own numbers."""
    out = tmp_path / "out"
    code = bench.main(["--quick", "--datasets", "iris,diabetes", "--rscript", "",
                       "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    header = "| " + " | ".join(bench.COLUMNS) + " |"
    assert header in printed
    assert "mclust's stored parameters, checked with daskgmm:" in printed

    doc = json.loads((out / "mclust-comparison.json").read_text(encoding="utf-8"))
    report = (out / "mclust-comparison.md").read_text(encoding="utf-8")
    assert report.startswith("| " + " | ".join(bench.SUMMARY_COLUMNS) + " |")
    assert header in report
    assert doc["columns"] == list(bench.COLUMNS)
    assert any(n.startswith("diabetes: skipped") for n in doc["notes"])
    assert any(n.startswith("iris: mclust's results are the stored ones") for n in doc["notes"])
    assert [(r["dataset"], r["run"]["seed"], r["run"]["n_init"]) for r in doc["rows"]] == [
        ("iris", 0, 1)]
    assert len(doc["table"]) == 1 and len(doc["table"][0]) == len(bench.COLUMNS)

    row, ref = doc["rows"][0], reference["iris"]
    for key in ("model", "n_components", "covariance_type", "bic", "ari"):
        assert row["mclust"][key] == ref[key]
    run, verdict = row["run"], row["verdict"]
    cands = run["candidates"]   # columns, like the selector's results_
    assert sorted(zip(cands["n_components"], cands["covariance_type"], strict=True)) == \
        sorted((k, t) for k in range(1, 10) for t in bench.MODELS.values())
    i = min(range(len(cands["bic"])), key=cands["bic"].__getitem__)
    best = {key: values[i] for key, values in cands.items()}
    assert (best["n_components"], best["covariance_type"], best["bic"]) == \
        (run["n_components"], run["covariance_type"], run["bic"])
    at_mclust = next(b for k, t, b in zip(cands["n_components"],
                                           cands["covariance_type"], cands["bic"],
                                           strict=True)
                     if (k, t) == (ref["n_components"], ref["covariance_type"]))
    assert verdict["bic_at_mclust_model"] == at_mclust
    same = (run["n_components"], run["covariance_type"]) == \
        (ref["n_components"], ref["covariance_type"])
    margin = doc["settings"]["ari_margin"]
    expected = (same or run["bic"] <= ref["bic"] * (1 + math.copysign(1e-6, ref["bic"]))) \
        and run["ari"] >= ref["ari"] - margin
    assert verdict["ok"] is expected
    assert doc["table"][0][-1] == ("yes" if expected else "no: " + verdict["why_not"])
    assert 0 < run["smallest_component_rows"] <= 150 / run["n_components"]

    checks = doc["reference_checks"]
    assert set(checks) == {"iris"}
    assert checks["iris"]["bic_rel_diff"] <= 2e-5
    assert checks["iris"]["n_parameters_mismatches"] == []


def test_refused_selector_option_is_a_clear_error(bench, tmp_path, capsys):
    """An init_params the selector does not know ends the script with status 2 and a
    one-line message naming the options (the --init choice is passed through as is)."""
    code = bench.main(["--quick", "--rscript", "", "--init", "no-such-start",
                       "--out", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert "refused the options" in err and "no-such-start" in err
