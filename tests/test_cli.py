"""End-to-end tests of the ``daskgmm`` command line, on real data, clusters and processes.

One in-process ``daskgmm fit`` on a small generated Zarr store (a LocalCluster of two
worker processes) is shared by the output, predict and info tests. The error paths run
the CLI as a subprocess (``python -m daskgmm``) to check the real exit status and that
no traceback reaches the user.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
import zarr
from threadpoolctl import threadpool_limits

from daskgmm.cli.main import main
from daskgmm.io.readers import open_array
from daskgmm.models import load as load_model
from tests.cli_utils import (
    assert_clean_error,
    cli_env,
    finish,
    leftovers,
    run_cli,
    start_cli,
    tree_digest,
)

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
N, D, K, ROWS = 3000, 3, 3, 500


def call_main(*args: str) -> tuple[int, str]:
    """``main(ARGS)`` in this process; returns the exit code and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    return code, out.getvalue()


def write_config(path: Path, data_path: Path | str, out: Path,
                 chunk_rows: int | None = ROWS, **sections) -> Path:
    """A small run configuration (one worker process unless overridden)."""
    config = {
        "name": "test",
        "data": {"path": str(data_path), "chunk_rows": chunk_rows},
        "model": {"n_components": K, "random_state": 0},
        "cluster": {"n_workers": 1, "threads_per_worker": 1, "memory_limit": "1GiB",
                    "dashboard_address": None},
        "output": {"dir": str(out), "labels": False, "plots": False},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(config))
    return path


@contextlib.contextmanager
def fitted_estimators():
    """The estimators that ``daskgmm fit`` runs in this process fitted (the run's own
    objects, recorded after its fit step: their ``passes_`` etc. are not saved)."""
    import daskgmm.cli.fit as fit_step

    seen: list = []
    real = fit_step.fit

    def recording(plan, *args, **kwargs):
        result = real(plan, *args, **kwargs)
        seen.append(plan.estimator)
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fit_step, "fit", recording)
        yield seen


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def small_zarr(workdir) -> Path:
    path = workdir / "small.zarr"
    code, out = call_main("generate", "--n-samples", N, "--n-features", D,
                          "--n-components", K, "--output", path, "--chunk-rows", ROWS,
                          "--seed", 1)
    assert code == 0
    assert "wrote" in out and str(path) in out
    return path


@pytest.fixture(scope="module")
def fitted(workdir, small_zarr) -> SimpleNamespace:
    """``daskgmm fit`` (in process) with every output switched on."""
    out = workdir / "run"
    config = write_config(
        workdir / "fit.yaml", small_zarr, out,
        cluster={"n_workers": 2},
        output={"labels": True, "responsibilities": True, "plots": True})
    with fitted_estimators() as estimators:
        code, stdout = call_main("fit", config, "--quiet", "--set", "model.tol=0.0005",
                                 "--set", "model.covariance_type=diag")
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    return SimpleNamespace(out=out, report=report, stdout=stdout, config=config,
                           model=load_model(out / "model"), estimator=estimators[0])


# ---------------------------------------------------------------------------------------
# fit outputs
# ---------------------------------------------------------------------------------------


def test_fit_writes_every_output(fitted, small_zarr):
    out = fitted.out
    assert sorted(p.name for p in out.iterdir()) == [
        ".daskgmm.json", "clusters.png", "convergence.png", "labels.zarr", "model",
        "report.json", "responsibilities.zarr"]
    assert not leftovers(out.parent)
    for name in ("clusters.png", "convergence.png"):
        data = (out / name).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    assert (out / "model" / "model.json").exists()
    assert "report written to" in fitted.stdout and "means:" in fitted.stdout


