"""A small builder that appends type-inferred nodes to a function (used by frontends and passes)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from llmc.ir.graph import Function, Module, Node, Value, canonical_attr
from llmc.ir.registry import OPS, InferError
from llmc.ir.types import DimLike, DType, TensorType


def value_name(hint: str) -> str:
    """The value name a hint becomes (before any suffix that makes it unique): characters other
    than letters, digits, ``_`` and ``.`` replaced by ``_``."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", hint)


class Builder:
    """Appends nodes to ``func`` in ``module`` (or to the list ``into``, for rewrites that
    rebuild a node list); result types come from the op registry."""

    def __init__(self, module: Module, func: Function) -> None:
        self.module = module
        self.func = func
        self.into: list[Node] = func.nodes
        self._names = {v.name for v in func.inputs} | {v.name for n in func.nodes for v in n.outputs}
        self._params: dict[str, Value] = {}
        self._counter = 0

    def fresh(self, hint: str | None = None) -> str:
        """A value name not used yet, derived from ``hint`` when given."""
        base = value_name(hint) if hint else ""
        name = base or str(self._counter)
        while name in self._names:
            self._counter += 1
            name = f"{base}_{self._counter}" if base else str(self._counter)
        self._names.add(name)
        return name

    def rename(self, value: Value, hint: str) -> None:
        """Name ``value`` (a result built here) after ``hint`` when that name is still free."""
        name = value_name(hint)
        if name not in self._names:
            self._names.add(name)
            value.name = name

    def input(self, name: str, type_: TensorType) -> Value:
        value = Value(self.fresh(name), type_)
        self.func.inputs.append(value)
        return value

    def param(self, name: str) -> Value:
        """The value of module parameter ``name``: an existing ``param`` node's result when one
        is already emitted before this point, else a new ``param`` node."""
        if name not in self._params:
            for node in self.into:
                if node.op == "param" and node.attrs["name"] == name:
                    self._params[name] = node.outputs[0]
                    return node.outputs[0]
            p = self.module.params[name]
            value = Value(self.fresh(name.replace(".", "_")), p.type)
            self.into.append(Node("param", [], [value], {"name": name}))
            self._params[name] = value
        return self._params[name]

    def op(self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None, name: str | None = None) -> Value:
        """Append ``op`` and return its single result."""
        return self.op_multi(op, inputs, attrs, [name] if name else None)[0]

    def op_multi(
        self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None, names: list[str] | None = None
    ) -> list[Value]:
        opdef = OPS[op]
        attrs = {k: canonical_attr(v) for k, v in (attrs or {}).items()}
        types = opdef.infer([v.type for v in inputs], opdef.with_defaults(attrs))
        if types is None:
            raise InferError(f"op '{op}' cannot infer its result type; build it with add_node")
        names = names or [None] * len(types)  # type: ignore[list-item]
        outs = [Value(self.fresh(n), t) for n, t in zip(names, types)]
        self.into.append(Node(op, list(inputs), outs, attrs))
        return outs

    def constant(self, value: float | int | list[float], dtype: DType, shape: Sequence[DimLike] = ()) -> Value:
        return self.op("constant", [], {"value": value, "shape": list(shape), "dtype": dtype})

    def ret(self, *values: Value) -> None:
        self.func.outputs = list(values)
