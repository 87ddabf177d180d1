"""The variational Bayesian Gaussian mixture: its model and
``daskgmm.BayesianGaussianMixture``.

The E-step is the Gaussian one with other per-component constants (the expected
log-weights under a Dirichlet distribution or a Dirichlet process, and the expected
log-determinants under the Wishart posteriors), so the chunk statistics are the same soft
counts, weighted sums and scatters, plus the responsibilities' entropy for the lower
bound. :class:`BayesianModel` supplies the variational M-step and lower bound, with
scikit-learn's ``BayesianGaussianMixture`` formulas (Bishop, *Pattern Recognition and
Machine Learning*, 2006, sections 10.2 and 10.4; Blei and Jordan, 2006, for the Dirichlet
process): per covariance type only the pieces of :mod:`daskgmm.engine.covariance`
(``expand``, ``pool``, ``outer``) differ.

The priors that default to the data's moments (``mean_prior``, ``covariance_prior``) cost
one pass over the data before the initialisation.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from numbers import Real
from typing import Any, ClassVar

import numpy as np
from scipy.special import betaln, digamma, gammaln
from sklearn.mixture import BayesianGaussianMixture as _SklearnBayesianGaussianMixture
from sklearn.utils.validation import check_is_fitted

from daskgmm.engine import covariance as cov_types
from daskgmm.engine.covariance import CovarianceType
from daskgmm.engine.covariance.full import (
    check_symmetric_positive_definite,
    is_positive_definite,
)
from daskgmm.engine.estep import Components
from daskgmm.engine.stats import Stats
from daskgmm.engine.survey import Survey
from daskgmm.errors import InvalidDataError, InvalidParameterError
from daskgmm.models._base import BaseMixture, sklearn_constraints
from daskgmm.models.gaussian import gaussian_estimates

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class Priors:
    """The priors of a variational mixture (resolved against the data)."""

    weight_concentration: float
    mean_precision: float
    mean: np.ndarray
    degrees_of_freedom: float
    covariance: np.ndarray


@dataclass(frozen=True, eq=False)
class BayesianParams:
    """The variational posterior of one mixture (float64, C-contiguous).

    ``weight_concentration`` is ``(K,)`` for a Dirichlet distribution and ``(2, K)`` (the
    Beta parameters of every stick) for a Dirichlet process; ``degrees_of_freedom`` is
    ``(K,)``, or a 0-d array for ``'tied'``.
    """

    covariance: CovarianceType
    weight_concentration: np.ndarray
    mean_precision: np.ndarray
    means: np.ndarray
    degrees_of_freedom: np.ndarray
    covariances: np.ndarray
    precisions_cholesky: np.ndarray
    covariances_cholesky: np.ndarray

    def __post_init__(self) -> None:
        for name in ("weight_concentration", "mean_precision", "means",
                     "degrees_of_freedom", "covariances", "precisions_cholesky",
                     "covariances_cholesky"):
            # (np.array, not np.ascontiguousarray: a 'tied' 0-d array stays 0-d.)
            object.__setattr__(self, name,
                               np.array(getattr(self, name), dtype=np.float64, order="C"))

    @property
    def weights(self) -> np.ndarray:
        """The expected mixture weights (``weights_``)."""
        return weights_from_concentration(self.weight_concentration)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The parameters as named arrays (for checkpoints)."""
        return {name: getattr(self, name) for name in (
            "weight_concentration", "mean_precision", "means", "degrees_of_freedom",
            "covariances", "precisions_cholesky", "covariances_cholesky")}


def weights_from_concentration(concentration: np.ndarray) -> np.ndarray:
    """Expected weights of a Dirichlet distribution ``(K,)`` or, for a ``(2, K)``
    concentration, of the stick-breaking representation of a Dirichlet process."""
    concentration = np.asarray(concentration, dtype=np.float64)
    if concentration.ndim == 1:
        return concentration / concentration.sum()
    a, b = concentration
    total = a + b
    weights = a / total * np.hstack((1.0, np.cumprod(b / total)[:-1]))
    return weights / weights.sum()


def log_wishart_norm(dof: np.ndarray, log_det_precisions_chol: np.ndarray,
                     n_features: int) -> np.ndarray:
    """Log normalisation of Wishart distributions (without the constant ``log pi``
    terms, which cancel in the bound's changes)."""
    dof = np.asarray(dof, dtype=np.float64)
    halves = 0.5 * (dof - np.arange(n_features)[:, None]) if dof.ndim else \
        0.5 * (dof - np.arange(n_features))
    return -(dof * log_det_precisions_chol + dof * n_features * 0.5 * math.log(2.0)
             + np.sum(gammaln(halves), axis=0))


