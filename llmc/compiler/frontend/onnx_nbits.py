"""onnxruntime's ``com.microsoft.MatMulNBits`` (as its weight quantizer and onnxruntime-genai
write it): ``Y = A @ dequant(B)^T + bias`` with ``B`` [N, n_blocks, block_size * bits / 8] uint8
(codes packed low bits first, blocks of ``block_size`` along K), ``scales`` [N * n_blocks],
optional ``zero_points`` (packed uint8 [N * ceil(n_blocks * bits / 8)], or of the scales' type
[N * n_blocks]; 2^(bits-1) when absent), optional ``g_idx`` [K] (the block of each column) and
``bias`` [N]. Bits 2, 4 and 8 (those onnxruntime's CPU kernel runs).

The weight becomes llmc's quantized form (unsigned codes with zero points, group = block_size,
:func:`~llmc.compiler.frontend.onnx_quant_weights.codes_weight`) read by ``linear``; with scales
that float16 does not hold (a quantizer run on a float32 model writes float32 scales) the same
codes are read by ``dequantize`` with float32 scales (:func:`_f32_scaled_weight`); fractional
float zero points keep the float dequantize. A K that the blocks overrun keeps the padded codes
and slices the dequantized weight. ``accuracy_level``
is not read: llmc computes the float product (onnxruntime's level 4 quantizes A to int8).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from llmc.compiler.frontend.onnx_quant_weights import add_param, codes_weight, f16_exact, weight_base
from llmc.compiler.frontend.onnx_registry import CONTRIB_DOMAIN, Attrs, Node, handles
from llmc.compiler.frontend.onnx_values import Const, Operand
from llmc.ir.graph import Value
from llmc.ir.types import F32, I64, DType, int_dtype

if TYPE_CHECKING:
    from llmc.compiler.frontend.onnx_converter import Converter

BITS = (2, 4, 8)


def unpack(packed: np.ndarray, bits: int) -> np.ndarray:
    """uint8 bytes [..., m] as ``8 / bits`` codes each, low bits first: [..., m * 8 / bits]."""
    per = 8 // bits
    parts = [(packed >> (bits * i)) & ((1 << bits) - 1) for i in range(per)]
    return np.stack(parts, axis=-1).reshape(*packed.shape[:-1], packed.shape[-1] * per).astype(np.uint8)


def _const(c: Converter, n: Node, index: int, what: str, size: int | None = None) -> Const:
    value = c.const(n.input[index], what)
    if value.symbolic or (size is not None and value.data.size != size):
        raise c.error(f"{what} has shape [{', '.join(map(str, value.data.shape))}], expected {size} elements")
    return value


def _zero_points(c: Converter, n: Node, rows: int, blocks: int, bits: int, scale_dtype: DType) -> np.ndarray:
    """Zero points [N, n_blocks]: unpacked from uint8, as given (float), or 2^(bits-1)."""
    if not c.has_input(n, 3):
        return np.full((rows, blocks), 1 << (bits - 1), np.uint8)
    zero = c.const(n.input[3], "zero_points")
    if zero.dtype == int_dtype(8, signed=False):
        per_row = -(-blocks * bits // 8)
        if zero.data.size != rows * per_row:
            raise c.error(f"packed zero_points have {zero.data.size} elements, expected {rows * per_row}")
        return unpack(zero.data.reshape(rows, per_row), bits)[:, :blocks]
    if zero.dtype != scale_dtype or zero.data.size != rows * blocks:
        raise c.error(f"zero_points must be packed uint8 or {rows * blocks} elements of the scales' type "
                      f"({scale_dtype}), got {zero.data.size} of {zero.dtype}")
    return zero.data.reshape(rows, blocks)


def _float_weight(c: Converter, key: str, codes: np.ndarray, code_dtype: DType, scales: np.ndarray,
                  scale_dtype: DType, zeros: np.ndarray, group: int, dtype: DType, k: int) -> Value:
    """``(codes - zeros) * scales`` in float32 as IR ops, for scales float16 does not hold
    exactly or fractional zero points: the codes stay integers, with no quantization encoding."""
    base = weight_base(c, key)
    n, padded = codes.shape
    groups = padded // group
    w = c.op("reshape", [add_param(c, f"{base}.codes", codes, code_dtype)], {"shape": [n, groups, group]})
    zero_dtype = code_dtype if np.issubdtype(zeros.dtype, np.integer) else scale_dtype
    w = c.op("sub", [c.op("cast", [w], {"dtype": F32}),
                     c.op("cast", [add_param(c, f"{base}.zeros", zeros.reshape(n, groups, 1), zero_dtype)],
                          {"dtype": F32})])
    scale = add_param(c, f"{base}.scales", scales.reshape(n, groups, 1), scale_dtype)
    w = c.op("mul", [w, scale if scale_dtype == F32 else c.op("cast", [scale], {"dtype": F32})])
    w = c.op("reshape", [w], {"shape": [n, padded]})
    if padded != k:
        w = c.op("slice", [w], {"axis": 1, "start": 0, "end": k})
    return w if dtype == F32 else c.op("cast", [w], {"dtype": dtype})


def _f32_scaled_weight(c: Converter, key: str, codes: np.ndarray, code_dtype: DType, scales: np.ndarray,
                       zeros: np.ndarray, group: int, dtype: DType, k: int) -> Value:
    """``dequantize {group}`` of the codes by float32 scales: llmc's ``dequantize`` is ONNX's
    ``(codes - zero) * scale`` in float32, so nothing is rounded. The codes carry no ``#quant``
    encoding (whose scales the passes that rewrite quantized layers write and read as f16); the
    ``linear`` still reads the file's codes, as the FPGA backend packs them."""
    base = weight_base(c, key)
    w = c.op("dequantize", [add_param(c, f"{base}.codes", codes, code_dtype),
                            add_param(c, f"{base}.scales", scales, F32),
                            add_param(c, f"{base}.zeros", zeros, code_dtype)], {"group": group, "dtype": dtype})
    return w if k == codes.shape[1] else c.op("slice", [w], {"axis": 1, "start": 0, "end": k})


