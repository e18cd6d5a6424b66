"""onnxruntime's ``com.microsoft.RotaryEmbedding``: rotary position embedding from cos / sin caches.

``input`` is [B, S, N * H] (N = ``num_heads``; without it H = 2 * cos_cache's columns) or
[B, N, S, H]; ``position_ids`` [B, S] int64 (rows of the caches) or [1] (the first token's row, the
others following); ``cos_cache`` and ``sin_cache`` [max_position, R / 2] with R =
``rotary_embedding_dim`` (0: H; otherwise ``num_heads`` is required, as onnxruntime requires it).
The first R columns of each head are rotated as halves (x1 = x[:R/2], x2 = x[R/2:R]) or, with
``interleaved``, as pairs (x1 = x[0:R:2], x2 = x[1:R:2]) into ``x1 cos - x2 sin`` and
``x1 sin + x2 cos``; the other columns pass through. Computed in float32 (16-bit floats rounded
once, as onnxruntime's kernel does). ``scale`` and ``is_packed_batching`` are not read
(onnxruntime's CPU kernel ignores both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmc.compiler.frontend.onnx_norm_ops import cast
from llmc.compiler.frontend.onnx_registry import CONTRIB_DOMAIN, Attrs, Node, handles
from llmc.compiler.frontend.onnx_values import Operand
from llmc.ir.graph import Value
from llmc.ir.types import F32, I64, Dim

if TYPE_CHECKING:
    from llmc.compiler.frontend.onnx_converter import Converter


def rotate(c: Converter, x: Value, cos: Value, sin: Value, interleaved: bool) -> Value:
    """``x`` [..., H] with its first R = 2 * cos's last dim columns rotated; ``cos`` and ``sin``
    broadcast against ``x[..., :R/2]``."""
    axis = x.type.rank - 1
    head, half = x.type.shape[axis], cos.type.shape[-1]
    rotary = half * 2

    def cols(start: Dim, end: Dim, step: int = 1) -> Value:
        return c.op("slice", [x], {"axis": axis, "start": start, "end": end, "step": step})

    x1, x2 = (cols(Dim.of(0), rotary, 2), cols(Dim.of(1), rotary, 2)) if interleaved else \
        (cols(Dim.of(0), half), cols(half, rotary))
    real = c.op("sub", [c.op("mul", [x1, cos]), c.op("mul", [x2, sin])])
    imag = c.op("add", [c.op("mul", [x1, sin]), c.op("mul", [x2, cos])])
    if interleaved:
        pair = [*real.type.shape, Dim.of(1)]
        out = c.op("concat", [c.reshape(real, pair), c.reshape(imag, pair)], {"axis": axis + 1})
        out = c.reshape(out, [*real.type.shape[:-1], rotary])
    else:
        out = c.op("concat", [real, imag], {"axis": axis})
    return out if rotary == head else c.op("concat", [out, cols(rotary, head)], {"axis": axis})


def cache_rows(c: Converter, cache: Value, positions: Value, shape: list[Dim]) -> Value:
    """The rows ``positions`` of a cos or sin cache in float32, reshaped to ``shape``."""
    return c.reshape(cast(c, c.op("gather", [cache, positions], {"axis": 0}), F32), shape)


@handles("RotaryEmbedding", domain=CONTRIB_DOMAIN)
def _rotary_embedding(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x, positions, cos, sin = (c.tensor(name) for name in n.input[:4])
    dtype, shape = x.type.dtype, x.type.shape
    heads, rotary = int(attrs.get("num_heads", 0)), int(attrs.get("rotary_embedding_dim", 0))
    if not dtype.is_float or x.type.rank not in (3, 4):
        raise c.error(f"input is {x.type}, expected floats [B, S, hidden] or [B, N, S, H]")
    for what, cache in (("cos_cache", cos), ("sin_cache", sin)):
        if cache.type.dtype != dtype or cache.type.rank != 2 or not cache.type.shape[1].is_static:
            raise c.error(f"{what} is {cache.type}, expected {dtype} [max_position, rotary_dim / 2]")
    if cos.type.shape != sin.type.shape:
        raise c.error(f"cos_cache {cos.type} and sin_cache {sin.type} differ in shape")
    if rotary and heads <= 0:
        raise c.error("rotary_embedding_dim needs num_heads (onnxruntime requires both)")
    half = cos.type.shape[1].value
    if x.type.rank == 4:
        batch, count, seq, head = shape
    else:
        batch, seq, hidden = shape
        split = hidden.exact_div(Dim.of(heads)) if heads else Dim.of(2 * half)
        per = None if split is None else hidden.exact_div(split)
        if split is None or per is None:
            raise c.error(f"hidden size {hidden} is not a multiple of the head size ({heads} heads)")
        head, count = split, per
    if not head.is_static:
        raise c.error(f"head size {head} is not static")
    rotary = rotary or head.value
    if rotary % 2 or rotary > head.value or 2 * half != rotary:
        raise c.error(f"cos_cache has {half} columns, expected rotary_embedding_dim / 2 = {rotary / 2:g} "
                      f"(head size {head})")
    pos_shape = positions.type.shape
    if positions.type.dtype != I64 or pos_shape not in ((Dim.of(1),), (batch, seq)):
        raise c.error(f"position_ids is {positions.type}, expected i64 [{batch}, {seq}] or [1]")
    if pos_shape == (Dim.of(1),):  # the first position; the others follow it
        positions = c.reshape(c.op("add", [c.op("iota", [], {"start": 0, "end": seq, "dtype": I64}), positions]),
                              [Dim.of(1), seq])
    rows = positions.type.shape[0]
    if x.type.rank == 4:
        xr, angles = cast(c, x, F32), [rows, Dim.of(1), seq, Dim.of(half)]
    else:
        xr = c.reshape(cast(c, x, F32), [batch, seq, count, head])
        angles = [rows, seq, Dim.of(1), Dim.of(half)]
    interleaved = bool(attrs.get("interleaved", 0))
    out = rotate(c, xr, cache_rows(c, cos, positions, angles), cache_rows(c, sin, positions, angles), interleaved)
    return [cast(c, c.reshape(out, list(shape)), dtype)]
