"""Tests of daskgmm.io.atomic on real files, including writers killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from daskgmm.errors import UnsafeOverwriteError
from daskgmm.io.atomic import (
    MARKER_FILE,
    atomic_directory,
    atomic_file,
    clean_stale_temporaries,
    read_marker,
    remove_stale_temporaries,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)


def leftovers(parent: Path) -> list[str]:
    """Names of temporary or replaced entries left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_complete(path: Path, version: str) -> None:
    """A directory with a payload and a completion marker written last."""
    with atomic_directory(path, overwrite=True) as tmp:
        (tmp / "payload.txt").write_text(version * 100)
        (tmp / "DONE").write_text(version)


def read_version(path: Path) -> str:
    version = (path / "DONE").read_text()
    assert (path / "payload.txt").read_text() == version * 100
    return version


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------
def test_write_bytes_creates_and_replaces(tmp_path):
    target = tmp_path / "out.bin"
    assert write_bytes_atomic(target, b"first") == target
    assert target.read_bytes() == b"first"
    write_bytes_atomic(str(target), b"second")
    assert target.read_bytes() == b"second"
    assert leftovers(tmp_path) == []


def test_new_file_gets_umask_permissions_and_replaced_file_keeps_its_mode(tmp_path):
    target = tmp_path / "out.txt"
    write_text_atomic(target, "x")
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~current_umask()
    target.chmod(0o640)
    write_text_atomic(target, "y")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert target.read_text() == "y"


def test_write_text_and_json(tmp_path):
    write_text_atomic(tmp_path / "a.txt", "héllo\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    write_json_atomic(tmp_path / "a.json", {"b": [1, 2.5, None]}, indent=2, sort_keys=True)
    text = (tmp_path / "a.json").read_text()
    assert json.loads(text) == {"b": [1, 2.5, None]}
    assert text.endswith("\n")


def test_unserialisable_json_leaves_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"ok": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"bad": object()})
    assert json.loads(target.read_text()) == {"ok": 1}
    assert leftovers(tmp_path) == []


def test_write_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        write_bytes_atomic(tmp_path / "missing" / "a.bin", b"x")
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        write_bytes_atomic(tmp_path / "d", b"x")
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------
# directories
# --------------------------------------------------------------------------------------
def test_atomic_directory_creates(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".out.tmp-")
        assert tmp.is_dir() and not any(tmp.iterdir())
        assert not target.exists()
        (tmp / "f").write_text("x")
    assert (target / "f").read_text() == "x"
    assert leftovers(tmp_path) == []


def test_atomic_directory_refuses_existing_before_any_work(tmp_path):
    target = tmp_path / "out"
    make_complete(target, "a")
    ran = False
    with pytest.raises(FileExistsError, match="overwrite=True"):
        with atomic_directory(target):
            ran = True
    assert not ran
    assert read_version(target) == "a"
    assert leftovers(tmp_path) == []


def test_atomic_directory_overwrite_replaces(tmp_path):
    target = tmp_path / "out"
    make_complete(target, "a")
    (target / "stale-file").write_text("from a")
    make_complete(target, "b")
    assert read_version(target) == "b"
    assert not (target / "stale-file").exists()
    assert leftovers(tmp_path) == []


