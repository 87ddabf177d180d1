"""The ``daskgmm`` command line.

::

    daskgmm fit CONFIG.yaml [--set key=value ...] [--quiet] [--resume]
    daskgmm predict --model DIR --data PATH [--dataset NAME] --output OUT.zarr [--proba]
                    [--overwrite] [--scheduler ADDRESS]
    daskgmm generate --n-samples N --n-features D --n-components K --output PATH [...]
    daskgmm info DIR
    daskgmm --version

Every user mistake (a bad configuration, a missing file, an existing output, a
scheduler that cannot be reached...) is reported as one ``daskgmm: error: ...`` line
(or the configuration error's list of problems) on stderr, with exit code 2 and no
traceback. Ctrl-C exits with code 130, SIGTERM with 143 (both after removing any
partial output). Anything else is a bug: it shows a traceback and
exits with code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import math
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
  daskgmm fit configs/iris.yaml
  daskgmm fit configs/iris.yaml --set model.covariance_type=diag --set output.dir=runs/diag
  daskgmm generate --n-samples 1000000 --n-features 8 --n-components 4 --output data/x.zarr
  daskgmm predict --model runs/iris --data sklearn:iris --output runs/iris-labels.zarr
  daskgmm info runs/iris

Run `daskgmm COMMAND --help` for the options of a command.
"""

_FIT_EPILOG = """\
examples:
  daskgmm fit configs/iris.yaml
  daskgmm fit configs/iris.yaml --set model.n_components=4 --set output.overwrite=true
  daskgmm fit configs/cluster.yaml --set cluster.address=tcp://10.0.0.5:8786 --resume

The output directory (output.dir) receives model/, report.json, convergence.png,
clusters.png and, when enabled, labels.zarr and responsibilities.zarr. It appears only
when the run has succeeded; an existing one is refused unless output.overwrite is true.
--set values are YAML (5 is a number, true a boolean, null nothing); relative paths
given with --set are relative to the current directory.
"""

_PREDICT_EPILOG = """\
examples:
  daskgmm predict --model runs/iris --data sklearn:iris --output iris-labels.zarr
  daskgmm predict --model runs/big/model --data data/big.zarr --dataset X \\
      --output runs/big/proba.zarr --proba --scheduler tcp://10.0.0.5:8786

The output is a Zarr array chunked like the data's rows: int32 labels of shape
(n_samples,), or float64 responsibilities of shape (n_samples, n_components) with
--proba. It is written by the Dask workers (so with --scheduler it must be on a file
system they share) into a temporary sibling and renamed into place when complete.
"""

_GENERATE_EPILOG = """\
examples:
  daskgmm generate --n-samples 100000 --n-features 4 --n-components 3 --output data/small.zarr
  daskgmm generate --n-samples 20000000 --n-features 16 --n-components 8 \\
      --output data/big.h5 --dtype float32 --chunk-rows 250000 --seed 1

The data array is called X; the true labels and parameters are stored next to it
(labels, true_weights, true_means, true_covariances). Memory use stays at a few blocks
of --chunk-rows rows, whatever --n-samples is.
"""

_INFO_EPILOG = """\
examples:
  daskgmm info runs/iris          (a `daskgmm fit` output directory)
  daskgmm info runs/iris/model    (a saved model directory)
"""


