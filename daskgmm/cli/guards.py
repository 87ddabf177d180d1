"""Checks made before a command does any work, and the translation of write failures.

* :func:`refuse_overlap` -- an output that equals, contains or lies inside one of the
  run's inputs (the data, the model, the configuration file, the checkpoint directory)
  is refused, whatever ``--overwrite`` says: replacing it could destroy the input.
  Local paths are compared after resolving symbolic links; URLs by protocol and path
  (``s3://b/run`` contains ``s3://b/run/data.zarr``).
* :func:`check_writable` -- the directory an output will be created in can be written
  (not read-only, not forbidden), found out with a probe file (or, at a URL, a probe
  object, which also checks the credentials) before the fit starts.
* :func:`free_space_warning` -- the space an output may need against what is free.
* :func:`chunking_warnings` -- a task count or chunk size far outside the sensible
  range, from the opened array's chunking and the workers' memory.
* :func:`write_errors` -- a context that turns the operating system's write failures
  (disk full, read-only, permission denied) into one-line
  :class:`~daskgmm.errors.OutputWriteError` messages naming the configuration key or
  command-line flag of the location.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from daskgmm.errors import DaskGMMError, OutputWriteError, UnsafeOutputError

__all__ = [
    "WRITE_ERRNOS",
    "check_writable",
    "chunking_warnings",
    "free_space_warning",
    "is_local_path",
    "is_user_error",
    "refuse_overlap",
    "refuse_process_local",
    "write_errors",
]

WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on the device: free some space or choose another "
                  "location",
    errno.EDQUOT: "the disk quota is exceeded: free some space or choose another location",
    errno.EROFS: "the file system is read-only: choose a writable location",
    errno.EACCES: "permission denied: choose a location you may write to",
    errno.EPERM: "operation not permitted: choose a location you may write to",
}
"""The operating system's write failures that are the user's to fix, with advice."""

# Sensible ranges of a pass over the data (pre-flight warnings, not errors).
MAX_CHUNKS = 20_000
MIN_CHUNK_BYTES = 1 * 2**20
MAX_CHUNK_FRACTION = 0.25


def is_local_path(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` names a local file (not a URL nor ``sklearn:NAME``)."""
    if path is None:
        return False
    text = os.fspath(path)
    return "://" not in text and not text.startswith("sklearn:")


def _location(path: str | os.PathLike[str] | None) -> Any:
    """The Location of a local path or URL; None for ``sklearn:NAME``, None, or a URL
    whose filesystem cannot be set up here (opening it will say why)."""
    if path is None:
        return None
    text = os.fspath(path)
    if text.startswith("sklearn:"):
        return None
    from daskgmm.io.locations import parse_location

    try:
        return parse_location(path)
    except DaskGMMError:
        return None


def refuse_overlap(output: str | os.PathLike[str], output_key: str,
                   inputs: Sequence[tuple[str, str | os.PathLike[str] | None]], *,
                   relations: Sequence[str] = ("is", "contains", "lies inside")) -> None:
    """Refuse an output location that overlaps one of the inputs.

    Parameters
    ----------
    output : path-like
        Where the command will write (a directory or a store).
    output_key : str
        How the user named it: ``'output.dir'``, ``'--output'``.
    inputs : sequence of (str, path-like or None)
        ``(how the user named it, path or URL)`` of every input; ``sklearn:`` sources
        and None are skipped. A local path and a URL never overlap (except ``file://``
        URLs, which are local paths).
    relations : sequence of str
        Which overlaps are refused: ``'is'`` (the same location), ``'contains'`` (the
        output contains the input) and ``'lies inside'`` (the output is inside the
        input).

    Raises
    ------
    UnsafeOutputError
        Naming both locations and what to do.
    """
    from daskgmm.io.locations import relation as overlap

    target = _location(output)
    if target is None:
        return
    shown = os.path.realpath(target.path) if target.is_local else target.display
    for key, path in inputs:
        other = _location(path)
        if other is None:
            continue
        relation = overlap(target, other)
        if relation is None or relation not in relations:
            continue
        other_shown = os.path.realpath(other.path) if other.is_local else other.display
        where = (f"{output_key} {shown} {relation} {key} {other_shown}" if relation != "is"
                 else f"{output_key} {shown} is the same location as {key}")
        raise UnsafeOutputError(
            f"{where}: writing there could destroy it, so daskgmm refuses (whatever the "
            f"overwrite setting); choose an {output_key} outside {key}")


