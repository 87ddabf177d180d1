"""Parquet files and directories through open_array: numeric columns by default, row
groups as chunks with known sizes, merged up to the chunk size, never split."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from daskgmm.errors import DataNotFoundError, InvalidDataError
from daskgmm.io import get_reader, open_array
from daskgmm.io.parquet_tables import parquet_layout


def table(n, seed=0, offset=0):
    rng = np.random.default_rng(seed)
    return pa.table({"id": pa.array(np.arange(offset, offset + n)),
                     "label": pa.array([f"s{i}" for i in range(n)]),
                     "f1": rng.standard_normal(n), "f2": rng.standard_normal(n),
                     "f3": rng.standard_normal(n).astype("float32")})


def test_single_file_row_groups_are_chunks(tmp_path):
    path = tmp_path / "t.parquet"
    t = table(1000)
    pq.write_table(t, path, row_group_size=300)
    assert get_reader(path).name == "parquet"
    x = open_array(path, chunk_rows=300)
    assert x.chunks == ((300, 300, 300, 100), (4,))  # id, f1, f2, f3 (label is text)
    expected = np.column_stack([t.column(c).to_numpy().astype("f8")
                                for c in ("id", "f1", "f2", "f3")])
    np.testing.assert_array_equal(x.compute(), expected)
    # merged up to the chunk size, never split
    assert open_array(path, chunk_rows=650).chunks[0] == (600, 400)
    assert open_array(path, chunk_rows=10).chunks[0] == (300, 300, 300, 100)
    assert open_array(path).chunks[0] == (1000,)


def test_columns_and_dtype(tmp_path):
    path = tmp_path / "t.parquet"
    t = table(200)
    pq.write_table(t, path)
    x = open_array(path, columns=["f3"])
    assert x.dtype == np.float32 and x.shape == (200, 1)
    with pytest.raises(DataNotFoundError, match="no column 'nope'"):
        open_array(path, columns=["nope"])
    with pytest.raises(InvalidDataError, match="'label' \\(string\\) are not numeric"):
        open_array(path, columns=["f1", "label"])


def test_directory_of_files(tmp_path):
    d = tmp_path / "table"
    (d / "year=1").mkdir(parents=True)
    pq.write_table(table(100, 1, 0), d / "year=1" / "a.parquet", row_group_size=50)
    pq.write_table(table(70, 2, 100), d / "b.parquet")
    (d / "_SUCCESS").write_text("")
    x = open_array(d, columns=["id"])
    assert x.chunks[0] == (70, 100)  # files in sorted path order: b.parquet, year=1/a
    ids = x.compute()[:, 0]
    assert sorted(ids) == list(range(170))
    layout = parquet_layout(d, ["id"], chunk_rows=10)
    assert layout.chunks == (70, 50, 50)


def test_name_follows_the_files(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(table(100, 0), path)
    first = open_array(path).name
    assert open_array(path).name == first
    pq.write_table(table(100, 5), path)
    assert open_array(path).name != first


def test_memory_url(tmp_path):
    import fsspec

    path = tmp_path / "t.parquet"
    t = table(120)
    pq.write_table(t, path, row_group_size=40)
    fsspec.filesystem("memory").put_file(str(path), "/parquet-tests/t.parquet")
    x = open_array("memory://parquet-tests/t.parquet", columns=["f1", "f2"], chunk_rows=40)
    assert x.chunks[0] == (40, 40, 40)
    np.testing.assert_array_equal(x.compute(scheduler="sync")[:, 1], t.column("f2").to_numpy())
