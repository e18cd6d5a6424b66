"""What GroupQueryAttention needs proven to become the step's own attention in a step model.

onnxruntime-genai's model builder computes GroupQueryAttention's ``seqlens_k`` as
``ReduceSum(attention_mask) - 1`` and ``total_sequence_length`` as ``Shape(attention_mask)[1]``,
cast to int32. A file imported as a step model computes ``attention_mask`` from the contract's
causal ``mask`` (a key is attended where some query's mask is 0; :mod:`.onnx_llm`), whose last
query sees every key: ``attention_mask`` is P + L ones, so ``seqlens_k`` is P + L - 1 and the
total P + L. Then every query i sits at position P + i (the contract's ``position_ids``), the
present cache is the past followed by the new rows (``concat``) and the keys a query sees are
those the step's ``mask`` leaves open: the attention is the IR's ``attention`` over that mask.
:func:`unproven` says what keeps a node from that form.

The builder's RoPE caches are ``cos(p * inv_freq)`` and ``sin(p * inv_freq)`` tables;
:func:`rope_frequencies` finds the ``inv_freq`` that reproduces them (checked on every row), so
the rotation is the IR's ``rope`` at ``position_ids``. :func:`split_projection` writes a packed
QKV projection as one ``linear`` per part, the float weight's rows or the quantized codes'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from llmc.compiler.passes.rewrite import scalar_constant
from llmc.ir.graph import Node, Param, Value
from llmc.ir.types import Dim

if TYPE_CHECKING:
    from llmc.compiler.frontend.onnx_converter import Converter

ROPE_TOLERANCE = 2.0 ** -21  # a table entry may differ from cos / sin of its float32 angle by 4 float32 ulps of 1
ULPS = 4  # the float32 neighbours of the first row's angle tried as inv_freq
ROWS = 4096  # rows of a RoPE table checked at once


def unproven(c: Converter, seqlens: Value, total: Dim | None, past: Dim, seq: Dim, mask: Value) -> str | None:
    """Why ``seqlens_k`` and ``total_sequence_length`` are not provably those of the step's
    ``mask`` (P + L - 1 and P + L, the past being the cache before this step), or None."""
    if total != past + seq:
        shown = "computed from tensor data" if total is None else str(total)
        return (f"total_sequence_length ({shown}) is not the step's {past + seq} (P + L): it must be the length of "
                "the attention_mask computed from the step's mask")
    producers = {v.name: node for node in c.b.into for v in node.outputs}
    node = producers.get(_uncast(producers, seqlens).name)
    if node is None or node.op != "sub" or scalar_constant(producers.get(node.inputs[1].name)) != 1.0 \
            or node.outputs[0].type.shape != seqlens.type.shape:
        return _not_from_mask("it is not a count minus 1")
    counted = _uncast(producers, node.inputs[0])
    total_node = producers.get(counted.name)
    if total_node is None or total_node.op != "reduce_sum" or total_node.attrs.get("keepdim", False):
        return _not_from_mask("it is not a ReduceSum")
    summed = total_node.inputs[0].type
    keys = _uncast(producers, total_node.inputs[0])
    if keys.type.rank != 2 or [a % 2 for a in total_node.attrs["axes"]] != [1] or not summed.dtype.is_int \
            or summed.dtype.bits < 32:
        return _not_from_mask("its ReduceSum is not over the keys of a [batch, keys] mask of 32-bit or wider integers")
    return None if _seen_keys(producers, keys, mask) else _not_from_mask(
        "the summed mask is not the attention_mask computed from the step's mask")


def _not_from_mask(why: str) -> str:
    return (f"seqlens_k is not ReduceSum(attention_mask) - 1 of the step's attention_mask ({why}), so the cache "
            "length it gives is not proven to be the step's P + L")


def _uncast(producers: dict[str, Node], value: Value) -> Value:
    """``value`` with the casts from integers to integers of 32 bits or more producing it stripped
    (the counts of a context fit in each)."""
    while (node := producers.get(value.name)) is not None and node.op == "cast" \
            and value.type.dtype.is_int and value.type.dtype.bits >= 32 and node.inputs[0].type.dtype.is_int:
        value = node.inputs[0]
    return value


def _seen_keys(producers: dict[str, Node], value: Value, mask: Value) -> bool:
    """``value`` [1, P+L] is 1 where some query of ``mask`` [1, 1, L, P+L] attends the key, 0
    elsewhere: ``reduce_max`` over the head and query axes of ``cast(mask == 0)`` to an integer."""
    node = producers.get(value.name)
    if node is None or node.op != "reduce_max" or node.attrs.get("keepdim", False) \
            or sorted(a % 4 for a in node.attrs["axes"]) != [1, 2]:
        return False
    flag = producers.get(node.inputs[0].name)
    if flag is None or flag.op != "cast" or not flag.outputs[0].type.dtype.is_int:
        return False
    seen = producers.get(flag.inputs[0].name)
    return seen is not None and seen.op == "eq" and seen.inputs[0] is mask \
        and scalar_constant(producers.get(seen.inputs[1].name)) == 0.0


def rope_frequencies(cos: np.ndarray, sin: np.ndarray) -> tuple[np.ndarray, float] | None:
    """``inv_freq`` (float32 [R/2]) and ``scale`` such that row p of the caches [rows, R/2] is
    ``scale * cos(float32(p) * inv_freq)`` and ``scale * sin(...)`` (the float32 product, as the
    IR's ``rope`` computes it) within :data:`ROPE_TOLERANCE` on every row; None if no such
    frequencies exist (an interleaved or otherwise different table).

    Row 1 holds ``inv_freq``'s angle; of it and its :data:`ULPS` float32 neighbours on each side,
    each column takes the one whose table is closest (least squares: a short table may not tell
    the lowest frequencies to the ulp, and then either reproduces it)."""
    if cos.shape != sin.shape or cos.ndim != 2 or cos.shape[0] < 2:
        return None
    scale = float(cos[0, 0])
    if not (scale > 0 and np.all(cos[0] == cos[0, 0]) and np.all(sin[0] == 0)):
        return None
    first = np.arctan2(sin[1].astype(np.float64), cos[1].astype(np.float64)).astype(np.float32)
    up, down, candidates = first, first, [first]
    for _ in range(ULPS):
        up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(-np.inf))
        candidates += [up, down]
    misfit = np.zeros((len(candidates), first.size))
    worst = np.zeros((len(candidates), first.size))
    for start in range(0, cos.shape[0], ROWS):  # in blocks of rows: a long context's table is large
        positions = np.arange(start, min(start + ROWS, cos.shape[0]), dtype=np.float32)[:, None]
        want_cos, want_sin = (t[start:start + ROWS].astype(np.float64) for t in (cos, sin))
        for i, inv in enumerate(candidates):
            angles = (positions * inv[None, :]).astype(np.float64)  # the float32 products
            error = np.maximum(np.abs(scale * np.cos(angles) - want_cos), np.abs(scale * np.sin(angles) - want_sin))
            misfit[i] += (error ** 2).sum(axis=0)
            worst[i] = np.maximum(worst[i], error.max(axis=0))
    pick = misfit.argmin(axis=0)
    columns = np.arange(first.size)
    best = np.stack(candidates)[pick, columns]
    if np.any(worst[pick, columns] > ROPE_TOLERANCE * scale) or np.any(best <= 0):
        return None
    return best, scale


def split_projection(c: Converter, packed: Value, widths: list[Dim]) -> list[Value] | None:
    """The packed projection ``packed`` (a ``linear`` read only here) as one ``linear`` per part of
    ``widths`` columns, each of its weight's rows (a float parameter, or the codes, scales and zero
    points a ``dequantize`` reads) and bias; None for any other producer."""
    producers = {v.name: node for node in c.b.into for v in node.outputs}
    node = producers.get(packed.name)
    if node is None or node.op != "linear" or len(c.b.func.users().get(packed.name, [])) > 0 \
            or not all(w.is_static for w in widths):
        return None
    weight = producers.get(node.inputs[1].name)
    sources = [] if weight is None else [weight] if weight.op == "param" else \
        [producers.get(v.name) for v in weight.inputs] if weight.op == "dequantize" else [None]
    bias = [producers.get(v.name) for v in node.inputs[2:]]
    if not sources or any(s is None or s.op != "param" for s in (*sources, *bias)):
        return None
    parts, start = [], 0
    for width in widths:
        rows = slice(start, start + width.value)
        label = f"rows{rows.start}_{rows.stop}"
        w = [_rows(c, s, rows, label) for s in sources]
        w = w[0] if weight.op == "param" else c.op("dequantize", w, weight.attrs)
        parts.append(c.op("linear", [node.inputs[0], w, *(_rows(c, s, rows, label) for s in bias)]))
        start = rows.stop
    return parts


def _rows(c: Converter, node: Node, rows: slice, label: str) -> Value:
    """The parameter of rows ``rows`` of the parameter ``node`` reads, named with ``label`` before
    its last part (``W.codes`` -> ``W.rows0_64.codes``), made once."""
    source: Param = c.b.module.params[node.attrs["name"]]
    base, _, last = source.name.rpartition(".")
    name = f"{base}.{label}.{last}" if base else f"{label}.{last}"
    if name not in c.b.module.params:
        data = None if source.data is None else np.ascontiguousarray(source.data[rows])
        c.b.module.params[name] = Param(name, source.type.with_shape([rows.stop - rows.start, *source.type.shape[1:]]),
                                        data)
    return c.b.param(name)
