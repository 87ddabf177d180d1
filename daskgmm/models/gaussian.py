"""``daskgmm.GaussianMixture``: scikit-learn's estimator, fitted by out-of-core EM."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable
from numbers import Integral
from pathlib import Path
from typing import Any, ClassVar

import dask.array as da
import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as _SklearnGaussianMixture
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from daskgmm.engine import kernels
from daskgmm.engine.em import EMResult, IterationInfo, run_em
from daskgmm.engine.initialize import initial_parameters
from daskgmm.engine.params import MixtureParams
from daskgmm.engine.passes import RowChunks
from daskgmm.errors import InvalidDataError
from daskgmm.serialize import checkpoint

_SKLEARN_PARAMS = (
    "n_components", "covariance_type", "tol", "reg_covar", "max_iter", "n_init",
    "init_params", "weights_init", "means_init", "precisions_init", "random_state",
    "warm_start", "verbose", "verbose_interval",
)


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture model fitted by EM over the chunks of a (possibly huge) array.

    A drop-in for :class:`sklearn.mixture.GaussianMixture`: the same parameters, fitted
    attributes and methods, the same answers from the same initial parameters. The
    E-step runs chunk by chunk (on the active Dask scheduler for Dask input, in a thread
    pool for NumPy input); only the sufficient statistics, O(K·D²) numbers, come back to
    the driver, where the M-step runs. The data are never gathered into memory.

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
        Form of the covariance of each component.
    tol : float, default=1e-3
        Convergence threshold on the change of the mean per-sample log-likelihood.
    reg_covar : float, default=1e-6
        Non-negative regularisation added to the diagonal of the covariances.
    max_iter : int, default=100
        Number of EM iterations (passes over the data) per restart.
    n_init : int, default=1
        Number of restarts; the best is kept. Restarts share the passes over the data.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, default='kmeans'
        Initialisation method (see :mod:`daskgmm.engine.initialize`; none loads the
        data into memory).
    weights_init : array-like of shape (n_components,), default=None
        Initial weights.
    means_init : array-like of shape (n_components, n_features), default=None
        Initial means.
    precisions_init : array-like, default=None
        Initial precisions (inverse covariances), shaped as for scikit-learn.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation; with the same data and chunking the fit is reproducible.
    warm_start : bool, default=False
        Start the next ``fit`` from the current solution (``n_init`` is then ignored).
    verbose : int, default=0
        Non-zero prints one line per EM iteration (every ``verbose_interval``): the
        log-likelihood, its change and the seconds per iteration, as ``daskgmm fit`` does.
    verbose_interval : int, default=10
        Iterations between two printed lines.
    chunk_rows : int or None, default=None
        Rows per chunk. ``None`` keeps a Dask array's row chunks (rechunking only to put
        all features in one chunk) and cuts NumPy input into chunks of about 64 MiB.
    split_every : int, default=8
        Fan-in of the tree reduction of the chunk statistics.
    dtype : {'float64', 'float32'}, default='float64'
        Dtype of the E-step's products. ``'float32'`` is about twice as fast; the
        statistics are still accumulated in float64.
    cache : {'auto', True, False}, default='auto'
        Hold a Dask array in (cluster) memory during the fit so later passes skip the
        reads: ``'auto'`` does so when it takes at most half the memory available.
    checkpoint_dir : str or path, default=None
        Write a checkpoint of the EM state here every ``checkpoint_every`` iterations,
        and resume from the checkpoint found here (see :mod:`daskgmm.serialize.checkpoint`). A
        checkpoint written for other data or other settings is refused.
    checkpoint_every : int, default=1
        Iterations between two checkpoints.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
    covariances_ : ndarray
        Shape ``(K, D, D)`` for 'full', ``(D, D)`` for 'tied', ``(K, D)`` for 'diag',
        ``(K,)`` for 'spherical'.
    precisions_ : ndarray
        Inverses of ``covariances_``, same shapes.
    precisions_cholesky_ : ndarray
        Cholesky factors of the precisions, same shapes.
    converged_ : bool
    n_iter_ : int
        EM iterations of the best restart.
    lower_bound_ : float
        Mean per-sample log-likelihood of the best restart at its last iteration.
    lower_bounds_ : list of float
        The lower bound at every iteration of the best restart.
    n_features_in_ : int

    Examples
    --------
    >>> import dask.array as da
    >>> from daskgmm import GaussianMixture
    >>> X = da.random.default_rng(0).normal(size=(100_000, 4), chunks=(25_000, 4))
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> gm.means_.shape
    (2, 4)
    """

    # scikit-learn's table for its own parameters, extended with ours.
    _parameter_constraints: ClassVar[dict] = {
        **_SklearnGaussianMixture._parameter_constraints,
        "chunk_rows": [Interval(Integral, 1, None, closed="left"), None],
        "split_every": [Interval(Integral, 2, None, closed="left")],
        "dtype": [StrOptions({"float64", "float32"})],
        "cache": [StrOptions({"auto"}), "boolean"],
        "checkpoint_dir": [str, os.PathLike, None],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        n_components: int = 1,
        *,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weights_init: Any = None,
        means_init: Any = None,
        precisions_init: Any = None,
        random_state: Any = None,
        warm_start: bool = False,
        verbose: int = 0,
        verbose_interval: int = 10,
        chunk_rows: int | None = None,
        split_every: int = 8,
        dtype: str = "float64",
        cache: bool | str = "auto",
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = 1,
    ) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.chunk_rows = chunk_rows
        self.split_every = split_every
        self.dtype = dtype
        self.cache = cache
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every

    # ----------------------------------------------------------------------------------
    # fitting
    # ----------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> GaussianMixture:
        """Estimate the parameters with EM.

        Parameters
        ----------
        X : array-like or dask.array.Array of shape (n_samples, n_features)
            The samples. A Dask array is processed chunk by chunk and never loaded.
        y : Ignored

        Returns
        -------
        self : GaussianMixture
        """
        self._validate_params()
        chunks = self._chunks(X, reset=True)
        n_samples, n_features = chunks.shape
        if n_samples < self.n_components:
            raise InvalidDataError(
                f"Expected n_samples >= n_components but got n_components = "
                f"{self.n_components}, n_samples = {n_samples}"
            )
        user_init = self._checked_user_init(n_features)
        with chunks.cached(self.cache) as cached:
            result = self._run(cached, user_init)
        if not result.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        self._set_params_from(result.params)
        self.converged_ = result.converged
        self.n_iter_ = result.n_iter
        self.lower_bound_ = result.lower_bound
        self.lower_bounds_ = result.lower_bounds
        return self

    def _run(self, chunks: RowChunks, user_init: dict) -> EMResult:
        do_init = not (self.warm_start and hasattr(self, "converged_"))
        callbacks = [self._report] if self.verbose else []
        em_kwargs = dict(tol=self.tol, max_iter=self.max_iter, reg_covar=self.reg_covar,
                         split_every=self.split_every, dtype=self.dtype)
        if self.checkpoint_dir is not None:
            fp = checkpoint.fingerprint(chunks, self.get_params())
            callbacks.append(self._checkpointer(fp))
            found = checkpoint.load_checkpoint(self.checkpoint_dir, fp) if do_init else None
            if found is not None:
                iteration, states = found
                return run_em(chunks, [], states=states, start_iteration=iteration,
                              callback=_chain(callbacks), **em_kwargs)
        if do_init:
            initial = initial_parameters(
                chunks,
                n_components=self.n_components,
                covariance_type=self.covariance_type,
                reg_covar=self.reg_covar,
                init_params=self.init_params,
                n_init=self.n_init,
                random_state=check_random_state(self.random_state),
                split_every=self.split_every,
                **user_init,
            )
            start = -math.inf
        else:
            initial = [self._params()]
            start = self.lower_bound_

        return run_em(chunks, initial, start_lower_bound=start, callback=_chain(callbacks),
                      **em_kwargs)

    def _checkpointer(self, fp: dict) -> Callable[[IterationInfo], None]:
        def save(info: IterationInfo) -> None:
            last = info.iteration == self.max_iter or not any(s.active for s in info.states)
            if last or info.iteration % self.checkpoint_every == 0:
                checkpoint.save_checkpoint(self.checkpoint_dir, fp, info.iteration,
                                           info.states)
        return save

    def fit_predict(self, X: Any, y: Any = None) -> np.ndarray | da.Array:
        """Fit, then return the most probable component of each sample.

        Equals ``fit(X).predict(X)``; lazy for Dask input.
        """
        return self.fit(X).predict(X)

    # ----------------------------------------------------------------------------------
    # prediction
    # ----------------------------------------------------------------------------------
    def predict(self, X: Any) -> np.ndarray | da.Array:
        """Most probable component of each sample (lazy Dask array for Dask input)."""
        chunks = self._fitted_chunks(X)
        return chunks.map_rows(kernels.predict_block, self._params(), n_columns=None,
                               dtype=np.int64)

    def predict_proba(self, X: Any) -> np.ndarray | da.Array:
        """Posterior probability of each component for each sample, shape (n, K)."""
        chunks = self._fitted_chunks(X)
        return chunks.map_rows(kernels.predict_proba_block, self._params(),
                               n_columns=self.n_components, dtype=np.float64)

    def score_samples(self, X: Any) -> np.ndarray | da.Array:
        """Log-likelihood of each sample under the model."""
        chunks = self._fitted_chunks(X)
        return chunks.map_rows(kernels.score_samples_block, self._params(), n_columns=None,
                               dtype=np.float64)

    def score(self, X: Any, y: Any = None) -> float:
        """Mean per-sample log-likelihood of ``X`` (computed, even for Dask input)."""
        scores = self.score_samples(X)
        return float(scores.mean().compute() if isinstance(scores, da.Array)
                     else scores.mean())

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

    def save(self, path: str | os.PathLike, *, overwrite: bool = False,
             extra_metadata: dict | None = None) -> Path:
        """Save the fitted model to a directory: arrays and JSON metadata, never pickle.

        See :func:`daskgmm.serialize.model_files.save_model`; load it back with
        :func:`daskgmm.load`.
        """
        from daskgmm.serialize.model_files import save_model

        return save_model(self, path, overwrite=overwrite, extra_metadata=extra_metadata)

    def to_sklearn(self) -> _SklearnGaussianMixture:
        """An equivalent fitted :class:`sklearn.mixture.GaussianMixture`."""
        check_is_fitted(self)
        sk = _SklearnGaussianMixture(**{p: getattr(self, p) for p in _SKLEARN_PARAMS})
        for attr in ("weights_", "means_", "covariances_", "precisions_",
                     "precisions_cholesky_", "converged_", "n_iter_", "lower_bound_",
                     "lower_bounds_", "n_features_in_"):
            setattr(sk, attr, getattr(self, attr))
        return sk

    # ----------------------------------------------------------------------------------
    # helpers
    # ----------------------------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        return tags

    def _n_parameters(self) -> int:
        K, D = self.means_.shape
        cov_params = {
            "full": K * D * (D + 1) / 2.0,
            "diag": K * D,
            "tied": D * (D + 1) / 2.0,
            "spherical": K,
        }[self.covariance_type]
        return int(cov_params + K * D + K - 1)

    def _params(self) -> MixtureParams:
        return MixtureParams(self.covariance_type, self.weights_, self.means_,
                             self.precisions_cholesky_, self.covariances_)

    def _set_params_from(self, params: MixtureParams) -> None:
        self.weights_ = params.weights
        self.means_ = params.means
        self.covariances_ = params.covariances
        self.precisions_cholesky_ = params.precisions_cholesky
        self.precisions_ = params.precisions()

    def _chunks(self, X: Any, *, reset: bool) -> RowChunks:
        if isinstance(X, da.Array):
            X = self._validate_dask(X, reset=reset)
        else:
            X = validate_data(self, X, reset=reset, dtype=[np.float64, np.float32],
                              ensure_min_samples=2 if reset else 1)
        return RowChunks(X, self.chunk_rows)

    def _fitted_chunks(self, X: Any) -> RowChunks:
        check_is_fitted(self)
        return self._chunks(X, reset=False)

    def _validate_dask(self, X: da.Array, *, reset: bool) -> da.Array:
        if X.ndim != 2:
            raise InvalidDataError(
                f"Expected a 2-D array of shape (n_samples, n_features), got a {X.ndim}-D "
                f"array of shape {X.shape}. Reshape it: "
                + ("X.reshape(-1, 1) for one feature." if X.ndim < 2
                   else "X.reshape(len(X), -1) to flatten the trailing axes.")
            )
        if np.isnan(X.shape[0]):
            raise InvalidDataError(
                "The dask array has unknown chunk sizes; call X.compute_chunk_sizes() first."
            )
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

    def _checked_user_init(self, n_features: int) -> dict[str, np.ndarray | None]:
        K, cov = self.n_components, self.covariance_type
        out: dict[str, np.ndarray | None] = {}
        weights = _as_float_array(self.weights_init, "weights_init")
        if weights is not None:
            _check_shape(weights, (K,), "weights")
            if weights.min() < 0.0 or weights.max() > 1.0:
                raise ValueError(
                    "The parameter 'weights' should be in the range [0, 1], but got max "
                    f"value {weights.max():.5f}, min value {weights.min():.5f}"
                )
            if not np.allclose(weights.sum(), 1.0, rtol=0.0, atol=1e-8):
                raise ValueError(
                    "The parameter 'weights' should be normalized, but got sum(weights) = "
                    f"{weights.sum():.5f}"
                )
        out["weights_init"] = weights
        means = _as_float_array(self.means_init, "means_init")
        if means is not None:
            _check_shape(means, (K, n_features), "means")
        out["means_init"] = means
        prec = _as_float_array(self.precisions_init, "precisions_init")
        if prec is not None:
            shape = {"full": (K, n_features, n_features), "tied": (n_features, n_features),
                     "diag": (K, n_features), "spherical": (K,)}[cov]
            _check_shape(prec, shape, f"{cov} precision")
            _check_precision_values(prec, cov)
        out["precisions_init"] = prec
        return out

    def _report(self, info: IterationInfo) -> None:
        """``verbose``: the CLI's per-iteration lines, every ``verbose_interval`` iterations
        (and when a restart converges)."""
        from daskgmm.diagnostics.progress import format_iteration

        stopped = any(s.n_iter == info.iteration and s.converged for s in info.states)
        if info.iteration % self.verbose_interval == 0 or stopped:
            for line in format_iteration(info):
                print(line, flush=True)


def _chain(callbacks: list[Callable[[IterationInfo], None]]
           ) -> Callable[[IterationInfo], None] | None:
    if not callbacks:
        return None

    def call_all(info: IterationInfo) -> None:
        for callback in callbacks:
            callback(info)
    return call_all


def _as_float_array(value: Any, name: str) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_shape(param: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    if param.shape != shape:
        raise ValueError(
            f"The parameter '{name}' should have the shape of {shape}, but got {param.shape}"
        )


def _check_precision_values(prec: np.ndarray, covariance_type: str) -> None:
    if covariance_type in ("diag", "spherical"):
        if np.any(prec <= 0.0):
            raise ValueError(f"'{covariance_type} precision' should be positive")
        return
    stack = prec[None] if covariance_type == "tied" else prec
    for matrix in stack:
        if not (np.allclose(matrix, matrix.T) and np.all(np.linalg.eigvalsh(matrix) > 0.0)):
            raise ValueError(
                f"'{covariance_type} precision' should be symmetric, positive-definite"
            )
