"""The Gaussian mixture: its EM model and ``daskgmm.GaussianMixture``.

:class:`GaussianModel` is what the EM driver sees of one candidate: the components the
E-step evaluates, the M-step (scikit-learn's ``_estimate_gaussian_parameters`` formulas,
including the ``10 eps`` added to the soft counts and ``reg_covar``), and the lower bound
(the mean per-sample log-likelihood under the parameters of the E-step). The estimator
adds scikit-learn's API on top (:class:`~daskgmm.models._base.BaseMixture`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from sklearn.mixture import GaussianMixture as _SklearnGaussianMixture

from daskgmm.engine import covariance as cov_types
from daskgmm.engine.covariance import EPS10, CovarianceType
from daskgmm.engine.estep import Components
from daskgmm.engine.stats import Stats
from daskgmm.errors import InvalidParameterError
from daskgmm.models._base import BaseMixture, sklearn_constraints


@dataclass(frozen=True, eq=False)
class GaussianParams:
    """Parameters of one Gaussian mixture (float64, C-contiguous).

    ``covariances_cholesky`` (lower factors ``C`` with ``C Cᵀ = Σ``) is kept because the
    next M-step un-whitens the full-covariance statistics with it.
    """

    covariance: CovarianceType
    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    covariances_cholesky: np.ndarray

    def __post_init__(self) -> None:
        # C-contiguous float64 always: the memory layout decides the order of the BLAS
        # sums, and a resumed fit must repeat an uninterrupted one bit for bit.
        for name in ("weights", "means", "covariances", "precisions_cholesky",
                     "covariances_cholesky"):
            object.__setattr__(self, name,
                               np.ascontiguousarray(getattr(self, name), dtype=np.float64))

    @classmethod
    def from_precisions_cholesky(cls, covariance: str | CovarianceType, weights: np.ndarray,
                                 means: np.ndarray, precisions_cholesky: np.ndarray,
                                 covariances: np.ndarray | None = None) -> GaussianParams:
        """Parameters given by their precision Cholesky factors."""
        cov = cov_types.get(covariance)
        pc = np.asarray(precisions_cholesky, dtype=np.float64)
        if covariances is None:
            covariances = cov.covariances_from_precisions(cov.precisions(pc))
        return cls(cov, weights, means, covariances, pc,
                   cov.covariance_cholesky_from_precisions_cholesky(pc))

    def precisions(self) -> np.ndarray:
        """Precision matrices (or vectors)."""
        return self.covariance.precisions(self.precisions_cholesky)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The parameters as named arrays (for checkpoints)."""
        return {"weights": self.weights, "means": self.means,
                "covariances": self.covariances,
                "precisions_cholesky": self.precisions_cholesky,
                "covariances_cholesky": self.covariances_cholesky}


