"""daskgmm: Gaussian mixture models on data larger than memory, with Dask.

The public names are imported lazily, so a Dask worker that only runs the chunk kernels
(:mod:`daskgmm.engine.estep`, plain NumPy) does not import scikit-learn.
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
    "BayesianGaussianMixture": "daskgmm.models.bayesian",
    "GaussianMixture": "daskgmm.models.gaussian",
    "GaussianMixtureSelector": "daskgmm.models.selection",
    "load": "daskgmm.models.registry",
    "open_array": "daskgmm.io.readers",
    "generate_mixture": "daskgmm.io.generate",
    "observe": "daskgmm.diagnostics.observers",
}

__all__ = ["BayesianGaussianMixture", "GaussianMixture", "GaussianMixtureSelector",
           "__version__", "generate_mixture", "load", "observe", "open_array"]

if TYPE_CHECKING:  # pragma: no cover
    from daskgmm.diagnostics.observers import observe
    from daskgmm.io.generate import generate_mixture
    from daskgmm.io.readers import open_array
    from daskgmm.models.bayesian import BayesianGaussianMixture
    from daskgmm.models.gaussian import GaussianMixture
    from daskgmm.models.registry import load
    from daskgmm.models.selection import GaussianMixtureSelector


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'daskgmm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
