"""Run configurations for ``daskgmm fit CONFIG.yaml [--set key=value ...]``.

A run configuration is a YAML file with these sections (only ``data`` and ``output`` are
required; the others have defaults)::

    name: iris-full            # optional run name
    data:                      # where the samples are
      path: ../data/iris.npy
    model:                     # every GaussianMixture parameter
      n_components: 3
    cluster:                   # a local cluster, or the address of an existing one
      n_workers: 2
    output:                    # where results go
      dir: ../runs/iris
    checkpoint:                # optional EM checkpoints
      dir: null
    selection:                 # how a sweep (several n_components or types) chooses
      criterion: bic

The file is read with :func:`yaml.safe_load` and validated with pydantic models that
forbid unknown keys. Every user mistake -- a missing file, bad YAML, an unknown or
misspelt key, a value of the wrong type or out of range, a malformed ``--set`` override --
raises a single :class:`~daskgmm.errors.ConfigError` listing every problem, one per line,
each naming the dotted key path::

    configs/x.yaml: 2 problems:
      model.n_components: must be >= 1, got 0
      model.n_componets: unknown key (did you mean 'n_components'?)

Paths
-----
Relative paths in ``data.path``, ``output.dir``, ``checkpoint.dir``,
``cluster.scheduler_file`` and ``cluster.tls.*_file`` are resolved against the directory
of the config file (so a config works wherever it is run from), and ``~`` is expanded.
Absolute paths and URLs (``s3://bucket/x.zarr``) are kept as they are. Path values given
as ``--set`` overrides to :func:`load_config` are resolved against the current working
directory instead, as a shell user would expect. Only the TLS files must exist when the
configuration is validated; the data is checked when it is opened.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    Strict,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from daskgmm.cli.yaml_input import load_yaml
from daskgmm.errors import ConfigError

__all__ = [
    "MIN_MEMORY_LIMIT",
    "AdaptConfig",
    "CheckpointConfig",
    "ClusterConfig",
    "DataConfig",
    "FactoryConfig",
    "GenerateConfig",
    "ModelConfig",
    "OutputConfig",
    "RunConfig",
    "SampleWeightConfig",
    "SelectionConfig",
    "TLSConfig",
    "apply_overrides",
    "load_config",
    "parse_config",
]

# Error type of a model-level check; its context carries ``problems``, a list of
# ``(field name, message)`` pairs that are reported as ``section.field: message``.
_PROBLEMS = "daskgmm_problems"
# Error types whose message is complete (it already says what was given).
_COMPLETE = "daskgmm_complete"

# URLs (s3://...) and built-in example sources (sklearn:iris) are not file paths.
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://|sklearn:)")
_ADDRESS_SCHEMES = ("tcp", "tls", "ucx")
_ADDRESS_RE = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})$"
)
_RANDOM_STATE_MAX = 2**32 - 1

# Keys holding filesystem paths (resolved against the config file's directory).
_PATH_KEYS = frozenset({
    ("data", "path"),
    ("data", "sample_weight"),
    ("data", "sample_weight", "path"),
    ("output", "dir"),
    ("checkpoint", "dir"),
    ("cluster", "scheduler_file"),
    ("cluster", "tls", "ca_file"),
    ("cluster", "tls", "cert_file"),
    ("cluster", "tls", "key_file"),
})


# ---------------------------------------------------------------------------------------
# Field types
# ---------------------------------------------------------------------------------------


def _fmt(value: Any, limit: int = 60) -> str:
    """Show a user-given value in an error message (YAML spelling for bools and null),
    with bounded work whatever the value's size (see :func:`model_schema.fmt`)."""
    from daskgmm.cli.model_schema import fmt

    return fmt(value, limit)


def _complete(message: str, value: Any) -> PydanticCustomError:
    """An error whose message is final: ``'{message}, got {value}'``."""
    return PydanticCustomError(_COMPLETE, "{detail}", {"detail": f"{message}, got {_fmt(value)}"})


def _reject_bool_number(value: Any) -> Any:
    """Refuse booleans where a number is expected (pydantic would read true as 1)."""
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context if isinstance(info.context, Mapping) else {}
    base = context.get("base_dir")
    return Path(base) if base is not None else Path.cwd()


def _resolve_path(value: str, info: ValidationInfo) -> str:
    """Make ``value`` absolute against the config file's directory (URLs stay)."""
    if _URL_RE.match(value):
        return value
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = _base_dir(info) / path
    return os.path.normpath(path)


def _must_be_file(value: str) -> str:
    if not os.path.exists(value):
        raise PydanticCustomError(_COMPLETE, "{detail}", {"detail": f"file not found: {value}"})
    if not os.path.isfile(value):
        raise PydanticCustomError(_COMPLETE, "{detail}", {"detail": f"not a file: {value}"})
    return value


