"""Parquet tables (a file, or a directory of files) as row-chunked Dask arrays.

The features are ``columns=`` or every numeric column. A chunk is one row group, or
consecutive row groups of one file merged up to the chunk size aimed at (a row group is
never split); the sizes come from the footers, read once at open time, and each task
reads its row groups' columns with pyarrow, locally or at any fsspec URL.
:func:`parquet_layout` exposes the chunking, so that per-row outputs can be written back
next to an id column (:func:`daskgmm.io.frames.write_labels_parquet`)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
from dask.base import tokenize
from dask.highlevelgraph import HighLevelGraph

from daskgmm.errors import (
    DataNotFoundError,
    DataSourceError,
    InvalidDataError,
    MissingDependencyError,
)
from daskgmm.io.chunking import DEFAULT_CHUNK_BYTES
from daskgmm.io.integrity import object_stamp, remote_file_token
from daskgmm.io.locations import Location, parse_location, scrub_secrets
from daskgmm.io.reader_base import Reader, check_chunk_rows, opening, where

__all__ = ["ParquetLayout", "ParquetReader", "parquet_layout", "read_parquet_column"]

PARQUET_MAGIC = b"PAR1"
_EXTENSIONS = (".parquet", ".pq", ".parq")


def _pyarrow() -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError(
            'Reading Parquet needs pyarrow, which is not installed: pip install '
            '"daskgmm[parquet]" (or pip install pyarrow).'
        ) from None
    return pq


@dataclass(frozen=True)
class ParquetLayout:
    """A Parquet table as :func:`parquet_layout` found it: its data ``files`` (sorted
    filesystem paths), one ``(file index, row groups)`` piece and its rows per chunk, the
    feature ``columns`` and their ``dtype`` (float32 if all are), every column, a
    ``token`` that changes with any file, and the first file's ``schema``."""

    location: Location
    files: tuple[str, ...]
    pieces: tuple[tuple[int, tuple[int, ...]], ...]
    chunks: tuple[int, ...]
    columns: tuple[str, ...]
    dtype: np.dtype
    all_columns: tuple[str, ...]
    token: str
    schema: Any = None


def _is_data_file(name: str) -> bool:
    base = name.rstrip("/").rsplit("/", 1)[-1]
    return not base.startswith(("_", ".")) and base.lower().endswith(_EXTENSIONS)


def _list_files(loc: Location) -> tuple[list[str], str]:
    """Data files of a table and a token of their versions."""
    fs = loc.fs
    h = hashlib.blake2b(digest_size=16)
    if loc.isdir():
        if not loc.listable:
            raise DataSourceError(
                f"{loc.display!r} is a directory at a URL that cannot be listed; name the "
                "Parquet files one by one."
            )
        found = fs.find(loc.path, detail=True)
        files = sorted(p for p in found if _is_data_file(str(p))
                       and "/." not in str(p)[len(loc.path):]
                       and "/_" not in str(p)[len(loc.path):])
        if not files:
            raise DataNotFoundError(
                f"{loc.display!r} holds no Parquet files (*.parquet, *.pq); nothing to open.")
        for p in files:
            h.update(repr((p, object_stamp(found[p]))).encode())
        return files, h.hexdigest()
    h.update(repr((loc.path, remote_file_token(loc))).encode())
    return [loc.path], h.hexdigest()


def _numeric(field_type: Any) -> bool:
    import pyarrow.types as pat

    return bool(pat.is_integer(field_type) or pat.is_floating(field_type))


