"""The run description of ``daskgmm fit CONFIG.yaml [--set key=value ...]``.

:func:`load_config` reads the YAML, applies ``--set`` overrides and validates it into a
:class:`RunConfig` of typed sections, whose locations are parsed once into
:class:`~daskgmm.io.locations.Location` objects. The ``model`` section is derived from
the estimator of ``model.kind`` (one key per ``get_params()`` entry) and judged by the
estimator's own ``_validate_params``. Every mistake is one
:class:`~daskgmm.errors.ConfigError` with a line per key path. Relative paths are
resolved against the configuration file's directory (``--set`` ones: the current one)."""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    SerializationInfo,
    Strict,
    ValidationError,
    ValidationInfo,
    create_model,
    field_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from daskgmm.cli.yaml_input import load_yaml
from daskgmm.errors import ConfigError, DaskGMMError
from daskgmm.io.locations import Location, redact_options

__all__ = ["MAX_CONFIG_BYTES", "MAX_PROBLEMS", "MIN_MEMORY_LIMIT", "ClusterSection",
           "DataSection", "ModelSection", "OutputSection", "RunConfig", "load_config",
           "parse_config"]

MAX_CONFIG_BYTES = 1 << 20
"""The largest configuration file read (a run configuration is a few KiB)."""
MAX_PROBLEMS = 20
"""Problems listed in one error; the rest are counted."""
MIN_MEMORY_LIMIT = 256 * 2**20
"""The smallest ``cluster.memory_limit`` (bytes): an idle Dask worker holds 100-170 MiB
(more with pandas and pyarrow installed) and pauses at 80% of its limit."""
KINDS = {"gaussian": "GaussianMixture", "bayesian": "BayesianGaussianMixture"}
"""``model.kind`` -> the estimator class of the :mod:`daskgmm` facade."""
SWEEPABLE = ("n_components", "covariance_type")
MANAGED_ELSEWHERE = {"checkpoint_dir": "checkpoint.dir", "checkpoint_every": "checkpoint.every",
                     "chunk_rows": "data.chunk_rows"}

_COMPLETE = "daskgmm_complete"  # an error whose message is final
_SCIENTIFIC = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")  # YAML 1.1 reads as text
_ADDRESS = re.compile(r"^(?P<scheme>tcp|tls|ucx)://(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)"
                      r":(?P<port>[0-9]{1,5})$")
_LOOPBACK = ("", "127.0.0.1", "localhost", "::1", "[::1]")


def fmt(value: Any, limit: int = 60) -> str:
    """A user-given value in a message: YAML spelling, bounded work and length."""
    import reprlib

    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxlist, shown.maxdict = 4, 6, 4
    shown.maxstring = shown.maxother = shown.maxlong = limit
    text = shown.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _complete(message: str) -> PydanticCustomError:
    return PydanticCustomError(_COMPLETE, "{detail}", {"detail": message})


def _problem(key: str, message: str) -> PydanticCustomError:
    """An error of the section's key ``key`` (dotted) found by a check of the section."""
    return PydanticCustomError("daskgmm_problems", "{summary}",
                               {"summary": message, "problems": [(key, message)]})


def _plain(message: str) -> str:
    """scikit-learn's constraint wording as a YAML user reads it."""
    kinds = {"int": "an integer", "float": "a number"}
    rules = [(r"an? (int|float) in the range \[([^,]+), inf\)",
              lambda m: f"{kinds[m[1]]} >= {m[2]}"),
             (r"an? (int|float) in the range \(([^,]+), inf\)",
              lambda m: f"{kinds[m[1]]} > {m[2]}"),
             (r"an? (int|float) in the range \[([^,]+), ([^\]]+)\]",
              lambda m: f"{kinds[m[1]]} from {m[2]} to {m[3]}"),
             (r"(,| or) an instance of 'numpy\.[\w.]+'", ""),
             (r"an instance of 'bool'", "true or false"),
             (r"an array-like", "a list of numbers"), (r"\bNone\b", "null"),
             (r"\bTrue\b", "true"), (r"\bFalse\b", "false")]
    for pattern, replacement in rules:
        message = re.sub(pattern, replacement, message)
    return re.sub(r"a str among \{([^}]*)\}", lambda m: "one of " + ", ".join(
        sorted(m[1].split(", "))), message)


def _number(value: Any) -> Any:
    """Numbers as YAML people write them: ``1e-3`` is a number; ``true`` is not."""
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    return value


