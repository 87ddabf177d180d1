"""What saved models and checkpoints share: bounded JSON reading, exact floats, arrays.

Files daskgmm reads back may be damaged or hostile. Everything here refuses, with a
``ValueError`` saying why, what would otherwise exhaust memory or the stack: files larger
than a limit, JSON nested deeper than a limit, arrays whose declared size is not the
expected one (checked before anything is decompressed or allocated).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

#: Largest JSON file read back (bytes).
MAX_JSON_BYTES = 256 * 2**20
#: Deepest nesting of JSON arrays and objects accepted.
MAX_JSON_DEPTH = 32


def encode_float(value: float) -> float | dict[str, str]:
    """A float as strict JSON: non-finite values become ``{"float": "inf"}`` etc."""
    value = float(value)
    if math.isfinite(value):
        return value
    return {"float": repr(value)}


def decode_float(value: Any) -> float | None:
    """The float a JSON value stands for, or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict) and set(value) == {"float"} and value["float"] in (
            "inf", "-inf", "nan"):
        return float(value["float"])
    return None


def _depth(text: str, limit: int) -> int:
    """Nesting depth of a JSON text, scanning at most until it exceeds ``limit``."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif char in "]}":
            depth -= 1
    return deepest


def parse_json(raw: bytes, *, max_bytes: int = MAX_JSON_BYTES,
               max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON bytes, refusing oversized or too deeply nested content.

    Raises
    ------
    ValueError
        The text is larger than ``max_bytes``, nested deeper than ``max_depth``, not UTF-8
        or not JSON.
    """
    if len(raw) > max_bytes:
        raise ValueError(f"it is more than the {max_bytes:,} bytes accepted")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"it is not UTF-8 text ({exc.reason})") from None
    if _depth(text, max_depth) > max_depth:
        raise ValueError(f"its JSON is nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ValueError(f"it is not valid JSON ({exc})") from None


def read_bounded(handle: Any, max_bytes: int = MAX_JSON_BYTES) -> bytes:
    """At most ``max_bytes + 1`` bytes of a binary stream, read block by block (a single
    ``read(max_bytes + 1)`` would allocate the whole limit first, 256 MiB for every
    model or checkpoint read)."""
    parts = []
    left = max_bytes + 1
    while left > 0:
        block = handle.read(min(left, 2**20))
        if not block:
            break
        parts.append(block)
        left -= len(block)
    return b"".join(parts)


def read_json(path: str | os.PathLike[str], *, max_bytes: int = MAX_JSON_BYTES,
              max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON file with the limits of :func:`parse_json`.

    Raises
    ------
    OSError
        The file cannot be read.
    ValueError
        As :func:`parse_json`.
    """
    size = os.path.getsize(path)
    if size > max_bytes:
        raise ValueError(f"it is {size:,} bytes, more than the {max_bytes:,} accepted")
    with open(path, "rb") as handle:
        raw = read_bounded(handle, max_bytes)
    return parse_json(raw, max_bytes=max_bytes, max_depth=max_depth)


def array_from_json(value: Any, name: str, ndim: int | None = None) -> np.ndarray:
    """A float64 array from nested JSON lists, checked rectangular and finite."""
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} is not a rectangular array of numbers ({exc})") from None
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} has {array.ndim} dimensions, expected {ndim}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return array


def npy_header_shape(handle: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype declared by the header of a ``.npy`` stream (nothing else read)."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ValueError(f"unsupported .npy format version {version}")
    return tuple(int(s) for s in shape), np.dtype(dtype)
