"""``BaseMixture``: the estimator surface shared by daskgmm's mixtures.

Validation, the fit (initialisation, checkpoints, the EM driver, the choice among
restarts), prediction and scoring (lazy for Dask input), ``to_sklearn`` and the state dict
that saved models are made of. A mixture subclass supplies its EM model and a few hooks:

``_make_model(n_features)``
    the :class:`~daskgmm.engine.em.MixtureModel` of one candidate;
``_set_attributes(state)`` / ``_state_from_attributes()``
    between a model state and the fitted attributes;
``_components()``
    the Gaussian components prediction evaluates;
``_n_parameters()``
    free parameters (for BIC/AIC).
Optional: ``_check_initial_parameters``, ``_prepare`` (a pass before the initialisation,
e.g. the Bayesian mixture's priors), ``_with_user_init``, ``_checkpoint_config``.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from numbers import Integral, Real
from typing import Any, ClassVar

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from daskgmm.diagnostics import observers
from daskgmm.engine import estep
from daskgmm.engine.em import (
    Candidate,
    EMOptions,
    FitInfo,
    best_candidate,
    run_em,
)
from daskgmm.engine.initialize import Group, initial_states
from daskgmm.engine.passes import RowChunks
from daskgmm.errors import (
    ArrayNamespaceError,
    CheckpointError,
    DegenerateComponentError,
    InvalidDataError,
    InvalidParameterError,
)

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
}

#: Parameters that do not change what a fit computes (a checkpoint may be resumed with
#: other values).
_RESUMABLE_WITH_OTHER = frozenset({"max_iter", "verbose", "verbose_interval", "cache",
                                   "checkpoint_dir", "checkpoint_every", "warm_start"})


def sklearn_constraints(sklearn_class: type) -> dict[str, list]:
    """scikit-learn's parameter table of ``sklearn_class`` extended with ours."""
    return {**sklearn_class._parameter_constraints, **OWN_CONSTRAINTS}


