"""Tests of daskgmm.io.readers.open_array on real Zarr, HDF5 and .npy files."""

from __future__ import annotations

import json
import pickle
import pickletools
import zipfile

import cloudpickle
import dask.array as da
import h5py
import numpy as np
import pytest
import zarr
from zarr.storage import ZipStore

from daskgmm.errors import DataNotFoundError, DataSourceError, InvalidDataError
from daskgmm.io.readers import (
    HDF5Slicer,
    NpyRangeSlicer,
    describe_array,
    get_reader,
    list_readers,
    open_array,
)


@pytest.fixture
def data() -> np.ndarray:
    return np.random.default_rng(42).standard_normal((1000, 5))


def assert_row_chunked(x: da.Array) -> None:
    assert x.ndim == 2
    assert x.chunks[1] == (x.shape[1],), x.chunks
    assert sum(x.chunks[0]) == x.shape[0]


def write_zarr(path, values, chunks=None, zarr_format=3, **kwargs):
    arr = zarr.create_array(path, shape=values.shape, dtype=values.dtype,
                            chunks=chunks or values.shape, zarr_format=zarr_format, **kwargs)
    arr[...] = values
    return arr


def write_h5(path, name, values, **kwargs):
    with h5py.File(path, "a") as f:
        f.create_dataset(name, data=values, **kwargs)


# --------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_directory_store(tmp_path, data, zarr_format):
    path = tmp_path / "data.zarr"
    write_zarr(path, data, chunks=(128, 5), zarr_format=zarr_format)
    x = open_array(path, chunk_rows=300)
    assert x.dtype == np.float64
    assert x.shape == data.shape
    assert x.chunks == ((300, 300, 300, 100), (5,))
    np.testing.assert_array_equal(x.compute(), data)


def test_zarr_array_inside_group(tmp_path, data):
    path = tmp_path / "store.zarr"
    root = zarr.open_group(path, mode="w")
    root.create_array("embeddings/X", shape=data.shape, dtype="f8", chunks=(100, 5))[...] = data
    root.create_array("embeddings/ids", shape=(1000,), dtype="i8")
    for dataset in ("embeddings/X", "/embeddings/X"):
        x = open_array(path, dataset)
        assert_row_chunked(x)
        np.testing.assert_array_equal(x.compute(), data)
    # The only 2-D array of the hierarchy is found without naming it.
    np.testing.assert_array_equal(open_array(path).compute(), data)
    # A path pointing at the array node itself works too.
    np.testing.assert_array_equal(open_array(path / "embeddings" / "X").compute(), data)


def test_zarr_zip_store(tmp_path, data):
    path = tmp_path / "data.zip"
    store = ZipStore(path, mode="w")
    root = zarr.open_group(store, mode="w")
    root.create_array("X", shape=data.shape, dtype="f4", chunks=(100, 5))[...] = data
    store.close()
    x = open_array(path, "X", chunk_rows=250)
    assert x.dtype == np.float32
    assert x.chunks == ((250,) * 4, (5,))
    np.testing.assert_array_equal(x.compute(), data.astype("f4"))
    # The store object in the graph reopens the zip file when unpickled.
    y = pickle.loads(pickle.dumps(x))
    np.testing.assert_array_equal(y.compute(), data.astype("f4"))


def test_hdf5_file_and_nested_group(tmp_path, data):
    path = tmp_path / "data.h5"
    write_h5(path, "X", data, chunks=(100, 5))
    write_h5(path, "deep/inside/Y", data[:, :3] * 2)
    write_h5(path, "ids", np.arange(1000))
    x = open_array(path, "X", chunk_rows=400)
    assert x.chunks == ((400, 400, 200), (5,))
    np.testing.assert_array_equal(x.compute(), data)
    for name in ("deep/inside/Y", "/deep/inside/Y"):
        y = open_array(path, name)
        assert_row_chunked(y)
        np.testing.assert_array_equal(y.compute(), data[:, :3] * 2)


def test_hdf5_single_2d_dataset_is_found(tmp_path, data):
    path = tmp_path / "one.hdf5"
    write_h5(path, "group/X", data)
    write_h5(path, "labels", np.zeros(1000, dtype="i4"))
    np.testing.assert_array_equal(open_array(path).compute(), data)


@pytest.mark.parametrize("order", ["C", "F"])
def test_npy(tmp_path, data, order):
    path = tmp_path / "data.npy"
    np.save(path, np.asarray(data, order=order))
    x = open_array(path, chunk_rows=333)
    assert x.chunks == ((333, 333, 333, 1), (5,))
    np.testing.assert_array_equal(x.compute(), data)


