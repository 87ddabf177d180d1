"""``chunks``: per-chunk overhead. The base dataset persisted on the main cluster in 10,
100 and 1,000 chunks (``--chunk-counts``; rechunked from the store on the workers); time
per iteration of each, alternating. The overhead per chunk is ``(t_1000 - t_10) / 990``:
the wall time one more chunk adds to an iteration on 2 workers."""

from __future__ import annotations

import contextlib
from typing import Any

from benchlib import cluster, data
from benchlib.fits import summarise
from benchlib.report import fmt_s, fmt_x, row
from benchlib.util import alternate, ratio

ID = "chunks"


def run(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    n = a.n_samples
    counts = a.chunk_counts
    held: dict[str, Any] = {}
    ctx.init  # noqa: B018
    with contextlib.ExitStack() as stack:
        stack.callback(cluster.wait_released, ctx.client)
        stack.callback(held.clear)
        for count in counts:
            rows_per_chunk = -(-n // count)
            held[count] = cluster.persist(
                ctx.client, data.open_zarr(ctx.base["path"]).rechunk((rows_per_chunk, -1)))
        runs = alternate({str(c): (lambda c=c: ctx.fit(held[c], client=ctx.client)[0])
                          for c in counts}, a.repeats)
        n_chunks = {str(c): int(held[c].npartitions) for c in counts}
    out: dict[str, Any] = {name: summarise(records) for name, records in runs.items()}
    lo, hi = str(counts[0]), str(counts[-1])
    out["n_chunks"] = n_chunks
    out["n_samples"] = n
    out["counts"] = list(counts)
    t_lo, t_hi = out[lo]["median_iter_s"], out[hi]["median_iter_s"]
    out["overhead_per_chunk_s"] = (None if t_lo is None or t_hi is None
                                   else (t_hi - t_lo) / (n_chunks[hi] - n_chunks[lo]))
    out["most_over_fewest"] = ratio(t_hi, t_lo)
    return out


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    counts = res["counts"]
    times = " / ".join(fmt_s(res[str(c)]["median_iter_s"]) for c in counts)
    return [
        row(ID, f"persisted on 2 processes, N={res['n_samples']:,} in "
                + " / ".join(str(res["n_chunks"][str(c)]) for c in counts)
                + " chunks: s/iter", times, raw=[res[str(c)]["median_iter_s"]
                                                 for c in counts]),
        row(ID, f"overhead per chunk (t_{counts[-1]} - t_{counts[0]}) / chunks; "
                f"t_{counts[-1]} ÷ t_{counts[0]}",
            f"{fmt_s(res['overhead_per_chunk_s'])}; {fmt_x(res['most_over_fewest'])}",
            raw=res["overhead_per_chunk_s"]),
    ]
