"""Batch runs: ``daskgmm fit CONFIG.yaml`` and ``daskgmm predict``.

:func:`run_fit` takes a validated :class:`~daskgmm.cli.config.RunConfig`, starts or joins
the Dask cluster, fits a :class:`~daskgmm.models.gaussian.GaussianMixture` out of core and
writes everything into ``output.dir``::

    output.dir/
        model/              the fitted model (daskgmm.serialize.model_files.save_model)
        report.json         configuration, versions, data, iterations, BIC/AIC,
                            timings, peak memory, cluster
        convergence.png     log-likelihood and seconds per EM iteration  (output.plots)
        clusters.png        a sample on its first two principal components  (output.plots)
        labels.zarr         int64 label of every row, chunked like the data  (output.labels)
        responsibilities.zarr   float64 (n_samples, K)  (output.responsibilities)

The whole directory is assembled in a temporary sibling and renamed into place at the
end (:func:`daskgmm.io.atomic.atomic_directory`): a run that fails or is interrupted leaves
no partial output, and an existing ``output.dir`` is refused before anything is
computed unless ``output.overwrite`` is true.

After the fit a single pass over the data computes everything else at once: the
log-likelihood of the final parameters (for BIC and AIC), the labels and
responsibilities (written by the workers straight into the Zarr arrays, one chunk per
task, so nothing as large as the data goes through the driver) and a random sample of
a few thousand rows for the cluster plot.

:func:`run_predict` loads a saved model and writes the labels (or the responsibilities)
of a dataset to a new Zarr array, out of core and atomically.

Labels and responsibilities are written by the Dask workers: with a remote cluster the
output directory must be on a file system the workers share with the client.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from daskgmm.cli.guards import (
    WRITE_ERRNOS,
    check_writable,
    chunking_warnings,
    free_space_warning,
    refuse_overlap,
    write_errors,
)
from daskgmm.errors import ConfigError, DaskGMMError, OutputExistsError

__all__ = ["CHECKPOINT_FILE", "PLOT_SAMPLE_ROWS", "PRINT_LABELS_LIMIT",
           "PRINT_PARAMETERS_LIMIT", "RunInterrupted", "checkpoint_iteration",
           "component_table", "is_user_error", "run_fit", "run_predict"]

CHECKPOINT_FILE = "checkpoint.json"
"""The file a checkpoint directory holds when it has a checkpoint."""

PLOT_SAMPLE_ROWS = 5000
"""Rows drawn at random for ``clusters.png``."""

PRINT_LABELS_LIMIT = 10_000
"""``daskgmm fit`` prints every label only for data with at most this many rows."""

PRINT_PARAMETERS_LIMIT = 40
"""``daskgmm fit`` prints the weights, means and covariances when n_components x
n_features is at most this; a table of the components otherwise."""


# ---------------------------------------------------------------------------------------
# The output pass (its task functions run on the workers; keep this module's imports light)
# ---------------------------------------------------------------------------------------


def _write_rows(values: np.ndarray, path: str, row_start: int) -> int:
    """Write one chunk's rows into the Zarr array at ``path`` (whole Zarr chunks)."""
    import zarr

    zarr.open_array(path, mode="r+")[row_start : row_start + len(values)] = values
    return len(values)


def _chunk_summary(log_likelihoods: np.ndarray, rows: np.ndarray, *written: int
                   ) -> dict[str, Any]:
    """What one chunk sends back: its log-likelihood sum, row count and sampled rows."""
    return {"ll": math.fsum(np.asarray(log_likelihoods, dtype=np.float64).tolist()),
            "n": len(log_likelihoods), "rows": np.asarray(rows, dtype=np.float64)}


def _take(block: np.ndarray, local_idx: np.ndarray) -> np.ndarray:
    return np.asarray(block[local_idx], dtype=np.float64)


def _create_zarr(path: Path, shape: tuple[int, ...], row_chunk: int, dtype: str,
                 attributes: dict[str, Any]) -> str:
    import zarr

    chunks = (row_chunk, *shape[1:])
    names = ("sample", "component")[: len(shape)]
    zarr.create_array(store=str(path), shape=shape, chunks=chunks, dtype=dtype,
                      fill_value=-1 if dtype.startswith("int") else np.nan,
                      attributes=attributes, dimension_names=names, zarr_format=3)
    return str(path)


