"""onnxruntime's ``com.microsoft.GroupQueryAttention``, as its CPU kernel computes it.

``query`` [B, S, N * H] with ``key`` and ``value`` [B, S, Nkv * H], or packed QKV [B, S, (N + 2 Nkv) H];
optional ``past_key`` / ``past_value`` [B, Nkv, P, H]; ``seqlens_k`` [B] int32 (each sequence's
length minus one) and ``total_sequence_length``. Batch b holds ``tot_b = seqlens_k[b] + 1`` tokens,
of which ``past_b`` came before this step: 0 for a first prompt (S equal to
total_sequence_length), else ``tot_b - S``. ``present`` has ``P + S`` rows (total_sequence_length
equal to P + S: a growing cache; also without a past) or ``P`` (total_sequence_length at most P:
a fixed buffer); total_sequence_length must decide that at import time when there is a past. Rows
below ``past_b`` are the past's, the next S the new keys and values, the rest zeros. Query i sits
at position ``past_b + i`` and sees keys ``j < tot_b``, ``j <= past_b + i`` (``causal``) and
``j > past_b + i - local_window_size`` (when positive; a query left with no key gives zeros).

``do_rotary`` rotates the new queries and keys at those positions (``cos_cache`` / ``sin_cache``,
``rotary_interleaved``) before they are cached. Scores are scaled (``scale``, 0: 1/sqrt(H)),
soft-capped (``softcap``), biased (``attention_bias`` [B or 1, N or 1, S, total_sequence_length])
and masked; the softmax has an extra logit per head with ``head_sink`` (0 with ``smooth_softmax``).
Without a sink this is the IR's ``attention`` with an additive mask, else primitives. The
quantized cache, ``position_ids``, ``q_norm_weight`` / ``k_norm_weight``, ``sliding_window_cache``
and the ``output_qk`` output are refused.

In a step model (:mod:`.onnx_llm`) the node must compute its lengths from the step's
``attention_mask`` (:func:`~.onnx_gqa_step.unproven`; refused otherwise): it is then the
step's own attention, as llmc's imports write it: Q, K and V projected separately, RoPE as
``rope`` at ``position_ids`` (when the caches are a RoPE table), the past concatenated with the new
rows, and ``attention`` over the step's ``mask`` (``sliding_window_mask`` of it with a window).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from llmc.compiler.frontend.onnx_gqa_step import rope_frequencies, split_projection, unproven
from llmc.compiler.frontend.onnx_norm_ops import cast
from llmc.compiler.frontend.onnx_registry import CONTRIB_DOMAIN, Attrs, Node, handles
from llmc.compiler.frontend.onnx_rotary import cache_rows, rotate
from llmc.compiler.frontend.onnx_values import Const, Operand, dims_const, to_dims
from llmc.compiler.passes.causal_mask import contract_mask, contract_positions
from llmc.ir.graph import Value
from llmc.ir.types import F32, I32, I64, Dim, DType

if TYPE_CHECKING:
    from llmc.compiler.frontend.onnx_converter import Converter

REFUSED_INPUTS = {9: "position_ids", 12: "k_scale", 13: "v_scale", 14: "q_norm_weight", 15: "k_norm_weight"}
ONE = Dim.of(1)


def _at_least(a: Dim, b: Dim) -> bool:
    """Whether ``a >= b`` for every value of the (non-negative) symbols."""
    return all(coef >= 0 for _, coef in (a - b).terms)


def _dim_value(c: Converter, d: Dim) -> Value:
    """A dim as an int64 [1] value."""
    return c.scalar(d.value, I64, 1) if d.is_static else c.materialize(dims_const([d]), "dim")


def _iota(c: Converter, end: Dim, shape: list[Dim]) -> Value:
    return c.reshape(c.op("iota", [], {"start": 0, "end": end, "dtype": I64}), shape)


def _heads_first(c: Converter, x: Value, heads: int, head: Dim) -> Value:
    """[B, S, heads * H] as [B, heads, S, H]."""
    batch, seq = x.type.shape[:2]
    return c.op("transpose", [c.reshape(x, [batch, seq, Dim.of(heads), head])], {"perm": [0, 2, 1, 3]})


def _qkv(c: Converter, n: Node, heads: int, kv_heads: int) -> tuple[Value, Value, Value, Dim]:
    """Q [B, N, S, H], K and V [B, Nkv, S, H], and H."""
    q = c.tensor(n.input[0])
    if not q.type.dtype.is_float or q.type.rank != 3:
        raise c.error(f"query is {q.type}, expected floats [B, S, hidden]")
    batch, seq, hidden = q.type.shape
    packed = not c.has_input(n, 1)
    head = hidden.exact_div(Dim.of(heads + 2 * kv_heads if packed else heads))
    if head is None or not head.is_static:
        raise c.error(f"query's hidden size {hidden} is not a multiple of the heads ({heads}, {kv_heads} KV)")
    kv_hidden = head * kv_heads
    split = None
    if packed and c.contract and c.uses.get(n.input[0]) == 1:  # one layer per part, as llmc's imports write them
        split = split_projection(c, q, [head * heads, kv_hidden, kv_hidden])
    if split is not None:
        parts = split
    elif packed:
        parts = [c.op("slice", [q], {"axis": 2, "start": start, "end": start + size})
                 for start, size in ((Dim.of(0), head * heads), (head * heads, kv_hidden),
                                     (head * heads + kv_hidden, kv_hidden))]
    else:
        if not c.has_input(n, 2):
            raise c.error("key is given without value")
        parts = [q, c.tensor(n.input[1]), c.tensor(n.input[2])]
        for what, v in (("key", parts[1]), ("value", parts[2])):
            if v.type.shape != (batch, seq, kv_hidden) or v.type.dtype != q.type.dtype:
                raise c.error(f"{what} is {v.type}, expected {q.type.dtype} [{batch}, {seq}, {kv_hidden}]")
    return (_heads_first(c, parts[0], heads, head), _heads_first(c, parts[1], kv_heads, head),
            _heads_first(c, parts[2], kv_heads, head), head)


def _past(c: Converter, n: Node, k: Value) -> tuple[Value, Value] | None:
    """past_key and past_value [B, Nkv, P, H] of K's type, or None."""
    if not (c.has_input(n, 3) or c.has_input(n, 4)):
        return None
    if not (c.has_input(n, 3) and c.has_input(n, 4)):
        raise c.error("past_key and past_value must be given together")
    past_k, past_v = c.tensor(n.input[3]), c.tensor(n.input[4])
    batch, kv_heads, _, head = k.type.shape
    for what, x in (("past_key", past_k), ("past_value", past_v)):
        if x.type.rank != 4 or x.type.shape[:2] != (batch, kv_heads) or x.type.shape[3] != head \
                or x.type.dtype != k.type.dtype or x.type.shape != past_k.type.shape:
            raise c.error(f"{what} is {x.type}, expected {k.type.dtype} [{batch}, {kv_heads}, P, {head}] "
                          "(the cache is not quantized)")
    return past_k, past_v


