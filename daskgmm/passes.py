"""Passes over row-chunked data: map a kernel over the chunks, tree-reduce the results.

This is the only place that builds Dask graphs for fitting. A pass over a
:class:`RowChunks` applies ``kernel(block, row_start, *args)`` to every row chunk and
combines the per-chunk results with :func:`daskgmm.kernels.add_statistics` in a tree of
fan-in ``split_every``. The same tree is used for NumPy input (evaluated in-process with
a thread pool) and for Dask input (one graph per pass, computed on whatever scheduler
is active, a ``distributed.Client`` if one exists), so the two give identical numbers for
the same chunking.

The kernel's extra arguments (the parameters of the current iteration) enter a Dask graph
as a single key each, so they are shipped to the workers once per pass rather than copied
into every task.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask
import dask.array as da
import numpy as np
from threadpoolctl import threadpool_limits

from .kernels import add_statistics

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
                   combine: Callable[..., Any] = add_statistics) -> Any:
        """One pass: ``combine`` over chunks of ``kernel(block, row_start, *args)``."""
        if self.is_dask:
            return self._map_reduce_dask(kernel, args, split_every, combine)
        return self._map_reduce_numpy(kernel, args, split_every, combine)

    def _map_reduce_numpy(self, kernel, args, split_every, combine):
        X = self.data

        def run(bounds: tuple[int, int]):
            return kernel(X[bounds[0] : bounds[1]], bounds[0], *args)

        workers = min(len(self.row_bounds), os.cpu_count() or 1)
        if workers <= 1:
            parts = [run(b) for b in self.row_bounds]
        else:
            # One BLAS thread per chunk task: the pool provides the parallelism.
            with threadpool_limits(limits=1, user_api="blas"), \
                    ThreadPoolExecutor(max_workers=workers) as pool:
                parts = list(pool.map(run, self.row_bounds))
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
        combine_d = dask.delayed(combine, pure=True)
        total = tree_reduce(parts, lambda *group: combine_d(*group), split_every)
        (result,) = dask.compute(total)
        return result

    def map_rows(self, func: Callable[..., np.ndarray], *args: Any,
                 n_columns: int | None, dtype: np.dtype | type) -> np.ndarray | da.Array:
        """Apply ``func(block, *args)`` to every chunk; lazily for Dask input.

        ``n_columns=None`` means ``func`` returns one value per row.
        """
        if not self.is_dask:
            return func(self.data, *args)
        shared = [dask.delayed(a, traverse=False) for a in args]
        if n_columns is None:
            return self.data.map_blocks(func, *shared, drop_axis=1, dtype=dtype,
                                        meta=np.empty((0,), dtype=dtype))
        return self.data.map_blocks(
            func, *shared, chunks=(self.data.chunks[0], (n_columns,)), dtype=dtype,
            meta=np.empty((0, 0), dtype=dtype),
        )

    def take_rows(self, indices: np.ndarray) -> np.ndarray:
        """Gather a few rows (sorted unique indices) into memory."""
        idx = np.asarray(indices)
        if self.is_dask:
            return np.asarray(self.data[idx].compute(), dtype=np.float64)
        return np.asarray(self.data[idx], dtype=np.float64)
