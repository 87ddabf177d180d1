"""scikit-learn's own estimator checks, on NumPy input."""

from __future__ import annotations

from sklearn.utils.estimator_checks import parametrize_with_checks

from daskgmm import GaussianMixture

# Checks that cannot pass, with the reason. Keep empty unless a check is truly inapplicable.
EXPECTED_FAILED: dict[str, str] = {}


@parametrize_with_checks(
    [GaussianMixture(n_components=2, random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
