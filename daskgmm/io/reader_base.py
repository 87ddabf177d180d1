"""What every reader shares: the description of an opened array, shape and dtype
checks, and the :class:`Reader` base class that makes a row-chunked Dask array."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize

from daskgmm.errors import DaskGMMError, DataNotFoundError, DataSourceError, InvalidDataError
from daskgmm.io.chunking import DEFAULT_CHUNK_BYTES, even_chunks, rows_per_chunk
from daskgmm.io.locations import Location, describe_failure, parse_location, scrub_secrets

__all__ = ["ArraySource", "Reader"]

_MAX_LISTED = 30  # array names shown in a message before the rest are counted


@dataclass(frozen=True)
class ArraySource:
    """What a reader found: the readable ``array`` that goes into the graph, its
    ``shape`` and stored ``dtype``, ``where`` (for messages), the storage's row chunk and
    a ``token`` that changes with the stored data (so does the Dask name)."""

    array: Any
    shape: tuple[int, ...]
    dtype: np.dtype
    where: str
    native_row_chunk: int | None = None
    token: tuple = field(default_factory=tuple)


def where(location: Location | str, dataset: str | None) -> str:
    """``'path', dataset 'name'`` for messages (credentials removed from URLs)."""
    shown = location.display if isinstance(location, Location) else str(location)
    return f"{shown!r}" + (f", dataset {dataset!r}" if dataset else "")


def unreadable(what: str, loc: Location, exc: BaseException,
               shown: str | None = None) -> DataSourceError:
    """The error of ``what`` (``"the HDF5 file"``...) at ``loc`` that cannot be read."""
    return DataSourceError(
        f"Cannot read {what} {shown or loc.display!r}: it is unreadable or corrupt "
        f"({type(exc).__name__}: {scrub_secrets(str(exc))}).")


@contextlib.contextmanager
def opening(loc: Location, what: str, shown: str | None = None) -> Iterator[None]:
    """Failures to open ``what`` at ``loc`` inside the block as one-line errors: nothing
    there, a missing filesystem library, or :func:`unreadable` (daskgmm's own errors
    pass through)."""
    try:
        yield
    except DaskGMMError:
        raise
    except FileNotFoundError:
        raise DataNotFoundError(f"No such file or store: {loc.display!r}") from None
    except ImportError as exc:
        raise loc.missing_dependency(exc) from None
    except Exception as exc:
        raise unreadable(what, loc, exc, shown) from None


def suffix(location: Location | str) -> str:
    """Lower-case extension of the last path component (``.zarr``, ``.h5``...), without
    a URL's query string or fragment (``x.npy?sig=...`` is a ``.npy``)."""
    path = location.path if isinstance(location, Location) else os.fspath(location)
    return os.path.splitext(path.split("?", 1)[0].rstrip("/\\"))[1].lower()


def format_listing(arrays: dict[str, tuple[tuple[int, ...], Any]]) -> str:
    if not arrays:
        return "none"
    items = [f"{name!r} {tuple(shape)} {dtype}" for name, (shape, dtype) in arrays.items()]
    if len(items) > _MAX_LISTED:
        rest = len(items) - _MAX_LISTED
        items = [*items[:_MAX_LISTED], f"... and {rest} more"]
    return ", ".join(items)


def choose_default(arrays: dict[str, tuple[tuple[int, ...], Any]], attrs: Any,
                    where: str, kind: str) -> str:
    """The array to open when no dataset was named: the only 2-D one, else the one a
    generated data set names in its ``dataset`` attribute."""
    two_d = [name for name, (shape, _) in arrays.items() if len(shape) == 2]
    if len(two_d) == 1:
        return two_d[0]
    try:  # (HDF5 attributes may be bytes)
        if attrs is not None and attrs.get("generator") in ("daskgmm", b"daskgmm"):
            named = attrs.get("dataset", "")
            named = (named.decode() if isinstance(named, bytes) else str(named)).strip("/")
            if named in arrays and len(arrays[named][0]) == 2:
                return named
    except Exception:  # attributes of foreign files can be anything
        pass
    if not two_d:
        raise DataNotFoundError(
            f"{where} holds no 2-D {kind}, so there is nothing to open. "
            f"{kind.capitalize()}s found: {format_listing(arrays)}."
        )
    raise DataSourceError(
        f"{where} holds {len(two_d)} 2-D {kind}s, so daskgmm cannot guess which one to "
        f"use; pass dataset=<name> to choose. {kind.capitalize()}s found: "
        f"{format_listing(arrays)}."
    )


