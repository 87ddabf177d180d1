"""``daskgmm fit`` and ``predict`` with data and outputs where clusters keep them.

Real servers on 127.0.0.1 (moto's S3 server as a subprocess, an HTTP range server), the
session's LocalCluster of two worker processes joined through ``cluster.address`` (so
the test can ask the workers afterwards what they opened), Parquet tables with labels
written back as Parquet, ``data.sample_weight`` in each of its forms, and
``model.kind: bayesian``. Every CLI result is compared with the same fit made here with
the Python API on the same data and chunking.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
import zarr

from daskgmm import BayesianGaussianMixture, GaussianMixture, load
from daskgmm.cli.main import main
from daskgmm.io.generate import generate_mixture
from daskgmm.io.locations import StoragePath, parse_location
from daskgmm.io.readers import open_array
from daskgmm.io.storage import zarr_store

N, D, K, ROWS = 3000, 3, 3, 500
MODEL = {"n_components": K, "random_state": 0, "covariance_type": "diag", "tol": 1e-4}

pytestmark = pytest.mark.slow


def call_main(*args: object) -> tuple[int, str]:
    """``main(ARGS)`` in this process; the exit code and stdout."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in args])
    return code, out.getvalue()


def write_config(path: Path, data: dict, output: dict, cluster, **sections) -> Path:
    config = {"name": "remote", "data": {"chunk_rows": ROWS, **data},
              "model": {**MODEL, **sections.pop("model", {})},
              "cluster": {"address": cluster.scheduler_address},
              "output": {"plots": False, **output}, **sections}
    path.write_text(yaml.safe_dump(config))
    return path