def test_report_contents(fitted, small_zarr):
    report, model = fitted.report, fitted.model
    for key in ("config", "versions", "data", "fit", "timing", "memory", "cluster",
                "outputs"):
        assert key in report, key
    fit = report["fit"]
    assert fit["converged"] is True and fit["converged"] == model.converged_
    assert fit["n_iter"] == model.n_iter_ == len(fit["iterations"])
    assert [row["iteration"] for row in fit["iterations"]] == list(range(1, fit["n_iter"] + 1))
    assert [row["log_likelihood"] for row in fit["iterations"]] == model.lower_bounds_
    assert all(row["seconds"] > 0 for row in fit["iterations"])
    assert fit["lower_bound"] == model.lower_bound_
    # --set overrides are visible in the resolved configuration.
    assert report["config"]["model"]["tol"] == 0.0005
    assert report["config"]["model"]["covariance_type"] == "diag"
    assert model.covariance_type == "diag"
    # BIC/AIC from one pass with the final parameters, as scikit-learn computes them.
    X = open_array(small_zarr, chunk_rows=ROWS)
    assert fit["bic"] == pytest.approx(model.bic(X), rel=1e-9)
    assert fit["aic"] == pytest.approx(model.aic(X), rel=1e-9)
    for library in ("daskgmm", "dask", "distributed", "numpy", "zarr", "scikit-learn",
                    "h5py", "python"):
        assert report["versions"][library]
    data = report["data"]
    assert data["path"] == str(small_zarr) and data["shape"] == [N, D]
    assert data["dtype"] == "float64" and data["chunks_rows"] == [ROWS] * (N // ROWS)
    timing = report["timing"]
    assert timing["total_seconds"] >= timing["fit_seconds"] > 0
    assert timing["init_seconds"] > 0 and timing["em_seconds"] > 0
    memory = report["memory"]
    assert len(memory["workers"]) == 2
    for worker in memory["workers"].values():
        assert worker["peak_bytes"] > 0 and worker["limit_bytes"] == 2**30
        assert 0 < worker["peak_fraction_of_limit"] < 1
    assert 0 < memory["max_peak_fraction_of_limit"] < 1
    assert memory["driver_peak_bytes"] > 0
    cluster = report["cluster"]
    assert cluster["kind"] == "local" and cluster["n_workers"] == 2
    assert cluster["dashboard_link"] is None


def test_report_and_summary_say_how_many_times_the_data_was_read(fitted):
    """report.json's ``data_reads`` is the fitted estimator's ``passes_``, and the
    summary line says it in words; no missing-value figures with ``missing: error``."""
    from daskgmm.diagnostics.progress import format_reads

    fit, passes = fitted.report["fit"], fitted.estimator.passes_
    assert set(passes) >= {"survey", "em"} and fit["data_reads"] == passes
    assert fit["n_empty_rows"] is None and fit["observed_fraction"] is None
    first = fitted.stdout.splitlines()[0]
    assert first.startswith("converged after") and first.endswith(format_reads(passes))


def test_labels_and_responsibilities_match_the_model(fitted, small_zarr):
    X = open_array(small_zarr, chunk_rows=ROWS)
    labels = zarr.open_array(fitted.out / "labels.zarr", mode="r")
    assert labels.shape == (N,) and labels.chunks == (X.chunks[0][0],)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels[:], fitted.model.predict(X).compute())
    resp = zarr.open_array(fitted.out / "responsibilities.zarr", mode="r")
    assert resp.shape == (N, K) and resp.chunks == (ROWS, K)
    # (Computed by worker processes with one BLAS thread, here with the default: the
    # last bits may differ.)
    np.testing.assert_allclose(resp[:], fitted.model.predict_proba(X).compute(),
                               rtol=1e-12, atol=1e-15)


def test_info_prints_model_and_report(fitted):
    code, out = call_main("info", fitted.out)
    assert code == 0
    assert "GaussianMixture: 3 components x 3 features, diag covariances" in out
    assert "BIC / AIC" in out and "worker peak memory" in out
    # a table of the components: one row each, with the weights of the model
    rows = [line.split() for line in out.splitlines()
            if line.strip()[:1].isdigit() and "[" in line]
    assert [int(r[0]) for r in rows] == [0, 1, 2]
    np.testing.assert_allclose([float(r[1]) for r in rows], fitted.model.weights_,
                               atol=1e-4)
    # the data and the configuration as YAML
    data_yaml = out.split("\ndata:\n", 1)[1].split("\n\nconfig:\n", 1)
    assert yaml.safe_load(data_yaml[0])["shape"] == [N, D]
    assert yaml.safe_load(data_yaml[1])["model"]["covariance_type"] == "diag"
    # the model inside the run shows the run too (rows per component, the report)
    code, inner = call_main("info", fitted.out / "model")
    assert code == 0 and "converged after" in inner and "BIC / AIC" in inner
    assert inner.split("\n\n", 1)[1] == out.split("\n\n", 1)[1]


