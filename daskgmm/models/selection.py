"""Model selection: every (number of components, covariance type) candidate in shared passes.

:class:`GaussianMixtureSelector` fits one mixture per candidate (each with its ``n_init``
restarts) and keeps the one with the lowest information criterion. The candidates never
cost a pass each: the EM driver (:func:`daskgmm.engine.em.run_em`) advances all of them in
lock-step, so one read of every chunk per iteration serves every candidate still running,
and a candidate leaves the passes when it converges. The initialisation shares the reads
too: one gather of the seeding sample, and Lloyd passes for all the sets of centres
(:class:`daskgmm.engine.initialize.KMeansStarts`); a candidate whose k-means has converged
gets its assignment statistics and starts EM in the next pass, in the same reads as the
Lloyd steps of the candidates still initialising. The criteria of a candidate (its
log-likelihood and responsibilities' entropy under the fitted parameters) are computed in
the pass after it finishes, alongside the E-steps of those still running. A sweep
therefore reads the data at most once more than its slowest candidate alone would (the
criteria of the last to finish). This holds for ``init_params='kmeans'`` without
checkpoints or warm start; otherwise every candidate is initialised before EM starts (a
checkpoint holds the EM state of every candidate).

Sharing passes changes the cost, never the answer: a candidate's statistics depend only on
its own parameters, centre and tiles (see :mod:`daskgmm.engine.estep`), and each candidate
is initialised from a random state of its own (``check_random_state(random_state)`` per
candidate), so with an integer ``random_state`` every candidate equals a separate
:class:`~daskgmm.models.gaussian.GaussianMixture` fit with the same settings and seed.

Criteria (lower is better for all three; scikit-learn's sign convention)::

    BIC = -2 log L + p log n
    AIC = -2 log L + 2 p
    ICL = BIC + 2 H,    H = -sum_i sum_k r_ik log r_ik

with ``log L`` the log-likelihood of the data under the fitted parameters, ``p`` the
number of free parameters, ``n`` the number of samples and ``r`` the responsibilities
(ICL as mclust defines it, Biernacki, Celeux & Govaert 2000, in this sign convention).
With sample weights, ``log L`` and ``H`` are weighted sums and ``n`` is the sum of the
weights. With ``missing='marginalize'``, ``log L`` is the observed-data log-likelihood
``sum_i log p(x_i,o)``, ``n`` counts the rows with at least one observed value, ``p`` is
unchanged and ``H`` is the entropy of the responsibilities given the observed values
(see the README's "Missing values").

Early stopping (``early_stopping=True``, off by default) stops a candidate that, by the
rule of :func:`cannot_win`, will not have the lowest criterion, so that a sweep is not
held up by slow candidates that are already out of the race.
"""

from __future__ import annotations

import importlib
import itertools
import math
import warnings
from collections.abc import Iterable, Sequence
from numbers import Integral
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted

from daskgmm.engine.covariance import COVARIANCE_TYPES
from daskgmm.engine.em import Candidate, FitInfo
from daskgmm.engine.passes import RowChunks
from daskgmm.engine.plan import FitPlan, PlanResult, criterion_values
from daskgmm.engine.starts import INIT_METHODS
from daskgmm.errors import InvalidDataError, InvalidParameterError
from daskgmm.models._base import (
    OWN_CONSTRAINTS,
    MixtureInput,
    adopt_fit,
    describe_fit,
    fit_fingerprint,
    parameter_token,
)

__all__ = ["CRITERIA", "EARLY_STOPPING_SAFETY", "EARLY_STOPPING_WINDOW", "MODELS",
           "GaussianMixtureSelector", "cannot_win", "criterion_values"]

#: ``model=`` -> the estimator class fitted for every candidate (module, class name).
#: Adding a mixture model to the selector is one entry here (its estimator must follow
#: :class:`~daskgmm.models._base.BaseMixture`).
MODELS: dict[str, tuple[str, str]] = {
    "gaussian": ("daskgmm.models.gaussian", "GaussianMixture"),
    "bayesian": ("daskgmm.models.bayesian", "BayesianGaussianMixture"),
}

