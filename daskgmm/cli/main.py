"""The ``daskgmm`` command line.

::

    daskgmm fit CONFIG.yaml [--set key=value ...] [--quiet] [--resume]
    daskgmm predict --model DIR --data PATH [--dataset NAME] --output OUT.zarr [--proba]
                    [--overwrite] [--scheduler ADDRESS] [--storage-options JSON]
                    [--columns A,B] [--id-column NAME]
    daskgmm generate --n-samples N --n-features D --n-components K --output PATH [...]
    daskgmm info DIR [--json] [--storage-options JSON]
    daskgmm example-config
    daskgmm --version

Every user mistake (a bad configuration, a missing file, an existing output, a
scheduler that cannot be reached...) is reported as one ``daskgmm: error: ...`` line
(or the configuration error's list of problems) on stderr, with exit code 2 and no
traceback. Ctrl-C exits with code 130, SIGTERM with 143 (both after removing any
partial output). Anything else is a bug: it shows a traceback (credentials masked) and
exits with code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["EXIT_INTERRUPTED", "EXIT_TERMINATED", "EXIT_USAGE", "build_parser", "main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
_PROG = "daskgmm"

_MAIN_EPILOG = """\
examples:
  daskgmm example-config > run.yaml       (then set data.path in run.yaml)
  daskgmm fit run.yaml
  daskgmm fit configs/iris.yaml           (in a clone of the repository)
  daskgmm fit configs/iris.yaml --set model.covariance_type=diag --set output.dir=runs/diag
  daskgmm generate --n-samples 1000000 --n-features 8 --n-components 4 --output data/x.zarr
  daskgmm predict --model runs/iris --data sklearn:iris --output runs/iris-labels.zarr
  daskgmm info runs/iris

Run `daskgmm COMMAND --help` for the options of a command.
"""

_FIT_EPILOG = """\
examples:
  daskgmm example-config > run.yaml && daskgmm fit run.yaml --set data.path=x.npy
  daskgmm fit configs/iris.yaml
  daskgmm fit configs/iris.yaml --set model.n_components=4 --set output.overwrite=true
  daskgmm fit configs/cluster.yaml --set cluster.address=tcp://10.0.0.5:8786 --resume

The output directory (output.dir) receives model/, report.json, convergence.png,
clusters.png and, when enabled, labels.zarr and responsibilities.zarr. It appears only
when the run has succeeded; an existing one is refused unless output.overwrite is true,
and even then only one holding nothing but what daskgmm wrote is replaced.
--set values are YAML (5 is a number, true a boolean, null nothing); relative paths
given with --set are relative to the current directory.
"""

_PREDICT_EPILOG = """\
examples:
  daskgmm predict --model runs/iris --data sklearn:iris --output iris-labels.zarr
  daskgmm predict --model runs/big/model --data data/big.zarr --dataset X \\
      --output runs/big/proba.zarr --proba --scheduler tcp://10.0.0.5:8786
  daskgmm predict --model s3://bucket/runs/x --data s3://bucket/data/x.zarr \\
      --output s3://bucket/runs/x-labels.zarr \\
      --storage-options '{"client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}'
  daskgmm predict --model runs/t --data tables/events/ --columns f1,f2,f3 \\
      --id-column event_id --output runs/t-labels

The output is a Zarr array chunked like the data's rows: int64 labels of shape
(n_samples,), or float64 responsibilities of shape (n_samples, n_components) with
--proba. For Parquet data the labels are a directory of Parquet files instead (one per
chunk of the input, a "label" column next to --id-column), unless --output ends in
.zarr. --model, --data and --output may be URLs (s3://, gs://, az://, http(s):// for
--data and --model ...). The output is written by the Dask workers (so with
--scheduler it must be on a file system they share, or an object store) into a
temporary sibling or prefix and appears, with its marker, only when complete.

Storage options are JSON objects of fsspec filesystem options, or @FILE to read the
JSON from a file (better for secrets than the command line, which other users of the
machine can see). Credentials are best left to the filesystem's own configuration
(for S3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ~/.aws/...).
They are never printed.
"""

_GENERATE_EPILOG = """\
examples:
  daskgmm generate --n-samples 100000 --n-features 4 --n-components 3 --output data/small.zarr
  daskgmm generate --n-samples 20000000 --n-features 16 --n-components 8 \\
      --output data/big.h5 --dtype float32 --chunk-rows 250000 --seed 1

