"""Tests of daskgmm.diagnostics.plots: real PNGs for every covariance type, and the projections."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import dask.array as da
import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from daskgmm import GaussianMixture
from daskgmm.diagnostics.plots import (
    convergence_figure,
    expand_covariances,
    plot_clusters,
    plot_convergence,
    project_gaussians,
    sample_rows,
)

from .conftest import make_blobs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def assert_png(path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000
    assert data.startswith(PNG_MAGIC)


@pytest.fixture(scope="module")
def blobs4() -> np.ndarray:
    return make_blobs(n=1200, d=4, k=3, seed=2)


def fit(X, covariance_type, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return GaussianMixture(3, covariance_type=covariance_type, random_state=0,
                               max_iter=20, **kw).fit(X)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_both_plots_for_every_covariance_type(tmp_path, blobs4, covariance_type):
    gm = fit(blobs4, covariance_type)
    clusters = tmp_path / "clusters.png"
    convergence = tmp_path / "convergence.png"
    assert plot_clusters(blobs4, gm.predict(blobs4), gm, clusters) == str(clusters)
    assert plot_convergence(gm.lower_bounds_, [0.01] * gm.n_iter_, convergence) == \
        str(convergence)
    assert_png(clusters)
    assert_png(convergence)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clusters.png", "convergence.png"]


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_expand_covariances_matches_sklearn(blobs4, covariance_type):
    sk = SkGaussianMixture(3, covariance_type=covariance_type, random_state=0).fit(blobs4)
    full = expand_covariances(sk.covariances_, covariance_type, 3, 4)
    assert full.shape == (3, 4, 4)
    # The densities computed from the expanded matrices are scikit-learn's.
    from scipy.stats import multivariate_normal

    x = blobs4[:5]
    expected = sk.score_samples(x)
    got = np.log(sum(w * multivariate_normal(m, c).pdf(x)
                     for w, m, c in zip(sk.weights_, sk.means_, full, strict=True)))
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_projection_is_p_sigma_pt():
    rng = np.random.default_rng(0)
    A = rng.normal(size=(3, 3))
    cov = np.stack([A @ A.T + np.eye(3), np.diag([1.0, 2.0, 3.0])])
    means = rng.normal(size=(2, 3))
    axes = np.linalg.qr(rng.normal(size=(3, 2)))[0].T  # orthonormal rows
    centre = rng.normal(size=3)
    m2, c2 = project_gaussians(means, cov, centre, axes)
    for k in range(2):
        np.testing.assert_allclose(m2[k], axes @ (means[k] - centre))
        np.testing.assert_allclose(c2[k], axes @ cov[k] @ axes.T)


def test_convergence_plot_edge_cases(tmp_path):
    plot_convergence([], [], tmp_path / "none.png")  # max_iter=0
    assert_png(tmp_path / "none.png")
    # Resumed fit: no timing for the first iterations; a -inf bound is skipped.
    plot_convergence([-np.inf, -2.0, -1.5, -1.4], [None, None, 0.2, 0.3],
                     tmp_path / "resumed.png", title="resumed")
    assert_png(tmp_path / "resumed.png")


def test_convergence_plot_is_readable_whatever_the_first_iteration():
    """A k-means++ start far from the optimum (-1.8e7 then -27...): the axis shows the
    iterations that matter, and the title says which are off the scale."""
    bounds = [-1.8e7, -27.0, -26.2, -26.05, -26.01]
    fig = convergence_figure(bounds, [0.1] * 5)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert -28 < low < -27 and -26.01 < high < -25.5
    assert "iteration 1 below the axis (-1.8e+07)" in ax.get_title(loc="left")
    ordinary = convergence_figure([-30.0, -27.0, -26.2, -26.05], [0.1] * 4).axes[0]
    assert ordinary.get_ylim()[0] < -30 and ordinary.get_title(loc="left") == ""


def test_clusters_plot_one_feature_and_no_rows(tmp_path):
    X = np.concatenate([np.random.default_rng(0).normal(size=(200, 1)),
                        np.random.default_rng(1).normal(5, 1, size=(200, 1))])
    gm = fit(X[:, :1], "full")
    plot_clusters(X, gm.predict(X), gm, tmp_path / "one.png")
    assert_png(tmp_path / "one.png")
    plot_clusters(np.empty((0, 1)), np.empty(0, dtype=int), gm, tmp_path / "empty.png")
    assert_png(tmp_path / "empty.png")
    with pytest.raises(ValueError, match="features"):
        plot_clusters(np.zeros((3, 2)), np.zeros(3), gm, tmp_path / "bad.png")


def test_sample_rows_takes_few_sorted_rows_of_a_dask_array():
    X = da.arange(10_000 * 3, dtype=np.float64, chunks=3 * 1000).reshape(10_000, 3)
    rows, idx = sample_rows(X, 50, seed=1)
    assert rows.shape == (50, 3) and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(rows, X.compute()[idx])
    _, idx2 = sample_rows(X, 50, seed=1)
    np.testing.assert_array_equal(idx, idx2)
    rows, idx = sample_rows(X[:20], 50)
    assert rows.shape == (20, 3)


def test_plots_never_import_pyplot(tmp_path):
    code = f"""
