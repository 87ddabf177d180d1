"""scikit-learn's mixture tests (``test_gaussian_mixture.py``) against daskgmm (see _loader)."""

from tests.sklearn_suite._loader import load_suite

SOURCE = load_suite("test_gaussian_mixture", globals())
