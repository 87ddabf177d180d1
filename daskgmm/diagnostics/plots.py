"""Diagnostic plots of a fit, drawn with Matplotlib's Agg renderer (never a GUI).

:func:`plot_convergence` shows the mean log-likelihood per EM iteration and the time
each iteration took. :func:`plot_clusters` shows a sample of the data projected on its
first two principal components, coloured by component, with each component's 2-sigma
ellipse. :func:`plot_selection` shows the information criterion of every candidate of a
model-selection sweep against its number of components, one line per covariance type,
with the best marked. :func:`sample_rows` draws that sample from a Dask array without
loading the array.

The figures are built with :class:`matplotlib.figure.Figure` and a
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg` directly, so importing or
using this module never touches ``matplotlib.pyplot``, the global backend or a display.
Files are written to a temporary sibling and renamed into place.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["clusters_figure", "convergence_figure", "expand_covariances", "plot_clusters",
           "plot_convergence", "plot_selection", "project_gaussians", "sample_rows",
           "selection_figure"]

_DPI = 100


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | os.PathLike[str]) -> str:
    """Render ``fig`` as PNG and write it atomically to ``path``."""
    from daskgmm.io.storage import write_file_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    target = os.path.abspath(os.fspath(path))
    write_file_atomic(target, buffer.getvalue())
    return target


def _off_scale(values: np.ndarray) -> int:
    """How many leading values lie so far below the rest that drawing them would flatten
    the curve (a k-means++ start of -1.8e7 before -27): their distance to the lowest
    later value exceeds ten times the later values' range."""
    for first in range(min(3, len(values) - 2)):
        rest = values[first + 1:]
        span = float(rest.max() - rest.min()) or abs(float(rest.max())) * 1e-6 or 1.0
        if float(rest.min() - values[: first + 1].max()) > 10 * span:
            return first + 1
    return 0


def convergence_figure(lower_bounds: Sequence[float], seconds: Sequence[float | None],
                       *, title: str | None = None,
                       objective: str = "mean log-likelihood per sample") -> Any:
    """The figure of :func:`plot_convergence` (a :class:`matplotlib.figure.Figure`).

    Two panels share the iteration axis: the objective (top; by default the mean
    log-likelihood per sample, a Bayesian mixture's is its variational lower bound), and
    the seconds each iteration took (bottom, bars, on an axis from 0 to a little above
    the slowest iteration, so the bars use the panel's height).
    """
    bounds = np.asarray([float(v) for v in lower_bounds], dtype=np.float64)
    iterations = np.arange(1, len(bounds) + 1)
    times = np.full(len(bounds), np.nan)
    for i, value in enumerate(list(seconds)[: len(bounds)]):
        if value is not None:
            times[i] = float(value)
    timed = bool(np.isfinite(times).any())
    fig = _new_figure(7.0, 5.6 if timed else 4.2)
    if timed:
        ax, ax_time = fig.subplots(2, 1, sharex=True, height_ratios=[2.2, 1])
    else:
        ax, ax_time = fig.add_subplot(), None
    fig.suptitle(title or "Convergence")
    ax.set_ylabel(objective.replace(" per ", "\nper ", 1))
    (ax_time or ax).set_xlabel("EM iteration")
    if len(bounds) == 0:
        ax.text(0.5, 0.5, "no EM iterations were run", ha="center", va="center",
                transform=ax.transAxes)
        return fig
    finite = np.isfinite(bounds)
    ax.plot(iterations[finite], bounds[finite], marker="o", markersize=3, color="C0")
    hidden = _off_scale(bounds[finite])
    if hidden:
        rest = bounds[finite][hidden:]
        pad = 0.08 * (float(rest.max() - rest.min()) or abs(float(rest.max())) * 1e-6 or 1)
        ax.set_ylim(float(rest.min()) - pad, float(rest.max()) + pad)
        lows = ", ".join(f"{v:.3g}" for v in bounds[finite][:hidden])
        ax.set_title(f"iteration{'s' if hidden > 1 else ''} 1"
                     f"{'-' + str(hidden) if hidden > 1 else ''} below the axis ({lows}): "
                     "the start, far from the optimum", fontsize=9, color="0.3", loc="left")
    if finite.any():
        last = int(np.flatnonzero(finite)[-1])
        ax.annotate(f"{bounds[last]:.6g}", (iterations[last], bounds[last]),
                    textcoords="offset points", xytext=(-4, -6), ha="right", va="top",
                    fontsize=9)
    ax.grid(True, alpha=0.3)
    if ax_time is not None:
        shown = np.isfinite(times)
        ax_time.bar(iterations[shown], times[shown], width=0.7, color="0.6")
        ax_time.set_ylim(0, float(np.nanmax(times)) * 1.15 or 1e-9)
        ax_time.set_ylabel("seconds per\niteration")
        ax_time.grid(True, axis="y", alpha=0.3)
        mean = float(np.nanmean(times))
        note = f"{mean:.3g} s per iteration on average"
        if not shown.all():
            note += f"; iterations 1-{int(np.flatnonzero(shown)[0])} ran before a resume"
        ax_time.set_title(note, fontsize=9, color="0.3", loc="right")
    (ax_time or ax).set_xlim(0.5, len(bounds) + 0.5)
    if len(bounds) <= 20:
        (ax_time or ax).set_xticks(iterations)
    return fig


