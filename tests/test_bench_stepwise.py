"""scripts/bench_stepwise.py runs end to end on a tiny dataset and writes its report."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_stepwise.py"


@pytest.mark.slow
def test_bench_stepwise_quick(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--quick", "--components", "4",
           "--n-samples", "6000", "--chunk-rows", "500", "--batch-max-passes", "8",
           "--stepwise-passes", "3", "--out", str(tmp_path), "--data-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    doc = json.loads((tmp_path / "stepwise.json").read_text(encoding="utf-8"))
    assert doc["params"]["n_samples"] == 6000
    assert doc["params"]["components"] == [4]
    r = doc["results"]["4"]
    assert r["n_chunks"] == 12
    assert r["groups_per_pass"] == 6
    assert math.isfinite(r["initial_ll"])
    for algorithm, passes in (("batch", None), ("incremental", 3), ("online", 3)):
        run = r[algorithm]
        curve = run["curve"]
        if passes is not None:
            assert run["passes"] == passes
        assert len(curve) == run["passes"] + 1  # pass 0 = the initial parameters
        assert curve[0] == r["initial_ll"]
        assert all(isinstance(v, float) and math.isfinite(v) for v in curve)
        assert curve[-1] > curve[0]  # EM improved on the cold start
    assert 1 <= r["batch"]["passes"] <= 8
    # Batch EM's curve is its own reported bounds: never decreasing.
    batch = r["batch"]["curve"]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(batch))
    # Incremental EM's first pass steps after every group: better than one batch step.
    assert r["incremental"]["curve"][1] > batch[1]
    assert r["reference_ll"] == batch[-1]
    for key in ("batch_passes_to_1e-3", "incremental_passes_to_1e-3",
                "online_passes_to_1e-2"):
        assert r[key] is None or isinstance(r[key], int)
    assert isinstance(r["incremental_met"], bool) and isinstance(r["online_met"], bool)
    # The second reading: a batch fit stopped by the default tol, from the same curve.
    d = r["default_tol"]
    if d is not None:
        i = d["batch_passes"]
        moves = [abs(b - a) for a, b in itertools.pairwise(batch)]
        assert moves[i - 2] < 1e-3 and all(m >= 1e-3 for m in moves[: i - 2])
        assert d["reference_ll"] == batch[i]

    md = (tmp_path / "stepwise.md").read_text(encoding="utf-8")
    assert "| K | batch final mean ll |" in md
    assert "| pass | batch | incremental | online |" in md
    png = (tmp_path / "stepwise.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    # The rows scripts/bench.py --only stepwise makes of this report.
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from benchlib.sections import stepwise
    finally:
        sys.path.remove(str(SCRIPT.parent))
    rows = stepwise.rows(doc)
    met = [r["incremental_met"], r["online_met"]]
    if d is not None:
        met.append(d["incremental_met"])
        assert "Second reading" in md
    assert [row["met"] for row in rows] == met
    assert rows[0]["target"] == "≤ 25%" and rows[1]["target"] == "≤ 3"


def test_default_tol_reading_stops_where_scikit_learns_rule_would():
    """Iteration i's bound is the mean ll after pass i - 1; the fit stops at the first
    i >= 2 whose bound moved less than tol and holds the parameters after pass i."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from bench_stepwise import default_tol_fit
    finally:
        sys.path.remove(str(SCRIPT.parent))
    curve = [-30.0, -27.0, -26.5, -26.4995, -26.4993, -26.4992]
    assert default_tol_fit(curve) == (4, -26.4993)
    assert default_tol_fit(curve[:4]) is None  # it stops at 4: pass 4 not in the curve
    assert default_tol_fit([-30.0, -29.9995, -29.9]) == (2, -29.9)
