"""Write files and directories so that nothing is ever left half-written.

A process killed at any moment (``SIGKILL``, power loss, an out-of-memory kill) leaves
either the previous complete output or none, never a truncated file or a directory
holding only part of its files.

Files
    :func:`write_bytes_atomic`, :func:`write_text_atomic` and :func:`write_json_atomic`
    write to a temporary file in the same directory (``.<name>.tmp-<random>``), flush and
    ``fsync`` it, then ``os.replace`` it onto the target, which is atomic on POSIX, and
    finally ``fsync`` the directory (best effort) so the rename itself is durable.

Directories
    :func:`atomic_directory` yields a fresh temporary sibling directory
    (``.<name>.tmp-<random>``) to fill; when the ``with`` block ends without an exception
    every file in it is ``fsync``-ed and the directory is renamed into place. On an
    exception (including ``KeyboardInterrupt``) it is removed and the previous content is
    untouched.

    Replacing an existing directory (``overwrite=True``) takes **two** renames, because
    POSIX cannot atomically exchange two non-empty directories: the old one is renamed
    aside to ``.<name>.old-<random>``, the new one is renamed into place, then the old one
    is deleted. A crash between the two renames leaves no directory at ``path`` and the
    previous complete version at ``.<name>.old-<random>`` (rename it back to recover).
    A crash anywhere else leaves either the old or the new complete directory at
    ``path``. Readers never see a partially written directory: the only directory ever
    renamed to ``path`` is complete, and the model loader additionally requires a
    completion marker (``model.json``, written last) so that a directory created by other
    means and left incomplete is refused.

Markers and safe replacement
    Every directory :func:`atomic_directory` writes carries a marker saying daskgmm
    wrote it and what it is (``kind``: ``"model"``, ``"run"``, ``"labels"``,
    ``"responsibilities"``, ``"generated"``...): a ``.daskgmm.json`` file, or, when the
    directory is the root of a Zarr store, a ``"daskgmm"`` entry in the root's
    attributes (a file zarr does not know would make it warn). ``overwrite=True``
    replaces only an empty directory or one carrying a marker (or the metadata of a
    daskgmm output written before markers existed); anything else is refused with
    :class:`~daskgmm.errors.UnsafeOverwriteError`, so a mistyped output path can never
    delete a user's data.

Leftovers of killed writers
    Temporaries are named ``.<name>.tmp-<owner>`` and ``.<name>.old-<owner>``, where the
    owner part holds the writer's process id, the process's start time and a tag of
    its host. At the start of every write to ``<name>``, leftovers of writers that are
    no longer running on this host are cleaned (:func:`clean_stale_temporaries`): a
    ``.tmp-`` is deleted; an ``.old-`` (the previous complete version, left by a writer
    killed between its two renames) is renamed back to ``<name>`` if ``<name>`` is
    missing, else deleted. A live writer's temporaries, another host's, and anything
    not named by daskgmm are never touched. :func:`remove_stale_temporaries` does the
    same for a whole directory, and handles the owner-less names of earlier versions by
    age.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from daskgmm.errors import UnsafeOverwriteError

__all__ = [
    "MARKER_ATTRIBUTE",
    "MARKER_FILE",
    "atomic_directory",
    "atomic_file",
    "clean_stale_temporaries",
    "fsync_directory",
    "marker_content",
    "read_marker",
    "remove_stale_temporaries",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

MARKER_FILE = ".daskgmm.json"
"""Name of the marker file in a directory daskgmm wrote."""
MARKER_ATTRIBUTE = "daskgmm"
"""Key of the marker in the root attributes of a Zarr store daskgmm wrote."""

# ``.<name>.tmp-<owner>`` (work in progress), ``.<name>.old-<owner>`` (a replaced version);
# owner = <pid>-<process start, ms, hex>-<host tag>-<random>.
_OWNED = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<start>[0-9a-f]+)-"
                    r"(?P<host>[0-9a-f]{8})-(?P<rand>[0-9a-f]{8})$")
# Names of earlier versions, without an owner: cleaned by age only.
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<token>[0-9a-f]{16})$")
_LEGACY_GENERATE = re.compile(r"^(?P<name>[^.].*)\.(?P<kind>tmp|old)-(?P<token>[0-9a-f]{8,12})$")
_LEGACY_MAX_AGE = 3600.0
_OWNER: str | None = None


def _host_tag() -> str:
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=4).hexdigest()


def _process_start(pid: int) -> float | None:
    """Start time of a process (seconds since the epoch), None if it does not exist."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.NoSuchProcess:
        return None
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return -1.0  # exists, cannot tell more: treat as alive


