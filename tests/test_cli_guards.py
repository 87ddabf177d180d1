"""Tests of daskgmm.cli.guards and of the translation of storage failures: overlapping
outputs, writability, write failures and pre-flight warnings, on real files, symbolic
links, tmpfs mounts and a local S3-compatible server."""

from __future__ import annotations

import errno

import pytest

from daskgmm.cli.guards import (
    check_writable,
    chunk_memory_warning,
    free_space_warning,
    is_user_error,
    refuse_overlap,
    refuse_process_local,
)
from daskgmm.errors import StorageError, UnsafeOutputError, UsageError
from daskgmm.io.locations import Location, storage_errors
from tests.mounts import Tmpfs


def loc(path, options=None):
    return Location(str(path), options)


@pytest.fixture
def tree(tmp_path):
    data = tmp_path / "project" / "data.zarr"
    data.mkdir(parents=True)
    (data / "zarr.json").write_text("{}")
    (tmp_path / "elsewhere").mkdir()
    return tmp_path


@pytest.mark.parametrize(("output", "relation"), [
    ("project/data.zarr", "is the same location as data.path"),
    ("project", "contains data.path"),
    ("project/data.zarr/results", "lies inside data.path"),
])
def test_overlap_is_refused(tree, output, relation):
    with pytest.raises(UnsafeOutputError) as info:
        refuse_overlap(loc(tree / output), "output.dir",
                       [("data.path", loc(tree / "project" / "data.zarr"))])
    message = str(info.value)
    assert relation in message and "choose another output.dir, outside data.path" in message
    assert "\n" not in message


def test_symbolic_links_are_resolved(tree):
    (tree / "link").symlink_to(tree / "project")
    with pytest.raises(UnsafeOutputError, match=r"contains data\.path"):
        refuse_overlap(loc(tree / "link"), "output.dir",
                       [("data.path", loc(tree / "project" / "data.zarr"))])
    (tree / "elsewhere" / "data-link").symlink_to(tree / "project" / "data.zarr")
    with pytest.raises(UnsafeOutputError, match=r"is the same location as --data"):
        refuse_overlap(loc(tree / "project" / "data.zarr"), "--output",
                       [("--data", loc(tree / "elsewhere" / "data-link"))])


def test_disjoint_paths_urls_and_relations_are_allowed(tree):
    data = loc(tree / "project" / "data.zarr")
    refuse_overlap(loc(tree / "elsewhere" / "out"), "output.dir", [("data.path", data)])
    refuse_overlap(loc(tree / "project" / "data.zarr2"), "output.dir",
                   [("data.path", data)])
    refuse_overlap(loc(tree / "out"), "output.dir",
                   [("data.path", loc("memory://bucket/x.zarr")),
                    ("data.path", loc("sklearn:iris")), ("checkpoint.dir", None)])
    # A checkpoint directory may contain the data (it only adds checkpoint.json).
    refuse_overlap(loc(tree / "project"), "checkpoint.dir", [("data.path", data)],
                   relations=("is", "lies inside"))


@pytest.mark.parametrize(("output", "data", "relation"), [
    ("memory://bucket/run/x.zarr", "memory://bucket/run/x.zarr", "is the same location as"),
    ("memory://b/a", "memory://b/a/c", "contains"),
    ("memory://b/a/c/out", "simplecache::memory://b/a/c", "lies inside"),
    ("simplecache::memory://b/a", "memory://b/a/c", "contains"),
])
def test_overlap_of_urls_is_refused(output, data, relation):
    with pytest.raises(UnsafeOutputError) as info:
        refuse_overlap(loc(output), "output.dir", [("data.path", loc(data))])
    assert f"{relation} data.path" in str(info.value)


def test_urls_that_do_not_overlap(tmp_path):
    for output, data in [("memory://bucket/run", "memory://bucket/run2/x.zarr"),
                         ("memory://bucket/run", "memory://other/run/x.zarr"),
                         (str(tmp_path / "run"), "memory://" + str(tmp_path / "run"))]:
        refuse_overlap(loc(output), "output.dir", [("data.path", loc(data))])
    with pytest.raises(UnsafeOutputError, match=r"contains data\.path"):  # file:// is local
        refuse_overlap(loc(tmp_path), "output.dir",
                       [("data.path", loc(f"file://{tmp_path}/x.zarr"))])


