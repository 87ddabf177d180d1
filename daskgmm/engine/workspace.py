"""Per-thread work buffers for the chunk kernels.

A kernel asks for named arrays of a given shape and dtype; the first request in a thread
allocates a flat buffer, later ones reuse it (growing it only when a larger shape is asked
for). The tile loops therefore allocate nothing large in steady state, which matters on
Dask workers: the nanny's ``MALLOC_TRIM_THRESHOLD_`` makes every fresh multi-MiB
temporary an ``mmap``, page faults and ``munmap``.

The buffers of a thread are overwritten by its next request of the same name, so a
kernel must not return them: results are copied into the statistics.

Every buffer starts on a 64-byte boundary (NumPy's allocations guarantee 16 bytes): a
tile's rows, whose lengths are multiples of 16 elements, then start on cache lines, and
the compiled kernels' 512-bit loads and stores do not straddle two of them. Interleaved
against 16-byte-aligned buffers, one thread, 100,000 rows: the tied kernel (D=32, K=16)
14.9 -> 12.5 ms, full (D=16, K=8) 22.6 -> 18.4 ms, float32 9.1 -> 8.3 ms, spherical (D=32,
K=32) 14.5 -> 13.7 ms.
"""

from __future__ import annotations

import math
import threading

import numpy as np

_LOCAL = threading.local()

#: Bytes every buffer's address is a multiple of.
ALIGNMENT = 64


def aligned_empty(size: int, dtype: np.dtype) -> np.ndarray:
    """An uninitialised 1-D array of ``size`` elements whose data starts at a multiple
    of :data:`ALIGNMENT` bytes."""
    raw = np.empty(size * dtype.itemsize + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + size * dtype.itemsize].view(dtype)


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
            flat = aligned_empty(max(size, 1), dtype)
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