def _yaml_numbers(value: Any) -> Any:
    """``'1e-3'`` (PyYAML's text for YAML 1.1) -> 0.001, inside lists too."""
    if isinstance(value, list):
        return [_yaml_numbers(v) for v in value]
    if isinstance(value, str) and _SCIENTIFIC.match(value.strip()):
        return float(value)
    return value


Int = Annotated[int, Strict()]
Count = Annotated[int, Strict(), Field(ge=1)]
Float = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]
Seconds = Annotated[Float, Field(gt=0)]
Name = Annotated[str, Field(min_length=1)]
Flag = Annotated[bool, Strict()]


def _resolve(value: Any, info: ValidationInfo) -> str:
    if not isinstance(value, str) or not value:
        raise _complete(f"must be a path or URL, got {fmt(value)}")
    if "://" in value or "::" in value or value.startswith("sklearn:"):
        return value
    base = info.context.get("base_dir") if isinstance(info.context, Mapping) else None
    return os.path.normpath(os.path.join(base or os.getcwd(), os.path.expanduser(value)))


def _location(value: Any, info: ValidationInfo) -> Location:
    """A path or URL as a Location (storage options are added by the section)."""
    if isinstance(value, Location):
        return value
    try:
        return Location(_resolve(value, info))
    except DaskGMMError as exc:
        raise _complete(str(exc)) from None


def _shown(loc: Location, info: SerializationInfo) -> str:
    redact = isinstance(info.context, Mapping) and info.context.get("redact")
    return loc.display if redact else loc.original


Place = Annotated[Location, PlainValidator(_location), PlainSerializer(_shown)]
"""A path or URL, parsed into a :class:`Location` while the configuration is validated."""
PathText = Annotated[str, AfterValidator(_resolve)]


def _must_be_file(value: str) -> str:
    if not os.path.isfile(value):
        raise _complete(f"file not found: {value}")
    return value


def _options(value: Any) -> dict[str, Any] | None:
    """A mapping with string keys (the values go to the filesystem as they are)."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _complete("must be a mapping of filesystem options with string keys "
                        "(e.g. {anon: true} or {client_kwargs: {endpoint_url: "
                        f"'http://...'}}), got a {type(value).__name__}")
    return dict(value)


StorageOptions = Annotated[dict[str, Any] | None, PlainValidator(_options)]
"""Options of an fsspec filesystem; their values never appear in messages or reports."""


def _with_options(loc: Location | None, options: Mapping[str, Any] | None
                  ) -> Location | None:
    if loc is None or not options or loc.protocol == "file":
        return loc
    try:
        return Location(loc.original, options)
    except DaskGMMError as exc:
        raise _complete(str(exc)) from None


class Section(BaseModel):
    """A section: unknown keys are refused; locations are arbitrary (typed) objects."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    @field_serializer("storage_options", check_fields=False)
    def _hide_options(self, value: Any, info: SerializationInfo) -> Any:
        redact = isinstance(info.context, Mapping) and info.context.get("redact")
        return redact_options(value) if redact and value else value


class GenerateSection(Section):
    """``data.generate``: write a synthetic mixture at ``data.path`` when it is missing
    (``daskgmm generate``'s settings; ``chunk_rows: null`` is 64 MiB of rows)."""

    n_samples: Count
    n_features: Count
    n_components: Count
    seed: Annotated[int, Strict(), Field(ge=0)] = 0
    chunk_rows: Count | None = None
    dtype: Literal["float64", "float32"] = "float64"
    separation: Annotated[Float, Field(gt=0, le=1e6)] = 4.0


class SampleWeightSection(Section):
    """``data.sample_weight``: one weight per row, from a file (``path``, with
    ``dataset`` inside a Zarr/HDF5 one), an array of the data's own store (``dataset``)
    or a column of the data's own Parquet table (``column``). ``sample_weight: PATH`` is
    short for ``{path: PATH}``."""

    path: Place | None = None
    dataset: Name | None = None
    column: Name | None = None
    storage_options: StorageOptions = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_form(self) -> SampleWeightSection:
        if self.column is not None and self.dataset is not None:
            raise _problem("column", "cannot be given together with dataset (a column is "
                                     "for Parquet tables, a dataset for Zarr/HDF5)")
        if self.path is None and self.dataset is None and self.column is None:
            raise _problem("path", "give path (a file of weights), dataset (an array of "
                                   "the data's store) or column (a column of its table)")
        self.path = _with_options(self.path, self.storage_options)
        return self


