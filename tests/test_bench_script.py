"""scripts/bench.py runs end to end on a tiny dataset and writes its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"


@pytest.mark.slow
def test_bench_quick_b1_c_d(tmp_path):
    cmd = [sys.executable, str(SCRIPT), "--quick", "--only", "b1,c,d",
           "--n-samples", "50000", "--chunk-rows", "10000",
           "--out", str(tmp_path), "--data-dir", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    doc = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    for key in ("machine", "versions", "blas", "params", "datasets", "results", "derived",
                "rows", "errors"):
        assert key in doc, key
    assert doc["errors"] == {}
    for key in ("cpu_model", "logical_cores", "ram_bytes"):
        assert key in doc["machine"], key
    for key in ("python", "numpy", "dask", "sklearn"):
        assert doc["versions"][key], key
    assert isinstance(doc["blas"], list)
    params = doc["params"]
    assert params["n_samples"] == 50_000
    assert params["chunk_rows"] == 10_000
    assert params["iters"] == 3
    assert params["only"] == ["b1", "c", "d"]

    results = doc["results"]
    assert {"b1", "c", "d"} <= set(results)
    assert not {"a", "b2", "b3", "e", "f", "g"} & set(results)
    b1 = results["b1"]
    assert b1["median_iter_s"] > 0
    assert all(fit["n_iter"] == 3 for fit in b1["fits"])

    c = results["c"]
    assert c["ooc"]["median_iter_s"] > 0
    assert c["inmem_persisted_from_zarr"]["median_iter_s"] > 0
    assert len(c["bare_read"]["read_s"]) >= 3
    assert doc["derived"]["c_ooc_over_read_plus_inmem"] > 0

    d = results["d"]
    n_chunks = d["n_chunks"]
    assert n_chunks == 5
    reads = d["chunk_reads_per_iteration"]
    assert reads["n_init_1"] == reads["n_init_4"] == n_chunks
    task_reads = d["chunk_reads_per_iteration_task_stream"]
    assert task_reads["n_init_1"] == task_reads["n_init_4"] == n_chunks
    assert doc["derived"]["d_same_chunk_reads_observer"] is True
    assert doc["derived"]["d_same_chunk_reads_task_stream"] is True
    assert doc["derived"]["d_ninit4_over_ninit1"] > 0
    for fit in d["n_init_4"]["fits"]:
        assert fit["n_init"] == 4
        assert fit["em_passes"] == 3
        assert fit["other_passes"] == []  # user-given init: no initialisation pass

    md = (tmp_path / "bench.md").read_text(encoding="utf-8")
    assert "| id | what | value | target | met? |" in md
    ids = {line.split("|")[1].strip() for line in md.splitlines()
           if line.startswith("| ") and not line.startswith("| id ")}
    assert {"b1", "c", "d"} <= ids
    assert "chunk reads per iteration" in md
    assert "| id | what | value | target | met? |" in proc.stdout  # the table is printed