class BayesianModel:
    """One variational-mixture candidate, as the EM driver sees it."""

    wants_entropy = True
    objective = "bound"
    objective_description = "variational lower bound per sample"

    def __init__(self, n_components: int, covariance: str | CovarianceType,
                 reg_covar: float, prior_type: str, priors: Priors) -> None:
        self.n_components = int(n_components)
        self.covariance = cov_types.get(covariance)
        self.reg_covar = float(reg_covar)
        self.prior_type = prior_type
        self.priors = priors

    def __repr__(self) -> str:
        return f"BayesianModel(K={self.n_components}, {self.covariance.name})"

    # -- E-step ------------------------------------------------------------------------
    def log_weights(self, state: BayesianParams) -> np.ndarray:
        """Expected log-weights ``E[log pi_k]``."""
        wc = state.weight_concentration
        if wc.ndim == 1:
            return digamma(wc) - digamma(wc.sum())
        a, b = wc
        total = digamma(a + b)
        return digamma(a) - total + np.hstack((0.0, np.cumsum(digamma(b) - total)[:-1]))

    def components(self, state: BayesianParams) -> Components:
        """The components of the variational E-step: the Gaussian Mahalanobis term with
        the covariances' precision factors and the expected log-weights and
        log-determinants as constants."""
        cov, D = self.covariance, state.means.shape[1]
        dof = state.degrees_of_freedom
        log_det = cov.log_det_cholesky(state.precisions_cholesky, D) - 0.5 * D * np.log(dof)
        halves = (0.5 * (dof - np.arange(D)[:, None]) if dof.ndim
                  else 0.5 * (dof - np.arange(D)))
        log_lambda = D * math.log(2.0) + np.sum(digamma(halves), axis=0)
        constant = (self.log_weights(state) + log_det - 0.5 * D * _LOG_2PI
                    + 0.5 * (log_lambda - D / state.mean_precision))
        return Components(cov, state.means, state.precisions_cholesky,
                          np.broadcast_to(constant, (self.n_components,)).copy())

    # -- M-step ------------------------------------------------------------------------
    def m_step(self, stats: Stats, centre: np.ndarray, state: Any) -> BayesianParams:
        """The variational updates from the statistics the E-step computed with
        ``state`` (or from initial responsibilities)."""
        cov, p = self.covariance, self.priors
        nk, xk, sk = gaussian_estimates(cov, self.reg_covar, stats, centre, state)
        if self.prior_type == "dirichlet_process":
            tail = np.hstack((np.cumsum(nk[::-1])[-2::-1], 0.0))
            concentration = np.stack([1.0 + nk, p.weight_concentration + tail])
        else:
            concentration = p.weight_concentration + nk
        mean_precision = p.mean_precision + nk
        means = (p.mean_precision * p.mean + nk[:, None] * xk) / mean_precision[:, None]
        dof = p.degrees_of_freedom + cov.pool(nk)
        diff = xk - p.mean
        scale = nk * p.mean_precision / mean_precision
        spread = cov.pool(cov.expand(nk) * sk + cov.expand(scale) * cov.outer(diff))
        covariances = (p.covariance + spread) / (cov.expand(dof) if np.ndim(dof) else dof)
        chol, prec_chol = cov.factorise(covariances)
        return BayesianParams(cov, concentration, mean_precision, means, dof, covariances,
                              prec_chol, chol)

    def lower_bound(self, stats: Stats, state: BayesianParams) -> float:
        """scikit-learn's variational lower bound (constant terms dropped): the
        responsibilities' entropy, the Wishart and weight normalisations and the mean
        precisions; with missing values also the entropy of their conditional
        distributions (``h_missing``, see :mod:`daskgmm.engine.marginal`)."""
        cov, D, K = self.covariance, state.means.shape[1], self.n_components
        dof = state.degrees_of_freedom
        log_det = cov.log_det_cholesky(state.precisions_cholesky, D) - 0.5 * D * np.log(dof)
        log_wishart = np.sum(np.broadcast_to(log_wishart_norm(dof, log_det, D), (K,)))
        wc = state.weight_concentration
        if wc.ndim == 2:
            log_norm_weight = -np.sum(betaln(wc[0], wc[1]))
        else:
            log_norm_weight = gammaln(wc.sum()) - np.sum(gammaln(wc))
        return float(-stats["ent"] + stats.get("h_missing", 0.0) - log_wishart
                     - log_norm_weight - 0.5 * D * np.sum(np.log(state.mean_precision)))

    def n_parameters(self, n_features: int) -> int:
        """Free parameters of the posterior-mean mixture (as a Gaussian mixture's)."""
        K = self.n_components
        return self.covariance.n_parameters(K, n_features) + K * n_features + K - 1

    # -- checkpoints -------------------------------------------------------------------
    def state_to_arrays(self, state: BayesianParams) -> dict[str, np.ndarray]:
        """The state as named arrays."""
        return state.to_arrays()

    def state_from_arrays(self, arrays: dict[str, np.ndarray], n_features: int
                          ) -> BayesianParams:
        """The state from named arrays, validated."""
        state = BayesianParams(self.covariance, **arrays)
        problem = check_bayesian_state(state, self.n_components, n_features,
                                       self.prior_type)
        if problem:
            raise ValueError(problem)
        return state


