"""Passes over row-chunked data: map a kernel over the chunks, tree-reduce the results.

This is the only place that builds Dask graphs for fitting. A pass over a
:class:`RowChunks` applies ``kernel(block, row_start, *args)`` to every row chunk and
combines the per-chunk results with :func:`daskgmm.engine.kernels.add_statistics` in a tree of
fan-in ``split_every``. The same tree is used for NumPy input (evaluated in-process with
a thread pool) and for Dask input (one graph per pass, computed on whatever scheduler
is active, a ``distributed.Client`` if one exists), so the two give identical numbers for
the same chunking.

The kernel's extra arguments (the parameters of the current iteration) enter a Dask graph
as a single key each, so they are shipped to the workers once per pass rather than copied
into every task.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.callbacks import Callback
from threadpoolctl import threadpool_limits

from daskgmm.diagnostics import observers
from daskgmm.engine.kernels import add_statistics

#: Default size of one row chunk made from NumPy input or when rechunking (bytes).
DEFAULT_CHUNK_BYTES = 64 * 2**20


def tree_reduce(items: Sequence[Any], combine: Callable[..., Any], split_every: int) -> Any:
    """Reduce ``items`` with ``combine`` in a fixed tree of fan-in ``split_every``.

    The grouping depends only on ``len(items)`` and ``split_every``, so the order of the
    floating-point additions is fixed however the tasks are scheduled.
    """
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")
    level = list(items)
    if not level:
        raise ValueError("nothing to reduce: the data have no rows")
    while len(level) > 1:
        level = [
            combine(*level[i : i + split_every]) if len(level[i : i + split_every]) > 1
            else level[i]
            for i in range(0, len(level), split_every)
        ]
    return level[0]


def _active_client() -> Any:
    """The ``distributed.Client`` that ``dask.compute`` would use now, if any."""
    scheduler = dask.base.get_scheduler()
    owner = getattr(scheduler, "__self__", None)
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is a dependency
        return None
    return owner if isinstance(owner, Client) else None


def _call_with_row_start(func: Callable[..., Any], block: np.ndarray, *args: Any,
                         block_info: dict | None = None) -> Any:
    """Call ``func(block, row_start, *args)`` from inside ``map_blocks``."""
    row_start = block_info[0]["array-location"][0][0] if block_info else 0
    return func(block, row_start, *args)


def _scheduler_memory() -> int:
    """Memory the active scheduler can hold data in (bytes)."""
    client = _active_client()
    if client is not None:
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        limits = [int(w.get("memory_limit") or 0) for w in workers]
        if limits and all(limits):
            return sum(limits)
    import psutil

    return int(psutil.virtual_memory().available)


def distributed_as_completed(futures: list[Any]) -> Any:
    """``distributed.as_completed`` (imported lazily)."""
    from distributed import as_completed as _as_completed

    return _as_completed(futures)


def default_chunk_rows(n_features: int, itemsize: int = 8,
                       chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk so that one chunk holds about ``chunk_bytes``."""
    return max(1, chunk_bytes // max(1, n_features * itemsize))


class RowChunks:
    """A 2-D array split into row chunks that each hold every feature.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        The samples, shape ``(n_samples, n_features)``. Dask arrays chunked along the
        features are rechunked to full rows (lazily).
    chunk_rows : int, optional
        Rows per chunk. For Dask input, ``None`` keeps the existing row chunks; for
        NumPy input it defaults to about 64 MiB per chunk (split further so that every
        core gets work).
    """

    def __init__(self, data: np.ndarray | da.Array, chunk_rows: int | None = None) -> None:
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
                chunk_rows = default_chunk_rows(d, data.dtype.itemsize)
                chunk_rows = min(chunk_rows, max(1024, math.ceil(n / (os.cpu_count() or 1))))
            bounds = np.array([*range(0, n, chunk_rows), n]) if n else np.array([0])
        self.data = data
        self.row_bounds: list[tuple[int, int]] = [
            (int(a), int(b)) for a, b in itertools.pairwise(bounds)
        ]
        self.shape = (int(n), int(d))

    @property
    def n_chunks(self) -> int:
        """Number of row chunks."""
        return len(self.row_bounds)

    def map_reduce(self, kernel: Callable[..., Any], *args: Any, split_every: int = 8,
                   combine: Callable[..., Any] = add_statistics, kind: str = "pass") -> Any:
        """One pass: ``combine`` over chunks of ``kernel(block, row_start, *args)``.

        Active observers (:mod:`daskgmm.diagnostics.observers`) are told when the pass starts, as
        chunks finish, and when it ends; ``kind`` names the pass for them.
        """
        observers.notify("pass_started", kind, self.n_chunks)
        if self.is_dask:
            result = self._map_reduce_dask(kernel, args, split_every, combine)
        else:
            result = self._map_reduce_numpy(kernel, args, split_every, combine)
        observers.notify("pass_finished")
        return result

    def _map_reduce_numpy(self, kernel, args, split_every, combine):
        X = self.data

        def run(bounds: tuple[int, int]):
            return kernel(X[bounds[0] : bounds[1]], bounds[0], *args)

        workers = min(len(self.row_bounds), os.cpu_count() or 1)
        parts: list[Any] = [None] * self.n_chunks
        if workers <= 1:
            for i, bounds in enumerate(self.row_bounds):
                parts[i] = run(bounds)
                observers.notify("chunks_done", 1)
        else:
            # One BLAS thread per chunk task: the pool provides the parallelism.
            with threadpool_limits(limits=1, user_api="blas"), \
                    ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(run, b): i for i, b in enumerate(self.row_bounds)}
                for future in as_completed(futures):
                    parts[futures[future]] = future.result()
                    observers.notify("chunks_done", 1)
        return tree_reduce(parts, combine, split_every)

    def _map_reduce_dask(self, kernel, args, split_every, combine):
        blocks = self.data.to_delayed().ravel()
        # Each argument becomes one key in the graph, shared by every chunk task.
        shared = [dask.delayed(a, traverse=False) for a in args]
        kernel_d = dask.delayed(kernel, pure=True)
        parts = [
            kernel_d(block, start, *shared)
            for block, (start, _) in zip(blocks, self.row_bounds, strict=True)
        ]
        client = _active_client()
        if client is not None and observers.wants("chunks_done"):
            # Chunk results as futures, so progress can follow them; the combine tree
            # is the same as below, so the numbers are too.
            futures = client.compute(parts)
            total = tree_reduce(futures, lambda *group: client.submit(combine, *group),
                                split_every)
            for _ in distributed_as_completed(futures):
                observers.notify("chunks_done", 1)
            return total.result()
        combine_d = dask.delayed(combine, pure=True)
        total = tree_reduce(parts, lambda *group: combine_d(*group), split_every)
        if observers.wants("chunks_done"):
            leaves = {p.key for p in parts}

            def posttask(key, result, dsk, state, worker_id):
                if key in leaves:
                    observers.notify("chunks_done", 1)

            with Callback(posttask=posttask):
                (result,) = dask.compute(total)
            return result
        (result,) = dask.compute(total)
        return result

    def map_rows(self, func: Callable[..., np.ndarray], *args: Any,
                 n_columns: int | None, dtype: np.dtype | type) -> np.ndarray | da.Array:
        """Apply ``func(block, row_start, *args)`` to every chunk; lazily for Dask input.

        ``n_columns=None`` means ``func`` returns one value per row.
        """
        if not self.is_dask:
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
    def cached(self, mode: bool | str = "auto", fraction: float = 0.5) -> Iterator[RowChunks]:
        """Hold the (normalised) chunks in memory for the duration of a fit, if they fit.

        ``mode=True`` always persists a Dask array, ``False`` never does, and ``'auto'``
        does when it takes at most ``fraction`` of the memory available to the active
        scheduler (the workers' total ``memory_limit`` on a distributed cluster, the
        machine's available memory otherwise). NumPy input is already in memory.
        """
        if not self.is_dask or mode is False:
            yield self
            return
        if mode == "auto" and self.data.nbytes > fraction * _scheduler_memory():
            yield self
            return
        client = _active_client()
        persisted = self.data.persist()
        if client is not None:
            from distributed import wait

            wait(persisted)
        copy = RowChunks.__new__(RowChunks)
        copy.__dict__.update(self.__dict__, data=persisted)
        try:
            yield copy
        finally:
            del persisted, copy

    def take_rows(self, indices: np.ndarray) -> np.ndarray:
        """Gather a few rows (sorted unique indices) into memory."""
        idx = np.asarray(indices)
        if self.is_dask:
            return np.asarray(self.data[idx].compute(), dtype=np.float64)
        return np.asarray(self.data[idx], dtype=np.float64)
