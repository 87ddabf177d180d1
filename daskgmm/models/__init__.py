"""The estimators: scikit-learn's API over the statistics engine.

Importing this package registers every estimator class for :func:`load`.
"""

from daskgmm.models.bayesian import BayesianGaussianMixture
from daskgmm.models.gaussian import GaussianMixture
from daskgmm.models.registry import ESTIMATORS, load, model_summary, register

__all__ = ["ESTIMATORS", "BayesianGaussianMixture", "GaussianMixture", "load",
           "model_summary", "register", "save_model"]

register(BayesianGaussianMixture)


def save_model(model, path, **kwargs):
    """``model.save(path, **kwargs)`` for any daskgmm estimator (refuses others)."""
    from daskgmm.models._base import BaseMixture

    if not isinstance(model, BaseMixture):
        raise TypeError(f"save_model expects a daskgmm estimator (e.g. "
                        f"daskgmm.GaussianMixture), got {type(model).__name__}.")
    return model.save(path, **kwargs)
