"""The default chunk size of daskgmm, and the row arithmetic around it.

One number decides how big a block of rows is everywhere in daskgmm: the chunks
:func:`~daskgmm.io.readers.open_array` makes, the blocks the engine cuts NumPy input
into, and the storage chunks of the data sets :func:`~daskgmm.io.generate.generate_mixture`
writes. Import :data:`DEFAULT_CHUNK_BYTES` (and :func:`default_chunk_rows`) from here
rather than repeating the figure.

Why 64 MiB: a chunk and the kernel's working memory beside it fit comfortably in workers
of a few hundred MiB (the out-of-core test runs two 300 MiB workers), while the
scheduler's cost per task (about a millisecond) stays below 1% of the time to read and
process a chunk (a 64 MiB chunk takes about 0.1-0.3 s per E-step on one core).
"""

from __future__ import annotations

__all__ = ["DEFAULT_CHUNK_BYTES", "default_chunk_rows", "even_chunks", "rows_per_chunk"]

DEFAULT_CHUNK_BYTES = 64 * 2**20
"""Bytes aimed at for one row chunk (64 MiB), counted in the dtype the data is used in."""


def default_chunk_rows(n_features: int, itemsize: int = 8,
                       target_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows of ``n_features`` values of ``itemsize`` bytes that fill ``target_bytes``.

    Parameters
    ----------
    n_features : int
        Values per row (at least 1 is assumed).
    itemsize : int, default 8
        Bytes per value (8 for float64).
    target_bytes : int, default DEFAULT_CHUNK_BYTES

    Returns
    -------
    int
        At least 1.
    """
    return max(1, int(target_bytes) // max(1, int(n_features) * int(itemsize)))


def rows_per_chunk(n_samples: int, n_features: int, itemsize: int, chunk_rows: int | None,
                   native_row_chunk: int | None,
                   target_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk of an array opened from storage.

    ``chunk_rows`` when given; otherwise enough rows for ``target_bytes``, rounded down to
    a multiple of the storage's row chunk (at least one storage chunk), so that no storage
    chunk is read by two tasks. Clipped to ``n_samples``.
    """
    if chunk_rows is not None:
        return int(min(chunk_rows, n_samples))
    rows = default_chunk_rows(n_features, itemsize, target_bytes)
    if native_row_chunk and native_row_chunk > 0:
        rows = max(native_row_chunk, (rows // native_row_chunk) * native_row_chunk)
    return int(max(1, min(rows, n_samples)))


def even_chunks(n: int, rows: int) -> tuple[int, ...]:
    """``n`` rows cut into chunks of ``rows`` (the last one shorter)."""
    full, rest = divmod(int(n), int(rows))
    return (int(rows),) * full + ((rest,) if rest else ())