def test_atomic_directory_never_replaces_a_users_file(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file")
    with pytest.raises(UnsafeOverwriteError, match="a file that daskgmm did not write"):
        make_complete(target, "b")
    assert target.read_text() == "a file"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_crash_inside_the_block_leaves_previous_untouched(tmp_path, exc_type):
    target = tmp_path / "out"
    make_complete(target, "a")
    before = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    with pytest.raises(exc_type):
        with atomic_directory(target, overwrite=True) as tmp:
            (tmp / "payload.txt").write_text("half")
            raise exc_type("simulated crash")
    assert read_version(target) == "a"
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == before
    assert leftovers(tmp_path) == []


def test_crash_inside_the_block_without_previous_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_directory(tmp_path / "out") as tmp:
            (tmp / "payload.txt").write_text("half")
            raise RuntimeError("simulated crash")
    assert list(tmp_path.iterdir()) == []


def test_target_created_meanwhile_is_not_replaced(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(FileExistsError):
        with atomic_directory(target) as tmp:
            (tmp / "mine").write_text("x")
            target.mkdir()  # another process won the race (an empty directory)
    assert target.is_dir() and not any(target.iterdir())
    assert leftovers(tmp_path) == []


def test_missing_parent(tmp_path):
    with pytest.raises(FileNotFoundError, match="parent directory"):
        with atomic_directory(tmp_path / "no" / "out"):
            pass


def test_remove_stale_temporaries(tmp_path):
    old = time.time() - 7200
    (tmp_path / "model").mkdir()
    stale_tmp_dir = tmp_path / ".model.tmp-0123456789abcdef"
    stale_tmp_dir.mkdir()
    (stale_tmp_dir / "f").write_text("x")
    stale_tmp_file = tmp_path / ".a.json.tmp-00000000000000aa"
    stale_tmp_file.write_text("x")
    fresh_tmp = tmp_path / ".model.tmp-fedcba9876543210"
    fresh_tmp.mkdir()
    replaced = tmp_path / ".model.old-00000000000000bb"  # target exists: removable
    replaced.mkdir()
    orphan = tmp_path / ".gone.old-00000000000000cc"  # target missing: only copy, kept
    orphan.mkdir()
    unrelated = tmp_path / ".hidden"
    unrelated.write_text("x")
    for p in (stale_tmp_dir / "f", stale_tmp_dir, stale_tmp_file, replaced, orphan):
        os.utime(p, (old, old))

    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted(
        [stale_tmp_dir.name, stale_tmp_file.name, replaced.name])
    assert fresh_tmp.exists() and orphan.exists() and unrelated.exists()
    assert (tmp_path / "model").exists()
    assert [p.name for p in remove_stale_temporaries(tmp_path, max_age=0)] == [
        fresh_tmp.name]
    assert orphan.exists()


def test_stale_directory_with_a_recent_file_is_kept(tmp_path):
    old = time.time() - 7200
    busy = tmp_path / ".model.tmp-0123456789abcdef"
    busy.mkdir()
    (busy / "being-written").write_text("x")  # recent
    os.utime(busy, (old, old))
    assert remove_stale_temporaries(tmp_path) == []
    assert busy.exists()


# --------------------------------------------------------------------------------------
# a writer killed with SIGKILL
# --------------------------------------------------------------------------------------
KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    from daskgmm.io.atomic import atomic_directory

    with atomic_directory(sys.argv[1], overwrite=True) as tmp:
        with open(tmp / "payload.txt", "w") as f:
            for _ in range(64):            # a big payload, 16 MiB, half-written
                f.write("z" * (1 << 18))
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
            f.write("end")
        (tmp / "DONE").write_text("z")
    """
)


def run_and_kill(target: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_killed_writer_leaves_previous_complete_directory(tmp_path):
    target = tmp_path / "out"
    make_complete(target, "a")
    run_and_kill(target)
    assert read_version(target) == "a"
    # The killed writer could not clean up; its temporary directory is a leftover.
    left = leftovers(tmp_path)
    assert len(left) == 1 and left[0].startswith(".out.tmp-")
    assert [p.name for p in remove_stale_temporaries(tmp_path, max_age=0)] == left
    assert leftovers(tmp_path) == []
    assert read_version(target) == "a"


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_killed_writer_without_previous_leaves_no_target(tmp_path):
    target = tmp_path / "out"
    run_and_kill(target)
    assert not target.exists()


# --------------------------------------------------------------------------------------
# markers: what overwrite may replace (issue 8, class 1)
# --------------------------------------------------------------------------------------
def test_every_directory_written_carries_a_marker(tmp_path):
    with atomic_directory(tmp_path / "m", kind="model") as tmp:
        (tmp / "a.bin").write_bytes(b"1")
    marker = json.loads((tmp_path / "m" / MARKER_FILE).read_text())
    assert marker["written_by"] == "daskgmm" and marker["kind"] == "model"
    assert read_marker(tmp_path / "m")["kind"] == "model"


def test_zarr_root_is_marked_in_its_attributes(tmp_path):
    import zarr

    with atomic_directory(tmp_path / "labels.zarr", kind="labels") as tmp:
        zarr.create_array(tmp, shape=(4,), dtype="i8")[...] = 1
    assert not (tmp_path / "labels.zarr" / MARKER_FILE).exists()
    arr = zarr.open_array(tmp_path / "labels.zarr", mode="r")
    assert arr.attrs["daskgmm"]["kind"] == "labels"
    assert read_marker(tmp_path / "labels.zarr")["kind"] == "labels"
    with atomic_directory(tmp_path / "labels.zarr", overwrite=True, kind="labels") as tmp:
        zarr.create_array(tmp, shape=(4,), dtype="i8")[...] = 2
    assert zarr.open_array(tmp_path / "labels.zarr", mode="r")[0] == 2


@pytest.mark.parametrize("content", ["user-data", "nested"])
def test_overwrite_refuses_a_directory_daskgmm_did_not_write(tmp_path, content):
    target = tmp_path / "precious"
    target.mkdir()
    if content == "nested":
        (target / "sub").mkdir()
        (target / "sub" / "x.npy").write_bytes(b"data")
    else:
        (target / "embeddings.zarr").write_text("the only copy")
    before = sorted(str(p) for p in target.rglob("*"))
    ran = False
    with pytest.raises(UnsafeOverwriteError, match="daskgmm did not write") as info:
        with atomic_directory(target, overwrite=True):
            ran = True
    assert not ran  # refused before any work
    assert isinstance(info.value, FileExistsError)
    assert sorted(str(p) for p in target.rglob("*")) == before
    assert leftovers(tmp_path) == []


def test_overwrite_replaces_an_empty_directory_and_a_legacy_output(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    make_complete(empty, "a")
    assert read_version(empty) == "a"
    legacy = tmp_path / "old-model"
    legacy.mkdir()
    (legacy / "model.json").write_text(json.dumps({"format": "daskgmm-model"}))
    make_complete(legacy, "b")
    assert read_version(legacy) == "b"


def test_a_symlink_is_never_replaced(tmp_path):
    real = tmp_path / "real"
    make_complete(real, "a")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(UnsafeOverwriteError, match="symbolic link"):
        make_complete(link, "b")
    assert read_version(real) == "a"


def test_atomic_file(tmp_path):
    target = tmp_path / "x.h5"
    with atomic_file(target) as tmp:
        assert tmp.name.startswith(".x.h5.tmp-") and not tmp.exists()
        tmp.write_bytes(b"one")
    assert target.read_bytes() == b"one"
    with pytest.raises(FileExistsError):
        with atomic_file(target) as tmp:
            pass
    with pytest.raises(RuntimeError), atomic_file(target, overwrite=True) as tmp:
        tmp.write_bytes(b"two")
        raise RuntimeError
    assert target.read_bytes() == b"one"
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------
# leftovers of killed writers (issue 8, class 9a)
# --------------------------------------------------------------------------------------
def dead_owner_name(target: Path, kind: str) -> Path:
    """A leftover name owned by a process that has exited (a real, finished process)."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import sys
        from pathlib import Path
        from daskgmm.io.atomic import _sibling
        print(_sibling(Path(sys.argv[1]), sys.argv[2]).name)
        """), str(target), kind], capture_output=True, text=True, check=True)
    return target.parent / proc.stdout.strip()


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_next_write_cleans_a_killed_writers_temporary(tmp_path):
    target = tmp_path / "out"
    make_complete(target, "a")
    run_and_kill(target)
    assert len(leftovers(tmp_path)) == 1
    make_complete(target, "b")  # the next write to the same place cleans it first
    assert leftovers(tmp_path) == []
    assert read_version(target) == "b"


def test_old_version_of_a_dead_writer_is_put_back(tmp_path):
    """A writer killed between its two renames left only ``.out.old-...``."""
    target = tmp_path / "out"
    make_complete(target, "a")
    aside = dead_owner_name(target, "old")
    target.rename(aside)
    assert clean_stale_temporaries(target) == [aside]
    assert read_version(target) == "a" and leftovers(tmp_path) == []


def test_live_foreign_and_user_entries_are_left_alone(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as tmp:  # our own live temporary, mid-write
        (tmp / "x").write_text("x")
        other_host = tmp.parent / (tmp.name.rsplit("-", 2)[0] + "-00000000-0badf00d")
        other_host.mkdir()  # same pid and start, but the host tag of another machine
        user = tmp_path / ".out.tmp-mine"
        user.write_text("a user's file with a similar name")
        assert clean_stale_temporaries(target) == []
        assert remove_stale_temporaries(tmp_path, max_age=0) == []
        assert tmp.exists() and other_host.exists() and user.exists()
    assert read_marker(target)["kind"] == "directory"


def test_dead_writers_file_temporary_is_cleaned_by_the_next_file_write(tmp_path):
    target = tmp_path / "report.json"
    stale = dead_owner_name(target, "tmp")
    stale.write_text("half")
    write_text_atomic(target, "full")
    assert not stale.exists() and target.read_text() == "full"
