"""Can an opened store be trusted? Missing chunks, and a name that follows the content.

* **Missing chunks** read silently as the fill value, yet zarr also leaves chunks equal
  to it unwritten on purpose. The rule (:func:`check_complete`): absent chunks are
  accepted when the storage object holding the array's last element was written (for a
  sharded array: its inner chunk, from the last shard's index), i.e. the writer reached
  the end; otherwise the store is refused unless ``allow_missing_chunks``. HDF5 writers
  store every chunk they write, so there every unallocated chunk is refused; where
  storage is allocated before it is written, an end holding only the fill value is
  refused instead (:func:`check_hdf5_complete`).
* **Changes after opening**: :class:`~daskgmm.io.zarr_verified.VerifiedStore` checks
  every chunk read against the listing made at opening.
* **A stale name**: the Dask name follows a token of the content (sizes and mtimes
  locally, ETags or generations on object stores, CRCs in zip stores, a fresh token
  where nothing can be listed), so a cluster never reuses chunks of an old version.

The one listing per open serves both purposes."""

from __future__ import annotations

import hashlib
import math
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import numpy as np

from daskgmm.errors import DataSourceError, IncompleteStoreError
from daskgmm.io.locations import Location

__all__ = ["StoreState", "check_complete", "check_hdf5_complete", "check_unchanged",
           "object_stamp", "remote_file_token", "stamp_digest", "zarr_store_state"]

_SHOW_MISSING = 3
_OPT_IN = "pass allow_missing_chunks=True (YAML: data.allow_missing_chunks: true)."


@dataclass(frozen=True)
class StoreState:
    """What a listing of a chunked array's storage found: the storage objects
    (``unit``: chunks or shards) the grid needs and how many exist (None: unlisted), a
    ``token`` that changes with any of them, the rows ``[start, stop)`` of the first few
    missing ones, the ``fill_value``, whether the object holding the last element
    exists (``last_written``, None if unknown) and its rows, and one 64-bit digest per
    object shaped like the grid (0: absent; None: unlisted) for :class:`VerifiedStore`."""

    expected: int
    present: int | None
    unit: str
    token: tuple
    missing_rows: list[tuple[int, int]] = field(default_factory=list)
    fill_value: Any = None
    last_written: bool | None = None
    last_rows: tuple[int, int] | None = None
    digests: Any = None

    @property
    def missing(self) -> int:
        """Missing storage objects (0 when unknown)."""
        return 0 if self.present is None else self.expected - self.present


def _digest(entries: Iterator[tuple[str, Any]]) -> str:
    h = hashlib.blake2b(digest_size=16)
    for key, stamp in sorted(entries):
        h.update(f"{key}\0{stamp}\n".encode())
    return h.hexdigest()


def _zarr_grid(arr: Any) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """Storage block shape, grid shape and unit (chunk or shard) of a zarr array."""
    shards = getattr(arr, "shards", None)
    block = tuple(int(b) for b in (shards or arr.chunks))
    grid = tuple(math.ceil(s / b) if b else 0 for s, b in zip(arr.shape, block, strict=True))
    return block, grid, "shard" if shards else "chunk"


def object_stamp(info: dict[str, Any]) -> Any:
    """The most content-bound field an object store's listing gives for one object (the
    same whether it comes from a listing or from asking for the object: times as
    seconds, since some filesystems give one as a number and the other as a datetime)."""
    for name in ("ETag", "etag", "md5Hash", "generation", "content_md5", "LastModified",
                 "last_modified", "mtime", "updated", "created"):
        value = info.get(name)
        if value is not None:
            if hasattr(value, "timestamp"):
                value = value.timestamp()
            if isinstance(value, float):
                value = round(value, 6)
            return (name, str(value), info.get("size"))
    return ("size", info.get("size"))


