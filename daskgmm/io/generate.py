"""Synthetic Gaussian-mixture datasets, written chunk by chunk.

:func:`generate_mixture` draws a random mixture (weights, means, covariances) and writes
samples from it to a Zarr v3 directory store or an HDF5 file, one block of rows at a
time, so datasets much larger than memory can be made on a laptop. Rows are drawn in
fixed logical blocks (:func:`block_rows`), each with its own random generator seeded
from ``(seed, block index)``, so the rows depend on the seed and the sizes only, never
on the storage's chunking. The dataset appears at its final path only once it is
complete (:func:`daskgmm.io.storage.atomic_output_directory`: a temporary sibling
renamed into place, with the daskgmm marker).

:func:`load_truth` reads the true parameters (and the component labels, lazily) back.

Layout (both formats)
---------------------
``X`` (or the name given as ``dataset``)
    ``(n_samples, n_features)`` float32/float64, chunks ``(chunk_rows, n_features)``.
``labels``
    ``(n_samples,)`` int64, the component each row was drawn from, same row chunks.
``true_weights``, ``true_means``, ``true_covariances``
    ``(K,)``, ``(K, D)`` and ``(K, D, D)`` float64.
root attributes
    ``generator="daskgmm"``, ``dataset``, ``seed``, ``n_samples``, ``n_features``,
    ``n_components``, ``separation``, ``dtype``, ``chunk_rows``, ``block_rows``,
    ``format_version`` (2: logical blocks; 1 drew one block per storage chunk).
"""

from __future__ import annotations

import math
import os
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

__all__ = ["block_rows", "generate_mixture", "load_truth", "sample_parameters"]

FORMAT_VERSION = 2
# Values per logical block of draws (the unit of reproducibility; 8 MiB of float64).
_BLOCK_VALUES = 2**20
LABELS = "labels"
TRUE_WEIGHTS = "true_weights"
TRUE_MEANS = "true_means"
TRUE_COVARIANCES = "true_covariances"
_RESERVED = (LABELS, TRUE_WEIGHTS, TRUE_MEANS, TRUE_COVARIANCES)
_ZARR_SUFFIXES = (".zarr",)
_HDF5_SUFFIXES = (".h5", ".hdf5")
# Largest chunk written; blosc and HDF5 both limit a chunk to a bit under 2 / 4 GiB.
_MAX_CHUNK_BYTES = 2**31 - 2**20
# Candidate sets of means drawn; the best spread one is kept.
_MEAN_DRAWS = 32
MAX_SEPARATION = 1e6
"""The largest ``separation`` (standard deviations between the closest means): beyond,
the samples of a float32 data set would overflow long before anything is learnt."""


def _as_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _output_format(path: str) -> str:
    suffix = os.path.splitext(path.rstrip("/\\"))[1].lower()
    if suffix in _ZARR_SUFFIXES:
        return "zarr"
    if suffix in _HDF5_SUFFIXES:
        return "hdf5"
    raise ValueError(
        f"Cannot tell the output format of {path!r} from its extension {suffix or '(none)'}; "
        "use a path ending in .zarr (Zarr v3 directory store) or .h5/.hdf5 (HDF5)."
    )


def _pairwise_distances(points: np.ndarray) -> np.ndarray:
    sq = np.einsum("ij,ij->i", points, points)
    d2 = sq[:, None] + sq[None, :] - 2.0 * points @ points.T
    return np.sqrt(np.maximum(d2, 0.0))


