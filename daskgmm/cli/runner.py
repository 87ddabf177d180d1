"""Batch runs: ``daskgmm fit CONFIG.yaml`` and ``daskgmm predict``.

:func:`run_fit` takes a validated :class:`~daskgmm.cli.config.RunConfig`, starts or joins
the Dask cluster, fits the estimator of ``model.kind`` out of core and writes everything
into ``output.dir``::

    output.dir/
        model/              the fitted model (daskgmm.serialize.model_files)
        report.json         configuration (secrets masked), versions, data, iterations,
                            BIC/AIC, timings, peak memory, cluster
        convergence.png     lower bound and seconds per EM iteration  (output.plots)
        clusters.png        a sample on its first two principal components  (output.plots)
        labels.zarr         int64 label of every row, chunked like the data  (output.labels)
        labels.parquet/     instead, for Parquet input: label (and output.id_column)
        responsibilities.zarr   float64 (n_samples, K)  (output.responsibilities)

``output.dir`` may be a local path or a URL (``s3://bucket/runs/x`` with
``output.storage_options``). The whole directory is assembled aside -- a temporary
sibling renamed into place locally, a temporary prefix copied into place with
``report.json`` last on an object store (:func:`daskgmm.io.storage.atomic_output_directory`)
-- so a run that fails or is interrupted leaves no partial output, and an existing
``output.dir`` is refused before anything is computed unless ``output.overwrite`` is
true (and even then, only one daskgmm wrote is replaced).

The data (``data.path``, with ``data.storage_options``, ``data.columns``,
``data.sample_weight``...) is opened by :mod:`daskgmm.cli.inputs`; after the fit one
pass over it (:func:`daskgmm.cli.outputs.output_pass`) computes everything else at once,
the workers writing labels and responsibilities straight to ``output.dir``.

:func:`run_predict` loads a saved model (local or URL) and writes the labels (or the
responsibilities) of a dataset, out of core and atomically, to a local path or a URL.

With a remote cluster, the data and ``output.dir`` must be where the workers can reach
them: a shared file system, or an object store.
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
    check_writable,
    chunking_warnings,
    free_space_warning,
    refuse_overlap,
    refuse_process_local,
    write_errors,
)
from daskgmm.errors import ConfigError, DaskGMMError, OutputExistsError

__all__ = ["CHECKPOINT_FILE", "PLOT_SAMPLE_ROWS", "PRINT_LABELS_LIMIT",
           "PRINT_PARAMETERS_LIMIT", "RunInterrupted", "checkpoint_iteration",
           "component_table", "run_fit", "run_predict"]

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


def _output_options(config: Any) -> dict | None:
    return getattr(config.output, "storage_options", None)


def _checkpoint_options(config: Any) -> dict | None:
    options = getattr(config.checkpoint, "storage_options", None)
    return options if options is not None else _output_options(config)


def _check_output_location(url: str, key: str, overwrite: bool,
                           storage_options: dict | None, flag: str) -> str:
    """Refuse an existing output (without ``overwrite``) or one that daskgmm did not
    write (with it), before any work. Returns the output's local path or URL."""
    from daskgmm.io.locations import parse_location
    from daskgmm.io.storage import check_replaceable, exists

    loc = parse_location(url, storage_options)
    if not exists(loc):
        return loc.path if loc.is_local else url
    if not overwrite:
        raise OutputExistsError(
            f"the {key} {loc.display} already exists; pass {flag} to replace it, or choose "
            f"another {key}")
    if loc.is_local and not os.path.isdir(loc.path):
        raise OutputExistsError(
            f"{key} {loc.display} exists and is not a directory; choose another {key}")
    check_replaceable(loc)
    return loc.path if loc.is_local else url


def _check_output_dir(config: Any) -> str:
    return _check_output_location(str(config.output.dir), "output.dir",
                                  bool(config.output.overwrite), _output_options(config),
                                  "--set output.overwrite=true")