#: The information criteria the selector can minimise.
CRITERIA = ("bic", "aic", "icl")

#: Early stopping judges a candidate by its last this many gains of the lower bound.
EARLY_STOPPING_WINDOW = 5
#: Early stopping assumes a candidate may still gain this many times the geometric
#: extrapolation of its recent gains (see :func:`cannot_win`).
EARLY_STOPPING_SAFETY = 10.0

#: The parameters the selector passes on to every candidate estimator, in
#: ``GaussianMixture``'s order (``n_components`` and ``covariance_type`` are swept).
_SHARED = ("tol", "reg_covar", "max_iter", "n_init", "init_params", "weights_init",
           "means_init", "precisions_init", "random_state", "warm_start", "verbose",
           "verbose_interval", "chunk_rows", "split_every", "dtype", "cache",
           "checkpoint_dir", "checkpoint_every", "algorithm", "batch_chunks",
           "learning_decay", "learning_offset", "missing")


def _selector_constraints() -> dict[str, list]:
    from sklearn.mixture import GaussianMixture as _SklearnGaussianMixture

    table = {k: v for k, v in _SklearnGaussianMixture._parameter_constraints.items()
             if k not in ("n_components", "covariance_type")}
    return {
        # Checked by the selector itself (an int or an iterable of them; a type or an
        # iterable of types), with messages that name the bad item.
        "n_components": "no_validation",
        "covariance_types": "no_validation",
        "criterion": [StrOptions(set(CRITERIA))],
        "model": [StrOptions(set(MODELS))],
        "early_stopping": ["boolean"],
        **table,
        **OWN_CONSTRAINTS,
        "init_params": [StrOptions(set(INIT_METHODS))],
        "model_params": [dict, None],
    }


# ---------------------------------------------------------------------------------------
# criteria and the early-stopping rule (pure functions)
# ---------------------------------------------------------------------------------------
def cannot_win(lower_bounds: Sequence[float], penalty: float, n: float, best_now: float,
               *, safety: float = EARLY_STOPPING_SAFETY,
               window: int = EARLY_STOPPING_WINDOW) -> bool:
    """The early-stopping rule: whether a running candidate is out of the race.

    A candidate's criterion is ``-2 n L + penalty`` (plus twice the entropy, which is
    never negative, for ICL), where ``L`` is its mean log-likelihood; EM only increases
    ``L``. The candidate is stopped when even an optimistic final ``L`` would leave its
    criterion above ``best_now``, the lowest current criterion of all the candidates.

    The optimistic final ``L`` is the current one plus ``safety`` times the geometric
    extrapolation of its recent gains: ``g r / (1 - r)`` for a last gain ``g`` and the
    mean ratio ``r`` between consecutive gains over the last ``window`` gains. Nothing is
    decided unless those gains are all positive and each smaller than the one before, so
    a candidate whose gains grow again (EM leaving a saddle, a typical reason for a slow
    start) is left running.

    It is a rule of thumb, not a guarantee: EM can speed up again after a long, steady
    slowdown. A stopped candidate keeps the parameters it reached; its criteria are
    computed like every other candidate's, and it is reported as not converged.

    Parameters
    ----------
    lower_bounds : sequence of float
        The candidate's mean log-likelihood after each iteration so far.
    penalty : float
        Its criterion's penalty (``p log n`` for BIC and ICL, ``2 p`` for AIC).
    n : float
        The number of samples (the sum of the weights with sample weights).
    best_now : float
        The lowest current criterion value among all candidates.
    safety, window :
        See above (defaults :data:`EARLY_STOPPING_SAFETY`,
        :data:`EARLY_STOPPING_WINDOW`).

    Examples
    --------
    Gains that halve (1, 0.5, ..., 1/32) promise at most 10 * 1/32 more:

    >>> bounds = [-4.0, -3.0, -2.5, -2.25, -2.125, -2.0625, -2.03125]
    >>> cannot_win(bounds, penalty=10.0, n=100, best_now=500.0)    # 2*100*(2.03125-0.3125)+10
    False
    >>> cannot_win(bounds, penalty=10.0, n=100, best_now=300.0)
    True
    """
    window = max(2, int(window))
    bounds = [float(b) for b in lower_bounds][-(window + 1):]
    if len(bounds) < window + 1 or not all(math.isfinite(b) for b in bounds):
        return False
    gains = [b - a for a, b in itertools.pairwise(bounds)]
    if gains[0] <= 0 or any(not 0 < later < earlier
                            for earlier, later in itertools.pairwise(gains)):
        return False
    ratio = (gains[-1] / gains[0]) ** (1.0 / (len(gains) - 1))
    remaining = safety * gains[-1] * ratio / (1.0 - ratio)
    optimistic = -2.0 * n * (bounds[-1] + remaining) + penalty
    return optimistic > best_now


