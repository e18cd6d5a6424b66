"""Convert a ``torch.export`` program (a torch.fx graph of ATen ops) into an IR function.

Shapes come from the exported nodes' fake-tensor metadata; symbolic sizes (``s0 + s1``) become
IR dims through the symbol names the caller gives. Every ATen op is mapped by one handler in
:data:`HANDLERS` (the table in :mod:`llmc.compiler.frontend.torch_ops`); an op without a handler
is refused with its node name and target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from llmc.compiler.frontend.torch_ops import HANDLERS, ir_dtype
from llmc.errors import FrontendError
from llmc.ir.builder import Builder
from llmc.ir.graph import Function, Module, Param, Value
from llmc.ir.types import Dim, DType, TensorType


class Converter:
    """State of one conversion: the builder, the fx-node -> IR value map, and symbol names."""

    def __init__(self, module: Module, func: Function, symbols: Mapping[str, str]) -> None:
        self.b = Builder(module, func)
        self.symbols = dict(symbols)  # torch symbol name (s0) -> IR symbol name (L)
        # None: an empty tensor (dropped from concats); a list: the parts of a split
        self.values: dict[str, Value | list[Value] | None] = {}
        self.node: torch.fx.Node | None = None
        self.tied: dict[int, str] = {}  # id of a weight tensor -> its parameter name

    # -- shapes ----------------------------------------------------------------------------
    def dim(self, size: Any) -> Dim:
        """An IR dim from an int, a SymInt or a sympy expression."""
        if isinstance(size, int):
            return Dim.of(size)
        expr = size.node.expr if isinstance(size, torch.SymInt) else size
        return self._sympy(expr)

    def _sympy(self, expr: Any) -> Dim:
        import sympy

        if isinstance(expr, sympy.Integer):
            return Dim.of(int(expr))
        if isinstance(expr, sympy.Symbol):
            if expr.name not in self.symbols:
                raise self.error(f"size symbol {expr.name} is not one of the model's dims")
            return Dim.sym(self.symbols[expr.name])
        if isinstance(expr, sympy.Add):
            total = Dim.of(0)
            for a in expr.args:
                total = total + self._sympy(a)
            return total
        if isinstance(expr, sympy.Mul):
            total = Dim.of(1)
            for a in expr.args:
                total = total * self._sympy(a)
            return total
        raise self.error(f"symbolic size {expr} is not a polynomial")

    def meta_type(self, node: torch.fx.Node) -> TensorType:
        val = node.meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise self.error(f"node {node.name} has no tensor metadata")
        return TensorType.of([self.dim(s) for s in val.shape], ir_dtype(val.dtype))

    def error(self, message: str) -> FrontendError:
        if self.node is None:
            return FrontendError(f"graph: {message}")
        stack = self.node.meta.get("nn_module_stack") or {}
        path, kind = list(stack.values())[-1] if stack else ("", "")
        origin = f" in {_strip_step(path)} ({str(kind).rsplit('.', 1)[-1]})" if stack else ""
        return FrontendError(f"node {self.node.name} ({self.node.target}){origin}: {message}")

    # -- values ----------------------------------------------------------------------------
    def value(self, arg: Any) -> Value | None:
        if not isinstance(arg, torch.fx.Node):
            raise self.error(f"expected a tensor operand, got {arg!r}")
        if arg.name not in self.values:
            raise self.error(f"operand {arg.name} was not converted")
        value = self.values[arg.name]
        if isinstance(value, list):
            raise self.error(f"operand {arg.name} is a tuple of tensors")
        return value

    def tensor(self, arg: Any) -> Value:
        v = self.value(arg)
        if v is None:
            raise self.error(f"operand {arg} is an empty tensor")
        return v

    def operand(self, arg: Any, dtype: DType) -> Value:
        """A tensor operand cast to ``dtype``, or a Python scalar as a constant of ``dtype``."""
        if isinstance(arg, torch.fx.Node):
            v = self.tensor(arg)
            return v if v.type.dtype == dtype else self.b.op("cast", [v], {"dtype": dtype})
        if isinstance(arg, (bool, int, float)):
            return self.b.constant(float(arg) if dtype.is_float else int(arg), dtype)
        raise self.error(f"unsupported operand {arg!r}")

    def int_arg(self, arg: Any) -> Dim:
        """A size-like argument: an int, a SymInt-producing node, or a SymInt."""
        if isinstance(arg, torch.fx.Node):
            return self.dim(arg.meta["val"])
        return self.dim(arg)

    def emit(self, op: str, inputs: list[Value], attrs: dict[str, Any] | None = None) -> Value:
        assert self.node is not None
        out = self.b.op(op, inputs, attrs, name=self.node.name)
        expected = self.meta_type(self.node)
        if out.type.shape != expected.shape or out.type.dtype != expected.dtype:
            raise self.error(f"converted to {op} giving {out.type}, but torch says {expected}")
        return out


def convert_graph(
    exported: torch.export.ExportedProgram,
    module: Module,
    func: Function,
    input_names: Mapping[str, str],
    symbols: Mapping[str, str],
    output_names: list[str],
    param_prefix: str = "",
) -> list[str]:
    """Append the exported graph to ``func``: user inputs become function inputs named by
    ``input_names`` (placeholder -> IR name); parameters, buffers and constants become module
    params (with ``param_prefix`` stripped from their names). Returns, for every node appended,
    the path of the ``torch.nn`` module that traced it ("" outside any module)."""
    sig = exported.graph_signature
    weights: dict[str, str] = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    constants: dict[str, str] = dict(sig.inputs_to_lifted_tensor_constants)
    state = {**exported.state_dict, **exported.constants}
    conv = Converter(module, func, symbols)
    user_inputs = {spec.arg.name for spec in sig.input_specs if spec.kind.name == "USER_INPUT"}
    origins: list[str] = []
    for node in exported.graph.nodes:
        conv.node = node
        count = len(func.nodes)
        if node.op == "placeholder":
            conv.values[node.name] = _placeholder(conv, node, weights, constants, state, user_inputs, input_names, param_prefix)
        elif node.op == "call_function":
            handler = HANDLERS.get(node.target)
            if handler is None:
                raise conv.error("unsupported op")
            conv.values[node.name] = handler(conv, node)
        elif node.op == "output":
            outs = [conv.tensor(a) for a in node.args[0]]
            if len(outs) != len(output_names):
                raise conv.error(f"graph has {len(outs)} outputs, expected {len(output_names)}")
            func.outputs = [_named(conv, v, name) for v, name in zip(outs, output_names)]
        else:
            raise conv.error(f"unsupported fx node kind '{node.op}'")
        origins += [_module_path(node)] * (len(func.nodes) - count)
    return origins


def _strip_step(path: str) -> str:
    """A module path of the model, without the step wrapper's ``model.`` prefix."""
    return path.removeprefix("model.") or path


