"""Sufficient statistics and their arithmetic.

The E-step of one chunk yields, for every candidate mixture, a dict of float64 arrays:

``n``
    the total sample weight of the chunk (its row count without weights);
``ll``
    ``sum_i w_i log p(x_i)`` under the parameters of the pass;
``nk`` (K,)
    soft counts ``sum_i w_i r_ik``;
``sx`` (K, D)
    ``sum_i w_i r_ik (x_i - c0)``;
``s2``
    the covariance type's second-order statistic (see :mod:`daskgmm.engine.covariance`);
``ent`` (only when asked for)
    ``sum_i w_i sum_k r_ik log r_ik``, the negative entropy of the responsibilities.

Statistics of disjoint parts of the data add up (:func:`add`); online and incremental EM
also scale and subtract them. A pass's result (:class:`PassResult`) also carries the
digests of the chunks it read, when asked for (to recognise the data of a checkpoint).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

Stats = dict[str, np.ndarray]


def add(*parts: Stats) -> Stats:
    """Key-wise sum of statistics (the same keys in every part)."""
    first = parts[0]
    return {key: sum((p[key] for p in parts[1:]), start=first[key]) for key in first}


def scale(stats: Stats, factor: float) -> Stats:
    """Every statistic multiplied by ``factor``."""
    return {key: value * factor for key, value in stats.items()}


def subtract(a: Stats, b: Stats) -> Stats:
    """``a - b`` key-wise."""
    return {key: a[key] - b[key] for key in a}


def zeros_like(stats: Stats) -> Stats:
    """Statistics of no data, shaped like ``stats``."""
    return {key: np.zeros_like(value) for key, value in stats.items()}


@dataclass
class PassResult:
    """What a pass over the chunks returns: statistics per candidate, and chunk digests.

    Attributes
    ----------
    stats : list of dict
        One :data:`Stats` per candidate of the pass, summed over the chunks.
    digests : dict
        ``row_start -> digest`` of every chunk read, when the pass was asked for them.
    """

    stats: list[Stats]
    digests: dict[int, int] = field(default_factory=dict)


def combine(*parts: PassResult) -> PassResult:
    """The combine step of a pass's tree reduction (associative; the tree fixes the order,
    so the sums are reproducible bit for bit)."""
    stats = [add(*items) for items in zip(*(p.stats for p in parts), strict=True)]
    digests: dict[int, int] = {}
    for p in parts:
        digests.update(p.digests)
    return PassResult(stats, digests)


def data_digest(digests: dict[int, int], bounds: Iterable[tuple[int, int]]) -> str:
    """One hex string for the digests of all the chunks (in row order)."""
    import hashlib

    text = ",".join(f"{start}:{digests.get(start, 'missing')}" for start, _ in bounds)
    return hashlib.sha256(text.encode()).hexdigest()