def sample_parameters(n_features: int, n_components: int, *, seed: int = 0,
                      separation: float = 4.0) -> dict[str, np.ndarray]:
    """Draw the true parameters of a random Gaussian mixture.

    Parameters
    ----------
    n_features : int
    n_components : int
    seed : int, default 0
        The parameters come from ``np.random.default_rng([seed, 0])``.
    separation : float, default 4.0
        Smallest distance between two component means, in units of the average
        within-component standard deviation. With the default, components overlap
        little and are easy to tell apart; values below ~2 make them overlap.

    Returns
    -------
    dict
        ``weights`` ``(K,)`` drawn from a symmetric Dirichlet(5) distribution,
        ``means`` ``(K, D)``, and ``covariances`` ``(K, D, D)``, each
        ``A Aᵀ / D + 0.5 I`` with ``A`` standard normal (symmetric positive definite,
        condition number below ~10).
    """
    n_features = _as_int("n_features", n_features, 1)
    n_components = _as_int("n_components", n_components, 1)
    if not 0 <= separation <= MAX_SEPARATION:
        raise ValueError(f"separation must be a number from 0 to {MAX_SEPARATION:g}, got "
                         f"{separation!r}")
    rng = np.random.default_rng([seed, 0])
    k, d = n_components, n_features
    weights = rng.dirichlet(np.full(k, 5.0))
    a = rng.standard_normal((k, d, d))
    covariances = a @ a.transpose(0, 2, 1) / d + 0.5 * np.eye(d)
    covariances = 0.5 * (covariances + covariances.transpose(0, 2, 1))
    sigma = math.sqrt(float(np.mean(np.trace(covariances, axis1=1, axis2=2))) / d)

    # Draw a few candidate layouts, keep the one whose closest pair is farthest apart
    # relative to the typical distance (so rescaling does not blow the others apart),
    # then scale it so the closest pair is exactly `separation` sigmas apart.
    best, best_score = None, -1.0
    for _ in range(_MEAN_DRAWS if k > 1 else 1):
        cand = rng.standard_normal((k, d))
        if k == 1:
            best = cand
            break
        dist = _pairwise_distances(cand)[np.triu_indices(k, 1)]
        score = float(dist.min() / max(np.median(dist), 1e-300))
        if score > best_score:
            best, best_score = cand, score
    assert best is not None
    if k > 1:
        min_dist = float(_pairwise_distances(best)[np.triu_indices(k, 1)].min())
        means = best * (separation * sigma / max(min_dist, 1e-300))
    else:
        means = best * (separation * sigma / math.sqrt(2.0 * d))
    return {"weights": weights, "means": means, "covariances": covariances}


