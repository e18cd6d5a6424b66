"""Quantized ONNX weights kept as the file's codes, in llmc's quantized linear form (as the
``quantize`` pass writes it, docs/compression.md): ``W.codes`` [N, K] (integer, with a
:class:`~llmc.ir.types.QuantEncoding`), ``W.scales`` f16 [N, K/group] and, for nonzero zero
points, ``W.zeros``, read by ``dequantize {group}`` feeding ``linear``.

``W`` is the codes initializer's name without a ``_quantized`` (onnxruntime's QDQ quantizer) or
``_Q4``-like (MatMulNBits) suffix. llmc's ``dequantize`` computes ``(codes - zero) *
float32(scale)``; ONNX computes ``(x - zero_point) * scale`` in float32: the two are equal when
every scale is exactly a float16, which is checked (else the float dequantize is kept).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
import onnx

from llmc.compiler.frontend.onnx_quant_ops import layout
from llmc.compiler.frontend.onnx_values import Const, elem_dtype
from llmc.ir.graph import Param, Value
from llmc.ir.ops.common import as_dtype
from llmc.ir.types import F16, Dim, DType, QuantEncoding, TensorType

if TYPE_CHECKING:
    from llmc.compiler.frontend.onnx_converter import Converter

_SUFFIX = re.compile(r"(_quantized|_Q\d+)$")
MAX_CODE_BITS = 16  # QuantEncoding's widest codes


def f16_exact(scales: np.ndarray) -> bool:
    """Whether every scale is a float16 value (so that f16 storage changes nothing)."""
    wide = np.asarray(scales, dtype=np.float32)
    with np.errstate(over="ignore"):
        return bool(np.all(wide.astype(np.float16).astype(np.float32) == wide))


def weight_base(c: Converter, key: str) -> str:
    """The name ``W`` of the parameters ``W.codes``, ``W.scales``, ``W.zeros`` for initializer ``key``."""
    base = _SUFFIX.sub("", key)
    base = base.removeprefix("model.") if c.contract else base
    while any(f"{base}.{part}" in c.b.module.params for part in ("codes", "scales", "zeros")):
        base += "_"
    return base


def add_param(c: Converter, name: str, data: np.ndarray, dtype: DType, encodings: tuple = ()) -> Value:
    array = np.ascontiguousarray(as_dtype(np.asarray(data), dtype))
    c.b.module.params[name] = Param(name, TensorType.of(array.shape, dtype, encodings), array)
    return c.b.param(name)


def codes_weight(c: Converter, key: str, codes: np.ndarray, code_dtype: DType, scales: np.ndarray,
                 zeros: np.ndarray | None, group: int, dtype: DType, k: int | None = None) -> Value:
    """llmc's quantized weight [N, k] of ``dtype``: ``codes`` [N, K'] of ``code_dtype``, ``scales``
    [N, K'/group] (exact in f16) and ``zeros`` (of the codes' type, or None) read by ``dequantize``;
    a ``slice`` keeps the first ``k`` columns when K' > k (padded blocks)."""
    base = weight_base(c, key)
    encoding = QuantEncoding(code_dtype.bits, group, F16, zeros is None, None if zeros is None else code_dtype)
    inputs = [add_param(c, f"{base}.codes", codes, code_dtype, (encoding,)),
              add_param(c, f"{base}.scales", scales, F16)]
    if zeros is not None:
        inputs.append(add_param(c, f"{base}.zeros", zeros, code_dtype))
    w = c.op("dequantize", inputs, {"group": group, "dtype": dtype})
    if k is not None and k != codes.shape[1]:
        w = c.op("slice", [w], {"axis": 1, "start": 0, "end": k})
    return w


def _dequantize_producer(c: Converter, name: str) -> tuple[onnx.NodeProto | None, bool]:
    """The DequantizeLinear that computes ``name`` through Identity and 2-D Transpose nodes, and
    whether an odd number of transposes lies between."""
    transposed = False
    while (node := c.producers.get(name)) is not None and node.domain in ("", "ai.onnx"):
        if node.op_type == "DequantizeLinear":
            return node, transposed
        if node.op_type == "Transpose":
            perm = next((list(onnx.helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm"), None)
            if perm not in (None, [1, 0], [-1, -2]):
                return None, False
            transposed = not transposed
        elif node.op_type != "Identity":
            return None, False
        name = node.input[0]
    return None, False


def quantized_weight(c: Converter, name: str, flip: bool) -> Value | None:
    """The weight ``name`` (transposed when ``flip``) as llmc's quantized form [N, K], when it is
    a DequantizeLinear of constants (through Identity / Transpose) that the form holds exactly;
    else None, and the caller keeps the float dequantize (IR ops, or folded when small).

    Kept as codes: int8/uint8/int16/uint16/int4/uint4/int2/uint2 codes of a 2-D constant with
    constant scales that are all exact float16 values, and

    - a per-tensor scale (group = K, the scale repeated over the N rows),
    - a per-axis scale along N (group = K),
    - a blocked scale along K whose block divides K (group = block_size).

    Zero points (constant, of the codes' type) that are not all zero become ``W.zeros`` (an
    asymmetric encoding of the codes' type); all-zero or absent ones give a symmetric encoding.

    Dequantized (None): int32 codes; scales that float16 does not hold exactly (no silent
    requantization); per-axis scales along K; blocks along N or blocks that do not divide K;
    codes, scales or zero points computed at run time."""
    node, transposed = _dequantize_producer(c, name)
    if node is None:
        return None
    key = (node.output[0], flip != transposed)
    if key not in c.quantized:
        c.quantized[key] = _codes_of(c, node, flip != transposed)
    return c.quantized[key]


def _codes_of(c: Converter, node: onnx.NodeProto, flip: bool) -> Value | None:
    x = c.get(node.input[0])
    scale = c.get(node.input[1])
    zero = c.get(node.input[2]) if c.has_input(node, 2) else None
    consts = [v for v in (x, scale, zero) if v is not None]
    if not all(isinstance(v, Const) and not v.symbolic for v in consts):
        return None
    assert isinstance(x, Const) and isinstance(scale, Const) and (zero is None or isinstance(zero, Const))
    if x.data.ndim != 2 or not x.dtype.is_int or x.dtype.bits > MAX_CODE_BITS:
        return None
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    dtype = elem_dtype(attrs["output_dtype"]) if attrs.get("output_dtype") else scale.dtype
    lay = layout(c, node, attrs, [Dim.of(d) for d in x.data.shape], [Dim.of(d) for d in scale.data.shape])
    codes = x.data.T if flip else x.data
    n, k = codes.shape
    n_axis = 1 if flip else 0
    zeros = None if zero is None else zero.data
    if lay.kind == "tensor":
        group, scales = k, np.full((n, 1), scale.data.ravel()[0], scale.data.dtype)
        zeros = None if zeros is None else np.full((n, 1), zeros.ravel()[0], zeros.dtype)
    elif lay.kind == "axis" and lay.axis == n_axis:
        group, scales = k, scale.data.reshape(n, 1)
        zeros = None if zeros is None else zeros.reshape(n, 1)
    elif lay.kind == "block" and lay.axis != n_axis and k % lay.block == 0:
        group, scales = lay.block, scale.data.T if flip else scale.data
        zeros = None if zeros is None else (zeros.T if flip else zeros)
    else:
        return None
    if not f16_exact(scales):
        return None
    if zeros is not None and not np.any(zeros):
        zeros = None
    return codes_weight(c, x.origin or node.input[0], codes, x.dtype, scales, zeros, group, dtype)
