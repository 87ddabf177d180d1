"""Save and load fitted :class:`~daskgmm.models.gaussian.GaussianMixture` models without pickle.

A saved model is a directory::

    model/
        arrays.npz    the fitted arrays (float64), written with numpy.savez, no pickle
        model.json    format, versions, parameters, fitted scalars, array checksums

``model.json`` is written last and is the completion marker: a directory without it is
refused. The whole directory is built in a temporary sibling and renamed into place
(:func:`daskgmm.io.atomic.atomic_directory`), so a writer killed at any moment leaves the
previous complete model or none.

``model.json`` holds::

    {
      "format": "daskgmm-model",
      "format_version": 1,
      "daskgmm_version": "0.1.0",
      "class": "GaussianMixture",
      "created": "2025-01-01T12:00:00+00:00",
      "params": {...get_params(); init arrays as {"array": "init_means"}...},
      "fitted": {"converged_": true, "n_iter_": 12, "lower_bound_": -4.2,
                 "n_features_in_": 3, "covariance_type": "full", "n_components": 2},
      "arrays": {"means_": {"shape": [2, 3], "dtype": "<f8", "sha256": "..."}, ...},
      "notes": [...],
      "metadata": {...extra_metadata...}
    }

Non-finite floats (e.g. ``lower_bound_ = -inf`` after ``max_iter=0``) are stored as
``{"float": "-inf"}`` so the file stays strict JSON.

:func:`load_model` never unpickles anything (``numpy.load(..., allow_pickle=False)``)
and checks everything it reads: a damaged, incomplete, foreign or too-new directory
raises :class:`~daskgmm.errors.ModelFormatError` saying what is wrong and what to do.
"""

from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import json
import math
import os
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.utils.validation import check_is_fitted

from daskgmm.engine.covariance import COVARIANCE_TYPES
from daskgmm.errors import ModelFormatError
from daskgmm.io.atomic import atomic_directory, write_bytes_atomic

if TYPE_CHECKING:  # pragma: no cover
    from daskgmm.models.gaussian import GaussianMixture

__all__ = [
    "ARRAYS_FILE",
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_FILE",
    "load",
    "load_model",
    "model_summary",
    "save_model",
]

FORMAT = "daskgmm-model"
FORMAT_VERSION = 1
METADATA_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"

# Fitted arrays, in the order they are written.
_FITTED_ARRAYS = ("weights_", "means_", "covariances_", "precisions_",
                  "precisions_cholesky_", "lower_bounds_")
# Constructor parameters that may hold arrays, and their names in arrays.npz.
_INIT_ARRAYS = {"weights_init": "init_weights", "means_init": "init_means",
                "precisions_init": "init_precisions"}
_FITTED_SCALARS = ("converged_", "n_iter_", "lower_bound_", "n_features_in_",
                   "covariance_type", "n_components")


# --------------------------------------------------------------------------------------
# JSON helpers
# --------------------------------------------------------------------------------------
def _encode_float(value: float) -> float | dict[str, str]:
    value = float(value)
    if math.isfinite(value):
        return value
    return {"float": repr(value)}  # 'inf', '-inf' or 'nan'