def python_fit(X, estimator=GaussianMixture, sample_weight=None, **params):
    """The reference: the same estimator fitted here, on the same chunks."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return estimator(**{**MODEL, **params}).fit(X, sample_weight=sample_weight)


def assert_same_model(a, b):
    for name in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-10,
                                   atol=1e-12, err_msg=name)
    assert a.n_iter_ == b.n_iter_


@pytest.fixture(scope="module")
def local_zarr(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("remote-cli") / "x.zarr"
    generate_mixture(path, N, D, K, seed=1, chunk_rows=ROWS)
    return path


@pytest.fixture(scope="module")
def reference(local_zarr):
    X = open_array(local_zarr, chunk_rows=ROWS)
    return X, python_fit(X)


@pytest.fixture(scope="module")
def s3_data(s3_server, local_zarr) -> str:
    url = s3_server.url() + "/data/x.zarr"
    s3_server.fs().put(str(local_zarr), parse_location(url).path, recursive=True)
    return url


def _worker_s3_endpoints(client) -> dict:
    """The endpoints of the S3 filesystems each worker process created itself."""

    def endpoints():
        import s3fs

        return sorted({str((fs.client_kwargs or {}).get("endpoint_url"))
                       for fs in list(s3fs.S3FileSystem._cache.values())})

    return client.run(endpoints)


def _listing(url: str, options: dict) -> list[str]:
    loc = parse_location(url, options)
    base = loc.path.rstrip("/") + "/"
    return sorted(str(p)[len(base):] for p in loc.fs.find(loc.path))


# ---------------------------------------------------------------------------------------
# S3
# ---------------------------------------------------------------------------------------


def test_fit_and_predict_from_s3_to_s3(s3_server, s3_data, reference, cluster, client,
                                       tmp_path, capsys):
    so = s3_server.storage_options
    X, expected = reference
    run = s3_server.url() + "/runs/one"
    config = write_config(tmp_path / "s3.yaml", {"path": s3_data, "storage_options": so},
                          {"dir": run, "storage_options": so, "labels": True,
                           "responsibilities": True, "plots": True},
                          cluster, checkpoint={"dir": s3_server.url() + "/ckpt"})
    code, stdout = call_main("fit", config, "--quiet")
    assert code == 0
    # Everything is in the bucket, complete, with no temporary prefix left over.
    names = {key.split("/")[0] for key in _listing(run, so)}
    assert names == {".daskgmm.json", "model", "report.json", "labels.zarr",
                     "responsibilities.zarr", "convergence.png", "clusters.png"}
    parent = parse_location(run, so).parent
    assert [p for p in parent.fs.ls(parent.path, detail=False)] == [parent.join("one").path]
    # The model loads back from S3 and is the model fitted here on the same chunks.
    model = load(run + "/model", storage_options=so)
    assert_same_model(model, expected)
    labels = zarr.open_array(zarr_store(run + "/labels.zarr", so, read_only=True), mode="r")
    assert labels.dtype == np.int64 and labels.chunks == (ROWS,)
    np.testing.assert_array_equal(labels[...], expected.predict(X).compute())
    resp = zarr.open_array(zarr_store(run + "/responsibilities.zarr", so, read_only=True))
    np.testing.assert_allclose(resp[...], expected.predict_proba(X).compute(), rtol=1e-10)
    # The workers opened the bucket themselves (the data was never on their disk).
    endpoints = _worker_s3_endpoints(client)
    assert len(endpoints) == 2
    assert all(s3_server.endpoint in found for found in endpoints.values())
    # No credential in the report, on the terminal or in the labels' attributes.
    report_loc = parse_location(run + "/report.json", so)
    report_text = report_loc.fs.cat_file(report_loc.path).decode()
    report = json.loads(report_text)
    assert report["config"]["data"]["storage_options"]["secret"] == "***"
    assert report["data"]["path"] == s3_data and report["outputs"]["dir"] == run
    captured = capsys.readouterr()
    for text in (report_text, stdout, captured.err, json.dumps(dict(labels.attrs))):
        assert s3_server.secret not in text
    # The checkpoint of the finished run was removed.
    assert not parse_location(report["config"]["checkpoint"]["dir"], so).join(
        "checkpoint.json").exists()

    # predict from S3 to S3, the options from a file.
    options_file = tmp_path / "so.json"
    options_file.write_text(json.dumps(so))
    out = s3_server.url() + "/predicted/labels.zarr"
    code, stdout = call_main("predict", "--model", run, "--data", s3_data, "--output", out,
                             "--storage-options", f"@{options_file}", "--quiet",
                             "--scheduler", cluster.scheduler_address)
    assert code == 0 and out in stdout and s3_server.secret not in stdout
    predicted = zarr.open_array(zarr_store(out, so, read_only=True), mode="r")
    np.testing.assert_array_equal(predicted[...], expected.predict(X).compute())
    assert dict(predicted.attrs)["daskgmm"]["kind"] == "labels"  # its marker


def test_s3_outputs_keep_the_guards(s3_server, s3_data, cluster, tmp_path, capsys):
    """Pre-flight refusals for URLs: output over the data, existing outputs, outputs
    that daskgmm did not write, a location that cannot be written."""
    so = s3_server.storage_options
    base = {"path": s3_data, "storage_options": so}
    cases = [
        ({"dir": s3_data, "storage_options": so}, "is the same location as data.path"),
        ({"dir": s3_data.rsplit("/", 1)[0], "storage_options": so}, "contains data.path"),
        ({"dir": s3_data + "/run", "storage_options": so}, "lies inside data.path"),
    ]
    foreign = s3_server.url() + "/foreign"
    parse_location(foreign, so).fs.pipe_file(parse_location(foreign, so).path + "/mine.txt",
                                             b"user data")
    cases.append(({"dir": foreign, "storage_options": so}, "already exists; pass --set "
                                                            "output.overwrite=true"))
    cases.append(({"dir": foreign, "storage_options": so, "overwrite": True},
                  "daskgmm did not write"))
    # (moto accepts any credentials, so the unwritable place is a missing bucket)
    cases.append(({"dir": "s3://no-such-bucket-here/run", "storage_options": so},
                  "output.dir s3://no-such-bucket-here/run: no such bucket"))
    for output, fragment in cases:
        config = write_config(tmp_path / "g.yaml", base, output, cluster)
        code, _ = call_main("fit", config)
        err = capsys.readouterr().err
        assert code == 2, err
        assert fragment in err and "Traceback" not in err and s3_server.secret not in err
    assert _listing(foreign, so) == ["mine.txt"]  # untouched
    assert parse_location(s3_data, so).join("zarr.json").exists()
    code, _ = call_main("predict", "--model", "unused", "--data", s3_data,
                        "--output", s3_data + "/labels.zarr", "--storage-options",
                        json.dumps(so))
    err = capsys.readouterr().err
    assert code == 2 and "--output" in err and "lies inside --data" in err


def test_checkpoint_on_s3_is_resumed_by_the_cli(s3_server, s3_data, reference, cluster,
                                                tmp_path, capsys):
    """A fit interrupted after 3 iterations (its checkpoint on S3) is resumed by
    ``daskgmm fit --resume`` and ends with the uninterrupted fit's model."""
    so = s3_server.storage_options
    expected = reference[1]
    ckpt = s3_server.url() + "/ckpt"
    X_s3 = open_array(s3_data, chunk_rows=ROWS, storage_options=so)
    python_fit(X_s3, max_iter=3, checkpoint_dir=StoragePath(ckpt, so))
    ckpt_file = parse_location(ckpt, so).join("checkpoint.json")
    assert json.loads(ckpt_file.fs.cat_file(ckpt_file.path))["iteration"] == 3
    run = s3_server.url() + "/resumed"
    config = write_config(tmp_path / "r.yaml", {"path": s3_data, "storage_options": so},
                          {"dir": run, "storage_options": so}, cluster,
                          checkpoint={"dir": ckpt})
    code, _ = call_main("fit", config)
    err = capsys.readouterr().err
    assert code == 2 and "a checkpoint from an earlier run exists in " + ckpt in err
    assert "at iteration 3; pass --resume" in err
    code, _ = call_main("fit", config, "--resume")
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"resuming from the checkpoint at iteration 3 in {ckpt}" in err
    report_loc = parse_location(run + "/report.json", so)
    report = json.loads(report_loc.fs.cat_file(report_loc.path))
    assert report["fit"]["resumed_from_iteration"] == 3
    assert_same_model(load(run + "/model", storage_options=so), expected)
    assert not ckpt_file.exists()


