"""Checkpoints of a running fit, so that a killed run resumes where it stopped.

A checkpoint is one JSON file, ``checkpoint.json``, written atomically every
``checkpoint_every`` EM iterations and after the last one: locally to a temporary file
then ``os.replace``; at a URL (``s3://bucket/run/ckpt`` ...) as a single PUT, which object
stores make visible whole or not at all (:func:`daskgmm.io.storage.write_file_atomic`).
The directory may be a :class:`~daskgmm.io.locations.StoragePath`, a URL string carrying
its ``storage_options`` (the estimators take ``checkpoint_dir`` as a string). It
holds every candidate's parameters and EM state (iteration, lower-bound history,
convergence), the centre the passes use and a digest of the data, with floats written
exactly (Python's shortest round-trip representation), so a resumed fit computes the very
same numbers an uninterrupted one would. The random state is not needed: it only drives
the initialisation, which is complete before the first checkpoint.

What a checkpoint must match to be resumed:

* the fingerprint: the estimator, the data's shape, dtype and row chunks, whether it is
  weighted, and every setting that changes what is computed (``max_iter``, ``verbose``,
  ``cache`` and the checkpoint settings may differ); a random state given as a
  ``RandomState`` is recorded by its state, so the same seed matches in any process;
* the data themselves: the first pass of the original fit digests every chunk it reads
  (CRC-32 of the bytes), and the first pass of a resumed fit does the same and refuses
  other data (one changed value anywhere) before any M-step.

The file carries a SHA-256 checksum of its content (canonical JSON), so a value edited
by hand or damaged on disk -- a mean changed by 0.001, ``"digest": null`` to switch the
data check off -- is refused; it guards against accidents, not against someone who
recomputes the checksum. Each fit writing checkpoints marks them with a random run id,
and before every write checks that the file there is still its own (or the one it
resumed from): a second fit writing to the same ``checkpoint_dir`` is detected at its
first write or at the other's next one, and refused instead of silently replacing the
other's checkpoints. A stepwise checkpoint's group statistics must be present exactly
where the walk through the groups says they are.

Loading never executes code and refuses, with :class:`~daskgmm.errors.CheckpointError`
naming the file and what to do, anything damaged, foreign, oversized or inconsistent.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from daskgmm.engine.em import Candidate, IterationInfo
from daskgmm.errors import CheckpointError
from daskgmm.io.locations import Location, parse_location, scrub_secrets
from daskgmm.io.storage import write_file_atomic
from daskgmm.serialize.schema import (
    MAX_JSON_BYTES,
    array_from_json,
    decode_float,
    encode_float,
    parse_json,
    read_bounded,
)

FILENAME = "checkpoint.json"
FORMAT = "daskgmm-checkpoint"
FORMAT_VERSION = 3


@dataclass
class Resumed:
    """A checkpoint read back."""

    iteration: int
    candidates: list[Candidate]
    digest: str | None
    stepwise: Any = None


def _state_to_json(cand: Candidate) -> dict[str, Any]:
    arrays = cand.model.state_to_arrays(cand.state)
    return {
        "index": cand.index,
        "label": cand.label,
        "centre": np.asarray(cand.centre, dtype=np.float64).tolist(),
        "arrays": {name: np.asarray(value).tolist() for name, value in arrays.items()},
        "lower_bound": encode_float(cand.lower_bound),
        "lower_bounds": [encode_float(v) for v in cand.lower_bounds],
        "n_iter": cand.n_iter,
        "converged": cand.converged,
        "active": cand.active,
    }


def _canonical(body: dict[str, Any]) -> bytes:
    """The checkpoint's content without its checksum, as canonical JSON."""
    content = {k: v for k, v in body.items() if k != "checksum"}
    return json.dumps(content, sort_keys=True, separators=(",", ":")).encode("utf-8")


