"""``ooc``: out of core from the Zarr store (``cache=False``) against a bare read pass
(``da.from_zarr(...).sum()``) plus the in-memory iteration (the same store persisted on the
same cluster), alternating on the main cluster."""

from __future__ import annotations

import math
import time
from typing import Any

from benchlib import cluster, data
from benchlib.fits import summarise
from benchlib.report import at_most, fmt_s, fmt_x, row
from benchlib.util import TIMES, alternate, median, ratio

ID = "ooc"
TARGET = 1.2


def run(ctx: Any) -> dict[str, Any]:
    a = ctx.args
    client = ctx.client
    path = ctx.base["path"]
    Xz = data.open_zarr(path)
    ctx.init  # noqa: B018
    reads: list[float] = []
    per_round = max(1, math.ceil(3 / a.repeats))

    def bare_read() -> dict[str, Any]:
        times = []
        with client.as_current():
            for _ in range(per_round):
                t0 = time.perf_counter()
                total = data.open_zarr(path).sum().compute()
                times.append(time.perf_counter() - t0)
        reads.extend(times)
        return {"read_s": times, "sum": float(total)}

    held = {"X": cluster.persist(client, data.open_zarr(path))}
    try:
        runs = alternate({"read": bare_read,
                          "ooc": lambda: ctx.fit(Xz, client=client)[0],
                          "inmem": lambda: ctx.fit(held["X"], client=client)[0]}, a.repeats)
    finally:
        held.clear()
        cluster.wait_released(client)
    ooc, inmem = summarise(runs["ooc"]), summarise(runs["inmem"])
    read = median(reads)
    both = None if read is None or inmem["median_iter_s"] is None else read + inmem[
        "median_iter_s"]
    return {"ooc": ooc, "inmem": inmem,
            "bare_read": {"method": "da.from_zarr(path).sum().compute() on the cluster",
                          "read_s": reads, "median_read_s": read},
            "n_chunks": int(Xz.npartitions), "chunk_rows": int(Xz.chunks[0][0]),
            "ooc_over_read_plus_inmem": ratio(ooc["median_iter_s"], both)}


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    r = res["ooc_over_read_plus_inmem"]
    return [
        row(ID, "bare read pass / in-memory iteration (persisted) / out-of-core iteration",
            f"{fmt_s(res['bare_read']['median_read_s'])} / "
            f"{fmt_s(res['inmem']['median_iter_s'])} / {fmt_s(res['ooc']['median_iter_s'])}"),
        row(ID, "out-of-core ÷ (bare read + in-memory iteration)", fmt_x(r), f"≤ {TARGET}{TIMES}",
            at_most(r, TARGET), raw=r),
    ]
