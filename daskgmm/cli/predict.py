"""``daskgmm predict``: the labels (or responsibilities) of a data set under a saved
model, written out of core and atomically: preflight, load the model, open the data,
connect, one pass in which the workers write the chunks."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from daskgmm.cli.guards import refuse_existing_output, refuse_overlap, refuse_process_local
from daskgmm.errors import ConfigError, InvalidDataError
from daskgmm.io.locations import Location, storage_errors

__all__ = ["PredictRequest", "run_predict"]


@dataclass
class PredictRequest:
    """What ``daskgmm predict`` was asked (locations carry their storage options)."""

    model: Location
    data: Location
    output: Location
    dataset: str | None = None
    proba: bool = False
    overwrite: bool = False
    chunk_rows: int | None = None
    columns: list[str] | None = None
    id_column: str | None = None
    allow_missing_chunks: bool = False
    cluster: Any = None
    quiet: bool = False


def run_predict(request: PredictRequest) -> dict[str, Any]:
    """Write the labels (``proba``: responsibilities) of the data under the model (a
    Zarr array chunked like the data, or for Parquet data a Parquet directory); returns a
    summary without credentials. Refusals are one-line DaskGMMErrors."""
    from daskgmm.cli.cluster import connect, worker_failures
    from daskgmm.cli.fit import RunInterrupted
    from daskgmm.cli.inputs import InputKeys, open_input
    from daskgmm.cli.outputs import LabelsTarget, output_pass, regular_rows
    from daskgmm.diagnostics.observers import observe
    from daskgmm.diagnostics.progress import ProgressObserver
    from daskgmm.io.storage import atomic_output_directory
    from daskgmm.models import load as load_model

    started = time.perf_counter()
    r = request
    progress = ProgressObserver(quiet=r.quiet)
    refuse_process_local(("--model", r.model), ("--data", r.data), ("--output", r.output))
    with storage_errors("--model", r.model):  # a saved model, or a fit's output directory
        model_loc = r.model.join("model") if not r.model.join("model.json").exists() \
            and r.model.join("model", "model.json").exists() else r.model
    refuse_overlap(r.output, "--output", [("--data", r.data), ("--model", r.model),
                                          ("the model", model_loc)])
    refuse_existing_output(r.output, "--output", overwrite=r.overwrite, flag="--overwrite")
    with storage_errors("--model", model_loc):
        gm = load_model(model_loc.url, storage_options=model_loc.storage_options or None)
    keys = InputKeys(path="--data", columns="--columns", id_column="--id-column")
    with storage_errors("--data", r.data):
        inputs = open_input(r.data, dataset=r.dataset, chunk_rows=r.chunk_rows,
                            columns=r.columns, id_column=r.id_column, keys=keys,
                            allow_missing_chunks=r.allow_missing_chunks)
    X = inputs.X
    if X.shape[1] != gm.n_features_in_:
        raise InvalidDataError(f"the data has {X.shape[1]} features but the model in "
                               f"{model_loc.display} was fitted on {gm.n_features_in_}")
    content = "responsibilities" if r.proba else "labels"
    fmt = "parquet" if (inputs.is_parquet and not r.proba
                        and not r.output.name.endswith(".zarr")) else "zarr"
    if r.id_column is not None and fmt != "parquet":
        raise ConfigError("--id-column goes with labels of Parquet data written as Parquet "
                          "(not with --proba, nor with an --output ending in .zarr)")
    try:
        with storage_errors("--output", r.output), atomic_output_directory(
                r.output, kind=content, overwrite=r.overwrite) as out, \
                connect(r.cluster, log=progress.message) as (_, cluster), \
                worker_failures(cluster), observe(progress):
            output_pass(gm, X,
                        attributes={"model": model_loc.display, "data": inputs.display,
                                    "dataset": r.dataset},
                        labels=None if r.proba else LabelsTarget(out.location, fmt,
                                                                 inputs.ids, r.id_column),
                        responsibilities=out.location if r.proba else None)
    except KeyboardInterrupt:
        raise RunInterrupted(f"interrupted; nothing was written to {r.output.display}") \
            from None
    finally:
        progress.close()
    chunks = X if fmt == "parquet" else regular_rows(X)
    return {"output": r.output.display, "content": content, "format": fmt,
            "shape": [int(X.shape[0])] + ([int(gm.n_components)] if r.proba else []),
            "chunks_rows": int(chunks.chunks[0][0]), "model": model_loc.display,
            "data": inputs.display, "seconds": round(time.perf_counter() - started, 3)}
