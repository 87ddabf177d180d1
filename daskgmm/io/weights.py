"""Sample weights stored next to the data, opened lazily and chunked like it.

:func:`open_sample_weight` reads one weight per row of the data from one of:

* a column of a Parquet table (the data's own table, or another one);
* an array in a Zarr store or an HDF5 file (the data's own store, or another one);
* a ``.npy`` file;

local or at any fsspec URL. The array may be 1-D ``(n_samples,)`` or a single column
``(n_samples, 1)``. The result is a 1-D Dask array with the data's row chunks, so that
each task of a pass reads the weights of its own rows (nothing is gathered to the
driver). Integer weights are converted to float64. The estimators check that the
weights are finite and non-negative while they read them.
"""

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
    """Open the sample weights of a data set, chunked like its rows.

    Parameters
    ----------
    path : str, os.PathLike or Location
        Where the weights are: a Parquet table (with ``column``), a Zarr store or an
        HDF5 file (with ``dataset`` when it holds several arrays), or a ``.npy`` file;
        local or at a URL. It may be the data's own file.
    dataset : str, optional
        The array inside a Zarr group or an HDF5 file.
    column : str, optional
        The column of a Parquet table.
    chunks : tuple of int
        The data's row chunks; their sum is the number of rows the weights must have.
    storage_options : dict, optional
        Options of the URL's filesystem.
    allow_missing_chunks : bool, default False
        Accept a Zarr or HDF5 array with chunks that were never written.

    Returns
    -------
    dask.array.Array
        float64, shape ``(sum(chunks),)``, chunks ``(chunks,)``.

    Raises
    ------
    DataNotFoundError
        ``path``, ``dataset`` or ``column`` does not exist (the message lists what does).
    DataSourceError
        A format that cannot hold weights, or ``dataset``/``column`` given to the wrong
        kind of file.
    InvalidDataError
        Not one value per row (shape, or a row count other than the data's), or values
        that are not numbers.
    """
    if dataset is not None and column is not None:
        raise ValueError("give dataset or column, not both")
    chunks = tuple(int(c) for c in chunks)
    loc = parse_location(path, storage_options)
    if column is not None:
        return _from_parquet(loc, column, chunks)
    return _from_array(loc, dataset, chunks, allow_missing_chunks)
