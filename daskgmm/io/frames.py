"""Tables and labelled arrays in, the same kind of object out.

:func:`as_array` turns what a user passes to ``fit``/``predict`` into a 2-D array: NumPy
and Dask arrays as they are; the numeric columns (or ``columns=``) of a pandas
DataFrame or Series, or of a Dask DataFrame (one row chunk per partition, whose lengths
are counted on the workers); an xarray DataArray with ``sample_dim`` (default: the
first) as rows and the other dimensions stacked into features (a Dask-backed one stays
lazy). Its :class:`OutputWrapper` turns per-row results back into the input's kind,
with the frame's index or the sample coordinate. :func:`write_labels_parquet` writes
labels of Parquet input back as Parquet, one file per input chunk, next to an id
column."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import dask.array as da
import numpy as np

from daskgmm.errors import InvalidDataError
from daskgmm.io.chunking import DEFAULT_CHUNK_BYTES

__all__ = ["OutputWrapper", "as_array", "label_part_tasks", "write_labels_parquet"]


@dataclass(frozen=True)
class OutputWrapper:
    """Turns per-row outputs back into the ``kind`` of object the input was
    (``"numpy"``, ``"dask"``, ``"pandas"``, ``"dask-dataframe"`` or ``"xarray"``), with
    its ``index`` (pandas or dask index, or the sample coordinate's values), the row
    ``chunks`` of the 2-D array and, for xarray, the ``sample_dim``."""

    kind: str
    n_samples: int | None = None
    index: Any = None
    chunks: tuple[int, ...] | None = None
    sample_dim: str | None = None
    extra: dict = field(default_factory=dict)

    def _rows(self, values: Any) -> Any:
        """``values`` as the array type this kind of output is built from."""
        if self.kind == "pandas":
            return np.asarray(values.compute() if isinstance(values, da.Array) else values)
        if self.kind == "dask-dataframe":
            if not isinstance(values, da.Array):
                values = np.asarray(values)
                values = da.from_array(values, chunks=(self.chunks, *values.shape[1:]))
            elif self.chunks is not None and values.chunks[0] != self.chunks:
                values = values.rechunk({0: self.chunks})
            return values
        return values

    def scores(self, values: Any, name: str = "score") -> Any:
        """Wrap per-row scores ``(n,)``."""
        return self.labels(values, name)

    def labels(self, values: Any, name: str = "label") -> Any:
        """Wrap labels ``(n,)`` (or any per-row vector)."""
        if self.kind in ("numpy", "dask"):
            return values
        values = self._rows(values)
        if self.kind == "pandas":
            import pandas as pd

            return pd.Series(values, index=self.index, name=name)
        if self.kind == "dask-dataframe":
            import dask.dataframe as dd

            return dd.from_dask_array(values, columns=name, index=self.index)
        return self._xarray(values, (self.sample_dim,), name)

    def responsibilities(self, values: Any, name: str = "responsibilities") -> Any:
        """Wrap responsibilities ``(n, K)`` (columns / dimension ``component``)."""
        if self.kind in ("numpy", "dask"):
            return values
        values = self._rows(values)
        k = int(values.shape[1])
        if self.kind == "pandas":
            import pandas as pd

            return pd.DataFrame(values, index=self.index,
                                columns=pd.RangeIndex(k, name="component"))
        if self.kind == "dask-dataframe":
            import dask.dataframe as dd

            return dd.from_dask_array(values, columns=[f"component_{j}" for j in range(k)],
                                      index=self.index)
        return self._xarray(values, (self.sample_dim, "component"), name,
                            component=np.arange(k))

    def _xarray(self, values: Any, dims: tuple, name: str, **coords: Any) -> Any:
        import xarray as xr

        if self.index is not None:
            coords = {self.sample_dim: self.index, **coords}
        return xr.DataArray(values, dims=dims, coords=coords, name=name)


def _numeric_columns(names: list, dtypes: list, columns: list | None, what: str) -> list:
    if columns is not None:
        if isinstance(columns, str):
            columns = [columns]
        unknown = [c for c in columns if c not in names]
        if unknown:
            raise InvalidDataError(
                f"the {what} has no column {', '.join(map(repr, unknown))}; its columns "
                f"are {', '.join(map(repr, names))}.")
        return list(columns)
    chosen = [n for n, t in zip(names, dtypes, strict=True) if _is_numeric(t)]
    if not chosen:
        raise InvalidDataError(
            f"the {what} has no numeric column; its columns are "
            f"{', '.join(map(repr, names))}. daskgmm needs integer or float features.")
    return chosen


def _is_numeric(t: Any) -> bool:
    """Integer or float (pandas nullable ones included), not boolean."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return bool(is_numeric_dtype(t) and not is_bool_dtype(t))


def _float_dtype(dtypes: list) -> np.dtype:
    return np.dtype(np.float32) if all(str(t).lower() == "float32" for t in dtypes) \
        else np.dtype(np.float64)


def _refuse_non_numeric(chosen: list, dtypes: list, what: str) -> None:
    bad = [f"{c!r} ({t})" for c, t in zip(chosen, dtypes, strict=True) if not _is_numeric(t)]
    if bad:
        raise InvalidDataError(
            f"{what} column(s) {', '.join(bad)} are not numeric; choose integer or float "
            "feature columns (columns=).")


def _from_pandas(X: Any, columns: list | None) -> tuple[np.ndarray, OutputWrapper]:
    import pandas as pd

    frame = X.to_frame() if isinstance(X, pd.Series) else X
    names = list(frame.columns)
    chosen = _numeric_columns(names, list(frame.dtypes), columns, "DataFrame")
    sub = frame[chosen]
    _refuse_non_numeric(chosen, list(sub.dtypes), "DataFrame")
    values = sub.to_numpy(dtype=_float_dtype(list(sub.dtypes)), na_value=np.nan)
    return values, OutputWrapper("pandas", len(frame), frame.index, (len(frame),),
                                 extra={"columns": chosen})


def _from_dask_dataframe(X: Any, columns: list | None) -> tuple[da.Array, OutputWrapper]:
    names = list(X.columns)
    chosen = _numeric_columns(names, list(X.dtypes), columns, "dask DataFrame")
    sub = X[chosen]
    _refuse_non_numeric(chosen, list(sub.dtypes), "dask DataFrame")
    dtype = _float_dtype(list(sub.dtypes))
    arr = sub.to_dask_array(lengths=True)  # partition lengths counted on the workers
    if arr.dtype != dtype:
        arr = arr.astype(dtype)
    chunks = tuple(int(c) for c in arr.chunks[0])
    if arr.chunks[1] != (len(chosen),):
        arr = arr.rechunk({1: -1})
    return arr, OutputWrapper("dask-dataframe", int(sum(chunks)), X.index, chunks,
                              extra={"columns": chosen, "meta": sub._meta})


def _from_xarray(X: Any, sample_dim: str | None) -> tuple[Any, OutputWrapper]:
    if X.ndim < 1:
        raise InvalidDataError("the DataArray is a scalar; it needs a sample dimension.")
    dim = sample_dim if sample_dim is not None else X.dims[0]
    if dim not in X.dims:
        raise InvalidDataError(
            f"sample_dim={dim!r} is not a dimension of the DataArray; its dimensions are "
            f"{', '.join(map(repr, X.dims))}.")
    others = [d for d in X.dims if d != dim]
    arr = X.transpose(dim, *others)
    if not others:
        arr = arr.expand_dims("feature", axis=1)
    elif len(others) > 1:
        arr = arr.stack(feature=others)
    data = arr.data
    if isinstance(data, da.Array):
        if data.chunks[1] != (data.shape[1],):
            data = data.rechunk({1: -1})
    else:
        data = np.asarray(data)
    if data.dtype.kind in "iub":
        data = data.astype(np.float64)
    index = X.indexes[dim] if dim in X.indexes else None
    chunks = tuple(int(c) for c in data.chunks[0]) if isinstance(data, da.Array) \
        else (int(data.shape[0]),)
    return data, OutputWrapper("xarray", int(data.shape[0]), index, chunks, dim)


def as_array(X: Any, *, sample_dim: str | None = None,
             columns: list[str] | None = None) -> tuple[Any, OutputWrapper]:
    """The 2-D array of an input (Dask arrays chunked along rows only) and the
    :class:`OutputWrapper` of its per-row outputs; ``sample_dim`` (xarray) and
    ``columns`` (DataFrames) as in the module docstring. InvalidDataError for no numeric
    column, an unknown or non-numeric column, or an unknown sample_dim."""
    module = type(X).__module__.split(".")[0]
    if isinstance(X, da.Array):
        # With unknown chunk sizes the row count is NaN; the estimator says what to do.
        known = X.ndim and not np.isnan(X.shape[0])
        return X, OutputWrapper("dask", int(X.shape[0]) if known else None)
    if module == "pandas":
        return _from_pandas(X, columns)
    if module in ("dask", "dask_expr") and hasattr(X, "to_dask_array"):
        if not hasattr(X, "columns"):
            X = X.to_frame()
        return _from_dask_dataframe(X, columns)
    if module == "xarray":
        import xarray as xr

        if isinstance(X, xr.Dataset):
            raise InvalidDataError(
                "an xarray Dataset holds several variables; pass one DataArray, e.g. "
                "ds['X'].")
        return _from_xarray(X, sample_dim)
    if sample_dim is not None:
        raise TypeError("sample_dim applies to xarray.DataArray input only")
    return X, OutputWrapper("numpy")


def _write_label_part(out_location: Any, index: int, labels: np.ndarray, ids: Any,
                      id_column: str | None, label_column: str) -> int:
    """Write one chunk's labels (and ids) as ``part-<index>.parquet``; returns its rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {id_column: pa.array(ids)} if id_column is not None else {}
    columns[label_column] = pa.array(np.asarray(labels, dtype=np.int64))
    table = pa.table(columns)
    with out_location.join(f"part-{index:05d}.parquet").open("wb") as f:
        pq.write_table(table, f)
    return int(table.num_rows)


def label_part_tasks(out_location: Any, labels: da.Array, ids: da.Array | None,
                     id_column: str | None, label_column: str = "label") -> list[Any]:
    """One task per chunk of ``labels`` writing it, next to the same chunk of ``ids``,
    as ``part-<index>.parquet`` in a directory (each returns its rows)."""
    from dask import delayed

    lab_blocks = labels.to_delayed().ravel()
    id_blocks = ids.to_delayed().ravel() if ids is not None else [None] * len(lab_blocks)
    return [delayed(_write_label_part, pure=False)(out_location, i, lb, ib, id_column,
                                                   label_column)
            for i, (lb, ib) in enumerate(zip(lab_blocks, id_blocks, strict=True))]


def write_labels_parquet(labels: Any, source: str | os.PathLike, output: str | os.PathLike,
                         *, id_column: str | None = None, columns: list[str] | None = None,
                         chunk_rows: int | None = None,
                         target_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                         storage_options: dict | None = None,
                         output_storage_options: dict | None = None,
                         overwrite: bool = False, label_column: str = "label") -> dict:
    """Write the ``(n_samples,)`` labels of the Parquet table ``source`` as the Parquet
    directory ``output``: one file per chunk of the input (``part-00000.parquet`` ...,
    chunked by ``columns``, ``chunk_rows``, ``target_chunk_bytes`` as
    :func:`~daskgmm.io.readers.open_array` would), each with ``id_column`` copied from
    the input and ``label_column`` (int64), written by the tasks and atomically with a
    marker (kind ``"labels"``; ``overwrite`` replaces only an output daskgmm wrote).
    Returns ``output`` (redacted), ``n_rows``, ``n_files`` and ``columns``."""
    import dask

    from daskgmm.io.locations import parse_location
    from daskgmm.io.parquet_tables import parquet_layout, read_parquet_column
    from daskgmm.io.storage import atomic_output_directory

    layout = parquet_layout(source, columns, chunk_rows, target_chunk_bytes=target_chunk_bytes,
                            storage_options=storage_options)
    n = int(sum(layout.chunks))
    if getattr(labels, "ndim", None) != 1 or int(labels.shape[0]) != n:
        raise InvalidDataError(
            f"labels must have shape ({n},) to match the {n} rows of "
            f"{layout.location.display!r}; got shape {getattr(labels, 'shape', None)}.")
    if id_column is not None and id_column == label_column:
        raise ValueError(f"id_column and label_column are both {id_column!r}")
    lab = (labels.rechunk({0: layout.chunks}) if isinstance(labels, da.Array)
           else da.from_array(np.asarray(labels), chunks=(layout.chunks,)))
    ids = read_parquet_column(layout, id_column) if id_column is not None else None
    out_display = parse_location(output, output_storage_options).display
    with atomic_output_directory(output, kind="labels", overwrite=overwrite,
                                 storage_options=output_storage_options) as out:
        counts = dask.compute(*label_part_tasks(out.location, lab, ids, id_column,
                                                 label_column))
    return {"output": out_display, "n_rows": int(sum(counts)), "n_files": len(counts),
            "columns": ([id_column] if id_column else []) + [label_column]}
