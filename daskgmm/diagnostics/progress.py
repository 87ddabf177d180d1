"""Progress of a running fit (or data generation), on a terminal or in a log.

:class:`ProgressObserver` is a fit observer (see :mod:`daskgmm.diagnostics.observers`)::

    with observe(ProgressObserver(verbose=0)):
        gm.fit(X)

On a terminal it shows a live display drawn by `rich <https://rich.readthedocs.io>`_:
the current pass over the chunks (``kmeans pass 2``, ``em iteration 7/100``,
``generate``, ``outputs``) with a bar, the chunks done, the elapsed time and an ETA for
the pass, and a second line for the whole fit, ``iteration 7/100`` with an ETA for the
fit. Above it, one line per EM iteration is printed::

    iter 7/100  loglik -1.234567  change 1.2e-04  ETA 0:41

When the stream is not a terminal (a log file, CI) it prints the same lines as plain
text, with no control characters, and one line per pass that is not an EM iteration.
With ``quiet=True`` it prints nothing.

``verbose`` follows scikit-learn's convention for the extra detail: at ``verbose >= 2``
every initialisation pass gets its own line (numbered, with its duration) and every
iteration line its duration in seconds; at 0 and 1 the initialisation is summed up in
one line when the first EM iteration starts.

The fit's ETA comes from the observed seconds per iteration and the trend of the
log-likelihood gains: when the gains shrink geometrically (as EM's do near a
maximum), the number of iterations until the gain falls below ``tol`` is extrapolated
(:func:`iterations_left`); otherwise the iterations left to ``max_iter`` are used.

:func:`format_iteration`, :func:`format_clock`, :func:`iterations_left` and
:func:`fit_eta` are pure functions.
"""

from __future__ import annotations

import itertools
import math
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

__all__ = ["ProgressObserver", "fit_eta", "format_bar", "format_clock",
           "format_iteration", "iterations_left"]

_PASS_NAMES = {"em": "em", "survey": "survey", "kmeans": "kmeans", "init": "init",
               "moments": "moments", "outputs": "outputs", "generate": "generate",
               "score": "score"}


def _format_change(change: float) -> str:
    if math.isnan(change):
        return "-"
    return f"{change:.1e}"


def format_clock(seconds: float | None) -> str:
    """``'0:41'``, ``'12:05'`` or ``'1:02:03'``; ``'?'`` when unknown.

    Examples
    --------
    >>> format_clock(41.2), format_clock(3723), format_clock(None)
    ('0:41', '1:02:03', '?')
    """
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def iterations_left(gains: Sequence[float], tol: float, iteration: int, max_iter: int
                    ) -> int:
    """How many more EM iterations a restart will probably run.

    Parameters
    ----------
    gains : sequence of float
        The gains of the mean log-likelihood of the iterations so far (newest last).
    tol : float
        The convergence threshold (EM stops when a gain falls below it).
    iteration, max_iter : int
        The iterations done and the limit.

    Returns
    -------
    int
        ``max_iter - iteration`` unless the last gains shrink geometrically, in which
        case the extrapolated number of iterations until a gain is below ``tol`` (never
        more than ``max_iter - iteration``).

    Examples
    --------
    >>> iterations_left([1e-1, 1e-2, 1e-3], tol=1e-6, iteration=3, max_iter=100)
    3
    >>> iterations_left([1e-1, 2e-1], tol=1e-6, iteration=2, max_iter=10)
    8
    """
    limit = max(0, int(max_iter) - int(iteration))
    recent = [g for g in list(gains)[-4:] if math.isfinite(g)]
    if tol <= 0 or len(recent) < 2 or any(g <= 0 for g in recent):
        return limit
    if recent[-1] < tol:
        return 0
    ratios = [b / a for a, b in itertools.pairwise(recent) if a > 0]
    ratio = math.exp(sum(math.log(r) for r in ratios) / len(ratios)) if ratios else 1.0
    if not 0 < ratio < 1:
        return limit
    needed = math.ceil(math.log(tol / recent[-1]) / math.log(ratio) - 1e-9)
    return min(limit, max(1, needed))


def fit_eta(states: Sequence[Any], iteration: int, max_iter: int, tol: float,
            seconds_per_iteration: float) -> float | None:
    """Seconds until the fit ends: the slowest active restart's
    :func:`iterations_left` times the seconds per iteration (None when unknown)."""
    if max_iter <= 0 or seconds_per_iteration <= 0:
        return None
    left = 0
    for state in states:
        if getattr(state, "converged", False) or not getattr(state, "active", True):
            continue
        bounds = [float(b) for b in getattr(state, "lower_bounds", [])]
        gains = [b - a for a, b in itertools.pairwise(bounds)]
        left = max(left, iterations_left(gains, tol, iteration, max_iter))
    return left * seconds_per_iteration


def was_updated(info: Any, state: Any) -> bool:
    """Whether the EM iteration ``info`` updated the candidate ``state``
    (:meth:`daskgmm.engine.em.IterationInfo.was_updated`; without it, whether the
    candidate's ``n_iter`` is the iteration's number)."""
    check = getattr(info, "was_updated", None)
    return bool(check(state)) if check is not None else state.n_iter == int(info.iteration)


def format_iteration(info: Any, *, max_iter: int | None = None, eta: float | None = None,
                     timing: bool = True) -> list[str]:
    """The log lines for one finished EM iteration.

    Parameters
    ----------
    info : daskgmm.engine.em.IterationInfo
        What the EM driver reports after an iteration (``iteration``, ``states``,
        ``seconds``).
    max_iter : int, optional
        Shown as ``iter 7/100``.
    eta : float, optional
        Seconds left in the fit, shown as ``ETA 0:41``.
    timing : bool, default True
        Append the iteration's seconds (the CLI's display does so at ``verbose >= 2``).

    Returns
    -------
    list of str
        One line per restart updated in this iteration (a restart whose ``n_iter``
        equals ``info.iteration``), e.g.
        ``'iter 7/100  loglik -1.234567  change 1.2e-04  ETA 0:41'``. With several
        restarts (``n_init > 1``) each line names its restart (``init 1``) and a restart
        that stopped in this iteration is marked ``converged``. ``change`` is the gain
        of the mean log-likelihood over the previous iteration (``-`` for the first).

    Examples
    --------
    >>> from types import SimpleNamespace as NS
    >>> state = NS(index=0, n_iter=2, lower_bound=-1.5, lower_bounds=[-1.6, -1.5],
    ...            converged=False)
    >>> format_iteration(NS(iteration=2, states=[state], seconds=0.5), max_iter=10)
    ['iter 2/10  loglik -1.500000  change 1.0e-01  0.50 s/iter']
    """
    states = list(getattr(info, "states", []))
    several = len(states) > 1
    iteration = int(info.iteration)
    counter = f"{iteration}/{max_iter}" if max_iter else f"{iteration}"
    lines = []
    for state in states:
        if not was_updated(info, state):
            continue
        bounds = list(state.lower_bounds)
        change = bounds[-1] - bounds[-2] if len(bounds) > 1 else math.nan
        line = f"iter {counter}"
        if several:
            line += f"  init {state.index}"
        objective = getattr(getattr(state, "model", None), "objective", "loglik")
        line += f"  {objective} {state.lower_bound:.6f}  change {_format_change(change)}"
        if timing:
            line += f"  {float(info.seconds):.2f} s/iter"
        if state.converged:
            line += "  converged"
        lines.append(line)
    if lines and eta is not None and not all(s.converged for s in states
                                            if was_updated(info, s)):
        lines[-1] += f"  ETA {format_clock(eta)}"
    return lines


