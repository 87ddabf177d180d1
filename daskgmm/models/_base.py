"""``BaseMixture``: scikit-learn's estimator surface over the fit plan.

The estimators validate, describe their fit to the engine and adopt what it found; the
fit itself (survey, starts, resume, EM, the choice among restarts) is
:func:`daskgmm.engine.plan.run_plan`, which the selection sweep calls too. The two
public functions :func:`describe_fit` and :func:`adopt_fit` are how a fit is described
and adopted, by the estimator's own ``fit`` and by the selector for its candidates.

A mixture subclass supplies these hooks (abstract methods below):

``_make_model(n_features, n_components)``
    the :class:`~daskgmm.engine.em.MixtureModel` of one candidate;
``_set_attributes(state)`` / ``_state_from_attributes()``
    between a model state and the fitted attributes;
``_components()``
    the Gaussian components prediction evaluates;
``_n_parameters()``
    free parameters (for BIC/AIC);
``_check_saved_arrays(arrays, fitted)``
    why saved arrays are not a valid model of the class.

and may override: ``_check_initial_parameters`` (checks against the data's shape),
``_resolve(survey)`` with ``_needs_moments()`` (parameters that default to the data's
moments, e.g. the Bayesian mixture's priors), ``_needs_data_for_init``,
``_initial_state_without_data``, ``_with_user_init`` (user-given initial values) and
``_label``.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from abc import ABCMeta, abstractmethod
from numbers import Integral, Real
from typing import Any, ClassVar

import dask
import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from daskgmm.diagnostics import observers
from daskgmm.engine import estep
from daskgmm.engine.em import Batch, Candidate, EMOptions, EStepKernel, FitInfo, estep_kernel
from daskgmm.engine.passes import RowChunks
from daskgmm.engine.plan import FitPlan, ModelSpec, PlanResult, run_plan
from daskgmm.engine.starts import INIT_METHODS, centre_of
from daskgmm.engine.survey import Survey, survey
from daskgmm.errors import (
    ArrayNamespaceError,
    DegenerateComponentError,
    InvalidDataError,
    InvalidParameterError,
    NonFiniteDataError,
)

__all__ = ["OWN_CONSTRAINTS", "BaseMixture", "MixtureInput", "adopt_fit", "describe_fit",
           "fit_fingerprint", "parameter_token", "sklearn_constraints"]

#: daskgmm's own estimator parameters, after scikit-learn's.
OWN_CONSTRAINTS: dict[str, list] = {
    "chunk_rows": [Interval(Integral, 1, None, closed="left"), None],
    "split_every": [Interval(Integral, 2, None, closed="left")],
    "dtype": [StrOptions({"float64", "float32"})],
    "cache": [StrOptions({"auto"}), "boolean"],
    "checkpoint_dir": [str, os.PathLike, None],
    "checkpoint_every": [Interval(Integral, 1, None, closed="left")],
    "algorithm": [StrOptions({"batch", "incremental", "online"})],
    "batch_chunks": [Interval(Integral, 1, None, closed="left"), None],
    "learning_decay": [Interval(Real, 0.5, 1.0, closed="right")],
    "learning_offset": [Interval(Real, 0.0, None, closed="left")],
    "missing": [StrOptions({"error", "marginalize"})],
}

#: Parameters that do not change what a fit computes (a checkpoint may be resumed with
#: other values).
RESUMABLE_WITH_OTHER = frozenset({"max_iter", "verbose", "verbose_interval", "cache",
                                  "checkpoint_dir", "checkpoint_every", "warm_start"})


def sklearn_constraints(sklearn_class: type) -> dict[str, list]:
    """scikit-learn's parameter table of ``sklearn_class`` extended with ours (and
    daskgmm's starts for ``init_params``)."""
    return {**sklearn_class._parameter_constraints, **OWN_CONSTRAINTS,
            "init_params": [StrOptions(set(INIT_METHODS))]}