The data array is called X; the true labels and parameters are stored next to it
(labels, true_weights, true_means, true_covariances). Memory use stays at a few blocks
of --chunk-rows rows, whatever --n-samples is. The default chunk is daskgmm's default
chunk size, 64 MiB of rows (1,048,576 rows of 8 float64 features). The same --seed
gives the same rows whatever --chunk-rows is.
"""

_INFO_EPILOG = """\
examples:
  daskgmm info runs/iris          (a `daskgmm fit` output directory)
  daskgmm info runs/iris/model    (its model: the run is shown too)
  daskgmm info s3://bucket/runs/x --storage-options @s3.json
"""


def _int_at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        if text.isdigit() and len(text) > 18:
            raise argparse.ArgumentTypeError(f"must be an integer below 10^18, got {text}")
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _storage_options(text: str) -> dict[str, Any]:
    """A JSON object, or ``@FILE`` holding one (the text is never echoed: it may hold
    secrets)."""
    import json

    source = "the JSON"
    if text.startswith("@"):
        source = f"the file {text[1:]}"
        try:
            with open(os.path.expanduser(text[1:]), encoding="utf-8") as handle:
                text = handle.read(1 << 20)
        except OSError as exc:
            raise argparse.ArgumentTypeError(
                f"cannot read {source}: {exc.strerror or exc}") from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}); give an object such as '{{\"anon\": true}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"{source} must be a JSON object of filesystem options, got a "
            f"{type(value).__name__}")
    return value


def _column_names(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"expected column names separated by commas, got {text!r}")
    return names


def _separation(text: str) -> float:
    from daskgmm.io.generate import MAX_SEPARATION

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 <= value <= MAX_SEPARATION:
        raise argparse.ArgumentTypeError(
            f"must be a number from 0 to {MAX_SEPARATION:g} (standard deviations), got "
            f"{text!r}")
    return value


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30)


def _version() -> str:
    from daskgmm import __version__

    return f"{_PROG} {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``daskgmm`` command (with its four sub-commands)."""
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Gaussian mixture models fitted by out-of-core EM on Dask arrays.",
        epilog=_MAIN_EPILOG, formatter_class=_Formatter)
    parser.add_argument("--version", action="version", version=_version())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    fit = commands.add_parser(
        "fit", help="fit a mixture as a YAML run configuration describes",
        description="Fit a Gaussian mixture as a YAML run configuration describes, and "
                    "write the model, a report and plots to its output directory.",
        epilog=_FIT_EPILOG, formatter_class=_Formatter)
    fit.add_argument("config", metavar="CONFIG.yaml", help="the run configuration")
    fit.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE",
                     help="override a configuration value, e.g. model.n_components=5 "
                          "(repeatable)")
    fit.add_argument("--quiet", "-q", action="store_true",
                     help="no progress display or messages on stderr (the results are "
                          "still printed)")
    fit.add_argument("--resume", action="store_true",
                     help="continue an interrupted fit from the checkpoint in "
                          "checkpoint.dir")

    predict = commands.add_parser(
        "predict", help="label a dataset with a fitted model",
        description="Write the label (or, with --proba, the responsibilities) of every "
                    "row of a dataset under a fitted model to a Zarr array.",
        epilog=_PREDICT_EPILOG, formatter_class=_Formatter)
    predict.add_argument("--model", required=True, metavar="DIR",
                         help="a saved model, or a `daskgmm fit` output directory (a "
                              "path or URL)")
    predict.add_argument("--data", required=True, metavar="PATH",
                         help="the samples: Zarr, HDF5, .npy, Parquet (a path or URL) or "
                              "sklearn:NAME")
    predict.add_argument("--dataset", metavar="NAME", default=None,
                         help="the array inside an HDF5 file or Zarr group")
    predict.add_argument("--output", required=True, metavar="OUT.zarr",
                         help="the Zarr array (or, for Parquet data, the Parquet "
                              "directory) to write, a path or URL")
    predict.add_argument("--proba", action="store_true",
                         help="write responsibilities (n_samples x n_components) instead "
                              "of labels")
    predict.add_argument("--overwrite", action="store_true",
                         help="replace an existing OUT.zarr")
    predict.add_argument("--scheduler", metavar="ADDRESS", default=None,
                         help="compute on this Dask scheduler (tcp://host:port, or a "
                              "scheduler file) instead of a local cluster")
    predict.add_argument("--chunk-rows", type=_int_at_least(1), default=None, metavar="R",
                         help="rows per chunk (default: whole storage chunks of about "
                              "64 MiB)")
    predict.add_argument("--columns", type=_column_names, action="append", default=None,
                         metavar="A,B",
                         help="Parquet data: the feature columns (default: every numeric "
                              "column except --id-column)")
    predict.add_argument("--id-column", metavar="NAME", default=None,
                         help="Parquet data: a column written next to the labels")
    predict.add_argument("--allow-missing-chunks", action="store_true",
                         help="accept a Zarr/HDF5 store with chunks that were never "
                              "written (written with write_empty_chunks=False)")
    predict.add_argument("--storage-options", type=_storage_options, default=None,
                         metavar="JSON",
                         help="filesystem options for every URL (--model, --data, "
                              "--output), as a JSON object or @FILE")
    for name in ("data", "output", "model"):
        predict.add_argument(f"--{name}-storage-options", type=_storage_options,
                             default=None, metavar="JSON",
                             help=f"filesystem options for --{name} only (instead of "
                                  "--storage-options)")
    predict.add_argument("--quiet", "-q", action="store_true",
                         help="no progress display on stderr")

    generate = commands.add_parser(
        "generate", help="write a synthetic Gaussian-mixture dataset",
        description="Write samples of a random Gaussian mixture to a Zarr store (.zarr) "
                    "or an HDF5 file (.h5), block by block.",
        epilog=_GENERATE_EPILOG, formatter_class=_Formatter)
    generate.add_argument("--n-samples", type=_int_at_least(1), required=True, metavar="N")
    generate.add_argument("--n-features", type=_int_at_least(1), required=True, metavar="D")
    generate.add_argument("--n-components", type=_int_at_least(1), required=True,
                          metavar="K")
    generate.add_argument("--output", required=True, metavar="PATH",
                          help="ending in .zarr or .h5/.hdf5")
    generate.add_argument("--seed", type=_int_at_least(0), default=0, metavar="S",
                          help="seed of everything random (default 0)")
    generate.add_argument("--chunk-rows", type=_int_at_least(1), default=None, metavar="R",
                          help="rows per storage chunk (default: 64 MiB of rows, daskgmm's "
                               "default chunk size)")
    generate.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    generate.add_argument("--separation", type=_separation, default=4.0, metavar="S",
                          help="smallest distance between two means, in standard "
                               "deviations (default 4)")
    generate.add_argument("--overwrite", action="store_true",
                          help="replace an existing dataset")
    generate.add_argument("--quiet", "-q", action="store_true",
                          help="no progress display on stderr")

    info = commands.add_parser(
        "info", help="describe a saved model (and the run that made it)",
        description="Describe a saved model, and the run that wrote it when it is a "
                    "`daskgmm fit` output directory or its model/.",
        epilog=_INFO_EPILOG, formatter_class=_Formatter)
    info.add_argument("dir", metavar="DIR", help="a model or fit output directory (a path "
                                                 "or URL)")
    info.add_argument("--json", action="store_true",
                      help="print one JSON object (for machines) instead of the summary")
    info.add_argument("--storage-options", type=_storage_options, default=None,
                      metavar="JSON", help="filesystem options of a URL, as JSON or @FILE")
    commands.add_parser(
        "example-config", help="print a complete, commented run configuration",
        description="Print a run configuration with every key, its default and what it "
                    "does; set data.path (and output.dir) and give it to `daskgmm fit`.",
        formatter_class=_Formatter)
    return parser


