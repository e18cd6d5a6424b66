"""The LUT-mpGEMM kernel variants: one record per instruction set, chosen from the target's features.

A variant gives the LUT kernels (``lut_kernels.py``) their two inner operations, as TVMScript
helpers evaluated while the kernel is parsed:

- ``lookup(tables, m, quad, index)``: int8-table lookup of ``step`` index bytes. The 64-byte table
  row ``tables[m, quad]`` holds four chunks' 16-entry tables; index byte ``4r + q`` reads chunk
  ``q``'s table at its low nibble (bits 4-5 carry ``q``, as ``vpermb`` reads them).
  ``dot4(acc, weight, looked)`` then adds ``weight * (sum of each 4 adjacent bytes)`` into
  ``step / 4`` int32 lanes, so one lane gathers the four chunks of one output row.
- ``lookup_f32(tables, m, slot, index)``: ``tables[m, slot, index & 15]`` for ``lanes`` int32
  indices (only bits 0-3 of each index count).

Every variant computes the same integers and the same float operations in the same order, so the
variants agree bit for bit. ``VARIANTS`` lists them by preference; :func:`choose` takes the first
whose architecture and LLVM features the target has. ``portable`` has no intrinsics (gathers and
shuffles LLVM lowers for any CPU) and always applies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tvm
from tvm.script import tirx as T
from tvm.target import codegen

from llmc.errors import LlmcError

from ._tir import splat, vec


def _x86(name: str, dtype: str, *args: object) -> object:
    return T.call_llvm_pure_intrin(dtype, f"llvm.x86.{name}", *args)


def _arm(name: str, dtype: str, *args: object) -> object:
    return T.call_llvm_pure_intrin(dtype, f"llvm.aarch64.neon.{name}", *args)


def _row_weights(weight: object) -> object:
    """The plane weight of each of the four int32 rows of a 16-byte ``weight`` splat."""
    return T.Cast("int32x4", T.Shuffle([weight], [0, 4, 8, 12]))


def _lane_mask(step: int, q: int) -> object:
    """int8 mask, 0 on bytes ``4r + q`` and -128 elsewhere (``pshufb`` writes 0 where bit 7 is set)."""
    own = (vec(0, step) & splat(3, step)) == splat(q, step)
    return T.Select(own, splat(T.int8(0), step), splat(T.int8(-128), step))


# -- AVX-512 (VBMI, VNNI): the 64-byte table in one register -----------------------------------------------
def _avx512_lookup(tables: object, m: object, quad: object, index: object) -> object:
    return _x86("avx512.permvar.qi.512", "int8x64", tables[m, quad, vec(0, 64)], index)


def _avx512_dot4(acc: object, weight: object, looked: object) -> object:
    return _x86("avx512.vpdpbusd.512", "int32x16", acc, weight, looked)


def _avx512_lookup_f32(tables: object, m: object, slot: object, index: object) -> object:
    return _x86("avx512.permvar.sf.512", "float32x16", tables[m, slot, vec(0)], index)


# -- AVX2: pshufb looks up 16 entries per 128-bit lane ---------------------------------------------------------
def _avx2_lookup(tables: object, m: object, quad: object, index: object) -> object:
    """Four ``vpshufb``, one per chunk (each chunk table read as 16 bytes, then in both lanes), each
    masked to its own bytes, ORed together."""
    looked = None
    for q in range(4):
        table = tables[m, quad, vec(q * 16, 16)]
        both = T.Shuffle([table, table], list(range(16)) * 2)
        part = _x86("avx2.pshuf.b", "int8x32", both, index | _lane_mask(32, q))
        looked = part if looked is None else looked | part
    return looked


def _avx2_dot4(acc: object, weight: object, looked: object) -> object:
    """``vpmaddubsw`` (u8 x s8, pairs to int16: at most 2 * 8 * 127) then ``vpmaddwd`` by ones."""
    pairs = _x86("avx2.pmadd.ub.sw", "int16x16", weight, looked)
    return acc + _x86("avx2.pmadd.wd", "int32x8", pairs, splat(T.int16(1), 16))


def _avx2_lookup_f32(tables: object, m: object, slot: object, index: object) -> object:
    """Two ``vpermps`` over the table's halves (index bits 0-2), selected by bit 3."""
    low = _x86("avx2.permps", "float32x8", tables[m, slot, vec(0, 8)], index)
    high = _x86("avx2.permps", "float32x8", tables[m, slot, vec(8, 8)], index)
    return T.Select((index & splat(8, 8)) != splat(0, 8), high, low)


# -- ARM NEON: tbl over four registers reads a 64-byte table ----------------------------------------------------
def _neon_lookup(tables: object, m: object, quad: object, index: object) -> object:
    parts = [tables[m, quad, vec(16 * j, 16)] for j in range(4)]
    return _arm("tbl4.v16i8", "int8x16", *parts, index)


def _neon_sdot(acc: object, weight: object, looked: object) -> object:
    return _arm("sdot.v4i32.v16i8", "int32x4", acc, weight, looked)


def _neon_dot4(acc: object, weight: object, looked: object) -> object:
    """Without ``sdot``: two pairwise widening adds (``saddlp``), then times the plane weight."""
    pairs = _arm("saddlp.v8i16.v16i8", "int16x8", looked)
    quads = _arm("saddlp.v4i32.v8i16", "int32x4", pairs)
    return acc + quads * _row_weights(weight)


