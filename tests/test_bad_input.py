"""The bad-input catalogue of the Python API: what is refused, with which error and words.

Every case asserts the exception *type* and that the *message* says what was wrong,
where (row range, component, file, parameter) and, where there is something to do, what
to do.

Catalogue
---------
* non-finite data: NaN/Inf in a Dask array, found during a pass
  (:class:`~daskgmm.errors.NonFiniteDataError` naming the chunk's rows), for every
  ``init_params`` and for user-given initial parameters; in NumPy input
  (scikit-learn's ``ValueError``); in data given to ``predict``;
* shapes: 1-D, 3-D, empty (no rows, no columns), unknown chunk sizes;
* dtypes: strings, complex numbers, datetimes, objects, and stored strings/records;
* fewer samples than components; a different feature count at predict time;
* files: missing file, missing dataset, unreadable or unrecognised store (via
  :func:`daskgmm.io.readers.open_array`), a corrupt chunk found during the fit;
* arrays chunked along the features (Zarr and HDF5): fitted, equal to row chunking;
* invalid estimator parameters: everything scikit-learn's ``GaussianMixture`` rejects,
  plus daskgmm's own; all refused before any data is read;
* degenerate components: a collapsed covariance with ``reg_covar=0`` and a component
  whose soft count underflows to exactly zero
  (:class:`~daskgmm.errors.DegenerateComponentError`);
* damaged checkpoints (:class:`~daskgmm.errors.CheckpointError`).
"""

from __future__ import annotations

import copy
import json
import os
import re
import warnings

import dask
import dask.array as da
import h5py
import numpy as np
import pytest
import zarr
from numpy.testing import assert_array_equal
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGM
from sklearn.utils._param_validation import InvalidParameterError

from daskgmm import GaussianMixture
from daskgmm.errors import (
    CheckpointError,
    DaskGMMError,
    DataNotFoundError,
    DataSourceError,
    DegenerateComponentError,
    InvalidDataError,
    NonFiniteDataError,
)
from daskgmm.io.readers import open_array

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

N, D, CHUNK = 3000, 3, 500


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    rng = np.random.default_rng(7)
    centres = np.array([[0.0, 0.0, 0.0], [6.0, 6.0, 0.0]])
    return centres[rng.integers(2, size=N)] + rng.normal(size=(N, D))


def _with(X: np.ndarray, row: int, value: float, column: int = 1) -> np.ndarray:
    out = X.copy()
    out[row, column] = value
    return out


def _poisoned(n: int = 100, d: int = 2) -> da.Array:
    """A Dask array that fails the test if anything computes it."""
    def read():
        raise AssertionError("the data were read although the input was refused")
    return da.from_delayed(dask.delayed(read)(), shape=(n, d), dtype=np.float64)


USER_INIT = {
    "weights_init": [0.5, 0.5],
    "means_init": [[0.0, 0.0, 0.0], [6.0, 6.0, 0.0]],
    "precisions_init": np.stack([np.eye(D)] * 2),
}


# --------------------------------------------------------------------------------------
# NaN and Inf
# --------------------------------------------------------------------------------------
_SAMPLED_INIT = ("the data fit in the initialisation's in-memory sample (n <= "
                 "init.SAMPLE_ROWS), which init._kmeans_centres / kmeans_plusplus give to "
                 "scikit-learn unchecked: its ValueError ('Input X contains NaN. KMeans "
                 "does not accept ...', 'Input contains infinity ...') names neither rows "
                 "nor chunk")


@pytest.mark.parametrize(
    "init",
    [
        # The sample that seeds k-means is checked too, and named by its chunk.
        "kmeans",
        "k-means++",
        "random_from_data",
        # 'random': see test_random_init_kernel_checks_the_chunk (which chunk is blamed
        # first depends on the task order, so the estimator-level outcome is not stable).
        "user",
    ],
)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # see the next test
def test_non_finite_dask_data_names_the_chunk(X, init, value):
    bad = da.from_array(_with(X, 1234, value), chunks=(CHUNK, D))
    kwargs = USER_INIT if init == "user" else {"init_params": init}
    gm = GaussianMixture(2, random_state=0, **kwargs)
    # Synchronous: the first chunk that fails is always the same one.
    with dask.config.set(scheduler="synchronous"), \
            pytest.raises(NonFiniteDataError) as info:
        gm.fit(bad)
    message = str(info.value)
    assert "NaN or infinite" in message
    assert "1000..1499" in message  # the chunk
    assert "row 1234" in message  # the first bad row
    assert "Remove or impute" in message  # what to do
    assert isinstance(info.value, ValueError)  # scikit-learn-style code keeps working


