"""Lowerings of the linear family: float, dequantize-fused, N:M sparse, integer (W8A8) and LUT-mpGEMM.

A ``linear`` whose weight is a ``dequantize`` (or ``dequantize_min``) of parameters becomes one
dequantize-fused kernel on packed codes; a ``linear`` whose weight parameter (or codes) is ``#sparse<n:m>`` reads only the
kept values. Every other op here maps to its TE kernel on the tensors the IR gives it.
"""

from __future__ import annotations

import functools

import numpy as np
from tvm import relax

from llmc.backends.tvm import kernels, layouts
from llmc.backends.tvm.lower import FunctionLowering, handles, tvm_dtype, with_defaults
from llmc.backends.tvm.lower_cpu import dequant_gemv, lut_gemv
from llmc.compiler.lut.pack import offset_codes
from llmc.errors import LlmcError
from llmc.ir.graph import Node
from llmc.ir.types import F32, SparseEncoding, TensorType


def _emit_te(lw: FunctionLowering, name: str, fn: object, *args: relax.Expr | None, **attrs: object) -> relax.Expr:
    """``bb.emit_te`` with trailing ``None`` operands (absent biases, zeros) dropped."""
    present = list(args)
    while present and present[-1] is None:
        present.pop()
    return lw.bb.emit_te(fn, *present, primfunc_name_hint=name, **attrs)


def _outputs(lw: FunctionLowering, call: relax.Expr, count: int) -> list[relax.Expr]:
    return [lw.bb.emit(relax.TupleGetItem(call, i)) for i in range(count)]


def _nm(t: TensorType) -> tuple[int, int] | None:
    for e in t.encodings:
        if isinstance(e, SparseEncoding) and e.n and e.m:
            return e.n, e.m
    return None


def _require_f32(lw: FunctionLowering, node: Node) -> None:
    if node.inputs[0].type.dtype != F32:
        raise LlmcError(f"func @{lw.func.name}, %{node.outputs[0].name} = {node.op}: the TVM backend computes "
                        f"linear layers on f32 activations, got {node.inputs[0].type.dtype}")


def _f32(lw: FunctionLowering, name: str) -> relax.Var:
    """A parameter as float32 (f16 scales widen exactly)."""
    return lw.weight(f"{name}#f32", lambda: lw.weights.param(name).astype(np.float32))


