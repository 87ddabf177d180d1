"""Tests of daskgmm.cli.guards: overlapping outputs, writability, write failures and
pre-flight warnings, on real files, symbolic links and tmpfs mounts."""

from __future__ import annotations

import errno

import pytest

from daskgmm.cli.guards import (
    check_writable,
    chunking_warnings,
    free_space_warning,
    refuse_overlap,
    write_errors,
)
from daskgmm.errors import OutputWriteError, UnsafeOutputError
from tests.mounts import Tmpfs


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
        refuse_overlap(tree / output, "output.dir", [("data.path", tree / "project" /
                                                      "data.zarr")])
    message = str(info.value)
    assert relation in message and "choose an output.dir outside data.path" in message
    assert "\n" not in message


def test_symbolic_links_are_resolved(tree):
    (tree / "link").symlink_to(tree / "project")
    with pytest.raises(UnsafeOutputError, match=r"contains data\.path"):
        refuse_overlap(tree / "link", "output.dir",
                       [("data.path", tree / "project" / "data.zarr")])
    (tree / "elsewhere" / "data-link").symlink_to(tree / "project" / "data.zarr")
    with pytest.raises(UnsafeOutputError, match=r"is the same location as --data"):
        refuse_overlap(tree / "project" / "data.zarr", "--output",
                       [("--data", tree / "elsewhere" / "data-link")])


def test_disjoint_paths_urls_and_relations_are_allowed(tree):
    data = tree / "project" / "data.zarr"
    refuse_overlap(tree / "elsewhere" / "out", "output.dir", [("data.path", data)])
    refuse_overlap(tree / "project" / "data.zarr2", "output.dir", [("data.path", data)])
    refuse_overlap(tree / "out", "output.dir", [("data.path", "s3://bucket/x.zarr"),
                                                ("data.path", "sklearn:iris"),
                                                ("checkpoint.dir", None)])
    # A checkpoint directory may contain the data (it only adds checkpoint.json).
    refuse_overlap(tree / "project", "checkpoint.dir", [("data.path", data)],
                   relations=("is", "lies inside"))