def test_the_advice_of_the_non_finite_error_works(X):
    """The NaN error advises X[da.isfinite(X).all(axis=1)]: doing just that fits (the
    chunk sizes it leaves unknown are computed)."""
    x = da.from_array(_with(X, 1234, np.nan), chunks=(CHUNK, D))
    with pytest.raises(NonFiniteDataError, match=r"X\[da\.isfinite\(X\)\.all\(axis=1\)\]"):
        GaussianMixture(2, random_state=0).fit(x)
    kept = x[da.isfinite(x).all(axis=1)]
    fitted = GaussianMixture(2, random_state=0).fit(kept)
    assert fitted.converged_ and fitted.n_features_in_ == D


def test_non_finite_dask_data_under_warnings_as_errors(X):
    bad = da.from_array(_with(X, 1234, np.inf), chunks=(CHUNK, D))
    with warnings.catch_warnings(), dask.config.set(scheduler="synchronous"):
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(NonFiniteDataError, match=r"1000\.\.1499"):
            GaussianMixture(2, **USER_INIT).fit(bad)


def test_random_init_kernel_checks_the_chunk(X):
    from daskgmm.engine.estep import Components, make_plan, random_assignment_statistics

    block = _with(X, 1234, np.nan)[1000:1500]
    plan = make_plan([Components.gaussian("full", [0.5, 0.5], X[:2],
                                          np.stack([np.eye(D)] * 2))], X[0])
    with pytest.raises(NonFiniteDataError, match=r"1000\.\.1499 \(first at row 1234\)"):
        random_assignment_statistics(block, None, 1000, plan, [0])


def test_non_finite_row_outside_the_kmeans_sample(X, monkeypatch):
    """When the bad row is not in the start's in-memory sample, the first pass (which
    gathers the sample) still checks every row of every chunk."""
    import daskgmm.engine.starts

    monkeypatch.setattr(daskgmm.engine.starts, "SAMPLE_ROWS", 200)
    bad = da.from_array(_with(X, 1234, np.nan), chunks=(CHUNK, D))
    with dask.config.set(scheduler="synchronous"), \
            pytest.raises(NonFiniteDataError, match=r"chunk of rows 1000\.\.1499 \(first at "
                                                    r"row 1234\)\. Remove or impute"):
        GaussianMixture(2, random_state=0).fit(bad)


def test_non_finite_rows_are_counted_in_the_message(X):
    bad = X.copy()
    bad[[2040, 2041, 2300], 0] = np.nan
    with dask.config.set(scheduler="synchronous"), \
            pytest.raises(NonFiniteDataError, match=r"3 row\(s\) in the chunk of rows "
                                                    r"2000\.\.2499 \(first at row 2040\)"):
        GaussianMixture(2, **USER_INIT).fit(da.from_array(bad, chunks=(CHUNK, D)))


@pytest.mark.parametrize(("value", "word"), [(np.nan, "NaN"), (np.inf, "infinity")])
def test_non_finite_numpy_data(X, value, word):
    with pytest.raises(ValueError, match=word):
        GaussianMixture(2).fit(_with(X, 1234, value))


def test_non_finite_dask_data_at_predict_time(X):
    gm = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(NonFiniteDataError, match=r"1000\.\.1499"):
        gm.predict(da.from_array(_with(X, 1234, np.nan), chunks=(CHUNK, D))).compute()


def test_non_finite_numpy_data_at_predict_time(X):
    gm = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(ValueError, match="NaN"):
        gm.predict(_with(X, 1234, np.nan))


# --------------------------------------------------------------------------------------
# shapes and dtypes
# --------------------------------------------------------------------------------------
def test_one_dimensional_input(X):
    with pytest.raises(InvalidDataError, match=r"2-D.*1-D array of shape \(3000,\).*"
                                               r"reshape\(-1, 1\)"):
        GaussianMixture(2).fit(da.from_array(X[:, 0]))
    with pytest.raises(ValueError, match=r"(?s)Expected 2D array, got 1D array.*"
                                         r"reshape\(-1, 1\)"):
        GaussianMixture(2).fit(X[:, 0])


