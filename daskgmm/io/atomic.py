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

A killed writer cannot clean up after itself, so ``.tmp-`` leftovers may accumulate next
to the targets; :func:`remove_stale_temporaries` deletes those old enough not to belong
to a writer that is still running.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_directory",
    "fsync_directory",
    "remove_stale_temporaries",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

# ``.<name>.tmp-<hex>`` (work in progress) and ``.<name>.old-<hex>`` (a replaced version).
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<token>[0-9a-f]{16})$")


def _absolute(path: str | os.PathLike[str]) -> Path:
    """Absolute, normalised path (no trailing separator, ``..`` resolved lexically)."""
    target = Path(os.path.abspath(os.fspath(path)))
    if not target.name:
        raise ValueError(f"Cannot write atomically to {target}: it has no file name.")
    return target


def _sibling(target: Path, kind: str) -> Path:
    return target.parent / f".{target.name}.{kind}-{secrets.token_hex(8)}"


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
def _refuse_existing(target: Path) -> None:
    raise FileExistsError(
        f"{target} already exists; refusing to replace it. Pass overwrite=True to "
        "replace it, or choose another path."
    )


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling and rename it into place on success.

    Parameters
    ----------
    path : str or os.PathLike
        The directory to create (or replace). Its parent must exist.
    overwrite : bool, default=False
        Whether an existing ``path`` may be replaced. When False and ``path`` exists,
        :class:`FileExistsError` is raised before the block runs, so no work is wasted.

    Yields
    ------
    pathlib.Path
        An empty temporary directory ``<parent>/.<name>.tmp-<random>`` to fill.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False (checked on entry, and again just
        before the final rename in case another process created it meanwhile).
    FileNotFoundError
        If the parent directory of ``path`` does not exist.

    Notes
    -----
    On success every file in the temporary directory is ``fsync``-ed, the directory is
    renamed to ``path`` and the parent is ``fsync``-ed. Replacing an existing ``path`` is
    two renames (old aside to ``.<name>.old-<random>``, new into place) followed by the
    deletion of the old one; if the second rename fails the old directory is put back.
    On any exception raised in the block the temporary directory is deleted and
    ``path`` is left exactly as it was. See the module docstring for what a crash
    leaves behind.

    Examples
    --------
    >>> with atomic_directory("results/run-1") as tmp:  # doctest: +SKIP
    ...     (tmp / "data.bin").write_bytes(payload)
    ...     (tmp / "DONE").write_text("ok")          # completion marker, last
    """
    target = _absolute(path)
    parent = target.parent
    if not parent.is_dir():
        raise FileNotFoundError(
            f"Cannot create {target}: the parent directory {parent} does not exist."
        )
    if os.path.lexists(target) and not overwrite:
        _refuse_existing(target)

    while True:
        tmp = _sibling(target, "tmp")
        try:
            os.mkdir(tmp, 0o777)
        except FileExistsError:  # pragma: no cover - 64 random bits collided
            continue
        break

    try:
        yield tmp
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
    old = _sibling(target, "old")
    os.rename(target, old)
    try:
        os.rename(tmp, target)
    except BaseException:
        os.rename(old, target)
        raise
    fsync_directory(parent)
    _remove(old)


def _newest_mtime(path: Path) -> float:
    """Latest modification time of ``path`` or anything under it."""
    newest = path.lstat().st_mtime
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for name in (*dirnames, *filenames):
                with contextlib.suppress(OSError):
                    newest = max(newest, os.lstat(os.path.join(dirpath, name)).st_mtime)
    return newest


def remove_stale_temporaries(parent: str | os.PathLike[str], *,
                             max_age: float = 3600.0) -> list[Path]:
    """Delete leftovers of interrupted atomic writes in a directory.

    Removes

    * ``.<name>.tmp-<random>`` files and directories (unfinished writes) whose newest
      modification time, over everything inside, is older than ``max_age`` seconds, so
      a write still in progress in another process is left alone;
    * ``.<name>.old-<random>`` entries (versions being replaced) older than ``max_age``,
      **but only if** ``<name>`` exists. When it does not, the ``.old-`` entry is the
      last complete version left by a writer killed between the two renames of a
      replacement; it is kept so it can be renamed back.

    Parameters
    ----------
    parent : str or os.PathLike
        The directory holding the targets (not searched recursively).
    max_age : float, default=3600.0
        Minimum age, in seconds, of a leftover before it is removed. ``0`` removes every
        leftover, which is only safe when no writer is running.

    Returns
    -------
    list of pathlib.Path
        The entries removed.
    """
    parent_path = _absolute(parent)
    now = time.time()
    removed: list[Path] = []
    try:
        entries = sorted(parent_path.iterdir())
    except FileNotFoundError:
        return removed
    for entry in entries:
        match = _LEFTOVER.match(entry.name)
        if match is None:
            continue
        if match["kind"] == "old" and not os.path.lexists(parent_path / match["name"]):
            continue
        try:
            age = now - _newest_mtime(entry)
        except FileNotFoundError:
            continue
        if age < max_age:
            continue
        _remove(entry)
        if not os.path.lexists(entry):
            removed.append(entry)
    return removed
