"""Quantization ops: exact integer semantics that every backend reproduces bit for bit.

Conventions, shared by all ops here:

- groups run along the last axis: element ``k`` uses scale column ``k // group``; ``group = 0``
  means one scale per row (per channel / per token);
- rounding is round-half-to-even (``rint``), clamping to the symmetric range
  ``[-(2^(b-1)-1), 2^(b-1)-1]`` for signed codes and ``[0, 2^b-1]`` for unsigned ones;
- float arithmetic is float32, in the order written in each docstring.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmc.ir.ops.common import as_dtype, exact_int_matmul
from llmc.ir.registry import AttrSpec, InferError, RefContext, register
from llmc.ir.types import F16, F32, Dim, DType, QuantEncoding, TensorType


def groups_of(k: Dim, group: int) -> Dim:
    """Number of scale columns for a last axis of ``k`` elements."""
    if group == 0:
        return Dim.of(1)
    count = k.exact_div(group)
    if count is None:
        raise InferError(f"group size {group} does not divide the last axis ({k})")
    return count


def expand_groups(scale: np.ndarray, k: int, group: int) -> np.ndarray:
    """Repeat per-group columns to one per element of the last axis."""
    return np.repeat(scale, group if group else k, axis=-1)


def accumulator_bound(k: int, x_bits: int, w_bits: int) -> int:
    """Largest |sum| of ``k`` products of signed ``x_bits`` and ``w_bits`` symmetric codes."""
    return k * ((1 << (x_bits - 1)) - 1) * ((1 << (w_bits - 1)) - 1)


def qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


def _scale_check(codes: TensorType, scale: TensorType, group: int, what: str) -> None:
    if codes.rank < 1:
        raise InferError(f"{what} needs codes of rank >= 1")
    expected = codes.shape[:-1] + (groups_of(codes.shape[-1], group),)
    if scale.shape != expected:
        raise InferError(f"{what} scale shape [{','.join(map(str, scale.shape))}] != [{','.join(map(str, expected))}]")
    if not scale.dtype.is_float:
        raise InferError(f"{what} scale must be float, got {scale.dtype}")


@register("dequantize", inputs=(2, 3), attrs={"group": AttrSpec("int"), "dtype": AttrSpec("dtype", F32)})
class Dequantize:
    """``(codes - zero) * scale`` per group along the last axis: integer subtraction, then one
    float32 multiply, rounded to ``dtype``. ``zero`` (optional) has the scale's shape."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        codes, scale = ins[:2]
        if not codes.dtype.is_int:
            raise InferError(f"dequantize codes must be integers, got {codes.dtype}")
        if any(e.min_dtype is not None for e in _quant(codes)):
            raise InferError("codes with a per-group minimum (#quant<..., min=...>) are read by dequantize_min")
        _scale_check(codes, scale, attrs["group"], "dequantize")
        if len(ins) == 3 and (ins[2].shape != scale.shape or not ins[2].dtype.is_int):
            raise InferError("dequantize zero points must be integers shaped like the scales")
        return [TensorType(codes.shape, attrs["dtype"])]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        codes, scale = ins[0].astype(np.int64), ins[1].astype(np.float32)
        k, group = codes.shape[-1], attrs["group"]
        if len(ins) == 3:
            codes = codes - expand_groups(ins[2].astype(np.int64), k, group)
        return [as_dtype(codes.astype(np.float32) * expand_groups(scale, k, group), attrs["dtype"])]


def _quant(t: TensorType) -> list[QuantEncoding]:
    return [e for e in t.encodings if isinstance(e, QuantEncoding)]