def test_three_dimensional_input(X):
    cube = X.reshape(1000, 3, 3)
    with pytest.raises(ValueError, match=r"dim 3"):
        GaussianMixture(2).fit(cube)
    with pytest.raises(InvalidDataError, match=r"3-D array of shape \(1000, 3, 3\)"):
        GaussianMixture(2).fit(da.from_array(cube))


def test_three_dimensional_dask_input_gets_a_fitting_hint(X):
    with pytest.raises(InvalidDataError) as info:
        GaussianMixture(2).fit(da.from_array(X.reshape(1000, 3, 3)))
    assert "reshape(-1, 1)" not in str(info.value)
    assert "-1)" in str(info.value)


@pytest.mark.parametrize(
    ("shape", "numpy_message"),
    [((0, 3), r"0 sample\(s\) \(shape=\(0, 3\)\) while a minimum of 2"),
     ((10, 0), r"0 feature\(s\) \(shape=\(10, 0\)\) while a minimum of 1"),
     ((1, 3), r"1 sample\(s\) \(shape=\(1, 3\)\) while a minimum of 2")],
)
def test_empty_or_single_row_input(shape, numpy_message):
    data = np.zeros(shape)
    rows, cols = shape
    with pytest.raises(InvalidDataError,
                       match=rf"{rows} sample\(s\) and {cols} feature\(s\).*minimum of 2 "
                             r"sample\(s\) and 1 feature"):
        GaussianMixture(1).fit(da.from_array(data))
    with pytest.raises(ValueError, match=numpy_message):
        GaussianMixture(1).fit(data)


def test_unknown_chunk_sizes_are_computed_in_one_pass(X):
    """X[mask] (what the NaN error advises) has unknown chunk sizes: the fit computes
    them in one pass that observers see (kind 'sizes'), leaves the caller's array as it
    was, and fits as it would on the same array with known sizes."""
    from daskgmm.diagnostics.observers import observe

    x = da.from_array(X, chunks=(CHUNK, D))
    filtered = x[x[:, 0] > 0]
    passes = []

    class Passes:
        def pass_started(self, kind, n_chunks):
            passes.append((kind, n_chunks))

    with observe(Passes()):
        fitted = GaussianMixture(2, random_state=0).fit(filtered)
    assert passes[0] == ("sizes", filtered.numblocks[0])
    assert [kind for kind, _ in passes].count("sizes") == 1
    assert np.isnan(filtered.shape[0])
    known = GaussianMixture(2, random_state=0).fit(filtered.copy().compute_chunk_sizes())
    np.testing.assert_array_equal(fitted.means_, known.means_)


@pytest.mark.parametrize(
    "values",
    [np.array([["a", "b"], ["c", "d"], ["e", "f"]]),
     np.ones((3, 2), dtype=complex),
     np.zeros((3, 2), dtype="datetime64[s]"),
     np.array([[1, "x"], [2, 3], [3, 4]], dtype=object)],
    ids=["str", "complex", "datetime", "object"],
)
def test_non_numeric_dtypes(values):
    with pytest.raises(InvalidDataError,
                       match=rf"got dtype {re.escape(str(values.dtype))}.*astype"):
        GaussianMixture(1).fit(da.from_array(values, chunks=(3, 2)))
    if values.dtype.kind != "M":  # scikit-learn's validation turns datetimes into floats
        with pytest.raises(ValueError):
            GaussianMixture(1).fit(values)


@pytest.mark.parametrize(
    ("dtype", "what"),
    [("S5", "byte strings"), ([("a", "f8"), ("b", "i4")], "structured")],
    ids=["bytes", "compound"],
)
def test_non_numeric_stored_dtypes(tmp_path, dtype, what):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("X", shape=(10, 2), dtype=np.dtype(dtype))
    with pytest.raises(InvalidDataError, match=rf"'X'.*{what}.*float32 or float64"):
        open_array(path)


def test_integer_and_bool_dask_input_is_converted():
    data = np.random.default_rng(0).integers(0, 5, size=(200, 2))
    gm = GaussianMixture(2, random_state=0).fit(da.from_array(data, chunks=50))
    ref = GaussianMixture(2, random_state=0).fit(da.from_array(data.astype(float), chunks=50))
    assert_array_equal(gm.means_, ref.means_)


