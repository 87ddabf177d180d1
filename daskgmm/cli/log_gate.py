"""Holding back the tracebacks that Dask's libraries log, until the command knows how
the run ended.

distributed (and tornado and asyncio under it) log errors with tracebacks of their own
when a connection is cancelled, a task is interrupted or a scheduler goes away. For a
user mistake, Ctrl-C or a lost cluster, the ``daskgmm`` command prints one line and
those tracebacks are noise; for a bug they are evidence. :func:`log_gate` holds back
every record at level ERROR or above (and every record carrying a traceback) from those
loggers while a command runs; :meth:`LogGate.release` then drops them (the run ended
with a one-line error), shows each as one ``daskgmm: note:`` line (the run succeeded:
something went wrong and was recovered from), or emits them in full (a bug).
Warnings and information pass through at once.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["LogGate", "log_gate"]

_LIBRARY_LOGGERS = ("distributed", "distributed.client", "tornado", "tornado.application",
                    "asyncio", "bokeh")


class LogGate(logging.Filter):
    """A filter that keeps the serious records of library loggers for later."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[tuple[logging.Handler, logging.LogRecord]] = []
        self._handler: logging.Handler | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.held.append((self._handler or _stderr_handler(), record))
            return False
        return True

    def release(self, how: str) -> None:
        """Let the held records go: ``'drop'``, ``'summary'`` or ``'full'``."""
        held, self.held = self.held, []
        if how == "drop":
            return
        for handler, record in held:
            if how == "full":
                handler.handle(record)
                continue
            try:
                text = record.getMessage().strip().splitlines()[0]
            except Exception:  # a record that cannot be formatted
                text = str(record.msg)
            print(f"daskgmm: note: {record.name}: {text[:300]}", file=sys.stderr,
                  flush=True)


class _Bound(logging.Filter):
    """The gate as seen from one handler (so a held record goes back to it)."""

    def __init__(self, gate: LogGate, handler: logging.Handler) -> None:
        super().__init__()
        self.gate, self.handler = gate, handler

    def filter(self, record: logging.LogRecord) -> bool:
        self.gate._handler = self.handler
        try:
            return self.gate.filter(record)
        finally:
            self.gate._handler = None


def _stderr_handler() -> logging.Handler:
    return logging.StreamHandler(sys.stderr)


@contextlib.contextmanager
def log_gate() -> Iterator[LogGate]:
    """Hold back the library loggers' errors inside the block (see the module)."""
    gate = LogGate()
    installed: list[tuple[logging.Handler, logging.Filter]] = []
    added: list[tuple[logging.Logger, logging.Handler, bool]] = []
    for name in _LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if not logger.handlers and name == "asyncio":
            handler = _stderr_handler()
            added.append((logger, handler, logger.propagate))
            logger.addHandler(handler)
            logger.propagate = False
        for handler in logger.handlers:
            bound = _Bound(gate, handler)
            handler.addFilter(bound)
            installed.append((handler, bound))
    try:
        yield gate
    finally:
        for handler, bound in installed:
            handler.removeFilter(bound)
        for logger, handler, propagate in added:
            logger.removeHandler(handler)
            logger.propagate = propagate