def test_format_is_detected_from_content_before_extension(tmp_path, data):
    h5_path = tmp_path / "really_hdf5.zip"
    write_h5(h5_path, "X", data)
    npy_path = tmp_path / "really_npy.h5"
    np.save(tmp_path / "tmp.npy", data)
    (tmp_path / "tmp.npy").rename(npy_path)
    zarr_dir = tmp_path / "no_suffix"
    write_zarr(zarr_dir, data)
    assert get_reader(h5_path).name == "hdf5"
    assert get_reader(npy_path).name == "npy"
    assert get_reader(zarr_dir).name == "zarr"
    for path in (h5_path, npy_path, zarr_dir):
        np.testing.assert_array_equal(open_array(path).compute(), data)
    assert list_readers()[:4] == ["zarr", "zarr-zip", "hdf5", "npy"]


# --------------------------------------------------------------------------------------
# Dtypes
# --------------------------------------------------------------------------------------


def test_integer_and_bool_data_become_float64(tmp_path):
    ints = np.arange(60, dtype="i4").reshape(20, 3) - 30
    write_zarr(tmp_path / "i.zarr", ints)
    write_h5(tmp_path / "i.h5", "X", ints.astype("u2") + 30)
    np.save(tmp_path / "b.npy", ints > 0)
    cases = [
        (open_array(tmp_path / "i.zarr"), ints),
        (open_array(tmp_path / "i.h5"), ints + 30),
        (open_array(tmp_path / "b.npy"), ints > 0),
    ]
    for x, expected in cases:
        assert x.dtype == np.float64
        out = x.compute()
        assert out.dtype == np.float64
        np.testing.assert_array_equal(out, expected.astype("f8"))


def test_float32_is_preserved(tmp_path, data):
    f32 = data.astype("f4")
    write_zarr(tmp_path / "f.zarr", f32)
    write_h5(tmp_path / "f.h5", "X", f32)
    np.save(tmp_path / "f.npy", f32)
    np.save(tmp_path / "be.npy", f32.astype(">f4"))  # big-endian becomes native
    for name in ("f.zarr", "f.h5", "f.npy", "be.npy"):
        x = open_array(tmp_path / name)
        assert x.dtype == np.float32
        out = x.compute()
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, f32)


# --------------------------------------------------------------------------------------
# Chunking
# --------------------------------------------------------------------------------------


def test_store_chunked_along_features_gives_full_width_rows(tmp_path, data):
    write_zarr(tmp_path / "f.zarr", data, chunks=(100, 2))
    write_h5(tmp_path / "f.h5", "X", data, chunks=(100, 2))
    for name in ("f.zarr", "f.h5"):
        x = open_array(tmp_path / name, target_chunk_bytes=250 * 5 * 8)
        assert x.chunks == ((200,) * 5, (5,))  # floor(250 / 100) storage chunks
        np.testing.assert_array_equal(x.compute(), data)


def test_default_chunk_rows_follow_target_bytes_and_storage_chunks(tmp_path):
    n, d = 10_000, 4
    values = np.ones((n, d), dtype="f8")
    write_zarr(tmp_path / "a.zarr", values, chunks=(300, 4))
    target = 100_000  # 3125 rows of 4 float64 -> 10 storage chunks of 300 rows
    x = open_array(tmp_path / "a.zarr", target_chunk_bytes=target)
    assert x.chunks[0][0] == 3000
    assert all(c % 300 == 0 for c in x.chunks[0][:-1])
    assert describe_array(x)["chunk_bytes"] <= target

    # A target below one storage chunk still reads whole storage chunks.
    assert open_array(tmp_path / "a.zarr", target_chunk_bytes=1000).chunks[0][0] == 300
    # The chunk is clipped to the number of samples.
    assert open_array(tmp_path / "a.zarr").chunks[0] == (n,)

    # Without storage chunks the target is hit exactly.
    np.save(tmp_path / "a.npy", values)
    assert open_array(tmp_path / "a.npy", target_chunk_bytes=target).chunks[0][0] == 3125

    # Sizes are counted in the output dtype: int8 on disk is 8 bytes a value in memory.
    write_h5(tmp_path / "i.h5", "X", values.astype("i1"), chunks=(250, 4))
    x = open_array(tmp_path / "i.h5", target_chunk_bytes=target)
    assert x.chunks[0][0] == 3000
    assert describe_array(x)["chunk_bytes"] == 3000 * 4 * 8