def _is_local(path: str) -> bool:
    """Whether ``path`` is a local path (``file://`` included; not ``sklearn:NAME``)."""
    from daskgmm.io.locations import parse_location

    return not path.startswith("sklearn:") and parse_location(path).is_local


def _shown(url: str | os.PathLike[str] | None, storage_options: dict | None = None) -> str:
    """A path or URL as the user may see it (credentials masked)."""
    if url is None:
        return "None"
    from daskgmm.io.locations import parse_location

    text = os.fspath(url)
    if text.startswith("sklearn:"):
        return text
    try:
        return parse_location(url, storage_options).display
    except DaskGMMError:
        from daskgmm.io.locations import redact_url

        return redact_url(text)


def checkpoint_iteration(directory: str | os.PathLike[str] | None,
                         storage_options: dict | None = None) -> int | None:
    """The iteration of the checkpoint in ``directory`` (None when there is none).

    Reads only the ``iteration`` key of ``checkpoint.json`` (the engine is not
    imported), locally or at a URL; an unreadable file counts as none.
    """
    if directory is None:
        return None
    from daskgmm.io.locations import parse_location
    from daskgmm.serialize.schema import parse_json

    try:
        loc = parse_location(directory, storage_options).join(CHECKPOINT_FILE)
        with loc.open("rb") as handle:
            value = parse_json(handle.read(1 << 28)).get("iteration")
    except Exception:
        return None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _has_checkpoint(directory: Any) -> bool:
    from daskgmm.io.locations import parse_location

    loc = parse_location(directory).join(CHECKPOINT_FILE)
    return os.path.lexists(loc.path) if loc.is_local else loc.exists()


def _interrupted_message(checkpoint_dir: Any, source: str | None) -> str:
    iteration = checkpoint_iteration(checkpoint_dir)
    command = f"daskgmm fit {source} --resume" if source else "daskgmm fit CONFIG --resume"
    shown = _shown(checkpoint_dir)
    if iteration is not None:
        return (f"interrupted; the last checkpoint is at iteration {iteration} (in "
                f"{shown}): resume with `{command}`")
    if checkpoint_dir is not None:
        return (f"interrupted before the first checkpoint was written to {shown}; "
                "nothing was written")
    return ("interrupted; nothing was written, and there is no checkpoint to resume from "
            "(set checkpoint.dir to be able to resume)")


def _checkpoint_dir(config: Any, resume: bool, log: _Log) -> str | None:
    """The checkpoint directory: a local path, or a URL carrying its storage options
    (:class:`~daskgmm.io.locations.StoragePath`, which the estimator passes on)."""
    from daskgmm.io.locations import StoragePath, parse_location
    from daskgmm.io.locations import relation as overlap

    directory = getattr(config.checkpoint, "dir", None)
    if directory is None:
        if resume:
            raise ConfigError(
                "--resume needs a checkpoint directory: set checkpoint.dir in the "
                "configuration (or with --set checkpoint.dir=PATH)"
            )
        return None
    options = _checkpoint_options(config)
    ckpt_loc = parse_location(str(directory), options)
    if ckpt_loc.is_local:
        ckpt: str = str(Path(ckpt_loc.path).resolve())
        ckpt_loc = parse_location(ckpt)
    else:
        ckpt = StoragePath(str(directory), options)
    out_loc = parse_location(str(config.output.dir), _output_options(config))
    if overlap(ckpt_loc, out_loc) in ("is", "lies inside"):
        out = out_loc.display
        raise ConfigError(
            f"checkpoint.dir {ckpt_loc.display} is inside output.dir {out}, which is "
            "written atomically at the end of the run; put the checkpoints elsewhere (e.g. "
            f"{out.rstrip('/')}-checkpoints)"
        )
    refuse_overlap(ckpt, "checkpoint.dir", [("data.path", config.data.path)],
                   relations=("is", "lies inside"))
    iteration = checkpoint_iteration(ckpt)
    has_checkpoint = _has_checkpoint(ckpt)
    shown = ckpt_loc.display
    if has_checkpoint and not resume:
        where = f" at iteration {iteration}" if iteration is not None else ""
        raise ConfigError(
            f"a checkpoint from an earlier run exists in {shown}{where}; pass --resume to "
            "continue it or delete the directory"
        )
    if resume and not has_checkpoint:
        log.info(f"no checkpoint in {shown} yet: starting the fit from the beginning")
    elif resume:
        where = f"iteration {iteration}" if iteration is not None else "its last iteration"
        log.info(f"resuming from the checkpoint at {where} in {shown}")
    return ckpt