def _owner() -> str:
    """``<pid>-<start>-<host>`` of this process (computed once per process)."""
    global _OWNER
    pid = os.getpid()
    if _OWNER is None or not _OWNER.startswith(f"{pid}-"):
        start = _process_start(pid) or time.time()
        _OWNER = f"{pid}-{int(start * 1000):x}-{_host_tag()}"
    return _OWNER


def _owner_state(match: re.Match[str]) -> str:
    """``"live"``, ``"dead"`` or ``"foreign"`` (another host) for an owned leftover."""
    if match["host"] != _host_tag():
        return "foreign"
    start = _process_start(int(match["pid"]))
    if start is None:
        return "dead"
    if start < 0:
        return "live"
    return "live" if abs(start * 1000 - int(match["start"], 16)) < 2000 else "dead"


def _absolute(path: str | os.PathLike[str]) -> Path:
    """Absolute, normalised path (no trailing separator, ``..`` resolved lexically)."""
    target = Path(os.path.abspath(os.fspath(path)))
    if not target.name:
        raise ValueError(f"Cannot write atomically to {target}: it has no file name.")
    return target


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{_owner()}-{secrets.token_hex(4)}"


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """``fsync`` a directory so that renames and creations inside it are durable.

    Best effort: platforms or file systems that cannot open or sync a directory (Windows,
    some network file systems) are silently skipped.

    Parameters
    ----------
    path : str or os.PathLike
        The directory.
    """
    _fsync_path(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))