def plot_convergence(lower_bounds: Sequence[float], seconds: Sequence[float | None],
                     path: str | os.PathLike[str], *, title: str | None = None) -> str:
    """Plot the mean log-likelihood per EM iteration and the seconds per iteration.

    Parameters
    ----------
    lower_bounds : sequence of float
        Mean per-sample log-likelihood after each iteration (``lower_bounds_``).
    seconds : sequence of float or None
        Wall time of each iteration (same length, or shorter: missing or ``None``
        entries, e.g. iterations run before a resume, are not drawn).
    path : str or os.PathLike
        The PNG file to write.
    title : str, optional
        Figure title.

    Returns
    -------
    str
        The absolute path written.
    """
    return _save(convergence_figure(lower_bounds, seconds, title=title), path)


def expand_covariances(covariances: np.ndarray, covariance_type: str, n_components: int,
                       n_features: int) -> np.ndarray:
    """Every component's full covariance matrix, shape ``(K, D, D)``.

    Parameters
    ----------
    covariances : ndarray
        ``covariances_`` of a fitted mixture: ``(K, D, D)`` for ``'full'``, ``(D, D)`` for
        ``'tied'``, ``(K, D)`` for ``'diag'`` and ``(K,)`` for ``'spherical'``.
    covariance_type : {'full', 'tied', 'diag', 'spherical'}
    n_components, n_features : int

    Returns
    -------
    ndarray of shape (n_components, n_features, n_features)
    """
    cov = np.asarray(covariances, dtype=np.float64)
    K, D = n_components, n_features
    if covariance_type == "full":
        return cov.reshape(K, D, D)
    if covariance_type == "tied":
        return np.broadcast_to(cov.reshape(D, D), (K, D, D)).copy()
    if covariance_type == "diag":
        out = np.zeros((K, D, D))
        out[:, np.arange(D), np.arange(D)] = cov.reshape(K, D)
        return out
    if covariance_type == "spherical":
        return cov.reshape(K)[:, None, None] * np.eye(D)[None]
    raise ValueError(f"unknown covariance_type {covariance_type!r}")