def _decode_float(value: Any) -> float | None:
    """The float a JSON value stands for, or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict) and set(value) == {"float"} and value["float"] in (
            "inf", "-inf", "nan"):
        return float(value["float"])
    return None


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


def _expected_shapes(covariance_type: str, k: int, d: int) -> dict[str, tuple[int, ...]]:
    cov = {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[
        covariance_type]
    return {"weights_": (k,), "means_": (k, d), "covariances_": cov, "precisions_": cov,
            "precisions_cholesky_": cov}


# --------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------
def _is_model_directory(path: Path) -> bool:
    """Whether ``path`` is a directory whose model.json declares the daskgmm format."""
    try:
        meta = json.loads((path / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def _param_to_json(name: str, value: Any, arrays: dict[str, np.ndarray],
                   notes: list[str]) -> Any:
    if name in _INIT_ARRAYS and value is not None:
        try:
            array = np.array(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"Cannot save parameter {name!r}: it is not convertible to a float64 "
                f"array ({exc})."
            ) from exc
        key = _INIT_ARRAYS[name]
        arrays[key] = array
        return {"array": key}
    if name == "random_state":
        if value is None or isinstance(value, bool | Integral):
            return None if value is None else int(value)
        notes.append(
            f"random_state was a {type(value).__name__} instance, which cannot be saved "
            "without pickle; it was stored as null (a refit will not be reproducible)."
        )
        return None
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        return _encode_float(float(value))
    raise TypeError(
        f"Cannot save parameter {name}={value!r}: only None, bool, int, float, str and "
        "path values (and arrays for the *_init parameters) can be stored in model.json."
    )


def save_model(model: GaussianMixture, path: str | os.PathLike[str], *,
               overwrite: bool = False,
               extra_metadata: dict[str, Any] | None = None) -> Path:
    """Save a fitted :class:`~daskgmm.models.gaussian.GaussianMixture` to a directory.

    Parameters
    ----------
    model : GaussianMixture
        A fitted daskgmm estimator.
    path : str or os.PathLike
        The directory to create. Its parent must exist.
    overwrite : bool, default=False
        Replace an existing model directory at ``path``. Even then, only a daskgmm model
        directory (or an empty directory) is replaced, never another file or directory.
    extra_metadata : dict, optional
        JSON-serialisable information stored under ``"metadata"`` in ``model.json`` and
        shown by :func:`model_summary` (e.g. ``{"data_shape": [10**9, 8]}``). NumPy
        scalars and arrays are converted to plain numbers and lists.

    Returns
    -------
    pathlib.Path
        The absolute path of the saved model directory.

    Raises
    ------
    sklearn.exceptions.NotFittedError
        If ``model`` has not been fitted.
    TypeError
        If ``model`` is not a daskgmm ``GaussianMixture``, or a parameter or
        ``extra_metadata`` cannot be stored as JSON.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False, or if ``path`` exists but is not a
        daskgmm model directory.

    Notes
    -----
    The arrays are written with :func:`numpy.savez` (``allow_pickle=False``), then
    ``model.json``, the completion marker, last; the directory is built aside and
    renamed into place (:func:`daskgmm.io.atomic.atomic_directory`).
    """
    from daskgmm import __version__
    from daskgmm.models.gaussian import GaussianMixture

    if not isinstance(model, GaussianMixture):
        raise TypeError(
            f"save_model expects a daskgmm.GaussianMixture, got {type(model).__name__}."
        )
    check_is_fitted(model)

    target = Path(os.path.abspath(os.fspath(path)))
    if os.path.lexists(target):
        if not overwrite:
            raise FileExistsError(
                f"{target} already exists; refusing to overwrite it. Pass overwrite=True "
                "to replace the model saved there, or choose another path."
            )
        is_empty_dir = (target.is_dir() and not target.is_symlink()
                        and not any(target.iterdir()))
        if not (is_empty_dir or (target.is_dir() and _is_model_directory(target))):
            raise FileExistsError(
                f"{target} exists and is not a daskgmm model directory; refusing to "
                "replace it even with overwrite=True. Remove it yourself or choose "
                "another path."
            )

    # Everything is converted and serialised before anything touches the disk.
    arrays: dict[str, np.ndarray] = {}
    notes: list[str] = []
    params = {name: _param_to_json(name, value, arrays, notes)
              for name, value in model.get_params(deep=False).items()}
    for name in _FITTED_ARRAYS:
        arrays[name] = np.array(getattr(model, name), dtype=np.float64)

    fitted: dict[str, Any] = {
        "converged_": bool(model.converged_),
        "n_iter_": int(model.n_iter_),
        "lower_bound_": _encode_float(model.lower_bound_),
        "n_features_in_": int(model.n_features_in_),
        "covariance_type": str(model.covariance_type),
        "n_components": int(model.n_components),
    }
    if hasattr(model, "feature_names_in_"):
        fitted["feature_names_in_"] = [str(name) for name in model.feature_names_in_]

    meta: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "daskgmm_version": __version__,
        "class": "GaussianMixture",
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "params": params,
        "fitted": fitted,
        "arrays": {name: {"shape": list(array.shape), "dtype": array.dtype.str,
                          "sha256": _checksum(array)}
                   for name, array in arrays.items()},
        "notes": notes,
    }
    if extra_metadata is not None:
        if not isinstance(extra_metadata, dict):
            raise TypeError(
                f"extra_metadata must be a dict, got {type(extra_metadata).__name__}."
            )
        meta["metadata"] = extra_metadata
    try:
        text = json.dumps(meta, indent=2, allow_nan=False, default=_json_default) + "\n"
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"Cannot save the model: extra_metadata is not JSON-serialisable ({exc})."
        ) from exc

    with atomic_directory(target, overwrite=overwrite) as tmp:
        with open(tmp / ARRAYS_FILE, "wb") as handle:
            np.savez(handle, allow_pickle=False, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        write_bytes_atomic(tmp / METADATA_FILE, text.encode("utf-8"))  # the marker, last
    return target


# --------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------
class _Reader:
    """Reads and validates one model directory; every failure is a ModelFormatError."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(os.path.abspath(os.fspath(path)))

    def fail(self, what: str, hint: str) -> ModelFormatError:
        return ModelFormatError(f"Cannot load a daskgmm model from {self.path}: {what}. "
                                f"{hint}")

    def damaged(self, what: str) -> ModelFormatError:
        return self.fail(what, "The model directory is damaged; save the model again.")

    def _pickled(self, what: str) -> ModelFormatError:
        return self.fail(
            what, "daskgmm never writes pickled data and refuses to load it, since "
            "unpickling can run arbitrary code; do not trust this directory.")

    # -- model.json --------------------------------------------------------------------
    def read_metadata(self) -> dict[str, Any]:
        path = self.path
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
                "written by GaussianMixture.save.",
            )
        meta_path = path / METADATA_FILE
        if not meta_path.is_file():
            raise self.fail(
                "not a daskgmm model directory (no model.json)",
                "Was it written by GaussianMixture.save? A directory without model.json "
                "may also be an incomplete copy; copy or save it again.",
            )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise self.damaged(f"model.json is not UTF-8 text ({exc})") from exc
        except json.JSONDecodeError as exc:
            raise self.damaged(f"model.json is not valid JSON ({exc})") from exc
        except OSError as exc:
            raise self.fail(f"model.json cannot be read ({exc})",
                            "Check the file's permissions.") from exc
        if not isinstance(meta, dict):
            raise self.damaged("model.json does not hold a JSON object")
        fmt = meta.get("format")
        if fmt != FORMAT:
            raise self.fail(
                f"foreign directory: model.json declares format {fmt!r}, not {FORMAT!r}",
                "This directory was not written by daskgmm's GaussianMixture.save.",
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
        if meta.get("class") != "GaussianMixture":
            raise self.fail(f"unsupported model class {meta.get('class')!r}",
                            "Only GaussianMixture models can be loaded.")
        for key in ("params", "fitted", "arrays"):
            if not isinstance(meta.get(key), dict):
                raise self.damaged(f"model.json has no {key!r} object")
        return meta

    def read_fitted(self, meta: dict[str, Any]) -> dict[str, Any]:
        fitted = meta["fitted"]
        missing = [key for key in _FITTED_SCALARS if key not in fitted]
        if missing:
            raise self.damaged(f"model.json lacks the fitted values {missing}")
        out: dict[str, Any] = {}
        if not isinstance(fitted["converged_"], bool):
            raise self.damaged("fitted converged_ is not a boolean")
        out["converged_"] = fitted["converged_"]
        for key, minimum in (("n_iter_", 0), ("n_features_in_", 1), ("n_components", 1)):
            value = fitted[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise self.damaged(f"fitted {key} = {value!r} is not an integer >= {minimum}")
            out[key] = value
        lower_bound = _decode_float(fitted["lower_bound_"])
        if lower_bound is None:
            raise self.damaged(f"fitted lower_bound_ = {fitted['lower_bound_']!r} is not "
                               "a number")
        out["lower_bound_"] = lower_bound
        if fitted["covariance_type"] not in COVARIANCE_TYPES:
            raise self.damaged(f"unknown covariance_type {fitted['covariance_type']!r}")
        out["covariance_type"] = fitted["covariance_type"]
        if "feature_names_in_" in fitted:
            names = fitted["feature_names_in_"]
            if (not isinstance(names, list) or len(names) != out["n_features_in_"]
                    or not all(isinstance(name, str) for name in names)):
                raise self.damaged("fitted feature_names_in_ is not a list of "
                                   "n_features_in_ strings")
            out["feature_names_in_"] = np.asarray(names, dtype=object)
        return out

    # -- arrays.npz --------------------------------------------------------------------
    def read_arrays(self, meta: dict[str, Any], required: set[str]) -> dict[str, np.ndarray]:
        declared = meta["arrays"]
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

        npz_path = self.path / ARRAYS_FILE
        if not npz_path.is_file():
            raise self.fail(
                "arrays.npz is missing",
                "The model directory is incomplete or damaged; save the model again.",
            )
        try:
            with open(npz_path, "rb") as handle:
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
        arrays: dict[str, np.ndarray] = {}
        try:
            loaded = np.load(npz_path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise self.damaged("arrays.npz is not an .npz archive (it holds a single "
                                   "array or other data)")
            with loaded as npz:
                stored = set(npz.files)
                if stored != required:
                    parts = []
                    if required - stored:
                        parts.append(f"missing {sorted(required - stored)}")
                    if stored - required:
                        parts.append(f"unexpected {sorted(stored - required)}")
                    raise self.damaged(
                        "arrays.npz does not hold the arrays model.json declares ("
                        + ", ".join(parts) + ")"
                    )
                for name in sorted(required):
                    arrays[name] = npz[name]
        except ModelFormatError:
            raise
        except ValueError as exc:
            if "pickle" in str(exc).lower():
                raise self._pickled("arrays.npz holds pickled (object) arrays") from exc
            raise self.damaged(f"arrays.npz cannot be read ({exc})") from exc
        except Exception as exc:  # zipfile.BadZipFile, OSError, EOFError, ...
            raise self.damaged(
                f"arrays.npz cannot be read ({type(exc).__name__}: {exc})") from exc

        for name, array in arrays.items():
            spec = declared[name]
            if array.dtype.kind not in "fiu":
                raise self.damaged(f"array {name!r} has the non-numeric dtype {array.dtype}")
            if array.dtype.str != spec["dtype"] or list(array.shape) != spec["shape"]:
                raise self.damaged(
                    f"array {name!r} in arrays.npz has shape {array.shape} and dtype "
                    f"{array.dtype.str}, but model.json declares shape "
                    f"{tuple(spec['shape'])} and dtype {spec['dtype']}"
                )
            if _checksum(array) != spec["sha256"]:
                raise self.fail(
                    f"damaged: arrays.npz does not match the checksums in model.json "
                    f"(array {name!r})",
                    "The files were modified or corrupted; save the model again.",
                )
        return {name: array.astype(np.float64, copy=False) for name, array in arrays.items()}

    def check_values(self, fitted: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        cov, k, d = fitted["covariance_type"], fitted["n_components"], fitted["n_features_in_"]
        for name, shape in _expected_shapes(cov, k, d).items():
            if arrays[name].shape != shape:
                raise self.damaged(
                    f"{name} has shape {arrays[name].shape}, but a {cov!r} model with "
                    f"n_components={k} and n_features={d} needs {shape}"
                )
            if not np.isfinite(arrays[name]).all():
                raise self.damaged(f"{name} holds NaN or infinite values")
        if arrays["lower_bounds_"].ndim != 1:
            raise self.damaged("lower_bounds_ is not one-dimensional")
        for name in _INIT_ARRAYS.values():
            if name in arrays and not np.isfinite(arrays[name]).all():
                raise self.damaged(f"{name} holds NaN or infinite values")
        weights = arrays["weights_"]
        if weights.min() < 0.0 or not math.isclose(weights.sum(), 1.0, abs_tol=1e-6):
            raise self.damaged("weights_ are not non-negative numbers summing to 1")
        pc = arrays["precisions_cholesky_"]
        diagonal = {"full": lambda: np.diagonal(pc, axis1=1, axis2=2),
                    "tied": lambda: np.diagonal(pc)}.get(cov, lambda: pc)()
        if not (diagonal > 0.0).all():
            raise self.damaged("precisions_cholesky_ has non-positive diagonal entries")

    def read_params(self, meta: dict[str, Any], valid_names: set[str]) -> dict[str, Any]:
        params = meta["params"]
        unknown = sorted(set(params) - valid_names)
        if unknown:
            raise self.fail(
                f"model.json has parameters this daskgmm does not know: {unknown}",
                "It was probably written by a newer daskgmm; upgrade daskgmm to load it.",
            )
        return dict(params)

    def read(self) -> tuple[dict[str, Any], GaussianMixture, dict[str, Any],
                            dict[str, np.ndarray]]:
        """Validate the directory; return (metadata, model, fitted values, arrays)."""
        from daskgmm.models.gaussian import GaussianMixture

        meta = self.read_metadata()
        params = self.read_params(meta, set(GaussianMixture().get_params(deep=False)))
        fitted = self.read_fitted(meta)

        required = set(_FITTED_ARRAYS)
        for name, key in _INIT_ARRAYS.items():
            value = params.get(name)
            if value is None:
                continue
            if value != {"array": key}:
                raise self.damaged(f"parameter {name} = {value!r} is neither null nor "
                                   f"{{'array': {key!r}}}")
            required.add(key)
        for name, value in params.items():
            if name in _INIT_ARRAYS:
                continue
            if isinstance(value, dict):
                decoded = _decode_float(value)
                if decoded is None:
                    raise self.damaged(f"parameter {name} = {value!r} is not a plain value")
                params[name] = decoded
            elif isinstance(value, list):
                raise self.damaged(f"parameter {name} = {value!r} is not a plain value")
        for key in ("n_components", "covariance_type"):
            if params.get(key, getattr(GaussianMixture(), key)) != fitted[key]:
                raise self.damaged(
                    f"parameter {key} = {params.get(key)!r} contradicts the fitted "
                    f"value {fitted[key]!r}"
                )

        arrays = self.read_arrays(meta, required)
        self.check_values(fitted, arrays)
        for name, key in _INIT_ARRAYS.items():
            if key in arrays:
                params[name] = arrays[key]

        model = GaussianMixture(**params)
        try:
            model._validate_params()
        except (TypeError, ValueError) as exc:
            raise self.damaged(f"model.json holds invalid parameters ({exc})") from exc
        for name in _FITTED_ARRAYS[:-1]:
            setattr(model, name, arrays[name])
        model.lower_bounds_ = [float(value) for value in arrays["lower_bounds_"]]
        for name in ("converged_", "n_iter_", "lower_bound_", "n_features_in_"):
            setattr(model, name, fitted[name])
        if "feature_names_in_" in fitted:
            model.feature_names_in_ = fitted["feature_names_in_"]
        return meta, model, fitted, arrays


def load_model(path: str | os.PathLike[str]) -> GaussianMixture:
    """Load a model saved by :func:`save_model` (``GaussianMixture.save``).

    Parameters
    ----------
    path : str or os.PathLike
        The model directory.

    Returns
    -------
    GaussianMixture
        A fitted estimator whose ``predict``, ``predict_proba`` and ``score_samples``
        give results identical, bit for bit, to the saved model's.

    Raises
    ------
    daskgmm.errors.ModelFormatError
        If the directory is missing, incomplete (no ``model.json``), foreign, written by
        a newer daskgmm, damaged (invalid JSON, missing or unexpected arrays, checksum
        mismatch, wrong shapes, non-finite values), or holds pickled data. The message
        names the directory, the problem and what to do.

    Notes
    -----
    The arrays are read with ``numpy.load(..., allow_pickle=False)``: loading never
    runs code from the files.
    """
    _meta, model, _fitted, _arrays = _Reader(path).read()
    return model


#: Alias of :func:`load_model`, exported as ``daskgmm.load``.
load = load_model


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        decoded = _decode_float(value)
        if decoded is not None:
            return f"{decoded:.6g}"
        return "{" + ", ".join(f"{k}: {_format_value(v)}" for k, v in value.items()) + "}"
    return str(value)


def model_summary(path: str | os.PathLike[str], *, max_weights: int = 12) -> str:
    """A short human-readable description of a saved model (``daskgmm info DIR``).

    The directory is fully validated first, as by :func:`load_model`.

    Parameters
    ----------
    path : str or os.PathLike
        The model directory.
    max_weights : int, default=12
        At most this many mixture weights are listed.

    Returns
    -------
    str
        A few lines, without a trailing newline.

    Raises
    ------
    daskgmm.errors.ModelFormatError
        As :func:`load_model`.
    """
    reader = _Reader(path)
    meta, _model, fitted, arrays = reader.read()
    k, d = fitted["n_components"], fitted["n_features_in_"]
    weights = arrays["weights_"]
    shown = " ".join(f"{w:.4f}" for w in weights[:max_weights])
    if len(weights) > max_weights:
        shown += f" ... ({len(weights) - max_weights} more)"
    status = "converged" if fitted["converged_"] else "did not converge"
    lines = [
        f"daskgmm model {reader.path}",
        f"  format:        {FORMAT} v{meta['format_version']}, written by daskgmm "
        f"{meta.get('daskgmm_version', '?')} on {meta.get('created', '?')}",
        f"  model:         GaussianMixture, covariance_type={fitted['covariance_type']!r}, "
        f"K={k} components, D={d} features",
        f"  fit:           {status} after {fitted['n_iter_']} iterations, "
        f"lower bound {fitted['lower_bound_']:.6g} per sample",
        f"  weights:       {shown}",
    ]
    for note in meta.get("notes") or []:
        lines.append(f"  note:          {note}")
    extra = meta.get("metadata")
    if isinstance(extra, dict):
        for key, value in extra.items():
            lines.append(f"  {key + ':':<14} {_format_value(value)}")
    return "\n".join(lines)
