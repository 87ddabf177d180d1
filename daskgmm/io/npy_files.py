"""NumPy ``.npy`` files: memory-mapped when local, read by byte ranges at a URL.

The header is parsed once, when the file is opened. Locally each read memory-maps the
file (:class:`NpySlicer`, as fast as before URLs were supported); at a URL each read
fetches exactly the bytes of its rows with one range request (:class:`NpyRangeSlicer`;
one range per column for Fortran-ordered files).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from daskgmm.errors import (
    DataNotFoundError,
    DataSourceError,
    InvalidDataError,
    MissingDependencyError,
)
from daskgmm.io.integrity import check_unchanged, remote_file_token
from daskgmm.io.locations import Location, parse_location, redact_url
from daskgmm.io.reader_base import (
    ArraySource,
    Reader,
    ShapedArray,
    result_shape,
    split_key,
    stat_token,
    where,
)

__all__ = ["NpyRangeSlicer", "NpyReader", "NpySlicer"]

NPY_SIGNATURE = b"\x93NUMPY"


class NpySlicer(ShapedArray):
    """Picklable, read-only view of a local ``.npy`` file, memory-mapped on each read.

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
    version : tuple, optional
        ``(mtime_ns, size)`` when the file was opened; each read checks it is unchanged
        (a file rewritten during a fit is an error, not a mix of two data sets).
    """

    __slots__ = ("dtype", "filename", "fortran_order", "offset", "shape", "version")

    def __init__(self, filename: str, offset: int, shape: tuple[int, ...], dtype: np.dtype,
                 fortran_order: bool = False, version: tuple | None = None) -> None:
        self.filename = os.fspath(filename)
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.fortran_order = bool(fortran_order)
        self.version = tuple(version) if version else None

    def __getstate__(self) -> tuple:
        return (self.filename, self.offset, self.shape, self.dtype, self.fortran_order,
                self.version)

    def __setstate__(self, state: tuple) -> None:
        (self.filename, self.offset, self.shape, dtype, self.fortran_order,
         self.version) = state
        self.dtype = np.dtype(dtype)

    def __repr__(self) -> str:
        return (f"NpySlicer({self.filename!r}, offset={self.offset}, shape={self.shape}, "
                f"dtype={self.dtype}, fortran_order={self.fortran_order})")

    def __dask_tokenize__(self) -> tuple:
        return ("NpySlicer", self.filename, self.offset, self.shape, self.dtype.str,
                self.fortran_order, stat_token(self.filename))

    def __getitem__(self, key: Any) -> np.ndarray:
        read, post, empty = split_key(key, self.shape)
        if empty:
            return np.empty(result_shape(read, post, self.shape, self.dtype), self.dtype)
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
            check_unchanged(self.version, stat_token(self.filename), repr(self.filename))
        finally:
            mmap_obj = getattr(mm, "_mmap", None)
            del mm
            if mmap_obj is not None:
                try:
                    mmap_obj.close()
                except (BufferError, ValueError):  # still referenced elsewhere
                    pass
        return out[post] if post is not None else out


class NpyRangeSlicer(ShapedArray):
    """Picklable, read-only view of a ``.npy`` file at a URL, read by byte ranges.

    Each read of a block of rows fetches only those rows' bytes (one range request for
    C-ordered files, one per column for Fortran-ordered ones, sent together).

    Parameters
    ----------
    url : str
    storage_options : dict
    offset : int
        Byte offset of the data (the header length).
    shape : tuple of int
    dtype : numpy.dtype
    fortran_order : bool
    version : tuple, optional
        :func:`~daskgmm.io.integrity.remote_file_token` when the file was opened; where
        it is a real stamp (an ETag...), each read checks it is unchanged.

    Every response must hold exactly the bytes asked for: a server that ignores the
    ``Range`` header (it answers 200 with the whole file, e.g. Python's
    ``http.server``) or a short answer is an error, never data read from the wrong
    offset.
    """

    __slots__ = ("dtype", "fortran_order", "offset", "shape", "storage_options", "url",
                 "version")

    def __init__(self, url: str, storage_options: dict | None, offset: int,
                 shape: tuple[int, ...], dtype: np.dtype, fortran_order: bool = False,
                 version: tuple | None = None) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.offset = int(offset)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.fortran_order = bool(fortran_order)
        self.version = tuple(version) if version else None

    def __getstate__(self) -> tuple:
        return (self.url, self.storage_options, self.offset, self.shape, self.dtype,
                self.fortran_order, self.version)

    def __setstate__(self, state: tuple) -> None:
        (self.url, self.storage_options, self.offset, self.shape, dtype,
         self.fortran_order, self.version) = state
        self.dtype = np.dtype(dtype)

    def __repr__(self) -> str:
        return (f"NpyRangeSlicer({redact_url(self.url)!r}, offset={self.offset}, "
                f"shape={self.shape}, dtype={self.dtype})")

    def _rows(self, fs: Any, path: str, start: int, stop: int) -> np.ndarray:
        n, width = self.shape[0], int(np.prod(self.shape[1:], dtype=np.int64))
        item = self.dtype.itemsize
        count = stop - start
        if not self.fortran_order or len(self.shape) == 1:
            row_bytes = width * item
            begin = self.offset + start * row_bytes
            data = fs.cat_file(path, start=begin, end=self.offset + stop * row_bytes)
            check_range_answer(data, begin, count * row_bytes, self.url)
            flat = np.frombuffer(data, dtype=self.dtype, count=count * width)
            return flat.reshape((count, *self.shape[1:]))
        starts = [self.offset + (j * n + start) * item for j in range(width)]
        ends = [s + count * item for s in starts]
        parts = fs.cat_ranges([path] * width, starts, ends)
        for begin, part in zip(starts, parts, strict=True):
            if isinstance(part, BaseException):
                raise part
            check_range_answer(part, begin, count * item, self.url)
        cols = [np.frombuffer(p, dtype=self.dtype, count=count) for p in parts]
        block = np.stack(cols, axis=1) if cols else np.empty((count, 0), self.dtype)
        # column j is the F-order flattening of the trailing axes
        return block.reshape((count, *self.shape[1:]), order="F")

    def __getitem__(self, key: Any) -> np.ndarray:
        read, post, empty = split_key(key, self.shape)
        if empty:
            return np.empty(result_shape(read, post, self.shape, self.dtype), self.dtype)
        loc = parse_location(self.url, self.storage_options)
        rows = read[0]
        start, stop = (rows.start, rows.stop) if isinstance(rows, slice) else (rows, rows + 1)
        try:
            block = self._rows(loc.fs, loc.path, start, stop)
            if self.version and self.version[0] != "fresh":
                check_unchanged(self.version, remote_file_token(loc), repr(loc.display))
        except DataSourceError:
            raise
        except FileNotFoundError:
            raise DataNotFoundError(
                f"No such file or store: {loc.display!r} (it was there when the array was "
                "opened)") from None
        except MissingDependencyError:
            raise
        except (OSError, ValueError) as exc:
            raise DataSourceError(f"Cannot read {loc.display!r}: {loc.scrub(str(exc))}") \
                from None
        rest = (slice(None),) if isinstance(rows, slice) else (0,)
        out = block[rest + tuple(read[1:])]
        return out[post] if post is not None else out


def _no_ranges(url: str) -> DataSourceError:
    return DataSourceError(
        f"The server of {redact_url(url)!r} ignores byte-range requests (it sends the "
        "whole file when asked for a part), so the .npy file cannot be read chunk by "
        "chunk: every chunk would download all of it. Download the file and open the "
        "local copy, or serve it from a server that supports Range requests.")


def check_range_answer(data: bytes, start: int, nbytes: int, url: str) -> None:
    """Refuse a range answer that is not exactly the ``nbytes`` asked for at ``start``:
    longer means the server ignored the range (the bytes start at 0, not at ``start``),
    shorter that the file is shorter than its header says."""
    if len(data) == nbytes:
        return
    if len(data) > nbytes:
        raise _no_ranges(url)
    raise DataSourceError(
        f"Cannot read {redact_url(url)!r}: asked for {nbytes:,} bytes at offset "
        f"{start:,}, got {len(data):,}; the file is shorter than its header says "
        "(truncated, or rewritten since it was opened).")


def refuse_servers_ignoring_ranges(loc: Location, offset: int, shape: tuple[int, ...],
                                   dtype: np.dtype) -> None:
    """Ask for one byte of the data before any work; refuse a server that answers with
    more (it ignores ``Range``)."""
    if not math.prod(shape) or not dtype.itemsize:
        return
    try:
        data = loc.fs.cat_file(loc.path, start=offset, end=offset + 1)
    except (OSError, ValueError):
        return  # reading the data reports it
    if len(data) > 1:
        raise _no_ranges(loc.url)


def _read_remote_header(loc: Location) -> tuple[int, tuple[int, ...], np.dtype, bool]:
    """``(offset, shape, dtype, fortran_order)`` from a remote ``.npy`` file's header."""
    from numpy.lib import format as npformat

    with loc.open("rb", block_size=2**16) as f:
        version = npformat.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(f)
        else:
            shape, fortran, dtype = npformat._read_array_header(f, version)
        offset = f.tell()
    return int(offset), tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran)


