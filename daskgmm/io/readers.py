"""Open arrays on disk as lazy, row-chunked Dask arrays.

:func:`open_array` is the single entry point. It looks at a path, picks a reader from a
small registry (in the spirit of xarray's backend plugins) and returns a Dask array whose
chunks each hold a block of rows with *all* the columns, which is what the EM kernels
consume. Opening only reads metadata; data is read chunk by chunk when the graph runs.

Supported formats
-----------------
* Zarr format 2 and 3 directory stores (a directory holding ``zarr.json``, ``.zarray``
  or ``.zgroup``, or whose name ends in ``.zarr``);
* Zarr zip stores (``.zip``);
* HDF5 files read with h5py (``.h5``, ``.hdf5``, ``.he5`` or the HDF5 signature);
* NumPy ``.npy`` files.

The graphs are safe to run on ``distributed`` worker processes: no open file handle is
put into them. HDF5 and ``.npy`` data are read through small picklable array-likes
(:class:`HDF5Slicer`, :class:`NpySlicer`) that store a file name and open the file inside
each read; Zarr arrays pickle as their store location and reopen it (a read-only
``ZipStore`` reopens its zip file when unpickled).

Integer and boolean data are converted to float64 lazily, float16 to float32; float32
and float64 are kept as they are. Anything else is refused with
:class:`~daskgmm.errors.InvalidDataError`.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from daskgmm.errors import (
    DaskGMMError,
    DataNotFoundError,
    DataSourceError,
    InvalidDataError,
)

__all__ = [
    "DEFAULT_TARGET_CHUNK_BYTES",
    "ArraySource",
    "HDF5Reader",
    "HDF5Slicer",
    "NpyReader",
    "NpySlicer",
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

DEFAULT_TARGET_CHUNK_BYTES = 64 * 2**20
"""Default size aimed at for one row chunk of the output array (64 MiB: small enough for
workers of a few hundred MiB, large enough that per-task overhead is negligible)."""

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
NPY_SIGNATURE = b"\x93NUMPY"
ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")

# How many array names to show in an error message before summarising the rest.
_MAX_LISTED = 30


# ---------------------------------------------------------------------------------------
# Helpers shared by the readers
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArraySource:
    """What a reader found at a path, before it is turned into a Dask array.

    Attributes
    ----------
    array : array-like
        Object with ``shape``, ``dtype``, ``ndim`` and ``__getitem__`` that reads the data
        (a zarr array or one of the picklable slicers of this module). It goes into the
        Dask graph, so it must pickle without dragging open file handles along.
    shape : tuple of int
    dtype : numpy.dtype
        The dtype as stored.
    where : str
        Human-readable location (path and dataset) used in messages.
    native_row_chunk : int or None
        Rows per storage chunk (or shard), if the storage is chunked.
    token : tuple
        Extra values that identify this version of the data (e.g. file modification
        times); they go into the Dask key names.
    """

    array: Any
    shape: tuple[int, ...]
    dtype: np.dtype
    where: str
    native_row_chunk: int | None = None
    token: tuple = field(default_factory=tuple)


def _where(path: str, dataset: str | None) -> str:
    return f"{path!r}" + (f", dataset {dataset!r}" if dataset else "")


def _read_head(path: str, n: int = 8) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(n)
    except OSError:
        return b""


def _suffix(path: str) -> str:
    return os.path.splitext(os.fspath(path).rstrip("/\\"))[1].lower()


def _stat_token(path: str) -> tuple:
    try:
        st = os.stat(path)
    except OSError:
        return ()
    return (st.st_mtime_ns, st.st_size)


def _format_listing(arrays: dict[str, tuple[tuple[int, ...], Any]]) -> str:
    if not arrays:
        return "none"
    items = [f"{name!r} {tuple(shape)} {dtype}" for name, (shape, dtype) in arrays.items()]
    if len(items) > _MAX_LISTED:
        rest = len(items) - _MAX_LISTED
        items = [*items[:_MAX_LISTED], f"... and {rest} more"]
    return ", ".join(items)


def _choose_default(arrays: dict[str, tuple[tuple[int, ...], Any]], attrs: Any,
                    where: str, kind: str) -> str:
    """Pick the array to open when no dataset was named.

    The only 2-D array wins; failing that, a file written by
    :func:`daskgmm.io.generate.generate_mixture` names its data array in its ``dataset``
    attribute.
    """
    two_d = [name for name, (shape, _) in arrays.items() if len(shape) == 2]
    if len(two_d) == 1:
        return two_d[0]
    try:
        if attrs is not None and attrs.get("generator") == "daskgmm":
            named = str(attrs.get("dataset", "")).strip("/")
            if named in arrays and len(arrays[named][0]) == 2:
                return named
    except Exception:  # attributes of foreign files can be anything
        pass
    if not two_d:
        raise DataNotFoundError(
            f"{where} holds no 2-D {kind}, so there is nothing to open. "
            f"{kind.capitalize()}s found: {_format_listing(arrays)}."
        )
    raise DataSourceError(
        f"{where} holds {len(two_d)} 2-D {kind}s, so daskgmm cannot guess which one to "
        f"use; pass dataset=<name> to choose. {kind.capitalize()}s found: "
        f"{_format_listing(arrays)}."
    )


def _output_dtype(dtype: np.dtype, where: str) -> np.dtype:
    """The float dtype the data is exposed as, or InvalidDataError."""
    dtype = np.dtype(dtype)
    if dtype.fields is None and dtype.subdtype is None:
        if dtype.kind == "f":
            return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)
        if dtype.kind in "iub":
            return np.dtype(np.float64)
    kinds = {
        "c": "complex numbers",
        "O": "Python objects (e.g. variable-length strings)",
        "S": "byte strings",
        "U": "strings",
        "T": "strings",
        "V": "structured/compound records",
        "M": "datetimes",
        "m": "timedeltas",
    }
    what = kinds.get(dtype.kind, "a non-numeric type")
    if dtype.fields is not None:
        what = "structured/compound records"
    raise InvalidDataError(
        f"{where} has dtype {dtype} ({what}); daskgmm needs real numbers: float32 or "
        "float64 (integer and boolean data are converted to float64). Convert the data "
        "to a float array of shape (n_samples, n_features) and save it again."
    )


def _validate_shape(shape: tuple[int, ...], where: str) -> None:
    ndim = len(shape)
    if ndim != 2:
        if ndim == 1:
            hint = ("reshape it to (n_samples, n_features), e.g. x.reshape(-1, 1) for a "
                    "single feature, and save it again")
        elif ndim == 0:
            hint = "store a 2-D array of shape (n_samples, n_features) instead"
        else:
            hint = ("reshape it to (n_samples, n_features), e.g. x.reshape(len(x), -1) to "
                    "flatten the trailing axes into features, and save it again")
        raise InvalidDataError(
            f"{where} has shape {tuple(shape)} ({ndim}-D), but daskgmm needs a 2-D array "
            f"of shape (n_samples, n_features): {hint}."
        )
    if 0 in shape:
        raise InvalidDataError(
            f"{where} is empty (shape {tuple(shape)}); it needs at least one sample and "
            "one feature, as a 2-D array of shape (n_samples, n_features)."
        )


def _check_chunk_rows(chunk_rows: int | None) -> None:
    if chunk_rows is None:
        return
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)):
        raise TypeError(f"chunk_rows must be an integer or None, got {chunk_rows!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")


def _rows_per_chunk(n_samples: int, n_features: int, itemsize: int,
                    chunk_rows: int | None, native_row_chunk: int | None,
                    target_chunk_bytes: int) -> int:
    """Rows per output chunk (see :func:`open_array` for the rule)."""
    if chunk_rows is not None:
        return int(min(chunk_rows, n_samples))
    rows = max(1, int(target_chunk_bytes) // max(1, n_features * itemsize))
    if native_row_chunk and native_row_chunk > 0:
        rows = max(native_row_chunk, (rows // native_row_chunk) * native_row_chunk)
    return int(min(rows, n_samples))


def _split_key(key: Any, shape: tuple[int, ...]) -> tuple[tuple, tuple | None, bool]:
    """Split a basic-indexing key into a contiguous read and an in-memory post-index.

    Returns ``(read_key, post_key, empty)``. ``read_key`` only holds integers and
    step-1 slices (what any storage library reads efficiently), ``post_key`` applies
    steps, reversals and array indices to the result (``None`` if there is nothing to
    do) and ``empty`` says the selection has no elements.
    """
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = len(shape) - (len(key) - 1)
        key = key[:i] + (slice(None),) * fill + key[i + 1:]
    if len(key) > len(shape):
        raise IndexError(f"too many indices ({len(key)}) for an array of shape {shape}")
    key = key + (slice(None),) * (len(shape) - len(key))
    read: list = []
    post: list = []
    needs_post = False
    empty = False
    for k, n in zip(key, shape, strict=True):
        if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
            i = int(k)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for an axis of size {n}")
            read.append(i % n)
        elif isinstance(k, slice):
            start, stop, step = k.indices(n)
            count = len(range(start, stop, step))
            if count == 0:
                read.append(slice(0, 0))
                post.append(slice(None))
                empty = True
            elif step == 1:
                read.append(slice(start, stop))
                post.append(slice(None))
            else:
                last = start + (count - 1) * step
                lo, hi = min(start, last), max(start, last) + 1
                read.append(slice(lo, hi))
                post.append(slice(start - lo, None, step))
                needs_post = True
        else:  # arrays, lists, boolean masks: read the whole axis, index in memory
            read.append(slice(0, n))
            post.append(k)
            needs_post = True
            if np.size(k) == 0:
                empty = True
    return tuple(read), (tuple(post) if needs_post else None), empty


def _result_shape(read: tuple, post: tuple | None, shape: tuple[int, ...],
                  dtype: np.dtype) -> tuple[int, ...]:
    """Shape of an (empty) selection, computed without touching the file."""
    dims = [len(range(*k.indices(n))) for k, n in zip(read, shape, strict=True)
            if isinstance(k, slice)]
    out = np.empty(dims, dtype=dtype)
    return out[post].shape if post is not None else out.shape


# ---------------------------------------------------------------------------------------
# Picklable lazy array-likes
# ---------------------------------------------------------------------------------------


class _ShapedArray:
    """``ndim``, ``size`` and ``len`` from ``shape``, for the lazy file-backed arrays."""

    shape: tuple[int, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]


class HDF5Slicer(_ShapedArray):
    """Picklable, read-only view of an HDF5 dataset that opens the file on each read.

    Only the file name, dataset name, shape and dtype are stored, so the object can go
    into a Dask graph and be shipped to worker processes; no h5py handle is ever kept.
    Each ``__getitem__`` opens the file read-only, reads the selection and closes it.

    Parameters
    ----------
    filename : str
        Path of the HDF5 file.
    dataset : str
        Path of the dataset inside the file.
    shape : tuple of int
    dtype : numpy.dtype
        Shape and dtype of the dataset, checked again at each read so a file replaced
        under our feet is noticed.
    """

    __slots__ = ("dataset", "dtype", "filename", "shape")

    def __init__(self, filename: str, dataset: str, shape: tuple[int, ...],
                 dtype: np.dtype) -> None:
        self.filename = os.fspath(filename)
        self.dataset = dataset
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)

    def __getstate__(self) -> tuple:
        return (self.filename, self.dataset, self.shape, self.dtype)

    def __setstate__(self, state: tuple) -> None:
        self.filename, self.dataset, self.shape, dtype = state
        self.dtype = np.dtype(dtype)

    def __repr__(self) -> str:
        return (f"HDF5Slicer({self.filename!r}, {self.dataset!r}, shape={self.shape}, "
                f"dtype={self.dtype})")

    def __dask_tokenize__(self) -> tuple:
        return ("HDF5Slicer", self.filename, self.dataset, self.shape, self.dtype.str,
                _stat_token(self.filename))

    def __getitem__(self, key: Any) -> np.ndarray:
        import h5py

        read, post, empty = _split_key(key, self.shape)
        if empty:
            return np.empty(_result_shape(read, post, self.shape, self.dtype), self.dtype)
        try:
            with h5py.File(self.filename, "r") as f:
                dset = f[self.dataset]
                if tuple(dset.shape) != self.shape or dset.dtype != self.dtype:
                    raise DataSourceError(
                        f"{_where(self.filename, self.dataset)} changed since it was opened: "
                        f"now shape {dset.shape} dtype {dset.dtype}, was shape {self.shape} "
                        f"dtype {self.dtype}. Open it again."
                    )
                out = np.asarray(dset[read])
        except FileNotFoundError as exc:
            raise DataNotFoundError(
                f"No such file or store: {self.filename!r} (it was there when the array "
                "was opened)") from exc
        except KeyError as exc:
            raise DataNotFoundError(
                f"{_where(self.filename, self.dataset)} no longer exists") from exc
        except OSError as exc:
            raise DataSourceError(
                f"Cannot read {_where(self.filename, self.dataset)}: {exc}") from exc
        return out[post] if post is not None else out


class NpySlicer(_ShapedArray):
    """Picklable, read-only view of a ``.npy`` file that memory-maps it on each read.

    A :class:`numpy.memmap` pickles by copying its whole content, so it must not go into
    a Dask graph. This object stores the path, header offset, shape, dtype and memory
    order, and memory-maps the file (``np.load(path, mmap_mode="r")``) inside
    ``__getitem__``, returning an in-memory copy of the selection.

    Parameters
    ----------
    filename : str
    offset : int
        Byte offset of the data (the header length), checked at each read.
    shape : tuple of int
    dtype : numpy.dtype
    fortran_order : bool
    """

    __slots__ = ("dtype", "filename", "fortran_order", "offset", "shape")

    def __init__(self, filename: str, offset: int, shape: tuple[int, ...], dtype: np.dtype,
                 fortran_order: bool = False) -> None:
        self.filename = os.fspath(filename)
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.fortran_order = bool(fortran_order)

    def __getstate__(self) -> tuple:
        return (self.filename, self.offset, self.shape, self.dtype, self.fortran_order)

    def __setstate__(self, state: tuple) -> None:
        self.filename, self.offset, self.shape, dtype, self.fortran_order = state
        self.dtype = np.dtype(dtype)

    def __repr__(self) -> str:
        return (f"NpySlicer({self.filename!r}, offset={self.offset}, shape={self.shape}, "
                f"dtype={self.dtype}, fortran_order={self.fortran_order})")

    def __dask_tokenize__(self) -> tuple:
        return ("NpySlicer", self.filename, self.offset, self.shape, self.dtype.str,
                self.fortran_order, _stat_token(self.filename))

    def __getitem__(self, key: Any) -> np.ndarray:
        read, post, empty = _split_key(key, self.shape)
        if empty:
            return np.empty(_result_shape(read, post, self.shape, self.dtype), self.dtype)
        try:
            mm = np.load(self.filename, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as exc:
            raise DataNotFoundError(
                f"No such file or store: {self.filename!r} (it was there when the array "
                "was opened)") from exc
        except (OSError, ValueError) as exc:
            raise DataSourceError(f"Cannot read {self.filename!r}: {exc}") from exc
        try:
            if (mm.shape != self.shape or mm.dtype != self.dtype
                    or getattr(mm, "offset", self.offset) != self.offset):
                raise DataSourceError(
                    f"{self.filename!r} changed since it was opened: now shape {mm.shape} "
                    f"dtype {mm.dtype}, was shape {self.shape} dtype {self.dtype}. "
                    "Open it again."
                )
            out = np.array(mm[read])  # copy out of the map
        finally:
            mmap_obj = getattr(mm, "_mmap", None)
            del mm
            if mmap_obj is not None:
                try:
                    mmap_obj.close()
                except (BufferError, ValueError):  # still referenced elsewhere
                    pass
        return out[post] if post is not None else out


# ---------------------------------------------------------------------------------------
# Readers
# ---------------------------------------------------------------------------------------


class Reader:
    """Base class of the format readers used by :func:`open_array`.

    A reader says whether it can open a path (:meth:`can_open`, by content first via
    :meth:`sniff`, then by extension) and opens it (:meth:`open`). Subclasses implement
    :meth:`sniff` and :meth:`locate`; the common chunking, dtype and shape checks live
    here.

    Attributes
    ----------
    name : str
        Short name (``"zarr"``, ``"hdf5"``...).
    description : str
        What the reader opens, shown when no reader can open a path.
    extensions : tuple of str
        Lower-case file name suffixes, with the dot.
    """

    name: str = ""
    description: str = ""
    extensions: tuple[str, ...] = ()

    def sniff(self, path: str) -> bool:
        """Whether the content at ``path`` (magic bytes, directory layout) is ours."""
        return False

    def matches_extension(self, path: str) -> bool:
        """Whether the file name of ``path`` has one of :attr:`extensions`."""
        return _suffix(path) in self.extensions

    def can_open(self, path: str | os.PathLike) -> bool:
        """Whether this reader can open ``path`` (content first, then extension)."""
        path = os.fspath(path)
        return self.sniff(path) or self.matches_extension(path)

    def locate(self, path: str, dataset: str | None) -> ArraySource:
        """Find the array at ``path``/``dataset`` and describe it, reading metadata only."""
        raise NotImplementedError

    def open(self, path: str | os.PathLike, dataset: str | None = None,
             chunk_rows: int | None = None, *,
             target_chunk_bytes: int = DEFAULT_TARGET_CHUNK_BYTES) -> da.Array:
        """Open ``path`` (and ``dataset`` inside it) as a lazy row-chunked Dask array.

        See :func:`open_array` for the parameters, the chunking rule and the errors.
        """
        _check_chunk_rows(chunk_rows)
        path = os.fspath(path)
        src = self.locate(path, dataset)
        _validate_shape(src.shape, src.where)
        out_dtype = _output_dtype(src.dtype, src.where)
        n_samples, n_features = src.shape
        rows = _rows_per_chunk(n_samples, n_features, out_dtype.itemsize, chunk_rows,
                               src.native_row_chunk, target_chunk_bytes)
        chunks = (_even_chunks(n_samples, rows), (n_features,))
        token = tokenize(self.name, os.path.abspath(path), dataset, src.shape,
                         src.dtype.str, chunks, src.token)
        x = da.from_array(
            _ReadGuard(src.array, src.where),
            chunks=chunks,
            name=f"{self.name}-{token}",
            lock=False,
            asarray=True,
            fancy=False,
            meta=np.empty((0, 0), dtype=src.dtype),
            inline_array=False,
        )
        if x.dtype != out_dtype:
            x = x.astype(out_dtype)
        return x

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.description}>"


class _ReadGuard:
    """Wraps a readable array so that a failed read names the store and the rows.

    A corrupt chunk otherwise surfaces deep inside a fit as, say, a bare
    ``RuntimeError('Zstd decompression error')``. Picklable when the array is.
    """

    def __init__(self, array: Any, where: str) -> None:
        self.array = array
        self.where = where
        self.shape = tuple(array.shape)
        self.dtype = np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return self.array[key]
        except DaskGMMError:
            raise
        except Exception as exc:
            rows = key[0] if isinstance(key, tuple) and key else key
            if isinstance(rows, slice):
                rows = f"rows {rows.start}..{(rows.stop or self.shape[0]) - 1}"
            raise DataSourceError(
                f"Cannot read {rows} of {self.where}: {type(exc).__name__}: {exc}. The store "
                "may be damaged; check or rewrite it."
            ) from exc


def _even_chunks(n: int, rows: int) -> tuple[int, ...]:
    full, rest = divmod(n, rows)
    return (rows,) * full + ((rest,) if rest else ())


def _zarr_error(path: str, exc: BaseException) -> DataSourceError:
    return DataSourceError(
        f"Cannot read the zarr store {path!r}: it is unreadable or corrupt "
        f"({type(exc).__name__}: {exc})."
    )


class _ZarrReaderBase(Reader):
    """Shared logic of the zarr directory and zip readers."""

    def _store(self, path: str) -> Any:
        raise NotImplementedError

    def locate(self, path: str, dataset: str | None) -> ArraySource:
        import zarr
        from zarr.errors import NodeNotFoundError

        dataset = (dataset or "").strip("/") or None
        try:
            store = self._store(path)
            node = zarr.open(store=store, mode="r")
        except DataSourceError:
            raise
        except NodeNotFoundError as exc:
            raise DataSourceError(
                f"{path!r} is not a zarr store: no zarr metadata (zarr.json, .zarray or "
                f".zgroup) found at its root ({exc})."
            ) from exc
        except FileNotFoundError as exc:
            raise DataNotFoundError(f"No such file or store: {path!r}") from exc
        except Exception as exc:
            raise _zarr_error(path, exc) from exc

        if isinstance(node, zarr.Group):
            try:
                arrays = {name: (tuple(a.shape), a.dtype)
                          for name, a in node.members(max_depth=None)
                          if isinstance(a, zarr.Array)}
            except Exception as exc:
                raise _zarr_error(path, exc) from exc
            if dataset is None:
                dataset = _choose_default(arrays, node.attrs, repr(path), "array")
            try:
                arr = node[dataset]
            except KeyError as exc:
                raise DataNotFoundError(
                    f"No array {dataset!r} in the zarr store {path!r}. Arrays in it: "
                    f"{_format_listing(arrays)}."
                ) from exc
            except Exception as exc:
                raise _zarr_error(path, exc) from exc
            if not isinstance(arr, zarr.Array):
                inside = {k: v for k, v in arrays.items() if k.startswith(dataset + "/")}
                raise DataSourceError(
                    f"{_where(path, dataset)} is a group, not an array. Arrays in it: "
                    f"{_format_listing(inside)}."
                )
        else:
            if dataset is not None:
                raise DataSourceError(
                    f"{path!r} is a zarr array, not a group, so there is no dataset "
                    f"{dataset!r} inside it; pass dataset=None."
                )
            arr = node

        native = arr.shards if getattr(arr, "shards", None) else arr.chunks
        native_rows = int(native[0]) if native and len(native) >= 1 else None
        meta_file = "zarr.json" if arr.metadata.zarr_format == 3 else ".zarray"
        token = _stat_token(os.path.join(path, *(dataset or "").split("/"), meta_file))
        return ArraySource(
            array=arr,
            shape=tuple(int(s) for s in arr.shape),
            dtype=np.dtype(arr.dtype),
            where=_where(path, dataset),
            native_row_chunk=native_rows,
            token=(arr.metadata.zarr_format, token or _stat_token(path)),
        )


class ZarrDirectoryReader(_ZarrReaderBase):
    """Zarr format 2 or 3 directory stores (``zarr.storage.LocalStore``)."""

    name = "zarr"
    description = ("Zarr v2/v3 directory store (a directory with zarr.json, .zarray or "
                   ".zgroup; usually named *.zarr)")
    extensions = (".zarr",)

    def sniff(self, path: str) -> bool:
        return os.path.isdir(path) and any(
            os.path.isfile(os.path.join(path, name))
            for name in ("zarr.json", ".zarray", ".zgroup"))

    def matches_extension(self, path: str) -> bool:
        return os.path.isdir(path) and super().matches_extension(path)

    def _store(self, path: str) -> Any:
        from zarr.storage import LocalStore

        return LocalStore(path, read_only=True)


class ZarrZipReader(_ZarrReaderBase):
    """Zarr stores inside a zip file (``zarr.storage.ZipStore``, read-only).

    A read-only ``ZipStore`` drops its zip handle and lock when pickled and reopens the
    file when unpickled, so the zarr array can go into graphs run on worker processes.
    """

    name = "zarr-zip"
    description = "Zarr zip store (*.zip)"
    extensions = (".zip",)

    def sniff(self, path: str) -> bool:
        return os.path.isfile(path) and _read_head(path, 4) in ZIP_SIGNATURES

    def matches_extension(self, path: str) -> bool:
        return os.path.isfile(path) and super().matches_extension(path)

    def _store(self, path: str) -> Any:
        from zarr.storage import ZipStore

        if not zipfile.is_zipfile(path):
            raise DataSourceError(
                f"Cannot read the zarr store {path!r}: it is not a valid zip file "
                "(unreadable or corrupt)."
            )
        return ZipStore(path, mode="r")


class HDF5Reader(Reader):
    """HDF5 files read with h5py, through :class:`HDF5Slicer`."""

    name = "hdf5"
    description = "HDF5 file (*.h5, *.hdf5, *.he5)"
    extensions = (".h5", ".hdf5", ".he5")

    def sniff(self, path: str) -> bool:
        if not os.path.isfile(path):
            return False
        if _read_head(path, 8) == HDF5_SIGNATURE:
            return True
        # The signature may follow a user block of 512, 1024, 2048... bytes.
        try:
            import h5py

            return bool(h5py.is_hdf5(path))
        except Exception:
            return False

    def matches_extension(self, path: str) -> bool:
        return os.path.isfile(path) and super().matches_extension(path)

    def locate(self, path: str, dataset: str | None) -> ArraySource:
        import h5py

        dataset = (dataset or "").strip("/") or None
        try:
            f = h5py.File(path, "r")
        except FileNotFoundError as exc:
            raise DataNotFoundError(f"No such file or store: {path!r}") from exc
        except OSError as exc:
            raise DataSourceError(
                f"Cannot read the HDF5 file {path!r}: it is unreadable or corrupt ({exc})."
            ) from exc
        with f:
            arrays: dict[str, tuple[tuple[int, ...], Any]] = {}

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    arrays[name] = (tuple(obj.shape or ()), obj.dtype)

            try:
                f.visititems(visit)
            except Exception as exc:
                raise DataSourceError(
                    f"Cannot read the HDF5 file {path!r}: it is unreadable or corrupt "
                    f"({type(exc).__name__}: {exc})."
                ) from exc
            if dataset is None:
                dataset = _choose_default(arrays, _h5_attrs(f), repr(path), "dataset")
            try:
                obj = f[dataset]
            except KeyError as exc:
                raise DataNotFoundError(
                    f"No dataset {dataset!r} in the HDF5 file {path!r}. Datasets in it: "
                    f"{_format_listing(arrays)}."
                ) from exc
            if not isinstance(obj, h5py.Dataset):
                inside = {k: v for k, v in arrays.items() if k.startswith(dataset + "/")}
                raise DataSourceError(
                    f"{_where(path, dataset)} is a group, not a dataset. Datasets in it: "
                    f"{_format_listing(inside)}."
                )
            shape = tuple(int(s) for s in (obj.shape or ()))
            dtype = obj.dtype
            chunks = obj.chunks
            name = obj.name  # absolute path inside the file
        return ArraySource(
            array=HDF5Slicer(os.path.abspath(path), name, shape, dtype),
            shape=shape,
            dtype=np.dtype(dtype),
            where=_where(path, dataset),
            native_row_chunk=int(chunks[0]) if chunks else None,
            token=_stat_token(path),
        )


def _h5_attrs(obj: Any) -> dict:
    """The attributes of an h5py object as a dict, skipping any that cannot be read."""
    out = {}
    try:
        keys = list(obj.attrs.keys())
    except Exception:
        return out
    for key in keys:
        try:
            value = obj.attrs[key]
        except Exception:
            continue
        out[key] = value.decode() if isinstance(value, bytes) else value
    return out


class NpyReader(Reader):
    """NumPy ``.npy`` files, memory-mapped inside each read through :class:`NpySlicer`."""

    name = "npy"
    description = "NumPy array file (*.npy)"
    extensions = (".npy",)

    def sniff(self, path: str) -> bool:
        return os.path.isfile(path) and _read_head(path, 6) == NPY_SIGNATURE

    def matches_extension(self, path: str) -> bool:
        return os.path.isfile(path) and super().matches_extension(path)

    def locate(self, path: str, dataset: str | None) -> ArraySource:
        if dataset:
            raise DataSourceError(
                f"{path!r} is a .npy file, which holds a single array, so there is no "
                f"dataset {dataset!r} inside it; pass dataset=None."
            )
        try:
            mm = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as exc:
            raise DataNotFoundError(f"No such file or store: {path!r}") from exc
        except ValueError as exc:
            if "object" in str(exc).lower() or "pickle" in str(exc).lower():
                raise InvalidDataError(
                    f"{path!r} holds Python objects (dtype object), not numbers; daskgmm "
                    "needs a float32 or float64 array of shape (n_samples, n_features)."
                ) from exc
            raise DataSourceError(
                f"Cannot read the .npy file {path!r}: it is unreadable or corrupt ({exc})."
            ) from exc
        except OSError as exc:
            raise DataSourceError(
                f"Cannot read the .npy file {path!r}: it is unreadable or corrupt ({exc})."
            ) from exc
        try:
            shape = tuple(int(s) for s in mm.shape)
            dtype = mm.dtype
            offset = int(getattr(mm, "offset", 0))
            fortran = bool(mm.flags.f_contiguous and not mm.flags.c_contiguous)
        finally:
            del mm
        return ArraySource(
            array=NpySlicer(os.path.abspath(path), offset, shape, dtype, fortran),
            shape=shape,
            dtype=np.dtype(dtype),
            where=_where(path, None),
            native_row_chunk=None,
            token=_stat_token(path),
        )


_READERS: list[Reader] = [ZarrDirectoryReader(), ZarrZipReader(), HDF5Reader(), NpyReader()]


def register_reader(reader: Reader, *, first: bool = False) -> None:
    """Add a reader to the registry used by :func:`open_array`.

    Parameters
    ----------
    reader : Reader
        Object with ``name``, ``description``, ``can_open(path)`` (or ``sniff`` and
        ``matches_extension``) and ``open(path, dataset, chunk_rows=None, *,
        target_chunk_bytes=...)``. A reader with the same name is replaced.
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
    return "; ".join(r.description or r.name for r in _READERS)