def seal(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with the checksum of its content (the last field written)."""
    body["checksum"] = hashlib.sha256(_canonical(body)).hexdigest()
    return body


def is_sealed(body: dict[str, Any]) -> bool:
    """Whether ``body`` holds the checksum of its content."""
    checksum = body.get("checksum")
    return isinstance(checksum, str) and checksum == hashlib.sha256(
        _canonical(body)).hexdigest()


class Checkpointer:
    """Writes and reads the checkpoint of one fit.

    Parameters
    ----------
    directory : path-like, URL or Location
        The checkpoint directory (created when the first checkpoint is written), local
        or at a URL.
    fingerprint : dict
        What a checkpoint must match (see the module docstring).
    every : int
        Write every this many iterations (and after the last).
    storage_options : dict, optional
        Options of the URL's filesystem (default: those of a
        :class:`~daskgmm.io.locations.StoragePath` ``directory``).
    """

    def __init__(self, directory: Any, fingerprint: dict[str, Any], every: int, *,
                 storage_options: dict | None = None) -> None:
        self.location: Location = parse_location(directory, storage_options)
        self.fingerprint = json.loads(json.dumps(fingerprint))  # as it will read back
        self.every = int(every)
        self._digest: str | None = None
        #: JSON-safe facts about the data that the models were built from (e.g. the
        #: moments behind the Bayesian mixture's priors), saved with the states and
        #: read back (before the states) by :meth:`load`.
        self.extra: dict[str, Any] = {}
        self._run = uuid.uuid4().hex  # marks this fit's checkpoints
        self._expected_run: str | None = None  # the run of the checkpoint file there now
        if self.location.isfile():
            raise CheckpointError(
                f"checkpoint_dir {self.location.display} is a file, not a directory; give "
                "a directory path."
            )

    @property
    def directory(self) -> str:
        """The checkpoint directory (a local path, or the URL without credentials)."""
        return self.location.display

    @property
    def path(self) -> str:
        """The checkpoint file (a local path, or the URL without credentials)."""
        return self.location.join(FILENAME).display

    # -- writing -----------------------------------------------------------------------
    def __call__(self, info: IterationInfo) -> None:
        """Observer of the EM loop: write the checkpoint when it is due (every ``every``
        iterations, or group updates for the stepwise algorithms, and after the last)."""
        if info.digest is not None:
            self._digest = info.digest
        last = info.iteration == info.max_iter or not any(c.active for c in info.states)
        count = info.iteration if info.stepwise is None else info.stepwise.updates
        if last or count % self.every == 0:
            self.save(info.iteration, info.states, info.stepwise)

    def save(self, iteration: int, candidates: list[Candidate], stepwise: Any = None
             ) -> str:
        """Write the checkpoint of ``candidates`` after ``iteration`` iterations (passes)
        and, for the stepwise algorithms, where they stand within the next pass."""
        body = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "run": self._run,
            "fingerprint": self.fingerprint,
            "iteration": int(iteration),
            "digest": self._digest,
            "states": [_state_to_json(c) for c in candidates],
        }
        if stepwise is not None:
            body["stepwise"] = _stepwise_to_json(stepwise)
        if self.extra:
            body["extra"] = self.extra
        text = json.dumps(seal(body)).encode("utf-8")
        self._refuse_another_fits_checkpoint()
        target = self.location.join(FILENAME)
        if target.is_local:
            os.makedirs(self.location.path, exist_ok=True)
        write_file_atomic(target, text)
        self._expected_run = self._run
        return self.path

    def _refuse_another_fits_checkpoint(self) -> None:
        """Refuse to replace a checkpoint another fit wrote since this one looked (two
        fits sharing a ``checkpoint_dir`` would destroy each other's checkpoints)."""
        try:
            found = read_checkpoint_bytes(self.location)
            body = parse_json(found) if found is not None else None
        except (CheckpointError, ValueError):
            return  # damaged or unreadable: nothing to keep, the write replaces it
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            return
        run = body.get("run")
        if run in (self._run, self._expected_run):
            return
        other = body.get("fingerprint")
        diff = (_differences(other.get("config"), self.fingerprint["config"])
                if isinstance(other, dict) else "")
        settings = ("with the same settings" if diff in ("", "differs") and isinstance(
            other, dict) and other == self.fingerprint else f"with other settings ({diff})")
        raise CheckpointError(
            f"another fit {settings} is writing checkpoints to {self.directory}: the "
            f"checkpoint there (iteration {body.get('iteration')!r}) is not this fit's. "
            "Two fits must not share a checkpoint_dir; give each its own, and rerun this "
            "one.")

    # -- reading -----------------------------------------------------------------------
    def load(self, model_for: Callable[[int], Any]) -> Resumed | None:
        """The checkpoint in the directory, or None when there is none.

        ``model_for(index)`` gives the model of the candidate at ``index``; it may use
        :attr:`extra`, which is read first.

        Raises
        ------
        CheckpointError
            If the file is damaged, foreign, or written for other data or settings.
        """
        found = read_checkpoint_bytes(self.location)
        if found is None:
            return None
        where = f"checkpoint {self.path}"
        try:
            body = parse_json(found)
        except (OSError, ValueError) as exc:
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
        if not is_sealed(body):
            raise CheckpointError(
                f"{where} does not match its checksum: it was edited or damaged after it "
                "was written. A checkpoint is resumed only as it was written; delete it "
                "to start afresh."
            )
        saved = body.get("fingerprint")
        saved = saved if isinstance(saved, dict) else {}
        for section, what in (("estimator", "another estimator"), ("data", "other data"),
                              ("config", "another configuration")):
            if saved.get(section) != self.fingerprint[section]:
                diff = _differences(saved.get(section), self.fingerprint[section])
                raise CheckpointError(
                    f"{where} belongs to {what} ({diff}). Resume with the data and settings "
                    "of the original run, or delete the checkpoint to start afresh."
                )
        try:
            resumed = self._parse(body, model_for)
        except Exception as exc:  # anything in a damaged file: never a raw traceback
            raise CheckpointError(f"{where} is damaged ({exc}); delete it to start "
                                  "afresh.") from None
        run = body.get("run")
        self._expected_run = run if isinstance(run, str) else None
        return resumed

    def _parse(self, body: dict[str, Any], model_for: Callable[[int], Any]) -> Resumed:
        iteration = body["iteration"]
        least = 0 if "stepwise" in body else 1  # mid-first-pass stepwise checkpoints: 0
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < least:
            raise ValueError(f"iteration {iteration!r}")
        D = self.fingerprint["data"]["shape"][1]
        digest = body.get("digest")
        if digest is not None and not isinstance(digest, str):
            raise ValueError("digest is not a string")
        extra = body.get("extra", {})
        if not isinstance(extra, dict):
            raise ValueError("extra is not an object")
        self.extra = extra
        if digest is None and "stepwise" not in body:
            # Batch EM digests the data in its first pass, before any checkpoint.
            raise ValueError("it holds no digest of the data")
        raw_states = body["states"]
        if not isinstance(raw_states, list) or not raw_states:
            raise ValueError("no candidate states")
        candidates = []
        for position, raw in enumerate(raw_states):
            if raw.get("index") != position:
                raise ValueError(f"state {position} has index {raw.get('index')!r}")
            model = model_for(position)
            centre = array_from_json(raw["centre"], "centre", ndim=1)
            if centre.shape != (D,):
                raise ValueError(f"centre of shape {centre.shape}")
            arrays = {name: array_from_json(value, name)
                      for name, value in raw["arrays"].items()}
            state = model.state_from_arrays(arrays, D)
            bounds = [decode_float(v) for v in raw["lower_bounds"]]
            if any(b is None or not np.isfinite(b) for b in bounds):
                raise ValueError("non-finite lower-bound history")
            lower_bound = decode_float(raw["lower_bound"])
            if lower_bound is None:
                raise ValueError("lower_bound is not a number")
            n_iter = raw["n_iter"]
            if isinstance(n_iter, bool) or not isinstance(n_iter, int) or not (
                    0 <= n_iter <= iteration):
                raise ValueError(f"n_iter {n_iter!r}")
            if not all(isinstance(raw[k], bool) for k in ("converged", "active")):
                raise ValueError("converged/active are not booleans")
            candidates.append(Candidate(position, model, state, centre,
                                        str(raw.get("label", "")), lower_bound, bounds,
                                        n_iter, raw["converged"], raw["active"]))
        self._digest = digest
        stepwise = None
        if "stepwise" in body:
            stepwise = _stepwise_from_json(body["stepwise"], candidates, D)
            if stepwise.passes != iteration:
                raise ValueError("stepwise passes differ from the iteration")
            _check_stepwise_walk(stepwise,
                                 self.fingerprint["config"].get("algorithm") == "incremental")
        return Resumed(iteration, candidates, digest, stepwise)


_STATS_KEYS = ("n", "ll", "ent", "nk", "sx", "s2")
#: The statistics of data with missing values add these (``daskgmm.engine.marginal``).
_MISSING_STATS_KEYS = ("n_empty", "n_obs", "h_missing")


def _stats_to_json(stats: Any) -> Any:
    if stats is None:
        return None
    return {key: np.asarray(value, dtype=np.float64).tolist() for key, value in stats.items()}


def _stats_from_json(raw: Any, model: Any, n_features: int) -> Any:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) not in (
            set(_STATS_KEYS), set(_STATS_KEYS + _MISSING_STATS_KEYS)):
        raise ValueError("statistics with unexpected entries")
    K, cov = model.n_components, model.covariance
    shapes = {"n": (), "ll": (), "ent": (), "nk": (K,), "sx": (K, n_features),
              "s2": cov.zero_statistic(K, n_features).shape}
    shapes.update({key: () for key in _MISSING_STATS_KEYS if key in raw})
    stats = {}
    for key, shape in shapes.items():
        value = array_from_json(raw[key], key)
        if value.shape != shape:
            raise ValueError(f"statistic {key} of shape {value.shape}, expected {shape}")
        stats[key] = value
    return stats


