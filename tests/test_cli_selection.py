"""``daskgmm fit`` on a sweep (daskgmm.cli.selection): the table, the picture, the report
and the model of the winner, end to end on a generated Zarr store and a LocalCluster."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
import zarr

from daskgmm import GaussianMixtureSelector
from daskgmm.cli.config import load_config
from daskgmm.cli.selection import describe_model
from daskgmm.diagnostics.progress import format_sweep_iteration
from daskgmm.io.readers import open_array
from daskgmm.models import load as load_model
from tests.test_cli import PNG_MAGIC, call_main, write_config

REPO = Path(__file__).resolve().parents[1]
N, D, K, ROWS = 3000, 3, 3, 500
SWEEP = {"n_components": {"min": 1, "max": 4}, "covariance_type": ["full", "diag"],
         "random_state": 0}


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> SimpleNamespace:
    """``daskgmm fit`` (in process) of a sweep over K = 1..4 x {full, diag}."""
    work = tmp_path_factory.mktemp("cli-selection")
    data = work / "three.zarr"
    code, _ = call_main("generate", "--n-samples", N, "--n-features", D, "--n-components",
                        K, "--output", data, "--chunk-rows", ROWS, "--seed", 3,
                        "--separation", 6)
    assert code == 0
    out = work / "run"
    config = write_config(work / "sweep.yaml", data, out, model=SWEEP,
                          cluster={"n_workers": 2}, selection={"criterion": "bic"},
                          output={"labels": True, "plots": True})
    code, stdout = call_main("fit", config, "--quiet")
    assert code == 0
    return SimpleNamespace(out=out, data=data, stdout=stdout,
                           report=json.loads((out / "report.json").read_text()),
                           table=json.loads((out / "selection.json").read_text()))


def test_a_sweep_writes_the_table_the_picture_and_the_winner(swept):
    out = swept.out
    assert sorted(p.name for p in out.iterdir()) == [
        ".daskgmm.json", "clusters.png", "convergence.png", "labels.zarr", "model",
        "report.json", "selection.json", "selection.png"]
    assert (out / "selection.png").read_bytes().startswith(PNG_MAGIC)
    table = swept.table
    assert table["format"] == "daskgmm-selection" and table["criterion"] == "bic"
    results = table["results"]
    assert results["n_components"] == [1, 2, 3, 4, 1, 2, 3, 4]
    assert results["covariance_type"] == ["full"] * 4 + ["diag"] * 4
    best = int(np.argmin(results["bic"]))
    assert table["best"] == {"index": best, "n_components": results["n_components"][best],
                             "covariance_type": results["covariance_type"][best],
                             "bic": results["bic"][best]}
    assert table["best"]["n_components"] == K
    selection = swept.report["selection"]
    assert selection["best"] == {k: v for k, v in table["best"].items() if k != "index"}
    assert selection["n_candidates"] == 8 and selection["table"] == "selection.json"
    assert swept.report["outputs"]["selection"] == "selection.json"
    assert "selection.png" in swept.report["outputs"]["plots"]
    assert swept.stdout.startswith(f"selected {K} components "
                                   f"({table['best']['covariance_type']}) by BIC")


def test_the_written_model_is_the_winner_of_the_same_sweep_in_python(swept):
    """The command's model equals GaussianMixtureSelector's best on the same data, and
    the report's BIC (from its own output pass) equals the table's."""
    model = load_model(swept.out / "model")
    X = open_array(swept.data, chunk_rows=ROWS)
    sel = GaussianMixtureSelector(n_components=range(1, 5),
                                  covariance_types=["full", "diag"],
                                  random_state=0).fit(X)
    best = sel.best_estimator_
    assert (model.n_components, model.covariance_type) == (best.n_components,
                                                           best.covariance_type)
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(model, name), getattr(best, name), rtol=1e-10)
    assert sel.results_["bic"] == pytest.approx(swept.table["results"]["bic"], rel=1e-10)
    assert swept.report["fit"]["bic"] == pytest.approx(swept.table["best"]["bic"],
                                                       rel=1e-9)
    labels = zarr.open_array(swept.out / "labels.zarr", mode="r")
    np.testing.assert_array_equal(labels[:], best.predict(X).compute())


@pytest.mark.parametrize("where", ["run", "model"])
def test_info_on_a_sweep_says_what_was_selected_among_what(swept, where):
    """``daskgmm info`` on a sweep's run, or on the model inside it (the README's form),
    names the winner, its criterion's value, the candidates and the table."""
    best = swept.table["best"]
    target = swept.out if where == "run" else swept.out / "model"
    code, stdout = call_main("info", target)
    assert code == 0
    assert (f"selected {best['n_components']} components ({best['covariance_type']}) "
            f"by BIC = ") in stdout
    assert "among 8 candidates (K = 1..4 x full, diag; table: selection.json)" in stdout


