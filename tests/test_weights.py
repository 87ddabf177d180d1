"""Tests of daskgmm.io.weights: sample weights read lazily from the formats daskgmm
reads, chunked like the data, with one-line errors for what cannot be weights."""

from __future__ import annotations

import uuid

import dask.array as da
import h5py
import numpy as np
import pandas as pd
import pytest
import zarr

from daskgmm.errors import (
    DataNotFoundError,
    DataSourceError,
    IncompleteStoreError,
    InvalidDataError,
)
from daskgmm.io.weights import open_sample_weight

N = 1000
CHUNKS = (300, 300, 300, 100)


@pytest.fixture
def weights() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 5, N).astype(np.int64)


def check(result: da.Array, expected: np.ndarray) -> None:
    assert isinstance(result, da.Array)
    assert result.chunks == (CHUNKS,) and result.dtype == np.float64
    np.testing.assert_array_equal(result.compute(scheduler="sync"), expected)


def test_npy_vector_and_column(tmp_path, weights):
    np.save(tmp_path / "w.npy", weights)
    check(open_sample_weight(tmp_path / "w.npy", chunks=CHUNKS), weights)
    np.save(tmp_path / "w2.npy", weights.reshape(-1, 1).astype(np.float32))
    check(open_sample_weight(tmp_path / "w2.npy", chunks=CHUNKS), weights)


def test_zarr_array_of_a_group_and_hdf5_dataset(tmp_path, weights):
    group = zarr.open_group(tmp_path / "g.zarr", mode="w")
    group.create_array("X", data=np.ones((N, 2)), chunks=(250, 2))
    group.create_array("w", data=weights, chunks=(128,))  # chunked unlike the data
    check(open_sample_weight(tmp_path / "g.zarr", dataset="w", chunks=CHUNKS), weights)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f.create_dataset("nested/w", data=weights.reshape(-1, 1), chunks=(64, 1))
    check(open_sample_weight(tmp_path / "f.h5", dataset="nested/w", chunks=CHUNKS), weights)


def test_parquet_column_and_memory_url(tmp_path, weights):
    frame = pd.DataFrame({"x": np.zeros(N), "w": weights})
    frame.to_parquet(tmp_path / "t.parquet", row_group_size=128)
    check(open_sample_weight(tmp_path / "t.parquet", column="w", chunks=CHUNKS), weights)
    url = f"memory://weights-tests/{uuid.uuid4().hex}/w.zarr"
    arr = zarr.create_array(url, shape=(N,), dtype="i8", chunks=(200,))
    arr[...] = weights
    check(open_sample_weight(url, chunks=CHUNKS), weights)


def test_missing_chunks_of_weights_are_refused(tmp_path, weights):
    arr = zarr.create_array(tmp_path / "w.zarr", shape=(N,), dtype="f8", chunks=(100,),
                            fill_value=0.0, config={"write_empty_chunks": False})
    arr[:500] = 1.0  # rows 500.. never written
    with pytest.raises(IncompleteStoreError, match=r"5 of 10 chunks were never written"):
        open_sample_weight(tmp_path / "w.zarr", chunks=CHUNKS)
    ok = open_sample_weight(tmp_path / "w.zarr", chunks=CHUNKS, allow_missing_chunks=True)
    assert ok.compute().sum() == 500


@pytest.mark.parametrize(("make", "kwargs", "error", "fragment"), [
    (lambda p: np.save(p / "w.npy", np.ones(N + 1)), {"path": "w.npy"}, InvalidDataError,
     "have 1,001 rows but the data has 1,000"),
    (lambda p: np.save(p / "w.npy", np.ones((N, 2))), {"path": "w.npy"}, InvalidDataError,
     "shape (1000, 2); sample weights need one value per row"),
    (lambda p: np.save(p / "w.npy", np.array(["a"] * N)), {"path": "w.npy"},
     InvalidDataError, "daskgmm needs real numbers"),
    (lambda p: pd.DataFrame({"w": ["a"] * N}).to_parquet(p / "t.parquet"),
     {"path": "t.parquet", "column": "w"}, InvalidDataError, "column 'w' is not numbers"),
    (lambda p: pd.DataFrame({"w": np.ones(N)}).to_parquet(p / "t.parquet"),
     {"path": "t.parquet", "column": "v"}, DataNotFoundError, "has no column 'v'"),
    (lambda p: pd.DataFrame({"w": np.ones(N)}).to_parquet(p / "t.parquet"),
     {"path": "t.parquet"}, DataSourceError, "name the column that holds the weights"),
    (lambda p: None, {"path": "sklearn:iris"}, DataSourceError,
     "weights must be in a Zarr store"),
    (lambda p: None, {"path": "nothing.npy"}, DataNotFoundError, "No such file"),
])
def test_errors(tmp_path, make, kwargs, error, fragment):
    make(tmp_path)
    path = kwargs.pop("path")
    path = path if path.startswith("sklearn:") else tmp_path / path
    with pytest.raises(error) as info:
        open_sample_weight(path, chunks=CHUNKS, **kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)
