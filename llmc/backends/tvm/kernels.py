"""Tensor-expression kernels for the ops TVM lacks: the linear family of llmc's compressed IR.

Each function takes TE tensors (``BlockBuilder.emit_te`` passes them) and returns the result
tensor(s); one call becomes one PrimFunc, scheduled later per target (``schedule.py``). Leading
activation dims are kept (``x`` is ``[..., K]``). The arithmetic is that of the reference ops in
``llmc/ir/ops``: float32 throughout, exact integer accumulation, the same rounding
(round-half-to-even). Only the order of float sums may differ.

Weight layouts (``layouts.py`` packs them from the IR's parameters):

- ``packed [N, ceil(K / per)]`` uint32: offset codes ``u`` in ``slot``-bit fields, ``per = 32 / slot``
  codes per word, column ``k`` in word ``k // per`` at bit ``(k % per) * slot``;
- ``scales``, ``zeros`` ``[N, G]`` float32 with ``W[n, k] = (u - zeros[n, k // group]) * scales[...]``
  (``zeros`` holds the symmetric offset ``2^(b-1)`` too);
- N:M sparse: ``values [N, K n / m]`` with ``index [N, K n / m]`` uint8, the position of each kept
  value inside its block of ``m`` columns.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from tvm import te, tirx

F32 = "float32"


def _lead(x: te.Tensor) -> list[tirx.PrimExpr]:
    return list(x.shape[:-1])


def _with_bias(y: te.Tensor, bias: te.Tensor | None) -> te.Tensor:
    if bias is None:
        return y
    return te.compute(y.shape, lambda *i: y[i] + bias[i[-1]], name="bias")


def _sum(shape: Sequence[tirx.PrimExpr], term: Callable[..., tirx.PrimExpr], extent: int, name: str) -> te.Tensor:
    """``out[i] = sum_{r < extent} term(*i, r)``; a plain copy when ``extent`` is 1 (TVM's GPU
    schedules mishandle an epilogue fused into a reduction of one element)."""
    if extent == 1:
        return te.compute(shape, lambda *i: term(*i, 0), name=name)
    r = te.reduce_axis((0, extent), name="r")
    return te.compute(shape, lambda *i: te.sum(term(*i, r), axis=r), name=name)


def linear(x: te.Tensor, w: te.Tensor, bias: te.Tensor | None = None) -> te.Tensor:
    """``x @ w.T (+ bias)`` with ``w [N, K]`` read in place (no transposed copy)."""
    k = te.reduce_axis((0, x.shape[-1]), name="k")
    y = te.compute((*_lead(x), w.shape[0]), lambda *i: te.sum(x[(*i[:-1], k)] * w[i[-1], k], axis=k), name="linear")
    return _with_bias(y, bias)


def unpack_code(packed: te.Tensor, n: tirx.PrimExpr, k: tirx.PrimExpr, slot: int) -> tirx.PrimExpr:
    """The ``slot``-bit offset code of column ``k`` of row ``n`` (uint32)."""
    per = 32 // slot
    shift = (k % per).astype("uint32") * tirx.const(slot, "uint32")
    return (packed[n, k // per] >> shift) & tirx.const((1 << slot) - 1, "uint32")


def dequantize_packed(packed: te.Tensor, scales: te.Tensor, zeros: te.Tensor, k: int, slot: int,
                      group: int) -> te.Tensor:
    """``W [N, K]`` float32 from packed codes: ``(u - zero) * scale`` per group."""
    span = group or k

    def weight(n: tirx.PrimExpr, c: tirx.PrimExpr) -> tirx.PrimExpr:
        g = c // span
        return (unpack_code(packed, n, c, slot).astype(F32) - zeros[n, g]) * scales[n, g]

    return te.compute((packed.shape[0], k), weight, name="dequantize")


def dequant_linear(x: te.Tensor, packed: te.Tensor, scales: te.Tensor, zeros: te.Tensor,
                   bias: te.Tensor | None = None, *, slot: int, group: int) -> te.Tensor:
    """``x @ dequantize(W).T``: the dequantize stage is inlined into the GEMV/GEMM by the schedule."""
    w = dequantize_packed(packed, scales, zeros, int(x.shape[-1]), slot, group)
    return linear(x, w, bias)


def dequantize_codes(codes: te.Tensor, scales: te.Tensor, zeros: te.Tensor | None, group: int) -> te.Tensor:
    """The reference ``dequantize`` on unpacked integer codes of any shape ``[..., K]``."""
    span = group or int(codes.shape[-1])

    def value(*i: tirx.PrimExpr) -> tirx.PrimExpr:
        col = (*i[:-1], i[-1] // span)
        q = codes[i].astype("int32")
        if zeros is not None:
            q = q - zeros[col].astype("int32")
        return q.astype(F32) * scales[col].astype(F32)

    return te.compute(codes.shape, value, name="dequantize")


def dequant_min_linear(x: te.Tensor, packed: te.Tensor, scales: te.Tensor, mins: te.Tensor,
                       bias: te.Tensor | None = None, *, slot: int, group: int) -> te.Tensor:
    """``x @ dequantize_min(W).T`` on packed unsigned codes: ``scale * u - min`` per group (float32
    scales and minimums), inlined into the GEMV/GEMM like :func:`dequant_linear`'s stage."""
    k = int(x.shape[-1])
    span = group or k

    def weight(n: tirx.PrimExpr, c: tirx.PrimExpr) -> tirx.PrimExpr:
        g = c // span
        return scales[n, g] * unpack_code(packed, n, c, slot).astype(F32) - mins[n, g]

    return linear(x, te.compute((packed.shape[0], k), weight, name="dequantize"), bias)