def get_reader(path: str | os.PathLike) -> Reader:
    """The reader :func:`open_array` would use for ``path``.

    Every reader is first asked whether the content (magic bytes, directory layout) is
    its format; only if none recognises it is the file name extension considered.

    Raises
    ------
    DataNotFoundError
        If ``path`` does not exist.
    DataSourceError
        If no reader can open ``path``.
    """
    path = os.fspath(path)
    for reader in _READERS:  # readers of pseudo-paths such as "sklearn:iris" first
        if getattr(reader, "pseudo_paths", False) and reader.can_open(path):
            return reader
    if not os.path.exists(path):
        raise DataNotFoundError(f"No such file or store: {path!r}")
    checks: Iterable[Callable[[Reader], bool]] = (
        lambda r: bool(getattr(r, "sniff", r.can_open)(path)),
        lambda r: bool(getattr(r, "matches_extension", r.can_open)(path)),
    )
    for check in checks:
        for reader in _READERS:
            if check(reader):
                return reader
    kind = "directory" if os.path.isdir(path) else "file"
    raise DataSourceError(
        f"Cannot open {path!r}: this {kind} is in no format daskgmm can read. "
        f"Supported formats: {_supported_formats()}."
    )


def open_array(path: str | os.PathLike, dataset: str | None = None,
               chunk_rows: int | None = None, *,
               target_chunk_bytes: int = DEFAULT_TARGET_CHUNK_BYTES) -> da.Array:
    """Open an array on disk as a lazy, row-chunked Dask array.

    Only metadata is read here; the data is read chunk by chunk when the graph runs,
    possibly on ``distributed`` worker processes (the graph holds no open file handle).

    Parameters
    ----------
    path : str or os.PathLike
        A Zarr v2/v3 directory store, a Zarr zip store (``.zip``), an HDF5 file or a
        ``.npy`` file. The format is recognised from the content first (magic bytes,
        ``zarr.json``/``.zarray``/``.zgroup``), then from the extension.
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
        the number of samples.
    target_chunk_bytes : int, default 64 MiB
        Chunk size aimed at when ``chunk_rows`` is None.

    Returns
    -------
    dask.array.Array
        Shape ``(n_samples, n_features)``, chunks ``(row_chunks, (n_features,))``,
        dtype float64 or float32. Integer and boolean data are converted to float64,
        float16 to float32, lazily.

    Raises
    ------
    DataNotFoundError
        ``path`` does not exist, or ``dataset`` is not in it (the message lists the
        arrays that are).
    DataSourceError
        No reader recognises ``path`` (the message lists the supported formats), the
        store is unreadable or corrupt, or ``dataset`` is ambiguous or names a group.
    InvalidDataError
        The array is not 2-D, is empty, or does not hold real numbers.
    ValueError
        ``chunk_rows < 1`` or ``target_chunk_bytes < 1``.

    Examples
    --------
    >>> x = open_array("data.zarr", "embeddings/X")  # doctest: +SKIP
    >>> x.chunks[1] == (x.shape[1],)  # doctest: +SKIP
    True
    """
    _check_chunk_rows(chunk_rows)
    if int(target_chunk_bytes) < 1:
        raise ValueError(f"target_chunk_bytes must be >= 1, got {target_chunk_bytes}")
    reader = get_reader(path)
    return reader.open(path, dataset, chunk_rows, target_chunk_bytes=target_chunk_bytes)


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


