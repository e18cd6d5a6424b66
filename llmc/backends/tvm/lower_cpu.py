"""Decode-sized linear layers on the CPU GEMV kernels of ``build.py`` (lowering choices of CPU targets).

Where a layer has at most 8 activation rows of static size, the CPU target calls the hand-written
TIR kernels of the LUT-mpGEMM work instead of the generic TE ones: the dequantize GEMV
(``dequant.py``, any CPU) for ``linear(x, dequantize(...))`` with codes of at most 4 bits, and the
LUT kernel (``lut_kernels.py``) of the layer's table kind for ``lut_gemm``, fed with the
activations its ``lut_precompute`` read (the kernel builds its own tables), in the variant of the
target's instruction set (``lut_isa.py``). They apply the scale and zero point once per group, so
the dequantize and float-table kernels agree with the reference to float rounding; the int8-table
kernel quantizes the same tables with the same scale, up to the rounding of an entry whose float
sum lands on the other side of a tie.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from tvm import relax

from llmc.backends.tvm.build import kernel_func
from llmc.backends.tvm.lower import FunctionLowering, with_defaults
from llmc.backends.tvm.lut_isa import Variant
from llmc.backends.tvm.lut_runtime import MAX_BATCH
from llmc.backends.tvm.pack import CHUNK, Geometry, PackedWeights, pack_codes_for_dequant, pack_for_tvm
from llmc.ir.graph import Node
from llmc.ir.types import TensorType


def _rows(t: TensorType) -> int | None:
    """Activation rows of a static ``[..., K]`` type with at most ``MAX_BATCH`` of them."""
    if not all(d.is_static for d in t.shape):
        return None
    rows = int(np.prod([d.value for d in t.shape[:-1]]))
    return rows if rows <= MAX_BATCH else None


def _call(lw: FunctionLowering, layout: str, geom: Geometry, rows: int, x: relax.Expr, key: str,
          pack: Callable[[], PackedWeights], out: TensorType, variant: Variant | None = None) -> relax.Expr:
    """``y = x @ W.T`` on the ``layout`` kernel; ``pack`` gives its weights (once per module)."""
    cached = functools.cache(pack)
    weights = [lw.weight(f"{key}#{layout}.{i}", lambda i=i: cached()[i]) for i in range(3)]
    name = f"{layout}_n{geom.n}_k{geom.k}_b{geom.bits}_g{geom.group}_m{rows}"
    func = kernel_func(layout, geom, rows, variant).with_attrs({"global_symbol": name, "op_pattern": 8,
                                                                "tirx.is_scheduled": True})
    padded = geom.padded_rows(layout)
    x2 = lw.bb.emit(relax.op.reshape(x, [rows, geom.k]))
    y = lw.bb.emit(relax.call_tir(lw.bb.add_func(func, name), [x2, *weights],
                                  relax.TensorType([rows, padded], "float32")))
    if padded != geom.n:
        y = lw.bb.emit(relax.op.strided_slice(y, [1], [0], [geom.n]))
    return lw.bb.emit(relax.op.reshape(y, lw.shape(out)))


def dequant_gemv(lw: FunctionLowering, node: Node, x: relax.Expr, bias: relax.Expr | None, group: int,
                 offset: Callable[[], tuple[np.ndarray, np.ndarray]]) -> relax.Expr | None:
    """``linear(x, dequantize(codes, scales[, zeros]))`` on the dequantize GEMV kernel; ``offset``
    gives the offset codes and zero points. None where it does not apply."""
    rows = _rows(node.inputs[0].type)
    codes = lw.producers[node.inputs[1].name].inputs[0]
    bits = codes.type.dtype.bits
    if not lw.options.cpu_gemv or rows is None or bits > 4 or group % CHUNK:
        return None
    n, k = (d.value for d in codes.type.shape)
    geom = Geometry(n, k, bits, group)
    scales = lw.param_name(lw.producers[node.inputs[1].name].inputs[1])

    def pack() -> PackedWeights:
        u, z = offset()
        return pack_codes_for_dequant(u, lw.weights.param(scales).astype(np.float32), z, geom)

    y = _call(lw, "dequant", geom, rows, x, lw.param_name(codes), pack, node.outputs[0].type)
    return y if bias is None else lw.bb.emit(relax.op.add(y, bias))


def lut_gemv(lw: FunctionLowering, node: Node) -> relax.Expr | None:
    """``lut_gemm`` on the target's LUT kernel of its table kind. None where it does not apply."""
    pre = lw.producers.get(node.inputs[0].name)
    if lw.options.lut_variant is None or pre is None or pre.op != "lut_precompute":
        return None
    pre = with_defaults(pre)
    rows = _rows(pre.inputs[0].type)
    names = [lw.param_name(v) for v in node.inputs[3:]]
    bits, group = node.attrs["bits"], node.attrs["group"]
    if pre.attrs["g"] != CHUNK or None in names or rows is None or bits > 4 or group % CHUNK:
        return None
    geom = Geometry(node.inputs[3].type.shape[1].value, pre.inputs[0].type.shape[-1].value, bits, group)
    layout = "lut_int8" if pre.attrs["table_bits"] == 8 else "lut_f32"

    def pack() -> PackedWeights:
        planes, scales, zeros = (lw.weights.param(name) for name in names)
        return pack_for_tvm(planes, scales.astype(np.float32), zeros, geom, layout)

    return _call(lw, layout, geom, rows, lw.value(pre.inputs[0]), names[0], pack, node.outputs[0].type,
                 lw.options.lut_variant)
