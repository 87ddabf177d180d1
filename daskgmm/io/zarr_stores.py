"""Zarr format 2 and 3 stores: directories (local or any fsspec URL) and zip files.

The zarr array goes into the Dask graph and pickles as its store's description, so each
worker opens the store itself. Opening lists the array's storage once
(:mod:`daskgmm.io.integrity`): a store whose end was never written is refused unless
``allow_missing_chunks``, the listing names the Dask array, and the tasks read through
a :class:`~daskgmm.io.zarr_verified.VerifiedStore` that checks every chunk against it.
Where nothing can be listed (plain HTTP) only the end is checked, and the array gets a
fresh name at every open."""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np

from daskgmm.errors import DataNotFoundError, DataSourceError
from daskgmm.io.integrity import check_complete, zarr_store_state
from daskgmm.io.locations import Location, scrub_secrets
from daskgmm.io.reader_base import (
    ArraySource,
    Reader,
    choose_default,
    format_listing,
    opening,
    output_dtype,
    unreadable,
    validate_shape,
    where,
)

__all__ = ["ZarrDirectoryReader", "ZarrZipReader"]

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")
_METADATA_NAMES = ("zarr.json", ".zarray", ".zgroup")


class _ZarrReaderBase(Reader):
    """Shared logic of the zarr directory and zip readers."""

    in_zip_file = False

    def _store(self, loc: Location) -> Any:
        raise NotImplementedError

    def locate(self, location: Location, dataset: str | None, *,
               allow_missing_chunks: bool = False,
               ndims: tuple[int, ...] = (2,)) -> ArraySource:
        import zarr
        from zarr.errors import NodeNotFoundError

        loc = location
        dataset = (dataset or "").strip("/") or None
        with opening(loc, "the zarr store"):
            store = self._store(loc)
            try:
                node = zarr.open(store=store, mode="r")
            except NodeNotFoundError as exc:
                raise DataSourceError(
                    f"{loc.display!r} is not a zarr store: no zarr metadata (zarr.json, .zarray "
                    f"or .zgroup) at its root ({scrub_secrets(str(exc))}).") from None

        if isinstance(node, zarr.Group):
            try:
                arrays = {name: (tuple(a.shape), a.dtype)
                          for name, a in node.members(max_depth=None)
                          if isinstance(a, zarr.Array)}
            except Exception as exc:
                raise unreadable("the zarr store", loc, exc) from None
            if dataset is None:
                dataset = choose_default(arrays, node.attrs, repr(loc.display), "array")
            try:
                arr = node[dataset]
            except KeyError:
                raise DataNotFoundError(
                    f"No array {dataset!r} in the zarr store {loc.display!r}. Arrays in it: "
                    f"{format_listing(arrays)}."
                ) from None
            except Exception as exc:
                raise unreadable("the zarr store", loc, exc) from None
            if not isinstance(arr, zarr.Array):
                inside = {k: v for k, v in arrays.items() if k.startswith(dataset + "/")}
                raise DataSourceError(
                    f"{where(loc, dataset)} is a group, not an array. Arrays in it: "
                    f"{format_listing(inside)}."
                )
        else:
            if dataset is not None:
                raise DataSourceError(
                    f"{loc.display!r} is a zarr array, not a group, so there is no dataset "
                    f"{dataset!r} inside it; pass dataset=None."
                )
            arr = node

        shown = where(loc, dataset)
        native = getattr(arr, "shards", None) or arr.chunks
        native_rows = int(native[0]) if native else None
        validate_shape(tuple(int(n) for n in arr.shape), shown, ndims)  # say these first
        output_dtype(arr.dtype, shown)
        try:
            state = (zarr_store_state(arr, None, zip_path=loc.path, zip_prefix=dataset or "")
                     if self.in_zip_file else zarr_store_state(arr, loc.join(dataset or "")))
        except Exception as exc:
            raise unreadable("the zarr store", loc, exc) from None
        check_complete(state, shown, allow_missing_chunks=allow_missing_chunks)
        return ArraySource(self._verified(store, arr, dataset, state, shown, loc),
                           tuple(int(s) for s in arr.shape), np.dtype(arr.dtype), shown,
                           native_rows, (arr.metadata.zarr_format, state.token))

    def _verified(self, store: Any, arr: Any, dataset: str | None, state: Any, shown: str,
                  loc: Location) -> Any:
        """``arr`` read through a :class:`~daskgmm.io.zarr_verified.VerifiedStore` (every
        chunk read checked against the listing made at opening), when it was listed."""
        if state.digests is None:
            return arr
        import zarr

        from daskgmm.io.zarr_verified import verified_store

        wrapped = verified_store(store, arr, dataset or "", state.digests, shown,
                                 loc.path if self.in_zip_file else None)
        try:
            return zarr.open_array(store=wrapped, path=dataset or "", mode="r")
        except Exception as exc:
            raise unreadable("the zarr store", loc, exc) from None


def _has_query(location: Location) -> bool:
    """Whether a URL carries a query string (``?...``) after its path."""
    if location.is_local:
        return False
    from urllib.parse import urlsplit

    return bool(urlsplit(location.original.split("::")[0]).query)


class ZarrDirectoryReader(_ZarrReaderBase):
    """Zarr format 2 or 3 directory stores, local or at any fsspec URL."""

    name = "zarr"
    description = ("Zarr v2/v3 directory store (a directory with zarr.json, .zarray or "
                   ".zgroup; usually named *.zarr), local or at a URL")
    extensions = (".zarr",)

    def sniff(self, location: Location) -> bool:
        if location.is_local and not location.isdir():
            return False
        if _has_query(location):
            # A store's keys are paths below it; behind a query string (a signed URL of
            # one file) "x.npy?sig=...&/zarr.json" would be the file itself again.
            return False
        return any(location.join(name).isfile() for name in _METADATA_NAMES)

    def matches_extension(self, location: Location) -> bool:
        return super().matches_extension(location) and not location.isfile()

    def _store(self, loc: Location) -> Any:
        from daskgmm.io.storage import zarr_store

        return zarr_store(loc, read_only=True)


class ZarrZipReader(_ZarrReaderBase):
    """Zarr stores inside a local zip file (a read-only ``ZipStore`` pickles without its
    handle, so the array can go to worker processes); one at a URL is refused."""

    name = "zarr-zip"
    description = "Zarr zip store (*.zip, local)"
    extensions = (".zip",)
    in_zip_file = True

    def sniff(self, location: Location) -> bool:
        return location.isfile() and location.head(4) in ZIP_SIGNATURES

    def matches_extension(self, location: Location) -> bool:
        return location.isfile() and super().matches_extension(location)

    def _store(self, loc: Location) -> Any:
        from zarr.storage import ZipStore

        if loc.protocol != "file":  # zarr's ZipStore reads local files only
            raise DataSourceError(
                f"{loc.display!r} is a zip file at a URL; zarr reads zip stores only from "
                "a local file. Copy it to a local disk, or unzip it into a directory store "
                "(which can be read from the URL)."
            )
        if not zipfile.is_zipfile(loc.path):
            raise DataSourceError(
                f"Cannot read the zarr store {loc.display!r}: it is not a valid zip file "
                "(unreadable or corrupt)."
            )
        return ZipStore(loc.path, mode="r")
