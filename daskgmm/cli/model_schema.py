"""The ``model`` section of a run configuration, derived from the estimator itself.

The keys a ``model`` section accepts, their defaults and their constraints are read from
the estimator class that ``model.kind`` names (``GaussianMixture`` for ``gaussian``,
``BayesianGaussianMixture`` for ``bayesian``): its ``get_params()`` gives the keys and the
defaults, its scikit-learn-style ``_parameter_constraints`` table the allowed values.
Nothing is repeated here, so a parameter added to an estimator is accepted (and
checked) in YAML without an edit to this module. What this module adds is what YAML
needs and the table cannot say:

* messages that name the key path, the expected and the given value
  (``model.n_components: must be >= 1, got 0``), with a suggestion for a misspelt key;
* YAML spellings: ``1e-3`` (a string for YAML 1.1) is read as a number where a number is
  expected, and ``true``/``false`` are never taken for numbers;
* nested lists for array parameters (``weights_init``, ``means_init``,
  ``precisions_init``), with the position of a bad element and the checks against
  ``n_components`` that can be done before the data is read;
* sweeps for model selection: ``n_components`` as a list or ``{min, max}`` and
  ``covariance_type`` as a list (see :data:`SWEEPABLE`).

After these checks the estimator's own ``_validate_params`` is run on the values, so
the estimator remains the judge of what is valid.

Parameters that other sections set (``checkpoint_dir``, ``checkpoint_every``,
``chunk_rows``) are refused here with a pointer to their section.
"""

from __future__ import annotations

import difflib
import importlib
import math
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["KINDS", "MANAGED_ELSEWHERE", "SWEEPABLE", "estimator_class",
           "validate_model_section"]

KINDS = {"gaussian": "GaussianMixture", "bayesian": "BayesianGaussianMixture"}
"""``model.kind`` -> the name of the estimator class in the :mod:`daskgmm` facade."""

MANAGED_ELSEWHERE = {
    "checkpoint_dir": "set checkpoint.dir instead",
    "checkpoint_every": "set checkpoint.every instead",
    "chunk_rows": "set data.chunk_rows instead",
}
"""Estimator parameters that the run sets from another section of the configuration."""

SWEEPABLE = ("n_components", "covariance_type")
"""Parameters that may be given as several values (a model-selection sweep)."""

# Shapes of the array parameters that YAML can check before the data is read:
# nesting depth(s), whether the first axis has n_components entries, value bounds.
_ARRAYS: dict[str, dict[str, Any]] = {
    "weights_init": {"depths": (1,), "per_component": True, "bounds": (0.0, 1.0)},
    "means_init": {"depths": (2,), "per_component": True, "bounds": None},
    "precisions_init": {"depths": (1, 2, 3), "per_component": False, "bounds": None},
}
_GENERIC_ARRAY = {"depths": (1, 2, 3), "per_component": False, "bounds": None}

Path = tuple[str | int, ...]
Problem = tuple[Path, str]


class _Problems(Exception):
    """Raised with every problem of the section (each a key path and a message)."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__(problems)
        self.problems = problems


def fmt(value: Any, limit: int = 60) -> str:
    """Show a user-given value in a message: YAML spelling, bounded work and length.

    The representation is built with :mod:`reprlib` limits (a few elements per level, a
    few levels), so a huge or self-referencing structure costs nothing to show.
    """
    import reprlib

    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxlist, shown.maxdict = 6, 6, 4
    shown.maxstring, shown.maxother, shown.maxlong = limit, limit, limit
    text = shown.repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def estimator_class(kind: str) -> type | None:
    """The estimator class of ``model.kind``, or None when this daskgmm lacks it."""
    name = KINDS.get(kind)
    if name is None:
        return None
    daskgmm = importlib.import_module("daskgmm")
    try:
        return getattr(daskgmm, name)
    except AttributeError:
        return None


# ---------------------------------------------------------------------------------------
# Constraints -> checks and messages
# ---------------------------------------------------------------------------------------


def _constraints(cls: type, name: str) -> list[Any]:
    from sklearn.utils._param_validation import make_constraint

    table = getattr(cls, "_parameter_constraints", {}) or {}
    raw = table.get(name)
    if raw is None or raw == "no_validation":
        return []
    return [make_constraint(c) for c in raw]


def _kind_of(constraint: Any) -> str:
    return type(constraint).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _as_float(value: Any) -> Any:
    """``'1e-3'`` (YAML 1.1 reads it as text) -> 0.001; anything else unchanged."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return value
        if value.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity",
                                         "-infinity", "+infinity"):
            return number
    return value


