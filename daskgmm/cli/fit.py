"""``daskgmm fit``: the batch run, as a pipeline of named steps::

    preflight -> open_inputs -> connect -> fit -> write_outputs -> make_report

:func:`preflight` refuses what can be refused before any work; the output is filled in
a claimed temporary (:func:`~daskgmm.io.storage.atomic_output_directory`), so a failed
run leaves nothing at ``output.dir``. :func:`run_fit` strings the steps together."""

from __future__ import annotations

import contextlib
import datetime as _dt
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from daskgmm.cli.config import RunConfig
from daskgmm.cli.guards import (
    check_writable,
    chunk_memory_warning,
    free_space_warning,
    refuse_existing_output,
    refuse_overlap,
    refuse_process_local,
)
from daskgmm.diagnostics.progress import ProgressObserver
from daskgmm.diagnostics.report import FitRecorder, RunReport
from daskgmm.errors import ConfigError
from daskgmm.io.locations import Location, StoragePath, scrub_secrets, storage_errors

__all__ = ["PLOT_SAMPLE_ROWS", "PRINT_LABELS_LIMIT", "PRINT_PARAMETERS_LIMIT", "Plan",
           "RunInterrupted", "preflight", "run_fit"]

PLOT_SAMPLE_ROWS = 5000
"""Rows drawn at random for ``clusters.png``."""
PRINT_LABELS_LIMIT = 10_000
"""Every label is printed for data of at most this many rows."""
PRINT_PARAMETERS_LIMIT = 40
"""The parameters are printed when K x D is at most this; a table otherwise."""
_CHECKPOINT_FILE = "checkpoint.json"


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with the one line the command prints about it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class Plan:
    """What :func:`preflight` decided: the run's estimator (built once), where it
    writes, where it resumes from, and its display."""

    config: RunConfig
    estimator: Any
    progress: ProgressObserver
    resume_from: int | None = None
    warnings: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(
        timespec="seconds"))

    @property
    def output(self) -> Location:
        return self.config.output.dir

    @property
    def checkpoint(self) -> Location | None:
        return self.config.checkpoint.dir

    def warn(self, text: str) -> None:
        text = scrub_secrets(" ".join(text.split()))
        if text not in self.warnings:
            self.warnings.append(text)
            self.progress.warning(text)


def preflight(config: RunConfig, *, resume: bool = False, quiet: bool = False) -> Plan:
    """Refuse what can be refused before any work (an output over an input, existing
    or not daskgmm's, unwritable or unreachable; checkpoints that do not suit the flags),
    and build the run's estimator."""
    data, out, ckpt = config.data, config.output.dir, config.checkpoint.dir
    weights = data.sample_weight.path if data.sample_weight is not None else None
    source = Location(config.source) if config.source != "<config>" else None
    refuse_process_local(("data.path", data.path), ("output.dir", out),
                         ("checkpoint.dir", ckpt), ("data.sample_weight.path", weights))
    refuse_overlap(out, "output.dir", [("data.path", data.path),
                                       ("data.sample_weight.path", weights),
                                       ("checkpoint.dir", ckpt),
                                       ("the configuration file", source)])
    refuse_existing_output(out, "output.dir", overwrite=config.output.overwrite,
                           flag="--set output.overwrite=true")
    plan = Plan(config, config.estimator(), ProgressObserver(
        quiet=quiet, verbose=int(config.model.verbose or 0), sweep=bool(config.model.sweep)))
    plan.resume_from = _checkpoint(plan, resume)
    plan.progress.expect(max_iter=int(plan.estimator.max_iter), tol=float(plan.estimator.tol),
                         start_iteration=plan.resume_from)
    if data.generate is not None:
        with storage_errors("data.path", data.path):
            if not data.path.exists():
                if not getattr(data.path.fs, "local_file", False):
                    raise ConfigError(
                        f"data.generate writes local files only, and data.path is the URL "
                        f"{data.path.display}, where nothing is yet; generate the data "
                        "locally (daskgmm generate) and upload it, or remove data.generate")
                check_writable(data.path, "data.path")
    return plan


