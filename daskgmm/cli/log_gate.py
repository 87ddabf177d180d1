"""Holding back what Dask's libraries log at ERROR, until the command knows how it ended.

For a user mistake, Ctrl-C or a lost cluster those tracebacks are noise; for a bug they
are evidence. :meth:`LogGate.release` drops them, shows each as a ``daskgmm: note:``
line (a run that succeeded) or emits them in full (a bug)."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

__all__ = ["LogGate", "log_gate"]

_LIBRARY_LOGGERS = ("distributed", "distributed.client", "tornado", "tornado.application",
                    "asyncio", "bokeh")


class LogGate:
    """Keeps the serious records of the library loggers, each with its handler."""

    def __init__(self) -> None:
        self.held: list[tuple[logging.Handler, logging.LogRecord]] = []

    def holder(self, handler: logging.Handler) -> logging.Filter:
        """The filter that holds back ``handler``'s serious records."""
        def hold(record: logging.LogRecord) -> bool:
            if record.levelno >= logging.ERROR or record.exc_info:
                self.held.append((handler, record))
                return False
            return True

        return hold  # type: ignore[return-value]  (a callable filter)

    def release(self, how: str) -> None:
        """Let the held records go: ``'drop'``, ``'summary'`` or ``'full'``."""
        held, self.held = self.held, []
        for handler, record in held if how != "drop" else ():
            if how == "full":
                handler.handle(record)
                continue
            try:
                text = record.getMessage().strip().splitlines()[0]
            except Exception:  # a record that cannot be formatted
                text = str(record.msg)
            print(f"daskgmm: note: {record.name}: {text[:300]}", file=sys.stderr,
                  flush=True)


@contextlib.contextmanager
def log_gate() -> Iterator[LogGate]:
    """Hold back the library loggers' errors inside the block (see the module)."""
    gate = LogGate()
    installed: list[tuple[logging.Handler, object]] = []
    asyncio_logger = logging.getLogger("asyncio")
    added = None if asyncio_logger.handlers else logging.StreamHandler(sys.stderr)
    if added is not None:  # asyncio prints with the last-resort handler: give it one
        asyncio_logger.addHandler(added)
        asyncio_logger.propagate = False
    for name in _LIBRARY_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            hold = gate.holder(handler)
            handler.addFilter(hold)
            installed.append((handler, hold))
    try:
        yield gate
    finally:
        for handler, hold in installed:
            handler.removeFilter(hold)
        if added is not None:
            asyncio_logger.removeHandler(added)
            asyncio_logger.propagate = True
