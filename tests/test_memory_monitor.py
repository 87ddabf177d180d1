"""The memory monitor around a fit that fails because the scheduler is gone: it must not
hold the failure back (a sample, ``client.run``, waits while the client tries to
reconnect, up to its connect timeout)."""

from __future__ import annotations

import os
import signal
import time

import pytest

from daskgmm.diagnostics.memory import MemoryMonitor

from .clusterproc import ProcessCluster

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.slow

CONNECT_TIMEOUT = 20  # seconds, as the command line's default


def test_a_failed_block_is_not_held_up_by_a_lost_scheduler(tmp_path):
    with ProcessCluster(tmp_path / "cluster") as procs:
        procs.start_scheduler()
        with distributed.Client(procs.address, timeout=CONNECT_TIMEOUT) as client:
            with pytest.raises(RuntimeError, match="the fit failed"):
                with MemoryMonitor(client, interval=0.05):
                    os.killpg(procs.processes[0].pid, signal.SIGKILL)
                    procs.processes[0].wait(timeout=30)
                    deadline = time.monotonic() + 30
                    while client.status == "running" and time.monotonic() < deadline:
                        time.sleep(0.01)
                    assert client.status != "running", "the client did not notice"
                    time.sleep(0.2)  # the sampling thread is in a sample that waits
                    t0 = time.monotonic()
                    raise RuntimeError("the fit failed")
            seconds = time.monotonic() - t0
    # Without the scheduler a sample would wait the client's whole connect timeout.
    assert seconds < CONNECT_TIMEOUT / 4, seconds