def _maybe_generate(config: Any, path: str, log: _Log) -> dict[str, Any] | None:
    """Write the synthetic dataset of ``data.generate`` if ``data.path`` is missing."""
    spec = getattr(config.data, "generate", None)
    if spec is None or not _is_local(path):
        return None
    from daskgmm.io.locations import parse_location

    path = parse_location(path).path  # a file:// URL as a path
    if os.path.exists(path):
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

    chunk_rows = get("chunk_rows", None)
    t0 = time.perf_counter()
    with observe(log.progress):
        summary = generate_mixture(
            path, n_samples, n_features, int(get("n_components", 1)),
            seed=int(get("seed", 0)),
            chunk_rows=int(chunk_rows) if chunk_rows is not None else None,
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
    from daskgmm.io.locations import parse_location

    loc = parse_location(directory)
    if not loc.is_local:
        with contextlib.suppress(FileNotFoundError):
            loc.fs.rm_file(loc.join(CHECKPOINT_FILE).path)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(loc.path, CHECKPOINT_FILE))
    with contextlib.suppress(OSError):
        os.rmdir(loc.path)  # only if now empty


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
                  n_samples: int, labels_file: str | None, report_path: str,
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
    weight = getattr(config.data, "sample_weight", None)
    refuse_process_local(("data.path", path), ("output.dir", config.output.dir),
                         ("checkpoint.dir", config.checkpoint.dir),
                         ("data.sample_weight.path", getattr(weight, "path", None)))
    refuse_overlap(config.output.dir, "output.dir",
                   [("data.path", path), ("checkpoint.dir", config.checkpoint.dir),
                    ("the configuration file", config_file)])
    out_dir = _check_output_dir(config)
    checkpoint_dir = _checkpoint_dir(config, resume, log)
    params = _estimator_params(config, checkpoint_dir)
    make_estimator(config, params)  # a sweep the selector refuses fails before any work
    check_writable(out_dir, "output.dir", storage_options=_output_options(config))
    if checkpoint_dir is not None:
        from daskgmm.io.locations import parse_location

        check_writable(parse_location(checkpoint_dir).join(CHECKPOINT_FILE).url,
                       "checkpoint.dir", storage_options=_checkpoint_options(config))
    if getattr(config.data, "generate", None) is not None and _is_local(path):
        if not os.path.exists(path):
            check_writable(path, "data.path")
    elif getattr(config.data, "generate", None) is not None:
        from daskgmm.io.storage import exists

        if not exists(path, getattr(config.data, "storage_options", None)):
            raise ConfigError(
                f"data.generate writes local files only, and data.path is the URL "
                f"{_shown(path)}, where nothing is yet; generate the data locally "
                "(daskgmm generate) and upload it, or remove data.generate")

    try:
        return _fit(config, quiet=quiet, stdout=stdout, started=started, created=created,
                    progress=progress, log=log, out_dir=out_dir, path=path,
                    checkpoint_dir=checkpoint_dir, params=params)
    except KeyboardInterrupt as exc:
        if isinstance(exc, RunInterrupted):
            raise
        progress.close()
        raise RunInterrupted(_interrupted_message(checkpoint_dir, source)) from None


