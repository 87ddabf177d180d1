"""Tests of daskgmm.io.generate on real Zarr and HDF5 output."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import zarr

from daskgmm.diagnostics.observers import observe
from daskgmm.errors import DataNotFoundError, UnsafeOverwriteError
from daskgmm.io.generate import block_rows, generate_mixture, load_truth, sample_parameters
from daskgmm.io.readers import open_array
from daskgmm.io.storage import read_output_marker as read_marker

N, D, K, ROWS = 5000, 3, 3, 1000


@pytest.fixture(params=["zarr", "h5"])
def fmt(request) -> str:
    return request.param


def storage_chunks(path, name):
    if str(path).endswith(".zarr"):
        return zarr.open_group(path, mode="r")[name].chunks
    with h5py.File(path, "r") as f:
        return f[name].chunks


def test_small_dataset_layout(tmp_path, fmt):
    path = tmp_path / f"mix.{fmt}"
    info = generate_mixture(path, N, D, K, seed=3, chunk_rows=ROWS)
    assert info["path"] == str(path)
    assert info["shape"] == [N, D]
    assert info["dtype"] == "float64"
    assert info["chunk_rows"] == ROWS
    assert info["n_chunks"] == 5
    assert info["n_components"] == K
    assert info["bytes"] == N * D * 8
    assert info["bytes_on_disk"] > 0

    assert storage_chunks(path, "X") == (ROWS, D)
    assert storage_chunks(path, "labels") == (ROWS,)

    # open_array finds X even though true_means is 2-D too (the metadata names it).
    x = open_array(path)
    assert x.shape == (N, D) and x.dtype == np.float64
    assert x.chunks == ((N,), (D,))  # default target is far above 5000 x 3 x 8 bytes
    assert open_array(path, "X", chunk_rows=ROWS).chunks == ((ROWS,) * 5, (D,))
    values = x.compute()
    assert np.isfinite(values).all()

    truth = load_truth(path)
    assert truth["weights"].shape == (K,)
    np.testing.assert_allclose(truth["weights"].sum(), 1.0)
    assert truth["means"].shape == (K, D)
    assert truth["covariances"].shape == (K, D, D)
    for cov in truth["covariances"]:
        np.testing.assert_allclose(cov, cov.T)
        assert np.linalg.eigvalsh(cov).min() > 0.4
    assert truth["dataset"] == "X"
    assert truth["attrs"]["generator"] == "daskgmm"
    assert truth["attrs"]["seed"] == 3
    assert truth["attrs"]["n_components"] == K

    labels = truth["labels"]
    assert labels.shape == (N,) and labels.dtype == np.int64
    assert labels.chunks == ((ROWS,) * 5,)
    labels = labels.compute()
    assert labels.min() >= 0 and labels.max() < K
    assert set(np.unique(labels)) == set(range(K))

    # The samples follow the true parameters.
    counts = np.bincount(labels, minlength=K)
    np.testing.assert_allclose(counts / N, truth["weights"], atol=0.04)
    for k in range(K):
        members = values[labels == k]
        sd = np.sqrt(np.diag(truth["covariances"][k]))
        tol = 5 * sd / np.sqrt(len(members))
        assert np.all(np.abs(members.mean(axis=0) - truth["means"][k]) < tol)
        np.testing.assert_allclose(np.cov(members.T), truth["covariances"][k],
                                   atol=0.25 * sd.max() ** 2)


def test_float32_and_custom_name(tmp_path):
    path = tmp_path / "f.zarr"
    info = generate_mixture(path, 1234, 2, 2, chunk_rows=500, dtype="float32",
                            dataset="data")
    assert info["dtype"] == "float32"
    x = open_array(path)
    assert x.dtype == np.float32 and x.shape == (1234, 2)
    assert x.chunks == ((1234,), (2,))
    assert load_truth(path)["dataset"] == "data"
    with pytest.raises(DataNotFoundError, match="'data'"):
        open_array(path, "X")


def test_reproducible_and_format_independent(tmp_path):
    a = generate_mixture(tmp_path / "a.zarr", 3000, 4, 3, seed=11, chunk_rows=700)
    b = generate_mixture(tmp_path / "b.h5", 3000, 4, 3, seed=11, chunk_rows=700)
    c = generate_mixture(tmp_path / "c.zarr", 3000, 4, 3, seed=12, chunk_rows=700)
    xa, xb, xc = (open_array(r["path"]).compute() for r in (a, b, c))
    np.testing.assert_array_equal(xa, xb)
    ta, tb, tc = (load_truth(r["path"]) for r in (a, b, c))
    np.testing.assert_array_equal(ta["labels"].compute(), tb["labels"].compute())
    for key in ("weights", "means", "covariances"):
        np.testing.assert_array_equal(ta[key], tb[key])
        assert not np.allclose(ta[key], tc[key])
    assert not np.allclose(xa, xc)


def test_separation_sets_the_closest_pair_of_means():
    for d, k in ((1, 4), (3, 3), (20, 6)):
        p = sample_parameters(d, k, seed=5, separation=3.0)
        sigma = np.sqrt(np.mean(np.trace(p["covariances"], axis1=1, axis2=2)) / d)
        dist = np.linalg.norm(p["means"][:, None] - p["means"][None], axis=-1)
        closest = dist[np.triu_indices(k, 1)].min()
        np.testing.assert_allclose(closest, 3.0 * sigma)


def test_refuses_to_overwrite(tmp_path, fmt):
    path = tmp_path / f"mix.{fmt}"
    generate_mixture(path, 500, 2, 2, seed=1, chunk_rows=200)
    before = open_array(path).compute()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_mixture(path, 500, 2, 2, seed=2, chunk_rows=200)
    np.testing.assert_array_equal(open_array(path).compute(), before)

    generate_mixture(path, 600, 2, 2, seed=2, chunk_rows=200, overwrite=True)
    after = open_array(path).compute()
    assert after.shape == (600, 2)
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_no_temporary_left_after_success(tmp_path, fmt):
    path = tmp_path / "sub" / f"mix.{fmt}"  # parent directories are created
    generate_mixture(path, 100, 2, 1, chunk_rows=30)
    assert os.listdir(path.parent) == [path.name]


def test_killed_run_leaves_nothing_at_the_target(tmp_path):
    """SIGKILL the writer mid-way: only a .tmp- sibling is left, never the target."""
    target = tmp_path / "big.zarr"
    script = textwrap.dedent(f"""
        from daskgmm.io.generate import generate_mixture
        generate_mixture({str(target)!r}, 20_000_000, 8, 3, chunk_rows=50_000)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 30
        tmp = []
        while time.monotonic() < deadline and proc.poll() is None:
            # the temporary directory, not its writer's claim file beside it
            tmp = [p for p in tmp_path.iterdir() if ".tmp-" in p.name and p.is_dir()]
            if tmp and any(tmp[0].rglob("c/*/*")):  # some chunks are on disk
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the generator finished or died too early"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not target.exists()
    assert tmp and tmp[0].name.startswith(".big.zarr.tmp-")
    with pytest.raises(DataNotFoundError):
        open_array(target)
    # the next write to the same place cleans the dead writer's temporary
    generate_mixture(target, 100, 8, 3, chunk_rows=50)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.zarr"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_same_rows_whatever_the_chunking(tmp_path, dtype):
    """Rows come from fixed logical blocks: chunk_rows changes the storage only."""
    n, d = 2 * block_rows(64) + 777, 64  # crosses block boundaries
    results = []
    for i, rows in enumerate([n, 1000, 4096, 9999]):
        info = generate_mixture(tmp_path / f"m{i}.zarr", n, d, 3, seed=5, chunk_rows=rows,
                                dtype=dtype)
        assert info["chunk_rows"] == rows
        truth = load_truth(tmp_path / f"m{i}.zarr")
        results.append((open_array(tmp_path / f"m{i}.zarr").compute(),
                        truth["labels"].compute()))
    for x, labels in results[1:]:
        np.testing.assert_array_equal(x, results[0][0])
        np.testing.assert_array_equal(labels, results[0][1])
    other = generate_mixture(tmp_path / "other.zarr", n, d, 3, seed=6, chunk_rows=1000)
    assert not np.array_equal(open_array(other["path"]).compute(), results[0][0])