# ---------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------


def _cmd_fit(args: argparse.Namespace) -> int:
    from daskgmm.cli.config import load_config
    from daskgmm.cli.fit import run_fit

    run_fit(load_config(args.config, args.overrides), quiet=args.quiet, resume=args.resume,
            stdout=sys.stdout)
    return 0


def _location(flag: str, text: str, options: dict | None) -> Any:
    from daskgmm.errors import UsageError
    from daskgmm.io.locations import Location

    try:
        return Location(text, options)
    except Exception as exc:
        raise UsageError(f"{flag} {text}: {exc}") from None


def _cluster(scheduler: str | None) -> Any:
    """The cluster section of ``--scheduler`` (an address or a scheduler file)."""
    if scheduler is None:
        return None
    from pydantic import ValidationError

    from daskgmm.cli.config import ClusterSection
    from daskgmm.errors import UsageError

    key = "address" if "://" in scheduler else "scheduler_file"
    try:
        return ClusterSection.model_validate({key: scheduler})
    except ValidationError as exc:
        detail = exc.errors()[0]
        message = (detail.get("ctx") or {}).get("detail") or detail.get("msg")
        raise UsageError(f"--scheduler: {message}") from None


def _cmd_predict(args: argparse.Namespace) -> int:
    from daskgmm.cli.predict import PredictRequest, run_predict

    def options(name: str) -> dict | None:
        given = getattr(args, f"{name}_storage_options")
        return given if given is not None else args.storage_options

    columns = [c for group in args.columns for c in group] if args.columns else None
    summary = run_predict(PredictRequest(
        model=_location("--model", args.model, options("model")),
        data=_location("--data", args.data, options("data")),
        output=_location("--output", args.output, options("output")),
        dataset=args.dataset, proba=args.proba, overwrite=args.overwrite,
        chunk_rows=args.chunk_rows, columns=columns, id_column=args.id_column,
        allow_missing_chunks=args.allow_missing_chunks, cluster=_cluster(args.scheduler),
        quiet=args.quiet))
    shape = " x ".join(str(s) for s in summary["shape"])
    what = ("a Parquet directory of one file per chunk" if summary["format"] == "parquet"
            else f"chunks of {summary['chunks_rows']} rows")
    print(f"wrote {summary['content']} of shape {shape} in {what} to {summary['output']} "
          f"({summary['seconds']:.1f} s)")
    return 0


