"""Row arithmetic around the engine's chunk policy (:data:`DEFAULT_CHUNK_BYTES` and
:func:`default_chunk_rows` of :mod:`daskgmm.engine.passes`, re-exported here)."""

from __future__ import annotations

from daskgmm.engine.passes import DEFAULT_CHUNK_BYTES, default_chunk_rows

__all__ = ["DEFAULT_CHUNK_BYTES", "default_chunk_rows", "even_chunks", "rows_per_chunk"]


def rows_per_chunk(n_samples: int, n_features: int, itemsize: int, chunk_rows: int | None,
                   native_row_chunk: int | None,
                   target_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk of an array opened from storage: ``chunk_rows``, or enough rows for
    ``target_bytes`` in whole storage chunks (no storage chunk read by two tasks);
    at most ``n_samples``."""
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
