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
    "load": "daskgmm.persist",
    "open_array": "daskgmm.io",
    "generate_mixture": "daskgmm.generate",
    "observe": "daskgmm.observe",
}

__all__ = ["GaussianMixture", "__version__", "generate_mixture", "load", "observe",
           "open_array"]

if TYPE_CHECKING:  # pragma: no cover
    from .generate import generate_mixture
    from .io import open_array
    from .mixture import GaussianMixture
    from .observe import observe
    from .persist import load


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'daskgmm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