class NpyReader(Reader):
    """NumPy ``.npy`` files: memory-mapped locally, byte ranges at a URL."""

    name = "npy"
    description = "NumPy array file (*.npy), local or at a URL"
    extensions = (".npy",)

    def sniff(self, location: Location) -> bool:
        if location.is_local and not location.isfile():
            return False
        return location.head(6) == NPY_SIGNATURE

    def matches_extension(self, location: Location) -> bool:
        if location.is_local and not location.isfile():
            return False
        return super().matches_extension(location)

    def locate(self, location: Location, dataset: str | None, *,
               allow_missing_chunks: bool = False,
               ndims: tuple[int, ...] = (2,)) -> ArraySource:
        loc = location
        if dataset:
            raise DataSourceError(
                f"{loc.display!r} is a .npy file, which holds a single array, so there is no "
                f"dataset {dataset!r} inside it; pass dataset=None."
            )
        if not loc.is_local:
            return self._locate_remote(loc)
        path = loc.path
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
        version = stat_token(path)
        return ArraySource(
            array=NpySlicer(path, offset, shape, dtype, fortran, version),
            shape=shape,
            dtype=np.dtype(dtype),
            where=where(loc, None),
            native_row_chunk=None,
            token=version,
        )

    def _locate_remote(self, loc: Location) -> ArraySource:
        try:
            offset, shape, dtype, fortran = _read_remote_header(loc)
        except FileNotFoundError:
            raise DataNotFoundError(f"No such file or store: {loc.display!r}") from None
        except MissingDependencyError:
            raise
        except ImportError as exc:
            raise loc.missing_dependency(exc) from None
        except (OSError, ValueError) as exc:
            raise DataSourceError(
                f"Cannot read the .npy file {loc.display!r}: it is unreadable or corrupt "
                f"({loc.scrub(str(exc))})."
            ) from None
        if dtype.hasobject:
            raise InvalidDataError(
                f"{loc.display!r} holds Python objects (dtype object), not numbers; daskgmm "
                "needs a float32 or float64 array of shape (n_samples, n_features)."
            )
        refuse_servers_ignoring_ranges(loc, offset, shape, dtype)
        version = remote_file_token(loc)
        return ArraySource(
            array=NpyRangeSlicer(loc.url, loc.storage_options, offset, shape, dtype,
                                 fortran, version),
            shape=shape,
            dtype=dtype,
            where=where(loc, None),
            native_row_chunk=None,
            token=version,
        )