def _regular_rows(X: Any) -> Any:
    """``X`` with equal row chunks (the last may be shorter), as Zarr chunks must be."""
    rows = X.chunks[0]
    if len(rows) > 1 and (len(set(rows[:-1])) > 1 or rows[-1] > rows[0]):
        X = X.rechunk({0: max(rows), 1: -1})
    elif len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X


def _output_pass(model: Any, X: Any, *, labels_path: Path | None, resp_path: Path | None,
                 sample_idx: np.ndarray, attributes: dict[str, Any],
                 client: Any = None) -> dict[str, Any]:
    """One pass over ``X`` for everything that follows a fit.

    Computes, reading every chunk once: the log-likelihood of every row under the final
    parameters (summed, for BIC/AIC), the labels and responsibilities (written by the
    workers straight into Zarr arrays chunked like ``X``'s rows) and the rows at
    ``sample_idx``. It uses the estimator's lazy ``predict``, ``predict_proba`` and
    ``score_samples`` on the Dask array, so the workers run the same NumPy kernels as a
    fit (and never import scikit-learn). Observers see it as a pass of kind
    ``'outputs'``. With a ``distributed.Client`` the chunks are followed as futures;
    without one the active Dask scheduler computes them.

    Returns
    -------
    dict
        ``ll`` (sum of the log-likelihoods), ``n`` (rows) and ``rows`` (the sample).
    """
    import dask

    from daskgmm.diagnostics import observers

    X = _regular_rows(X)
    bounds = np.cumsum((0, *X.chunks[0])).tolist()
    row_chunk = int(X.chunks[0][0])
    n = int(X.shape[0])
    blocks = X.to_delayed().ravel()
    scores = model.score_samples(X).to_delayed().ravel()
    writes: list[list[Any]] = [[] for _ in blocks]
    if labels_path is not None:
        target = _create_zarr(labels_path, (n,), row_chunk, "int64",
                              {**attributes, "content": "labels"})
        labels = model.predict(X).astype(np.int64).to_delayed().ravel()
        for i, part in enumerate(labels):
            writes[i].append(dask.delayed(_write_rows, pure=False)(part, target, bounds[i]))
    if resp_path is not None:
        target = _create_zarr(resp_path, (n, int(model.n_components)), row_chunk, "float64",
                              {**attributes, "content": "responsibilities"})
        resp = model.predict_proba(X).to_delayed().ravel()
        for i, part in enumerate(resp):
            writes[i].append(dask.delayed(_write_rows, pure=False)(part, target, bounds[i]))
    idx = np.asarray(sample_idx, dtype=np.int64)
    parts = []
    for i, block in enumerate(blocks):
        inside = idx[(idx >= bounds[i]) & (idx < bounds[i + 1])] - bounds[i]
        rows = dask.delayed(_take)(block, inside)
        parts.append(dask.delayed(_chunk_summary)(scores[i], rows, *writes[i]))

    observers.notify("pass_started", "outputs", len(parts))
    if client is not None:
        from distributed import as_completed

        futures = client.compute(parts)
        if observers.wants("chunks_done"):
            for _ in as_completed(futures):
                observers.notify("chunks_done", 1)
        results = client.gather(futures)
    else:
        results = list(dask.compute(*parts))
    observers.notify("pass_finished")
    return {
        "ll": math.fsum(r["ll"] for r in results),
        "n": sum(r["n"] for r in results),
        "rows": (np.concatenate([r["rows"] for r in results]) if results
                 else np.empty((0, X.shape[1]))),
    }


# ---------------------------------------------------------------------------------------
# Helpers of run_fit
# ---------------------------------------------------------------------------------------


class _Log:
    """Messages on stderr (through the progress display, so they do not break its bar)."""

    def __init__(self, progress: Any, quiet: bool) -> None:
        self.progress = progress
        self.quiet = quiet

    def info(self, text: str) -> None:
        if not self.quiet:
            self.progress.message(text)

    def warning(self, text: str) -> None:
        # Warnings are shown even with quiet=True.
        self.progress.warning(text)


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with the one line the command prints about it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _check_output_dir(config: Any) -> Path:
    out = Path(config.output.dir)
    if os.path.lexists(out) and not config.output.overwrite:
        raise OutputExistsError(
            f"the output directory {out} already exists; pass --set output.overwrite=true "
            "to replace it, or choose another output.dir"
        )
    if os.path.lexists(out) and not out.is_dir():
        raise OutputExistsError(
            f"output.dir {out} exists and is not a directory; choose another output.dir"
        )
    return out