def remote_file_token(loc: Location) -> tuple:
    """What identifies the content of one remote file: its ETag (or generation, or
    modification time) and size, or a fresh token when the store tells none of them (so
    that a name never outlives a rewrite it cannot see)."""
    try:
        info = loc.info()
    except Exception:
        info = {}
    stamp = object_stamp(info)
    return ("fresh", uuid.uuid4().hex) if stamp[0] == "size" else stamp


def check_unchanged(expected: tuple | None, now: tuple | None, shown: str) -> None:
    """Refuse what was just read from a file that is no longer the one opened
    (``expected``: its version then, ``now``: after the read; unknown versions, empty,
    None or fresh tokens, are not compared)."""
    if not expected or not now or expected[0] == "fresh" or now[0] == "fresh":
        return
    if tuple(now) != tuple(expected):
        raise DataSourceError(
            f"{shown} changed while it was being read (it was rewritten after it was "
            "opened), so the data read so far and the rest are not one data set. Do not "
            "write to a file while it is being fitted or predicted; run again once it is "
            "complete.")


def _remote_listing(loc: Location) -> dict[str, Any] | None:
    """Every object below ``loc`` as ``relative/key -> stamp``, or None if unlistable."""
    if not loc.listable:
        return None
    try:
        return {name: object_stamp(info) for name, info in loc.find().items()}
    except NotImplementedError:
        return None


def _zip_listing(zip_path: str, prefix: str) -> dict[str, Any]:
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    with zipfile.ZipFile(zip_path) as zf:
        return {info.filename[len(prefix):]: (info.CRC, info.file_size, info.date_time)
                for info in zf.infolist() if info.filename.startswith(prefix)}


def stamp_digest(stamp: Any) -> int:
    """A non-zero 64-bit digest of one listing entry (0 means absent)."""
    value = int.from_bytes(hashlib.blake2b(repr(stamp).encode(), digest_size=8).digest(),
                           "little")
    return value or 1


class _ObjectReader:
    """Existence and byte ranges of a zarr array's storage objects (by chunk key)."""

    def __init__(self, location: Location | None, listing: dict[str, Any] | None,
                 zip_path: str | None, zip_prefix: str) -> None:
        self.location, self.listing = location, listing
        self.zip_path, self.zip_prefix = zip_path, zip_prefix.strip("/")

    def exists(self, key: str) -> bool | None:
        if self.listing is not None:
            return key in self.listing
        if self.location is None:
            return None
        return self.location.join(key).exists()

    def read(self, key: str, nbytes: int, *, from_end: bool) -> bytes | None:
        """``nbytes`` bytes at the start or the end of the object ``key``."""
        try:
            if self.zip_path is not None:
                name = f"{self.zip_prefix}/{key}" if self.zip_prefix else key
                with zipfile.ZipFile(self.zip_path) as zf:
                    data = zf.read(name)
                return data[-nbytes:] if from_end else data[:nbytes]
            assert self.location is not None
            loc = self.location.join(key)
            size = int(loc.info().get("size") or 0)
            start = max(0, size - nbytes) if from_end else 0
            return bytes(loc.fs.cat_file(loc.path, start=start, end=start + nbytes))
        except (OSError, KeyError, ValueError):
            return None