class DataSection(Section):
    """``data``: the samples (a ``.npy`` file, HDF5 file, Zarr store, Parquet file or
    directory, local or a URL, or ``sklearn:NAME``) and how to read them."""

    path: Place
    dataset: Name | None = None
    chunk_rows: Count | None = None
    columns: Annotated[list[Name], Field(min_length=1)] | None = None
    storage_options: StorageOptions = None
    allow_missing_chunks: Flag = False
    sample_weight: SampleWeightSection | None = None
    generate: GenerateSection | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DataSection:
        if self.columns is not None and len(set(self.columns)) != len(self.columns):
            raise _problem("columns", f"has duplicates, got {fmt(self.columns)}")
        self.path = _with_options(self.path, self.storage_options)
        weight = self.sample_weight
        if (weight is not None and weight.column is not None and weight.path is None
                and weight.column in (self.columns or ())):
            raise _problem("sample_weight.column", f"{weight.column!r} is also one of "
                                                   "data.columns (a feature)")
        if weight is not None and weight.storage_options is None:
            weight.path = _with_options(weight.path, self.storage_options)
        return self


def estimator_class(kind: str) -> type:
    """The estimator class ``model.kind`` names."""
    import daskgmm

    return getattr(daskgmm, KINDS[kind])


def _int_range(value: Any) -> Any:
    """``{min: A, max: B}`` is every integer from A to B (a sweep of ``n_components``)."""
    if not isinstance(value, Mapping):
        return value
    low, high = value.get("min"), value.get("max")
    if set(value) != {"min", "max"} or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
        raise _complete(f"a range is {{min: A, max: B}} with integers A and B, got "
                        f"{fmt(dict(value))}")
    if not 1 <= low <= high <= low + 10_000:
        raise _complete(f"a range needs 1 <= min <= max <= min + 10000, got min {low} and "
                        f"max {high}")
    return list(range(low, high + 1))


def _field_type(name: str, default: Any) -> Any:
    """What YAML may give for a parameter with this default: numbers and flags of the
    default's kind (``true`` is not a number), anything else as a YAML value for the
    estimator to judge."""
    if isinstance(default, bool):
        return Flag
    if isinstance(default, int):
        return (Annotated[Int | list[Int], BeforeValidator(_int_range)]
                if name in SWEEPABLE else Int)
    if isinstance(default, float):
        return Float
    return JsonValue


def build_estimator(kind: str, params: Mapping[str, Any]) -> Any:
    """The estimator of ``kind`` with ``params`` as YAML gave them (nested lists become
    arrays, ``'1e-3'`` a number): the model's, or a
    :class:`daskgmm.GaussianMixtureSelector` when ``n_components`` or
    ``covariance_type`` is a list (a sweep)."""
    values = {k: _yaml_numbers(v) for k, v in params.items()}
    values = {k: (np.asarray(v, dtype=np.float64) if isinstance(v, list) and k not in
                  SWEEPABLE else v) for k, v in values.items()}
    if not any(isinstance(values.get(k), list) for k in SWEEPABLE):
        return estimator_class(kind)(**values)
    from daskgmm import GaussianMixtureSelector

    ks, types = values.pop("n_components"), values.pop("covariance_type")
    own = GaussianMixtureSelector().get_params(deep=False)
    return GaussianMixtureSelector(
        n_components=ks if isinstance(ks, list) else [ks],
        covariance_types=types if isinstance(types, list) else [types], model=kind,
        model_params={k: v for k, v in values.items() if k not in own} or None,
        **{k: v for k, v in values.items() if k in own})


def _verdict(params: Mapping[str, Any], kind: str) -> tuple[str, str] | None:
    """The estimator's own validation of ``params``: None, or ``(key, message)``."""
    for name, value in params.items():
        if isinstance(value, list) and name not in SWEEPABLE:
            try:
                np.asarray(_yaml_numbers(value), dtype=np.float64)
            except (TypeError, ValueError):
                return name, ("must be a rectangular nested list of numbers (rows of equal "
                              f"length), got {fmt(value)}")
    try:
        estimator = build_estimator(kind, params)
        estimator._validate_params()
        if hasattr(estimator, "candidates"):
            estimator.candidates()
    except (TypeError, ValueError) as exc:
        text = " ".join(str(exc).split())
        renamed = {"covariance_types": "covariance_type"}
        found = re.match(r"The '(\w+)' parameter of \w+ (.*)\. Got (.*) instead\.?$", text)
        if found:
            return renamed.get(found[1], found[1]), _plain(f"{found[2]}, got {found[3]}")
        found = re.match(r"(\w+)(\[\d+\])? (must .*?)\.?$", text)
        if found:
            return f"{renamed.get(found[1], found[1])}{found[2] or ''}", _plain(found[3])
        return "", text.rstrip(".")
    return None