def _checkpoint(plan: Plan, resume: bool) -> int | None:
    """Check the checkpoint settings, set the estimator's ``checkpoint_dir``; the
    iteration a resumed fit continues after (None: from the start)."""
    from daskgmm.serialize.checkpoint import checkpoint_iteration

    config, ckpt = plan.config, plan.checkpoint
    if ckpt is None:
        if resume:
            raise ConfigError("--resume needs a checkpoint directory: set checkpoint.dir in "
                              "the configuration (or with --set checkpoint.dir=PATH)")
        return None
    refuse_overlap(ckpt, "checkpoint.dir", [("output.dir", plan.output),
                                            ("data.path", config.data.path)],
                   relations=("is", "lies inside"))
    check_writable(ckpt.join(_CHECKPOINT_FILE), "checkpoint.dir")
    directory = StoragePath(ckpt.url, ckpt.storage_options)
    plan.estimator.set_params(checkpoint_dir=directory)
    with storage_errors("checkpoint.dir", ckpt):
        present = ckpt.join(_CHECKPOINT_FILE).exists()
    iteration = checkpoint_iteration(directory) if present else None
    where = f" at iteration {iteration}" if iteration is not None else ""
    if present and not resume:
        raise ConfigError(f"a checkpoint from an earlier run exists in {ckpt.display}{where}; "
                          "pass --resume to continue it, or delete the directory")
    if resume:
        plan.progress.message(f"resuming from the checkpoint{where} in {ckpt.display}"
                              if present else f"no checkpoint in {ckpt.display} yet: "
                              "starting the fit from the beginning")
    return iteration


@contextlib.contextmanager
def _captured(plan: Plan) -> Iterator[None]:
    """Warnings raised inside the block become one-line messages (and report lines),
    with any secret masked."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        try:
            yield
        finally:
            for item in caught:
                plan.warn(f"{item.category.__name__}: {item.message}")


def open_inputs(plan: Plan) -> Any:
    """Generate the data if ``data.generate`` asks for it, then open the data and the
    weights (metadata only)."""
    from daskgmm.cli.inputs import open_input
    from daskgmm.diagnostics.observers import observe

    data = plan.config.data
    generated = None
    if data.generate is not None and not data.path.exists():
        from daskgmm.io.generate import generate_mixture

        spec = data.generate
        plan.progress.message(f"generating {data.path.display} ({spec.n_samples:,} x "
                              f"{spec.n_features} {spec.dtype}), since it does not exist")
        with storage_errors("data.path", data.path), observe(plan.progress):
            generated = generate_mixture(
                data.path.path, spec.n_samples, spec.n_features, spec.n_components,
                seed=spec.seed, chunk_rows=spec.chunk_rows, dtype=spec.dtype,
                separation=spec.separation, dataset=data.dataset or "X")
    with storage_errors("data.path", data.path), _captured(plan):
        inputs = open_input(data.path, dataset=data.dataset, chunk_rows=data.chunk_rows,
                            columns=data.columns, sample_weight=data.sample_weight,
                            allow_missing_chunks=data.allow_missing_chunks,
                            id_column=plan.config.output.id_column)
    if generated is not None:
        inputs.info["generated"] = generated
    return inputs


@dataclass
class Fitted:
    """What the fit step produced: the mixture the run writes, the selector of a sweep,
    the recorder of the passes, the memory monitor and the fit's seconds."""

    model: Any
    selector: Any
    recorder: FitRecorder
    monitor: Any
    seconds: float


