"""scikit-learn's ``sklearn/mixture/tests/test_mixture.py``, run against daskgmm (see _loader)."""

from tests.sklearn_suite._loader import load_suite

SOURCE = load_suite("test_mixture", globals())