def check_bayesian_state(state: BayesianParams, n_components: int, n_features: int,
                         prior_type: str) -> str | None:
    """Why a state is not a valid variational posterior of this size (None if it is)."""
    cov, K, D = state.covariance, n_components, n_features
    expected = {
        "weight_concentration": (2, K) if prior_type == "dirichlet_process" else (K,),
        "mean_precision": (K,), "means": (K, D),
        "degrees_of_freedom": () if cov.name == "tied" else (K,),
        "covariances": cov.shape(K, D), "precisions_cholesky": cov.shape(K, D),
        "covariances_cholesky": cov.shape(K, D),
    }
    for name, shape in expected.items():
        value = getattr(state, name)
        if value.shape != shape:
            return f"{name} has shape {value.shape}, expected {shape}"
        if not np.isfinite(value).all():
            return f"{name} holds NaN or infinite values"
    for name in ("weight_concentration", "mean_precision"):
        if not (getattr(state, name) > 0).all():
            return f"{name} holds non-positive values"
    if not (state.degrees_of_freedom > D - 1).all():
        return f"degrees_of_freedom are not above n_features - 1 = {D - 1}"
    if not np.allclose(cov.precisions(state.covariances_cholesky), state.covariances,
                       rtol=1e-6, atol=0.0):
        return "covariances_cholesky does not match covariances"
    return cov.check_consistency(state.covariances, state.precisions_cholesky,
                                 cov.precisions(state.precisions_cholesky))


