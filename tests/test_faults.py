"""Fits that lose a worker: the result must not change.

A real ``dask scheduler`` and two ``dask worker`` processes run on 127.0.0.1 (see
:mod:`tests.clusterproc`). A fit of a Zarr array on disk first runs undisturbed (the
reference); then the same fit runs again and, from a background thread, one worker
process is killed with ``SIGKILL`` in the middle of an EM pass (some chunks of the
pass done, the rest still to do). Distributed reschedules the lost tasks and recomputes
the results the dead worker held; because the chunk statistics are combined in a fixed
tree, the fit must end with *exactly* the reference's parameters and lower bounds.

Variants:

* ``cache=False``: every pass reads the chunks from the store;
* ``cache=True``: the chunks are persisted in worker memory for the fit; the killed
  worker held some of them (checked), which must be re-read from the store;
* with a nanny: the killed worker process is replaced by a new one during the fit.

The kill is timed with an observer (:mod:`daskgmm.diagnostics.observers`): after the third EM
iteration it waits for a few chunks of the next pass to finish, asks the killer thread
to act and blocks the driver until the worker is gone.
"""

from __future__ import annotations

import threading
import time

import dask.array as da
import numpy as np
import pytest
from numpy.testing import assert_array_equal

from daskgmm import GaussianMixture
from daskgmm.diagnostics.observers import observe
from daskgmm.io.generate import generate_mixture

from .clusterproc import ProcessCluster

distributed = pytest.importorskip("distributed")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]

N_SAMPLES = 240_000
N_FEATURES = 8
CHUNK_ROWS = 6_000  # 40 chunks
MAX_ITER = 12
KILL_AFTER_ITERATION = 3
KILL_AFTER_CHUNKS = 6


@pytest.fixture(scope="module")
def zarr_path(tmp_path_factory):
    """A well-separated three-component mixture in a Zarr v3 store, 40 row chunks."""
    path = tmp_path_factory.mktemp("faults") / "mixture.zarr"
    generate_mixture(path, N_SAMPLES, N_FEATURES, 3, seed=3, chunk_rows=CHUNK_ROWS,
                     separation=6.0)
    return path


@pytest.fixture
def procs(tmp_path):
    """A scheduler process; the test starts its own workers. Everything is killed after."""
    with ProcessCluster(tmp_path / "cluster") as cluster:
        cluster.start_scheduler()
        yield cluster