def _total(c: Converter, n: Node) -> Dim | None:
    """total_sequence_length when known at import time."""
    total = c.get(n.input[6])
    if not isinstance(total, Const):
        return None
    dims = to_dims(total.data)
    if len(dims) != 1:
        raise c.error(f"total_sequence_length has {len(dims)} elements, expected 1")
    return dims[0]


def _present_length(c: Converter, total: Dim | None, past: Dim | None, seq: Dim) -> Dim:
    """P + S for a growing cache (and without a past), P for a fixed buffer."""
    if past is None:
        if total is not None and (total - seq).is_static and total != seq:
            raise c.error(f"total_sequence_length {total} differs from the sequence length {seq} without a past")
        return seq
    if total is not None and total == past + seq:
        return past + seq
    if total is not None and _at_least(past, total):
        return past
    raise c.error(f"total_sequence_length ({'tensor data' if total is None else total}) must be P + S (a growing "
                  f"cache) or at most P (a fixed buffer) at import time, P = {past}, S = {seq}: it sets present's "
                  "length")


def _past_lengths(c: Converter, n: Node, tot: Value, total: Dim | None, past: Dim | None, seq: Dim) -> Value:
    """``past_b`` [B or 1] int64: 0 for a first prompt (S = total_sequence_length), else tot_b - S."""
    zero = c.scalar(0, I64, 1)
    if past is None or total == seq:
        return zero
    rest = c.op("sub", [tot, _dim_value(c, seq)])
    if total is not None and (total - seq).is_static:
        return rest
    total_value = c.reshape(cast(c, c.tensor(n.input[6]), I64), [ONE]) if total is None else _dim_value(c, total)
    return c.op("where", [c.op("eq", [total_value, _dim_value(c, seq)]), zero, rest])


