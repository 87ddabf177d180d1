"""The measurements of ``scripts/bench.py``, in the order they run.

Each module has ``ID`` (the name ``--only`` takes), ``run(ctx) -> dict`` (the raw
results, stored in ``bench.json``), ``rows(results) -> list`` (the table rows, each with
its target), and optionally ``markdown(results) -> str`` (an extra table in ``bench.md``).
"""

from __future__ import annotations

from benchlib.sections import (
    big_k,
    chunk_overhead,
    cluster_vs_numpy,
    float32,
    gemm,
    memory_flat,
    out_of_core,
    profile,
    restarts,
    selection,
    shapes,
    small_data,
    stepwise,
    tile_sweep,
)

SECTIONS = (gemm, cluster_vs_numpy, shapes, small_data, float32, restarts, chunk_overhead, profile,
            tile_sweep, out_of_core, memory_flat, big_k, selection, stepwise)
BY_ID = {s.ID: s for s in SECTIONS}