MIN_MEMORY_LIMIT = 256 * 2**20
"""The smallest ``cluster.memory_limit`` accepted (bytes): an idle Dask worker process
uses 60-100 MiB before it holds any data and pauses at 80% of its limit, so a smaller
limit leaves a worker paused, waiting for memory that never frees."""


def _check_memory_limit(value: Any) -> str | int:
    """Accept ``'auto'``, a dask byte string (``'2GiB'``, ``'500MB'``) or bytes (0 = none),
    of at least :data:`MIN_MEMORY_LIMIT`."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _complete("must be 'auto', a size such as '2GiB' or '500MB', or a number of "
                        "bytes", value)
    if isinstance(value, int):
        if value < 0:
            raise _complete("must be >= 0 bytes (0 means no limit)", value)
        n_bytes = value
    elif value.strip().lower() == "auto":
        return "auto"
    else:
        from dask.utils import parse_bytes

        try:
            n_bytes = parse_bytes(value)
        except (ValueError, KeyError, TypeError):
            n_bytes = None
        if not value.strip() or n_bytes is None or n_bytes <= 0:
            raise _complete("must be 'auto' or a size such as '2GiB' or '500MB'", value)
    if 0 < n_bytes < MIN_MEMORY_LIMIT:
        raise _complete(
            f"must be at least {MIN_MEMORY_LIMIT // 2**20} MiB per worker (or 0 for no "
            "limit): an idle Dask worker uses 60-100 MiB and pauses at 80% of its "
            f"limit, so {n_bytes / 2**20:.0f} MiB would leave it paused with no room "
            "for data", value)
    return value


def _check_address(value: str) -> str:
    """``scheme://host:port`` with scheme tcp, tls or ucx."""
    scheme = value.split("://", 1)[0].lower() if "://" in value else None
    if scheme == "inproc":
        raise _complete(
            "inproc:// addresses exist only inside the Python process that created "
            "them, so a run cannot connect to one: give the tcp:// or tls:// address of "
            "a running scheduler, or leave cluster.address null for a local cluster",
            value)
    match = _ADDRESS_RE.match(value)
    if scheme not in _ADDRESS_SCHEMES or match is None or not 0 < int(match["port"]) < 65536:
        raise _complete(
            "must look like scheme://host:port with scheme "
            + ", ".join(_ADDRESS_SCHEMES)
            + " (e.g. 'tcp://127.0.0.1:8786')",
            value,
        )
    return value


_LOOPBACK = ("", "127.0.0.1", "localhost", "::1", "[::1]")


def _check_dashboard(value: Any) -> str | None:
    """``:PORT``, ``PORT`` or ``127.0.0.1:PORT`` (loopback only), or None."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = f":{value}"
    if not isinstance(value, str):
        raise _complete("must be ':PORT' (e.g. ':8787', or ':0' for a free port) or null",
                        value)
    host, sep, port = value.strip().rpartition(":")
    if not sep:
        host, port = "", value.strip()
    if not port.isdigit() or not 0 <= int(port) < 65536:
        raise _complete("must be ':PORT' (e.g. ':8787', or ':0' for a free port) or null",
                        value)
    if host not in _LOOPBACK:
        raise _complete(
            "the embedded cluster's dashboard serves worker pages and logs without "
            "authentication, so it listens on 127.0.0.1 only: give ':PORT' or "
            "'127.0.0.1:PORT' and reach it from elsewhere through an SSH tunnel", value)
    return value


StrictIntType = Annotated[int, Strict()]
"""An integer; true/false, 3.0 and '3' are refused."""

FloatType = Annotated[float, BeforeValidator(_reject_bool_number), Field(allow_inf_nan=False)]
"""A finite number. Numeric strings are accepted because PyYAML reads ``1e-3`` as a
string (YAML 1.1 needs a dot: ``1.0e-3``)."""

NonEmptyStr = Annotated[str, Field(min_length=1)]
PathStr = Annotated[str, Field(min_length=1), AfterValidator(_resolve_path)]
ExistingFile = Annotated[PathStr, AfterValidator(_must_be_file)]


def _check_storage_options(value: Any) -> dict[str, Any] | None:
    """A mapping with string keys (its values go to the filesystem as they are)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise PydanticCustomError(
            _COMPLETE, "{detail}",
            {"detail": "must be a mapping of filesystem options (e.g. {anon: true} or "
                       "{client_kwargs: {endpoint_url: 'http://...'}}), got a "
                       f"{type(value).__name__}"})
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise PydanticCustomError(_COMPLETE, "{detail}",
                                  {"detail": "keys must be strings"})
    return dict(value)