@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_fewer_samples_than_components(X, as_dask):
    data = da.from_array(X[:3]) if as_dask else X[:3]
    with pytest.raises(InvalidDataError,
                       match=r"n_samples >= n_components.*n_components = 5, n_samples = 3"):
        GaussianMixture(5).fit(data)


@pytest.mark.parametrize("method", ["predict", "predict_proba", "score_samples", "score"])
@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_feature_count_differs_at_predict_time(X, method, as_dask):
    gm = GaussianMixture(2, random_state=0).fit(X)
    data = da.from_array(X[:, :2]) if as_dask else X[:, :2]
    error = InvalidDataError if as_dask else ValueError
    with pytest.raises(error, match=r"X has 2 features, but GaussianMixture is expecting "
                                    r"3 features"):
        getattr(gm, method)(data)


# --------------------------------------------------------------------------------------
# files and stores
# --------------------------------------------------------------------------------------
def _write_zarr(path, values, chunks):
    arr = zarr.create_array(path, shape=values.shape, dtype=values.dtype, chunks=chunks)
    arr[...] = values
    return arr


@pytest.mark.parametrize("name", ["nope.zarr", "nope.h5", "nope.npy", "nope"])
def test_missing_file(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(DataNotFoundError, match=rf"No such file or store: .*{name}") as info:
        open_array(path)
    assert isinstance(info.value, FileNotFoundError)


def test_missing_dataset(tmp_path, X):
    h5 = tmp_path / "data.h5"
    with h5py.File(h5, "w") as f:
        f["X"] = X
        f["group/Y"] = X
    with pytest.raises(DataNotFoundError,
                       match=r"No dataset 'Z' in the HDF5 file .*data\.h5.*Datasets in it: "
                             r"'X' \(3000, 3\) float64, 'group/Y'"):
        open_array(h5, "Z")
    group = zarr.open_group(tmp_path / "data.zarr", mode="w")
    group.create_array("X", data=X, chunks=(CHUNK, D))
    with pytest.raises(DataNotFoundError,
                       match=r"No array 'Z' in the zarr store .*data\.zarr.*Arrays in it: "
                             r"'X' \(3000, 3\) float64"):
        open_array(tmp_path / "data.zarr", "Z")
    with pytest.raises(DataSourceError, match=r"2 2-D datasets.*pass dataset=<name>"):
        open_array(h5)


def test_unreadable_stores(tmp_path):
    corrupt_h5 = tmp_path / "corrupt.h5"
    corrupt_h5.write_bytes(b"\x89HDF\r\n\x1a\n" + b"garbage" * 100)
    with pytest.raises(DataSourceError, match=r"Cannot read the HDF5 file .*corrupt\.h5.*"
                                              r"unreadable or corrupt"):
        open_array(corrupt_h5)
    corrupt_zarr = tmp_path / "corrupt.zarr"
    corrupt_zarr.mkdir()
    (corrupt_zarr / "zarr.json").write_text("{not json")
    with pytest.raises(DataSourceError, match=r"Cannot read the zarr store .*corrupt\.zarr.*"
                                              r"unreadable or corrupt"):
        open_array(corrupt_zarr)
    corrupt_zip = tmp_path / "corrupt.zip"
    corrupt_zip.write_bytes(b"PK\x03\x04junk")
    with pytest.raises(DataSourceError, match=r"corrupt\.zip.*not a valid zip file"):
        open_array(corrupt_zip)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(DataSourceError, match=r"notes\.txt.*no format daskgmm can read.*"
                                              r"Supported formats: Zarr"):
        open_array(text)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="root reads files whatever their permissions")
def test_store_without_read_permission(tmp_path, X):
    path = tmp_path / "locked.h5"
    with h5py.File(path, "w") as f:
        f["X"] = X
    path.chmod(0)
    try:
        with pytest.raises(DataSourceError, match=r"locked\.h5"):
            open_array(path)
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize(("shape", "hint"), [((10,), r"x\.reshape\(-1, 1\)"),
                                             ((4, 3, 2), r"x\.reshape\(len\(x\), -1\)")])
def test_stored_array_not_2d(tmp_path, shape, hint):
    path = tmp_path / "data.zarr"
    _write_zarr(path, np.zeros(shape), chunks=shape)
    with pytest.raises(InvalidDataError,
                       match=rf"has shape {re.escape(str(shape))}.*needs a 2-D array.*{hint}"):
        open_array(path)