def _stepwise_to_json(state: Any) -> dict[str, Any]:
    return {
        "passes": state.passes, "position": state.position, "order": list(state.order),
        "updates": state.updates, "batch_chunks": state.batch_chunks, "seed": state.seed,
        "totals": [_stats_to_json(s) for s in state.totals],
        "groups": [[_stats_to_json(s) for s in row] for row in state.groups],
        "running": [_stats_to_json(s) for s in state.running],
        "pass_ll": [float(v) for v in state.pass_ll],
        "pass_n": [float(v) for v in state.pass_n],
        "digests": {str(k): int(v) for k, v in state.digests.items()},
    }


def _stepwise_from_json(raw: Any, candidates: list[Candidate], n_features: int) -> Any:
    from daskgmm.engine.stepwise import StepwiseState

    ints = {}
    for key in ("passes", "position", "updates", "batch_chunks", "seed"):
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"stepwise {key} {value!r}")
        ints[key] = value
    C = len(candidates)
    models = [c.model for c in candidates]
    groups = raw["groups"]
    if (len(raw["totals"]) != C or len(raw["running"]) != C or len(groups) != C
            or len(raw["pass_ll"]) != C or len(raw["pass_n"]) != C):
        raise ValueError("stepwise state for another number of candidates")
    order = [int(g) for g in raw["order"]]
    return StepwiseState(
        **ints, order=order,
        totals=[_stats_from_json(s, m, n_features) for s, m in zip(raw["totals"], models,
                                                                  strict=True)],
        groups=[[_stats_from_json(s, m, n_features) for s in row]
                for row, m in zip(groups, models, strict=True)],
        running=[_stats_from_json(s, m, n_features) for s, m in zip(raw["running"], models,
                                                                    strict=True)],
        pass_ll=[float(v) for v in raw["pass_ll"]], pass_n=[float(v) for v in raw["pass_n"]],
        digests={int(k): int(v) for k, v in raw["digests"].items()},
    )


