"""scripts/bench.py runs end to end on tiny data and writes its report."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


def _run(tmp_path: Path, only: str, *extra: str) -> tuple[dict, str, str]:
    cmd = [sys.executable, str(SCRIPT), "--quick", "--only", only,
           "--n-samples", "20000", "--chunk-rows", "5000",
           "--out", str(tmp_path), "--data-dir", str(tmp_path), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    doc = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    md = (tmp_path / "bench.md").read_text(encoding="utf-8")
    return doc, md, proc.stdout


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _check_rows(doc: dict, md: str, stdout: str, ids: set[str]) -> None:
    assert doc["errors"] == {}
    assert {r["id"] for r in doc["rows"]} == ids
    for r in doc["rows"]:
        assert set(r) == {"id", "what", "value", "target", "met", "raw"}
        assert r["met"] in (True, False, None)
        if r["target"] != "—":
            assert r["met"] is not None, r  # a row with a target says whether it is met
    assert "| id | what | value | target | met? |" in md
    assert "| id | what | value | target | met? |" in stdout  # the table is printed


@pytest.mark.slow
def test_bench_quick_kernel_sections(tmp_path):
    doc, md, stdout = _run(tmp_path, "gemm,shapes,small,profile,tiles")
    _check_rows(doc, md, stdout, {"gemm", "shapes", "small", "profile", "tiles"})
    for key in ("machine", "versions", "blas", "params", "results", "section_seconds"):
        assert key in doc, key
    assert doc["params"]["ids"] == ["gemm", "shapes", "small", "profile", "tiles"]
    res = doc["results"]
    for dt in ("float64", "float32"):
        assert res["gemm"][dt]["flops_per_s"] > 1e8

    shapes = res["shapes"]["rows"]
    assert {r["covariance_type"] for r in shapes} == {"full", "tied", "diag", "spherical"}
    assert {(r["covariance_type"], r["n_features"], r["n_components"]) for r in shapes} >= {
        ("full", 16, 8), ("tied", 32, 16), ("full", 32, 16), ("full", 64, 16),
        ("spherical", 32, 32), ("diag", 64, 64)}
    for r in shapes:
        for key in ("sklearn_iter_s", "daskgmm_iter_s", "daskgmm_over_sklearn", "floor_s",
                    "daskgmm_over_floor"):
            assert _number(r[key]) and r[key] > 0, (key, r)
        # Same EM from the same start: the two libraries agree.
        assert r["means_rel_diff_vs_sklearn"] < 1e-5, r
        # 3 iterations, the first dropped.
        assert all(len(f["iter_s"]) == 3 for f in r["sklearn"]["fits"] + r["daskgmm"]["fits"])
    full = next(r for r in shapes if r["covariance_type"] == "full" and r["n_features"] == 16)
    assert full["flops_per_row"]["total"] == 2 * 8 * 16 * 17 + 2 * 8 * 17 + 8 * 16 * 17
    # The floor uses the GEMM speed measured in the row's own rounds.
    assert _number(full["gemm_flops_per_s"]) and full["gemm_flops_per_s"] > 0
    assert full["floor_s"] == pytest.approx(
        full["n_samples"] * full["flops_per_row"]["total"] / full["gemm_flops_per_s"])
    assert "## Covariance type \N{MULTIPLICATION SIGN} shape" in md

    small = res["small"]["datasets"]
    assert [(r["dataset"], r["n_components"], r["covariance_type"]) for r in small] == [
        ("iris", 3, "full"), ("wine", 3, "full"), ("digits", 10, "diag")]
    for r in small:
        assert all(len(t) == r["rounds"] for t in r["seconds"].values())
        assert _number(r["daskgmm_over_sklearn"]) and r["daskgmm_over_sklearn"] > 0

    prof = res["profile"]
    for dt in ("float64", "float32"):
        p = prof[dt]
        assert 0 < p["gemm_s"] < p["wall_s"]
        assert p["gemm_calls"] >= p["n_tiles"] * 3  # project, first moments, scatter
        assert _number(p["allocation"]["warm_call_peak_new_bytes"])
        assert _number(p["compiled"]["speedup"])  # numba is a dependency
    assert _number(prof["cluster"]["scheduling_and_driver_s"])
    assert _number(prof["numpy"]["scheduling_and_driver_s"])

    tiles = res["tiles"]
    assert len(tiles["shapes"]) >= 3
    for s in tiles["shapes"]:
        assert any(x["tile_bytes"] == tiles["default_tile_bytes"] for x in s["sizes"])
        assert all(_number(x["ns_per_row"]) and x["ns_per_row"] > 0 for x in s["sizes"])
        assert s["default_over_best"] >= 1.0
    assert "## Tile-size sweep" in md


@pytest.mark.slow
def test_bench_quick_cluster_sections(tmp_path):
    doc, md, stdout = _run(tmp_path, "cluster,float32,ninit,chunks,ooc",
                           "--chunk-counts", "10,40")
    _check_rows(doc, md, stdout, {"cluster", "float32", "ninit", "chunks", "ooc"})
    res = doc["results"]
    c = res["cluster"]
    for key in ("numpy", "processes", "threads"):
        assert _number(c[key]["median_iter_s"])
        assert all(f["n_iter"] == 3 for f in c[key]["fits"])
    assert _number(c["processes_over_numpy"]) and _number(c["threads_over_numpy"])
    assert doc["clusters"]["main"]["n_workers"] == 2
    assert doc["clusters"]["threaded"]["n_workers"] == 1

    f = res["float32"]
    for where in ("numpy", "cluster"):
        assert _number(f[where]["speedup"])
        assert f[where]["means_rel_diff"] < 1e-4

    n = res["ninit"]
    assert n["n_chunks"] == 4
    assert n["n_init_1"]["reads_per_iteration_observer"] == 4
    assert n["n_init_4"]["reads_per_iteration_task_stream"] == 4
    assert n["same_reads"] is True
    assert all(fit["n_init"] == 4 and fit["em_passes"] == 3 and fit["other_passes"] == []
               for fit in n["n_init_4"]["fits"])
    assert _number(n["n_init_4"]["worker_growth_bytes"])

    ch = res["chunks"]
    assert ch["n_chunks"] == {"10": 10, "40": 40}
    assert _number(ch["overhead_per_chunk_s"])

    o = res["ooc"]
    assert o["n_chunks"] == 4 and len(o["bare_read"]["read_s"]) >= 3
    assert _number(o["ooc_over_read_plus_inmem"])


def test_bench_rejects_unknown_section(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), "--only", "nope"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown measurement id 'nope'" in proc.stderr
    assert not (tmp_path / "bench.json").exists()
