"""Synthetic Gaussian-mixture data sets, written block by block.

:func:`generate_mixture` writes samples of a random mixture to a Zarr v3 store or an
HDF5 file one block of rows at a time, each block drawn from a generator seeded by
``(seed, block)``; it appears complete with its marker, or not at all. Beside the data
are ``labels``, ``true_weights``, ``true_means``, ``true_covariances`` and root
attributes (``generator="daskgmm"``, seed, sizes...), which :func:`load_truth` reads."""

from __future__ import annotations

import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dask.array as da
import numpy as np

from daskgmm.diagnostics.observers import notify
from daskgmm.errors import (
    DataNotFoundError,
    DataSourceError,
    OutputWriteError,
    UnsafeOverwriteError,
)
from daskgmm.io.chunking import default_chunk_rows
from daskgmm.io.codecs import float_compressors
from daskgmm.io.storage import atomic_file, atomic_output_directory

__all__ = ["MAX_CHUNK_BYTES", "MAX_SEPARATION", "block_rows", "generate_mixture", "load_truth",
           "sample_parameters"]

FORMAT_VERSION = 2
_BLOCK_VALUES = 2**20  # values per logical block of draws (8 MiB of float64)
_TRUTH = {"weights": "true_weights", "means": "true_means",
          "covariances": "true_covariances"}
_RESERVED = ("labels", *_TRUTH.values())
_FORMATS = {".zarr": "zarr", ".h5": "hdf5", ".hdf5": "hdf5"}
MAX_CHUNK_BYTES = 2**31 - 2**20  # blosc and HDF5 hold a bit under 2 GiB per chunk
_MEAN_DRAWS = 32  # candidate layouts of the means; the best spread one is kept
MAX_SEPARATION = 1e6
"""The largest ``separation``: beyond, the samples of a float32 data set would
overflow long before anything is learnt."""


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _distances(points: np.ndarray) -> np.ndarray:
    """The distances between every pair of ``points`` (upper triangle)."""
    sq = np.einsum("ij,ij->i", points, points)
    d2 = sq[:, None] + sq[None, :] - 2.0 * points @ points.T
    return np.sqrt(np.maximum(d2, 0.0))[np.triu_indices(len(points), 1)]


def sample_parameters(n_features: int, n_components: int, *, seed: int = 0,
                      separation: float = 4.0) -> dict[str, np.ndarray]:
    """Draw the true parameters of a random Gaussian mixture (from
    ``np.random.default_rng([seed, 0])``): ``weights`` ``(K,)`` from a symmetric
    Dirichlet(5), ``covariances`` ``(K, D, D)`` each ``A Aᵀ / D + 0.5 I`` (``A``
    standard normal; condition number below ~10), and ``means`` ``(K, D)`` whose closest
    pair is ``separation`` average within-component standard deviations apart (below
    ~2 the components overlap)."""
    k = _as_int("n_components", n_components, 1)
    d = _as_int("n_features", n_features, 1)
    if not 0 <= separation <= MAX_SEPARATION:
        raise ValueError(f"separation must be a number from 0 to {MAX_SEPARATION:g}, got "
                         f"{separation!r}")
    rng = np.random.default_rng([seed, 0])
    weights = rng.dirichlet(np.full(k, 5.0))
    a = rng.standard_normal((k, d, d))
    covariances = a @ a.transpose(0, 2, 1) / d + 0.5 * np.eye(d)
    covariances = 0.5 * (covariances + covariances.transpose(0, 2, 1))
    sigma = math.sqrt(float(np.mean(np.trace(covariances, axis1=1, axis2=2))) / d)
    if k == 1:
        return {"weights": weights, "covariances": covariances,
                "means": rng.standard_normal((k, d)) * separation * sigma / math.sqrt(2 * d)}
    # The layout whose closest pair is farthest apart relative to the typical distance
    # (so rescaling does not blow the others apart), scaled to `separation` sigmas.
    best, best_score = None, -1.0
    for _ in range(_MEAN_DRAWS):
        candidate = rng.standard_normal((k, d))
        dist = _distances(candidate)
        score = float(dist.min() / max(np.median(dist), 1e-300))
        if score > best_score:
            best, best_score = candidate, score
    means = best * (separation * sigma / max(float(_distances(best).min()), 1e-300))
    return {"weights": weights, "means": means, "covariances": covariances}