StorageOptions = Annotated[dict[str, Any] | None, PlainValidator(_check_storage_options)]
"""``storage_options`` of an fsspec filesystem: a mapping, or None. Its values are never
shown in messages (they may hold credentials)."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _raise_problems(problems: list[tuple[str, str]]) -> None:
    if problems:
        raise PydanticCustomError(
            _PROBLEMS, "{summary}",
            {"summary": "; ".join(f"{_key(k if isinstance(k, tuple) else (k,))}: {m}"
                                  for k, m in problems),
             "problems": problems},
        )


# ---------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------


class GenerateConfig(_Section):
    """``data.generate``: write a synthetic mixture to ``data.path`` if it is missing.

    The same settings as ``daskgmm generate`` (see :func:`daskgmm.generate_mixture`);
    ``chunk_rows`` defaults (null) to the rows of
    :data:`daskgmm.io.chunking.DEFAULT_CHUNK_BYTES` (64 MiB).
    """

    n_samples: Annotated[StrictIntType, Field(ge=1)]
    n_features: Annotated[StrictIntType, Field(ge=1)]
    n_components: Annotated[StrictIntType, Field(ge=1)]
    seed: Annotated[StrictIntType, Field(ge=0)] = 0
    chunk_rows: Annotated[StrictIntType, Field(ge=1)] | None = None
    dtype: Literal["float64", "float32"] = "float64"
    separation: Annotated[FloatType, Field(gt=0)] = 4.0


def _weight_shorthand(value: Any) -> Any:
    """``sample_weight: PATH`` is ``sample_weight: {path: PATH}``."""
    return {"path": value} if isinstance(value, str) else value


class SampleWeightConfig(_Section):
    """``data.sample_weight``: one weight per row of the data (``fit(X, sample_weight=)``).

    Four forms::

        sample_weight: weights.npy          # a file of its own (shorthand for path:)
        sample_weight: {path: w.h5, dataset: w}   # an array in another Zarr/HDF5 file
        sample_weight: {dataset: w}         # an array of the data's own Zarr/HDF5 store
        sample_weight: {column: w}          # a column of the data's own Parquet table
                                            # (or of path:, another Parquet table)

    The weights are a 1-D array (or one column) with as many rows as the data; they
    are read lazily, chunked like the data. With ``column`` and no ``data.columns``,
    the weight column is not used as a feature.

    Attributes
    ----------
    path : str or None
        A ``.npy`` file, HDF5 file, Zarr store or Parquet table, local or a URL; None:
        the data's own ``data.path``.
    dataset : str or None
        The array inside a Zarr group or HDF5 file.
    column : str or None
        The column of a Parquet table.
    storage_options : dict or None
        Filesystem options of ``path`` (default: ``data.storage_options``).
    """

    path: PathStr | None = None
    dataset: NonEmptyStr | None = None
    column: NonEmptyStr | None = None
    storage_options: StorageOptions = None

    @model_validator(mode="after")
    def _one_form(self) -> SampleWeightConfig:
        problems = []
        if self.column is not None and self.dataset is not None:
            problems.append(("column", "cannot be given together with dataset (a column "
                                       "is for Parquet tables, a dataset for Zarr/HDF5)"))
        if self.path is None and self.dataset is None and self.column is None:
            problems.append(("path", "give path (a file of weights), dataset (an array of "
                                     "the data's store) or column (a column of the data's "
                                     "Parquet table)"))
        _raise_problems(problems)
        return self


class DataConfig(_Section):
    """``data``: the samples to fit.

    Attributes
    ----------
    path : str
        A ``.npy`` file, an HDF5 file, a Zarr store, a Parquet file or directory of
        Parquet files, local or a URL (``s3://``, ``gs://``, ``az://``, ``http(s)://``
        ...). Need not exist when the configuration is validated.
    dataset : str or None
        The dataset (HDF5) or array (Zarr group) inside ``path``.
    chunk_rows : int >= 1 or None
        Rows per Dask chunk; ``None`` keeps the storage chunking.
    columns : list of str or None
        Parquet input: the feature columns (default: every integer or float column,
        except ``output.id_column`` and a ``sample_weight.column``).
    storage_options : dict or None
        Options of the URL's filesystem (endpoint, credentials, ``anon: true`` ...).
        Never written to the report or shown in messages; credentials are better left
        to each filesystem's usual environment variables or configuration files.
    allow_missing_chunks : bool
        Accept a Zarr or HDF5 store whose chunks are fewer than its chunk grid (a store
        written with ``write_empty_chunks=False``); refused by default.
    sample_weight : SampleWeightConfig or None
        Weights of the rows.
    generate : GenerateConfig or None
        If set and ``path`` does not exist, a synthetic mixture is written there first
        (local paths only).
    """

    path: PathStr
    dataset: NonEmptyStr | None = None
    chunk_rows: Annotated[StrictIntType, Field(ge=1)] | None = None
    columns: Annotated[list[NonEmptyStr], Field(min_length=1)] | None = None
    storage_options: StorageOptions = None
    allow_missing_chunks: Annotated[bool, Strict()] = False
    sample_weight: Annotated[SampleWeightConfig | None,
                             BeforeValidator(_weight_shorthand)] = None
    generate: GenerateConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DataConfig:
        problems = []
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            problems.append(("columns", f"has duplicates, got {_fmt(self.columns)}"))
        weight = self.sample_weight
        if (weight is not None and weight.column is not None and self.columns is not None
                and weight.path is None and weight.column in self.columns):
            problems.append(("sample_weight.column", f"{weight.column!r} is also one of "
                                                     "data.columns (a feature)"))
        _raise_problems(problems)
        return self


class ModelConfig(_Section):
    """``model``: the estimator and its parameters.

    ``kind`` chooses the estimator (``gaussian``: :class:`daskgmm.GaussianMixture`;
    ``bayesian``: ``daskgmm.BayesianGaussianMixture`` when this daskgmm has it). Every
    other key is a parameter of that estimator: the keys, their defaults and their
    constraints come from the estimator itself (``get_params()`` and
    ``_parameter_constraints``; see :mod:`daskgmm.cli.model_schema`), so the section
    follows the estimator without edits here. ``weights_init``, ``means_init`` and
    ``precisions_init`` are nested lists. ``n_components`` may be a list or
    ``{min, max}`` and ``covariance_type`` a list (a sweep, for model selection).

    Parameters are read as attributes (``config.model.n_components``).
    """

    model_config = ConfigDict(extra="allow")

    kind: str = "gaussian"

    @model_validator(mode="before")
    @classmethod
    def _against_the_estimator(cls, raw: Any) -> Any:
        from daskgmm.cli.model_schema import _Problems, validate_model_section

        if raw is None:
            raw = {}
        if not isinstance(raw, Mapping):
            return raw  # pydantic reports "must be a mapping of keys"
        try:
            return validate_model_section(raw)
        except _Problems as exc:
            _raise_problems(list(exc.problems))
        return raw  # pragma: no cover - _raise_problems raised

    @property
    def params(self) -> dict[str, Any]:
        """Every estimator parameter of this section (sweeps as given)."""
        return dict(self.__pydantic_extra__ or {})

    @property
    def sweep(self) -> dict[str, list[Any]]:
        """The swept parameters and their values (empty for a single model)."""
        from daskgmm.cli.model_schema import SWEEPABLE

        out = {}
        for key in SWEEPABLE:
            value = self.params.get(key)
            if isinstance(value, list):
                out[key] = list(value)
            elif isinstance(value, Mapping):
                out[key] = list(range(value["min"], value["max"] + 1))
        return out

    def estimator_class(self) -> type:
        """The estimator class that ``kind`` names."""
        from daskgmm.cli.model_schema import estimator_class

        found = estimator_class(self.kind)
        assert found is not None  # checked when the section was validated
        return found

    def estimator_params(self) -> dict[str, Any]:
        """Keyword arguments for the estimator (``estimator_class()(**params)``).

        Returns
        -------
        dict
            Every parameter of this section; array parameters (nested lists) become
            float64 ndarrays. Swept parameters are lists of their values (a
            ``{min, max}`` range expanded); :func:`daskgmm.cli.selection.make_estimator`
            turns a sweep into a :class:`daskgmm.GaussianMixtureSelector`.
        """
        params = self.params
        sweep = self.sweep
        for key, value in params.items():
            if key in sweep:
                params[key] = sweep[key]
            elif isinstance(value, list):
                params[key] = np.asarray(value, dtype=np.float64)
        return params


class SelectionConfig(_Section):
    """``selection``: how a sweep chooses its model.

    A run is a sweep when ``model.n_components`` is a list or ``{min, max}`` or
    ``model.covariance_type`` is a list (see :mod:`daskgmm.cli.selection`); for a single
    model this section is not used.

    Attributes
    ----------
    criterion : {'bic', 'aic', 'icl'}
        The information criterion to minimise.
    early_stopping : bool
        Stop candidates that cannot win before they converge
        (:func:`daskgmm.models.selection.cannot_win`).
    """

    criterion: Literal["bic", "aic", "icl"] = "bic"
    early_stopping: Annotated[bool, Strict()] = False


class TLSConfig(_Section):
    """``cluster.tls``: certificates for a ``tls://`` scheduler.

    Attributes
    ----------
    ca_file : str
        Certificate authority file. Must exist.
    cert_file : str
        Client certificate. Must exist.
    key_file : str or None
        Client private key (must exist); ``None`` when the key is inside ``cert_file``.
    require_encryption : bool
        Refuse unencrypted connections.
    """

    ca_file: ExistingFile
    cert_file: ExistingFile
    key_file: ExistingFile | None = None
    require_encryption: Annotated[bool, Strict()] = True


_DOTTED_RE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def _check_dotted(value: str) -> str:
    if not _DOTTED_RE.match(value):
        raise _complete("must be a dotted class path such as dask_jobqueue.SLURMCluster",
                        value)
    return value


class AdaptConfig(_Section):
    """``cluster.factory.adapt``: let the cluster add and remove workers with the load.

    Attributes
    ----------
    minimum, maximum : int
        The fewest and the most workers (``0 <= minimum <= maximum``, ``maximum >= 1``).
    """

    minimum: Annotated[StrictIntType, Field(ge=0)] = 0
    maximum: Annotated[StrictIntType, Field(ge=1)]

    @model_validator(mode="after")
    def _ordered(self) -> AdaptConfig:
        if self.minimum > self.maximum:
            _raise_problems([("minimum", f"must be <= maximum ({self.maximum}), got "
                                         f"{self.minimum}")])
        return self


class FactoryConfig(_Section):
    """``cluster.factory``: a cluster class to start, e.g. on an HPC or Kubernetes system.

    Attributes
    ----------
    class : str
        Dotted path of a :class:`distributed.deploy.Cluster` subclass:
        ``dask_jobqueue.SLURMCluster``, ``dask_kubernetes.operator.KubeCluster``,
        ``distributed.LocalCluster``...
    options : dict
        Keyword arguments of the class.
    scale : int >= 1 or None
        Ask for this many workers (``cluster.scale(n)``).
    adapt : AdaptConfig or None
        Or let the number of workers adapt (``cluster.adapt(minimum, maximum)``).
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_: Annotated[str, AfterValidator(_check_dotted)] = Field(alias="class")
    options: dict[str, Any] = Field(default_factory=dict)
    scale: Annotated[StrictIntType, Field(ge=1)] | None = None
    adapt: AdaptConfig | None = None

    @model_validator(mode="after")
    def _one_sizing(self) -> FactoryConfig:
        if self.scale is not None and self.adapt is not None:
            _raise_problems([("adapt", "cannot be given together with cluster.factory.scale;"
                                       " set only one of them")])
        bad = [k for k in self.options if not isinstance(k, str)]
        if bad:
            _raise_problems([("options", f"keys must be strings, got {_fmt(bad[0])}")])
        return self


