"""The compression of the arrays daskgmm writes, chosen by measurement
(``scripts/bench_codecs.py``): random floats do not compress (4-8% at best) and decoding
is paid on every pass, so float data is written uncompressed (2.7x faster to read than
zstd); labels, small integers, shrink many-fold with Blosc-LZ4 and byte shuffle."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["float_compressors"]


def float_compressors(dtype: Any = np.float64) -> tuple[Any, ...] | None:
    """The ``compressors=`` of ``zarr.create_array`` for ``dtype``: None for floats,
    Blosc-LZ4 with byte shuffle for integers and booleans (labels)."""
    if np.dtype(dtype).kind not in "iub":
        return None
    from zarr.codecs import BloscCodec

    return (BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),)
