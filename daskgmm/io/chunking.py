"""Row arithmetic for arrays opened from storage, around the engine's chunk size.

The default chunk size is the engine's policy, written once in
:mod:`daskgmm.engine.passes` (:data:`DEFAULT_CHUNK_BYTES`, 64 MiB, and
:func:`default_chunk_rows`); the readers, the writers and the generator use it from
here so that the arrays they make are chunked as a fit chunks NumPy input.
"""

from __future__ import annotations

from daskgmm.engine.passes import DEFAULT_CHUNK_BYTES, default_chunk_rows

__all__ = ["DEFAULT_CHUNK_BYTES", "default_chunk_rows", "even_chunks", "rows_per_chunk"]


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
