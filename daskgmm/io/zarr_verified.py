"""A zarr store whose chunk reads check that the store is still the one that was opened.

Every read of a storage object of the array (a chunk, or a shard and its index) is
compared with its entry in the listing made at opening
(:func:`daskgmm.io.integrity.zarr_store_state`): present then and absent now is a
:class:`DataNotFoundError`; absent then and present now, or another stamp (mtime and
size locally, ETag or generation on object stores, the zip file's own mtime and size
for zip stores) is a :class:`DataSourceError`. So a fit never reads an absent chunk as
fill values, nor a mix of two versions. The cost is a ``stat`` per read locally, a
metadata request sent with each read on object stores; metadata keys pass through."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
from zarr.storage import WrapperStore

from daskgmm.errors import DataNotFoundError, DataSourceError
from daskgmm.io.integrity import object_stamp, stamp_digest

__all__ = ["VerifiedStore", "verified_store"]


def _local_digest(path: str) -> int | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    # as the listing at opening stamps it (Location.find)
    return stamp_digest(object_stamp({"mtime": st.st_mtime_ns, "size": st.st_size}))


class VerifiedStore(WrapperStore):
    """A read-only zarr store (local, fsspec or zip) checking every storage object of
    the array at ``prefix`` it reads against ``digests``
    (:attr:`~daskgmm.io.integrity.StoreState.digests`); ``key_format``: whether chunk
    keys start with ``c``, and their separator; ``zip_digest``: the zip file's stamp."""

    def __init__(self, store: Any, *, prefix: str, digests: np.ndarray,
                 key_format: tuple[bool, str], where: str,
                 zip_digest: int | None = None) -> None:
        super().__init__(store)
        self.prefix = prefix.strip("/")
        self.digests = digests
        self.key_format = key_format
        self.where = where
        self.zip_digest = zip_digest

    def _with_store(self, store: Any) -> VerifiedStore:
        return type(self)(store, prefix=self.prefix, digests=self.digests,
                          key_format=self.key_format, where=self.where,
                          zip_digest=self.zip_digest)

    def __repr__(self) -> str:
        return f"VerifiedStore({self.where})"

    # -- which keys are the array's storage objects ----------------------------------
    def _coords(self, key: str) -> tuple[int, ...] | None:
        rel = key
        if self.prefix:
            if not key.startswith(self.prefix + "/"):
                return None
            rel = key[len(self.prefix) + 1:]
        with_c, sep = self.key_format
        if with_c:
            if not rel.startswith("c" + sep) and rel != "c":
                return None
            rel = rel[2:]
        parts = rel.split(sep) if rel else []
        if len(parts) != self.digests.ndim or not all(p.isdigit() for p in parts):
            return None
        coords = tuple(int(p) for p in parts)
        if any(c >= n for c, n in zip(coords, self.digests.shape, strict=True)):
            return None
        return coords

    # -- the stamp of an object now ----------------------------------------------------
    async def _digest_now(self, key: str) -> int | None:
        inner = self._store
        root = getattr(inner, "root", None)
        if root is not None:  # LocalStore
            return _local_digest(os.path.join(os.fspath(root), key))
        fs = getattr(inner, "fs", None)
        if fs is not None:  # FsspecStore
            path = f"{inner.path.rstrip('/')}/{key}" if inner.path else key
            try:
                info = await fs._info(path)
            except FileNotFoundError:
                return None
            return stamp_digest(object_stamp(info))
        return None

    def _changed(self, key: str, what: str) -> DataSourceError:
        return DataSourceError(
            f"{self.where} changed while it was being read: its storage object {key!r} "
            f"{what} after the store was opened, so the data read so far and the rest "
            "are not one data set. Do not write to a store while it is being fitted or "
            "predicted; run again once it is complete.")

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        coords = self._coords(key)
        if coords is None:
            return await self._store.get(key, prototype, byte_range)
        expected = int(self.digests[coords])
        if self.zip_digest is not None:
            value = await self._store.get(key, prototype, byte_range)
            path = os.fspath(getattr(self._store, "path", ""))
            if _local_digest(path) != self.zip_digest:
                raise self._changed(key, "(the zip file) was rewritten")
            now = expected if value is not None else None
        elif getattr(self._store, "root", None) is not None:
            value = await self._store.get(key, prototype, byte_range)
            now = await self._digest_now(key)
        else:
            value, now = await asyncio.gather(self._store.get(key, prototype, byte_range),
                                              self._digest_now(key))
        if expected == 0:
            if value is None and now is None:
                return None  # absent at opening, still absent: the fill value
            raise self._changed(key, "was written")
        if value is None or now is None:
            raise DataNotFoundError(
                f"{self.where}: its storage object {key!r} was deleted after the store "
                "was opened (it would read as the fill value); restore the store, or "
                "open it again if the deletion was meant.")
        if now != expected:
            raise self._changed(key, "was rewritten")
        return value

    async def get_partial_values(self, prototype: Any, key_ranges: Any) -> list[Any]:
        return list(await asyncio.gather(*(self.get(k, prototype, r)
                                           for k, r in key_ranges)))


def _key_format(arr: Any) -> tuple[bool, str]:
    """Whether the array's chunk keys start with ``c``, and their separator."""
    ndim = len(arr.shape)
    sample = arr.metadata.encode_chunk_key(tuple(range(1, ndim + 1)))
    if sample.startswith("c") and len(sample) > 1:
        return True, sample[1]
    return False, sample[1] if ndim > 1 else "."


def verified_store(store: Any, arr: Any, prefix: str, digests: np.ndarray, where: str,
                   zip_path: str | None = None) -> VerifiedStore:
    """``store`` wrapped so that reads of ``arr``'s storage objects are verified."""
    zip_digest = _local_digest(zip_path) if zip_path is not None else None
    return VerifiedStore(store, prefix=prefix, digests=digests, key_format=_key_format(arr),
                         where=where, zip_digest=zip_digest)
