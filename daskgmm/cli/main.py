"""The ``daskgmm`` command line: ``fit``, ``predict``, ``generate``, ``info`` and
``example-config`` (``daskgmm COMMAND --help`` for each).

Every user mistake (a bad configuration, a missing file, an existing output, storage or
a scheduler that cannot be reached...) is one ``daskgmm: error: ...`` line on stderr
(or the configuration's list of problems), exit code 2, no traceback. Ctrl-C exits with
130, SIGTERM with 143, both after removing any partial output. Anything else is a bug:
its traceback (credentials masked) and exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = ["EXIT_INTERRUPTED", "EXIT_TERMINATED", "EXIT_USAGE", "build_parser", "main"]

EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_BROKEN_PIPE = 2, 130, 143, 141

_MAIN_EPILOG = """\
examples:
  daskgmm example-config > run.yaml       (then set data.path in run.yaml)
  daskgmm fit run.yaml
  daskgmm fit configs/iris.yaml --set model.covariance_type=diag --set output.dir=runs/diag
  daskgmm generate --n-samples 1000000 --n-features 8 --n-components 4 --output data/x.zarr
  daskgmm predict --model runs/iris --data sklearn:iris --output runs/iris-labels.zarr
  daskgmm info runs/iris
"""
_FIT_EPILOG = """\
examples:
  daskgmm example-config > run.yaml && daskgmm fit run.yaml --set data.path=x.npy
  daskgmm fit configs/iris.yaml --set model.n_components=4 --set output.overwrite=true
  daskgmm fit configs/cluster.yaml --set cluster.address=tcp://10.0.0.5:8786 --resume

output.dir receives model/, report.json, convergence.png, clusters.png and, when
enabled, labels.zarr and responsibilities.zarr. It appears only when the run has
succeeded; an existing one is refused unless output.overwrite is true, and even then
only one holding nothing but what daskgmm wrote is replaced. --set values are YAML (5 a
number, true a boolean, null nothing); their relative paths are from the current
directory.
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

The output is a Zarr array chunked like the data's rows: int64 labels (n_samples,), or
with --proba float64 responsibilities (n_samples, n_components); for Parquet data the
labels are a directory of Parquet files (one per input chunk, "label" next to
--id-column) unless --output ends in .zarr. The workers write it (with --scheduler, on
a file system they share or an object store); it appears with its marker only when
complete. Storage options are JSON objects of fsspec options, or @FILE (better for
secrets than a command line others can see); they are never printed. Credentials are
best left to the filesystem's own configuration (AWS_ACCESS_KEY_ID, ~/.aws/...).
"""
_GENERATE_EPILOG = """\
examples:
  daskgmm generate --n-samples 100000 --n-features 4 --n-components 3 --output data/small.zarr
  daskgmm generate --n-samples 20000000 --n-features 16 --n-components 8 \\
      --output data/big.h5 --dtype float32 --chunk-rows 250000 --seed 1

The data array is X; the true labels and parameters are stored next to it. Memory use
stays at a few blocks of rows whatever --n-samples is; the same --seed gives the same
rows whatever --chunk-rows is. A data set that cannot fit on the disk is refused.
"""
_INFO_EPILOG = """\
examples:
  daskgmm info runs/iris          (a `daskgmm fit` output directory)
  daskgmm info runs/iris/model    (its model: the run is shown too)
  daskgmm info s3://bucket/runs/x --storage-options @s3.json
