"""Progress of a running fit (or data generation), on a terminal or in a log.

:class:`ProgressObserver` is a fit observer (see :mod:`daskgmm.diagnostics.observers`)::

    with observe(ProgressObserver()):
        gm.fit(X)

On a terminal it draws a live display with `rich <https://rich.readthedocs.io>`_: the
current pass over the chunks (``kmeans pass 2``, ``em iteration 7/100``, ``outputs``)
with its bar, chunks done, elapsed time and ETA, and a line for the whole fit
(``7/100 iter`` and the fit's ETA). On a pipe or a log file it prints plain lines, no
control characters. In both it prints one line per EM iteration::

    iter 7/100  loglik -1.234567  change 1.2e-04  ETA 0:41

and one line per initialisation pass as it ends (``kmeans pass 3: 12 chunks in 4.10
s``), so a long initialisation is visible as it happens. ``verbose >= 2`` adds each
iteration's seconds; ``verbose >= 1`` a line saying how many times the fit read the data
(:func:`format_reads`). A sweep (``sweep=True``) prints one line per iteration that counts
the candidates running (:func:`format_sweep_iteration`).

The fit's ETA is the seconds per iteration times the iterations left, which come from
the **observed convergence rate**: once the gains of the objective shrink
geometrically (as EM's do near a maximum), the iterations until a gain falls below
``tol`` are extrapolated (:func:`iterations_left`). Until then there is no ETA:
``max_iter`` says when a fit must stop, not when it will. After ``--resume`` the counts
start from the checkpoint's iteration (:meth:`ProgressObserver.expect`).
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

__all__ = ["ProgressObserver", "fit_eta", "format_clock", "format_iteration", "format_reads",
           "format_sweep_iteration", "iterations_left", "was_updated"]

_INIT_KINDS = ("moments", "survey", "kmeans", "init", "sizes")
_LABELS = {"sizes": "chunk sizes"}


def format_clock(seconds: float | None) -> str:
    """``'0:41'``, ``'12:05'`` or ``'1:02:03'``; ``'?'`` when unknown.

    Examples
    --------
    >>> format_clock(41.2), format_clock(3723), format_clock(None)
    ('0:41', '1:02:03', '?')
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def iterations_left(gains: Sequence[float], tol: float, iteration: int, max_iter: int
                    ) -> int | None:
    """How many more EM iterations a restart will run, from its convergence rate.

    Returns
    -------
    int or None
        0 when the last gain is below ``tol``; when the last three gains are positive
        and shrink, the iterations until a gain falls below ``tol`` at the latest ratio
        (at most ``max_iter - iteration``); otherwise None (no estimate yet).

    Examples
    --------
    >>> iterations_left([1e-1, 1e-2, 1e-3], tol=1e-6, iteration=3, max_iter=100)
    3
    >>> iterations_left([1e-1, 2e-1], tol=1e-6, iteration=2, max_iter=10) is None
    True
    """
    limit = max(0, int(max_iter) - int(iteration))
    recent = [g for g in list(gains)[-4:] if math.isfinite(g)]
    if recent and 0 <= recent[-1] < tol:
        return 0
    if tol <= 0 or len(recent) < 3 or any(g <= 0 for g in recent):
        return None
    # EM slows down towards its asymptotic rate: the latest ratio, not an average,
    # once the gains have shrunk twice in a row.
    ratios = [b / a for a, b in itertools.pairwise(recent[-3:])]
    if not all(0 < r < 1 for r in ratios):
        return None
    ratio = ratios[-1]
    needed = math.ceil(math.log(tol / recent[-1]) / math.log(ratio) - 1e-9)
    return min(limit, max(1, needed))