_PROCESS_LOCAL = ("memory",)


def refuse_process_local(*locations: tuple[str, str | os.PathLike[str] | None]) -> None:
    """Refuse ``memory://`` (or any filesystem that lives inside one process) for the
    data, outputs and checkpoints of a command, whose workers are other processes.

    Parameters
    ----------
    *locations : (str, path-like or None)
        ``(how the user named it, path or URL)``; None is skipped.

    Raises
    ------
    UsageError
        Naming the key and what to use instead.
    """
    from daskgmm.errors import UsageError
    from daskgmm.io.locations import is_url

    for key, path in locations:
        if path is None or not is_url(os.fspath(path)):
            continue
        protocol = os.fspath(path).split("::")[0].split("://", 1)[0].lower()
        if protocol in _PROCESS_LOCAL:
            raise UsageError(
                f"{key} {os.fspath(path)}: a {protocol}:// location exists only inside one "
                "Python process, so the Dask workers (and later runs) cannot see it; use "
                "a local path or an object store (s3://, gs://, az:// ...)")


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(path.anchor or os.sep)


def _advice(code: int | None) -> str:
    return WRITE_ERRNOS.get(code or -1, os.strerror(code) if code else "write failed")


def _check_remote_writable(output: str | os.PathLike[str], key: str,
                           storage_options: dict | None) -> None:
    import secrets

    from daskgmm.io.locations import parse_location

    try:
        target = parse_location(output, storage_options)
    except DaskGMMError as exc:
        raise OutputWriteError(f"cannot write {key}: {exc}") from None
    if not target.listable:
        raise OutputWriteError(
            f"cannot write {key} {target.display}: {target.protocol}:// locations cannot "
            "be written by daskgmm (no way to list or replace a directory there); choose "
            "a local path or an object store (s3://, gs://, az:// ...)")
    probe = target.parent.join(f".daskgmm-probe-{secrets.token_hex(6)}")
    try:
        probe.fs.pipe_file(probe.path, b"")
    except ImportError as exc:
        raise target.missing_dependency(exc) from None
    except Exception as exc:
        raise OutputWriteError(
            f"cannot write {key} {target.display}: {type(exc).__name__}: "
            f"{target.scrub(str(exc)) or 'write refused'}; check the location, the "
            "credentials and the storage options") from None
    with contextlib.suppress(Exception):
        probe.fs.rm_file(probe.path)


def check_writable(output: str | os.PathLike[str], key: str, *,
                   storage_options: dict | None = None) -> None:
    """Make sure the directory that will hold ``output`` can be written.

    The nearest existing ancestor of ``output``'s parent directory receives a probe
    file (created and deleted at once); nothing else is created. At a URL a probe
    object is written next to ``output`` and deleted, which also checks the credentials
    and the endpoint.

    Raises
    ------
    OutputWriteError
        When the probe fails with a read-only file system, permission denied or a full
        disk (or, at a URL, with any error of the object store), naming ``key``
        (``output.dir``, ``--output``, ``checkpoint.dir``).
    """
    text = os.fspath(output)
    if text.startswith("sklearn:"):
        return
    if not is_local_path(output):
        from daskgmm.io.locations import parse_location

        try:
            loc = parse_location(output, storage_options)
        except DaskGMMError:
            loc = None
        if loc is None or not loc.is_local:
            _check_remote_writable(output, key, storage_options)
            return
        output = loc.path
    target = Path(os.path.abspath(os.fspath(output)))
    directory = _existing_ancestor(target.parent)
    if not directory.is_dir():
        raise OutputWriteError(f"cannot write {key} {target}: {directory} is not a "
                               "directory; choose another location")
    try:
        fd, probe = tempfile.mkstemp(prefix=".daskgmm-probe-", dir=directory)
    except OSError as exc:
        if exc.errno in WRITE_ERRNOS:
            raise _write_error(exc, key, target) from None
        raise
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def free_space_warning(output: str | os.PathLike[str], key: str, needed: int
                       ) -> str | None:
    """A warning when the file system of ``output`` has less than ``needed`` bytes free."""
    if not is_local_path(output) or needed <= 0:
        return None
    directory = _existing_ancestor(Path(os.path.abspath(os.fspath(output))).parent)
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return None
    if free >= needed:
        return None
    return (f"{key} {output}: its file system has {free / 2**20:,.0f} MiB free and the "
            f"outputs may need up to {needed / 2**20:,.0f} MiB (before compression)")


