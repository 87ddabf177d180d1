"""The GEMM floor: the flops one row of data needs in daskgmm's E-step formulation, and
this machine's square-GEMM speed.

The floor of a measurement is ``N * flops_per_row / gemm_speed``: the time the dense
products of one EM iteration would take at the speed of a large square ``np.matmul`` with
the BLAS's default threads, measured in the same run. Element-wise work, memory traffic
and scheduling come on top; a kernel within 2x of its floor spends most of its time in
the products.

The counts follow :mod:`daskgmm.engine.covariance` (``K`` components, ``D`` features; a
multiply-add counts 2 flops; ``xt`` is the affine tile ``[x - c0, 1]ᵀ``, ``(D + 1) x n``):

full
    project ``Y = [Lᵀ, -Lᵀ e] xt``: ``2 K D (D + 1)``;
    first moments ``r xtᵀ``: ``2 K (D + 1)``;
    scatter ``sum_i r_ik y_ik y_ikᵀ``: symmetric, one triangle, ``K D (D + 1)`` (the
    compiled kernel sums the lower triangle in 4 × 4 blocks, the diagonal blocks whole,
    a few more products than counted here; the NumPy kernel's matmul of the scaled tile
    with its own transpose calls ``syrk``); float32 with ``D < SCALED_COPY_BELOW`` in the
    NumPy kernel multiplies a scaled copy instead, a general product: ``2 K D²``.
tied
    project on the shared factor ``[Lᵀ 0; 0 1] xt``: ``2 D (D + 1)`` (the row of ones is
    not counted); log-densities ``[b_k, a_k] [y, 1]``: ``2 K (D + 1)``;
    first moments: ``2 K (D + 1)``; scatter ``(x - c0)(x - c0)ᵀ``, symmetric: ``D (D + 1)``.
diag
    log-densities ``W [x - c0, 1, (x - c0)²]``: ``2 K (2 D + 1)``; moments
    ``r Zᵀ``: ``2 K (2 D + 1)``.
spherical
    log-densities ``W [x - c0, 1, |x - c0|²]``: ``2 K (D + 2)``; moments: ``2 K (D + 2)``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np


def flops_per_row(covariance_type: str, k: int, d: int, dtype: str = "float64"
                  ) -> dict[str, Any]:
    """The dense products of one row of one EM iteration: ``{"total", "terms"}``."""
    if covariance_type == "full":
        from daskgmm.engine.covariance.full import SCALED_COPY_BELOW

        general = np.dtype(dtype) == np.float32 and d < SCALED_COPY_BELOW
        terms = {"project 2K·D·(D+1)": 2 * k * d * (d + 1),
                 "first moments 2K·(D+1)": 2 * k * (d + 1),
                 ("scatter, general 2K·D²" if general else "scatter, symmetric K·D·(D+1)"):
                 2 * k * d * d if general else k * d * (d + 1)}
    elif covariance_type == "tied":
        terms = {"project 2D·(D+1)": 2 * d * (d + 1),
                 "log-densities 2K·(D+1)": 2 * k * (d + 1),
                 "first moments 2K·(D+1)": 2 * k * (d + 1),
                 "scatter, symmetric D·(D+1)": d * (d + 1)}
    elif covariance_type == "diag":
        terms = {"log-densities 2K·(2D+1)": 2 * k * (2 * d + 1),
                 "moments 2K·(2D+1)": 2 * k * (2 * d + 1)}
    elif covariance_type == "spherical":
        terms = {"log-densities 2K·(D+2)": 2 * k * (d + 2),
                 "moments 2K·(D+2)": 2 * k * (d + 2)}
    else:
        raise ValueError(f"unknown covariance type {covariance_type!r}")
    return {"total": int(sum(terms.values())), "terms": terms}


def floor_seconds(n: int, covariance_type: str, k: int, d: int, gemm_flops: float,
                  dtype: str = "float64") -> float:
    """``n`` rows' products at ``gemm_flops`` (flop/s)."""
    return n * flops_per_row(covariance_type, k, d, dtype)["total"] / gemm_flops


def measure_gemm(dtype: str, size: int = 2000, repeats: int = 5) -> dict[str, Any]:
    """Speed of ``np.matmul`` of two ``size x size`` matrices with the BLAS's default
    threads: ``2 size³`` flops over the median time of ``repeats`` products (after a
    warm-up)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    return {"dtype": dtype, "size": size, "seconds": times, "median_s": seconds,
            "flops_per_s": 2.0 * size**3 / seconds}
