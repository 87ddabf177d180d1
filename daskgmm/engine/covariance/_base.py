"""What every covariance type provides: the contract of :mod:`daskgmm.engine.covariance`.

A covariance type is a stateless singleton. Its methods fall in three groups:

Parameters
    shapes, the number of free parameters, conversions between covariances, precisions
    and their Cholesky factors (scikit-learn's parameterisation: ``precisions_cholesky``
    ``L`` with ``L Lᵀ`` the precision), validation of user-given precisions and of loaded
    parameters.
E-step (run on the workers, plain NumPy)
    :meth:`operands` turns the parameters of a *batch* of components (the components of
    one or several candidate mixtures of this type, concatenated) into the arrays the
    kernel multiplies with; :meth:`project` computes every component's squared Mahalanobis
    distance for a tile of centred rows; :meth:`accumulate` then adds the tile's weighted
    first and second moments. Both write into a per-thread workspace, so a steady-state
    tile allocates nothing large.
M-step (run on the driver)
    :meth:`scatter` turns the reduced second-order statistic into
    ``sum_i r_ik (x_i - m_k)(x_i - m_k)ᵀ`` in this type's shape, from which
    :meth:`empirical_covariances` gives scikit-learn's ``_estimate_gaussian_parameters``
    covariances; :meth:`expand`, :meth:`pool` and :meth:`outer` are the pieces the
    variational (Bayesian) M-step needs.

The second-order statistic of a batch is accumulated about reference points so that a
large offset never enters a sum of squares: about the common centre ``c0`` of the pass for
``'tied'``, ``'diag'`` and ``'spherical'``, and about each component's own previous mean,
*whitened* by its previous precision Cholesky factor, for ``'full'``.
"""

from __future__ import annotations

import itertools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from daskgmm.errors import DegenerateComponentError

#: scikit-learn adds ten machine epsilons to every soft count before dividing by it.
EPS10 = 10 * np.finfo(np.float64).eps


def degenerate_message(components: list[int], what: str) -> str:
    """The message of :class:`DegenerateComponentError`, naming the components."""
    which = ", ".join(str(k) for k in components[:10])
    if len(components) > 10:
        which += ", ..."
    # The first two sentences are scikit-learn's message, which code may match on.
    return (
        "Fitting the mixture model failed because some components have ill-defined "
        "empirical covariance (for instance caused by singleton or collapsed samples). "
        "Try to decrease the number of components, increase reg_covar, or scale the "
        f"input data. Here component(s) {which} {what}."
    )


@dataclass(frozen=True, eq=False)
class Batch:
    """The E-step operands of the components of one or several candidates of one type.

    Built on the driver once per iteration (:meth:`CovarianceType.operands`) and shipped
    to the workers inside the pass's plan.

    Attributes
    ----------
    cov : CovarianceType
    sizes : tuple of int
        Components of each candidate, in order (they are concatenated).
    arrays : dict
        Type-specific operands, already in the compute dtype.
    """

    cov: CovarianceType
    sizes: tuple[int, ...]
    arrays: dict[str, Any]

    @property
    def n_components(self) -> int:
        """Components in the batch (all candidates together)."""
        return sum(self.sizes)

    @property
    def slices(self) -> list[slice]:
        """Each candidate's rows of the batch's per-component arrays.

        Products whose shape involves the number of components are computed one
        candidate at a time on these slices, so a candidate's numbers do not depend on
        which other candidates share its batch (BLAS may block a product differently
        for a different number of rows).
        """
        bounds = np.cumsum((0, *self.sizes))
        return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