def checkpoint_iteration(directory: str | os.PathLike[str] | None) -> int | None:
    """The iteration of the checkpoint in ``directory`` (None when there is none).

    Reads only the ``iteration`` key of ``checkpoint.json`` (the engine is not
    imported); an unreadable file counts as none.
    """
    if directory is None:
        return None
    import json

    path = Path(directory) / CHECKPOINT_FILE
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle).get("iteration")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _interrupted_message(checkpoint_dir: str | None, source: str | None) -> str:
    iteration = checkpoint_iteration(checkpoint_dir)
    command = f"daskgmm fit {source} --resume" if source else "daskgmm fit CONFIG --resume"
    if iteration is not None:
        return (f"interrupted; the last checkpoint is at iteration {iteration} (in "
                f"{checkpoint_dir}): resume with `{command}`")
    if checkpoint_dir is not None:
        return (f"interrupted before the first checkpoint was written to {checkpoint_dir}; "
                "nothing was written")
    return ("interrupted; nothing was written, and there is no checkpoint to resume from "
            "(set checkpoint.dir to be able to resume)")


def _checkpoint_dir(config: Any, resume: bool, log: _Log) -> str | None:
    directory = getattr(config.checkpoint, "dir", None)
    if directory is None:
        if resume:
            raise ConfigError(
                "--resume needs a checkpoint directory: set checkpoint.dir in the "
                "configuration (or with --set checkpoint.dir=PATH)"
            )
        return None
    ckpt = Path(directory).resolve()
    out = Path(config.output.dir).resolve()
    if ckpt == out or out in ckpt.parents:
        raise ConfigError(
            f"checkpoint.dir {ckpt} is inside output.dir {out}, which is written "
            "atomically at the end of the run; put the checkpoints elsewhere (e.g. "
            f"{out.parent / (out.name + '-checkpoints')})"
        )
    refuse_overlap(ckpt, "checkpoint.dir", [("data.path", config.data.path)],
                   relations=("is", "lies inside"))
    iteration = checkpoint_iteration(ckpt)
    has_checkpoint = (ckpt / CHECKPOINT_FILE).exists()
    if has_checkpoint and not resume:
        where = f" at iteration {iteration}" if iteration is not None else ""
        raise ConfigError(
            f"a checkpoint from an earlier run exists in {ckpt}{where}; pass --resume to "
            "continue it or delete the directory"
        )
    if resume and not has_checkpoint:
        log.info(f"no checkpoint in {ckpt} yet: starting the fit from the beginning")
    elif resume:
        where = f"iteration {iteration}" if iteration is not None else "its last iteration"
        log.info(f"resuming from the checkpoint at {where} in {ckpt}")
    return str(ckpt)


def _maybe_generate(config: Any, path: str, log: _Log) -> dict[str, Any] | None:
    """Write the synthetic dataset of ``data.generate`` if ``data.path`` is missing."""
    spec = getattr(config.data, "generate", None)
    if spec is None or os.path.exists(path):
        return None
    from daskgmm.io.generate import generate_mixture

    def get(name: str, default: Any) -> Any:
        value = getattr(spec, name, None)
        if value is None and isinstance(spec, dict):
            value = spec.get(name)
        return default if value is None else value

    n_samples, n_features = int(get("n_samples", 0)), int(get("n_features", 0))
    dtype = str(get("dtype", "float64"))
    size = n_samples * n_features * np.dtype(dtype).itemsize
    log.info(f"generating {path}: {n_samples} x {n_features} {dtype} "
             f"({size / 2**30:.2f} GiB), since it does not exist yet")
    from daskgmm.diagnostics.observers import observe

    t0 = time.perf_counter()
    with observe(log.progress):
        summary = generate_mixture(
            path, n_samples, n_features, int(get("n_components", 1)),
            seed=int(get("seed", 0)), chunk_rows=int(get("chunk_rows", 100_000)),
            dtype=dtype, separation=float(get("separation", 4.0)),
            dataset=config.data.dataset or "X", overwrite=False)
    log.info(f"generated {path} in {time.perf_counter() - t0:.1f} s")
    return summary


