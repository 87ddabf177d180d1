"""The seed example: a three-component Gaussian mixture on iris, through Dask.

Run:  python scripts/iris_example.py
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from sklearn.datasets import load_iris

from daskgmm import GaussianMixture


def main() -> None:
    iris = load_iris().data
    X = da.from_array(iris, chunks=(50, 4))  # three row chunks
    gm = GaussianMixture(n_components=3, random_state=0).fit(X)
    labels = gm.predict(X).compute()
    np.set_printoptions(precision=3, suppress=True)
    print(f"converged: {gm.converged_} after {gm.n_iter_} iterations")
    print(f"mean log-likelihood per sample: {gm.lower_bound_:.4f}")
    print("labels:\n", labels)
    print("weights:\n", gm.weights_)
    print("means:\n", gm.means_)
    print("covariances:\n", gm.covariances_)


if __name__ == "__main__":
    main()
