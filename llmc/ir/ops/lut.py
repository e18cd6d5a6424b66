"""LUT-mpGEMM ops: activation tables and table-lookup products over weight bit-planes.

The semantics are those of docs/lut.md. ``lut_precompute`` turns activations into per-chunk
tables; ``lut_gemm`` looks them up with the packed bit-plane indices of the weights and applies
the scales and zero points. Without table quantization the result equals
dequantize-then-matmul exactly for integer-valued activations, and to float rounding otherwise.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from llmc.ir.registry import AttrSpec, InferError, RefContext, register
from llmc.ir.types import F32, Dim, DType, TensorType

_ROWS = 64  # activation rows looked up at a time (bounds the gathered intermediate)


def chunk_count(k: Dim, g: int) -> Dim:
    if not k.is_static:
        raise InferError("LUT ops need a static K")
    return Dim.of(math.ceil(k.value / g))


def sign_tables(x: np.ndarray, g: int) -> np.ndarray:
    """``S[..., c, p] = sum_j (2 bit_j(p) - 1) * x[..., c*g + j]`` for all 2^g patterns, float32."""
    k = x.shape[-1]
    chunks = math.ceil(k / g)
    padded = np.zeros(x.shape[:-1] + (chunks * g,), dtype=np.float32)
    padded[..., :k] = x
    grouped = padded.reshape(x.shape[:-1] + (chunks, g))
    patterns = np.arange(1 << g)
    signs = ((patterns[:, None] >> np.arange(g)[None, :]) & 1) * 2 - 1  # [2^g, g]
    return np.einsum("...cj,pj->...cp", grouped, signs.astype(np.float32)).astype(np.float32)


@register("lut_precompute", inputs=1, results=3,
          attrs={"g": AttrSpec("int", 4), "symmetric": AttrSpec("bool", True), "table_bits": AttrSpec("int", 0)})
class LutPrecompute:
    """Tables of the activations ``x`` [..., K] (zero-padded to chunks of ``g``). Results:
    ``tables`` [..., C, E] with E = 2^(g-1) (symmetric: the signed sums S of patterns with the top
    bit clear) or 2^g (all signed sums S), float32, or int8 when ``table_bits = 8``
    (``rint(S / scale)``); ``scale`` [..., 1] float32 (``max|S| / 127`` per row for int8 tables,
    else 1); ``sums`` [..., C] float32, the plain sum of each chunk."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x, g, bits = ins[0], attrs["g"], attrs["table_bits"]
        if not x.dtype.is_float:
            raise InferError("lut_precompute needs float activations")
        if not 1 <= g <= 8:
            raise InferError(f"LUT chunk size g must be 1..8, got {g}")
        if bits not in (0, 8):
            raise InferError(f"table_bits must be 0 (float) or 8, got {bits}")
        chunks = chunk_count(x.shape[-1], g)
        entries = 1 << (g - 1 if attrs["symmetric"] else g)
        table_dtype = DType("int", 8) if bits == 8 else F32
        lead = x.shape[:-1]
        return [TensorType(lead + (chunks, Dim.of(entries)), table_dtype), TensorType(lead + (Dim.of(1),), F32),
                TensorType(lead + (chunks,), F32)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x, g = ins[0].astype(np.float32), attrs["g"]
        full = sign_tables(x, g)
        sums = np.ascontiguousarray(full[..., (1 << g) - 1])  # the all-ones pattern: the chunk's sum
        tables = full[..., : 1 << (g - 1)] if attrs["symmetric"] else full
        scale = np.ones(x.shape[:-1] + (1,), dtype=np.float32)
        if attrs["table_bits"] == 8:
            peak = np.abs(full).reshape(x.shape[:-1] + (-1,)).max(axis=-1, keepdims=True) / np.float32(127)
            scale = np.where(peak > 0, peak, np.float32(1)).astype(np.float32)
            tables = np.clip(np.rint(tables / scale[..., None]), -127, 127).astype(np.int8)
        return [np.ascontiguousarray(tables), scale, sums]


def lookup(tables: np.ndarray, index: np.ndarray, g: int, symmetric: bool) -> np.ndarray:
    """Signed sums ``S[r, c, index[n, c]]`` for rows r: [R, N, C] (int64 for int8 tables)."""
    wide = tables.astype(np.int64) if tables.dtype == np.int8 else tables
    chunks = np.arange(index.shape[1])[None, :]
    if not symmetric:
        return wide[:, chunks, index]
    top = (index >> (g - 1)) & 1
    mirrored = np.where(top == 1, index ^ ((1 << g) - 1), index)
    values = wide[:, chunks, mirrored]
    return np.where(top[None] == 1, -values, values)


@register("lut_gemm", inputs=6, attrs={"bits": AttrSpec("int"), "g": AttrSpec("int", 4), "group": AttrSpec("int"),
                                        "symmetric": AttrSpec("bool", True)})
class LutGemm:
    """``y[..., n] = sum_t s[n,t] * (acc[n,t] - z[n,t] * xs[t])`` with, per group t of ``group``
    columns (0: all), ``acc = (sum_i 2^i sum_c S[c, planes[i,n,c]] + (2^bits - 1) xs) / 2`` and
    ``xs = sum_c sums[c]``. Inputs: ``tables, scale, sums`` from ``lut_precompute``, ``planes``
    [bits, N, C] uint8, ``scales`` [N, G] float, ``zeros`` [N, G] integer (the symmetric offset
    2^(bits-1) included). For int8 tables ``sum_i 2^i sum_c`` accumulates exactly in integers and
    is multiplied by ``scale``. Float arithmetic is float32, groups in ascending order."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        tables, scale, sums, planes, scales, zeros = ins
        bits, g, group = attrs["bits"], attrs["g"], attrs["group"]
        if planes.rank != 3 or planes.shape[0] != Dim.of(bits) or planes.dtype != DType("uint", 8):
            raise InferError(f"lut_gemm planes must be u8 [{bits}, N, C]")
        n, chunks = planes.shape[1], planes.shape[2]
        if tables.shape[-2] != chunks or sums.shape[-1] != chunks:
            raise InferError(f"lut_gemm tables have {tables.shape[-2]} chunks, the weights {chunks}")
        if tables.shape[-1] != Dim.of(1 << (g - 1 if attrs["symmetric"] else g)):
            raise InferError("lut_gemm table width does not match g and symmetric")
        if group % g:
            raise InferError(f"group {group} is not a multiple of the chunk size {g}")
        groups = Dim.of(1) if group == 0 else Dim.of(chunks.value * g // group)
        if scales.shape != (n, groups) or zeros.shape != (n, groups) or not zeros.dtype.is_int:
            raise InferError(f"lut_gemm scales and integer zeros must have shape [{n}, {groups}]")
        if scale.shape != tables.shape[:-2] + (Dim.of(1),):
            raise InferError("lut_gemm table scale must have shape [..., 1]")
        return [TensorType(tables.shape[:-2] + (n,), F32)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        tables, scale, sums, planes, scales, zeros = ins
        bits, g, group, symmetric = attrs["bits"], attrs["g"], attrs["group"], attrs["symmetric"]
        lead = tables.shape[:-2]
        chunks = planes.shape[2]
        per = chunks if group == 0 else group // g
        rows_t = tables.reshape((-1,) + tables.shape[-2:])
        rows_scale = scale.reshape(-1, 1).astype(np.float32)
        rows_sums = sums.reshape(-1, chunks).astype(np.float32)
        out = np.zeros((rows_t.shape[0], planes.shape[1]), dtype=np.float32)
        s, z = scales.astype(np.float32), zeros.astype(np.float32)
        for r0 in range(0, rows_t.shape[0], _ROWS):
            t_rows, sc = rows_t[r0:r0 + _ROWS], rows_scale[r0:r0 + _ROWS]
            acc_planes = 0
            for i in range(bits):
                acc_planes = acc_planes + lookup(t_rows, planes[i].astype(np.int64), g, symmetric) * (1 << i)
            y = np.zeros((t_rows.shape[0], planes.shape[1]), dtype=np.float32)
            for t in range(chunks // per):
                part = acc_planes[..., t * per:(t + 1) * per].sum(axis=-1)
                part = part.astype(np.float32) * sc if tables.dtype == np.int8 else part.astype(np.float32)
                xs = rows_sums[r0:r0 + _ROWS, t * per:(t + 1) * per].sum(axis=-1, keepdims=True)
                acc = (part + np.float32((1 << bits) - 1) * xs) / np.float32(2)
                y = y + s[:, t] * (acc - z[:, t] * xs)
            out[r0:r0 + _ROWS] = y
        return [out.reshape(lead + (planes.shape[1],))]
