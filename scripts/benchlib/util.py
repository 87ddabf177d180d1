"""Logging, timing statistics, and a description of the machine and the versions."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

MIB = 2**20
TIMES = "\N{MULTIPLICATION SIGN}"


def log(message: str) -> None:
    """One line on stderr, time-stamped."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss() -> int:
    """Resident memory of the calling process (run on workers with ``client.run``)."""
    return psutil.Process().memory_info().rss


def high_water() -> int | None:
    """The calling process's peak RSS (``VmHWM``, Linux), in bytes.

    Not ``getrusage().ru_maxrss``: Linux carries that across fork and exec, so a worker
    process spawned by the nanny in the driver reports the driver's peak.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def drop_first(values: list[float]) -> list[float]:
    """The per-iteration times without the first (warm-up) iteration."""
    return values[1:] if len(values) > 1 else list(values)


def median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """``max |a - b| / max |b|`` (scale-relative: safe for entries near zero)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = float(np.max(np.abs(b)))
    diff = float(np.max(np.abs(a - b)))
    return diff / scale if scale > 0 else diff


def rotated(items: list[Any], r: int) -> list[Any]:
    """The r-th rotation of ``items`` (so that no system always runs first)."""
    if not items:
        return items
    r %= len(items)
    return items[r:] + items[:r]


def alternate(systems: dict[str, Callable[[], dict[str, Any]]], repeats: int
              ) -> dict[str, list[dict[str, Any]]]:
    """Run every system once per round, rotating the order; the records per system."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in systems}
    for r in range(repeats):
        for name in rotated(list(systems), r):
            log(f"  round {r + 1}/{repeats}: {name}")
            record = systems[name]()
            record["round"] = r
            runs[name].append(record)
    return runs


def timed(func: Callable[[], Any], repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``func`` (after one untimed warm-up call)."""
    func()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        func()
        out.append(time.perf_counter() - t0)
    return out


# ------------------------------------------------------------------------------------
# the machine
# ------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    cpu_model = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = None
    memory = psutil.virtual_memory().total
    return {
        "cpu_model": cpu_model,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": usable,
        "ram_bytes": memory,
        "ram_gib": round(memory / 2**30, 2),
        "platform": platform.platform(),
        "hostname": platform.node(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def versions() -> dict[str, Any]:
    import dask
    import distributed
    import scipy
    import sklearn
    import threadpoolctl
    import zarr

    import daskgmm

    out: dict[str, Any] = {
        "python": sys.version.split()[0], "numpy": np.__version__,
        "scipy": scipy.__version__, "dask": dask.__version__,
        "distributed": distributed.__version__, "sklearn": sklearn.__version__,
        "zarr": zarr.__version__, "threadpoolctl": threadpoolctl.__version__,
        "daskgmm": daskgmm.__version__,
    }
    try:
        from importlib.metadata import version

        out["numba"] = version("numba")
    except Exception:  # not installed: the NumPy kernel runs
        out["numba"] = "not installed"
    try:  # read-only: the commit the working tree is based on (it may be modified)
        root = Path(__file__).resolve().parents[2]
        out["git_head"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
            timeout=10, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        out["git_head"] = None
    return out


def blas_info() -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_info

    return [dict(d) for d in threadpool_info()]


def ru_maxrss() -> int | None:
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except (ImportError, OSError):  # pragma: no cover
        return None


def json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return repr(value)