def test_sharded_zarr_aligns_with_shards(tmp_path):
    values = np.ones((5000, 3))  # zeros would be skipped as the fill value
    write_zarr(tmp_path / "s.zarr", values, chunks=(50, 3), shards=(500, 3))
    x = open_array(tmp_path / "s.zarr", target_chunk_bytes=1700 * 3 * 8)
    assert x.chunks[0][0] == 1500


@pytest.mark.parametrize("bad", [0, -5])
def test_chunk_rows_must_be_positive(tmp_path, data, bad):
    np.save(tmp_path / "x.npy", data)
    with pytest.raises(ValueError, match="chunk_rows"):
        open_array(tmp_path / "x.npy", chunk_rows=bad)


def test_describe_array():
    x = da.zeros((1000, 3), chunks=(300, 3), dtype="f4")
    info = describe_array(x)
    assert info == {"shape": [1000, 3], "dtype": "float32", "chunks_rows": [300, 300, 300, 100],
                    "n_chunks": 4, "chunk_bytes": 300 * 3 * 4}
    json.dumps(info)
    long = describe_array(da.zeros((1005, 2), chunks=(10, 2)))
    assert long["chunks_rows"] == {"first": 10, "last": 5, "count": 101}
    assert long["n_chunks"] == 101


# --------------------------------------------------------------------------------------
# Laziness and pickling
# --------------------------------------------------------------------------------------


def test_opening_reads_no_chunk_data(tmp_path, data):
    """Chunks are corrupted after writing: opening still works, computing fails."""
    zpath = tmp_path / "c.zarr"
    write_zarr(zpath, data, chunks=(100, 5))
    chunk_files = [p for p in (zpath / "c").rglob("*") if p.is_file()]
    assert chunk_files
    for p in chunk_files:
        p.write_bytes(b"\xff" * 64)

    hpath = tmp_path / "c.h5"
    with h5py.File(hpath, "w") as f:
        dset = f.create_dataset("X", data=data, chunks=(100, 5), compression="gzip")
        infos = [dset.id.get_chunk_info(i) for i in range(dset.id.get_num_chunks())]
    with open(hpath, "r+b") as fh:
        for info in infos:
            fh.seek(info.byte_offset)
            fh.write(b"\xff" * info.size)

    for path in (zpath, hpath):
        x = open_array(path, chunk_rows=200)  # metadata only
        assert x.shape == data.shape
        with pytest.raises(Exception):  # noqa: B017 - any decoding error will do
            x.compute()
    with pytest.raises(DataSourceError, match="Cannot read"):
        open_array(hpath).compute()


def test_hdf5_graph_holds_no_h5py_object(tmp_path, data):
    path = tmp_path / "g.h5"
    write_h5(path, "X", data.astype("i4"), chunks=(100, 5))
    x = open_array(path, "X", chunk_rows=300)
    graph = dict(x.__dask_graph__())
    for dumps in (pickle.dumps, cloudpickle.dumps):
        payload = dumps(graph)  # would raise TypeError on an h5py File or Dataset
        strings = {arg for _, arg, _ in pickletools.genops(payload) if isinstance(arg, str)}
        assert not [s for s in strings if s.startswith("h5py")], strings
        assert "daskgmm.io.hdf5_files" in strings  # the graph holds our HDF5Slicer instead
        restored = pickle.loads(payload)
        assert len(restored) == len(graph)
    # Graph construction did not open the file: removing it only breaks the compute.
    y = open_array(path, "X", chunk_rows=300)
    path.unlink()
    with pytest.raises(DataNotFoundError, match="No such file"):
        y.compute()
    assert y.shape == (1000, 5)


def test_npy_graph_does_not_embed_the_data(tmp_path):
    values = np.random.default_rng(0).standard_normal((20_000, 10))  # 1.6 MB
    np.save(tmp_path / "big.npy", values)
    x = open_array(tmp_path / "big.npy", chunk_rows=5000)
    payload = pickle.dumps(dict(x.__dask_graph__()))
    assert len(payload) < 50_000
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(x)).compute(), values)