Seconds = Annotated[FloatType, Field(gt=0)]


class ClusterConfig(_Section):
    """``cluster``: where the computation runs.

    Three ways, one at a time: an embedded local cluster (the default) with
    ``n_workers``, ``threads_per_worker``, ``memory_limit`` (per worker) and
    ``dashboard_address`` (``null`` for no HTTP server at all); an existing scheduler
    (``address`` or ``scheduler_file``, with ``tls``); or a cluster class started from
    ``factory`` (SLURM, Kubernetes...).

    Attributes
    ----------
    address : str or None
        ``scheme://host:port`` with scheme ``tcp``, ``tls`` or ``ucx``.
    scheduler_file : str or None
        A scheduler file written by ``dask scheduler --scheduler-file``; exclusive with
        ``address``. Need not exist yet.
    factory : FactoryConfig or None
        A cluster class to start; exclusive with ``address`` and ``scheduler_file``.
    n_workers, threads_per_worker : int >= 1
    memory_limit : str or int
        ``'auto'``, a dask size string (``'2GiB'``, ``'500MB'``) or bytes (0 = no limit);
        at least 256 MiB.
    dashboard_address : str or None
        ``':PORT'`` on 127.0.0.1 (``':0'``: a free port); None: no HTTP server.
    tls : TLSConfig or None
        Required when ``address`` starts with ``tls://``.
    connect_timeout : float or None
        Seconds to wait for the scheduler to answer (default
        ``$DASKGMM_CONNECT_TIMEOUT`` or 20).
    wait_for_workers : int >= 1
        Workers to wait for before the fit starts.
    wait_timeout : float or None
        Seconds to wait for them; None: ``connect_timeout`` for an existing scheduler,
        600 for a ``factory`` (a batch system may take a while to start workers).
    stall_timeout : float or None
        Fail when every worker has been paused, or there has been no worker, for this
        many seconds during a run; None never gives up.
    """

    address: Annotated[str, AfterValidator(_check_address)] | None = None
    scheduler_file: PathStr | None = None
    factory: FactoryConfig | None = None
    n_workers: Annotated[StrictIntType, Field(ge=1)] = 2
    threads_per_worker: Annotated[StrictIntType, Field(ge=1)] = 1
    memory_limit: Annotated[str | int, PlainValidator(_check_memory_limit)] = "2GiB"
    dashboard_address: Annotated[str | None, PlainValidator(_check_dashboard)] = ":0"
    tls: TLSConfig | None = None
    connect_timeout: Seconds | None = None
    wait_for_workers: Annotated[StrictIntType, Field(ge=1)] = 1
    wait_timeout: Seconds | None = None
    stall_timeout: Seconds | None = 120.0

    @model_validator(mode="after")
    def _check_connection(self) -> ClusterConfig:
        problems = []
        if self.address is not None:
            if self.scheduler_file is not None:
                problems.append(("scheduler_file", "cannot be given together with "
                                 "cluster.address; set only one of them"))
            is_tls = self.address.lower().startswith("tls://")
            if is_tls and self.tls is None:
                problems.append(("tls", "required when cluster.address uses tls:// "
                                 "(give ca_file and cert_file), got nothing"))
            elif self.tls is not None and not is_tls:
                problems.append(("address", "must use tls:// when cluster.tls is "
                                 f"given, got {_fmt(self.address)}"))
        if self.factory is not None and (self.address is not None
                                         or self.scheduler_file is not None):
            problems.append(("factory", "cannot be given together with cluster.address or "
                                        "cluster.scheduler_file; set only one of them"))
        _raise_problems(problems)
        return self