# ---------------------------------------------------------------------------------------
# scikit-learn's bundled datasets ("sklearn:iris")
# ---------------------------------------------------------------------------------------

SKLEARN_PREFIX = "sklearn:"
_SKLEARN_DATASETS = {
    "iris": "load_iris",
    "wine": "load_wine",
    "digits": "load_digits",
    "breast_cancer": "load_breast_cancer",
}


class SklearnDatasetReader(Reader):
    """The small datasets bundled with scikit-learn, as ``sklearn:NAME`` pseudo-paths.

    ``open_array("sklearn:iris")`` is the 150 x 4 iris measurements as a float64 Dask
    array in one chunk (or ``chunk_rows`` rows per chunk). The data is read from files
    shipped inside scikit-learn; nothing is downloaded. Available names: ``iris``,
    ``wine``, ``digits`` and ``breast_cancer``.
    """

    name = "sklearn"
    description = "scikit-learn bundled dataset (sklearn:iris, sklearn:wine, ...)"
    pseudo_paths = True

    def can_open(self, path: str | os.PathLike) -> bool:
        return os.fspath(path).lower().startswith(SKLEARN_PREFIX)

    def locate(self, path: str, dataset: str | None) -> ArraySource:
        name = path[len(SKLEARN_PREFIX):].strip().lower()
        if name not in _SKLEARN_DATASETS:
            raise DataNotFoundError(
                f"No scikit-learn bundled dataset {name!r} (from {path!r}); available: "
                + ", ".join(SKLEARN_PREFIX + n for n in _SKLEARN_DATASETS) + "."
            )
        if dataset:
            raise DataSourceError(
                f"{path!r} is a single array, so there is no dataset {dataset!r} inside "
                "it; pass dataset=None."
            )
        import sklearn.datasets

        data = np.ascontiguousarray(
            getattr(sklearn.datasets, _SKLEARN_DATASETS[name])().data, dtype=np.float64)
        return ArraySource(array=data, shape=tuple(data.shape), dtype=data.dtype,
                           where=repr(path), native_row_chunk=data.shape[0],
                           token=(name,))

    def open(self, path: str | os.PathLike, dataset: str | None = None,
             chunk_rows: int | None = None, *,
             target_chunk_bytes: int = DEFAULT_TARGET_CHUNK_BYTES) -> da.Array:
        _check_chunk_rows(chunk_rows)
        src = self.locate(os.fspath(path), dataset)
        n = src.shape[0]
        rows = int(min(chunk_rows, n)) if chunk_rows is not None else n
        return da.from_array(src.array, chunks=(_even_chunks(n, rows), (src.shape[1],)),
                             name=f"sklearn-{tokenize(src.token, rows)}")


register_reader(SklearnDatasetReader())