def _interval_message(interval: Any, value: Any) -> str | None:
    """Why ``value`` is outside ``interval`` (None when inside)."""
    left, right, closed = interval.left, interval.right, interval.closed
    if left is not None:
        ok = value >= left if closed in ("left", "both") else value > left
        if not ok:
            symbol = ">=" if closed in ("left", "both") else ">"
            return f"must be {symbol} {_number(left)}"
    if right is not None:
        ok = value <= right if closed in ("right", "both") else value < right
        if not ok:
            symbol = "<=" if closed in ("right", "both") else "<"
            return f"must be {symbol} {_number(right)}"
    return None


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _choices(constraints: list[Any]) -> list[Any]:
    """The discrete values the constraints allow, in a stable order (string options
    sorted, then true/false, then null)."""
    out: list[Any] = []
    for c in constraints:
        kind = _kind_of(c)
        if kind in ("StrOptions", "Options"):
            internal = getattr(c, "internal", ()) or ()
            out.extend(sorted((o for o in c.options if o not in internal), key=str))
        elif kind == "_Booleans":
            out.extend([True, False])
        elif kind in ("_NoneConstraint", "_RandomStates"):
            out.append(None)
    return [o for i, o in enumerate(out)
            if not any(o is p or (type(o) is type(p) and o == p) for p in out[:i])]


def _numeric(constraints: list[Any]) -> list[Any]:
    """The intervals a number may fall in (random_state and verbose included)."""
    from sklearn.utils._param_validation import Interval

    out = []
    for c in constraints:
        kind = _kind_of(c)
        if kind == "Interval":
            out.append(c)
        elif kind == "_RandomStates":
            out.append(Interval(numbers.Integral, 0, 2**32 - 1, closed="both"))
        elif kind == "_VerboseHelper":
            out.append(Interval(numbers.Integral, 0, None, closed="left"))
    return out


def _check_scalar(value: Any, constraints: list[Any], default: Any
                  ) -> tuple[Any, str | None]:
    """Check one value against a parameter's constraints.

    Returns
    -------
    value, message
        The value as the estimator should receive it (``'1e-3'`` -> ``0.001``) and None,
        or the value as given and the reason it is refused (without ``got ...``).
    """
    if not constraints:
        return value, None
    kinds = {_kind_of(c) for c in constraints}
    choices = _choices(constraints)
    if value is None or isinstance(value, bool):
        allowed = any(value is c for c in choices)
        return value, None if allowed else _expected(constraints, default)
    if isinstance(value, str | numbers.Real) and any(
            type(value) is type(c) and value == c for c in choices):
        return value, None
    intervals = _numeric(constraints)
    if intervals:
        real = any(not issubclass(c.type, numbers.Integral) for c in intervals)
        candidate = _as_float(value) if real else value
        if real and isinstance(candidate, float) and not math.isfinite(candidate):
            return value, "must be a finite number"
        if _is_number(candidate):
            fitting = [c for c in intervals if isinstance(candidate, c.type)]
            if fitting:
                reasons = [_interval_message(c, candidate) for c in fitting]
                if any(r is None for r in reasons):
                    return candidate, None
                return value, reasons[0]
    for c in constraints:
        if _kind_of(c) == "_InstancesOf" and isinstance(value, c.type):
            return value, None
    if "_ArrayLikes" in kinds and isinstance(value, list):
        return value, None
    return value, _expected(constraints, default)


def _expected(constraints: list[Any], default: Any) -> str:
    """``must be ...`` for a value of a kind that none of the constraints allows."""
    parts: list[str] = []
    for c in constraints:
        kind = _kind_of(c)
        if kind == "Interval":
            parts.append("an integer" if issubclass(c.type, numbers.Integral) else "a number")
        elif kind in ("_RandomStates", "_VerboseHelper"):
            parts.append("an integer")
        elif kind == "_ArrayLikes":
            parts.append("a list")
        elif kind == "_InstancesOf":
            parts.append({str: "a string", int: "an integer", float: "a number",
                          list: "a list", dict: "a mapping"}.get(
                              c.type, f"a {getattr(c.type, '__name__', c.type)}"))
        elif kind in ("StrOptions", "Options", "_Booleans", "_NoneConstraint"):
            continue
        elif not getattr(c, "hidden", False):
            parts.append(str(c))
    parts = [p for i, p in enumerate(parts) if p not in parts[:i]]
    choices = _choices(constraints)
    choices.sort(key=lambda o: not (o is default or (type(o) is type(default)
                                                      and o == default)))
    booleans = [c for c in choices if c is not None]
    if not parts and len(booleans) == 2 and all(isinstance(c, bool) for c in booleans):
        return "must be true or false" + (" or null" if None in choices else "")
    if not parts:
        return "must be one of " + ", ".join(fmt(c) for c in choices)
    if choices:
        parts.extend(fmt(c) for c in choices)
    if len(parts) == 1:
        return f"must be {parts[0]}"
    return "must be " + ", ".join(parts[:-1]) + f" or {parts[-1]}"