def chunking_warnings(n_chunks: int, chunk_rows: int, n_features: int, itemsize: int,
                      worker_memory: Sequence[int] = ()) -> list[str]:
    """Warnings (with the numbers) for a chunking far outside the sensible range.

    Parameters
    ----------
    n_chunks, chunk_rows, n_features, itemsize : int
        The opened array's row chunking.
    worker_memory : sequence of int
        The workers' memory limits in bytes (0: none).
    """
    out = []
    chunk_bytes = chunk_rows * n_features * itemsize
    if n_chunks > MAX_CHUNKS:
        out.append(
            f"the data is split into {n_chunks:,} chunks of {chunk_rows:,} rows, so every "
            f"pass runs more than {MAX_CHUNKS:,} tasks and the scheduler's overhead (about "
            "1 ms per task) dominates; use larger chunks (data.chunk_rows)")
    elif n_chunks > 1 and chunk_bytes < MIN_CHUNK_BYTES and n_chunks > 1000:
        size = (f"{chunk_bytes:,} bytes" if chunk_bytes < 10 * 2**10
                else f"{chunk_bytes / 2**10:,.0f} KiB")
        out.append(
            f"chunks of {chunk_rows:,} rows hold only {size} each ({n_chunks:,} chunks): "
            "per-task overhead will dominate; use chunks of a few MiB or more "
            "(data.chunk_rows)")
    limits = [m for m in worker_memory if m]
    if limits and chunk_bytes > MAX_CHUNK_FRACTION * min(limits):
        out.append(
            f"one chunk of {chunk_rows:,} rows is {chunk_bytes / 2**20:,.0f} MiB, more than "
            f"{MAX_CHUNK_FRACTION:.0%} of a worker's memory limit "
            f"({min(limits) / 2**20:,.0f} MiB); a pass needs several chunks in memory at "
            "once, so workers may pause or die: use smaller chunks (data.chunk_rows) or "
            "more memory (cluster.memory_limit)")
    return out


def _write_error(exc: OSError, key: str, location: str | os.PathLike[str]
                 ) -> OutputWriteError:
    error = OutputWriteError(f"cannot write {key} {location}: {_advice(exc.errno)}")
    error.errno = exc.errno
    return error


def _under(filename: Any, root: str | os.PathLike[str] | None) -> bool:
    if not filename or root is None or not is_local_path(root):
        return False
    try:
        path = Path(os.path.abspath(os.fsdecode(filename)))
    except (TypeError, ValueError):
        return False
    base = Path(os.path.abspath(os.fspath(root)))
    if path == base or base in path.parents:
        return True
    # Writers fill a temporary sibling (".<name>.tmp-...") of the final location.
    return any(a.parent == base.parent and a.name.startswith(f".{base.name}.")
               for a in (path, *path.parents))


@contextlib.contextmanager
def write_errors(default: tuple[str, str | os.PathLike[str]],
                 *others: tuple[str, str | os.PathLike[str] | None]) -> Iterator[None]:
    """Turn a disk-full, read-only or permission failure inside the block into an
    :class:`OutputWriteError` that names the location's configuration key or flag.

    Parameters
    ----------
    default : (str, path-like)
        ``(key, location)`` blamed when the failing file is not under one of ``others``.
    *others : (str, path-like or None)
        Other ``(key, location)`` pairs written in the block (e.g. the checkpoint
        directory), matched against the failing file's name.
    """
    try:
        yield
    except OSError as exc:
        if isinstance(exc, DaskGMMError) or exc.errno not in WRITE_ERRNOS:
            raise
        key, location = default
        for other_key, other in others:
            if _under(exc.filename, other):
                key, location = other_key, other
                break
        raise _write_error(exc, key, os.fspath(location)) from exc


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a user mistake the CLI reports in one line (exit code 2).

    Only daskgmm's own errors (:class:`~daskgmm.errors.DaskGMMError` and its
    subclasses) and the operating system's write failures that the user must fix
    (disk full, quota exceeded, read-only file system, permission denied) are. Any
    other exception, ``ValueError`` included, is a bug and shows its traceback.
    """
    if isinstance(exc, DaskGMMError):
        return True
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS
