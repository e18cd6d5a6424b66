"""Dequantize-based GEMV baseline in TVMScript: unpack codes to float and FMA, vectorised and parallel.

``dequant(x[M, K], w, s[Np, NT], z[Np, NT], y[M, Np])`` with ``w`` in the ``dequant`` layout of
``pack.py``. It first copies the activations into per-group zero-padded rows ``xp`` and their
16-lane partial sums ``xsl``; then, per row and group, it zero-extends 16 code bytes, shifts and
masks each code slot, converts to float32 and accumulates ``u * x`` with FMAs in 16 lanes. The
scale and zero point are applied once per group and lane,
``tot += s * (acc - z * xsl)`` (that is ``sum_k (u - z) * s * x``), and one horizontal sum per row
finishes the dot product. Generic vector TIR: LLVM picks the instructions for the target.
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from .pack import Geometry

V = 16
"""Lanes of the code and activation vectors."""


def dequant_func(geom: Geometry, batch: int, rows: int) -> tvm.tirx.PrimFunc:
    """Baseline kernel for ``batch`` activation rows; each parallel task computes ``rows`` outputs."""
    k, nt, gc = geom.k, geom.n_groups, geom.group_cols
    sb = geom.slot_bits()
    per, gp, mask = 8 // sb, geom.padded_group_cols(), (1 << sb) - 1
    nkb = gp // (V * per)
    m_rows, np_rows = batch, geom.padded_rows("dequant")

    @T.prim_func
    def dequant(
        x: T.Buffer((m_rows, k), "float32"),
        w: T.Buffer((np_rows, nt, nkb, V), "uint8"),
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
                xsl[m, t, T.ramp(0, 1, V)] = T.broadcast(T.float32(0), V)
                for blk in range(gp // V):
                    xsl[m, t, T.ramp(0, 1, V)] = xsl[m, t, T.ramp(0, 1, V)] + xp[m, t, T.ramp(blk * V, 1, V)]
        for task in T.parallel(np_rows // rows):
            acc = T.alloc_buffer((m_rows, rows * V), "float32", scope="local")
            tot = T.alloc_buffer((m_rows, rows * V), "float32", scope="local")
            for m in T.unroll(m_rows):
                for r in T.unroll(rows):
                    tot[m, T.ramp(r * V, 1, V)] = T.broadcast(T.float32(0), V)
            for t in range(nt):
                for m in T.unroll(m_rows):
                    for r in T.unroll(rows):
                        acc[m, T.ramp(r * V, 1, V)] = T.broadcast(T.float32(0), V)
                for kb in range(nkb):
                    for r in T.unroll(rows):
                        codes = T.Cast("int32x16", w[task * rows + r, t, kb, T.ramp(0, 1, V)])
                        for q in T.unroll(per):
                            wf = T.Cast("float32x16", (codes >> T.broadcast(sb * q, V)) & T.broadcast(mask, V))
                            for m in T.unroll(m_rows):
                                xv = xp[m, t, T.ramp(kb * V * per + q * V, 1, V)]
                                acc[m, T.ramp(r * V, 1, V)] = acc[m, T.ramp(r * V, 1, V)] + wf * xv
                for m in T.unroll(m_rows):
                    for r in T.unroll(rows):
                        n = task * rows + r
                        part = acc[m, T.ramp(r * V, 1, V)] - T.broadcast(z[n, t], V) * xsl[m, t, T.ramp(0, 1, V)]
                        tot[m, T.ramp(r * V, 1, V)] = tot[m, T.ramp(r * V, 1, V)] + T.broadcast(s[n, t], V) * part
            for m in T.unroll(m_rows):
                for r in T.unroll(rows):
                    v16 = tot[m, T.ramp(r * V, 1, V)]
                    v8 = T.vectorlow("float32x8", v16) + T.vectorhigh("float32x8", v16)
                    v4 = T.vectorlow("float32x4", v8) + T.vectorhigh("float32x4", v8)
                    v2 = T.vectorlow("float32x2", v4) + T.vectorhigh("float32x2", v4)
                    y[m, task * rows + r] = T.vectorlow("float32", v2) + T.vectorhigh("float32", v2)

    return dequant
