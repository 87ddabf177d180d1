"""The compression daskgmm applies to the arrays it writes, chosen by measurement.

Float data (generated data sets, responsibilities) is written **uncompressed**; integer
data (labels) with Blosc-LZ4 and byte shuffle. Every writer gets its codecs from
:func:`float_compressors` (which also handles integers), so the choice lives here.

Why (``scripts/bench_codecs.py``, 1,000,000 x 16 samples of an 8-component mixture,
chunks of 100,000 rows, Zarr v3 local store, this repository's 2-core machine, best of
2, machine shared with other jobs):

============================  ========  =======  ==========  =====
float64 (122 MiB)             write s   read s   read MiB/s  ratio
============================  ========  =======  ==========  =====
none                          0.104     0.067    1816        1.000
zstd (zarr's default)         0.245     0.179    682         1.037
blosc-lz4, shuffle            0.172     0.105    1157        1.059
blosc-lz4, bitshuffle         0.173     0.108    1134        1.084
blosc-zstd level 1, shuffle   0.337     0.192    636         1.044
gzip level 1                  2.984     0.773    158         1.033
============================  ========  =======  ==========  =====

float32 (61 MiB): none 0.048 / 0.029 s, ratio 1.000; zstd 0.147 / 0.115 s, 1.079;
blosc-lz4 shuffle 0.103 / 0.037 s, 1.058; blosc-lz4 bitshuffle 0.106 / 0.060 s, 1.074;
blosc-zstd1 0.166 / 0.142 s, 1.079; gzip-1 1.573 / 0.448 s, 1.074.

Random floats do not compress: the best codec saves 4-8% of the bytes, while decoding
is what a fit pays on every pass over out-of-core data, and the uncompressed store reads
2.7x faster than zarr's default (zstd) in float64 and 4x in float32, and 1.3-1.6x faster
than the fastest compressor (blosc-lz4). So float data is stored as plain bytes. Labels
are small integers stored in int64 and shrink many-fold with blosc-lz4 and shuffle at a
decoding cost close to a copy.
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
