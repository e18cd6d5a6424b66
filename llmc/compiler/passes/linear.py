"""Shared machinery of weight passes: find the linear layers, swap their weights in every function.

Passes never edit a module in place: :func:`clone` gives a structural copy (parameter data is
shared, never mutated), and the rewrites below build new node lists.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llmc.ir.builder import Builder
from llmc.ir.graph import Function, Module, Node, Param, Value
from llmc.ir.types import QuantEncoding, TensorType

_LAYER = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.")


@dataclass(frozen=True)
class LinearLayer:
    """A linear layer whose weight [N, K] is a float parameter (a compression candidate), or
    ``experts`` such layers stacked [E, N, K] (a mixture of experts' projections)."""

    weight: str
    out_features: int
    in_features: int
    experts: int = 0

    @property
    def shape(self) -> list[int]:
        rows = [self.out_features, self.in_features]
        return [self.experts, *rows] if self.experts else rows

    @property
    def block(self) -> int | None:
        """The transformer block index, from names like ``model.layers.3.mlp.up_proj.weight``."""
        m = _LAYER.search(self.weight)
        return int(m[1]) if m else None


def clone(module: Module) -> Module:
    """A copy of the module's structure; parameter arrays are shared (passes never mutate them)."""
    out = Module(module.name, dict(module.attrs))
    out.params = {k: Param(p.name, p.type, p.data) for k, p in module.params.items()}
    out.functions = {name: _copy_function(func) for name, func in module.functions.items()}
    return out


def _copy_function(func: Function) -> Function:
    values: dict[int, Value] = {}

    def copy(v: Value) -> Value:
        if id(v) not in values:
            values[id(v)] = Value(v.name, v.type)
        return values[id(v)]

    new = Function(func.name, [copy(v) for v in func.inputs])
    new.nodes = [Node(n.op, [copy(v) for v in n.inputs], [copy(v) for v in n.outputs], dict(n.attrs)) for n in func.nodes]
    new.outputs = [copy(v) for v in func.outputs]
    return new


def linear_layers(module: Module, exclude_head: bool = True) -> list[LinearLayer]:
    """Float linear layers of the module, in parameter order. The output head (a weight shared
    with the embedding, or named ``lm_head``) is excluded unless asked for, as is usual."""
    found: dict[str, LinearLayer] = {}
    embedded = {n.inputs[0].name for _, n in module.iter_nodes() if n.op == "embedding"}
    for func in module.functions.values():
        params = {n.outputs[0].name: n.attrs["name"] for n in func.nodes if n.op == "param"}
        for node in func.nodes:
            if node.op != "linear" or node.inputs[1].name not in params:
                continue
            name = params[node.inputs[1].name]
            p = module.params[name]
            if not p.type.dtype.is_float or any(isinstance(e, QuantEncoding) for e in p.type.encodings):
                continue  # already quantized (a sparse float weight is still a candidate)
            if exclude_head and (node.inputs[1].name in embedded or "lm_head" in name):
                continue
            n, k = p.type.static_shape()
            found[name] = LinearLayer(name, n, k)
    order = list(module.params)
    return sorted(found.values(), key=lambda layer: order.index(layer.weight))


Expand = Callable[[Builder, dict[str, Value]], Value]


def replace_param(module: Module, name: str, new_params: list[Param], expand: Expand) -> None:
    """Replace parameter ``name`` by ``new_params`` in every function: where a function read
    ``name``, it now reads the new parameters and computes the old value with ``expand``
    (called with a builder and the new parameters' values; must return the old type)."""
    old = module.params[name]
    for p in new_params:
        module.params[p.name] = p
    for func in module.functions.values():
        nodes: list[Node] = []
        for node in func.nodes:
            if node.op != "param" or node.attrs["name"] != name:
                nodes.append(node)
                continue
            builder = Builder(module, func)
            builder.into = nodes
            values = {p.name: builder.param(p.name) for p in new_params}
            result = expand(builder, values)
            if result.type != TensorType(old.type.shape, old.type.dtype):  # encodings move to the new params
                raise ValueError(f"replacement of '{name}' has type {result.type}, expected {old.type}")
            producer = nodes[-1]
            node.outputs[0].type = result.type
            producer.outputs = [node.outputs[0] if v is result else v for v in producer.outputs]
        func.nodes = nodes
    if all(n.attrs.get("name") != name for _, n in module.iter_nodes() if n.op == "param"):
        del module.params[name]


def set_param(module: Module, name: str, data: np.ndarray | None, type_: TensorType | None = None) -> None:
    """Give parameter ``name`` new data (and type), keeping every reader consistent."""
    p = module.params[name]
    new_type = type_ or p.type
    module.params[name] = Param(name, new_type, data)
    for _, node in module.iter_nodes():
        if node.op == "param" and node.attrs["name"] == name:
            node.outputs[0].type = new_type


def _scale_rows(module: Module, name: str, inv: np.ndarray) -> bool:
    """Multiply the rows (output channels) of float parameter ``name`` by ``inv``."""
    p = module.params[name]
    if p.data is None or not p.type.dtype.is_float:
        return False
    data = p.data.astype(np.float32)
    scaled = data * (inv[:, None] if data.ndim == 2 else inv)
    set_param(module, name, scaled.astype(p.data.dtype))
    return True


def fold_input_scale(module: Module, weights: list[str], s: np.ndarray) -> str:
    """Make ``linear(x, W)`` into ``linear(x / s, W * s)`` for every weight in ``weights`` (all
    reading the same input ``x`` in every function), folding ``1 / s`` into the op that produces
    ``x`` where that is exact, else inserting a ``mul``. Returns how it was folded: ``"norm"``
    (a norm's or a scaling multiply's weight), ``"linear"`` (the rows of the producing linear
    layer) or ``"mul"``.

    Folding needs every reader of ``x`` to be one of these linear layers; the producing
    parameter must not be read by anything else.
    """
    inv = (1.0 / s).astype(np.float32)
    for w in weights:
        data = module.params[w].data
        set_param(module, w, (data.astype(np.float32) * s[None, :].astype(np.float32)).astype(data.dtype))
    how = _fold(module, weights, inv)
    if how is None:
        _insert_mul(module, weights, inv)
        return "mul"
    return how


def _input_of(func: Function, weights: list[str]) -> tuple[Value, Node | None] | None:
    params = {n.outputs[0].name: n.attrs["name"] for n in func.nodes if n.op == "param"}
    inputs = {n.inputs[0] for n in func.nodes if n.op == "linear" and params.get(n.inputs[1].name) in weights}
    if len(inputs) != 1:
        return None
    x = inputs.pop()
    return x, func.producers().get(x.name)


def _fold(module: Module, weights: list[str], inv: np.ndarray) -> str | None:
    """Fold into the producer's parameter if every function allows it; None if not."""
    targets: set[tuple[str, str]] = set()
    for func in module.functions.values():
        found = _input_of(func, weights)
        if found is None:
            return None
        x, producer = found
        users = func.users().get(x.name, [])
        params = {n.outputs[0].name: n.attrs["name"] for n in func.nodes if n.op == "param"}
        if any(u.op != "linear" or params.get(u.inputs[1].name) not in weights for u in users) or x in func.outputs:
            return None
        target = _foldable(func, producer, params)
        if target is None:
            return None
        targets.add(target)
    if len(targets) != 1:
        return None
    kind, name = targets.pop()
    readers = [n for _, n in module.iter_nodes() if n.op == "param" and n.attrs["name"] == name]
    if any(len(f.users().get(n.outputs[0].name, [])) != 1 for f in module.functions.values() for n in f.nodes if n in readers):
        return None
    if kind == "norm":
        for extra in _norm_bias(module, name):
            _scale_rows(module, extra, inv)
    return kind if _scale_rows(module, name, inv) else None


def _foldable(func: Function, producer: Node | None, params: dict[str, str]) -> tuple[str, str] | None:
    if producer is None:
        return None
    if producer.op in ("rms_norm", "layer_norm") and len(producer.inputs) >= 2 and producer.inputs[1].name in params:
        return "norm", params[producer.inputs[1].name]
    if producer.op == "mul":
        for operand in producer.inputs:
            if operand.name in params and operand.type.rank == 1:
                return "norm", params[operand.name]
        # x = a * b with b a linear layer's output (SwiGLU: silu(gate) * up): scale up's rows
        for operand in producer.inputs[::-1]:
            up = func.producers().get(operand.name)
            if up is not None and up.op == "linear" and len(up.inputs) == 2 and up.inputs[1].name in params:
                if len(func.users().get(operand.name, [])) == 1:
                    return "linear", params[up.inputs[1].name]
    return None


def _norm_bias(module: Module, weight: str) -> list[str]:
    """The bias read by the same layer_norm as ``weight`` (scaled along with it)."""
    out = []
    for func in module.functions.values():
        params = {n.outputs[0].name: n.attrs["name"] for n in func.nodes if n.op == "param"}
        for node in func.nodes:
            if node.op == "layer_norm" and len(node.inputs) == 3 and params.get(node.inputs[1].name) == weight:
                out.append(params[node.inputs[2].name])
    return sorted(set(out))


def _insert_mul(module: Module, weights: list[str], inv: np.ndarray) -> None:
    """Insert ``x * (1/s)`` before the first of the linear layers and feed them all from it."""
    name = f"{weights[0]}.input_scale"
    module.params[name] = Param(name, TensorType.of([len(inv)], module.params[weights[0]].type.dtype), inv)
    for func in module.functions.values():
        found = _input_of(func, weights)
        if found is None:
            continue
        x, _ = found
        params = {n.outputs[0].name: n.attrs["name"] for n in func.nodes if n.op == "param"}
        readers = [n for n in func.nodes if n.op == "linear" and params.get(n.inputs[1].name) in weights]
        builder = Builder(module, func)
        builder.into = []
        scaled = builder.op("mul", [x, builder.param(name)])
        at = func.nodes.index(readers[0])
        func.nodes[at:at] = builder.into
        for node in readers:
            node.inputs[0] = scaled


def check_group_divides(pass_name: str, layers: list[LinearLayer], group: int) -> None:
    """Refuse a quantization group that does not divide some layer's K."""
    from llmc.compiler.pipeline import PipelineError

    for layer in layers:
        if group and layer.in_features % group:
            raise PipelineError(f"pass {pass_name}: group {group} does not divide K={layer.in_features} of {layer.weight}")


def require_data(pass_name: str, module: Module, layers: list[LinearLayer]) -> None:
    """Refuse a shapes-only module in a pass whose result depends on the weights' values."""
    from llmc.compiler.pipeline import PipelineError

    for layer in layers:
        if module.params[layer.weight].data is None:
            raise PipelineError(f"pass {pass_name}: {layer.weight} has no weights (shapes-only module)")


def expert_layers(module: Module) -> list[LinearLayer]:
    """The float expert projections (``gate_up`` and ``down`` of every ``moe``), in parameter order."""
    found: dict[str, LinearLayer] = {}
    for func in module.functions.values():
        params = {n.outputs[0].name: n.attrs["name"] for n in func.nodes if n.op == "param"}
        for node in func.nodes:
            for v in node.inputs[2:] if node.op == "moe" else ():
                p = module.params.get(params.get(v.name, ""))
                if p is not None and p.type.dtype.is_float:
                    e, n, k = p.type.static_shape()
                    found[p.name] = LinearLayer(p.name, n, k, e)
    order = list(module.params)
    return sorted(found.values(), key=lambda layer: order.index(layer.weight))


def shapes_only_layers(pass_name: str, module: Module, weights: list[str]) -> bool:
    """Whether ``weights`` are all without data (a shapes-only module); refuses a mix."""
    missing = [w for w in weights if module.params[w].data is None]
    if missing and len(missing) < len(weights):
        from llmc.compiler.pipeline import PipelineError

        raise PipelineError(f"pass {pass_name}: {missing[0]} has no data but other weights do")
    return bool(missing)
