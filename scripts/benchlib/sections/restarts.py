"""``ninit``: ``n_init=4`` against ``n_init=1`` out of core (Zarr, ``cache=False``), each fit
on a fresh LocalCluster (2 processes x 1 thread) with warmed-up workers: time per
iteration, chunk reads per iteration (from the observer's ``pass_started`` events and from
the scheduler's task stream), and worker memory growth (peak RSS ``VmHWM`` minus the RSS
after the warm-up)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchlib import cluster, data
from benchlib.fits import summarise
from benchlib.report import at_most, fmt_mib, fmt_s, fmt_x, row
from benchlib.util import TIMES, alternate, ratio

ID = "ninit"
#: Round 1's target for the time (the issue of round 2 names none).
TARGET_TIME = 3.0


def _one_value(values: set) -> Any:
    return values.pop() if len(values) == 1 else (sorted(values) if values else None)


def run(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    Xz = data.open_zarr(ctx.base["path"])
    ctx.init  # noqa: B018 - computed before the timed fits

    def system(n_init: int) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            with cluster.fresh_cluster(a.n_components, a.n_features) as (client, baseline):
                record, _ = ctx.fit(Xz, client=client, n_init=n_init, count_reads=True)
                record["worker_high_water_bytes"] = cluster.worker_high_water(client)
            record["worker_rss_after_warmup_bytes"] = baseline
            record["worker_growth_bytes"] = (None if record["worker_high_water_bytes"] is None
                                             else record["worker_high_water_bytes"] - baseline)
            return record
        return go

    runs = alternate({"n_init_1": system(1), "n_init_4": system(4)}, a.repeats)
    out: dict[str, Any] = {name: summarise(records) for name, records in runs.items()}
    for name, records in runs.items():
        out[name]["reads_per_iteration_observer"] = _one_value(
            {n for r in records for n in r["em_chunks_per_pass"]})
        out[name]["reads_per_iteration_task_stream"] = _one_value(
            {r["task_stream_reads"] / r["n_iter"] for r in records if r["n_iter"]})
        growth = [r["worker_growth_bytes"] for r in records
                  if r["worker_growth_bytes"] is not None]
        out[name]["worker_growth_bytes"] = max(growth) if growth else None
    out["n_chunks"] = int(Xz.npartitions)
    out["time_ratio"] = ratio(out["n_init_4"]["median_iter_s"], out["n_init_1"]["median_iter_s"])
    out["memory_growth_ratio"] = ratio(out["n_init_4"]["worker_growth_bytes"],
                                       out["n_init_1"]["worker_growth_bytes"])
    out["same_reads"] = (out["n_init_1"]["reads_per_iteration_observer"] is not None
                         and out["n_init_1"]["reads_per_iteration_observer"]
                         == out["n_init_4"]["reads_per_iteration_observer"]
                         and out["n_init_1"]["reads_per_iteration_task_stream"]
                         == out["n_init_4"]["reads_per_iteration_task_stream"])
    return out


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    one, four = res["n_init_1"], res["n_init_4"]
    return [
        row(ID, "out-of-core iteration n_init=1 / n_init=4, ratio",
            f"{fmt_s(one['median_iter_s'])} / {fmt_s(four['median_iter_s'])}, "
            f"{fmt_x(res['time_ratio'])}", f"≤ {TARGET_TIME}{TIMES} (round 1)",
            at_most(res["time_ratio"], TARGET_TIME), raw=res["time_ratio"]),
        row(ID, "chunk reads per iteration n_init 1 / 4 (observer; task stream)",
            f"{one['reads_per_iteration_observer']} / {four['reads_per_iteration_observer']}; "
            f"{one['reads_per_iteration_task_stream']} / "
            f"{four['reads_per_iteration_task_stream']} ({res['n_chunks']} chunks)",
            "equal", res["same_reads"], raw=four["reads_per_iteration_observer"]),
        row(ID, "worker memory growth over a warmed-up worker, n_init 1 / 4, ratio",
            f"{fmt_mib(one['worker_growth_bytes'])} / {fmt_mib(four['worker_growth_bytes'])}"
            f", {fmt_x(res['memory_growth_ratio'])}", raw=res["memory_growth_ratio"]),
    ]