def _open_data(config: Any) -> Any:
    from daskgmm.cli.inputs import open_input

    data = config.data
    id_column = getattr(config.output, "id_column", None)
    return open_input(str(data.path), dataset=data.dataset, chunk_rows=data.chunk_rows,
                      columns=getattr(data, "columns", None),
                      storage_options=getattr(data, "storage_options", None),
                      allow_missing_chunks=bool(getattr(data, "allow_missing_chunks", False)),
                      sample_weight=getattr(data, "sample_weight", None),
                      id_column=id_column)


def _labels_name(run_input: Any) -> str:
    return "labels.parquet" if run_input.is_parquet else "labels.zarr"


def _fit(config: Any, *, quiet: bool, stdout: TextIO | None, started: float, created: str,
         progress: Any, log: _Log, out_dir: str, path: str, checkpoint_dir: str | None,
         params: dict[str, Any]) -> dict[str, Any]:
    from daskgmm.cli import selection
    from daskgmm.cli.cluster import connect, worker_failures
    from daskgmm.cli.outputs import LabelsTarget, output_pass, write_figure, write_json
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
    from daskgmm.io.locations import parse_location
    from daskgmm.io.storage import atomic_output_directory
    from daskgmm.models import save_model

    out_options = _output_options(config)
    out_loc = parse_location(out_dir, out_options)
    out_shown = out_loc.display
    with write_errors(("data.path", path)):
        generated = _maybe_generate(config, path, log)
    run_input = _open_data(config)
    X = run_input.X
    data_info = dict(run_input.info)
    if generated is not None:
        data_info["generated"] = _json_ready(generated)
    n_samples = int(X.shape[0])
    labels_name = _labels_name(run_input)
    warning_lines: list[str] = []
    needed = (n_samples * 8 if config.output.labels else 0) + (
        n_samples * _n_components(config) * 8 if config.output.responsibilities else 0)
    space = free_space_warning(out_dir, "output.dir", needed)
    if space is not None:
        warning_lines.append(space)
        log.warning(space)

    writes = write_errors(("output.dir", out_dir), ("checkpoint.dir", checkpoint_dir))
    with writes, atomic_output_directory(out_dir, kind="run",
                                         overwrite=config.output.overwrite,
                                         storage_options=out_options) as out, \
            connect(config.cluster, log=log.info) as (client, cluster_info):
        gm = selection.make_estimator(config, params)
        recorder = FitRecorder()
        for text in chunking_warnings(
                int(X.numblocks[0]), int(max(X.chunks[0])), int(X.shape[1]),
                int(X.dtype.itemsize),
                list(cluster_info.get("worker_memory_limits", {}).values())):
            warning_lines.append(text)
            log.warning(text)
        weighted = " (weighted)" if run_input.weights is not None else ""
        log.info(f"fitting {selection.describe_model(config)} to {n_samples:,} rows x "
                 f"{X.shape[1]} features{weighted} in {X.npartitions} chunks on a "
                 f"{cluster_info['kind']} cluster of {cluster_info['n_workers']} worker(s)")
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
                if run_input.weights is not None:
                    gm.fit(X, sample_weight=run_input.weights)
                else:
                    gm.fit(X)
                fit_seconds = time.perf_counter() - t_fit
            # A sweep writes its best model as a single fit would, and its table.
            sweep, gm = selection.split_fitted(gm)
            # One more pass: final log-likelihood, labels, responsibilities, plot sample.
            t_out = time.perf_counter()
            sample_idx = (_sample_indices(n_samples, PLOT_SAMPLE_ROWS, config.model.random_state)
                          if config.output.plots else np.empty(0, dtype=np.int64))
            attributes = {"model": out_loc.join("model").display, "data": run_input.display,
                          "dataset": config.data.dataset}
            labels = None
            if config.output.labels:
                labels = LabelsTarget(out.child_location(labels_name),
                                      "parquet" if run_input.is_parquet else "zarr",
                                      run_input.ids, getattr(config.output, "id_column", None))
            with _captured_warnings(log, warning_lines), observe(progress):
                result = output_pass(
                    gm, X, sample_idx=sample_idx, attributes=attributes, client=client,
                    labels=labels, weights=run_input.weights,
                    responsibilities=(out.child_location("responsibilities.zarr")
                                      if config.output.responsibilities else None))
            printed_labels = None
            if stdout is not None and n_samples <= PRINT_LABELS_LIMIT:
                printed_labels = np.asarray(gm.predict(X).compute())
            output_pass_seconds = time.perf_counter() - t_out
        progress.close()

        mean_ll = result["ll"] / result["weight"] if result["weight"] > 0 else float("nan")
        # With weights, the sample size of BIC is their sum (integer weights count as
        # repeated rows).
        effective_n = result["weight"] if run_input.weights is not None else n_samples
        criteria = information_criteria(mean_ll, effective_n, gm._n_parameters())
        plots: list[str] = []
        if config.output.plots:
            from daskgmm.diagnostics.plots import clusters_figure, convergence_figure

            table_seconds = [recorder.seconds.get(i) for i in range(1, gm.n_iter_ + 1)]
            name = config.name or out_loc.name
            write_figure(out, "convergence.png", convergence_figure(
                gm.lower_bounds_, table_seconds, title=f"{name}: convergence",
                objective=type(gm)._objective_description))
            sample = result["rows"]
            write_figure(out, "clusters.png", clusters_figure(
                sample, gm.predict(sample) if len(sample) else sample[:, 0], gm,
                title=(f"{name}: all {n_samples:,} rows" if len(sample) == n_samples
                       else f"{name}: {len(sample):,} random rows of {n_samples:,}")))
            plots = ["convergence.png", "clusters.png"]
        if sweep is not None:
            plots += selection.write_selection(
                sweep, out, plots=config.output.plots,
                title=f"{config.name or out_loc.name}: model selection")

        model_meta = {"data": {k: data_info[k] for k in ("path", "dataset", "shape", "dtype")},
                      "run": config.name, "bic": criteria["bic"], "aic": criteria["aic"]}
        if "checkpoint_dir" in gm.get_params():
            gm.set_params(checkpoint_dir=None)  # a loaded model should not resume this run
        save_model(gm, out.child("model"), extra_metadata=_json_ready(model_meta),
                   storage_options=out.storage_options or None)

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
            "config": config.to_dict(redact=True),
            "versions": library_versions(),
            "data": data_info,
            "fit": {
                "estimator": type(gm).__name__,
                "converged": bool(gm.converged_),
                "n_iter": int(gm.n_iter_),
                "lower_bound": _json_ready(float(gm.lower_bound_)),
                "resumed_from_iteration": resumed_from,
                "iterations": iteration_table(list(gm.lower_bounds_), recorder.seconds),
                "passes": {kind: sum(1 for p in recorder.passes if p["kind"] == kind)
                           for kind in sorted({p["kind"] for p in recorder.passes})},
                "weighted": run_input.weights is not None,
                "sum_of_weights": (result["weight"] if run_input.weights is not None
                                   else None),
                **criteria,
                "warnings": warning_lines,
            },
            "timing": timing,
            "memory": memory_summary(monitor),
            "cluster": cluster_info,
            "outputs": {
                "dir": out_shown,
                "model": "model",
                "report": "report.json",
                "plots": plots,
                "labels": labels_name if config.output.labels else None,
                "responsibilities": ("responsibilities.zarr"
                                     if config.output.responsibilities else None),
            },
        }
        if sweep is not None:
            report["selection"] = selection.selection_report(sweep)
            report["outputs"]["selection"] = selection.SELECTION_FILE
        report = _json_ready(report)
        write_json(out, "report.json", report)  # the run's marker: on object stores, last
    _remove_checkpoint(checkpoint_dir)
    if stdout is not None and sweep is not None:
        selection.print_winner(sweep, stdout)
    if stdout is not None:
        _print_result(gm, report["fit"]["mean_log_likelihood"], printed_labels, n_samples,
                      out_loc.join(labels_name).display if config.output.labels else None,
                      out_loc.join("report.json").display, stdout)
    return report


