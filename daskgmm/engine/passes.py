"""Passes over row-chunked data: map a kernel over the chunks, tree-reduce the results.

This is the only place that builds Dask graphs for fitting. A pass over a
:class:`RowChunks` applies ``kernel(block, weights, row_start, *args)`` to every row chunk
(with the chunk's sample weights, or None) and combines the per-chunk results in a tree of
fan-in ``split_every``. The same tree is used for NumPy input (evaluated in-process by a
thread pool) and for Dask input (one graph per pass, computed on the active scheduler, a
``distributed.Client`` if one exists), so the two give identical numbers for the same
chunking.

The kernel's extra arguments (the plan of the iteration) enter a Dask graph as a single
key each, so they reach each worker once per pass rather than being copied into every
task. A pass is computed the same way whether or not anyone observes it: chunk progress
is read off the leaf tasks of the one graph that is submitted.

BLAS runs one thread per chunk task: the tasks provide the parallelism. In this process
(NumPy input, a threaded scheduler or in-process workers) a pass runs under
:func:`one_blas_thread`; a worker process applies the same limit once, at its first task
(Dask's nanny already starts workers with one BLAS thread).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.callbacks import Callback
from threadpoolctl import ThreadpoolController, threadpool_limits

from daskgmm.diagnostics import observers
from daskgmm.engine.stats import combine as combine_results
from daskgmm.engine.tree import PartialTree, tree_reduce
from daskgmm.engine.watch import ClusterWatch
from daskgmm.errors import InvalidDataError, PerformanceWarning

#: Default size of one row chunk made from NumPy input or when rechunking (bytes).
DEFAULT_CHUNK_BYTES = 64 * 2**20
#: More chunks than this make the scheduler's per-task overhead dominate a pass.
MANY_CHUNKS = 20_000
#: Chunks smaller than this (with more than a few hundred of them) waste time per task.
SMALL_CHUNK_BYTES = 1 * 2**20


def active_client() -> Any:
    """The ``distributed.Client`` that ``dask.compute`` would use now, if any."""
    scheduler = dask.base.get_scheduler()
    owner = getattr(scheduler, "__self__", None)
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    return owner if isinstance(owner, Client) else None


#: Most chunks :meth:`RowChunks.prefetch` holds in the workers' memory ahead of a pass.
PREFETCH_CHUNKS = 64
#: Arguments of a pass over prefetched chunks larger than this (pickled) are sent once.
SHARED_ARGUMENT_BYTES = 256 * 2**10
#: A task of a pass over chunks held in the workers' memory runs at most this many.
RUN_CHUNKS = 16

_BLAS_LIMITED = False


def _one_blas_thread_in_worker() -> None:
    """Limit BLAS to one thread in a Dask worker process, once (cheap afterwards)."""
    global _BLAS_LIMITED
    if _BLAS_LIMITED:
        return
    _BLAS_LIMITED = True
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return  # not in a worker: the driver's pass holds the limit
    threadpool_limits(limits=1, user_api="blas")


def _chunk_task(kernel: Callable[..., Any], block: np.ndarray, weights: np.ndarray | None,
                row_start: int, *args: Any) -> Any:
    """One chunk of a pass, as a Dask task."""
    _one_blas_thread_in_worker()
    return kernel(block, weights, row_start, *args)


def _sliced_chunk_task(kernel: Callable[..., Any], lo: int, hi: int, block: np.ndarray,
                       weights: np.ndarray | None, row_start: int, *args: Any) -> Any:
    """Rows ``lo:hi`` of a chunk held in a worker's memory, as a task (``row_start`` is
    already the first of those rows)."""
    _one_blas_thread_in_worker()
    return kernel(block[lo:hi], None if weights is None else weights[lo:hi], row_start,
                  *args)


def _run_task(kernel: Callable[..., Any], combine: Callable[..., Any], split_every: int,
              n_leaves: int, positions: Sequence[int], row_starts: Sequence[int],
              *blocks_weights_args: Any) -> dict[tuple[int, int], Any]:
    """Chunks held by one worker, as one task: their kernels, reduced into the nodes of
    the pass's tree that they complete (:class:`~daskgmm.engine.tree.PartialTree`)."""
    _one_blas_thread_in_worker()
    m = len(positions)
    blocks, weights = blocks_weights_args[:m], blocks_weights_args[m:2 * m]
    args = blocks_weights_args[2 * m:]
    tree = PartialTree(n_leaves, combine, split_every)
    for position, start, block, w in zip(positions, row_starts, blocks, weights,
                                         strict=True):
        tree.add(0, position, kernel(block, w, start, *args))
    return tree.nodes


def _itself(value: Any) -> Any:
    return value