def test_empty_stored_array(tmp_path):
    path = tmp_path / "data.zarr"
    _write_zarr(path, np.zeros((0, 3)), chunks=(1, 3))
    with pytest.raises(InvalidDataError, match=r"is empty \(shape \(0, 3\)\).*at least one "
                                               r"sample"):
        open_array(path)


def _corrupt_hdf5_chunk(path, X, chunk_index):
    with h5py.File(path, "w") as f:
        dset = f.create_dataset("X", data=X, chunks=(CHUNK, D), compression="gzip")
        info = dset.id.get_chunk_info(chunk_index)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset + 10)
        fh.write(b"\x00" * 64)


def test_corrupt_hdf5_chunk_found_during_fit(tmp_path, X):
    path = tmp_path / "data.h5"
    _corrupt_hdf5_chunk(path, X, 3)
    x = open_array(path, chunk_rows=CHUNK)
    with pytest.raises(DataSourceError, match=r"Cannot read .*data\.h5.*'/X'"):
        GaussianMixture(2, **USER_INIT).fit(x)


def test_corrupt_zarr_chunk_found_during_fit(tmp_path, X):
    path = tmp_path / "data.zarr"
    _write_zarr(path, X, chunks=(CHUNK, D))
    (path / "c" / "3" / "0").write_bytes(b"corrupt")
    x = open_array(path)
    with pytest.raises(DataSourceError, match=r"data\.zarr"):
        GaussianMixture(2, **USER_INIT).fit(x)


def test_zarr_chunked_along_features_fits_like_row_chunks(tmp_path, X):
    by_feature = tmp_path / "features.zarr"
    by_row = tmp_path / "rows.zarr"
    _write_zarr(by_feature, X, chunks=(CHUNK, 1))
    _write_zarr(by_row, X, chunks=(CHUNK, D))
    raw = da.from_zarr(str(by_feature))
    assert raw.chunks[1] == (1, 1, 1)
    assert open_array(by_feature).chunks[1] == (D,)
    results = [GaussianMixture(2, random_state=0).fit(x) for x in
               (raw, open_array(by_feature, chunk_rows=CHUNK), da.from_zarr(str(by_row)))]
    for gm in results[:2]:
        assert_array_equal(gm.means_, results[2].means_)
        assert_array_equal(gm.covariances_, results[2].covariances_)
        assert gm.lower_bounds_ == results[2].lower_bounds_


def test_hdf5_chunked_along_features_fits_like_row_chunks(tmp_path, X):
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("by_feature", data=X, chunks=(CHUNK, 1))
        f.create_dataset("by_row", data=X, chunks=(CHUNK, D))
    a = GaussianMixture(2, random_state=0).fit(open_array(path, "by_feature", CHUNK))
    b = GaussianMixture(2, random_state=0).fit(open_array(path, "by_row", CHUNK))
    assert_array_equal(a.means_, b.means_)
    assert_array_equal(a.covariances_, b.covariances_)