class ModelSection(Section):
    """``model``: ``kind`` and every parameter of its estimator (one subclass per kind,
    made by :func:`model_section`); read them as attributes
    (``config.model.n_components``)."""

    model_config = ConfigDict(extra="allow", arbitrary_types_allowed=True)  # judged below

    kind: str = "gaussian"

    @property
    def params(self) -> dict[str, Any]:
        """The estimator's parameters as given (a ``{min, max}`` range as a list)."""
        return {k: v for k, v in self.__dict__.items() if k != "kind"}

    @property
    def sweep(self) -> dict[str, list[Any]]:
        """The swept parameters and their values (empty for a single model)."""
        return {k: v for k, v in self.params.items() if k in SWEEPABLE
                and isinstance(v, list)}

    def estimator(self) -> Any:
        """The (unfitted) estimator of this section (:func:`build_estimator`) with the
        parameters the file gives: the others keep the estimator's defaults, so a sweep
        starts as :class:`daskgmm.GaussianMixtureSelector` does (``init_params='robust'``)."""
        given = self.model_fields_set | set(self.sweep) | {"n_components", "covariance_type"}
        return build_estimator(self.kind, {k: v for k, v in self.params.items() if k in given})

    @model_validator(mode="after")
    def _judged_by_the_estimator(self) -> ModelSection:
        """Each given parameter alone, then all together, through the estimator's own
        validation; every problem is reported."""
        params = self.params
        defaults = {k: f.default for k, f in type(self).model_fields.items() if k != "kind"}
        problems = []
        for name in self.__pydantic_extra__ or {}:
            close = difflib.get_close_matches(str(name), [*defaults, "kind"], n=1)
            problems.append((name, f"not a model key here: set {MANAGED_ELSEWHERE[name]} "
                                   "instead" if name in MANAGED_ELSEWHERE else
                             "unknown key" + (f" (did you mean {close[0]!r}?)" if close
                                              else "")))
        if problems:
            self.__pydantic_extra__ = {}
        for name in sorted(self.model_fields_set & set(defaults)):
            problem = _verdict({**defaults, name: params[name]}, self.kind)
            if problem is not None and problem not in problems:
                problems.append(problem)
        if not problems:
            problem = _verdict(params, self.kind) or self._sweep_conflict()
            problems += [problem] if problem is not None else []
        if problems:
            raise PydanticCustomError(
                "daskgmm_problems", "{summary}",
                {"summary": "; ".join(m for _, m in problems), "problems": problems})
        return self

    def _sweep_conflict(self) -> tuple[str, str] | None:
        sweep, params = self.sweep, self.params
        for name in ("weights_init", "means_init", "precisions_init"):
            if params.get(name) is not None and "n_components" in sweep:
                return name, ("cannot be given with a sweep over n_components (its "
                              "shape depends on n_components)")
        if params.get("precisions_init") is not None and "covariance_type" in sweep:
            return "precisions_init", "cannot be given with a sweep over covariance_type"
        return None


def section_of(cls: type, kind: str) -> type[ModelSection]:
    """The ``model`` section of an estimator class: one field per parameter, with the
    estimator's default (those set by other sections excepted)."""
    defaults = cls().get_params(deep=False)
    fields: dict[str, Any] = {
        name: (_field_type(name, value), value) for name, value in defaults.items()
        if name not in MANAGED_ELSEWHERE}
    return create_model(f"{cls.__name__}Section", __base__=ModelSection,
                        kind=(Literal[kind], kind), **fields)


@cache
def model_section(kind: str) -> type[ModelSection]:
    """The ``model`` section of ``kind`` (:func:`section_of` its estimator)."""
    return section_of(estimator_class(kind), kind)


def _default_kind(value: Any) -> Any:
    if value is None:
        return {"kind": "gaussian"}
    if isinstance(value, Mapping) and "kind" not in value:
        return {"kind": "gaussian", **value}
    return value


