"""Write primitives for local paths and URLs: a real S3-compatible server (moto,
subprocess on 127.0.0.1), memory:// and local directories."""

from __future__ import annotations

import json
import time
import uuid

import dask.array as da
import numpy as np
import pytest
import zarr

from daskgmm.errors import UnsafeOverwriteError
from daskgmm.io.locations import parse_location
from daskgmm.io.storage import (
    atomic_output_directory,
    create_zarr_array,
    is_daskgmm_output,
    read_output_marker,
    write_file_atomic,
    zarr_store,
)


@pytest.fixture(params=["local", "memory", "s3"])
def place(request, tmp_path):
    """(url factory, storage_options) for each kind of location."""
    if request.param == "local":
        return (lambda name: str(tmp_path / name)), None
    if request.param == "memory":
        prefix = f"memory://storage-tests/{uuid.uuid4().hex}"
        return (lambda name: f"{prefix}/{name}"), None
    server = request.getfixturevalue("s3_server")
    prefix = server.url()
    return (lambda name: f"{prefix}/{name}"), server.storage_options


def listing(url, so):
    loc = parse_location(url, so)
    if not loc.exists() and not loc.isdir():
        return []
    base = loc.path.rstrip("/") + "/"
    return sorted(str(p)[len(base):] for p in loc.fs.find(loc.path))


def siblings(url, so):
    loc = parse_location(url, so).parent
    return sorted(str(p).rstrip("/").rsplit("/", 1)[-1] for p in loc.fs.ls(loc.path,
                                                                          detail=False))


def test_directory_appears_complete_with_its_marker(place):
    url_of, so = place
    url = url_of("run")
    with atomic_output_directory(url, kind="run", storage_options=so) as out:
        out.write_bytes("report.json", json.dumps({"format": "something-else"}).encode())
        out.write_bytes("sub/data.bin", b"x" * 1000)
        assert not parse_location(url, so).exists()  # nothing at the target while writing
    assert listing(url, so) == [".daskgmm.json", "report.json", "sub/data.bin"]
    marker = read_output_marker(url, so)
    assert marker["written_by"] == "daskgmm" and marker["kind"] == "run"
    assert is_daskgmm_output(url, so, kind="run")
    assert siblings(url, so) == ["run"]  # no temporary left


def test_failure_inside_leaves_nothing(place):
    url_of, so = place
    url = url_of("run")
    with pytest.raises(RuntimeError), atomic_output_directory(url, kind="run",
                                                              storage_options=so) as out:
        out.write_bytes("a.bin", b"1")
        raise RuntimeError("killed")
    assert not parse_location(url, so).exists()
    parent = parse_location(url, so).parent
    assert not [n for n in siblings(url, so) if ".tmp-" in n] if parent.exists() else True


def test_overwrite_rules(place):
    url_of, so = place
    url = url_of("out")
    with atomic_output_directory(url, kind="labels", storage_options=so) as out:
        out.write_bytes("v", b"1")
    with pytest.raises(FileExistsError):
        with atomic_output_directory(url, kind="labels", storage_options=so):
            pass
    with atomic_output_directory(url, kind="labels", overwrite=True,
                                 storage_options=so) as out:
        out.write_bytes("w", b"2")
    assert listing(url, so) == [".daskgmm.json", "w"]

    users = url_of("users-data")
    write_file_atomic(users + "/embeddings.npy", b"only copy", storage_options=so)
    with pytest.raises(UnsafeOverwriteError, match="did not write"):
        with atomic_output_directory(users, kind="run", overwrite=True,
                                     storage_options=so):
            pass
    assert listing(users, so) == ["embeddings.npy"]
    assert parse_location(users + "/embeddings.npy", so).fs.cat_file(
        parse_location(users + "/embeddings.npy", so).path) == b"only copy"


