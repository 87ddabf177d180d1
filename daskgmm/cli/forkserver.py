"""The preload of the fork server of the command's worker processes (imported there
only, by ``multiprocessing.forkserver.set_forkserver_preload``):

- SIGINT is ignored before the server records the handlers its children restore, so
  the workers ignore Ctrl-C (the command stops them) and the command's own process never
  has to ignore it, not even while the server starts;
- a worker forked after the command has exited (Ctrl-C while the cluster starts) finds
  the command's semaphores gone while it unpickles its process object: it exits without
  printing that traceback over the command's one-line message (other errors print as
  before)."""

from __future__ import annotations

import signal
import sys
from types import TracebackType


def _quiet_when_the_command_is_gone(kind: type[BaseException], value: BaseException,
                                    tb: TracebackType | None) -> None:
    frames = []
    while tb is not None:
        frames.append((tb.tb_frame.f_code.co_filename, tb.tb_frame.f_code.co_name))
        tb = tb.tb_next
    if isinstance(value, FileNotFoundError) and any(
            name.endswith("synchronize.py") and func == "__setstate__"
            for name, func in frames):
        return
    sys.__excepthook__(kind, value, value.__traceback__)


signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.excepthook = _quiet_when_the_command_is_gone
