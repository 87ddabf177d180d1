"""Progress of a running fit, on a terminal or in a log.

:class:`ProgressObserver` is a fit observer (see :mod:`daskgmm.diagnostics.observers`)::

    with observe(ProgressObserver()):
        gm.fit(X)

On a terminal it redraws one live line per pass over the chunks, with a bar::

    em     [############............] 12/40 chunks  3.1 s

and after each EM iteration it prints a line such as::

    iter 7  loglik -1.234567  change 1.2e-04  3.21 s/iter

When the stream is not a terminal (a log file, CI) it prints plain lines only, with no
carriage returns: one per EM iteration and one per initialisation pass. With
``quiet=True`` it prints nothing.

:func:`format_iteration` gives the plain per-iteration lines; it has no side effects.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

__all__ = ["ProgressObserver", "format_bar", "format_iteration"]

_PASS_NAMES = {"em": "em", "kmeans": "kmeans", "init": "init", "outputs": "outputs"}


def _format_change(change: float) -> str:
    if math.isnan(change):
        return "-"
    return f"{change:.1e}"


def format_iteration(info: Any) -> list[str]:
    """The log lines for one finished EM iteration.

    Parameters
    ----------
    info : daskgmm.engine.em.IterationInfo
        What the EM driver reports after an iteration.

    Returns
    -------
    list of str
        One line per restart updated in this iteration (a restart whose ``n_iter``
        equals ``info.iteration``), e.g.
        ``'iter 7  loglik -1.234567  change 1.2e-04  3.21 s/iter'``. With several
        restarts (``n_init > 1``) each line names its restart (``init 1``) and a restart
        that stopped in this iteration is marked ``converged``. ``change`` is the gain
        of the mean log-likelihood over the previous iteration (``-`` for the first).

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> state = NS(index=0, n_iter=2, lower_bound=-1.5, lower_bounds=[-1.6, -1.5],
    ...            converged=False)
    >>> format_iteration(NS(iteration=2, states=[state], seconds=0.5))
    ['iter 2  loglik -1.500000  change 1.0e-01  0.50 s/iter']
    """
    states = list(getattr(info, "states", []))
    several = len(states) > 1
    lines = []
    for state in states:
        if state.n_iter != info.iteration:
            continue
        bounds = list(state.lower_bounds)
        change = bounds[-1] - bounds[-2] if len(bounds) > 1 else math.nan
        line = f"iter {info.iteration}"
        if several:
            line += f"  init {state.index}"
        line += (f"  loglik {state.lower_bound:.6f}  change {_format_change(change)}"
                 f"  {info.seconds:.2f} s/iter")
        if state.converged:
            line += "  converged"
        lines.append(line)
    return lines


def format_bar(done: int, total: int, width: int = 24) -> str:
    """``'[#####.....] 12/40 chunks'`` for ``done`` of ``total`` chunks.

    Examples
    --------
    >>> format_bar(1, 4, width=8)
    '[##......] 1/4 chunks'
    """
    filled = min(width, int(width * done / total)) if total > 0 else width
    return f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} chunks"


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ProgressObserver:
    """Show the passes and EM iterations of fits run inside ``observe(...)``.

    Parameters
    ----------
    stream : text stream, optional
        Where to write; ``sys.stderr`` (looked up when the observer is created) by
        default.
    quiet : bool, default False
        Print nothing.
    live : bool, optional
        Redraw a live progress bar (carriage returns). Defaults to whether ``stream`` is
        a terminal.
    min_redraw : float, default 0.1
        Seconds between two redraws of the live bar.
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False,
                 live: bool | None = None, min_redraw: float = 0.1) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.live = _isatty(self.stream) if live is None else bool(live)
        self.min_redraw = min_redraw
        self._kind = ""
        self._total = 0
        self._done = 0
        self._started = 0.0
        self._drawn = 0.0
        self._on_line = False
        self._init_passes = 0
        if self.quiet or not self.live:
            # Nothing to draw per chunk: tell the passes not to track chunks for us
            # (daskgmm.diagnostics.observers.wants checks for a non-None attribute).
            self.chunks_done = None  # type: ignore[method-assign]

    # -- output helpers -----------------------------------------------------------------
    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # closed stream or broken pipe: progress is optional
            pass

    def _clear(self) -> None:
        if self._on_line:
            self._write("\r\x1b[K")
            self._on_line = False

    def _draw(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._drawn < self.min_redraw:
            return
        self._drawn = now
        elapsed = now - self._started
        name = _PASS_NAMES.get(self._kind, self._kind)
        self._write(f"\r\x1b[K{name:<7} {format_bar(self._done, self._total)}  "
                    f"{elapsed:.1f} s")
        self._on_line = True

    def message(self, text: str) -> None:
        """Print a one-line message (on its own line, even during a live bar)."""
        if self.quiet:
            return
        self._clear()
        self._write(text + "\n")

    # -- observer events ----------------------------------------------------------------
    def pass_started(self, kind: str, n_chunks: int) -> None:
        """A pass over ``n_chunks`` chunks starts."""
        self._kind, self._total, self._done = kind, int(n_chunks), 0
        self._started = time.perf_counter()
        if self.quiet or not self.live:
            return
        self._draw(force=True)

    def chunks_done(self, count: int) -> None:
        """``count`` more chunks of the current pass are done."""
        self._done += int(count)
        if self.quiet or not self.live:
            return
        self._draw(force=self._done >= self._total)

    def pass_finished(self) -> None:
        """The current pass is done: initialisation passes get a line of their own."""
        if self.quiet:
            return
        seconds = time.perf_counter() - self._started
        if self._kind == "em":
            self._clear()  # the iteration line follows
            return
        if self._kind in ("kmeans", "init"):
            self._init_passes += 1
        name = _PASS_NAMES.get(self._kind, self._kind)
        self._clear()
        self._write(f"{name} pass: {self._total} chunks in {seconds:.2f} s\n")

    def iteration_finished(self, info: Any) -> None:
        """An EM iteration is done: print its line(s)."""
        if self.quiet:
            return
        self._clear()
        for line in format_iteration(info):
            self._write(line + "\n")

    def close(self) -> None:
        """End a live line, if one is drawn."""
        if not self.quiet:
            self._clear()
