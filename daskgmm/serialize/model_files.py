"""Saved models: a directory of arrays and JSON, never pickle.

A saved model is a directory (a local path, or any fsspec URL)::

    model/
        arrays.npz    the fitted arrays (float64), written with numpy.savez, no pickle
        model.json    format, versions, class, parameters, fitted scalars, array checksums

``model.json`` is written last and is the completion marker: a directory without it is
refused. The directory is built aside and appears complete or not at all
(:func:`daskgmm.io.storage.atomic_output_directory`).

This module knows files, not estimators: it writes and reads a :class:`SavedModel` (the
class name, parameters, fitted scalars and arrays an estimator's state dict holds) and
checks everything that does not depend on the estimator: the format, JSON that is bounded
in size and nesting, arrays whose declared shape and dtype match what the archive holds
(read member by member, so a compressed archive cannot inflate beyond what its
``model.json`` declares), their checksums, finiteness, the common fitted scalars. The
estimator class checks the rest when it is rebuilt from the state
(:func:`daskgmm.models.load`): shapes against the number of components and features, the
mathematical consistency of the parameters, its parameter table.

``model.json`` holds::

    {
      "format": "daskgmm-model",
      "format_version": 2,
      "daskgmm_version": "0.1.0",
      "class": "GaussianMixture",
      "created": "2026-12-01T12:00:00+00:00",
      "params": {...get_params(); arrays as {"array": "param:means_init"}...},
      "fitted": {"converged_": true, "n_iter_": 12, "lower_bound_": -4.2,
                 "n_features_in_": 3, "covariance_type": "full", "n_components": 2, ...},
      "arrays": {"means_": {"shape": [2, 3], "dtype": "<f8", "sha256": "..."}, ...},
      "notes": [...],
      "metadata": {...extra_metadata...}
    }

Non-finite floats (e.g. ``lower_bound_ = -inf`` after ``max_iter=0``) are stored as
``{"float": "-inf"}`` so the file stays strict JSON.
"""

from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from daskgmm.engine.covariance import COVARIANCE_TYPES
from daskgmm.errors import ModelFormatError
from daskgmm.serialize.schema import (
    MAX_JSON_BYTES,
    decode_float,
    encode_float,
    npy_header_shape,
    parse_json,
    read_bounded,
    read_json,
)

__all__ = ["ARRAYS_FILE", "FORMAT", "FORMAT_VERSION", "METADATA_FILE", "SavedModel",
           "failure", "read_model", "round_trip", "write_model"]

FORMAT = "daskgmm-model"
FORMAT_VERSION = 2
METADATA_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"
#: A member of arrays.npz may inflate to at most this many times its compressed size
#: (plus :data:`INFLATION_SLACK` bytes): daskgmm stores them uncompressed, so what a
#: model file makes daskgmm allocate is bounded by the file's size on disk.
MAX_INFLATION = 4
INFLATION_SLACK = 64 * 2**10
#: Prefix of the names of array-valued parameters in arrays.npz.
PARAM_PREFIX = "param:"
#: Fitted scalars every daskgmm mixture has.
COMMON_FITTED = ("converged_", "n_iter_", "lower_bound_", "n_features_in_",
                 "covariance_type", "n_components")