class OutputConfig(_Section):
    """``output``: where results are written.

    Attributes
    ----------
    dir : str
        Output directory (model, ``report.json``, plots), a local path or a URL
        (``s3://bucket/runs/x``): at a URL everything is written under a temporary
        prefix and copied into place with the marker (``report.json``) last.
    labels, responsibilities : bool
        Also write per-sample labels / responsibilities (as large as the data). Labels
        of Parquet input are a Parquet directory (``labels.parquet/``, with
        ``id_column``); otherwise Zarr (``labels.zarr``).
    plots : bool
        Write diagnostic plots.
    overwrite : bool
        Allow replacing an existing ``dir`` that daskgmm wrote (never anything else).
    id_column : str or None
        Parquet input: a column copied next to the labels (e.g. a primary key); it is
        not used as a feature unless ``data.columns`` names it.
    storage_options : dict or None
        Options of the URL's filesystem (never written to the report).
    """

    dir: PathStr
    labels: Annotated[bool, Strict()] = False
    responsibilities: Annotated[bool, Strict()] = False
    plots: Annotated[bool, Strict()] = True
    overwrite: Annotated[bool, Strict()] = False
    id_column: NonEmptyStr | None = None
    storage_options: StorageOptions = None


class CheckpointConfig(_Section):
    """``checkpoint``: EM checkpoints, to resume an interrupted fit.

    Attributes
    ----------
    dir : str or None
        Checkpoint directory, a local path or a URL; ``None`` disables checkpoints.
    every : int >= 1
        Write a checkpoint every this many EM iterations.
    storage_options : dict or None
        Options of the URL's filesystem (default: ``output.storage_options``).
    """

    dir: PathStr | None = None
    every: Annotated[StrictIntType, Field(ge=1)] = 1
    storage_options: StorageOptions = None