def output_dtype(dtype: np.dtype, where: str) -> np.dtype:
    """The float dtype the data is exposed as, or InvalidDataError."""
    dtype = np.dtype(dtype)
    if dtype.fields is None and dtype.subdtype is None:
        if dtype.kind == "f":
            return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)
        if dtype.kind in "iub":
            return np.dtype(np.float64)
    kinds = {"c": "complex numbers", "O": "Python objects (e.g. variable-length strings)",
             "S": "byte strings", "U": "strings", "T": "strings", "M": "datetimes",
             "V": "structured/compound records", "m": "timedeltas"}
    what = kinds.get(dtype.kind, "a non-numeric type")
    raise InvalidDataError(
        f"{where} has dtype {dtype} ({what}); daskgmm needs real numbers: float32 or "
        "float64 (integer and boolean data are converted to float64). Convert the data "
        "to a float array of shape (n_samples, n_features) and save it again."
    )


def validate_shape(shape: tuple[int, ...], where: str, ndims: tuple[int, ...] = (2,)
                   ) -> None:
    """Refuse an array that is not 2-D (or of one of ``ndims`` dimensions) or is empty."""
    ndim = len(shape)
    if ndims != (2,):
        if ndim not in ndims or 0 in shape:
            raise InvalidDataError(
                f"{where} has shape {tuple(shape)}; expected a non-empty array of "
                + " or ".join(f"{d}" for d in ndims) + " dimensions.")
        return
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


def check_chunk_rows(chunk_rows: int | None) -> None:
    if chunk_rows is None:
        return
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)):
        raise TypeError(f"chunk_rows must be an integer or None, got {chunk_rows!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")


def split_key(key: Any, shape: tuple[int, ...]) -> tuple[tuple, tuple | None, bool]:
    """Split a basic-indexing key into ``(read_key, post_key, empty)``: a contiguous read
    (integers and step-1 slices), an in-memory post-index (or None), and whether nothing is
    selected."""
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
    needs_post = empty = False
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


class ShapedArray:
    """What the lazy file-backed arrays share: ``ndim``, ``size`` and ``len`` from
    ``shape``, pickling as the constructor's arguments (``_state``), and indexing like
    NumPy around ``_read`` of a contiguous selection (empty ones never touch storage)."""

    shape: tuple[int, ...]
    dtype: np.dtype
    _state: tuple[str, ...] = ()

    def __getstate__(self) -> tuple:
        return tuple(getattr(self, name) for name in self._state)

    def __setstate__(self, state: tuple) -> None:
        for name, value in zip(self._state, state, strict=True):
            setattr(self, name, value)
        self.dtype = np.dtype(self.dtype)

    def __getitem__(self, key: Any) -> np.ndarray:
        read, post, empty = split_key(key, self.shape)
        if empty:  # shaped as the selection, without touching the file
            dims = [len(range(*k.indices(n)))
                    for k, n in zip(read, self.shape, strict=True) if isinstance(k, slice)]
            out = np.empty(dims, dtype=self.dtype)
        else:
            out = self._read(read)
        return out[post] if post is not None else out

    def _read(self, read: tuple) -> np.ndarray:
        raise NotImplementedError

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.shape[0]


