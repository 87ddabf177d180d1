"""Atomic local writes of daskgmm.io.storage on real files: files, directories, markers
that say what may be replaced, claims that keep a second writer out, and writers killed
with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from daskgmm.errors import OutputExistsError, UnsafeOverwriteError
from daskgmm.io.storage import (
    MARKER_FILE,
    atomic_file,
    atomic_output_directory,
    check_replaceable,
    read_output_marker,
    write_file_atomic,
)

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX renames and flock")


def leftovers(parent: Path) -> list[str]:
    """Names of temporary entries left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


def make_complete(path: Path, version: str, overwrite: bool = True) -> None:
    """An output with a payload and a completion file."""
    with atomic_output_directory(path, kind="run", overwrite=overwrite) as out:
        out.write_bytes("payload.txt", version.encode() * 100)
        out.write_bytes("DONE", version.encode())


def read_version(path: Path) -> str:
    version = (path / "DONE").read_text()
    assert (path / "payload.txt").read_text() == version * 100
    return version


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------
def test_write_file_creates_replaces_and_keeps_the_mode(tmp_path):
    target = tmp_path / "sub" / "out.bin"  # the parent is created
    write_file_atomic(target, b"first")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    target.chmod(0o600)
    write_file_atomic(target, b"second")
    assert target.read_bytes() == b"second"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert leftovers(target.parent) == []


def test_atomic_file_refuses_existing_and_cleans_after_failure(tmp_path):
    target = tmp_path / "x.h5"
    with atomic_file(target) as tmp:
        tmp.write_bytes(b"1")
    assert target.read_bytes() == b"1"
    with pytest.raises(FileExistsError), atomic_file(target):
        pass
    with pytest.raises(RuntimeError), atomic_file(target, overwrite=True) as tmp:
        tmp.write_bytes(b"2")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"1" and leftovers(tmp_path) == []
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError), atomic_file(tmp_path / "d", overwrite=True):
        pass


# --------------------------------------------------------------------------------------
# directories
# --------------------------------------------------------------------------------------
def test_directory_appears_only_complete(tmp_path):
    target = tmp_path / "out"
    with atomic_output_directory(target, kind="run") as out:
        out.write_bytes("a.bin", b"1")
        assert not target.exists()
    assert (target / "a.bin").read_bytes() == b"1"
    assert read_output_marker(target)["kind"] == "run"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("exc_type", [RuntimeError, KeyboardInterrupt])
def test_a_failure_inside_leaves_the_previous_output(tmp_path, exc_type):
    target = tmp_path / "out"
    make_complete(target, "a")
    with pytest.raises(exc_type), atomic_output_directory(target, kind="run",
                                                          overwrite=True) as out:
        out.write_bytes("DONE", b"b")
        raise exc_type()
    assert read_version(target) == "a" and leftovers(tmp_path) == []


def test_existing_outputs_are_refused_or_replaced(tmp_path):
    target = tmp_path / "out"
    make_complete(target, "a")
    with pytest.raises(OutputExistsError), atomic_output_directory(target, kind="run"):
        pytest.fail("an existing output must be refused before the block")
    make_complete(target, "b")
    assert read_version(target) == "b"
    empty = tmp_path / "empty"
    empty.mkdir()
    make_complete(empty, "c")  # an empty directory may be replaced
    assert read_version(empty) == "c"


def test_an_output_created_meanwhile_is_not_replaced(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(OutputExistsError, match="appeared while"), \
            atomic_output_directory(target, kind="run") as out:
        out.write_bytes("a", b"1")
        target.mkdir()
        (target / "theirs.txt").write_text("keep")
    assert (target / "theirs.txt").read_text() == "keep" and leftovers(tmp_path) == []


@pytest.mark.parametrize("content", ["file", "dir", "link", "unmarked"])
def test_what_daskgmm_did_not_write_is_never_replaced(tmp_path, content):
    target = tmp_path / "out"
    if content == "file":
        target.write_text("mine")
    elif content == "link":
        (tmp_path / "real").mkdir()
        target.symlink_to(tmp_path / "real")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("mine")
        if content == "unmarked":
            (target / "report.json").write_text(json.dumps({"format": "daskgmm-report"}))
    with pytest.raises(UnsafeOverwriteError):
        make_complete(target, "b")
    assert os.path.lexists(target) and leftovers(tmp_path) == []


def test_files_added_to_an_output_make_it_irreplaceable(tmp_path):
    """The marker lists what daskgmm wrote: an output to which anything was added (a
    thesis next to a copied run, an array added to a store) is not replaced."""
    target = tmp_path / "out"
    make_complete(target, "a")
    check_replaceable(target)
    (target / "thesis").mkdir()
    (target / "thesis" / "ch1.tex").write_text("mine")
    with pytest.raises(UnsafeOverwriteError, match="thesis"):
        make_complete(target, "b")
    (target / "thesis" / "ch1.tex").unlink()
    (target / "thesis").rmdir()
    (target / "DONE").rename(target / "DONE2")  # a renamed file is not daskgmm's either
    with pytest.raises(UnsafeOverwriteError, match="DONE"):
        check_replaceable(target)


def test_zarr_root_is_marked_in_its_attributes(tmp_path):
    import zarr

    with atomic_output_directory(tmp_path / "labels.zarr", kind="labels") as out:
        zarr.create_array(out.location.path, shape=(4,), dtype="i8")[...] = 1
    assert not (tmp_path / "labels.zarr" / MARKER_FILE).exists()
    arr = zarr.open_array(tmp_path / "labels.zarr", mode="r")
    assert arr.attrs["daskgmm"]["kind"] == "labels"
    assert read_output_marker(tmp_path / "labels.zarr")["kind"] == "labels"


def test_a_name_too_long_for_a_temporary_is_one_clear_error(tmp_path):
    target = tmp_path / ("n" * 240)
    with pytest.raises(UnsafeOverwriteError, match="too long"), \
            atomic_output_directory(target, kind="run"):
        pass
    with pytest.raises(UnsafeOverwriteError, match="too long"), atomic_file(target):
        pass


# --------------------------------------------------------------------------------------
# claims: one writer at a time; killed writers' temporaries are cleaned
# --------------------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys, time
    from daskgmm.io.storage import atomic_output_directory

    with atomic_output_directory(sys.argv[1], kind="run", overwrite=True) as out:
        with out.open("payload.txt") as f:
            f.write(b"z" * (1 << 22))
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        out.write_bytes("DONE", b"z")
""")


def start_writer(target: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    return proc


def test_a_second_writer_fails_at_once_and_a_killed_ones_temporary_is_cleaned(tmp_path):
    target = tmp_path / "out"
    make_complete(target, "a")
    proc = start_writer(target)
    try:
        with pytest.raises(OutputExistsError, match="another daskgmm process is writing"):
            make_complete(target, "b")
        assert len(leftovers(tmp_path)) == 2  # its temporary and its claim, untouched
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert read_version(target) == "a"
    assert len(leftovers(tmp_path)) == 2  # a killed writer cannot clean up
    make_complete(target, "c")  # the next writer deletes what the dead one left
    assert read_version(target) == "c" and leftovers(tmp_path) == []


def test_a_killed_writer_without_previous_leaves_no_target(tmp_path):
    target = tmp_path / "out"
    proc = start_writer(target)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert not target.exists()


def test_a_killed_file_writers_temporary_is_cleaned_by_the_next_write(tmp_path):
    target = tmp_path / "x.bin"
    script = textwrap.dedent("""
        import sys, time
        from daskgmm.io.storage import atomic_file
        with atomic_file(sys.argv[1], overwrite=True) as tmp:
            tmp.write_bytes(b"half")
            print("writing", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(target)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    assert len(leftovers(tmp_path)) == 1
    write_file_atomic(target, b"whole")
    assert target.read_bytes() == b"whole" and leftovers(tmp_path) == []


def test_concurrent_saves_of_one_model_path(tmp_path):
    """Eight threads save a model to one path at once, 20 rounds (a race that loses a
    file shows within a few): each save succeeds whole or is refused as another writer's
    (never another error); the path holds one loadable model, and no temporary is
    left."""
    import threading

    import numpy as np

    from daskgmm import GaussianMixture, load

    models = [GaussianMixture(2, random_state=i).fit(
        np.random.default_rng(i).normal(size=(200, 2))) for i in range(8)]

    def save(model, target, outcomes, start):
        start.wait()
        try:
            model.save(target, overwrite=True)
            outcomes.append("saved")
        except OutputExistsError as exc:
            assert "another daskgmm process" in str(exc)
            outcomes.append("refused")
        except Exception as exc:  # reported below, not lost in the thread
            outcomes.append(repr(exc))

    for round_ in range(20):
        parent = tmp_path / str(round_)
        parent.mkdir()
        target, outcomes = parent / "model", []
        start = threading.Barrier(len(models))
        threads = [threading.Thread(target=save, args=(m, target, outcomes, start))
                   for m in models]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(set(outcomes)) in (["saved"], ["refused", "saved"]), outcomes
        loaded = load(target)
        assert any(np.array_equal(loaded.means_, m.means_) for m in models)
        assert leftovers(parent) == []
