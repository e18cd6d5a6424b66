"""LUT-mpGEMM kernels (docs/lut.md) for CPUs, written in TVMScript, in the variants of ``lut_isa.py``.

Each kernel is one PrimFunc ``lut(x[M, K], w, s[NT, Np], z[NT, Np], y[M, Np])``: a serial table
precompute over the activations followed by a row-parallel lookup loop, so one call covers
everything from float activations to float outputs. Weights are in the layouts of ``pack.py``.
The variant supplies the inner lookups and accumulation; everything else is shared.

- ``int8`` tables: the full 16-entry signed table ``S[c, p] = sum_j (2 bit_j(p) - 1) x[4c + j]``
  quantized per activation row with ``scale = max|S| / 127`` (the int8 tables of docs/lut.md, stored
  unfolded). Four chunks' tables fill one 64-byte row; the variant looks up ``step`` index bytes at
  a time in it (AVX-512: ``vpermb`` on 64) and multiplies by the plane weight ``2^i`` and sums the
  four chunks of a row into an int32 accumulator (AVX-512: ``vpdpbusd``). Since
  ``T = (S + sum_j x_j) / 2``, ``acc = scale/2 * sum_i 2^i sum_c Sq + (2^b - 1)/2 * xs``.
- ``f32`` tables: the full table ``T[c, p] = sum_j bit_j(p) x[4c + j]`` (16 floats); the variant
  looks up ``lanes`` rows at a time (AVX-512: ``vpermps`` on 16), reading the index from the low
  nibble of each 32-bit lane (eight chunks per word, shifted down by 4 per chunk), and an FMA adds
  ``2^i`` times the entry. Exact for integer-valued activations.

Both end each group with ``y += s * (acc - z * xs)``.
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from ._tir import V, splat, vec
from .lut_isa import Variant
from .pack import CHUNK, Geometry

ENTRIES = 1 << CHUNK
"""Entries of a full chunk table."""


def _geometry_constants(geom: Geometry, layout: str) -> tuple[int, int, int, int]:
    """``(K, NT, CG, CGp)``: inputs, groups, real and padded chunk slots per group."""
    return geom.k, geom.n_groups, geom.chunks_per_group, geom.slots_per_group(layout)


def lut_int8_func(geom: Geometry, batch: int, row_blocks: int, variant: Variant) -> tvm.tirx.PrimFunc:
    """int8-table kernel; each parallel task handles ``row_blocks`` blocks of 32 rows."""
    k, nt, cg, cgp = _geometry_constants(geom, "lut_int8")
    m_rows, bits, rb = batch, geom.bits, row_blocks
    np_rows = geom.padded_rows("lut_int8")
    nb, cq, qpg = np_rows // 32, nt * cgp // 4, cgp // 4
    half_levels = 0.5 * (2**bits - 1)
    step, lookup, dot4 = variant.step, variant.lookup, variant.dot4
    lanes = step // 4

    @T.prim_func
    def lut(
        x: T.Buffer((m_rows, k), "float32"),
        w: T.Buffer((nb, nt, bits, qpg, 64), "uint8"),
        s: T.Buffer((nt, np_rows), "float32"),
        z: T.Buffer((nt, np_rows), "float32"),
        y: T.Buffer((m_rows, np_rows), "float32"),
    ):
        T.func_attr({"global_symbol": "lut", "tirx.noalias": True})
        sf = T.alloc_buffer((m_rows, cq * 4, ENTRIES), "float32")
        tq = T.alloc_buffer((m_rows, cq, 64), "int8")
        xs = T.alloc_buffer((m_rows, nt), "float32")
        half_scale = T.alloc_buffer((m_rows,), "float32")
        xc = T.alloc_buffer((CHUNK,), "float32")
        amax = T.alloc_buffer((1,), "float32")

        for m in range(m_rows):
            amax[0] = T.float32(0)
            for t in range(nt):
                xs[m, t] = T.float32(0)
                for cc in range(cgp):
                    for j in T.unroll(CHUNK):
                        col = (t * cg + cc) * CHUNK + j
                        xc[j] = T.if_then_else(cc < cg and col < k, x[m, T.min(col, k - 1)], T.float32(0))
                    xs[m, t] = xs[m, t] + xc[0] + xc[1] + xc[2] + xc[3]
                    amax[0] = T.max(amax[0], T.fabs(xc[0]) + T.fabs(xc[1]) + T.fabs(xc[2]) + T.fabs(xc[3]))
                    sv = splat(T.float32(0))
                    for j in T.unroll(CHUNK):
                        bit = T.Cast("float32x16", (vec(0) >> splat(j)) & splat(1))
                        sv = sv + splat(xc[j]) * (bit * splat(T.float32(2)) - splat(T.float32(1)))
                    sf[m, t * cgp + cc, vec(0)] = sv
            scale = T.if_then_else(amax[0] > T.float32(0), amax[0] / T.float32(127), T.float32(1))
            half_scale[m] = scale * T.float32(0.5)
            for o in range(cq):
                for q in T.unroll(4):
                    tq[m, o, vec(q * ENTRIES, ENTRIES)] = T.Cast(
                        "int8x16", T.nearbyint(sf[m, o * 4 + q, vec(0)] / splat(scale))
                    )
        for task in T.parallel(nb // rb):
            acc = T.alloc_buffer((m_rows, rb * 32), "int32", scope="local")
            yacc = T.alloc_buffer((m_rows, rb * 32), "float32", scope="local")
            for m in T.unroll(m_rows):
                for v in T.unroll(rb * 2):
                    yacc[m, vec(v * V)] = splat(T.float32(0))
            for t in range(nt):
                for m in T.unroll(m_rows):
                    for v in T.unroll(rb * 2):
                        acc[m, vec(v * V)] = splat(T.int32(0))
                for i in range(bits):
                    weight = splat(T.Cast("int8", T.shift_left(1, i)), step)
                    for qd in range(qpg):
                        for b in T.unroll(rb):
                            for h in T.unroll(64 // step):
                                wv = w[task * rb + b, t, i, qd, vec(h * step, step)]
                                sel = T.Cast(f"uint8x{step}", (vec(0, step) & splat(3, step)) << splat(4, step))
                                lo = T.reinterpret(f"int8x{step}", (wv & splat(T.uint8(15), step)) | sel)
                                hi = T.reinterpret(f"int8x{step}", (wv >> splat(T.uint8(4), step)) | sel)
                                for m in T.unroll(m_rows):
                                    quad = t * qpg + qd
                                    low_rows = T.meta_var(vec(b * 32 + h * lanes, lanes))
                                    high_rows = T.meta_var(vec(b * 32 + 16 + h * lanes, lanes))
                                    acc[m, low_rows] = dot4(acc[m, low_rows], weight, lookup(tq, m, quad, lo))
                                    acc[m, high_rows] = dot4(acc[m, high_rows], weight, lookup(tq, m, quad, hi))
                for m in T.unroll(m_rows):
                    for v in T.unroll(rb * 2):
                        rows = T.meta_var(vec(task * rb * 32 + v * V))
                        total = splat(half_scale[m]) * T.Cast("float32x16", acc[m, vec(v * V)])
                        offset = (splat(T.float32(half_levels)) - z[t, rows]) * splat(xs[m, t])
                        yacc[m, vec(v * V)] = yacc[m, vec(v * V)] + s[t, rows] * (total + offset)
            for m in T.unroll(m_rows):
                for v in T.unroll(rb * 2):
                    y[m, vec(task * rb * 32 + v * V)] = yacc[m, vec(v * V)]

    return lut


def lut_f32_func(geom: Geometry, batch: int, row_blocks: int, variant: Variant) -> tvm.tirx.PrimFunc:
    """float32-table kernel; each parallel task handles ``row_blocks`` blocks of 16 rows."""
    k, nt, cg, cgp = _geometry_constants(geom, "lut_f32")
    m_rows, bits, rb = batch, geom.bits, row_blocks
    np_rows = geom.padded_rows("lut_f32")
    nb, co, opg = np_rows // V, nt * cgp // 8, cgp // 8
    lanes, lookup = variant.lanes, variant.lookup_f32

    @T.prim_func
    def lut(
        x: T.Buffer((m_rows, k), "float32"),
        w: T.Buffer((nb, nt, bits, opg, V), "int32"),
        s: T.Buffer((nt, np_rows), "float32"),
        z: T.Buffer((nt, np_rows), "float32"),
        y: T.Buffer((m_rows, np_rows), "float32"),
    ):
        T.func_attr({"global_symbol": "lut", "tirx.noalias": True})
        tf = T.alloc_buffer((m_rows, co * 8, ENTRIES), "float32")
        xs = T.alloc_buffer((m_rows, nt), "float32")
        xc = T.alloc_buffer((CHUNK,), "float32")

        for m in range(m_rows):
            for t in range(nt):
                xs[m, t] = T.float32(0)
                for cc in range(cgp):
                    for j in T.unroll(CHUNK):
                        col = (t * cg + cc) * CHUNK + j
                        xc[j] = T.if_then_else(cc < cg and col < k, x[m, T.min(col, k - 1)], T.float32(0))
                    xs[m, t] = xs[m, t] + xc[0] + xc[1] + xc[2] + xc[3]
                    tv = splat(T.float32(0))
                    for j in T.unroll(CHUNK):
                        bit = T.Cast("float32x16", (vec(0) >> splat(j)) & splat(1))
                        tv = tv + splat(xc[j]) * bit
                    tf[m, t * cgp + cc, vec(0)] = tv
        for task in T.parallel(nb // rb):
            acc = T.alloc_buffer((m_rows, rb * V), "float32", scope="local")
            yacc = T.alloc_buffer((m_rows, rb * V), "float32", scope="local")
            for m in T.unroll(m_rows):
                for b in T.unroll(rb):
                    yacc[m, vec(b * V)] = splat(T.float32(0))
            for t in range(nt):
                for m in T.unroll(m_rows):
                    for b in T.unroll(rb):
                        acc[m, vec(b * V)] = splat(T.float32(0))
                for i in range(bits):
                    weight = splat(T.Cast("float32", T.shift_left(1, i)), lanes)
                    for o in range(opg):
                        for b in T.unroll(rb):
                            for h in T.unroll(V // lanes):
                                wv = w[task * rb + b, t, i, o, vec(h * lanes, lanes)]
                                for q in T.unroll(8):
                                    idx = wv >> splat(q * 4, lanes)
                                    for m in T.unroll(m_rows):
                                        rows = T.meta_var(vec(b * V + h * lanes, lanes))
                                        entry = lookup(tf, m, (t * opg + o) * 8 + q, idx)
                                        acc[m, rows] = acc[m, rows] + entry * weight
                for m in T.unroll(m_rows):
                    for b in T.unroll(rb):
                        rows = T.meta_var(vec((task * rb + b) * V))
                        part = acc[m, vec(b * V)] - z[t, rows] * splat(xs[m, t])
                        yacc[m, vec(b * V)] = yacc[m, vec(b * V)] + s[t, rows] * part
            for m in T.unroll(m_rows):
                for b in T.unroll(rb):
                    y[m, vec((task * rb + b) * V)] = yacc[m, vec(b * V)]

    return lut
