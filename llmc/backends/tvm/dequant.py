"""Dequantize-based GEMV baseline in TVMScript: unpack codes to float and FMA, vectorised and parallel.

``dequant(x[M, K], w, s[Np, NT], z[Np, NT], y[M, Np])`` with ``w`` in the ``dequant`` layout of
``pack.py``. It first copies the activations into per-group zero-padded rows ``xp`` and their
16-lane partial sums ``xsl``; then, per 8-row block (one parallel task, rows interleaved in memory
so the task reads one stream) and group, it zero-extends 16 code bytes per row, shifts and masks
each code slot, converts to float32 and accumulates ``u * x`` with FMAs in 16 lanes. The
scale and zero point are applied once per group and lane,
``tot += s * (acc - z * xsl)`` (that is ``sum_k (u - z) * s * x``), and one horizontal sum per row
finishes the dot product. Generic vector TIR: LLVM picks the instructions for the target.
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from ._tir import V, splat, vec
from .pack import DEQUANT_BLOCK_ROWS, Geometry


def dequant_func(geom: Geometry, batch: int, rows: int) -> tvm.tirx.PrimFunc:
    """Baseline kernel for ``batch`` activation rows.

    Each parallel task computes one 8-row block of the layout, ``rows`` outputs (a divisor of 8)
    at a time.
    """
    k, nt, gc = geom.k, geom.n_groups, geom.group_cols
    sb = geom.slot_bits()
    per, gp, mask = 8 // sb, geom.padded_group_cols(), (1 << sb) - 1
    nkb = gp // (V * per)
    m_rows, np_rows = batch, geom.padded_rows("dequant")
    block = DEQUANT_BLOCK_ROWS

    @T.prim_func
    def dequant(
        x: T.Buffer((m_rows, k), "float32"),
        w: T.Buffer((np_rows // block, nt, nkb, block, V), "uint8"),
        s: T.Buffer((np_rows, nt), "float32"),
        z: T.Buffer((np_rows, nt), "float32"),
        y: T.Buffer((m_rows, np_rows), "float32"),
    ):
        T.func_attr({"global_symbol": "dequant", "tirx.noalias": True})
        xp = T.alloc_buffer((m_rows, nt, gp), "float32")
        xsl = T.alloc_buffer((m_rows, nt, V), "float32")
        for m in range(m_rows):
            for t in range(nt):
                for kk in range(gp):
                    col = t * gc + kk
                    xp[m, t, kk] = T.if_then_else(kk < gc and col < k, x[m, T.min(col, k - 1)], T.float32(0))
                xsl[m, t, vec(0)] = splat(T.float32(0))
                for blk in range(gp // V):
                    xsl[m, t, vec(0)] = xsl[m, t, vec(0)] + xp[m, t, vec(blk * V)]
        for task in T.parallel(np_rows // block):
            for sub in range(block // rows):
                acc = T.alloc_buffer((m_rows, rows * V), "float32", scope="local")
                tot = T.alloc_buffer((m_rows, rows * V), "float32", scope="local")
                for m in T.unroll(m_rows):
                    for r in T.unroll(rows):
                        tot[m, vec(r * V)] = splat(T.float32(0))
                for t in range(nt):
                    for m in T.unroll(m_rows):
                        for r in T.unroll(rows):
                            acc[m, vec(r * V)] = splat(T.float32(0))
                    for kb in range(nkb):
                        for r in T.unroll(rows):
                            codes = T.Cast("int32x16", w[task, t, kb, sub * rows + r, vec(0)])
                            for q in T.unroll(per):
                                wf = T.Cast("float32x16", (codes >> splat(sb * q)) & splat(mask))
                                for m in T.unroll(m_rows):
                                    xv = xp[m, t, vec(kb * V * per + q * V)]
                                    acc[m, vec(r * V)] = acc[m, vec(r * V)] + wf * xv
                    for m in T.unroll(m_rows):
                        for r in T.unroll(rows):
                            n = task * block + sub * rows + r
                            part = acc[m, vec(r * V)] - splat(z[n, t]) * xsl[m, t, vec(0)]
                            tot[m, vec(r * V)] = tot[m, vec(r * V)] + splat(s[n, t]) * part
                for m in T.unroll(m_rows):
                    for r in T.unroll(rows):
                        v16 = tot[m, vec(r * V)]
                        v8 = T.vectorlow("float32x8", v16) + T.vectorhigh("float32x8", v16)
                        v4 = T.vectorlow("float32x4", v8) + T.vectorhigh("float32x4", v8)
                        v2 = T.vectorlow("float32x2", v4) + T.vectorhigh("float32x2", v4)
                        y[m, task * block + sub * rows + r] = T.vectorlow("float32", v2) + T.vectorhigh("float32", v2)

    return dequant