@pytest.mark.parametrize("kind", ["h5", "npy"])
def test_slicers_index_like_numpy(tmp_path, kind):
    values = np.arange(7 * 4, dtype="f8").reshape(7, 4)
    if kind == "h5":
        write_h5(tmp_path / "s.h5", "X", values)
        s = HDF5Slicer(str(tmp_path / "s.h5"), "/X", values.shape, values.dtype)
    else:
        np.save(tmp_path / "s.npy", values)
        offset = np.load(tmp_path / "s.npy", mmap_mode="r").offset
        s = NpyRangeSlicer(str(tmp_path / "s.npy"), None, offset, values.shape,
                           values.dtype)
    s = pickle.loads(pickle.dumps(s))
    assert s.ndim == 2 and s.shape == (7, 4) and s.dtype == np.float64
    keys = [
        (slice(None), slice(None)),
        (slice(1, 5), slice(0, 4)),
        (slice(0, 0), slice(None)),
        (slice(5, 2), slice(None)),
        (slice(None, None, 2), slice(1, None, 2)),
        (slice(None, None, -1), slice(None, None, -3)),
        (slice(6, 0, -2), 2),
        (3, slice(None)),
        (-1, -2),
        (Ellipsis, 1),
        (np.array([0, 3, 5]), slice(None)),
        slice(2, 4),
    ]
    for key in keys:
        got = s[key]
        np.testing.assert_array_equal(got, values[key], err_msg=str(key))
        assert got.shape == values[key].shape
    with pytest.raises(IndexError):
        s[7, 0]
    # Empty selections (what dask asks for to build a meta) never touch the file.
    ghost = type(s)(*[str(tmp_path / "gone"), *s.__getstate__()[1:]])
    assert ghost[0:0, 0:0].shape == (0, 0)
    y = da.from_array(ghost, chunks=(3, 4), fancy=False)  # no meta given: dask slices it
    assert y.dtype == np.float64 and y.shape == (7, 4)
    with pytest.raises(DataNotFoundError):
        y.compute()
    # Through dask, including the slicing dask pushes into the getter.
    x = da.from_array(s, chunks=(3, 4), fancy=False, meta=np.empty((0, 0)))
    np.testing.assert_array_equal(x[::-2, 1:].compute(), values[::-2, 1:])
    np.testing.assert_array_equal(x[x[:, 0] > 8].compute(), values[values[:, 0] > 8])


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    with pytest.raises(DataNotFoundError, match="No such file or store") as info:
        open_array(tmp_path / "nothing.zarr")
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, ValueError)


def test_missing_dataset_lists_what_exists(tmp_path, data):
    zpath = tmp_path / "g.zarr"
    root = zarr.open_group(zpath, mode="w")
    root.create_array("emb/X", shape=data.shape, dtype="f8")
    root.create_array("ids", shape=(1000,), dtype="i8")
    with pytest.raises(DataNotFoundError, match="No array 'emb/Y'") as info:
        open_array(zpath, "emb/Y")
    assert "'emb/X' (1000, 5) float64" in str(info.value)
    assert "'ids' (1000,) int64" in str(info.value)

    hpath = tmp_path / "g.h5"
    write_h5(hpath, "grp/X", data)
    write_h5(hpath, "Z", data)
    with pytest.raises(DataNotFoundError, match="No dataset 'nope'") as info:
        open_array(hpath, "nope")
    assert "'grp/X'" in str(info.value) and "'Z'" in str(info.value)
    # Two 2-D datasets and none named: ambiguous, the message lists both.
    with pytest.raises(DataSourceError, match="pass dataset=") as info:
        open_array(hpath)
    assert "'grp/X'" in str(info.value) and "'Z'" in str(info.value)
    # A group is not an array.
    with pytest.raises(DataSourceError, match="is a group"):
        open_array(hpath, "grp")
    with pytest.raises(DataSourceError, match="is a group"):
        open_array(zpath, "emb")


def test_dataset_given_for_a_single_array(tmp_path, data):
    write_zarr(tmp_path / "a.zarr", data)
    np.save(tmp_path / "a.npy", data)
    for name in ("a.zarr", "a.npy"):
        with pytest.raises(DataSourceError, match="dataset=None"):
            open_array(tmp_path / name, "X")


@pytest.mark.parametrize("shape", [(10,), (4, 5, 6), ()])
def test_not_2d(tmp_path, shape):
    values = np.ones(shape)
    if shape:
        write_zarr(tmp_path / "a.zarr", values)
    np.save(tmp_path / "a.npy", values)
    write_h5(tmp_path / "a.h5", "X", values)
    names = ["a.npy", "a.h5"] + (["a.zarr"] if shape else [])
    for name in names:
        with pytest.raises(InvalidDataError, match=r"reshape|2-D") as info:
            open_array(tmp_path / name, "X" if name.endswith("h5") else None)
        assert str(shape) in str(info.value)
        assert "(n_samples, n_features)" in str(info.value)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0)])