def test_progress_counts_the_running_candidates(tmp_path, swept, capsys):
    config = write_config(tmp_path / "sweep.yaml", swept.data, tmp_path / "run",
                          model={**SWEEP, "n_components": [2, 3]})
    capsys.readouterr()
    code, _ = call_main("fit", config)
    assert code == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("iter ")]
    assert lines and all(" running " in line and "/4" in line for line in lines)
    assert len(lines) == len({line.split()[1] for line in lines})  # one per iteration
    assert "fitting 4 candidates (K = 2, 3 x full, diag; by BIC)" in err


def test_a_sweep_the_selector_refuses_exits_2_before_any_work(tmp_path, swept, capsys):
    config = write_config(tmp_path / "bad.yaml", swept.data, tmp_path / "run",
                          model={"n_components": [2, 2]})
    code, _ = call_main("fit", config)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "n_components lists 2 twice" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_format_sweep_iteration_counts_and_names():
    states = [SimpleNamespace(label=f"K={k} full #0", n_iter=n, converged=c, active=a)
              for k, n, c, a in [(1, 2, True, False), (2, 5, False, False),
                                 (3, 7, True, False), (4, 7, False, True)]]
    info = SimpleNamespace(iteration=7, states=states, seconds=1.25)
    assert format_sweep_iteration(info, max_iter=50, eta=30.0, timing=True) == (
        "iter 7/50  running 1/4  stopped early 1  converged now: K=3 full #0  "
        "1.25 s/iter  ETA 0:30")


def test_select_config_is_an_out_of_core_sweep():
    """configs/select.yaml: a sweep over a generated data set larger than the workers'
    memory, with the picture switched on."""
    path = REPO / "configs" / "select.yaml"
    config = load_config(path)
    assert set(config.model.sweep) == {"n_components", "covariance_type"}
    generate = config.data.generate
    data_bytes = generate.n_samples * generate.n_features * 8
    raw = yaml.safe_load(path.read_text())
    limit = raw["cluster"]["memory_limit"]
    from dask.utils import parse_bytes

    assert data_bytes > config.cluster.n_workers * parse_bytes(limit)
    assert config.model.params["cache"] is False and config.output.plots is True
    assert describe_model(config).startswith(
        f"{len(config.model.sweep['n_components']) * 4} candidates")


def test_a_bayesian_sweep_becomes_a_selector_of_bayesian_candidates(tmp_path):
    from daskgmm.cli.config import parse_config

    config = parse_config({
        "data": {"path": str(tmp_path / "x.zarr")}, "output": {"dir": str(tmp_path / "o")},
        "model": {"kind": "bayesian", "n_components": [2, 3], "covariance_type": "diag",
                  "weight_concentration_prior_type": "dirichlet_distribution"},
        "selection": {"criterion": "aic"}})
    selector = config.estimator()
    assert isinstance(selector, GaussianMixtureSelector)
    assert selector.model == "bayesian" and selector.criterion == "aic"
    assert selector.candidates() == [(2, "diag"), (3, "diag")]
    assert selector.model_params["weight_concentration_prior_type"] == \
        "dirichlet_distribution"