def fit_eta(states: Sequence[Any], iteration: int, max_iter: int, tol: float,
            seconds_per_iteration: float) -> float | None:
    """Seconds until the fit ends: the slowest active candidate's
    :func:`iterations_left` times the seconds per iteration; None while any active
    candidate has no estimate."""
    left = 0
    for state in states:
        if getattr(state, "converged", False) or not getattr(state, "active", True):
            continue
        bounds = [float(b) for b in getattr(state, "lower_bounds", [])]
        more = iterations_left([b - a for a, b in itertools.pairwise(bounds)], tol,
                               iteration, max_iter)
        if more is None:
            return None
        left = max(left, more)
    return left * seconds_per_iteration if seconds_per_iteration > 0 else None


def was_updated(info: Any, state: Any) -> bool:
    """Whether the EM iteration ``info`` updated the candidate ``state``."""
    check = getattr(info, "was_updated", None)
    return bool(check(state)) if check is not None else state.n_iter == int(info.iteration)


def format_iteration(info: Any, *, max_iter: int | None = None, eta: float | None = None,
                     timing: bool = True) -> list[str]:
    """The lines of one finished EM iteration: one per restart it updated, e.g.
    ``'iter 7/100  loglik -1.234567  change 1.2e-04  ETA 0:41'`` (``init N`` with
    several restarts, ``converged`` when it stopped, the seconds with ``timing``).

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> state = NS(index=0, n_iter=2, lower_bound=-1.5, lower_bounds=[-1.6, -1.5],
    ...            converged=False)
    >>> format_iteration(NS(iteration=2, states=[state], seconds=0.5), max_iter=10)
    ['iter 2/10  loglik -1.500000  change 1.0e-01  0.50 s/iter']
    """
    states = list(getattr(info, "states", []))
    counter = f"{info.iteration}/{max_iter}" if max_iter else f"{info.iteration}"
    lines = []
    for state in states:
        if not was_updated(info, state):
            continue
        bounds = list(state.lower_bounds)
        change = f"{bounds[-1] - bounds[-2]:.1e}" if len(bounds) > 1 else "-"
        objective = getattr(getattr(state, "model", None), "objective", "loglik")
        line = (f"iter {counter}" + (f"  init {state.index}" if len(states) > 1 else "")
                + f"  {objective} {state.lower_bound:.6f}  change {change}")
        line += f"  {float(info.seconds):.2f} s/iter" if timing else ""
        lines.append(line + ("  converged" if state.converged else ""))
    if lines and eta is not None and not all(s.converged for s in states
                                            if was_updated(info, s)):
        lines[-1] += f"  ETA {format_clock(eta)}"
    return lines


def format_sweep_iteration(info: Any, *, max_iter: int | None = None,
                           eta: float | None = None, timing: bool = False,
                           n_candidates: int | None = None) -> str:
    """The line of one EM iteration of a sweep: the candidates running (and those still
    initialising, when ``n_candidates`` counts more than have started EM), stopped
    early, converged in this iteration.

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> states = [NS(label="K=1 full #0", n_iter=2, converged=True, active=False),
    ...           NS(label="K=2 full #0", n_iter=3, converged=False, active=True),
    ...           NS(label="K=3 full #0", n_iter=3, converged=True, active=False)]
    >>> format_sweep_iteration(NS(iteration=3, states=states, seconds=0.5), max_iter=100,
    ...                        n_candidates=5)
    'iter 3/100  running 1/5  initialising 2  converged now: K=3 full #0'
    """
    states = list(getattr(info, "states", []))
    iteration = int(info.iteration)
    total = max(len(states), n_candidates or 0)
    running = sum(1 for s in states if getattr(s, "active", False))
    line = (f"iter {iteration}/{max_iter}" if max_iter and iteration <= max_iter
            else f"iter {iteration}") + f"  running {running}/{total}"
    line += f"  initialising {total - len(states)}" if total > len(states) else ""
    stopped = sum(1 for s in states if not getattr(s, "active", True)
                  and not getattr(s, "converged", False))
    line += f"  stopped early {stopped}" if stopped else ""
    done = [s.label for s in states if was_updated(info, s) and s.converged]
    if done:
        line += "  converged now: " + ", ".join(done[:6]) + (
            f" and {len(done) - 6} more" if len(done) > 6 else "")
    line += f"  {float(info.seconds):.2f} s/iter" if timing else ""
    return line + (f"  ETA {format_clock(eta)}" if eta is not None and running else "")


