"""daskgmm.io.frames: pandas, dask DataFrame and xarray inputs in, the same kind out;
labels of Parquet input written back next to an id column."""

from __future__ import annotations

import dask
import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xarray as xr

from daskgmm.errors import InvalidDataError, UnsafeOverwriteError
from daskgmm.io import open_array
from daskgmm.io.frames import as_array, write_labels_parquet
from daskgmm.io.storage import read_output_marker


@pytest.fixture
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "name": [f"row{i}" for i in range(60)],
        "a": rng.standard_normal(60),
        "b": rng.integers(0, 9, 60),
        "flag": rng.random(60) > 0.5,
        "c": rng.standard_normal(60).astype("float32"),
    }, index=pd.Index(np.arange(100, 160), name="id"))


def test_numpy_and_dask_pass_through():
    x = np.ones((5, 2))
    arr, wrap = as_array(x)
    assert arr is x and wrap.labels(np.arange(5)) is not None and wrap.kind == "numpy"
    y = da.ones((5, 2), chunks=2)
    arr, wrap = as_array(y)
    assert arr is y and wrap.kind == "dask"


def test_pandas_numeric_columns_and_index(frame):
    arr, wrap = as_array(frame)
    assert arr.shape == (60, 3) and arr.dtype == np.float64  # a, b, c; not name or flag
    np.testing.assert_array_equal(arr[:, 1], frame["b"].to_numpy())
    labels = wrap.labels(np.arange(60) % 3)
    assert isinstance(labels, pd.Series) and labels.index.equals(frame.index)
    resp = wrap.responsibilities(da.from_array(np.full((60, 2), 0.5), chunks=30))
    assert isinstance(resp, pd.DataFrame) and resp.shape == (60, 2)
    assert resp.index.equals(frame.index)
    arr, _ = as_array(frame, columns=["c"])
    assert arr.dtype == np.float32 and arr.shape == (60, 1)
    with pytest.raises(InvalidDataError, match=r"'name' .* not numeric"):
        as_array(frame, columns=["a", "name"])
    with pytest.raises(InvalidDataError, match="no column 'zz'"):
        as_array(frame, columns=["zz"])
    with pytest.raises(InvalidDataError, match="no numeric column"):
        as_array(frame[["name"]])


def test_pandas_nullable_integers_become_nan():
    df = pd.DataFrame({"x": pd.array([1, None, 3], dtype="Int64"), "y": [1.0, 2.0, 3.0]})
    arr, _ = as_array(df)
    assert np.isnan(arr[1, 0]) and arr[2, 0] == 3.0


def test_dask_dataframe_keeps_partitions_and_loads_nothing_in_the_driver(frame):
    ddf = dd.from_pandas(frame, npartitions=4)
    calls = []
    with dask.config.set(scheduler="sync"):
        arr, wrap = as_array(ddf)
        calls.append(arr)
    assert isinstance(arr, da.Array)
    assert arr.chunks == ((15, 15, 15, 15), (3,))
    np.testing.assert_array_equal(arr.compute(), frame[["a", "b", "c"]].to_numpy())
    labels = wrap.labels(arr[:, 0] > 0)
    assert isinstance(labels, dd.Series) and labels.npartitions == 4
    out = labels.compute()
    assert out.index.equals(frame.index)
    np.testing.assert_array_equal(out.to_numpy(), frame["a"].to_numpy() > 0)
    resp = wrap.responsibilities(np.full((60, 3), 1 / 3))  # NumPy results are chunked too
    assert isinstance(resp, dd.DataFrame) and resp.npartitions == 4
    assert list(resp.columns) == ["component_0", "component_1", "component_2"]