def _last_inner_chunk(arr: Any, objects: _ObjectReader, shard_key: str
                      ) -> tuple[bool | None, tuple[int, int]]:
    """Whether the inner chunk holding the array's last element is in its shard's index
    (None when it cannot be read or decoded), and its rows. Zarr v3's index: an (offset,
    length) pair of uint64 per inner chunk, both 2^64 - 1 when absent, maybe a CRC-32C."""
    codec = (list(getattr(arr.metadata, "codecs", ()) or ()) or [None])[0]
    n, shard = int(arr.shape[0]), tuple(int(b) for b in arr.shards)
    if type(codec).__name__ != "ShardingCodec":  # (the first codec shards, or none does)
        return None, (max(0, n - shard[0]), n)
    inner = tuple(int(c) for c in codec.chunk_shape)
    local = tuple(((int(s) - 1) % sh) // c for s, sh, c in zip(arr.shape, shard, inner,
                                                                strict=True))
    start = ((n - 1) // inner[0]) * inner[0]
    rows = (start, min(start + inner[0], n))
    names = [type(c).__name__ for c in codec.index_codecs]
    if names not in (["BytesCodec"], ["BytesCodec", "Crc32cCodec"]):
        return None, rows
    endian = getattr(getattr(codec.index_codecs[0], "endian", None), "value", "little")
    per_shard = tuple(sh // c for sh, c in zip(shard, inner, strict=True))
    table_bytes = 16 * math.prod(per_shard)
    size = table_bytes + (4 if len(names) == 2 else 0)
    from_end = getattr(codec.index_location, "value", "end") == "end"
    raw = objects.read(shard_key, size, from_end=from_end)
    if raw is None or len(raw) != size:
        return None, rows
    dtype = "<u8" if endian == "little" else ">u8"
    table = np.frombuffer(raw[:table_bytes], dtype=dtype).reshape((*per_shard, 2))
    return not bool((table[local] == np.iinfo(np.uint64).max).all()), rows


def zarr_store_state(arr: Any, array_location: Location | None, *,
                     zip_path: str | None = None, zip_prefix: str = "") -> StoreState:
    """List the storage of a zarr array once (at ``array_location``, or in the local zip
    file ``zip_path`` under ``zip_prefix``): chunk count, whether its end was written,
    the content token and the per-object digests that reads verify."""
    block, grid, unit = _zarr_grid(arr)
    expected = math.prod(grid)
    fill_value = getattr(arr, "fill_value", None)
    if zip_path is not None:
        listing: dict[str, Any] | None = _zip_listing(zip_path, zip_prefix)
    elif array_location is not None:
        listing = _remote_listing(array_location)
    else:
        listing = None
    encode = arr.metadata.encode_chunk_key
    objects = _ObjectReader(array_location, listing, zip_path, zip_prefix)
    last_key = encode(tuple(g - 1 for g in grid))
    n = int(arr.shape[0])
    last_rows = ((grid[0] - 1) * block[0], n)
    last_written = objects.exists(last_key)
    if last_written and unit == "shard":
        last_written, last_rows = _last_inner_chunk(arr, objects, last_key)
    if listing is None:
        return StoreState(expected, None, unit, ("fresh", uuid.uuid4().hex),
                          fill_value=fill_value, last_written=last_written,
                          last_rows=last_rows)
    present = 0
    missing_rows: list[tuple[int, int]] = []
    digests = np.zeros(grid, dtype=np.uint64)
    for coords in product(*(range(g) for g in grid)):
        stamp = listing.get(encode(coords))
        if stamp is not None:
            present += 1
            digests[coords] = stamp_digest(stamp)
        elif len(missing_rows) < _SHOW_MISSING:
            start = coords[0] * block[0]
            missing_rows.append((start, min(start + block[0], n)))
    token = ("listing", _digest(iter(listing.items())))
    return StoreState(expected, present, unit, token, missing_rows, fill_value,
                      last_written, last_rows, digests)


def _describe_rows(ranges: list[tuple[int, int]]) -> str:
    return ", ".join(f"rows {a}..{b - 1}" for a, b in ranges)


def _fill_shown(fill: Any) -> Any:
    return fill.item() if hasattr(fill, "item") else fill


def check_complete(state: StoreState, where: str, *, allow_missing_chunks: bool) -> None:
    """Refuse (IncompleteStoreError, unless ``allow_missing_chunks``) a Zarr store whose
    writer did not finish: one whose last storage object is absent (others may be
    absent on purpose, as chunks of the fill value)."""
    if allow_missing_chunks or state.last_written is not False:
        return  # the writer reached the end: absent chunks are chunks of the fill value
    first = f" (first missing: {_describe_rows(state.missing_rows)})" if state.missing_rows \
        else ""
    count = (f", and {state.missing:,} of {state.expected:,} {state.unit}s were never "
             f"written{first}" if state.present is not None and state.missing > 0 else "")
    piece = "inner chunk" if state.unit == "shard" else state.unit
    rows = f" ({_describe_rows([state.last_rows])})" if state.last_rows else ""
    raise IncompleteStoreError(
        f"{where}: the end of the array was never written: the {piece} holding its last "
        f"rows{rows} is absent{count}, so the store's writer did not finish. Absent chunks "
        f"would read as the fill value {_fill_shown(state.fill_value)!r} and be fitted as "
        "data. Finish writing the store; if absent chunks really mean the fill value (zarr "
        f"does not store chunks equal to it, write_empty_chunks=False), {_OPT_IN}")


#: Rows read at opening to check the end of a contiguous HDF5 dataset.
_END_ROWS = 1024


def _hdf5_end_unwritten(dset: Any) -> tuple[int, int] | None:
    """The rows ``[start, stop)`` of a dataset's end when, in storage allocated before it
    was written (contiguous, or chunks allocated early), they hold nothing but the fill
    value (the last chunk, or the last tenth of a contiguous dataset, at most 1,024
    rows); None otherwise."""
    import h5py

    plist = dset.id.get_create_plist()
    layout = plist.get_layout()
    n = int(dset.shape[0]) if dset.shape else 0
    if n == 0 or layout == h5py.h5d.COMPACT:
        return None
    if layout == h5py.h5d.CHUNKED:
        if plist.get_alloc_time() != h5py.h5d.ALLOC_TIME_EARLY:
            return None
        start = ((n - 1) // int(dset.chunks[0])) * int(dset.chunks[0])
    else:
        start = n - min(_END_ROWS, max(1, n // 10))
    end = np.asarray(dset[start:n])
    fill = dset.fillvalue
    try:
        only_fill = bool(np.all(end == fill) or (np.isnan(fill) and np.isnan(end).all()))
    except TypeError:
        only_fill = bool(np.all(end == fill))
    return (start, n) if only_fill else None


def check_hdf5_complete(dset: Any, where: str, *, allow_missing_chunks: bool) -> None:
    """Refuse (IncompleteStoreError, unless ``allow_missing_chunks``) an h5py dataset
    with chunks never written (HDF5 stores every chunk its writer wrote), or whose end
    looks never written (:func:`_hdf5_end_unwritten`)."""
    import h5py

    if allow_missing_chunks:
        return
    fill = _fill_shown(dset.fillvalue)
    # a contiguous dataset is one chunk, allocated when it has storage; a compact one is
    allocated, expected = 1, 1
    layout = dset.id.get_create_plist().get_layout()
    if layout == h5py.h5d.CHUNKED:
        grid = [math.ceil(s / c) for s, c in zip(dset.shape, dset.chunks, strict=True)]
        allocated, expected = int(dset.id.get_num_chunks()), int(math.prod(grid))
    elif layout == h5py.h5d.CONTIGUOUS:
        allocated = 1 if dset.id.get_storage_size() > 0 else 0
    if allocated < expected:
        raise IncompleteStoreError(
            f"{where}: {expected - allocated:,} of {expected:,} chunks were never written; "
            f"they would read as the fill value {fill!r} and be fitted as data (HDF5 stores "
            "every chunk its writer wrote, so these never were). Finish writing the file; "
            f"if the absent chunks really mean the fill value, {_OPT_IN}")
    rows = _hdf5_end_unwritten(dset)
    if rows is not None:
        raise IncompleteStoreError(
            f"{where}: its last rows ({_describe_rows([rows])}) hold nothing but the fill "
            f"value {fill!r} in storage allocated before it was written, so the data look "
            "never written (a writer that stopped early). Finish writing the file; if "
            f"those rows really are the fill value, {_OPT_IN}")