def _n_components(config: Any) -> int:
    """The largest number of components the run may write responsibilities for."""
    swept = config.model.sweep.get("n_components")
    return int(max(swept)) if swept else int(getattr(config.model, "n_components", 1))


# ---------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------


def _model_location(model_dir: str | os.PathLike[str], storage_options: dict | None
                    ) -> Any:
    """The saved model's Location: ``model_dir`` itself, or its ``model/`` when it is a
    ``daskgmm fit`` output directory."""
    from daskgmm.io.locations import parse_location

    loc = parse_location(model_dir, storage_options)
    inner = loc.join("model")
    if loc.is_local:
        if os.path.isdir(inner.path) and not os.path.exists(loc.join("model.json").path):
            return inner
        return loc
    if not loc.join("model.json").exists() and inner.join("model.json").exists():
        return inner
    return loc


def run_predict(model_dir: str | os.PathLike[str], data: str | os.PathLike[str],
                dataset: str | None, output: str | os.PathLike[str], proba: bool = False,
                cluster_config: Any = None, *, overwrite: bool = False,
                chunk_rows: int | None = None, quiet: bool = False,
                data_storage_options: dict | None = None,
                output_storage_options: dict | None = None,
                model_storage_options: dict | None = None,
                columns: list[str] | None = None, id_column: str | None = None,
                allow_missing_chunks: bool = False) -> dict[str, Any]:
    """Write the labels (or responsibilities) of a dataset under a saved model.

    Parameters
    ----------
    model_dir : path-like or str
        A model saved by an estimator's ``save`` (local or URL), or a ``daskgmm fit``
        output directory (its ``model/`` is used).
    data : path-like or str
        The samples (any format :func:`daskgmm.io.readers.open_array` reads, local or
        URL).
    dataset : str or None
        Array inside an HDF5 file or Zarr group.
    output : path-like or str
        Where to write, a local path or URL: a Zarr array (e.g. ``labels.zarr``) of
        ``(n_samples,)`` int64 labels, or ``(n_samples, n_components)`` float64
        responsibilities with ``proba``, with row chunks equal to the data's. For
        Parquet data the labels are a Parquet directory (``label`` next to
        ``id_column``, one file per chunk of the input) unless ``output`` ends in
        ``.zarr``.
    proba : bool, default False
        Write responsibilities instead of labels.
    cluster_config : daskgmm.cli.config.ClusterConfig, optional
        Where to compute; a local cluster with the default settings when None.
    overwrite : bool, default False
        Replace an existing ``output`` (only one daskgmm wrote).
    chunk_rows : int, optional
        Rows per chunk (default: the storage's chunking).
    quiet : bool, default False
        No progress on stderr.
    data_storage_options, output_storage_options, model_storage_options : dict, optional
        Filesystem options of each URL.
    columns : list of str, optional
        Parquet data: the feature columns (default: every numeric column but
        ``id_column``).
    id_column : str, optional
        Parquet data: the column copied next to the labels.
    allow_missing_chunks : bool, default False
        Accept a Zarr/HDF5 store with chunks that were never written.

    Returns
    -------
    dict
        ``output``, ``content`` (``'labels'`` or ``'responsibilities'``), ``format``
        (``'zarr'`` or ``'parquet'``), ``shape``, ``chunks_rows``, ``model``, ``data``
        and ``seconds`` (locations without credentials).

    Raises
    ------
    daskgmm.errors.UnsafeOutputError
        ``output`` equals, contains or lies inside the data or the model.
    daskgmm.errors.OutputExistsError
        ``output`` exists and ``overwrite`` is False (checked before any work), or it
        holds something daskgmm did not write.
    daskgmm.errors.OutputWriteError
        ``output`` cannot be written (read-only, forbidden, disk full, credentials).
    RunInterrupted
        Ctrl-C.
    daskgmm.errors.ModelFormatError, daskgmm.errors.DataSourceError,
    daskgmm.errors.InvalidDataError
        The model or the data cannot be used (e.g. the feature counts differ).
    """
    from daskgmm.cli.cluster import connect, worker_failures
    from daskgmm.cli.inputs import InputKeys, open_input
    from daskgmm.cli.outputs import LabelsTarget, output_pass, regular_rows
    from daskgmm.diagnostics.observers import observe
    from daskgmm.diagnostics.progress import ProgressObserver
    from daskgmm.errors import InvalidDataError
    from daskgmm.io.locations import parse_location
    from daskgmm.io.storage import atomic_output_directory
    from daskgmm.models import load as load_model

    started = time.perf_counter()
    progress = ProgressObserver(quiet=quiet)
    log = _Log(progress, quiet)
    refuse_process_local(("--model", model_dir), ("--data", data), ("--output", output))
    model_loc = _model_location(model_dir, model_storage_options)
    output = os.fspath(output)
    refuse_overlap(output, "--output", [("--data", os.fspath(data)),
                                        ("--model", os.fspath(model_dir)),
                                        ("the model", model_loc.url)])
    target = _check_output_location(output, "--output", overwrite, output_storage_options,
                                    "--overwrite")
    target_loc = parse_location(target, output_storage_options)
    check_writable(target, "--output", storage_options=output_storage_options)
    gm = load_model(model_loc.url, storage_options=model_loc.storage_options or None)
    keys = InputKeys(path="--data", columns="--columns", id_column="--id-column",
                     sample_weight="--sample-weight")
    run_input = open_input(os.fspath(data), dataset=dataset, chunk_rows=chunk_rows,
                           columns=columns, storage_options=data_storage_options,
                           allow_missing_chunks=allow_missing_chunks, id_column=id_column,
                           keys=keys)
    X = run_input.X
    if X.shape[1] != gm.n_features_in_:
        raise InvalidDataError(
            f"the data has {X.shape[1]} features but the model in {model_loc.display} was "
            f"fitted on {gm.n_features_in_}"
        )
    content = "responsibilities" if proba else "labels"
    fmt = ("parquet" if run_input.is_parquet and not proba
           and not target_loc.path.rstrip("/").endswith(".zarr") else "zarr")
    if id_column is not None and fmt != "parquet":
        raise ConfigError("--id-column goes with labels of Parquet data written as Parquet "
                          "(not with --proba, nor with an --output ending in .zarr)")
    attributes = {"model": model_loc.display, "data": run_input.display, "dataset": dataset}
    try:
        with write_errors(("--output", target)), \
                atomic_output_directory(target, kind=content, overwrite=overwrite,
                                        storage_options=output_storage_options) as out, \
                connect(cluster_config, log=log.info) as (client, cluster_info):
            # The (empty) temporary directory becomes the array's (or table's) root.
            with observe(progress), worker_failures(cluster_info):
                output_pass(gm, X, attributes=attributes, client=client,
                            labels=(None if proba else
                                    LabelsTarget(out.location, fmt, run_input.ids,
                                                 id_column)),
                            responsibilities=out.location if proba else None)
            progress.close()
    except KeyboardInterrupt as exc:
        progress.close()
        if isinstance(exc, RunInterrupted):
            raise
        raise RunInterrupted(f"interrupted; nothing was written to {target_loc.display}") \
            from None
    shape = [int(X.shape[0])] + ([int(gm.n_components)] if proba else [])
    chunks = X if fmt == "parquet" else regular_rows(X)
    return {
        "output": target_loc.display,
        "content": content,
        "format": fmt,
        "shape": shape,
        "chunks_rows": int(chunks.chunks[0][0]),
        "model": model_loc.display,
        "data": run_input.display,
        "seconds": round(time.perf_counter() - started, 3),
    }