def _sample_block(rng: np.random.Generator, n: int, weights: np.ndarray, means: np.ndarray,
                  chols: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows of the mixture: one vectorised draw per component."""
    k, d = means.shape
    labels = rng.choice(k, size=n, p=weights).astype(np.int64)
    block = np.empty((n, d), dtype=dtype)
    for j in range(k):
        idx = np.flatnonzero(labels == j)
        if idx.size == 0:
            continue
        z = rng.standard_normal((idx.size, d))
        block[idx] = z @ chols[j].T + means[j]
    return labels, block


def _disk_bytes(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def block_rows(n_features: int) -> int:
    """Rows of one logical block of random draws (``2**20`` values, at least one row).

    The samples depend on the seed and on this number only, never on the storage's
    ``chunk_rows``.
    """
    return max(1, _BLOCK_VALUES // max(1, int(n_features)))


class _ZarrWriter:
    def __init__(self, path: str, dataset: str, shape: tuple[int, int], chunk_rows: int,
                 dtype: np.dtype, params: dict[str, np.ndarray]) -> None:
        import zarr

        self.root = zarr.open_group(path, mode="w", zarr_format=3)
        config = {"write_empty_chunks": True}
        self.x = self.root.create_array(
            dataset, shape=shape, chunks=(chunk_rows, shape[1]), dtype=dtype,
            compressors=float_compressors(dtype), fill_value=np.nan,
            dimension_names=("sample", "feature"), config=config)
        self.labels = self.root.create_array(
            LABELS, shape=(shape[0],), chunks=(chunk_rows,), dtype="int64",
            compressors=float_compressors(np.int64), fill_value=-1,
            dimension_names=("sample",), config=config)
        for name, key, dims in ((TRUE_WEIGHTS, "weights", ("component",)),
                                (TRUE_MEANS, "means", ("component", "feature")),
                                (TRUE_COVARIANCES, "covariances",
                                 ("component", "feature", "feature_"))):
            value = params[key]
            arr = self.root.create_array(name, shape=value.shape, chunks=value.shape,
                                         dtype="float64", dimension_names=dims)
            arr[...] = value

    def write(self, start: int, labels: np.ndarray, block: np.ndarray) -> None:
        stop = start + len(labels)
        self.x[start:stop] = block
        self.labels[start:stop] = labels

    def finish(self, attrs: dict[str, Any]) -> None:
        self.root.attrs.update(attrs)

    def close(self) -> None:
        pass


class _HDF5Writer:
    def __init__(self, path: str, dataset: str, shape: tuple[int, int], chunk_rows: int,
                 dtype: np.dtype, params: dict[str, np.ndarray]) -> None:
        import h5py

        # our own temporary, already locked by its claim (so no HDF5 lock of its own)
        self.file = h5py.File(path, "w", locking=False)
        self.x = self.file.create_dataset(dataset, shape=shape, dtype=dtype,
                                          chunks=(chunk_rows, shape[1]), fillvalue=np.nan)
        self.labels = self.file.create_dataset(LABELS, shape=(shape[0],), dtype="int64",
                                               chunks=(chunk_rows,), fillvalue=-1)
        self.file.create_dataset(TRUE_WEIGHTS, data=params["weights"])
        self.file.create_dataset(TRUE_MEANS, data=params["means"])
        self.file.create_dataset(TRUE_COVARIANCES, data=params["covariances"])

    def write(self, start: int, labels: np.ndarray, block: np.ndarray) -> None:
        stop = start + len(labels)
        self.x[start:stop] = block
        self.labels[start:stop] = labels

    def finish(self, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            self.file.attrs[key] = value
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _check_hdf5_replaceable(target: str) -> None:
    """An existing HDF5 target is replaced only if daskgmm generated it."""
    if os.path.isdir(target) or os.path.islink(target):
        raise UnsafeOverwriteError(
            f"{target!r} is a directory or a link, not a data set daskgmm generated; not "
            "replacing it. Choose another output path.")
    try:
        import h5py

        with h5py.File(target, "r") as f:
            ours = f.attrs.get("generator") in ("daskgmm", b"daskgmm")
    except Exception:
        ours = False
    if not ours:
        raise UnsafeOverwriteError(
            f"{target!r} is a file that daskgmm did not generate, so it is not replaced "
            "even with overwrite. Choose another output path or remove it yourself.")


def _check_free_space(target: str, needed: int) -> None:
    """Refuse a data set that cannot fit on the output's file system."""
    import shutil

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


def _write_rows(writer: Any, n_samples: int, chunk_rows: int, rows_per_block: int,
                make: Any) -> None:
    """Cut the stream of logical blocks into storage chunks and write them in order.

    At most one chunk and two blocks are in memory; block ``b + 1`` is drawn in a
    helper thread while chunk data is written (both release the GIL for most of their
    work). Progress goes to the active observers, one ``chunks_done`` per block.
    """
    n_blocks = math.ceil(n_samples / rows_per_block)
    n_chunks = math.ceil(n_samples / chunk_rows)
    notify("pass_started", "generate", n_blocks)
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(make, 0)
            next_block = 1
            buf_labels: list[np.ndarray] = []
            buf_rows: list[np.ndarray] = []
            have = 0
            for c in range(n_chunks):
                need = min(chunk_rows, n_samples - c * chunk_rows)
                while have < need:
                    labels, block = pending.result()
                    if next_block < n_blocks:
                        pending = pool.submit(make, next_block)
                        next_block += 1
                    buf_labels.append(labels)
                    buf_rows.append(block)
                    have += len(labels)
                    notify("chunks_done", 1)
                labels = buf_labels[0] if len(buf_labels) == 1 else np.concatenate(buf_labels)
                rows = buf_rows[0] if len(buf_rows) == 1 else np.concatenate(buf_rows)
                writer.write(c * chunk_rows, labels[:need], rows[:need])
                buf_labels = [labels[need:]] if have > need else []
                buf_rows = [rows[need:]] if have > need else []
                have -= need
                del labels, rows
    finally:
        notify("pass_finished")


def generate_mixture(output: str | os.PathLike, n_samples: int, n_features: int,
                     n_components: int, *, seed: int = 0, chunk_rows: int | None = None,
                     dtype: str = "float64", separation: float = 4.0, dataset: str = "X",
                     overwrite: bool = False) -> dict:
    """Write samples of a random Gaussian mixture to disk, one block of rows at a time.

    Memory use is about one storage chunk plus two blocks of draws, whatever
    ``n_samples`` is. The result depends only on the seed and the sizes: rows are drawn
    in fixed logical blocks of :func:`block_rows` rows, block ``b`` from
    ``np.random.default_rng([seed, 2, b])``, and the parameters from
    ``np.random.default_rng([seed, 0])``; the same seed gives the same rows whatever
    ``chunk_rows`` is (and the same values in float32 and float64, up to rounding).
    Progress is reported to the active observers
    (:mod:`daskgmm.diagnostics.observers`): a ``"generate"`` pass over the blocks.

    Parameters
    ----------
    output : str or os.PathLike
        Path ending in ``.zarr`` (Zarr v3 directory store) or ``.h5``/``.hdf5`` (HDF5,
        chunked). The data array is stored uncompressed and the labels with
        Blosc-LZ4 (:mod:`daskgmm.io.codecs` explains why). Missing parent directories
        are created.
    n_samples, n_features, n_components : int
        Size of the data and number of mixture components (all >= 1).
    seed : int, default 0
        Non-negative seed of everything random.
    chunk_rows : int, optional
        Rows per storage chunk (clipped to ``n_samples``). Default: the rows of
        :data:`daskgmm.io.chunking.DEFAULT_CHUNK_BYTES` (64 MiB) in ``dtype``.
    dtype : {"float64", "float32"}, default "float64"
        dtype of the data array.
    separation : float, default 4.0
        Smallest distance between two component means, in average within-component
        standard deviations (see :func:`sample_parameters`).
    dataset : str, default "X"
        Name of the data array (a plain name, no ``/``).
    overwrite : bool, default False
        Replace an existing data set at ``output`` that daskgmm generated (anything
        else is refused). The old one stays in place, intact, until the new one is
        complete.

    Returns
    -------
    dict
        ``path`` (absolute), ``format`` (``"zarr"`` or ``"hdf5"``), ``dataset``,
        ``shape``, ``dtype``, ``chunk_rows``, ``n_chunks``, ``block_rows``,
        ``n_components``, ``seed``, ``bytes`` (uncompressed size of the data array),
        ``bytes_on_disk`` and ``seconds``.

    Raises
    ------
    FileExistsError
        ``output`` exists and ``overwrite`` is False.
    UnsafeOverwriteError
        ``overwrite`` is True but ``output`` is not a data set daskgmm generated.
    ValueError
        An argument is out of range, or the extension of ``output`` is not supported.

    Notes
    -----
    The data is written to a temporary sibling renamed into place (Zarr stores carry the
    daskgmm marker), so an interrupted run never leaves a half-written data set at
    ``output``; its leftover is cleaned by the next write to the same path. A data set
    larger than the free space of the output's file system is refused before anything
    is written.
    """
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
        raise ValueError(
            f"dataset must be a plain non-empty name without '/', other than "
            f"{', '.join(map(repr, _RESERVED))}; got {dataset!r}"
        )
    chunk_bytes = chunk_rows * n_features * out_dtype.itemsize
    if chunk_bytes > _MAX_CHUNK_BYTES:
        raise ValueError(
            f"One chunk of {chunk_rows} rows x {n_features} features is {chunk_bytes} bytes, "
            f"more than the {_MAX_CHUNK_BYTES} bytes a storage chunk may hold; lower "
            "chunk_rows."
        )
    target = os.path.abspath(os.fspath(output)).rstrip("/\\") or os.sep
    fmt = _output_format(target)
    if os.path.lexists(target) and not overwrite:
        raise FileExistsError(
            f"{target!r} already exists; pass overwrite=True to replace it, or choose "
            "another path."
        )
    if os.path.lexists(target) and fmt == "hdf5":
        _check_hdf5_replaceable(target)
    _check_free_space(target, n_samples * (n_features * out_dtype.itemsize + 8))

    params = sample_parameters(n_features, n_components, seed=seed, separation=separation)
    chols = np.linalg.cholesky(params["covariances"])
    weights = params["weights"]
    rows_per_block = block_rows(n_features)

    os.makedirs(os.path.dirname(target), exist_ok=True)
    n_chunks = math.ceil(n_samples / chunk_rows)
    attrs: dict[str, Any] = {
        "generator": "daskgmm",
        "format_version": FORMAT_VERSION,
        "dataset": dataset,
        "seed": seed,
        "n_samples": n_samples,
        "n_features": n_features,
        "n_components": n_components,
        "separation": float(separation),
        "dtype": out_dtype.name,
        "chunk_rows": chunk_rows,
        "block_rows": rows_per_block,
    }
    try:
        from daskgmm import __version__

        attrs["daskgmm_version"] = str(__version__)
    except ImportError:  # pragma: no cover
        pass

    def make(b: int) -> tuple[np.ndarray, np.ndarray]:
        n = min(rows_per_block, n_samples - b * rows_per_block)
        rng = np.random.default_rng([seed, 2, b])
        return _sample_block(rng, n, weights, params["means"], chols, out_dtype)

    def fill(path: str) -> None:
        writer_cls = _ZarrWriter if fmt == "zarr" else _HDF5Writer
        writer = writer_cls(path, dataset, (n_samples, n_features), chunk_rows, out_dtype,
                            params)
        try:
            _write_rows(writer, n_samples, chunk_rows, rows_per_block, make)
            writer.finish(attrs)
        finally:
            writer.close()

    if fmt == "zarr":
        with atomic_output_directory(target, overwrite=overwrite, kind="generated") as tmp:
            fill(tmp.location.path)
    else:
        with atomic_file(target, overwrite=overwrite) as tmp:
            fill(str(tmp))

    return {
        "path": target,
        "format": fmt,
        "dataset": dataset,
        "shape": [n_samples, n_features],
        "dtype": out_dtype.name,
        "chunk_rows": chunk_rows,
        "n_chunks": n_chunks,
        "block_rows": rows_per_block,
        "n_components": n_components,
        "seed": seed,
        "bytes": n_samples * n_features * out_dtype.itemsize,
        "bytes_on_disk": _disk_bytes(target),
        "seconds": round(time.perf_counter() - started, 3),
    }


def load_truth(path: str | os.PathLike) -> dict:
    """Read back the true parameters of a dataset written by :func:`generate_mixture`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.zarr`` store or HDF5 file.

    Returns
    -------
    dict
        ``weights`` ``(K,)``, ``means`` ``(K, D)``, ``covariances`` ``(K, D, D)`` (numpy
        arrays), ``labels`` (lazy int64 Dask array of shape ``(n_samples,)``, chunked
        like the storage), ``dataset`` (name of the data array) and ``attrs`` (all the
        metadata written by the generator).

    Raises
    ------
    DataNotFoundError
        ``path`` does not exist or lacks one of the arrays.
    DataSourceError
        ``path`` is not a Zarr store or HDF5 file.
    """
    from daskgmm.io.readers import HDF5Slicer, get_reader

    path = os.fspath(path)
    reader = get_reader(path)  # raises DataNotFoundError / DataSourceError
    if reader.name in ("zarr", "zarr-zip"):
        import zarr
        from zarr.storage import LocalStore, ZipStore

        store = (LocalStore(path, read_only=True) if reader.name == "zarr"
                 else ZipStore(path, mode="r"))
        try:
            root = zarr.open_group(store=store, mode="r")
        except Exception as exc:
            raise DataSourceError(
                f"Cannot read {path!r} as a zarr group: {type(exc).__name__}: {exc}") from exc
        attrs = dict(root.attrs)
        present = set(root.array_keys())
        missing = [n for n in _RESERVED if n not in present]
        if missing:
            raise DataNotFoundError(
                f"{path!r} is not a dataset written by daskgmm.io.generate: it has no "
                f"{', '.join(map(repr, missing))} (arrays found: {sorted(present)})."
            )
        lab = root[LABELS]
        labels = da.from_array(lab, chunks=lab.chunks, lock=False, asarray=True,
                               fancy=False, meta=np.empty((0,), dtype=lab.dtype))
        return {
            "weights": np.asarray(root[TRUE_WEIGHTS][...]),
            "means": np.asarray(root[TRUE_MEANS][...]),
            "covariances": np.asarray(root[TRUE_COVARIANCES][...]),
            "labels": labels,
            "dataset": attrs.get("dataset", "X"),
            "attrs": attrs,
        }
    if reader.name == "hdf5":
        import h5py

        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise DataSourceError(f"Cannot read the HDF5 file {path!r}: {exc}") from exc
        with f:
            missing = [n for n in _RESERVED if n not in f]
            if missing:
                raise DataNotFoundError(
                    f"{path!r} is not a dataset written by daskgmm.io.generate: it has no "
                    f"{', '.join(map(repr, missing))} (members found: {sorted(f.keys())})."
                )
            attrs = {k: (v.item() if isinstance(v, np.generic) else v)
                     for k, v in f.attrs.items()}
            lab = f[LABELS]
            slicer = HDF5Slicer(os.path.abspath(path), lab.name, lab.shape, lab.dtype)
            chunks = lab.chunks or lab.shape
            out = {
                "weights": f[TRUE_WEIGHTS][...],
                "means": f[TRUE_MEANS][...],
                "covariances": f[TRUE_COVARIANCES][...],
            }
        out["labels"] = da.from_array(slicer, chunks=chunks, lock=False, asarray=True,
                                      fancy=False, meta=np.empty((0,), dtype=slicer.dtype))
        out["dataset"] = attrs.get("dataset", "X")
        out["attrs"] = attrs
        return out
    raise DataSourceError(
        f"{path!r} is a {reader.name} file; load_truth reads the Zarr stores and HDF5 "
        "files written by daskgmm.io.generate."
    )
