"""Checkpoints of a running fit, so that a killed run resumes where it stopped.

A checkpoint is one JSON file, ``checkpoint.json``, written atomically (temporary file,
then ``os.replace``) after every ``checkpoint_every`` EM iterations. It holds every
restart's parameters and EM state (iteration, log-likelihood history, convergence) with
floats written exactly (Python's shortest round-trip representation), so a resumed fit
computes the very same numbers an uninterrupted one would. The random state is not
needed: it is only used by the initialisation, which is complete before the first
checkpoint.

A checkpoint also records a fingerprint of the data (shape, dtype, row chunks and a
digest of three rows) and of the model configuration; resuming against anything else is
refused with :class:`~daskgmm.errors.CheckpointError`. Loading never executes code.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from daskgmm.engine.em import RestartState
from daskgmm.engine.params import MixtureParams
from daskgmm.engine.passes import RowChunks
from daskgmm.errors import CheckpointError
from daskgmm.io.atomic import write_text_atomic

FILENAME = "checkpoint.json"
FORMAT = "daskgmm-checkpoint"
FORMAT_VERSION = 1

#: Estimator parameters that must match for a checkpoint to be resumed.
CONFIG_KEYS = ("n_components", "covariance_type", "tol", "reg_covar", "n_init",
               "init_params", "random_state", "dtype", "split_every", "chunk_rows")


def _digest(value: Any) -> str | None:
    if value is None:
        return None
    return hashlib.sha256(np.ascontiguousarray(value, dtype=np.float64).tobytes()).hexdigest()


def fingerprint(chunks: RowChunks, params: dict[str, Any]) -> dict[str, Any]:
    """What a checkpoint must match: the data (cheaply) and the model configuration.

    Reads three rows of the data (first, middle, last).
    """
    n, d = chunks.shape
    rows = chunks.take_rows(np.unique([0, n // 2, n - 1]))
    config: dict[str, Any] = {}
    for key in CONFIG_KEYS:
        value = params.get(key)
        config[key] = value if isinstance(value, (int, float, str, bool, type(None))) \
            else repr(value)
    for key in ("weights_init", "means_init", "precisions_init"):
        config[key] = _digest(params.get(key))
    return {
        "data": {
            "shape": [n, d],
            "dtype": str(chunks.data.dtype),
            "row_chunks": hashlib.sha256(
                json.dumps(chunks.row_bounds).encode()).hexdigest(),
            "rows_sha256": _digest(rows),
        },
        "config": config,
    }


def _state_to_json(state: RestartState) -> dict[str, Any]:
    p = state.params
    return {
        "index": state.index,
        "weights": p.weights.tolist(),
        "means": p.means.tolist(),
        "precisions_cholesky": p.precisions_cholesky.tolist(),
        "covariances": None if p.covariances is None else np.asarray(p.covariances).tolist(),
        "lower_bound": state.lower_bound,
        "lower_bounds": list(state.lower_bounds),
        "n_iter": state.n_iter,
        "converged": state.converged,
        "active": state.active,
    }


def _state_from_json(raw: dict[str, Any], covariance_type: str) -> RestartState:
    covariances = raw["covariances"]
    params = MixtureParams(
        covariance_type,
        np.asarray(raw["weights"], dtype=np.float64),
        np.asarray(raw["means"], dtype=np.float64),
        np.asarray(raw["precisions_cholesky"], dtype=np.float64),
        None if covariances is None else np.asarray(covariances, dtype=np.float64),
    )
    return RestartState(
        index=int(raw["index"]), params=params, lower_bound=float(raw["lower_bound"]),
        lower_bounds=[float(v) for v in raw["lower_bounds"]], n_iter=int(raw["n_iter"]),
        converged=bool(raw["converged"]), active=bool(raw["active"]),
    )


def save_checkpoint(directory: str | Path, fp: dict[str, Any], iteration: int,
                    states: list[RestartState]) -> Path:
    """Write the checkpoint of ``states`` after ``iteration`` iterations (atomically)."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    body = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fingerprint": fp,
        "iteration": iteration,
        "covariance_type": states[0].params.covariance_type,
        "states": [_state_to_json(s) for s in states],
    }
    target = path / FILENAME
    write_text_atomic(target, json.dumps(body))
    return target


