"""What a batch run reads: the data, its sample weights and the id column of its
labels, lazily (metadata only). For a Parquet table :func:`open_input` also chooses the
feature columns (by default the numeric ones but the id and weight columns). Errors
name the keys the user gave (:class:`InputKeys`), so ``fit`` and ``predict`` share it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from daskgmm.errors import ConfigError, DataSourceError, InvalidDataError
from daskgmm.io.locations import Location

__all__ = ["InputKeys", "RunInput", "open_input"]


@dataclass(frozen=True)
class InputKeys:
    """How the user named each setting, for messages."""

    path: str = "data.path"
    columns: str = "data.columns"
    id_column: str = "output.id_column"
    sample_weight: str = "data.sample_weight"


@dataclass
class RunInput:
    """The opened data of a run: ``X`` (row-chunked Dask array), where it is
    (``display``, credentials masked), its ``format``, the ``weights`` and the Parquet
    ``ids`` chunked like ``X`` (or None), the feature ``columns`` of a table, and
    ``info``, what the report records about it."""

    X: Any
    display: str
    format: str
    weights: Any = None
    ids: Any = None
    columns: list[str] | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def is_parquet(self) -> bool:
        """Whether the data is a Parquet table."""
        return self.format == "parquet"


@contextlib.contextmanager
def _named(key: str) -> Iterator[None]:
    """A :class:`~daskgmm.errors.DataSourceError` inside the block (no such file, not
    an array...) names the setting ``key`` first, so that the user's one line says which
    of the run's paths is wrong."""
    try:
        yield
    except DataSourceError as exc:
        if not str(exc).startswith(key):
            exc.args = (f"{key}: {exc}", *exc.args[1:])
        raise


def _weights(weight: Any, source: Location, reader: str, X: Any, keys: InputKeys,
             allow_missing_chunks: bool) -> tuple[Any, dict[str, Any]]:
    from daskgmm.io.weights import open_sample_weight

    where = weight.path or source
    if weight.path is None:
        if source.protocol == "sklearn":
            raise ConfigError(f"{keys.sample_weight}: {source.display} holds no weights; "
                              f"give {keys.sample_weight}.path (a file of weights)")
        if weight.column is not None and reader != "parquet":
            raise ConfigError(
                f"{keys.sample_weight}.column: {keys.path} is {reader} data, not a Parquet "
                f"table; give {keys.sample_weight}.dataset or {keys.sample_weight}.path")
        if weight.dataset is not None and reader not in ("zarr", "zarr-zip", "hdf5"):
            raise ConfigError(
                f"{keys.sample_weight}.dataset: {keys.path} is {reader} data, which has no "
                f"other arrays; give {keys.sample_weight}.path"
                + (f" or {keys.sample_weight}.column" if reader == "parquet" else ""))
    weights = open_sample_weight(where, dataset=weight.dataset, column=weight.column,
                                 chunks=tuple(int(c) for c in X.chunks[0]),
                                 allow_missing_chunks=allow_missing_chunks)
    return weights, {"path": where.display if weight.path else None,
                     "dataset": weight.dataset, "column": weight.column}


def open_input(source: Location, *, dataset: str | None = None,
               chunk_rows: int | None = None, columns: list[str] | None = None,
               allow_missing_chunks: bool = False, sample_weight: Any = None,
               id_column: str | None = None, keys: InputKeys | None = None) -> RunInput:
    """Open a run's data lazily: ``source`` with ``dataset``, ``chunk_rows``,
    ``columns``, ``allow_missing_chunks`` (as :func:`~daskgmm.io.readers.open_array` takes
    them), ``sample_weight`` and the Parquet ``id_column``, named in messages as ``keys``."""
    from daskgmm.io.parquet_tables import layout_to_dask, parquet_layout, read_parquet_column
    from daskgmm.io.readers import describe_array, get_reader, open_array

    keys = keys or InputKeys()
    with _named(keys.path):
        reader = get_reader(source).name
        display, layout = source.display, None
        if reader == "parquet":
            if dataset is not None:
                raise ConfigError(f"{display} is a Parquet table, which has no datasets: choose "
                                  f"the features with {keys.columns} instead")
            if columns is None:
                own = sample_weight.column if sample_weight is not None and \
                    sample_weight.path is None else None
                left_out = [c for c in (id_column, own) if c is not None]
                columns = [c for c in parquet_layout(source, None, chunk_rows).columns
                           if c not in left_out] if left_out else None
                if columns == []:
                    raise InvalidDataError(
                        f"{display!r} has no numeric column left as a feature once "
                        f"{', '.join(map(repr, left_out))} (the id or weight column) is set "
                        f"aside; name the features with {keys.columns}.")
            layout = parquet_layout(source, columns, chunk_rows)
            X = layout_to_dask(layout)
        else:
            for given, key, what in ((columns, keys.columns, "choose an array with the dataset"),
                                     (id_column, keys.id_column, "its labels are in row order")):
                if given is not None:
                    raise ConfigError(f"{key} applies to Parquet tables only; {display} is "
                                      f"{reader} data ({what})")
            X = open_array(source, dataset, chunk_rows, allow_missing_chunks=allow_missing_chunks)
    info: dict[str, Any] = {"path": display, "dataset": dataset, "format": reader,
                            **describe_array(X)}
    result = RunInput(X, display, reader, info=info)
    if layout is not None:
        result.columns = info["columns"] = list(layout.columns)
        if id_column is not None:
            try:
                result.ids = read_parquet_column(layout, id_column)
            except DataSourceError as exc:
                raise ConfigError(f"{keys.id_column}: {exc}") from None
            info["id_column"] = id_column
    if sample_weight is not None:
        result.weights, info["sample_weight"] = _weights(
            sample_weight, source, reader, X, keys, allow_missing_chunks)
    return result
