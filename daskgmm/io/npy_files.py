"""NumPy ``.npy`` files, local or at a URL, read by byte ranges.

The header is parsed once, when the file is opened; each read then fetches exactly the
bytes of its rows through the location's filesystem (:class:`NpyRangeSlicer`: one range
for C-ordered files, one per column for Fortran-ordered ones).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from daskgmm.errors import DataNotFoundError, DataSourceError, InvalidDataError
from daskgmm.io.integrity import check_unchanged, remote_file_token
from daskgmm.io.locations import Location, parse_location, redact_url, scrub_secrets
from daskgmm.io.reader_base import (
    ArraySource,
    Reader,
    ShapedArray,
    opening,
    where,
)

__all__ = ["NpyRangeSlicer", "NpyReader"]

NPY_SIGNATURE = b"\x93NUMPY"


class NpyRangeSlicer(ShapedArray):
    """Picklable, read-only view of a ``.npy`` file (local or at a URL) whose data start
    at byte ``offset``: a read of a block of rows fetches only those rows' bytes (one
    range, or one per column of a Fortran-ordered file, sent together) and checks the
    file's ``version`` (:func:`~daskgmm.io.integrity.remote_file_token`) where it is a
    real stamp. An answer that is not exactly the bytes asked for (a server ignoring
    ``Range``, a truncated file) is an error, never data from the wrong offset."""

    __slots__ = ("dtype", "fortran_order", "offset", "shape", "storage_options", "url",
                 "version")
    _state = ("url", "storage_options", "offset", "shape", "dtype", "fortran_order",
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

    def _read(self, read: tuple) -> np.ndarray:
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
        except (OSError, ValueError) as exc:
            raise DataSourceError(f"Cannot read {loc.display!r}: {scrub_secrets(str(exc))}") \
                from None
        rest = (slice(None),) if isinstance(rows, slice) else (0,)
        return block[rest + tuple(read[1:])]


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


def _read_header(loc: Location) -> tuple[int, tuple[int, ...], np.dtype, bool]:
    """``(offset, shape, dtype, fortran_order)`` from a ``.npy`` file's header."""
    from numpy.lib import format as npformat

    with loc.open("rb", block_size=2**16) as f:
        version = npformat.read_magic(f)
        read = {(1, 0): npformat.read_array_header_1_0,
                (2, 0): npformat.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"a .npy format version {version} that daskgmm does not read")
        shape, fortran, dtype = read(f)
        offset = f.tell()
    return int(offset), tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran)


class NpyReader(Reader):
    """NumPy ``.npy`` files, local or at a URL: each chunk's rows read as one range."""

    name = "npy"
    description = "NumPy array file (*.npy), local or at a URL"
    extensions = (".npy",)

    def sniff(self, location: Location) -> bool:
        return location.head(6) == NPY_SIGNATURE

    def matches_extension(self, location: Location) -> bool:
        return super().matches_extension(location) and not location.isdir()

    def locate(self, location: Location, dataset: str | None, *,
               allow_missing_chunks: bool = False,
               ndims: tuple[int, ...] = (2,)) -> ArraySource:
        loc = location
        if dataset:
            raise DataSourceError(
                f"{loc.display!r} is a .npy file, which holds a single array, so there is no "
                f"dataset {dataset!r} inside it; pass dataset=None."
            )
        with opening(loc, "the .npy file"):
            offset, shape, dtype, fortran = _read_header(loc)
        if dtype.hasobject:
            raise InvalidDataError(
                f"{loc.display!r} holds Python objects (dtype object), not numbers; daskgmm "
                "needs a float32 or float64 array of shape (n_samples, n_features)."
            )
        refuse_servers_ignoring_ranges(loc, offset, shape, dtype)
        version = remote_file_token(loc)
        return ArraySource(NpyRangeSlicer(loc.url, loc.storage_options, offset, shape, dtype,
                                          fortran, version),
                           shape, dtype, where(loc, None), None, version)
