"""Checks a command makes before any work, all through the locations' filesystems:
outputs over inputs (:func:`refuse_overlap`), ``memory://`` locations the workers cannot
reach (:func:`refuse_process_local`), a probe write (:func:`check_writable`), an existing
output (:func:`refuse_existing_output`), and warnings about free space and chunk sizes."""

from __future__ import annotations

import errno
import secrets
import shutil
from collections.abc import Sequence

from daskgmm.errors import DaskGMMError, OutputExistsError, UnsafeOutputError, UsageError
from daskgmm.io.locations import Location, relation, storage_errors

__all__ = ["check_writable", "chunk_memory_warning", "free_space_warning", "is_user_error",
           "refuse_existing_output", "refuse_overlap", "refuse_process_local"]

_USER_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                          errno.EPERM, errno.ENAMETOOLONG})
MAX_CHUNK_FRACTION = 0.25
"""A chunk larger than this share of a worker's memory limit is warned about."""


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is reported in one line (exit code 2): daskgmm's own errors and
    the operating system's refusals a user must fix (disk full, quota, read-only,
    permission, a name too long). Anything else is a bug and keeps its traceback."""
    return isinstance(exc, DaskGMMError) or (isinstance(exc, OSError)
                                             and exc.errno in _USER_ERRNOS)


def refuse_overlap(output: Location, key: str,
                   inputs: Sequence[tuple[str, Location | None]], *,
                   relations: Sequence[str] = ("is", "contains", "lies inside")) -> None:
    """Refuse (UnsafeOutputError) an output that overlaps one of ``inputs`` (``(key,
    location)`` pairs; None skipped) in one of ``relations``."""
    for other_key, other in inputs:
        found = relation(output, other) if other is not None else None
        if found is None or found not in relations:
            continue
        what = (f"{key} {output.display} is the same location as {other_key}"
                if found == "is" else
                f"{key} {output.display} {found} {other_key} {other.display}")
        raise UnsafeOutputError(
            f"{what}: writing there could destroy it, so daskgmm refuses (whatever the "
            f"overwrite setting); choose another {key}, outside {other_key}")


def refuse_process_local(*locations: tuple[str, Location | None]) -> None:
    """Refuse ``memory://`` locations, which the workers (and later runs) cannot see."""
    for key, loc in locations:
        if loc is not None and loc.protocol == "memory":
            raise UsageError(
                f"{key} {loc.display}: a memory:// location exists only inside one Python "
                "process, so the Dask workers (and later runs) cannot see it; use a local "
                "path or an object store (s3://, gs://, az:// ...)")


def check_writable(output: Location, key: str) -> None:
    """Write and delete a probe file next to ``output`` (in the nearest existing
    directory); a StorageError naming ``key`` if it is read-only, forbidden, full,
    unreachable, or a file is in the way."""
    if not output.listable:
        raise UsageError(f"{key} {output.display}: {output.protocol}:// locations cannot "
                         "be written by daskgmm; choose a local path or an object store")
    parent = output.parent
    with storage_errors(key, output):
        while True:
            probe = parent.join(f".daskgmm-probe-{secrets.token_hex(6)}")
            try:
                probe.fs.pipe_file(probe.path, b"")
                break
            except (FileNotFoundError, NotADirectoryError):
                if parent.parent.path == parent.path or parent.isfile():
                    raise
                parent = parent.parent
        probe.fs.rm_file(probe.path)


def refuse_existing_output(output: Location, key: str, *, overwrite: bool, flag: str) -> None:
    """Refuse an existing ``output`` without ``overwrite`` (which ``flag`` sets), or one
    that is not daskgmm's to replace; then :func:`check_writable`."""
    from daskgmm.io.storage import check_replaceable

    with storage_errors(key, output):
        if output.exists() and not overwrite:
            raise OutputExistsError(f"{key} {output.display} already exists; pass {flag} to "
                                    f"replace it, or choose another {key}")
        check_replaceable(output)
    check_writable(output, key)


def free_space_warning(output: Location, key: str, needed: int) -> str | None:
    """A warning when ``output``'s file system (a local one) has less than ``needed``
    bytes free; None otherwise, and for object stores."""
    if needed <= 0 or not getattr(output.fs, "local_file", False):
        return None
    place = output
    while not place.exists() and place.parent.path != place.path:
        place = place.parent
    try:
        free = shutil.disk_usage(place.path).free
    except OSError:
        return None
    if free >= needed:
        return None
    return (f"{key} {output.display}: its file system has {free / 2**20:,.0f} MiB free and "
            f"the outputs may need up to {needed / 2**20:,.0f} MiB (before compression)")


def chunk_memory_warning(chunk_bytes: int, chunk_rows: int, limits: Sequence[int]
                         ) -> str | None:
    """A warning when one chunk is more than :data:`MAX_CHUNK_FRACTION` of the smallest
    worker memory limit (a pass holds several chunks at once). The count and size of
    chunks are the engine's to warn about (``PerformanceWarning``)."""
    limits = [m for m in limits if m]
    if not limits or chunk_bytes <= MAX_CHUNK_FRACTION * min(limits):
        return None
    return (f"one chunk of {chunk_rows:,} rows is {chunk_bytes / 2**20:,.0f} MiB, more than "
            f"{MAX_CHUNK_FRACTION:.0%} of a worker's memory limit ({min(limits) / 2**20:,.0f} "
            "MiB); a pass needs several chunks in memory at once, so workers may pause or "
            "die: use smaller chunks (data.chunk_rows) or more memory (cluster.memory_limit)")
