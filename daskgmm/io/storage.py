"""Outputs that appear complete or not at all, on a local disk or in an object store.

:func:`atomic_output_directory` builds an output in a temporary sibling
``.<name>.tmp-<stamp>`` and commits it by a rename on a local disk, or on an object store
by a copy of the data, then nested markers, then its **marker last**. The marker
(``.daskgmm.json``, or a ``daskgmm`` attribute at a Zarr root) lists what daskgmm wrote:
``overwrite`` replaces only an output holding nothing else (:func:`check_replaceable`).
A writer claims its target (an ``flock`` locally, an object renewed every
:data:`HEARTBEAT` seconds on a store): a second writer fails at once, and a dead
writer's temporaries are removed by the next."""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import glob
import hashlib
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from daskgmm.errors import OutputExistsError, UnsafeOverwriteError
from daskgmm.io.locations import Location, parse_location

__all__ = ["HEARTBEAT", "MARKER_ATTRIBUTE", "MARKER_FILE", "OutputDirectory",
           "atomic_file", "atomic_output_directory", "check_replaceable",
           "create_zarr_array", "is_daskgmm_output", "read_output_marker",
           "write_file_atomic", "zarr_store"]

MARKER_FILE = ".daskgmm.json"
"""The marker of an output daskgmm wrote (a Zarr root keeps it in its attributes)."""
MARKER_ATTRIBUTE = "daskgmm"
"""The key of the marker in the root attributes of a Zarr store daskgmm wrote."""
HEARTBEAT = 30.0
"""Seconds between two renewals of a claim on an object store; a claim not renewed for
four times as long belongs to a writer that is gone."""

_NESTED_MARKERS = frozenset({"zarr.json", ".zattrs", ".zarray", ".zgroup", "model.json"})
_MAX_MARKER_BYTES = 16 << 20


def _read_json(loc: Location) -> Any:
    try:
        data = loc.head(_MAX_MARKER_BYTES + 1)
        return json.loads(data) if 0 < len(data) <= _MAX_MARKER_BYTES else None
    except (ValueError, OSError):
        return None


def read_output_marker(url: str | os.PathLike[str] | Location,
                       storage_options: dict | None = None) -> dict[str, Any] | None:
    """The marker of the complete output daskgmm wrote at ``url``, or None."""
    loc = parse_location(url, storage_options)
    found = _read_json(loc.join(MARKER_FILE))
    if not isinstance(found, dict):
        meta = _read_json(loc.join("zarr.json"))
        attrs = meta.get("attributes") if isinstance(meta, dict) else None
        found = attrs.get(MARKER_ATTRIBUTE) if isinstance(attrs, dict) else None
    ok = isinstance(found, dict) and found.get("written_by") == "daskgmm"
    return found if ok else None


def is_daskgmm_output(url: str | os.PathLike[str] | Location,
                      storage_options: dict | None = None, kind: str | None = None) -> bool:
    """Whether ``url`` holds a complete output daskgmm wrote (of ``kind``, if given)."""
    marker = read_output_marker(url, storage_options)
    return marker is not None and (kind is None or marker.get("kind") == kind)


def _entries(names: Any) -> dict[str, list]:
    """``{top-level name: [files below it, digest of their names]}`` of a listing."""
    groups: dict[str, list[str]] = {}
    for name in sorted(names):
        if name != MARKER_FILE:
            groups.setdefault(name.split("/", 1)[0], []).append(name)
    return {top: [len(found), hashlib.blake2b("\n".join(found).encode(),
                                               digest_size=8).hexdigest()]
            for top, found in groups.items()}


def check_replaceable(url: str | os.PathLike[str] | Location,
                      storage_options: dict | None = None) -> None:
    """Refuse (:class:`~daskgmm.errors.UnsafeOverwriteError`, naming what was found)
    to replace what is at ``url`` unless it is empty or a complete output holding nothing
    but what its marker lists."""
    loc = parse_location(url, storage_options)
    if not loc.exists():
        return
    islink = getattr(loc.fs, "islink", None)
    if (islink is not None and islink(loc.path)) or loc.isfile():
        raise UnsafeOverwriteError(
            f"{loc.display} is a file or a link that daskgmm did not write, so it is not "
            "replaced even with overwrite; move it away or choose another location")
    listing = loc.find()
    marker = read_output_marker(loc)
    if not listing:
        return
    if marker is None:
        raise UnsafeOverwriteError(
            f"{loc.display} holds files daskgmm did not write (it has no {MARKER_FILE} "
            "marker), so they are not replaced even with overwrite: they may be your "
            "data; choose another location, or remove them yourself")
    recorded = marker.get("entries") if isinstance(marker.get("entries"), dict) else {}
    found = _entries(listing)
    foreign = sorted(k for k, v in found.items() if recorded.get(k) != v)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more"
                                         if len(foreign) > 5 else "")
        raise UnsafeOverwriteError(
            f"{loc.display} is an output daskgmm wrote, but it now also holds what daskgmm "
            f"did not write ({shown}), so it is not replaced even with overwrite; move "
            "those away or choose another location")