def dequantize_min_codes(codes: te.Tensor, scales: te.Tensor, mins: te.Tensor, group: int) -> te.Tensor:
    """The reference ``dequantize_min`` on unpacked unsigned codes of any shape ``[..., K]``."""
    span = group or int(codes.shape[-1])

    def value(*i: tirx.PrimExpr) -> tirx.PrimExpr:
        col = (*i[:-1], i[-1] // span)
        return scales[col].astype(F32) * codes[i].astype(F32) - mins[col].astype(F32)

    return te.compute(codes.shape, value, name="dequantize")


def sparse_linear(x: te.Tensor, values: te.Tensor, index: te.Tensor, bias: te.Tensor | None = None, *,
                  n: int, m: int) -> te.Tensor:
    """``x @ W.T`` for an N:M sparse ``W`` stored as kept ``values`` and their in-block ``index``."""
    j = te.reduce_axis((0, values.shape[1]), name="j")

    def column(row: tirx.PrimExpr, jj: tirx.PrimExpr) -> tirx.PrimExpr:
        return (jj // n) * m + index[row, jj].astype("int64")

    y = te.compute((*_lead(x), values.shape[0]),
                   lambda *i: te.sum(x[(*i[:-1], column(i[-1], j))] * values[i[-1], j], axis=j), name="sparse_linear")
    return _with_bias(y, bias)


def sparse_dequant_linear(x: te.Tensor, codes: te.Tensor, index: te.Tensor, scales: te.Tensor, zeros: te.Tensor,
                          bias: te.Tensor | None = None, *, n: int, m: int, group: int) -> te.Tensor:
    """N:M sparse quantized ``W``: kept offset codes (uint8), their in-block index, group scales."""
    span = group or int(x.shape[-1])

    def weight(row: tirx.PrimExpr, jj: tirx.PrimExpr) -> tirx.PrimExpr:
        g = ((jj // n) * m + index[row, jj].astype("int64")) // span
        return (codes[row, jj].astype(F32) - zeros[row, g]) * scales[row, g]

    w = te.compute(codes.shape, weight, name="dequantize")
    return sparse_linear(x, w, index, bias, n=n, m=m)


def qlinear(xq: te.Tensor, xs: te.Tensor, wq: te.Tensor, ws: te.Tensor, bias: te.Tensor | None = None, *,
            group: int, acc_dtype: str) -> te.Tensor:
    """The reference ``qlinear``: per group an exact integer dot product, then
    ``xs * sum_g(float(acc_g) * ws[:, g]) (+ bias)`` in float32, groups ascending."""
    k_total = int(wq.shape[1])
    span = group or k_total
    groups = k_total // span
    lead = _lead(xq)
    k = te.reduce_axis((0, span), name="k")
    acc = te.compute((*lead, wq.shape[0], groups), lambda *i: te.sum(
        xq[(*i[:-2], i[-1] * span + k)].astype(acc_dtype) * wq[i[-2], i[-1] * span + k].astype(acc_dtype), axis=k),
        name="qdot")
    total = _sum((*lead, wq.shape[0]), lambda *i: acc[i].astype(F32) * ws[i[-2], i[-1]], groups, "qgroups")
    y = te.compute(total.shape, lambda *i: xs[(*i[:-1], 0)] * total[i], name="qscale")
    return _with_bias(y, bias)


def _qmax(bits: int) -> float:
    return float((1 << (bits - 1)) - 1)


def quantize_rows(x: te.Tensor, *, bits: int, dtype: str) -> tuple[te.Tensor, te.Tensor]:
    """The reference ``quantize_dynamic``: ``scale = max|x| / qmax`` per row (1 if zero) and
    ``codes = clamp(rint(x / scale))``."""
    lead = _lead(x)
    k = te.reduce_axis((0, x.shape[-1]), name="k")
    peak = te.compute((*lead, 1), lambda *i: te.max(te.abs(x[(*i[:-1], k)]), axis=k), name="peak")
    q = _qmax(bits)
    scale = te.compute(peak.shape, lambda *i: tirx.Select(peak[i] > 0, peak[i] / tirx.const(q, F32),
                                                          tirx.const(1.0, F32)), name="scale")
    codes = te.compute(x.shape, lambda *i: tirx.max(tirx.min(tirx.nearbyint(x[i] / scale[(*i[:-1], 0)]), q), -q)
                       .astype(dtype), name="codes")
    return codes, scale


def round_float(x: tirx.PrimExpr, dtype: str) -> tirx.PrimExpr:
    """A non-negative float32 rounded to the nearest ``float16`` / ``bfloat16`` value (ties to even),
    kept in float32 by integer arithmetic on its bits: devices without half precision run it too."""
    if dtype == F32:
        return x
    drop = {"float16": 13, "bfloat16": 16}[dtype]
    bits = tirx.reinterpret("uint32", x)
    half = tirx.const((1 << (drop - 1)) - 1, "uint32")
    rounded = (bits + half + ((bits >> tirx.const(drop, "uint32")) & tirx.const(1, "uint32"))) \
        & tirx.const((0xFFFFFFFF >> drop) << drop, "uint32")
    value = tirx.reinterpret(F32, rounded)
    if dtype == "bfloat16":
        return value
    tiny = _exact(0x33800000)  # 2^-24: float16 subnormals are its multiples
    subnormal = tirx.nearbyint(x / tiny) * tiny
    value = tirx.Select(x < _exact(0x38800000), subnormal, value)  # below 2^-14, the smallest normal
    return tirx.Select(x >= tirx.const(65520.0, F32), tirx.const(float("inf"), F32), value)


def _exact(bits: int) -> tirx.PrimExpr:
    """A float32 constant from its bit pattern: TVM's OpenCL code prints float literals with 7
    significant digits, which does not round-trip every float (2^-24 among them)."""
    return tirx.reinterpret(F32, tirx.const(bits, "uint32"))


def fake_quant(x: te.Tensor, *, bits: int, group: int, scale_dtype: str) -> te.Tensor:
    """The reference ``fake_quant``: quantize per group of the last axis and dequantize."""
    k_total = int(x.shape[-1])
    span = group or k_total
    lead = _lead(x)
    k = te.reduce_axis((0, span), name="k")
    peak = te.compute((*lead, k_total // span),
                      lambda *i: te.max(te.abs(x[(*i[:-1], i[-1] * span + k)]), axis=k), name="peak")
    q = _qmax(bits)

    def step(*i: tirx.PrimExpr) -> tirx.PrimExpr:
        s = round_float(peak[i] / tirx.const(q, F32), scale_dtype)
        return tirx.Select(s > 0, s, tirx.const(1.0, F32))

    scale = te.compute(peak.shape, step, name="scale")

    def value(*i: tirx.PrimExpr) -> tirx.PrimExpr:
        s = scale[(*i[:-1], i[-1] // span)]
        return tirx.max(tirx.min(tirx.nearbyint(x[i] / s), q), -q) * s

    return te.compute(x.shape, value, name="fake_quant")


def lut_tables(x: te.Tensor, *, g: int, symmetric: bool, table_bits: int) -> tuple[te.Tensor, te.Tensor, te.Tensor]:
    """The reference ``lut_precompute``: per chunk of ``g`` activations the signed sums ``S`` of every
    pattern (``symmetric``: the half with the top bit clear), the per-row table scale and chunk sums."""
    k_total = int(x.shape[-1])
    chunks = -(-k_total // g)
    lead = _lead(x)
    full = 1 << g
    entries = full >> 1 if symmetric else full

    def column(i: Sequence[tirx.PrimExpr], c: tirx.PrimExpr, j: int) -> tirx.PrimExpr:
        col = c * g + j
        if (chunks * g) == k_total:
            return x[(*i, col)]
        return tirx.Select(col < k_total, x[(*i, tirx.min(col, k_total - 1))], tirx.const(0.0, F32))

    def signed(*i: tirx.PrimExpr) -> tirx.PrimExpr:
        *rows, c, p = i
        total = tirx.const(0.0, F32)
        for j in range(g):
            sign = (((p >> j) & 1) * 2 - 1).astype(F32)
            total = total + sign * column(rows, c, j)
        return total

    table = te.compute((*lead, chunks, full), signed, name="signed_sums")
    sums = te.compute((*lead, chunks), lambda *i: table[(*i, full - 1)], name="sums")
    if table_bits == 0:
        tables = te.compute((*lead, chunks, entries), lambda *i: table[i], name="tables")
        scale = te.compute((*lead, 1), lambda *i: tirx.const(1.0, F32), name="scale")
        return tables, scale, sums
    c = te.reduce_axis((0, chunks), name="c")
    p = te.reduce_axis((0, full), name="p")
    peak = te.compute((*lead, 1), lambda *i: te.max(te.abs(table[(*i[:-1], c, p)]), axis=[c, p]), name="peak")
    scale = te.compute(peak.shape, lambda *i: tirx.Select(peak[i] > 0, peak[i] / tirx.const(127.0, F32),
                                                          tirx.const(1.0, F32)), name="scale")
    tables = te.compute((*lead, chunks, entries), lambda *i: tirx.max(tirx.min(
        tirx.nearbyint(table[i] / scale[(*i[:-2], 0)]), 127.0), -127.0).astype("int8"), name="tables")
    return tables, scale, sums


def lut_gemm(tables: te.Tensor, scale: te.Tensor, sums: te.Tensor, planes: te.Tensor, scales: te.Tensor,
             zeros: te.Tensor, *, bits: int, g: int, group: int, symmetric: bool) -> te.Tensor:
    """The reference ``lut_gemm``: per group ``t`` the plane-weighted table lookups
    ``part = sum_i 2^i sum_c S[c, planes[i, n, c]]``, ``acc = (part + (2^b - 1) xs) / 2`` and
    ``y = sum_t s (acc - z xs)``; ``planes [b, N, C]`` uint8 as in docs/lut.md."""
    lead = list(tables.shape[:-2])
    chunks = int(planes.shape[2])
    per = chunks if group == 0 else group // g
    groups = chunks // per
    rows = planes.shape[1]
    integer = tables.dtype == "int8"
    acc_dtype = "int32" if integer else F32
    flip = (1 << g) - 1
    xs = _sum((*lead, groups), lambda *i: sums[(*i[:-2], i[-2] * per + i[-1])], per, "xs")

    def lookup(i: Sequence[tirx.PrimExpr], plane: tirx.PrimExpr, n: tirx.PrimExpr, chunk: tirx.PrimExpr):
        idx = planes[plane, n, chunk].astype("int32")
        if not symmetric:
            return tables[(*i, chunk, idx)].astype(acc_dtype)
        top = (idx >> (g - 1)) & 1
        value = tables[(*i, chunk, tirx.Select(top == 1, idx ^ flip, idx))].astype(acc_dtype)
        return tirx.Select(top == 1, -value, value)

    plane = te.reduce_axis((0, bits), name="plane")
    cc = te.reduce_axis((0, per), name="cc")

    def planes_sum(*i: tirx.PrimExpr) -> tirx.PrimExpr:
        weight = (tirx.const(1, "int32") << plane.var.astype("int32")).astype(acc_dtype)
        return te.sum(lookup(i[:-2], plane, i[-2], i[-1] * per + cc) * weight, axis=[plane, cc])

    part = te.compute((*lead, rows, groups), planes_sum, name="lookup")
    odd = tirx.const(float((1 << bits) - 1), F32)

    def group_term(i: Sequence[tirx.PrimExpr], t: tirx.PrimExpr) -> tirx.PrimExpr:
        n = i[-1]
        total = part[(*i, t)].astype(F32)
        if integer:
            total = total * scale[(*i[:-1], 0)]
        x_sum = xs[(*i[:-1], t)]
        acc = (total + odd * x_sum) / tirx.const(2.0, F32)
        return scales[n, t] * (acc - zeros[n, t] * x_sum)

    return _sum((*lead, rows), lambda *i: group_term(i[:-1], i[-1]), groups, "lut_gemm")
