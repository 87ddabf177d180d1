"""Stores that would give silently wrong results (issue 8, class 2): chunks never written
are refused unless allowed, and the Dask name of an opened store follows its content.

Measured on this repository's 2-core machine (round 1 of the data layer): opening a
local Zarr v3 array of 100,000 chunks (shape (100000, 3), chunks (1, 3): one directory
and one file per chunk, the worst layout) takes 1.2-1.5 s, against 1.5 ms before the
listing was added; about 0.9 s of it is scanning and stating the files, 0.2 s hashing
the listing and 0.1 s encoding the expected chunk keys (about 12 us per chunk; a store
of 1,000 chunks opens in about 15 ms).
"""

from __future__ import annotations

import os
import time

import h5py
import numpy as np
import pytest
import zarr
from zarr.storage import FsspecStore, ZipStore

from daskgmm.errors import DataNotFoundError, DataSourceError, IncompleteStoreError
from daskgmm.io import open_array

D = 3


def values(n=1000, seed=0):
    return np.random.default_rng(seed).standard_normal((n, D)) + 5.0


def zarr_with_gap(store, zarr_format=3, shards=None, n=1000, rows=100, skip=(3,)):
    """An array whose row blocks in ``skip`` were never written."""
    kw = {"shards": (shards, D)} if shards else {}
    arr = zarr.create_array(store, shape=(n, D), dtype="f8", chunks=(rows, D),
                            zarr_format=zarr_format, fill_value=0.0, **kw)
    block = shards or rows
    data = values(n)
    for b in range(0, n // block):
        if b not in skip:
            arr[b * block:(b + 1) * block] = data[b * block:(b + 1) * block]
    return data


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_a_store_whose_end_was_never_written_is_refused(tmp_path, zarr_format):
    """A writer that stopped early leaves the end of the array absent: refused, with the
    count of absent chunks; the opt-in reads them as the fill value."""
    path = tmp_path / "gap.zarr"
    data = zarr_with_gap(path, zarr_format, skip=(7, 8, 9))
    with pytest.raises(IncompleteStoreError) as info:
        open_array(path)
    message = str(info.value)
    assert "the end of the array was never written" in message
    assert "chunk holding its last rows (rows 900..999) is absent" in message
    assert "3 of 10 chunks were never written (first missing: rows 700..799" in message
    assert "allow_missing_chunks=True" in message
    assert isinstance(info.value, ValueError)
    x = open_array(path, allow_missing_chunks=True).compute()
    np.testing.assert_array_equal(x[700:], 0.0)  # what the opt-in accepts
    np.testing.assert_array_equal(x[:700], data[:700])


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_defaults_do_not_look_broken(tmp_path, zarr_format):
    """zarr's default (write_empty_chunks=False) does not store chunks equal to the fill
    value: a weights array whose first 2,000 weights are 0, or data with a block of
    fill-valued rows, opens as it was written (the writer reached the end)."""
    weights = np.ones(10_000)
    weights[:2_000] = 0.0
    w = zarr.create_array(tmp_path / "w.zarr", shape=weights.shape, dtype="f8",
                          chunks=(1_000,), zarr_format=zarr_format)
    w[...] = weights
    assert not (tmp_path / "w.zarr" / ("c/0" if zarr_format == 3 else "0")).exists()
    np.testing.assert_array_equal(_weights(tmp_path / "w.zarr"), weights)
    data = values()
    data[300:400] = 0.0
    x = zarr.create_array(tmp_path / "x.zarr", shape=data.shape, dtype="f8",
                          chunks=(100, D), zarr_format=zarr_format)
    x[...] = data
    np.testing.assert_array_equal(open_array(tmp_path / "x.zarr").compute(), data)


def _weights(path):
    from daskgmm.io.weights import open_sample_weight

    return open_sample_weight(path, chunks=(10_000,)).compute()


def test_sharded_store_whose_last_inner_chunk_was_never_written(tmp_path):
    """Inside a shard, zarr never stores inner chunks equal to the fill value; the last
    shard's index says whether the inner chunk holding the last rows was written."""
    path = tmp_path / "sharded.zarr"
    arr = zarr.create_array(path, shape=(1000, D), dtype="f8", chunks=(50, D),
                            shards=(200, D), fill_value=0.0)
    data = values()
    arr[:950] = data[:950]  # the writer stopped inside the last shard
    assert (path / "c" / "4" / "0").exists()  # every shard is there
    with pytest.raises(IncompleteStoreError,
                       match=r"the inner chunk holding its last rows \(rows 950..999\)"):
        open_array(path)
    assert open_array(path, allow_missing_chunks=True).shape == (1000, D)
    arr[950:] = data[950:]
    arr[100:150] = 0.0  # an inner chunk of the fill value, not stored
    expected = data.copy()
    expected[100:150] = 0.0
    np.testing.assert_array_equal(open_array(path).compute(), expected)
    missing_shard = tmp_path / "shards.zarr"
    zarr_with_gap(missing_shard, shards=200, rows=50, skip=(4,))
    with pytest.raises(IncompleteStoreError, match="1 of 5 shards were never written"):
        open_array(missing_shard)


def test_zip_store_whose_end_was_never_written(tmp_path):
    path = tmp_path / "gap.zip"
    store = ZipStore(path, mode="w")
    zarr_with_gap(store, skip=(9,))
    store.close()
    with pytest.raises(IncompleteStoreError, match="1 of 10 chunks"):
        open_array(path)


def test_memory_and_s3_stores_whose_end_was_never_written(s3_server):
    zarr_with_gap(FsspecStore.from_url("memory://integrity/gap.zarr", read_only=False),
                  skip=(9,))
    with pytest.raises(IncompleteStoreError, match="1 of 10 chunks"):
        open_array("memory://integrity/gap.zarr")
    so = s3_server.storage_options
    url = s3_server.url() + "/gap.zarr"
    zarr_with_gap(FsspecStore.from_url(url, storage_options=so, read_only=False),
                  zarr_format=2, skip=(9,))
    with pytest.raises(IncompleteStoreError, match="1 of 10 chunks") as info:
        open_array(url, storage_options=so)
    assert s3_server.secret not in str(info.value)
    assert open_array(url, storage_options=so, allow_missing_chunks=True).shape == (1000, D)


def test_http_store_asks_for_its_last_chunk(http_server):
    """Plain HTTP cannot be listed: opening asks whether the last chunk exists."""
    zarr_with_gap(http_server.root / "end.zarr", skip=(9,))
    with pytest.raises(IncompleteStoreError,
                       match=r"chunk holding its last rows \(rows 900..999\) is absent"):
        open_array(http_server.url("end.zarr"))
    y = open_array(http_server.url("end.zarr"), allow_missing_chunks=True)
    assert float(y[900:].sum().compute(scheduler="sync")) == 0.0
    data = zarr_with_gap(http_server.root / "middle.zarr", skip=(3,))
    data[300:400] = 0.0
    np.testing.assert_array_equal(
        open_array(http_server.url("middle.zarr")).compute(scheduler="sync"), data)


def test_hdf5_chunks_never_written(tmp_path):
    """HDF5 stores every chunk its writer wrote: any unallocated chunk is refused."""
    path = tmp_path / "gap.h5"
    data = values()
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("X", shape=data.shape, dtype="f8", chunks=(100, D))
        dset[:500] = data[:500]
        dset[600:] = data[600:]
        f.create_dataset("empty", shape=data.shape, dtype="f8")  # contiguous, unwritten
    with pytest.raises(IncompleteStoreError, match="1 of 10 chunks"):
        open_array(path, "X")
    with pytest.raises(IncompleteStoreError, match="1 of 1 chunks"):
        open_array(path, "empty")
    x = open_array(path, "X", allow_missing_chunks=True).compute()
    np.testing.assert_array_equal(x[600:], data[600:])


def _early(f, name, shape, chunks=None):
    """A dataset whose storage is allocated when it is created (H5D_ALLOC_TIME_EARLY)."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    if chunks:
        dcpl.set_chunk(chunks)
    space = h5py.h5s.create_simple(shape)
    h5py.h5d.create(f.id, name.encode(), h5py.h5t.IEEE_F64LE, space, dcpl=dcpl)
    return f[name]


def test_hdf5_storage_allocated_but_never_written_is_refused(tmp_path):
    """Where storage is allocated before it is written, a writer that stopped leaves an
    end of fill values: refused (chunked-early and contiguous); a finished one opens."""
    path = tmp_path / "early.h5"
    data = values()
    with h5py.File(path, "w") as f:
        _early(f, "chunked", data.shape, (100, D))[:500] = data[:500]
        _early(f, "never", data.shape, (100, D))
        f.create_dataset("contiguous", shape=data.shape, dtype="f8")[:500] = data[:500]
        _early(f, "full", data.shape, (100, D))[...] = data
    for name in ("chunked", "never", "contiguous"):
        with pytest.raises(IncompleteStoreError,
                           match=r"last rows \(rows \d+..999\) hold nothing but the fill"):
            open_array(path, name)
    assert open_array(path, "chunked", allow_missing_chunks=True).shape == data.shape
    np.testing.assert_array_equal(open_array(path, "full").compute(), data)


# --------------------------------------------------------------------------------------
# Changes after opening: every chunk read is checked against the listing
# --------------------------------------------------------------------------------------


def test_a_chunk_deleted_rewritten_or_added_after_opening_is_an_error(tmp_path):
    """Never fill values, never a mix of two data sets (the probe: a chunk deleted, or
    the store regenerated, while a fit reads it)."""
    path = tmp_path / "x.zarr"
    data = zarr_with_gap(path, skip=(3,))  # rows 300..399 absent (the end is there)
    deleted = open_array(path, chunk_rows=100)
    rewritten = open_array(path, chunk_rows=100)
    added = open_array(path, chunk_rows=100)
    np.testing.assert_array_equal(deleted[:100].compute(), data[:100])
    os.remove(path / "c" / "5" / "0")
    with pytest.raises(DataNotFoundError, match=r"'c/5/0' was deleted after the store"):
        deleted.compute()
    zarr.open_array(path, mode="r+")[600:700] = data[600:700] * 2.0
    with pytest.raises(DataSourceError, match=r"'c/6/0' was rewritten after the store"):
        rewritten[600:700].compute()
    zarr.open_array(path, mode="r+")[300:400] = 1.0
    with pytest.raises(DataSourceError, match=r"'c/3/0' was written after the store"):
        added[300:400].compute()


def test_a_store_regenerated_after_opening_is_an_error(tmp_path):
    path = tmp_path / "x.zarr"
    zarr_with_gap(path, skip=())
    x = open_array(path, chunk_rows=100)
    time.sleep(0.01)
    regenerated = zarr.create_array(path, shape=(1000, D), dtype="f8", chunks=(100, D),
                                    overwrite=True)
    regenerated[...] = values(seed=1)
    with pytest.raises(DataSourceError, match="changed while it was being read"):
        x.compute()


def test_an_s3_object_deleted_or_rewritten_after_opening_is_an_error(s3_server):
    so = s3_server.storage_options
    url = s3_server.url() + "/mid-fit.zarr"
    store = FsspecStore.from_url(url, storage_options=so, read_only=False)
    data = zarr_with_gap(store, skip=())
    x = open_array(url, storage_options=so, chunk_rows=100)
    np.testing.assert_array_equal(x[:100].compute(), data[:100])
    arr = zarr.open_array(FsspecStore.from_url(url, storage_options=so, read_only=False),
                          mode="r+")
    arr[100:200] = data[100:200] + 1.0
    with pytest.raises(DataSourceError, match=r"'c/1/0' was rewritten"):
        x[100:200].compute()
    import s3fs

    s3fs.S3FileSystem(**so).rm(url + "/c/2/0")
    with pytest.raises(DataNotFoundError, match=r"'c/2/0' was deleted"):
        x[200:300].compute()
    assert s3_server.secret not in str(x.name)


def test_a_zip_store_rewritten_after_opening_is_an_error(tmp_path):
    path = tmp_path / "x.zip"
    store = ZipStore(path, mode="w")
    data = zarr_with_gap(store, skip=())
    store.close()
    x = open_array(path, chunk_rows=100)
    np.testing.assert_array_equal(x[:100].compute(), data[:100])
    time.sleep(0.01)
    store = ZipStore(path, mode="w")
    zarr_with_gap(store, skip=(), n=1000)
    store.close()
    with pytest.raises(DataSourceError, match="the zip file"):
        x.compute()


# --------------------------------------------------------------------------------------
# The Dask name follows the content
# --------------------------------------------------------------------------------------


def rewrite_in_place(path):
    """Rewrite one chunk of a local zarr store with other values, same size."""
    arr = zarr.open_array(path, mode="r+")
    arr[0:100] = arr[0:100] * 2.0


def test_local_name_changes_when_a_chunk_is_rewritten(tmp_path):
    path = tmp_path / "x.zarr"
    zarr_with_gap(path, skip=())
    first = open_array(path)
    assert open_array(path).name == first.name  # deterministic while unchanged
    time.sleep(0.01)
    rewrite_in_place(path)
    second = open_array(path)
    assert second.name != first.name
    np.testing.assert_array_equal(second[:100].compute(), values()[:100] * 2.0)


def test_local_name_changes_even_with_the_same_mtime(tmp_path):
    """A rewrite that restores the chunk file's mtime still changes its size -> name."""
    path = tmp_path / "x.zarr"
    arr = zarr.create_array(path, shape=(1000, D), dtype="f8", chunks=(100, D))
    arr[...] = values()
    chunk = path / "c" / "0" / "0"
    before = open_array(path).name
    st = os.stat(chunk)
    arr[0:100] = np.zeros((100, D)) + 1.0  # compresses to another size
    os.utime(chunk, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert open_array(path).name != before


def test_s3_name_changes_when_a_chunk_is_rewritten(s3_server):
    so = s3_server.storage_options
    url = s3_server.url() + "/x.zarr"
    store = FsspecStore.from_url(url, storage_options=so, read_only=False)
    zarr_with_gap(store, skip=())
    first = open_array(url, storage_options=so)
    assert open_array(url, storage_options=so).name == first.name
    arr = zarr.open_array(FsspecStore.from_url(url, storage_options=so, read_only=False),
                          mode="r+")
    arr[0:100] = arr[0:100] * 2.0
    assert open_array(url, storage_options=so).name != first.name


def test_http_gets_a_fresh_name_per_open(http_server):
    zarr_with_gap(http_server.root / "fresh.zarr", skip=())
    assert (open_array(http_server.url("fresh.zarr")).name
            != open_array(http_server.url("fresh.zarr")).name)


def test_hdf5_and_npy_names_change_when_rewritten(tmp_path):
    h5 = tmp_path / "x.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("X", data=values())
    npy = tmp_path / "x.npy"
    np.save(npy, values())
    names = [open_array(h5).name, open_array(npy).name]
    time.sleep(0.01)
    with h5py.File(h5, "r+") as f:
        f["X"][0, 0] = 42.0
    mm = np.load(npy, mmap_mode="r+")
    mm[0, 0] = 42.0
    mm.flush()
    del mm
    os.utime(npy)  # a memory-mapped write may not touch the mtime on every file system
    assert open_array(h5).name != names[0]
    assert open_array(npy).name != names[1]


# --------------------------------------------------------------------------------------
# .npy at a URL: exactly the bytes asked for
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain_http(tmp_path_factory):
    """Python's own http.server, which ignores Range requests (answers 200, whole file)."""
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    root = tmp_path_factory.mktemp("plain-http")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_npy_from_a_server_that_ignores_ranges_is_refused(plain_http):
    """Before: np.frombuffer of whatever came back, the first row made of the header's
    bytes; now a clear error when the file is opened (and at every read)."""
    root, base = plain_http
    np.save(root / "x.npy", values(5000))
    with pytest.raises(DataSourceError, match="ignores byte-range requests"):
        open_array(f"{base}/x.npy")
    from daskgmm.io.npy_files import NpyRangeSlicer

    offset = (root / "x.npy").stat().st_size - values(5000).nbytes
    slicer = NpyRangeSlicer(f"{base}/x.npy", None, offset, (5000, D), np.dtype("f8"))
    with pytest.raises(DataSourceError, match="ignores byte-range requests"):
        slicer[1000:2000]


def test_npy_url_with_a_query_string_is_read_as_npy(http_server):
    """A signed URL's query string does not make a .npy file look like a Zarr store."""
    np.save(http_server.root / "q.npy", values())
    x = open_array(http_server.url("q.npy") + "?X-Signature=abc&expires=1", chunk_rows=300)
    np.testing.assert_array_equal(x.compute(scheduler="sync"), values())


def test_npy_and_hdf5_rewritten_after_opening_are_errors(tmp_path):
    npy = tmp_path / "x.npy"
    np.save(npy, values())
    h5 = tmp_path / "x.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("X", data=values())
    arrays = [open_array(npy, chunk_rows=100), open_array(h5, chunk_rows=100)]
    time.sleep(0.01)
    np.save(npy, values(seed=1))
    with h5py.File(h5, "r+") as f:
        f["X"][0, 0] = 42.0
    for x in arrays:
        with pytest.raises(DataSourceError, match="changed while it was being read"):
            x[500:600].compute()