_SECTIONS = ("data", "model", "cluster", "output", "checkpoint", "selection")


class RunConfig(_Section):
    """A validated run configuration. Build it with :func:`load_config` or
    :func:`parse_config`.

    Attributes
    ----------
    name : str or None
        Run name.
    data : DataConfig
    model : ModelConfig
    cluster : ClusterConfig
    output : OutputConfig
    checkpoint : CheckpointConfig
    selection : SelectionConfig
    """

    name: NonEmptyStr | None = None
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    output: OutputConfig
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)

    _source: str = PrivateAttr(default="<config>")

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, raw: Any) -> Any:
        # ``model:`` with every key commented out is null in YAML: treat it as empty.
        if isinstance(raw, Mapping):
            raw = {k: ({} if k in _SECTIONS and v is None else v) for k, v in raw.items()}
        return raw

    @property
    def source(self) -> str:
        """Where the configuration came from (file name or ``source`` argument)."""
        return self._source

    def to_dict(self, *, redact: bool = False) -> dict[str, Any]:
        """The resolved configuration (defaults filled in, paths absolute).

        Parameters
        ----------
        redact : bool, default False
            Mask every secret (for ``report.json`` and messages): secret-looking
            values of the ``storage_options`` sections and passwords or signed query
            parameters of URLs become ``***``.

        Returns
        -------
        dict
            JSON-serialisable; without ``redact``, ``parse_config(to_dict())`` gives an
            equal configuration.
        """
        raw = self.model_dump(mode="json", by_alias=True)
        return _redact(raw) if redact else raw


def _redact(value: Any, key: str | None = None) -> Any:
    from daskgmm.io.locations import redact_options, redact_url

    if isinstance(value, dict):
        if key == "storage_options":
            return redact_options(value)
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    return value