def _pickled_size(value: Any) -> int:
    import pickle

    return len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def _call_with_row_start(func: Callable[..., Any], block: np.ndarray, *args: Any,
                         block_info: dict | None = None) -> Any:
    """Call ``func(block, row_start, *args)`` from inside ``map_blocks``."""
    _one_blas_thread_in_worker()
    row_start = block_info[0]["array-location"][0][0] if block_info else 0
    return func(block, row_start, *args)


def watched_compute(*collections: Any, each: Callable[[], Any] | None = None
                    ) -> tuple[Any, ...]:
    """``dask.compute(*collections)``; on a distributed cluster ``each()`` is called as
    each collection's result arrives, and the wait is given up (with
    :class:`~daskgmm.errors.ClusterStalledError`) when the cluster stalls."""
    client = active_client()
    if client is None:
        return dask.compute(*collections)
    from distributed import as_completed as distributed_as_completed

    futures = client.compute(list(collections))
    with ClusterWatch(client) as watch:
        for _ in watch.completed(distributed_as_completed(futures)):
            if each is not None:
                each()
        return tuple(client.gather(futures))


def _compute(collection: Any) -> Any:
    """``collection.compute()``, watched (:func:`watched_compute`)."""
    return watched_compute(collection)[0]


def worker_slots() -> list[str]:
    """The addresses of the active cluster's workers, each once per thread of it,
    interleaved (``[a, b, a, b]`` for two workers of two threads); empty without one."""
    client = active_client()
    if client is None:
        return []
    workers = client.scheduler_info(n_workers=-1)["workers"]
    threads = {address: int(info.get("nthreads") or 1)
               for address, info in sorted(workers.items())}
    slots = []
    for round_ in range(max(threads.values(), default=0)):
        slots.extend(a for a, n in threads.items() if n > round_)
    return slots


#: ``cache='auto'`` on a distributed cluster: the cache takes at most this share of the
#: workers' free memory (their ``memory_limit`` less what their processes hold now).
CLUSTER_CACHE_FRACTION = 0.5
#: ``cache='auto'`` without a cluster (the data would be loaded into this process): at
#: most this share of the machine's available memory...
LOCAL_CACHE_FRACTION = 0.25
#: ... and never more than this many bytes.
LOCAL_CACHE_BYTES = 2 * 2**30
#: ``cache='auto'`` does not cache a fit that reads the data at most this many times
#: (persisting is itself a read: it would save one read at most).
FEW_READS = 2


def _scheduler_memory() -> int:
    """Bytes a cache may take now under ``cache='auto'`` (see :meth:`RowChunks.cached`).

    On a distributed cluster whose workers all have a memory limit:
    :data:`CLUSTER_CACHE_FRACTION` of their free memory (each worker's limit less the
    memory its process holds, summed). Otherwise the data would be held in this process
    (or on workers of unknown size): :data:`LOCAL_CACHE_FRACTION` of this machine's
    available memory, at most :data:`LOCAL_CACHE_BYTES`.
    """
    client = active_client()
    if client is not None:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        limits = [int(w.get("memory_limit") or 0) for w in workers]
        if limits and all(limits):
            used = [int((w.get("metrics") or {}).get("memory") or 0) for w in workers]
            free = sum(max(0, limit - u) for limit, u in zip(limits, used, strict=True))
            return int(CLUSTER_CACHE_FRACTION * free)
    import psutil

    available = int(psutil.virtual_memory().available)
    return int(min(LOCAL_CACHE_FRACTION * available, LOCAL_CACHE_BYTES))


def _in_process_scheduler() -> bool:
    """Whether chunk tasks would run in this process (no client, or in-process workers)."""
    client = active_client()
    if client is None:
        return True
    cluster = getattr(client, "cluster", None)
    return cluster is not None and getattr(cluster, "processes", True) is False


