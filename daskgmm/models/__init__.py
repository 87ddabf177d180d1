"""The estimators: scikit-learn's API over the statistics engine."""
