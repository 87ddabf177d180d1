"""Estimators on tables and labelled arrays: pandas and dask DataFrames, xarray
DataArrays in, the same kind of object out (index and coordinates kept)."""

from __future__ import annotations

import dask.array as da
import dask.dataframe as dd
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from daskgmm import BayesianGaussianMixture, GaussianMixture

from .conftest import make_blobs

X = make_blobs(900, d=3, k=3)


@pytest.fixture(scope="module")
def reference():
    return GaussianMixture(3, random_state=0).fit(X)


def test_pandas_dataframe_keeps_the_index_and_ignores_text_columns(reference):
    frame = pd.DataFrame(X, columns=["a", "b", "c"], index=pd.RangeIndex(1000, 1900))
    frame["name"] = "row"
    gm = GaussianMixture(3, random_state=0).fit(frame)
    np.testing.assert_array_equal(gm.feature_names_in_, ["a", "b", "c"])
    np.testing.assert_array_equal(gm.means_, reference.means_)
    labels = gm.predict(frame)
    assert isinstance(labels, pd.Series) and labels.index.equals(frame.index)
    np.testing.assert_array_equal(labels.to_numpy(), reference.predict(X))
    proba = gm.predict_proba(frame)
    assert isinstance(proba, pd.DataFrame) and proba.shape == (900, 3)
    scores = gm.score_samples(frame)
    assert isinstance(scores, pd.Series)
    weighted = GaussianMixture(3, random_state=0).fit(frame, sample_weight=pd.Series(
        np.ones(900), index=frame.index))
    np.testing.assert_array_equal(weighted.means_, reference.means_)


def test_dask_dataframe_stays_lazy_with_its_partitions(reference, client):
    frame = dd.from_pandas(pd.DataFrame(X, columns=["a", "b", "c"]), npartitions=4)
    gm = GaussianMixture(3, random_state=0).fit(frame)
    np.testing.assert_allclose(gm.means_, reference.means_, rtol=1e-9)
    labels = gm.predict(frame)
    assert isinstance(labels, dd.Series)
    assert labels.npartitions == 4
    np.testing.assert_array_equal(labels.compute().to_numpy(), reference.predict(X))


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_xarray_with_a_named_sample_dimension(reference, lazy):
    data = da.from_array(X.T, chunks=(3, 300)) if lazy else X.T
    cells = [f"cell{i}" for i in range(900)]
    array = xr.DataArray(data, dims=("gene", "cell"),
                         coords={"cell": cells, "gene": ["g1", "g2", "g3"]})
    gm = BayesianGaussianMixture(n_components=3, random_state=0)
    gm.fit(array, sample_dim="cell")
    ref = BayesianGaussianMixture(n_components=3, random_state=0).fit(X)
    np.testing.assert_allclose(gm.means_, ref.means_, rtol=1e-9)
    labels = gm.predict(array)  # the sample dimension is remembered
    assert isinstance(labels, xr.DataArray) and labels.dims == ("cell",)
    assert list(labels["cell"].values[:2]) == ["cell0", "cell1"]
    assert isinstance(labels.data, da.Array) == lazy
    np.testing.assert_array_equal(np.asarray(labels), ref.predict(X))
    proba = gm.predict_proba(array, sample_dim="cell")
    assert proba.dims == ("cell", "component")


@pytest.mark.parametrize("fitted_on", ["dask", "pandas"])
def test_columns_renamed_or_reordered_are_refused_for_dask_and_pandas(fitted_on):
    """Feature names are recorded from a Dask DataFrame as from pandas, and a prediction
    on columns in another order or of other names is refused, Dask or pandas alike, as
    scikit-learn refuses pandas (before: a reordered Dask DataFrame was predicted
    without a word, half of the labels wrong)."""
    pandas_frame = pd.DataFrame(X, columns=["a", "b", "c"])
    frame = dd.from_pandas(pandas_frame, npartitions=3)
    gm = GaussianMixture(3, random_state=0).fit(
        frame if fitted_on == "dask" else pandas_frame)
    np.testing.assert_array_equal(gm.feature_names_in_, ["a", "b", "c"])
    for other in (frame[["c", "b", "a"]], pandas_frame[["c", "b", "a"]]):
        with pytest.raises(ValueError, match="same order as they were in fit"):
            gm.predict(other)
    with pytest.raises(ValueError, match="Feature names unseen at fit time"):
        gm.predict(frame.rename(columns={"a": "z"}))
    np.testing.assert_array_equal(gm.predict(frame).compute().to_numpy(),
                                  gm.predict(pandas_frame).to_numpy())
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        gm.predict(da.from_array(X, chunks=300))
    refit = gm.fit(da.from_array(X, chunks=300))  # no names: none kept from before
    assert not hasattr(refit, "feature_names_in_")
