"""The fixed reduction tree of a pass, whole or in pieces.

A pass combines the results of its chunks in a tree of fan-in ``split_every`` whose shape
depends only on the number of chunks (:func:`tree_reduce`), so the floating-point
additions happen in the same order however the chunks were scheduled. :class:`PartialTree`
computes the same tree from pieces: whoever holds some of the leaves combines every node
whose children it holds, and the pieces are merged into the root later. Each node is
``combine`` of the same children in the same order as in :func:`tree_reduce`, so the
root is the same to the bit whichever leaves were together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["PartialTree", "tree_reduce"]


def tree_reduce(items: Sequence[Any], combine: Callable[..., Any], split_every: int) -> Any:
    """Reduce ``items`` with ``combine`` in a fixed tree of fan-in ``split_every``.

    The grouping depends only on ``len(items)`` and ``split_every``, so the order of the
    floating-point additions is fixed however the tasks are scheduled.
    """
    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")
    level = list(items)
    if not level:
        raise ValueError("nothing to reduce: the data have no rows")
    while len(level) > 1:
        level = [
            combine(*level[i : i + split_every]) if len(level[i : i + split_every]) > 1
            else level[i]
            for i in range(0, len(level), split_every)
        ]
    return level[0]


class PartialTree:
    """The nodes of :func:`tree_reduce`'s tree over ``n_leaves`` items known so far.

    :meth:`add` a leaf or a node (a piece from elsewhere): every node whose children are
    all known is combined at once and its children dropped, so a holder of consecutive
    leaves keeps at most ``split_every - 1`` nodes per level. :attr:`nodes` is what to
    send on; :meth:`root` is the result once every leaf has been added.
    """

    def __init__(self, n_leaves: int, combine: Callable[..., Any], split_every: int) -> None:
        if split_every < 2:
            raise ValueError(f"split_every must be >= 2, got {split_every}")
        if n_leaves < 1:
            raise ValueError("nothing to reduce: the data have no rows")
        self.combine, self.split_every = combine, split_every
        self.sizes = [n_leaves]  # nodes per level, leaves first
        while self.sizes[-1] > 1:
            self.sizes.append(math.ceil(self.sizes[-1] / split_every))
        self.nodes: dict[tuple[int, int], Any] = {}

    def add(self, level: int, index: int, value: Any) -> None:
        """Node ``index`` of ``level`` (0: the leaves) is ``value``."""
        s = self.split_every
        while True:
            self.nodes[level, index] = value
            if level == len(self.sizes) - 1:
                return
            parent = index // s
            children = range(parent * s, min(parent * s + s, self.sizes[level]))
            if not all((level, c) in self.nodes for c in children):
                return
            kids = [self.nodes.pop((level, c)) for c in children]
            value = self.combine(*kids) if len(kids) > 1 else kids[0]
            level, index = level + 1, parent

    def merge(self, nodes: dict[tuple[int, int], Any]) -> None:
        """Add the nodes of another :class:`PartialTree` over the same leaves."""
        for (level, index), value in sorted(nodes.items()):
            self.add(level, index, value)

    def root(self) -> Any:
        """The reduction of every leaf (all must have been added)."""
        top = (len(self.sizes) - 1, 0)
        if top not in self.nodes:
            raise ValueError(f"the tree is incomplete: {len(self.nodes)} node(s) wait for "
                             "the rest of their siblings")
        return self.nodes[top]
