"""open_array on URLs: memory://, a real S3-compatible server (moto, subprocess on
127.0.0.1) and a local HTTP server; workers of a LocalCluster reading S3 themselves;
credentials never shown; a missing filesystem library names its extra."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest
import zarr
from zarr.storage import FsspecStore

from daskgmm.errors import DataNotFoundError, MissingDependencyError
from daskgmm.io import describe_array, get_reader, open_array
from daskgmm.io.locations import parse_location, redact_options, redact_url

N, D = 1000, 4


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((N, D))


def put_zarr(url, values, storage_options=None, zarr_format=3, chunks=(100, D), **kw):
    store = FsspecStore.from_url(url, storage_options=storage_options, read_only=False)
    arr = zarr.create_array(store, shape=values.shape, dtype=values.dtype, chunks=chunks,
                            zarr_format=zarr_format, **kw)
    arr[...] = values
    return arr


def put_file(fs, local_path, remote_path):
    fs.put_file(str(local_path), remote_path)


def write_local_formats(tmp_path, values):
    h5 = tmp_path / "x.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("X", data=values, chunks=(128, D))
    npy_c = tmp_path / "c.npy"
    np.save(npy_c, values)
    npy_f = tmp_path / "f.npy"
    np.save(npy_f, np.asfortranarray(values))
    return {"x.h5": h5, "c.npy": npy_c, "f.npy": npy_f}


# --------------------------------------------------------------------------------------
# memory://
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_memory_zarr(data, zarr_format):
    url = f"memory://remote-read/{zarr_format}/x.zarr"
    put_zarr(url, data, zarr_format=zarr_format)
    assert get_reader(url).name == "zarr"
    x = open_array(url, chunk_rows=300)
    assert x.chunks == ((300, 300, 300, 100), (D,))
    np.testing.assert_array_equal(x.compute(scheduler="sync"), data)


def test_memory_hdf5_npy_and_zarr_group(tmp_path, data):
    import fsspec

    fs = fsspec.filesystem("memory")
    for name, path in write_local_formats(tmp_path, data).items():
        fs.put_file(str(path), f"/remote-read/files/{name}")
        x = open_array(f"memory://remote-read/files/{name}", chunk_rows=333)
        assert x.chunks[0] == (333, 333, 333, 1)
        np.testing.assert_array_equal(x.compute(scheduler="sync"), data)
    store = FsspecStore.from_url("memory://remote-read/group.zarr", read_only=False)
    root = zarr.open_group(store, mode="w")
    root.create_array("emb/X", shape=data.shape, dtype="f4", chunks=(250, D))[...] = data
    x = open_array("memory://remote-read/group.zarr", "emb/X")
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x.compute(scheduler="sync"), data.astype("f4"))


def test_npy_slices_by_byte_ranges(tmp_path, data):
    import fsspec

    fs = fsspec.filesystem("memory")
    paths = write_local_formats(tmp_path, data)
    for name in ("c.npy", "f.npy"):
        fs.put_file(str(paths[name]), f"/remote-read/ranges/{name}")
        x = open_array(f"memory://remote-read/ranges/{name}", chunk_rows=64)
        y = x[130:515:3, ::-1].compute(scheduler="sync")
        np.testing.assert_array_equal(y, data[130:515:3, ::-1])


def test_file_url_is_the_local_path(tmp_path, data):
    path = tmp_path / "x.npy"
    np.save(path, data)
    x = open_array(f"file://{path}")
    y = open_array(path)
    assert x.name == y.name  # same reader, same token: local reading is unchanged
    np.testing.assert_array_equal(x.compute(), data)


# --------------------------------------------------------------------------------------
# S3 (moto server)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_s3_zarr(s3_server, data, zarr_format):
    url = s3_server.url() + "/x.zarr"
    so = s3_server.storage_options
    put_zarr(url, data, so, zarr_format=zarr_format)
    x = open_array(url, storage_options=so, chunk_rows=250)
    assert x.chunks[0] == (250,) * 4
    np.testing.assert_array_equal(x.compute(scheduler="sync"), data)


def test_s3_files(s3_server, tmp_path, data):
    so = s3_server.storage_options
    fs = s3_server.fs()
    prefix = s3_server.url()
    for name, path in write_local_formats(tmp_path, data).items():
        put_file(fs, path, f"{prefix}/{name}")
        x = open_array(f"{prefix}/{name}", storage_options=so)
        np.testing.assert_array_equal(x.compute(scheduler="sync"), data)


def test_s3_missing_object_and_credentials_never_shown(s3_server, data):
    so = s3_server.storage_options
    secret = s3_server.secret
    url = s3_server.url() + "/nothing.zarr"
    with pytest.raises(DataNotFoundError) as info:
        open_array(url, storage_options=so)
    assert secret not in str(info.value)
    url = s3_server.url() + "/x.zarr"
    put_zarr(url, data, so)
    x = open_array(url, storage_options=so)
    shown = " ".join([repr(x), str(describe_array(x)), repr(parse_location(url, so)),
                      str(redact_options(so))])
    assert secret not in shown
    # the graph carries the options (workers need them) but no repr shows them
    for value in x.dask.values():
        assert secret not in repr(value)


@pytest.mark.slow
def test_s3_read_by_worker_processes(s3_server, client, tmp_path, data):
    """Workers of a 2-process LocalCluster open the S3 objects themselves."""
    so = s3_server.storage_options
    fs = s3_server.fs()
    prefix = s3_server.url()
    zurl = prefix + "/x.zarr"
    put_zarr(zurl, data, so)
    arrays = [open_array(zurl, storage_options=so, chunk_rows=200)]
    for name, path in write_local_formats(tmp_path, data).items():
        put_file(fs, path, f"{prefix}/{name}")
        arrays.append(open_array(f"{prefix}/{name}", storage_options=so, chunk_rows=200))
    sums = client.compute([a.sum(axis=0) for a in arrays], sync=True)
    for s in sums:
        np.testing.assert_allclose(s, data.sum(axis=0))
    # every chunk was read on a worker, not in this process
    where = client.run(lambda: __import__("os").getpid())
    assert len(where) == 2


# --------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------


def test_http_files_and_zarr(http_server, tmp_path, data):
    root = http_server.root
    for name, path in write_local_formats(tmp_path, data).items():
        (root / name).write_bytes(path.read_bytes())
        x = open_array(http_server.url(name), chunk_rows=300)
        np.testing.assert_array_equal(x.compute(scheduler="sync"), data)
    arr = zarr.create_array(root / "h.zarr", shape=data.shape, dtype="f8", chunks=(100, D))
    arr[...] = data
    x = open_array(http_server.url("h.zarr"))
    np.testing.assert_array_equal(x.compute(scheduler="sync"), data)


def test_http_password_is_redacted(http_server):
    base = http_server.base.replace("http://", "http://alice:pa55word-xyz@")
    with pytest.raises(DataNotFoundError) as info:
        open_array(base + "/missing.npy")
    assert "pa55word-xyz" not in str(info.value)
    assert "alice:***@" in str(info.value)
    # every query value of a signed URL is masked (their names say nothing reliable)
    from daskgmm.io.locations import scrub_secrets

    text = ("ZarrUserWarning: object at s3://AKIAXYZ:wJalrSECRET@bucket/x.zarr?"
            "X-Amz-Signature=f00dcafe is not recognized")
    assert scrub_secrets(text) == ("ZarrUserWarning: object at s3://AKIAXYZ:***@bucket/"
                                   "x.zarr?X-Amz-Signature=*** is not recognized")
    assert redact_url("https://h/x?sig=abc&code=s3cr3t") == "https://h/x?sig=***&code=***"


# --------------------------------------------------------------------------------------
# Missing filesystem libraries
# --------------------------------------------------------------------------------------


def test_missing_library_names_the_extra(monkeypatch):
    with pytest.raises(MissingDependencyError, match=r'pip install "daskgmm\[gcs\]"'):
        open_array("gs://bucket/x.zarr")
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if s3fs were not installed
    from importlib import import_module

    registry = import_module("fsspec.registry")
    for protocol in ("s3", "s3a"):  # forget the class fsspec imported earlier
        monkeypatch.delitem(registry._registry, protocol, raising=False)
    with pytest.raises(MissingDependencyError, match=r'pip install "daskgmm\[s3\]"') as info:
        open_array("s3://bucket/x.zarr", storage_options={"secret": "zzz-hidden"})
    assert isinstance(info.value, ImportError)
    assert "zzz-hidden" not in str(info.value)


def test_unknown_protocol():
    from daskgmm.errors import DataSourceError

    with pytest.raises(DataSourceError, match="no filesystem for the protocol 'nope'"):
        open_array("nope://x/y.zarr")


# --------------------------------------------------------------------------------------
# StoragePath and relation
# --------------------------------------------------------------------------------------


def test_storage_path_carries_its_options():
    import copy
    import pickle

    from daskgmm.io.locations import StoragePath

    path = StoragePath("memory://sp/x", {"secret": "s-123", "anon": False})
    assert path == "memory://sp/x" and isinstance(path, str)
    assert "s-123" not in repr(path) and "***" in repr(path)
    for clone in (pickle.loads(pickle.dumps(path)), copy.deepcopy(path)):
        assert clone.storage_options == {"secret": "s-123", "anon": False}
    assert parse_location(path).storage_options == {"secret": "s-123", "anon": False}
    assert parse_location(path, {"anon": True}).storage_options == {"anon": True}


def test_relation_of_locations(tmp_path):
    from daskgmm.io.locations import relation

    def rel(a, b):
        return relation(parse_location(a), parse_location(b))

    assert rel("s3://b/x", "s3://b/x/") == "is"
    assert rel("s3://b/x", "s3://b/x/y") == "contains"
    assert rel("s3://b/x/y", "s3://b/x") == "lies inside"
    assert rel("s3://b/x", "s3://b/xy") is None
    assert rel("s3a://b/x", "s3://b/x/y") == "contains"
    assert rel("s3://b/x", "memory://b/x") is None
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert rel(str(tmp_path / "link"), f"file://{tmp_path}/real/z") == "contains"
