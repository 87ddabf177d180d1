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

from daskgmm.io.atomic import (
    atomic_directory,
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


def test_atomic_directory_overwrite_replaces_a_file(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file")
    make_complete(target, "b")
    assert read_version(target) == "b"
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
