"""Accelerator ops: the FPGA's units, with reference semantics that are exactly the hardware's.

The FPGA lowering turns a model into these ops; every activation is an int32 Q15.16 matrix
``[T, C]`` (T tokens, C channels; heads are column blocks). The arithmetic is that of
:mod:`llmc.ir.ops.hw_math`; the HLS header library implements the same functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from llmc.ir.ops import hw_math as hm
from llmc.ir.ops.common import exact_int_matmul
from llmc.ir.registry import AttrSpec, InferError, RefContext, register
from llmc.ir.types import F16, F32, Dim, DType, TensorType

I8, I32 = DType("int", 8), DType("int", 32)


def check_act(t: TensorType, what: str) -> None:
    if t.rank != 2 or t.dtype != I32:
        raise InferError(f"{what} needs an i32 activation matrix [T, C], got {t}")


def _divides(dim: Dim, by: int, what: str) -> int:
    if not dim.is_static or by <= 0 or dim.value % by:
        raise InferError(f"{what}: {by} does not divide {dim}")
    return dim.value // by


@register("hw_embed", inputs=2, attrs={"offset": AttrSpec("int", 0)})
class HwEmbed:
    """Rows ``ids + offset`` ([T]) of an f16/f32 table [V, C] as Q15.16: ``rint(float32(row) * 2^16)``
    (token embeddings; learned positions, OPT's shifted by 2)."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        table, ids = ins
        if table.rank != 2 or table.dtype not in (F16, F32) or ids.rank != 1 or not ids.dtype.is_int:
            raise InferError("hw_embed needs a float table [V, C] and integer ids [T]")
        return [TensorType((ids.shape[0], table.shape[1]), I32)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        rows = ins[0][ins[1].astype(np.int64) + attrs["offset"]].astype(np.float32)
        return [hm.to_fixed(rows * np.float32(1 << hm.ACT_FRAC))]


@register("hw_rms_norm", inputs=2, attrs={"eps": AttrSpec("float"), "group": AttrSpec("int", 0)})
class HwRmsNorm:
    """Per row, or per ``group`` columns of a row when ``group`` > 0 (per head: QK-norm), over its
    C columns: ``sh = max(0, bitlen(max|x|) - 19)``, ``ss = sum((x >> sh)^2)`` (exact),
    ``m = float32(ss) * 2^(2 sh - 32) / float32(C)``, ``r = 1 / sqrt(m + eps)``,
    ``y = rint((float32(x) * r) * w)`` with the f32 weight ``w`` [C] of the whole row."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x, w = ins
        check_act(x, "hw_rms_norm")
        if w.shape != (x.shape[1],) or w.dtype != F32:
            raise InferError("hw_rms_norm weight must be f32 [C]")
        group = attrs["group"]
        if group < 0 or (group and x.shape[1].is_static and x.shape[1].value % group):
            raise InferError(f"hw_rms_norm group {group} does not divide the {x.shape[1]} columns")
        return [x]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        rows, cols = ins[0].shape
        group = attrs["group"] or cols
        x, w = ins[0].astype(np.int64).reshape(rows, cols // group, group), ins[1].astype(np.float32).reshape(-1, group)
        y = (_normalized(x, attrs["eps"]) * w).astype(np.float32)
        return [hm.to_fixed(y).reshape(rows, cols)]


def _normalized(x: np.ndarray, eps: float) -> np.ndarray:
    """``float32(x) * r`` per last axis of int64 ``x``, r = 1 / sqrt(mean(x^2) + eps) in real units,
    the mean of squares from the exact sum of ``(x >> sh)^2``, ``sh = max(0, bitlen(max|x|) - 19)``."""
    amax = np.abs(x).max(axis=-1, keepdims=True)
    bits = np.floor(np.log2(np.maximum(amax, 1).astype(np.float64))).astype(np.int64) + 1
    sh = np.maximum(0, bits - 19)
    ss = ((x >> sh) ** 2).sum(axis=-1, keepdims=True)
    m = ss.astype(np.float64).astype(np.float32) * np.ldexp(np.float32(1), (2 * sh - 32).astype(np.int32))
    m = (m.astype(np.float32) / np.float32(x.shape[-1])).astype(np.float32)
    r = (np.float32(1) / np.sqrt((m + np.float32(eps)).astype(np.float32))).astype(np.float32)
    return (x.astype(np.float32) * r).astype(np.float32)


@register("hw_layer_norm", inputs=3, attrs={"eps": AttrSpec("float")})
class HwLayerNorm:
    """Per row of C columns, without rounding the mean: ``d = C x - sum x`` (exact, C times the
    deviation), then ``hw_rms_norm``'s scaling of ``d`` with ``eps' = (float32(eps) * C) * C`` (the
    same epsilon in d's units), ``y = rint((float32(d) * r) * w + b * 2^16)`` with the f32 weight
    and bias [C]."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x, w, b = ins
        check_act(x, "hw_layer_norm")
        if w.shape != (x.shape[1],) or b.shape != (x.shape[1],) or w.dtype != F32 or b.dtype != F32:
            raise InferError("hw_layer_norm weight and bias must be f32 [C]")
        return [x]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x = ins[0].astype(np.int64)
        cols = x.shape[-1]
        d = x * cols - x.sum(axis=-1, keepdims=True)
        eps = (np.float32(attrs["eps"]) * np.float32(cols)).astype(np.float32) * np.float32(cols)
        y = ((_normalized(d, eps) * ins[1].astype(np.float32)).astype(np.float32)
             + (ins[2].astype(np.float32) * np.float32(1 << hm.ACT_FRAC)).astype(np.float32))
        return [hm.to_fixed(y.astype(np.float32))]


@register("hw_quant8", inputs=1, results=2, attrs={"group": AttrSpec("int")})
class HwQuant8:
    """Symmetric int8 codes per ``group`` columns (:func:`hw_math.quant8`): codes [T, C] i8 and
    scales [T, C / group] i32 (fixed-point units). Used for the KV cache."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        check_act(ins[0], "hw_quant8")
        t, c = ins[0].shape
        return [TensorType((t, c), I8), TensorType((t, Dim.of(_divides(c, attrs["group"], "hw_quant8"))), I32)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        return list(hm.quant8(ins[0], attrs["group"]))


@register("hw_matmul", inputs=(3, 6), attrs={
    "group": AttrSpec("int"), "shift": AttrSpec("int"), "scale_bits": AttrSpec("int"),
    "engine": AttrSpec("str", "dsp"), "sparse": AttrSpec("str", ""), "has_zero": AttrSpec("bool", False),
    "has_min": AttrSpec("bool", False), "has_bias": AttrSpec("bool", False), "half_scales": AttrSpec("bool", False)})
class HwMatmul:
    """``x`` [T, K] i32 times weight codes [N, K] (int, ``group`` columns per scale) with integer
    scales ``ws`` [N, K/group] (``|ws| < 2^scale_bits``), optional integer zeros [N, K/group],
    optional integer minimums ``wm`` [N, K/group] (``|wm| < 2^(scale_bits + bits)``, at the scales'
    shift) and i32 bias [N], in that order. Activations are quantized per row
    (:func:`hw_math.quant8`, group K); then ``acc_g = sum_k xq * (w - z)``, ``X_g = sum_k xq`` over
    the group, and ``total = sum_g (acc_g * ws_g - X_g * wm_g)`` exactly, and
    ``y = requantize(total, xs, shift)`` (+ bias, saturating). ``engine`` (dsp, sparse, lut) picks
    the unit, ``sparse`` ("N:M") the pattern of the sparse engine, ``half_scales`` that the scales were
    f16 values (the engine stores those); the result depends on none of them."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x, w, ws = ins[:3]
        check_act(x, "hw_matmul")
        if w.rank != 2 or not w.dtype.is_int or w.shape[1] != x.shape[1]:
            raise InferError(f"hw_matmul weight codes must be integers [N, {x.shape[1]}], got {w}")
        groups = _divides(w.shape[1], attrs["group"], "hw_matmul group")
        if ws.shape != (w.shape[0], Dim.of(groups)) or not ws.dtype.is_int:
            raise InferError(f"hw_matmul scales must be integers [{w.shape[0]}, {groups}]")
        extra = int(attrs["has_zero"]) + int(attrs["has_min"]) + int(attrs["has_bias"])
        if len(ins) != 3 + extra:
            raise InferError(f"hw_matmul expects {3 + extra} inputs for has_zero/has_min/has_bias, got {len(ins)}")
        offsets = [what for what, flag in (("zeros", "has_zero"), ("minimums", "has_min")) if attrs[flag]]
        for what, t in zip(offsets, ins[3:]):
            if t.shape != ws.shape or not t.dtype.is_int:
                raise InferError(f"hw_matmul {what} must be integers shaped like the scales")
        if attrs["has_bias"] and (ins[-1].shape != (w.shape[0],) or ins[-1].dtype != I32):
            raise InferError("hw_matmul bias must be i32 [N]")
        if attrs["engine"] not in ("dsp", "sparse", "lut"):
            raise InferError(f"hw_matmul engine must be dsp, sparse or lut, got '{attrs['engine']}'")
        if (attrs["engine"] == "sparse") != bool(attrs["sparse"]):
            raise InferError("hw_matmul needs an N:M pattern exactly when its engine is sparse")
        bound = w.shape[1].value * matmul_span(w.dtype.bits, attrs["has_zero"], attrs["has_min"]) << attrs["scale_bits"]
        if bound >= 1 << 53:
            raise InferError(f"hw_matmul sums can reach 2^{bound.bit_length() - 1}: lower scale_bits "
                             f"({attrs['scale_bits']}) so they stay below 2^53")
        return [TensorType((x.shape[0], w.shape[0]), I32)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x, w, ws = ins[0], ins[1].astype(np.int64), ins[2].astype(np.int64)
        if np.abs(ws).max(initial=0) >= 1 << attrs["scale_bits"]:
            raise ValueError(f"hw_matmul scales exceed 2^{attrs['scale_bits']}")
        group = attrs["group"]
        xq, xs = hm.quant8(x, x.shape[-1])
        xq = xq.astype(np.int64)
        if attrs["has_zero"]:
            w = w - np.repeat(ins[3].astype(np.int64), group, axis=1)
        wm = ins[3 + int(attrs["has_zero"])].astype(np.int64) if attrs["has_min"] else None
        total = np.zeros((x.shape[0], w.shape[0]), dtype=np.int64)
        for g in range(w.shape[1] // group):
            part = slice(g * group, (g + 1) * group)
            total += exact_int_matmul(xq[:, part], w[:, part].T) * ws[None, :, g]
            if wm is not None:
                total -= xq[:, part].sum(axis=1)[:, None] * wm[None, :, g]
        y = hm.requantize(total, xs, attrs["shift"])
        if attrs["has_bias"]:
            y = hm.saturate(y.astype(np.int64) + ins[-1].astype(np.int64)[None, :])
        return [y]


def matmul_span(bits: int, has_zero: bool, has_min: bool) -> int:
    """``hw_matmul``'s sums stay below ``K * span * 2^scale_bits``: int8 activations (127) times the codes'
    largest magnitude (``2^bits - 1`` less a zero point, ``2^(bits-1)`` signed, 127 above 8 bits), plus
    ``2^bits`` for a minimum (``|wm| < 2^(scale_bits + bits)``, and ``sum_g |X_g| <= 127 K``)."""
    span = (1 << bits) - 1 if has_zero else hm.QMAX8 if bits > 8 else (1 << (bits - 1))
    return hm.QMAX8 * (span + ((1 << bits) if has_min else 0))


@register("hw_rope", inputs=4, attrs={"head_dim": AttrSpec("int"), "rotary_dim": AttrSpec("int", 0)})
class HwRope:
    """Rotary embedding on every head (column block of ``head_dim``) of ``x`` [T, C] at positions
    ``pos`` [T]: the halves of its first R = ``rotary_dim`` columns (0: all) rotated,
    ``y1 = (x1 c - x2 s) >> 30``, ``y2 = (x2 c + x1 s) >> 30`` (rounded half up, exact int64), with
    Q2.30 tables ``cos``/``sin`` [positions, R / 2]; columns R.. of each head pass through."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x, pos, cos, sin = ins
        check_act(x, "hw_rope")
        d = attrs["head_dim"]
        r = attrs["rotary_dim"] or d
        _divides(x.shape[1], d, "hw_rope head_dim")
        if not 0 < r <= d or r % 2:
            raise InferError(f"hw_rope rotary_dim {r} must be even and at most head_dim {d}")
        if pos.shape != (x.shape[0],) or not pos.dtype.is_int:
            raise InferError("hw_rope positions must be integers [T]")
        if cos.rank != 2 or cos.shape[1] != Dim.of(r // 2) or sin.shape != cos.shape or cos.dtype != I32:
            raise InferError(f"hw_rope tables must be i32 [positions, {r // 2}]")
        return [x]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x, pos = ins[0].astype(np.int64), ins[1].astype(np.int64)
        if pos.size and (pos.min() < 0 or pos.max() >= ins[2].shape[0]):
            raise ValueError(f"hw_rope position {int(pos.max())} outside the table ({ins[2].shape[0]})")
        d, t = attrs["head_dim"], x.shape[0]
        r = attrs["rotary_dim"] or d
        heads = x.reshape(t, -1, d)
        c, s = ins[2][pos].astype(np.int64)[:, None, :], ins[3][pos].astype(np.int64)[:, None, :]
        x1, x2 = heads[..., : r // 2], heads[..., r // 2:r]
        y = np.concatenate([hm.shift_round(x1 * c - x2 * s, 30), hm.shift_round(x2 * c + x1 * s, 30), heads[..., r:]],
                           axis=-1)
        return [hm.saturate(y.reshape(t, -1))]


@register("hw_attention", inputs=5, attrs={
    "heads": AttrSpec("int"), "kv_heads": AttrSpec("int"), "head_dim": AttrSpec("int"), "scale": AttrSpec("float"),
    "window": AttrSpec("int", 0), "softcap": AttrSpec("float", 0.0)})
class HwAttention:
    """Causal attention of queries ``q`` [T, H*D] over an int8 cache: ``kc``/``vc`` [S, KVH*D] codes
    with per-(token, head) scales ``ks``/``vs`` [S, KVH]; query t sits at position S - T + t and
    sees the rows up to it, only the last ``window`` of them when ``window`` > 0 (sliding window).
    With ``softcap`` c > 0 each score becomes ``tanh_f32(score / c) * c`` (Gemma-2).
    Per head: ``qc, qs = quant8(q, D)``; ``dot`` exact; ``score = float32(dot) * ((float32(qs) *
    float32(ks)) * float32(scale * 2^-32))``; ``e = exp2_f32((score - max) * log2 e)``;
    ``ei = rint(e * 2^15)``; ``y = rint(float32(float64(sum ei (vc vs))) / float32(sum ei))``."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        q, kc, ks, vc, vs = ins
        check_act(q, "hw_attention")
        h, kvh, d = attrs["heads"], attrs["kv_heads"], attrs["head_dim"]
        if h % kvh or q.shape[1] != Dim.of(h * d):
            raise InferError(f"hw_attention: {h} heads of {d} do not match q {q}")
        if kc.rank != 2 or kc.shape[1] != Dim.of(kvh * d) or kc.dtype != I8 or vc != kc:
            raise InferError(f"hw_attention caches must be i8 [S, {kvh * d}]")
        if ks.shape != (kc.shape[0], Dim.of(kvh)) or ks.dtype != I32 or vs != ks:
            raise InferError(f"hw_attention cache scales must be i32 [S, {kvh}]")
        return [q]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        q, kc, ks, vc, vs = ins
        h, kvh, d = attrs["heads"], attrs["kv_heads"], attrs["head_dim"]
        t, s = q.shape[0], kc.shape[0]
        qc, qs = hm.quant8(q, d)
        qc = qc.reshape(t, h, d).astype(np.float64)
        kc3 = kc.reshape(s, kvh, d).astype(np.float64)
        v = (vc.reshape(s, kvh, d).astype(np.int64) * vs.astype(np.int64)[:, :, None])
        c = np.float32(attrs["scale"] * 2.0**-32)
        distance = (s - t + np.arange(t))[:, None] - np.arange(s)[None, :]  # [T, S]
        visible = (distance >= 0) & ((distance < attrs["window"]) if attrs["window"] > 0 else True)
        out = np.zeros((t, h, d), dtype=np.int32)
        for head in range(h):
            kv = head // (h // kvh)
            dot = (qc[:, head] @ kc3[:, kv].T).astype(np.float32)  # exact: |dot| < 2^24
            factor = ((qs[:, head].astype(np.float32)[:, None] * ks[:, kv].astype(np.float32)[None, :]) * c)
            score = (dot * factor.astype(np.float32)).astype(np.float32)
            if attrs["softcap"]:
                cap = np.float32(attrs["softcap"])
                score = (hm.tanh_f32((score / cap).astype(np.float32)) * cap).astype(np.float32)
            score = np.where(visible, score, np.float32(-np.inf))
            peak = score.max(axis=1, keepdims=True)
            e = hm.exp2_f32(np.where(visible, (score - peak) * hm.LOG2E, np.float32(-1000)))
            ei = np.where(visible, np.rint(e * np.float32(1 << 15)), 0).astype(np.int64)
            num = ei @ v[:, kv]  # exact int64: |num| < 2^62
            den = ei.sum(axis=1, keepdims=True)
            y = num.astype(np.float64).astype(np.float32) / den.astype(np.float32)
            out[:, head] = hm.to_fixed(y)
        return [out.reshape(t, h * d)]


@register("hw_act", inputs=1, attrs={"fn": AttrSpec("str")})
class HwAct:
    """Elementwise activation on Q15.16, ``xf = float32(x) * 2^-16``: ``silu``:
    ``y = xf * (1 / (1 + exp2_f32(-xf * log2 e)))``; ``gelu_tanh`` (GELU's tanh form as
    ``x * sigmoid(2u)``): ``z = (xf + (0.044715 * (xf * xf)) * xf) * (2 sqrt(2/pi))``,
    ``y = xf * (1 / (1 + exp2_f32(-z * log2 e)))``; ``gelu`` (erf form): ``y = xf * (0.5 * (1 +
    erf_f32(xf * (1 / sqrt 2))))`` (:func:`hw_math.erf_f32`); ``relu``: ``max(x, 0)``; result
    ``rint(y * 2^16)``."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        check_act(ins[0], "hw_act")
        if attrs["fn"] not in ("silu", "relu", "gelu_tanh", "gelu"):
            raise InferError(f"hw_act supports silu, relu, gelu and gelu_tanh, not '{attrs['fn']}'")
        return [ins[0]]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        if attrs["fn"] == "relu":
            return [np.maximum(ins[0], 0).astype(np.int32)]
        xf = hm.fixed_to_f32(ins[0])
        if attrs["fn"] == "gelu":
            half = (np.float32(0.5) * (np.float32(1) + hm.erf_f32((xf * hm.INV_SQRT2).astype(np.float32)))).astype(np.float32)
            return [hm.to_fixed((xf * half).astype(np.float32) * np.float32(1 << hm.ACT_FRAC))]
        z = xf
        if attrs["fn"] == "gelu_tanh":
            cube = ((hm.GELU_CUBIC * (xf * xf).astype(np.float32)).astype(np.float32) * xf).astype(np.float32)
            z = ((xf + cube).astype(np.float32) * hm.GELU_2U).astype(np.float32)
        e = hm.exp2_f32((-z * hm.LOG2E).astype(np.float32))
        sig = (np.float32(1) / (np.float32(1) + e)).astype(np.float32)
        y = (xf * sig).astype(np.float32)
        return [hm.to_fixed(y * np.float32(1 << hm.ACT_FRAC))]


@register("hw_mul", inputs=2)
class HwMul:
    """Elementwise Q15.16 product: ``(a * b + 2^15) >> 16``, saturated."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        check_act(ins[0], "hw_mul")
        if ins[1] != ins[0]:
            raise InferError("hw_mul operands must have the same type")
        return [ins[0]]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        return [hm.saturate(hm.shift_round(ins[0].astype(np.int64) * ins[1].astype(np.int64), hm.ACT_FRAC))]


@register("hw_add", inputs=2)
class HwAdd:
    """Elementwise saturating add (residual connections)."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        check_act(ins[0], "hw_add")
        if ins[1] != ins[0]:
            raise InferError("hw_add operands must have the same type")
        return [ins[0]]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        return [hm.saturate(ins[0].astype(np.int64) + ins[1].astype(np.int64))]


@register("hw_to_float", inputs=1, attrs={"cap": AttrSpec("float", 0.0)})
class HwToFloat:
    """Q15.16 to float32: ``v = float32(x) * 2^-16`` (logits leave the accelerator this way); with
    ``cap`` c > 0, ``tanh_f32(v) * c`` (Gemma-2's logit soft-capping, its 1 / c folded into the
    weights)."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        check_act(ins[0], "hw_to_float")
        return [ins[0].with_dtype(F32)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        v = hm.fixed_to_f32(ins[0])
        return [(hm.tanh_f32(v) * np.float32(attrs["cap"])).astype(np.float32) if attrs["cap"] else v]


@register("hw_scale", inputs=2)
class HwScale:
    """Per-channel scaling of Q15.16 by an f32 vector [C]: ``rint(float32(x) * w)`` (smoothing
    factors that could not be folded into a neighbouring layer)."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        check_act(ins[0], "hw_scale")
        if ins[1].shape != (ins[0].shape[1],) or ins[1].dtype != F32:
            raise InferError("hw_scale factors must be f32 [C]")
        return [ins[0]]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        return [hm.to_fixed(ins[0].astype(np.float32) * ins[1].astype(np.float32))]