def test_check_writable_creates_nothing(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    check_writable(target, "output.dir")
    assert list(tmp_path.iterdir()) == []


def test_check_writable_refuses_a_read_only_file_system(tmp_path):
    with Tmpfs(tmp_path / "ro", read_only=True):
        with pytest.raises(OutputWriteError) as info:
            check_writable(tmp_path / "ro" / "runs" / "out", "output.dir")
    message = str(info.value)
    assert message.startswith(f"cannot write output.dir {tmp_path / 'ro' / 'runs' / 'out'}")
    assert "read-only" in message and info.value.errno == errno.EROFS


def test_check_writable_refuses_a_file_in_the_way(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputWriteError, match="is not a directory"):
        check_writable(tmp_path / "file" / "out", "--output")


def test_write_errors_names_the_location_of_the_failing_file(tmp_path):
    out, ckpt = tmp_path / "out", tmp_path / "ckpt"
    full = OSError(errno.ENOSPC, "No space left on device",
                   str(tmp_path / ".out.tmp-0123456789abcdef" / "model" / "arrays.npz"))
    with pytest.raises(OutputWriteError) as info, \
            write_errors(("output.dir", out), ("checkpoint.dir", ckpt)):
        raise full
    assert str(info.value).startswith(f"cannot write output.dir {out}: no space left")
    assert info.value.__cause__ is full
    with pytest.raises(OutputWriteError, match=r"cannot write checkpoint\.dir .*read-only"), \
            write_errors(("output.dir", out), ("checkpoint.dir", ckpt)):
        raise OSError(errno.EROFS, "Read-only file system", str(ckpt / "checkpoint.json"))
    with pytest.raises(OutputWriteError, match=r"cannot write output\.dir .*quota"), \
            write_errors(("output.dir", out)):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")  # no file name: the default
    # Other errors pass through untouched.
    with pytest.raises(FileNotFoundError), write_errors(("output.dir", out)):
        raise FileNotFoundError(errno.ENOENT, "No such file", "x")


def test_a_real_full_disk_is_reported(tmp_path):
    with Tmpfs(tmp_path / "small", size="64k") as mount:
        target = mount.path / "big.bin"
        with pytest.raises(OutputWriteError) as info, write_errors(("--output", target)):
            target.write_bytes(b"x" * 2**20)
    assert "no space left on the device" in str(info.value)


def test_free_space_warning(tmp_path):
    with Tmpfs(tmp_path / "small", size="64k") as mount:
        text = free_space_warning(mount.path / "out", "output.dir", 10 * 2**20)
        assert text is not None and "outputs may need up to 10 MiB" in text
        assert free_space_warning(mount.path / "out", "output.dir", 1000) is None
    assert free_space_warning("s3://b/out", "output.dir", 10**15) is None


def test_chunking_warnings_give_the_numbers():
    assert chunking_warnings(100, 100_000, 16, 8, [2**30]) == []
    (many,) = chunking_warnings(100_000, 10, 4, 8)
    assert "100,000 chunks of 10 rows" in many and "data.chunk_rows" in many
    (tiny,) = chunking_warnings(5000, 100, 4, 8)
    assert "hold only 3,200 bytes each (5,000 chunks)" in tiny
    (tiny,) = chunking_warnings(5000, 1000, 4, 8)
    assert "hold only 31 KiB each (5,000 chunks)" in tiny
    (big,) = chunking_warnings(10, 10_000_000, 16, 8, [2**30, 2**31])
    assert "is 1,221 MiB, more than 25% of a worker's memory limit (1,024 MiB)" in big
    assert "cluster.memory_limit" in big


def test_os_write_errors_are_user_errors_and_value_errors_are_not():
    from daskgmm.cli.guards import is_user_error
    from daskgmm.errors import ConfigError, InvalidDataError

    assert is_user_error(ConfigError("x")) and is_user_error(InvalidDataError("x"))
    assert is_user_error(OSError(errno.ENOSPC, "full"))
    assert is_user_error(PermissionError(errno.EACCES, "denied"))
    assert is_user_error(OSError(errno.EROFS, "read-only"))
    assert not is_user_error(ValueError("a bug"))
    assert not is_user_error(FileNotFoundError(errno.ENOENT, "gone"))
    assert not is_user_error(KeyError("x"))
    assert not is_user_error(OSError(errno.EIO, "I/O error"))


@pytest.mark.parametrize(("output", "data", "relation"), [
    ("s3://bucket/run/x.zarr", "s3://bucket/run/x.zarr", "is the same location as"),
    ("s3://bucket/run", "s3a://bucket/run/x.zarr", "contains"),
    ("s3://bucket/run/x.zarr/out", "s3://bucket/run/x.zarr/", "lies inside"),
    ("memory://b/a", "memory://b/a/c", "contains"),
])
def test_overlap_of_urls_is_refused(output, data, relation):
    with pytest.raises(UnsafeOutputError) as info:
        refuse_overlap(output, "output.dir", [("data.path", data)])
    assert f"{relation} data.path" in str(info.value)


def test_urls_that_do_not_overlap(tmp_path):
    for output, data in [("s3://bucket/run", "s3://bucket/run2/x.zarr"),
                         ("s3://bucket/run", "s3://other/run/x.zarr"),
                         ("s3://bucket/run", "gs://bucket/run/x.zarr"),
                         (str(tmp_path / "run"), "s3://bucket" + str(tmp_path / "run"))]:
        refuse_overlap(output, "output.dir", [("data.path", data)])
    with pytest.raises(UnsafeOutputError, match=r"contains data\.path"):  # file:// is local
        refuse_overlap(tmp_path, "output.dir", [("data.path", f"file://{tmp_path}/x.zarr")])


def test_check_writable_at_urls(s3_server):
    check_writable(s3_server.url() + "/run", "output.dir",
                   storage_options=s3_server.storage_options)
    fs = s3_server.fs()
    assert not [p for p in fs.find(s3_server.bucket) if "probe" in p]  # nothing left
    with pytest.raises(OutputWriteError) as info:
        check_writable("s3://no-such-bucket-xyz/run", "output.dir",
                       storage_options=s3_server.storage_options)
    assert "cannot write output.dir s3://no-such-bucket-xyz/run" in str(info.value)
    assert s3_server.secret not in str(info.value)
    with pytest.raises(OutputWriteError, match="http:// locations cannot be written"):
        check_writable("http://127.0.0.1:1/run", "--output")


def test_process_local_filesystems_are_refused():
    from daskgmm.cli.guards import refuse_process_local
    from daskgmm.errors import UsageError

    refuse_process_local(("data.path", "s3://b/x.zarr"), ("output.dir", "/tmp/x"),
                         ("checkpoint.dir", None))
    with pytest.raises(UsageError, match=r"output\.dir memory://x/run: a memory:// "
                                         r"location exists only inside one Python process"):
        refuse_process_local(("data.path", "/d"), ("output.dir", "memory://x/run"))
