"""``act-quant``: integer linear layers with dynamically quantized activations (W8A8, W4A8).

Every float linear layer ``y = linear(x, W[, b])`` becomes::

    xq, xs = quantize_dynamic(x) {bits = abits}          # per token (per row), symmetric
    y = qlinear(xq, xs, W.codes, W.scales[, b]) {group, acc_bits}

with ``W.codes`` signed symmetric ``wbits`` codes (a ``#quant`` encoding, RTN) and float16
``W.scales`` per output channel (``group = 0``, W8A8) or per group of K (W4A8, e.g. 128). The
layers reading one input share its ``quantize_dynamic``. The products accumulate exactly in an
integer of ``acc_bits``, the smallest width of at least 32 that provably holds the sum (see
:func:`accumulator_bits`); a layer that needs more than 32 bits is named in the report. With
``granularity=tensor`` one scale covers the whole activation tensor: the input is flattened,
quantized as a single row, and the scale broadcast back to one per row (existing ops only). A
shapes-only module (no weight data) gets the same parameters and types, without data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.compiler.passes.linear import check_group_divides, clone, linear_layers
from llmc.compiler.pipeline import PassContext, PipelineError, register_pass
from llmc.compiler.quant.grid import Grid, quantize_rtn
from llmc.ir.builder import Builder
from llmc.ir.graph import Function, Module, Node, Param, Value
from llmc.ir.ops.common import as_dtype
from llmc.ir.ops.quant import accumulator_bound
from llmc.ir.types import F16, DType, QuantEncoding, TensorType

ACT_BITS = (4, 8, 16)
GRANULARITIES = ("token", "tensor")
MIN_ACC_BITS = 32
MAX_ACC_BITS = 64  # the widest accumulator the reference interpreter evaluates exactly (int64)


def accumulator_bits(span: int, abits: int, wbits: int) -> int:
    """The accumulator width for ``span`` products of signed ``abits`` x ``wbits`` symmetric
    codes: the bits of the largest possible |sum| plus a sign bit, and never below 32."""
    return max(MIN_ACC_BITS, accumulator_bound(span, abits, wbits).bit_length() + 1)


@dataclass(frozen=True)
class ActQuantOptions:
    wbits: int = 8
    abits: int = 8
    group: int = 0  # along K: 0 = one weight scale per output channel
    granularity: str = "token"  # activation scale per token (row) or per tensor
    include_head: bool = False

    def __post_init__(self) -> None:
        Grid(self.wbits, self.group)
        if self.abits not in ACT_BITS:
            raise ValueError(f"abits must be one of {', '.join(map(str, ACT_BITS))}, got {self.abits}")
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {', '.join(GRANULARITIES)}, got '{self.granularity}'")

    def acc_bits(self, in_features: int) -> int:
        return accumulator_bits(self.group or in_features, self.abits, self.wbits)


@dataclass(frozen=True)
class _Plan:
    """The new parameters and accumulator width of one layer."""

    codes: str
    scales: str
    acc_bits: int


def check_act_quant(module: Module, options: ActQuantOptions) -> None:
    """Refuse groups that do not divide K and accumulators the interpreter cannot hold."""
    layers = linear_layers(module, exclude_head=not options.include_head)
    check_group_divides("act-quant", layers, options.group)
    for layer in layers:
        if options.acc_bits(layer.in_features) > MAX_ACC_BITS:
            raise PipelineError(f"pass act-quant: {layer.weight} needs a {options.acc_bits(layer.in_features)}-bit "
                                f"accumulator (at most {MAX_ACC_BITS}); use a smaller group")


@register_pass("act-quant", ActQuantOptions, check=check_act_quant)
def act_quant(module: Module, options: ActQuantOptions, context: PassContext) -> Module:
    """Integer linear layers on dynamically quantized activations (W8A8, W4A8)."""
    out = clone(module)
    layers = linear_layers(out, exclude_head=not options.include_head)
    plans = {layer.weight: _install_weights(out, layer.weight, options) for layer in layers}
    for func in out.functions.values():
        _rewrite(out, func, plans, options)
    for name in plans:
        if all(n.attrs["name"] != name for _, n in out.iter_nodes() if n.op == "param"):
            del out.params[name]
    wide = {name: plan.acc_bits for name, plan in plans.items() if plan.acc_bits > MIN_ACC_BITS}
    context.reports["act-quant"] = {
        "layers": len(layers), "wbits": options.wbits, "abits": options.abits, "group": options.group,
        "granularity": options.granularity, "acc_bits": {name: plan.acc_bits for name, plan in plans.items()},
        "notes": [f"{name}: int{MIN_ACC_BITS} could overflow, using a {bits}-bit accumulator"
                  for name, bits in wide.items()],
    }
    return out


def _install_weights(module: Module, weight: str, options: ActQuantOptions) -> _Plan:
    """Add the codes and scales of ``weight`` (RTN on a symmetric grid) as parameters, without
    data when the weight has none (a shapes-only module)."""
    data = module.params[weight].data
    grid = Grid(options.wbits, options.group)
    n, k = module.params[weight].type.static_shape()
    q = None if data is None else quantize_rtn(data.astype(np.float32), grid)
    code_dtype = DType("int", options.wbits)
    encoding = QuantEncoding(options.wbits, options.group, F16)
    codes = Param(f"{weight}.codes", TensorType.of([n, k], code_dtype, (encoding,)),
                  None if q is None else as_dtype(q.codes, code_dtype))
    scales = Param(f"{weight}.scales", TensorType.of([n, k // grid.span(k)], F16),
                   None if q is None else q.scales.astype(np.float16))
    for p in (codes, scales):
        module.params[p.name] = p
    return _Plan(codes.name, scales.name, options.acc_bits(k))


def _rewrite(module: Module, func: Function, plans: dict[str, _Plan], options: ActQuantOptions) -> None:
    """Replace the planned linear nodes of ``func`` by quantize_dynamic + qlinear; each result
    is the original output value, so its users are untouched."""
    params = {n.outputs[0].name: n.attrs["name"] for n in func.nodes if n.op == "param"}
    builder = Builder(module, func)
    nodes: list[Node] = []
    builder.into = nodes
    inputs: dict[int, tuple[Value, Value]] = {}
    for node in func.nodes:
        plan = plans.get(params.get(node.inputs[1].name, "")) if node.op == "linear" else None
        if plan is None:
            nodes.append(node)
            continue
        x = node.inputs[0]
        if id(x) not in inputs:
            inputs[id(x)] = _quantize_input(builder, x, options)
        xq, xs = inputs[id(x)]
        operands = [xq, xs, builder.param(plan.codes), builder.param(plan.scales), *node.inputs[2:]]
        y = builder.op("qlinear", operands, {"group": options.group, "acc_bits": plan.acc_bits})
        if y.type != node.output.type:
            raise PipelineError(f"pass act-quant: qlinear gives {y.type}, the layer's output is {node.output.type}")
        nodes[-1].outputs = [node.output]
    used = {v.name for n in nodes for v in n.inputs} | {v.name for v in func.outputs}
    func.nodes = [n for n in nodes if not (n.op == "param" and n.attrs["name"] in plans
                                           and n.outputs[0].name not in used)]


def _quantize_input(b: Builder, x: Value, options: ActQuantOptions) -> tuple[Value, Value]:
    """Codes and per-row scales of activation ``x`` (one scale per row, or one per tensor)."""
    attrs = {"bits": options.abits}
    if options.granularity == "token":
        xq, xs = b.op_multi("quantize_dynamic", [x], attrs, [f"{x.name}_q", f"{x.name}_s"])
        return xq, xs
    shape = list(x.type.shape)
    flat = b.op("reshape", [x], {"shape": [x.type.numel()]}, name=f"{x.name}_flat")
    codes, scale = b.op_multi("quantize_dynamic", [flat], attrs, [f"{x.name}_qflat", f"{x.name}_scale"])
    xq = b.op("reshape", [codes], {"shape": shape}, name=f"{x.name}_q")
    one = b.op("reshape", [scale], {"shape": [1] * len(shape)}, name=f"{x.name}_s1")
    xs = b.op("expand", [one], {"shape": [*shape[:-1], 1]}, name=f"{x.name}_s")
    return xq, xs