def _placement(c: Converter, past_b: Value, batch: Dim, seq: Dim, length: Dim) -> tuple[Value, Value, Value]:
    """Where present's T rows come from: the past (bool [B or 1, 1, T, 1]), the new rows (bool, same
    shape) and, for those, the row of the flattened [B * S] new rows (int64 [B, T])."""
    zero = c.scalar(0, I64, 1)
    rel = c.op("sub", [_iota(c, length, [ONE, length]), c.reshape(past_b, [past_b.type.shape[0], ONE])])
    clamped = c.op("maximum", [c.op("minimum", [rel, _dim_value(c, seq - 1)]), zero])
    index = c.op("add", [clamped, c.op("mul", [_iota(c, batch, [batch, ONE]), _dim_value(c, seq)])])
    in_new = c.op("logical_and", [c.op("ge", [rel, zero]), c.op("lt", [rel, _dim_value(c, seq)])])
    shape = [rel.type.shape[0], ONE, length, ONE]
    return c.reshape(c.op("lt", [rel, zero]), shape), c.reshape(in_new, shape), index


def _cached(c: Converter, past: Value, new: Value, place: tuple[Value, Value, Value]) -> Value:
    """present [B, Nkv, T, H]: rows j < past_b of ``past``, then ``new``'s S rows, then zeros."""
    batch, kv_heads, seq, head = new.type.shape
    from_past, from_new, index = place
    length, rows = from_past.type.shape[2], past.type.shape[2]
    if rows != length:
        past = c.op("concat", [past, c.b.constant(0, past.type.dtype, [batch, kv_heads, length - rows, head])],
                    {"axis": 2})
    flat = c.reshape(c.op("transpose", [new], {"perm": [0, 2, 1, 3]}), [batch * seq, kv_heads, head])
    placed = c.op("transpose", [c.op("gather", [flat, index], {"axis": 0})], {"perm": [0, 2, 1, 3]})
    fresh = c.op("where", [from_new, placed, c.scalar(0, new.type.dtype, 4)])
    return c.op("where", [from_past, past, fresh])


def _visible(c: Converter, tot: Value, qpos: Value, length: Dim, causal: bool, window: int) -> Value:
    """bool [B, 1, S or 1, T]: the keys each query sees."""
    batch = tot.type.shape[0]
    keys = _iota(c, length, [ONE, ONE, ONE, length])
    seen = c.op("lt", [keys, c.reshape(tot, [batch, ONE, ONE, ONE])])
    if causal:
        seen = c.op("logical_and", [seen, c.op("le", [keys, qpos])])
    if window > 0:
        ahead = c.op("add", [keys, c.scalar(window, I64, 4)])
        seen = c.op("logical_and", [seen, c.op("gt", [ahead, qpos])])
    return seen