def parquet_layout(path: str | os.PathLike | Location, columns: list[str] | None = None,
                   chunk_rows: int | None = None, *,
                   target_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                   storage_options: dict | None = None) -> ParquetLayout:
    """Read the footers of a Parquet file or directory (searched recursively, names
    starting with ``_`` or ``.`` skipped) and merge consecutive row groups of a file into
    chunks of up to ``chunk_rows`` rows (default: ``target_chunk_bytes``). The features
    are ``columns`` (default: every integer or float column). DataNotFoundError (no file,
    an unknown column) or InvalidDataError (a column not numeric or named twice, no
    numeric column, files that disagree on the feature columns)."""
    pq = _pyarrow()
    check_chunk_rows(chunk_rows)
    loc = parse_location(path, storage_options)
    files, token = _list_files(loc)
    fs = loc.fs
    schema = None
    schemas: list[Any] = []
    sizes: list[list[int]] = []
    for f in files:
        with opening(loc, "the Parquet file", _shown(loc, f)), fs.open(f, "rb") as handle:
            meta = pq.ParquetFile(handle).metadata
            file_schema = meta.schema.to_arrow_schema()
        if schema is None:
            schema = file_schema
        schemas.append(file_schema)
        sizes.append([meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
    assert schema is not None
    names = tuple(schema.names)
    types = {f.name: f.type for f in schema}  # (a duplicated name is refused below)
    if columns is None:
        chosen = tuple(n for n in names if _numeric(types[n]))
        if not chosen:
            raise InvalidDataError(
                f"{loc.display!r} has no numeric column; its columns are "
                f"{', '.join(map(repr, names))}. daskgmm needs integer or float features.")
    else:
        if isinstance(columns, str):
            columns = [columns]
        chosen = tuple(columns)
        unknown = [c for c in chosen if c not in names]
        if unknown:
            raise DataNotFoundError(
                f"{loc.display!r} has no column {', '.join(map(repr, unknown))}; its "
                f"columns are {', '.join(map(repr, names))}.")
        if len(set(chosen)) != len(chosen):
            raise InvalidDataError(f"columns names a column more than once: {list(chosen)}; "
                                   "name each feature column once.")
        bad = [c for c in chosen if not _numeric(types[c])]
        if bad:
            raise InvalidDataError(
                f"{where(loc, None)}: column(s) "
                + ", ".join(f"{c!r} ({types[c]})" for c in bad)
                + " are not numeric; choose integer or float feature columns (columns=).")
    _check_schemas(loc, files, schemas, chosen, by_default=columns is None)
    all_f32 = all(str(types[c]) == "float" for c in chosen)
    dtype = np.dtype(np.float32 if all_f32 else np.float64)
    limit = (int(chunk_rows) if chunk_rows is not None
             else max(1, int(target_chunk_bytes) // (len(chosen) * dtype.itemsize)))
    pieces: list[tuple[int, tuple[int, ...]]] = []
    chunks: list[int] = []
    for i, groups in enumerate(sizes):
        current: list[int] = []
        rows = 0
        for g, n in enumerate(groups):
            if n == 0:
                continue
            if current and rows + n > limit:
                pieces.append((i, tuple(current)))
                chunks.append(rows)
                current, rows = [], 0
            current.append(g)
            rows += n
        if current:
            pieces.append((i, tuple(current)))
            chunks.append(rows)
    if not chunks:
        raise InvalidDataError(f"{loc.display!r} holds no rows; it needs at least one sample.")
    return ParquetLayout(loc, tuple(files), tuple(pieces), tuple(chunks), chosen, dtype,
                         names, token, schema)


def _check_schemas(loc: Location, files: list[str], schemas: list[Any],
                   chosen: tuple[str, ...], *, by_default: bool) -> None:
    """Refuse a table whose feature columns are not the same in every file: a chosen
    column missing from a file, named twice in one, of a non-numeric type in one, or
    (when the features are every numeric column) a numeric column some files lack or
    hold as another type."""
    first = _shown(loc, files[0])
    for file, schema in zip(files, schemas, strict=True):
        shown = _shown(loc, file)
        names = list(schema.names)
        for c in chosen:
            count = names.count(c)
            if count > 1:
                raise InvalidDataError(
                    f"{loc.display!r}: column {c!r} appears {count} times in {shown!r}; a "
                    "feature column needs a unique name. Rename the columns, or choose "
                    "others with columns=.")
            if count == 0:
                raise InvalidDataError(
                    f"{loc.display!r}: the files disagree on the columns: {shown!r} has no "
                    f"column {c!r}, which {first!r} has. Every file of a table needs the "
                    "feature columns; rewrite the odd files, or choose columns they all "
                    "have (columns=).")
            kind = schema.field(c).type
            if not _numeric(kind):
                raise InvalidDataError(
                    f"{loc.display!r}: the files disagree on the columns: {c!r} is {kind} "
                    f"in {shown!r} but numeric in {first!r}. Every file needs numeric "
                    "feature columns; rewrite the odd files, or choose other columns "
                    "(columns=).")
        if by_default:
            extra = [f.name for f in schema if _numeric(f.type) and f.name not in chosen]
            if extra:
                raise InvalidDataError(
                    f"{loc.display!r}: the files disagree on the columns: {shown!r} has "
                    f"numeric column(s) {', '.join(map(repr, extra))} that are not numeric "
                    f"columns of {first!r}, so the features (every numeric column) differ "
                    "from file to file. Choose the feature columns with columns=, or "
                    "rewrite the odd files.")


def _shown(loc: Location, file: str) -> str:
    return Location(loc.fs.unstrip_protocol(file), loc.storage_options).display


def _read_groups(loc: Location, file: str, groups: tuple[int, ...], columns: list[str],
                 n_rows: int) -> Any:
    """The pyarrow table of ``columns`` in some row groups of one file."""
    pq = _pyarrow()
    try:
        with loc.fs.open(file, "rb") as handle:
            table = pq.ParquetFile(handle).read_row_groups(list(groups), columns=columns,
                                                           use_threads=False)
    except FileNotFoundError:
        raise DataNotFoundError(
            f"{_shown(loc, file)!r} is gone (it was there when the table was opened)") \
            from None
    except Exception as exc:
        raise DataSourceError(
            f"Cannot read row groups {list(groups)} of {_shown(loc, file)!r}: "
            f"{type(exc).__name__}: {scrub_secrets(str(exc))}") from None
    if table.num_rows != n_rows:
        raise DataSourceError(
            f"{_shown(loc, file)!r} changed since it was opened (row groups {list(groups)} "
            f"hold {table.num_rows} rows, not {n_rows}); open it again.")
    return table


def _read_piece(loc: Location, file: str, groups: tuple[int, ...], columns: tuple[str, ...],
                dtype: np.dtype, n_rows: int) -> np.ndarray:
    """The feature columns of some row groups of one file as a 2-D array."""
    table = _read_groups(loc, file, groups, list(columns), n_rows)
    odd = [f"{name!r} ({table.schema.field(name).type})" for name in columns
           if not _numeric(table.schema.field(name).type)]
    if odd:
        raise DataSourceError(
            f"{_shown(loc, file)!r} changed since it was opened: column(s) {', '.join(odd)} "
            "are no longer numeric; open it again.")
    out = np.empty((n_rows, len(columns)), dtype=dtype)
    for j, name in enumerate(columns):
        col = table.column(name)
        values = col.to_numpy(zero_copy_only=False)
        if col.null_count:
            values = np.asarray(values, dtype=np.float64)
        out[:, j] = values
    return out


def _read_column(loc: Location, file: str, groups: tuple[int, ...], column: str,
                 n_rows: int) -> np.ndarray:
    table = _read_groups(loc, file, groups, [column], n_rows)
    return table.column(column).to_numpy(zero_copy_only=False)


def _array(layout: ParquetLayout, name: str, read: Any, args: tuple, chunks: tuple,
           meta: np.ndarray) -> da.Array:
    """The Dask array of one ``read(location, file, groups, *args, rows)`` task per
    chunk of ``layout``."""
    extra = (0,) * (len(chunks) - 1)
    dsk = {(name, i, *extra): (read, layout.location, layout.files[f], groups, *args, n)
           for i, ((f, groups), n) in enumerate(zip(layout.pieces, layout.chunks,
                                                    strict=True))}
    graph = HighLevelGraph.from_collections(name, dsk, dependencies=[])
    return da.Array(graph, name, chunks=chunks, meta=meta)


def layout_to_dask(layout: ParquetLayout) -> da.Array:
    """The ``(n_rows, n_columns)`` Dask array of a layout's feature columns."""
    name = "parquet-" + tokenize(layout.location, layout.files, layout.pieces,
                                 layout.columns, layout.dtype.str, layout.token)
    return _array(layout, name, _read_piece, (layout.columns, layout.dtype),
                  (layout.chunks, (len(layout.columns),)), np.empty((0, 0), layout.dtype))


def read_parquet_column(layout: ParquetLayout, column: str) -> da.Array:
    """Any ``column`` of the table (an id column, of any type) as a 1-D Dask array
    chunked like the layout's features."""
    if column not in layout.all_columns:
        raise DataNotFoundError(
            f"{layout.location.display!r} has no column {column!r}; its columns are "
            f"{', '.join(map(repr, layout.all_columns))}.")
    name = "parquet-column-" + tokenize(layout.location, layout.files, layout.pieces,
                                        column, layout.token)
    try:
        dtype = np.dtype(layout.schema.field(column).type.to_pandas_dtype())
    except Exception:
        dtype = np.dtype(object)
    return _array(layout, name, _read_column, (column,), (layout.chunks,),
                  np.empty((0,), dtype=dtype))


class ParquetReader(Reader):
    """Parquet files or directories of Parquet files (pyarrow), local or at a URL."""

    name = "parquet"
    description = "Parquet file or directory of Parquet files (*.parquet), local or at a URL"
    extensions = _EXTENSIONS

    def sniff(self, location: Location) -> bool:
        if location.isfile():
            return location.head(4) == PARQUET_MAGIC
        if location.isdir():
            return any(_is_data_file(name) for name in location.find())
        return False

    def open(self, path: Location | str | os.PathLike, dataset: str | None = None,
             chunk_rows: int | None = None, *,
             target_chunk_bytes: int = DEFAULT_CHUNK_BYTES,
             storage_options: dict | None = None,
             allow_missing_chunks: bool = False, columns: list[str] | None = None,
             **options: Any) -> da.Array:
        if dataset:
            raise DataSourceError(
                f"{parse_location(path, storage_options).display!r} is a Parquet table; it "
                f"has no dataset {dataset!r}. Select feature columns with columns= instead.")
        unused = sorted(k for k, v in options.items() if v is not None)
        if unused:
            raise TypeError(f"the parquet reader takes no option {', '.join(unused)}")
        layout = parquet_layout(path, columns, chunk_rows,
                                target_chunk_bytes=target_chunk_bytes,
                                storage_options=storage_options)
        return layout_to_dask(layout)
