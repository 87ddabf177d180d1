"""``tiles``: compiled kernel time per row against the tile size
(``make_plan(tile_bytes=...)``) for a few shapes, one chunk in process with one BLAS
thread; the engine's default (``daskgmm.engine.estep.compiled_tile_bytes()``, a fraction
of this machine's per-core cache) against the best size measured. Without numba, the
NumPy kernel's sizes (default ``TILE_BYTES``)."""

from __future__ import annotations

from typing import Any

from benchlib import data
from benchlib.report import at_most, fmt_x, row, simple_table
from benchlib.sections import kernel
from benchlib.util import TIMES, median

ID = "tiles"
SHAPES = (("full", 16, 8), ("full", 64, 16), ("diag", 64, 64), ("spherical", 32, 32))
TILE_BYTES = tuple(2**p for p in range(16, 24))  # 64 KiB .. 8 MiB
#: The script's bound: the default within this factor of the best size.
TARGET = 1.10


def run(ctx: Any) -> dict[str, Any]:
    from daskgmm.engine import estep

    name = "compiled" if estep.compiled_available() else "numpy"
    DEFAULT = estep.compiled_tile_bytes() if name == "compiled" else estep.TILE_BYTES
    a = ctx.args
    n = 5_000 if a.quick else 100_000
    reps = 1 if a.quick else 3
    sizes = sorted({*TILE_BYTES, DEFAULT})
    out_rows = []
    for cov, d, k in SHAPES:
        X = data.mixture_in_memory(n, d, k)
        comps = kernel.components(cov, X, k)
        per_size = []
        for tb in sizes:
            # The default as a fit sizes it (None: the engine's own rule).
            given = None if tb == DEFAULT else tb
            plan = kernel.plan_for(comps, X, "float64", tile_bytes=given, kernel=name)
            t = median(kernel.kernel_seconds(X, plan, reps))
            per_size.append({"tile_bytes": tb, "tile_rows": _tile_rows(plan, name, given, d, k),
                             "ns_per_row": t / n * 1e9})
        best = min(per_size, key=lambda r: r["ns_per_row"])
        default = next(r for r in per_size if r["tile_bytes"] == DEFAULT)
        out_rows.append({"covariance_type": cov, "n_features": d, "n_components": k,
                         "rows": n, "sizes": per_size, "best": best, "default": default,
                         "default_over_best": default["ns_per_row"] / best["ns_per_row"]})
    return {"kernel": name, "default_tile_bytes": DEFAULT, "shapes": out_rows}


def _tile_rows(plan: Any, name: str, tile_bytes: int | None, d: int, k: int) -> int:
    if name == "numpy":
        return plan.groups[0].tile_rows
    from daskgmm.engine import estep

    cov = plan.groups[0].batch.cov.name
    return estep.compiled_tile_rows(cov, estep._fused().row_bytes(cov, k, d, 8), tile_bytes)


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in res["shapes"]:
        b, d = r["best"], r["default"]
        out.append(row(ID, f"{r['covariance_type']} D={r['n_features']} K={r['n_components']}: "
                           f"default {d['tile_bytes'] // 1024} KiB ({d['tile_rows']} rows) "
                           f"vs best {b['tile_bytes'] // 1024} KiB ({b['tile_rows']} rows), "
                           "ns/row",
                       f"{d['ns_per_row']:.0f} vs {b['ns_per_row']:.0f} = "
                       f"{fmt_x(r['default_over_best'])}",
                       f"≤ {TARGET}{TIMES} (script's bound)",
                       at_most(r["default_over_best"], TARGET), raw=r["default_over_best"]))
    return out


def markdown(res: dict[str, Any]) -> str:
    shapes = res["shapes"]
    header = ["tile bytes"] + [f"{r['covariance_type']} D={r['n_features']} "
                               f"K={r['n_components']}" for r in shapes]
    body = []
    for i, s in enumerate(shapes[0]["sizes"]):
        body.append([f"{s['tile_bytes'] // 1024} KiB"]
                    + [f"{r['sizes'][i]['ns_per_row']:.0f} ns ({r['sizes'][i]['tile_rows']})"
                       for r in shapes])
    return (f"## Tile-size sweep ({res['kernel']} kernel ns per row, one thread; tile rows "
            "in brackets)\n\n"
            + simple_table(header, body) + "\n")