def _estimator_params(config: Any, checkpoint_dir: str | None) -> dict[str, Any]:
    """The estimator's keyword arguments: the model section, the checkpoint section, and
    ``verbose=0`` (the command's own display shows the iterations, at ``model.verbose``).
    """
    params = config.model.estimator_params()
    supported = config.model.estimator_class()().get_params()
    if "checkpoint_dir" in supported:
        params["checkpoint_dir"] = checkpoint_dir
        params["checkpoint_every"] = int(getattr(config.checkpoint, "every", 1))
    elif checkpoint_dir is not None:
        raise ConfigError("checkpoint.dir is set, but this daskgmm's estimator does not "
                          "support checkpoints yet; set checkpoint.dir to null")
    if "verbose" in supported:
        params["verbose"] = 0
    return {k: v for k, v in params.items() if k in supported}


def _remove_checkpoint(directory: str | None) -> None:
    """Delete the checkpoint of a run whose outputs are complete."""
    if directory is None:
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(directory, CHECKPOINT_FILE))
    with contextlib.suppress(OSError):
        os.rmdir(directory)  # only if now empty


@contextlib.contextmanager
def _captured_warnings(log: _Log, sink: list[str]) -> Iterator[None]:
    """Turn warnings raised inside the block into one-line messages (and a list)."""
    with warnings.catch_warnings(record=True) as caught:
        try:
            yield
        finally:
            for item in caught:
                text = f"{item.category.__name__}: {str(item.message).strip()}"
                text = " ".join(text.split())
                if text not in sink:
                    sink.append(text)
                    log.warning(text)


def _sample_indices(n_samples: int, size: int, seed: Any) -> np.ndarray:
    seed = seed if isinstance(seed, int) else 0
    rng = np.random.default_rng([seed, 7])
    size = min(size, n_samples)
    return np.sort(rng.choice(n_samples, size=size, replace=False)).astype(np.int64)


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def component_table(weights: np.ndarray, means: np.ndarray, n_samples: int
                    ) -> list[str]:
    """One line per component: index, weight, expected rows (weight x n) and mean norm."""
    lines = [f"{'component':>9}  {'weight':>8}  {'rows (expected)':>15}  {'|mean|':>10}"]
    norms = np.linalg.norm(np.asarray(means, dtype=np.float64), axis=1)
    for k, (w, norm) in enumerate(zip(np.asarray(weights, dtype=np.float64), norms,
                                      strict=True)):
        lines.append(f"{k:>9}  {w:>8.4f}  {round(w * n_samples):>15,}  {norm:>10.4g}")
    return lines


def _print_result(model: Any, mean_ll: float | None, labels: np.ndarray | None,
                  n_samples: int, labels_file: Path | None, report_path: Path,
                  out: TextIO) -> None:
    """The fitted parameters, as scikit-learn's iris example prints them; a table of
    the components instead of the arrays for a large model (K x D over
    :data:`PRINT_PARAMETERS_LIMIT`)."""
    status = "converged" if model.converged_ else "did NOT converge"
    shown = f"{mean_ll:.4f}" if mean_ll is not None else "not finite"
    print(f"{status} after {model.n_iter_} iterations; mean log-likelihood per sample "
          f"of the final model {shown}", file=out)
    with np.printoptions(precision=3, suppress=True):
        if labels is not None:
            print("labels:\n", labels, file=out)
        elif labels_file is not None:
            print(f"labels: {n_samples:,} written to {labels_file}", file=out)
        else:
            print(f"labels: not printed for {n_samples:,} samples (set output.labels: true "
                  "to write them to labels.zarr)", file=out)
        k, d = np.shape(model.means_)
        if k * d <= PRINT_PARAMETERS_LIMIT:
            print("weights:\n", model.weights_, file=out)
            print("means:\n", model.means_, file=out)
            print("covariances:\n", model.covariances_, file=out)
        else:
            print(f"{k} components of {d} features ({model.covariance_type} covariances); "
                  "the full parameters are in the model directory and report.json:",
                  file=out)
            for line in component_table(model.weights_, model.means_, n_samples):
                print(line, file=out)
    print(f"report written to {report_path}", file=out)
    out.flush()


# ---------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------


