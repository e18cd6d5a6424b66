"""The IR containers: values, nodes, functions and modules.

A :class:`Module` holds named parameters (weights, with or without data) and functions
(``prefill``, ``decode``). A :class:`Function` is an SSA list of :class:`Node` in topological
order; every :class:`Value` is defined once, by a function input or a node output. Parameters
enter a function through ``param`` nodes, so every operand is an SSA value.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmc.ir.types import Dim, DType, TensorType

AttrValue = Any  # int | float | bool | str | None | DType | Dim | list[AttrValue]


def canonical_attr(value: AttrValue) -> AttrValue:
    """Normalise an attribute so that equal meanings compare equal (static dims become ints,
    tuples become lists, NumPy scalars become Python scalars)."""
    if isinstance(value, Dim):
        return value.value if value.is_static else value
    if isinstance(value, (list, tuple)):
        return [canonical_attr(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if value is None or isinstance(value, (str, DType)):
        return value
    raise TypeError(f"unsupported attribute value {value!r}")


@dataclass(eq=False)
class Value:
    """An SSA value: a name (printed ``%name``) and a tensor type."""

    name: str
    type: TensorType

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


@dataclass(eq=False)
class Node:
    """One operation: ``outputs = op(inputs) {attrs}``."""

    op: str
    inputs: list[Value]
    outputs: list[Value]
    attrs: dict[str, AttrValue] = field(default_factory=dict)

    @property
    def output(self) -> Value:
        if len(self.outputs) != 1:
            raise ValueError(f"{self.op} has {len(self.outputs)} results")
        return self.outputs[0]

    def __repr__(self) -> str:
        outs = ", ".join(f"%{v.name}" for v in self.outputs)
        ins = ", ".join(f"%{v.name}" for v in self.inputs)
        return f"{outs} = {self.op}({ins}) {self.attrs}"


@dataclass(eq=False)
class Param:
    """A named weight. ``data`` is None for a shapes-only module (nothing materialised)."""

    name: str
    type: TensorType
    data: np.ndarray | None = None


@dataclass(eq=False)
class Function:
    """A program: named inputs, nodes in topological order, and the values it returns."""

    name: str
    inputs: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    outputs: list[Value] = field(default_factory=list)

    def producers(self) -> dict[str, Node]:
        return {v.name: n for n in self.nodes for v in n.outputs}

    def users(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v.name, []).append(n)
        return out

    def symbols(self) -> frozenset[str]:
        """The dimension symbols bound by the function's inputs."""
        return frozenset(s for v in self.inputs for d in v.type.shape for s in d.symbols)


@dataclass(eq=False)
class Module:
    """Parameters and functions, plus free-form metadata (architecture, config, tokenizer)."""

    name: str
    attrs: dict[str, AttrValue] = field(default_factory=dict)
    params: dict[str, Param] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)

    def structure(self) -> tuple:
        """Everything the text form holds, as nested tuples: the basis of ``==``."""
        params = tuple((p.name, p.type) for p in self.params.values())
        funcs = tuple(
            (
                f.name,
                tuple((v.name, v.type) for v in f.inputs),
                tuple(
                    (
                        n.op,
                        tuple(v.name for v in n.inputs),
                        tuple((v.name, v.type) for v in n.outputs),
                        _attr_key(n.attrs),
                    )
                    for n in f.nodes
                ),
                tuple(v.name for v in f.outputs),
            )
            for f in self.functions.values()
        )
        return (self.name, _attr_key(self.attrs), params, funcs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Module) and self.structure() == other.structure()

    __hash__ = None  # type: ignore[assignment]

    def iter_nodes(self) -> Iterator[tuple[Function, Node]]:
        for f in self.functions.values():
            for n in f.nodes:
                yield f, n

    @property
    def has_weights(self) -> bool:
        return all(p.data is not None for p in self.params.values())


def _attr_key(attrs: dict[str, AttrValue]) -> tuple:
    def key(v: AttrValue) -> Any:
        if isinstance(v, list):
            return ("list", tuple(key(x) for x in v))
        if isinstance(v, float):
            return ("float", repr(v))  # nan == nan, -0.0 != 0.0, as in the text
        return (type(v).__name__, v)

    return tuple(sorted((k, key(v)) for k, v in attrs.items()))
