"""The compression daskgmm applies to the arrays it writes, chosen by measurement.

Float data (generated data sets, responsibilities) is written **uncompressed**; integer
data (labels) with Blosc-LZ4 and byte shuffle. ``scripts/bench_codecs.py`` (10^6 x 16
samples of a mixture, Zarr v3 on a local disk) found that random floats do not compress
(the best codec saves 4-8%) while decoding is paid on every pass: uncompressed float64
reads 2.7x faster than zarr's default (zstd), float32 4x, and 1.3-1.6x faster than the
fastest compressor (blosc-lz4). Labels, small integers in int64, shrink many-fold with
blosc-lz4 at a decoding cost close to a copy. Every writer takes its codecs from
:func:`float_compressors`, so the choice lives here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["float_compressors", "label_compressors"]


def label_compressors() -> tuple[Any, ...]:
    """Codecs for integer arrays (labels): Blosc-LZ4 with byte shuffle."""
    from zarr.codecs import BloscCodec

    return (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)


def float_compressors(dtype: Any = np.float64) -> tuple[Any, ...] | None:
    """The ``compressors=`` argument of ``zarr.create_array`` for data of ``dtype``.

    Parameters
    ----------
    dtype : numpy dtype, default float64

    Returns
    -------
    tuple of zarr codecs, or None
        None (no compression) for floating-point data, :func:`label_compressors` for
        integer and boolean data.
    """
    kind = np.dtype(dtype).kind
    if kind in "iub":
        return label_compressors()
    return None