def run_fit(config: Any, *, quiet: bool = False, resume: bool = False,
            stdout: TextIO | None = None) -> dict[str, Any]:
    """Fit the mixture a run configuration describes and write every output.

    Parameters
    ----------
    config : daskgmm.cli.config.RunConfig
        A validated configuration (:func:`daskgmm.cli.config.load_config`).
    quiet : bool, default False
        No progress display or informational messages on stderr (warnings still are).
    resume : bool, default False
        Continue from the checkpoint in ``checkpoint.dir`` if there is one. Without it a
        run refuses to start when ``checkpoint.dir`` holds a checkpoint.
    stdout : text stream, optional
        Where to print the fitted parameters and the report's location (the CLI passes
        ``sys.stdout``); nothing is printed when None.

    Returns
    -------
    dict
        The report, as written to ``output.dir/report.json``.

    Raises
    ------
    daskgmm.errors.UnsafeOutputError
        ``output.dir`` equals, contains or lies inside the data, the checkpoint
        directory or the configuration file (before any work, whatever
        ``output.overwrite`` says).
    daskgmm.errors.OutputExistsError
        ``output.dir`` exists and ``output.overwrite`` is false (before any work).
    daskgmm.errors.OutputWriteError
        An output or checkpoint location is read-only, forbidden or full (checked with
        a probe before any work, and reported if a write fails later).
    daskgmm.errors.ConfigError
        A checkpoint exists and ``resume`` is false; ``resume`` without
        ``checkpoint.dir``; ``checkpoint.dir`` inside ``output.dir``.
    RunInterrupted
        Ctrl-C (a KeyboardInterrupt whose message says where the last checkpoint is).
    daskgmm.errors.DaskGMMError
        The data cannot be opened (:class:`~daskgmm.errors.DataSourceError`...), the
        cluster cannot be reached
        (:class:`~daskgmm.errors.ClusterConnectionError`), the checkpoint does not
        match (:class:`~daskgmm.errors.CheckpointError`)...

    Notes
    -----
    Nothing is left in ``output.dir`` unless the run succeeds. The checkpoint of a
    successful run is deleted once the outputs are in place.
    """
    from daskgmm.cli.selection import make_estimator, progress_observer

    started = time.perf_counter()
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    verbose = int(getattr(config.model, "verbose", 0) or 0)
    progress = progress_observer(config, quiet=quiet, verbose=verbose)
    log = _Log(progress, quiet)

    # Pre-flight: everything that can be refused is refused before any work.
    path = str(config.data.path)
    source = getattr(config, "source", None)
    config_file = source if source and os.path.isfile(source) else None
    refuse_overlap(config.output.dir, "output.dir",
                   [("data.path", path), ("checkpoint.dir", config.checkpoint.dir),
                    ("the configuration file", config_file)])
    out_dir = _check_output_dir(config)
    checkpoint_dir = _checkpoint_dir(config, resume, log)
    params = _estimator_params(config, checkpoint_dir)
    make_estimator(config, params)  # a sweep the selector refuses fails before any work
    check_writable(out_dir, "output.dir")
    if checkpoint_dir is not None:
        check_writable(Path(checkpoint_dir) / CHECKPOINT_FILE, "checkpoint.dir")
    if getattr(config.data, "generate", None) is not None and not os.path.exists(path):
        check_writable(path, "data.path")

    try:
        return _fit(config, quiet=quiet, stdout=stdout, started=started, created=created,
                    progress=progress, log=log, out_dir=out_dir, path=path,
                    checkpoint_dir=checkpoint_dir, params=params)
    except KeyboardInterrupt as exc:
        if isinstance(exc, RunInterrupted):
            raise
        progress.close()
        raise RunInterrupted(_interrupted_message(checkpoint_dir, source)) from None


