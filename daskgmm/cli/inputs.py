"""What a batch run reads: the data, its sample weights and the id column of its labels.

:func:`open_input` opens ``data.path`` (``predict --data``) lazily, wherever it is (a
local path or any fsspec URL with ``storage_options``) and in any format
:func:`daskgmm.io.readers.open_array` reads. For a Parquet table it also selects the
feature columns (``data.columns``; by default every numeric column except the id column
and a weight column), reads the id column that goes next to the labels, and reads the
weights from a column of the same table, all chunked like the features. Nothing is read
but metadata here.

The keys the user gave (``data.columns``, ``--columns`` ...) are named in the errors, so
the same code serves ``daskgmm fit`` and ``daskgmm predict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from daskgmm.errors import ConfigError, DataSourceError, InvalidDataError

__all__ = ["RunInput", "open_input"]

_SKLEARN = "sklearn:"


@dataclass
class RunInput:
    """The opened data of a run.

    Attributes
    ----------
    X : dask.array.Array
        ``(n_samples, n_features)``, row-chunked.
    display : str
        ``data.path`` as shown to the user (credentials masked).
    format : str or None
        The reader's name (``"zarr"``, ``"parquet"``, ``"hdf5"`` ...).
    weights : dask.array.Array or None
        One weight per row, chunked like ``X``.
    ids : dask.array.Array or None
        The id column of a Parquet table, chunked like ``X``.
    columns : list of str or None
        The feature columns of a Parquet table.
    info : dict
        What the report records about the data (no credentials).
    """

    X: Any
    display: str
    format: str | None
    weights: Any = None
    ids: Any = None
    columns: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_parquet(self) -> bool:
        """Whether the data is a Parquet table."""
        return self.format == "parquet"


@dataclass(frozen=True)
class InputKeys:
    """How the user named each setting, for messages."""

    path: str = "data.path"
    columns: str = "data.columns"
    id_column: str = "output.id_column"
    sample_weight: str = "data.sample_weight"


def _display(path: str, storage_options: dict | None) -> str:
    if path.startswith(_SKLEARN):
        return path
    from daskgmm.io.locations import parse_location

    return parse_location(path, storage_options).display


def _parquet_features(path: str, *, columns: list[str] | None, exclude: list[str],
                      chunk_rows: int | None, storage_options: dict | None,
                      keys: InputKeys) -> Any:
    """The Parquet layout of the feature columns (default: numeric, minus ``exclude``)."""
    from daskgmm.io.parquet_tables import parquet_layout

    if columns is None and exclude:
        every = parquet_layout(path, None, chunk_rows, storage_options=storage_options)
        chosen = [c for c in every.columns if c not in exclude]
        if not chosen:
            raise InvalidDataError(
                f"{every.location.display!r} has no numeric column left as a feature once "
                f"{', '.join(map(repr, exclude))} (the id or weight column) is set aside; "
                f"name the features with {keys.columns}.")
        columns = chosen
    return parquet_layout(path, columns, chunk_rows, storage_options=storage_options)


def _weights_of(weight: Any, *, data_path: str, data_format: str | None, layout: Any,
                X: Any, storage_options: dict | None, allow_missing_chunks: bool,
                keys: InputKeys) -> tuple[Any, dict[str, Any]]:
    from daskgmm.io.parquet_tables import _numeric, read_parquet_column
    from daskgmm.io.weights import open_sample_weight

    path = getattr(weight, "path", None)
    dataset = getattr(weight, "dataset", None)
    column = getattr(weight, "column", None)
    options = getattr(weight, "storage_options", None)
    info = {"path": None, "dataset": dataset, "column": column}
    if path is None:
        if data_path.startswith(_SKLEARN):
            raise ConfigError(f"{keys.sample_weight}: {data_path} holds no weights; give "
                              f"{keys.sample_weight}.path (a file of weights)")
        if column is not None and data_format != "parquet":
            raise ConfigError(
                f"{keys.sample_weight}.column: {keys.path} is {data_format} data, not a "
                f"Parquet table; give {keys.sample_weight}.dataset (an array of the same "
                f"store) or {keys.sample_weight}.path")
        if dataset is not None and data_format not in ("zarr", "zarr-zip", "hdf5"):
            raise ConfigError(
                f"{keys.sample_weight}.dataset: {keys.path} is {data_format} data, which "
                f"has no other arrays; give {keys.sample_weight}.path"
                + (f" or {keys.sample_weight}.column" if data_format == "parquet" else ""))
        if column is not None:  # a column of the data's own table, chunked alike
            if column not in layout.all_columns:
                raise InvalidDataError(
                    f"{keys.sample_weight}.column: {layout.location.display!r} has no "
                    f"column {column!r}; its columns are "
                    f"{', '.join(map(repr, layout.all_columns))}.")
            if not _numeric(layout.schema.field(column).type):
                raise InvalidDataError(
                    f"{keys.sample_weight}.column: {column!r} holds "
                    f"{layout.schema.field(column).type}, not numbers; choose an integer or "
                    "float column.")
            weights = read_parquet_column(layout, column)
            return weights.astype(np.float64), info
        path, options = data_path, storage_options
    elif options is None:
        options = storage_options
    info["path"] = _display(path, options)
    weights = open_sample_weight(path, dataset=dataset, column=column,
                                 chunks=tuple(int(c) for c in X.chunks[0]),
                                 storage_options=options,
                                 allow_missing_chunks=allow_missing_chunks)
    return weights, info


def open_input(path: str, *, dataset: str | None = None, chunk_rows: int | None = None,
               columns: list[str] | None = None, storage_options: dict | None = None,
               allow_missing_chunks: bool = False, sample_weight: Any = None,
               id_column: str | None = None, keys: InputKeys | None = None) -> RunInput:
    """Open a run's data lazily (see the module docstring).

    Parameters
    ----------
    path : str
        ``data.path``: a local path, a URL or ``sklearn:NAME``.
    dataset, chunk_rows, columns, storage_options, allow_missing_chunks
        As :func:`daskgmm.io.readers.open_array` takes them.
    sample_weight : SampleWeightConfig-like, optional
        ``path``, ``dataset``, ``column`` and ``storage_options`` attributes.
    id_column : str, optional
        Parquet input: the column to carry next to the labels.
    keys : InputKeys, optional
        The names of the settings in messages (the YAML keys by default).

    Raises
    ------
    ConfigError
        A setting that does not apply to this data (``columns`` or ``id_column`` for
        data that is not a Parquet table...).
    daskgmm.errors.DaskGMMError
        The data or the weights cannot be opened (as ``open_array`` raises).
    """
    from daskgmm.io.parquet_tables import layout_to_dask, read_parquet_column
    from daskgmm.io.readers import describe_array, get_reader, open_array

    keys = keys or InputKeys()
    reader = getattr(get_reader(path, storage_options=storage_options), "name", None)
    display = _display(path, storage_options)
    layout = None
    if reader == "parquet":
        exclude = [id_column] if id_column is not None else []
        weight_column = getattr(sample_weight, "column", None)
        if weight_column is not None and getattr(sample_weight, "path", None) is None:
            exclude.append(weight_column)
        if dataset is not None:
            raise ConfigError(f"{display} is a Parquet table, which has no datasets: select "
                              f"the features with {keys.columns} instead of a dataset")
        layout = _parquet_features(path, columns=columns, exclude=exclude,
                                   chunk_rows=chunk_rows, storage_options=storage_options,
                                   keys=keys)
        X = layout_to_dask(layout)
    else:
        if columns is not None:
            raise ConfigError(f"{keys.columns} applies to Parquet tables only; {display} is "
                              f"{reader} data (choose an array with the dataset instead)")
        if id_column is not None:
            raise ConfigError(f"{keys.id_column} applies to Parquet input only; {display} "
                              f"is {reader} data, whose labels are written in row order")
        X = open_array(path, dataset, chunk_rows, storage_options=storage_options,
                       allow_missing_chunks=allow_missing_chunks)
    info: dict[str, Any] = {"path": display, "dataset": dataset, "format": reader,
                            **describe_array(X)}
    result = RunInput(X, display, reader, info=info)
    if layout is not None:
        result.columns = list(layout.columns)
        info["columns"] = list(layout.columns)
        if id_column is not None:
            try:
                result.ids = read_parquet_column(layout, id_column)
            except DataSourceError as exc:
                raise ConfigError(f"{keys.id_column}: {exc}") from None
            info["id_column"] = id_column
    if sample_weight is not None:
        result.weights, info["sample_weight"] = _weights_of(
            sample_weight, data_path=path, data_format=reader, layout=layout, X=X,
            storage_options=storage_options, allow_missing_chunks=allow_missing_chunks,
            keys=keys)
    return result