@dataclass
class SavedModel:
    """A model as its files hold it.

    Attributes
    ----------
    class_name : str
        The estimator class (e.g. ``'GaussianMixture'``).
    params : dict
        Constructor parameters: plain values, arrays as float64 ndarrays.
    fitted : dict
        Fitted scalars (JSON values; non-finite floats decoded), at least
        :data:`COMMON_FITTED`.
    arrays : dict
        Fitted arrays, float64.
    notes : list of str
        What could not be stored as it was (e.g. a ``RandomState`` instance).
    metadata : dict or None
        ``extra_metadata`` given to the writer.
    info : dict
        What the file says about itself: ``format_version``, ``daskgmm_version``,
        ``created``.
    """

    class_name: str
    params: dict[str, Any]
    fitted: dict[str, Any]
    arrays: dict[str, np.ndarray]
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    """Convert NumPy scalars and arrays, paths and sets for ``json.dumps``."""
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _checksum(array: np.ndarray) -> str:
    """SHA-256 of an array's values (C order, as stored)."""
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _scalar_to_json(name: str, value: Any) -> Any:
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return encode_float(float(value))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise TypeError(f"Cannot save {name}={value!r}: not a plain value.")


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def _is_model_directory(path: Path) -> bool:
    """Whether ``path`` is a directory whose model.json declares the daskgmm format."""
    try:
        meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def _check_local_target(target: Path, overwrite: bool) -> None:
    if not os.path.lexists(target):
        return
    if not overwrite:
        raise FileExistsError(
            f"{target} already exists; refusing to overwrite it. Pass overwrite=True "
            "to replace the model saved there, or choose another path."
        )
    is_empty_dir = target.is_dir() and not target.is_symlink() and not any(target.iterdir())
    if not (is_empty_dir or (target.is_dir() and _is_model_directory(target))):
        raise FileExistsError(
            f"{target} exists and is not a daskgmm model directory; refusing to replace "
            "it even with overwrite=True. Remove it yourself or choose another path."
        )


def _encode(saved: SavedModel, extra_metadata: dict[str, Any] | None
            ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``model.json``'s content and the arrays of ``arrays.npz`` for ``saved``."""
    from daskgmm import __version__

    arrays: dict[str, np.ndarray] = {}
    params: dict[str, Any] = {}
    for name, value in saved.params.items():
        if isinstance(value, np.ndarray):
            key = PARAM_PREFIX + name
            arrays[key] = np.array(value, dtype=np.float64, order="C")
            params[name] = {"array": key}
        else:
            params[name] = _scalar_to_json(f"parameter {name}", value)
    for name, value in saved.arrays.items():
        arrays[name] = np.array(value, dtype=np.float64, order="C")  # 0-d stays 0-d
    fitted = {name: _scalar_to_json(name, value) for name, value in saved.fitted.items()}
    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "daskgmm_version": __version__,
        "class": saved.class_name,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "params": params,
        "fitted": fitted,
        "arrays": {name: {"shape": list(array.shape), "dtype": array.dtype.str,
                          "sha256": _checksum(array)}
                   for name, array in arrays.items()},
        "notes": list(saved.notes),
    }
    if extra_metadata is not None:
        if not isinstance(extra_metadata, dict):
            raise TypeError(
                f"extra_metadata must be a dict, got {type(extra_metadata).__name__}."
            )
        meta["metadata"] = extra_metadata
    return meta, arrays


def round_trip(saved: SavedModel, *, expected_arrays: Any = None) -> SavedModel:
    """What :func:`read_model` would return for the files :func:`write_model` would
    write for ``saved``, without touching any disk: the reader's every check runs on
    the encoded content (one validation for saving and loading).

    Raises
    ------
    daskgmm.errors.ModelFormatError
        With ``problem``: what the reader would refuse.
    TypeError
        A value cannot be stored as JSON.
    """
    meta, arrays = _encode(saved, None)
    try:
        text = json.dumps(meta, allow_nan=False, default=_json_default)
    except ValueError as exc:
        raise TypeError(f"Cannot save the model: {exc}") from exc
    reader = _Reader("<the model being saved>", None, expected_arrays,
                     memory=(json.loads(text), arrays))
    return reader.read()


