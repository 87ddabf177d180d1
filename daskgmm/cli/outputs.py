"""What a batch run writes, and the one pass over the data that follows a fit.

:func:`output_pass` computes in the same tasks the log-likelihood of every row (for the
criteria), the labels and responsibilities (written by the workers, chunk by chunk,
into the run's temporary: Zarr arrays, or Parquet files next to an id column) and the
plot's sample. The task functions run on the workers; keep the imports light."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LabelsTarget", "output_pass", "regular_rows", "write_figure", "write_json"]


@dataclass
class LabelsTarget:
    """Where per-row labels go: a Zarr array's root or a Parquet directory
    (``location``), its ``format``, and for Parquet the ``ids`` (chunked like the data) of
    ``id_column``."""

    location: Any
    format: str = "zarr"
    ids: Any = None
    id_column: str | None = None


def _write_rows(values: np.ndarray, array: Any, row_start: int) -> int:
    """Write one chunk's rows into a Zarr array (whole Zarr chunks)."""
    array[row_start : row_start + len(values)] = values
    return len(values)


def _chunk_summary(log_likelihoods: np.ndarray, rows: np.ndarray, weights: Any,
                   *written: int) -> dict[str, Any]:
    """One chunk's (weighted) log-likelihood sum, rows, weight sum and sampled rows."""
    ll = np.asarray(log_likelihoods, dtype=np.float64)
    if weights is None:
        total, weight = math.fsum(ll.tolist()), float(len(ll))
    else:
        w = np.asarray(weights, dtype=np.float64)
        # Rows of weight 0 do not count, whatever their likelihood.
        total = math.fsum(np.multiply(w, ll, out=np.zeros_like(ll), where=w > 0).tolist())
        weight = math.fsum(w.tolist())
    return {"ll": total, "n": len(ll), "weight": weight,
            "rows": np.asarray(rows, dtype=np.float64)}


def regular_rows(X: Any) -> Any:
    """``X`` with equal row chunks (the last may be shorter), as Zarr chunks must be."""
    rows = X.chunks[0]
    if len(rows) > 1 and (len(set(rows[:-1])) > 1 or rows[-1] > rows[0]):
        X = X.rechunk({0: max(rows), 1: -1})
    elif len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X


def _create_zarr(location: Any, shape: tuple[int, ...], row_chunk: int, dtype: str,
                 attributes: dict[str, Any]) -> Any:
    from daskgmm.io.storage import create_zarr_array

    names = ("sample", "component")[: len(shape)]
    return create_zarr_array(location, shape, (row_chunk, *shape[1:]), dtype,
                             fill_value=-1 if dtype.startswith("int") else np.nan,
                             attributes=attributes, dimension_names=names)


def output_pass(model: Any, X: Any, *, labels: LabelsTarget | None = None,
                responsibilities: Any = None, sample_idx: np.ndarray | None = None,
                attributes: dict[str, Any] | None = None, weights: Any = None
                ) -> dict[str, Any]:
    """One pass over ``X`` (kind ``'outputs'``, watched for stalls) that writes the
    ``labels`` and ``responsibilities`` (``attributes`` on their Zarr arrays); returns
    ``ll`` (the (weighted) sum of log-likelihoods), ``n``, ``weight`` and ``rows``
    (those of ``sample_idx``)."""
    import dask

    from daskgmm.diagnostics import observers
    from daskgmm.engine.passes import watched_compute
    from daskgmm.io.frames import label_part_tasks

    attributes = dict(attributes or {})
    zarr_labels = labels is not None and labels.format == "zarr"
    Xz = regular_rows(X) if (zarr_labels or responsibilities is not None) else X
    bounds = np.cumsum((0, *Xz.chunks[0])).tolist()
    row_chunk, n = int(Xz.chunks[0][0]), int(Xz.shape[0])
    blocks = Xz.to_delayed().ravel()
    scores = model.score_samples(Xz).to_delayed().ravel()
    w_blocks = (weights.rechunk({0: Xz.chunks[0]}).to_delayed().ravel()
                if weights is not None else [None] * len(blocks))
    writes: list[list[Any]] = [[] for _ in blocks]
    if zarr_labels:
        target = _create_zarr(labels.location, (n,), row_chunk, "int64",
                              {**attributes, "content": "labels"})
        for i, part in enumerate(model.predict(Xz).astype(np.int64).to_delayed().ravel()):
            writes[i].append(dask.delayed(_write_rows, pure=False)(part, target, bounds[i]))
    if responsibilities is not None:
        target = _create_zarr(responsibilities, (n, int(model.n_components)), row_chunk,
                              "float64", {**attributes, "content": "responsibilities"})
        for i, part in enumerate(model.predict_proba(Xz).to_delayed().ravel()):
            writes[i].append(dask.delayed(_write_rows, pure=False)(part, target, bounds[i]))
    idx = np.asarray(sample_idx if sample_idx is not None else [], dtype=np.int64)
    parts = []
    for i, block in enumerate(blocks):
        inside = idx[(idx >= bounds[i]) & (idx < bounds[i + 1])] - bounds[i]
        parts.append(dask.delayed(_chunk_summary)(scores[i], block[inside], w_blocks[i],
                                                  *writes[i]))
    extra = []
    if labels is not None and labels.format == "parquet":
        # One file per chunk of the input table (its own chunks, not Xz's).
        extra = label_part_tasks(labels.location, model.predict(X).astype(np.int64),
                                 labels.ids, labels.id_column)

    observers.notify("pass_started", "outputs", len(parts) + len(extra))
    results = watched_compute(*parts, *extra,
                              each=lambda: observers.notify("chunks_done", 1))
    observers.notify("pass_finished")
    results = results[: len(parts)]
    return {"ll": math.fsum(r["ll"] for r in results), "n": sum(r["n"] for r in results),
            "weight": math.fsum(r["weight"] for r in results),
            "rows": (np.concatenate([r["rows"] for r in results]) if results
                     else np.empty((0, X.shape[1])))}


def write_json(out: Any, name: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``name`` in an OutputDirectory."""
    import json

    out.write_bytes(name, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def write_figure(out: Any, name: str, figure: Any) -> None:
    """Render a matplotlib figure as PNG to ``name`` in an OutputDirectory."""
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    out.write_bytes(name, buffer.getvalue())