def test_empty(tmp_path, shape):
    np.save(tmp_path / "e.npy", np.ones(shape))
    write_zarr(tmp_path / "e.zarr", np.ones(shape), chunks=(1, 1))
    for name in ("e.npy", "e.zarr"):
        with pytest.raises(InvalidDataError, match="empty") as info:
            open_array(tmp_path / name)
        assert str(shape) in str(info.value)


def test_non_numeric_dtypes(tmp_path):
    zarr.create_array(tmp_path / "s.zarr", shape=(4, 2), dtype=str)
    zarr.create_array(tmp_path / "c.zarr", shape=(4, 2), dtype="c16")
    np.save(tmp_path / "u.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(tmp_path / "o.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    with h5py.File(tmp_path / "s.h5", "w") as f:
        f.create_dataset("S", data=np.array([["a", "b"]], dtype=object),
                         dtype=h5py.string_dtype())
        f.create_dataset("C", data=np.zeros((3, 2), dtype=[("a", "f8"), ("b", "i4")]))
    cases = [("s.zarr", None, "strings"), ("c.zarr", None, "complex"),
             ("u.npy", None, "strings"), ("o.npy", None, "objects"),
             ("s.h5", "S", "object"), ("s.h5", "C", "structured")]
    for name, dataset, word in cases:
        with pytest.raises(InvalidDataError, match=word) as info:
            open_array(tmp_path / name, dataset)
        assert name in str(info.value)
        if dataset:
            assert repr(dataset) in str(info.value)


def test_unknown_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "plain_dir").mkdir()
    for name in ("notes.txt", "plain_dir"):
        with pytest.raises(DataSourceError, match="Supported formats") as info:
            open_array(tmp_path / name)
        assert not isinstance(info.value, DataNotFoundError)
        for fmt in ("Zarr", "HDF5", ".npy", ".zip"):
            assert fmt in str(info.value)


def test_corrupt_stores(tmp_path):
    bad_json = tmp_path / "bad.zarr"
    bad_json.mkdir()
    (bad_json / "zarr.json").write_text("{ this is not json")
    bad_meta = tmp_path / "bad_meta.zarr"
    bad_meta.mkdir()
    (bad_meta / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "array"}))
    no_meta = tmp_path / "empty.zarr"
    no_meta.mkdir()
    (tmp_path / "bad.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"junk" * 100)
    (tmp_path / "bad.zip").write_bytes(b"not a zip at all")
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("readme.txt", "no zarr here")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    cases = [
        ("bad.zarr", "unreadable or corrupt"),
        ("bad_meta.zarr", "unreadable or corrupt"),
        ("empty.zarr", "not a zarr store"),
        ("bad.h5", "unreadable or corrupt"),
        ("bad.zip", "not a valid zip"),
        ("other.zip", "not a zarr store"),
        ("bad.npy", "unreadable or corrupt"),
    ]
    for name, message in cases:
        with pytest.raises(DataSourceError, match=message) as info:
            open_array(tmp_path / name)
        assert name in str(info.value)
        assert not isinstance(info.value, (DataNotFoundError, InvalidDataError))


# --------------------------------------------------------------------------------------
# Worker processes
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_all_formats_on_worker_processes(client, tmp_path):
    """(``client``: conftest's, on the session's LocalCluster of two worker processes.)"""
    values = np.random.default_rng(7).standard_normal((4000, 6))
    write_h5(tmp_path / "d.h5", "grp/X", values, chunks=(500, 6))
    np.save(tmp_path / "d.npy", values)
    store = ZipStore(tmp_path / "d.zip", mode="w")
    write_zarr(store, values, chunks=(500, 3))
    store.close()
    write_zarr(tmp_path / "d.zarr", values, chunks=(500, 6))
    arrays = {
        "h5": open_array(tmp_path / "d.h5", "grp/X", chunk_rows=500),
        "npy": open_array(tmp_path / "d.npy", chunk_rows=500),
        "zip": open_array(tmp_path / "d.zip", chunk_rows=500),
        "zarr": open_array(tmp_path / "d.zarr", chunk_rows=500),
    }
    futures = client.compute({k: (x.sum(axis=0), x.max()) for k, x in arrays.items()})
    results = futures.result()
    for name, (col_sums, mx) in results.items():
        np.testing.assert_allclose(col_sums, values.sum(axis=0), rtol=1e-12, err_msg=name)
        assert mx == values.max()
    assert len(client.scheduler_info()["workers"]) == 2