def _sink_attention(c: Converter, q: Value, k: Value, v: Value, mask: Value, scale: float, softcap: float,
                    sink: Value) -> Value:
    """Attention whose softmax has one more logit, ``sink`` [1, N or 1, 1, 1], in float32."""
    batch, heads, _, head = q.type.shape
    kv_heads, length = k.type.shape[1], k.type.shape[2]
    group = heads.exact_div(kv_heads)

    def spread(x: Value) -> Value:  # [B, Nkv, T, H] -> [B, N, T, H], each KV head read by its group
        x = c.op("expand", [c.reshape(cast(c, x, F32), [batch, kv_heads, ONE, length, head])],
                 {"shape": [batch, kv_heads, group, length, head]})
        return c.reshape(x, [batch, heads, length, head])

    keys = c.op("transpose", [spread(k)], {"perm": [0, 1, 3, 2]})
    scores = c.op("mul", [c.op("matmul", [cast(c, q, F32), keys]), c.scalar(scale, F32, 4)])
    if softcap > 0:
        cap = c.scalar(softcap, F32, 4)
        scores = c.op("mul", [c.op("tanh", [c.op("div", [scores, cap])]), cap])
    scores = c.op("add", [scores, cast(c, mask, F32)])
    top = c.op("maximum", [c.op("reduce_max", [scores], {"axes": [3], "keepdim": True}), sink])
    weights = c.op("exp", [c.op("sub", [scores, top])])
    total = c.op("add", [c.op("reduce_sum", [weights], {"axes": [3], "keepdim": True}),
                         c.op("exp", [c.op("sub", [sink, top])])])
    out = c.op("matmul", [c.op("div", [weights, total]), spread(v)])
    return cast(c, out, q.type.dtype)


def _rotated(c: Converter, n: Node, attrs: Attrs, q: Value, k: Value, qpos: Value) -> tuple[Value, Value]:
    """Q and K [B, heads, S, H] rotated at positions ``qpos`` [B or 1, S] (``do_rotary``)."""
    if not (c.has_input(n, 7) and c.has_input(n, 8)):
        raise c.error("do_rotary needs cos_cache and sin_cache")
    cos, sin = c.tensor(n.input[7]), c.tensor(n.input[8])
    dtype, head, half = q.type.dtype, q.type.shape[3], cos.type.shape[-1]
    if cos.type != sin.type or cos.type.rank != 2 or cos.type.dtype != dtype or not half.is_static \
            or 2 * half.value > head.value:
        raise c.error(f"cos_cache {cos.type} and sin_cache {sin.type} must be {dtype} [max_position, R / 2] "
                      f"with R <= the head size {head}")
    angles = [qpos.type.shape[0], ONE, q.type.shape[2], half]
    cos_rows, sin_rows = cache_rows(c, cos, qpos, angles), cache_rows(c, sin, qpos, angles)
    interleaved = bool(attrs.get("rotary_interleaved", 0))
    q, k = (cast(c, rotate(c, cast(c, x, F32), cos_rows, sin_rows, interleaved), dtype) for x in (q, k))
    return q, k


def _sink(c: Converter, n: Node, attrs: Attrs, heads: int) -> Value | None:
    """The softmax's extra logit [1, N or 1, 1, 1] float32: ``head_sink``, else 0 with ``smooth_softmax``."""
    if c.has_input(n, 11):
        return c.reshape(cast(c, c.tensor(n.input[11]), F32), [ONE, Dim.of(heads), ONE, ONE])
    return c.scalar(0.0, F32, 4) if int(attrs.get("smooth_softmax", -1)) == 1 else None


def _check_attrs(c: Converter, n: Node, attrs: Attrs) -> None:
    for index, what in REFUSED_INPUTS.items():
        if c.has_input(n, index):
            raise c.error(f"input {what} is not supported")
    if len(n.output) > 3 and n.output[3] and c.uses.get(n.output[3]):
        raise c.error("output output_qk is not supported")
    if int(attrs.get("sliding_window_cache", 0)):
        raise c.error("sliding_window_cache is not supported")
    for what in ("k_quant_type", "v_quant_type"):
        kind = attrs.get(what, b"NONE")
        if (kind.decode() if isinstance(kind, bytes) else kind) != "NONE":
            raise c.error(f"{what} {kind!r}: the quantized KV cache is not supported")
    if int(attrs.get("causal", 1)) not in (0, 1):
        raise c.error(f"causal must be 0 or 1, got {attrs['causal']}")
    if not int(attrs.get("causal", 1)) and int(attrs.get("local_window_size", -1)) != -1:
        raise c.error("local_window_size needs causal attention (onnxruntime requires -1 when causal is 0)")