def gaussian_estimates(cov: CovarianceType, reg_covar: float, stats: Stats,
                       centre: np.ndarray, state: Any
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's ``_estimate_gaussian_parameters`` from reduced statistics: soft
    counts (with ``10 eps``), means and covariances (with ``reg_covar``).

    ``state`` holds the means and covariance factors the E-step used (``'full'``
    statistics are whitened with them), or the reference points of an initialisation.
    """
    nk_raw = np.asarray(stats["nk"], dtype=np.float64)
    nk = nk_raw + EPS10
    means = (stats["sx"] + nk_raw[:, None] * centre) / nk[:, None]
    scatter = cov.scatter(stats["s2"], nk_raw, stats["sx"], means, centre,
                          np.asarray(state.means), state.covariances_cholesky)
    return nk, means, cov.empirical_covariances(scatter, nk, reg_covar)


class GaussianModel:
    """One Gaussian-mixture candidate, as the EM driver sees it.

    Parameters
    ----------
    n_components : int
    covariance : str or CovarianceType
    reg_covar : float
    """

    wants_entropy = False
    objective = "loglik"
    objective_description = "mean log-likelihood per sample"

    def __init__(self, n_components: int, covariance: str | CovarianceType,
                 reg_covar: float) -> None:
        self.n_components = int(n_components)
        self.covariance = cov_types.get(covariance)
        self.reg_covar = float(reg_covar)

    def __repr__(self) -> str:
        return f"GaussianModel(K={self.n_components}, {self.covariance.name})"

    def components(self, state: GaussianParams) -> Components:
        """The components the E-step evaluates."""
        return Components.gaussian(self.covariance, state.weights, state.means,
                                   state.precisions_cholesky)

    def m_step(self, stats: Stats, centre: np.ndarray, state: Any) -> GaussianParams:
        """New parameters from the statistics the E-step computed with ``state``."""
        nk, means, covariances = gaussian_estimates(self.covariance, self.reg_covar, stats,
                                                    centre, state)
        chol, prec_chol = self.covariance.factorise(covariances)
        return GaussianParams(self.covariance, nk / nk.sum(), means, covariances, prec_chol,
                              chol)

    def lower_bound(self, stats: Stats, state: GaussianParams) -> float:
        """The (weighted) mean per-sample log-likelihood under the E-step's parameters."""
        return float(stats["ll"] / stats["n"])

    def free_energy(self, stats: Stats, centre: np.ndarray, state: GaussianParams) -> float:
        """``F(q, θ) / n = (E_q[log p(x, z | θ)] + H(q)) / n`` for the responsibilities
        ``q`` the canonical statistics ``stats`` (about ``centre``, with ``ent``) hold and
        the parameters ``state``: the bound incremental EM increases at every step; it
        equals the mean log-likelihood when ``q`` is the posterior under ``state``. With
        missing values, ``q`` also holds their conditional distributions, whose entropy
        (``h_missing``) joins ``H(q)``, and the bound is that of the observed-data
        log-likelihood."""
        cov = self.covariance
        K, D = state.means.shape
        nk = np.asarray(stats["nk"], dtype=np.float64)
        refs = np.broadcast_to(centre, (K, D))
        scatter = cov.scatter(stats["s2"], nk, stats["sx"], state.means, centre, refs, None)
        trace = np.sum(cov.precision_trace(scatter, state.precisions(), D))
        with np.errstate(divide="ignore"):
            log_weights = np.where(nk > 0, np.log(state.weights), 0.0)
        log_det = cov.log_det_cholesky(state.precisions_cholesky, D)
        energy = (np.sum(nk * (log_weights + log_det - 0.5 * D * math.log(2 * math.pi)))
                  - 0.5 * trace - float(stats["ent"]) + float(stats.get("h_missing", 0.0)))
        return float(energy / stats["n"])

    def n_parameters(self, n_features: int) -> int:
        """Free parameters: covariances, means and weights."""
        K = self.n_components
        return self.covariance.n_parameters(K, n_features) + K * n_features + K - 1

    # -- checkpoints -------------------------------------------------------------------
    def state_to_arrays(self, state: GaussianParams) -> dict[str, np.ndarray]:
        """The state as named arrays."""
        return state.to_arrays()

    def state_from_arrays(self, arrays: dict[str, np.ndarray], n_features: int
                          ) -> GaussianParams:
        """The state from named arrays, validated (:func:`check_gaussian_state`)."""
        state = GaussianParams(self.covariance, arrays["weights"], arrays["means"],
                               arrays["covariances"], arrays["precisions_cholesky"],
                               arrays["covariances_cholesky"])
        problem = check_gaussian_state(state, self.n_components, n_features)
        if problem:
            raise ValueError(problem)
        return state


def check_gaussian_state(state: GaussianParams, n_components: int, n_features: int
                         ) -> str | None:
    """Why a state is not a valid Gaussian mixture of this size (None if it is)."""
    cov = state.covariance
    K, D = n_components, n_features
    expected = {"weights": (K,), "means": (K, D), "covariances": cov.shape(K, D),
                "precisions_cholesky": cov.shape(K, D),
                "covariances_cholesky": cov.shape(K, D)}
    for name, shape in expected.items():
        value = getattr(state, name)
        if value.shape != shape:
            return f"{name} has shape {value.shape}, expected {shape}"
        if not np.isfinite(value).all():
            return f"{name} holds NaN or infinite values"
    if (state.weights < 0).any() or not np.isclose(state.weights.sum(), 1.0, atol=1e-6):
        return "weights are not non-negative numbers summing to 1"
    # A factor times its transpose (or its square): the formula of precisions().
    if not np.allclose(cov.precisions(state.covariances_cholesky), state.covariances,
                       rtol=1e-6, atol=0.0):
        return "covariances_cholesky does not match covariances"
    return cov.check_consistency(state.covariances, state.precisions_cholesky,
                                 state.precisions())


class GaussianMixture(BaseMixture):
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
        1 prints the initialisation and every ``verbose_interval``-th iteration; 2 also
        the time of each.
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
        reads: ``'auto'`` does so when the fit reads the data more than twice and they
        take at most half of the workers' free memory on a cluster (without one, a
        quarter of the available memory and at most 2 GiB; see
        :meth:`daskgmm.engine.passes.RowChunks.cached`).
    checkpoint_dir : str or path, default=None
        Write a checkpoint of the EM state here every ``checkpoint_every`` iterations,
        and resume from the checkpoint found here (see
        :mod:`daskgmm.serialize.checkpoint`). A checkpoint written for other data or
        other settings is refused.
    checkpoint_every : int, default=1
        Iterations between two checkpoints (group updates for the stepwise algorithms,
        so that a checkpoint holds mid-pass state).
    algorithm : {'batch', 'incremental', 'online'}, default='batch'
        ``'batch'``: an M-step after every pass (scikit-learn's EM). ``'incremental'``:
        incremental EM (Neal and Hinton, 1998), an M-step after every group of
        ``batch_chunks`` chunks with the group's fresh statistics replacing its old
        ones; it reaches batch EM's answer in a fraction of the passes. ``'online'``:
        online EM (Cappé and Moulines, 2009), running statistics updated with step
        ``(t + learning_offset) ** -learning_decay`` after every group; for streams and
        quick approximate fits. See :mod:`daskgmm.engine.stepwise`. ``max_iter`` counts
        passes over the data for all three.
    batch_chunks : int, default=None
        Chunks per group of the stepwise algorithms; one per worker thread when None.
    learning_decay : float, default=0.7
        Online EM's step-size exponent, in (0.5, 1] (the name follows scikit-learn's
        ``LatentDirichletAllocation``).
    learning_offset : float, default=10.0
        Online EM's step-size offset (down-weights the first updates).
    missing : {'error', 'marginalize'}, default='error'
        What a NaN in the data means. ``'error'`` (scikit-learn's behaviour): it is
        refused. ``'marginalize'``: it marks a missing value, assumed missing at random;
        EM fits the observed values (the E-step scores each row by the marginal density
        of its observed features and fills the statistics with the conditional
        expectations of the missing ones), and ``score_samples``, ``score``,
        ``predict`` and ``predict_proba`` use the observed values of each row. Rows
        with no observed value are left out of the fit (counted in ``n_empty_rows_``).
        An infinity is an error either way. See the README's "Missing values".

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
        Mean per-sample log-likelihood of the best restart at its last iteration (with
        ``missing='marginalize'``, of the observed values, per row with at least one).
    lower_bounds_ : list of float
        The lower bound at every iteration of the best restart.
    n_features_in_ : int
    passes_ : dict
        Passes over the data the fit read, by phase.
    n_empty_rows_ : float
        The (weighted) number of rows with no observed value, left out of the fit (0
        with ``missing='error'``; for ``partial_fit``, of the last batch).
    observed_fraction_ : float
        The (weighted) share of the values that are observed (1 with
        ``missing='error'``).

    Examples
    --------
    >>> import dask.array as da
    >>> from daskgmm import GaussianMixture
    >>> X = da.random.default_rng(0).normal(size=(100_000, 4), chunks=(25_000, 4))
    >>> gm = GaussianMixture(n_components=2, random_state=0).fit(X)
    >>> gm.means_.shape
    (2, 4)
    """

    _parameter_constraints: ClassVar[dict] = sklearn_constraints(_SklearnGaussianMixture)
    _sklearn_class = _SklearnGaussianMixture
    _fitted_arrays: ClassVar[tuple[str, ...]] = (
        "weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
    _array_params: ClassVar[tuple[str, ...]] = ("weights_init", "means_init",
                                                "precisions_init")

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
        checkpoint_dir: Any = None,
        checkpoint_every: int = 1,
        algorithm: str = "batch",
        batch_chunks: int | None = None,
        learning_decay: float = 0.7,
        learning_offset: float = 10.0,
        missing: str = "error",
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
        self.algorithm = algorithm
        self.batch_chunks = batch_chunks
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.missing = missing

    #: What ``lower_bounds_`` hold, for plots and reports.
    _objective_description = GaussianModel.objective_description

    # -- hooks of BaseMixture ----------------------------------------------------------
    def _make_model(self, n_features: int, n_components: int) -> GaussianModel:
        return GaussianModel(n_components, self.covariance_type, self.reg_covar)

    def _load_user_init(self) -> None:
        self._user_init = {
            "weights": _as_float_array(self.weights_init, "weights_init"),
            "means": _as_float_array(self.means_init, "means_init"),
            "precisions": _as_float_array(self.precisions_init, "precisions_init"),
        }

    def _check_initial_parameters(self, n_features: int, dtype: np.dtype) -> None:
        K, cov = self.n_components, cov_types.get(self.covariance_type)
        self._load_user_init()
        weights = self._user_init["weights"]
        if weights is not None:
            _check_shape(weights, (K,), "weights")
            if weights.min() < 0.0 or weights.max() > 1.0:
                raise InvalidParameterError(
                    "The parameter 'weights' should be in the range [0, 1], but got max "
                    f"value {weights.max():.5f}, min value {weights.min():.5f}"
                )
            # scikit-learn's tolerance for the dtype the weights were given in.
            given = np.asarray(self.weights_init)
            atol = 1e-6 if given.dtype == np.float32 else 1e-8
            if not np.allclose(abs(1.0 - weights.sum()), 0.0, atol=atol):
                raise InvalidParameterError(
                    "The parameter 'weights' should be normalized, but got sum(weights) = "
                    f"{weights.sum():.5f}"
                )
        means = self._user_init["means"]
        if means is not None:
            _check_shape(means, (K, n_features), "means")
        prec = self._user_init["precisions"]
        if prec is not None:
            _check_shape(prec, cov.shape(K, n_features), f"{cov.name} precision")
            cov.check_precisions(prec, K, n_features)

    def _needs_data_for_init(self) -> bool:
        return any(v is None for v in self._user_init.values())

    def _initial_state_without_data(self, model: GaussianModel) -> GaussianParams:
        return self._with_user_init(None, model)

    def _with_user_init(self, state: GaussianParams | None, model: GaussianModel
                        ) -> GaussianParams:
        """``state`` with the user's ``*_init`` values in place of the computed ones."""
        user = self._user_init
        if state is not None and all(v is None for v in user.values()):
            return state
        cov = model.covariance
        weights = user["weights"] if user["weights"] is not None else state.weights
        means = user["means"] if user["means"] is not None else state.means
        if user["precisions"] is None:
            return GaussianParams(cov, weights, means, state.covariances,
                                  state.precisions_cholesky, state.covariances_cholesky)
        prec_chol = cov.precisions_cholesky_from_precisions(user["precisions"])
        return GaussianParams.from_precisions_cholesky(
            cov, weights, means, prec_chol, cov.covariances_from_precisions(user["precisions"]))

    def _state_from_attributes(self) -> GaussianParams:
        cov = cov_types.get(self.covariance_type)
        return GaussianParams.from_precisions_cholesky(
            cov, self.weights_, self.means_, self.precisions_cholesky_, self.covariances_)

    def _set_attributes(self, state: GaussianParams) -> None:
        self.weights_ = state.weights
        self.means_ = state.means
        self.covariances_ = state.covariances
        self.precisions_cholesky_ = state.precisions_cholesky
        self.precisions_ = state.precisions()

    def _get_parameters(self) -> tuple[np.ndarray, ...]:
        """scikit-learn's private accessor of the fitted parameters."""
        return (self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)

    def _set_parameters(self, params: tuple[np.ndarray, ...]) -> None:
        """scikit-learn's private setter: ``(weights, means, covariances,
        precisions_cholesky)``; the precisions follow."""
        self.weights_, self.means_, self.covariances_, self.precisions_cholesky_ = params
        cov = cov_types.get(self.covariance_type)
        self.precisions_ = cov.precisions(np.asarray(self.precisions_cholesky_))

    def _components(self) -> Components:
        return Components.gaussian(self.covariance_type, self.weights_, self.means_,
                                   self.precisions_cholesky_)

    def _n_parameters(self) -> int:
        K, D = np.shape(self.means_)
        return GaussianModel(K, self.covariance_type, self.reg_covar).n_parameters(D)

    def _check_saved_arrays(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any]
                            ) -> str | None:
        cov = cov_types.get(fitted["covariance_type"])
        K, D = fitted["n_components"], fitted["n_features_in_"]
        shapes = {"weights_": (K,), "means_": (K, D), "covariances_": cov.shape(K, D),
                  "precisions_": cov.shape(K, D), "precisions_cholesky_": cov.shape(K, D)}
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                return (f"{name} has shape {arrays[name].shape}, but a {cov.name!r} model "
                        f"with n_components={K} and n_features={D} needs {shape}")
        if arrays["lower_bounds_"].ndim != 1:
            return "lower_bounds_ is not one-dimensional"
        weights = arrays["weights_"]
        if weights.min() < 0.0 or not np.isclose(weights.sum(), 1.0, rtol=0, atol=1e-6):
            return "weights_ are not non-negative numbers summing to 1"
        return cov.check_consistency(arrays["covariances_"], arrays["precisions_cholesky_"],
                                     arrays["precisions_"])


def _as_float_array(value: Any, name: str) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise InvalidParameterError(f"{name} contains NaN or infinite values")
    return arr


def _check_shape(param: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    if param.shape != shape:
        raise InvalidParameterError(
            f"The parameter '{name}' should have the shape of {shape}, but got {param.shape}"
        )