def _fsync_path(path: str | os.PathLike[str], flags: int = os.O_RDONLY) -> None:
    """Open ``path`` with ``flags`` and ``fsync`` it; any ``OSError`` is ignored."""
    try:
        fd = os.open(os.fspath(path), flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """``fsync`` every regular file and directory under ``root`` (best effort)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for filename in filenames:
            file_path = os.path.join(dirpath, filename)
            if not os.path.islink(file_path):
                _fsync_path(file_path)
        fsync_directory(dirpath)


def _remove(path: Path) -> None:
    """Delete a file, a symbolic link or a directory tree, ignoring errors."""
    try:
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path, ignore_errors=True)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------
def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, replacing any existing file.

    The bytes go to a temporary file ``.<name>.tmp-<random>`` in the same directory,
    which is flushed, ``fsync``-ed and renamed onto ``path`` with :func:`os.replace`;
    the directory is then ``fsync``-ed (best effort). Readers see either the old file or
    the new one. A new file gets the usual permissions (``0o666`` less the umask); a
    replaced file keeps its permission bits.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file. Its directory must exist.
    data : bytes
        The complete content.

    Returns
    -------
    pathlib.Path
        The absolute path written.

    Raises
    ------
    FileNotFoundError
        If the destination directory does not exist.
    IsADirectoryError
        If ``path`` is an existing directory.
    """
    target = _absolute(path)
    if target.is_dir():
        raise IsADirectoryError(f"Cannot write the file {target}: it is a directory.")
    clean_stale_temporaries(target)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = _sibling(target, "tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:  # pragma: no cover - 64 random bits collided
            continue
        break
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(OSError):
            os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(target.parent)
    return target


def write_text_atomic(path: str | os.PathLike[str], text: str, *,
                      encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`write_bytes_atomic`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    text : str
        The complete content.
    encoding : str, default='utf-8'
        Text encoding.

    Returns
    -------
    pathlib.Path
        The absolute path written.
    """
    return write_bytes_atomic(path, text.encode(encoding))


def write_json_atomic(path: str | os.PathLike[str], obj: Any, **json_kwargs: Any) -> Path:
    """Serialise ``obj`` as JSON and write it to ``path`` atomically.

    The object is serialised completely before anything is written, so an object that
    cannot be serialised leaves the file untouched.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    obj : object
        Anything :func:`json.dumps` accepts with ``json_kwargs``.
    **json_kwargs
        Passed to :func:`json.dumps` (e.g. ``indent=2``, ``sort_keys=True``).

    Returns
    -------
    pathlib.Path
        The absolute path written.
    """
    text = json.dumps(obj, **json_kwargs)
    if not text.endswith("\n"):
        text += "\n"
    return write_text_atomic(path, text)


# --------------------------------------------------------------------------------------
# directories
# --------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Write a file through a temporary sibling path, renamed into place on success.

    For writers that need a path rather than bytes (h5py, a library's ``save``).

    Parameters
    ----------
    path : str or os.PathLike
        The file to create (or replace). Its directory must exist.
    overwrite : bool, default False
        Whether an existing file may be replaced (a directory never is).

    Yields
    ------
    pathlib.Path
        The temporary path to write (it does not exist yet).

    Raises
    ------
    FileExistsError
        ``path`` exists and ``overwrite`` is False (checked on entry and before the
        rename).
    IsADirectoryError
        ``path`` is a directory.
    """
    target = _absolute(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"Cannot create {target}: the parent directory {target.parent} does not exist.")
    if target.is_dir() and not target.is_symlink():
        raise IsADirectoryError(f"Cannot write the file {target}: it is a directory.")
    clean_stale_temporaries(target)
    if os.path.lexists(target) and not overwrite:
        _refuse_existing(target)
    tmp = _sibling(target, "tmp")
    try:
        yield tmp
        _fsync_path(tmp)
        if os.path.lexists(target) and not overwrite:
            _refuse_existing(target)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_directory(target.parent)


# --------------------------------------------------------------------------------------
# markers
# --------------------------------------------------------------------------------------
def marker_content(kind: str, **extra: Any) -> dict[str, Any]:
    """What a marker says: written by daskgmm, the ``kind`` of output, version, time.

    Parameters
    ----------
    kind : str
        ``"model"``, ``"run"``, ``"labels"``, ``"responsibilities"``, ``"generated"``,
        ``"checkpoint"`` or ``"directory"`` (anything else daskgmm writes).
    **extra
        JSON-serialisable fields to add.
    """
    try:
        from daskgmm import __version__ as version
    except ImportError:  # pragma: no cover
        version = None
    return {"written_by": "daskgmm", "kind": str(kind), "daskgmm_version": version,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), **extra}


def _is_marker(value: Any) -> bool:
    return isinstance(value, dict) and value.get("written_by") == "daskgmm"


def _load_json(path: Path, limit: int = 1 << 20) -> Any:
    try:
        if path.stat().st_size > limit:
            return None
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_marker(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The marker of a directory daskgmm wrote, or None.

    Recognises the ``.daskgmm.json`` file, the ``"daskgmm"`` attribute of a Zarr
    store's root, and the metadata of outputs written before markers existed (a
    model's ``model.json``, a run's ``report.json``, a generated data set's
    ``generator="daskgmm"`` attribute), reported with ``"legacy": True``.

    Parameters
    ----------
    path : str or os.PathLike
        A local directory.
    """
    root = Path(os.fspath(path))
    if not root.is_dir() or root.is_symlink():
        return None
    found = _load_json(root / MARKER_FILE)
    if _is_marker(found):
        return found
    zarr_meta = _load_json(root / "zarr.json")
    attrs = zarr_meta.get("attributes") if isinstance(zarr_meta, dict) else None
    if attrs is None:
        attrs = _load_json(root / ".zattrs")
    if isinstance(attrs, dict):
        if _is_marker(attrs.get(MARKER_ATTRIBUTE)):
            return attrs[MARKER_ATTRIBUTE]
        if attrs.get("generator") == "daskgmm":
            return {"written_by": "daskgmm", "kind": "generated", "legacy": True}
    for name, fmt, kind in (("model.json", "daskgmm-model", "model"),
                            ("report.json", "daskgmm-report", "run")):
        meta = _load_json(root / name, limit=64 << 20)
        if isinstance(meta, dict) and meta.get("format") == fmt:
            return {"written_by": "daskgmm", "kind": kind, "legacy": True}
    return None


def _write_marker(tmp: Path, kind: str) -> None:
    """Mark a finished temporary directory (zarr root attributes, or the marker file).

    A directory whose own metadata already says daskgmm wrote it (a model's
    ``model.json``, a run's ``report.json``, an earlier marker) is left as it is.
    """
    found = read_marker(tmp)
    if found is not None and (not found.get("legacy") or found.get("kind") in ("model", "run")):
        return
    marker = marker_content(kind)
    meta_path = tmp / "zarr.json"
    meta = _load_json(meta_path, limit=64 << 20) if meta_path.is_file() else None
    if isinstance(meta, dict):
        meta.setdefault("attributes", {})[MARKER_ATTRIBUTE] = marker
        write_json_atomic(meta_path, meta, indent=2)
        return
    if (tmp / ".zarray").is_file() or (tmp / ".zgroup").is_file():
        attrs_path = tmp / ".zattrs"
        attrs = _load_json(attrs_path) if attrs_path.is_file() else {}
        attrs = attrs if isinstance(attrs, dict) else {}
        attrs[MARKER_ATTRIBUTE] = marker
        write_json_atomic(attrs_path, attrs, indent=2)
        return
    write_json_atomic(tmp / MARKER_FILE, marker, indent=2)


def _check_replaceable(target: Path) -> None:
    """Refuse to replace anything but an empty directory or a marked daskgmm output."""
    if target.is_symlink():
        raise UnsafeOverwriteError(
            f"{target} is a symbolic link; daskgmm does not replace it (it might point at "
            "data daskgmm did not write). Remove the link or choose another path."
        )
    if not target.is_dir():
        raise UnsafeOverwriteError(
            f"{target} is a file that daskgmm did not write, so it is not replaced even "
            "with overwrite. Move it away or choose another path."
        )
    if read_marker(target) is not None:
        return
    try:
        empty = not any(os.scandir(target))
    except OSError:
        empty = False
    if not empty:
        raise UnsafeOverwriteError(
            f"{target} is a directory that daskgmm did not write (it has no "
            f"{MARKER_FILE} marker), so it is not replaced even with overwrite: it may "
            "hold your data. Choose another output path, or empty or remove it yourself."
        )


# --------------------------------------------------------------------------------------
# directories
# --------------------------------------------------------------------------------------
def _refuse_existing(target: Path) -> None:
    raise FileExistsError(
        f"{target} already exists; refusing to replace it. Pass overwrite=True to "
        "replace it, or choose another path."
    )


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = False, *,
                     kind: str = "directory") -> Iterator[Path]:
    """Build a directory in a temporary sibling and rename it into place on success.

    Parameters
    ----------
    path : str or os.PathLike
        The directory to create (or replace). Its parent must exist.
    overwrite : bool, default=False
        Whether an existing ``path`` may be replaced. Only an empty directory or one
        daskgmm wrote (it carries a marker) is ever replaced.
    kind : str, default "directory"
        What the directory holds, recorded in its marker (``"model"``, ``"run"``,
        ``"labels"``, ``"responsibilities"``, ``"generated"``...).

    Yields
    ------
    pathlib.Path
        An empty temporary directory ``<parent>/.<name>.tmp-<owner>`` to fill.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False (checked on entry, and again just
        before the final rename in case another process created it meanwhile).
    UnsafeOverwriteError
        If ``overwrite`` is True but ``path`` is a file, a symbolic link or a non-empty
        directory without a daskgmm marker (checked on entry and before the rename).
    FileNotFoundError
        If the parent directory of ``path`` does not exist.

    Notes
    -----
    Leftovers of killed writers to the same ``path`` are cleaned first (see the module
    docstring). On success the marker is written (last), every file in the temporary
    directory is ``fsync``-ed, the directory is renamed to ``path`` and the parent is
    ``fsync``-ed. Replacing an existing ``path`` is two renames (old aside to
    ``.<name>.old-<owner>``, new into place) followed by the deletion of the old one;
    if the second rename fails the old directory is put back. On any exception raised
    in the block the temporary directory is deleted and ``path`` is left exactly as it
    was.

    Examples
    --------
    >>> with atomic_directory("results/run-1", kind="run") as tmp:  # doctest: +SKIP
    ...     (tmp / "data.bin").write_bytes(payload)
    """
    target = _absolute(path)
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"Cannot create {target}: the parent directory {parent} does not exist."
        )
    clean_stale_temporaries(target)
    if os.path.lexists(target):
        if not overwrite:
            _refuse_existing(target)
        _check_replaceable(target)

    while True:
        tmp = _sibling(target, "tmp")
        try:
            os.mkdir(tmp, 0o777)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        break

    try:
        yield tmp
        _write_marker(tmp, kind)
        _fsync_tree(tmp)
        _commit(tmp, target, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _commit(tmp: Path, target: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` directory to ``target`` (see :func:`atomic_directory`)."""
    parent = target.parent
    if not os.path.lexists(target):
        # os.rename silently replaces an *empty* directory on POSIX; the check above is
        # the best portable guard against one created meanwhile.
        os.rename(tmp, target)
        fsync_directory(parent)
        return
    if not overwrite:
        _refuse_existing(target)
    _check_replaceable(target)
    old = _sibling(target, "old")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    fsync_directory(parent)
    _remove(old)


# --------------------------------------------------------------------------------------
# leftovers
# --------------------------------------------------------------------------------------
def _newest_mtime(path: Path) -> float:
    """Latest modification time of ``path`` or anything under it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for name in (*dirnames, *filenames):
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return newest


def _handle_leftover(entry: Path, parent: Path, max_age: float, now: float) -> bool:
    """Clean one leftover if it is stale; True if it was removed or restored."""
    owned = _OWNED.match(entry.name)
    if owned is not None:
        if _owner_state(owned) != "dead":
            return False
        name, kind = owned["name"], owned["kind"]
    else:
        legacy = _LEFTOVER.match(entry.name) or _LEGACY_GENERATE.match(entry.name)
        if legacy is None:
            return False
        name, kind = legacy["name"], legacy["kind"]
        try:
            if now - _newest_mtime(entry) < max_age:
                return False
        except FileNotFoundError:
            return False
    target = parent / name
    if kind == "old" and not os.path.lexists(target):
        if owned is None:
            return False  # the last complete copy of an earlier version: left for a person
        try:
            os.rename(entry, target)  # put the previous complete version back
        except OSError:
            return False
        return True
    _remove(entry)
    return not os.path.lexists(entry)


def clean_stale_temporaries(path: str | os.PathLike[str]) -> list[Path]:
    """Clean leftovers of killed writers to ``path`` before writing it again.

    ``.<name>.tmp-<owner>`` and ``.<name>.old-<owner>`` entries whose writer is no
    longer running on this host are handled: a ``.tmp-`` is deleted; an ``.old-`` is
    renamed back to ``path`` when ``path`` is missing (it is the last complete version)
    and deleted otherwise. Entries of live writers, of other hosts, of earlier
    versions younger than an hour, and anything else are left alone.

    Parameters
    ----------
    path : str or os.PathLike
        The file or directory about to be written.

    Returns
    -------
    list of pathlib.Path
        The entries removed or restored.
    """
    target = _absolute(path)
    parent = target.parent
    prefixes = (f".{target.name}.tmp-", f".{target.name}.old-", f"{target.name}.tmp-",
                f"{target.name}.old-")
    done: list[Path] = []
    now = time.time()
    try:
        entries = sorted(e for e in parent.iterdir() if e.name.startswith(prefixes))
    except OSError:
        return done
    for entry in entries:
        matched = _OWNED.match(entry.name) or _LEFTOVER.match(entry.name) \
            or _LEGACY_GENERATE.match(entry.name)
        if matched is None or matched["name"] != target.name:
            continue
        if _handle_leftover(entry, parent, _LEGACY_MAX_AGE, now):
            done.append(entry)
    return done


def remove_stale_temporaries(parent: str | os.PathLike[str], *,
                             max_age: float = 3600.0) -> list[Path]:
    """Clean leftovers of interrupted atomic writes in a whole directory.

    Entries named by this version (``.<name>.tmp-<owner>``, ``.<name>.old-<owner>``)
    are handled by their owner as in :func:`clean_stale_temporaries`, whatever their
    age. Owner-less names of earlier versions (``.<name>.tmp-<16 hex>`` ...) are
    removed when their newest modification time is older than ``max_age`` seconds;
    their ``.old-`` entries only if ``<name>`` exists (otherwise they are the last
    complete version and are kept).

    Parameters
    ----------
    parent : str or os.PathLike
        The directory holding the targets (not searched recursively).
    max_age : float, default=3600.0
        Minimum age of an owner-less leftover before it is removed. ``0`` removes them
        all, which is only safe when no writer of an earlier version is running.

    Returns
    -------
    list of pathlib.Path
        The entries removed (or, for ``.old-`` entries of dead owners whose target is
        missing, renamed back).
    """
    parent_path = _absolute(parent)
    now = time.time()
    done: list[Path] = []
    try:
        entries = sorted(parent_path.iterdir())
    except FileNotFoundError:
        return done
    for entry in entries:
        if _handle_leftover(entry, parent_path, max_age, now):
            done.append(entry)
    return done