@register("dequantize_min", inputs=3, attrs={"group": AttrSpec("int"), "dtype": AttrSpec("dtype", F32)})
class DequantizeMin:
    """``scale * codes - min`` per group along the last axis, for unsigned codes with a float
    minimum per group (llama.cpp's Q4_1, Q5_1, Q2_K, Q4_K, Q5_K): the code widened to float32,
    one float32 multiply by the scale, then one float32 subtract of the minimum (each rounded,
    no fused multiply-add), rounded to ``dtype``. ``mins`` has the scales' shape. Codes that
    carry a ``#quant`` encoding must carry the one these operands give (``min=DT``)."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        codes, scale, mins = ins
        if not codes.dtype.is_int or codes.dtype.signed:
            raise InferError(f"dequantize_min codes must be unsigned integers, got {codes.dtype}")
        _scale_check(codes, scale, attrs["group"], "dequantize_min")
        if mins.shape != scale.shape or not mins.dtype.is_float:
            raise InferError("dequantize_min minimums must be floats shaped like the scales")
        for e in _quant(codes):
            want = QuantEncoding(codes.dtype.bits, attrs["group"], scale.dtype, False, None, mins.dtype)
            if e != want:
                raise InferError(f"codes encoded {e}, but these operands are {want}")
        return [TensorType(codes.shape, attrs["dtype"])]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        codes, k, group = ins[0], ins[0].shape[-1], attrs["group"]
        scale = expand_groups(ins[1].astype(np.float32), k, group)
        low = expand_groups(ins[2].astype(np.float32), k, group)
        return [as_dtype(codes.astype(np.float32) * scale - low, attrs["dtype"])]


@register("quantize_dynamic", inputs=1, attrs={"bits": AttrSpec("int", 8)}, results=2)
class QuantizeDynamic:
    """Symmetric per-row (last axis) quantization of activations: ``scale = max|x| / qmax``
    (1 where the row is all zeros), ``codes = clamp(rint(x / scale))``. Results: codes (signed
    ``bits``) and scale (f32, last axis 1)."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x, bits = ins[0], attrs["bits"]
        if not x.dtype.is_float:
            raise InferError(f"quantize_dynamic needs a float input, got {x.dtype}")
        if not 2 <= bits <= 16:
            raise InferError(f"quantize_dynamic bits must be 2..16, got {bits}")
        return [TensorType(x.shape, DType("int", bits)), TensorType(x.shape[:-1] + (Dim.of(1),), F32)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x = ins[0].astype(np.float32)
        q = qmax(attrs["bits"])
        scale = np.max(np.abs(x), axis=-1, keepdims=True) / np.float32(q)
        scale = np.where(scale > 0, scale, np.float32(1.0)).astype(np.float32)
        codes = np.clip(np.rint(x / scale), -q, q)
        return [as_dtype(codes, ctx.out_types[0].dtype), scale]


@register("qlinear", inputs=(4, 5), attrs={"group": AttrSpec("int"), "acc_bits": AttrSpec("int", 32)})
class QLinear:
    """Integer linear layer: ``xq`` [..., K] codes with per-row scale ``xs`` [..., 1], weight codes
    ``wq`` [N, K] with scales ``ws`` [N, G] (``group`` along K; 0 = per channel), optional float
    ``bias`` [N]. For each group g the products accumulate exactly in an ``acc_bits`` integer;
    then ``y = xs * sum_g(float32(acc_g) * ws[:, g])`` (g ascending) ``+ bias``, in float32.
    The verifier refuses an ``acc_bits`` that could overflow for K and the code widths."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        xq, xs, wq, ws = ins[:4]
        group, acc_bits = attrs["group"], attrs["acc_bits"]
        if not (xq.dtype.is_int and wq.dtype.is_int and xq.dtype.signed and wq.dtype.signed):
            raise InferError("qlinear codes must be signed integers")
        if wq.rank != 2 or xq.rank < 1 or xq.shape[-1] != wq.shape[1]:
            raise InferError("qlinear needs xq [..., K] and wq [N, K]")
        if xs.shape != xq.shape[:-1] + (Dim.of(1),):
            raise InferError("qlinear activation scale must have shape [..., 1]")
        _scale_check(wq, ws, group, "qlinear weight")
        k = wq.shape[1]
        span = group if group else (k.value if k.is_static else None)
        if span is None:
            raise InferError("qlinear needs a static K")
        need = accumulator_bound(span, xq.dtype.bits, wq.dtype.bits).bit_length() + 1
        if need > acc_bits:
            raise InferError(f"a {acc_bits}-bit accumulator can overflow: {span} products of "
                             f"i{xq.dtype.bits} x i{wq.dtype.bits} need {need} bits")
        if len(ins) == 5 and ins[4].shape != (wq.shape[0],):
            raise InferError(f"qlinear bias must have shape [{wq.shape[0]}]")
        return [TensorType(xq.shape[:-1] + (wq.shape[0],), F32)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        xq, xs, wq, ws = ins[0].astype(np.int64), ins[1].astype(np.float32), ins[2].astype(np.int64), ins[3]
        k, group = wq.shape[1], attrs["group"]
        span = group or k
        out = np.zeros(xq.shape[:-1] + (wq.shape[0],), dtype=np.float32)
        for g in range(k // span):
            acc = exact_int_matmul(xq[..., g * span:(g + 1) * span], wq[:, g * span:(g + 1) * span].T)
            out += acc.astype(np.float32) * ws[:, g].astype(np.float32)
        out = xs * out
        if len(ins) == 5:
            out = out + ins[4].astype(np.float32)
        return [out.astype(np.float32)]


@register("fake_quant", inputs=1, attrs={"bits": AttrSpec("int"), "group": AttrSpec("int", 0),
                                         "scale_dtype": AttrSpec("dtype", F16)})
class FakeQuant:
    """Quantize and dequantize in one step (what a cache that stores codes gives back): per
    group of the last axis, ``s = round_to(scale_dtype)(max|x| / qmax)`` (1 if zero),
    ``y = clamp(rint(x / s)) * s``, in float32."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        if not ins[0].dtype.is_float:
            raise InferError("fake_quant needs a float input")
        if not 2 <= attrs["bits"] <= 16:
            raise InferError(f"fake_quant bits must be 2..16, got {attrs['bits']}")
        groups_of(ins[0].shape[-1], attrs["group"])
        return [ins[0]]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x = ins[0].astype(np.float32)
        k, group, q = x.shape[-1], attrs["group"], qmax(attrs["bits"])
        span = group or k
        grouped = x.reshape(x.shape[:-1] + (k // span, span))
        scale = as_dtype(np.max(np.abs(grouped), axis=-1, keepdims=True) / np.float32(q), attrs["scale_dtype"])
        scale = np.where(scale > 0, scale, 1).astype(np.float32)
        out = np.clip(np.rint(grouped / scale), -q, q) * scale
        return [as_dtype(out.reshape(x.shape), ctx.out_types[0].dtype)]