def _sample_block(rng: np.random.Generator, n: int, weights: np.ndarray, means: np.ndarray,
                  chols: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of the mixture: one vectorised draw per component."""
    k, d = means.shape
    labels = rng.choice(k, size=n, p=weights).astype(np.int64)
    block = np.empty((n, d), dtype=dtype)
    for j in range(k):
        idx = np.flatnonzero(labels == j)
        if idx.size:
            block[idx] = rng.standard_normal((idx.size, d)) @ chols[j].T + means[j]
    return labels, block


def block_rows(n_features: int) -> int:
    """Rows of one logical block of draws (``2**20`` values, at least one row): the
    samples depend on the seed and this number only, never on ``chunk_rows``."""
    return max(1, _BLOCK_VALUES // max(1, int(n_features)))


def _open_writer(fmt: str, path: str, dataset: str, shape: tuple[int, int],
                 chunk_rows: int, dtype: np.dtype, params: dict[str, np.ndarray]
                 ) -> tuple[Any, Any, Any]:
    """``(file, data array, labels array)`` of a new data set, the truth written."""
    if fmt == "zarr":
        import zarr

        root = zarr.open_group(path, mode="w", zarr_format=3)
        make = root.create_array
        config = {"config": {"write_empty_chunks": True}}
        x = make(dataset, shape=shape, chunks=(chunk_rows, shape[1]), dtype=dtype,
                 compressors=float_compressors(dtype), fill_value=np.nan,
                 dimension_names=("sample", "feature"), **config)
        labels = make("labels", shape=(shape[0],), chunks=(chunk_rows,), dtype="int64",
                      compressors=float_compressors(np.int64), fill_value=-1,
                      dimension_names=("sample",), **config)
        for key, name in _TRUTH.items():
            make(name, shape=params[key].shape, dtype="float64")[...] = params[key]
        return root, x, labels
    import h5py

    # our own temporary, already locked by its claim (so no HDF5 lock of its own)
    root = h5py.File(path, "w", locking=False)
    x = root.create_dataset(dataset, shape=shape, dtype=dtype, fillvalue=np.nan,
                            chunks=(chunk_rows, shape[1]))
    labels = root.create_dataset("labels", shape=(shape[0],), dtype="int64",
                                 chunks=(chunk_rows,), fillvalue=-1)
    for key, name in _TRUTH.items():
        root.create_dataset(name, data=params[key])
    return root, x, labels


def _check_hdf5_replaceable(target: str) -> None:
    """An existing HDF5 target is replaced only if daskgmm generated it."""
    try:
        import h5py

        with h5py.File(target, "r") as f:
            ours = f.attrs.get("generator") in ("daskgmm", b"daskgmm")
    except Exception:
        ours = False
    if not ours or os.path.islink(target):
        raise UnsafeOverwriteError(
            f"{target!r} is a file that daskgmm did not generate, so it is not replaced "
            "even with overwrite. Choose another output path or remove it yourself.")


def _check_free_space(target: str, needed: int) -> None:
    """Refuse a data set that cannot fit on the output's file system."""
    parent = os.path.dirname(target)
    while parent and not os.path.isdir(parent):
        parent = os.path.dirname(parent)
    try:
        free = shutil.disk_usage(parent or os.sep).free
    except OSError:
        return
    if needed > free:
        def size(n: int) -> str:
            return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"

        raise OutputWriteError(
            f"{target}: the data set needs {size(needed)} and its file system has "
            f"{size(free)} free; generate fewer samples or features, or write elsewhere")


def _write_rows(x: Any, labels_out: Any, n_samples: int, chunk_rows: int,
                rows_per_block: int, make: Any) -> None:
    """Cut the stream of logical blocks into storage chunks and write them in order,
    block ``b + 1`` drawn in a helper thread while a chunk is written (a ``"generate"``
    pass for the observers, one ``chunks_done`` per block)."""
    n_blocks = math.ceil(n_samples / rows_per_block)
    notify("pass_started", "generate", n_blocks)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending, next_block = pool.submit(make, 0), 1
            labels, rows = np.empty(0, np.int64), None
            for start in range(0, n_samples, chunk_rows):
                need = min(chunk_rows, n_samples - start)
                while len(labels) < need:
                    more_labels, more_rows = pending.result()
                    if next_block < n_blocks:
                        pending, next_block = pool.submit(make, next_block), next_block + 1
                    labels = np.concatenate([labels, more_labels])
                    rows = more_rows if rows is None else np.concatenate([rows, more_rows])
                    notify("chunks_done", 1)
                x[start:start + need] = rows[:need]
                labels_out[start:start + need] = labels[:need]
                labels, rows = labels[need:], rows[need:]
    finally:
        notify("pass_finished")


def generate_mixture(output: str | os.PathLike, n_samples: int, n_features: int,
                     n_components: int, *, seed: int = 0, chunk_rows: int | None = None,
                     dtype: str = "float64", separation: float = 4.0, dataset: str = "X",
                     overwrite: bool = False) -> dict:
    """Write samples of a random Gaussian mixture to ``output`` (``.zarr``: Zarr v3, or
    ``.h5``/``.hdf5``; parents are created), one block of rows at a time: memory use is
    one storage chunk (``chunk_rows``, default 64 MiB of rows) and two blocks of draws.
    Block ``b`` comes from ``np.random.default_rng([seed, 2, b])`` and the parameters
    from :func:`sample_parameters`, so the same seed gives the same rows whatever
    ``chunk_rows`` is. ``overwrite`` replaces only a data set daskgmm generated, once the
    new one is complete.

    Returns ``path``, ``format``, ``dataset``, ``shape``, ``dtype``, ``chunk_rows``,
    ``n_chunks``, ``block_rows``, ``n_components``, ``seed``, ``bytes``,
    ``bytes_on_disk`` and ``seconds``. Raises FileExistsError, UnsafeOverwriteError,
    OutputWriteError (no room on the disk), ValueError or TypeError."""
    started = time.perf_counter()
    n_samples = _as_int("n_samples", n_samples, 1)
    n_features = _as_int("n_features", n_features, 1)
    n_components = _as_int("n_components", n_components, 1)
    seed = _as_int("seed", seed, 0)
    if str(dtype) not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    out_dtype = np.dtype(str(dtype))
    if chunk_rows is None:
        chunk_rows = default_chunk_rows(n_features, out_dtype.itemsize)
    chunk_rows = min(_as_int("chunk_rows", chunk_rows, 1), n_samples)
    if not isinstance(dataset, str) or not dataset or "/" in dataset or dataset in _RESERVED:
        raise ValueError(f"dataset must be a plain non-empty name without '/', other than "
                         f"{', '.join(map(repr, _RESERVED))}; got {dataset!r}")
    if chunk_rows * n_features * out_dtype.itemsize > MAX_CHUNK_BYTES:
        raise ValueError(f"One chunk of {chunk_rows} rows x {n_features} features is more "
                         f"than the {MAX_CHUNK_BYTES} bytes a storage chunk may hold; "
                         "lower chunk_rows.")
    target = os.path.abspath(os.fspath(output)).rstrip("/\\") or os.sep
    suffix = os.path.splitext(target)[1].lower()
    fmt = _FORMATS.get(suffix)
    if fmt is None:
        raise ValueError(f"Cannot tell the output format of {target!r} from its extension "
                         f"{suffix or '(none)'}; use a path ending in .zarr (Zarr v3 "
                         "directory store) or .h5/.hdf5 (HDF5).")
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(f"{target!r} already exists; pass overwrite=True to replace "
                              "it, or choose another path.")
    if os.path.lexists(target) and fmt == "hdf5":
        _check_hdf5_replaceable(target)
    _check_free_space(target, n_samples * (n_features * out_dtype.itemsize + 8))
    params = sample_parameters(n_features, n_components, seed=seed, separation=separation)
    chols = np.linalg.cholesky(params["covariances"])
    rows_per_block = block_rows(n_features)
    from daskgmm import __version__

    attrs = {"generator": "daskgmm", "format_version": FORMAT_VERSION, "dataset": dataset,
             "seed": seed, "n_samples": n_samples, "n_features": n_features,
             "n_components": n_components, "separation": float(separation),
             "dtype": out_dtype.name, "chunk_rows": chunk_rows,
             "block_rows": rows_per_block, "daskgmm_version": str(__version__)}

    def make(b: int) -> tuple[np.ndarray, np.ndarray]:
        n = min(rows_per_block, n_samples - b * rows_per_block)
        return _sample_block(np.random.default_rng([seed, 2, b]), n, params["weights"],
                             params["means"], chols, out_dtype)

    def fill(path: str) -> None:
        root, x, labels = _open_writer(fmt, path, dataset, (n_samples, n_features),
                                       chunk_rows, out_dtype, params)
        try:
            _write_rows(x, labels, n_samples, chunk_rows, rows_per_block, make)
            root.attrs.update(attrs)
        finally:
            if fmt == "hdf5":
                root.close()

    os.makedirs(os.path.dirname(target), exist_ok=True)
    if fmt == "zarr":
        with atomic_output_directory(target, overwrite=overwrite, kind="generated") as tmp:
            fill(tmp.location.path)
    else:
        with atomic_file(target, overwrite=overwrite) as tmp:
            fill(str(tmp))
    on_disk = (os.path.getsize(target) if os.path.isfile(target) else
               sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(target)
                   for f in fs))
    return {"path": target, "format": fmt, "dataset": dataset,
            "shape": [n_samples, n_features], "dtype": out_dtype.name,
            "chunk_rows": chunk_rows, "n_chunks": math.ceil(n_samples / chunk_rows),
            "block_rows": rows_per_block, "n_components": n_components, "seed": seed,
            "bytes": n_samples * n_features * out_dtype.itemsize, "bytes_on_disk": on_disk,
            "seconds": round(time.perf_counter() - started, 3)}