def default_chunk_rows(n_features: int, itemsize: int = 8,
                       chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk so that one chunk holds about ``chunk_bytes``."""
    return max(1, chunk_bytes // max(1, n_features * itemsize))


#: Passes over NumPy input with fewer values than this (rows × features) run their chunks
#: one after the other in the calling thread: handing chunks to threads costs about a
#: millisecond per pass, more than a pass over so little data (a 1,797 x 64 pass of
#: scikit-learn's digits took 4 ms with a pool, 1.2 ms without).
SERIAL_VALUES = 2**18


def runs_serially(n_samples: int, n_features: int) -> bool:
    """Whether passes over NumPy input of this shape run in the calling thread
    (:data:`SERIAL_VALUES`)."""
    return n_samples * n_features < SERIAL_VALUES


def balanced_chunk_rows(n_samples: int, n_features: int, itemsize: int = 8,
                        threads: int | None = None) -> int:
    """Rows per chunk of NumPy input: chunks of at most :data:`DEFAULT_CHUNK_BYTES`, as
    many as a multiple of the cores (``threads``, default ``os.cpu_count()``), all of one
    size, at least 1,024 rows.

    A pass over NumPy input runs the chunks on a thread per core and takes as long as the
    busiest thread: 2,000,000 rows of 16 features in chunks of the largest size (524,288
    rows: three of them and one of 427,136) left one of two threads 1,048,576 rows
    against 951,424 (5% of the pass idle); four chunks of 500,000 share them evenly.
    Data whose passes run in the calling thread (:func:`runs_serially`) are one chunk:
    there every further chunk costs a kernel call and a merge of statistics and gains
    nothing."""
    if runs_serially(n_samples, n_features):
        return max(1, n_samples)
    threads = threads or os.cpu_count() or 1
    count = max(threads, math.ceil(n_samples / default_chunk_rows(n_features, itemsize)))
    count = math.ceil(count / threads) * threads
    return max(1024, math.ceil(n_samples / count))


def _check_weights(weights: Any, n: int) -> np.ndarray | da.Array:
    if isinstance(weights, da.Array):
        w = weights
    else:
        w = np.asarray(weights)
    if w.ndim != 1 or w.shape[0] != n:
        raise InvalidDataError(
            f"sample_weight must have one weight per sample, shape ({n},); got shape "
            f"{tuple(w.shape)}."
        )
    if w.dtype.kind not in "biuf":
        raise InvalidDataError(f"sample_weight must be numeric, got dtype {w.dtype}.")
    if not isinstance(w, da.Array):
        w = np.asarray(w, dtype=np.float64)
        if not (np.isfinite(w).all() and (w >= 0).all()):
            raise InvalidDataError("sample_weight must be finite and non-negative.")
        with np.errstate(over="ignore"):
            total = w.sum()
        if not total > 0:
            raise InvalidDataError("sample_weight must not be all zero.")
    return w


@dataclass(frozen=True)
class PassPart:
    """One computation of a pass that may share its reads with others
    (:meth:`RowChunks.map_reduce_many`): ``kernel(block, weights, row_start, *args)`` per
    chunk, reduced with ``combine``; ``kind`` names it for observers."""

    kernel: Callable[..., Any]
    args: tuple[Any, ...]
    combine: Callable[..., Any] = combine_results
    kind: str = "pass"


def _several_kernels(block: np.ndarray, weights: np.ndarray | None, row_start: int,
                     parts: tuple[tuple[Callable[..., Any], tuple[Any, ...]], ...]
                     ) -> tuple[Any, ...]:
    """Every part's kernel on one chunk (read once)."""
    return tuple(kernel(block, weights, row_start, *args) for kernel, args in parts)


def _combine_several(combines: tuple[Callable[..., Any], ...], *results: tuple[Any, ...]
                     ) -> tuple[Any, ...]:
    """Each part's combine over the parts' results of several chunks."""
    return tuple(combine(*items)
                 for combine, items in zip(combines, zip(*results, strict=True),
                                           strict=True))


class _OneBlasThread:
    """Context: BLAS runs one thread in this process while any pass over NumPy input
    runs (the chunk tasks provide the parallelism). Entering costs microseconds, where
    ``threadpool_limits`` lists the loaded libraries every time (about 2 ms, paid per
    pass). Nested and concurrent passes share one limit (a counter under a lock); the
    libraries' thread counts are restored when the last one leaves."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: list[tuple[Any, int]] = []
        self._libraries: list[Any] | None = None

    def _blas(self) -> list[Any]:
        # Listed once: NumPy's BLAS and SciPy's (imported with the covariance types; the
        # compiled kernels call it) are loaded by the first pass.
        if self._libraries is None:
            self._libraries = list(
                ThreadpoolController().select(user_api="blas").lib_controllers)
        return self._libraries

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._saved = [(lib, lib.num_threads) for lib in self._blas()]
                for lib, threads in self._saved:
                    if threads != 1:
                        lib.set_num_threads(1)
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0:
                for lib, threads in self._saved:
                    if threads != 1:
                        lib.set_num_threads(threads)
                self._saved = []


_ONE_BLAS_THREAD = _OneBlasThread()


def one_blas_thread() -> _OneBlasThread:
    """The process's one-BLAS-thread context (see :class:`_OneBlasThread`)."""
    return _ONE_BLAS_THREAD


@functools.cache
def _chunk_pool(workers: int) -> ThreadPoolExecutor:
    """The threads of passes over NumPy input (made once per process: starting threads
    for every pass costs about a millisecond). Chunk kernels never start passes
    themselves, so sharing the pool cannot deadlock."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="daskgmm-chunk")


class RowChunks:
    """A 2-D array split into row chunks that each hold every feature (and its weights).

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        The samples, shape ``(n_samples, n_features)``. Dask arrays chunked along the
        features are rechunked to full rows (lazily).
    chunk_rows : int, optional
        Rows per chunk. For Dask input, ``None`` keeps the existing row chunks; for
        NumPy input it defaults to about 64 MiB per chunk (split further so that every
        core gets work).
    weights : array-like of shape (n_samples,), optional
        Sample weights, NumPy or Dask; Dask weights are rechunked to the data's rows.
    """

    def __init__(self, data: np.ndarray | da.Array, chunk_rows: int | None = None,
                 weights: Any = None) -> None:
        self.is_dask = isinstance(data, da.Array)
        n, d = data.shape
        if self.is_dask:
            if chunk_rows is not None:
                data = data.rechunk({0: chunk_rows, 1: -1})
            elif len(data.chunks[1]) > 1:
                data = data.rechunk({1: -1})
            bounds = np.cumsum((0, *data.chunks[0]))
        else:
            if chunk_rows is None:
                chunk_rows = balanced_chunk_rows(n, d, data.dtype.itemsize)
            bounds = np.array([*range(0, n, chunk_rows), n]) if n else np.array([0])
        self.data = data
        self.row_bounds: list[tuple[int, int]] = [
            (int(a), int(b)) for a, b in itertools.pairwise(bounds)
        ]
        self.shape = (int(n), int(d))
        self.weights: np.ndarray | da.Array | None = None
        if weights is not None:
            w = _check_weights(weights, n)
            if self.is_dask:
                w = (w if isinstance(w, da.Array) else da.from_array(w, chunks=-1)
                     ).rechunk((data.chunks[0],)).astype(np.float64)
            elif isinstance(w, da.Array):
                w = np.asarray(w.compute(), dtype=np.float64)
                _check_weights(w, n)
            self.weights = w
        self._warn_about_chunking()

    def _warn_about_chunking(self) -> None:
        n_chunks = self.n_chunks
        itemsize = self.data.dtype.itemsize
        typical = (self.shape[0] / max(1, n_chunks)) * self.shape[1] * itemsize
        if n_chunks > MANY_CHUNKS or (n_chunks > 500 and typical < SMALL_CHUNK_BYTES):
            warnings.warn(
                f"the data are split into {n_chunks:,} chunks of about "
                f"{typical / 2**20:.2f} MiB: the per-task overhead of every pass will "
                "dominate the fit. Use larger chunks (chunk_rows, e.g. "
                f"{default_chunk_rows(self.shape[1], itemsize):,} rows for 64 MiB).",
                PerformanceWarning, stacklevel=3)

    @property
    def n_chunks(self) -> int:
        """Number of row chunks."""
        return len(self.row_bounds)

    @property
    def rereads(self) -> bool:
        """Whether a pass over these chunks reads them (False for the later
        :meth:`rows_part` of a resident group, whose rows are already in memory)."""
        return self.__dict__.get("_rereads", True)

    @property
    def total_weight(self) -> float | None:
        """Sum of the sample weights (None without weights; computed for Dask weights)."""
        if self.weights is None:
            return None
        w = self.weights
        return float(_compute(w.sum()) if isinstance(w, da.Array) else w.sum())

    def select(self, indices: Sequence[int]) -> RowChunks:
        """The chunks at ``indices`` (a group of a stepwise pass), sharing the data."""
        part = RowChunks.__new__(RowChunks)
        part.__dict__.update({k: v for k, v in self.__dict__.items()
                              if k not in ("_selected", "_loaded")})
        part.row_bounds = [self.row_bounds[i] for i in indices]
        part._selected = [int(i) for i in indices]
        if self.is_dask:  # the parent's blocks, built once for all the groups
            part.__dict__["_blocks"] = [self._blocks[i] for i in indices]
        return part

    def prefetch(self, indices: Sequence[int], slots: Sequence[str] | None = None
                 ) -> RowChunks:
        """The chunks at ``indices`` as :meth:`select` gives them, with their reads
        started now on a distributed cluster whose workers are other processes (for the
        small groups of incremental and online EM, at most 64 chunks; elsewhere, or for
        more chunks, the same as :meth:`select`).

        Chunk ``j`` of the group is read on ``slots[j % len(slots)]`` (worker addresses,
        one per worker thread: :func:`worker_slots`, by default asked of the scheduler
        now), so that the group's tasks run side by side rather than wherever the reads
        happened to land. A pass over them then submits one task per chunk, next to its
        data, and reduces the results here in the tree a graph would use (the same
        numbers, with fewer round trips to the scheduler than a graph of reads, tasks and
        combines). The chunks stay in the workers' memory until the returned object is
        dropped."""
        part = self.select(indices)
        if not self.is_dask or _in_process_scheduler() or part.n_chunks > PREFETCH_CHUNKS:
            return part
        client = active_client()
        slots = list(worker_slots() if slots is None else slots) or [None]
        loaded = []
        for j, (block, weights) in enumerate(part._blocks):
            where = slots[j % len(slots)]
            placement = ({} if where is None
                         else {"workers": [where], "allow_other_workers": True})
            loaded.append((client.compute(block, **placement),
                           None if weights is None else client.compute(weights, **placement),
                           placement))
        part.__dict__["_loaded"] = loaded
        return part

    def resident(self, indices: Sequence[int], slots: Sequence[str] | None = None
                 ) -> RowChunks:
        """The consecutive chunks at ``indices``, held in memory so that several passes
        over parts of their rows (:meth:`rows_part`) read them once: read on the workers
        on a cluster of other processes (:meth:`prefetch`), computed into this process
        otherwise (a NumPy input's chunks are views)."""
        part = self.prefetch(indices, slots)
        if not self.is_dask or "_loaded" in part.__dict__:
            return part
        blocks = dask.compute(*[block for block, _ in part._blocks])
        local = RowChunks.__new__(RowChunks)
        local.__dict__.update({k: v for k, v in part.__dict__.items()
                               if k not in ("_blocks", "_selected")})
        local.is_dask = False
        local.data = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
        if part.weights is not None:
            weights = dask.compute(*[w for _, w in part._blocks])
            local.weights = np.concatenate(weights).astype(np.float64, copy=False)
        local._origin = part.row_bounds[0][0]
        return local

    def rows_part(self, j: int, m: int, *, first: bool | None = None) -> RowChunks:
        """Part ``j`` of ``m`` of the rows of every chunk (a mini-batch of a
        :meth:`resident` group): rows ``a + (b - a) j // m`` to ``a + (b - a)(j + 1) // m``
        of each chunk ``[a, b)``. ``first`` says whether it is the first part used (the
        one that reads the chunks; default: ``j == 0``): the others read nothing anew."""
        if m == 1:
            return self
        part = RowChunks.__new__(RowChunks)
        part.__dict__.update(self.__dict__)
        bounds = [(a + (b - a) * j // m, a + (b - a) * (j + 1) // m)
                  for a, b in self.row_bounds]
        if "_loaded" in self.__dict__:
            part._slices = [(lo - a, hi - a) for (lo, hi), (a, _) in
                            zip(bounds, self.row_bounds, strict=True)]
        elif self.is_dask:
            raise ValueError("rows_part needs a resident group of chunks")
        part.row_bounds = bounds
        part._rereads = j == 0 if first is None else first
        return part

    def _map_reduce_loaded(self, loaded, kernel, args, split_every, combine, meanwhile):
        """A pass over prefetched chunks: a task per chunk, the tree reduced here."""
        from distributed import as_completed as distributed_as_completed

        client = active_client()
        slices = self.__dict__.get("_slices")
        # A large argument travels to the cluster once, as a task's result, not per task.
        args = tuple(client.submit(_itself, a, pure=False)
                     if len(self.row_bounds) > 1 and _pickled_size(a) > SHARED_ARGUMENT_BYTES
                     else a for a in args)
        futures = []
        for i, ((block, weights, placement), (start, _)) in enumerate(
                zip(loaded, self.row_bounds, strict=True)):
            task = (functools.partial(_chunk_task, kernel) if slices is None
                    else functools.partial(_sliced_chunk_task, kernel, *slices[i]))
            futures.append(client.submit(task, block, weights, start, *args, pure=False,
                                         **placement))
        if meanwhile is not None:
            meanwhile()
        index = {f.key: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        with ClusterWatch(client) as watch:
            for future, result in watch.completed(
                    distributed_as_completed(futures, with_results=True)):
                results[index[future.key]] = result
                observers.notify("chunks_done", 1)
        return tree_reduce(results, combine, split_every)

    @functools.cached_property
    def _blocks(self) -> list[tuple[Any, Any]]:
        blocks = self.data.to_delayed().ravel()
        weights: Sequence[Any] = [None] * len(blocks)
        if self.weights is not None:
            weights = self.weights.to_delayed().ravel()
        pairs = list(zip(blocks, weights, strict=True))
        selected = self.__dict__.get("_selected")
        return pairs if selected is None else [pairs[i] for i in selected]

    def map_reduce(self, kernel: Callable[..., Any], *args: Any, split_every: int = 8,
                   combine: Callable[..., Any] = combine_results, kind: str = "pass",
                   meanwhile: Callable[[], Any] | None = None) -> Any:
        """One pass: ``combine`` over chunks of ``kernel(block, weights, row_start, *args)``.

        Active observers (:mod:`daskgmm.diagnostics.observers`) are told when the pass
        starts, as chunks finish, and when it ends; ``kind`` names the pass for them.
        ``meanwhile`` is called once while the pass runs on a cluster, after its tasks
        were submitted (so that work it submits, such as :meth:`prefetch`, queues behind
        them); elsewhere before the pass.
        """
        observers.notify("pass_started", kind, self.n_chunks)
        loaded = self.__dict__.get("_loaded")  # set by prefetch, on a cluster only
        if loaded is not None:
            result = self._map_reduce_loaded(loaded, kernel, args, split_every, combine,
                                             meanwhile)
        else:
            if meanwhile is not None:
                meanwhile()
            if self.is_dask:
                result = self._map_reduce_dask(kernel, args, split_every, combine)
            else:
                result = self._map_reduce_numpy(kernel, args, split_every, combine)
        observers.notify("pass_finished")
        return result

    def map_reduce_many(self, parts: Sequence[PassPart], *, split_every: int = 8,
                        kind: str | None = None,
                        meanwhile: Callable[[], Any] | None = None) -> list[Any]:
        """Several passes' computations in one read of every chunk: the result of each
        part, as :meth:`map_reduce` would return it (the same numbers: every part sees
        the same chunks and the same reduction tree). ``kind`` defaults to the first
        part's; ``meanwhile`` as for :meth:`map_reduce`."""
        if not parts:
            raise ValueError("a pass needs at least one part")
        kind = parts[0].kind if kind is None else kind
        if len(parts) == 1:
            p = parts[0]
            return [self.map_reduce(p.kernel, *p.args, split_every=split_every,
                                    combine=p.combine, kind=kind, meanwhile=meanwhile)]
        kernels = tuple((p.kernel, tuple(p.args)) for p in parts)
        combine = functools.partial(_combine_several, tuple(p.combine for p in parts))
        return list(self.map_reduce(_several_kernels, kernels, split_every=split_every,
                                    combine=combine, kind=kind, meanwhile=meanwhile))

    def _map_reduce_numpy(self, kernel, args, split_every, combine):
        X, W = self.data, self.weights
        origin = self.__dict__.get("_origin", 0)  # the first row of a resident group

        def run(bounds: tuple[int, int]):
            a, b = bounds
            lo, hi = a - origin, b - origin
            return kernel(X[lo:hi], None if W is None else W[lo:hi], a, *args)

        workers = min(len(self.row_bounds), os.cpu_count() or 1)
        if runs_serially(*self.shape):
            workers = 1
        parts: list[Any] = [None] * self.n_chunks
        with one_blas_thread():
            if workers <= 1:
                for i, bounds in enumerate(self.row_bounds):
                    parts[i] = run(bounds)
                    observers.notify("chunks_done", 1)
            else:
                pool = _chunk_pool(os.cpu_count() or 1)
                futures = {pool.submit(run, b): i for i, b in enumerate(self.row_bounds)}
                try:
                    for future in as_completed(futures):
                        parts[futures[future]] = future.result()
                        observers.notify("chunks_done", 1)
                finally:
                    # A failed chunk: the others still queued are not run, and none is
                    # left running after the pass.
                    for future in futures:
                        future.cancel()
                    for future in futures:
                        if not future.cancelled():
                            with contextlib.suppress(BaseException):
                                future.exception()
        if len(parts) == 1:
            return parts[0]
        return tree_reduce(parts, combine, split_every)

    def _resident_runs(self, client: Any) -> list[tuple[str, list[int], list[Any]]] | None:
        """Where the chunks are held in the workers' memory (persisted; once persisting
        is done): runs of them held by one worker, at least one per thread of it and at
        most :data:`RUN_CHUNKS` chunks each, as (worker, positions, futures of the blocks
        then of the weights). None unless every chunk, and its weights, is held."""
        from dask.core import flatten
        from distributed import futures_of

        arrays = [self.data] if self.weights is None else [self.data, self.weights]
        held = {f.key: f for f in futures_of(arrays)}
        keys = [list(flatten(a.__dask_keys__())) for a in arrays]
        if not held or not all(k in held for ks in keys for k in ks):
            return None
        selected = self.__dict__.get("_selected") or range(len(keys[0]))
        futures = [[held[ks[i]] for ks in keys] for i in selected]
        with ClusterWatch(client) as watch:  # (persisting may still be under way)
            watch.wait([f for pair in futures for f in pair])
        holders = client.who_has([f for f, *_ in futures])
        by_worker: dict[str, list[int]] = {}
        for position, (block, *_) in enumerate(futures):
            where = holders.get(block.key) or ()
            if not where:
                return None
            by_worker.setdefault(where[0], []).append(position)
        threads = client.nthreads()
        by_worker = self._balanced(client, by_worker, threads, futures)
        runs = []
        for worker, positions in sorted(by_worker.items()):
            count = max(threads.get(worker, 1), math.ceil(len(positions) / RUN_CHUNKS))
            for j in range(count):
                run = positions[len(positions) * j // count:len(positions) * (j + 1) // count]
                if run:
                    blocks = [futures[p][0] for p in run]
                    weights = ([futures[p][1] for p in run] if self.weights is not None
                               else [None] * len(run))
                    runs.append((worker, run, blocks + weights))
        return runs

    def _balanced(self, client: Any, by_worker: dict[str, list[int]],
                  threads: dict[str, int], futures: list[list[Any]]
                  ) -> dict[str, list[int]]:
        """``by_worker`` with chunks moved from workers that hold more than their share
        (by threads) to ones that hold less, where a copy is already there.

        A pass takes as long as its busiest worker: 20 chunks persisted on two workers
        are often held 11 and 9, so the pass takes 11 chunk-times where 10 would do. The
        first pass that sees such an imbalance starts copying the chunks to move (a task
        on the receiving worker, one chunk each, in the background) and runs as the data
        lie; later passes over this data (the next EM iterations) use the copies that
        are ready. The copies live as long as these chunks (a fit), at most
        ``ceil(chunks / threads)`` chunks per worker. ``futures[p]`` is replaced by the
        copies for a moved position ``p``."""
        workers = [w for w in sorted(threads) if threads[w] > 0]
        if len(workers) < 2:
            return by_worker
        counts = {w: len(by_worker.get(w, ())) for w in workers}
        planned = {w: list(by_worker.get(w, ())) for w in workers}
        moves = []
        while True:
            busiest = max(workers, key=lambda w: counts[w] / threads[w])
            idlest = min(workers, key=lambda w: counts[w] / threads[w])
            if not (counts[idlest] + 1) / threads[idlest] < counts[busiest] / threads[busiest]:
                break
            position = planned[busiest].pop()
            counts[busiest] -= 1
            counts[idlest] += 1
            moves.append((position, busiest, idlest))
        if not moves:
            return by_worker
        copies = self.__dict__.setdefault("_copies", {})
        result = {w: list(p) for w, p in by_worker.items()}
        for position, source, target in moves:
            key = (futures[position][0].key, target)
            copy = copies.get(key)
            if copy is None:  # start it; this pass runs the chunk where it lies
                copies[key] = [client.submit(_itself, f, workers=[target],
                                             allow_other_workers=False, pure=False)
                               for f in futures[position]]
            elif all(c.status == "finished" for c in copy):
                result[source].remove(position)
                result.setdefault(target, []).append(position)
                futures[position] = copy
        return {w: sorted(p) for w, p in result.items() if p}

    def _map_reduce_resident(self, client, runs, kernel, args, split_every, combine):
        """A pass over chunks held in the workers' memory: one task per run of them, next
        to its data, each reducing its part of the tree; the parts merged here into the
        same tree as a graph's (the same numbers, with a few tasks instead of one per
        chunk and per combine)."""
        from distributed import as_completed as distributed_as_completed

        args = tuple(client.submit(_itself, a, pure=False)
                     if _pickled_size(a) > SHARED_ARGUMENT_BYTES else a for a in args)
        sizes = {}
        futures = []
        for worker, positions, held in runs:
            starts = [self.row_bounds[p][0] for p in positions]
            future = client.submit(_run_task, kernel, combine, split_every, self.n_chunks,
                                   positions, starts, *held, *args, workers=[worker],
                                   allow_other_workers=True, pure=False)
            sizes[future.key] = len(positions)
            futures.append(future)
        tree = PartialTree(self.n_chunks, combine, split_every)
        with ClusterWatch(client) as watch:
            for future, nodes in watch.completed(
                    distributed_as_completed(futures, with_results=True)):
                tree.merge(nodes)
                observers.notify("chunks_done", sizes[future.key])
        return tree.root()

    def _map_reduce_dask(self, kernel, args, split_every, combine):
        client = active_client()
        runs = None if client is None else self._resident_runs(client)
        if runs is not None:
            return self._map_reduce_resident(client, runs, kernel, args, split_every,
                                             combine)
        # Each argument becomes one key in the graph, shared by every chunk task.
        shared = [dask.delayed(a, traverse=False) for a in args]
        task = dask.delayed(functools.partial(_chunk_task, kernel), pure=True)
        parts = [task(block, weights, start, *shared)
                 for (block, weights), (start, _) in zip(self._blocks, self.row_bounds,
                                                         strict=True)]
        combine_d = dask.delayed(combine, pure=True)
        total = tree_reduce(parts, lambda *group: combine_d(*group), split_every)
        limit = one_blas_thread() if _in_process_scheduler() else contextlib.nullcontext()
        with limit:
            if client is None:
                leaves = {p.key for p in parts}

                def posttask(key, result, dsk, state, worker_id):
                    if key in leaves:
                        observers.notify("chunks_done", 1)

                with Callback(posttask=posttask):
                    (result,) = dask.compute(total)
                return result
            from distributed import as_completed as distributed_as_completed

            futures = client.compute([total, *parts])
            total_future, leaf_futures = futures[0], futures[1:]
            del futures
            with ClusterWatch(client) as watch:
                completed = distributed_as_completed(leaf_futures)
                del leaf_futures  # each leaf is released as soon as it has been counted
                for _ in watch.completed(completed):
                    observers.notify("chunks_done", 1)
                return watch.result(total_future)

    def map_rows(self, func: Callable[..., np.ndarray], *args: Any,
                 n_columns: int | None, dtype: np.dtype | type) -> np.ndarray | da.Array:
        """Apply ``func(block, row_start, *args)`` to every chunk; lazily for Dask input.

        ``n_columns=None`` means ``func`` returns one value per row.
        """
        if not self.is_dask:
            with one_blas_thread():
                parts = [func(self.data[a:b], a, *args) for a, b in self.row_bounds]
            return np.concatenate(parts) if len(parts) > 1 else parts[0]
        shared = [dask.delayed(a, traverse=False) for a in args]
        with_start = functools.partial(_call_with_row_start, func)
        if n_columns is None:
            return self.data.map_blocks(with_start, *shared, drop_axis=1, dtype=dtype,
                                        meta=np.empty((0,), dtype=dtype))
        return self.data.map_blocks(
            with_start, *shared, chunks=(self.data.chunks[0], (n_columns,)), dtype=dtype,
            meta=np.empty((0, 0), dtype=dtype),
        )

    @contextlib.contextmanager
    def cached(self, mode: bool | str = "auto", *, reads: int | None = None
               ) -> Iterator[RowChunks]:
        """Hold the (normalised) chunks in memory for the duration of a fit.

        ``mode=True`` always persists a Dask array and ``False`` never does. ``'auto'``
        persists it only when that saves reads and takes a modest share of the memory
        free now:

        * not for a fit that reads the data at most :data:`FEW_READS` (2) times
          (``reads``: the passes the caller expects, e.g. ``max_iter + 1``; None means
          many): persisting is a read itself, so it would save one read at most, at the
          price of holding all the data;
        * on a distributed cluster, when the data take at most half
          (:data:`CLUSTER_CACHE_FRACTION`) of the workers' free memory: the sum over
          workers of ``memory_limit`` less what the worker process holds now;
        * without one (the data would be loaded into this process), when they take at
          most a quarter (:data:`LOCAL_CACHE_FRACTION`) of the machine's *available*
          memory (not its total) and at most 2 GiB (:data:`LOCAL_CACHE_BYTES`): a
          lazily read or generated array larger than that is read in every pass.

        NumPy input is already in memory.
        """
        if not self.is_dask or mode is False:
            yield self
            return
        nbytes = self.data.nbytes + (0 if self.weights is None else self.weights.nbytes)
        if mode == "auto" and ((reads is not None and reads <= FEW_READS)
                               or not nbytes <= _scheduler_memory()):
            yield self
            return
        client = active_client()
        persisted = self.data.persist()
        weights = None if self.weights is None else self.weights.persist()
        if client is not None:
            from distributed import futures_of

            with ClusterWatch(client) as watch:
                watch.wait(futures_of([persisted] if weights is None
                                      else [persisted, weights]))
        copy = RowChunks.__new__(RowChunks)
        state = {k: v for k, v in self.__dict__.items() if k not in ("_blocks", "_copies")}
        copy.__dict__.update(state, data=persisted, weights=weights)
        try:
            yield copy
        finally:
            del persisted, weights, copy

    def take_rows(self, indices: np.ndarray) -> np.ndarray:
        """Gather a few rows (sorted unique indices) into memory."""
        idx = np.asarray(indices)
        if self.is_dask:
            return np.asarray(_compute(self.data[idx]), dtype=np.float64)
        return np.asarray(self.data[idx], dtype=np.float64)

    def take_weights(self, indices: np.ndarray) -> np.ndarray | None:
        """The sample weights of a few rows (sorted unique indices), or None."""
        if self.weights is None:
            return None
        idx = np.asarray(indices)
        w = self.weights[idx]
        return np.asarray(_compute(w) if isinstance(w, da.Array) else w, dtype=np.float64)
