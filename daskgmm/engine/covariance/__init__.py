"""The covariance types, one module each, behind one registry.

``get('full')`` returns the singleton that knows everything about full covariances (see
:class:`~daskgmm.engine.covariance._base.CovarianceType` for the contract). Adding a
covariance type is one new module here that subclasses ``CovarianceType`` and calls
:func:`register`, plus its name in :data:`COVARIANCE_TYPES`.
"""

from __future__ import annotations

from daskgmm.engine.covariance._base import (
    EPS10,
    Batch,
    CovarianceType,
    register,
)
from daskgmm.engine.covariance.diag import DIAG
from daskgmm.engine.covariance.full import FULL
from daskgmm.engine.covariance.spherical import SPHERICAL
from daskgmm.engine.covariance.tied import TIED

__all__ = ["COVARIANCE_TYPES", "DIAG", "EPS10", "FULL", "SPHERICAL", "TIED", "Batch",
           "CovarianceType", "get", "register"]

#: The covariance types, in scikit-learn's order.
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


def get(name: str | CovarianceType) -> CovarianceType:
    """The covariance type called ``name`` (a type passes through)."""
    if isinstance(name, CovarianceType):
        return name
    from daskgmm.engine.covariance._base import _REGISTRY

    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown covariance_type {name!r}; expected one of "
                         f"{', '.join(COVARIANCE_TYPES)}") from None