def _check_stepwise_walk(state: Any, incremental: bool) -> None:
    """Refuse stepwise statistics missing, or present, where the walk through the groups
    (``passes``, ``position``, ``order``) says otherwise (a value that would stop the
    resumed fit with a TypeError, or silently drop a group)."""
    n_groups = len(state.order) if state.order else (len(state.groups[0])
                                                     if state.groups else 0)
    if any(len(row) != n_groups for row in state.groups):
        raise ValueError("stepwise groups of unequal lengths")
    if state.position >= max(n_groups, 1) or (
            state.order and sorted(state.order) != list(range(n_groups))):
        raise ValueError(f"stepwise position {state.position} or order {state.order[:8]}"
                         " is not a walk through the groups")
    for i, row in enumerate(state.groups):
        if not incremental:
            if any(s is not None for s in row) or state.totals[i] is not None:
                raise ValueError("online EM state holds group statistics")
            if (state.running[i] is None) != (state.updates == 0):
                raise ValueError(f"candidate {i} has no running statistics")
            continue
        if state.passes > 0:
            seen = set(range(n_groups))
        else:
            seen = set(state.order[:state.position])
        for g, stats in enumerate(row):
            if (stats is None) == (g in seen):
                raise ValueError(f"group {g} of candidate {i} "
                                 + ("has no statistics though it was read"
                                    if stats is None else "has statistics before it is read"))
        if (state.totals[i] is None) != (not seen):
            raise ValueError(f"candidate {i} has {'no ' if not seen else ''}totals")