# --------------------------------------------------------------------------------------
# invalid parameters
# --------------------------------------------------------------------------------------
PD2 = np.stack([np.eye(2)] * 2)
INVALID_PARAMETERS = [
    # what scikit-learn's GaussianMixture rejects
    ({"n_components": 0}, InvalidParameterError, r"'n_components' .* range \[1, inf\)"
                                                 r"\. Got 0"),
    ({"n_components": 1.5}, InvalidParameterError, r"'n_components' .* int .* Got 1\.5"),
    ({"tol": -1}, InvalidParameterError, r"'tol' .* range \[0\.0, inf\)\. Got -1"),
    ({"reg_covar": -1}, InvalidParameterError, r"'reg_covar' .* range \[0\.0, inf\)\. Got -1"),
    ({"max_iter": -1}, InvalidParameterError, r"'max_iter' .* range \[0, inf\)\. Got -1"),
    ({"n_init": 0}, InvalidParameterError, r"'n_init' .* range \[1, inf\)\. Got 0"),
    ({"init_params": "x"}, InvalidParameterError, r"'init_params' .* among .*kmeans.* "
                                                  r"Got 'x'"),
    ({"covariance_type": "x"}, InvalidParameterError, r"'covariance_type' .* among .*full.*"
                                                      r"Got 'x'"),
    ({"verbose_interval": 0}, InvalidParameterError, r"'verbose_interval' .* range \[1, "
                                                     r"inf\)\. Got 0"),
    ({"verbose": -1}, InvalidParameterError, r"'verbose' .* Got -1"),
    ({"warm_start": "yes"}, InvalidParameterError, r"'warm_start' .* 'bool'.* Got 'yes'"),
    ({"random_state": "x"}, InvalidParameterError, r"'random_state' .* Got 'x'"),
    ({"weights_init": [0.5, 0.6]}, ValueError, r"'weights' should be normalized, but got "
                                               r"sum\(weights\) = 1\.1"),
    ({"weights_init": [1.5, -0.5]}, ValueError, r"'weights' should be in the range \[0, 1\]"),
    ({"weights_init": [0.5, 0.5, 0.0]}, ValueError, r"'weights' should have the shape of "
                                                    r"\(2,\), but got \(3,\)"),
    ({"weights_init": [0.5, np.nan]}, ValueError, r"weights_init contains NaN"),
    ({"means_init": np.zeros((3, 2))}, ValueError, r"'means' should have the shape of "
                                                   r"\(2, 2\), but got \(3, 2\)"),
    ({"means_init": np.zeros((2, 3))}, ValueError, r"'means' .* \(2, 2\), but got \(2, 3\)"),
    ({"means_init": [[0, 0], [np.inf, 0]]}, ValueError, r"means_init contains NaN or "
                                                        r"infinite"),
    ({"precisions_init": np.stack([np.eye(2), -np.eye(2)])}, ValueError,
     r"'full precision' should be symmetric, positive-definite"),
    ({"precisions_init": np.stack([np.eye(2), [[1.0, 2.0], [0.0, 1.0]]])}, ValueError,
     r"'full precision' should be symmetric"),
    ({"precisions_init": np.eye(2)}, ValueError, r"'full precision' should have the shape "
                                                 r"of \(2, 2, 2\), but got \(2, 2\)"),
    ({"covariance_type": "tied", "precisions_init": -np.eye(2)}, ValueError,
     r"'tied precision' should be symmetric, positive-definite"),
    ({"covariance_type": "diag", "precisions_init": np.zeros((2, 2))}, ValueError,
     r"'diag precision' should be positive"),
    ({"covariance_type": "spherical", "precisions_init": [1.0, -1.0]}, ValueError,
     r"'spherical precision' should be positive"),
    ({"covariance_type": "spherical", "precisions_init": np.ones(3)}, ValueError,
     r"'spherical precision' should have the shape of \(2,\), but got \(3,\)"),
    # daskgmm's own
    ({"split_every": 1}, InvalidParameterError, r"'split_every' .* range \[2, inf\)\. Got 1"),
    ({"chunk_rows": 0}, InvalidParameterError, r"'chunk_rows' .* range \[1, inf\) or None\. "
                                               r"Got 0"),
    ({"dtype": "float16"}, InvalidParameterError, r"'dtype' .* among .*float32.* "
                                                  r"Got 'float16'"),
    ({"cache": "sometimes"}, InvalidParameterError, r"'cache' .* among \{'auto'\} or .*bool"
                                                    r".* Got 'sometimes'"),
    ({"checkpoint_every": 0}, InvalidParameterError, r"'checkpoint_every' .* range \[1, "
                                                     r"inf\)\. Got 0"),
    ({"checkpoint_dir": 3}, InvalidParameterError, r"'checkpoint_dir' .* 'str'.* Got 3"),
]
SKLEARN_PARAMETERS = set(SkGM().get_params())


@pytest.mark.parametrize(("params", "error", "match"), INVALID_PARAMETERS,
                         ids=[f"{i}-{'-'.join(p)}" for i, (p, _, _) in
                              enumerate(INVALID_PARAMETERS)])
def test_invalid_parameters_are_refused_before_reading(params, error, match):
    params = dict(params)
    gm = GaussianMixture(n_components=params.pop("n_components", 2), **params)
    with pytest.raises(error, match=match) as info:
        gm.fit(_poisoned(100, 2))
    assert isinstance(info.value, ValueError)
    assert not hasattr(gm, "means_")
    if set(params) <= SKLEARN_PARAMETERS:
        # scikit-learn refuses the same values with the same kind of error.
        sk = SkGM(n_components=gm.n_components, **params)
        with pytest.raises(ValueError):
            sk.fit(np.random.default_rng(0).normal(size=(100, 2)))


