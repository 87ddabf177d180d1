"""``daskgmm fit`` on an existing cluster: a real ``dask scheduler`` and two ``dask worker``
processes, joined by address and by scheduler file.

The fit on the remote cluster must give the very same numbers as a fit of the same data
with the same chunking and seed anywhere else (the statistics are reduced in a fixed
tree), so it is compared bit for bit with an in-process fit.
"""

from __future__ import annotations

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

from daskgmm import GaussianMixture
from daskgmm.io.generate import generate_mixture
from daskgmm.io.readers import open_array
from daskgmm.models import load as load_model

pytestmark = pytest.mark.slow

N, D, K, ROWS = 4000, 3, 3, 500


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    """Start ``python -m dask ARGS`` in its own process group, logging to ``log``."""
    handle = open(log, "wb")  # closed by _stop
    proc = subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=handle,
                            stderr=subprocess.STDOUT, start_new_session=True)
    proc.log_handle = handle  # type: ignore[attr-defined]
    return proc


def _stop(proc: subprocess.Popen) -> None:
    """Stop a process we started, and the children in its process group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
    else:  # the leader is gone; make sure its group is too
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.log_handle.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def remote_cluster(tmp_path_factory):
    """A scheduler and two single-threaded workers of 1 GiB, in separate processes."""
    from distributed import Client

    root = tmp_path_factory.mktemp("remote")
    scheduler_file = root / "scheduler.json"
    procs: list[subprocess.Popen] = []
    try:
        procs.append(_spawn(["scheduler", "--host", "127.0.0.1", "--port", "0",
                             "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                            root / "scheduler.log"))
        deadline = time.monotonic() + 60
        while not scheduler_file.exists():
            assert procs[0].poll() is None, (root / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not start"
            time.sleep(0.1)
        for i in range(2):
            procs.append(_spawn(["worker", "--nworkers", "1", "--nthreads", "1",
                                 "--memory-limit", "1GiB", "--no-dashboard",
                                 "--local-directory", str(root / f"w{i}"),
                                 "--scheduler-file", str(scheduler_file)],
                                root / f"worker{i}.log"))
        address = json.loads(scheduler_file.read_text())["address"]
        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield {"address": address, "scheduler_file": scheduler_file, "root": root}
    finally:
        for proc in reversed(procs):
            _stop(proc)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("remote-data") / "x.zarr"
    generate_mixture(path, N, D, K, seed=4, chunk_rows=ROWS)
    return path


def _config(path: Path, data: Path, out: Path) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "remote",
        "data": {"path": str(data), "chunk_rows": ROWS},
        "model": {"n_components": K, "covariance_type": "full", "random_state": 3,
                  "n_init": 2, "tol": 1.0e-4},
        "output": {"dir": str(out), "labels": True, "plots": True},
    }))
    return path


def _fit(config: Path, *overrides: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "daskgmm", "fit", str(config), "--quiet"]
    for item in overrides:
        args += ["--set", item]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> SimpleNamespace:
    """The same run on an embedded LocalCluster (worker processes like the remote ones)."""
    root = tmp_path_factory.mktemp("local-run")
    out = root / "out"
    config = _config(root / "c.yaml", data, out)
    result = _fit(config, "output.responsibilities=true")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["cluster"]["kind"] == "local"
    return SimpleNamespace(model=load_model(out / "model"), out=out)


@pytest.mark.parametrize("how", ["address", "scheduler_file"])
def test_fit_on_a_remote_cluster(tmp_path, remote_cluster, data, reference, how):
    out = tmp_path / "out"
    config = _config(tmp_path / "c.yaml", data, out)
    result = _fit(config, f"cluster.{how}={remote_cluster[how]}")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr

    report = json.loads((out / "report.json").read_text())
    cluster = report["cluster"]
    assert cluster["kind"] == "remote"
    assert cluster["n_workers"] == 2 and cluster["threads"] == 2
    assert cluster["scheduler_address"] == remote_cluster["address"]
    assert set(report["memory"]["workers"]) == set(cluster["worker_memory_limits"])
    for worker in report["memory"]["workers"].values():
        assert worker["limit_bytes"] == 2**30 and worker["peak_bytes"] > 0

    # The same bits as the local run: same data, chunking and seed.
    model, local = load_model(out / "model"), reference.model
    assert model.n_iter_ == local.n_iter_
    for attr in ("means_", "covariances_", "weights_", "precisions_cholesky_"):
        np.testing.assert_array_equal(getattr(model, attr), getattr(local, attr))
    assert model.lower_bounds_ == local.lower_bounds_
    np.testing.assert_array_equal(zarr.open_array(out / "labels.zarr", mode="r")[:],
                                  zarr.open_array(reference.out / "labels.zarr")[:])
    # And (to rounding) the answer of an in-process fit.
    in_process = GaussianMixture(K, covariance_type="full", random_state=3, n_init=2,
                                 tol=1e-4).fit(open_array(data, chunk_rows=ROWS))
    np.testing.assert_allclose(model.means_, in_process.means_, rtol=1e-12, atol=1e-12)


def test_predict_on_a_remote_cluster(tmp_path, remote_cluster, data, reference):
    target = tmp_path / "proba.zarr"
    result = subprocess.run(
        [sys.executable, "-m", "daskgmm", "predict", "--model", str(reference.out),
         "--data", str(data), "--output", str(target), "--proba", "--chunk-rows",
         str(ROWS), "--quiet", "--scheduler", remote_cluster["address"]],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    proba = zarr.open_array(target, mode="r")
    assert proba.shape == (N, K) and proba.chunks == (ROWS, K)
    np.testing.assert_array_equal(
        proba[:], zarr.open_array(reference.out / "responsibilities.zarr")[:])


def test_wrong_address_is_a_clean_error(tmp_path, data):
    config = _config(tmp_path / "c.yaml", data, tmp_path / "out")
    env = {**os.environ, "DASKGMM_CONNECT_TIMEOUT": "2"}
    result = subprocess.run(
        [sys.executable, "-m", "daskgmm", "fit", str(config), "--set",
         "cluster.scheduler_file=" + str(tmp_path / "missing.json")],
        capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert "daskgmm: error: could not read the Dask scheduler address" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """A TLS-only scheduler and two workers (mutual TLS), with the client's files."""
    from distributed import Client
    from distributed.security import Security

    from .clusterproc import ProcessCluster
    from .test_tls import make_pki

    root = tmp_path_factory.mktemp("tls")
    good, rogue = make_pki(root / "good", "daskgmm"), make_pki(root / "rogue", "rogue")
    env = {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}
    with ProcessCluster(root / "procs", tls=good, env=env) as procs:
        procs.start_scheduler()
        procs.start_worker()
        procs.start_worker()
        security = Security(tls_ca_file=str(good.ca_file), tls_client_cert=str(good.cert),
                            tls_client_key=str(good.key), require_encryption=True)
        with Client(procs.address, security=security, timeout="30s") as client:
            procs.wait_for_workers(client, 2)
        yield procs.address, good, rogue


