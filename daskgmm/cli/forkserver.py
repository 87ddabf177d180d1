"""The preload of the fork server of the command's worker processes (imported there
only, by ``multiprocessing.forkserver.set_forkserver_preload``): SIGINT stays ignored
there (as the server was started), and a worker forked after the command has exited
(Ctrl-C while the cluster starts) finds the command's semaphores gone while it unpickles
its process object: it exits without printing that traceback over the command's
one-line message (other errors print as before)."""

from __future__ import annotations

import signal
import sys
import traceback
from types import TracebackType


def _quiet_when_the_command_is_gone(kind: type[BaseException], value: BaseException,
                                    tb: TracebackType | None) -> None:
    if isinstance(value, FileNotFoundError) and any(
            frame.f_code.co_name == "__setstate__"
            and frame.f_code.co_filename.endswith("synchronize.py")
            for frame, _ in traceback.walk_tb(tb)):
        return
    sys.__excepthook__(kind, value, tb)


signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.excepthook = _quiet_when_the_command_is_gone