def load_truth(path: str | os.PathLike) -> dict:
    """The truth of a data set :func:`generate_mixture` wrote: ``weights``, ``means``,
    ``covariances``, ``labels`` (lazy), ``dataset`` and ``attrs``; DataNotFoundError or
    DataSourceError for anything else."""
    from daskgmm.io.readers import HDF5Slicer, get_reader

    path = os.fspath(path)
    reader = get_reader(path)
    if reader.name not in ("zarr", "zarr-zip", "hdf5"):
        raise DataSourceError(f"{path!r} is a {reader.name} file; load_truth reads the Zarr "
                              "stores and HDF5 files written by daskgmm.io.generate.")
    if reader.name == "hdf5":
        import h5py

        root = h5py.File(path, "r")
    else:
        import zarr
        from zarr.storage import LocalStore, ZipStore

        root = zarr.open_group(store=LocalStore(path, read_only=True) if reader.name == "zarr"
                               else ZipStore(path, mode="r"), mode="r")
    try:
        missing = [n for n in _RESERVED if n not in root]
        if missing:
            raise DataNotFoundError(
                f"{path!r} is not a dataset written by daskgmm.io.generate: it has no "
                f"{', '.join(map(repr, missing))} (members found: {sorted(root.keys())}).")
        out = {key: np.asarray(root[name][...]) for key, name in _TRUTH.items()}
        attrs = {k: (v.item() if isinstance(v, np.generic) else v)
                 for k, v in root.attrs.items()}
        lab = root["labels"]
        source = (HDF5Slicer(os.path.abspath(path), lab.name, lab.shape, lab.dtype)
                  if reader.name == "hdf5" else lab)
        out["labels"] = da.from_array(source, chunks=lab.chunks or lab.shape, lock=False,
                                      asarray=True, fancy=False,
                                      meta=np.empty((0,), dtype=lab.dtype))
    finally:
        if reader.name == "hdf5":
            root.close()
    return {**out, "dataset": attrs.get("dataset", "X"), "attrs": attrs}