def test_invalid_parameters_leave_a_fitted_model_usable(X):
    gm = GaussianMixture(2, random_state=0).fit(X)
    means = gm.means_.copy()
    gm.set_params(tol=-1)
    with pytest.raises(InvalidParameterError):
        gm.fit(X)
    assert_array_equal(gm.means_, means)


# --------------------------------------------------------------------------------------
# degenerate components
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("covariance_type", "what"),
    [("full", "ill-defined empirical covariance"),
     ("tied", "share a tied covariance that is not positive definite"),
     ("diag", "zero or negative variance"),
     ("spherical", "zero or negative variance")],
)
@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_collapsed_component_without_regularisation(covariance_type, what, as_dask):
    """Three distinct points, each repeated: every component is a single point."""
    data = np.repeat([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]], 50, axis=0)
    if as_dask:
        data = da.from_array(data, chunks=(40, 2))
    with pytest.raises(DegenerateComponentError) as info:
        GaussianMixture(3, covariance_type=covariance_type, reg_covar=0.0,
                        random_state=0).fit(data)
    message = str(info.value)
    assert what in message
    assert "component(s) 0" in message  # which ones
    # what to do, in scikit-learn's words (which code may match on)
    assert "increase reg_covar" in message and "decrease the number of components" in message
    assert isinstance(info.value, ValueError)  # scikit-learn raises a ValueError here


def test_regularisation_rescues_the_collapsed_component():
    data = np.repeat([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]], 50, axis=0)
    gm = GaussianMixture(3, reg_covar=1e-4, random_state=0).fit(data)
    assert np.all(np.isfinite(gm.precisions_))


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("as_dask", [False, True], ids=["numpy", "dask"])
def test_component_whose_soft_count_underflows_to_zero(covariance_type, as_dask):
    """A component 1e4 standard deviations from all the data, with a tiny weight: every
    responsibility underflows to exactly 0. As in scikit-learn, the fit goes on: the soft
    count is 10 eps, the mean 0 and the covariance reg_covar on the diagonal."""
    data = np.random.default_rng(0).normal(size=(500, 2))
    precisions = {"full": np.stack([np.eye(2)] * 2), "tied": np.eye(2),
                  "diag": np.ones((2, 2)), "spherical": np.ones(2)}[covariance_type]
    kwargs = dict(covariance_type=covariance_type, means_init=[[0.0, 0.0], [1e4, 1e4]],
                  weights_init=[1 - 1e-12, 1e-12], precisions_init=precisions, max_iter=5)
    ref = SkGM(2, **kwargs).fit(data)
    gm = GaussianMixture(2, **kwargs).fit(da.from_array(data, chunks=(100, 2)) if as_dask
                                          else data)
    for attr in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        np.testing.assert_allclose(getattr(gm, attr), getattr(ref, attr), rtol=1e-9,
                                   atol=1e-15, err_msg=attr)
    assert gm.n_iter_ == ref.n_iter_ and gm.converged_ == ref.converged_


# --------------------------------------------------------------------------------------
# damaged checkpoints
# --------------------------------------------------------------------------------------
@pytest.fixture
def checkpoint(tmp_path, X):
    """A checkpoint directory after three iterations, and the settings that wrote it."""
    kwargs = {"n_components": 2, "random_state": 0, "tol": 0.0,
              "checkpoint_dir": str(tmp_path / "ckpt")}
    GaussianMixture(max_iter=3, **kwargs).fit(X)
    path = tmp_path / "ckpt" / "checkpoint.json"
    return path, json.loads(path.read_text()), kwargs


def _damage(checkpoint, change) -> None:
    """Damage the checkpoint; an edited body gets a matching checksum again, so that
    what is checked is the content (an unsealed edit is refused by its checksum:
    tests/test_checkpoint.py)."""
    from daskgmm.serialize.checkpoint import seal

    path, body, _ = checkpoint
    if isinstance(change, str):
        path.write_text(change)
    else:
        body = copy.deepcopy(body)
        change(body)
        if isinstance(body, dict) and body.get("format") == "daskgmm-checkpoint":
            seal(body)
        path.write_text(json.dumps(body))


def _state(**values):
    return lambda body: body["states"][0].update(values)


def _arrays(**values):
    return lambda body: body["states"][0]["arrays"].update(values)


def _flip_cholesky(body):
    body["states"][0]["arrays"]["precisions_cholesky"][0][0][0] *= -1.0