def test_default_chunk_rows_from_the_shared_constant(tmp_path):
    info = generate_mixture(tmp_path / "d.zarr", 10, 16, 2)
    assert info["chunk_rows"] == 10  # clipped to n_samples
    from daskgmm.io.chunking import DEFAULT_CHUNK_BYTES

    info = generate_mixture(tmp_path / "e.zarr", 16_400, 512, 1)  # 64.1 MiB of float64
    assert info["chunk_rows"] == DEFAULT_CHUNK_BYTES // (512 * 8) == 16_384
    assert info["n_chunks"] == 2


def test_progress_goes_to_the_observers(tmp_path):
    events = []

    class Recorder:
        def pass_started(self, kind, n):
            events.append(("start", kind, n))

        def chunks_done(self, count):
            events.append(("done", count))

        def pass_finished(self):
            events.append(("finished",))

    n = 3 * block_rows(4) + 5
    with observe(Recorder()):
        generate_mixture(tmp_path / "p.zarr", n, 4, 2, chunk_rows=100_000)
    assert events[0] == ("start", "generate", 4)
    assert events[1:-1] == [("done", 1)] * 4
    assert events[-1] == ("finished",)


def test_data_is_stored_uncompressed_and_marked(tmp_path):
    generate_mixture(tmp_path / "c.zarr", 1000, 3, 2, chunk_rows=500)
    root = zarr.open_group(tmp_path / "c.zarr", mode="r")
    assert root["X"].compressors == ()
    assert root["labels"].compressors  # labels: blosc-lz4
    assert read_marker(tmp_path / "c.zarr")["kind"] == "generated"
    assert not (tmp_path / "c.zarr" / ".daskgmm.json").exists()  # in the root attributes