# ---------------------------------------------------------------------------------------
# Error messages
# ---------------------------------------------------------------------------------------


def _unwrap(annotation: Any) -> list[Any]:
    """The non-None members of an annotation (through Annotated, Optional, unions)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _unwrap(get_args(annotation)[0])
    if origin is not None and origin is not Literal and origin is not list:
        return [m for arg in get_args(annotation) for m in _unwrap(arg)]
    if annotation is type(None):
        return []
    return [annotation]


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The section model reached by following ``loc`` from :class:`RunConfig`."""
    model: type[BaseModel] = RunConfig
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return None
        models = [m for m in _unwrap(field.annotation)
                  if isinstance(m, type) and issubclass(m, BaseModel)]
        if not models:
            return None
        model = models[0]
    return model


def _choices(loc: Sequence[str | int]) -> list[Any] | None:
    """The allowed values of the Literal field at ``loc``."""
    model = _model_at(loc[:-1])
    field = model.model_fields.get(loc[-1]) if model and isinstance(loc[-1], str) else None
    if field is None:
        return None
    for member in _unwrap(field.annotation):
        if get_origin(member) is Literal:
            return list(get_args(member))
    return None


def _key(loc: Sequence[str | int]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


_TYPE_NAMES = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number",
    "bool_type": "true or false", "bool_parsing": "true or false",
    "string_type": "a string", "list_type": "a list",
    "model_type": "a mapping of keys", "dict_type": "a mapping of keys",
    "model_attributes_type": "a mapping of keys",
}
_COMPARISONS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
                "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


