"""A model-selection sweep (K = 1..10 x 4 covariance types) against one fit per candidate
and scikit-learn's loop (``scripts/bench_selection.py``, whose docstring states the
method; its full table is ``OUT/bench-selection.md``)."""

from __future__ import annotations

from typing import Any

from benchlib.report import row
from benchlib.sections._script import run_script

ID = "selection"


def run(ctx: Any) -> dict[str, Any]:
    return run_script(ctx, "bench_selection.py", "bench-selection.json")


def rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for what, value, target, met in res["table"]:
        out.append(row(ID, what, value, target or "—",
                       None if not met else met == "yes"))
    return out