def parameter_token(value: Any) -> Any:
    """A JSON-safe value that identifies a parameter (for checkpoint fingerprints);
    the same in every process for equal settings (a ``RandomState`` instance is
    recorded as one, whatever its state)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.random.RandomState):
        # Not its state: a fit advances it, so the same instance given again after an
        # interrupted fit must still match (it only drives the starts, which a
        # checkpoint has behind it).
        return {"RandomState": "instance"}
    if isinstance(value, np.generic):
        return value.item()
    try:
        array = np.ascontiguousarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return {"type": type(value).__name__}
    return {"sha256": hashlib.sha256(array.tobytes()).hexdigest(),
            "shape": list(array.shape)}


def fit_fingerprint(estimator: str, params: dict[str, Any], chunks: RowChunks
                    ) -> dict[str, Any]:
    """What a checkpoint must match: the estimator, the data's shape, dtype, row chunks
    and weighting, and every parameter that changes what a fit computes."""
    n, d = chunks.shape
    bounds = hashlib.sha256(repr(chunks.row_bounds).encode()).hexdigest()
    return {
        "estimator": estimator,
        "data": {"shape": [n, d], "dtype": str(chunks.data.dtype), "row_chunks": bounds,
                 "weighted": chunks.weights is not None},
        "config": {k: parameter_token(v) for k, v in sorted(params.items())
                   if k not in RESUMABLE_WITH_OTHER},
    }


class MixtureInput:
    """What the estimators and the selector share around a fit: input validation,
    EM options, the algorithm, the checkpointer and verbose output."""

    # -- input validation --------------------------------------------------------------
    def _chunks(self, X: Any, *, reset: bool, sample_weight: Any = None,
                sample_dim: str | None = None) -> RowChunks:
        return self._input(X, reset=reset, sample_weight=sample_weight,
                           sample_dim=sample_dim)[0]

    def _input(self, X: Any, *, reset: bool, sample_weight: Any = None,
               sample_dim: str | None = None) -> tuple[RowChunks, Any]:
        """The validated row chunks of an input, and how to wrap per-row outputs."""
        from daskgmm.io.frames import as_array

        _refuse_other_namespaces(X)
        if sample_dim is None:
            sample_dim = getattr(self, "_sample_dim", None)
        array, wrap = as_array(X, sample_dim=sample_dim if _is_xarray(X) else None)
        if wrap.kind == "pandas" and hasattr(X, "columns"):
            # scikit-learn records the feature names of DataFrames (and checks them).
            array = X[wrap.extra["columns"]]
        if isinstance(array, da.Array):
            array = self._validate_dask(array, reset=reset)
            _check_names_like_sklearn(self, wrap, array.shape[1], reset=reset)
        else:
            array = validate_data(self, array, reset=reset, dtype=[np.float64, np.float32],
                                  ensure_min_samples=2 if reset else 1,
                                  ensure_all_finite="allow-nan")
            _refuse_nan(self, array)
        return RowChunks(array, self.chunk_rows, weights=_as_weights(sample_weight)), wrap

    def _validate_dask(self, X: da.Array, *, reset: bool) -> da.Array:
        if X.ndim != 2:
            raise InvalidDataError(
                f"Expected a 2-D array of shape (n_samples, n_features), got a {X.ndim}-D "
                f"array of shape {X.shape}. Reshape it: "
                + ("X.reshape(-1, 1) for one feature." if X.ndim < 2
                   else "X.reshape(len(X), -1) to flatten the trailing axes.")
            )
        if np.isnan(X.shape[0]):  # e.g. X[mask]: one pass over the data finds the sizes
            observers.notify("pass_started", "sizes", X.numblocks[0])
            X = X.copy().compute_chunk_sizes()  # (a copy: the caller's array is theirs)
            observers.notify("pass_finished")
        kind = X.dtype.kind
        if kind not in "biuf":
            raise InvalidDataError(
                f"Expected a numeric (integer or float) array, got dtype {X.dtype}. Convert "
                "the data with X.astype('float64') if the values are numbers."
            )
        if kind != "f" or X.dtype.itemsize not in (4, 8):
            X = X.astype(np.float64)
        n_samples, n_features = X.shape
        minimum = 2 if reset else 1
        if n_samples < minimum or n_features < 1:
            raise InvalidDataError(
                f"Found array with {n_samples} sample(s) and {n_features} feature(s) "
                f"(shape={X.shape}) while a minimum of {minimum} sample(s) and 1 feature "
                "is required."
            )
        if reset:
            self.n_features_in_ = n_features
        elif n_features != self.n_features_in_:
            raise InvalidDataError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return X

    # -- the plan's settings -----------------------------------------------------------
    def _em_options(self, max_iter: int | None = None) -> EMOptions:
        return EMOptions(self.tol, self.max_iter if max_iter is None else max_iter,
                         self.split_every, self.dtype, self.missing)

    def _algorithm(self) -> Any:
        """``algorithm(total_weight, resumed_state) -> Algorithm`` for the plan."""
        if self.algorithm == "batch":
            return _batch
        from daskgmm.engine import stepwise

        cls = stepwise.Incremental if self.algorithm == "incremental" else stepwise.Online
        directory = self.checkpoint_dir

        def make(total_weight: float, state: Any) -> Any:
            options = self._stepwise_options(None if state is None else state.seed)
            if state is not None:
                _check_stepwise_state(state, options, directory)
            return cls(options, total_weight, state)

        return make

    def _stepwise_options(self, seed: int | None = None) -> Any:
        from daskgmm.engine.stepwise import StepwiseOptions, default_batch_chunks

        if seed is None:
            rs = self.random_state
            seed = (int(rs) if isinstance(rs, Integral) and not isinstance(rs, bool)
                    else int(check_random_state(rs).randint(2**31 - 1)))
        return StepwiseOptions(self.algorithm, self.batch_chunks or default_batch_chunks(),
                               self.learning_decay, self.learning_offset, seed)

    def _checkpointer(self, chunks: RowChunks) -> Any:
        if self.checkpoint_dir is None:
            return None
        from daskgmm.serialize.checkpoint import Checkpointer

        return Checkpointer(self.checkpoint_dir, self._fingerprint(chunks),
                            self.checkpoint_every)

    def _fingerprint(self, chunks: RowChunks) -> dict[str, Any]:
        return fit_fingerprint(type(self).__name__, self.get_params(deep=False), chunks)

    def _verbose_printer(self) -> Any:
        if not self.verbose:
            return None
        from daskgmm.models._verbose import VerbosePrinter

        return VerbosePrinter(self.verbose, self.verbose_interval)

    def _run(self, chunks: RowChunks, plan: FitPlan, info: FitInfo) -> PlanResult:
        """Run ``plan`` with the observers of a fit (verbose output, and whatever the
        caller made active)."""
        printer = self._verbose_printer()
        with observers.observe(*([printer] if printer is not None else [])):
            observers.notify("fit_started", info)
            try:
                # a fit reads the data max_iter times, and once more to start
                with chunks.cached(self.cache, reads=self.max_iter + 1) as cached:
                    result = run_plan(cached, plan)
                observers.notify("passes_read", dict(result.passes))
            finally:
                observers.notify("fit_finished")
        _adopt_data(self, result)
        return result


def _refuse_nan(estimator: Any, array: np.ndarray) -> None:
    """Refuse NaN in in-memory input unless the estimator marginalises missing values
    (infinities were refused by the validation before)."""
    if getattr(estimator, "missing", "error") == "marginalize":
        return
    with np.errstate(over="ignore", invalid="ignore"):
        suspicious = np.isnan(np.sum(array))  # NaN reaches the sum (one cheap read)
    if not suspicious:
        return
    rows = np.isnan(array).any(axis=1)
    if not rows.any():
        return
    raise NonFiniteDataError(
        f"the data contain NaN: {int(rows.sum())} row(s) (first at row "
        f"{int(np.argmax(rows))}). If NaN marks missing values, pass "
        "missing='marginalize' (EM then marginalises them); otherwise remove or impute "
        "those rows.")


def _batch(total_weight: float, state: Any) -> Batch:
    return Batch()


def _check_stepwise_state(state: Any, options: Any, directory: Any) -> None:
    """Refuse a stepwise checkpoint that walks the data in other groups."""
    from daskgmm.errors import CheckpointError

    if options.batch_chunks != state.batch_chunks:
        raise CheckpointError(
            f"the checkpoint in {directory} walks the data in groups of "
            f"{state.batch_chunks} chunks, this fit in groups of {options.batch_chunks}: "
            f"set batch_chunks={state.batch_chunks} to resume, or delete the checkpoint to "
            "start afresh.")


class BaseMixture(MixtureInput, DensityMixin, BaseEstimator, metaclass=ABCMeta):
    """Shared surface of daskgmm's mixture estimators (see the module docstring)."""

    _sklearn_class: ClassVar[type]
    #: Fitted arrays (cast to float32 after a float32 fit, saved, copied to scikit-learn).
    _fitted_arrays: ClassVar[tuple[str, ...]]
    #: Other fitted attributes copied to the scikit-learn estimator.
    _fitted_other: ClassVar[tuple[str, ...]] = ()
    _fitted_scalars: ClassVar[tuple[str, ...]] = (
        "converged_", "n_iter_", "lower_bound_", "n_features_in_")

    # ----------------------------------------------------------------------------------
    # fitting
    # ----------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None, *,
            sample_dim: str | None = None) -> BaseMixture:
        """Estimate the parameters with EM.

        Parameters
        ----------
        X : array-like, dask.array.Array, pandas or dask DataFrame, or xarray.DataArray
            The samples, ``(n_samples, n_features)``. A Dask array (or a Dask-backed
            DataFrame or DataArray) is processed chunk by chunk and never loaded.
            DataFrames contribute their numeric columns.
        y : Ignored
        sample_weight : array-like, dask array or Series of shape (n_samples,), optional
            Non-negative weight of every sample; integer weights give the model of the
            data with every row repeated that many times.
        sample_dim : str, optional
            For an ``xarray.DataArray``: the sample dimension (default: its first); the
            other dimensions are the features. Remembered for ``predict``.

        Returns
        -------
        self
        """
        self._validate_params()
        self._sample_dim = sample_dim
        chunks = self._chunks(X, reset=True, sample_weight=sample_weight)
        n_samples, n_features = chunks.shape
        if n_samples < self.n_components:
            raise InvalidDataError(
                f"Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {n_samples}"
            )
        spec = describe_fit(self, n_features, chunks.data.dtype)
        plan = FitPlan([spec], self._em_options(), self._algorithm(),
                       checkpointer=self._checkpointer(chunks))
        info = FitInfo(self.max_iter, spec.n_candidates, chunks.n_chunks, n_samples,
                       self.algorithm, spec.restart_labels(), self.tol)
        result = self._run(chunks, plan, info)
        adopt_fit(self, result, 0, np.dtype(chunks.data.dtype))
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _cast_attributes(self, dtype: np.dtype) -> None:
        """Give the fitted arrays the input's dtype (float32 input: float32 attributes, as
        in scikit-learn), refusing values the dtype cannot hold."""
        limit = np.finfo(dtype).max
        for name in self._fitted_arrays:
            value = np.asarray(getattr(self, name))
            if dtype != value.dtype and np.abs(value).max(initial=0.0) > limit:
                raise DegenerateComponentError(
                    f"the fitted {name} hold values beyond the range of the data's dtype "
                    f"{dtype} (largest {np.abs(value).max():.3g}): a component is too "
                    "narrow for it. Fit float64 data, scale the data, or increase "
                    "reg_covar."
                )
            setattr(self, name, value.astype(dtype, copy=False))

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None, *,
                    sample_dim: str | None = None) -> Any:
        """Fit, then return the most probable component of each sample.

        Equals ``fit(X).predict(X)``; lazy for Dask input.
        """
        return self.fit(X, sample_weight=sample_weight, sample_dim=sample_dim).predict(X)

    def partial_fit(self, X: Any, y: Any = None, sample_weight: Any = None, *,
                    sample_dim: str | None = None) -> BaseMixture:
        """One online-EM update from a batch of samples (NumPy or Dask).

        The first call initialises the mixture from that batch (``init_params`` applied
        to it, one restart); every call then runs an E-step on the batch and updates
        per-sample running statistics with step ``(t + learning_offset) **
        -learning_decay`` (the first step replaces them), followed by an M-step on them
        scaled to the total weight seen so far. For streams of arrays arriving over time;
        see :mod:`daskgmm.engine.stepwise`. The running statistics live in the estimator
        (they are not saved with it: a loaded model starts a new stream).

        Returns
        -------
        self
        """
        from daskgmm.engine.stepwise import Stream, StreamState

        self._validate_params()
        stream = getattr(self, "_stream", None)
        if stream is not None:
            check_is_fitted(self)
            if np.shape(self.means_)[0] != self.n_components:
                raise InvalidParameterError(
                    f"n_components is {self.n_components} but the model being updated has "
                    f"{np.shape(self.means_)[0]} components (it was changed by set_params); "
                    f"set it back with set_params(n_components={np.shape(self.means_)[0]}), "
                    "or fit afresh.")
        self._sample_dim = sample_dim if sample_dim is not None else getattr(
            self, "_sample_dim", None)
        chunks = self._chunks(X, reset=stream is None, sample_weight=sample_weight)
        n_samples, n_features = chunks.shape
        if stream is None:
            if n_samples < self.n_components:
                raise InvalidDataError(
                    f"Expected n_samples >= n_components in the first batch but got "
                    f"n_components = {self.n_components}, n_samples = {n_samples}")
            spec = describe_fit(self, n_features, chunks.data.dtype, n_init=1, warm=False)
            state = StreamState()
        else:
            spec = describe_fit(self, n_features, chunks.data.dtype, n_init=1, warm=True)
            spec.centre = stream["centre"]
            state = stream["state"]
        algorithm = Stream(state, self.learning_decay, self.learning_offset)
        plan = FitPlan([spec], self._em_options(max_iter=1),
                       lambda total, resumed: algorithm)
        result = run_plan(chunks, plan)
        best = result.best[0]
        previous = list(getattr(self, "lower_bounds_", [])) if stream is not None else []
        self._set_attributes(best.state)
        self._cast_attributes(np.dtype(chunks.data.dtype))
        self._stream = {"centre": best.centre, "state": state}
        self.n_iter_ = state.updates
        self.lower_bound_ = best.lower_bound
        self.lower_bounds_ = [*previous, best.lower_bound]
        self.converged_ = False
        _adopt_data(self, result)
        return self

    def _initialize(self, X: Any, resp: Any) -> None:
        """scikit-learn's hook: the parameters of responsibilities ``resp`` (n, K) of the
        in-memory samples ``X`` (with the user's ``*_init`` values in place)."""
        from daskgmm.engine.starts import state_from_responsibilities

        X = np.asarray(X)
        resp = np.asarray(resp)
        # As scikit-learn's: no validation; the number of components is resp's.
        self._load_user_init()
        self._resolve(_survey_in_memory(X, self._needs_moments()))
        model = self._make_model(X.shape[1], resp.shape[1])
        state = state_from_responsibilities(model, X, resp)
        self._set_attributes(self._with_user_init(state, model))

    def _check_parameters(self, X: Any) -> None:
        """scikit-learn's hook: validate the parameters against in-memory ``X`` (and
        resolve what depends on the data, e.g. the Bayesian mixture's priors)."""
        X = np.asarray(X)
        self._validate_params()
        self._check_initial_parameters(X.shape[1], X.dtype)
        self._resolve(_survey_in_memory(X, self._needs_moments()))

    def _initialize_parameters(self, X: Any, random_state: Any) -> None:
        """scikit-learn's hook: initial parameters of in-memory ``X`` (one restart)."""
        chunks = RowChunks(np.asarray(X, dtype=np.float64))
        spec = describe_fit(self, chunks.shape[1], np.dtype(np.float64), n_init=1,
                            warm=False)
        spec.random_state = check_random_state(random_state)
        plan = FitPlan([spec], self._em_options(max_iter=0))
        self._set_attributes(run_plan(chunks, plan).best[0].state)

    # -- hooks -------------------------------------------------------------------------
    @abstractmethod
    def _make_model(self, n_features: int, n_components: int) -> Any:
        """The EM model of one candidate (:class:`daskgmm.engine.em.MixtureModel`)."""

    @abstractmethod
    def _set_attributes(self, state: Any) -> None:
        """The fitted attributes from a model state."""

    @abstractmethod
    def _state_from_attributes(self) -> Any:
        """The model state of the fitted attributes."""

    @abstractmethod
    def _components(self) -> estep.Components:
        """The Gaussian components prediction evaluates."""

    @abstractmethod
    def _n_parameters(self) -> int:
        """Free parameters of the fitted model."""

    @abstractmethod
    def _check_saved_arrays(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any]
                            ) -> str | None:
        """Why a saved model's arrays are not a valid fitted model (None if they are)."""

    def _check_initial_parameters(self, n_features: int, dtype: np.dtype) -> None:
        """Validate parameters against the data's shape (before any pass)."""

    def _load_user_init(self) -> None:
        """Take the user's initial values as they are (no validation)."""

    def _needs_moments(self) -> bool:
        """Whether :meth:`_resolve` needs the data's moments."""
        return False

    def _resolve(self, survey: Survey) -> None:
        """Settle the parameters that depend on the data (from the first pass's
        survey); none by default."""

    def _needs_data_for_init(self) -> bool:
        return True

    def _initial_state_without_data(self, model: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _with_user_init(self, state: Any, model: Any) -> Any:
        return state

    def _label(self) -> str:
        return f"K={self.n_components} {self.covariance_type}"

    # ----------------------------------------------------------------------------------
    # prediction
    # ----------------------------------------------------------------------------------
    def _kernel(self) -> EStepKernel:
        """The E-step and prediction kernels (``missing`` chooses them)."""
        return estep_kernel(self.missing)

    def _plan(self) -> Any:
        components = self._components()
        return self._kernel().make_plan([components], centre_of(components))

    def _out_dtype(self, X_dtype: np.dtype) -> str:
        return str(np.result_type(X_dtype, np.asarray(self.means_).dtype))

    def predict(self, X: Any, *, sample_dim: str | None = None) -> Any:
        """Most probable component of each sample (int64): lazy for Dask input, a Series
        or DataArray with the input's index for DataFrame or DataArray input. With
        ``missing='marginalize'``, given the sample's observed values."""
        chunks, wrap = self._fitted_chunks(X, sample_dim)
        return wrap.labels(chunks.map_rows(self._kernel().predict, self._plan(),
                                           n_columns=None, dtype=np.int64))

    def predict_proba(self, X: Any, *, sample_dim: str | None = None) -> Any:
        """Posterior probability of each component for each sample, shape (n, K). With
        ``missing='marginalize'``, given the sample's observed values (a sample with
        none gets the mixture weights)."""
        chunks, wrap = self._fitted_chunks(X, sample_dim)
        out = self._out_dtype(chunks.data.dtype)
        return wrap.responsibilities(chunks.map_rows(
            self._kernel().predict_proba, self._plan(), out, n_columns=len(self.means_),
            dtype=out))

    def score_samples(self, X: Any, *, sample_dim: str | None = None) -> Any:
        """Log-likelihood of each sample under the model. With
        ``missing='marginalize'``, the log of the marginal density of the sample's
        observed values (0 for a sample with none)."""
        chunks, wrap = self._fitted_chunks(X, sample_dim)
        out = self._out_dtype(chunks.data.dtype)
        return wrap.scores(chunks.map_rows(self._kernel().score_samples, self._plan(), out,
                                           n_columns=None, dtype=out))

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """(Weighted) mean per-sample log-likelihood of ``X`` (computed, even for Dask
        input). With ``missing='marginalize'``, the observed-data log-likelihood per
        sample with at least one observed value (the samples with none count neither in
        the sum nor in the number)."""
        if sample_weight is None and self.missing != "marginalize":
            # scikit-learn's value exactly: the mean of score_samples, in its dtype.
            value = self.score_samples(X).mean()
            return float(value.compute() if isinstance(value, da.Array) else value)
        total, n = self._log_likelihood(X, sample_weight)
        return total / n

    def _log_likelihood(self, X: Any, sample_weight: Any = None) -> tuple[float, float]:
        """``(sum_i w_i log p(x_i), sum_i w_i)`` over the samples of ``X`` (with missing
        values: the observed-data log-likelihood, over the samples with at least one
        observed value)."""
        chunks, _ = self._fitted_chunks(X, None)
        out = self._out_dtype(chunks.data.dtype)
        scores = chunks.map_rows(self._kernel().score_samples, self._plan(), out,
                                 n_columns=None, dtype=out)
        w = _as_weights(sample_weight)
        if w is not None:
            if isinstance(scores, da.Array):
                w = (w if isinstance(w, da.Array) else da.from_array(np.asarray(w))
                     ).rechunk((scores.chunks[0],))
            else:
                w = np.asarray(w, dtype=np.float64)
        if self.missing == "marginalize":
            # Rows with nothing observed are left out of the number of samples.
            seen = chunks.map_rows(_has_value_block, n_columns=None, dtype=np.float64)
            w = seen if w is None else seen * w
        if w is None:
            total, n = scores.astype(np.float64).sum(), scores.shape[0]
        else:
            total, n = (scores.astype(np.float64) * w).sum(), w.sum()
        if isinstance(scores, da.Array):
            total, n = dask.compute(total, n)
        return float(total), float(n)

    def bic(self, X: Any) -> float:
        """Bayesian information criterion on ``X`` (lower is better). With
        ``missing='marginalize'``: ``-2 sum_i log p(x_i,o) + p log n``, ``n`` the samples
        with at least one observed value."""
        total, n = self._log_likelihood(X)
        return -2 * total + self._n_parameters() * math.log(n)

    def aic(self, X: Any) -> float:
        """Akaike information criterion on ``X`` (lower is better); with missing values
        from the observed-data log-likelihood, as :meth:`bic`."""
        total, _ = self._log_likelihood(X)
        return -2 * total + 2 * self._n_parameters()

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw samples from the fitted mixture (scikit-learn's sampler)."""
        return self.to_sklearn().sample(n_samples)

    # ----------------------------------------------------------------------------------
    # saving and loading: the state dict
    # ----------------------------------------------------------------------------------
    #: Parameters that may hold arrays (stored in arrays.npz).
    _array_params: ClassVar[tuple[str, ...]] = ()

    def save(self, path: Any, *, overwrite: bool = False,
             extra_metadata: dict | None = None,
             storage_options: dict | None = None) -> Any:
        """Save the fitted model to a directory (local path or URL): arrays and JSON
        metadata, never pickle. Load it back with :func:`daskgmm.load`.

        Only a daskgmm model directory (or an empty one) is ever replaced, and only with
        ``overwrite=True``. See :mod:`daskgmm.serialize.model_files` for the format.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            The model is not fitted.
        daskgmm.errors.InvalidParameterError
            ``n_components`` or ``covariance_type`` were changed after fitting (the file
            could not be loaded back): set them back or refit.
        FileExistsError
            The target exists and may not be replaced.
        """
        from daskgmm.serialize.model_files import write_model

        return write_model(self._to_saved(), path, overwrite=overwrite,
                           extra_metadata=extra_metadata, storage_options=storage_options)

    def _to_saved(self) -> Any:
        """The state dict (:class:`~daskgmm.serialize.model_files.SavedModel`)."""
        from daskgmm.serialize.model_files import SavedModel

        check_is_fitted(self)
        self._check_consistent_shapes()
        params: dict[str, Any] = {}
        notes: list[str] = []
        for name, value in self.get_params(deep=False).items():
            if name in self._array_params and value is not None:
                try:
                    params[name] = np.array(value, dtype=np.float64)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"Cannot save parameter {name!r}: it is not "
                                    f"convertible to a float64 array ({exc}).") from exc
            elif name == "random_state" and not (value is None or isinstance(
                    value, bool | Integral)):
                notes.append(
                    f"random_state was a {type(value).__name__} instance, which cannot be "
                    "saved without pickle; it was stored as null (a refit will not be "
                    "reproducible).")
                params[name] = None
            elif name == "checkpoint_dir":
                params[name] = None  # a saved model never resumes somebody's run
            elif isinstance(value, os.PathLike):
                params[name] = os.fspath(value)
            elif isinstance(value, Integral) and not isinstance(value, bool):
                params[name] = int(value)
            else:
                params[name] = value
        fitted: dict[str, Any] = {
            "converged_": bool(self.converged_), "n_iter_": int(self.n_iter_),
            "lower_bound_": float(self.lower_bound_),
            "n_features_in_": int(self.n_features_in_),
            "covariance_type": str(self.covariance_type),
            "n_components": len(np.atleast_1d(self.weights_)),
            **self._extra_fitted_scalars(),
        }
        if hasattr(self, "feature_names_in_"):
            fitted["feature_names_in_"] = [str(n) for n in self.feature_names_in_]
        arrays = {name: np.array(getattr(self, name), dtype=np.float64)
                  for name in self._saved_arrays()}
        saved = SavedModel(type(self).__name__, params, fitted, arrays, notes)
        self._check_saveable(saved)
        return saved

    def _saved_arrays(self) -> tuple[str, ...]:
        return (*self._fitted_arrays, "lower_bounds_")

    def _extra_fitted_scalars(self) -> dict[str, Any]:
        return {}

    def _check_saveable(self, saved: Any) -> None:
        """Refuse to write a model that :func:`daskgmm.load` would refuse.

        The state dict goes, in memory, through load's own checks: those of the file
        format (:func:`daskgmm.serialize.model_files.round_trip`: fitted values, finite
        arrays...) and those of the class (``_from_saved``: its parameter table, array
        shapes, weights summing to 1, covariances positive definite and matching their
        Cholesky factors, feature names...). One validation for saving and loading.
        """
        from daskgmm.errors import ModelFormatError
        from daskgmm.serialize.model_files import round_trip

        cls = type(self)
        try:
            cls._from_saved(round_trip(saved, expected_arrays=lambda name, fitted:
                                       cls._saved_array_names(fitted)),
                            "<the model being saved>")
        except ModelFormatError as exc:
            problem = getattr(exc, "problem", None) or str(exc)
            raise InvalidParameterError(
                f"Refusing to save this {cls.__name__}: daskgmm.load would refuse it "
                f"({problem}). Set back the parameters or fitted attributes that were "
                "changed after fitting, or refit, before saving."
            ) from None

    def _check_consistent_shapes(self) -> None:
        """Refuse to write a model whose parameters contradict its fitted arrays (with
        the remedy: set the parameter back)."""
        from daskgmm.engine import covariance as cov_types

        K = len(np.atleast_1d(self.weights_))
        if self.n_components != K:
            raise InvalidParameterError(
                f"n_components is {self.n_components} but the fitted model has {K} "
                f"components (it was changed after fitting); set it back with "
                f"set_params(n_components={K}) or refit before saving."
            )
        cov = cov_types.get(self.covariance_type)
        shape = cov.shape(K, self.n_features_in_)
        if np.shape(self.covariances_) != shape:
            raise InvalidParameterError(
                f"covariance_type is {self.covariance_type!r} but the fitted covariances_ "
                f"have shape {np.shape(self.covariances_)}, not {shape} (it was changed "
                "after fitting); set it back or refit before saving."
            )

    @classmethod
    def _saved_array_names(cls, fitted: dict[str, Any]) -> set[str]:
        """The arrays a saved model of this class holds (checked before reading them)."""
        return {*cls._fitted_arrays, "lower_bounds_"}

    @classmethod
    def _from_saved(cls, saved: Any, where: Any) -> BaseMixture:
        """Rebuild a fitted estimator from a checked state dict; every problem is a
        :class:`~daskgmm.errors.ModelFormatError` naming ``where``."""
        from daskgmm.serialize.model_files import failure

        defaults = cls().get_params(deep=False)
        unknown = sorted(set(saved.params) - set(defaults))
        if unknown:
            raise failure(where, f"model.json has parameters this daskgmm does not know: "
                                 f"{unknown}", "It was probably written by a newer "
                                 "daskgmm; upgrade daskgmm to load it.")
        params = dict(saved.params)
        if "checkpoint_dir" in params:
            params["checkpoint_dir"] = None  # never a path chosen by the file's author
        model = cls(**params)
        try:
            model._validate_params()
        except (TypeError, ValueError) as exc:
            raise failure(where, f"model.json holds invalid parameters ({exc})") from exc
        fitted = saved.fitted
        for key in ("n_components", "covariance_type"):
            if params.get(key, defaults[key]) != fitted[key]:
                raise failure(where, f"parameter {key} = {params.get(key)!r} contradicts "
                                     f"the fitted value {fitted[key]!r}")
        names = fitted.get("feature_names_in_")
        if names is not None and (not isinstance(names, list)
                                  or len(names) != fitted["n_features_in_"]):
            raise failure(where, "fitted feature_names_in_ is not a list of "
                                 "n_features_in_ strings")
        problem = model._check_saved_arrays(saved.arrays, fitted)
        if problem:
            raise failure(where, problem)
        for name in cls._fitted_arrays:
            setattr(model, name, saved.arrays[name])
        model.lower_bounds_ = [float(v) for v in saved.arrays["lower_bounds_"]]
        for name in cls._fitted_scalars:
            setattr(model, name, fitted[name])
        model._set_extra_fitted_scalars(fitted)
        if names is not None:
            model.feature_names_in_ = np.asarray(names, dtype=object)
        return model

    def _set_extra_fitted_scalars(self, fitted: dict[str, Any]) -> None:
        """Class-specific fitted scalars from a saved model."""

    def _check_saved_arrays(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any]
                            ) -> str | None:
        """Why a saved model's arrays are not a valid fitted model (None if they are)."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------
    # scikit-learn interop
    # ----------------------------------------------------------------------------------
    def to_sklearn(self) -> Any:
        """An equivalent fitted scikit-learn estimator."""
        check_is_fitted(self)
        names = self._sklearn_class().get_params(deep=False)
        sk = self._sklearn_class(**{p: getattr(self, p) for p in names})
        for attr in (*self._fitted_arrays, *self._fitted_scalars, *self._fitted_other,
                     "lower_bounds_", *(("feature_names_in_",)
                                        if hasattr(self, "feature_names_in_") else ())):
            setattr(sk, attr, getattr(self, attr))
        return sk

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.missing == "marginalize"
        return tags

    # ----------------------------------------------------------------------------------
    # input of a fitted model
    # ----------------------------------------------------------------------------------
    def _fitted_chunks(self, X: Any, sample_dim: str | None) -> tuple[RowChunks, Any]:
        check_is_fitted(self)
        return self._input(X, reset=False, sample_dim=sample_dim)



def _check_names_like_sklearn(estimator: Any, wrap: Any, n_features: int, *,
                              reset: bool) -> None:
    """Record (``reset``) or check the feature names of Dask input as scikit-learn does
    for pandas: a Dask DataFrame's columns become ``feature_names_in_``, and predicting
    columns of other names or in another order is refused (a Dask array has no names).
    scikit-learn's own check runs on an empty stand-in with the input's columns."""
    stand_in = (wrap.extra["meta"] if wrap.kind == "dask-dataframe"
                else np.empty((0, n_features)))
    validate_data(estimator, stand_in, reset=reset, skip_check_array=True)


def _refuse_other_namespaces(X: Any) -> None:
    """With scikit-learn's ``array_api_dispatch`` on, outputs should stay in the input's
    namespace, which daskgmm (NumPy and Dask) cannot do: refuse clearly."""
    import sklearn

    if (not sklearn.get_config().get("array_api_dispatch")
            or isinstance(X, np.ndarray | da.Array) or not hasattr(X, "__array_namespace__")):
        return
    namespace = getattr(X.__array_namespace__(), "__name__", type(X).__module__)
    if namespace.split(".")[-1] == "numpy":
        return
    raise ArrayNamespaceError(
        f"daskgmm computes with NumPy and Dask arrays, so {namespace} arrays are not "
        "supported while scikit-learn's array_api_dispatch is enabled. Convert the data "
        "with numpy.asarray(X), or disable array_api_dispatch (the data are then "
        "converted, and the outputs are NumPy arrays)."
    )


def _is_xarray(X: Any) -> bool:
    return type(X).__module__.split(".")[0] == "xarray"


def _as_weights(sample_weight: Any) -> Any:
    """Sample weights as a NumPy or Dask array (from Series too)."""
    if sample_weight is None or isinstance(sample_weight, da.Array):
        return sample_weight
    if hasattr(sample_weight, "to_dask_array"):  # a dask Series
        return sample_weight.to_dask_array(lengths=True)
    if hasattr(sample_weight, "to_numpy"):  # a pandas Series
        return sample_weight.to_numpy()
    return sample_weight


# ---------------------------------------------------------------------------------------
# describing a fit to the engine, and adopting what it found
# ---------------------------------------------------------------------------------------
def describe_fit(estimator: BaseMixture, n_features: int, dtype: Any, *,
                 n_init: int | None = None, warm: bool | None = None) -> ModelSpec:
    """The :class:`~daskgmm.engine.plan.ModelSpec` of a fit of ``estimator`` on data of
    ``n_features`` features and ``dtype`` (its parameters checked against them).

    ``n_init`` overrides the estimator's restarts; ``warm`` whether to continue from
    the fitted attributes (default: ``warm_start`` on a fitted estimator).
    """
    est = estimator
    est._check_initial_parameters(n_features, np.dtype(dtype))
    K = est.n_components
    if warm is None:
        warm = bool(est.warm_start) and hasattr(est, "converged_")

    def build(found: Survey) -> Any:
        est._resolve(found)
        return est._make_model(n_features, K)

    given = adjust = None
    start_bound = -math.inf
    if warm:
        current = est._state_from_attributes()
        given = lambda model: current  # noqa: E731
        start_bound = float(est.lower_bound_)
    elif not est._needs_data_for_init():
        given = est._initial_state_without_data
    else:
        adjust = est._with_user_init
    out_dtype = np.dtype(dtype)

    def fitted_components(best: Candidate) -> estep.Components:
        _adopt_candidate(est, best, out_dtype)
        return est._components()

    return ModelSpec(est._label(), K, build,
                     est.n_init if n_init is None else n_init,
                     check_random_state(est.random_state), est.init_params, given=given,
                     adjust=adjust, start_bound=start_bound,
                     needs_moments=est._needs_moments(),
                     fitted_components=fitted_components)


def adopt_fit(estimator: BaseMixture, result: PlanResult, index: int, dtype: Any) -> None:
    """Give ``estimator`` the parameters and EM record of model ``index``'s best restart
    in ``result`` (attributes of the data's ``dtype``), the passes the fit read and what
    it found of missing values."""
    _adopt_candidate(estimator, result.best[index], np.dtype(dtype))
    _adopt_data(estimator, result)


def _adopt_data(estimator: Any, result: PlanResult) -> None:
    """``passes_``, ``n_empty_rows_`` and ``observed_fraction_`` of a fit."""
    estimator.passes_ = dict(result.passes)
    estimator.n_empty_rows_ = float(result.survey.empty_weight)
    estimator.observed_fraction_ = float(result.survey.observed_fraction())


def _has_value_block(X: np.ndarray, row_start: int) -> np.ndarray:
    """1.0 for every row with at least one observed value, 0.0 for the others."""
    return (~np.isnan(np.asarray(X))).any(axis=1).astype(np.float64)


def _adopt_candidate(est: BaseMixture, best: Candidate, dtype: np.dtype) -> None:
    est._set_attributes(best.state)
    est._cast_attributes(dtype)
    est.converged_ = best.converged
    est.n_iter_ = best.n_iter
    est.lower_bound_ = best.lower_bound if est.max_iter > 0 else -math.inf
    est.lower_bounds_ = list(best.lower_bounds)


def _survey_in_memory(X: np.ndarray, moments: bool) -> Survey:
    """The survey of in-memory rows (scikit-learn's hooks)."""
    chunks = RowChunks(np.asarray(X, dtype=np.float64))
    return survey(chunks, indices=None, moments=moments, digest=False, split_every=8)[0]