class Reader:
    """Base class of the readers of :func:`~daskgmm.io.readers.open_array`, which define
    ``sniff``, ``matches_extension`` and ``locate``; chunking and checks live here."""

    name: str = ""
    description: str = ""
    extensions: tuple[str, ...] = ()
    pseudo_paths: bool = False

    def sniff(self, location: Location) -> bool:
        """Whether the content at ``location`` (magic bytes, directory layout) is ours."""
        return False

    def matches_extension(self, location: Location) -> bool:
        """Whether the file name of ``location`` has one of :attr:`extensions`."""
        return suffix(location) in self.extensions

    def can_open(self, location: Location | str | os.PathLike) -> bool:
        """Whether this reader can open ``location`` (content first, then extension)."""
        loc = parse_location(location)
        return self.sniff(loc) or self.matches_extension(loc)

    def locate(self, location: Location, dataset: str | None, *,
               allow_missing_chunks: bool = False,
               ndims: tuple[int, ...] = (2,)) -> ArraySource:
        """Find and describe the array at ``location``/``dataset`` (metadata only);
        IncompleteStoreError for unwritten chunks unless ``allow_missing_chunks``. ``ndims``:
        the accepted numbers of dimensions."""
        raise NotImplementedError

    def open(self, path: Location | str | os.PathLike, dataset: str | None = None,
             chunk_rows: int | None = None, *,
             target_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
             storage_options: dict | None = None,
             allow_missing_chunks: bool = False, **options: Any) -> da.Array:
        """Open ``path`` (``dataset`` inside) as a lazy row-chunked Dask array (see
        :func:`~daskgmm.io.readers.open_array`)."""
        check_chunk_rows(chunk_rows)
        unused = sorted(k for k, v in options.items() if v is not None)
        if unused:
            raise TypeError(
                f"the {self.name} reader takes no option {', '.join(unused)} "
                f"(it applies to other formats)")
        loc = parse_location(path, storage_options)
        src = self.locate(loc, dataset, allow_missing_chunks=allow_missing_chunks)
        return self.to_dask(src, loc, dataset, chunk_rows, target_chunk_bytes)

    def to_dask(self, src: ArraySource, loc: Location, dataset: str | None,
                chunk_rows: int | None, target_chunk_bytes: int) -> da.Array:
        """The row-chunked Dask array of a located source."""
        validate_shape(src.shape, src.where)
        out_dtype = output_dtype(src.dtype, src.where)
        n_samples, n_features = src.shape
        rows = rows_per_chunk(n_samples, n_features, out_dtype.itemsize, chunk_rows,
                              src.native_row_chunk, target_chunk_bytes)
        chunks = (even_chunks(n_samples, rows), (n_features,))
        token = tokenize(self.name, loc, dataset, src.shape, src.dtype.str, chunks,
                         src.token)
        x = da.from_array(ReadGuard(src.array, src.where, loc), chunks=chunks,
                          name=f"{self.name}-{token}", lock=False, asarray=True, fancy=False,
                          meta=np.empty((0, 0), dtype=src.dtype), inline_array=False)
        if x.dtype != out_dtype:
            x = x.astype(out_dtype)
        return x

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}: {self.description}>"


class ReadGuard:
    """Wraps a readable array so that a failed read names the store and the rows
    (credentials scrubbed); picklable when the array is."""

    def __init__(self, array: Any, where: str, location: Location | None = None) -> None:
        self.array, self.where, self.location = array, where, location
        self.shape, self.dtype = tuple(array.shape), np.dtype(array.dtype)
        self.ndim = len(self.shape)

    def __repr__(self) -> str:
        return f"ReadGuard({self.where})"

    def __getitem__(self, key: Any) -> np.ndarray:
        try:
            return self.array[key]
        except DaskGMMError:
            raise
        except FileNotFoundError as exc:
            raise DataNotFoundError(
                f"Part of {self.where} is gone (it was there when the array was opened): "
                f"{describe_failure(exc, self.location)}") from None
        except Exception as exc:
            rows = key[0] if isinstance(key, tuple) and key else key
            if isinstance(rows, slice):
                rows = f"rows {rows.start}..{(rows.stop or self.shape[0]) - 1}"
            raise DataSourceError(
                f"Cannot read {rows} of {self.where}: "
                f"{describe_failure(exc, self.location)}. The store may be damaged or "
                "unreachable; check or rewrite it.") from None
