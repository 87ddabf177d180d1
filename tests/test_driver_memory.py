"""Driver memory never grows with the number of rows: a fit on a lazily generated (never
materialised) array of 10^10 rows, in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import resource, warnings
    import dask.array as da
    from daskgmm import GaussianMixture

    X = da.random.default_rng(0).normal(size=(10**10, 4), chunks=(500_000, 4))
    assert X.nbytes == 320 * 10**9 and X.npartitions == 20_000
    for init in ("random_from_data",):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm = GaussianMixture(3, init_params=init, max_iter=0, random_state=0).fit(X)
        assert gm.means_.shape == (3, 4)
    # ru_maxrss is in KiB on Linux.
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
""")


@pytest.mark.slow
def test_fit_on_ten_billion_lazy_rows_keeps_the_driver_small():
    """Validation, chunking, the cache decision ('auto' without a cluster must not load
    320 GB) and the initialisation's row sampling (O(sample), not a permutation of 10^10
    rows) on an array far larger than memory; only the K sampled rows' chunks are ever
    generated."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    peak = int(out.stdout.strip().splitlines()[-1])
    assert peak < 500 * 2**20, f"driver peak {peak / 2**20:.0f} MiB"