class CovarianceType(ABC):
    """Everything daskgmm knows about one covariance type (see the module docstring)."""

    name: ClassVar[str]

    def __repr__(self) -> str:
        return f"<covariance type {self.name!r}>"

    def __reduce__(self) -> tuple:
        # A singleton: unpickled (on a worker) as the same registered instance.
        return (_lookup, (self.name,))

    # ----------------------------------------------------------------------------------
    # parameters
    # ----------------------------------------------------------------------------------
    @abstractmethod
    def shape(self, n_components: int, n_features: int) -> tuple[int, ...]:
        """Shape of ``covariances_``, ``precisions_`` and ``precisions_cholesky_``."""

    @abstractmethod
    def n_parameters(self, n_components: int, n_features: int) -> int:
        """Free parameters of the covariances."""

    @abstractmethod
    def cholesky(self, covariances: np.ndarray) -> np.ndarray:
        """Lower Cholesky factors ``C`` of the covariances (``C Cᵀ = Σ``; square roots of
        variances for the diagonal types).

        Raises
        ------
        DegenerateComponentError
            If a covariance is not positive definite.
        """

    @abstractmethod
    def precisions_cholesky_from_cholesky(self, chol: np.ndarray) -> np.ndarray:
        """``L = C⁻ᵀ`` from the covariance factors of :meth:`cholesky`."""

    def precisions_cholesky(self, covariances: np.ndarray) -> np.ndarray:
        """scikit-learn's ``precisions_cholesky_`` from covariances.

        Raises
        ------
        DegenerateComponentError
            If a covariance is not positive definite, or so small that its precision
            overflows.
        """
        return self.factorise(covariances)[1]

    def factorise(self, covariances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The covariances' Cholesky factors and the precisions' (see
        :meth:`precisions_cholesky`, which raises the same errors)."""
        chol = self.cholesky(covariances)
        prec_chol = self.precisions_cholesky_from_cholesky(chol)
        with np.errstate(over="ignore", invalid="ignore"):
            finite = np.isfinite(self.precisions(prec_chol))
        if not finite.all():
            rows = (finite.reshape(len(finite), -1) if self.per_component_shape
                    else finite.reshape(1, -1))
            bad = np.nonzero(~rows.all(axis=1))[0]
            raise DegenerateComponentError(degenerate_message(
                [int(k) for k in bad],
                "have a covariance too small to invert (its precision overflows)"))
        return chol, prec_chol

    @abstractmethod
    def precisions(self, precisions_cholesky: np.ndarray) -> np.ndarray:
        """Precision matrices (or vectors) ``L Lᵀ``."""

    @abstractmethod
    def precisions_cholesky_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        """Cholesky factors ``L`` of given precisions, computed as scikit-learn does."""

    @abstractmethod
    def covariances_from_precisions(self, precisions: np.ndarray) -> np.ndarray:
        """Covariances from precisions (their inverses)."""

    @abstractmethod
    def covariance_cholesky_from_precisions_cholesky(self, prec_chol: np.ndarray
                                                     ) -> np.ndarray:
        """``C = L⁻ᵀ``: the covariance factors implied by given precision factors."""

    @abstractmethod
    def log_det_cholesky(self, precisions_cholesky: np.ndarray,
                         n_features: int) -> np.ndarray | float:
        """``log det L`` of every component (``-0.5 log det Σ``); a float for ``'tied'``."""

    @abstractmethod
    def check_precisions(self, precisions: np.ndarray, n_components: int,
                         n_features: int) -> None:
        """Validate user-given ``precisions_init`` (shape, symmetry, positivity).

        Raises
        ------
        daskgmm.errors.InvalidParameterError
            With scikit-learn's wording.
        """

    @abstractmethod
    def check_consistency(self, covariances: np.ndarray, precisions_cholesky: np.ndarray,
                          precisions: np.ndarray) -> str | None:
        """Why loaded parameters are not a valid model of this type (``None`` if they are):
        positive definite covariances, triangular factors with a positive diagonal that
        match the covariances and the precisions."""

    #: Whether the parameter arrays have a leading component axis (all but ``'tied'``).
    per_component_shape: ClassVar[bool] = True

    # ----------------------------------------------------------------------------------
    # E-step (workers)
    # ----------------------------------------------------------------------------------
    @abstractmethod
    def operands(self, means_c: list[np.ndarray], precisions_cholesky: list[np.ndarray],
                 log_constants: list[np.ndarray], dtype: np.dtype) -> Batch:
        """The batch of the given candidates' components.

        Parameters
        ----------
        means_c : list of ndarray of shape (K_c, D)
            Each candidate's means minus the pass's centre ``c0``.
        precisions_cholesky : list of ndarray
            Each candidate's precision Cholesky factors.
        log_constants : list of ndarray of shape (K_c,)
            Each component's weighted log-density less ``-0.5`` times its squared
            Mahalanobis distance (see :class:`daskgmm.engine.estep.Components`); folded
            into the operands wherever a product can carry it.
        dtype : numpy.dtype
            The compute dtype.
        """

    @abstractmethod
    def row_bytes(self, n_components: int, n_features: int, itemsize: int) -> int:
        """Bytes of workspace one row of a tile needs: the arrays :meth:`project` and
        :meth:`accumulate` really build (the tiles are sized from it)."""

    @abstractmethod
    def project(self, xt: np.ndarray, batch: Batch, ws: Any) -> np.ndarray:
        """Weighted log-densities ``log w_k + log N(x_i | k)`` of the tile's rows, shape
        ``(K, n)`` (for a Bayesian mixture, its variational counterparts).

        ``xt`` is the *affine* tile in the compute dtype, laid out features by rows,
        ``(D + 1, n)`` C-contiguous: the rows minus ``c0``, transposed, and a last row of
        ones, through which a GEMM adds per-component constants for free. (With the
        sample axis innermost the element-wise passes run along contiguous memory, and
        every GEMM takes C-ordered operands: with few components, a transposed operand
        makes this environment's GEMM about twice as slow.) The result lives in the
        workspace ``ws`` (overwritten by the next tile).
        """

    @abstractmethod
    def accumulate(self, xt: np.ndarray, wr: np.ndarray, w: np.ndarray | None, batch: Batch,
                   ws: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tile's weighted moments, after :meth:`project` on the same tile.

        Parameters
        ----------
        xt : ndarray of shape (D + 1, n)
            The affine tile.
        wr : ndarray of shape (K, n)
            Responsibilities times sample weights; may be overwritten.
        w : ndarray of shape (n,) or None
            Sample weights (None: all ones).

        Returns
        -------
        nk : ndarray of shape (K,)
            ``sum_i wr_ki`` (one GEMM with the column of ones gives it with ``sx``).
        sx : ndarray of shape (K, D)
            ``sum_i wr_ki (x_i - c0)``.
        s2 : ndarray
            The second-order statistic of the batch (type-specific shape), in the
            compute dtype; :meth:`split` cuts it into the candidates' parts.
        """

    @staticmethod
    def first_moments(xt: np.ndarray, wr: np.ndarray, batch: Batch, ws: Any
                      ) -> tuple[np.ndarray, np.ndarray]:
        """``nk`` and ``sx`` of a tile: ``wr xtᵀ``, one candidate's slice at a time."""
        D = len(xt) - 1
        moments = ws.get("moments", (len(wr), D + 1), xt.dtype)
        for part in batch.slices:
            np.matmul(wr[part], xt.T, out=moments[part])
        return moments[:, D], moments[:, :D]

    @abstractmethod
    def split(self, s2: np.ndarray, sizes: tuple[int, ...]) -> list[np.ndarray]:
        """Each candidate's part of a batch's second-order statistic."""

    @abstractmethod
    def zero_statistic(self, n_components: int, n_features: int) -> np.ndarray:
        """A float64 zero second-order statistic of one candidate."""

    # ----------------------------------------------------------------------------------
    # M-step (driver)
    # ----------------------------------------------------------------------------------
    @abstractmethod
    def scatter(self, s2: np.ndarray, nk_raw: np.ndarray, sx: np.ndarray, means: np.ndarray,
                c0: np.ndarray, ref_means: np.ndarray, ref_chol: np.ndarray | None
                ) -> np.ndarray:
        """``sum_i r_ik (x_i - m_k)(x_i - m_k)ᵀ`` (this type's shape, not yet divided).

        Parameters
        ----------
        s2 : ndarray
            The reduced second-order statistic.
        nk_raw : ndarray of shape (K,)
            Reduced soft counts (without scikit-learn's ``10 eps``).
        sx : ndarray of shape (K, D)
            ``sum_i r_ik (x_i - c0)``.
        means : ndarray of shape (K, D)
            The new means ``m_k``.
        c0 : ndarray of shape (D,)
            The centre of the pass.
        ref_means, ref_chol :
            The means and covariance Cholesky factors the statistic was whitened with
            (``'full'`` only; ``ref_chol`` None means no whitening).
        """

    def canonical(self, s2: np.ndarray, nk_raw: np.ndarray, sx: np.ndarray,
                  centre: np.ndarray, ref_means: np.ndarray, ref_chol: np.ndarray | None
                  ) -> np.ndarray:
        """The second-order statistic about ``centre``, unwhitened.

        Statistics computed with different parameters (the groups of incremental EM,
        the mini-batches of online EM) add up only in a frame that does not depend on
        the parameters: this one. The types that accumulate about the centre already
        are in it; ``'full'`` converts its whitened statistic.
        """
        return s2

    @abstractmethod
    def precision_trace(self, scatter: np.ndarray, precisions: np.ndarray,
                        n_features: int) -> np.ndarray | float:
        """``sum_i r_ik (x_i - m_k)ᵀ P_k (x_i - m_k)`` per component (a total for
        ``'tied'``) from the :meth:`scatter` about ``m_k`` and the precisions."""

    def empirical_covariances(self, scatter: np.ndarray, nk: np.ndarray,
                              reg_covar: float) -> np.ndarray:
        """scikit-learn's covariance estimate: ``scatter / nk`` plus ``reg_covar`` on the
        diagonal (``nk`` includes the ``10 eps``)."""
        cov = scatter / self.expand(nk)
        return self.add_to_diagonal(cov, reg_covar)

    @abstractmethod
    def add_to_diagonal(self, cov: np.ndarray, value: float) -> np.ndarray:
        """``cov`` with ``value`` added to every variance (in place when possible)."""

    @abstractmethod
    def expand(self, values: np.ndarray) -> np.ndarray:
        """Per-component ``values`` (K,) shaped to broadcast against this type's
        per-component arrays (``'tied'``: its per-component arrays are ``(K, D, D)``)."""

    def pool(self, per_component: np.ndarray) -> np.ndarray:
        """Per-component arrays combined into the parameter's shape (identity, but for
        ``'tied'``, which averages over the components)."""
        return per_component

    @abstractmethod
    def outer(self, diff: np.ndarray) -> np.ndarray:
        """``diff_k diff_kᵀ`` of each row of ``diff`` (K, D), in this type's per-component
        shape (``'diag'``: the squares; ``'spherical'``: their mean)."""


_REGISTRY: dict[str, CovarianceType] = {}


def register(cov: CovarianceType) -> CovarianceType:
    """Add a covariance type to the registry (each type module registers itself)."""
    _REGISTRY[cov.name] = cov
    return cov


def _lookup(name: str) -> CovarianceType:
    from daskgmm.engine import covariance  # noqa: F401 - registers the built-in types

    return _REGISTRY[name]