# ---------------------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------------------


def test_fit_from_http(http_server, local_zarr, reference, cluster, tmp_path):
    X, expected = reference
    np.save(http_server.root / "x.npy", np.asarray(X.compute()))
    url = http_server.url("x.npy")
    out = tmp_path / "run"
    config = write_config(tmp_path / "h.yaml", {"path": url}, {"dir": str(out),
                                                               "labels": True}, cluster)
    code, _ = call_main("fit", config, "--quiet")
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["path"] == url and report["data"]["format"] == "npy"
    assert_same_model(load(out / "model"), expected)
    labels = zarr.open_array(out / "labels.zarr", mode="r")
    np.testing.assert_array_equal(labels[...], expected.predict(X).compute())


# ---------------------------------------------------------------------------------------
# Parquet tables, sample weights, bayesian
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table(tmp_path_factory, local_zarr):
    """A Parquet directory of two files (row groups of 400 rows): an id column, three
    features, integer weights and a text column."""
    import pandas as pd

    values = np.asarray(zarr.open_array(local_zarr / "X", mode="r")[...])
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"id": np.arange(N, dtype=np.int64) * 7 + 1000,
                          "f0": values[:, 0], "f1": values[:, 1], "f2": values[:, 2],
                          "w": rng.integers(0, 4, N).astype(np.int64),
                          "note": [f"row {i}" for i in range(N)]})
    root = tmp_path_factory.mktemp("table") / "events"
    root.mkdir()
    frame.iloc[:1800].to_parquet(root / "part-0.parquet", row_group_size=400)
    frame.iloc[1800:].to_parquet(root / "part-1.parquet", row_group_size=400)
    return root, frame


def test_parquet_input_with_weights_and_labels_as_parquet(table, cluster, tmp_path):
    import pandas as pd

    root, frame = table
    out = tmp_path / "run"
    config = write_config(tmp_path / "p.yaml",
                          {"path": str(root), "chunk_rows": None,
                           "sample_weight": {"column": "w"}},
                          {"dir": str(out), "labels": True, "id_column": "id",
                           "responsibilities": True}, cluster)
    code, _ = call_main("fit", config, "--quiet")
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["columns"] == ["f0", "f1", "f2"]  # not id, not w, not note
    assert report["fit"]["weighted"] and report["fit"]["sum_of_weights"] == frame.w.sum()
    assert report["outputs"]["labels"] == "labels.parquet"
    features = frame[["f0", "f1", "f2"]].to_numpy()
    X = open_array(root, columns=["f0", "f1", "f2"])
    expected = python_fit(X, sample_weight=frame.w.to_numpy(dtype=np.float64))
    model = load(out / "model")
    assert_same_model(model, expected)
    written = pd.read_parquet(out / "labels.parquet")
    assert list(written.columns) == ["id", "label"] and written.label.dtype == np.int64
    np.testing.assert_array_equal(written.id.to_numpy(), frame.id.to_numpy())
    np.testing.assert_array_equal(written.label.to_numpy(), expected.predict(features))
    assert len(list((out / "labels.parquet").glob("*.parquet"))) == X.npartitions
    # Responsibilities are still Zarr, with regular chunks (the table's are not).
    resp = zarr.open_array(out / "responsibilities.zarr", mode="r")
    assert len(set(X.chunks[0])) > 1 and resp.chunks == (max(X.chunks[0]), K)
    np.testing.assert_allclose(resp[...], expected.predict_proba(features), rtol=1e-10)

    # predict writes Parquet labels for Parquet data, next to the id column.
    labels_out = tmp_path / "predicted"
    code, stdout = call_main("predict", "--model", out, "--data", root, "--columns",
                             "f0,f1", "--columns", "f2", "--id-column", "id", "--output",
                             labels_out, "--quiet", "--scheduler", cluster.scheduler_address)
    assert code == 0 and "Parquet" in stdout
    again = pd.read_parquet(labels_out)
    pd.testing.assert_frame_equal(again, written)
    # ... and Zarr labels when asked for by the name.
    code, _ = call_main("predict", "--model", out, "--data", root, "--columns", "f0,f1,f2",
                        "--output", tmp_path / "labels.zarr", "--quiet",
                        "--scheduler", cluster.scheduler_address)
    assert code == 0
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "labels.zarr")[...],
                                  written.label.to_numpy())