def test_info_json(fitted):
    code, out = call_main("info", fitted.out, "--json")
    assert code == 0
    summary = json.loads(out)
    model = summary["model"]
    assert (model["n_components"], model["n_features"], model["covariance_type"]) == (
        K, D, "diag")
    np.testing.assert_allclose([c["weight"] for c in model["components"]],
                               fitted.model.weights_, rtol=1e-12)
    np.testing.assert_allclose([c["mean"] for c in model["components"]],
                               fitted.model.means_, rtol=1e-12)
    assert [c["expected_rows"] for c in model["components"]] == [
        round(w * N) for w in fitted.model.weights_]
    report = summary["report"]
    assert report["fit"]["bic"] == fitted.report["fit"]["bic"]
    assert report["config"] == fitted.report["config"]
    assert summary["model_dir"] == str(fitted.out / "model")


def test_info_piped_into_a_reader_that_stops_early_ends_quietly(fitted):
    """``daskgmm info RUN | head -1``: the reader closes the pipe before the command
    writes; the command stops with the shell's code for SIGPIPE and no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "daskgmm", "info", str(fitted.out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=cli_env())
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141
    assert err == ""


def test_info_of_a_missing_or_foreign_directory_is_a_clean_error(tmp_path):
    assert_clean_error(run_cli("info", tmp_path / "nothing"), "nothing at")
    (tmp_path / "foreign").mkdir()
    assert_clean_error(run_cli("info", tmp_path / "foreign"), "no model.json")


def test_predict_round_trip(fitted, small_zarr, workdir):
    target = workdir / "predicted.zarr"
    code, out = call_main("predict", "--model", fitted.out, "--data", small_zarr,
                          "--output", target, "--chunk-rows", ROWS, "--quiet")
    assert code == 0 and str(target) in out
    X = open_array(small_zarr, chunk_rows=ROWS)
    predicted = zarr.open_array(target, mode="r")
    assert predicted.shape == (N,) and predicted.chunks == (ROWS,)
    np.testing.assert_array_equal(predicted[:], fitted.model.predict(X).compute())
    np.testing.assert_array_equal(predicted[:], zarr.open_array(fitted.out / "labels.zarr")[:])
    assert not leftovers(workdir)
    # An existing output is refused before any work, and left as it was.
    before = sorted(os.listdir(target))
    result = run_cli("predict", "--model", fitted.out, "--data", small_zarr,
                     "--output", target, "--proba")
    assert_clean_error(result, "already exists", "--overwrite")
    assert sorted(os.listdir(target)) == before


def test_predict_proba_with_overwrite(fitted, small_zarr, workdir):
    target = workdir / "proba.zarr"
    target.mkdir()
    code, _ = call_main("predict", "--model", fitted.out / "model", "--data", small_zarr,
                        "--output", target, "--proba", "--overwrite", "--chunk-rows", ROWS,
                        "--quiet")
    assert code == 0
    proba = zarr.open_array(target, mode="r")
    assert proba.shape == (N, K) and proba.chunks == (ROWS, K)
    # The saved model predicts, bit for bit, what the fitted one wrote.
    np.testing.assert_array_equal(
        proba[:], zarr.open_array(fitted.out / "responsibilities.zarr", mode="r")[:])


# ---------------------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_generate(tmp_path, suffix):
    path = tmp_path / f"gen{suffix}"
    code, out = call_main("generate", "--n-samples", 1000, "--n-features", 4,
                          "--n-components", 2, "--output", path, "--chunk-rows", 300,
                          "--dtype", "float32", "--seed", 5)
    assert code == 0 and "1000 x 4 float32" in out and "in 4 chunks of 300 rows" in out
    X = open_array(path)
    assert X.shape == (1000, 4) and X.dtype == np.float32
    result = run_cli("generate", "--n-samples", 10, "--n-features", 2, "--n-components", 2,
                     "--output", path)
    assert_clean_error(result, "already exists")
    code, _ = call_main("generate", "--n-samples", 10, "--n-features", 2,
                        "--n-components", 2, "--output", path, "--overwrite")
    assert code == 0 and open_array(path).shape == (10, 2)


def test_generate_bad_extension_is_a_clean_error(tmp_path):
    result = run_cli("generate", "--n-samples", 10, "--n-features", 2, "--n-components", 2,
                     "--output", tmp_path / "x.csv")
    assert_clean_error(result, ".zarr")


# ---------------------------------------------------------------------------------------
# user mistakes: one line on stderr, exit code 2, no traceback
# ---------------------------------------------------------------------------------------


def test_config_errors_exit_2(tmp_path):
    config = write_config(tmp_path / "c.yaml", tmp_path / "none.zarr", tmp_path / "out")
    result = run_cli("fit", config, "--set", "model.n_componets=3", "--set",
                     "model.tol=-1")
    assert_clean_error(result, "2 problems", "n_componets", "did you mean 'n_components'",
                       "model.tol: must be a number >= 0")
    result = run_cli("fit", tmp_path / "missing.yaml")
    assert_clean_error(result, "config file not found")
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    assert_clean_error(run_cli("fit", tmp_path / "bad.yaml"), "invalid YAML")
    assert_clean_error(run_cli("fit", config, "--set", "novalue"), "KEY.PATH=VALUE")
    assert not (tmp_path / "out").exists()


def test_missing_data_exits_2(tmp_path):
    """A data.path that does not exist: one line naming the key and the path, exit 2."""
    config = write_config(tmp_path / "c.yaml", tmp_path / "none.zarr", tmp_path / "out")
    result = run_cli("fit", config)
    assert_clean_error(result, "data.path: No such file or store", "none.zarr")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_existing_output_dir_is_refused_and_untouched(tmp_path, small_zarr):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    stamp = os.stat(out / "keep.txt").st_mtime_ns
    config = write_config(tmp_path / "c.yaml", small_zarr, out)
    result = run_cli("fit", config)
    assert_clean_error(result, "already exists", "output.overwrite")
    assert os.listdir(out) == ["keep.txt"]
    assert os.stat(out / "keep.txt").st_mtime_ns == stamp
    assert not leftovers(tmp_path)


def test_fit_failing_midway_leaves_no_output(tmp_path):
    # The NaN row is found while the cluster passes over the chunks.
    data = np.random.default_rng(0).normal(size=(400, 2))
    data[333, 1] = np.nan
    store = zarr.create_array(store=str(tmp_path / "nan.zarr"), shape=data.shape,
                              chunks=(100, 2), dtype="float64")
    store[:] = data
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", tmp_path / "nan.zarr", out, chunk_rows=None,
                          model={"n_components": 2, "init_params": "random"},
                          output={"labels": True, "plots": True})
    result = run_cli("fit", config)
    # model.missing is 'error' by default: the estimator's refusal, naming the option.
    assert_clean_error(result, "contain NaN", "missing='marginalize'")
    assert not out.exists()
    assert not leftovers(tmp_path)


def test_fit_with_missing_values_marginalised(tmp_path):
    """``model.missing: marginalize`` on data holding NaN (rows with nothing observed
    too): every output is written; the labels are the estimator's ``predict`` (for an
    empty row, its label for a row without data); the report gives the estimator's
    ``n_empty_rows_``, ``observed_fraction_`` and ``passes_``, and BIC as its ``bic``."""
    from tests.conftest import make_blobs

    X = make_blobs(1500, D, K, seed=3)
    X[np.random.default_rng(4).random(X.shape) < 0.15] = np.nan
    X[[0, 700, 701]] = np.nan
    empty = np.isnan(X).all(axis=1)
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "out"
    config = write_config(tmp_path / "c.yaml", tmp_path / "x.npy", out,
                          model={"missing": "marginalize"},
                          output={"labels": True, "plots": True})
    with fitted_estimators() as estimators:
        code, stdout = call_main("fit", config, "--quiet")
    assert code == 0
    (estimator,) = estimators
    assert sorted(p.name for p in out.iterdir()) == [
        ".daskgmm.json", "clusters.png", "convergence.png", "labels.zarr", "model",
        "report.json"]
    assert (out / "clusters.png").read_bytes().startswith(PNG_MAGIC)
    labels = zarr.open_array(out / "labels.zarr", mode="r")[:]
    np.testing.assert_array_equal(labels, estimator.predict(X))
    assert set(labels[empty]) == {estimator.predict(np.full((1, D), np.nan))[0]}
    fit = json.loads((out / "report.json").read_text())["fit"]
    assert estimator.n_empty_rows_ >= empty.sum() > 0
    assert fit["n_empty_rows"] == estimator.n_empty_rows_
    assert fit["observed_fraction"] == estimator.observed_fraction_ < 1
    assert fit["data_reads"] == estimator.passes_
    assert fit["bic"] == pytest.approx(estimator.bic(X), rel=1e-9)
    assert f"{estimator.n_empty_rows_:g} rows with nothing observed" in stdout


def test_unreachable_scheduler_exits_2(tmp_path, small_zarr):
    config = write_config(tmp_path / "c.yaml", small_zarr, tmp_path / "out",
                          cluster={"address": "tcp://127.0.0.1:9"})
    env = cli_env(DASKGMM_CONNECT_TIMEOUT="1")
    result = subprocess.run([sys.executable, "-m", "daskgmm", "fit", str(config)],
                            capture_output=True, text=True, timeout=60, env=env)
    assert_clean_error(result, "could not connect to the Dask scheduler at "
                               "tcp://127.0.0.1:9", "cluster.address")
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_interrupted_fit_cleans_up_then_resumes(tmp_path, small_zarr):
    """SIGTERM mid-fit leaves no output; the checkpoint refuses a fresh start and
    ``--resume`` continues it to the same result as an uninterrupted fit."""
    from daskgmm import GaussianMixture

    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    model = {"tol": 0.0, "max_iter": 100_000, "init_params": "random"}
    config = write_config(tmp_path / "c.yaml", small_zarr, out, model=model,
                          checkpoint={"dir": str(ckpt), "every": 1})
    proc = start_cli("fit", config)
    try:
        lines = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("iter 4/"):
                break
        assert any(line.startswith("iter 4/") for line in lines), "".join(lines)
        proc.send_signal(signal.SIGTERM)
        _, err = finish(proc, 60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert "daskgmm: error: terminated" in err and "Traceback" not in err
    assert not out.exists() and not leftovers(tmp_path)
    assert (ckpt / "checkpoint.json").exists()
    iteration = json.loads((ckpt / "checkpoint.json").read_text())["iteration"]
    assert iteration >= 4

    total = iteration + 3
    result = run_cli("fit", config, "--set", f"model.max_iter={total}")
    assert_clean_error(result, "a checkpoint from an earlier run exists in",
                       "pass --resume to continue it, or delete the directory")

    result = run_cli("fit", config, "--set", f"model.max_iter={total}", "--resume",
                     "--quiet")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["fit"]["resumed_from_iteration"] == iteration
    assert report["fit"]["n_iter"] == total == len(report["fit"]["iterations"])
    assert [row["seconds"] is None for row in report["fit"]["iterations"]] == \
        [True] * iteration + [False] * 3
    assert not (ckpt / "checkpoint.json").exists()  # a finished run drops its checkpoint
    # The same numbers as an uninterrupted fit (same data, chunking and seed, and one
    # BLAS thread, as in the worker processes: BLAS results depend on the thread count).
    with threadpool_limits(limits=1):
        reference = GaussianMixture(K, tol=0.0, max_iter=total, init_params="random",
                                    random_state=0).fit(open_array(small_zarr,
                                                                   chunk_rows=ROWS))
    resumed = load_model(out / "model")
    np.testing.assert_array_equal(resumed.means_, reference.means_)
    np.testing.assert_array_equal(resumed.covariances_, reference.covariances_)


def test_fit_generates_missing_data(tmp_path):
    data, out = tmp_path / "data" / "gen.zarr", tmp_path / "out"
    generate = {"n_samples": 1200, "n_features": 2, "n_components": 2, "seed": 3,
                "chunk_rows": 400}
    config = write_config(tmp_path / "c.yaml", data, out, chunk_rows=400,
                          data={"generate": generate}, model={"n_components": 2})
    result = run_cli("fit", config)
    assert result.returncode == 0, result.stderr
    assert f"generating {data}" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["shape"] == [1200, 2]
    assert report["data"]["chunks_rows"] == [400, 400, 400]
    assert report["data"]["generated"]["seed"] == 3
    assert report["config"]["data"]["generate"]["n_samples"] == 1200
    # The next run reuses the data set.
    result = run_cli("fit", config, "--set", "output.overwrite=true", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "generated" not in json.loads((out / "report.json").read_text())["data"]


# ---------------------------------------------------------------------------------------
# iris, help, version
# ---------------------------------------------------------------------------------------


def test_iris_config_runs_from_a_fresh_clone(tmp_path):
    out = tmp_path / "iris"
    result = run_cli("fit", REPO / "configs" / "iris.yaml", "--set", f"output.dir={out}",
                     "--set", "cluster.n_workers=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    stdout = result.stdout
    for heading in ("labels:", "weights:", "means:", "covariances:", "report written to"):
        assert heading in stdout
    assert "[5.006 3.428 1.462 0.246]" in stdout
    model = load_model(out / "model")
    expected = np.array([[5.006, 3.428, 1.462, 0.246], [5.917, 2.778, 4.205, 1.298],
                         [6.546, 2.949, 5.484, 1.987]])
    order = np.argsort(model.means_[:, 2])
    np.testing.assert_allclose(model.means_[order], expected, atol=2e-3)
    np.testing.assert_allclose(np.sort(model.weights_), [0.301, 0.333, 0.365], atol=2e-3)
    labels = zarr.open_array(out / "labels.zarr", mode="r")[:]
    assert labels.shape == (150,) and len(set(labels[:50])) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["path"] == "sklearn:iris"


@pytest.mark.parametrize("command", [None, "fit", "predict", "generate", "info"])
def test_help_has_examples(command, capsys):
    args = ["--help"] if command is None else [command, "--help"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "daskgmm" in out


def test_help_and_version_in_a_real_process():
    result = run_cli("fit", "--help")
    assert result.returncode == 0 and "examples:" in result.stdout
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.startswith("daskgmm ")
    result = run_cli("fit")  # missing CONFIG: argparse's usage error
    assert result.returncode == 2 and "usage:" in result.stderr


# ---------------------------------------------------------------------------------------
# outputs never overlap inputs
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "relation"), [
    ("data", "is the same location as data.path"),
    ("parent", "contains data.path"),
    ("inside", "lies inside data.path"),
    ("link", "contains data.path"),
    ("config", "contains the configuration file"),
])
def test_fit_refuses_an_output_over_its_inputs(tmp_path, small_zarr, where, relation):
    import shutil

    project = tmp_path / "project"
    data = project / "data.zarr"
    shutil.copytree(small_zarr, data)
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (tmp_path / "link").symlink_to(project)
    out = {"data": data, "parent": project, "inside": data / "results",
           "link": tmp_path / "link", "config": config_dir}[where]
    config = write_config(config_dir / "c.yaml", data, out,
                          output={"overwrite": True})
    before = tree_digest(project), tree_digest(config_dir)
    result = run_cli("fit", config)
    assert_clean_error(result, relation, "writing there could destroy it")
    assert (tree_digest(project), tree_digest(config_dir)) == before
    assert not leftovers(tmp_path) and not leftovers(project)


def test_fit_refuses_an_output_containing_the_checkpoints(tmp_path, small_zarr):
    config = write_config(tmp_path / "c.yaml", small_zarr, tmp_path / "runs",
                          output={"overwrite": True},
                          checkpoint={"dir": str(tmp_path / "runs" / "ckpt")})
    assert_clean_error(run_cli("fit", config), "contains checkpoint.dir")


def test_checkpoints_inside_the_data_are_refused(tmp_path, small_zarr):
    import shutil

    data = tmp_path / "data.zarr"
    shutil.copytree(small_zarr, data)
    before = tree_digest(data)
    config = write_config(tmp_path / "c.yaml", data, tmp_path / "out",
                          checkpoint={"dir": str(data / "ckpt")})
    assert_clean_error(run_cli("fit", config), "checkpoint.dir", "lies inside data.path")
    assert tree_digest(data) == before


def test_predict_and_generate_refuse_outputs_over_their_inputs(tmp_path, fitted,
                                                              small_zarr):
    import shutil

    data = tmp_path / "data.zarr"
    shutil.copytree(small_zarr, data)
    model = tmp_path / "model"
    shutil.copytree(fitted.out / "model", model)
    before = tree_digest(data), tree_digest(model)
    for output, expected in ((data, "is the same location as --data"),
                             (model / "labels.zarr", "lies inside --model"),
                             (tmp_path, "contains --data")):
        result = run_cli("predict", "--model", model, "--data", data, "--output", output,
                         "--overwrite")
        assert_clean_error(result, expected)
    assert (tree_digest(data), tree_digest(model)) == before
    # generate never replaces the directory it runs in (or one containing it)
    work = tmp_path / "work.zarr"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    result = run_cli("generate", "--n-samples", 10, "--n-features", 2, "--n-components", 1,
                     "--output", work, "--overwrite", cwd=work)
    assert_clean_error(result, "is the same location as the current directory")
    assert (work / "notes.txt").read_text() == "mine"


def test_generate_messages_name_flags(tmp_path):
    target = tmp_path / "x.zarr"
    target.mkdir()
    assert_clean_error(run_cli("generate", "--n-samples", 10, "--n-features", 2,
                               "--n-components", 1, "--output", target),
                       "already exists; pass --overwrite")
    assert_clean_error(run_cli("generate", "--n-samples", 10**9, "--n-features", 5000,
                               "--n-components", 1, "--output", tmp_path / "y.zarr",
                               "--chunk-rows", 100_000),
                       "--chunk-rows 100000: a chunk of", "use fewer rows per chunk")
    assert_clean_error(run_cli("generate", "--n-samples", 10**9, "--n-features", 10**6,
                               "--n-components", 1, "--output", tmp_path / "y.zarr"),
                       "--n-features 1000000 with --n-components 1", "GiB of memory")
    assert not (tmp_path / "y.zarr").exists()
    result = run_cli("generate", "--n-samples", 0, "--n-features", 2, "--n-components", 1,
                     "--output", tmp_path / "z.zarr")
    assert result.returncode == 2 and "--n-samples: must be >= 1, got 0" in result.stderr


# ---------------------------------------------------------------------------------------
# what a run prints
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("verbose", [0, 1, 2])
def test_each_iteration_is_printed_once(tmp_path, small_zarr, verbose):
    config = write_config(tmp_path / "c.yaml", small_zarr, tmp_path / "out",
                          model={"verbose": verbose, "verbose_interval": 1,
                                 "max_iter": 5, "tol": 0.0})
    result = run_cli("fit", config)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    for i in range(1, 6):
        assert sum(line.startswith(f"iter {i}/5 ") for line in lines) == 1, lines
    assert not any(line.startswith(("Initialization", "  Iteration")) for line in lines)
    timed = [line for line in lines if line.startswith("iter ") and " s/iter" in line]
    init_lines = [line for line in lines if line.startswith(("survey pass", "init pass",
                                                             "moments pass"))]
    assert init_lines  # every initialisation pass, as it ends
    assert len(timed) == (5 if verbose >= 2 else 0)
    # verbose >= 1: the data's reads by phase, once (the report's, i.e. passes_).
    from daskgmm.diagnostics.progress import format_reads

    reads = json.loads((tmp_path / "out" / "report.json").read_text())["fit"]["data_reads"]
    assert lines.count(format_reads(reads)) == (1 if verbose >= 1 else 0), lines


def test_large_models_are_summarised_and_the_likelihood_matches_the_report(tmp_path):
    data = tmp_path / "wide.zarr"
    code, _ = call_main("generate", "--n-samples", 2000, "--n-features", 8,
                        "--n-components", 6, "--output", data, "--seed", 3, "--quiet")
    assert code == 0
    config = write_config(tmp_path / "c.yaml", data, tmp_path / "out",
                          model={"n_components": 6, "covariance_type": "diag"})
    code, stdout = call_main("fit", config, "--quiet")
    assert code == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert "covariances:" not in stdout and "means:" not in stdout
    assert "6 components of 8 features (diag covariances)" in stdout
    table = stdout.split("6 components of 8 features", 1)[1].splitlines()[2:8]
    rows = [line.split() for line in table]
    assert [int(r[0]) for r in rows] == list(range(6))
    model = load_model(tmp_path / "out" / "model")
    np.testing.assert_allclose([float(r[1]) for r in rows], model.weights_, atol=1e-4)
    assert sum(int(r[2].replace(",", "")) for r in rows) == pytest.approx(2000, abs=6)
    mean_ll = report["fit"]["mean_log_likelihood"]
    assert f"mean log-likelihood per sample of the final model {mean_ll:.4f}" in stdout


def test_predict_writes_int64_labels(fitted, small_zarr, workdir):
    target = workdir / "int64.zarr"
    code, _ = call_main("predict", "--model", fitted.out, "--data", small_zarr,
                        "--output", target, "--quiet")
    assert code == 0
    assert zarr.open_array(target, mode="r").dtype == np.int64


# ---------------------------------------------------------------------------------------
# Ctrl-C and --resume
# ---------------------------------------------------------------------------------------


def _fit_until(config: Path, line_prefix: str) -> subprocess.Popen:
    proc = start_cli("fit", config, new_session=True)
    for line in proc.stderr:
        if line.startswith(line_prefix):
            return proc
    _, err = finish(proc, 30)
    raise AssertionError(f"never saw {line_prefix!r}: {err}")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_ctrl_c_prints_one_line_and_resume_says_where(tmp_path, small_zarr):
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    config = write_config(tmp_path / "c.yaml", small_zarr, out,
                          cluster={"n_workers": 2},
                          model={"tol": 0.0, "max_iter": 100_000, "init_params": "random"},
                          checkpoint={"dir": str(ckpt), "every": 1})
    proc = _fit_until(config, "iter 3/")
    try:
        os.killpg(proc.pid, signal.SIGINT)  # as a terminal sends Ctrl-C to the job
        _, err = finish(proc, 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    (line,) = [line for line in err.splitlines() if line.startswith("daskgmm: error")]
    iteration = json.loads((ckpt / "checkpoint.json").read_text())["iteration"]
    assert line == (f"daskgmm: error: interrupted; the last checkpoint is at iteration "
                    f"{iteration} (in {ckpt}): resume with `daskgmm fit {config} --resume`")
    assert not out.exists() and not leftovers(tmp_path)
    result = run_cli("fit", config, "--resume", "--set", f"model.max_iter={iteration + 2}")
    assert result.returncode == 0, result.stderr
    assert f"resuming from the checkpoint at iteration {iteration} in {ckpt}" in \
        result.stderr


def test_ctrl_c_without_checkpoints_says_so(tmp_path, small_zarr):
    config = write_config(tmp_path / "c.yaml", small_zarr, tmp_path / "out",
                          model={"tol": 0.0, "max_iter": 100_000, "init_params": "random"})
    proc = _fit_until(config, "iter 2/")
    try:
        os.killpg(proc.pid, signal.SIGINT)
        _, err = finish(proc, 60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert_clean_error((proc.returncode, err), "interrupted; nothing was written, and "
                       "there is no checkpoint to resume from", code=130)


# ---------------------------------------------------------------------------------------
# generate on a full disk or a read-only location
# ---------------------------------------------------------------------------------------


def test_generate_on_a_full_or_read_only_disk(tmp_path):
    from tests.mounts import Tmpfs

    args = ("generate", "--n-samples", 200_000, "--n-features", 8, "--n-components", 3,
            "--chunk-rows", 20_000)
    with Tmpfs(tmp_path / "small", size="256k") as mount:
        target = mount.path / "x.zarr"
        result = run_cli(*args, "--output", target)  # refused before anything is written
        assert_clean_error(result, f"{target}: the data set needs 13.7 MiB and its file "
                                   "system has 0.2 MiB free")
        assert not target.exists() and not leftovers(mount.path)
    with Tmpfs(tmp_path / "ro", read_only=True) as mount:
        result = run_cli(*args, "--output", mount.path / "x.h5")
        assert_clean_error(result, f"--output {mount.path / 'x.h5'}: the file system is "
                                   "read-only")


@pytest.mark.slow  # 1,500 tasks per pass: the overhead the warning is about
def test_tiny_chunks_are_warned_about_with_the_numbers(tmp_path, small_zarr):
    # 600 chunks of 5 rows: past the engine's 500 small chunks, with few tasks to run
    config = write_config(tmp_path / "c.yaml", small_zarr, tmp_path / "out", chunk_rows=5,
                          model={"max_iter": 0, "init_params": "random_from_data"})
    result = run_cli("fit", config, "--quiet")
    assert result.returncode == 0, result.stderr
    # The engine's rule and wording (daskgmm.engine.passes), written once.
    expected = "PerformanceWarning: the data are split into 600 chunks of about"
    assert f"daskgmm: warning: {expected}" in result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert any(expected in w for w in report["fit"]["warnings"])


def test_generate_chunks_default_to_the_default_chunk_size(tmp_path):
    """Without --chunk-rows, a storage chunk holds DEFAULT_CHUNK_BYTES of rows (here
    8,388 rows of 1,000 float64 features), not a fixed number of rows."""
    from daskgmm.io.chunking import DEFAULT_CHUNK_BYTES

    path = tmp_path / "wide.zarr"
    code, out = call_main("generate", "--n-samples", 9000, "--n-features", 1000,
                          "--n-components", 2, "--output", path, "--quiet")
    assert code == 0
    rows = DEFAULT_CHUNK_BYTES // (1000 * 8)
    assert rows == 8388 and f"in 2 chunks of {rows} rows" in out
    assert zarr.open_group(path, mode="r")["X"].chunks == (rows, 1000)


def test_storage_options_flag_errors_do_not_echo_the_value(tmp_path):
    for value in ('{"secret": "abc-123"', '["secret-abc-123"]', "@" + str(tmp_path / "no")):
        result = run_cli("predict", "--model", "m", "--data", "d", "--output",
                         tmp_path / "o.zarr", "--storage-options", value)
        assert result.returncode == 2 and "--storage-options" in result.stderr
        assert "abc-123" not in result.stderr and "Traceback" not in result.stderr