def _bias(c: Converter, bias: Value, total: Dim | None, length: Dim, dtype: DType) -> Value:
    """attention_bias [B or 1, N or 1, S, total] as [.., T] (zeros past total, keys no query sees)."""
    if bias.type.rank != 4 or bias.type.dtype != dtype:
        raise c.error(f"attention_bias is {bias.type}, expected {dtype} [B or 1, N or 1, S, total_sequence_length]")
    cols = bias.type.shape[3]
    if cols == length:
        return bias
    if total is None or cols != total:
        raise c.error(f"attention_bias has {cols} columns, expected total_sequence_length ({total})")
    pad = c.b.constant(0, dtype, [*bias.type.shape[:3], length - cols])
    return c.op("concat", [bias, pad], {"axis": 3})


@handles("GroupQueryAttention", domain=CONTRIB_DOMAIN)
def _group_query_attention(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    heads, kv_heads = int(attrs.get("num_heads", 0)), int(attrs.get("kv_num_heads", 0))
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads:
        raise c.error(f"num_heads {heads} must be a positive multiple of kv_num_heads {kv_heads}")
    q, k, v, head = _qkv(c, n, heads, kv_heads)
    dtype = q.type.dtype
    _check_attrs(c, n, attrs)
    if c.contract:
        return _step_attention(c, n, attrs, q, k, v)
    batch, _, seq, _ = q.type.shape
    seqlens = c.tensor(n.input[5])
    if seqlens.type.dtype != I32 or seqlens.type.shape != (batch,):
        raise c.error(f"seqlens_k is {seqlens.type}, expected i32 [{batch}]")
    tot = c.op("add", [cast(c, seqlens, I64), c.scalar(1, I64, 1)])
    past = _past(c, n, k)
    rows = None if past is None else past[0].type.shape[2]
    total = _total(c, n)
    length = _present_length(c, total, rows, seq)
    past_b = _past_lengths(c, n, tot, total, rows, seq)
    qpos = c.op("add", [c.reshape(past_b, [past_b.type.shape[0], ONE]), _iota(c, seq, [ONE, seq])])  # [B, S]
    if int(attrs.get("do_rotary", 0)):
        q, k = _rotated(c, n, attrs, q, k, qpos)
    if past is not None:
        place = _placement(c, past_b, batch, seq, length)
        k, v = _cached(c, past[0], k, place), _cached(c, past[1], v, place)
    window = int(attrs.get("local_window_size", -1))
    seen = _visible(c, tot, c.reshape(qpos, [qpos.type.shape[0], ONE, seq, ONE]), length,
                    bool(int(attrs.get("causal", 1))), window)
    lowest = float(np.finfo(dtype.numpy()).min)  # masked: exp(lowest - max) is 0
    mask = c.op("where", [seen, c.scalar(0.0, dtype, 4), c.scalar(lowest, dtype, 4)])
    if c.has_input(n, 10):
        mask = c.op("add", [mask, _bias(c, c.tensor(n.input[10]), total, length, dtype)])
    scale = float(attrs.get("scale", 0.0)) or 1.0 / float(head.value) ** 0.5
    softcap = float(attrs.get("softcap", 0.0))
    sink = _sink(c, n, attrs, heads)
    if sink is None:
        extra = {"scale": scale} | ({"softcap": softcap} if softcap > 0 else {})
        out = c.op("attention", [q, k, v, mask], extra)
    else:
        out = _sink_attention(c, q, k, v, mask, scale, softcap, sink)
    if window > 0:  # a query whose window holds no key gives zeros
        any_key = c.op("reduce_max", [cast(c, seen, I32)], {"axes": [3], "keepdim": True})
        out = c.op("where", [c.op("gt", [any_key, c.scalar(0, I32, 4)]), out, c.scalar(0.0, dtype, 4)])
    out = c.reshape(c.op("transpose", [out], {"perm": [0, 2, 1, 3]}), [batch, seq, head * heads])
    return [out, k, v]


def _step_attention(c: Converter, n: Node, attrs: Attrs, q: Value, k: Value, v: Value) -> list[Operand]:
    """The node in a step model, its lengths proven the step's: the past and the new rows
    concatenated, RoPE at ``position_ids``, attention over the step's ``mask``."""
    mask, positions = contract_mask(c.b.func), contract_positions(c.b.func)
    past = _past(c, n, k)
    if mask is None or positions is None or past is None:
        raise c.error("in a step model the attention reads the step's KV cache (past_key and past_value)")
    if not int(attrs.get("causal", 1)):
        raise c.error("causal 0 (bidirectional attention) is not the step's causal attention")
    batch, heads, seq, head = q.type.shape
    seqlens = c.tensor(n.input[5])
    if seqlens.type.dtype != I32 or seqlens.type.shape != (batch,):
        raise c.error(f"seqlens_k is {seqlens.type}, expected i32 [{batch}]")
    reason = unproven(c, seqlens, _total(c, n), past[0].type.shape[2], seq, mask)
    if reason is not None:
        raise c.error(reason)
    if int(attrs.get("do_rotary", 0)):
        q, k = _step_rotary(c, n, attrs, q, k, positions)
    k, v = (c.op("concat", [p, x], {"axis": 2}) for p, x in zip(past, (k, v)))
    window = int(attrs.get("local_window_size", -1))
    seen = mask if window <= 0 else c.op("sliding_window_mask", [mask, positions], {"window": window})
    seen = cast(c, seen, q.type.dtype)
    if c.has_input(n, 10):
        seen = c.op("add", [seen, _bias(c, c.tensor(n.input[10]), None, k.type.shape[2], q.type.dtype)])
    scale = float(attrs.get("scale", 0.0)) or 1.0 / float(head.value) ** 0.5
    softcap = float(attrs.get("softcap", 0.0))
    sink = _sink(c, n, attrs, heads.value)
    if sink is None:
        out = c.op("attention", [q, k, v, seen], {"scale": scale} | ({"softcap": softcap} if softcap > 0 else {}))
    else:
        out = _sink_attention(c, q, k, v, seen, scale, softcap, sink)
    out = c.reshape(c.op("transpose", [out], {"perm": [0, 2, 1, 3]}), [batch, seq, head * heads])
    return [out, k, v]


def _step_rotary(c: Converter, n: Node, attrs: Attrs, q: Value, k: Value, positions: Value) -> tuple[Value, Value]:
    """Q and K rotated at the step's positions: ``rope`` when the caches are a RoPE table of
    some ``inv_freq`` (not interleaved), else the caches' rows."""
    cos, sin = (c.get(n.input[i]) if c.has_input(n, i) else None for i in (7, 8))
    table = None
    if isinstance(cos, Const) and isinstance(sin, Const) and not cos.symbolic and not sin.symbolic \
            and not int(attrs.get("rotary_interleaved", 0)) and 2 * cos.data.shape[-1] <= q.type.shape[3].value:
        key = (n.input[7], n.input[8])  # every layer reads the same caches: checked once
        if key not in c.rope_tables:
            c.rope_tables[key] = rope_frequencies(cos.data, sin.data)
        table = c.rope_tables[key]
    if table is None:
        return _rotated(c, n, attrs, q, k, positions)
    inv_freq, scale = table
    rotary = 2 * inv_freq.size
    param = c.param(f"{cos.origin or n.input[7]}.inv_freq", False, inv_freq, F32)
    extra = {} if rotary == q.type.shape[3].value else {"rotary_dim": rotary}
    return tuple(cast(c, c.op("rope", [x, positions, param], {"seq_axis": -2, "scale": scale} | extra), x.type.dtype)
                 for x in (q, k))  # type: ignore[return-value]