"""


def _integer(minimum: int) -> Any:
    def integer(text: str) -> int:
        try:
            value = int(text) if len(text) <= 18 else None
        except ValueError:
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"must be an integer below 10^18, got {text!r}")
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return integer


def _storage_options(text: str) -> dict[str, Any]:
    """A JSON object, or ``@FILE`` holding one (never echoed: it may hold secrets)."""
    source = "the JSON"
    if text.startswith("@"):
        source = f"the file {text[1:]}"
        try:
            with open(os.path.expanduser(text[1:]), encoding="utf-8") as handle:
                text = handle.read(1 << 20)
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {source}: {exc.strerror or exc}") \
                from None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}, column "
            f"{exc.colno}); give an object such as '{{\"anon\": true}}'") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{source} must be a JSON object of filesystem "
                                         f"options, got a {type(value).__name__}")
    return value


def _columns(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected column names separated by commas, got "
                                         f"{text!r}")
    return names


def _separation(text: str) -> float:
    from daskgmm.io.generate import MAX_SEPARATION

    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_SEPARATION:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to {MAX_SEPARATION:g} "
                                         f"(standard deviations), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``daskgmm`` command and its sub-commands."""
    from daskgmm import __version__

    def command(name: str, help: str, description: str, epilog: str | None = None
                ) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help, description=description, epilog=epilog,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    parser = argparse.ArgumentParser(
        prog="daskgmm", epilog=_MAIN_EPILOG,
        description="Gaussian mixture models fitted by out-of-core EM on Dask arrays.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"daskgmm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    quiet = {"action": "store_true", "help": "no progress display on stderr"}

    fit = command("fit", "fit a mixture as a YAML run configuration describes",
                  "Fit a Gaussian mixture as a YAML run configuration describes, and write "
                  "the model, a report and plots to its output directory.", _FIT_EPILOG)
    fit.add_argument("config", metavar="CONFIG.yaml", help="the run configuration")
    fit.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a value, e.g. model.n_components=5 "
                                               "(repeatable, each key once)")
    fit.add_argument("--quiet", "-q", action="store_true", help="no progress or messages on "
                     "stderr (the results are still printed; warnings too)")
    fit.add_argument("--resume", action="store_true",
                     help="continue an interrupted fit from its checkpoint in checkpoint.dir")

    predict = command("predict", "label a data set with a fitted model",
                      "Write the label (or, with --proba, the responsibilities) of every "
                      "row of a data set under a fitted model.", _PREDICT_EPILOG)
    for flag, meta, text in (
            ("--model", "DIR", "a saved model, or a `daskgmm fit` output directory"),
            ("--data", "PATH", "the samples: Zarr, HDF5, .npy, Parquet, or sklearn:NAME"),
            ("--output", "OUT.zarr", "the Zarr array (Parquet data: directory) to write")):
        predict.add_argument(flag, required=True, metavar=meta, help=f"{text} (a path or URL)")
    predict.add_argument("--dataset", metavar="NAME", help="the array in an HDF5 file or "
                                                           "Zarr group")
    predict.add_argument("--proba", action="store_true", help="write responsibilities "
                         "(n_samples x n_components) instead of labels")
    predict.add_argument("--overwrite", action="store_true",
                         help="replace an existing output daskgmm wrote")
    predict.add_argument("--scheduler", metavar="ADDRESS", help="compute on this Dask "
                         "scheduler (tcp://host:port, or a scheduler file)")
    predict.add_argument("--chunk-rows", type=_integer(1), metavar="R", help="rows per chunk "
                         "(default: whole storage chunks of about 64 MiB)")
    predict.add_argument("--columns", type=_columns, action="append", metavar="A,B",
                         help="Parquet data: the feature columns (default: every numeric "
                              "column but --id-column)")
    predict.add_argument("--id-column", metavar="NAME",
                         help="Parquet data: a column written next to the labels")
    predict.add_argument("--allow-missing-chunks", action="store_true", help="accept a "
                         "Zarr/HDF5 store with chunks that were never written")
    predict.add_argument("--storage-options", type=_storage_options, metavar="JSON",
                         help="filesystem options of every URL (JSON or @FILE)")
    for name in ("data", "output", "model"):
        predict.add_argument(f"--{name}-storage-options", type=_storage_options,
                             metavar="JSON", help=f"filesystem options of --{name} only")
    predict.add_argument("--quiet", "-q", **quiet)

    generate = command("generate", "write a synthetic Gaussian-mixture data set",
                       "Write samples of a random Gaussian mixture to a Zarr store (.zarr) "
                       "or an HDF5 file (.h5), block by block.", _GENERATE_EPILOG)
    for flag, meta in (("--n-samples", "N"), ("--n-features", "D"), ("--n-components", "K")):
        generate.add_argument(flag, type=_integer(1), required=True, metavar=meta)
    generate.add_argument("--output", required=True, metavar="PATH",
                          help="ending in .zarr or .h5/.hdf5")
    generate.add_argument("--seed", type=_integer(0), default=0, metavar="S",
                          help="seed of everything random (default 0)")
    generate.add_argument("--chunk-rows", type=_integer(1), metavar="R",
                          help="rows per storage chunk (default: 64 MiB of rows)")
    generate.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    generate.add_argument("--separation", type=_separation, default=4.0, metavar="S",
                          help="the closest two means, in standard deviations (default 4)")
    generate.add_argument("--overwrite", action="store_true",
                          help="replace a data set daskgmm generated")
    generate.add_argument("--quiet", "-q", **quiet)

    info = command("info", "describe a saved model (and the run that made it)",
                   "Describe a saved model, and the run that wrote it when it is a "
                   "`daskgmm fit` output directory or its model/.", _INFO_EPILOG)
    info.add_argument("dir", metavar="DIR", help="a model or fit output directory (path or "
                                                 "URL)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.add_argument("--storage-options", type=_storage_options, metavar="JSON",
                      help="filesystem options of a URL (JSON or @FILE)")
    command("example-config", "print a complete, commented run configuration",
            "Print a run configuration with every key, its default and what it does; set "
            "data.path (and output.dir) and give it to `daskgmm fit`.")
    return parser