def test_overwrite_replaces_only_generated_data(tmp_path):
    users = tmp_path / "mine.h5"
    with h5py.File(users, "w") as f:
        f.create_dataset("X", data=np.ones((4, 2)))
    with pytest.raises(UnsafeOverwriteError, match="did not generate"):
        generate_mixture(users, 100, 2, 2, overwrite=True)
    with h5py.File(users, "r") as f:
        assert f["X"][0, 0] == 1.0
    folder = tmp_path / "mine.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    with pytest.raises(UnsafeOverwriteError):
        generate_mixture(folder, 100, 2, 2, overwrite=True)
    assert (folder / "notes.txt").read_text() == "keep"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"output": "x.csv"}, ValueError, ".zarr"),
        ({"output": "x"}, ValueError, "extension"),
        ({"n_samples": 0}, ValueError, "n_samples"),
        ({"n_features": 0}, ValueError, "n_features"),
        ({"n_components": 0}, ValueError, "n_components"),
        ({"chunk_rows": 0}, ValueError, "chunk_rows"),
        ({"seed": -1}, ValueError, "seed"),
        ({"dtype": "int32"}, ValueError, "dtype"),
        ({"dataset": "labels"}, ValueError, "dataset"),
        ({"dataset": "a/b"}, ValueError, "dataset"),
        ({"separation": -1.0}, ValueError, "separation"),
        ({"n_samples": 10.5}, TypeError, "n_samples"),
    ],
)
def test_invalid_arguments(tmp_path, kwargs, error, match):
    args = {"output": "ok.zarr", "n_samples": 100, "n_features": 2, "n_components": 2}
    args.update(kwargs)
    args["output"] = tmp_path / args["output"]
    with pytest.raises(error, match=match):
        generate_mixture(**args)
    assert os.listdir(tmp_path) == []


def test_load_truth_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="No such file"):
        load_truth(tmp_path / "missing.zarr")
    root = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    root.create_array("X", shape=(10, 2), dtype="f8")
    with pytest.raises(DataNotFoundError, match="true_means"):
        load_truth(tmp_path / "plain.zarr")
