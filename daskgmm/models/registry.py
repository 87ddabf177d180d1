"""The estimator classes by name, and loading a saved model back into one.

:func:`load` reads a model directory (:mod:`daskgmm.serialize.model_files` checks the
files) and rebuilds the estimator its ``model.json`` names (which checks the model). The
file layer knows nothing about estimators; estimators know nothing about files but their
state dict.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from daskgmm.models._base import BaseMixture
from daskgmm.models.gaussian import GaussianMixture
from daskgmm.serialize.model_files import FORMAT, failure, read_model

__all__ = ["ESTIMATORS", "load", "model_summary"]

#: Saved class name -> estimator class.
ESTIMATORS: dict[str, type[BaseMixture]] = {"GaussianMixture": GaussianMixture}


def register(cls: type[BaseMixture]) -> type[BaseMixture]:
    """Make saved models of ``cls`` loadable (each model module registers itself)."""
    ESTIMATORS[cls.__name__] = cls
    return cls


def _expected_arrays(path: Any) -> Any:
    def expected(class_name: str, fitted: dict[str, Any]) -> set[str]:
        cls = ESTIMATORS.get(class_name)
        if cls is None:
            raise failure(path, f"unsupported model class {class_name!r}",
                          "This daskgmm loads " + ", ".join(sorted(ESTIMATORS)) + " models.")
        return cls._saved_array_names(fitted)
    return expected


def load(path: str | os.PathLike[str], *, storage_options: dict | None = None
         ) -> BaseMixture:
    """Load a model saved by an estimator's ``save()`` (a local directory or a URL).

    Returns
    -------
    BaseMixture
        A fitted estimator (e.g. :class:`daskgmm.GaussianMixture`) whose ``predict``,
        ``predict_proba`` and ``score_samples`` give results identical, bit for bit, to
        the saved model's.

    Raises
    ------
    daskgmm.errors.ModelFormatError
        If the directory is missing, incomplete (no ``model.json``), foreign, written by
        another daskgmm version, damaged or inconsistent (checksums, shapes, non-finite
        values, covariances that are not positive definite or do not match the
        precisions, weights that are not a probability vector), or holds pickled data.
        The message names the directory, the problem and what to do.

    Notes
    -----
    Loading never runs code from the files. A loaded model carries no checkpoint
    directory, whatever the file says.
    """
    import daskgmm.models  # noqa: F401 - registers every estimator class

    where = os.fspath(path)
    saved = read_model(path, storage_options, expected_arrays=_expected_arrays(where))
    return ESTIMATORS[saved.class_name]._from_saved(saved, where)


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def model_summary(path: str | os.PathLike[str], *, max_weights: int = 12) -> str:
    """A short description of a saved model (checked as :func:`load` checks it).

    Returns
    -------
    str
        A few lines, without a trailing newline.
    """
    model = load(path)
    saved = read_model(path)
    fitted = saved.fitted
    weights = np.asarray(model.weights_)
    shown = " ".join(f"{w:.4f}" for w in weights[:max_weights])
    if len(weights) > max_weights:
        shown += f" ... ({len(weights) - max_weights} more)"
    status = "converged" if fitted["converged_"] else "did not converge"
    where = path if isinstance(path, str) and "://" in path else os.path.abspath(path)
    lines = [
        f"daskgmm model {where}",
        f"  format:        {FORMAT} v{saved.info['format_version']}, written by daskgmm "
        f"{saved.info.get('daskgmm_version', '?')} on {saved.info.get('created', '?')}",
        f"  model:         {saved.class_name}, covariance_type="
        f"{fitted['covariance_type']!r}, K={fitted['n_components']} components, "
        f"D={fitted['n_features_in_']} features",
        f"  fit:           {status} after {fitted['n_iter_']} iterations, "
        f"lower bound {fitted['lower_bound_']:.6g}",
        f"  weights:       {shown}",
    ]
    lines += [f"  note:          {note}" for note in saved.notes]
    lines += [f"  {key + ':':<14} {_format_value(value)}"
              for key, value in (saved.metadata or {}).items()]
    return "\n".join(lines)
