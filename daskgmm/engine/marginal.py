"""The E-step of a chunk whose rows may miss values (NaN): plain NumPy, no Dask.

A missing value is a NaN; the model treats it as missing at random and marginalises it
(Ghahramani and Jordan, *Supervised learning from incomplete data via an EM approach*,
NIPS 1994). For a row with observed features ``o`` and missing features ``m``:

- under component ``k`` the observed features are Gaussian with mean ``μ_o`` and
  covariance ``Σ_oo``, so the row is scored (log-densities, log-sum-exp,
  responsibilities) by the marginal densities of ``x_o`` alone;
- the sufficient statistics take, for the missing features, the conditional mean
  ``x̂_m = μ_m + Σ_mo Σ_oo⁻¹ (x_o - μ_o)`` in the first moments and
  ``x̂ x̂ᵀ + Σ̃`` in the second, with ``Σ̃ = Σ_mm - Σ_mo Σ_oo⁻¹ Σ_om`` the conditional
  covariance (zero outside the missing block), so that the unchanged M-step is the EM
  update of the observed-data likelihood.

Everything is computed from the precision ``Λ = L Lᵀ`` that the E-step already has,
through the block ``Λ_mm`` of the missing features only: ``Σ̃ = Λ_mm⁻¹``,
``x̂_m - μ_m = -Λ_mm⁻¹ Λ_mo (x_o - μ_o)``, ``det Σ_oo = det Σ · det Λ_mm``, and the
marginal Mahalanobis distance of ``x_o`` is the full one of the filled row ``x̂``. A row
with few missing values thus costs a factorisation of a small matrix, whatever the number
of features. Hence the weighted log-density of a row under component ``k`` is

    log_constant_k - ½ (x̂ - μ_k)ᵀ Λ_k (x̂ - μ_k) + ½ log det(2π Σ̃_k),

with ``log_constant_k`` the one of :class:`~daskgmm.engine.estep.Components` (for a
Gaussian mixture ``log w_k - ½ log det(2π Σ_k)``, which turns the whole into
``log w_k + log N(x_o | μ_o, Σ_oo)``).

The variational (Bayesian) mixture uses the same formula, exactly: its E-step is a
Gaussian one with ``Λ = E[Λ_k]`` (``ν_k W_k``) and other constants, and with the missing
values as latent variables in the mean-field factorisation ``q(z, x_m) q(π, μ, Λ)`` the
optimal ``q(x_m | z = k)`` is the Gaussian conditional of ``N(m_k, E[Λ_k]⁻¹)`` and
``log q(z = k)`` is the formula above (the ``x_m`` integral of ``exp E[log p(x, z)]``).
Its bound gains the entropy of ``q(x_m | z)``: the ``h_missing`` statistic below.

Layout of the work. Rows without a missing value go to
:func:`~daskgmm.engine.estep.estep_statistics` unchanged (the whole chunk when it has no
NaN, so the result is then today's to the bit). The other rows are grouped by their
pattern of missing features (:func:`missing_layout`). ``'diag'`` and ``'spherical'``
need no pattern: a missing feature's conditional mean and variance are the component's
own, so masks enter GEMMs with the per-feature constants. For ``'full'`` and ``'tied'``
the rows are sorted by (number of missing features ``q``, pattern) and walked in tiles
of equal ``q``; a tile factorises and inverts ``Λ_mm`` of all its patterns and
components at once (in one compiled loop where numba is installed,
:func:`daskgmm.engine.fused.spd_inverses`; else one batched LAPACK call and a
substitution vectorised over the blocks), then applies each row's ``Λ_mm⁻¹`` (a GEMM
when the tile holds one pattern); the products with the rows stay batched GEMMs over
components (``(K, n, D) @ (D, D)``). Python loops run over tiles (and, without numba,
over the ``q`` missing features of the inversion), never over rows or patterns: the
cost is a complete-data E-step's few GEMMs per row (about three times its flops) plus
``O(K q³)`` flops and ``O(K q²)`` memory traffic per distinct pattern and tile.

Incomplete rows are computed in float64 whatever the plan's dtype.

Statistics (per candidate, on top of :mod:`daskgmm.engine.stats`)
------------------------------------------------------------------
``n``, ``ll``, ``nk``, ``sx``, ``s2``, ``ent``
    as for complete data, ``ll`` being the observed-data log-likelihood
    ``sum_i w_i log p(x_i,o)``, ``sx`` and ``s2`` holding the conditional expectations of
    the missing values, and ``ent`` the responsibilities' negative entropy (only that:
    ICL needs it alone); ``n`` counts the rows with at least one observed value;
``n_empty``
    the sample weight of the rows with no observed value: they are left out of every
    other statistic (a fit with them is the fit without them); prediction gives them,
    under a Gaussian mixture, the score ``log 1 = 0`` and the mixture weights as
    responsibilities (under a Bayesian one, what its variational E-step gives a row
    with nothing observed: ``E[log π_k]`` and the expected log-determinant terms);
``n_obs``
    ``sum_i w_i (number of observed values of x_i)``;
``h_missing`` (only with ``ent``)
    ``sum_i w_i sum_k r_ik H[q(x_i,m | z_i = k)]``, the entropy of the missing values'
    conditional distributions, ``½ log det(2πe Σ̃_k)`` per row and component. With it,
    ``ent - h_missing`` is the negative entropy of ``q(z, x_m)``: the term a variational
    bound or a free energy needs in place of ``ent``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from daskgmm.engine import estep
from daskgmm.engine.covariance import CovarianceType
from daskgmm.engine.estep import Components, EStepPlan, check_weights_block, chunk_digest
from daskgmm.engine.stats import PassResult, Stats
from daskgmm.errors import DegenerateComponentError, InvalidDataError, NonFiniteDataError

_LOG_2PI = math.log(2.0 * math.pi)
#: Working memory of one tile of incomplete rows, per candidate.
MARGINAL_TILE_BYTES = 8 * 2**20
#: Fewest rows in a tile of incomplete rows.
MIN_TILE_ROWS = 64


# --------------------------------------------------------------------------------------
# operands (built on the driver, shipped once per pass)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class MarginalOperands:
    """What the E-step of incomplete rows needs of one candidate, in float64.

    Everything follows from the candidate's :class:`~daskgmm.engine.estep.Components`
    and its centre (:meth:`from_components`): no model has to provide more.

    Attributes
    ----------
    covariance : CovarianceType
    centre : ndarray of shape (D,)
        ``c0``, the centre of the candidate's plan group.
    offsets : ndarray of shape (K, D)
        ``e_k = μ_k - c0``.
    log_constant : ndarray of shape (K,)
        As in :class:`~daskgmm.engine.estep.Components`.
    precisions : ndarray
        ``Λ_k``: ``(K, D, D)`` for ``'full'``, ``(1, D, D)`` for ``'tied'`` (shared),
        ``(K, D)`` (the diagonal) for ``'diag'`` and ``'spherical'``.
    precisions_cholesky : ndarray or None
        ``L_k`` as ``(K, D, D)`` or ``(1, D, D)`` for ``'full'`` and ``'tied'``.
    empty_constant : ndarray of shape (K,)
        The weighted log-density of a row with no observed value,
        ``log_constant_k + ½ log det(2π Σ_k)`` (``log w_k`` for a Gaussian mixture).
    """

    covariance: CovarianceType
    centre: np.ndarray
    offsets: np.ndarray
    log_constant: np.ndarray
    precisions: np.ndarray
    precisions_cholesky: np.ndarray | None
    empty_constant: np.ndarray

    @classmethod
    def from_components(cls, components: Components, centre: np.ndarray
                        ) -> MarginalOperands:
        """The operands of ``components`` with tiles centred on ``centre``."""
        cov = components.covariance
        means = np.asarray(components.means, dtype=np.float64)
        K, D = means.shape
        centre = np.asarray(centre, dtype=np.float64)
        L = np.asarray(components.precisions_cholesky, dtype=np.float64)
        log_det = np.broadcast_to(cov.log_det_cholesky(L, D), (K,))
        constant = np.asarray(components.log_constant, dtype=np.float64)
        chol = None
        if cov.name in ("full", "tied"):
            chol = np.ascontiguousarray(L.reshape(-1, D, D))
            prec = chol @ chol.transpose(0, 2, 1)
            prec = 0.5 * (prec + prec.transpose(0, 2, 1))
        else:
            prec = np.ascontiguousarray(np.broadcast_to(
                (L**2).reshape(K, -1), (K, D)))
        return cls(cov, centre, means - centre, constant, prec, chol,
                   constant - log_det + 0.5 * D * _LOG_2PI)

    @property
    def n_components(self) -> int:
        """``K``."""
        return len(self.offsets)

    @property
    def dense(self) -> bool:
        """Whether the covariances couple the features (``'full'``, ``'tied'``)."""
        return self.precisions_cholesky is not None


@dataclass(frozen=True, eq=False)
class MarginalPlan:
    """Everything a pass's chunk tasks need for data with missing values, shipped once
    per pass: the complete-data plan (for the complete rows) and every candidate's
    :class:`MarginalOperands`, in the plan's order.

    Build it with :func:`make_marginal_plan`.
    """

    plan: EStepPlan
    operands: tuple[MarginalOperands, ...]
    tile_bytes: int = MARGINAL_TILE_BYTES

    @property
    def n_candidates(self) -> int:
        """Number of candidate mixtures."""
        return len(self.operands)

    @property
    def digest(self) -> bool:
        """Whether the pass digests every chunk (the complete-data plan's setting)."""
        return self.plan.digest

    @property
    def entropy(self) -> bool:
        """Whether the pass computes ``ent`` (and ``h_missing``)."""
        return self.plan.entropy


def make_marginal_plan(candidates: Sequence[Components], centre: np.ndarray, *,
                       dtype: str | np.dtype = "float64", entropy: bool = False,
                       digest: bool = False, tile_bytes: int | None = None,
                       marginal_tile_bytes: int | None = None) -> MarginalPlan:
    """The complete-data plan of :func:`~daskgmm.engine.estep.make_plan` (same
    arguments) and the candidates' operands for incomplete rows.

    ``marginal_tile_bytes`` bounds the working memory of one tile of incomplete rows
    (default :data:`MARGINAL_TILE_BYTES`).
    """
    plan = estep.make_plan(candidates, centre, dtype=dtype, entropy=entropy,
                           digest=digest, tile_bytes=tile_bytes)
    centres = np.asarray(centre, dtype=np.float64)
    if centres.ndim == 1:
        centres = np.broadcast_to(centres, (len(candidates), len(centres)))
    operands = tuple(MarginalOperands.from_components(c, c0)
                     for c, c0 in zip(candidates, centres, strict=True))
    return MarginalPlan(plan, operands, MARGINAL_TILE_BYTES if marginal_tile_bytes is None
                        else int(marginal_tile_bytes))


# --------------------------------------------------------------------------------------
# the rows of a chunk, by pattern of missing features
# --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class MissingLayout:
    """A chunk's rows sorted by what they miss.

    Attributes
    ----------
    missing : ndarray of shape (n, D), bool
        Where the chunk holds NaN.
    complete : ndarray of int
        Rows without a missing value.
    empty : ndarray of int
        Rows without an observed value.
    incomplete : ndarray of int
        The other rows, in chunk order.
    rows : ndarray of int
        The same, sorted by (number of missing features, pattern) (in chunk order when
        the patterns were not asked for).
    pattern_of_row : ndarray of int, same length as ``rows``
        Each of ``rows``' pattern, an index into ``patterns`` (non-decreasing; zeros
        when the patterns were not asked for).
    patterns : ndarray of shape (P, D), bool
        The distinct patterns of missing features of ``rows``, sorted by their number
        of missing features (none when not asked for).
    """

    missing: np.ndarray
    complete: np.ndarray
    empty: np.ndarray
    incomplete: np.ndarray
    rows: np.ndarray
    pattern_of_row: np.ndarray
    patterns: np.ndarray

    @property
    def n_patterns(self) -> int:
        """Distinct patterns of the incomplete rows (complete and empty rows aside)."""
        return len(self.patterns)

    def groups(self) -> Iterator[tuple[int, int, int]]:
        """``(q, start, stop)``: the range of ``rows`` missing ``q`` features."""
        if not len(self.rows):
            return
        q_rows = self.patterns.sum(axis=1)[self.pattern_of_row]
        bounds = np.flatnonzero(np.diff(q_rows)) + 1
        starts = np.concatenate(([0], bounds))
        stops = np.concatenate((bounds, [len(self.rows)]))
        for start, stop in zip(starts, stops, strict=True):
            yield int(q_rows[start]), int(start), int(stop)


def missing_layout(missing: np.ndarray, *, patterns: bool = True) -> MissingLayout:
    """Group a chunk's rows by their pattern of missing features (``missing`` is
    ``np.isnan(X)``).

    A pattern is coded by its bits packed into bytes; for ``D <= 56`` the code and the
    number of missing features fit one 64-bit key, and a single sort of the incomplete
    rows' keys gives their order and their patterns. With ``patterns=False`` (all the
    candidates are ``'diag'`` or ``'spherical'``, which need no pattern) the incomplete
    rows stay in chunk order and ``patterns`` is empty.
    """
    missing = np.asarray(missing, dtype=bool)
    D = missing.shape[1]
    q = missing.sum(axis=1)
    complete = np.flatnonzero(q == 0)
    empty = np.flatnonzero(q == D)
    partial = np.flatnonzero((q > 0) & (q < D))
    if not len(partial) or not patterns:
        return MissingLayout(missing, complete, empty, partial, partial,
                             np.zeros(len(partial), dtype=np.intp),
                             np.zeros((0, D), dtype=bool))
    packed = np.packbits(missing[partial], axis=1)
    if packed.shape[1] <= 7:
        words = np.zeros((len(partial), 8), dtype=np.uint8)
        words[:, :packed.shape[1]] = packed
        words[:, 7] = q[partial]  # the most significant byte: sorted by q first
        key = words.view(np.uint64)[:, 0]
        order = np.argsort(key, kind="stable")
        new = np.flatnonzero(np.diff(key[order])) + 1
        first = np.concatenate(([0], new))
        pattern_of_row = np.zeros(len(partial), dtype=np.intp)
        pattern_of_row[new] = 1
        np.cumsum(pattern_of_row, out=pattern_of_row)
        rows = partial[order]
        return MissingLayout(missing, complete, empty, partial, rows, pattern_of_row,
                             missing[rows[first]])
    _, first, inverse = np.unique(packed, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    found = missing[partial[first]]
    by_count = np.argsort(found.sum(axis=1), kind="stable")
    rank = np.empty_like(by_count)
    rank[by_count] = np.arange(len(by_count))
    pattern_of_row = rank[inverse]
    order = np.argsort(pattern_of_row, kind="stable")
    return MissingLayout(missing, complete, empty, partial, partial[order],
                         pattern_of_row[order], found[by_count])


@dataclass(frozen=True, eq=False)
class _Tile:
    """Some incomplete rows of a chunk.

    ``rows`` index the chunk; for the dense types they all miss ``q`` features and
    ``m_idx`` lists the missing features of the tile's patterns (``(P_t, q)``),
    ``local`` each row's pattern among them and ``starts`` where each pattern's rows
    begin (rows are sorted by pattern).
    """

    rows: np.ndarray
    missing: np.ndarray
    q: int = 0
    m_idx: np.ndarray | None = None
    local: np.ndarray | None = None
    starts: np.ndarray | None = None

    def centred(self, X: np.ndarray, centre: np.ndarray) -> np.ndarray:
        """The rows minus ``centre`` (float64), missing values set to 0."""
        xc = np.asarray(X[self.rows], dtype=np.float64) - centre
        xc[self.missing] = 0.0
        return xc


def _tile_rows(op: MarginalOperands, q: int, tile_bytes: int) -> int:
    K, D = op.offsets.shape
    if op.dense:
        per_row = 8 * K * (3 * D + 3 * q + q * q + 8)
    else:
        per_row = 8 * (4 * K + 5 * D + K * 4)
    return max(MIN_TILE_ROWS, tile_bytes // per_row)


def _tiles(layout: MissingLayout, op: MarginalOperands, tile_bytes: int
           ) -> Iterator[_Tile]:
    if not op.dense:
        step = _tile_rows(op, 0, tile_bytes)
        for start in range(0, len(layout.incomplete), step):
            rows = layout.incomplete[start:start + step]
            yield _Tile(rows, layout.missing[rows])
        return
    for q, first, last in layout.groups():
        step = _tile_rows(op, q, tile_bytes)
        for start in range(first, last, step):
            stop = min(last, start + step)
            rows = layout.rows[start:stop]
            pid = layout.pattern_of_row[start:stop]
            local = pid - pid[0]
            count = int(local[-1]) + 1
            m_idx = np.nonzero(layout.patterns[pid[0]:pid[0] + count])[1].reshape(count, q)
            starts = np.flatnonzero(np.diff(local, prepend=-1))
            yield _Tile(rows, layout.missing[rows], q, m_idx, local, starts)


# --------------------------------------------------------------------------------------
# scores and moments of a tile of incomplete rows
# --------------------------------------------------------------------------------------
@dataclass
class _Moments:
    """One candidate's running sums over incomplete rows (float64)."""

    n: float
    ll: float
    ent: float
    h: float
    nk: np.ndarray
    sx: np.ndarray
    s2: np.ndarray
    conditional: np.ndarray | None  # dense types: sum of w r Σ̃, (K, D, D) or (D, D)


def _inverse_lower(R: np.ndarray) -> np.ndarray:
    """Inverses of a stack of lower triangular ``q x q`` matrices, by forward
    substitution vectorised over the stack (``q`` steps): for many small matrices
    several times faster than one LAPACK call per matrix."""
    q = R.shape[-1]
    inverse = np.zeros_like(R)
    reciprocal = 1.0 / np.diagonal(R, axis1=-2, axis2=-1)
    for i in range(q):
        inverse[..., i, i] = reciprocal[..., i]
        if i:
            inverse[..., i, :i] = -np.einsum("...l,...lc->...c", R[..., i, :i],
                                             inverse[..., :i, :i]) * reciprocal[..., i, None]
    return inverse


def _not_positive_definite() -> DegenerateComponentError:
    return DegenerateComponentError(
        "a component's precision restricted to the missing features of some rows is "
        "not positive definite: increase reg_covar or scale the data.")


def _missing_blocks(lam_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half the log-determinant and the inverse of every missing block ``Λ_mm``
    ``(..., q, q)``: compiled where numba is (:func:`daskgmm.engine.fused.spd_inverses`,
    several times faster on the many 2 x 2 to 10 x 10 blocks of a tile), else batched
    LAPACK Cholesky factorisations and a vectorised substitution (also when
    ``DASKGMM_KERNEL=numpy``)."""
    fused = estep._fused()
    if fused is not None and os.environ.get("DASKGMM_KERNEL") != "numpy":
        shape = lam_mm.shape
        flat = np.ascontiguousarray(lam_mm).reshape(-1, shape[-1], shape[-1])
        inverse = np.empty_like(flat)
        half_log_det = np.empty(len(flat))
        if fused.spd_inverses(flat, inverse, half_log_det) >= 0:
            raise _not_positive_definite()
        return half_log_det.reshape(shape[:-2]), inverse.reshape(shape)
    try:
        R = np.linalg.cholesky(lam_mm)
    except np.linalg.LinAlgError:
        raise _not_positive_definite() from None
    half_log_det = np.log(np.diagonal(R, axis1=-2, axis2=-1)).sum(axis=-1)
    R_inv = _inverse_lower(R)
    return half_log_det, np.swapaxes(R_inv, -1, -2) @ R_inv


def _dense_scores(op: MarginalOperands, X: np.ndarray, tile: _Tile
                  ) -> tuple[np.ndarray, tuple]:
    """Weighted log-densities ``(K, n)`` of a tile of rows missing ``q`` features
    (``'full'``, ``'tied'``), and what their moments need."""
    lam = op.precisions                                           # (K', D, D)
    m_idx = tile.m_idx
    lam_mm = lam[:, m_idx[:, :, None], m_idx[:, None, :]]         # (K', P, q, q)
    half_log_det, conditional = _missing_blocks(lam_mm)           # (K', P), Σ̃ = Λ_mm⁻¹
    xc = tile.centred(X, op.centre)
    K, D = op.offsets.shape
    n = len(xc)
    # f = δ = x - μ_k (missing entries at -e_k), then x̂ - μ_k in place.
    f = xc[None] - op.offsets[:, None, :]                         # (K, n, D)
    where = np.arange(0, n * D, D)[:, None] + m_idx[tile.local]   # missing, flat (n, q)
    # Λ_mo δ_o = (Λ f)_m + Λ_mm e_m
    e_m = op.offsets[:, m_idx]                                    # (K, P, q)
    shift = (lam_mm @ e_m[..., None])[..., 0]                     # (K, P, q)
    u = (f @ lam).reshape(K, n * D)[:, where] + shift[:, tile.local]   # (K, n, q)
    if len(m_idx) == 1:  # one pattern (e.g. a frequent one): a GEMM
        t = u @ conditional[:, 0]                                 # Λ_mm⁻¹ Λ_mo δ_o
    else:  # each row's own Λ_mm⁻¹
        t = (conditional[:, tile.local] @ u[..., None])[..., 0]
    f.reshape(K, n * D)[:, where] = -t
    Y = f @ op.precisions_cholesky                                # whitened, (K, n, D)
    d2 = np.einsum("knd,knd->kn", Y, Y)
    q = tile.q
    constant = (op.log_constant[:, None] + 0.5 * q * _LOG_2PI) - half_log_det   # (K, P)
    wlp = constant[:, tile.local] - 0.5 * d2
    entropy = 0.5 * q * (1.0 + _LOG_2PI) - half_log_det           # (K', P)
    return wlp, (f, Y, conditional, entropy)


def _dense_moments(op: MarginalOperands, tile: _Tile, cache: tuple, wr: np.ndarray,
                   acc: _Moments) -> None:
    f, Y, conditional, entropy = cache
    K, D = op.offsets.shape
    per_pattern = np.add.reduceat(wr, tile.starts, axis=1)        # (K, P)
    nk = wr.sum(axis=1)
    acc.nk += nk
    acc.h += float(np.sum(per_pattern * entropy))
    weighted = per_pattern[..., None, None] * conditional         # (K, P, q, q)
    flat = tile.m_idx[:, :, None] * D + tile.m_idx[:, None, :]    # (P, q, q)
    if op.covariance.name == "full":
        index = flat[None] + (np.arange(K) * D * D)[:, None, None, None]
        acc.conditional += np.bincount(index.ravel(), weighted.ravel(),
                                       minlength=K * D * D).reshape(K, D, D)
        acc.sx += (wr[:, None, :] @ f)[:, 0] + nk[:, None] * op.offsets
        Y *= np.sqrt(wr)[..., None]
        acc.s2 += Y.transpose(0, 2, 1) @ Y
    else:  # tied: about c0, summed over the components
        flat = np.broadcast_to(flat, weighted.shape)
        acc.conditional += np.bincount(flat.ravel(), weighted.ravel(),
                                       minlength=D * D).reshape(D, D)
        f += op.offsets[:, None, :]                               # x̂ - c0
        acc.sx += (wr[:, None, :] @ f)[:, 0]
        g = f.reshape(-1, D)
        acc.s2 += (g * wr.reshape(-1, 1)).T @ g


def _variance_scores(op: MarginalOperands, X: np.ndarray, tile: _Tile
                     ) -> tuple[np.ndarray, tuple]:
    """Weighted log-densities ``(K, n)`` of incomplete rows for ``'diag'`` and
    ``'spherical'``: the missing features drop out of the sums, one GEMM with the mask
    each."""
    xc = tile.centred(X, op.centre)
    M = tile.missing.astype(np.float64)
    p, e = op.precisions, op.offsets
    d2 = (xc * xc) @ p.T - 2.0 * (xc @ (p * e).T) + (1.0 - M) @ (p * e * e).T   # (n, K)
    half_log_var = 0.5 * (_LOG_2PI - np.log(p))                                 # (K, D)
    wlp = op.log_constant + M @ half_log_var.T - 0.5 * d2
    entropy = M @ (half_log_var + 0.5).T
    return wlp.T, (xc, M, entropy.T)


def _variance_moments(op: MarginalOperands, tile: _Tile, cache: tuple, wr: np.ndarray,
                      acc: _Moments) -> None:
    xc, M, entropy = cache
    p, e = op.precisions, op.offsets
    acc.nk += wr.sum(axis=1)
    acc.h += float(np.sum(wr * entropy))
    filled = wr @ M                                               # (K, D)
    acc.sx += wr @ xc + filled * e
    second = wr @ (xc * xc) + filled * (e * e + 1.0 / p)
    acc.s2 += second if op.covariance.name == "diag" else second.sum(axis=1)


_SCORES: dict[bool, Callable] = {True: _dense_scores, False: _variance_scores}
_MOMENTS: dict[bool, Callable] = {True: _dense_moments, False: _variance_moments}


def _scored_tiles(X: np.ndarray, layout: MissingLayout, op: MarginalOperands,
                  tile_bytes: int) -> Iterator[tuple[_Tile, np.ndarray, tuple]]:
    score = _SCORES[op.dense]
    for tile in _tiles(layout, op, tile_bytes):
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            wlp, cache = score(op, X, tile)
        yield tile, wlp, cache


def _softmax(wlp: np.ndarray, entropy: bool
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Responsibilities ``(K, n)``, ``log p(x_o)`` and, if asked, the responsibilities'
    negative entropy of every row, from weighted log-densities ``(K, n)``."""
    top = wlp.max(axis=0)
    top[~np.isfinite(top)] = 0.0
    with np.errstate(invalid="ignore", under="ignore"):
        shifted = wlp - top
        resp = np.exp(shifted)
    total = resp.sum(axis=0)
    log_total = np.log(total)
    resp /= total
    neg_entropy = None
    if entropy:
        with np.errstate(invalid="ignore"):
            neg_entropy = np.where(resp > 0.0, resp * (shifted - log_total), 0.0).sum(axis=0)
    return resp, log_total + top, neg_entropy


def _check_log_likelihood(log_norm: np.ndarray, rows: np.ndarray, row_start: int) -> None:
    bad = ~np.isfinite(log_norm)
    if not bad.any():
        return
    raise InvalidDataError(
        f"the log-likelihood of {int(bad.sum())} incomplete row(s) (first at row "
        f"{row_start + int(rows[np.argmax(bad)])}) overflowed although the data are "
        "finite: the values are too large (or too far from the model) for the "
        "floating-point range. Scale the data (e.g. standardise each feature); if the "
        "data are already scaled, increase reg_covar."
    )


def _incomplete_moments(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                        layout: MissingLayout, op: MarginalOperands, entropy: bool,
                        tile_bytes: int) -> _Moments:
    cov, (K, D) = op.covariance, op.offsets.shape
    acc = _Moments(0.0, 0.0, 0.0, 0.0, np.zeros(K), np.zeros((K, D)),
                   cov.zero_statistic(K, D),
                   (np.zeros((K, D, D)) if cov.name == "full" else np.zeros((D, D)))
                   if op.dense else None)
    moments = _MOMENTS[op.dense]
    for tile, wlp, cache in _scored_tiles(X, layout, op, tile_bytes):
        resp, log_norm, neg_entropy = _softmax(wlp, entropy)
        _check_log_likelihood(log_norm, tile.rows, row_start)
        w = None if weights is None else weights[tile.rows]
        acc.n += len(tile.rows) if w is None else float(w.sum())
        acc.ll += float(log_norm.sum() if w is None else log_norm @ w)
        if neg_entropy is not None:
            acc.ent += float(neg_entropy.sum() if w is None else neg_entropy @ w)
        if w is not None:
            resp *= w
        moments(op, tile, cache, resp, acc)
    if op.dense:
        if cov.name == "full":
            L = op.precisions_cholesky
            acc.s2 += L.transpose(0, 2, 1) @ acc.conditional @ L
        else:
            acc.s2 += acc.conditional
    return acc


# --------------------------------------------------------------------------------------
# the chunk kernel
# --------------------------------------------------------------------------------------
def check_no_infinity(X: np.ndarray, row_start: int) -> None:
    """Raise :class:`NonFiniteDataError` naming the rows if ``X`` holds an infinity
    (NaN marks a missing value; an infinity is an error even when values may miss)."""
    infinite = np.isinf(X)
    if not infinite.any():
        return
    bad_rows = infinite.any(axis=1)
    first = row_start + int(np.argmax(bad_rows))
    raise NonFiniteDataError(
        f"the data contain infinite values: {int(bad_rows.sum())} row(s) in the chunk of "
        f"rows {row_start}..{row_start + len(X) - 1} (first at row {first}). NaN marks a "
        "missing value, but an infinity is no value a Gaussian can score: replace it by "
        "NaN (missing) or remove those rows."
    )


def _observed_counts(layout: MissingLayout, weights: np.ndarray | None
                     ) -> tuple[float, float]:
    """``n_empty`` and ``n_obs`` of a chunk."""
    observed = layout.missing.shape[1] - layout.missing.sum(axis=1)
    if weights is None:
        return float(len(layout.empty)), float(observed.sum())
    return float(weights[layout.empty].sum()), float(observed @ weights)


def marginal_statistics(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                        mplan: MarginalPlan) -> PassResult:
    """E-step statistics of one chunk whose rows may hold NaN (missing values), for
    every candidate of the plan: the contract of
    :func:`~daskgmm.engine.estep.estep_statistics` plus the keys of the module
    docstring (``n_empty``, ``n_obs``, and ``h_missing`` with ``ent``).

    Parameters
    ----------
    X : ndarray of shape (n, D)
        The chunk, as read; NaN marks a missing value, an infinity is an error.
    weights : ndarray of shape (n,) or None
    row_start : int
        Index of its first row in the whole array (for error messages and digests).
    mplan : MarginalPlan

    Returns
    -------
    PassResult
    """
    X = np.asarray(X)
    plan = mplan.plan
    D = X.shape[1]
    check_no_infinity(X, row_start)
    w_all = None
    if weights is not None:
        w_all = np.asarray(weights, dtype=np.float64)
        check_weights_block(w_all, row_start)
    missing = np.isnan(X)
    if not missing.any():
        result = estep.estep_statistics(X, weights, row_start, plan)
        for item in result.stats:
            item["n_empty"] = np.float64(0.0)
            item["n_obs"] = np.float64(item["n"] * D)
            if plan.entropy:
                item["h_missing"] = np.float64(0.0)
        return result
    layout = missing_layout(missing, patterns=any(op.dense for op in mplan.operands))
    sub_w = None if weights is None else np.asarray(weights)[layout.complete]
    complete = estep.estep_statistics(X[layout.complete], sub_w, row_start,
                                      dataclasses.replace(plan, digest=False))
    n_empty, n_obs = _observed_counts(layout, w_all)
    stats: list[Stats] = []
    for op, item in zip(mplan.operands, complete.stats, strict=True):
        acc = _incomplete_moments(X, w_all, row_start, layout, op, plan.entropy,
                                  mplan.tile_bytes)
        out: Stats = {"n": np.float64(item["n"] + acc.n),
                      "ll": np.float64(item["ll"] + acc.ll),
                      "nk": item["nk"] + acc.nk, "sx": item["sx"] + acc.sx,
                      "s2": np.asarray(item["s2"] + acc.s2, dtype=np.float64)}
        if plan.entropy:
            out["ent"] = np.float64(item["ent"] + acc.ent)
            out["h_missing"] = np.float64(acc.h)
        out["n_empty"] = np.float64(n_empty)
        out["n_obs"] = np.float64(n_obs)
        stats.append(out)
    digests = {row_start: chunk_digest(X, weights)} if plan.digest else {}
    return PassResult(stats, digests)


# --------------------------------------------------------------------------------------
# prediction
# --------------------------------------------------------------------------------------
def _per_row(X: np.ndarray, row_start: int, mplan: MarginalPlan,
             complete_rows: Callable[[np.ndarray], np.ndarray],
             from_wlp: Callable[[np.ndarray], np.ndarray], columns: tuple[int, ...],
             dtype: str | np.dtype) -> np.ndarray:
    """One value per row: ``complete_rows`` (today's kernel) on the complete rows,
    ``from_wlp`` on the ``(K, n)`` weighted log-densities of the others."""
    if mplan.n_candidates != 1:
        raise ValueError("prediction takes a plan of a single candidate")
    X = np.asarray(X)
    check_no_infinity(X, row_start)
    missing = np.isnan(X)
    if not missing.any():
        return complete_rows(X)
    op = mplan.operands[0]
    layout = missing_layout(missing, patterns=op.dense)
    out = np.empty((len(X), *columns), dtype=dtype)
    if len(layout.complete):
        out[layout.complete] = complete_rows(X[layout.complete])
    if len(layout.empty):
        out[layout.empty] = from_wlp(np.repeat(op.empty_constant[:, None],
                                               len(layout.empty), axis=1))
    for tile, wlp, _ in _scored_tiles(X, layout, op, mplan.tile_bytes):
        out[tile.rows] = from_wlp(wlp)
    return out


def marginal_predict_block(X: np.ndarray, row_start: int, mplan: MarginalPlan
                           ) -> np.ndarray:
    """Most probable component of each row (int64) given its observed values."""
    return _per_row(X, row_start, mplan,
                    lambda sub: estep.predict_block(sub, row_start, mplan.plan),
                    lambda wlp: wlp.argmax(axis=0), (), np.int64)


def marginal_predict_proba_block(X: np.ndarray, row_start: int, mplan: MarginalPlan,
                                 out_dtype: str = "float64") -> np.ndarray:
    """Responsibilities ``(n, K)`` of each row given its observed values (a row with
    none gets the mixture weights)."""
    K = mplan.operands[0].n_components
    return _per_row(X, row_start, mplan,
                    lambda sub: estep.predict_proba_block(sub, row_start, mplan.plan,
                                                          out_dtype),
                    lambda wlp: _softmax(wlp, False)[0].T, (K,), out_dtype)


def marginal_score_samples_block(X: np.ndarray, row_start: int, mplan: MarginalPlan,
                                 out_dtype: str = "float64") -> np.ndarray:
    """Log marginal density of each row's observed values under the mixture (0 for a
    row with none)."""
    return _per_row(X, row_start, mplan,
                    lambda sub: estep.score_samples_block(sub, row_start, mplan.plan,
                                                          out_dtype),
                    lambda wlp: _softmax(wlp, False)[1], (), out_dtype)


# --------------------------------------------------------------------------------------
# before EM: moments of the observed values, and filling holes for the initialisation
# --------------------------------------------------------------------------------------
def observed_moment_statistics(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                               reference: np.ndarray) -> Stats:
    """Available-case moments of a chunk with missing values, about ``reference``
    (additive over chunks; :func:`available_case_moments` turns them into a mean and a
    covariance). With ``o`` the observed-value mask, ``x`` the centred rows with holes
    at 0 and ``w`` the weights: ``count = oᵀw`` per feature, ``sum = xᵀw``,
    ``pair_count = oᵀ W o`` (rows observing both features), ``pair_sum = xᵀ W o``
    (entry ``(i, j)``: the sum of feature ``i`` over the rows observing ``j`` too) and
    ``cross = xᵀ W x``. Five GEMMs per tile; an infinity is an error."""
    X = np.asarray(X)
    check_no_infinity(X, row_start)
    w_all = None if weights is None else np.asarray(weights, dtype=np.float64)
    if w_all is not None:
        check_weights_block(w_all, row_start)
    D = X.shape[1]
    out = {"count": np.zeros(D), "sum": np.zeros(D), "pair_count": np.zeros((D, D)),
           "pair_sum": np.zeros((D, D)), "cross": np.zeros((D, D))}
    step = max(MIN_TILE_ROWS, MARGINAL_TILE_BYTES // (8 * 4 * D))
    for start in range(0, len(X), step):
        block = np.asarray(X[start:start + step], dtype=np.float64) - reference
        observed = ~np.isnan(block)
        block[~observed] = 0.0
        o = observed.astype(np.float64)
        wo = o if w_all is None else o * w_all[start:start + step, None]
        wx = block if w_all is None else block * w_all[start:start + step, None]
        out["count"] += wo.sum(axis=0)
        out["sum"] += wx.sum(axis=0)
        out["pair_count"] += wo.T @ o
        out["pair_sum"] += wx.T @ o
        out["cross"] += wx.T @ block
    return out


def available_case_moments(stats: Stats, reference: np.ndarray
                           ) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's mean over its observed values, and the covariance of every pair
    of features over the rows observing both (``ddof=1``, weights counted as
    repetitions), from :func:`observed_moment_statistics`. Unbiased when values are
    missing completely at random; the matrix may fail to be positive definite when
    few rows observe a pair.

    Raises
    ------
    InvalidDataError
        If a feature, or a pair of features, is observed in fewer than 2 rows.
    """
    pair = stats["pair_count"]
    if not (pair > 1.0).all():
        i, j = np.unravel_index(np.argmin(pair), pair.shape)
        raise InvalidDataError(
            f"features {i} and {j} are observed together in {pair[i, j]:g} row(s) "
            "(weighted): their covariance needs at least 2; give the prior or initial "
            "parameters, or drop a feature that is almost always missing.")
    mean = reference + stats["sum"] / stats["count"]
    means_i = stats["pair_sum"] / pair                # mean of i over rows observing j
    covariance = (stats["cross"] - pair * means_i * means_i.T) / (pair - 1.0)
    return mean, 0.5 * (covariance + covariance.T)


@dataclass(frozen=True, eq=False)
class ObservedMoments:
    """What a pass learns of data with missing values before any model: the weight of
    the rows with no observed value (``empty``) and of the others (``rows``), and the
    statistics of :func:`observed_moment_statistics` about ``reference`` (``count`` and
    ``sum`` always, the pair statistics when asked for).

    Each chunk takes its own observed means as reference, and :func:`merge_observed`
    moves the statistics to a common one exactly (:meth:`about`), so that data with a
    large offset do not lose the covariance to cancellation (the idea of the pairwise
    merge of centred moments, Chan, Golub and LeVeque, 1983, for pairs of features
    observed in different rows)."""

    reference: np.ndarray
    stats: Stats
    empty: float
    rows: float

    @property
    def has_pairs(self) -> bool:
        """Whether the pair statistics (hence the covariance) were computed."""
        return "cross" in self.stats

    @property
    def observed_values(self) -> float:
        """``sum_i w_i (number of observed values of x_i)``."""
        return float(self.stats["count"].sum())

    def about(self, reference: np.ndarray) -> ObservedMoments:
        """The same statistics about another reference."""
        delta = np.asarray(reference, dtype=np.float64) - self.reference
        st = self.stats
        out = {"count": st["count"], "sum": st["sum"] - delta * st["count"]}
        if self.has_pairs:
            pc, ps = st["pair_count"], st["pair_sum"]
            shifted = ps * delta[None, :]          # entry (i, j): delta_j sum_i over o_j
            out["pair_count"] = pc
            out["pair_sum"] = ps - delta[:, None] * pc
            out["cross"] = (st["cross"] - shifted - shifted.T
                            + pc * np.outer(delta, delta))
        return ObservedMoments(np.asarray(reference, dtype=np.float64), out, self.empty,
                               self.rows)

    def means(self) -> np.ndarray:
        """Each feature's mean over its observed values (the reference for a feature
        never observed)."""
        count = self.stats["count"]
        with np.errstate(invalid="ignore", divide="ignore"):
            shift = np.where(count > 0, self.stats["sum"] / count, 0.0)
        return self.reference + shift

    def mean_and_covariance(self) -> tuple[np.ndarray, np.ndarray]:
        """:func:`available_case_moments` (needs the pair statistics)."""
        return available_case_moments(self.stats, self.reference)


def observed_moments_chunk(X: np.ndarray, weights: np.ndarray | None, row_start: int,
                           pairs: bool) -> ObservedMoments:
    """The :class:`ObservedMoments` of one chunk (the pair statistics if ``pairs``),
    about the chunk's observed means; an infinity is an error."""
    X = np.asarray(X)
    check_no_infinity(X, row_start)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if w is not None:
        check_weights_block(w, row_start)
    observed = ~np.isnan(X)
    counts = observed.sum(axis=1)
    empty_rows = counts == 0
    if w is None:
        empty, rows = float(empty_rows.sum()), float(len(X) - empty_rows.sum())
    else:
        empty, rows = float(w[empty_rows].sum()), float(w[~empty_rows].sum())
    o = observed.astype(np.float64)
    count = o.sum(axis=0) if w is None else w @ o
    with np.errstate(invalid="ignore", divide="ignore"):
        reference = np.where(observed.any(axis=0),
                             np.nansum(X, axis=0, dtype=np.float64)
                             / np.maximum(observed.sum(axis=0), 1), 0.0)
    if pairs:
        stats = observed_moment_statistics(X, w, row_start, reference)
    else:
        centred = np.where(observed, X - reference, 0.0)
        stats = {"count": count, "sum": centred.sum(axis=0) if w is None else w @ centred}
    return ObservedMoments(reference, stats, empty, rows)


def merge_observed(*parts: ObservedMoments) -> ObservedMoments:
    """The :class:`ObservedMoments` of several chunks, about the first one's reference
    (a reduction's combine step)."""
    first = parts[0]
    stats = {key: value.copy() for key, value in first.stats.items()}
    empty, rows = first.empty, first.rows
    for part in parts[1:]:
        moved = part.about(first.reference)
        for key in stats:
            stats[key] += moved.stats[key]
        empty += part.empty
        rows += part.rows
    return ObservedMoments(first.reference, stats, empty, rows)


def fill_missing(X: np.ndarray, values: np.ndarray) -> np.ndarray:
    """A copy of ``X`` (float64) with every NaN replaced by its feature's value in
    ``values`` (e.g. the observed means, for the initialisation); ``X`` is left as is
    when it has no NaN."""
    missing = np.isnan(X)
    if not missing.any():
        return X
    filled = np.array(X, dtype=np.float64)
    filled[missing] = np.broadcast_to(values, filled.shape)[missing]
    return filled