DAMAGES = {
    "not-json": ("{not json", r"is damaged \(.*\); delete it"),
    "truncated": ('{"format": "daskgmm-checkpoint", "states": [', r"is damaged"),
    "empty": ("", r"is damaged"),
    "deeply-nested": ("[" * 100_000 + "]" * 100_000, r"is damaged \(its JSON is nested"),
    "foreign": (lambda b: b.update(format="something-else"),
                r"is not a daskgmm checkpoint; point checkpoint_dir elsewhere"),
    "json-list": ("[1, 2]", r"is not a daskgmm checkpoint"),
    "newer-version": (lambda b: b.update(format_version=99),
                      r"format version 99; this daskgmm reads version 3\. Delete it"),
    "no-states": (lambda b: b.update(states=[]), r"is damaged \(no candidate states\)"),
    "state-not-object": (lambda b: b.update(states=[1]), r"is damaged"),
    "missing-means": (lambda b: b["states"][0]["arrays"].pop("means"),
                      r"is damaged.*'means'"),
    "means-not-numbers": (_arrays(means=[["a", "b"], ["c", "d"]]), r"is damaged"),
    "weights-wrong-length": (_arrays(weights=[1.0]), r"is damaged.*weights has shape"),
    "iteration-not-int": (lambda b: b.update(iteration="x"), r"is damaged"),
    "nan-lower-bounds": (_state(lower_bounds=[float("nan")]), r"is damaged"),
    "means-1d": (_arrays(means=[0.0, 0.0]), r"is damaged.*means has shape"),
    "means-nan": (_arrays(means=[[float("nan"), 0.0, 0.0], [6.0, 6.0, 0.0]]),
                  r"is damaged.*NaN"),
    "negative-weights": (_arrays(weights=[1.5, -0.5]), r"is damaged.*weights are not"),
    "negative-cholesky-diagonal": (_flip_cholesky, r"is damaged.*precisions_cholesky_"),
    "means-wrong-width": (_arrays(means=[[0.0, 0.0, 0.0, 0.0]] * 2),
                          r"is damaged.*means has shape"),
    "centre-wrong-width": (_state(centre=[0.0]), r"is damaged.*centre"),
    "n-iter-beyond-iteration": (_state(n_iter=99), r"is damaged.*n_iter"),
}


@pytest.mark.parametrize(("change", "match"),
                         [pytest.param(*DAMAGES[name], id=name) for name in DAMAGES])
def test_damaged_checkpoint(checkpoint, X, change, match):
    path, _, kwargs = checkpoint
    _damage(checkpoint, change)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        with pytest.raises(CheckpointError, match=match) as info:
            GaussianMixture(max_iter=6, **kwargs).fit(X)
    assert str(path) in str(info.value)  # where


def test_checkpoint_of_another_covariance_type_is_refused(checkpoint, X):
    _, _, kwargs = checkpoint
    with pytest.raises(CheckpointError, match=r"another configuration .*covariance_type"):
        GaussianMixture(max_iter=6, covariance_type="diag", **kwargs).fit(X)


def test_checkpoint_file_that_is_a_directory(tmp_path, X):
    (tmp_path / "ckpt" / "checkpoint.json").mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"checkpoint\.json is damaged.*delete it"):
        GaussianMixture(2, random_state=0, checkpoint_dir=tmp_path / "ckpt").fit(X)


def test_checkpoint_dir_that_is_a_file(tmp_path, X):
    not_a_directory = tmp_path / "ckpt"
    not_a_directory.write_text("I am a file")
    with pytest.raises(CheckpointError, match=r"checkpoint_dir"):
        GaussianMixture(2, random_state=0, checkpoint_dir=not_a_directory).fit(X)


def test_checkpoint_of_other_data_is_refused(checkpoint, X):
    _, _, kwargs = checkpoint
    with pytest.raises(CheckpointError, match=r"belongs to other data .*delete the checkpoint"):
        GaussianMixture(max_iter=6, **kwargs).fit(X[:2000])


def test_every_error_is_a_daskgmm_error_or_value_error():
    """The documented hierarchy the catalogue relies on."""
    for error in (NonFiniteDataError, InvalidDataError, DataSourceError, DataNotFoundError,
                  DegenerateComponentError, CheckpointError):
        assert issubclass(error, DaskGMMError) and issubclass(error, ValueError)
    assert issubclass(DataNotFoundError, FileNotFoundError)
