"""``memory``: out of core at N and at 4N (a second dataset), each fit on a new
LocalCluster (fresh worker processes): time per iteration, peak worker memory (sampled,
and the ``VmHWM`` high-water mark) and the driver's RSS growth."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchlib import cluster, data
from benchlib.fits import summarise
from benchlib.report import at_most, fmt_mib, fmt_s, fmt_x, row
from benchlib.util import MIB, TIMES, alternate, ratio

ID = "memory"
TARGET_SPREAD = 0.10
TARGET_TIME = 4.4
DRIVER_SLACK = 16 * MIB        # driver growth at 4N may exceed that at N by this
DRIVER_DATA_FRACTION = 0.05    # ... and stays below this fraction of the data


def run(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    big = data.ensure_dataset(ctx.data_dir, 4 * a.n_samples, a.n_features, a.n_components,
                              a.chunk_rows)
    ctx.datasets["base_x4"] = big
    arrays = {"N": data.open_zarr(ctx.base["path"]), "4N": data.open_zarr(big["path"])}
    ctx.init  # noqa: B018

    def system(name: str) -> Callable[[], dict[str, Any]]:
        def go() -> dict[str, Any]:
            with cluster.fresh_cluster(a.n_components, a.n_features) as (client, baseline):
                record, _ = ctx.fit(arrays[name], client=client)
                record["worker_high_water_bytes"] = cluster.worker_high_water(client)
            record["worker_rss_after_warmup_bytes"] = baseline
            return record
        return go

    runs = alternate({"N": system("N"), "4N": system("4N")}, a.repeats)
    out: dict[str, Any] = {name: summarise(records) for name, records in runs.items()}
    for name, records in runs.items():
        marks = [r["worker_high_water_bytes"] for r in records
                 if r["worker_high_water_bytes"] is not None]
        out[name].update({
            "n_samples": int(arrays[name].shape[0]), "bytes": int(arrays[name].nbytes),
            "worker_peak_bytes": max(r["worker_peak_max_bytes"] or 0 for r in records),
            "worker_high_water_bytes": max(marks) if marks else None,
            "driver_growth_bytes": max(r["driver_growth_bytes"] for r in records)})
    pn, p4 = out["N"]["worker_peak_bytes"], out["4N"]["worker_peak_bytes"]
    hn, h4 = out["N"]["worker_high_water_bytes"], out["4N"]["worker_high_water_bytes"]
    out["peak_spread"] = abs(p4 - pn) / pn if pn else None
    out["high_water_spread"] = abs(h4 - hn) / hn if hn and h4 is not None else None
    out["time_4n_over_n"] = ratio(out["4N"]["median_iter_s"], out["N"]["median_iter_s"])
    gn, g4 = out["N"]["driver_growth_bytes"], out["4N"]["driver_growth_bytes"]
    out["driver_ok"] = g4 <= gn + DRIVER_SLACK and g4 <= DRIVER_DATA_FRACTION * out["4N"][
        "bytes"]
    return out


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    n, n4 = res["N"], res["4N"]
    return [
        row(ID, "peak worker memory (sampled), out of core, N / 4N",
            f"{fmt_mib(n['worker_peak_bytes'])} / {fmt_mib(n4['worker_peak_bytes'])}",
            f"within {TARGET_SPREAD:.0%}", at_most(res["peak_spread"], TARGET_SPREAD),
            raw=res["peak_spread"]),
        row(ID, "peak worker memory (high-water mark VmHWM), N / 4N",
            f"{fmt_mib(n['worker_high_water_bytes'])} / "
            f"{fmt_mib(n4['worker_high_water_bytes'])}",
            f"within {TARGET_SPREAD:.0%}", at_most(res["high_water_spread"], TARGET_SPREAD),
            raw=res["high_water_spread"]),
        row(ID, "driver RSS growth during the fit, N / 4N",
            f"{fmt_mib(n['driver_growth_bytes'])} / {fmt_mib(n4['driver_growth_bytes'])}",
            f"4N ≤ N + {DRIVER_SLACK // MIB} MiB and < {DRIVER_DATA_FRACTION:.0%} of the data",
            res["driver_ok"], raw=[n["driver_growth_bytes"], n4["driver_growth_bytes"]]),
        row(ID, "out-of-core iteration N / 4N, ratio",
            f"{fmt_s(n['median_iter_s'])} / {fmt_s(n4['median_iter_s'])}, "
            f"{fmt_x(res['time_4n_over_n'])}", f"≤ {TARGET_TIME}{TIMES}",
            at_most(res["time_4n_over_n"], TARGET_TIME), raw=res["time_4n_over_n"]),
    ]