def test_xarray_with_sample_dim_stays_lazy():
    values = np.arange(24.0).reshape(4, 6)
    xa = xr.DataArray(values, dims=("gene", "cell"),
                      coords={"cell": [f"c{i}" for i in range(6)]}).chunk({"cell": 2})
    arr, wrap = as_array(xa, sample_dim="cell")
    assert isinstance(arr, da.Array)
    assert arr.shape == (6, 4) and arr.chunks == ((2, 2, 2), (4,))
    np.testing.assert_array_equal(arr.compute(), values.T)
    labels = wrap.labels(da.arange(6, chunks=2))
    assert isinstance(labels, xr.DataArray) and labels.dims == ("cell",)
    assert list(labels["cell"].values) == [f"c{i}" for i in range(6)]
    assert isinstance(labels.data, da.Array)  # still lazy
    resp = wrap.responsibilities(np.ones((6, 2)) / 2)
    assert resp.dims == ("cell", "component") and list(resp["component"].values) == [0, 1]
    with pytest.raises(InvalidDataError, match="sample_dim='sample' is not a dimension"):
        as_array(xa, sample_dim="sample")


def test_xarray_extra_dims_are_stacked_into_features():
    xa = xr.DataArray(np.zeros((5, 2, 3)), dims=("t", "x", "y"))
    arr, wrap = as_array(xa, sample_dim="t")
    assert arr.shape == (5, 6) and wrap.index is None
    assert wrap.labels(np.zeros(5)).dims == ("t",)


# --------------------------------------------------------------------------------------
# Parquet in, labels out
# --------------------------------------------------------------------------------------


def write_table(path, n=1000, group=150):
    rng = np.random.default_rng(3)
    table = pa.table({"id": pa.array([f"u{i:04d}" for i in range(n)]),
                      "x": rng.standard_normal(n), "y": rng.standard_normal(n)})
    pq.write_table(table, path, row_group_size=group)
    return table


def test_labels_of_parquet_input_written_next_to_the_ids(tmp_path):
    src = tmp_path / "t.parquet"
    table = write_table(src)
    X = open_array(src, chunk_rows=300)
    labels = (X[:, 0] > 0).astype("i8")
    out = tmp_path / "labels.parquet"
    info = write_labels_parquet(labels, src, out, id_column="id", chunk_rows=300)
    assert info["n_rows"] == 1000 and info["n_files"] == len(X.chunks[0])
    back = pq.read_table(out).to_pandas()
    assert list(back.columns) == ["id", "label"] and back["label"].dtype == np.int64
    assert back["id"].tolist() == table.column("id").to_pylist()
    np.testing.assert_array_equal(back["label"], table.column("x").to_numpy() > 0)
    assert read_output_marker(out)["kind"] == "labels"
    with pytest.raises(FileExistsError):
        write_labels_parquet(labels, src, out, id_column="id", chunk_rows=300)
    # NumPy labels, other chunking: rechunked to the input's row groups
    write_labels_parquet(np.zeros(1000, dtype=int), src, out, overwrite=True)
    assert pq.read_table(out).column("label").to_pylist() == [0] * 1000
    with pytest.raises(InvalidDataError, match=r"shape \(1000,\)"):
        write_labels_parquet(np.zeros(999), src, tmp_path / "bad")
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "keep.txt").write_text("x")
    with pytest.raises(UnsafeOverwriteError):
        write_labels_parquet(labels, src, user_dir, overwrite=True, chunk_rows=300)
    assert (user_dir / "keep.txt").read_text() == "x"


@pytest.mark.slow
def test_parquet_labels_on_s3_by_worker_processes(s3_server, client, tmp_path):
    so = s3_server.storage_options
    prefix = s3_server.url()
    local = tmp_path / "t.parquet"
    table = write_table(local)
    s3_server.fs().put_file(str(local), f"{prefix}/in/part-0.parquet")
    X = open_array(f"{prefix}/in", storage_options=so, columns=["x", "y"])
    labels = (X[:, 1] > 0).astype("i8")
    write_labels_parquet(labels, f"{prefix}/in", f"{prefix}/out", id_column="id",
                         storage_options=so, output_storage_options=so)
    fs = s3_server.fs()
    files = sorted(fs.glob(f"{prefix}/out/*.parquet"))
    back = pa.concat_tables([pq.read_table(fs.open(f)) for f in files]).to_pandas()
    assert back["id"].tolist() == table.column("id").to_pylist()
    np.testing.assert_array_equal(back["label"], table.column("y").to_numpy() > 0)
    assert read_output_marker(f"{prefix}/out", so)["kind"] == "labels"