def test_sample_weight_in_each_form(local_zarr, reference, cluster, tmp_path):
    """A file of weights (shorthand), an array of another HDF5 file, an array of the
    data's own Zarr store: the same model as fit(X, sample_weight=w)."""
    X, _ = reference
    weights = np.random.default_rng(5).integers(0, 3, N).astype(np.float64)
    expected = python_fit(X, sample_weight=weights)
    np.save(tmp_path / "w.npy", weights)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        f.create_dataset("weights/w", data=weights.reshape(-1, 1), chunks=(700, 1))
    store = tmp_path / "with-weights.zarr"
    group = zarr.open_group(store, mode="w")
    group.create_array("X", data=np.asarray(X.compute()), chunks=(ROWS, D))
    group.create_array("w", data=weights, chunks=(1000,))
    forms = [({"path": str(local_zarr)}, "w.npy"),
             ({"path": str(local_zarr)}, {"path": "w.h5", "dataset": "weights/w"}),
             ({"path": str(store), "dataset": "X"}, {"dataset": "w"})]
    for i, (data, weight) in enumerate(forms):
        out = tmp_path / f"run-{i}"
        config = write_config(tmp_path / f"w{i}.yaml", {**data, "sample_weight": weight},
                              {"dir": str(out)}, cluster)
        code, _ = call_main("fit", config, "--quiet")
        assert code == 0, weight
        assert_same_model(load(out / "model"), expected)
        report = json.loads((out / "report.json").read_text())
        assert report["fit"]["weighted"] and report["fit"]["sum_of_weights"] == weights.sum()


def test_bayesian_end_to_end(local_zarr, reference, cluster, tmp_path):
    X, _ = reference
    out = tmp_path / "bayes"
    config = write_config(tmp_path / "b.yaml", {"path": str(local_zarr)},
                          {"dir": str(out), "labels": True, "plots": True}, cluster,
                          model={"kind": "bayesian", "max_iter": 200})
    code, stdout = call_main("fit", config, "--quiet")
    assert code == 0 and "mean log-likelihood" in stdout
    expected = python_fit(X, BayesianGaussianMixture, max_iter=200)
    model = load(out / "model")
    assert isinstance(model, BayesianGaussianMixture)
    assert_same_model(model, expected)
    np.testing.assert_allclose(model.weight_concentration_[0],
                               expected.weight_concentration_[0], rtol=1e-10)
    report = json.loads((out / "report.json").read_text())
    assert report["fit"]["estimator"] == "BayesianGaussianMixture"
    assert report["config"]["model"]["kind"] == "bayesian"
    assert (out / "convergence.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "clusters.png").read_bytes()[:4] == b"\x89PNG"
    predicted = tmp_path / "bayes-labels.zarr"
    code, _ = call_main("predict", "--model", out, "--data", local_zarr, "--output",
                        predicted, "--quiet", "--scheduler", cluster.scheduler_address)
    assert code == 0
    labels = zarr.open_array(predicted, mode="r")[...]
    np.testing.assert_array_equal(labels, expected.predict(X).compute())
    np.testing.assert_array_equal(labels, zarr.open_array(out / "labels.zarr")[...])


def test_runs_on_s3_are_quiet_with_quiet(tmp_path, s3_server):
    """``--quiet`` fit and predict against S3 print nothing on stderr (no "Unclosed
    client session" from the filesystem's sessions at exit)."""
    from tests.cli_utils import run_cli

    so, prefix = s3_server.storage_options, s3_server.url()
    data = prefix + "/q.npy"
    with s3_server.fs().open(data[len("s3://"):], "wb") as handle:
        np.save(handle, np.random.default_rng(0).normal(size=(600, 2)))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"path": data, "storage_options": so},
        "model": {"n_components": 2, "random_state": 0},
        "cluster": {"n_workers": 1, "memory_limit": "1GiB", "dashboard_address": None},
        "output": {"dir": prefix + "/q-run", "storage_options": so}}))
    fit = run_cli("fit", config, "--quiet")
    assert fit.returncode == 0 and fit.stderr == "", fit.stderr
    predict = run_cli("predict", "--model", prefix + "/q-run", "--data", data,
                      "--output", prefix + "/q-labels.zarr", "--quiet",
                      "--storage-options", json.dumps(so))
    assert predict.returncode == 0 and predict.stderr == "", predict.stderr
