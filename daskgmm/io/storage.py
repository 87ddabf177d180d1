"""Write outputs to a local path or any fsspec URL, never leaving a half-written one.

The primitives the writers of models, reports, label arrays and data sets use, for a
local path or a URL with ``storage_options``:

* :func:`exists`, :func:`read_output_marker`, :func:`is_daskgmm_output`;
* :func:`atomic_output_directory`: build a directory and make it appear complete or
  not at all. Locally this is :func:`daskgmm.io.atomic.atomic_directory` (a temporary
  sibling renamed into place). Object stores have no rename, so there the content is
  written under a temporary prefix ``.<name>.tmp-<owner>/``, then copied (server side)
  to the target with the **marker object last** (a ``.daskgmm.json`` object, or, for a
  Zarr store, its root ``zarr.json`` carrying the marker attribute), and the temporary
  prefix is deleted. A reader that requires the marker (:func:`read_output_marker`)
  never accepts a partly copied directory. Replacing an existing target deletes its
  marker first, then its objects, so a crash midway leaves a target without a marker
  (refused) rather than a mixture of two versions. Only a target that is empty or
  carries a marker is ever replaced;
* :func:`write_file_atomic`: one file (on object stores a single PUT is atomic);
* :func:`create_zarr_array`: a Zarr v3 array (e.g. labels or responsibilities) at a
  location, compressed with :func:`daskgmm.io.codecs.float_compressors`, which Dask
  workers then fill chunk by chunk (the array pickles as its store's description).

Leftover temporary prefixes of writers that are no longer running on this host are
deleted at the start of the next write to the same target, as for local directories.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from daskgmm.errors import UnsafeOverwriteError
from daskgmm.io import atomic
from daskgmm.io.locations import Location, parse_location

__all__ = [
    "OutputDirectory",
    "atomic_output_directory",
    "check_replaceable",
    "create_zarr_array",
    "exists",
    "is_daskgmm_output",
    "read_output_marker",
    "write_file_atomic",
]

_ROOT_METADATA = ("zarr.json", ".zattrs", ".zarray", ".zgroup")
# Files that complete an output nested in a directory (copied after everything else).
_NESTED_MARKERS = frozenset({*_ROOT_METADATA, atomic.MARKER_FILE, "model.json",
                             "report.json"})


class OutputDirectory:
    """A directory being written: a local temporary directory or a temporary prefix.

    Attributes
    ----------
    location : Location
        Where the content goes now (the temporary directory or prefix).
    path : pathlib.Path or None
        The local temporary directory (None on object stores).
    storage_options : dict
        The filesystem options, for libraries that open :meth:`child` URLs themselves.
    """

    def __init__(self, location: Location) -> None:
        self.location = location
        self.path = Path(location.path) if location.is_local else None
        self.storage_options = dict(location.storage_options)

    def __repr__(self) -> str:
        return f"OutputDirectory({self.location.display!r})"

    def child(self, name: str) -> str:
        """Local path or full URL of ``name`` inside the directory (may hold credentials
        if the URL does: pass it to libraries, never print it)."""
        return self.location.join(name).url

    def child_location(self, name: str) -> Location:
        """The :class:`Location` of ``name`` inside the directory."""
        return self.location.join(name)

    def open(self, name: str, mode: str = "wb") -> Any:
        """Open ``name`` for writing (parent directories are created locally)."""
        loc = self.location.join(name)
        if loc.is_local:
            os.makedirs(os.path.dirname(loc.path), exist_ok=True)
        return loc.open(mode)

    def write_bytes(self, name: str, data: bytes) -> None:
        """Write a whole file."""
        with self.open(name, "wb") as f:
            f.write(data)

    def write_json(self, name: str, obj: Any, **kwargs: Any) -> None:
        """Write ``obj`` as JSON (serialised completely before anything is written)."""
        text = json.dumps(obj, **kwargs)
        self.write_bytes(name, (text if text.endswith("\n") else text + "\n").encode())


def exists(url: str | os.PathLike[str], storage_options: dict | None = None) -> bool:
    """Whether anything is at ``url`` (a file, a directory or a non-empty prefix)."""
    loc = parse_location(url, storage_options)
    return loc.exists() or (not loc.is_local and loc.isdir())


def _cat_json(loc: Location, limit: int = 64 << 20) -> Any:
    try:
        data = loc.fs.cat_file(loc.path)
    except Exception:
        return None
    if len(data) > limit:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def read_output_marker(url: str | os.PathLike[str],
                       storage_options: dict | None = None) -> dict[str, Any] | None:
    """The marker of an output daskgmm wrote at ``url``, or None.

    See :func:`daskgmm.io.atomic.read_marker` for what counts as a marker.
    """
    loc = parse_location(url, storage_options)
    if loc.is_local:
        return atomic.read_marker(loc.path)
    found = _cat_json(loc.join(atomic.MARKER_FILE))
    if isinstance(found, dict) and found.get("written_by") == "daskgmm":
        return found
    meta = _cat_json(loc.join("zarr.json"))
    attrs = meta.get("attributes") if isinstance(meta, dict) else _cat_json(loc.join(".zattrs"))
    if isinstance(attrs, dict):
        marker = attrs.get(atomic.MARKER_ATTRIBUTE)
        if isinstance(marker, dict) and marker.get("written_by") == "daskgmm":
            return marker
        if attrs.get("generator") == "daskgmm":
            return {"written_by": "daskgmm", "kind": "generated", "legacy": True}
    for name, fmt, kind in (("model.json", "daskgmm-model", "model"),
                            ("report.json", "daskgmm-report", "run")):
        meta = _cat_json(loc.join(name))
        if isinstance(meta, dict) and meta.get("format") == fmt:
            return {"written_by": "daskgmm", "kind": kind, "legacy": True}
    return None


def is_daskgmm_output(url: str | os.PathLike[str], storage_options: dict | None = None,
                      kind: str | None = None) -> bool:
    """Whether ``url`` holds a complete output daskgmm wrote (of ``kind``, if given)."""
    marker = read_output_marker(url, storage_options)
    return marker is not None and (kind is None or marker.get("kind") == kind)


def _remote_keys(loc: Location) -> list[str]:
    """Relative keys of every object below ``loc`` (empty if none)."""
    try:
        found = loc.fs.find(loc.path, withdirs=False)
    except FileNotFoundError:
        return []
    base = loc.path.rstrip("/") + "/"
    return sorted(str(p)[len(base):] for p in found if str(p).startswith(base))


def _clean_remote(target: Location) -> None:
    """Delete temporary prefixes of dead writers to ``target`` (this host's only)."""
    parent = target.parent
    try:
        names = [str(p).rstrip("/").rsplit("/", 1)[-1] for p in parent.fs.ls(parent.path,
                                                                               detail=False)]
    except (FileNotFoundError, OSError):
        return
    for name in names:
        match = atomic._OWNED.match(name)
        if match is None or match["name"] != target.name:
            continue
        if atomic._owner_state(match) == "dead":
            with contextlib.suppress(FileNotFoundError):
                parent.fs.rm(parent.join(name).path, recursive=True)


def _check_remote_replaceable(target: Location) -> None:
    if read_output_marker(target) is not None:
        return
    if target.isfile():
        raise UnsafeOverwriteError(
            f"{target.display} is an object that daskgmm did not write, so it is not "
            "replaced even with overwrite. Choose another output location.")
    if _remote_keys(target):
        raise UnsafeOverwriteError(
            f"{target.display} holds objects that daskgmm did not write (no "
            f"{atomic.MARKER_FILE} marker), so they are not replaced even with overwrite: "
            "they may be your data. Choose another output location, or remove them "
            "yourself.")


def check_replaceable(url: str | os.PathLike[str] | Location,
                      storage_options: dict | None = None) -> None:
    """Refuse (before any work) to replace what is at ``url`` unless daskgmm wrote it.

    Nothing there, an empty directory (prefix) or a complete daskgmm output (it has its
    marker) may be replaced with ``overwrite``; anything else raises.

    Raises
    ------
    UnsafeOverwriteError
        Naming the location and what to do.
    """
    loc = parse_location(url, storage_options)
    if loc.is_local:
        if os.path.lexists(loc.path):
            atomic._check_replaceable(Path(loc.path))
        return
    if exists(loc):
        _check_remote_replaceable(loc)


def _write_remote_marker(tmp: Location, kind: str) -> str:
    """Put the marker into the temporary prefix; returns the key to copy last."""
    if read_output_marker(tmp) is not None:  # a model.json / report.json says it already
        keys = _remote_keys(tmp)
        for name in ("model.json", "report.json"):
            if name in keys:
                return name
    marker = atomic.marker_content(kind)
    meta = _cat_json(tmp.join("zarr.json"))
    if isinstance(meta, dict):
        meta.setdefault("attributes", {})[atomic.MARKER_ATTRIBUTE] = marker
        tmp.fs.pipe_file(tmp.join("zarr.json").path, json.dumps(meta, indent=2).encode())
        return "zarr.json"
    if _cat_json(tmp.join(".zarray")) is not None or _cat_json(tmp.join(".zgroup")) is not None:
        attrs = _cat_json(tmp.join(".zattrs"))
        attrs = attrs if isinstance(attrs, dict) else {}
        attrs[atomic.MARKER_ATTRIBUTE] = marker
        tmp.fs.pipe_file(tmp.join(".zattrs").path, json.dumps(attrs, indent=2).encode())
        return ".zattrs"
    tmp.fs.pipe_file(tmp.join(atomic.MARKER_FILE).path,
                     json.dumps(marker, indent=2).encode())
    return atomic.MARKER_FILE


def _commit_remote(tmp: Location, target: Location, marker_key: str) -> None:
    fs = target.fs
    old = _remote_keys(target)
    if old:
        # Marker first, so a crash below leaves an output that is refused, not mixed.
        first = [k for k in dict.fromkeys((marker_key, atomic.MARKER_FILE, *_ROOT_METADATA))
                 if k in old]
        for key in first:
            fs.rm_file(target.join(key).path)
        rest = [target.join(k).path for k in old if k not in first]
        if rest:
            fs.rm(rest)
    keys = [k for k in _remote_keys(tmp) if k != marker_key]
    # Copies may run concurrently: the data objects first, then the markers of nested
    # outputs (a model's model.json, a Zarr array's zarr.json), then the target's own.
    nested = [k for k in keys if k.rsplit("/", 1)[-1] in _NESTED_MARKERS]
    for batch in ([k for k in keys if k not in nested], nested):
        if batch:
            fs.copy([tmp.join(k).path for k in batch], [target.join(k).path for k in batch])
    fs.copy(tmp.join(marker_key).path, target.join(marker_key).path)  # the marker, last
    fs.rm(tmp.path, recursive=True)


@contextlib.contextmanager
def atomic_output_directory(url: str | os.PathLike[str], *, kind: str,
                            overwrite: bool = False,
                            storage_options: dict | None = None) -> Iterator[OutputDirectory]:
    """Build an output directory that appears complete, with its marker, or not at all.

    Parameters
    ----------
    url : str or os.PathLike
        The directory (local path) or prefix (URL) to create or replace.
    kind : str
        What it holds, recorded in the marker (``"model"``, ``"run"``, ``"labels"``,
        ``"responsibilities"``, ``"generated"``...).
    overwrite : bool, default False
        Replace an existing output. Only an empty directory (prefix) or one carrying a
        daskgmm marker is replaced.
    storage_options : dict, optional
        Options of the URL's filesystem.

    Yields
    ------
    OutputDirectory
        Where to write the content (a temporary directory or prefix).

    Raises
    ------
    FileExistsError
        Something is at ``url`` and ``overwrite`` is False.
    UnsafeOverwriteError
        ``overwrite`` is True but ``url`` holds something daskgmm did not write.
    MissingDependencyError
        The URL's filesystem library is not installed.
    """
    target = parse_location(url, storage_options)
    if target.is_local:
        Path(target.path).parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_directory(target.path, overwrite=overwrite, kind=kind) as tmp:
            yield OutputDirectory(parse_location(str(tmp)))
        return
    _clean_remote(target)
    if exists(target):
        if not overwrite:
            raise FileExistsError(
                f"{target.display} already exists; pass overwrite=True (--overwrite) to "
                "replace it, or choose another location.")
        _check_remote_replaceable(target)
    tmp = target.parent.join(f".{target.name}.tmp-{atomic._owner()}-{secrets.token_hex(4)}")
    try:
        yield OutputDirectory(tmp)
        marker_key = _write_remote_marker(tmp, kind)
        if exists(target):
            if not overwrite:
                raise FileExistsError(
                    f"{target.display} appeared while the output was being written; not "
                    "replacing it.")
            _check_remote_replaceable(target)
        _commit_remote(tmp, target, marker_key)
    except BaseException:
        with contextlib.suppress(Exception):
            tmp.fs.rm(tmp.path, recursive=True)
        raise


def write_file_atomic(url: str | os.PathLike[str], data: bytes, *,
                      storage_options: dict | None = None) -> None:
    """Write one file at a local path or URL so that readers see all of it or nothing.

    Locally :func:`daskgmm.io.atomic.write_bytes_atomic` (temporary file, fsync,
    rename); on object stores a single PUT, which is atomic.
    """
    loc = parse_location(url, storage_options)
    if loc.is_local:
        os.makedirs(os.path.dirname(loc.path), exist_ok=True)
        atomic.write_bytes_atomic(loc.path, data)
        return
    loc.fs.pipe_file(loc.path, bytes(data))


def zarr_store(url: str | os.PathLike[str] | Location, storage_options: dict | None = None,
               *, read_only: bool = False) -> Any:
    """A zarr store for a local path or URL (``LocalStore`` or ``FsspecStore``)."""
    loc = parse_location(url, storage_options)
    if loc.is_local:
        from zarr.storage import LocalStore

        return LocalStore(loc.path, read_only=read_only)
    from zarr.storage import FsspecStore

    try:
        return FsspecStore.from_url(loc.url, storage_options=loc.storage_options or None,
                                    read_only=read_only)
    except ImportError as exc:
        raise loc.missing_dependency(exc) from None


def create_zarr_array(url: str | os.PathLike[str] | Location, shape: tuple[int, ...],
                      chunks: tuple[int, ...], dtype: Any, *,
                      fill_value: Any = None, attributes: dict | None = None,
                      dimension_names: tuple[str, ...] | None = None,
                      storage_options: dict | None = None,
                      compressors: Any = "auto") -> Any:
    """Create an empty Zarr v3 array for Dask workers to fill chunk by chunk.

    Parameters
    ----------
    url : str, os.PathLike or Location
        Where the array's root goes (typically ``out.child("labels.zarr")`` of an
        :class:`OutputDirectory`, so the array becomes visible with the directory).
    shape, chunks : tuple of int
        Chunks should equal the Dask array's chunks so that every task writes whole
        chunks (no two tasks touch the same chunk).
    dtype : numpy dtype
    fill_value : scalar, optional
    attributes : dict, optional
    dimension_names : tuple of str, optional
    storage_options : dict, optional
    compressors : "auto", None or zarr codecs
        ``"auto"``: :func:`daskgmm.io.codecs.float_compressors` for ``dtype``.

    Returns
    -------
    zarr.Array
        Pickles as its store's description: pass it to ``dask.array.store`` (with
        ``lock=False``) or write regions of it in tasks. Written with
        ``write_empty_chunks=True``, so that every chunk exists once filled (a reader
        checking for missing chunks then accepts it).
    """
    import zarr

    from daskgmm.io.codecs import float_compressors

    if isinstance(compressors, str) and compressors == "auto":
        compressors = float_compressors(np.dtype(dtype))
    return zarr.create_array(
        zarr_store(url, storage_options), shape=tuple(shape), chunks=tuple(chunks),
        dtype=np.dtype(dtype), fill_value=fill_value, attributes=attributes or {},
        dimension_names=dimension_names, compressors=compressors, zarr_format=3,
        config={"write_empty_chunks": True})