class _LockClaim:
    """A local claim: an ``flock`` on a file, released by the kernel when we die."""

    def __init__(self, loc: Location) -> None:
        import fcntl

        self.loc = loc
        # Locked before it has its name, so that no other writer ever sees the claim
        # unlocked (it would take the writer for dead and remove its temporary).
        fresh = f"{loc.path}{_FRESH_CLAIM}"
        self._handle = open(fresh, "xb")  # held for the claim's life
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(fresh, loc.path)
        except BaseException:
            self._handle.close()
            with contextlib.suppress(OSError):
                os.unlink(fresh)
            raise

    @staticmethod
    def alive(loc: Location) -> bool:
        import fcntl

        try:
            with open(loc.path, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            return isinstance(exc, BlockingIOError)  # locked: its writer is alive
        return False

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.loc.path)
        self._handle.close()


class _HeartbeatClaim:
    """An object-store claim: an object rewritten every :data:`HEARTBEAT` seconds."""

    def __init__(self, loc: Location) -> None:
        self.loc, self._stop = loc, threading.Event()
        loc.fs.pipe_file(loc.path, b"daskgmm claim")
        self._thread = threading.Thread(target=self._renew, daemon=True,
                                        name="daskgmm-claim")
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            with contextlib.suppress(Exception):
                self.loc.fs.pipe_file(self.loc.path, b"daskgmm claim")

    @staticmethod
    def alive(loc: Location) -> bool:
        try:
            info = loc.info()
        except FileNotFoundError:
            return False
        stamp = info.get("LastModified") or info.get("mtime") or info.get("created")
        if isinstance(stamp, _dt.datetime):
            stamp = stamp.timestamp()
        return not isinstance(stamp, int | float) or time.time() - stamp < 4 * HEARTBEAT

    def release(self) -> None:
        self._stop.set()
        with contextlib.suppress(Exception):
            self.loc.fs.rm_file(self.loc.path)


_FRESH_CLAIM = ".new"


def _claim_kind(loc: Location) -> type:
    return {"file": _LockClaim}.get(loc.protocol, _HeartbeatClaim)


def _siblings(target: Location) -> list[str]:
    prefix = f".{target.name}.tmp-"
    try:
        names = target.parent.fs.ls(target.parent.path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = (str(n).rstrip("/").rsplit("/", 1)[-1] for n in names)
    return sorted(n for n in found if n.startswith(prefix))


def _claim(target: Location) -> tuple[Location, Any]:
    """Claim ``target``: our temporary location and the held claim. Leftovers of
    writers that are gone are deleted; a live writer makes us give way."""
    name = f".{target.name}.tmp-{time.time_ns():x}-{secrets.token_hex(4)}"
    if len(name.encode()) + len(".claim") > 255:
        raise UnsafeOverwriteError(
            f"{target.display}: the name {target.name[:40]!r}... is too long to write "
            "beside it (daskgmm adds up to 40 bytes for its temporary; a file name holds "
            "at most 255 bytes); choose a shorter name")
    tmp = target.parent.join(name)
    kind = _claim_kind(target)
    target.parent.makedirs()
    claim = kind(target.parent.join(name + ".claim"))
    try:
        _give_way_to_older_writers(target, name, kind, clean=True)
    except BaseException:
        claim.release()
        raise
    return tmp, claim


def _give_way_to_older_writers(target: Location, name: str, kind: type, *,
                               clean: bool) -> None:
    """OutputExistsError if a writer older than ours (``name``) is writing ``target``;
    with ``clean``, leftovers of writers that are gone are deleted. Run when claiming
    and again before committing: two writers that claimed at the same instant may both
    have missed the other, and the younger then gives way before it replaces anything."""
    for other in _siblings(target):
        if other.endswith(_FRESH_CLAIM):
            continue  # a claim being made (renamed to its name once locked)
        base = other.removesuffix(".claim").removesuffix(".old")
        if base == name:
            continue
        if kind.alive(target.parent.join(base + ".claim")):
            if base < name:
                stale = (f" (or one that could not clean up in the last "
                         f"{4 * HEARTBEAT:g} s)" if kind is _HeartbeatClaim else "")
                raise OutputExistsError(
                    f"another daskgmm process is writing {target.display} now{stale}; "
                    "wait for it to finish, or choose another location")
            continue  # a younger writer: it gives way to us
        if not clean:
            continue
        leftover = target.parent.join(other)
        if other.endswith(".old") and not target.exists():  # killed mid-replacement
            leftover.fs.mv(leftover.path, target.path, recursive=True)
        else:
            _remove(leftover)


def _remove(loc: Location) -> None:
    with contextlib.suppress(FileNotFoundError):
        if loc.isdir():
            loc.fs.rm(loc.path, recursive=True)
        else:
            loc.fs.rm_file(loc.path)


def _mark(tmp: Location, kind: str) -> str:
    """Write the marker (written by daskgmm, the ``kind``, version, time, entries) into
    the finished temporary; returns the key holding it."""
    from daskgmm import __version__

    marker = {"written_by": "daskgmm", "kind": str(kind), "daskgmm_version": __version__,
              "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
              "entries": _entries(tmp.find())}
    meta = _read_json(tmp.join("zarr.json"))
    if isinstance(meta, dict):
        meta.setdefault("attributes", {})[MARKER_ATTRIBUTE] = marker
        tmp.fs.pipe_file(tmp.join("zarr.json").path, json.dumps(meta, indent=2).encode())
        return "zarr.json"
    tmp.fs.pipe_file(tmp.join(MARKER_FILE).path, json.dumps(marker, indent=2).encode())
    return MARKER_FILE


def _fsync_tree(root: str) -> None:
    for dirpath, _, filenames in os.walk(root):
        for path in [*(os.path.join(dirpath, f) for f in filenames), dirpath]:
            with contextlib.suppress(OSError):
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)


def _rename_into_place(tmp: Location, target: Location, marker_key: str) -> None:
    """Local commit: fsync, then rename (a replaced output is renamed aside first)."""
    _fsync_tree(tmp.path)
    aside = f"{tmp.path}.old"
    try:
        if os.path.lexists(target.path):
            os.rename(target.path, aside)
        os.rename(tmp.path, target.path)
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            if os.path.lexists(aside) and not os.path.lexists(target.path):
                os.rename(aside, target.path)
            raise
        # Another writer's output took the place between our two renames: it stays.
        shutil.rmtree(aside, ignore_errors=True)
        raise OutputExistsError(
            f"another daskgmm process wrote {target.display} while this output was being "
            "committed; its output stays and this one is discarded") from None
    shutil.rmtree(aside, ignore_errors=True)


def _copy_marker_last(tmp: Location, target: Location, marker_key: str) -> None:
    """Object-store commit: delete what is replaced (marker first), then copy the data,
    the nested outputs' metadata and, last, the marker."""
    fs = target.fs
    old = sorted(target.find())
    first = [k for k in (MARKER_FILE, "zarr.json") if k in old]
    for key in first:
        fs.rm_file(target.join(key).path)
    if len(old) > len(first):
        fs.rm([target.join(k).path for k in old if k not in first])
    keys = [k for k in tmp.find() if k != marker_key]
    nested = [k for k in keys if k.rsplit("/", 1)[-1] in _NESTED_MARKERS]
    try:
        for batch in ([k for k in keys if k not in nested], nested, [marker_key]):
            if batch:
                fs.copy([tmp.join(k).path for k in batch],
                        [target.join(k).path for k in batch])
    except BaseException:
        with contextlib.suppress(Exception):  # what was copied is ours: take it back
            fs.rm([target.join(k).path for k in [*keys, marker_key]
                   if fs.exists(target.join(k).path)])
        raise
    fs.rm(tmp.path, recursive=True)


_COMMITS = {"file": _rename_into_place}


class OutputDirectory:
    """A directory being written (the temporary of :func:`atomic_output_directory`),
    at ``location``."""

    def __init__(self, location: Location) -> None:
        self.location = location
        self.storage_options = dict(location.storage_options)

    def __repr__(self) -> str:
        return f"OutputDirectory({self.location.display!r})"

    def join(self, name: str) -> Location:
        """The :class:`Location` of ``name`` inside the directory."""
        return self.location.join(name)

    def open(self, name: str, mode: str = "wb") -> Any:
        """Open ``name`` for writing (parent directories are created)."""
        return self.location.join(name).open(mode)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a whole file."""
        with self.open(name, "wb") as f:
            f.write(data)


@contextlib.contextmanager
def atomic_output_directory(url: str | os.PathLike[str] | Location, *, kind: str,
                            overwrite: bool = False,
                            storage_options: dict | None = None) -> Iterator[OutputDirectory]:
    """Build an output (of ``kind``: ``"run"``, ``"model"``, ``"labels"``...) that
    appears complete, with its marker, or not at all; yields the claimed temporary.
    OutputExistsError if something is at ``url`` without ``overwrite`` (on entry or by
    the end) or another process writes it; UnsafeOverwriteError if it is not daskgmm's."""
    target = parse_location(url, storage_options)
    _refuse_existing(target, overwrite)
    tmp, claim = _claim(target)
    try:
        tmp.makedirs()
        yield OutputDirectory(tmp)
        marker_key = _mark(tmp, kind)
        _refuse_existing(target, overwrite, appeared=True)
        _give_way_to_older_writers(target, tmp.name, _claim_kind(target), clean=False)
        _COMMITS.get(target.protocol, _copy_marker_last)(tmp, target, marker_key)
    except BaseException:
        with contextlib.suppress(Exception):
            _remove(tmp)
        raise
    finally:
        claim.release()