# ---------------------------------------------------------------------------------------
# Array parameters (nested lists)
# ---------------------------------------------------------------------------------------


def _check_array(name: str, value: Any, path: Path, n_components: Any) -> list[Problem]:
    spec = _ARRAYS.get(name, _GENERIC_ARRAY)
    if not isinstance(value, list):
        return [(path, f"must be a list, got {fmt(value)}")]
    problems: list[Problem] = []
    depths = spec["depths"]
    if len(depths) == 1:
        problems += _walk_fixed(value, path, depths[0], spec["bounds"])
    else:
        problems += _walk_free(value, path, max(depths))
    if problems:
        return problems
    import numpy as np

    try:
        array = np.asarray(value, dtype=np.float64)
    except ValueError:
        return [(path, "must be a rectangular nested list (all rows of equal length), got "
                 + fmt(value))]
    if array.ndim not in depths:
        if len(depths) > 1:
            return [(path, f"must be a list nested {min(depths)} to {max(depths)} levels "
                     f"deep, got {fmt(value)}")]
        return [(path, f"must be nested {depths[0]} levels deep, got {fmt(value)}")]
    if spec["per_component"] and isinstance(n_components, int):
        unit = "entries" if depths == (1,) else "rows"
        if len(value) != n_components:
            problems.append((path, f"must have n_components = {n_components} {unit}, "
                                   f"got {len(value)}"))
    return problems


def _walk_fixed(value: Any, path: Path, depth: int, bounds: Any) -> list[Problem]:
    """Elements of a list nested exactly ``depth`` levels, with their positions."""
    problems: list[Problem] = []
    if depth > 1:
        lengths = set()
        for i, item in enumerate(value):
            if not isinstance(item, list):
                problems.append(((*path, i), f"must be a list, got {fmt(item)}"))
                continue
            lengths.add(len(item))
            problems += _walk_fixed(item, (*path, i), depth - 1, bounds)
        if not problems and (len(lengths) > 1 or 0 in lengths):
            problems.append((path, "rows must be non-empty and of equal length, got "
                                   f"lengths {sorted(lengths)}"))
        return problems
    for i, item in enumerate(value):
        item = _as_float(item)
        if not _is_number(item):
            problems.append(((*path, i), f"must be a number, got {fmt(item)}"))
        elif not math.isfinite(item):
            problems.append(((*path, i), f"must be a finite number, got {fmt(item)}"))
        elif bounds is not None and item < bounds[0]:
            problems.append(((*path, i), f"must be >= {_number(bounds[0])}, got {fmt(item)}"))
        elif bounds is not None and item > bounds[1]:
            problems.append(((*path, i), f"must be <= {_number(bounds[1])}, got {fmt(item)}"))
    return problems


