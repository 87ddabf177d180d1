"""Open arrays as lazy, row-chunked Dask arrays, from local paths or any fsspec URL.

:func:`open_array` is the single entry point. It looks at a path or URL, picks a reader
from a small registry (in the spirit of xarray's backend plugins) and returns a Dask
array whose chunks each hold a block of rows with *all* the columns, which is what the
EM kernels consume. Opening only reads metadata (and lists the storage once, see
:mod:`daskgmm.io.integrity`); data is read chunk by chunk when the graph runs.

Supported formats (one module each)
-----------------------------------
* Zarr format 2 and 3 directory stores, local or at a URL (:mod:`~daskgmm.io.zarr_stores`);
* Zarr zip stores (``.zip``, local);
* HDF5 files read with h5py, local or at a URL (:mod:`~daskgmm.io.hdf5_files`);
* NumPy ``.npy`` files, memory-mapped or read by byte ranges (:mod:`~daskgmm.io.npy_files`);
* Parquet files and directories of them (:mod:`~daskgmm.io.parquet_tables`);
* scikit-learn's bundled data sets as ``sklearn:iris`` (:mod:`~daskgmm.io.sklearn_datasets`).

URLs are any fsspec protocol (``s3://``, ``gs://``, ``az://``, ``abfs://``,
``http(s)://``, ``memory://``, ``file://`` ...) with ``storage_options``; the
filesystem libraries are optional extras (``pip install "daskgmm[s3]"``). A local path
is a location of fsspec's local filesystem, read through the same code.

The graphs are safe to run on ``distributed`` worker processes: no open file handle is
put into them. Integer and boolean data are converted to float64 lazily, float16 to
float32; float32 and float64 are kept as they are. Anything else is refused with
:class:`~daskgmm.errors.InvalidDataError`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
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

__all__ = [
    "ArraySource",
    "HDF5Reader",
    "HDF5Slicer",
    "NpyRangeSlicer",
    "NpyReader",
    "ParquetReader",
    "Reader",
    "SklearnDatasetReader",
    "ZarrDirectoryReader",
    "ZarrZipReader",
    "describe_array",
    "get_reader",
    "list_readers",
    "open_array",
    "register_reader",
]

_READERS: list[Any] = [ZarrDirectoryReader(), ZarrZipReader(), HDF5Reader(), NpyReader(),
                       ParquetReader(), SklearnDatasetReader()]


def register_reader(reader: Any, *, first: bool = False) -> None:
    """Add a reader to the registry used by :func:`open_array`.

    Parameters
    ----------
    reader : Reader
        Object with ``name``, ``description``, ``can_open(location)`` (or ``sniff`` and
        ``matches_extension``) and ``open(location, dataset, chunk_rows=None, *,
        target_chunk_bytes=..., storage_options=None, allow_missing_chunks=False,
        **options)``; see :class:`~daskgmm.io.reader_base.Reader`. A reader with the
        same name is replaced.
    first : bool, default False
        Put the reader before the built-in ones, so it wins ties.
    """
    for method in ("can_open", "open"):
        if not callable(getattr(reader, method, None)):
            raise TypeError(f"a reader needs a callable {method}(); got {reader!r}")
    _READERS[:] = [r for r in _READERS if r.name != getattr(reader, "name", None)]
    if first:
        _READERS.insert(0, reader)
    else:
        _READERS.append(reader)


def list_readers() -> list[str]:
    """Names of the registered readers, in the order they are tried."""
    return [r.name for r in _READERS]


def _supported_formats() -> str:
    return "; ".join(getattr(r, "description", "") or r.name for r in _READERS)


def _ask(reader: Any, method: str, loc: Location) -> bool:
    return bool((getattr(reader, method, None) or reader.can_open)(loc))


def get_reader(path: str | os.PathLike | Location, *,
               storage_options: dict | None = None) -> Any:
    """The reader :func:`open_array` would use for ``path``.

    Every reader is first asked whether the content (magic bytes, directory layout) is
    its format; only if none recognises it is the file name extension considered.

    Raises
    ------
    DataNotFoundError
        If nothing exists at ``path``.
    DataSourceError
        If no reader can open ``path``.
    MissingDependencyError
        If the filesystem library of a URL's protocol is not installed.
    """
    text = path.original if isinstance(path, Location) else os.fspath(path)
    for reader in _READERS:  # readers of pseudo-paths such as "sklearn:iris" first
        if getattr(reader, "pseudo_paths", False) and reader.can_open(text):
            return reader
    loc = parse_location(path, storage_options)
    with storage_errors("cannot open", loc):
        if not loc.exists() and not _exists_as_prefix(loc):
            raise DataNotFoundError(f"No such file or store: {loc.display!r}"
                                    + _no_bucket(loc))
        checks: Iterable[Callable[[Any], bool]] = (
            lambda r: _ask(r, "sniff", loc),
            lambda r: _ask(r, "matches_extension", loc),
        )
        for check in checks:
            for reader in _READERS:
                if not getattr(reader, "pseudo_paths", False) and check(reader):
                    return reader
        kind = "directory" if loc.isdir() else "file"
    raise DataSourceError(
        f"Cannot open {loc.display!r}: this {kind} is in no format daskgmm can read. "
        f"Supported formats: {_supported_formats()}."
    )


def _no_bucket(loc: Location) -> str:
    """`` (there is no bucket NAME)`` when the URL's bucket (or container) is missing."""
    bucket = loc.path.split("/", 1)[0]
    if not loc.listable or not bucket or bucket == loc.path.rstrip("/"):
        return ""
    try:
        return "" if loc.fs.exists(bucket) else f" (there is no bucket {bucket!r})"
    except Exception:  # the question is a courtesy; the answer above stands
        return ""


