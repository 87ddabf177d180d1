"""Fixtures scikit-learn's test-suite expects from its own conftest.

``global_dtype`` runs every dtype-parametrised test in float32 as well as float64 (as
scikit-learn does with ``SKLEARN_RUN_FLOAT32_TESTS=1``); ``global_random_seed`` is
scikit-learn's default seed, 42.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def global_dtype(request):
    return request.param


@pytest.fixture
def global_random_seed():
    return 42