_GENERATE_SUFFIXES = (".zarr", ".h5", ".hdf5")
_MAX_PARAMETER_BYTES = 2**30  # the true parameters are drawn in memory


def _cmd_generate(args: argparse.Namespace) -> int:
    from daskgmm.cli.guards import check_writable, refuse_overlap
    from daskgmm.diagnostics.observers import observe
    from daskgmm.diagnostics.progress import ProgressObserver
    from daskgmm.errors import OutputExistsError, UsageError
    from daskgmm.io.generate import generate_mixture
    from daskgmm.io.locations import Location, storage_errors

    output = _location("--output", args.output, None)
    if not getattr(output.fs, "local_file", False):
        raise UsageError(f"--output {output.display}: generate writes local files; write "
                         "the data set locally and upload it")
    if os.path.splitext(output.path)[1].lower() not in _GENERATE_SUFFIXES:
        raise UsageError(f"--output {args.output}: the format is chosen by the extension; "
                         "use a path ending in .zarr (Zarr store) or .h5/.hdf5 (HDF5)")
    parameter_bytes = 3 * args.n_components * args.n_features**2 * 8
    if parameter_bytes > _MAX_PARAMETER_BYTES:
        raise UsageError(
            f"--n-features {args.n_features} with --n-components {args.n_components}: the "
            f"mixture's covariance matrices (and their factors) alone would take "
            f"{parameter_bytes / 2**30:,.1f} GiB of memory; use fewer features or "
            "components")
    itemsize = 4 if args.dtype == "float32" else 8
    rows = min(args.chunk_rows or 2**62, args.n_samples)
    if args.chunk_rows and rows * args.n_features * itemsize > 2**31 - 2**20:
        raise UsageError(
            f"--chunk-rows {args.chunk_rows}: a chunk of {rows} rows x {args.n_features} "
            f"features is {rows * args.n_features * itemsize:,} bytes, more than a storage "
            "chunk may hold (2 GiB); use fewer rows per chunk")
    refuse_overlap(output, "--output", [("the current directory", Location(os.getcwd()))],
                   relations=("is", "contains"))
    if output.exists() and not args.overwrite:
        raise OutputExistsError(f"{output.display} already exists; pass --overwrite to "
                                "replace it, or choose another --output")
    check_writable(output, "--output")
    with storage_errors("--output", output), observe(ProgressObserver(quiet=args.quiet)):
        summary = generate_mixture(
            output.path, args.n_samples, args.n_features, args.n_components,
            seed=args.seed, chunk_rows=args.chunk_rows, dtype=args.dtype,
            separation=args.separation, overwrite=args.overwrite)
    print(f"wrote {summary['path']} ({summary['format']}): "
          f"{' x '.join(map(str, summary['shape']))} {summary['dtype']} in "
          f"{summary['n_chunks']} chunks of {summary['chunk_rows']} rows, "
          f"{summary['n_components']} components, {summary['bytes'] / 2**20:.1f} MiB "
          f"({summary['bytes_on_disk'] / 2**20:.1f} MiB on disk), "
          f"{summary['seconds']:.1f} s")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from daskgmm.cli.info import describe, render_text

    summary = describe(_location("DIR", args.dir, args.storage_options))
    print(json.dumps(summary, indent=2, allow_nan=False) if args.json
          else render_text(summary))
    return 0