def format_bar(done: int, total: int, width: int = 24) -> str:
    """``'[#####.....] 12/40 chunks'`` for ``done`` of ``total`` chunks (plain logs).

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
        Draw the live rich display. Defaults to whether ``stream`` is a terminal.
    verbose : int, default 0
        ``>= 2`` adds a line per initialisation pass and the seconds of every
        iteration (see the module docstring).
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False,
                 live: bool | None = None, verbose: int = 0) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.live = _isatty(self.stream) if live is None else bool(live)
        self.verbose = int(verbose)
        self.max_iter = 0
        self.tol = 0.0
        self._kind = ""
        self._group = (0, 0)
        self._total = 0
        self._done = 0
        self._started = 0.0
        self._pass_numbers: dict[str, int] = {}
        self._init_passes: list[tuple[str, float]] = []
        self._init_reported = False
        self._iteration = 0
        self._iteration_seconds: list[float] = []
        self._eta: float | None = None
        self._progress: Any = None
        self._pass_task: Any = None
        self._fit_task: Any = None
        if self.quiet or not self.live:
            # Nothing to draw per chunk: tell the passes not to track chunks for us
            # (daskgmm.diagnostics.observers.wants checks for a non-None attribute).
            self.chunks_done = None  # type: ignore[method-assign]

    # -- the live display ----------------------------------------------------------------
    def _display(self) -> Any:
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(file=self.stream, force_terminal=True, highlight=False,
                              soft_wrap=True)
            self._progress = Progress(
                TextColumn("{task.description:<22}"), BarColumn(bar_width=28),
                TextColumn("{task.fields[count]:>14}"), TimeElapsedColumn(),
                TextColumn("{task.fields[eta]}"),
                console=console, transient=True, redirect_stdout=False,
                redirect_stderr=False, refresh_per_second=8)
            self._progress.start()
        return self._progress

    def _print(self, text: str) -> None:
        if self.quiet:
            return
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
            return
        try:
            self.stream.write(text + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # closed stream or broken pipe: progress is optional
            pass

    def _update_pass(self) -> None:
        if self.quiet or not self.live:
            return
        progress = self._display()
        elapsed = time.perf_counter() - self._started
        eta = ""
        if 0 < self._done < self._total and elapsed > 0:
            eta = f"ETA {format_clock(elapsed / self._done * (self._total - self._done))}"
        count = f"{self._done}/{self._total} chunks"
        if self._pass_task is None:
            self._pass_task = progress.add_task(self._pass_label(), total=self._total,
                                                count=count, eta=eta)
        progress.update(self._pass_task, description=self._pass_label(),
                        total=max(self._total, 1), completed=self._done, count=count,
                        eta=eta)

    def _update_fit(self) -> None:
        if self.quiet or not self.live or not self.max_iter:
            return
        progress = self._display()
        # A sweep's candidate that started EM late may run past pass max_iter.
        done = min(self._iteration, self.max_iter)
        count = f"{done}/{self.max_iter} iter"
        eta = f"ETA {format_clock(self._eta)}" if self._eta is not None else ""
        if self._fit_task is None:
            self._fit_task = progress.add_task("fit", total=self.max_iter, count=count,
                                               eta=eta)
        progress.update(self._fit_task, completed=done, count=count, eta=eta)

    def _pass_label(self) -> str:
        name = _PASS_NAMES.get(self._kind, self._kind)
        if self._kind == "group":  # incremental and online EM: a group of chunks
            counter = f"{self._iteration + 1}/{self.max_iter}" if self.max_iter else \
                f"{self._iteration + 1}"
            done, total = self._group
            return f"em pass {counter}, group {done + 1}/{total}" if total else \
                f"em pass {counter}"
        if self._kind == "em":
            counter = f"{self._iteration + 1}/{self.max_iter}" if self.max_iter else \
                f"{self._iteration + 1}"
            return f"em iteration {counter}"
        number = self._pass_numbers.get(self._kind, 0)
        if self._kind in ("survey", "kmeans", "init", "moments") and number:
            return f"{name} pass {number}"
        return name

    # -- public helpers ------------------------------------------------------------------
    def expect(self, *, max_iter: int | None = None, tol: float | None = None) -> None:
        """Tell the display the fit's ``max_iter`` and ``tol`` (when the engine does not
        report them with ``fit_started``)."""
        if max_iter is not None:
            self.max_iter = int(max_iter)
        if tol is not None:
            self.tol = float(tol)

    def message(self, text: str) -> None:
        """Print a one-line message (above the live display)."""
        self._print(text)

    def warning(self, text: str) -> None:
        """Print ``daskgmm: warning: TEXT`` (even when quiet)."""
        if self._progress is not None:
            self._progress.console.print(f"daskgmm: warning: {text}", markup=False,
                                         highlight=False)
            return
        try:
            self.stream.write(f"daskgmm: warning: {text}\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        """Remove the live display, if one is drawn."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            self._pass_task = self._fit_task = None

    # -- observer events -----------------------------------------------------------------
    def fit_started(self, info: Any) -> None:
        """A fit starts: take its ``max_iter`` (and ``tol``) if it reports them."""
        self.expect(max_iter=getattr(info, "max_iter", None), tol=getattr(info, "tol", None))
        self._pass_numbers.clear()
        self._init_passes.clear()
        self._init_reported = False
        self._iteration = 0
        self._iteration_seconds.clear()

    def pass_started(self, kind: str, n_chunks: int) -> None:
        """A pass over ``n_chunks`` chunks starts."""
        self._kind, self._total, self._done = kind, int(n_chunks), 0
        self._started = time.perf_counter()
        if kind == "group":
            if not self._init_reported:
                self._report_initialisation()
        elif kind != "em":
            self._pass_numbers[kind] = self._pass_numbers.get(kind, 0) + 1
        elif not self._init_reported:
            self._report_initialisation()
        self._update_pass()
        self._update_fit()

    def chunks_done(self, count: int) -> None:
        """``count`` more chunks of the current pass are done."""
        self._done += int(count)
        self._update_pass()

    def pass_finished(self) -> None:
        """The current pass is done."""
        seconds = time.perf_counter() - self._started
        self._done = self._total
        if self._kind in ("em", "group"):
            return  # the iteration line follows (after the pass's last group)
        if self._kind in ("survey", "kmeans", "init", "moments"):
            self._init_passes.append((self._kind, seconds))
            if self.verbose >= 2:
                chunks = f"{self._total} chunk{'s' if self._total != 1 else ''}"
                self._print(f"{self._pass_label()}: {chunks} in {seconds:.2f} s")
            return
        if self._progress is not None and self._pass_task is not None:
            self._progress.update(self._pass_task, visible=False)
            self._pass_task = None
        chunks = f"{self._total} chunk{'s' if self._total != 1 else ''}"
        self._print(f"{_PASS_NAMES.get(self._kind, self._kind)} pass: {chunks} in "
                    f"{seconds:.2f} s")

    def _report_initialisation(self) -> None:
        self._init_reported = True
        if not self._init_passes or self.verbose >= 2:
            return
        seconds = sum(s for _, s in self._init_passes)
        kinds: dict[str, int] = {}
        for kind, _ in self._init_passes:
            kinds[kind] = kinds.get(kind, 0) + 1
        detail = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
        n = len(self._init_passes)
        self._print(f"initialised in {seconds:.2f} s ({n} pass{'es' if n != 1 else ''} over "
                    f"the data: {detail})")

    def update_finished(self, number: int, position: int, n_groups: int) -> None:
        """Incremental or online EM updated the model after group ``position`` of
        ``n_groups`` of pass ``number``."""
        self._group = (position, n_groups)

    def iteration_finished(self, info: Any) -> None:
        """An EM iteration is done: print its line(s), update the fit's ETA."""
        self._iteration = int(info.iteration)
        max_iter = int(getattr(info, "max_iter", 0) or self.max_iter or 0)
        self._iteration_seconds.append(float(info.seconds))
        recent = self._iteration_seconds[-5:]
        per_iteration = sum(recent) / len(recent)
        self._eta = fit_eta(list(getattr(info, "states", [])), self._iteration, max_iter,
                            self.tol, per_iteration)
        for line in format_iteration(info, max_iter=max_iter or None, eta=self._eta,
                                     timing=self.verbose >= 2):
            self._print(line)
        self._update_fit()

    def fit_finished(self) -> None:
        """The fit is done (or failed): nothing more to draw for it."""
        if self._progress is not None and self._fit_task is not None:
            self._progress.update(self._fit_task, visible=False)
            self._fit_task = None