def fit(plan: Plan, inputs: Any, client: Any, cluster: dict[str, Any]) -> Fitted:
    """Fit the run's estimator on the opened data, on the cluster."""
    from daskgmm.cli.cluster import worker_failures
    from daskgmm.cli.selection import describe_model
    from daskgmm.diagnostics.memory import MemoryMonitor
    from daskgmm.diagnostics.observers import observe

    X, estimator, ckpt = inputs.X, plan.estimator, plan.checkpoint
    warning = chunk_memory_warning(int(max(X.chunks[0])) * X.shape[1] * X.dtype.itemsize,
                                   int(max(X.chunks[0])),
                                   list(cluster["worker_memory_limits"].values()))
    if warning:
        plan.warn(warning)
    plan.progress.message(
        f"fitting {describe_model(plan.config)} to {X.shape[0]:,} rows x {X.shape[1]} "
        f"features{' (weighted)' if inputs.weights is not None else ''} in "
        f"{X.npartitions} chunks on a {cluster['kind']} cluster of {cluster['n_workers']} "
        "worker(s)")
    recorder = FitRecorder()
    checkpoints = storage_errors("checkpoint.dir", ckpt) if ckpt is not None \
        else contextlib.nullcontext()
    with MemoryMonitor(client) as monitor, worker_failures(cluster), _captured(plan), \
            observe(plan.progress, recorder), checkpoints:
        t0 = time.perf_counter()
        estimator.fit(X, sample_weight=inputs.weights)
        seconds = time.perf_counter() - t0
    best = getattr(estimator, "best_estimator_", None)
    return Fitted(best if best is not None else estimator,
                  estimator if best is not None else None, recorder, monitor, seconds)


@dataclass
class Written:
    """What the outputs step wrote and computed."""

    log_likelihood: float
    weight: float
    plots: list[str]
    labels: str | None
    printed_labels: Any
    seconds: float


def write_outputs(plan: Plan, fitted: Fitted, inputs: Any, out: Any) -> Written:
    """One pass over the data (log-likelihood, labels, responsibilities, the plot's
    sample), then the plots, the selection of a sweep and the model."""
    from daskgmm.cli.cluster import worker_failures
    from daskgmm.cli.outputs import LabelsTarget, output_pass, write_figure
    from daskgmm.cli.selection import write_selection
    from daskgmm.diagnostics.observers import observe
    from daskgmm.engine.passes import watched_compute

    config, gm, X = plan.config, fitted.model, inputs.X
    n = int(X.shape[0])
    t0 = time.perf_counter()
    labels = ("labels.parquet" if inputs.is_parquet else "labels.zarr") \
        if config.output.labels else None
    needed = 8 * n * ((1 if labels else 0) + (int(gm.n_components) if
                                              config.output.responsibilities else 0))
    space = free_space_warning(plan.output, "output.dir", needed)
    if space:
        plan.warn(space)
    rng = np.random.default_rng([config.model.random_state
                                 if isinstance(config.model.random_state, int) else 0, 7])
    sample = (np.sort(rng.choice(n, size=min(n, PLOT_SAMPLE_ROWS), replace=False))
              if config.output.plots else np.empty(0, dtype=np.int64))
    attributes = {"model": plan.output.join("model").display, "data": inputs.display,
                  "dataset": config.data.dataset}
    target = (LabelsTarget(out.join(labels), "parquet" if inputs.is_parquet else "zarr",
                           inputs.ids, config.output.id_column) if labels else None)
    with storage_errors("output.dir", plan.output), worker_failures(), _captured(plan), \
            observe(plan.progress):
        result = output_pass(gm, X, sample_idx=sample.astype(np.int64),
                             attributes=attributes, labels=target, weights=inputs.weights,
                             responsibilities=(out.join("responsibilities.zarr")
                                               if config.output.responsibilities else None))
        printed = (np.asarray(watched_compute(gm.predict(X))[0])
                   if n <= PRINT_LABELS_LIMIT else None)
    plots: list[str] = []
    name = config.name or plan.output.name
    if config.output.plots:
        from daskgmm.diagnostics.plots import clusters_figure, convergence_figure

        objective = ("variational lower bound per sample" if config.model.kind == "bayesian"
                     else "mean log-likelihood per sample")
        write_figure(out, "convergence.png", convergence_figure(
            gm.lower_bounds_, [fitted.recorder.seconds.get(i)
                               for i in range(1, gm.n_iter_ + 1)],
            title=f"{name}: convergence", objective=objective))
        rows = result["rows"]
        write_figure(out, "clusters.png", clusters_figure(
            rows, gm.predict(rows) if len(rows) else rows[:, 0], gm,
            title=(f"{name}: all {n:,} rows" if len(rows) == n
                   else f"{name}: {len(rows):,} random rows of {n:,}")))
        plots = ["convergence.png", "clusters.png"]
    if fitted.selector is not None:
        plots += write_selection(fitted.selector, out, plots=config.output.plots,
                                 title=f"{name}: model selection")
    gm.set_params(checkpoint_dir=None)  # a loaded model must not resume this run
    gm.save(out.join("model").url, storage_options=out.storage_options or None,
            extra_metadata={"data": {k: inputs.info.get(k) for k in
                                     ("path", "dataset", "shape", "dtype")},
                            "run": config.name})
    return Written(result["ll"], result["weight"], plots, labels, printed,
                   time.perf_counter() - t0)