def _memory_limit(value: Any) -> str | int:
    """``'auto'``, a size (``'2GiB'``) or bytes (0: none), of at least 256 MiB."""
    from dask.utils import parse_bytes

    wrong = _complete(f"must be 'auto', a size such as '2GiB' or '500MB', or a number of "
                      f"bytes (0 for no limit), got {fmt(value)}")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise wrong
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        n_bytes = value if isinstance(value, int) else parse_bytes(value)
    except (ValueError, KeyError, TypeError):
        raise wrong from None
    if n_bytes < 0 or (isinstance(value, str) and n_bytes == 0):
        raise wrong
    if 0 < n_bytes < MIN_MEMORY_LIMIT:
        raise _complete(f"must be at least 256 MiB per worker (or 0 for no limit): an idle "
                        "Dask worker holds 100-170 MiB and pauses at 80% of its limit, got "
                        f"{fmt(value)}")
    return value


def _address(value: Any) -> str:
    if isinstance(value, str) and value.lower().startswith("inproc://"):
        raise _complete("inproc:// addresses exist only inside the process that made them; "
                        "give the tcp:// or tls:// address of a running scheduler, got "
                        f"{fmt(value)}")
    found = _ADDRESS.match(value) if isinstance(value, str) else None
    if found is None or not 0 < int(found["port"]) < 65536:
        raise _complete("must look like scheme://host:port with scheme tcp, tls or ucx "
                        f"(e.g. 'tcp://127.0.0.1:8786'), got {fmt(value)}")
    return value


def _dashboard(value: Any) -> str | None:
    """``:PORT``, ``PORT`` or ``127.0.0.1:PORT`` (the dashboard is loopback only)."""
    if value is None:
        return None
    text = f":{value}" if isinstance(value, int) and not isinstance(value, bool) else value
    host, _, port = text.strip().rpartition(":") if isinstance(text, str) else ("", "", "")
    if not port.isdigit() or int(port) > 65535:
        raise _complete(f"must be ':PORT' (e.g. ':8787', or ':0' for a free port) or null, "
                        f"got {fmt(value)}")
    if host not in _LOOPBACK:
        raise _complete("the embedded cluster's dashboard serves worker pages and logs "
                        "without authentication, so it listens on 127.0.0.1 only: give "
                        "':PORT' and reach it from elsewhere through an SSH tunnel, got "
                        f"{fmt(value)}")
    return f"127.0.0.1:{port}"


class TLSSection(Section):
    """``cluster.tls``: the certificates of a ``tls://`` scheduler (files must exist)."""

    ca_file: Annotated[PathText, AfterValidator(_must_be_file)]
    cert_file: Annotated[PathText, AfterValidator(_must_be_file)]
    key_file: Annotated[PathText, AfterValidator(_must_be_file)] | None = None
    require_encryption: Flag = True