def _neon_lookup_f32(tables: object, m: object, slot: object, index: object) -> object:
    """``tbl`` on the 64 bytes of the float table: byte ``4e + j`` of entry ``e``."""
    parts = [T.reinterpret("int8x16", tables[m, slot, vec(4 * j, 4)]) for j in range(4)]
    entry = (index & splat(15, 4)) * splat(0x04040404, 4) + splat(0x03020100, 4)
    return T.reinterpret("float32x4", _arm("tbl4.v16i8", "int8x16", *parts, T.reinterpret("int8x16", entry)))


# -- portable: gathers and shuffles ---------------------------------------------------------------------------------
def _portable_lookup(tables: object, m: object, quad: object, index: object) -> object:
    return tables[m, quad, T.Cast("int32x16", index & splat(T.int8(63), 16))]


def _portable_dot4(acc: object, weight: object, looked: object) -> object:
    wide = T.Cast("int32x16", looked)
    total = T.Shuffle([wide], [0, 4, 8, 12])
    for j in range(1, 4):
        total = total + T.Shuffle([wide], [j, 4 + j, 8 + j, 12 + j])
    return acc + total * _row_weights(weight)


def _portable_lookup_f32(tables: object, m: object, slot: object, index: object) -> object:
    return tables[m, slot, index & splat(15, 4)]


@dataclass(frozen=True)
class Variant:
    """One instruction set's LUT kernels: ``step`` index bytes per int8 lookup, ``lanes`` per float one,
    and ``register_rows`` output rows whose 32-bit accumulators fit in half the vector registers
    (what sizes a task's row block, so that accumulators stay in registers)."""

    name: str
    arch: str  # "x86", "aarch64", or "any"
    features: tuple[str, ...]  # LLVM features the target must have
    step: int
    lanes: int
    register_rows: int
    lookup: Callable[..., object]
    dot4: Callable[..., object]
    lookup_f32: Callable[..., object]
    summary: str

    def applies(self, target: tvm.target.Target) -> bool:
        """Whether ``target``'s architecture and features admit this variant."""
        return self.arch in ("any", target_arch(target)) and all(
            codegen.llvm_cpu_has_features([f], target) for f in self.features)

    def missing(self, target: tvm.target.Target) -> list[str]:
        """The LLVM features ``target`` lacks for this variant."""
        return [f for f in self.features if not codegen.llvm_cpu_has_features([f], target)]


VARIANTS = (
    Variant("avx512", "x86", ("avx512f", "avx512bw", "avx512vbmi", "avx512vnni"), 64, 16, 16 * 16,
            _avx512_lookup, _avx512_dot4, _avx512_lookup_f32,
            "vpermb 64-entry lookups, vpdpbusd accumulation; vpermps float tables"),
    Variant("avx2", "x86", ("avx2",), 32, 8, 8 * 8, _avx2_lookup, _avx2_dot4, _avx2_lookup_f32,
            "vpshufb 16-entry lookups, vpmaddubsw/vpmaddwd accumulation; two vpermps float tables"),
    Variant("neon-dotprod", "aarch64", ("neon", "dotprod"), 16, 4, 16 * 4, _neon_lookup, _neon_sdot, _neon_lookup_f32,
            "tbl 64-byte lookups, sdot accumulation; tbl float tables"),
    Variant("neon", "aarch64", ("neon",), 16, 4, 16 * 4, _neon_lookup, _neon_dot4, _neon_lookup_f32,
            "tbl 64-byte lookups, saddlp accumulation; tbl float tables"),
    Variant("portable", "any", (), 16, 4, 16 * 4, _portable_lookup, _portable_dot4, _portable_lookup_f32,
            "gathers and shuffles, vectorized by LLVM for any CPU"),
)
BY_NAME = {v.name: v for v in VARIANTS}


def target_arch(target: tvm.target.Target) -> str:
    """``x86``, ``aarch64`` or the triple's architecture."""
    triple = str(target.attrs.get("mtriple", "")) or "x86_64"
    arch = triple.split("-")[0]
    return {"x86_64": "x86", "i686": "x86", "arm64": "aarch64"}.get(arch, arch)


def choose(target: tvm.target.Target, name: str = "auto") -> Variant:
    """The variant ``name`` (``auto``: the first in ``VARIANTS`` that ``target`` admits); a named one
    the target cannot run is refused in one line."""
    if name == "auto":
        return next(v for v in VARIANTS if v.applies(target))
    if name not in BY_NAME:
        raise LlmcError(f"unknown LUT kernel variant '{name}' (choose from auto, {', '.join(BY_NAME)})")
    variant = BY_NAME[name]
    if variant.arch not in ("any", target_arch(target)):
        raise LlmcError(f"the {name} LUT kernels are for {variant.arch} CPUs, this one is {target_arch(target)}: "
                        "use --lut-variant auto")
    missing = variant.missing(target)
    if missing:
        raise LlmcError(f"the {name} LUT kernels need {', '.join(variant.features) or variant.arch}; this CPU lacks "
                        f"{', '.join(missing)}: use --lut-variant auto")
    return variant
