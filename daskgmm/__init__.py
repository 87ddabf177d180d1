"""daskgmm: Gaussian mixture models on data larger than memory, with Dask.

The public names are imported lazily, so a Dask worker that only runs the chunk kernels
(:mod:`daskgmm.kernels`, plain NumPy) does not import scikit-learn.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("daskgmm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

_LAZY = {
    "GaussianMixture": "daskgmm.mixture",
}

__all__ = ["GaussianMixture", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .mixture import GaussianMixture


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'daskgmm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
