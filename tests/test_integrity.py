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

from daskgmm.errors import IncompleteStoreError
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
def test_local_zarr_with_missing_chunk_is_refused(tmp_path, zarr_format):
    path = tmp_path / "gap.zarr"
    data = zarr_with_gap(path, zarr_format)
    with pytest.raises(IncompleteStoreError) as info:
        open_array(path)
    message = str(info.value)
    assert "1 of 10 chunks were never written" in message
    assert "rows 300..399" in message
    assert "allow_missing_chunks=True" in message
    assert isinstance(info.value, ValueError)
    x = open_array(path, allow_missing_chunks=True).compute()
    np.testing.assert_array_equal(x[300:400], 0.0)  # what the opt-in accepts
    np.testing.assert_array_equal(x[:300], data[:300])


def test_complete_store_opens(tmp_path):
    path = tmp_path / "full.zarr"
    data = zarr_with_gap(path, skip=())
    np.testing.assert_array_equal(open_array(path).compute(), data)


def test_sharded_store_counts_shards(tmp_path):
    path = tmp_path / "sharded.zarr"
    zarr_with_gap(path, shards=200, rows=50, skip=(1,))
    with pytest.raises(IncompleteStoreError, match=r"1 of 5 shards.*inside a shard"):
        open_array(path)
    assert open_array(path, allow_missing_chunks=True).shape == (1000, D)


def test_zip_store_with_missing_chunk(tmp_path):
    path = tmp_path / "gap.zip"
    store = ZipStore(path, mode="w")
    zarr_with_gap(store)
    store.close()
    with pytest.raises(IncompleteStoreError, match="1 of 10 chunks"):
        open_array(path)


def test_memory_and_s3_with_missing_chunk(s3_server):
    zarr_with_gap(FsspecStore.from_url("memory://integrity/gap.zarr", read_only=False))
    with pytest.raises(IncompleteStoreError, match="1 of 10 chunks"):
        open_array("memory://integrity/gap.zarr")
    so = s3_server.storage_options
    url = s3_server.url() + "/gap.zarr"
    zarr_with_gap(FsspecStore.from_url(url, storage_options=so, read_only=False),
                  zarr_format=2)
    with pytest.raises(IncompleteStoreError, match="1 of 10 chunks") as info:
        open_array(url, storage_options=so)
    assert s3_server.secret not in str(info.value)
    assert open_array(url, storage_options=so, allow_missing_chunks=True).shape == (1000, D)


def test_http_store_checks_chunks_when_read(http_server):
    """Plain HTTP cannot be listed: the tasks check the chunks they read."""
    zarr_with_gap(http_server.root / "gap.zarr")
    x = open_array(http_server.url("gap.zarr"), chunk_rows=100)
    np.testing.assert_array_equal(x[:300].compute(scheduler="sync"), values()[:300])
    with pytest.raises(IncompleteStoreError, match=r"'c/3/0' \(rows 300..399\)"):
        x.compute(scheduler="sync")
    y = open_array(http_server.url("gap.zarr"), allow_missing_chunks=True)
    assert float(y[300:400].sum().compute(scheduler="sync")) == 0.0


def test_hdf5_chunks_never_written(tmp_path):
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
