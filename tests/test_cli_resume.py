"""SIGKILL a running ``daskgmm fit`` (and its local cluster), resume it, compare with a
clean run: the resumed model must equal the uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

import daskgmm
from daskgmm.io.generate import generate_mixture

pytestmark = pytest.mark.slow


# Killed at iteration 3 (or 4): enough iterations left for the resumed run to continue,
# not so many that the resumed and the clean run spend most of the test iterating.
MAX_ITER = 15


def _config(tmp_path, name, data, checkpoint=None):
    cfg = {
        "data": {"path": str(data), "dataset": "X", "chunk_rows": 25_000},
        "model": {"n_components": 4, "covariance_type": "full", "random_state": 0,
                  "tol": 0.0, "max_iter": MAX_ITER},
        "cluster": {"n_workers": 1, "threads_per_worker": 2, "memory_limit": "1GiB",
                    "dashboard_address": None},
        "output": {"dir": str(tmp_path / name), "plots": False},
    }
    if checkpoint is not None:
        cfg["checkpoint"] = {"dir": str(checkpoint), "every": 1}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _fit_cmd(config, *extra):
    return [sys.executable, "-m", "daskgmm", "fit", str(config), "--quiet", *extra]


def test_sigkill_cli_fit_then_resume(tmp_path):
    data = tmp_path / "data.zarr"
    generate_mixture(data, 400_000, 8, 4, seed=3, chunk_rows=25_000, separation=1.5)
    ckpt = tmp_path / "ckpt"
    killed_cfg = _config(tmp_path, "killed", data, ckpt)

    # Its own session, so the whole process group (the CLI and its workers) can be killed.
    proc = subprocess.Popen(_fit_cmd(killed_cfg), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        iteration = 0
        while iteration < 3 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                iteration = json.loads((ckpt / "checkpoint.json").read_text())["iteration"]
            except (FileNotFoundError, json.JSONDecodeError):
                pass
        assert proc.poll() is None, proc.stderr.read().decode()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    killed_at = json.loads((ckpt / "checkpoint.json").read_text())["iteration"]
    assert 3 <= killed_at < MAX_ITER
    assert not (tmp_path / "killed").exists(), "a killed run left a partial output"

    refused = subprocess.run(_fit_cmd(killed_cfg), capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    assert "Traceback" not in refused.stderr

    resumed = subprocess.run(_fit_cmd(killed_cfg, "--resume"), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    clean = subprocess.run(_fit_cmd(_config(tmp_path, "clean", data)), capture_output=True,
                           text=True)
    assert clean.returncode == 0, clean.stderr

    a = daskgmm.load(tmp_path / "killed" / "model")
    b = daskgmm.load(tmp_path / "clean" / "model")
    for attr in ("weights_", "means_", "covariances_"):
        np.testing.assert_allclose(getattr(a, attr), getattr(b, attr), rtol=1e-10)
    assert a.lower_bounds_ == pytest.approx(b.lower_bounds_, rel=1e-10)
    assert a.n_iter_ == b.n_iter_ == MAX_ITER
