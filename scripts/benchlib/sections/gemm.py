"""``gemm``: the machine's square-GEMM speed (``np.matmul`` of two 2000 x 2000 matrices,
the BLAS's default threads), float64 and float32: the denominator of every floor."""

from __future__ import annotations

from typing import Any

from benchlib.report import row

ID = "gemm"


def run(ctx: Any) -> dict[str, Any]:
    return dict(ctx.gemm)


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    return [row(ID, f"square GEMM {g['size']}x{g['size']}, {dt}, default BLAS threads",
                f"{g['flops_per_s'] / 1e9:.1f} GFLOP/s", raw=g["flops_per_s"])
            for dt, g in res.items()]
