"""``lut-mpgemm``: quantized linear layers (1..4-bit codes) into table lookups (docs/lut.md).

Every ``linear(x, dequantize(codes, scales[, zeros]))`` becomes ``lut_gemm`` over the weight's
packed bit-planes (``W.planes``) and integer zero points (``W.lut_zeros``), reading the tables of
``lut_precompute(x)``. Layers that read the same activations share one precompute, placed right
after the op producing them (the norm or activation a hardware table builder fuses with).
A ``moe`` whose experts are such codes gets ``lut_g``: its expert products run on the
accelerator's LUT engine (exact tables; the CPU and GPU backends compute them densely).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmc.compiler.lut.pack import offset_codes, pack_planes
from llmc.compiler.passes.cleanup import dce, prune_params
from llmc.compiler.passes.linear import clone
from llmc.compiler.pipeline import PassContext, register_pass
from llmc.ir.builder import Builder
from llmc.ir.graph import Function, Module, Node, Param, Value
from llmc.ir.types import DType, QuantEncoding, SparseEncoding, TensorType

U8 = DType("uint", 8)


@dataclass(frozen=True)
class LutOptions:
    g: int = 4
    symmetric: bool = True
    table_bits: int = 0  # 0: float32 tables; 8: int8 tables

    def __post_init__(self) -> None:
        if not 1 <= self.g <= 8:
            raise ValueError(f"g must be 1..8, got {self.g}")
        if self.table_bits not in (0, 8):
            raise ValueError(f"table_bits must be 0 (float) or 8, got {self.table_bits}")


@dataclass(frozen=True)
class _Site:
    node: Node  # the linear layer
    codes: str
    scales: str
    zeros: str | None
    encoding: QuantEncoding


def _sites(module: Module, func: Function, options: LutOptions) -> list[_Site]:
    producers = func.producers()
    out = []
    for node in func.nodes:
        if node.op != "linear":
            continue
        deq = producers.get(node.inputs[1].name)
        if deq is None or deq.op != "dequantize":
            continue
        names = [producers[v.name].attrs.get("name") if producers.get(v.name) is not None else None for v in deq.inputs]
        if None in names:
            continue
        quant = _lut_encoding(module.params[names[0]].type, options)
        if quant is None:
            continue
        out.append(_Site(node, names[0], names[1], names[2] if len(names) == 3 else None, quant))
    return out


def _lut_encoding(codes: TensorType, options: LutOptions) -> QuantEncoding | None:
    """The quantization of dense 1..4-bit codes whose groups hold whole chunks of ``g`` (None otherwise;
    also for codes with per-group minimums, which ``dequantize_min`` reads and the tables do not hold)."""
    quant = [e for e in codes.encodings if isinstance(e, QuantEncoding)]
    if not quant or quant[0].bits > 4 or quant[0].group % options.g or quant[0].min_dtype is not None:
        return None
    return None if any(isinstance(e, SparseEncoding) for e in codes.encodings) else quant[0]


def _lut_params(module: Module, site: _Site, options: LutOptions) -> tuple[str, str]:
    """Create (once) the planes and zero-point parameters of a layer (without data when the
    codes have none: a shapes-only module)."""
    weight = site.codes.removesuffix(".codes")
    planes, zeros = f"{weight}.planes", f"{weight}.lut_zeros"
    if planes not in module.params:
        codes = module.params[site.codes]
        n, k = codes.type.static_shape()
        groups = module.params[site.scales].type.static_shape()[1]
        plane_data = zero_data = None
        if codes.data is not None:
            z_in = module.params[site.zeros].data if site.zeros else None
            u, z = offset_codes(codes.data, z_in, site.encoding.bits, groups)
            plane_data, zero_data = pack_planes(u, site.encoding.bits, options.g), z.astype("uint8")
        shape = [site.encoding.bits, n, math.ceil(k / options.g)]
        module.params[planes] = Param(planes, TensorType.of(shape, U8), plane_data)
        module.params[zeros] = Param(zeros, TensorType.of([n, groups], U8), zero_data)
    return planes, zeros


@register_pass("lut-mpgemm", LutOptions)
def lut_mpgemm(module: Module, options: LutOptions, context: PassContext) -> Module:
    """Rewrite quantized linear layers of 1..4 bits into LUT-mpGEMM form (and mark low-bit experts)."""
    out = clone(module)
    rewritten = set()
    experts = 0
    for func in out.functions.values():
        sites = _sites(out, func, options)
        tables: dict[str, list[Value]] = {}
        nodes: list[Node] = []
        by_node = {id(s.node): s for s in sites}
        builder = Builder(out, func)
        for node in func.nodes:
            site = by_node.get(id(node))
            if site is None:
                nodes.append(node)
                continue
            builder.into = nodes
            x = node.inputs[0]
            if x.name not in tables:
                attrs = {"g": options.g, "symmetric": options.symmetric, "table_bits": options.table_bits}
                tables[x.name] = builder.op_multi("lut_precompute", [x], attrs)
            planes, zeros = _lut_params(out, site, options)
            args = [*tables[x.name], builder.param(planes), builder.param(site.scales), builder.param(zeros)]
            attrs = {"bits": site.encoding.bits, "g": options.g, "group": site.encoding.group,
                     "symmetric": options.symmetric}
            y = builder.op("lut_gemm", args, attrs)
            if len(node.inputs) == 3:
                y = builder.op("add", [y, node.inputs[2]])
            nodes[-1].outputs = [node.outputs[0]]  # the layer's users read the same value
            rewritten.add(site.codes)
        func.nodes = nodes
        dce(func)
        experts += _lut_experts(out, func, options)
    prune_params(out)
    context.reports["lut-mpgemm"] = {"layers": len(rewritten), "g": options.g, "symmetric": options.symmetric,
                                     "table_bits": options.table_bits, "moe_layers": experts}
    return out


def _lut_experts(module: Module, func: Function, options: LutOptions) -> int:
    """Mark every ``moe`` whose experts are dequantized 1..4-bit dense codes (groups a multiple of
    ``g``) for LUT products (``lut_g``); how many. Their tables are exact whatever ``table_bits``."""
    producers, marked = func.producers(), 0
    for node in func.nodes:
        if node.op != "moe":
            continue
        if all(_expert_codes(module, producers, v, options) for v in node.inputs[2:]):
            node.attrs["lut_g"] = options.g
            marked += 1
    return marked


def _expert_codes(module: Module, producers: dict[str, Node], v: Value, options: LutOptions) -> bool:
    """Whether ``v`` is ``dequantize`` of expert codes the LUT engine takes (:func:`_lut_encoding`)."""
    deq = producers.get(v.name)
    param = producers.get(deq.inputs[0].name) if deq is not None and deq.op == "dequantize" else None
    return param is not None and param.op == "param" and \
        _lut_encoding(module.params[param.attrs["name"]].type, options) is not None
