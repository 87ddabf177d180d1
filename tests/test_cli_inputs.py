"""Tests of daskgmm.cli.inputs: what a run reads (features, ids, weights), and the
one-line errors for settings that do not apply to the data."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import zarr

from daskgmm.cli.inputs import InputKeys
from daskgmm.cli.inputs import open_input as _open_input
from daskgmm.errors import ConfigError, DataNotFoundError, InvalidDataError
from daskgmm.io.locations import Location

N = 600


def weight(path=None, dataset=None, column=None):
    return SimpleNamespace(path=Location(path) if path else None, dataset=dataset,
                           column=column)


def open_input(path, **kwargs):
    return _open_input(Location(path), **kwargs)


@pytest.fixture
def table(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": np.arange(N) + 10, "a": rng.normal(size=N),
                          "b": rng.normal(size=N).astype(np.float32),
                          "w": rng.integers(0, 3, N), "label": ["x"] * N})
    frame.to_parquet(tmp_path / "t.parquet", row_group_size=100)
    return tmp_path / "t.parquet", frame


@pytest.fixture
def store(tmp_path):
    group = zarr.open_group(tmp_path / "s.zarr", mode="w")
    group.create_array("X", data=np.arange(2 * N, dtype=np.float64).reshape(N, 2),
                       chunks=(100, 2))
    group.create_array("w", data=np.linspace(0, 1, N), chunks=(64,))
    return tmp_path / "s.zarr"


def test_parquet_features_leave_out_the_id_and_weight_columns(table):
    path, frame = table
    got = open_input(str(path), id_column="id", sample_weight=weight(column="w"),
                     chunk_rows=250)
    assert got.is_parquet and got.columns == ["a", "b"]
    assert got.X.chunks[0] == (200, 200, 200)  # whole row groups, at most 250 rows
    np.testing.assert_array_equal(got.X.compute(), frame[["a", "b"]].to_numpy())
    assert got.ids.chunks == got.X.chunks[:1] == got.weights.chunks
    np.testing.assert_array_equal(got.ids.compute(), frame.id.to_numpy())
    np.testing.assert_array_equal(got.weights.compute(), frame.w.to_numpy())
    assert got.info["columns"] == ["a", "b"] and got.info["id_column"] == "id"
    assert got.info["sample_weight"] == {"path": None, "dataset": None, "column": "w"}
    # Named columns are taken as they are (here the id becomes a feature).
    named = open_input(str(path), columns=["id", "a"])
    assert named.columns == ["id", "a"] and named.weights is None


def test_weights_from_the_data_store_or_a_file(store, tmp_path):
    got = open_input(str(store), dataset="X", sample_weight=weight(dataset="w"))
    np.testing.assert_allclose(got.weights.compute(), np.linspace(0, 1, N))
    assert got.weights.chunks == got.X.chunks[:1]
    np.save(tmp_path / "w.npy", np.arange(N))
    got = open_input(str(store), dataset="X",
                     sample_weight=weight(path=str(tmp_path / "w.npy")))
    np.testing.assert_array_equal(got.weights.compute(), np.arange(N))
    assert got.info["sample_weight"]["path"] == str(tmp_path / "w.npy")


@pytest.mark.parametrize(("kwargs", "error", "fragment"), [
    ({"path": "store", "dataset": "X", "columns": ["a"]}, ConfigError,
     "data.columns applies to Parquet tables only"),
    ({"path": "store", "dataset": "X", "id_column": "id"}, ConfigError,
     "output.id_column applies to Parquet tables only"),
    ({"path": "store", "dataset": "X", "sample_weight": weight(column="w")}, ConfigError,
     "data.sample_weight.column: data.path is zarr data, not a Parquet table"),
    ({"path": "table", "sample_weight": weight(dataset="w")}, ConfigError,
     "data.sample_weight.dataset: data.path is parquet data"),
    ({"path": "table", "sample_weight": weight(column="label")}, InvalidDataError,
     "the sample-weight column 'label' is not numbers"),
    ({"path": "table", "sample_weight": weight(column="nope")}, DataNotFoundError,
     "has no column 'nope'"),
    ({"path": "table", "dataset": "X"}, ConfigError, "is a Parquet table, which has no "
                                                     "datasets"),
    ({"path": "sklearn:iris", "sample_weight": weight(dataset="w")}, ConfigError,
     "sklearn:iris holds no weights"),
])
def test_settings_that_do_not_apply(table, store, kwargs, error, fragment):
    kwargs = dict(kwargs)
    kwargs["path"] = {"store": str(store), "table": str(table[0])}.get(kwargs["path"],
                                                                       kwargs["path"])
    with pytest.raises(error) as info:
        open_input(**kwargs)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_no_feature_left_and_flag_names(tmp_path):
    pd.DataFrame({"id": np.arange(5), "w": np.ones(5)}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(InvalidDataError, match="no numeric column left as a feature"):
        open_input(str(tmp_path / "t.parquet"), id_column="id",
                   sample_weight=weight(column="w"))
    keys = InputKeys(path="--data", columns="--columns", id_column="--id-column")
    with pytest.raises(ConfigError, match="--columns applies to Parquet tables only"):
        open_input("sklearn:iris", columns=["a"], keys=keys)


@pytest.mark.parametrize("keys", [InputKeys(), InputKeys(path="--data")],
                         ids=["fit", "predict"])
def test_a_missing_data_path_is_named_by_its_setting(tmp_path, keys):
    """The data's own errors (here: nothing at the path) name the setting the user gave
    it, data.path or --data, before the path; the type is kept."""
    missing = tmp_path / "none.zarr"
    with pytest.raises(DataNotFoundError) as info:
        _open_input(Location(str(missing)), keys=keys)
    assert str(info.value).startswith(f"{keys.path}: No such file or store: ")
    assert str(missing) in str(info.value)