def _messages(error: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Translate one pydantic error into ``(loc, message)`` pairs."""
    kind = error["type"]
    loc = tuple(error["loc"])
    ctx = error.get("ctx") or {}
    given = error.get("input")
    if kind == _PROBLEMS:
        return [((*loc, *(field if isinstance(field, tuple) else (field,))), message)
                for field, message in ctx["problems"]]
    if kind == _COMPLETE:
        return [(loc, ctx["detail"])]
    if kind == "missing":
        return [(loc, "required key is missing")]
    if kind == "extra_forbidden":
        message = "unknown section" if len(loc) == 1 else "unknown key"
        model = _model_at(loc[:-1])
        if model is not None and isinstance(loc[-1], str):
            close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
            if close:
                message += f" (did you mean {close[0]!r}?)"
            elif len(loc) == 1:
                message += " (expected " + ", ".join(("name", *_SECTIONS)) + ")"
        return [(loc, message)]
    if kind in _COMPARISONS:
        symbol, name = _COMPARISONS[kind]
        return [(loc, f"must be {symbol} {ctx.get(name)}, got {_fmt(given)}")]
    if kind == "literal_error":
        choices = _choices(loc)
        expected = (", ".join(_fmt(c) for c in choices) if choices is not None
                    else ctx.get("expected", "?"))
        return [(loc, f"must be one of {expected}, got {_fmt(given)}")]
    if kind == "finite_number":
        return [(loc, f"must be a finite number, got {_fmt(given)}")]
    if kind == "string_too_short":
        return [(loc, f"must not be empty, got {_fmt(given)}")]
    if kind in _TYPE_NAMES:
        return [(loc, f"must be {_TYPE_NAMES[kind]}, got {_fmt(given)}")]
    message = str(error.get("msg", kind))
    message = message.removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    return [(loc, f"{message}, got {_fmt(given)}")]


def _config_error(source: str, problems: Sequence[str]) -> ConfigError:
    count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
    return ConfigError(f"{source}: {count}:\n" + "\n".join(f"  {p}" for p in problems))


def _from_validation_error(exc: ValidationError, source: str,
                           overridden: Sequence[tuple[str, ...]] = ()) -> ConfigError:
    lines: list[str] = []
    for error in exc.errors():
        for loc, message in _messages(error):
            line = f"{_key(loc)}: {message}"
            if any(loc[:len(k)] == k or k[:len(loc)] == loc for k in overridden):
                line += " (from override)"
            if line not in lines:
                lines.append(line)
    return _config_error(source, lines)


# ---------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------


def _parse_overrides(overrides: Sequence[str]) -> list[tuple[tuple[str, ...], Any]]:
    if isinstance(overrides, str):
        overrides = [overrides]
    parsed, problems = [], []
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            problems.append(f"{_fmt(item)}: expected KEY.PATH=VALUE, "
                            "e.g. model.n_components=5")
            continue
        key, _, text = item.partition("=")
        keys = tuple(part.strip() for part in key.split("."))
        if not all(keys):
            problems.append(f"{item!r}: the key must be a dotted path such as "
                            f"model.n_components, got {key!r}")
            continue
        try:
            value = load_yaml(text, f"--set {key.strip()}")
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        except yaml.YAMLError as exc:
            problems.append(f"{item!r}: the value is not valid YAML "
                            f"({getattr(exc, 'problem', None) or exc})")
            continue
        parsed.append((keys, value))
    if problems:
        raise _config_error("overrides", problems)
    return parsed


def _set(raw: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = raw
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            where = ".".join(keys[: depth + 1])
            raise _config_error("overrides", [
                f"{'.'.join(keys)}: cannot set a key inside {where}, which is "
                f"{_fmt(child)} and not a section"])
        node = child
    node[keys[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``KEY.PATH=VALUE`` overrides to a raw (unvalidated) configuration.

    Parameters
    ----------
    raw : dict
        The configuration as read from YAML. It is not modified.
    overrides : sequence of str
        Items such as ``"model.n_components=5"``. The value is parsed with
        :func:`yaml.safe_load`: ``5`` is an int, ``true`` a bool, ``[1, 2]`` a list,
        ``null`` None, and ``tcp://1.2.3.4:8786`` stays a string. Missing sections on the
        way are created.

    Returns
    -------
    dict
        A new dictionary with the overrides applied.

    Raises
    ------
    ConfigError
        For a malformed override (no ``=``, an empty key or key part, a value that is not
        valid YAML) or a key path that goes through a non-mapping value.
    """
    result = copy.deepcopy(dict(raw))
    for keys, value in _parse_overrides(overrides):
        _set(result, keys, value)
    return result


# ---------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------


def parse_config(raw: Mapping[str, Any], source: str = "<config>", *,
                 base_dir: str | os.PathLike[str] | None = None,
                 _overridden: Sequence[tuple[str, ...]] = ()) -> RunConfig:
    """Validate a configuration given as a mapping.

    Parameters
    ----------
    raw : Mapping
        The configuration, e.g. the result of :func:`yaml.safe_load`.
    source : str
        Name used at the start of error messages (usually the file name).
    base_dir : path-like, optional
        Directory that relative paths (``data.path``, ``output.dir``, ``checkpoint.dir``,
        ``cluster.scheduler_file``, ``cluster.tls.*_file``) are resolved against. Defaults
        to the current working directory.

    Returns
    -------
    RunConfig

    Raises
    ------
    ConfigError
        Listing every problem, one line each: ``source: N problems:`` then
        ``  dotted.key: what is expected, got what was given``.
    """
    if not isinstance(raw, Mapping):
        given = "an empty file" if raw is None else f"{type(raw).__name__} {_fmt(raw)}"
        raise _config_error(source, [
            "(top level): must be a mapping of sections (data, model, cluster, output, "
            f"checkpoint), got {given}"])
    bad_keys = [k for k in raw if not isinstance(k, str)]
    if bad_keys:
        raise _config_error(source, [f"{_fmt(k)}: keys must be strings" for k in bad_keys])
    context = {"base_dir": os.path.abspath(base_dir) if base_dir is not None else None}
    try:
        config = RunConfig.model_validate(dict(raw), context=context)
    except ValidationError as exc:
        raise _from_validation_error(exc, source, _overridden) from None
    config._source = source
    return config


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> RunConfig:
    """Read, override and validate a YAML run configuration.

    Parameters
    ----------
    path : path-like
        The YAML file. Relative paths inside it are resolved against its directory.
    overrides : sequence of str
        ``KEY.PATH=VALUE`` items (see :func:`apply_overrides`), applied before
        validation. Relative paths given here are resolved against the current working
        directory.

    Returns
    -------
    RunConfig

    Raises
    ------
    ConfigError
        If the file is missing or unreadable, is not valid YAML (the message gives the
        line and column), does not hold a mapping, or fails validation.
    """
    source = os.fspath(path)
    file = Path(source)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file is a directory, not a file: {source}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not a UTF-8 text file ({exc.reason} at byte "
                          f"{exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {source}: {exc.strerror or exc}") from None
    try:
        raw = load_yaml(text, source)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML{_yaml_where(exc)}") from None

    parsed = _parse_overrides(overrides)
    overridden = [keys for keys, _ in parsed]
    if parsed:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            parse_config(raw, source)  # raises: the top level is not a mapping
        raw = copy.deepcopy(raw)
        for keys, value in parsed:
            if keys in _PATH_KEYS and isinstance(value, str) and value and not _URL_RE.match(
                    value):
                value = os.path.abspath(os.path.expanduser(value))
            _set(raw, keys, value)
    return parse_config(raw, source, base_dir=file.resolve().parent, _overridden=overridden)


def _yaml_where(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if problem:
        detail = f"{problem} ({context})" if context else problem
    else:
        detail = str(exc)
    return f"{where}: {detail}"