def _principal_axes(sample: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre, the first two principal directions ``(2, D)`` and their variance share."""
    centre = sample.mean(axis=0)
    D = sample.shape[1]
    if len(sample) < 2:
        axes = np.eye(max(2, D))[:2, :D]
        return centre, axes, np.zeros(2)
    _, s, vt = np.linalg.svd(sample - centre, full_matrices=False)
    variance = s**2
    share = variance / variance.sum() if variance.sum() > 0 else np.zeros_like(variance)
    axes = np.zeros((2, D))
    n = min(2, vt.shape[0])
    axes[:n] = vt[:n]
    # A deterministic sign: the largest loading of each axis is positive.
    for i in range(n):
        j = int(np.argmax(np.abs(axes[i])))
        if axes[i, j] < 0:
            axes[i] = -axes[i]
    shares = np.zeros(2)
    shares[:n] = share[:n]
    return centre, axes, shares


def project_gaussians(means: np.ndarray, covariances: np.ndarray, centre: np.ndarray,
                      axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project Gaussians onto a plane: means ``(m - c) Pᵀ`` and covariances ``P Σ Pᵀ``.

    Parameters
    ----------
    means : ndarray of shape (K, D)
    covariances : ndarray of shape (K, D, D)
        Full matrices (see :func:`expand_covariances`).
    centre : ndarray of shape (D,)
    axes : ndarray of shape (2, D)
        Orthonormal rows spanning the plane.

    Returns
    -------
    means_2d : ndarray of shape (K, 2)
    covariances_2d : ndarray of shape (K, 2, 2)
    """
    P = np.asarray(axes, dtype=np.float64)
    means_2d = (np.asarray(means, dtype=np.float64) - centre) @ P.T
    cov_2d = np.einsum("ad,kde,be->kab", P, np.asarray(covariances, dtype=np.float64), P)
    return means_2d, cov_2d


def _ellipse(mean: np.ndarray, cov: np.ndarray, n_sigma: float = 2.0
             ) -> tuple[float, float, float]:
    """Width, height and angle (degrees) of the ``n_sigma`` ellipse of a 2-D Gaussian."""
    cov = 0.5 * (cov + cov.T)
    values, vectors = np.linalg.eigh(cov)
    values = np.clip(values, 0.0, None)
    major = vectors[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    width = 2.0 * n_sigma * math.sqrt(values[1])
    height = 2.0 * n_sigma * math.sqrt(values[0])
    return width, height, angle


def clusters_figure(sample_X: np.ndarray, sample_labels: np.ndarray, model: Any, *,
                    title: str | None = None) -> Any:
    """Scatter a sample on its first two principal components, with 2-sigma ellipses.

    The principal components are computed from the sample (NumPy SVD). Each component
    of ``model`` is drawn as the ellipse of its covariance projected on that plane
    (``P Σ Pᵀ``), which works for all four covariance types.

    Parameters
    ----------
    sample_X : ndarray of shape (n, D)
        A sample of the data (see :func:`sample_rows`), in memory. Rows with a missing
        value (NaN) are left out (the subtitle says how many).
    sample_labels : ndarray of shape (n,)
        The component of each sample row (``model.predict(sample_X)``).
    model : GaussianMixture
        A fitted mixture (``means_``, ``covariances_``, ``weights_``,
        ``covariance_type``).
    title : str, optional
        Figure title (what the sample is); a subtitle says what is drawn.

    Returns
    -------
    matplotlib.figure.Figure
        Points coloured by their component; for each component its mean (a cross),
        its 2-sigma ellipse and a label ``k: w`` with its index ``k`` and weight ``w``;
        a legend and a subtitle that say so.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Ellipse

    X = np.asarray(sample_X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"sample_X must be 2-D, got shape {X.shape}")
    labels = np.asarray(sample_labels).reshape(-1)
    if len(labels) != len(X):
        raise ValueError(f"sample_labels has {len(labels)} entries for {len(X)} rows")
    means = np.asarray(model.means_, dtype=np.float64)
    K, D = means.shape
    if X.shape[1] != D:
        raise ValueError(f"sample_X has {X.shape[1]} features, the model {D}")
    complete = ~np.isnan(X).any(axis=1)
    n_incomplete = int(len(X) - complete.sum())
    if n_incomplete:  # a row with a missing value has no place on the plane
        X, labels = X[complete], labels[complete]
    covs = expand_covariances(model.covariances_, model.covariance_type, K, D)
    centre, axes, shares = _principal_axes(X) if len(X) else (
        means.mean(axis=0), np.eye(max(2, D))[:2, :D], np.zeros(2))
    points = (X - centre) @ axes.T
    means_2d, covs_2d = project_gaussians(means, covs, centre, axes)

    fig = _new_figure(7.0, 6.0)
    ax = fig.add_subplot()
    colours = [f"C{k % 10}" for k in range(K)]
    point_colours = [colours[int(k) % K] if 0 <= int(k) < K else "0.5" for k in labels]
    size = 12 if len(X) <= 2000 else 4
    ax.scatter(points[:, 0], points[:, 1], c=point_colours, s=size, alpha=0.5,
               linewidths=0, rasterized=len(X) > 2000)
    weights = np.asarray(getattr(model, "weights_", np.full(K, 1.0 / K)))
    for k in range(K):
        width, height, angle = _ellipse(means_2d[k], covs_2d[k])
        ax.add_patch(Ellipse(tuple(means_2d[k]), width, height, angle=angle, fill=False,
                             edgecolor=colours[k], linewidth=2))
        ax.plot(*means_2d[k], marker="x", color="black", markersize=7)
        ax.annotate(f"{k}: {weights[k]:.2f}", tuple(means_2d[k]),
                    textcoords="offset points", xytext=(5, 5), fontsize=9,
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "alpha": 0.7,
                          "lw": 0})
    ax.set_xlabel(f"PC 1 ({100 * shares[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC 2 ({100 * shares[1]:.1f}% of variance)" if D > 1 else "(one feature)")
    fig.suptitle(title or f"{len(X):,} rows, {K} components ({model.covariance_type})")
    dropped = (f" ({n_incomplete:,} rows with missing values not drawn)" if n_incomplete
               else "")
    ax.set_title("points coloured by their most likely component, on the sample's first "
                 f"two principal components{dropped};\nellipses: 2 standard deviations of "
                 "each component projected on that plane", fontsize=8, color="0.3")
    legend = [
        Line2D([], [], marker="x", color="black", linestyle="", label="component mean"),
        Line2D([], [], color="0.3", linewidth=2, label="2-sigma ellipse"),
        Line2D([], [], linestyle="", label="k: w = component index k, weight w"),
    ]
    ax.legend(handles=legend, loc="best", fontsize=8, framealpha=0.8)
    ax.set_aspect("equal", adjustable="datalim")
    ax.autoscale_view()
    ax.grid(True, alpha=0.3)
    return fig


def plot_clusters(sample_X: np.ndarray, sample_labels: np.ndarray, model: Any,
                  path: str | os.PathLike[str], *, title: str | None = None) -> str:
    """Scatter a sample on its first two principal components, with 2-sigma ellipses
    (see :func:`clusters_figure`) and write the PNG to ``path``.

    Returns
    -------
    str
        The absolute path written.
    """
    return _save(clusters_figure(sample_X, sample_labels, model, title=title), path)


_CRITERION_NAMES = {"bic": "BIC", "aic": "AIC", "icl": "ICL"}
_TYPE_MARKERS = {"full": "o", "tied": "s", "diag": "^", "spherical": "D"}


def selection_figure(results: Mapping[str, Sequence[Any]], criterion: str = "bic", *,
                     title: str | None = None) -> Any:
    """The figure of :func:`plot_selection` (a :class:`matplotlib.figure.Figure`).

    One line per covariance type joins its candidates' criterion values in order of
    the number of components (the picture mclust draws, in scikit-learn's sign
    convention: lower is better). The lowest value is circled and named. Candidates
    stopped early are drawn hollow; values that are not finite are left out.
    """
    from matplotlib.lines import Line2D

    if criterion not in _CRITERION_NAMES:
        raise ValueError(f"criterion must be one of {', '.join(_CRITERION_NAMES)}, "
                         f"got {criterion!r}")
    ks = np.asarray(results["n_components"], dtype=np.int64)
    types = [str(t) for t in results["covariance_type"]]
    values = np.asarray([np.nan if v is None else float(v) for v in results[criterion]],
                        dtype=np.float64)
    stopped = np.asarray(results.get("stopped_early", [False] * len(ks)), dtype=bool)
    name = _CRITERION_NAMES[criterion]
    fig = _new_figure(7.0, 5.0)
    ax = fig.add_subplot()
    finite = np.isfinite(values)
    order = list(dict.fromkeys(types))
    for i, cov in enumerate(order):
        rows = np.flatnonzero((np.asarray(types) == cov) & finite)
        rows = rows[np.argsort(ks[rows], kind="stable")]
        if not len(rows):
            continue
        colour, marker = f"C{i % 10}", _TYPE_MARKERS.get(cov, "o")
        ax.plot(ks[rows], values[rows], color=colour, marker=marker, label=cov,
                markersize=6, linewidth=1.5)
        hollow = rows[stopped[rows]]
        if len(hollow):
            ax.plot(ks[hollow], values[hollow], linestyle="", marker=marker,
                    markersize=6, markerfacecolor="white", markeredgecolor=colour)
    handles, _ = ax.get_legend_handles_labels()
    if finite.any():
        best = int(np.flatnonzero(finite)[np.argmin(values[finite])])
        ax.plot(ks[best], values[best], linestyle="", marker="o", markersize=16,
                markerfacecolor="none", markeredgecolor="black", markeredgewidth=2)
        ax.annotate(f"best: K={ks[best]} {types[best]}\n{name} {values[best]:,.6g}",
                    (ks[best], values[best]), textcoords="offset points", xytext=(12, 12),
                    fontsize=9, bbox={"boxstyle": "round,pad=0.2", "fc": "white",
                                      "alpha": 0.8, "lw": 0})
        handles.append(Line2D([], [], linestyle="", marker="o", markersize=10,
                              markerfacecolor="none", markeredgecolor="black",
                              markeredgewidth=2, label=f"lowest {name}"))
    else:
        ax.text(0.5, 0.5, f"no finite {name} value", ha="center", va="center",
                transform=ax.transAxes)
    if stopped.any():
        handles.append(Line2D([], [], linestyle="", marker="o", markerfacecolor="white",
                              markeredgecolor="0.3", label="stopped early"))
    if handles:
        ax.legend(handles=handles, title="covariance type", fontsize=8, title_fontsize=8,
                  loc="best", framealpha=0.8)
    if len(ks):
        distinct = np.unique(ks)
        if len(distinct) <= 25:
            ax.set_xticks(distinct)
    ax.set_xlabel("number of components K")
    ax.set_ylabel(f"{name} (lower is better)")
    ax.grid(True, alpha=0.3)
    fig.suptitle(title or f"Model selection by {name}")
    ax.set_title(f"{len(ks)} candidates; {name} of each fitted model against its number "
                 "of components", fontsize=8, color="0.3")
    return fig


def plot_selection(results: Mapping[str, Sequence[Any]], criterion: str,
                   path: str | os.PathLike[str], *, title: str | None = None) -> str:
    """Plot a model-selection sweep's criterion against the number of components, one
    line per covariance type, the best circled (see :func:`selection_figure`).

    Parameters
    ----------
    results : mapping of lists
        ``results_`` of a fitted :class:`daskgmm.GaussianMixtureSelector` (or the
        ``results`` of a ``selection.json``): ``n_components``, ``covariance_type``,
        the criterion's values and, optionally, ``stopped_early``.
    criterion : {'bic', 'aic', 'icl'}
    path : str or os.PathLike
        The PNG file to write.
    title : str, optional

    Returns
    -------
    str
        The absolute path written.
    """
    return _save(selection_figure(results, criterion, title=title), path)


def sample_rows(X: Any, n: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw up to ``n`` random rows of a (Dask) array, without loading the array.

    Parameters
    ----------
    X : dask.array.Array or ndarray of shape (n_samples, n_features)
    n : int, default 5000
    seed : int, default 0

    Returns
    -------
    rows : ndarray of shape (min(n, n_samples), n_features)
        In increasing row order.
    indices : ndarray of int64
        The sorted row indices.
    """
    n_samples = int(X.shape[0])
    rng = np.random.default_rng(seed)
    size = min(int(n), n_samples)
    idx = np.sort(rng.choice(n_samples, size=size, replace=False)).astype(np.int64)
    rows = X[idx]
    if hasattr(rows, "compute"):
        rows = rows.compute()
    return np.asarray(rows, dtype=np.float64), idx