def write_model(saved: SavedModel, path: str | os.PathLike[str], *,
                overwrite: bool = False, extra_metadata: dict[str, Any] | None = None,
                storage_options: dict[str, Any] | None = None) -> Path | str:
    """Write a model directory (see the module docstring).

    Parameters
    ----------
    saved : SavedModel
        What to write (an estimator's state dict: ``BaseMixture._to_saved``).
    path : path-like or str
        The directory to create: a local path (its parent must exist) or a URL.
    overwrite : bool
        Replace an existing model there (never anything that is not a daskgmm model
        directory, nor a non-empty directory).
    extra_metadata : dict, optional
        JSON-serialisable information stored under ``"metadata"``.
    storage_options : dict, optional
        For URLs: the filesystem's options (credentials are never written).

    Returns
    -------
    pathlib.Path or str
        The absolute path (or the URL) written.

    Raises
    ------
    FileExistsError
        The target exists and may not be replaced.
    TypeError
        A parameter or ``extra_metadata`` cannot be stored as JSON.
    """
    from daskgmm.io.locations import is_url
    from daskgmm.io.storage import atomic_output_directory

    # Everything is converted, serialised and checked before anything touches the disk.
    meta, arrays = _encode(saved, extra_metadata)
    try:
        text = json.dumps(meta, indent=2, allow_nan=False, default=_json_default) + "\n"
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"Cannot save the model: extra_metadata is not JSON-serialisable ({exc})."
        ) from exc
    try:  # what the reader would refuse is never written
        _Reader("<the model being saved>", None, memory=(json.loads(text), arrays)).read()
    except ModelFormatError as exc:
        raise ModelFormatError(
            f"Refusing to save a model that could not be loaded back: {exc.problem}."
        ) from None

    if is_url(path):
        target: Path | str = os.fspath(path)
    else:
        target = Path(os.path.abspath(os.fspath(path)))
        _check_local_target(target, overwrite)
    with atomic_output_directory(target, kind="model", overwrite=overwrite,
                                 storage_options=storage_options) as out:
        with out.open(ARRAYS_FILE, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
            handle.flush()
            if hasattr(handle, "fileno"):
                try:
                    os.fsync(handle.fileno())
                except (OSError, ValueError):
                    pass
        out.write_bytes(METADATA_FILE, text.encode("utf-8"))  # the marker, last
    return target


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
class _Reader:
    """Reads and checks one model directory; every failure is a ModelFormatError."""

    def __init__(self, path: str | os.PathLike[str],
                 storage_options: dict[str, Any] | None = None,
                 expected_arrays: Any = None, *,
                 memory: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None
                 ) -> None:
        self.expected_arrays = expected_arrays
        self.memory = memory  # (model.json's content, the arrays): no files are read
        if memory is not None:
            self.remote, self.location, self.path = False, None, os.fspath(path)
            return
        from daskgmm.io.locations import is_url, parse_location

        self.remote = is_url(path)
        self.location = parse_location(os.fspath(path), storage_options)
        self.path = (self.location.display if self.remote
                     else Path(os.path.abspath(os.fspath(path))))

    def fail(self, what: str, hint: str) -> ModelFormatError:
        error = ModelFormatError(f"Cannot load a daskgmm model from {self.path}: {what}. "
                                 f"{hint}")
        error.problem = what
        return error

    def damaged(self, what: str) -> ModelFormatError:
        return self.fail(what, "The model directory is damaged; save the model again.")

    def _pickled(self, what: str) -> ModelFormatError:
        return self.fail(
            what, "daskgmm never writes pickled data and refuses to load it, since "
            "unpickling can run arbitrary code; do not trust this directory.")

    # -- the directory -----------------------------------------------------------------
    def _check_directory(self) -> None:
        if self.remote:
            if not self.location.join(METADATA_FILE).exists():
                raise self.fail(
                    "no model.json there (not a daskgmm model, or an incomplete copy)",
                    "Check the URL; save the model again if it was interrupted.")
            return
        path = Path(self.path)
        if not os.path.lexists(path):
            hint = "Check the path."
            leftovers = sorted(path.parent.glob(f".{glob.escape(path.name)}.old-*"))
            if leftovers:
                hint = (f"An interrupted overwrite left the previous model at "
                        f"{leftovers[-1]}; rename it to {path.name} to recover it.")
            raise self.fail("no such model directory", hint)
        if not path.is_dir():
            raise self.fail(
                "it is not a directory",
                "A daskgmm model is a directory holding model.json and arrays.npz, as "
                "written by GaussianMixture.save (or another daskgmm estimator's).",
            )
        if not (path / METADATA_FILE).is_file():
            raise self.fail(
                "not a daskgmm model directory (no model.json)",
                "Was it written by GaussianMixture.save (or another daskgmm estimator's)? "
                "A directory without model.json may also be an incomplete copy; copy or "
                "save it again.",
            )

    def _read_json(self) -> Any:
        if self.remote:
            with self.location.join(METADATA_FILE).open("rb") as handle:
                return parse_json(read_bounded(handle, MAX_JSON_BYTES))
        return read_json(Path(self.path) / METADATA_FILE)

    def read_metadata(self) -> dict[str, Any]:
        if self.memory is not None:
            meta = self.memory[0]
        else:
            self._check_directory()
            try:
                meta = self._read_json()
            except OSError as exc:
                raise self.fail(f"model.json cannot be read ({exc})",
                                "Check the file's permissions.") from exc
            except ValueError as exc:
                raise self.damaged(f"model.json: {exc}") from exc
        if not isinstance(meta, dict):
            raise self.damaged("model.json does not hold a JSON object")
        fmt = meta.get("format")
        if fmt != FORMAT:
            raise self.fail(
                f"foreign directory: model.json declares format {fmt!r}, not {FORMAT!r}",
                "This directory was not written by a daskgmm estimator's save().",
            )
        version = meta.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise self.damaged(f"model.json has an invalid format_version {version!r}")
        if version > FORMAT_VERSION:
            raise self.fail(
                f"it was written by a newer daskgmm ({meta.get('daskgmm_version')!r}, "
                f"format version {version}; this daskgmm reads up to {FORMAT_VERSION})",
                "Upgrade daskgmm to load it.",
            )
        if version < FORMAT_VERSION:
            raise self.fail(
                f"it was written in format version {version} by daskgmm "
                f"{meta.get('daskgmm_version')!r}; this daskgmm reads version "
                f"{FORMAT_VERSION}", "Load it with that daskgmm and save it again.")
        if not isinstance(meta.get("class"), str):
            raise self.damaged("model.json names no estimator class")
        for key in ("params", "fitted", "arrays"):
            if not isinstance(meta.get(key), dict):
                raise self.damaged(f"model.json has no {key!r} object")
        return meta

    def read_fitted(self, meta: dict[str, Any]) -> dict[str, Any]:
        fitted = meta["fitted"]
        missing = [key for key in COMMON_FITTED if key not in fitted]
        if missing:
            raise self.damaged(f"model.json lacks the fitted values {missing}")
        out: dict[str, Any] = {}
        for key, value in fitted.items():
            decoded = decode_float(value) if isinstance(value, dict) else value
            if isinstance(value, dict) and decoded is None:
                raise self.damaged(f"fitted {key} = {str(value)[:60]!r} is not a value")
            if isinstance(decoded, list) and not all(isinstance(v, str) for v in decoded):
                raise self.damaged(f"fitted {key} is not a list of strings")
            out[key] = decoded
        if not isinstance(out["converged_"], bool):
            raise self.damaged("fitted converged_ is not a boolean")
        for key, minimum in (("n_iter_", 0), ("n_features_in_", 1), ("n_components", 1)):
            value = out[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise self.damaged(f"fitted {key} = {value!r} is not an integer >= {minimum}")
        if isinstance(out["lower_bound_"], bool) or not isinstance(out["lower_bound_"],
                                                                   int | float):
            raise self.damaged(f"fitted lower_bound_ = {out['lower_bound_']!r} is not "
                               "a number")
        out["lower_bound_"] = float(out["lower_bound_"])
        if out["covariance_type"] not in COVARIANCE_TYPES:
            raise self.damaged(f"unknown covariance_type {out['covariance_type']!r}")
        return out

    # -- arrays.npz --------------------------------------------------------------------
    def read_arrays(self, meta: dict[str, Any], required: set[str],
                    max_elements: int) -> dict[str, np.ndarray]:
        declared = meta["arrays"]
        if required is None:  # no class to ask: what model.json declares
            required = set(declared)
        missing = sorted(required - set(declared))
        if missing:
            raise self.damaged(f"model.json declares no entry for the arrays {missing}")
        extra = sorted(set(declared) - required)
        if extra:
            raise self.damaged(f"model.json declares unexpected arrays {extra}")
        for name, spec in declared.items():
            if (not isinstance(spec, dict) or not isinstance(spec.get("shape"), list)
                    or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                               for n in spec["shape"])
                    or not isinstance(spec.get("dtype"), str)
                    or not isinstance(spec.get("sha256"), str)):
                raise self.damaged(f"model.json has an invalid entry for array {name!r}")
            if math.prod(spec["shape"]) > max_elements:
                raise self.damaged(
                    f"model.json declares array {name!r} of shape {tuple(spec['shape'])}, "
                    f"larger than any array of a model with its number of components and "
                    f"features ({max_elements:,} values at most)")
        if self.memory is not None:
            arrays = self._members_in_memory(declared, required)
        else:
            arrays = self._read_archive(declared, required)
        for name, array in arrays.items():
            if _checksum(array) != declared[name]["sha256"]:
                raise self.fail(
                    f"damaged: arrays.npz does not match the checksums in model.json "
                    f"(array {name!r})",
                    "The files were modified or corrupted; save the model again.",
                )
            if not np.isfinite(array).all():
                raise self.damaged(f"{name} holds NaN or infinite values")
        return {name: array.astype(np.float64, copy=False) for name, array in arrays.items()}

    def _members_in_memory(self, declared: dict[str, Any], required: set[str]
                           ) -> dict[str, np.ndarray]:
        arrays = {name: a for name, a in self.memory[1].items() if name in required}
        if set(arrays) != required:
            raise self.damaged(f"the arrays {sorted(required - set(arrays))} are missing")
        for name, array in arrays.items():
            spec = declared[name]
            if list(array.shape) != spec["shape"] or array.dtype.str != spec["dtype"]:
                raise self.damaged(f"array {name!r} does not have its declared shape")
        return arrays

    def _read_archive(self, declared: dict[str, Any], required: set[str]
                      ) -> dict[str, np.ndarray]:
        location = self.location.join(ARRAYS_FILE)
        try:
            present = location.isfile()
        except OSError:
            present = False
        if not present:
            raise self.fail(
                "arrays.npz is missing",
                "The model directory is incomplete or damaged; save the model again.",
            )
        try:
            with location.open("rb") as handle:
                magic = handle.read(6)
        except OSError as exc:
            raise self.fail(f"arrays.npz cannot be read ({exc})",
                            "Check the file's permissions.") from exc
        if magic.startswith(b"\x80"):
            raise self._pickled("arrays.npz is a pickle file, not an .npz archive")
        if magic == b"\x93NUMPY":
            raise self.damaged("arrays.npz is not an .npz archive (it holds a single "
                               ".npy array)")
        if magic[:4] not in (b"PK\x03\x04", b"PK\x05\x06"):
            raise self.damaged("arrays.npz is not an .npz (zip) archive")
        try:
            with location.open("rb") as handle, zipfile.ZipFile(handle) as archive:
                return self._read_members(archive, declared, required)
        except ModelFormatError:
            raise
        except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError, ...
            raise self.damaged(
                f"arrays.npz cannot be read ({type(exc).__name__}: {exc})") from exc

    def _read_members(self, archive: zipfile.ZipFile, declared: dict[str, Any],
                      required: set[str]) -> dict[str, np.ndarray]:
        members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
        stored = set(members)
        if stored != required:
            parts = []
            if required - stored:
                parts.append(f"missing {sorted(required - stored)}")
            if stored - required:
                parts.append(f"unexpected {sorted(stored - required)}")
            raise self.damaged("arrays.npz does not hold the arrays model.json declares ("
                               + ", ".join(parts) + ")")
        for name in sorted(required):
            info = members[name]
            # np.savez stores its members uncompressed: a member that would inflate far
            # beyond its size on disk is refused before a byte of it is decompressed.
            if info.file_size > MAX_INFLATION * info.compress_size + INFLATION_SLACK:
                raise self.damaged(
                    f"arrays.npz member {name!r} would inflate from {info.compress_size:,} "
                    f"to {info.file_size:,} bytes; daskgmm writes its arrays uncompressed, "
                    "so this archive was not written by daskgmm (a decompression bomb?)")
        arrays = {}
        for name in sorted(required):
            spec = declared[name]
            with archive.open(members[name]) as member:
                try:
                    shape, dtype = npy_header_shape(member)
                except ValueError as exc:
                    if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                        raise self._pickled("arrays.npz holds pickled (object) arrays") \
                            from exc
                    raise self.damaged(f"arrays.npz member {name!r} is not an array ({exc})"
                                       ) from exc
                if dtype.hasobject:
                    raise self._pickled("arrays.npz holds pickled (object) arrays")
                if dtype.kind not in "fiu":
                    raise self.damaged(f"array {name!r} has the non-numeric dtype {dtype}")
                if dtype.str != spec["dtype"] or list(shape) != spec["shape"]:
                    raise self.damaged(
                        f"array {name!r} in arrays.npz has shape {shape} and dtype "
                        f"{dtype.str}, but model.json declares shape "
                        f"{tuple(spec['shape'])} and dtype {spec['dtype']}")
                # Read exactly the declared bytes: nothing can inflate beyond them.
                size = math.prod(shape) * dtype.itemsize
                data = member.read(size)
                if len(data) != size or member.read(1):
                    raise self.damaged(f"array {name!r} in arrays.npz does not hold the "
                                       "bytes its header declares")
            arrays[name] = np.frombuffer(data, dtype=dtype).reshape(shape).copy()
        return arrays

    def read(self) -> SavedModel:
        meta = self.read_metadata()
        fitted = self.read_fitted(meta)
        params: dict[str, Any] = {}
        if self.expected_arrays is not None:
            required = set(self.expected_arrays(meta["class"], fitted))
        else:
            required = {k for k in meta["arrays"] if not k.startswith(PARAM_PREFIX)}
        for name, value in meta["params"].items():
            if isinstance(value, dict) and set(value) == {"array"}:
                if value["array"] != PARAM_PREFIX + name:
                    raise self.damaged(f"parameter {name} = {value!r} names another array")
                required.add(value["array"])
                params[name] = value
            elif isinstance(value, dict):
                decoded = decode_float(value)
                if decoded is None:
                    raise self.damaged(f"parameter {name} = {str(value)[:60]!r} is not a "
                                       "plain value")
                params[name] = decoded
            elif isinstance(value, list):
                raise self.damaged(f"parameter {name} = {str(value)[:60]!r} is not a "
                                   "plain value")
            else:
                params[name] = value
        K, D = fitted["n_components"], fitted["n_features_in_"]
        bound = (K + 1) * (D + 1) ** 2 + fitted["n_iter_"] + 1
        arrays = self.read_arrays(meta, required, bound)
        for name, value in list(params.items()):
            if isinstance(value, dict):
                params[name] = arrays.pop(value["array"])
        metadata = meta.get("metadata")
        notes = meta.get("notes") if isinstance(meta.get("notes"), list) else []
        return SavedModel(meta["class"], params, fitted, arrays,
                          [str(n) for n in notes],
                          metadata if isinstance(metadata, dict) else None,
                          {"format_version": meta["format_version"],
                           "daskgmm_version": meta.get("daskgmm_version"),
                           "created": meta.get("created")})


def read_model(path: str | os.PathLike[str],
               storage_options: dict[str, Any] | None = None, *,
               expected_arrays: Any = None) -> SavedModel:
    """Read and check a model directory (local path or URL).

    ``expected_arrays(class_name, fitted)``, when given, names the fitted arrays the
    estimator class needs: the arrays model.json declares must be those (checked before
    anything is read from arrays.npz).

    Raises
    ------
    daskgmm.errors.ModelFormatError
        If the directory is missing, incomplete (no ``model.json``), foreign, written by
        another daskgmm version, damaged (invalid or oversized JSON, missing, unexpected
        or oversized arrays, checksum mismatch, non-finite values), or holds pickled
        data. The message names the directory, the problem and what to do.
    """
    return _Reader(path, storage_options, expected_arrays).read()


def failure(path: str | os.PathLike[str], what: str, hint: str = "The model directory is "
            "damaged; save the model again.") -> ModelFormatError:
    """The error of a model that the estimator class refuses (see :func:`read_model`);
    its ``problem`` attribute is ``what``."""
    where = (path if isinstance(path, str) and ("://" in path or path.startswith("<"))
             else os.path.abspath(path))
    error = ModelFormatError(f"Cannot load a daskgmm model from {where}: {what}. {hint}")
    error.problem = what
    return error