def _fit(config: Any, *, quiet: bool, stdout: TextIO | None, started: float, created: str,
         progress: Any, log: _Log, out_dir: Path, path: str, checkpoint_dir: str | None,
         params: dict[str, Any]) -> dict[str, Any]:
    from daskgmm.cli import selection
    from daskgmm.cli.cluster import connect, worker_failures
    from daskgmm.diagnostics.memory import MemoryMonitor
    from daskgmm.diagnostics.observers import observe
    from daskgmm.diagnostics.report import (
        REPORT_FORMAT_VERSION,
        FitRecorder,
        information_criteria,
        iteration_table,
        library_versions,
        memory_summary,
    )
    from daskgmm.io.atomic import atomic_directory, write_json_atomic
    from daskgmm.io.readers import describe_array, get_reader, open_array
    from daskgmm.models import save_model

    with write_errors(("data.path", path)):
        generated = _maybe_generate(config, path, log)
    X = open_array(path, config.data.dataset, config.data.chunk_rows)
    data_info = {"path": path, "dataset": config.data.dataset,
                 "format": getattr(get_reader(path), "name", None), **describe_array(X)}
    if generated is not None:
        data_info["generated"] = _json_ready(generated)
    n_samples = int(X.shape[0])
    warning_lines: list[str] = []
    needed = (n_samples * 8 if config.output.labels else 0) + (
        n_samples * _n_components(config) * 8 if config.output.responsibilities else 0)
    space = free_space_warning(out_dir, "output.dir", needed)
    if space is not None:
        warning_lines.append(space)
        log.warning(space)
    with write_errors(("output.dir", out_dir)):
        out_dir.parent.mkdir(parents=True, exist_ok=True)

    writes = write_errors(("output.dir", out_dir), ("checkpoint.dir", checkpoint_dir))
    with writes, atomic_directory(out_dir, overwrite=config.output.overwrite) as tmp, \
            connect(config.cluster, log=log.info) as (client, cluster_info):
        tmp = Path(tmp)
        gm = selection.make_estimator(config, params)
        recorder = FitRecorder()
        for text in chunking_warnings(
                int(X.numblocks[0]), int(max(X.chunks[0])), int(X.shape[1]),
                int(X.dtype.itemsize),
                list(cluster_info.get("worker_memory_limits", {}).values())):
            warning_lines.append(text)
            log.warning(text)
        log.info(f"fitting {selection.describe_model(config)} to {n_samples:,} rows x "
                 f"{X.shape[1]} "
                 f"features in {X.npartitions} chunks on a {cluster_info['kind']} cluster "
                 f"of {cluster_info['n_workers']} worker(s)")
        progress.expect(max_iter=int(getattr(gm, "max_iter", 0) or 0),
                        tol=float(getattr(gm, "tol", 0.0) or 0.0))
        # During the fit the only files written are checkpoints.
        fit_writes = (write_errors(("checkpoint.dir", checkpoint_dir))
                      if checkpoint_dir is not None else contextlib.nullcontext())
        with MemoryMonitor(client) as monitor, worker_failures(cluster_info):
            with _captured_warnings(log, warning_lines), observe(progress, recorder), \
                    fit_writes:
                recorder.start()
                t_fit = time.perf_counter()
                gm.fit(X)
                fit_seconds = time.perf_counter() - t_fit
            # A sweep writes its best model as a single fit would, and its table.
            sweep, gm = selection.split_fitted(gm)
            # One more pass: final log-likelihood, labels, responsibilities, plot sample.
            t_out = time.perf_counter()
            sample_idx = (_sample_indices(n_samples, PLOT_SAMPLE_ROWS, config.model.random_state)
                          if config.output.plots else np.empty(0, dtype=np.int64))
            attributes = {"model": str(out_dir / "model"), "data": path,
                          "dataset": config.data.dataset}
            with _captured_warnings(log, warning_lines), observe(progress):
                result = _output_pass(
                    gm, X, sample_idx=sample_idx, attributes=attributes, client=client,
                    labels_path=tmp / "labels.zarr" if config.output.labels else None,
                    resp_path=(tmp / "responsibilities.zarr"
                               if config.output.responsibilities else None))
            printed_labels = None
            if stdout is not None and n_samples <= PRINT_LABELS_LIMIT:
                printed_labels = np.asarray(gm.predict(X).compute())
            output_pass_seconds = time.perf_counter() - t_out
        progress.close()

        mean_ll = result["ll"] / result["n"]
        criteria = information_criteria(mean_ll, n_samples, gm._n_parameters())
        plots: list[str] = []
        if config.output.plots:
            from daskgmm.diagnostics.plots import plot_clusters, plot_convergence

            table_seconds = [recorder.seconds.get(i) for i in range(1, gm.n_iter_ + 1)]
            name = config.name or os.path.basename(str(out_dir))
            plot_convergence(gm.lower_bounds_, table_seconds, tmp / "convergence.png",
                             title=f"{name}: convergence")
            sample = result["rows"]
            plot_clusters(sample, gm.predict(sample) if len(sample) else sample[:, 0],
                          gm, tmp / "clusters.png",
                          title=(f"{name}: all {n_samples:,} rows" if len(sample) == n_samples
                                 else f"{name}: {len(sample):,} random rows of "
                                      f"{n_samples:,}"))
            plots = ["convergence.png", "clusters.png"]
        if sweep is not None:
            plots += selection.write_selection(
                sweep, tmp, plots=config.output.plots,
                title=f"{config.name or os.path.basename(str(out_dir))}: model selection")

        model_meta = {"data": {k: data_info[k] for k in ("path", "dataset", "shape", "dtype")},
                      "run": config.name, "bic": criteria["bic"], "aic": criteria["aic"]}
        if "checkpoint_dir" in gm.get_params():
            gm.set_params(checkpoint_dir=None)  # a loaded model should not resume this run
        save_model(gm, tmp / "model", extra_metadata=_json_ready(model_meta))

        timing = recorder.timing(fit_seconds)
        timing["outputs_seconds"] = round(output_pass_seconds, 4)
        timing["total_seconds"] = round(time.perf_counter() - started, 4)
        resumed_from = (recorder.first_iteration - 1
                        if recorder.first_iteration and recorder.first_iteration > 1 else 0)
        report = {
            "format": "daskgmm-report",
            "format_version": REPORT_FORMAT_VERSION,
            "name": config.name,
            "created": created,
            "config_file": getattr(config, "source", None),
            "config": config.to_dict(),
            "versions": library_versions(),
            "data": data_info,
            "fit": {
                "converged": bool(gm.converged_),
                "n_iter": int(gm.n_iter_),
                "lower_bound": _json_ready(float(gm.lower_bound_)),
                "resumed_from_iteration": resumed_from,
                "iterations": iteration_table(list(gm.lower_bounds_), recorder.seconds),
                "passes": {kind: sum(1 for p in recorder.passes if p["kind"] == kind)
                           for kind in sorted({p["kind"] for p in recorder.passes})},
                **criteria,
                "warnings": warning_lines,
            },
            "timing": timing,
            "memory": memory_summary(monitor),
            "cluster": cluster_info,
            "outputs": {
                "dir": str(out_dir),
                "model": "model",
                "report": "report.json",
                "plots": plots,
                "labels": "labels.zarr" if config.output.labels else None,
                "responsibilities": ("responsibilities.zarr"
                                     if config.output.responsibilities else None),
            },
        }
        if sweep is not None:
            report["selection"] = selection.selection_report(sweep)
            report["outputs"]["selection"] = selection.SELECTION_FILE
        report = _json_ready(report)
        write_json_atomic(tmp / "report.json", report, indent=2)
    _remove_checkpoint(checkpoint_dir)
    if stdout is not None and sweep is not None:
        selection.print_winner(sweep, stdout)
    if stdout is not None:
        _print_result(gm, report["fit"]["mean_log_likelihood"], printed_labels, n_samples,
                      out_dir / "labels.zarr" if config.output.labels else None,
                      out_dir / "report.json", stdout)
    return report


