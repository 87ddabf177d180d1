"""Observing a fit while it runs: passes over the chunks and EM iterations.

A fit reports to whatever observers are active in the current context::

    with observe(MyObserver()):
        gm.fit(X)

An observer implements any of the methods of :class:`FitObserver` (missing ones are
skipped). Progress displays (:mod:`daskgmm.diagnostics.progress`), checkpoints and the CLI's report
are observers; the estimator itself knows nothing about them.
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
    """What an observer may implement (every method is optional)."""

    def pass_started(self, kind: str, n_chunks: int) -> None:
        """A pass over ``n_chunks`` chunks starts; ``kind`` says what it computes
        (``'em'``, ``'kmeans'``, ``'init'``)."""

    def chunks_done(self, count: int) -> None:
        """``count`` more chunks of the current pass are done."""

    def pass_finished(self) -> None:
        """The current pass is done."""

    def iteration_finished(self, info: Any) -> None:
        """An EM iteration is done (:class:`daskgmm.engine.em.IterationInfo`)."""


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
    """Whether an active observer implements ``event`` (so it is worth tracking)."""
    return any(getattr(o, event, None) is not None for o in _OBSERVERS.get())


def notify(event: str, *args: Any) -> None:
    """Call ``event(*args)`` on every active observer that implements it."""
    for observer in _OBSERVERS.get():
        method = getattr(observer, event, None)
        if method is not None:
            method(*args)