def _location(flag: str, text: str, options: dict | None) -> Any:
    from daskgmm.errors import UsageError
    from daskgmm.io.locations import Location

    try:
        return Location(text, options)
    except Exception as exc:
        raise UsageError(f"{flag} {text}: {exc}") from None


def _cmd_fit(args: argparse.Namespace) -> int:
    from daskgmm.cli.config import load_config
    from daskgmm.cli.fit import run_fit

    run_fit(load_config(args.config, args.overrides), quiet=args.quiet, resume=args.resume,
            stdout=sys.stdout)
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from daskgmm.cli.config import ClusterSection
    from daskgmm.cli.predict import PredictRequest, run_predict
    from daskgmm.errors import UsageError

    def where(name: str) -> Any:
        given = getattr(args, f"{name}_storage_options")
        return _location(f"--{name}", getattr(args, name),
                         given if given is not None else args.storage_options)

    cluster = None
    if args.scheduler is not None:  # an address, or a scheduler file
        key = "address" if "://" in args.scheduler else "scheduler_file"
        try:
            cluster = ClusterSection.model_validate({key: args.scheduler})
        except ValidationError as exc:
            detail = exc.errors()[0]
            raise UsageError("--scheduler: " + str((detail.get("ctx") or {}).get("detail")
                                                   or detail.get("msg"))) from None
    summary = run_predict(PredictRequest(
        model=where("model"), data=where("data"), output=where("output"),
        dataset=args.dataset, proba=args.proba, overwrite=args.overwrite,
        chunk_rows=args.chunk_rows, id_column=args.id_column, cluster=cluster,
        columns=[c for group in args.columns for c in group] if args.columns else None,
        allow_missing_chunks=args.allow_missing_chunks, quiet=args.quiet))
    what = ("a Parquet directory of one file per chunk" if summary["format"] == "parquet"
            else f"chunks of {summary['chunks_rows']} rows")
    print(f"wrote {summary['content']} of shape {' x '.join(map(str, summary['shape']))} in "
          f"{what} to {summary['output']} ({summary['seconds']:.1f} s)")
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from daskgmm.cli.guards import check_writable, refuse_overlap
    from daskgmm.diagnostics.observers import observe
    from daskgmm.diagnostics.progress import ProgressObserver
    from daskgmm.errors import OutputExistsError, UsageError
    from daskgmm.io.generate import MAX_CHUNK_BYTES, generate_mixture
    from daskgmm.io.locations import Location, storage_errors

    output = _location("--output", args.output, None)
    if not getattr(output.fs, "local_file", False):
        raise UsageError(f"--output {output.display}: generate writes local files; write "
                         "the data set locally and upload it")
    if os.path.splitext(output.path)[1].lower() not in (".zarr", ".h5", ".hdf5"):
        raise UsageError(f"--output {args.output}: the format is chosen by the extension; "
                         "use a path ending in .zarr (Zarr store) or .h5/.hdf5 (HDF5)")
    parameter_bytes = 3 * args.n_components * args.n_features**2 * 8  # drawn in memory
    if parameter_bytes > 2**30:
        raise UsageError(
            f"--n-features {args.n_features} with --n-components {args.n_components}: the "
            f"mixture's covariance matrices (and their factors) alone would take "
            f"{parameter_bytes / 2**30:,.1f} GiB of memory; use fewer features or components")
    rows, itemsize = min(args.chunk_rows or 1, args.n_samples), 4 if args.dtype == "float32" \
        else 8
    if rows * args.n_features * itemsize > MAX_CHUNK_BYTES:
        raise UsageError(f"--chunk-rows {args.chunk_rows}: a chunk of {rows} rows x "
                         f"{args.n_features} features is {rows * args.n_features * itemsize:,}"
                         " bytes, more than a storage chunk may hold (2 GiB); use fewer "
                         "rows per chunk")
    refuse_overlap(output, "--output", [("the current directory", Location(os.getcwd()))],
                   relations=("is", "contains"))
    if output.exists() and not args.overwrite:
        raise OutputExistsError(f"{output.display} already exists; pass --overwrite to "
                                "replace it, or choose another --output")
    check_writable(output, "--output")
    with storage_errors("--output", output), observe(ProgressObserver(quiet=args.quiet)):
        done = generate_mixture(output.path, args.n_samples, args.n_features,
                                args.n_components, seed=args.seed, chunk_rows=args.chunk_rows,
                                dtype=args.dtype, separation=args.separation,
                                overwrite=args.overwrite)
    print(f"wrote {done['path']} ({done['format']}): {' x '.join(map(str, done['shape']))} "
          f"{done['dtype']} in {done['n_chunks']} chunks of {done['chunk_rows']} rows, "
          f"{done['n_components']} components, {done['bytes'] / 2**20:.1f} MiB "
          f"({done['bytes_on_disk'] / 2**20:.1f} MiB on disk), {done['seconds']:.1f} s")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
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