def _int_at_least(minimum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _separation(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
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
                         help="a saved model, or a `daskgmm fit` output directory")
    predict.add_argument("--data", required=True, metavar="PATH",
                         help="the samples: Zarr, HDF5, .npy or sklearn:NAME")
    predict.add_argument("--dataset", metavar="NAME", default=None,
                         help="the array inside an HDF5 file or Zarr group")
    predict.add_argument("--output", required=True, metavar="OUT.zarr",
                         help="the Zarr array to write")
    predict.add_argument("--proba", action="store_true",
                         help="write responsibilities (n_samples x n_components) instead "
                              "of labels")
    predict.add_argument("--overwrite", action="store_true",
                         help="replace an existing OUT.zarr")
    predict.add_argument("--scheduler", metavar="ADDRESS", default=None,
                         help="compute on this Dask scheduler (tcp://host:port, or a "
                              "scheduler file) instead of a local cluster")
    predict.add_argument("--chunk-rows", type=_int_at_least(1), default=None, metavar="R",
                         help="rows per chunk (default: the storage's chunking)")
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
    generate.add_argument("--chunk-rows", type=_int_at_least(1), default=100_000, metavar="R",
                          help="rows per storage chunk (default 100000)")
    generate.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    generate.add_argument("--separation", type=_separation, default=4.0, metavar="S",
                          help="smallest distance between two means, in standard "
                               "deviations (default 4)")
    generate.add_argument("--overwrite", action="store_true",
                          help="replace an existing dataset")
    generate.add_argument("--quiet", "-q", action="store_true",
                          help="no progress display on stderr")

    info = commands.add_parser(
        "info", help="describe a saved model",
        description="Describe a saved model (or the model of a `daskgmm fit` output "
                    "directory, with the highlights of its report).",
        epilog=_INFO_EPILOG, formatter_class=_Formatter)
    info.add_argument("dir", metavar="DIR", help="a model or fit output directory")
    info.add_argument("--json", action="store_true",
                      help="print one JSON object (for machines) instead of the summary")
    return parser


# ---------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------


def _cmd_fit(args: argparse.Namespace) -> int:
    from daskgmm.cli.config import load_config
    from daskgmm.cli.runner import run_fit

    config = load_config(args.config, args.overrides)
    run_fit(config, quiet=args.quiet, resume=args.resume, stdout=sys.stdout)
    return 0


def _scheduler_config(scheduler: str | None) -> Any:
    if scheduler is None:
        return None
    from daskgmm.cli.config import parse_config

    key = "address" if "://" in scheduler else "scheduler_file"
    raw = {"data": {"path": "-"}, "output": {"dir": "-"}, "cluster": {key: scheduler}}
    return parse_config(raw, "--scheduler").cluster


def _cmd_predict(args: argparse.Namespace) -> int:
    from daskgmm.cli.runner import run_predict

    summary = run_predict(args.model, args.data, args.dataset, args.output, args.proba,
                          _scheduler_config(args.scheduler), overwrite=args.overwrite,
                          chunk_rows=args.chunk_rows, quiet=args.quiet)
    shape = " x ".join(str(s) for s in summary["shape"])
    print(f"wrote {summary['content']} of shape {shape} in chunks of "
          f"{summary['chunks_rows']} rows to {summary['output']} "
          f"({summary['seconds']:.1f} s)")
    return 0


_GENERATE_SUFFIXES = (".zarr", ".h5", ".hdf5")
_MAX_CHUNK_BYTES = 2**31 - 2**20  # a storage chunk of blosc or HDF5 holds a bit under 2 GiB


def _cmd_generate(args: argparse.Namespace) -> int:
    from daskgmm.cli.guards import check_writable, refuse_overlap, write_errors
    from daskgmm.diagnostics.observers import observe
    from daskgmm.diagnostics.progress import ProgressObserver
    from daskgmm.errors import OutputExistsError, UsageError
    from daskgmm.io.generate import generate_mixture

    output = os.path.abspath(args.output)
    suffix = os.path.splitext(output.rstrip("/"))[1].lower()
    if suffix not in _GENERATE_SUFFIXES:
        raise UsageError(f"--output {args.output}: the format is chosen by the extension; "
                         "use a path ending in .zarr (Zarr store) or .h5/.hdf5 (HDF5)")
    chunk_rows = min(args.chunk_rows, args.n_samples)
    itemsize = 4 if args.dtype == "float32" else 8
    if chunk_rows * args.n_features * itemsize > _MAX_CHUNK_BYTES:
        raise UsageError(
            f"--chunk-rows {args.chunk_rows}: a chunk of {chunk_rows} rows x "
            f"{args.n_features} features is {chunk_rows * args.n_features * itemsize:,} "
            f"bytes, more than a storage chunk may hold ({_MAX_CHUNK_BYTES:,}); use fewer "
            "rows per chunk")
    refuse_overlap(output, "--output", [("the current directory", os.getcwd())],
                   relations=("is", "contains"))
    if os.path.lexists(output) and not args.overwrite:
        raise OutputExistsError(f"{output} already exists; pass --overwrite to replace it, "
                                "or choose another --output")
    check_writable(output, "--output")
    with write_errors(("--output", output)), \
            observe(ProgressObserver(quiet=args.quiet)):
        summary = generate_mixture(
            output, args.n_samples, args.n_features, args.n_components, seed=args.seed,
            chunk_rows=args.chunk_rows, dtype=args.dtype, separation=args.separation,
            overwrite=args.overwrite)
    shape = " x ".join(str(s) for s in summary["shape"])
    print(f"wrote {summary['path']} ({summary['format']}): {shape} {summary['dtype']} "
          f"in {summary['n_chunks']} chunks of {summary['chunk_rows']} rows, "
          f"{summary['n_components']} components, {summary['bytes'] / 2**20:.1f} MiB "
          f"({summary['bytes_on_disk'] / 2**20:.1f} MiB on disk), "
          f"{summary['seconds']:.1f} s")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from daskgmm.cli.info import describe, render_text

    summary = describe(args.dir)
    if args.json:
        import json

        print(json.dumps(summary, indent=2, allow_nan=False))
    else:
        print(render_text(summary))
    return 0


_COMMANDS = {"fit": _cmd_fit, "predict": _cmd_predict, "generate": _cmd_generate,
             "info": _cmd_info}


def _error(message: str) -> None:
    message = message.strip() or "failed"
    print(f"{_PROG}: error: {message}", file=sys.stderr, flush=True)


def _message(exc: BaseException) -> str:
    from daskgmm.errors import ConfigError

    text = str(exc).strip()
    if isinstance(exc, ConfigError):
        return text  # already one problem per line
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    return " ".join(text.split()) or type(exc).__name__


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
        ``daskgmm: error: ...``), 130 when interrupted. Internal errors propagate
        (a traceback, exit code 1).
    """
    from daskgmm.cli.runner import is_user_error

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
                raise
            gate.release("drop")
            _error(_message(exc))
            return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