@handles("linear")
def _linear(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    _require_f32(lw, node)
    x = lw.arg(node, 0)
    bias = lw.arg(node, 2) if len(node.inputs) == 3 else None
    weight = node.inputs[1]
    producer = lw.producers.get(weight.name)
    if producer is not None and producer.op == "dequantize" and lw.deferred(producer):
        return [_quantized_linear(lw, node, x, bias, producer)]
    if producer is not None and producer.op == "dequantize_min" and lw.deferred(producer):
        return [_min_linear(lw, x, bias, producer)]
    name = lw.param_name(weight)
    nm = _nm(weight.type)
    if name is not None and nm is not None:
        n, m = nm

        @functools.cache
        def pack() -> tuple[np.ndarray, np.ndarray]:
            w = lw.weights.param(name).astype(np.float32)
            return layouts.sparse_pack(w, w != 0, n, m, name)

        values = lw.weight(f"{name}#values", lambda: pack()[0])
        index = lw.weight(f"{name}#index", lambda: pack()[1])
        return [_emit_te(lw, "sparse_linear", kernels.sparse_linear, x, values, index, bias, n=n, m=m)]
    return [_emit_te(lw, "linear", kernels.linear, x, lw.value(weight), bias)]


def _quantized_linear(lw: FunctionLowering, node: Node, x: relax.Expr, bias: relax.Expr | None, dq: Node
                      ) -> relax.Expr:
    """``linear(x, dequantize(codes, scales[, zeros]))`` on packed (or N:M sparse) offset codes."""
    dq = with_defaults(dq)
    codes_name, scales_name = lw.param_name(dq.inputs[0]), lw.param_name(dq.inputs[1])
    zeros_name = lw.param_name(dq.inputs[2]) if len(dq.inputs) == 3 else None
    code_type = dq.inputs[0].type
    group = dq.attrs["group"]
    if dq.attrs["dtype"] != F32:
        raise LlmcError(f"dequantize to {dq.attrs['dtype']}: the TVM backend dequantizes to f32")
    if zeros_name is None and not code_type.dtype.signed:
        raise LlmcError(f"{codes_name}: unsigned codes without zero points are not supported by the TVM backend")
    scales = _f32(lw, scales_name)

    @functools.cache
    def offset() -> tuple[np.ndarray, np.ndarray]:
        """Offset codes ``u`` and zero points ``z`` (docs/lut.md): ``W = (u - z) * scale``."""
        zeros = lw.weights.param(zeros_name) if zeros_name else None
        groups = lw.weights.param(scales_name).shape[1]
        return offset_codes(lw.weights.param(codes_name), zeros, code_type.dtype.bits, groups)

    zeros = lw.weight(f"{codes_name}#zeros", lambda: offset()[1].astype(np.float32))
    nm = _nm(code_type)
    if nm is not None:
        n, m = nm

        @functools.cache
        def pack() -> tuple[np.ndarray, np.ndarray]:
            u, z = offset()
            zero = np.repeat(z, group or u.shape[1], axis=1)  # a weight is zero where its code is its zero point
            return layouts.sparse_pack(u.astype(np.uint8), u != zero, n, m, codes_name)

        codes = lw.weight(f"{codes_name}#sparse_codes", lambda: pack()[0])
        index = lw.weight(f"{codes_name}#index", lambda: pack()[1])
        return _emit_te(lw, "sparse_dequant_linear", kernels.sparse_dequant_linear, x, codes, index, scales, zeros,
                        bias, n=n, m=m, group=group)
    fast = dequant_gemv(lw, node, x, bias, group, offset)
    if fast is not None:
        return fast
    slot = layouts.slot_bits(code_type.dtype.bits)
    packed = lw.weight(f"{codes_name}#packed{slot}", lambda: layouts.pack_words(offset()[0], slot))
    return _emit_te(lw, "dequant_linear", kernels.dequant_linear, x, packed, scales, zeros, bias, slot=slot, group=group)


def _min_linear(lw: FunctionLowering, x: relax.Expr, bias: relax.Expr | None, dq: Node) -> relax.Expr:
    """``linear(x, dequantize_min(codes, scales, mins))`` on packed unsigned codes."""
    dq = with_defaults(dq)
    codes_name, scales_name, mins_name = (lw.param_name(v) for v in dq.inputs)
    if dq.attrs["dtype"] != F32:
        raise LlmcError(f"dequantize_min to {dq.attrs['dtype']}: the TVM backend dequantizes to f32")
    if _nm(dq.inputs[0].type) is not None:
        raise LlmcError(f"{codes_name}: N:M sparse codes with per-group minimums are not supported by the TVM backend")
    slot = layouts.slot_bits(dq.inputs[0].type.dtype.bits)
    packed = lw.weight(f"{codes_name}#packed{slot}", lambda: layouts.pack_words(lw.weights.param(codes_name), slot))
    return _emit_te(lw, "dequant_min_linear", kernels.dequant_min_linear, x, packed, _f32(lw, scales_name),
                    _f32(lw, mins_name), bias, slot=slot, group=dq.attrs["group"])


@handles("dequantize_min")
def _dequantize_min(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    if node.attrs["dtype"] != F32:
        raise LlmcError(f"dequantize_min to {node.attrs['dtype']}: the TVM backend dequantizes to f32")
    args = [lw.arg(node, i) for i in range(3)]
    for i in (1, 2):
        name = lw.param_name(node.inputs[i])
        if name is not None:
            args[i] = _f32(lw, name)
    return [lw.bb.emit_te(kernels.dequantize_min_codes, *args, node.attrs["group"], primfunc_name_hint="dequantize_min")]


@handles("dequantize")
def _dequantize(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    if node.attrs["dtype"] != F32:
        raise LlmcError(f"dequantize to {node.attrs['dtype']}: the TVM backend dequantizes to f32")
    args = [lw.arg(node, i) for i in range(len(node.inputs))]
    scales_name = lw.param_name(node.inputs[1])
    scales = _f32(lw, scales_name) if scales_name is not None else args[1]
    zeros = args[2] if len(args) == 3 else None
    return [lw.bb.emit_te(kernels.dequantize_codes, args[0], scales, zeros, node.attrs["group"],
                          primfunc_name_hint="dequantize")]


@handles("qlinear")
def _qlinear(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    args = [lw.arg(node, i) for i in range(len(node.inputs))]
    ws_name = lw.param_name(node.inputs[3])
    if ws_name is not None:
        args[3] = _f32(lw, ws_name)
    acc = "int32" if node.attrs["acc_bits"] <= 32 else "int64"
    return [_emit_te(lw, "qlinear", kernels.qlinear, *args, group=node.attrs["group"], acc_dtype=acc)]


@handles("quantize_dynamic")
def _quantize_dynamic(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    call = lw.bb.emit_te(kernels.quantize_rows, lw.arg(node, 0), bits=node.attrs["bits"],
                         dtype=tvm_dtype(node.outputs[0].type.dtype), primfunc_name_hint="quantize_rows")
    return _outputs(lw, call, 2)


@handles("fake_quant")
def _fake_quant(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    scale_dtype = tvm_dtype(node.attrs["scale_dtype"])
    return [lw.bb.emit_te(kernels.fake_quant, lw.arg(node, 0), bits=node.attrs["bits"], group=node.attrs["group"],
                          scale_dtype=scale_dtype, primfunc_name_hint="fake_quant")]


@handles("lut_precompute")
def _lut_precompute(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    call = lw.bb.emit_te(kernels.lut_tables, lw.arg(node, 0), g=node.attrs["g"],
                         symmetric=node.attrs["symmetric"], table_bits=node.attrs["table_bits"],
                         primfunc_name_hint="lut_tables")
    return _outputs(lw, call, 3)


@handles("lut_gemm")
def _lut_gemm(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    fast = lut_gemv(lw, node)
    if fast is not None:
        return [fast]
    args = [lw.arg(node, i) for i in range(4)]
    for i in (4, 5):  # scales and integer zeros as float32
        name = lw.param_name(node.inputs[i])
        args.append(_f32(lw, name) if name is not None else lw.bb.emit(relax.op.astype(lw.arg(node, i), "float32")))
    return [lw.bb.emit_te(kernels.lut_gemm, *args, bits=node.attrs["bits"], g=node.attrs["g"],
                          group=node.attrs["group"], symmetric=node.attrs["symmetric"],
                          primfunc_name_hint="lut_gemm")]

