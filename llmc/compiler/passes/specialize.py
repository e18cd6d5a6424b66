"""Specialise a function's dimension symbols (``P=0`` gives a prefill, ``L=1`` a decode step).

Concatenations lose their operands that become empty, and inputs that become empty and unused
are dropped, so a step function with a KV cache of length ``P`` specialised at ``P=0`` is a
prefill with no cache inputs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmc.ir.graph import Function, Node, Value, canonical_attr
from llmc.ir.types import Dim, DimLike


def _attr(value: Any, env: Mapping[str, DimLike]) -> Any:
    if isinstance(value, Dim):
        return canonical_attr(value.substitute(env))
    if isinstance(value, list):
        return [_attr(v, env) for v in value]
    return value


def _empty(v: Value) -> bool:
    return v.type.numel() == Dim.of(0)


def specialize(func: Function, env: Mapping[str, DimLike], name: str | None = None) -> Function:
    """A copy of ``func`` with the symbols in ``env`` replaced, empty concat operands removed
    and empty unused inputs dropped."""
    out = Function(name or func.name)
    new: dict[str, Value] = {}
    for v in func.inputs:
        new[v.name] = Value(v.name, v.type.substitute(env))
        out.inputs.append(new[v.name])
    for node in func.nodes:
        inputs = [new[v.name] for v in node.inputs]
        if node.op == "concat":  # drop operands empty along the axis (not merely empty)
            axis = node.attrs["axis"]
            inputs = [v for v in inputs if v.type.shape[axis] != Dim.of(0)] or inputs[:1]
            if len(inputs) == 1:
                new[node.outputs[0].name] = inputs[0]
                continue
        outputs = [Value(v.name, v.type.substitute(env)) for v in node.outputs]
        attrs = {k: _attr(a, env) for k, a in node.attrs.items()}
        out.nodes.append(Node(node.op, inputs, outputs, attrs))
        new.update({o.name: n for o, n in zip(node.outputs, outputs)})
    for v in func.outputs:  # one at a time: _output looks at the outputs placed so far
        out.outputs.append(_output(out, new[v.name], v.name))
    used = {v.name for n in out.nodes for v in n.inputs} | {v.name for v in out.outputs}
    out.inputs = [v for v in out.inputs if v.name in used or not _empty(v)]
    return out


def _output(func: Function, value: Value, name: str) -> Value:
    """Keep an output's name when its producer was folded away."""
    if value.name == name:
        return value
    is_input = any(v is value for v in func.inputs)
    if not is_input and all(v is not value for v in func.outputs):
        value.name = name  # the folded node's name is free
        return value
    renamed = Value(name, value.type)
    func.nodes.append(Node("reshape", [value], [renamed], {"shape": canonical_attr(list(value.type.shape))}))
    return renamed