def make_report(plan: Plan, fitted: Fitted, inputs: Any, written: Written,
                cluster: dict[str, Any]) -> RunReport:
    """The run's report, from what every step produced."""
    from daskgmm.cli.selection import selection_report
    from daskgmm.diagnostics.report import (
        FitSummary,
        information_criteria,
        iteration_table,
        memory_summary,
    )

    gm, recorder, config, estimator = fitted.model, fitted.recorder, plan.config, plan.estimator
    weighted = inputs.weights is not None
    marginal = getattr(estimator, "missing", "error") == "marginalize"
    # Rows with nothing observed are out of the likelihood and of n (the estimator's bic).
    empty = float(estimator.n_empty_rows_) if marginal else 0.0
    count = (written.weight if weighted else int(inputs.X.shape[0])) - empty
    mean = written.log_likelihood / count if count > 0 else float("nan")
    criteria = information_criteria(mean, count, gm._n_parameters())
    first = recorder.first_iteration or 1
    timing = {**recorder.timing(fitted.seconds),
              "outputs_seconds": round(written.seconds, 4),
              "total_seconds": round(time.perf_counter() - plan.started, 4)}
    return RunReport(
        name=config.name, created=plan.created,
        config_file=config.source if config.source != "<config>" else None,
        config=config.to_dict(redact=True), data=inputs.info,
        fit=FitSummary(
            estimator=type(gm).__name__, converged=bool(gm.converged_),
            n_iter=int(gm.n_iter_), lower_bound=float(gm.lower_bound_),
            resumed_from_iteration=first - 1,
            iterations=iteration_table(list(gm.lower_bounds_), recorder.seconds),
            passes=recorder.pass_counts(), weighted=weighted,
            sum_of_weights=written.weight if weighted else None, **criteria,
            data_reads=dict(estimator.passes_),
            n_empty_rows=empty if marginal else None,
            observed_fraction=float(estimator.observed_fraction_) if marginal else None,
            warnings=list(plan.warnings)),
        timing=timing, memory=memory_summary(fitted.monitor),
        cluster=cluster,
        outputs={"dir": plan.output.display, "model": "model", "report": "report.json",
                 "plots": written.plots, "labels": written.labels,
                 "responsibilities": ("responsibilities.zarr"
                                      if config.output.responsibilities else None),
                 **({"selection": "selection.json"} if fitted.selector is not None else {})},
        selection=selection_report(fitted.selector) if fitted.selector is not None else None)


def run_fit(config: RunConfig, *, quiet: bool = False, resume: bool = False,
            stdout: TextIO | None = None) -> RunReport:
    """Fit the mixture a run configuration describes and write every output; returns
    the :class:`~daskgmm.diagnostics.report.RunReport` written to ``report.json``. Ctrl-C
    raises :class:`RunInterrupted` saying where the last checkpoint is; every failure is a
    one-line :class:`~daskgmm.errors.DaskGMMError`."""
    from daskgmm.cli.cluster import connect
    from daskgmm.cli.outputs import write_json
    from daskgmm.io.storage import atomic_output_directory

    plan = preflight(config, resume=resume, quiet=quiet)
    try:
        with storage_errors("output.dir", plan.output), atomic_output_directory(
                plan.output, kind="run", overwrite=config.output.overwrite) as out:
            inputs = open_inputs(plan)
            with connect(config.cluster, log=plan.progress.message) as (client, cluster):
                fitted = fit(plan, inputs, client, cluster)
                written = write_outputs(plan, fitted, inputs, out)
            report = make_report(plan, fitted, inputs, written, cluster)
            write_json(out, "report.json", report.to_json())
    except KeyboardInterrupt as exc:
        if isinstance(exc, RunInterrupted):
            raise
        raise RunInterrupted(_interrupted(plan)) from None
    finally:
        plan.progress.close()
    _remove_checkpoint(plan.checkpoint)
    if stdout is not None:
        if fitted.selector is not None:
            from daskgmm.cli.selection import print_winner

            print_winner(fitted.selector, stdout)
        _print_result(plan, fitted.model, report, written, stdout)
    return report