import sys
import numpy as np
from daskgmm import GaussianMixture
from daskgmm.diagnostics.plots import plot_clusters, plot_convergence
X = np.random.default_rng(0).normal(size=(300, 3))
gm = GaussianMixture(2, random_state=0).fit(X)
plot_clusters(X, gm.predict(X), gm, {str(tmp_path / "c.png")!r})
plot_convergence(gm.lower_bounds_, [0.1] * gm.n_iter_, {str(tmp_path / "v.png")!r})
assert "matplotlib.pyplot" not in sys.modules
"""
    env = {**os.environ, "MPLBACKEND": "TkAgg", "DISPLAY": ""}  # a GUI backend must not matter
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert_png(tmp_path / "c.png")
    assert_png(tmp_path / "v.png")


def test_convergence_time_axis_fits_its_data():
    from daskgmm.diagnostics.plots import convergence_figure

    seconds = [0.5, 0.8, 0.6, 2.0, 0.7]
    fig = convergence_figure([-3.0, -2.0, -1.5, -1.4, -1.39], seconds, title="t")
    ax, ax_time = fig.axes
    low, high = ax_time.get_ylim()
    assert low == 0 and max(seconds) <= high <= 1.2 * max(seconds)
    heights = [bar.get_height() for bar in ax_time.patches]
    assert heights == seconds
    assert ax.get_xlim() == ax_time.get_xlim() == (0.5, 5.5)
    # A resumed fit: the early iterations have no timing and the panel says so.
    fig = convergence_figure([-3.0, -2.0, -1.5], [None, None, 0.4])
    ax_time = fig.axes[1]
    assert [bar.get_height() for bar in ax_time.patches] == [0.4]
    assert "ran before a resume" in ax_time.get_title(loc="right")
    assert len(convergence_figure([-1.0], [None]).axes) == 1


def test_clusters_plot_explains_its_annotations(blobs4):
    from daskgmm.diagnostics.plots import clusters_figure

    gm = fit(blobs4, "full")
    fig = clusters_figure(blobs4, gm.predict(blobs4), gm, title="run: 1,200 rows")
    (ax,) = fig.axes
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == sorted(f"{k}: {w:.2f}" for k, w in enumerate(gm.weights_))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["component mean", "2-sigma ellipse",
                      "k: w = component index k, weight w"]
    assert fig._suptitle.get_text() == "run: 1,200 rows"
    assert "2 standard deviations" in ax.get_title()
    assert "most likely component" in ax.get_title()


def test_clusters_plot_leaves_out_rows_with_missing_values(blobs4):
    """Rows holding a NaN are not drawn (the subtitle counts them): the points drawn,
    and their colours, are those of the plot of the complete rows alone."""
    from daskgmm.diagnostics.plots import clusters_figure

    gm = fit(blobs4, "full")
    X = blobs4.copy()
    X[::7, 1] = np.nan
    X[3] = np.nan
    complete = ~np.isnan(X).any(axis=1)
    labels = gm.predict(np.nan_to_num(X))
    fig = clusters_figure(X, labels, gm)
    expected = clusters_figure(X[complete], labels[complete], gm)
    (ax,), (ax_expected,) = fig.axes, expected.axes
    points, points_expected = ax.collections[0], ax_expected.collections[0]
    assert np.isfinite(points.get_offsets()).all()
    np.testing.assert_array_equal(points.get_offsets(), points_expected.get_offsets())
    np.testing.assert_array_equal(points.get_facecolors(), points_expected.get_facecolors())
    assert f"{(~complete).sum():,} rows with missing values not drawn" in ax.get_title()
    assert "not drawn" not in ax_expected.get_title()


def test_convergence_plot_names_its_objective():
    from daskgmm import BayesianGaussianMixture
    from daskgmm.diagnostics.plots import convergence_figure

    label = BayesianGaussianMixture._objective_description
    fig = convergence_figure([-2.0, -1.5], [0.1, 0.1], objective=label)
    assert fig.axes[0].get_ylabel() == "variational lower bound\nper sample"
    fig = convergence_figure([-2.0, -1.5], [0.1, 0.1])
    assert fig.axes[0].get_ylabel() == "mean log-likelihood\nper sample"


def test_selection_plot_draws_a_line_per_type_and_circles_the_best(tmp_path):
    from daskgmm.diagnostics.plots import plot_selection, selection_figure

    results = {
        "n_components": [1, 2, 3, 1, 2, 3],
        "covariance_type": ["full", "full", "full", "diag", "diag", "diag"],
        "bic": [30.0, 10.0, 12.0, 40.0, 20.0, None],
        "stopped_early": [False, False, True, False, False, False],
    }
    fig = selection_figure(results, "bic", title="sweep")
    (ax,) = fig.axes
    lines = {line.get_label(): line for line in ax.get_lines()}
    np.testing.assert_array_equal(lines["full"].get_xdata(), [1, 2, 3])
    np.testing.assert_array_equal(lines["full"].get_ydata(), [30.0, 10.0, 12.0])
    np.testing.assert_array_equal(lines["diag"].get_xdata(), [1, 2])  # None left out
    circled = [line for line in ax.get_lines() if line.get_markersize() == 16]
    assert len(circled) == 1
    assert (circled[0].get_xdata()[0], circled[0].get_ydata()[0]) == (2, 10.0)
    texts = " ".join(t.get_text() for t in ax.texts)
    assert "best: K=2 full" in texts
    assert ax.get_ylabel() == "BIC (lower is better)"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["full", "diag", "lowest BIC", "stopped early"]
    path = tmp_path / "selection.png"
    assert plot_selection(results, "bic", path) == str(path)
    assert_png(path)
    with pytest.raises(ValueError, match="criterion must be one of"):
        selection_figure(results, "bogus")
