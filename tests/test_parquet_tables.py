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


def _directory(tmp_path, name, *tables):
    path = tmp_path / name
    path.mkdir()
    for i, t in enumerate(tables):
        pq.write_table(t, path / f"part-{i}.parquet")
    return path


@pytest.mark.parametrize(("second", "columns", "fragment"), [
    (lambda t: t.drop_columns(["f2"]), None, "part-1.parquet' has no column 'f2'"),
    (lambda t: t.rename_columns(["id", "label", "f1", "g2", "f3"]), ["f1", "f2"],
     "part-1.parquet' has no column 'f2'"),
    (lambda t: t.set_column(2, "f1", pa.array([str(v) for v in t.column("f1").to_pylist()])),
     None, "'f1' is string in '"),
    (lambda t: t.append_column("extra", pa.array(np.zeros(len(t)))), None,
     "part-1.parquet' has numeric column(s) 'extra' that are not numeric columns"),
])
def test_files_that_disagree_on_the_columns_are_refused(tmp_path, second, columns,
                                                         fragment):
    """Before: a read error mid-fit (a missing column), or strings parsed into numbers
    without a word (a column of text in one file)."""
    path = _directory(tmp_path, "t", table(100), second(table(100, seed=1)))
    with pytest.raises(InvalidDataError, match="the files disagree on the columns") as info:
        open_array(path, columns=columns)
    assert fragment in str(info.value)


def test_duplicate_columns_are_refused(tmp_path):
    r = np.arange(10.0)
    dup = pa.Table.from_arrays([pa.array(r), pa.array(r), pa.array(r)], names=["a", "a", "b"])
    path = _directory(tmp_path, "dup", dup)
    with pytest.raises(InvalidDataError, match="column 'a' appears 2 times"):
        open_array(path)
    np.testing.assert_array_equal(open_array(path, columns=["b"]).compute()[:, 0], r)
    with pytest.raises(InvalidDataError, match="names a column more than once"):
        open_array(path, columns=["b", "b"])


def test_files_that_agree_open_whatever_their_integer_or_float_types(tmp_path):
    other = table(100, seed=1)
    other = other.set_column(0, "id", other.column("id").cast(pa.int32()))
    path = _directory(tmp_path, "ok", table(100), other)
    assert open_array(path).shape == (200, 4)
