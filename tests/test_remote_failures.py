"""Object stores that fail: every failure reaches the user as one line naming the
location (credentials masked) and exit code 2, for ``fit`` (data, output, checkpoint)
and ``predict`` (model, data, output).

Real servers on 127.0.0.1: a closed port (an unreachable endpoint), moto's S3 server
(no such bucket; an object deleted in the middle of a fit), a moto server that checks
credentials (wrong ones are refused: access denied), and a proxy before moto that
answers 503 SlowDown to everything (throttling that outlasts the retries).
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from daskgmm.io.generate import generate_mixture
from tests.cli_utils import assert_clean_error, cli_env
from tests.servers import flaky_s3, s3_with_credentials  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

SECRET = "s3cr3t-never-shown"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed once the socket is


def options(endpoint: str, key: str = "daskgmm-test-key", secret: str = SECRET) -> dict:
    return {"key": key, "secret": secret,
            "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


def unreachable_options() -> dict:
    """Storage options of an endpoint where nothing listens. botocore gives up on a
    refused connection after one attempt instead of its default retries with back-off
    (about 20 of the 25 s a run took, waiting, before the same one-line error)."""
    return {**options(f"http://127.0.0.1:{closed_port()}"),
            "config_kwargs": {"retries": {"max_attempts": 1}}}


def run(*args: object, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "daskgmm", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=cli_env())


def fit_config(path: Path, data: dict, output: dict, checkpoint: dict | None = None) -> Path:
    raw = {"data": data, "output": {"plots": False, **output},
           "model": {"n_components": 2, "random_state": 0, "cache": False, "tol": 0.0,
                     "max_iter": 60},
           "cluster": {"n_workers": 1, "memory_limit": "1GiB", "dashboard_address": None},
           "checkpoint": checkpoint or {"dir": None}}
    path.write_text(yaml.safe_dump(raw))
    return path


def assert_one_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert_clean_error(result, *fragments)
    assert SECRET not in result.stderr + result.stdout


@pytest.fixture(scope="module")
def local_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("failures") / "x.zarr"
    generate_mixture(path, 2000, 2, 2, chunk_rows=500)
    return path


@pytest.fixture(scope="module")
def local_model(tmp_path_factory, local_data) -> Path:
    from daskgmm import GaussianMixture
    from daskgmm.io.readers import open_array

    path = tmp_path_factory.mktemp("model") / "m"
    GaussianMixture(2, random_state=0).fit(open_array(local_data).compute()).save(path)
    return path


@pytest.mark.parametrize("where", ["data.path", "output.dir", "checkpoint.dir"])
def test_fit_with_an_unreachable_endpoint(tmp_path, local_data, where):
    url = "s3://bucket/" + {"data.path": "x.zarr", "output.dir": "run",
                            "checkpoint.dir": "ckpt"}[where]
    so = unreachable_options()
    data = {"path": url, "storage_options": so} if where == "data.path" \
        else {"path": str(local_data)}
    output = {"dir": url, "storage_options": so} if where == "output.dir" \
        else {"dir": str(tmp_path / "out")}
    checkpoint = {"dir": url, "storage_options": so} if where == "checkpoint.dir" else None
    result = run("fit", fit_config(tmp_path / "c.yaml", data, output, checkpoint))
    assert_one_line(result, url, "cannot connect to the storage endpoint")
    if where != "data.path":
        assert f"{where} {url}" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("where", ["--model", "--data", "--output"])
def test_predict_with_an_unreachable_endpoint(tmp_path, local_data, local_model, where):
    url = {"--model": "s3://bucket/m", "--data": "s3://bucket/x.zarr",
           "--output": "s3://bucket/labels.zarr"}[where]
    values = {"--model": local_model, "--data": local_data,
              "--output": tmp_path / "labels.zarr", where: url}
    so = unreachable_options()
    import json

    args = [a for flag, value in values.items() for a in (flag, value)]
    result = run("predict", *args, "--dataset", "X",
                 f"{where}-storage-options", json.dumps(so))
    assert_one_line(result, url, "cannot connect to the storage endpoint")
    assert not (tmp_path / "labels.zarr").exists()


def test_no_such_bucket_and_wrong_credentials(tmp_path, local_data, s3_server,
                                             s3_with_credentials):  # noqa: F811
    result = run("fit", fit_config(tmp_path / "c.yaml", {"path": str(local_data)},
                                   {"dir": "s3://no-such-bucket-xyz/run",
                                    "storage_options": options(s3_server.endpoint)}))
    assert_one_line(result, "output.dir s3://no-such-bucket-xyz/run: no such bucket")
    server, key = s3_with_credentials
    wrong = options(server.endpoint, key=key, secret=SECRET)
    result = run("fit", fit_config(tmp_path / "c.yaml", {"path": str(local_data)},
                                   {"dir": f"s3://{server.bucket}/run",
                                    "storage_options": wrong}))
    assert_one_line(result, f"output.dir s3://{server.bucket}/run: access denied: check "
                            "the credentials")
    # reading with wrong credentials is refused as such, not as "No such file"
    good = options(server.endpoint, key=key, secret=server.secret)
    from daskgmm import GaussianMixture

    GaussianMixture(2, random_state=0).fit(np.random.default_rng(0).normal(size=(50, 2))) \
        .save(f"s3://{server.bucket}/model", storage_options=good)
    import json

    result = run("predict", "--model", f"s3://{server.bucket}/model", "--data", local_data,
                 "--dataset", "X", "--output", tmp_path / "l.zarr",
                 "--model-storage-options", json.dumps(wrong))
    assert_one_line(result, f"--model s3://{server.bucket}/model: access denied")
    assert "No such file" not in result.stderr


def test_throttling_after_the_retries(tmp_path, local_data, flaky_s3):  # noqa: F811
    flaky_s3.reset(lambda kind, path, counts: (503, "SlowDown"))
    try:
        result = run("fit", fit_config(tmp_path / "c.yaml", {"path": str(local_data)},
                                       {"dir": f"s3://{flaky_s3.bucket}/slow",
                                        "storage_options": options(flaky_s3.endpoint,
                                                                   secret=flaky_s3.secret)}))
    finally:
        flaky_s3.reset()
    assert_one_line(result, f"output.dir s3://{flaky_s3.bucket}/slow: the store is "
                            "throttling requests")


def _fit_and_delete(tmp_path, s3_server, url: str, victim) -> tuple[int, str]:
    """Fit the data at ``url`` (cache off, small chunks) and delete ``victim(fs)`` from
    the bucket once the second EM iteration is done."""
    config = fit_config(tmp_path / "c.yaml", {"path": url, "chunk_rows": 1000,
                                              "storage_options": s3_server.storage_options},
                        {"dir": str(tmp_path / "out")})
    proc = subprocess.Popen([sys.executable, "-m", "daskgmm", "fit", config],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env())
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("iter 2/"):
                break
        fs = s3_server.fs()
        fs.rm_file(victim(fs))
        _, rest = proc.communicate(timeout=180)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    return proc.returncode, "".join(lines) + rest


def test_a_file_deleted_in_the_middle_of_a_fit(tmp_path, s3_server):
    """The .npy file of the data deleted from the bucket while the fit reads it: one
    line naming it, exit 2, no output."""
    url = s3_server.url() + "/vanishing.npy"
    values = np.random.default_rng(0).normal(size=(20_000, 2))
    with s3_server.fs().open(url[len("s3://"):], "wb") as handle:
        np.save(handle, values)
    code, stderr = _fit_and_delete(tmp_path, s3_server, url, lambda fs: url[len("s3://"):])
    assert_clean_error((code, stderr), "vanishing.npy", "it was there when the array was "
                                                        "opened")
    assert not (tmp_path / "out").exists()


def test_a_zarr_chunk_deleted_in_the_middle_of_a_fit(tmp_path, s3_server):
    """A chunk object deleted after the store was opened is an error at its read (the
    listing made at opening says it was there), not fill values."""
    url = s3_server.url() + "/vanishing.zarr"
    generate_mixture(tmp_path / "v.zarr", 20_000, 2, 2, chunk_rows=1000)
    s3_server.fs().put(str(tmp_path / "v.zarr"), url[len("s3://"):], recursive=True)
    code, stderr = _fit_and_delete(
        tmp_path, s3_server, url,
        lambda fs: next(k for k in fs.find(url[len("s3://"):]) if "/X/c/" in k))
    assert_clean_error((code, stderr), "vanishing.zarr", "was deleted after the store was opened")


# ---------------------------------------------------------------------------------------
# a refusing store (no such bucket, wrong credentials) at the other four locations:
# fit data.path and checkpoint.dir, predict --data and --output. Each is refused before
# any work, so ``main`` runs in this process.
# ---------------------------------------------------------------------------------------

REFUSAL_LOCATIONS = ["fit data.path", "fit checkpoint.dir", "predict --data",
                     "predict --output"]


@pytest.mark.parametrize("refusal", ["no such bucket", "wrong credentials"])
@pytest.mark.parametrize("where", REFUSAL_LOCATIONS)
def test_a_refusing_store(tmp_path, local_data, local_model, s3_server,
                          s3_with_credentials, capsys, where, refusal):  # noqa: F811
    """One line (exit 2, no traceback, the secret never shown) naming the location and
    why, and nothing written: no local output, no bucket created, nothing in the bucket."""
    import json
    import re
    import uuid

    import s3fs

    from daskgmm.cli.main import main

    if refusal == "no such bucket":
        bucket, so, owner = "no-such-bucket-" + uuid.uuid4().hex[:8], \
            options(s3_server.endpoint), s3_server.fs()
        reason = r"(no such bucket|there is no bucket)"
    else:
        server, key = s3_with_credentials
        bucket, so = server.bucket, options(server.endpoint, key=key, secret=SECRET)
        owner = s3fs.S3FileSystem(**options(server.endpoint, key=key, secret=server.secret))
        reason = r"access denied: check the credentials"
    command, key_name = where.split(" ")
    prefix = f"{bucket}/{uuid.uuid4().hex}"
    url = f"s3://{prefix}/" + {"data.path": "x.zarr", "checkpoint.dir": "ckpt",
                               "--data": "x.zarr", "--output": "labels.zarr"}[key_name]
    out = tmp_path / ("out" if command == "fit" else "labels.zarr")
    if command == "fit":
        data = {"path": url, "storage_options": so} if key_name == "data.path" \
            else {"path": str(local_data)}
        checkpoint = {"dir": url, "storage_options": so} if key_name == "checkpoint.dir" \
            else None
        args = ["fit", fit_config(tmp_path / "c.yaml", data, {"dir": str(out)}, checkpoint)]
    else:
        values = {"--model": local_model, "--data": local_data, "--output": out, key_name: url}
        args = ["predict", *(a for flag, value in values.items() for a in (flag, value)),
                "--dataset", "X", f"{key_name}-storage-options", json.dumps(so)]
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert_one_line(subprocess.CompletedProcess(args, code, captured.out, captured.err), url)
    assert re.search(reason, captured.err), captured.err
    if refusal == "wrong credentials":  # not "No such file or store" (finding 12)
        assert "No such file" not in captured.err, captured.err
    if key_name in ("checkpoint.dir", "--output"):  # the setting is named
        assert f"{key_name} {url}" in captured.err, captured.err
    # nothing written: no local output, no bucket created, nothing under the prefix
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["c.yaml"] if command == "fit" else [])
    assert not owner.exists(prefix)
    if refusal == "no such bucket":
        assert not owner.exists(bucket)