class _EarlyStopping:
    """EM callback applying :func:`cannot_win` after every iteration (it marks stopped
    candidates inactive, so the next pass leaves them out)."""

    def __init__(self, criterion: str, n: float, n_features: int) -> None:
        self.criterion = criterion
        self.n = float(n)
        self.n_features = n_features
        self.stopped: set[int] = set()

    def penalty(self, cand: Candidate) -> float:
        p = cand.model.n_parameters(self.n_features)
        return 2.0 * p if self.criterion == "aic" else p * math.log(self.n)

    def current(self, cand: Candidate) -> float:
        """The candidate's criterion at its current mean log-likelihood."""
        value = -2.0 * self.n * cand.lower_bound + self.penalty(cand)
        if self.criterion == "icl":
            neg_entropy = getattr(cand.model, "neg_entropy", math.nan)
            value -= 2.0 * neg_entropy if math.isfinite(neg_entropy) else 0.0
        return value

    def __call__(self, info: Any) -> None:
        states = list(info.states)
        scores = [self.current(c) for c in states if math.isfinite(c.lower_bound)]
        if not scores:
            return
        best_now = min(scores)
        for cand in states:
            if cand.active and cannot_win(cand.lower_bounds, self.penalty(cand),
                                          self.n, best_now):
                cand.active = False
                self.stopped.add(cand.index)


class _EntropyOfLastEStep:
    """A candidate's model that also asks the E-step for the responsibilities' entropy
    and keeps the last value (early stopping by ICL needs it); everything else is the
    wrapped model's."""

    wants_entropy = True

    def __init__(self, model: Any) -> None:
        self._model = model
        self.neg_entropy = math.nan

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def lower_bound(self, stats: Any, state: Any) -> float:
        self.neg_entropy = float(stats["ent"])
        return self._model.lower_bound(stats, state)


def _with_entropy(build: Any) -> Any:
    """A model builder whose models keep the entropy of their last E-step."""
    return lambda survey: _EntropyOfLastEStep(build(survey))