def _open(zarr_path) -> da.Array:
    X = da.from_zarr(str(zarr_path), component="X")
    assert X.chunks == ((CHUNK_ROWS,) * (N_SAMPLES // CHUNK_ROWS), (N_FEATURES,))
    return X


def _estimator(cache: bool) -> GaussianMixture:
    return GaussianMixture(3, random_state=0, tol=0, max_iter=MAX_ITER, cache=cache)


class _PassCounter:
    """Counts the chunks of the current EM pass (so both runs take the same code path)."""

    def __init__(self) -> None:
        self.kind = ""
        self.done = 0
        self.iteration = 0

    def pass_started(self, kind: str, n_chunks: int) -> None:
        self.kind, self.done = kind, 0

    def chunks_done(self, count: int) -> None:
        self.done += count

    def iteration_finished(self, info) -> None:
        self.iteration = info.iteration


class _KillMidPass(_PassCounter):
    """Asks for a kill once ``after_chunks`` chunks of the pass after
    ``after_iteration`` are done, and holds the driver until it has happened."""

    def __init__(self, after_iteration: int, after_chunks: int) -> None:
        super().__init__()
        self.after_iteration = after_iteration
        self.after_chunks = after_chunks
        self.requested = threading.Event()
        self.performed = threading.Event()
        self.chunks_at_request: int | None = None

    def chunks_done(self, count: int) -> None:
        super().chunks_done(count)
        if (self.kind == "em" and self.iteration == self.after_iteration
                and self.done >= self.after_chunks and not self.requested.is_set()):
            self.chunks_at_request = self.done
            self.requested.set()
            assert self.performed.wait(timeout=30), "the killer thread did not act"


class _Killer(threading.Thread):
    """Waits for the observer's request, then SIGKILLs the worker holding the most data
    (of ``key_prefix`` if given) and waits until the scheduler has noticed."""

    def __init__(self, client, procs: ProcessCluster, observer: _KillMidPass,
                 key_prefix: str | None = None) -> None:
        super().__init__(daemon=True, name="worker-killer")
        self.client, self.procs, self.observer = client, procs, observer
        self.key_prefix = key_prefix
        self.pids = procs.worker_pids(client)
        self.victim: str | None = None
        self.victim_keys: list = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if not self.observer.requested.wait(timeout=120):
                return
            held = self.client.has_what()
            if self.key_prefix is not None:
                held = {w: [k for k in keys if self.key_prefix in str(k)]
                        for w, keys in held.items()}
            self.victim = max(sorted(held), key=lambda w: len(held[w]))
            self.victim_keys = list(held[self.victim])
            self.procs.kill_pid(self.pids[self.victim])
            deadline = time.monotonic() + 30
            while (self.victim in self.client.scheduler_info(n_workers=-1)["workers"]
                   and time.monotonic() < deadline):
                time.sleep(0.02)
        except BaseException as exc:  # reported by the test
            self.error = exc
        finally:
            self.observer.performed.set()


def _assert_identical(got: GaussianMixture, ref: GaussianMixture) -> None:
    assert_array_equal(got.means_, ref.means_)
    assert_array_equal(got.covariances_, ref.covariances_)
    assert_array_equal(got.weights_, ref.weights_)
    assert_array_equal(got.precisions_cholesky_, ref.precisions_cholesky_)
    assert got.lower_bounds_ == ref.lower_bounds_
    assert got.n_iter_ == ref.n_iter_ == MAX_ITER


def _fit_with_kill(procs: ProcessCluster, client, X: da.Array, cache: bool,
                   key_prefix: str | None = None) -> tuple[GaussianMixture, GaussianMixture,
                                                           _Killer, _KillMidPass]:
    with observe(_PassCounter()):
        reference = _estimator(cache).fit(X)
    observer = _KillMidPass(KILL_AFTER_ITERATION, KILL_AFTER_CHUNKS)
    killer = _Killer(client, procs, observer, key_prefix)
    killer.start()
    with observe(observer):
        faulted = _estimator(cache).fit(X)
    killer.join(timeout=60)
    if killer.error is not None:
        raise killer.error
    assert observer.requested.is_set(), "the fit finished before the kill was requested"
    assert killer.victim is not None
    # The kill came in the middle of pass KILL_AFTER_ITERATION + 1.
    assert observer.chunks_at_request < X.numblocks[0]
    return reference, faulted, killer, observer


@pytest.mark.parametrize("cache", [False, True], ids=["no-cache", "cache"])
def test_lost_worker_does_not_change_the_fit(procs, zarr_path, cache):
    procs.start_worker()
    procs.start_worker()
    X = _open(zarr_path)
    with distributed.Client(procs.address, timeout="20s") as client:
        procs.wait_for_workers(client, 2)
        reference, faulted, killer, _ = _fit_with_kill(
            procs, client, X, cache, key_prefix=X.name if cache else None)
        if cache:
            # The dead worker held persisted chunks; they had to be re-read from Zarr.
            assert killer.victim_keys, "the killed worker held no cached chunk"
        # No nanny: the worker stays dead and the fit finished on the other one.
        assert list(client.scheduler_info(n_workers=-1)["workers"]) != [killer.victim]
        assert len(client.scheduler_info(n_workers=-1)["workers"]) == 1
    victim_proc = [p for p in procs.processes[1:] if p.poll() is not None]
    assert len(victim_proc) == 1 and victim_proc[0].returncode == -9
    _assert_identical(faulted, reference)
    # And the fit found the mixture, not just some fixed point.
    assert np.all(np.isfinite(faulted.means_))


def test_lost_worker_replaced_by_its_nanny(procs, zarr_path):
    procs.start_worker(nanny=True)
    procs.start_worker(nanny=True)
    X = _open(zarr_path)
    with distributed.Client(procs.address, timeout="20s") as client:
        procs.wait_for_workers(client, 2)
        before = procs.worker_pids(client)
        reference, faulted, killer, _ = _fit_with_kill(procs, client, X, cache=True,
                                                       key_prefix=X.name)
        # The nanny started a new worker process in place of the killed one.
        procs.wait_for_workers(client, 2, timeout=30)
        after = procs.worker_pids(client)
    assert killer.victim not in after
    assert before[killer.victim] not in after.values()
    assert all(p.poll() is None for p in procs.processes)  # the nannies live on
    _assert_identical(faulted, reference)