class BayesianGaussianMixture(BaseMixture):
    """Variational Bayesian Gaussian mixture, fitted out of core over the chunks of an
    array.

    scikit-learn's :class:`sklearn.mixture.BayesianGaussianMixture` (the same parameters,
    in its order, the same fitted attributes and methods), on daskgmm's engine: the
    E-step runs chunk by chunk on the active Dask scheduler (or in a thread pool for
    NumPy input), the variational M-step on the driver. With a Dirichlet-process prior
    on the weights, superfluous components get weights near zero, so ``n_components`` is
    an upper bound rather than a choice.

    Parameters
    ----------
    n_components : int, default=1
        Upper bound on the number of components.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}, default='full'
    tol : float, default=1e-3
        Convergence threshold on the change of the lower bound (a total, not per sample,
        as in scikit-learn).
    reg_covar : float, default=1e-6
    max_iter : int, default=100
        Passes over the data per restart.
    n_init : int, default=1
        Restarts; the best lower bound is kept. Restarts share every pass.
    init_params : {'kmeans', 'k-means++', 'random', 'random_from_data'}, default='kmeans'
    weight_concentration_prior_type : {'dirichlet_process', 'dirichlet_distribution'}, \
default='dirichlet_process'
    weight_concentration_prior : float, default=None
        ``1 / n_components`` when None.
    mean_precision_prior : float, default=None
        1 when None.
    mean_prior : array-like of shape (n_features,), default=None
        The data's mean when None (one extra pass over the data).
    degrees_of_freedom_prior : float, default=None
        ``n_features`` when None; must be greater than ``n_features - 1``.
    covariance_prior : float or array-like, default=None
        The data's covariance (``ddof=1``) in the covariance type's shape when None (one
        extra pass over the data, shared with ``mean_prior``'s).
    random_state, warm_start, verbose, verbose_interval :
        scikit-learn's meanings.
    chunk_rows, split_every, dtype, cache, checkpoint_dir, checkpoint_every :
        As for :class:`daskgmm.GaussianMixture`.
    algorithm, batch_chunks, learning_decay, learning_offset :
        As for :class:`daskgmm.GaussianMixture`: batch, incremental or online EM (for
        the variational bound, the incremental bound is the one batch EM reports).
    missing : {'error', 'marginalize'}, default='error'
        As for :class:`daskgmm.GaussianMixture`. With ``'marginalize'`` the missing
        values are latent variables of the variational posterior (the bound gains their
        conditional entropy), and the priors that default to the data's moments take
        the available-case ones (each feature's mean over its observed values, each
        pair's covariance over the rows observing both; its diagonal, with a warning,
        when that matrix is not positive definite).

    Attributes
    ----------
    weights_, means_, covariances_, precisions_, precisions_cholesky_ : ndarray
    converged_ : bool
    n_iter_ : int
    lower_bound_ : float
    lower_bounds_ : list of float
    weight_concentration_prior_ : float
    weight_concentration_ : ndarray of shape (n_components,) or tuple of two
        The Dirichlet parameters, or the Beta parameters of the Dirichlet process.
    mean_precision_prior_ : float
    mean_precision_ : ndarray of shape (n_components,)
    mean_prior_ : ndarray of shape (n_features,)
    degrees_of_freedom_prior_ : float
    degrees_of_freedom_ : ndarray of shape (n_components,) (a float for 'tied')
    covariance_prior_ : float or ndarray
    n_features_in_ : int
    passes_, n_empty_rows_, observed_fraction_ :
        As for :class:`daskgmm.GaussianMixture`.
    """

    _parameter_constraints: ClassVar[dict] = sklearn_constraints(
        _SklearnBayesianGaussianMixture)
    _sklearn_class = _SklearnBayesianGaussianMixture
    _fitted_arrays: ClassVar[tuple[str, ...]] = (
        "weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_",
        "mean_precision_")
    _fitted_other: ClassVar[tuple[str, ...]] = (
        "weight_concentration_", "degrees_of_freedom_", "weight_concentration_prior_",
        "mean_precision_prior_", "mean_prior_", "degrees_of_freedom_prior_",
        "covariance_prior_")
    _array_params: ClassVar[tuple[str, ...]] = ("mean_prior", "covariance_prior")

    def __init__(
        self,
        *,
        n_components: int = 1,
        covariance_type: str = "full",
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "kmeans",
        weight_concentration_prior_type: str = "dirichlet_process",
        weight_concentration_prior: float | None = None,
        mean_precision_prior: float | None = None,
        mean_prior: Any = None,
        degrees_of_freedom_prior: float | None = None,
        covariance_prior: Any = None,
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
        self.weight_concentration_prior_type = weight_concentration_prior_type
        self.weight_concentration_prior = weight_concentration_prior
        self.mean_precision_prior = mean_precision_prior
        self.mean_prior = mean_prior
        self.degrees_of_freedom_prior = degrees_of_freedom_prior
        self.covariance_prior = covariance_prior
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

    # -- priors ------------------------------------------------------------------------
    def _check_initial_parameters(self, n_features: int, dtype: np.dtype) -> None:
        """scikit-learn's checks of the priors that do not need the data."""
        D, cov = n_features, cov_types.get(self.covariance_type)
        if self.mean_prior is not None:
            mean = np.asarray(self.mean_prior, dtype=np.float64)
            if mean.shape != (D,):
                raise InvalidParameterError(
                    f"The parameter 'means' should have the shape of {(D,)}, but got "
                    f"{mean.shape}")
        if (self.degrees_of_freedom_prior is not None
                and not self.degrees_of_freedom_prior > D - 1.0):
            raise InvalidParameterError(
                "The parameter 'degrees_of_freedom_prior' should be greater than "
                f"{D - 1}, but got {self.degrees_of_freedom_prior:.3f}.")
        if self.covariance_prior is not None:
            prior = np.asarray(self.covariance_prior, dtype=np.float64)
            shape = {"full": (D, D), "tied": (D, D), "diag": (D,), "spherical": ()}[
                cov.name]
            if prior.shape != shape:
                raise InvalidParameterError(
                    f"The parameter '{cov.name} covariance_prior' should have the shape "
                    f"of {shape}, but got {prior.shape}")
            if cov.name in ("full", "tied"):
                check_symmetric_positive_definite(prior, cov.name)
            elif not (prior > 0).all():
                raise InvalidParameterError(f"'{cov.name} precision' should be positive")

    def _needs_moments(self) -> bool:
        return self.mean_prior is None or self.covariance_prior is None

    def _resolve(self, survey: Survey) -> None:
        """Resolve the priors; the defaults that are the data's mean and covariance come
        from the moments of the fit's first pass."""
        D, cov = survey.n_features, cov_types.get(self.covariance_type)
        self.weight_concentration_prior_ = (1.0 / self.n_components
                                            if self.weight_concentration_prior is None
                                            else self.weight_concentration_prior)
        self.mean_precision_prior_ = (1.0 if self.mean_precision_prior is None
                                      else self.mean_precision_prior)
        self.degrees_of_freedom_prior_ = (D if self.degrees_of_freedom_prior is None
                                          else self.degrees_of_freedom_prior)
        mean = cov_prior = None
        if self._needs_moments():
            mean, cov_prior = _prior_moments(survey, cov,
                                             available_case=self.missing == "marginalize")
        self.mean_prior_ = (mean if self.mean_prior is None
                            else np.asarray(self.mean_prior, dtype=np.float64))
        self.covariance_prior_ = (cov_prior if self.covariance_prior is None
                                  else np.asarray(self.covariance_prior, dtype=np.float64))
        if cov.name == "spherical":
            self.covariance_prior_ = float(self.covariance_prior_)

    def _priors(self) -> Priors:
        return Priors(float(self.weight_concentration_prior_),
                      float(self.mean_precision_prior_),
                      np.asarray(self.mean_prior_, dtype=np.float64),
                      float(self.degrees_of_freedom_prior_),
                      np.asarray(self.covariance_prior_, dtype=np.float64))

    #: What ``lower_bounds_`` hold, for plots and reports.
    _objective_description = BayesianModel.objective_description

    # -- hooks of BaseMixture ----------------------------------------------------------
    def _make_model(self, n_features: int, n_components: int) -> BayesianModel:
        return BayesianModel(n_components, self.covariance_type, self.reg_covar,
                             self.weight_concentration_prior_type, self._priors())

    def _state_from_attributes(self) -> BayesianParams:
        cov = cov_types.get(self.covariance_type)
        pc = np.asarray(self.precisions_cholesky_, dtype=np.float64)
        return BayesianParams(cov, np.asarray(self.weight_concentration_),
                              self.mean_precision_, self.means_, self.degrees_of_freedom_,
                              self.covariances_, pc,
                              cov.covariance_cholesky_from_precisions_cholesky(pc))

    def _set_attributes(self, state: BayesianParams) -> None:
        wc = state.weight_concentration
        self.weight_concentration_ = (wc[0], wc[1]) if wc.ndim == 2 else wc
        self.mean_precision_ = state.mean_precision
        self.means_ = state.means
        dof = state.degrees_of_freedom
        self.degrees_of_freedom_ = float(dof) if dof.ndim == 0 else dof
        self.covariances_ = state.covariances
        self.precisions_cholesky_ = state.precisions_cholesky
        self.precisions_ = state.covariance.precisions(state.precisions_cholesky)
        self.weights_ = state.weights

    def _components(self) -> Components:
        check_is_fitted(self)
        model = self._make_model(np.shape(self.means_)[1], len(self.means_))
        return model.components(self._state_from_attributes())

    def _n_parameters(self) -> int:
        K, D = np.shape(self.means_)
        return self._make_model(D, K).n_parameters(D)

    def _label(self) -> str:
        return f"K<={self.n_components} {self.covariance_type} bayesian"

    # -- saving ------------------------------------------------------------------------
    def _saved_arrays(self) -> tuple[str, ...]:
        return (*self._fitted_arrays, "lower_bounds_", "weight_concentration_",
                "degrees_of_freedom_", "mean_prior_", "covariance_prior_")

    @classmethod
    def _saved_array_names(cls, fitted: dict[str, Any]) -> set[str]:
        return {*cls._fitted_arrays, "lower_bounds_", "weight_concentration_",
                "degrees_of_freedom_", "mean_prior_", "covariance_prior_"}

    def _extra_fitted_scalars(self) -> dict[str, Any]:
        return {"weight_concentration_prior_": float(self.weight_concentration_prior_),
                "mean_precision_prior_": float(self.mean_precision_prior_),
                "degrees_of_freedom_prior_": float(self.degrees_of_freedom_prior_)}

    def _set_extra_fitted_scalars(self, fitted: dict[str, Any]) -> None:
        for name in ("weight_concentration_prior_", "mean_precision_prior_",
                     "degrees_of_freedom_prior_"):
            setattr(self, name, fitted[name])

    def _check_saved_arrays(self, arrays: dict[str, np.ndarray], fitted: dict[str, Any]
                            ) -> str | None:
        for name in ("weight_concentration_prior_", "mean_precision_prior_",
                     "degrees_of_freedom_prior_"):
            value = fitted.get(name)
            if isinstance(value, bool) or not isinstance(value, Real) or not value > 0:
                return f"fitted {name} = {value!r} is not a positive number"
        cov = cov_types.get(fitted["covariance_type"])
        K, D = fitted["n_components"], fitted["n_features_in_"]
        for name, shape in (("weights_", (K,)), ("precisions_", cov.shape(K, D)),
                            ("precisions_cholesky_", cov.shape(K, D)),
                            ("mean_prior_", (D,))):
            if arrays[name].shape != shape:
                return (f"{name} has shape {arrays[name].shape}, but a {cov.name!r} model "
                        f"with n_components={K} and n_features={D} needs {shape}")
        prec_chol = arrays["precisions_cholesky_"]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            chol = cov.covariance_cholesky_from_precisions_cholesky(prec_chol)
        state = BayesianParams(
            cov, arrays["weight_concentration_"], arrays["mean_precision_"],
            arrays["means_"], arrays["degrees_of_freedom_"], arrays["covariances_"],
            prec_chol, chol)
        problem = check_bayesian_state(state, K, D, self.weight_concentration_prior_type)
        if problem:
            return problem
        if not np.allclose(state.weights, arrays["weights_"], rtol=1e-6, atol=1e-12):
            return "weights_ do not follow from weight_concentration_"
        if not np.allclose(cov.precisions(state.precisions_cholesky), arrays["precisions_"],
                           rtol=1e-6, atol=0.0):
            return "precisions_ do not equal precisions_cholesky_ times its transpose"
        return None

    @classmethod
    def _from_saved(cls, saved: Any, where: Any) -> BayesianGaussianMixture:
        model = super()._from_saved(saved, where)
        arrays = saved.arrays
        wc = arrays["weight_concentration_"]
        model.weight_concentration_ = (wc[0], wc[1]) if wc.ndim == 2 else wc
        dof = arrays["degrees_of_freedom_"]
        model.degrees_of_freedom_ = float(dof) if dof.ndim == 0 else dof
        model.mean_prior_ = arrays["mean_prior_"]
        prior = arrays["covariance_prior_"]
        model.covariance_prior_ = float(prior) if prior.ndim == 0 else prior
        return model


def _prior_moments(survey: Survey, cov: CovarianceType, available_case: bool = False
                   ) -> tuple[np.ndarray, Any]:
    """The (weighted) mean of the data and its covariance (``ddof=1``: the weights count
    as repetitions) in the covariance type's prior shape.

    With missing values (``available_case``) they are the available-case moments of the
    survey; a covariance that is then not positive definite (pairs of features observed
    together in few rows) gives way to its diagonal, with a warning."""
    moments = survey.moments
    if not moments.n > 1.0:
        raise InvalidDataError(
            f"the data's covariance, the default covariance_prior, needs a total sample "
            f"weight above 1, got {moments.n}; give covariance_prior and mean_prior, or "
            "more data.")
    covariance = moments.covariance()
    if cov.name in ("full", "tied"):
        covariance = np.atleast_2d(covariance)
        if available_case and not is_positive_definite(covariance):
            warnings.warn(
                "the available-case covariance of the data (each pair of features over "
                "the rows observing both) is not positive definite: the default "
                "covariance_prior is its diagonal. Give covariance_prior to choose "
                "another.", UserWarning, stacklevel=4)
            covariance = np.diag(np.diag(covariance))
        return moments.mean, covariance
    variances = np.diag(covariance).copy()
    return moments.mean, (variances if cov.name == "diag" else variances.mean())