def _walk_free(value: Any, path: Path, max_depth: int) -> list[Problem]:
    """A nested list of finite numbers at most ``max_depth`` levels deep."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, list):
            if depth > max_depth:
                return [(path, f"must be a list nested 1 to {max_depth} levels deep, got "
                               f"{fmt(value)}")]
            stack.extend((sub, depth + 1) for sub in item)
            continue
        item = _as_float(item)
        if not _is_number(item):
            return [(path, f"must be a nested list of numbers, got {fmt(item)}")]
        if not math.isfinite(item):
            return [(path, f"must hold finite numbers only, got {fmt(item)}")]
    return []


def _to_float_lists(value: Any) -> Any:
    if isinstance(value, list):
        return [_to_float_lists(v) for v in value]
    return _as_float(value)


# ---------------------------------------------------------------------------------------
# Sweeps
# ---------------------------------------------------------------------------------------


def _sweep_values(name: str, value: Any, path: Path) -> tuple[list[Any] | None, list[Problem]]:
    """The values of a sweep (a list, or ``{min, max}`` for integers), or None."""
    if isinstance(value, list):
        if not value:
            return None, [(path, "must list at least one value, got []")]
        return list(value), []
    if isinstance(value, Mapping):
        extra = sorted(str(k) for k in value if k not in ("min", "max"))
        if extra or "min" not in value or "max" not in value:
            return None, [(path, "a range must be {min: A, max: B}, got " + fmt(dict(value)))]
        low, high = value["min"], value["max"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (low, high)):
            return None, [(path, "min and max must be integers, got " + fmt(dict(value)))]
        if low > high:
            return None, [(path, f"min must be <= max, got min {low} and max {high}")]
        if high - low > 10_000:
            return None, [(path, f"a range of at most 10001 values, got {high - low + 1}")]
        return list(range(low, high + 1)), []
    return None, []


# ---------------------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------------------


def validate_model_section(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a ``model`` section against the estimator its ``kind`` names.

    Parameters
    ----------
    raw : Mapping
        The section as read from YAML (``None`` has been replaced by ``{}``).

    Returns
    -------
    dict
        ``kind`` and every estimator parameter the YAML may set, defaults filled in from
        ``get_params()``. Arrays stay nested lists of floats; sweeps stay as given.

    Raises
    ------
    _Problems
        With every problem found, each as ``(key path inside the section, message)``.
    """
    problems: list[Problem] = []
    kind = raw.get("kind", "gaussian")
    if not isinstance(kind, str) or kind not in KINDS:
        raise _Problems([(("kind",), "must be one of "
                          + ", ".join(fmt(k) for k in KINDS) + f", got {fmt(kind)}")])
    cls = estimator_class(kind)
    if cls is None:
        raise _Problems([(("kind",), f"{kind!r} needs daskgmm.{KINDS[kind]}, which this "
                          "version of daskgmm does not have; use 'gaussian'")])
    defaults = cls().get_params(deep=False)
    known = [name for name in defaults if name not in MANAGED_ELSEWHERE]

    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key == "kind":
            continue
        if not isinstance(key, str):
            problems.append(((fmt(key),), "keys must be strings"))
            continue
        if key in MANAGED_ELSEWHERE and key in defaults:
            problems.append(((key,), f"not a model key here: {MANAGED_ELSEWHERE[key]}"))
            continue
        if key not in defaults:
            close = difflib.get_close_matches(key, [*known, "kind"], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(((key,), f"unknown key{hint}"))
            continue
        values[key] = value

    n_components = values.get("n_components", defaults.get("n_components"))
    checked: dict[str, Any] = {}
    swept: list[str] = []
    for key, value in values.items():
        constraints = _constraints(cls, key)
        kinds = {_kind_of(c) for c in constraints}
        if "_ArrayLikes" in kinds and value is not None:
            sub = _check_array(key, value, (key,), n_components)
            problems += sub
            if not sub:
                checked[key] = _to_float_lists(value)
            continue
        if key in SWEEPABLE and isinstance(value, list | Mapping):
            sweep, sub = _sweep_values(key, value, (key,))
            problems += sub
            if sweep is None:
                continue
            bad = False
            for i, item in enumerate(sweep):
                _, reason = _check_scalar(item, constraints, defaults[key])
                if reason is not None:
                    where = (key, i) if isinstance(value, list) else (key,)
                    problems.append((where, f"{reason}, got {fmt(item)}"))
                    bad = True
            if not bad:
                checked[key] = list(value) if isinstance(value, list) else dict(value)
                swept.append(key)
            continue
        converted, reason = _check_scalar(value, constraints, defaults[key])
        if reason is not None:
            problems.append(((key,), f"{reason}, got {fmt(value)}"))
        else:
            checked[key] = converted
    if "n_components" in swept:
        for key, spec in _ARRAYS.items():
            if spec["per_component"] and checked.get(key) is not None:
                problems.append(((key,), "cannot be given with a sweep over n_components "
                                         "(its length depends on n_components)"))
    if "covariance_type" in swept and checked.get("precisions_init") is not None:
        problems.append((("precisions_init",), "cannot be given with a sweep over "
                         "covariance_type (its shape depends on the type)"))
    if problems:
        raise _Problems(problems)

    # The estimator is the judge: run its own validation on the (first) values.
    resolved = {name: checked.get(name, defaults[name]) for name in known}
    trial = {k: _first(v) if k in swept else v for k, v in resolved.items()}
    problem = _estimator_verdict(cls, trial)
    if problem is not None:
        raise _Problems([problem])
    return {"kind": kind, **resolved}


def _first(value: Any) -> Any:
    if isinstance(value, list):
        return value[0]
    if isinstance(value, Mapping):
        return value["min"]
    return value


def _estimator_verdict(cls: type, params: dict[str, Any]) -> Problem | None:
    """The estimator's own ``_validate_params`` on ``params`` (arrays as ndarrays)."""
    import re

    import numpy as np

    args = {k: (np.asarray(v, dtype=np.float64) if isinstance(v, list) else v)
            for k, v in params.items()}
    try:
        estimator = cls(**args)
    except (TypeError, ValueError) as exc:  # a constructor that validates
        return ((), f"{type(exc).__name__}: {exc}")
    validate = getattr(estimator, "_validate_params", None)
    if validate is None:
        return None
    try:
        validate()
    except (TypeError, ValueError) as exc:
        text = " ".join(str(exc).split())
        match = re.match(r"The '(?P<name>\w+)' parameter of \w+ (?P<rest>.*)", text)
        if match:
            rest = match["rest"].replace(" instead.", "").replace(". Got ", ", got ")
            return ((match["name"],), rest)
        return ((), text)
    return None
