"""Print a module as MLIR-like SSA text; :mod:`llmc.ir.parser` reads it back exactly.

::

    module "llmc-tiny" {arch = "llama"} {
      param "model.norm.weight" : tensor<256xf32>
      func @prefill(%input_ids: tensor<1xLxi64>, %mask: tensor<1x1xLxLxf32>) {
        %w = param() {name = "model.norm.weight"} : tensor<256xf32>
        ...
        return %logits
      }
    }
"""

from __future__ import annotations

import json
import math

from llmc.ir.graph import AttrValue, Function, Module, Node
from llmc.ir.types import Dim, DType


def format_attr(value: AttrValue) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (DType, Dim)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(format_attr(v) for v in value) + "]"
    raise TypeError(f"cannot print attribute {value!r}")


def format_attrs(attrs: dict[str, AttrValue]) -> str:
    if not attrs:
        return ""
    return " {" + ", ".join(f"{k} = {format_attr(v)}" for k, v in attrs.items()) + "}"


def format_node(node: Node) -> str:
    outs = ", ".join(f"%{v.name}" for v in node.outputs)
    ins = ", ".join(f"%{v.name}" for v in node.inputs)
    types = ", ".join(str(v.type) for v in node.outputs)
    return f"{outs} = {node.op}({ins}){format_attrs(node.attrs)} : {types}"


def format_function(func: Function, indent: str = "  ") -> list[str]:
    args = ", ".join(f"%{v.name}: {v.type}" for v in func.inputs)
    lines = [f"{indent}func @{func.name}({args}) {{"]
    lines += [f"{indent}  {format_node(n)}" for n in func.nodes]
    lines.append(f"{indent}  return " + ", ".join(f"%{v.name}" for v in func.outputs))
    lines.append(f"{indent}}}")
    return lines


def print_module(module: Module) -> str:
    """The module's text form, ending in a newline."""
    lines = [f"module {json.dumps(module.name)}{format_attrs(module.attrs)} {{"]
    lines += [f"  param {json.dumps(p.name)} : {p.type}" for p in module.params.values()]
    for func in module.functions.values():
        lines += format_function(func)
    lines.append("}")
    return "\n".join(lines) + "\n"