def _interrupted(plan: Plan) -> str:
    from daskgmm.serialize.checkpoint import checkpoint_iteration

    ckpt = plan.checkpoint
    if ckpt is None:
        return ("interrupted; nothing was written, and there is no checkpoint to resume "
                "from (set checkpoint.dir to be able to resume)")
    iteration = checkpoint_iteration(StoragePath(ckpt.url, ckpt.storage_options))
    if iteration is None:
        return (f"interrupted before the first checkpoint was written to {ckpt.display}; "
                "nothing was written")
    source = plan.config.source
    command = f"daskgmm fit {source if source != '<config>' else 'CONFIG'} --resume"
    return (f"interrupted; the last checkpoint is at iteration {iteration} (in "
            f"{ckpt.display}): resume with `{command}`")


def _remove_checkpoint(ckpt: Location | None) -> None:
    """Delete the checkpoint of a run whose outputs are complete (and its directory,
    locally, when that leaves it empty)."""
    if ckpt is None:
        return
    with contextlib.suppress(FileNotFoundError):
        ckpt.fs.rm_file(ckpt.join(_CHECKPOINT_FILE).path)
    if getattr(ckpt.fs, "local_file", False):
        with contextlib.suppress(OSError):
            ckpt.fs.rmdir(ckpt.path)


def _print_result(plan: Plan, model: Any, report: RunReport, written: Written,
                  out: TextIO) -> None:
    """The fitted parameters, as scikit-learn's iris example prints them (a table of the
    components for a large model)."""
    from daskgmm.diagnostics.progress import format_reads

    n = int(report.data["shape"][0])
    mean = report.fit.mean_log_likelihood
    print(f"{'converged' if model.converged_ else 'did NOT converge'} after "
          f"{model.n_iter_} iterations; mean log-likelihood per sample of the final model "
          f"{f'{mean:.4f}' if mean is not None else 'not finite'}; "
          f"{format_reads(report.fit.data_reads)}", file=out)
    if report.fit.n_empty_rows is not None:
        empty_label = int(model.predict(np.full((1, model.n_features_in_), np.nan))[0])
        print(f"missing values: {report.fit.observed_fraction:.2%} of the values observed; "
              f"{report.fit.n_empty_rows:g} rows with nothing observed, left out of the "
              f"fit (their label: {empty_label}, the model's for a row without data)",
              file=out)
    with np.printoptions(precision=3, suppress=True):
        if written.printed_labels is not None:
            print("labels:\n", written.printed_labels, file=out)
        elif written.labels is not None:
            print(f"labels: {n:,} written to {plan.output.join(written.labels).display}",
                  file=out)
        else:
            print(f"labels: not printed for {n:,} samples (set output.labels: true to "
                  "write them to labels.zarr)", file=out)
        k, d = np.shape(model.means_)
        if k * d <= PRINT_PARAMETERS_LIMIT:
            for name in ("weights", "means", "covariances"):
                print(f"{name}:\n", getattr(model, name + "_"), file=out)
        else:
            print(f"{k} components of {d} features ({model.covariance_type} covariances); "
                  "the full parameters are in the model directory and report.json:",
                  file=out)
            # one line per component: index, weight, expected rows (weight x n), |mean|
            print(f"{'component':>9}  {'weight':>8}  {'rows (expected)':>15}  {'|mean|':>10}",
                  file=out)
            norms = np.linalg.norm(np.asarray(model.means_, dtype=np.float64), axis=1)
            for k, (w, norm) in enumerate(zip(np.asarray(model.weights_, dtype=np.float64),
                                              norms, strict=True)):
                print(f"{k:>9}  {w:>8.4f}  {round(w * n):>15,}  {norm:>10.4g}", file=out)
    print(f"report written to {plan.output.join('report.json').display}", file=out)
    out.flush()