def _token(value: Any) -> Any:
    """A JSON-safe value that identifies a parameter (for checkpoint fingerprints);
    the same in every process for equal settings."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.random.RandomState):
        state = value.get_state()
        digest = hashlib.sha256(np.asarray(state[1]).tobytes()
                                + repr(state[2:]).encode()).hexdigest()
        return {"RandomState": digest}
    if isinstance(value, np.generic):
        return value.item()
    try:
        array = np.ascontiguousarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return {"type": type(value).__name__}
    return {"sha256": hashlib.sha256(array.tobytes()).hexdigest(),
            "shape": list(array.shape)}


class BaseMixture(DensityMixin, BaseEstimator):
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
        self._check_initial_parameters(n_features, chunks.data.dtype)
        out_dtype = np.dtype(chunks.data.dtype)
        info = FitInfo(self.max_iter, self._n_candidates(), chunks.n_chunks, n_samples,
                       self.algorithm, self._labels(), self.tol)
        printer = self._verbose_printer()
        with observers.observe(*([printer] if printer is not None else [])):
            observers.notify("fit_started", info)
            try:
                with chunks.cached(self.cache) as cached:
                    self._prepare(cached)
                    best = self._run(cached)
            finally:
                observers.notify("fit_finished")
        if not best.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._adopt(best, out_dtype)
        return self

    def _adopt(self, best: Candidate, dtype: np.dtype) -> None:
        """Take the fitted parameters and EM record of ``best`` (the kept restart), as
        attributes of ``dtype``."""
        self._set_attributes(best.state)
        self._cast_attributes(dtype)
        self.converged_ = best.converged
        self.n_iter_ = best.n_iter
        self.lower_bound_ = best.lower_bound if self.max_iter > 0 else -math.inf
        self.lower_bounds_ = list(best.lower_bounds)

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

    def _run(self, chunks: RowChunks) -> Candidate:
        from daskgmm.serialize.checkpoint import Checkpointer

        model = self._make_model(chunks.shape[1], self.n_components)
        options = EMOptions(self.tol, self.max_iter, self.split_every, self.dtype)
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        checkpointer = None
        if self.checkpoint_dir is not None:
            checkpointer = Checkpointer(self.checkpoint_dir, self._fingerprint(chunks),
                                        self.checkpoint_every)
            resumed = checkpointer.load(lambda index: model) if do_init else None
            if resumed is not None:
                return self._resume(chunks, resumed, options, checkpointer)
        if do_init:
            if self._needs_data_for_init():
                group = Group(model, self.n_init, check_random_state(self.random_state))
                states = initial_states(chunks, [group], self.init_params,
                                        split_every=self.split_every)[0]
                states = [self._with_user_init(s, model) for s in states]
            else:  # every restart would start from the same given parameters
                states = [self._initial_state_without_data(model)]
            start = -math.inf
        else:
            states = [self._state_from_attributes()]
            start = self.lower_bound_
        labels = self._labels()
        centre = _centre(states[0])
        candidates = [Candidate(i, model, s, centre, labels[min(i, len(labels) - 1)],
                                lower_bound=start) for i, s in enumerate(states)]
        if self.algorithm != "batch":
            self._run_stepwise(chunks, candidates, options, checkpointer, None)
        else:
            run_em(chunks, candidates, options, record_digest=checkpointer is not None,
                   callback=checkpointer)
        return best_candidate(candidates, self.max_iter)

    def _stepwise_options(self, seed: int | None = None) -> Any:
        from daskgmm.engine.stepwise import StepwiseOptions, default_batch_chunks

        if seed is None:
            rs = self.random_state
            seed = (int(rs) if isinstance(rs, Integral) and not isinstance(rs, bool)
                    else int(check_random_state(rs).randint(2**31 - 1)))
        return StepwiseOptions(self.algorithm, self.batch_chunks or default_batch_chunks(),
                               self.learning_decay, self.learning_offset, seed)

    def _run_stepwise(self, chunks: RowChunks, candidates: list[Candidate],
                      options: EMOptions, checkpointer: Any, resumed: Any) -> None:
        from daskgmm.engine.stepwise import run_stepwise, total_weight_of

        state = None if resumed is None else resumed.stepwise
        stepwise = self._stepwise_options(None if state is None else state.seed)
        if state is not None and stepwise.batch_chunks != state.batch_chunks:
            raise CheckpointError(
                f"the checkpoint in {self.checkpoint_dir} walks the data in groups of "
                f"{state.batch_chunks} chunks, this fit in groups of "
                f"{stepwise.batch_chunks}: set batch_chunks={state.batch_chunks} to resume, "
                "or delete the checkpoint to start afresh.")
        if state is not None:
            n_groups = -(-chunks.n_chunks // state.batch_chunks)
            if (sorted(state.order) != list(range(n_groups)) and state.position > 0) or any(
                    len(row) != n_groups for row in state.groups):
                raise CheckpointError(
                    f"the checkpoint in {self.checkpoint_dir} is damaged (its groups do not "
                    "match the data's chunks); delete it to start afresh.")
            checkpointer.verify_chunks(chunks, state.digests, self.split_every)
        run_stepwise(chunks, candidates, options, stepwise, state=state,
                     callback=checkpointer, total_weight=total_weight_of(chunks),
                     record_digests=checkpointer is not None)

    def _resume(self, chunks: RowChunks, resumed: Any, options: EMOptions,
                checkpointer: Any) -> Candidate:
        if resumed.iteration > self.max_iter:
            raise CheckpointError(
                f"the checkpoint in {self.checkpoint_dir} is at iteration "
                f"{resumed.iteration}, beyond max_iter={self.max_iter}; raise max_iter to "
                "at least that to resume, or delete the checkpoint to start afresh."
            )
        candidates = resumed.candidates
        if self.algorithm != "batch":
            self._run_stepwise(chunks, candidates, options, checkpointer, resumed)
            return best_candidate(candidates, self.max_iter)
        if any(c.active for c in candidates) and resumed.iteration < self.max_iter:
            run_em(chunks, candidates, options, start_iteration=resumed.iteration,
                   expected_digest=resumed.digest, callback=checkpointer)
        else:
            checkpointer.verify_data(chunks, resumed.digest, self.split_every)
        return best_candidate(candidates, self.max_iter)

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
        from daskgmm.engine.stats import scale
        from daskgmm.engine.stepwise import (
            canonical_statistics,
            m_step_canonical,
            online_step,
        )

        self._validate_params()
        first = not hasattr(self, "_stream")
        if not first:
            check_is_fitted(self)
        self._sample_dim = sample_dim if sample_dim is not None else getattr(
            self, "_sample_dim", None)
        chunks = self._chunks(X, reset=first, sample_weight=sample_weight)
        n_samples, n_features = chunks.shape
        model = self._make_model(n_features, self.n_components)
        if first:
            if n_samples < self.n_components:
                raise InvalidDataError(
                    f"Expected n_samples >= n_components in the first batch but got "
                    f"n_components = {self.n_components}, n_samples = {n_samples}")
            self._check_initial_parameters(n_features, chunks.data.dtype)
            self._prepare(chunks)
            model = self._make_model(n_features, self.n_components)
            group = Group(model, 1, check_random_state(self.random_state))
            state = initial_states(chunks, [group], self.init_params,
                                   split_every=self.split_every)[0][0]
            state = self._with_user_init(state, model)
            self._stream = {"centre": _centre(state), "running": None, "updates": 0,
                            "weight": 0.0}
            self.lower_bounds_ = []
        else:
            state = self._state_from_attributes()
        stream = self._stream
        candidate = Candidate(0, model, state, stream["centre"])
        plan = estep.make_plan([model.components(state)], [stream["centre"]],
                               dtype=self.dtype, entropy=True)
        fresh = chunks.map_reduce(estep.estep_statistics, plan,
                                  split_every=self.split_every, kind="group").stats[0]
        stream["running"] = online_step(stream["running"],
                                        canonical_statistics(fresh, candidate),
                                        stream["updates"], self.learning_decay,
                                        self.learning_offset)
        stream["updates"] += 1
        stream["weight"] += float(fresh["n"])
        m_step_canonical(candidate, scale(stream["running"], stream["weight"]))
        self._set_attributes(candidate.state)
        self._cast_attributes(np.dtype(chunks.data.dtype))
        self.n_iter_ = stream["updates"]
        self.lower_bound_ = float(fresh["ll"] / fresh["n"])
        self.lower_bounds_ = [*self.lower_bounds_, self.lower_bound_]
        self.converged_ = False
        return self

    def _fingerprint(self, chunks: RowChunks) -> dict[str, Any]:
        params = {k: _token(v) for k, v in sorted(self.get_params(deep=False).items())
                  if k not in _RESUMABLE_WITH_OTHER}
        n, d = chunks.shape
        bounds = hashlib.sha256(repr(chunks.row_bounds).encode()).hexdigest()
        return {
            "estimator": type(self).__name__,
            "data": {"shape": [n, d], "dtype": str(chunks.data.dtype),
                     "row_chunks": bounds, "weighted": chunks.weights is not None},
            "config": params,
        }

    def _initialize(self, X: Any, resp: Any) -> None:
        """scikit-learn's hook: the parameters of responsibilities ``resp`` (n, K) of the
        in-memory samples ``X`` (with the user's ``*_init`` values in place)."""
        from daskgmm.engine.initialize import state_from_responsibilities

        X = np.asarray(X)
        resp = np.asarray(resp)
        # As scikit-learn's: no validation; the number of components is resp's.
        self._load_user_init()
        self._prepare(RowChunks(np.asarray(X, dtype=np.float64)))
        model = self._make_model(X.shape[1], resp.shape[1])
        state = state_from_responsibilities(model, X, resp)
        self._set_attributes(self._with_user_init(state, model))

    def _check_parameters(self, X: Any) -> None:
        """scikit-learn's hook: validate the parameters against in-memory ``X`` (and
        resolve what depends on the data, e.g. the Bayesian mixture's priors)."""
        X = np.asarray(X)
        self._validate_params()
        self._check_initial_parameters(X.shape[1], X.dtype)
        self._prepare(RowChunks(np.asarray(X, dtype=np.float64)))

    def _initialize_parameters(self, X: Any, random_state: Any) -> None:
        """scikit-learn's hook: initial parameters of in-memory ``X`` (one restart)."""
        chunks = RowChunks(np.asarray(X, dtype=np.float64))
        model = self._make_model(chunks.shape[1], self.n_components)
        group = Group(model, 1, check_random_state(random_state))
        state = initial_states(chunks, [group], self.init_params,
                               split_every=self.split_every)[0][0]
        self._set_attributes(self._with_user_init(state, model))

    # -- hooks with defaults -----------------------------------------------------------
    def _check_initial_parameters(self, n_features: int, dtype: np.dtype) -> None:
        """Validate parameters against the data's shape (before any pass)."""

    def _load_user_init(self) -> None:
        """Take the user's initial values as they are (no validation)."""

    def _prepare(self, chunks: RowChunks) -> None:
        """Passes needed before the initialisation (none by default)."""

    def _needs_data_for_init(self) -> bool:
        return True

    def _initial_state_without_data(self, model: Any) -> Any:  # pragma: no cover
        raise NotImplementedError

    def _with_user_init(self, state: Any, model: Any) -> Any:
        return state

    def _n_candidates(self) -> int:
        return self.n_init if not (self.warm_start and hasattr(self, "converged_")) else 1

    def _labels(self) -> list[str]:
        base = f"K={self.n_components} {self.covariance_type}"
        return [f"{base} #{i}" for i in range(self._n_candidates())]

    def _verbose_printer(self) -> Any:
        if not self.verbose:
            return None
        from daskgmm.models._verbose import VerbosePrinter

        return VerbosePrinter(self.verbose, self.verbose_interval)

    # ----------------------------------------------------------------------------------
    # prediction
    # ----------------------------------------------------------------------------------
    def _plan(self) -> estep.EStepPlan:
        components = self._components()
        return estep.make_plan([components], _centre(components))

    def _out_dtype(self, X_dtype: np.dtype) -> str:
        return str(np.result_type(X_dtype, np.asarray(self.means_).dtype))

    def predict(self, X: Any, *, sample_dim: str | None = None) -> Any:
        """Most probable component of each sample (int64): lazy for Dask input, a Series
        or DataArray with the input's index for DataFrame or DataArray input."""
        chunks, wrap = self._fitted_chunks(X, sample_dim)
        return wrap.labels(chunks.map_rows(estep.predict_block, self._plan(),
                                           n_columns=None, dtype=np.int64))

    def predict_proba(self, X: Any, *, sample_dim: str | None = None) -> Any:
        """Posterior probability of each component for each sample, shape (n, K)."""
        chunks, wrap = self._fitted_chunks(X, sample_dim)
        out = self._out_dtype(chunks.data.dtype)
        return wrap.responsibilities(chunks.map_rows(
            estep.predict_proba_block, self._plan(), out, n_columns=len(self.means_),
            dtype=out))

    def score_samples(self, X: Any, *, sample_dim: str | None = None) -> Any:
        """Log-likelihood of each sample under the model."""
        chunks, wrap = self._fitted_chunks(X, sample_dim)
        out = self._out_dtype(chunks.data.dtype)
        return wrap.scores(chunks.map_rows(estep.score_samples_block, self._plan(), out,
                                           n_columns=None, dtype=out))

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """(Weighted) mean per-sample log-likelihood of ``X`` (computed, even for Dask
        input)."""
        chunks, _ = self._fitted_chunks(X, None)
        out = self._out_dtype(chunks.data.dtype)
        scores = chunks.map_rows(estep.score_samples_block, self._plan(), out,
                                 n_columns=None, dtype=out)
        sample_weight = _as_weights(sample_weight)
        if sample_weight is None:
            value = scores.mean()
        else:
            w = sample_weight
            if isinstance(scores, da.Array):
                w = (w if isinstance(w, da.Array) else da.from_array(np.asarray(w))
                     ).rechunk((scores.chunks[0],))
            else:
                w = np.asarray(w, dtype=np.float64)
            value = (scores.astype(np.float64) * w).sum() / w.sum()
        return float(value.compute() if isinstance(value, da.Array) else value)

    def bic(self, X: Any) -> float:
        """Bayesian information criterion on ``X`` (lower is better)."""
        n = X.shape[0]
        return -2 * self.score(X) * n + self._n_parameters() * math.log(n)

    def aic(self, X: Any) -> float:
        """Akaike information criterion on ``X`` (lower is better)."""
        return -2 * self.score(X) * X.shape[0] + 2 * self._n_parameters()

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
        self._check_saveable()
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
        return SavedModel(type(self).__name__, params, fitted, arrays, notes)

    def _saved_arrays(self) -> tuple[str, ...]:
        return (*self._fitted_arrays, "lower_bounds_")

    def _extra_fitted_scalars(self) -> dict[str, Any]:
        return {}

    def _check_saveable(self) -> None:
        """Refuse to write a model whose parameters contradict its fitted arrays."""
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
        tags.input_tags.allow_nan = False
        return tags

    # ----------------------------------------------------------------------------------
    # input validation
    # ----------------------------------------------------------------------------------
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
        else:
            array = validate_data(self, array, reset=reset, dtype=[np.float64, np.float32],
                                  ensure_min_samples=2 if reset else 1)
        return RowChunks(array, self.chunk_rows, weights=_as_weights(sample_weight)), wrap

    def _fitted_chunks(self, X: Any, sample_dim: str | None) -> tuple[RowChunks, Any]:
        check_is_fitted(self)
        return self._input(X, reset=False, sample_dim=sample_dim)

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
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif n_features != self.n_features_in_:
            raise InvalidDataError(
                f"X has {n_features} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input."
            )
        return X


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


def _centre(state: Any) -> np.ndarray:
    """The weighted mean of a state's means: the centre the passes of a fit use."""
    means = np.asarray(state.means, dtype=np.float64)
    weights = getattr(state, "weights", None)
    if weights is None:
        return means.mean(axis=0)
    weights = np.asarray(weights, dtype=np.float64)
    total = weights.sum()
    return (weights @ means) / total if total > 0 else means.mean(axis=0)
