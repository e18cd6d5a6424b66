"""Local rewrites: patterns over a function's SSA graph, and one driver that applies a table of
rules until none matches (a fixpoint).

A pattern is a tree of :class:`Op` (an op name, operand patterns, required attributes, a name
binding the matched value), :class:`Var` (any value) and :class:`Const` (a scalar ``constant``
node, bound by name or required to equal a value); a name used twice, by a :class:`Var` or a
named :class:`Op`, must match one value. ``add`` and ``mul`` match their operands in either
order. A :class:`Rule` pairs a pattern rooted at an op with ``build``, which
appends the replacement through a :class:`~llmc.ir.builder.Builder` and returns its value, or
returns None to decline (a condition the pattern cannot state). The replacement takes the root's
name, so function outputs keep theirs; the nodes it made dead are removed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from llmc.compiler.passes.cleanup import dce
from llmc.ir.builder import Builder
from llmc.ir.graph import Function, Module, Node, Value

COMMUTATIVE = frozenset({"add", "mul"})
CONST_TOLERANCE = 1e-6  # relative: a constant written as a rounded literal still matches


@dataclass(frozen=True)
class Var:
    name: str


@dataclass(frozen=True)
class Const:
    name: str | None = None
    value: float | None = None


@dataclass(frozen=True)
class Op:
    op: str
    args: tuple[Pattern, ...]
    attrs: tuple[tuple[str, Any], ...] = ()
    name: str | None = None  # binds the matched node's (first) result


Pattern = Var | Const | Op


def op(name: str, *args: Pattern, bind: str | None = None, **attrs: Any) -> Op:
    """An :class:`Op` pattern; keyword arguments are attributes the node must have."""
    return Op(name, args, tuple(sorted(attrs.items())), bind)


@dataclass
class Match:
    """What a pattern bound: values (:class:`Var` and named :class:`Op`), constants, and the
    nodes of named :class:`Op`."""

    values: dict[str, Value] = field(default_factory=dict)
    consts: dict[str, float] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)  # the node of each named Op

    def __getitem__(self, name: str) -> Value:
        return self.values[name]

    def copy(self) -> Match:
        return Match(dict(self.values), dict(self.consts), dict(self.nodes))


@dataclass(frozen=True)
class Rule:
    name: str
    pattern: Op
    build: Callable[[Match, Builder], Value | None]


class Graph:
    """The producer of every value of a function, for matching."""

    def __init__(self, func: Function) -> None:
        self.producers = func.producers()

    def match(self, pattern: Pattern, value: Value) -> Match | None:
        """The first way ``pattern`` matches ``value``, or None."""
        return next(self._match(pattern, value, Match()), None)

    def _match(self, pattern: Pattern, value: Value, bound: Match) -> Iterator[Match]:
        if isinstance(pattern, Var):
            seen = bound.values.get(pattern.name)
            if seen is None:
                bound = bound.copy()
                bound.values[pattern.name] = value
                yield bound
            elif seen is value:
                yield bound
            return
        node = self.producers.get(value.name)
        if isinstance(pattern, Const):
            number = scalar_constant(node)
            if number is None or (pattern.value is not None and not _close(number, pattern.value)):
                return
            if pattern.name is not None:
                bound = bound.copy()
                bound.consts[pattern.name] = number
            yield bound
            return
        if node is None or node.op != pattern.op or len(node.inputs) != len(pattern.args):
            return
        if any(node.attrs.get(k) != v for k, v in pattern.attrs):
            return
        if pattern.name is not None:
            if bound.values.get(pattern.name, value) is not value:  # one name, one value, as for Var
                return
            bound = bound.copy()
            bound.values[pattern.name] = value
            bound.nodes[pattern.name] = node
        orders = [node.inputs]
        if pattern.op in COMMUTATIVE and len(node.inputs) == 2:
            orders.append(node.inputs[::-1])
        for inputs in orders:
            yield from self._match_all(pattern.args, inputs, bound)

    def _match_all(self, patterns: Sequence[Pattern], values: Sequence[Value], bound: Match) -> Iterator[Match]:
        if not patterns:
            yield bound
            return
        for first in self._match(patterns[0], values[0], bound):
            yield from self._match_all(patterns[1:], values[1:], first)


def scalar_constant(node: Node | None) -> float | None:
    """The value of a ``constant`` node holding one number (any shape), else None."""
    if node is None or node.op != "constant":
        return None
    value = node.attrs["value"]
    if isinstance(value, list):
        if len(set(value)) != 1:
            return None
        value = value[0]
    return float(value)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= CONST_TOLERANCE * max(abs(a), abs(b), 1e-30)


def rewrite(module: Module, func: Function, rules: Sequence[Rule]) -> dict[str, int]:
    """Apply ``rules`` to ``func`` (in place) until none matches; returns how often each fired."""
    by_op: dict[str, list[Rule]] = {}
    for rule in rules:
        by_op.setdefault(rule.pattern.op, []).append(rule)
    fired = {rule.name: 0 for rule in rules}
    changed = True
    while changed:
        changed = False
        graph = Graph(func)
        i = 0
        while i < len(func.nodes):
            applied = _apply_first(module, func, graph, i, by_op.get(func.nodes[i].op, ()))
            if applied is None:
                i += 1
                continue
            name, made = applied
            fired[name] += 1
            changed = True
            graph = Graph(func)
            i += made
        dce(func)
    return fired


def _apply_first(module: Module, func: Function, graph: Graph, index: int,
                 rules: Sequence[Rule]) -> tuple[str, int] | None:
    """Replace node ``index`` by the first rule that matches and builds: the rule's name and
    how many nodes replaced it, else None. Nodes after the root see only its replacement, and
    nodes before it cannot use it, so a sweep goes on after the nodes it made."""
    node = func.nodes[index]
    if len(node.outputs) != 1:
        return None
    root = node.outputs[0]
    for rule in rules:
        found = graph.match(rule.pattern, root)
        if found is None:
            continue
        builder = Builder(module, func)
        builder.into = []
        new = rule.build(found, builder)
        if new is None:
            continue
        made = builder.into
        if not any(new in n.outputs for n in made):
            raise ValueError(f"rule {rule.name} must return a value it built")
        func.nodes[index:index + 1] = made  # the root goes: its one result is renamed onto the new value
        _replace_uses(func, root, new)
        new.name = root.name
        return rule.name, len(made)
    return None


def _replace_uses(func: Function, old: Value, new: Value) -> None:
    for n in func.nodes:
        n.inputs = [new if v is old else v for v in n.inputs]
    func.outputs = [new if v is old else v for v in func.outputs]