def _dotted(value: str) -> str:
    if not re.match(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$", value):
        raise _complete("must be a dotted class path such as dask_jobqueue.SLURMCluster, "
                        f"got {fmt(value)}")
    return value


class AdaptSection(Section):
    """``cluster.factory.adapt``: workers added and removed with the load."""

    minimum: Annotated[int, Strict(), Field(ge=0)] = 0
    maximum: Count


class FactorySection(Section):
    """``cluster.factory``: a cluster class to start (``dask_jobqueue.SLURMCluster``,
    ``dask_kubernetes.operator.KubeCluster``...) with its ``options``, then ``scale``
    or ``adapt``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    class_: Annotated[str, Field(alias="class"), AfterValidator(_dotted)]
    options: dict[str, Any] = Field(default_factory=dict)
    scale: Count | None = None
    adapt: AdaptSection | None = None

    @model_validator(mode="after")
    def _one_sizing(self) -> FactorySection:
        if self.scale is not None and self.adapt is not None:
            raise _problem("adapt", "cannot be given together with cluster.factory.scale; "
                                    "set only one of them")
        if self.adapt is not None and self.adapt.minimum > self.adapt.maximum:
            raise _problem("adapt.minimum", f"must be <= maximum ({self.adapt.maximum}), "
                                            f"got {self.adapt.minimum}")
        return self


class ClusterSection(Section):
    """``cluster``: an embedded local cluster (the default: ``n_workers`` processes of
    ``threads_per_worker`` threads and ``memory_limit`` each, a loopback-only dashboard),
    an existing scheduler (``address`` or ``scheduler_file``, with ``tls``) or a cluster
    class to start (``factory``)."""

    address: Annotated[str, PlainValidator(_address)] | None = None
    scheduler_file: PathText | None = None
    factory: FactorySection | None = None
    n_workers: Annotated[int, Strict(), Field(ge=1)] = 2
    threads_per_worker: Count = 1
    memory_limit: Annotated[str | int, PlainValidator(_memory_limit)] = "2GiB"
    dashboard_address: Annotated[str | None, PlainValidator(_dashboard)] = "127.0.0.1:0"
    tls: TLSSection | None = None
    connect_timeout: Seconds | None = None
    wait_for_workers: Count = 1
    wait_timeout: Seconds | None = None
    stall_timeout: Seconds | None = 120.0

    @model_validator(mode="after")
    def _one_way(self) -> ClusterSection:
        ways = [k for k in ("address", "scheduler_file", "factory")
                if getattr(self, k) is not None]
        if len(ways) > 1:
            raise _problem(ways[-1], f"cannot be given together with cluster.{ways[0]}; set "
                                     "only one of them")
        is_tls = (self.address or "").lower().startswith("tls://")
        if is_tls and self.tls is None:
            raise _problem("tls", "required when cluster.address uses tls:// (give ca_file "
                                  "and cert_file), got nothing")
        if self.tls is not None and self.address is not None and not is_tls:
            raise _problem("address", f"must use tls:// when cluster.tls is given, got "
                                      f"{fmt(self.address)}")
        most = 4 * (os.cpu_count() or 1)
        if self.n_workers > most:
            raise _problem("n_workers", f"at most {most} (4 per core of this "
                                        f"machine): more worker processes only add overhead "
                                        f"here; use a cluster for more, got {self.n_workers}")
        return self


class OutputSection(Section):
    """``output``: the run directory (a path or URL) and what goes into it."""

    dir: Place
    labels: Flag = False
    responsibilities: Flag = False
    plots: Flag = True
    overwrite: Flag = False
    id_column: Name | None = None
    storage_options: StorageOptions = None

    @model_validator(mode="after")
    def _options(self) -> OutputSection:
        self.dir = _with_options(self.dir, self.storage_options)
        return self


class CheckpointSection(Section):
    """``checkpoint``: where to keep EM checkpoints (``--resume`` continues from them);
    ``storage_options`` default to ``output.storage_options``."""

    dir: Place | None = None
    every: Count = 1
    storage_options: StorageOptions = None


class SelectionSection(Section):
    """``selection``: how a sweep chooses (the information criterion to minimise, and
    whether candidates that cannot win are stopped early)."""

    criterion: Literal["bic", "aic", "icl"] = "bic"
    early_stopping: Flag = False


_SECTIONS = ("data", "model", "cluster", "output", "checkpoint", "selection")


class RunConfig(Section):
    """A validated run configuration (:func:`load_config`, :func:`parse_config`)."""

    name: Name | None = None
    data: DataSection
    model: Annotated[model_section("gaussian") | model_section("bayesian"),
                     Field(discriminator="kind"), BeforeValidator(_default_kind)] = Field(
        default_factory=lambda: model_section("gaussian")())
    cluster: ClusterSection = Field(default_factory=ClusterSection)
    output: OutputSection
    checkpoint: CheckpointSection = Field(default_factory=CheckpointSection)
    selection: SelectionSection = Field(default_factory=SelectionSection)

    _source: str = PrivateAttr(default="<config>")

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, raw: Any) -> Any:
        # A section whose keys are all commented out is null in YAML: the defaults.
        if isinstance(raw, Mapping):
            return {k: ({} if k in _SECTIONS and v is None else v) for k, v in raw.items()}
        return raw

    @model_validator(mode="after")
    def _links(self) -> RunConfig:
        checkpoint = self.checkpoint
        checkpoint.dir = _with_options(checkpoint.dir, checkpoint.storage_options
                                       or self.output.storage_options)
        return self

    @property
    def source(self) -> str:
        """Where the configuration came from (the file, as given)."""
        return self._source

    def estimator(self) -> Any:
        """The estimator of the run: ``model``'s, or a selector for a sweep (with
        ``selection``'s criterion), with the checkpoint settings and ``verbose=0``."""
        estimator = self.model.estimator()
        params = {"verbose": 0, "checkpoint_every": self.checkpoint.every}
        if self.model.sweep:
            params.update(criterion=self.selection.criterion,
                          early_stopping=self.selection.early_stopping)
        return estimator.set_params(**params)

    def to_dict(self, *, redact: bool = False) -> dict[str, Any]:
        """The resolved configuration (defaults filled in, paths absolute); with
        ``redact``, credentials masked and storage option values hidden (for reports)."""
        return self.model_dump(mode="json", by_alias=True, context={"redact": redact})


_TYPE_NAMES = {"int_type": "an integer", "int_parsing": "an integer",
               "int_from_float": "an integer", "float_type": "a number",
               "float_parsing": "a number", "bool_type": "true or false",
               "bool_parsing": "true or false", "string_type": "a string",
               "list_type": "a list", "model_type": "a mapping of keys",
               "dict_type": "a mapping of keys", "model_attributes_type": "a mapping of keys"}
_COMPARE = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
            "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


def _key(loc: Sequence[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _known(loc: Sequence[Any]) -> list[str]:
    """The keys accepted where ``loc`` points (for "did you mean"; not in ``model``,
    whose section judges its own keys)."""
    if len(loc) == 1:
        return ["name", *_SECTIONS]
    model: Any = RunConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        inner = getattr(field, "annotation", None)
        model = next((a for a in getattr(inner, "__args__", (inner,))
                      if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _messages(error: Mapping[str, Any]) -> list[tuple[tuple, str]]:
    """``(key path, message)`` of one pydantic error, the way a person reads it."""
    kind, ctx, given = error["type"], error.get("ctx") or {}, error.get("input")
    loc = tuple(p for i, p in enumerate(error["loc"]) if not (isinstance(p, str) and (
        p.startswith(("function-", "json-or-python", "lax-", "strict-")) or "[" in p
        or p in ("int", "list[int]", "none", "bool", "str", "float")
        or (i == 1 and error["loc"][0] == "model" and p in KINDS))))
    if kind == "union_tag_invalid":
        return [((*loc, "kind"), f"must be one of {', '.join(map(repr, KINDS))}, got "
                 f"{fmt(ctx.get('tag'))}")]
    if kind == "daskgmm_problems":
        return [((*loc, *(name.split(".") if name else ())), message)
                for name, message in ctx["problems"]]
    if kind == _COMPLETE:
        return [(loc, ctx["detail"])]
    if kind == "missing":
        return [(loc, "required key is missing")]
    if kind == "extra_forbidden":  # (the model section judges its own keys)
        close = difflib.get_close_matches(str(loc[-1]), _known(loc), n=1)
        hint = (f" (did you mean {close[0]!r}?)" if close else
                f" (expected {', '.join(('name', *_SECTIONS))})" if len(loc) == 1 else "")
        return [(loc, f"unknown {'section' if len(loc) == 1 else 'key'}{hint}")]
    if kind in _COMPARE:
        symbol, bound = _COMPARE[kind]
        return [(loc, f"must be {symbol} {ctx.get(bound)}, got {fmt(given)}")]
    if kind == "literal_error":
        return [(loc, f"must be one of {ctx.get('expected')}, got {fmt(given)}")]
    if kind in ("finite_number", "float_finite_number"):
        return [(loc, f"must be a finite number, got {fmt(given)}")]
    if kind == "string_too_short":
        return [(loc, f"must not be empty, got {fmt(given)}")]
    if kind in _TYPE_NAMES:
        return [(loc, f"must be {_TYPE_NAMES[kind]}, got {fmt(given)}")]
    message = str(error.get("msg", kind)).removeprefix("Value error, ")
    return [(loc, f"{message[:1].lower()}{message[1:]}, got {fmt(given)}")]


def _config_error(source: str, problems: Sequence[str]) -> ConfigError:
    n = len(problems)
    shown = [f"  {p}" for p in problems[:MAX_PROBLEMS]]
    if n > MAX_PROBLEMS:
        shown.append(f"  ... and {n - MAX_PROBLEMS:,} more problems")
    return ConfigError(f"{source}: {n} problem{'s' if n != 1 else ''}:\n" + "\n".join(shown))


def parse_config(raw: Any, source: str = "<config>", *,
                 base_dir: str | os.PathLike[str] | None = None,
                 overridden: Sequence[tuple[str, ...]] = ()) -> RunConfig:
    """Validate a configuration given as a mapping; relative paths are resolved against
    ``base_dir`` (default: the current directory) and ``overridden`` key paths are marked
    ``(from override)`` in the :class:`ConfigError` that lists every problem."""
    if not isinstance(raw, Mapping):
        given = "an empty file" if raw is None else f"{type(raw).__name__} {fmt(raw)}"
        raise _config_error(source, ["(top level): must be a mapping of sections (data, "
                                     f"model, cluster, output, checkpoint), got {given}"])
    bad = [k for k in raw if not isinstance(k, str)]
    if bad:
        raise _config_error(source, [f"{fmt(k)}: keys must be strings" for k in bad])
    context = {"base_dir": os.path.abspath(base_dir) if base_dir is not None else None}
    try:
        config = RunConfig.model_validate(dict(raw), context=context)
    except ValidationError as exc:
        lines: dict[str, str] = {}  # one message per key (a union's members all complain)
        for error in exc.errors():
            if len(lines) >= MAX_PROBLEMS:  # only counted: their messages are not shown
                lines.setdefault(str(error["loc"]), "")
                continue
            for loc, message in _messages(error):
                marked = any(loc[:len(k)] == k or k[:len(loc)] == loc for k in overridden)
                lines.setdefault(_key(loc), f"{_key(loc)}: {message}"
                                 + (" (from override)" if marked else ""))
        raise _config_error(source, list(lines.values())) from None
    config._source = source
    return config


def parse_overrides(overrides: Sequence[str]) -> list[tuple[tuple[str, ...], Any]]:
    """``KEY.PATH=VALUE`` items as ``(key path, YAML value)`` pairs; a
    :class:`ConfigError` for an item without ``=``, an empty key part, a value that is not
    YAML, or a key given twice."""
    parsed: list[tuple[tuple[str, ...], Any]] = []
    problems: list[str] = []
    for item in overrides:
        key, sep, text = item.partition("=")
        keys = tuple(part.strip() for part in key.split("."))
        if not sep or not all(keys):
            problems.append(f"{fmt(item)}: expected KEY.PATH=VALUE, e.g. "
                            "model.n_components=5")
            continue
        if any(k == keys for k, _ in parsed):
            problems.append(f"{'.'.join(keys)}: given twice with --set; give each key once")
            continue
        try:
            parsed.append((keys, load_yaml(text, f"--set {key.strip()}")))
        except ConfigError as exc:
            problems.append(str(exc))
        except yaml.YAMLError as exc:
            problems.append(f"{fmt(item)}: the value is not valid YAML "
                            f"({getattr(exc, 'problem', None) or exc})")
    if problems:
        raise _config_error("overrides", problems)
    return parsed


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str], *,
                    cwd: str | None = None) -> dict[str, Any]:
    """A copy of ``raw`` with ``KEY.PATH=VALUE`` overrides applied (missing sections are
    created); string paths are made absolute against ``cwd`` when it is given."""
    result = copy.deepcopy(dict(raw))
    path_keys = {("data", "path"), ("data", "sample_weight"), ("data", "sample_weight", "path"),
                 ("output", "dir"), ("checkpoint", "dir"), ("cluster", "scheduler_file")}
    for keys, value in parse_overrides(overrides):
        if cwd is not None and (keys in path_keys or keys[:2] == ("cluster", "tls")) \
                and isinstance(value, str) and "://" not in value \
                and not value.startswith("sklearn:"):
            value = os.path.join(cwd, os.path.expanduser(value))
        node = result
        for depth, key in enumerate(keys[:-1]):
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            elif not isinstance(child, dict):
                raise _config_error("overrides", [
                    f"{'.'.join(keys)}: cannot set a key inside {'.'.join(keys[:depth + 1])}, "
                    f"which is {fmt(child)} and not a section"])
            node = child
        node[keys[-1]] = value
    return result


def load_config(path: str | os.PathLike[str], overrides: Sequence[str] = ()) -> RunConfig:
    """Read, override and validate a YAML run configuration (a :class:`ConfigError`
    when the file is missing, too large, not UTF-8, not YAML or not valid)."""
    source = os.fspath(path)
    try:
        with open(source, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {source}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file is a directory, not a file: {source}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {source}: {exc.strerror or exc}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: larger than {MAX_CONFIG_BYTES // 2**20} MiB, which no "
                          "run configuration is (a complete one is a few KiB); check the "
                          "file name")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not a UTF-8 text file ({exc.reason} at byte "
                          f"{exc.start})") from None
    try:
        raw = load_yaml(text, source)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        detail = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        raise ConfigError(f"{source}: invalid YAML{where}: {detail}"
                          + (f" ({context})" if context else "")) from None
    overridden = [keys for keys, _ in parse_overrides(overrides)]
    if overrides:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            parse_config(raw, source)  # raises: the top level is not a mapping
        raw = apply_overrides(raw, overrides, cwd=os.getcwd())
    base_dir = Path(os.path.abspath(source)).parent
    return parse_config(raw, source, base_dir=base_dir, overridden=overridden)
