"""Reading YAML a person wrote, with limits that make hostile input cheap to refuse.

:func:`load_yaml` is :func:`yaml.safe_load` that also refuses duplicate keys, aliases
that expand past :data:`MAX_ALIAS_EXPANSION` nodes (computed on the composed graph) and
nesting deeper than :data:`MAX_DEPTH`, each in one :class:`~daskgmm.errors.ConfigError`
line saying where."""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from daskgmm.errors import ConfigError

__all__ = ["MAX_ALIAS_EXPANSION", "MAX_DEPTH", "load_yaml"]

MAX_DEPTH = 64
"""Deepest nesting of lists and mappings a configuration may have."""

MAX_ALIAS_EXPANSION = 100_000
"""Most nodes that aliases may add to a document when expanded."""

_MERGE_TAG = "tag:yaml.org,2002:merge"


def _line(node: Node) -> int:
    return node.start_mark.line + 1


class _Loader(yaml.SafeLoader):
    """A SafeLoader with depth, alias and duplicate-key checks."""

    source = "<yaml>"

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        if self.check_event(yaml.events.CollectionStartEvent):
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    mark = self.peek_event().start_mark
                    raise ConfigError(
                        f"{self.source}: nested more than {MAX_DEPTH} levels deep at line "
                        f"{mark.line + 1}; a run configuration is a few levels deep")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1
        return super().compose_node(parent, index)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue
            key = self.construct_object(key_node)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the constructor reports it
                continue
            if first is not None:
                shown = key if isinstance(key, str) and len(key) <= 60 else repr(key)[:60]
                raise ConfigError(
                    f"{self.source}: duplicate key {shown!r} at line {_line(key_node)} "
                    f"(first given at line {first}); give each key once")
            seen[key] = _line(key_node)
        return super().construct_mapping(node, deep=deep)

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        _check_expansion(node, self.source)
        return self.construct_document(node)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _check_expansion(root: Node, source: str) -> None:
    """Refuse a node graph that is cyclic or expands too much: each distinct node is
    walked once, its expanded size computed; a node met inside its own subtree is a cycle."""
    size: dict[int, int] = {}
    open_nodes: set[int] = set()
    distinct = 0
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            continue
        if key in size:
            continue
        open_nodes.add(key)
        distinct += 1
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_nodes:
                raise ConfigError(
                    f"{source}: the alias at line {_line(child)} refers to a node that "
                    "contains it (a self-referencing anchor); a configuration cannot be "
                    "recursive")
            if id(child) not in size:
                stack.append((child, False))
    expanded = size[id(root)]
    if expanded - distinct > MAX_ALIAS_EXPANSION:
        raise ConfigError(
            f"{source}: its aliases would expand {distinct:,} YAML nodes to "
            f"{_short(expanded)} (at most {MAX_ALIAS_EXPANSION:,} more are allowed); "
            "write the values out instead of nesting aliases")


def _short(n: int) -> str:
    return f"{n:,}" if n < 10**12 else f"about 10^{len(str(n)) - 1}"


def load_yaml(text: str, source: str = "<yaml>") -> Any:
    """Parse one YAML document safely (see the module); ``source`` names it in messages.
    Raises :class:`ConfigError` for a refusal and ``yaml.YAMLError`` for a syntax error."""
    loader = _Loader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read") from None
    finally:
        loader.dispose()