class _Terminated(BaseException):
    """SIGTERM, as an exception, so that temporary outputs are cleaned up."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def _on_sigint(signum: int, frame: Any) -> None:
    from daskgmm.cli.cluster import quiet_library_logs

    quiet_library_logs()  # the run is ending: no tracebacks from the teardown
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals() -> Iterator[None]:
    """Inside the block SIGTERM unwinds the stack (``with`` blocks clean up) and Ctrl-C
    also silences the library loggers (unless this process ignores it)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {signal.SIGTERM: _on_sigterm}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        handlers[signal.SIGINT] = _on_sigint
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _error(exc: BaseException | str) -> None:
    """``daskgmm: error: ...`` on stderr, credentials masked."""
    from daskgmm.errors import ConfigError
    from daskgmm.io.locations import describe_failure, scrub_secrets

    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.filename}: {describe_failure(exc)}"
    if not isinstance(exc, ConfigError):  # (a configuration error has a line per problem)
        text = " ".join(text.split())
    print(f"daskgmm: error: {scrub_secrets(text) or type(exc).__name__}", file=sys.stderr,
          flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``daskgmm`` command line with ``argv`` (default ``sys.argv[1:]``); returns
    the exit code: 0, 2 (a user mistake, one line on stderr), 130 (Ctrl-C), 143
    (SIGTERM), 141 (stdout closed by its reader) or 1 (a bug, after its traceback with
    credentials masked)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # (while the command starts, before its handlers are in place)
        print("daskgmm: error: interrupted; nothing was written", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    import traceback

    from daskgmm.cli.guards import is_user_error
    from daskgmm.cli.log_gate import log_gate
    from daskgmm.io.locations import scrub_secrets

    try:
        args = build_parser().parse_args(None if argv is None else list(argv))
    except SystemExit as exc:  # --help, --version, usage errors (argparse's own codes)
        return int(exc.code) if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    if args.command in ("fit", "predict"):
        import distributed  # noqa: F401  (sets up its loggers, which the gate attaches to)

    with log_gate() as gate:
        try:
            with _signals():
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
        except BrokenPipeError:  # the reader of stdout went away (``| head``): stop quietly
            gate.release("drop")
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        except Exception as exc:
            if not is_user_error(exc):
                gate.release("full")
                print(scrub_secrets("".join(traceback.format_exception(exc))), end="",
                      file=sys.stderr, flush=True)
                return 1
            gate.release("drop")
            _error(exc)
            return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
