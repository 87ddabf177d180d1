"""Sample weights stored next to the data, opened lazily with the data's row chunks:
a Parquet column, an array of a Zarr store or HDF5 file, or a ``.npy`` file, 1-D or one
column; integers become float64."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
from dask.base import tokenize

from daskgmm.errors import DataSourceError, InvalidDataError
from daskgmm.io.locations import Location, parse_location
from daskgmm.io.reader_base import ReadGuard, output_dtype, where

__all__ = ["open_sample_weight"]


def _check_length(n: int, n_samples: int, shown: str) -> None:
    if n != n_samples:
        raise InvalidDataError(
            f"the sample weights in {shown} have {n:,} rows but the data has "
            f"{n_samples:,}: give one weight per row of the data.")


def _from_parquet(loc: Location, column: str, chunks: tuple[int, ...]) -> da.Array:
    from daskgmm.io.parquet_tables import parquet_layout, read_parquet_column

    try:
        layout = parquet_layout(loc, [column])
    except InvalidDataError as exc:
        if "not numeric" not in str(exc):
            raise
        raise InvalidDataError(
            f"{where(loc, None)}: the sample-weight column {column!r} is not numbers; "
            "choose an integer or float column.") from None
    _check_length(int(sum(layout.chunks)), int(sum(chunks)),
                  f"column {column!r} of {loc.display!r}")
    weights = read_parquet_column(layout, column)
    if weights.dtype != np.float64:
        weights = weights.astype(np.float64)
    return weights if weights.chunks[0] == chunks else weights.rechunk({0: chunks})


def _from_array(loc: Location, dataset: str | None, chunks: tuple[int, ...],
                allow_missing_chunks: bool) -> da.Array:
    from daskgmm.io.readers import get_reader

    reader = get_reader(loc)
    if getattr(reader, "pseudo_paths", False):
        raise DataSourceError(
            f"cannot read sample weights from {loc.display!r} ({reader.name}): weights "
            "must be in a Zarr store, an HDF5 file, a .npy file or a Parquet column.")
    if reader.name == "parquet":
        raise DataSourceError(
            f"{loc.display!r} is a Parquet table: name the column that holds the weights "
            "(column: NAME), not a dataset.")
    src = reader.locate(loc, dataset, allow_missing_chunks=allow_missing_chunks,
                        ndims=(1, 2))
    shape = tuple(int(s) for s in src.shape)
    if len(shape) == 2 and shape[1] != 1:
        raise InvalidDataError(
            f"{src.where} has shape {shape}; sample weights need one value per row: shape "
            "(n_samples,) or (n_samples, 1).")
    _check_length(shape[0], int(sum(chunks)), src.where)
    output_dtype(src.dtype, src.where)  # refuses what is not numbers
    block_chunks = (chunks,) if len(shape) == 1 else (chunks, (1,))
    name = f"weights-{reader.name}-" + tokenize(loc, dataset, shape, src.dtype.str, chunks,
                                                src.token)
    weights = da.from_array(
        ReadGuard(src.array, src.where, loc), chunks=block_chunks, name=name, lock=False,
        asarray=True, fancy=False, meta=np.empty((0,) * len(shape), dtype=src.dtype),
        inline_array=False)
    if len(shape) == 2:
        weights = weights[:, 0]
    return weights if weights.dtype == np.float64 else weights.astype(np.float64)


def open_sample_weight(path: str | os.PathLike | Location, *, dataset: str | None = None,
                       column: str | None = None, chunks: tuple[int, ...],
                       storage_options: dict | None = None,
                       allow_missing_chunks: bool = False) -> da.Array:
    """Open the sample weights of a data set (``path``: a Parquet table with
    ``column``, a Zarr store or HDF5 file with ``dataset``, or a ``.npy`` file) as float64
    chunked like the data's rows; DataNotFoundError, DataSourceError or InvalidDataError."""
    if dataset is not None and column is not None:
        raise ValueError("give dataset or column, not both")
    chunks = tuple(int(c) for c in chunks)
    loc = parse_location(path, storage_options)
    if column is not None:
        return _from_parquet(loc, column, chunks)
    return _from_array(loc, dataset, chunks, allow_missing_chunks)