def _exists_as_prefix(loc: Location) -> bool:
    """Over HTTP a directory has no object of its own: look for zarr metadata in it."""
    if loc.listable:
        return False
    return any(loc.join(name).exists() for name in ("zarr.json", ".zarray", ".zgroup"))


def open_array(path: str | os.PathLike, dataset: str | None = None,
               chunk_rows: int | None = None, *,
               storage_options: dict | None = None,
               columns: list[str] | None = None,
               allow_missing_chunks: bool = False,
               target_chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> da.Array:
    """Open an array as a lazy, row-chunked Dask array, from a local path or a URL.

    Only metadata is read here (and the storage is listed once); the data is read chunk
    by chunk when the graph runs, possibly on ``distributed`` worker processes, each of
    which opens the data itself (the graph holds no open file handle).

    Parameters
    ----------
    path : str or os.PathLike
        A local path or a URL of any fsspec protocol (``s3://``, ``gs://``, ``az://``,
        ``abfs://``, ``http(s)://``, ``memory://``, ``file://`` ...) to a Zarr v2/v3
        directory store, a Zarr zip store (local ``.zip``), an HDF5 file, a ``.npy``
        file, or a Parquet file or directory of Parquet files. The format is recognised
        from the content first (magic bytes, ``zarr.json``/``.zarray``/``.zgroup``), then
        from the extension.
    dataset : str, optional
        Path of the array inside a Zarr group or an HDF5 file (e.g.
        ``"embeddings/X"``). Must be None when ``path`` is an array itself (a ``.npy``
        file or a Zarr array store). When None and ``path`` is a group or an HDF5 file,
        the only 2-D array in it (searched recursively) is used; a dataset written by
        :func:`daskgmm.io.generate.generate_mixture` names its data array in its metadata.
    chunk_rows : int, optional
        Rows per chunk. By default enough rows for a chunk of about
        ``target_chunk_bytes`` (counted in the output dtype), rounded down to a
        multiple of the storage's row chunk (at least one storage chunk) and clipped to
        the number of samples. (Parquet: row groups are the chunks.)
    storage_options : dict, optional
        Options of the URL's filesystem (endpoint, credentials, ...), passed to fsspec.
        They reach the workers inside the graph but are never shown: messages and
        reprs show ``***`` instead of secrets.
    columns : list of str, optional
        Parquet only: the feature columns (default: every numeric column).
    allow_missing_chunks : bool, default False
        Accept a Zarr or HDF5 store whose chunks are fewer than its chunk grid (absent
        chunks read as the fill value). Needed for stores written with
        ``write_empty_chunks=False``; by default such a store is refused.
    target_chunk_bytes : int, default 64 MiB
        Chunk size aimed at when ``chunk_rows`` is None
        (:data:`daskgmm.io.chunking.DEFAULT_CHUNK_BYTES`).

    Returns
    -------
    dask.array.Array
        Shape ``(n_samples, n_features)``, chunks ``(row_chunks, (n_features,))``,
        dtype float64 or float32. Integer and boolean data are converted to float64,
        float16 to float32, lazily. Its name changes whenever the stored data changes.

    Raises
    ------
    DataNotFoundError
        ``path`` does not exist, or ``dataset`` is not in it (the message lists the
        arrays that are).
    DataSourceError
        No reader recognises ``path`` (the message lists the supported formats), the
        store is unreadable or corrupt, or ``dataset`` is ambiguous or names a group.
    IncompleteStoreError
        Chunks of the array were never written and ``allow_missing_chunks`` is False.
    MissingDependencyError
        The URL's filesystem library is not installed (the message names the extra).
    InvalidDataError
        The array is not 2-D, is empty, or does not hold real numbers.
    ValueError
        ``chunk_rows < 1`` or ``target_chunk_bytes < 1``.

    Examples
    --------
    >>> x = open_array("data.zarr", "embeddings/X")  # doctest: +SKIP
    >>> x = open_array("s3://bucket/data.zarr",
    ...                storage_options={"endpoint_url": "http://127.0.0.1:9000"})  # doctest: +SKIP
    >>> x.chunks[1] == (x.shape[1],)  # doctest: +SKIP
    True
    """
    check_chunk_rows(chunk_rows)
    if int(target_chunk_bytes) < 1:
        raise ValueError(f"target_chunk_bytes must be >= 1, got {target_chunk_bytes}")
    reader = get_reader(path, storage_options=storage_options)
    kwargs: dict[str, Any] = {"target_chunk_bytes": target_chunk_bytes,
                              "storage_options": storage_options,
                              "allow_missing_chunks": allow_missing_chunks}
    if columns is not None:
        kwargs["columns"] = columns
    return reader.open(path, dataset, chunk_rows, **kwargs)


def describe_array(x: da.Array) -> dict:
    """Summarise the shape, dtype and chunking of a Dask array, for reports.

    Parameters
    ----------
    x : dask.array.Array

    Returns
    -------
    dict
        ``shape`` (list of int), ``dtype`` (str), ``chunks_rows`` (list of the row chunk
        sizes, or ``{"first", "last", "count"}`` when there are more than 10 chunks
        and they are not all listed), ``n_chunks`` (total number of chunks) and
        ``chunk_bytes`` (bytes of the largest chunk; None when chunk sizes are
        unknown). Every value is JSON-serialisable.
    """
    rows = [int(c) if not math.isnan(c) else None for c in x.chunks[0]] if x.ndim else []
    if len(rows) > 10:
        chunks_rows: list | dict = {"first": rows[0], "last": rows[-1], "count": len(rows)}
    else:
        chunks_rows = rows
    known = all(not math.isnan(c) for dim in x.chunks for c in dim)
    chunk_bytes = (int(math.prod(max(dim) if dim else 0 for dim in x.chunks)
                       * x.dtype.itemsize) if known else None)
    shape = [int(s) if not math.isnan(s) else None for s in x.shape]
    return {
        "shape": shape,
        "dtype": str(x.dtype),
        "chunks_rows": chunks_rows,
        "n_chunks": int(x.npartitions),
        "chunk_bytes": chunk_bytes,
    }

