"""``verbose``: what a fit prints when asked to, as an observer of the fit.

``verbose=1`` prints the start of the initialisation, every ``verbose_interval``-th EM
iteration (and the last) with its lower bound and change, the outcome of every
candidate and the passes the fit read by phase; ``verbose=2`` also prints the
initialisation's passes and the time of every printed iteration.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

from daskgmm.diagnostics.progress import format_reads, was_updated


class VerbosePrinter:
    """Prints a fit's progress on ``stream`` (standard output by default)."""

    def __init__(self, verbose: int, interval: int, stream: TextIO | None = None) -> None:
        self.verbose = int(verbose)
        self.interval = max(1, int(interval))
        self.stream = stream
        self._pass_started = 0.0
        self._kind = ""
        self._started = 0.0

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def fit_started(self, info: Any) -> None:
        self._started = time.perf_counter()
        self._print(f"Initialization: {info.n_candidates} candidate(s) over "
                    f"{info.n_samples:,} samples in {info.n_chunks} chunk(s)")

    def pass_started(self, kind: str, n_chunks: int) -> None:
        self._kind, self._pass_started = kind, time.perf_counter()

    def pass_finished(self) -> None:
        if self.verbose >= 2 and self._kind != "em":
            self._print(f"  {self._kind} pass: "
                        f"{time.perf_counter() - self._pass_started:.2f} s")

    def iteration_finished(self, info: Any) -> None:
        for state in info.states:
            if not was_updated(info, state):
                continue
            stopped = state.converged or state.n_iter == info.max_iter
            if state.n_iter % self.interval and not stopped:
                continue
            bounds = state.lower_bounds
            change = bounds[-1] - bounds[-2] if len(bounds) > 1 else math.nan
            line = (f"  Iteration {state.n_iter}  {state.label}  lower bound "
                    f"{state.lower_bound:.6f}  change {change:.3g}")
            if self.verbose >= 2:
                line += f"  time lapse {info.seconds:.3f} s"
            self._print(line)
            if state.converged:
                self._print(f"{state.label}: converged after {state.n_iter} iterations, "
                            f"lower bound {state.lower_bound:.6f}")

    def passes_read(self, passes: dict[str, float]) -> None:
        text = format_reads(passes)
        self._print(text[0].upper() + text[1:])

    def fit_finished(self) -> None:
        if self.verbose >= 2:
            self._print(f"Fit finished in {time.perf_counter() - self._started:.2f} s")

