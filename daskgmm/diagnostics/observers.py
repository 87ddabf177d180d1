"""Observing a fit while it runs: passes over the chunks and EM iterations.

A fit reports to whatever observers are active in the current context::

    with observe(MyObserver()):
        gm.fit(X)

An observer implements any of the methods of :class:`FitObserver` (missing ones are
skipped). Progress displays (:mod:`daskgmm.diagnostics.progress`), checkpoints and the
CLI's report are observers; the estimators know nothing about them. Observing never
changes how a fit is computed: the passes run the same tasks whether or not anyone
listens, and an observer only receives events.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, Protocol

_OBSERVERS: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
    "daskgmm_observers", default=()
)


class FitObserver(Protocol):
    """What an observer may implement (every method is optional).

    Events of one fit come in this order: ``fit_started``, then passes
    (``pass_started``, ``chunks_done`` ..., ``pass_finished``) of the initialisation
    (kinds ``'survey'``: the first pass, gathering the starts' sample and the data's
    moments; ``'init'``: a start's pass) and of every EM iteration (kind
    ``'em'``), each iteration followed by ``iteration_finished``, then ``passes_read``
    (after a fit that succeeded) and ``fit_finished``.
    """

    def fit_started(self, info: Any) -> None:
        """A fit starts. ``info`` has ``max_iter`` (int), ``n_candidates`` (int: restarts
        times candidate models), ``n_chunks`` (int), ``n_samples`` (int),
        ``tol``, ``algorithm`` (``'batch'``, ``'incremental'`` or ``'online'``) and
        ``labels`` (one short description per candidate, e.g. ``'K=3 full #0'``)."""

    def pass_started(self, kind: str, n_chunks: int) -> None:
        """A pass over ``n_chunks`` chunks starts; ``kind`` says what it computes
        (``'survey'``, ``'init'``, ``'em'``, ``'group'`` (a group of
        chunks of incremental or online EM), ``'score'``, ``'verify'``, ``'outputs'``)."""

    def chunks_done(self, count: int) -> None:
        """``count`` more chunks of the current pass are done."""

    def pass_finished(self) -> None:
        """The current pass is done."""

    def update_finished(self, number: int, position: int, n_groups: int) -> None:
        """Incremental or online EM updated the model after the ``position``-th of the
        ``n_groups`` groups of chunks of pass ``number``."""

    def iteration_finished(self, info: Any) -> None:
        """An EM iteration (a pass over the data) is done.

        ``info`` (:class:`daskgmm.engine.em.IterationInfo`) has ``iteration``,
        ``max_iter``, ``seconds`` and ``states``: one per candidate, each with
        ``index``, ``label``, ``n_iter``, ``lower_bound``, ``lower_bounds``,
        ``converged`` and ``active``.
        """

    def passes_read(self, passes: dict[str, float]) -> None:
        """The fit is done: it read the data this many times, by phase (``'survey'``,
        ``'init'``, ``'em'``, ``'criteria'``, ``'verify'``; chunk reads divided by the
        number of chunks)."""

    def fit_finished(self) -> None:
        """The fit is done (also after an error)."""


@contextlib.contextmanager
def observe(*observers: Any) -> Iterator[None]:
    """Make ``observers`` receive the events of fits run inside the ``with`` block."""
    token = _OBSERVERS.set(_OBSERVERS.get() + observers)
    try:
        yield
    finally:
        _OBSERVERS.reset(token)


def active() -> tuple[Any, ...]:
    """The observers active in this context."""
    return _OBSERVERS.get()


def wants(event: str) -> bool:
    """Whether an active observer implements ``event``."""
    return any(getattr(o, event, None) is not None for o in _OBSERVERS.get())


def notify(event: str, *args: Any) -> None:
    """Call ``event(*args)`` on every active observer that implements it."""
    for observer in _OBSERVERS.get():
        method = getattr(observer, event, None)
        if method is not None:
            method(*args)


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """No observer hears the fits run inside the ``with`` block (work on a sample in
    memory that is part of a fit's start, not of its passes)."""
    token = _OBSERVERS.set(())
    try:
        yield
    finally:
        _OBSERVERS.reset(token)