def test_check_writable_creates_nothing(tmp_path):
    check_writable(loc(tmp_path / "a" / "b" / "out"), "output.dir")
    assert list(tmp_path.iterdir()) == []


def test_check_writable_refuses_a_read_only_file_system(tmp_path):
    target = tmp_path / "ro" / "runs" / "out"
    with Tmpfs(tmp_path / "ro", read_only=True), pytest.raises(StorageError) as info:
        check_writable(loc(target), "output.dir")
    assert str(info.value) == (f"output.dir {target}: the file system is read-only: choose "
                               "a writable location")
    assert info.value.errno == errno.EROFS


def test_check_writable_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(StorageError, match="a file is in the way"):
        check_writable(loc(tmp_path / "file" / "out"), "--output")


def test_storage_errors_name_the_setting_and_the_location(tmp_path):
    out = loc(tmp_path / "out")
    with pytest.raises(StorageError) as info, storage_errors("output.dir", out):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))
    assert str(info.value) == (f"output.dir {out.display}: no space left on the device: "
                               "free some space or choose another location")
    assert info.value.errno == errno.ENOSPC and is_user_error(info.value)
    with pytest.raises(StorageError, match="quota"), storage_errors("--output", out):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    with pytest.raises(ValueError, match="a bug"), storage_errors("--output", out):
        raise ValueError("a bug")  # not a storage failure: untouched


def test_a_real_full_disk_is_reported(tmp_path):
    with Tmpfs(tmp_path / "small", size="64k") as mount:
        target = mount.path / "big.bin"
        with pytest.raises(StorageError) as info, storage_errors("--output", loc(target)):
            target.write_bytes(b"x" * 2**20)
    assert "no space left on the device" in str(info.value)


def test_free_space_warning(tmp_path):
    with Tmpfs(tmp_path / "small", size="64k") as mount:
        text = free_space_warning(loc(mount.path / "out"), "output.dir", 10 * 2**20)
        assert text is not None and "outputs may need up to 10 MiB" in text
        assert free_space_warning(loc(mount.path / "out"), "output.dir", 1000) is None
    assert free_space_warning(loc("memory://b/out"), "output.dir", 10**15) is None


def test_chunk_memory_warning_gives_the_numbers():
    assert chunk_memory_warning(10 * 2**20, 100_000, [2**30]) is None
    assert chunk_memory_warning(10**9, 100_000, [0]) is None  # no limit, no warning
    big = chunk_memory_warning(1_280_000_000, 10_000_000, [2**30, 2**31])
    assert "is 1,221 MiB, more than 25% of a worker's memory limit (1,024 MiB)" in big
    assert "cluster.memory_limit" in big


def test_os_write_errors_are_user_errors_and_value_errors_are_not():
    from daskgmm.errors import ConfigError, InvalidDataError

    assert is_user_error(ConfigError("x")) and is_user_error(InvalidDataError("x"))
    assert is_user_error(OSError(errno.ENOSPC, "full"))
    assert is_user_error(PermissionError(errno.EACCES, "denied"))
    assert is_user_error(OSError(errno.EROFS, "read-only"))
    assert not is_user_error(ValueError("a bug"))
    assert not is_user_error(FileNotFoundError(errno.ENOENT, "gone"))
    assert not is_user_error(KeyError("x"))
    assert not is_user_error(OSError(errno.EIO, "I/O error"))


def test_check_writable_at_urls(s3_server):
    so = s3_server.storage_options
    check_writable(loc(s3_server.url() + "/run", so), "output.dir")
    assert not [p for p in s3_server.fs().find(s3_server.bucket) if "probe" in p]
    with pytest.raises(StorageError) as info:
        check_writable(loc("s3://no-such-bucket-xyz/run", so), "output.dir")
    assert str(info.value).startswith("output.dir s3://no-such-bucket-xyz/run: no such "
                                      "bucket")
    assert s3_server.secret not in str(info.value)
    with pytest.raises(UsageError, match="http:// locations cannot be written"):
        check_writable(loc("http://127.0.0.1:1/run"), "--output")


def test_process_local_filesystems_are_refused():
    refuse_process_local(("data.path", loc("/tmp/x.zarr")), ("output.dir", loc("/tmp/x")),
                         ("checkpoint.dir", None))
    with pytest.raises(UsageError, match=r"output\.dir memory://x/run: a memory:// "
                                         r"location exists only inside one Python process"):
        refuse_process_local(("data.path", loc("/d")), ("output.dir", loc("memory://x/run")))
