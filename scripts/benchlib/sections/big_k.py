"""``bigk``: K=128, D=64 out of core at several chunk sizes, each on a new LocalCluster:
worker memory growth over a warmed-up worker (bounded by the chunks in flight and the
kernel's tile workspace, not by the n x K x D array an untiled kernel would build) and
time per iteration. Initialised at the generating parameters; at most 3 iterations."""

from __future__ import annotations

from typing import Any

from benchlib import cluster, data
from benchlib.report import fmt_mib, fmt_s, row
from benchlib.util import MIB, TIMES

ID = "bigk"
K, D = 128, 64
MAX_ITERS = 3
SLACK = 64 * MIB  # growth <= 4 x chunk bytes + this


def run(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    storage = min(a.bigk_chunks)
    ds = data.ensure_dataset(ctx.data_dir, a.bigk_samples, D, K, storage)
    ctx.datasets["bigk"] = ds
    init = data.truth_parameters(ds["path"])
    iters = min(a.iters, MAX_ITERS)
    Xz = data.open_zarr(ds["path"])
    runs = []
    for chunk in a.bigk_chunks:
        chunk = min(chunk, a.bigk_samples)
        with cluster.fresh_cluster(K, D) as (client, baseline):
            record, _ = ctx.fit(Xz, client=client, k=K, init=init, chunk_rows=chunk,
                                iters=iters)
            high = cluster.worker_high_water(client)
        growth = max((record["worker_peak_max_bytes"] or 0) - baseline,
                     (high or 0) - baseline)
        runs.append({"chunk_rows": chunk, "chunk_bytes": chunk * D * 8,
                     "untiled_n_k_d_bytes": chunk * K * D * 8,
                     "worker_rss_after_warmup_bytes": baseline,
                     "worker_high_water_bytes": high, "worker_growth_bytes": growth,
                     "median_iter_s": record["median_iter_s_drop_first"], "fit": record})
    return {"n_samples": a.bigk_samples, "n_features": D, "n_components": K,
            "iters": iters, "runs": runs}


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for r in res["runs"]:
        bound = 4 * r["chunk_bytes"] + SLACK
        out.append(row(ID, f"K={K}, D={D}, N={res['n_samples']:,}, chunk {r['chunk_rows']:,} "
                           f"rows ({fmt_mib(r['chunk_bytes'])}; untiled n·K·D array "
                           f"{fmt_mib(r['untiled_n_k_d_bytes'])}): iteration / worker growth",
                       f"{fmt_s(r['median_iter_s'])} / {fmt_mib(r['worker_growth_bytes'])}",
                       f"growth ≤ 4{TIMES}chunk + {SLACK // MIB} MiB (script's bound)",
                       r["worker_growth_bytes"] <= bound, raw=r["worker_growth_bytes"]))
    return out
