"""HDF5 files, local or at any fsspec URL, read with h5py inside each task.

No h5py handle goes into a Dask graph: :class:`HDF5Slicer` holds the file's path or URL
and opens it inside each read. Opening refuses, unless ``allow_missing_chunks``, a
dataset with chunks never written or, where storage is allocated before it is written,
an end holding only the fill value (:mod:`daskgmm.io.integrity`)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from daskgmm.errors import DataNotFoundError, DataSourceError
from daskgmm.io.integrity import (
    check_hdf5_complete,
    check_unchanged,
    object_stamp,
    remote_file_token,
)
from daskgmm.io.locations import Location, parse_location, redact_url, scrub_secrets
from daskgmm.io.reader_base import (
    ArraySource,
    Reader,
    ShapedArray,
    choose_default,
    format_listing,
    opening,
    output_dtype,
    validate_shape,
    where,
)

__all__ = ["HDF5Reader", "HDF5Slicer"]

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# fsspec block size for HDF5 over a URL: h5py makes many small reads (metadata, B-tree
# nodes) then large ones (chunks); a few MiB of read-ahead serves both with few requests.
_REMOTE_BLOCK_SIZE = 4 * 2**20


def open_h5(location: Location) -> tuple[Any, Any]:
    """Open an HDF5 file read-only; returns ``(h5py.File, its file object)``."""
    import h5py

    fobj = location.open("rb", block_size=_REMOTE_BLOCK_SIZE, cache_type="readahead")
    try:
        return h5py.File(fobj, "r"), fobj
    except BaseException:
        fobj.close()
        raise


def _close(f: Any, fobj: Any) -> None:
    try:
        f.close()
    finally:
        if fobj is not None:
            fobj.close()


def _version_now(loc: Location, fobj: Any) -> tuple | None:
    """The version of an open file as :func:`check_unchanged` compares it."""
    if loc.is_local:
        return object_stamp(loc.info())
    details = getattr(fobj, "details", None)
    return object_stamp(details) if isinstance(details, dict) else None


class HDF5Slicer(ShapedArray):
    """Picklable, read-only view of the HDF5 dataset ``dataset`` of the file at
    ``filename`` (a path or URL, with ``storage_options``): each read opens the file,
    checks that the shape, dtype and ``version`` (the file's stamp when it was opened)
    are unchanged, reads the selection and closes it; no h5py handle is ever kept."""

    __slots__ = ("dataset", "dtype", "filename", "shape", "storage_options", "version")
    _state = ("filename", "dataset", "shape", "dtype", "storage_options", "version")

    def __init__(self, filename: str, dataset: str, shape: tuple[int, ...],
                 dtype: np.dtype, storage_options: dict | None = None,
                 version: tuple | None = None) -> None:
        self.filename = os.fspath(filename)
        self.dataset = dataset
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.storage_options = dict(storage_options or {})
        self.version = tuple(version) if version else None

    def __repr__(self) -> str:
        return (f"HDF5Slicer({redact_url(self.filename)!r}, {self.dataset!r}, "
                f"shape={self.shape}, dtype={self.dtype})")

    def __dask_tokenize__(self) -> tuple:
        loc = parse_location(self.filename, self.storage_options)
        return ("HDF5Slicer", loc, self.dataset, self.shape, self.dtype.str,
                remote_file_token(loc))

    def _read(self, read: tuple) -> np.ndarray:
        loc = parse_location(self.filename, self.storage_options)
        shown = where(loc, self.dataset)
        try:
            f, fobj = open_h5(loc)
        except FileNotFoundError:
            raise DataNotFoundError(
                f"No such file or store: {loc.display!r} (it was there when the array "
                "was opened)") from None
        except OSError as exc:
            raise DataSourceError(f"Cannot read {shown}: {scrub_secrets(str(exc))}") from None
        try:
            dset = f[self.dataset]
            if tuple(dset.shape) != self.shape or dset.dtype != self.dtype:
                raise DataSourceError(
                    f"{shown} changed since it was opened: now shape {dset.shape} dtype "
                    f"{dset.dtype}, was shape {self.shape} dtype {self.dtype}. Open it again."
                )
            out = np.asarray(dset[read])
            check_unchanged(self.version, _version_now(loc, fobj), shown)
        except KeyError:
            raise DataNotFoundError(f"{shown} no longer exists") from None
        except OSError as exc:
            raise DataSourceError(f"Cannot read {shown}: {scrub_secrets(str(exc))}") from None
        finally:
            _close(f, fobj)
        return out


class HDF5Reader(Reader):
    """HDF5 files read with h5py, through :class:`HDF5Slicer` (local or URL)."""

    name = "hdf5"
    description = "HDF5 file (*.h5, *.hdf5, *.he5), local or at a URL"
    extensions = (".h5", ".hdf5", ".he5")

    def sniff(self, location: Location) -> bool:
        # The signature may follow a user block of 512, 1024, 2048... bytes.
        head = location.head(8)
        if head == HDF5_SIGNATURE or len(head) < 8:
            return head == HDF5_SIGNATURE
        blocks = location.head(4096)
        return any(blocks[n:n + 8] == HDF5_SIGNATURE for n in (512, 1024, 2048))

    def matches_extension(self, location: Location) -> bool:
        return super().matches_extension(location) and not location.isdir()

    def locate(self, location: Location, dataset: str | None, *,
               allow_missing_chunks: bool = False,
               ndims: tuple[int, ...] = (2,)) -> ArraySource:
        import h5py

        loc = location
        dataset = (dataset or "").strip("/") or None
        with opening(loc, "the HDF5 file"):
            f, fobj = open_h5(loc)
        try:
            arrays: dict[str, tuple[tuple[int, ...], Any]] = {}

            def visit(name: str, obj: Any) -> None:
                if isinstance(obj, h5py.Dataset):
                    arrays[name] = (tuple(obj.shape or ()), obj.dtype)

            with opening(loc, "the HDF5 file"):
                f.visititems(visit)
            if dataset is None:
                dataset = choose_default(arrays, f.attrs, repr(loc.display), "dataset")
            try:
                obj = f[dataset]
            except KeyError:
                raise DataNotFoundError(
                    f"No dataset {dataset!r} in the HDF5 file {loc.display!r}. Datasets in "
                    f"it: {format_listing(arrays)}."
                ) from None
            if not isinstance(obj, h5py.Dataset):
                inside = {k: v for k, v in arrays.items() if k.startswith(dataset + "/")}
                raise DataSourceError(
                    f"{where(loc, dataset)} is a group, not a dataset. Datasets in it: "
                    f"{format_listing(inside)}."
                )
            shape, dtype, chunks = tuple(int(s) for s in (obj.shape or ())), obj.dtype, obj.chunks
            name = obj.name  # absolute path inside the file
            validate_shape(shape, where(loc, dataset), ndims)  # say these first
            output_dtype(dtype, where(loc, dataset))
            check_hdf5_complete(obj, where(loc, dataset),
                                allow_missing_chunks=allow_missing_chunks)
        finally:
            _close(f, fobj)
        version = remote_file_token(loc)
        return ArraySource(HDF5Slicer(loc.url, name, shape, dtype, loc.storage_options, version),
                           shape, np.dtype(dtype), where(loc, dataset),
                           int(chunks[0]) if chunks else None, version)