# ---------------------------------------------------------------------------------------
# the estimator
# ---------------------------------------------------------------------------------------
class GaussianMixtureSelector(MixtureInput, DensityMixin, BaseEstimator):
    """Choose the number of components and the covariance type by BIC, AIC or ICL.

    Fits a mixture for every combination of ``n_components`` and ``covariance_types``
    (every ``GaussianMixture`` parameter below applies to each, with ``n_init``
    restarts per candidate) in shared passes over the data: one read of each chunk per
    EM iteration serves all the candidates still running, and one more pass computes
    the criteria of them all. The data are never gathered into memory.

    Parameters
    ----------
    n_components : int or iterable of int, default=range(1, 11)
        The numbers of components to try.
    covariance_types : str or iterable of str, default=('full', 'tied', 'diag', 'spherical')
        The covariance types to try.
    criterion : {'bic', 'aic', 'icl'}, default='bic'
        What to minimise (see the module docstring; lower is better for all three).
    model : {'gaussian', 'bayesian'}, default='gaussian'
        The mixture fitted for each candidate: :class:`daskgmm.GaussianMixture`
        (``'bayesian'`` needs ``daskgmm.BayesianGaussianMixture``).
    early_stopping : bool, default=False
        Stop candidates that cannot win before they converge (the rule of
        :func:`cannot_win`). Saves passes when slow candidates are far behind; the
        stopped candidates are marked in ``results_['stopped_early']``.
    tol, reg_covar, max_iter, n_init, init_params, random_state, verbose, \
verbose_interval, chunk_rows, split_every, dtype, cache, checkpoint_every, algorithm, \
batch_chunks, learning_decay, learning_offset, missing
        As for :class:`daskgmm.GaussianMixture`, applied to every candidate (with
        ``algorithm='incremental'`` or ``'online'`` the candidates share every group
        of chunks).
        ``random_state`` seeds each candidate's initialisation afresh: with an integer,
        every candidate equals a separate ``GaussianMixture`` fit with that seed.
    weights_init, means_init, precisions_init : array-like, default=None
        As for ``GaussianMixture``; only with a single ``n_components`` (and, for
        ``precisions_init``, a single covariance type).
    warm_start : bool, default=False
        Start the next ``fit`` of every candidate from its current solution (the
        candidates must be the same; ``n_init`` is then ignored).
    checkpoint_dir : str or path, default=None
        Checkpoint the EM state of every candidate here every ``checkpoint_every``
        iterations, and resume a sweep from the checkpoint found here.
    model_params : dict, default=None
        Further parameters of the candidate estimator that ``GaussianMixture`` does not
        have (e.g. the priors of the Bayesian mixture).

    Attributes
    ----------
    best_estimator_ : daskgmm.GaussianMixture
        The fitted candidate with the lowest criterion (usable and saveable on its own).
    best_params_ : dict
        Its ``n_components`` and ``covariance_type``.
    best_score_ : float
        Its criterion value (lower is better).
    best_index_ : int
        Its row in ``results_``.
    results_ : dict of lists
        One entry per candidate (``pandas.DataFrame(results_)`` makes the table):
        ``n_components``, ``covariance_type``, ``bic``, ``aic``, ``icl``,
        ``lower_bound`` (of its best restart), ``n_iter``, ``converged``,
        ``n_parameters``, ``seconds`` (its share of the EM passes' wall time: an
        iteration's time split equally among the candidates it advanced) and
        ``stopped_early``.
    estimators_ : list of daskgmm.GaussianMixture
        Every fitted candidate, in the order of ``results_``.
    n_features_in_ : int
    passes_, n_empty_rows_, observed_fraction_ :
        As for :class:`daskgmm.GaussianMixture`.

    Examples
    --------
    >>> import numpy as np
    >>> from daskgmm import GaussianMixtureSelector
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(-5, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
    >>> sel = GaussianMixtureSelector(n_components=range(1, 5), random_state=0).fit(X)
    >>> sel.best_params_
    {'n_components': 2, 'covariance_type': 'spherical'}
    """

    _parameter_constraints: ClassVar[dict] = _selector_constraints()

    def __init__(
        self,
        n_components: int | Iterable[int] = range(1, 11),
        covariance_types: str | Iterable[str] = COVARIANCE_TYPES,
        criterion: str = "bic",
        model: str = "gaussian",
        early_stopping: bool = False,
        *,
        tol: float = 1e-3,
        reg_covar: float = 1e-6,
        max_iter: int = 100,
        n_init: int = 1,
        init_params: str = "robust",
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
        model_params: dict[str, Any] | None = None,
    ) -> None:
        self.n_components = n_components
        self.covariance_types = covariance_types
        self.criterion = criterion
        self.model = model
        self.early_stopping = early_stopping
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
        self.model_params = model_params

    # ----------------------------------------------------------------------------------
    # the candidates
    # ----------------------------------------------------------------------------------
    def candidates(self) -> list[tuple[int, str]]:
        """The ``(n_components, covariance_type)`` pairs a fit tries, in the order of
        ``results_`` (covariance types outer, numbers of components inner).

        Raises
        ------
        InvalidParameterError
            If ``n_components`` or ``covariance_types`` is not valid.
        """
        ks = _component_values(self.n_components)
        types = _covariance_values(self.covariance_types)
        return [(k, cov) for cov in types for k in ks]

    def _fingerprint(self, chunks: RowChunks) -> dict[str, Any]:
        """What a checkpoint of this sweep must match: the mixtures' fingerprint, with
        the candidates and the model's own parameters spelt out."""
        fingerprint = fit_fingerprint(type(self).__name__, self.get_params(deep=False),
                                      chunks)
        config = fingerprint["config"]
        config["n_components"] = [k for k, _ in self.candidates()]
        config["covariance_types"] = [cov for _, cov in self.candidates()]
        config["model_params"] = {name: parameter_token(value) for name, value
                                  in sorted((self.model_params or {}).items())}
        return fingerprint

    def _model_class(self) -> type:
        module, name = MODELS[self.model]
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            raise InvalidParameterError(
                f"model={self.model!r} needs daskgmm.{name}, which this version of daskgmm "
                "does not have; use model='gaussian'."
            ) from None

    def _candidate_params(self, cls: type) -> dict[str, Any]:
        """The keyword arguments every candidate estimator shares."""
        accepted = cls().get_params(deep=False)
        params = {name: getattr(self, name) for name in _SHARED if name in accepted}
        # The selector checkpoints the sweep; a candidate must not resume it on a refit.
        params["checkpoint_dir"] = None
        extra = dict(self.model_params or {})
        for name in extra:
            if name not in accepted or name in ("n_components", "covariance_type"):
                raise InvalidParameterError(
                    f"model_params: {name!r} is not a parameter of {cls.__name__} that the "
                    "selector leaves free (n_components and covariance_type are swept; "
                    "the GaussianMixture parameters are the selector's own)."
                )
            if name in params:
                raise InvalidParameterError(
                    f"model_params: give {name!r} as a parameter of the selector itself."
                )
        return {**params, **extra}

    def _check_user_init(self, specs: list[tuple[int, str]]) -> None:
        ks = {k for k, _ in specs}
        types = {cov for _, cov in specs}
        for name in ("weights_init", "means_init", "precisions_init"):
            if getattr(self, name) is not None and len(ks) > 1:
                raise InvalidParameterError(
                    f"{name} cannot be given with several n_components (its shape depends "
                    f"on n_components, here {sorted(ks)}); give a single n_components or "
                    f"leave {name}=None."
                )
        if self.precisions_init is not None and len(types) > 1:
            raise InvalidParameterError(
                "precisions_init cannot be given with several covariance_types (its shape "
                f"depends on the type, here {sorted(types)}); give a single type or leave "
                "precisions_init=None."
            )

    def _warm_estimators(self, specs: list[tuple[int, str]]) -> list[Any] | None:
        """The fitted candidates to continue (warm start), or None."""
        if not (self.warm_start and hasattr(self, "estimators_")):
            return None
        previous = [(e.n_components, e.covariance_type) for e in self.estimators_]
        if previous != specs:
            raise InvalidParameterError(
                "warm_start=True continues the candidates of the previous fit, but "
                "n_components or covariance_types changed since; set warm_start=False "
                "to start afresh."
            )
        return list(self.estimators_)

    # ----------------------------------------------------------------------------------
    # fitting
    # ----------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, sample_weight: Any = None, *,
            sample_dim: str | None = None) -> GaussianMixtureSelector:
        """Fit every candidate in shared passes and keep the one with the lowest
        criterion.

        Parameters
        ----------
        X : array-like, dask.array.Array, pandas or dask DataFrame, or xarray.DataArray
            The samples, ``(n_samples, n_features)``, as ``GaussianMixture.fit`` takes
            them. A Dask array is processed chunk by chunk and never loaded.
        y : Ignored
        sample_weight : array-like, dask array or Series of shape (n_samples,), optional
            Non-negative weight of every sample (they weight every candidate's fit and
            the criteria: weighted log-likelihood, ``n`` = the sum of the weights).
        sample_dim : str, optional
            For an ``xarray.DataArray``: the sample dimension (default: its first).

        Returns
        -------
        self
        """
        self._validate_params()
        pairs = self.candidates()
        self._check_user_init(pairs)
        if self.early_stopping and self.algorithm != "batch":
            raise InvalidParameterError(
                f"early_stopping=True needs algorithm='batch' (EM by whole passes), got "
                f"algorithm={self.algorithm!r}."
            )
        self._sample_dim = sample_dim
        cls = self._model_class()
        warm = self._warm_estimators(pairs)
        if warm is not None:
            estimators = warm
        else:
            shared = self._candidate_params(cls)
            estimators = [cls(n_components=k, covariance_type=cov, **shared)
                          for k, cov in pairs]
        chunks = self._chunks(X, reset=True, sample_weight=sample_weight)
        n_samples, n_features = chunks.shape
        largest = max(k for k, _ in pairs)
        if n_samples < largest:
            raise InvalidDataError(
                f"Expected n_samples >= n_components for every candidate, but the largest "
                f"n_components is {largest} and n_samples = {n_samples}; try fewer "
                "components."
            )
        if warm is not None and estimators[0].n_features_in_ != n_features:
            raise InvalidDataError(
                f"X has {n_features} features, but the candidates to continue "
                f"(warm_start=True) were fitted on {estimators[0].n_features_in_}; set "
                "warm_start=False to start afresh."
            )
        dtype = np.dtype(chunks.data.dtype)
        specs = []
        for est in estimators:
            est.n_features_in_ = n_features
            if hasattr(self, "feature_names_in_"):
                est.feature_names_in_ = self.feature_names_in_
            elif hasattr(est, "feature_names_in_"):
                del est.feature_names_in_
            specs.append(describe_fit(est, n_features, dtype, warm=warm is not None))
        stopping = None
        if self.early_stopping:
            total = chunks.total_weight
            stopping = _EarlyStopping(self.criterion,
                                      float(n_samples if total is None else total),
                                      n_features)
            if self.criterion == "icl":
                for spec in specs:
                    spec.build = _with_entropy(spec.build)
        plan = FitPlan(specs, self._em_options(), self._algorithm(),
                       checkpointer=self._checkpointer(chunks), criteria=True,
                       callbacks=[stopping] if stopping is not None else [])
        labels = [label for spec in specs for label in spec.restart_labels()]
        info = FitInfo(self.max_iter, len(labels), chunks.n_chunks, n_samples,
                       self.algorithm, labels, self.tol)
        result = self._run(chunks, plan, info)
        for i, est in enumerate(estimators):
            adopt_fit(est, result, i, dtype)
        self._record(pairs, estimators, result, stopping)
        best = self.best_estimator_
        if not best.converged_ and self.max_iter > 0:
            warnings.warn(
                f"The best candidate ({best.n_components} components, "
                f"{best.covariance_type}) did not converge. Try different init parameters, "
                "or increase max_iter, tol, or check for degenerate data.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    def _record(self, pairs: list[tuple[int, str]], estimators: list[Any],
                result: PlanResult, stopping: _EarlyStopping | None) -> None:
        stopped = stopping.stopped if stopping is not None else set()
        results: dict[str, list[Any]] = {key: [] for key in (
            "n_components", "covariance_type", "bic", "aic", "icl", "lower_bound",
            "n_iter", "converged", "n_parameters", "seconds", "stopped_early",
            "degenerate", "degenerate_restarts")}
        for (k, cov), est, group, best, score in zip(
                pairs, estimators, result.candidates, result.best, result.criteria,
                strict=True):
            results["n_components"].append(int(k))
            results["covariance_type"].append(cov)
            for name in CRITERIA:
                results[name].append(float(score[name]))
            results["lower_bound"].append(float(est.lower_bound_))
            results["n_iter"].append(int(est.n_iter_))
            results["converged"].append(bool(est.converged_))
            results["n_parameters"].append(int(est._n_parameters()))
            results["seconds"].append(float(sum(c.seconds for c in group)))
            results["stopped_early"].append(any(c.index in stopped for c in group)
                                            and not est.converged_)
            results["degenerate"].append(bool(best.degenerate))
            results["degenerate_restarts"].append(sum(bool(c.degenerate) for c in group))
        values = np.array(results[self.criterion], dtype=np.float64)
        ranked = np.where(np.isfinite(values), values, np.inf)
        # A candidate whose chosen restart is degenerate never wins over one that is not.
        sound = ~np.array(results["degenerate"], dtype=bool)
        if sound.any():
            ranked = np.where(sound, ranked, np.inf)
        best = int(np.argmin(ranked))
        self.estimators_ = estimators
        self.results_ = results
        self.best_index_ = best
        self.best_estimator_ = estimators[best]
        self.best_params_ = {"n_components": int(pairs[best][0]),
                             "covariance_type": pairs[best][1]}
        self.best_score_ = float(values[best])

    # ----------------------------------------------------------------------------------
    # the best estimator's methods
    # ----------------------------------------------------------------------------------
    def _best(self) -> Any:
        check_is_fitted(self, "best_estimator_")
        return self.best_estimator_

    def predict(self, X: Any, *, sample_dim: str | None = None) -> Any:
        """Most probable component of each sample under the best model (lazy Dask array
        for Dask input)."""
        return self._best().predict(X, sample_dim=sample_dim)

    def predict_proba(self, X: Any, *, sample_dim: str | None = None) -> Any:
        """Posterior probability of each component of the best model, shape (n, K)."""
        return self._best().predict_proba(X, sample_dim=sample_dim)

    def score_samples(self, X: Any, *, sample_dim: str | None = None) -> Any:
        """Log-likelihood of each sample under the best model."""
        return self._best().score_samples(X, sample_dim=sample_dim)

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """(Weighted) mean per-sample log-likelihood of ``X`` under the best model."""
        return self._best().score(X, sample_weight=sample_weight)

    def bic(self, X: Any) -> float:
        """Bayesian information criterion of the best model on ``X`` (lower is better)."""
        return self._best().bic(X)

    def aic(self, X: Any) -> float:
        """Akaike information criterion of the best model on ``X`` (lower is better)."""
        return self._best().aic(X)

    def fit_predict(self, X: Any, y: Any = None, sample_weight: Any = None, *,
                    sample_dim: str | None = None) -> Any:
        """Fit, then return the most probable component of each sample under the best
        model (lazy for Dask input)."""
        return self.fit(X, sample_weight=sample_weight, sample_dim=sample_dim).predict(X)

    def sample(self, n_samples: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Draw samples from the best model."""
        return self._best().sample(n_samples)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self.missing == "marginalize"
        return tags


# ---------------------------------------------------------------------------------------
# parameter checks
# ---------------------------------------------------------------------------------------
def _component_values(value: Any) -> list[int]:
    if isinstance(value, Integral) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise InvalidParameterError(
            "n_components must be an int >= 1 or an iterable of them (e.g. range(1, 11)), "
            f"got {value!r}."
        )
    else:
        items = list(value)
    if not items:
        raise InvalidParameterError("n_components must list at least one value, got none.")
    out: list[int] = []
    for position, item in enumerate(items):
        if (isinstance(item, bool) or not isinstance(item, Integral | np.integer)
                or int(item) < 1):
            raise InvalidParameterError(
                f"n_components[{position}] must be an int >= 1, got {item!r}.")
        if int(item) in out:
            raise InvalidParameterError(
                f"n_components lists {int(item)} twice; give each value once.")
        out.append(int(item))
    return out


def _covariance_values(value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else (
        list(value) if isinstance(value, Iterable) else None)
    if not items:
        raise InvalidParameterError(
            "covariance_types must be one of 'full', 'tied', 'diag', 'spherical' or an "
            f"iterable of them, got {value!r}."
        )
    out: list[str] = []
    for position, item in enumerate(items):
        if item not in COVARIANCE_TYPES:
            raise InvalidParameterError(
                f"covariance_types[{position}] must be one of "
                f"{', '.join(repr(t) for t in COVARIANCE_TYPES)}, got {item!r}.")
        if item in out:
            raise InvalidParameterError(
                f"covariance_types lists {item!r} twice; give each type once.")
        out.append(item)
    return out