def _differences(saved: Any, current: Any) -> str:
    if not isinstance(saved, dict) or not isinstance(current, dict):
        return f"checkpoint has {str(saved)[:80]!r}, now {str(current)[:80]!r}"
    keys = sorted(set(saved) | set(current))
    changed = [k for k in keys if saved.get(k) != current.get(k)]
    parts = [f"{k}: checkpoint has {str(saved.get(k))[:60]!r}, now "
             f"{str(current.get(k))[:60]!r}" for k in changed[:3]]
    return "; ".join(parts) or "differs"


def read_checkpoint_bytes(directory: Any, storage_options: dict | None = None
                          ) -> bytes | None:
    """The bytes of the checkpoint file in ``directory`` (local or URL), or None when
    there is none.

    Raises
    ------
    CheckpointError
        The file exists but cannot be read, or is larger than the JSON limit.
    """
    loc = parse_location(directory, storage_options).join(FILENAME)
    shown = f"checkpoint {loc.display}"
    if loc.is_local:
        if not os.path.lexists(loc.path):
            return None
        try:
            size = os.path.getsize(loc.path)
            if size > MAX_JSON_BYTES:
                raise CheckpointError(f"{shown} is damaged (it is {size:,} bytes, more than "
                                      f"the {MAX_JSON_BYTES:,} accepted); delete it to start "
                                      "the fit afresh.")
            with open(loc.path, "rb") as handle:
                return read_bounded(handle, MAX_JSON_BYTES)
        except OSError as exc:
            raise CheckpointError(f"{shown} is damaged or unreadable ({exc.strerror or exc}); "
                                  "delete it to start the fit afresh.") from None
    try:
        size = loc.info().get("size")
        if isinstance(size, int) and size > MAX_JSON_BYTES:
            raise CheckpointError(f"{shown} is damaged (it is {size:,} bytes, more than the "
                                  f"{MAX_JSON_BYTES:,} accepted); delete it to start the fit "
                                  "afresh.")
        with loc.open("rb") as handle:
            return read_bounded(handle, MAX_JSON_BYTES)
    except FileNotFoundError:
        return None
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{shown} cannot be read ({type(exc).__name__}: "
                              f"{scrub_secrets(str(exc))}); check the storage options and the "
                              "permissions, or delete it to start afresh.") from None


def checkpoint_iteration(directory: Any, storage_options: dict | None = None) -> int | None:
    """The iteration of the checkpoint in ``directory`` (local or URL; None if there is
    none or it cannot be read); never raises."""
    try:
        raw = read_checkpoint_bytes(directory, storage_options)
        body = parse_json(raw) if raw is not None else None
        value = body.get("iteration") if isinstance(body, dict) else None
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    except Exception:
        return None