def _column_order(c: Converter, n: Node, k: int, block: int, blocks: int) -> np.ndarray | None:
    """The column permutation that makes ``g_idx``'s blocks contiguous (None: already so)."""
    if not c.has_input(n, 4):
        return None
    g_idx = _const(c, n, 4, "g_idx", k).data.astype(np.int64).ravel()
    if np.array_equal(g_idx, np.arange(k) // block):
        return None
    if c.has_input(n, 3) and c.dtype_of(c.get(n.input[3])) == int_dtype(8, signed=False):
        raise c.error("g_idx with packed uint8 zero_points is not supported (onnxruntime's CPU kernel then "
                      "ignores the zero points)")
    if k % block or g_idx.min() < 0 or g_idx.max() >= blocks or np.any(np.bincount(g_idx, minlength=blocks) != block):
        raise c.error(f"g_idx must assign exactly block_size ({block}) columns to each of the {blocks} blocks")
    return np.argsort(g_idx, kind="stable")


@handles("MatMulNBits", domain=CONTRIB_DOMAIN)
def _matmul_nbits(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    if "K" not in attrs or "N" not in attrs or "block_size" not in attrs:
        raise c.error("attributes K, N and block_size are required")
    k, rows, bits, block = int(attrs["K"]), int(attrs["N"]), int(attrs.get("bits", 4)), int(attrs["block_size"])
    if bits not in BITS:
        raise c.error(f"bits {bits} is not supported (2, 4 and 8 are, as in onnxruntime's CPU kernel)")
    if block < 16 or block & (block - 1):
        raise c.error(f"block_size {block} is not a power of 2 of at least 16")
    a = c.tensor(n.input[0])
    dtype = a.type.dtype
    if not dtype.is_float or a.type.rank < 1 or a.type.shape[-1].is_static and a.type.shape[-1].value != k:
        raise c.error(f"input A is {a.type}, expected floats [..., {k}]")
    blocks = -(-k // block)
    packed = _const(c, n, 1, "B")
    blob = block * bits // 8
    if packed.dtype != int_dtype(8, signed=False) or packed.data.shape != (rows, blocks, blob):
        raise c.error(f"B is {packed.dtype} [{', '.join(map(str, packed.data.shape))}], expected uint8 "
                      f"[{rows}, {blocks}, {blob}]")
    scale = _const(c, n, 2, "scales", rows * blocks)
    if scale.dtype != dtype:
        raise c.error(f"scales are {scale.dtype}, expected A's type {dtype}")
    codes = unpack(packed.data.reshape(rows, blocks * blob), bits)
    scales = scale.data.reshape(rows, blocks)
    zeros = _zero_points(c, n, rows, blocks, bits, scale.dtype)
    order = _column_order(c, n, k, block, blocks)
    if order is not None:
        codes = codes[:, order]
    code_dtype = int_dtype(bits, signed=False)
    key = packed.origin or n.input[1]
    integral = np.issubdtype(zeros.dtype, np.integer) or bool(
        np.all((zeros == np.round(zeros)) & (zeros >= 0) & (zeros < 1 << bits)))
    if integral and f16_exact(scales):
        w = codes_weight(c, key, codes, code_dtype, scales, zeros.astype(np.uint8), block, dtype, k)
    elif integral:
        w = _f32_scaled_weight(c, key, codes, code_dtype, scales, zeros.astype(np.uint8), block, dtype, k)
    else:
        w = _float_weight(c, key, codes, code_dtype, scales, scale.dtype, zeros, block, dtype, k)
    x = a if order is None else c.op("gather", [a, c.param(f"{key}.g_idx_order", False, order, I64)],
                                     {"axis": a.type.rank - 1})
    if not c.has_input(n, 5):
        out = c.emit("linear", [x, w])
        c.linears[out] = (x, w, n.output[0])  # a following bias Add may fuse into it
        return [out]
    bias = c.get(n.input[5])
    if isinstance(bias, Const) and not bias.symbolic and bias.data.shape == (rows,) and bias.dtype == dtype:
        return [c.emit("linear", [x, w, c.param(bias.origin or n.input[5], False, bias.data, bias.dtype)])]
    return [c.emit("add", [c.op("linear", [x, w]), c.tensor(n.input[5])])]
