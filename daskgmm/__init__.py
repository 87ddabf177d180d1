"""daskgmm: Gaussian mixture models on data larger than memory, with Dask."""

from importlib.metadata import PackageNotFoundError, version

from .mixture import GaussianMixture

try:
    __version__ = version("daskgmm")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["GaussianMixture", "__version__"]