def load_checkpoint(directory: str | Path, fp: dict[str, Any]
                    ) -> tuple[int, list[RestartState]] | None:
    """The iteration and restart states of the checkpoint in ``directory``, if any.

    Returns ``None`` when there is no checkpoint.

    Raises
    ------
    CheckpointError
        If the file is damaged or foreign, or was written for other data or another
        configuration.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(
            f"checkpoint_dir {directory} is a file, not a directory; give a directory path."
        )
    target = directory / FILENAME
    if not target.exists():
        return None
    where = f"checkpoint {target}"
    try:
        body = json.loads(target.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"{where} is damaged ({exc}); delete it to start the fit afresh."
        ) from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise CheckpointError(
            f"{where} is not a daskgmm checkpoint; point checkpoint_dir elsewhere."
        )
    if body.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has format version {body.get('format_version')!r}; this daskgmm "
            f"reads version {FORMAT_VERSION}. Delete it to start afresh."
        )
    saved = body.get("fingerprint", {})
    for section, what in (("data", "other data"), ("config", "another configuration")):
        if saved.get(section) != fp[section]:
            diff = _differences(saved.get(section) or {}, fp[section])
            raise CheckpointError(
                f"{where} belongs to {what} ({diff}). Resume with the data and settings "
                "of the original run, or delete the checkpoint to start afresh."
            )
    try:
        if body.get("covariance_type") != fp["config"]["covariance_type"]:
            raise ValueError(f"covariance_type {body.get('covariance_type')!r}")
        states = [_state_from_json(s, body["covariance_type"]) for s in body["states"]]
        iteration = int(body["iteration"])
        for state in states:
            _validate_state(state, fp)
        if not states:
            raise ValueError("no valid states")
    except Exception as exc:  # anything in a damaged file: never a raw traceback
        raise CheckpointError(f"{where} is damaged ({exc}); delete it to start afresh.") \
            from None
    return iteration, states


def _validate_state(state: RestartState, fp: dict[str, Any]) -> None:
    p = state.params
    K, D = fp["config"]["n_components"], fp["data"]["shape"][1]
    shapes = {"full": (K, D, D), "tied": (D, D), "diag": (K, D), "spherical": (K,)}
    if p.means.shape != (K, D) or p.weights.shape != (K,):
        raise ValueError(f"means/weights of shape {p.means.shape}/{p.weights.shape}, "
                         f"expected {(K, D)}/{(K,)}")
    if p.precisions_cholesky.shape != shapes[p.covariance_type]:
        raise ValueError(f"precisions_cholesky of shape {p.precisions_cholesky.shape}")
    arrays = (p.weights, p.means, p.precisions_cholesky)
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("non-finite parameters")
    if (p.weights < 0).any() or not np.isclose(p.weights.sum(), 1.0):
        raise ValueError("weights are not a probability vector")
    diag = p.precisions_cholesky
    if p.covariance_type in ("full", "tied"):
        diag = np.diagonal(diag, axis1=-2, axis2=-1)
    if (diag <= 0).any():
        raise ValueError("precision Cholesky factors with a non-positive diagonal")
    if not all(math.isfinite(v) for v in state.lower_bounds):
        raise ValueError("non-finite log-likelihood history")


def _differences(saved: dict[str, Any], current: dict[str, Any]) -> str:
    keys = sorted(set(saved) | set(current))
    changed = [k for k in keys if saved.get(k) != current.get(k)]
    parts = [f"{k}: checkpoint has {saved.get(k)!r}, now {current.get(k)!r}"
             for k in changed[:3]]
    return "; ".join(parts) or "differs"