def format_reads(passes: Mapping[str, float]) -> str:
    """A fit's ``passes_`` in words: ``read the data 3 times (survey 1, em 2)``."""
    total = sum(passes.values())
    parts = ", ".join(f"{phase} {count:g}" for phase, count in passes.items())
    return f"read the data {total:g} time{'' if total == 1 else 's'} ({parts})"


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
        Where to write (``sys.stderr`` by default).
    quiet : bool, default False
        Print nothing but warnings.
    live : bool, optional
        Draw the live display (default: whether ``stream`` is a terminal).
    verbose : int, default 0
        ``>= 2`` adds the seconds of every iteration.
    sweep : bool, default False
        One line per iteration for all the candidates of a sweep.
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False,
                 live: bool | None = None, verbose: int = 0, sweep: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet, self.verbose, self.sweep = quiet, int(verbose), sweep
        self.live = (_isatty(self.stream) if live is None else bool(live)) and not quiet
        self.max_iter, self.tol = 0, 0.0
        self.n_candidates: int | None = None
        self._iteration = 0
        self._kind, self._total, self._done, self._started = "", 0, 0, 0.0
        self._numbers: dict[str, int] = {}
        self._group = (0, 0)
        self._seconds: list[float] = []
        self._eta: float | None = None
        self._rich: Any = None
        self._tasks: dict[str, Any] = {}
        if not self.live:  # nothing to draw per chunk: passes need not count for us
            self.chunks_done = None  # type: ignore[method-assign]

    # -- what the command tells it -------------------------------------------------------
    def expect(self, *, max_iter: int | None = None, tol: float | None = None,
               start_iteration: int | None = None) -> None:
        """The fit's ``max_iter`` and ``tol``, and the iteration a resumed fit starts
        after (when the engine does not tell them with ``fit_started``)."""
        self.max_iter = int(max_iter) if max_iter is not None else self.max_iter
        self.tol = float(tol) if tol is not None else self.tol
        self._iteration = int(start_iteration) if start_iteration else self._iteration

    def message(self, text: str) -> None:
        """A one-line message (above the live display)."""
        if not self.quiet:
            self._print(text)

    def warning(self, text: str) -> None:
        """``daskgmm: warning: TEXT`` (also when quiet)."""
        self._print(f"daskgmm: warning: {text}")

    def close(self) -> None:
        """Remove the live display."""
        if self._rich is not None:
            self._rich.stop()
            self._rich, self._tasks = None, {}

    # -- drawing -------------------------------------------------------------------------
    def _print(self, text: str) -> None:
        if self._rich is not None:
            self._rich.console.print(text, markup=False, highlight=False)
            return
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed stream or a broken pipe
            pass

    def _draw(self, name: str, description: str, done: int, total: int, count: str,
              eta: str, restart: bool = False) -> None:
        if not self.live:
            return
        if self._rich is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(file=self.stream, force_terminal=True, highlight=False,
                              soft_wrap=True)
            self._rich = Progress(
                TextColumn("{task.description:<24}"), BarColumn(bar_width=28),
                TextColumn("{task.fields[count]:>15}"), TimeElapsedColumn(),
                TextColumn("{task.fields[eta]}"), console=console, transient=True,
                refresh_per_second=8)
            self._rich.start()
        task = self._tasks.get(name)
        if task is None:
            task = self._tasks[name] = self._rich.add_task(description, total=total,
                                                           count=count, eta=eta)
        elif restart:
            self._rich.reset(task, total=max(total, 1), description=description)
        self._rich.update(task, description=description, completed=done,
                          total=max(total, 1), count=count, eta=eta, visible=True)

    def _draw_pass(self, restart: bool = False) -> None:
        elapsed = time.perf_counter() - self._started
        eta = (f"ETA {format_clock(elapsed / self._done * (self._total - self._done))}"
               if 0 < self._done < self._total else "")
        self._draw("pass", self._label(), self._done, self._total,
                   f"{self._done}/{self._total} chunks", eta, restart)

    def _draw_fit(self) -> None:
        if self.max_iter:
            done = min(self._iteration, self.max_iter)
            eta = f"ETA {format_clock(self._eta)}" if self._eta is not None else ""
            self._draw("fit", "fit", done, self.max_iter, f"{done}/{self.max_iter} iter",
                       eta)

    def _label(self) -> str:
        counter = f"{self._iteration + 1}" + (f"/{self.max_iter}" if self.max_iter else "")
        if self._kind == "em":
            return f"em iteration {counter}"
        if self._kind == "group":
            done, total = self._group
            return f"em pass {counter}" + (f", group {done + 1}/{total}" if total else "")
        name = _LABELS.get(self._kind, self._kind)
        number = self._numbers.get(self._kind, 0)
        return f"{name} pass {number}" if self._kind in _INIT_KINDS[:3] else name

    # -- observer events -----------------------------------------------------------------
    def fit_started(self, info: Any) -> None:
        """A fit starts: take its ``max_iter``, ``tol`` and number of candidates."""
        self.expect(max_iter=getattr(info, "max_iter", None), tol=getattr(info, "tol", None))
        self.n_candidates = getattr(info, "n_candidates", None)
        self._numbers.clear()
        self._seconds.clear()

    def pass_started(self, kind: str, n_chunks: int) -> None:
        """A pass over ``n_chunks`` chunks starts."""
        self._kind, self._total, self._done = kind, int(n_chunks), 0
        self._started = time.perf_counter()
        if kind not in ("em", "group"):
            self._numbers[kind] = self._numbers.get(kind, 0) + 1
        self._draw_pass(restart=True)
        self._draw_fit()

    def chunks_done(self, count: int) -> None:
        """``count`` more chunks of the current pass are done."""
        self._done += int(count)
        self._draw_pass()

    def pass_finished(self) -> None:
        """The current pass is done: a line for it unless an iteration line follows."""
        if self._kind in ("em", "group"):
            return
        seconds = time.perf_counter() - self._started
        chunks = f"{self._total} chunk{'s' if self._total != 1 else ''}"
        note = " (the data's chunk sizes were not known)" if self._kind == "sizes" else ""
        label = self._label() if self._kind in _INIT_KINDS[:3] else f"{self._label()} pass"
        self.message(f"{label}: {chunks} in {seconds:.2f} s{note}")

    def update_finished(self, number: int, position: int, n_groups: int) -> None:
        """Incremental or online EM updated the model after a group of chunks."""
        self._group = (position, n_groups)

    def iteration_finished(self, info: Any) -> None:
        """An EM iteration is done: its line(s), and the fit's ETA."""
        self._iteration = int(info.iteration)
        max_iter = int(getattr(info, "max_iter", 0) or self.max_iter or 0)
        self._seconds.append(float(info.seconds))
        recent = self._seconds[-5:]
        self._eta = fit_eta(list(getattr(info, "states", [])), self._iteration, max_iter,
                            self.tol, sum(recent) / len(recent))
        timing = self.verbose >= 2
        if self.sweep:
            lines = [format_sweep_iteration(info, max_iter=max_iter or None, eta=self._eta,
                                            timing=timing, n_candidates=self.n_candidates)]
        else:
            lines = format_iteration(info, max_iter=max_iter or None, eta=self._eta,
                                     timing=timing)
        for line in lines:
            self.message(line)
        self._draw_fit()

    def passes_read(self, passes: dict[str, float]) -> None:
        """The fit read the data this many times, by phase: a line with ``verbose``."""
        if self.verbose >= 1:
            self.message(format_reads(passes))

    def fit_finished(self) -> None:
        """The fit is done (or failed)."""
        if self._rich is not None and "fit" in self._tasks:
            self._rich.update(self._tasks["fit"], visible=False)
