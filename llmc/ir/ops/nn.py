"""Neural-network ops: matrix products, embedding, normalisation, softmax and attention.

Float semantics follow PyTorch's fp32 CPU results to rounding (float32 accumulation).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from llmc.ir.ops.common import as_dtype, broadcast_shapes, exact_int_matmul, float_only, norm_axis, same_dtype
from llmc.ir.registry import AttrSpec, InferError, RefContext, register
from llmc.ir.types import I64, Dim, TensorType


def _f32(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) if x.dtype == np.float16 else x


@register("matmul", inputs=2)
class Matmul:
    """Batched matrix product with broadcast batch dims (``torch.matmul`` on rank >= 2)."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        a, b = ins
        dtype = same_dtype(ins)
        if a.rank < 2 or b.rank < 2:
            raise InferError("matmul operands need rank >= 2")
        if a.shape[-1] != b.shape[-2]:
            raise InferError(f"matmul inner dims differ: {a.shape[-1]} vs {b.shape[-2]}")
        batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
        return [TensorType(batch + (a.shape[-2], b.shape[-1]), dtype)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        a, b = (_f32(x) for x in ins)
        if np.issubdtype(a.dtype, np.integer):
            return [as_dtype(exact_int_matmul(a, b), ctx.out_types[0].dtype)]
        return [as_dtype(np.matmul(a, b), ctx.out_types[0].dtype)]


@register("linear", inputs=(2, 3))
class Linear:
    """``x @ w.T + b`` with ``w`` of shape [N, K] (PyTorch's layout) and optional ``b`` [N]."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x, w = ins[:2]
        dtype = same_dtype(ins)
        if w.rank != 2:
            raise InferError(f"linear weight must be rank 2, got rank {w.rank}")
        if x.rank < 1 or x.shape[-1] != w.shape[1]:
            raise InferError(f"linear input features {x.shape[-1] if x.rank else '?'} != weight K {w.shape[1]}")
        if len(ins) == 3 and ins[2].shape != (w.shape[0],):
            raise InferError(f"linear bias shape must be [{w.shape[0]}]")
        return [TensorType(x.shape[:-1] + (w.shape[0],), dtype)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x, w = _f32(ins[0]), _f32(ins[1])
        out = np.matmul(x, w.T)
        if len(ins) == 3:
            out = out + _f32(ins[2])
        return [as_dtype(out, ctx.out_types[0].dtype)]


@register("embedding", inputs=2)
class Embedding:
    """Rows of ``table`` [V, D] picked by integer ``ids``: result ``ids.shape + [D]``."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        table, ids = ins
        if table.rank != 2:
            raise InferError("embedding table must be rank 2")
        if not ids.dtype.is_int:
            raise InferError(f"embedding ids must be integers, got {ids.dtype}")
        return [TensorType(ids.shape + (table.shape[1],), table.dtype)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        table, ids = ins
        if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
            raise IndexError(f"token id out of range [0, {table.shape[0]})")
        return [table[ids.astype(np.int64)]]


@register("softmax", inputs=1, attrs={"axis": AttrSpec("int")})
class Softmax:
    """``exp(x - max) / sum(exp(x - max))`` along ``axis``; a row of all -inf gives NaN as in
    PyTorch."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        float_only(ins[0], "softmax")
        norm_axis(attrs["axis"], ins[0].rank)
        return [ins[0]]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        return [as_dtype(softmax(_f32(ins[0]), attrs["axis"]), ctx.out_types[0].dtype)]


@register("topk", inputs=1, attrs={"k": AttrSpec("int"), "axis": AttrSpec("int")}, results=2)
class TopK:
    """The ``k`` largest values along ``axis``, in descending order, and their indices (i64); equal
    values keep their order (the lower index first)."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x = ins[0]
        axis = norm_axis(attrs["axis"], x.rank)
        size = x.shape[axis]
        if attrs["k"] < 1 or (size.is_static and attrs["k"] > size.value):
            raise InferError(f"topk k={attrs['k']} is outside [1, {size}]")
        shape = list(x.shape[:axis]) + [Dim.of(attrs["k"])] + list(x.shape[axis + 1:])
        return [x.with_shape(shape), TensorType.of(shape, I64)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x, axis = ins[0], attrs["axis"]
        order = np.argsort(-x.astype(np.float64), axis=axis, kind="stable")
        indices = np.take(order, np.arange(attrs["k"]), axis=axis)
        return [np.take_along_axis(x, indices, axis=axis), indices.astype(np.int64)]


@register("moe", inputs=4, attrs={"top_k": AttrSpec("int"), "normalize": AttrSpec("bool"), "lut_g": AttrSpec("int", 0)})
class Moe:
    """A mixture-of-experts MLP over tokens x [T, H]: router [E, H], gate_up [E, 2I, H] (gate rows
    first), down [E, H, I]. ``p = softmax(x router^T)``; its ``top_k`` largest (``topk``'s order)
    are the token's experts, their probabilities the weights (divided by their sum when
    ``normalize``); each chosen expert e gives ``down[e] (silu(g) * u)`` with ``(g, u)`` the halves
    of ``gate_up[e] x``; the result is the weighted sum over the chosen experts, in their order.
    ``lut_g`` > 0 (set by ``lut-mpgemm`` on low-bit experts) asks for the expert products as table
    lookups over chunks of ``lut_g`` activations with exact tables: the same products, computed
    here densely."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x, router, gate_up, down = ins
        same_dtype(ins)
        float_only(x, "moe")
        experts, hidden = router.shape if router.rank == 2 else (None, None)
        if x.rank != 2 or hidden != x.shape[1] or gate_up.rank != 3 or down.rank != 3:
            raise InferError(f"moe needs x [T, H], router [E, H], gate_up [E, 2I, H], down [E, H, I], got {ins}")
        if gate_up.shape[0] != experts or down.shape[0] != experts or gate_up.shape[2] != hidden \
                or down.shape[1] != hidden or gate_up.shape[1] != down.shape[2] * 2:
            raise InferError(f"moe expert shapes disagree: {gate_up} and {down} for {experts} experts of width {hidden}")
        if experts.is_static and not 1 <= attrs["top_k"] <= experts.value:
            raise InferError(f"moe top_k {attrs['top_k']} is outside [1, {experts}]")
        return [x]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x, router, gate_up, down = (_f32(a) for a in ins)
        k, tokens = attrs["top_k"], x.shape[0]
        chosen, weights = moe_route(x, router, k, attrs["normalize"])
        experts = chosen.reshape(-1)  # token-major pairs, as transformers' batched experts
        a = expert_hidden(np.repeat(x, k, axis=0), gate_up[experts])
        out = np.matmul(down[experts], a[:, :, None])[:, :, 0] * weights.reshape(-1, 1)
        return [as_dtype(out.reshape(tokens, k, -1).sum(axis=1), ctx.out_types[0].dtype)]


def moe_route(x: np.ndarray, router: np.ndarray, top_k: int, normalize: bool) -> tuple[np.ndarray, np.ndarray]:
    """The experts each row of ``x`` [T, H] chooses ([T, top_k], best first) and their weights."""
    p = softmax(np.matmul(x, router.T).astype(np.float32), -1)
    chosen = np.argsort(-p.astype(np.float64), axis=-1, kind="stable")[:, :top_k]
    weights = np.take_along_axis(p, chosen, axis=-1)
    if normalize:
        weights = (weights / weights.sum(axis=-1, keepdims=True)).astype(np.float32)
    return chosen, weights


def expert_hidden(x: np.ndarray, gate_up: np.ndarray) -> np.ndarray:
    """``silu(g) * u`` of rows ``x`` [R, H] through their experts' ``gate_up`` [R, 2I, H] (or one
    expert's [2I, H] for every row): the input of the down projection."""
    h = np.matmul(gate_up, x[:, :, None])[:, :, 0] if gate_up.ndim == 3 else np.matmul(x, gate_up.T)
    inner = h.shape[1] // 2
    g = h[:, :inner]
    return (g / (np.float32(1) + np.exp(-g))).astype(np.float32) * h[:, inner:]  # silu as the silu op computes it


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)


@register("layer_norm", inputs=(1, 3), attrs={"eps": AttrSpec("float")})
class LayerNorm:
    """Normalise the last axis to zero mean and unit variance (biased), then scale and shift."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        float_only(ins[0], "layer_norm")
        same_dtype(ins)
        for t in ins[1:]:
            if t.shape != (ins[0].shape[-1],):
                raise InferError(f"layer_norm weight and bias must have shape [{ins[0].shape[-1]}]")
        return [ins[0]]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x = _f32(ins[0])
        mean = x.mean(axis=-1, keepdims=True)
        var = np.square(x - mean).mean(axis=-1, keepdims=True)
        out = (x - mean) / np.sqrt(var + np.float32(attrs["eps"]))
        for extra, fn in zip(ins[1:], (np.multiply, np.add)):
            out = fn(out, _f32(extra))
        return [as_dtype(out, ctx.out_types[0].dtype)]


@register("rms_norm", inputs=2, attrs={"eps": AttrSpec("float")})
class RmsNorm:
    """``x * rsqrt(mean(x^2, -1) + eps) * weight`` (Llama's RMSNorm)."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        float_only(ins[0], "rms_norm")
        same_dtype(ins)
        if ins[1].shape != (ins[0].shape[-1],):
            raise InferError(f"rms_norm weight must have shape [{ins[0].shape[-1]}]")
        return [ins[0]]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x, w = _f32(ins[0]), _f32(ins[1])
        inv = np.float32(1.0) / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(attrs["eps"]))
        return [as_dtype(w * (x * inv), ctx.out_types[0].dtype)]


@register("rope", inputs=3, attrs={"seq_axis": AttrSpec("int"), "scale": AttrSpec("float", 1.0),
                                   "rotary_dim": AttrSpec("int", 0)})
class Rope:
    """Rotary position embedding, rotate-half form: ``x * cos + rotate_half(x) * sin``.

    x [..., D] float with the tokens on ``seq_axis``; positions [B, T] integer; inv_freq [R/2]
    float, R = ``rotary_dim`` (0: D). The angles ``float(position) * inv_freq`` are repeated to R,
    their cosine and sine multiplied by ``scale`` and broadcast over x's other axes;
    ``rotate_half`` of the first R columns is ``concat(-x[..., R/2:R], x[..., :R/2])``; columns
    R.. pass through (partial rotary).
    """

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x, positions, inv_freq = ins
        float_only(x, "rope")
        axis = norm_axis(attrs["seq_axis"], x.rank)
        if not positions.dtype.is_int or positions.rank != 2:
            raise InferError(f"rope positions must be integers [B, T], got {positions}")
        rotated = Dim.of(attrs["rotary_dim"]) if attrs["rotary_dim"] else x.shape[-1]
        if inv_freq.rank != 1 or rotated != inv_freq.shape[0] * 2:
            raise InferError(f"rope inv_freq must have shape [{rotated}/2], got {inv_freq}")
        if attrs["rotary_dim"] and x.shape[-1].is_static and not 0 < attrs["rotary_dim"] <= x.shape[-1].value:
            raise InferError(f"rope rotary_dim {attrs['rotary_dim']} outside the {x.shape[-1]} columns")
        if axis in (0, x.rank - 1) or x.shape[axis] != positions.shape[1]:
            raise InferError(f"rope seq_axis {attrs['seq_axis']} of {x} does not hold the {positions.shape[1]} tokens")
        return [x]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        full, positions, inv_freq = _f32(ins[0]), ins[1], _f32(ins[2])
        x = full[..., :attrs["rotary_dim"] or full.shape[-1]]
        angles = positions.astype(np.float32)[..., None] * inv_freq.astype(np.float32)
        angles = np.concatenate([angles, angles], axis=-1)
        axis = attrs["seq_axis"] % x.ndim
        shape = [1] * x.ndim
        shape[0], shape[axis], shape[-1] = angles.shape
        cos = (np.cos(angles) * np.float32(attrs["scale"])).reshape(shape)
        sin = (np.sin(angles) * np.float32(attrs["scale"])).reshape(shape)
        half = x.shape[-1] // 2
        rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
        y = np.concatenate([x * cos + rotated * sin, full[..., x.shape[-1]:]], axis=-1)
        return [as_dtype(y, ctx.out_types[0].dtype)]


@register("sliding_window_mask", inputs=2, attrs={"window": AttrSpec("int")})
class SlidingWindowMask:
    """An additive attention mask [B, 1, T, S] with the keys ``window`` or more positions before
    each query masked too: key ``j`` stays visible from position ``i = positions[b, t]`` only if
    ``i - j < window``; masked entries become the dtype's lowest finite value (as transformers')."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        mask, positions = ins
        float_only(mask, "sliding_window_mask")
        if mask.rank != 4 or not positions.dtype.is_int or positions.rank != 2 or mask.shape[2] != positions.shape[1]:
            raise InferError(f"sliding_window_mask needs a mask [B, 1, T, S] and positions [B, T], got {mask}, {positions}")
        if attrs["window"] < 1:
            raise InferError(f"sliding window must be positive, got {attrs['window']}")
        return [mask]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        mask, positions = ins
        distance = positions.astype(np.int64)[:, None, :, None] - np.arange(mask.shape[-1])
        return [np.where(distance >= attrs["window"], np.finfo(mask.dtype).min, mask).astype(mask.dtype)]


@register("attention", inputs=(3, 4), attrs={"scale": AttrSpec("optional_float", None),
                                              "softcap": AttrSpec("optional_float", None)})
class Attention:
    """Scaled dot-product attention with grouped KV heads.

    q [B, H, Lq, D], k and v [B, Hkv, Lk, D] with H a multiple of Hkv (query head h reads KV head
    h // (H / Hkv)), optional additive float mask broadcastable to [B, H, Lq, Lk]. ``scale``
    defaults to 1/sqrt(D); with ``softcap`` c the scaled scores become ``tanh(s / c) * c`` before the
    mask (Gemma-2). Result [B, H, Lq, D].
    """

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        q, k, v = ins[:3]
        same_dtype(ins)
        float_only(q, "attention")
        if not q.rank == k.rank == v.rank == 4:
            raise InferError("attention q, k, v must be rank 4 [B, H, L, D]")
        if k.shape != v.shape:
            raise InferError("attention k and v shapes differ")
        if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
            raise InferError("attention q and k differ in batch or head dim")
        heads, kv_heads = q.shape[1], k.shape[1]
        if heads.exact_div(kv_heads) is None:
            raise InferError(f"attention heads {heads} not a multiple of KV heads {kv_heads}")
        if len(ins) == 4:
            scores = (q.shape[0], heads, q.shape[2], k.shape[2])
            if broadcast_shapes(ins[3].shape, scores) != scores:
                raise InferError("attention mask does not broadcast to [B, H, Lq, Lk]")
        return [q]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        q, k, v = (_f32(x) for x in ins[:3])
        group = q.shape[1] // k.shape[1]
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)
        scale = attrs["scale"] if attrs["scale"] is not None else 1.0 / math.sqrt(q.shape[-1])
        scores = np.matmul(q, np.swapaxes(k, -1, -2)) * np.float32(scale)
        if attrs["softcap"] is not None:
            cap = np.float32(attrs["softcap"])
            scores = (np.tanh((scores / cap).astype(np.float32)) * cap).astype(np.float32)
        if len(ins) == 4:
            scores = scores + _f32(ins[3])
        return [as_dtype(np.matmul(softmax(scores, -1), v), ctx.out_types[0].dtype)]