def test_fit_over_tls(tmp_path, tls_cluster, data, reference):
    address, good, rogue = tls_cluster
    out = tmp_path / "out"
    config = _config(tmp_path / "c.yaml", data, out)
    tls = [f"cluster.address={address}", f"cluster.tls.ca_file={good.ca_file}",
           f"cluster.tls.cert_file={good.cert}", f"cluster.tls.key_file={good.key}",
           "output.labels=false", "output.plots=false"]
    result = _fit(config, *tls)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["cluster"]["kind"] == "remote"
    assert report["cluster"]["scheduler_address"] == address
    assert report["cluster"]["n_workers"] == 2
    model = load_model(out / "model")
    np.testing.assert_array_equal(model.means_, reference.model.means_)

    # A certificate from another authority: refused, in one line.
    bad = [item.replace(str(good.cert), str(rogue.cert)).replace(str(good.key),
                                                                  str(rogue.key))
           for item in tls]
    env = {**os.environ, "DASKGMM_CONNECT_TIMEOUT": "3"}
    args = [sys.executable, "-m", "daskgmm", "fit", str(config), "--set",
            "output.dir=" + str(tmp_path / "bad")]
    for item in bad:
        args += ["--set", item]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert f"could not connect to the Dask scheduler at {address}" in result.stderr
    assert "cluster.tls" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "bad").exists()