def _cmd_example_config(args: argparse.Namespace) -> int:
    from importlib.resources import files

    sys.stdout.write(files("daskgmm.cli").joinpath("example-config.yaml").read_text("utf-8"))
    return 0


_COMMANDS = {"fit": _cmd_fit, "predict": _cmd_predict, "generate": _cmd_generate,
             "info": _cmd_info, "example-config": _cmd_example_config}


def _error(message: str) -> None:
    message = message.strip() or "failed"
    print(f"{_PROG}: error: {message}", file=sys.stderr, flush=True)


def _message(exc: BaseException) -> str:
    from daskgmm.errors import ConfigError
    from daskgmm.io.locations import describe_failure, scrub_secrets

    text = str(exc).strip()
    if isinstance(exc, ConfigError):
        return scrub_secrets(text)  # already one problem per line
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {describe_failure(exc)}"
    return scrub_secrets(" ".join(text.split())) or type(exc).__name__


def _traceback(exc: BaseException) -> None:
    """A bug's traceback, with every credential masked."""
    import traceback

    from daskgmm.io.locations import scrub_secrets

    text = "".join(traceback.format_exception(exc))
    print(scrub_secrets(text), end="", file=sys.stderr, flush=True)


class _Terminated(BaseException):
    """SIGTERM, turned into an exception so that temporary outputs are cleaned up."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Make SIGTERM unwind the stack (``with`` blocks clean up) inside the block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _on_sigint(signum: int, frame: Any) -> None:
    from daskgmm.cli.cluster import quiet_library_logs

    quiet_library_logs()  # the run is ending: no tracebacks from the teardown
    raise KeyboardInterrupt


@contextlib.contextmanager
def _sigint_quiets() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt as usual, and silences the library loggers."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``daskgmm`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (without the program name); ``sys.argv[1:]`` by default.

    Returns
    -------
    int
        The exit code: 0 on success, 2 for a user mistake (reported on stderr as
        ``daskgmm: error: ...``), 130 when interrupted, 1 for a bug (after its
        traceback, credentials masked).
    """
    from daskgmm.cli.guards import is_user_error

    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version, usage errors (argparse's own exit codes)
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    from daskgmm.cli.log_gate import log_gate

    if args.command in ("fit", "predict"):
        import distributed  # noqa: F401  (sets up its loggers, which the gate attaches to)

    with log_gate() as gate:
        try:
            with _sigterm_raises(), _sigint_quiets():
                code = _COMMANDS[args.command](args)
            gate.release("summary")
            return code
        except KeyboardInterrupt as exc:
            gate.release("drop")
            _error(getattr(exc, "message", None) or "interrupted; nothing was written")
            return EXIT_INTERRUPTED
        except _Terminated:
            gate.release("drop")
            _error("terminated")
            return EXIT_TERMINATED
        except Exception as exc:
            if not is_user_error(exc):
                gate.release("full")
                _traceback(exc)
                return 1
            gate.release("drop")
            _error(_message(exc))
            return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
