"""Run one of the stand-alone benchmark scripts as a section of ``scripts/bench.py``.

The model-selection and stepwise-EM benchmarks start their own clusters and datasets;
they run in a child process (so that their clusters and memory never mix with the other
sections') with the run's ``--quick``, ``--data-dir`` and ``--out``, and their JSON
report is read back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchlib.util import log

SCRIPTS = Path(__file__).resolve().parents[2]


def run_script(ctx: Any, script: str, report: str, *extra: str) -> dict[str, Any]:
    """Run ``scripts/<script>`` and return its JSON report ``OUT/<report>``."""
    a = ctx.args
    out = ctx.out_dir
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, str(SCRIPTS / script), "--data-dir", str(ctx.data_dir),
           "--out", str(out), *(["--quick"] if a.quick else []), *extra]
    log("running " + " ".join(cmd[1:]))
    proc = subprocess.run(cmd, cwd=SCRIPTS, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{script} exited with {proc.returncode}:\n{proc.stderr[-4000:]}")
    return json.loads((out / report).read_text(encoding="utf-8"))