def _refuse_existing(target: Location, overwrite: bool, *, appeared: bool = False) -> None:
    if not target.exists():
        return
    if not overwrite:
        when = (" appeared while the output was being written (something else created "
                "it); nothing was replaced and what was written is discarded"
                if appeared else " already exists")
        raise OutputExistsError(f"{target.display}{when}; choose another location, or "
                                "allow replacing it (overwrite)")
    check_replaceable(target)


def write_file_atomic(url: str | os.PathLike[str] | Location, data: bytes, *,
                      storage_options: dict | None = None) -> None:
    """Write one file so that readers see all of it or nothing: a temporary sibling
    renamed into place locally (``fsync`` first), a single PUT on object stores."""
    loc = parse_location(url, storage_options)
    loc.parent.makedirs()
    if loc.protocol != "file":
        loc.fs.pipe_file(loc.path, bytes(data))
        return
    with atomic_file(loc.path, overwrite=True) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, os.stat(loc.path).st_mode & 0o7777)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """A local file written through a temporary sibling (locked while it is written),
    renamed into place on success: for writers that need a path, such as h5py.
    ``FileExistsError`` when ``path`` exists and ``overwrite`` is False."""
    target = Path(os.path.abspath(os.fspath(path)))
    if target.is_dir() and not target.is_symlink():
        raise IsADirectoryError(f"cannot write the file {target}: it is a directory")
    if len(target.name.encode()) > 230:
        raise UnsafeOverwriteError(f"{target}: the name is too long to write beside it "
                                   "(at most 230 bytes); choose a shorter name")
    for other in target.parent.glob(f".{glob.escape(target.name)}.tmp-*"):
        if not _LockClaim.alive(Location(str(other))):  # a killed writer's
            with contextlib.suppress(OSError):
                other.unlink()
    tmp = target.parent / f".{target.name}.tmp-{time.time_ns():x}-{secrets.token_hex(4)}"
    claim = _LockClaim(Location(str(tmp)))  # held while the file is written
    try:
        if os.path.lexists(target) and not overwrite:
            raise FileExistsError(f"{target} already exists; choose another path, or allow "
                                  "replacing it (overwrite)")
        yield tmp
        if os.path.lexists(target) and not overwrite:
            raise FileExistsError(f"{target} appeared while it was being written; not "
                                  "replacing it")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        claim._handle.close()


def zarr_store(url: str | os.PathLike[str] | Location, storage_options: dict | None = None,
               *, read_only: bool = False) -> Any:
    """The zarr store of a location (``LocalStore`` on a local disk, else
    ``FsspecStore``)."""
    loc = parse_location(url, storage_options)
    from zarr.storage import FsspecStore, LocalStore

    if loc.protocol == "file":
        return LocalStore(loc.path, read_only=read_only)
    try:
        return FsspecStore.from_url(loc.url, storage_options=loc.storage_options or None,
                                    read_only=read_only)
    except ImportError as exc:
        raise loc.missing_dependency(exc) from None


def create_zarr_array(url: str | os.PathLike[str] | Location, shape: tuple[int, ...],
                      chunks: tuple[int, ...], dtype: Any, *, fill_value: Any = None,
                      attributes: dict | None = None,
                      dimension_names: tuple[str, ...] | None = None,
                      storage_options: dict | None = None) -> Any:
    """An empty Zarr v3 array for Dask workers to fill with whole chunks (codecs of
    :func:`~daskgmm.io.codecs.float_compressors`, ``write_empty_chunks=True``)."""
    import zarr

    from daskgmm.io.codecs import float_compressors

    return zarr.create_array(
        zarr_store(url, storage_options), shape=tuple(shape), chunks=tuple(chunks),
        dtype=np.dtype(dtype), fill_value=fill_value, attributes=attributes or {},
        dimension_names=dimension_names, compressors=float_compressors(np.dtype(dtype)),
        zarr_format=3, config={"write_empty_chunks": True})