def _module_path(node: torch.fx.Node) -> str:
    """The innermost ``torch.nn`` module a node was traced in ("" for none)."""
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


def _named(conv: Converter, value: Value, name: str) -> Value:
    """Give an output its public name (renaming the value, or through an identity reshape)."""
    if value.name == name:
        return value
    producer = conv.b.func.producers().get(value.name)
    taken = {v.name for v in conv.b.func.inputs} | {v.name for n in conv.b.func.nodes for v in n.outputs}
    if producer is not None and value not in conv.b.func.outputs and name not in taken:
        value.name = name
        return value
    return conv.b.op("reshape", [value], {"shape": list(value.type.shape)}, name=name)


def _placeholder(
    conv: Converter,
    node: torch.fx.Node,
    weights: Mapping[str, str],
    constants: Mapping[str, str],
    state: Mapping[str, Any],
    user_inputs: set[str],
    input_names: Mapping[str, str],
    prefix: str,
) -> Value | None:
    if node.name in user_inputs:
        return conv.b.input(input_names.get(node.name, node.name), conv.meta_type(node))
    target = weights.get(node.name) or constants.get(node.name)
    if target is None:
        raise conv.error("placeholder is neither an input, a parameter nor a constant")
    tensor = state[target]
    if tensor.numel() == 0:
        return None  # an empty cache slot: concatenation drops it
    name = target[len(prefix) :] if target.startswith(prefix) else target
    name = conv.tied.setdefault(id(tensor), name)  # tied weights share one parameter
    if name not in conv.b.module.params:
        t = TensorType.of(list(tensor.shape), ir_dtype(tensor.dtype))
        data = None if tensor.is_meta else tensor.detach().cpu().contiguous().numpy()
        conv.b.module.params[name] = Param(name, t, data)
    return conv.b.param(name)
