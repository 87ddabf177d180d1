"""Run scikit-learn's own mixture tests against daskgmm's estimators.

scikit-learn installs its test modules (``sklearn/mixture/tests``). :func:`load_suite` reads
one of them from the installed package, swaps its imports of the public estimators for
daskgmm's (``from sklearn.mixture import GaussianMixture`` becomes ``from daskgmm import
GaussianMixture``), and executes it in the calling test module's namespace, so pytest collects
its tests as ours. Nothing of scikit-learn's is copied into this repository: the text is read
from the installed scikit-learn at collection time.

Tests that exercise scikit-learn's private functions (names imported from
``sklearn.mixture._*`` or patched there by name) test scikit-learn, not daskgmm: they are
skipped with that reason, as are the ones listed in :data:`NOT_APPLICABLE` with theirs.
A test that only prepares its input with a private function and then tests the estimator
is run (:data:`PRIVATE_FOR_INPUT_ONLY`).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import sklearn

import daskgmm

#: Tests expected to raise an exception (pytest's xfail with ``raises=``), with the reason.
EXPECTED_TO_RAISE: dict[str, tuple[str, str]] = {
    "test_gaussian_mixture_array_api_compliance": (
        "NotImplementedError",
        "daskgmm computes with NumPy and Dask: with array_api_dispatch enabled, arrays of "
        "other namespaces raise NotImplementedError (the NumPy namespace passes)"),
}

#: Public estimators whose imports are swapped for daskgmm's.
SWAPPED = {"GaussianMixture", "BayesianGaussianMixture"}

#: Tests that do not apply to daskgmm, by name, with the reason.
NOT_APPLICABLE: dict[str, str] = {
    "test_check_weights": (
        "matches scikit-learn's message for weights outside [0, 1], which prints the "
        "minimum as 'max value' and the maximum as 'min value'; daskgmm prints them the "
        "right way round (its other checks are in tests/test_bad_input.py)"),
    "test_gaussian_mixture_raises_where_array_api_not_implemented": (
        "matches scikit-learn's wording for the init_params it cannot run under "
        "array_api_dispatch; daskgmm refuses every non-NumPy namespace with "
        "NotImplementedError (see test_gaussian_mixture_array_api_compliance below and "
        "tests/test_array_api.py)"),
    "test_gaussian_mixture_setting_best_params": (
        "expects a component holding one sample with reg_covar=0 to keep a positive "
        "variance, which scikit-learn gets from the rounding error of its raw-moment "
        "formula (3.6e-16 here); daskgmm accumulates about the mean, finds a variance of "
        "0 within rounding and reports the degenerate component"),
}


#: Tests that call scikit-learn's private functions only to compute what they give the
#: estimator (and then test the estimator): run, with what the private function does.
PRIVATE_FOR_INPUT_ONLY: dict[str, str] = {
    "test_gaussian_mixture_precisions_init_diag": (
        "_estimate_gaussian_parameters computes, from k-means labels, the precisions_init "
        "given to the estimator; the test checks the estimator (a fit from them takes the "
        "iterations and reaches the precisions of a fit without them)"),
}


def _private_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if (isinstance(node, ast.ImportFrom) and node.module
                and node.module.startswith("sklearn.mixture._")):
            names.update(alias.asname or alias.name for alias in node.names)
    return names


def _uses(func: ast.FunctionDef, names: set[str]) -> list[str]:
    used = {n.id for n in ast.walk(func) if isinstance(n, ast.Name)} & names
    strings = [n.value for n in ast.walk(func)
               if isinstance(n, ast.Constant) and isinstance(n.value, str)
               and n.value.startswith("sklearn.mixture._")]
    return sorted(used) + strings


def _skip_decorator(reason: str) -> ast.expr:
    return ast.parse(f"pytest.mark.skip(reason={reason!r})", mode="eval").body


def load_suite(name: str, namespace: dict[str, Any]) -> Path:
    """Execute scikit-learn's ``sklearn/mixture/tests/<name>.py`` with daskgmm swapped in.

    Parameters
    ----------
    name : str
        Module name, e.g. ``"test_gaussian_mixture"``.
    namespace : dict
        The calling module's ``globals()``; the tests land there.

    Returns
    -------
    pathlib.Path
        The file that was read.
    """
    path = Path(sklearn.__file__).parent / "mixture" / "tests" / f"{name}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    private = _private_names(tree)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "sklearn.mixture":
            ours = [a for a in node.names if a.name in SWAPPED]
            if ours and len(ours) != len(node.names):
                raise AssertionError(f"unexpected import in {path}: {ast.unparse(node)}")
            missing = [a.name for a in ours if not hasattr(daskgmm, a.name)]
            if missing:
                pytest.skip(f"daskgmm has no {', '.join(missing)} yet",
                            allow_module_level=True)
            if ours:
                node.module = "daskgmm"
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            reason = NOT_APPLICABLE.get(node.name)
            used = _uses(node, private)
            if reason is None and used and node.name not in PRIVATE_FOR_INPUT_ONLY:
                reason = ("tests scikit-learn's private functions, not the estimator: "
                          + ", ".join(used))
            if reason is not None:
                node.decorator_list.insert(0, _skip_decorator(reason))
            elif node.name in EXPECTED_TO_RAISE:
                error, why = EXPECTED_TO_RAISE[node.name]
                node.decorator_list.insert(0, ast.parse(
                    f"pytest.mark.xfail(raises={error}, strict=False, reason={why!r})",
                    mode="eval").body)
    ast.fix_missing_locations(tree)
    namespace.setdefault("pytest", pytest)
    exec(compile(tree, str(path), "exec"), namespace)
    return path