def test_zarr_labels_filled_by_tasks(place):
    url_of, so = place
    url = url_of("labels.zarr")
    labels = da.arange(1000, chunks=250, dtype="i8") % 7
    with atomic_output_directory(url, kind="labels", storage_options=so) as out:
        arr = create_zarr_array(out.location, (1000,), (250,), "int64", fill_value=-1,
                                attributes={"content": "labels"},
                                storage_options=so)
        da.store(labels, arr, lock=False, scheduler="threads")
    back = zarr.open_array(zarr_store(url, so, read_only=True), mode="r")
    np.testing.assert_array_equal(back[...], np.arange(1000) % 7)
    assert back.attrs["content"] == "labels"
    assert back.attrs["daskgmm"]["kind"] == "labels"  # the marker is the root's attribute
    assert ".daskgmm.json" not in listing(url, so)
    # every chunk exists once filled, so the missing-chunk check accepts the array
    from daskgmm.io.integrity import zarr_store_state

    state = zarr_store_state(back, parse_location(url, so))
    assert (state.present, state.expected) == (4, 4)


@pytest.mark.slow
def test_s3_responsibilities_written_by_worker_processes(s3_server, client):
    """Workers of a 2-process LocalCluster write the chunks to S3 themselves."""
    so = s3_server.storage_options
    url = s3_server.url() + "/resp.zarr"
    x = da.random.default_rng(0).random((2000, 3), chunks=(500, 3))
    resp = x / x.sum(axis=1, keepdims=True)
    with atomic_output_directory(url, kind="responsibilities", storage_options=so) as out:
        arr = create_zarr_array(out.location, resp.shape, (500, 3), "float64",
                                storage_options=so)
        assert arr.compressors == ()  # float data is stored uncompressed
        client.compute(da.store(resp, arr, lock=False, compute=False), sync=True)
    back = zarr.open_array(zarr_store(url, so, read_only=True), mode="r")[...]
    np.testing.assert_allclose(back, resp.compute())
    assert is_daskgmm_output(url, so, kind="responsibilities")


def test_a_prefix_without_its_marker_is_not_an_output(s3_server):
    """What a crash in the middle of the copy leaves: objects, no marker -> refused."""
    so = s3_server.storage_options
    url = s3_server.url() + "/half"
    write_file_atomic(url + "/arrays.npz", b"123", storage_options=so)
    assert read_output_marker(url, so) is None
    assert not is_daskgmm_output(url, so)


def test_one_writer_at_a_time_and_a_gone_writers_prefix_is_cleaned(s3_server, monkeypatch):
    """On S3 a writer's claim is an object it renews every HEARTBEAT seconds: a second
    writer fails at once; a claim not renewed for 4 x HEARTBEAT is a writer gone, whose
    temporary prefix the next writer deletes."""
    from daskgmm.errors import OutputExistsError
    from daskgmm.io import storage

    monkeypatch.setattr(storage, "HEARTBEAT", 0.25)
    so = s3_server.storage_options
    url = s3_server.url() + "/out"
    target = parse_location(url, so)
    with atomic_output_directory(url, kind="run", storage_options=so) as out:
        out.write_bytes("a", b"1")
        time.sleep(1.5)  # longer than 4 x HEARTBEAT: the claim is renewed meanwhile
        with pytest.raises(OutputExistsError, match="another daskgmm process"):
            with atomic_output_directory(url, kind="run", storage_options=so):
                pass
        assert out.location.join("a").exists()  # a live writer's temporary is untouched
    # a writer that is gone: its claim is never renewed
    stale = target.parent.join(".out.tmp-0-deadbeef")
    write_file_atomic(stale.url + "/partial.bin", b"half", storage_options=so)
    write_file_atomic(stale.url + ".claim", b"daskgmm claim", storage_options=so)
    time.sleep(1.2)
    with atomic_output_directory(url, kind="run", overwrite=True,
                                 storage_options=so) as out:
        out.write_bytes("b", b"2")
    assert not stale.join("partial.bin").exists()
    assert siblings(url, so) == ["out"]


def test_write_file_atomic_and_marker_json(place):
    url_of, so = place
    url = url_of("report.json")
    write_file_atomic(url, json.dumps({"a": 1}).encode(), storage_options=so)
    loc = parse_location(url, so)
    assert json.loads(loc.fs.cat_file(loc.path)) == {"a": 1}
