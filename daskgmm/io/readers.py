"""Open arrays as lazy, row-chunked Dask arrays, from local paths or any fsspec URL.

:func:`open_array` picks a reader (content first, then the extension) among Zarr, HDF5,
``.npy``, Parquet and ``sklearn:NAME``. Opening reads only metadata, and the graphs hold
no open file, so they run on worker processes."""

from __future__ import annotations

import math
import os
from typing import Any

import dask.array as da

from daskgmm.errors import DataNotFoundError, DataSourceError
from daskgmm.io.chunking import DEFAULT_CHUNK_BYTES
from daskgmm.io.hdf5_files import HDF5Reader, HDF5Slicer
from daskgmm.io.locations import Location, parse_location, storage_errors
from daskgmm.io.npy_files import NpyRangeSlicer, NpyReader
from daskgmm.io.parquet_tables import ParquetReader
from daskgmm.io.reader_base import ArraySource, Reader, check_chunk_rows
from daskgmm.io.sklearn_datasets import SklearnDatasetReader
from daskgmm.io.zarr_stores import ZarrDirectoryReader, ZarrZipReader

__all__ = ["ArraySource", "HDF5Reader", "HDF5Slicer", "NpyRangeSlicer", "NpyReader",
           "ParquetReader", "Reader", "SklearnDatasetReader", "ZarrDirectoryReader",
           "ZarrZipReader", "describe_array", "get_reader", "list_readers", "open_array",
           "register_reader"]

_READERS: list[Any] = [ZarrDirectoryReader(), ZarrZipReader(), HDF5Reader(), NpyReader(),
                       ParquetReader(), SklearnDatasetReader()]


def register_reader(reader: Any, *, first: bool = False) -> None:
    """Add a reader (a :class:`~daskgmm.io.reader_base.Reader`: ``name``,
    ``description``, ``can_open`` or ``sniff``/``matches_extension``, ``open``) to the
    registry, replacing one of the same name; ``first`` puts it before the built-in
    ones, so it wins ties."""
    for method in ("can_open", "open"):
        if not callable(getattr(reader, method, None)):
            raise TypeError(f"a reader needs a callable {method}(); got {reader!r}")
    _READERS[:] = [r for r in _READERS if r.name != getattr(reader, "name", None)]
    _READERS.insert(0 if first else len(_READERS), reader)


def list_readers() -> list[str]:
    """Names of the registered readers, in the order they are tried."""
    return [r.name for r in _READERS]


def _no_bucket(loc: Location) -> str:
    """`` (there is no bucket NAME)`` when the URL's bucket (or container) is missing."""
    bucket = loc.path.split("/", 1)[0]
    if not loc.listable or not bucket or bucket == loc.path.rstrip("/"):
        return ""
    try:
        return "" if loc.fs.exists(bucket) else f" (there is no bucket {bucket!r})"
    except Exception:  # the question is a courtesy; the answer above stands
        return ""


def get_reader(path: str | os.PathLike | Location, *,
               storage_options: dict | None = None) -> Any:
    """The reader :func:`open_array` would use for ``path``: the content (magic bytes,
    layout) decides, then the extension. DataNotFoundError (nothing there),
    DataSourceError (no reader) or StorageError (unreachable, access refused)."""
    text = path.original if isinstance(path, Location) else os.fspath(path)
    for reader in _READERS:  # readers of pseudo-paths such as "sklearn:iris" first
        if getattr(reader, "pseudo_paths", False) and reader.can_open(text):
            return reader
    loc = parse_location(path, storage_options)
    with storage_errors("cannot open", loc):
        # Over HTTP a directory has no object of its own: look for zarr metadata in it.
        if not loc.exists() and (loc.listable or not any(
                loc.join(name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))):
            raise DataNotFoundError(f"No such file or store: {loc.display!r}"
                                    + _no_bucket(loc))
        for method in ("sniff", "matches_extension"):
            for reader in _READERS:
                ask = getattr(reader, method, None) or reader.can_open
                if not getattr(reader, "pseudo_paths", False) and ask(loc):
                    return reader
        kind = "directory" if loc.isdir() else "file"
    formats = "; ".join(getattr(r, "description", "") or r.name for r in _READERS)
    raise DataSourceError(f"Cannot open {loc.display!r}: this {kind} is in no format "
                          f"daskgmm can read. Supported formats: {formats}.")


def open_array(path: str | os.PathLike | Location, dataset: str | None = None,
               chunk_rows: int | None = None, *, storage_options: dict | None = None,
               columns: list[str] | None = None, allow_missing_chunks: bool = False,
               target_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> da.Array:
    """Open a Zarr store (directory or local ``.zip``), HDF5 file, ``.npy`` file, Parquet
    file or directory, or ``sklearn:NAME``, local or at a URL of any fsspec protocol
    (``storage_options`` reach the workers and are never shown), as a lazy
    ``(n_samples, n_features)`` float64 or float32 Dask array chunked along rows and
    named after the stored data.

    ``dataset``: the array inside a Zarr group or HDF5 file (default: the only 2-D one,
    or the one a generated data set names). ``chunk_rows``: rows per chunk (default:
    whole storage chunks merged up to ``target_chunk_bytes``; Parquet: whole row groups).
    ``columns``: Parquet feature columns (default: the numeric ones).
    ``allow_missing_chunks``: accept a store whose writer looks unfinished (absent
    chunks read as the fill value). Raises DataNotFoundError, DataSourceError,
    IncompleteStoreError, InvalidDataError, MissingDependencyError, StorageError;
    ValueError for ``chunk_rows < 1``."""
    check_chunk_rows(chunk_rows)
    if int(target_chunk_bytes) < 1:
        raise ValueError(f"target_chunk_bytes must be >= 1, got {target_chunk_bytes}")
    reader = get_reader(path, storage_options=storage_options)
    return reader.open(path, dataset, chunk_rows, target_chunk_bytes=target_chunk_bytes,
                       storage_options=storage_options,
                       allow_missing_chunks=allow_missing_chunks,
                       **({"columns": columns} if columns is not None else {}))


def describe_array(x: da.Array) -> dict:
    """``shape``, ``dtype``, ``chunks_rows`` (the row chunks, or ``{first, last,
    count}`` beyond 10), ``n_chunks`` and ``chunk_bytes`` (of the largest; None when
    the sizes are unknown) of a Dask array, JSON-ready (for reports)."""
    rows = [int(c) if not math.isnan(c) else None for c in x.chunks[0]] if x.ndim else []
    known = all(not math.isnan(c) for dim in x.chunks for c in dim)
    return {"shape": [int(s) if not math.isnan(s) else None for s in x.shape],
            "dtype": str(x.dtype),
            "chunks_rows": ({"first": rows[0], "last": rows[-1], "count": len(rows)}
                            if len(rows) > 10 else rows),
            "n_chunks": int(x.npartitions),
            "chunk_bytes": (int(math.prod(max(dim) if dim else 0 for dim in x.chunks)
                                * x.dtype.itemsize) if known else None)}
