"""Per-thread work buffers for the chunk kernels.

A kernel asks for named arrays of a given shape and dtype; the first request in a thread
allocates a flat buffer, later ones reuse it (growing it only when a larger shape is asked
for). The tile loops therefore allocate nothing large in steady state, which matters on
Dask workers: the nanny's ``MALLOC_TRIM_THRESHOLD_`` makes every fresh multi-MiB
temporary an ``mmap``, page faults and ``munmap``.

The buffers of a thread are overwritten by its next request of the same name, so a
kernel must not return them: results are copied into the statistics.
"""

from __future__ import annotations

import math
import threading

import numpy as np

_LOCAL = threading.local()


class Workspace:
    """Named reusable arrays (one instance per thread: :func:`workspace`)."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, str], np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype`` (uninitialised contents)."""
        dtype = np.dtype(dtype)
        size = math.prod(shape)
        key = (name, dtype.str)
        flat = self._buffers.get(key)
        if flat is None or flat.size < size:
            flat = np.empty(max(size, 1), dtype=dtype)
            self._buffers[key] = flat
        return flat[:size].reshape(shape)

    def nbytes(self) -> int:
        """Bytes held by this workspace."""
        return sum(b.nbytes for b in self._buffers.values())

    def clear(self) -> None:
        """Release every buffer."""
        self._buffers.clear()


def workspace() -> Workspace:
    """The calling thread's workspace."""
    ws = getattr(_LOCAL, "workspace", None)
    if ws is None:
        ws = _LOCAL.workspace = Workspace()
    return ws
