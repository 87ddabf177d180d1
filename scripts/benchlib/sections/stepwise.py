"""Batch vs incremental vs online EM out of core: passes to batch EM's final
log-likelihood (``scripts/bench_stepwise.py``, whose docstring states the method; its
table, curves and plot are ``OUT/stepwise.md`` and ``OUT/stepwise.png``)."""

from __future__ import annotations

from typing import Any

from benchlib.report import row
from benchlib.sections._script import run_script

ID = "stepwise"


def run(ctx: Any) -> dict[str, Any]:
    return run_script(ctx, "bench_stepwise.py", "stepwise.json")


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    t = res["targets"]
    out = []
    for k, r in res["results"].items():
        b, i = r["batch_passes_to_1e-3"], r["incremental_passes_to_1e-3"]
        share = r["incremental_share"]
        out.append(row(
            ID, f"K={k}: passes to within {t['incremental_tol']:g} of batch EM's final mean "
                "ll, incremental / batch",
            f"{i if i is not None else '> ' + str(r['incremental']['passes'])} / "
            f"{b if b is not None else '> ' + str(r['batch']['passes'])}"
            + ("" if share is None else f" = {share:.0%}"),
            f"≤ {t['incremental_share_of_batch_passes']:.0%}", bool(r["incremental_met"]),
            raw=share))
        o = r["online_passes_to_1e-2"]
        out.append(row(
            ID, f"K={k}: online EM passes to within {t['online_tol']:g}",
            str(o) if o is not None else f"> {r['online']['passes']}",
            f"≤ {t['online_passes']}", bool(r["online_met"]), raw=o))
        d = r.get("default_tol")
        if d is not None:
            i = d["incremental_passes_to_1e-3"]
            out.append(row(
                ID, f"K={k}: the same against a batch fit stopped by tol={d['tol']:g}, "
                    "incremental / batch",
                f"{i if i is not None else '> ' + str(r['incremental']['passes'])} / "
                f"{d['batch_passes']}" + ("" if d["incremental_share"] is None
                                          else f" = {d['incremental_share']:.0%}"),
                f"≤ {t['incremental_share_of_batch_passes']:.0%}",
                bool(d["incremental_met"]), raw=d["incremental_share"]))
    return out