def _n_components(config: Any) -> int:
    """The largest number of components the run may write responsibilities for."""
    swept = config.model.sweep.get("n_components")
    return int(max(swept)) if swept else int(getattr(config.model, "n_components", 1))


# ---------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------


def run_predict(model_dir: str | os.PathLike[str], data: str | os.PathLike[str],
                dataset: str | None, output: str | os.PathLike[str], proba: bool = False,
                cluster_config: Any = None, *, overwrite: bool = False,
                chunk_rows: int | None = None, quiet: bool = False) -> dict[str, Any]:
    """Write the labels (or responsibilities) of a dataset under a saved model to Zarr.

    Parameters
    ----------
    model_dir : path-like
        A model saved by :func:`daskgmm.serialize.model_files.save_model`, or a
        ``daskgmm fit`` output directory (its ``model/`` is used).
    data : path-like or str
        The samples (any format :func:`daskgmm.io.readers.open_array` reads).
    dataset : str or None
        Array inside an HDF5 file or Zarr group.
    output : path-like
        The Zarr array to create (e.g. ``labels.zarr``): ``(n_samples,)`` int64 labels,
        or ``(n_samples, n_components)`` float64 responsibilities with ``proba``; row
        chunks equal to the data's.
    proba : bool, default False
        Write responsibilities instead of labels.
    cluster_config : daskgmm.cli.config.ClusterConfig, optional
        Where to compute; a local cluster with the default settings when None.
    overwrite : bool, default False
        Replace an existing ``output``.
    chunk_rows : int, optional
        Rows per chunk (default: the storage's chunking).
    quiet : bool, default False
        No progress on stderr.

    Returns
    -------
    dict
        ``output``, ``content`` (``'labels'`` or ``'responsibilities'``), ``shape``,
        ``chunks_rows``, ``model``, ``data`` and ``seconds``.

    Raises
    ------
    daskgmm.errors.UnsafeOutputError
        ``output`` equals, contains or lies inside the data or the model.
    daskgmm.errors.OutputExistsError
        ``output`` exists and ``overwrite`` is False (checked before any work).
    daskgmm.errors.OutputWriteError
        ``output`` cannot be written (read-only, forbidden, disk full).
    RunInterrupted
        Ctrl-C.
    daskgmm.errors.ModelFormatError, daskgmm.errors.DataSourceError,
    daskgmm.errors.InvalidDataError
        The model or the data cannot be used (e.g. the feature counts differ).
    """
    from daskgmm.cli.cluster import connect, worker_failures
    from daskgmm.diagnostics.observers import observe
    from daskgmm.diagnostics.progress import ProgressObserver
    from daskgmm.errors import InvalidDataError
    from daskgmm.io.atomic import atomic_directory
    from daskgmm.io.readers import open_array
    from daskgmm.models import load as load_model

    started = time.perf_counter()
    progress = ProgressObserver(quiet=quiet)
    log = _Log(progress, quiet)
    model_path = Path(model_dir)
    if (model_path / "model").is_dir() and not (model_path / "model.json").exists():
        model_path = model_path / "model"
    target = Path(os.path.abspath(os.fspath(output)))
    refuse_overlap(target, "--output", [("--data", os.fspath(data)),
                                        ("--model", os.fspath(model_dir)),
                                        ("the model", model_path)])
    if os.path.lexists(target) and not overwrite:
        raise OutputExistsError(f"{target} already exists; pass --overwrite to replace it")
    if os.path.lexists(target) and not target.is_dir():
        raise OutputExistsError(f"{target} exists and is not a directory; choose another "
                                "--output")
    check_writable(target, "--output")
    gm = load_model(model_path)
    X = open_array(os.fspath(data), dataset, chunk_rows)
    if X.shape[1] != gm.n_features_in_:
        raise InvalidDataError(
            f"the data has {X.shape[1]} features but the model in {model_path} was fitted "
            f"on {gm.n_features_in_}"
        )
    content = "responsibilities" if proba else "labels"
    attributes = {"model": str(model_path.resolve()), "data": os.fspath(data),
                  "dataset": dataset}
    try:
        with write_errors(("--output", target)):
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_directory(target, overwrite=overwrite) as tmp, \
                    connect(cluster_config, log=log.info) as (client, cluster_info):
                # The (empty) temporary directory becomes the array's root.
                with observe(progress), worker_failures(cluster_info):
                    _output_pass(gm, X, sample_idx=np.empty(0, dtype=np.int64),
                                 attributes=attributes, client=client,
                                 labels_path=None if proba else Path(tmp),
                                 resp_path=Path(tmp) if proba else None)
                progress.close()
    except KeyboardInterrupt as exc:
        progress.close()
        if isinstance(exc, RunInterrupted):
            raise
        raise RunInterrupted(f"interrupted; nothing was written to {target}") from None
    shape = [int(X.shape[0])] + ([int(gm.n_components)] if proba else [])
    return {
        "output": str(target),
        "content": content,
        "shape": shape,
        "chunks_rows": int(_regular_rows(X).chunks[0][0]),
        "model": str(model_path),
        "data": os.fspath(data),
        "seconds": round(time.perf_counter() - started, 3),
    }


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a user mistake the CLI reports in one line (exit code 2).

    Only daskgmm's own errors (:class:`~daskgmm.errors.DaskGMMError` and its
    subclasses) and the operating system's write failures that the user must fix
    (disk full, quota exceeded, read-only file system, permission denied) are. Any
    other exception, ``ValueError`` included, is a bug and shows its traceback.
    """
    if isinstance(exc, DaskGMMError):
        return True
    return isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS
