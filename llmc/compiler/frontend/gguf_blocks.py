"""The GGUF block types whose codes llmc keeps, and the codes, scales and minimums of their blocks.

Each kept type has a :class:`Form`: the code width, the weights per scale, the scale's dtype and,
for the types that subtract a per-block minimum, the minimum's dtype. The float32 arithmetic of
the IR op that reads a form is the arithmetic of gguf's (and ggml's CPU) dequantization, so the
IR's weights are the file's bit for bit:

- signed codes, ``dequantize``: ``float32(q) * scale``; Q8_0, Q4_0, Q5_0 (f16 ``d``), Q6_K and
  Q3_K (f32 ``d * sc``, an f16 times a 6- or 8-bit integer: exact in f32, not in f16);
- unsigned codes with a minimum, ``dequantize_min``: ``scale * q - min``; Q4_1 and Q5_1 (f16
  ``d`` and ``-m``: gguf adds ``m``, and subtracting ``-m`` is the same IEEE operation), Q2_K,
  Q4_K and Q5_K (f32 ``d * sc`` and ``dmin * m`` per sub-block, both exact in f32).

The unpacking below follows ``gguf.quants`` (block layouts as llama.cpp's ``ggml-common.h``).
"""

from __future__ import annotations

from dataclasses import dataclass

import gguf
import numpy as np

from llmc.ir.types import F16, F32, DType, QuantEncoding

Q = gguf.GGMLQuantizationType


@dataclass(frozen=True)
class Form:
    """How llmc keeps a block type: ``bits``-wide codes, one scale (and minimum) per ``group``
    weights; ``min_dtype`` None means signed codes without a minimum."""

    bits: int
    group: int
    scale_dtype: DType
    min_dtype: DType | None = None

    @property
    def encoding(self) -> QuantEncoding:
        return QuantEncoding(self.bits, self.group, self.scale_dtype, self.min_dtype is None, None, self.min_dtype)


KEPT: dict[Q, Form] = {
    Q.Q4_0: Form(4, 32, F16), Q.Q4_1: Form(4, 32, F16, F16), Q.Q5_0: Form(5, 32, F16), Q.Q5_1: Form(5, 32, F16, F16),
    Q.Q8_0: Form(8, 32, F16), Q.Q2_K: Form(2, 16, F32, F32), Q.Q3_K: Form(3, 16, F32), Q.Q4_K: Form(4, 32, F32, F32),
    Q.Q5_K: Form(5, 32, F32, F32), Q.Q6_K: Form(6, 16, F32),
}


def _f16(raw: np.ndarray) -> np.ndarray:
    """Two bytes per block as float16 [blocks]."""
    return np.ascontiguousarray(raw).view(np.float16)[:, 0]


def _nibbles(qs: np.ndarray, chunks: int) -> np.ndarray:
    """4-bit codes of ``qs`` in ``chunks`` runs of w bytes: byte j of a run holds its element j
    (low nibble) and element j + w (high). Q4_1 / Q5_1: one run of 16; Q4_K / Q5_K: four of 32."""
    width = qs.shape[1] // chunks
    runs = qs.reshape(-1, chunks, 1, width) >> np.array([0, 4], dtype=np.uint8).reshape(1, 1, 2, 1)
    return (runs & np.uint8(0x0F)).reshape(qs.shape[0], -1)


def _bit_planes(raw: np.ndarray, planes: int) -> np.ndarray:
    """Bit ``p`` of byte j of ``raw`` [blocks, 32] is element p * 32 + j (Q3_K's and Q5_K's high bits)."""
    bits = raw.reshape(-1, 1, 32) >> np.arange(planes, dtype=np.uint8).reshape(1, planes, 1)
    return (bits & np.uint8(1)).reshape(raw.shape[0], -1)


def _crumbs(qs: np.ndarray) -> np.ndarray:
    """2-bit codes of 64 bytes: byte 32 * h + j holds elements 128 * h + 32 * s + j at bits 2 * s."""
    runs = qs.reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    return (runs & np.uint8(3)).reshape(qs.shape[0], -1)


def min_blocks(qtype: Q, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unsigned codes (uint8 [B, block]), scales and minimums ([B, block / group]) of ``blocks``
    [B, type size] of a type with a per-block minimum, such that ``scales * codes - mins`` per group
    is gguf's dequantization."""
    f32 = np.float32
    if qtype in (Q.Q4_1, Q.Q5_1):
        d, m = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
        if qtype == Q.Q4_1:
            codes = _nibbles(blocks[:, 4:20], 1)
        else:  # bit j of the little-endian word qh is element j's fifth bit
            high = np.unpackbits(blocks[:, 4:8], axis=1, bitorder="little")
            codes = _nibbles(blocks[:, 8:24], 1) | (high << np.uint8(4))
        return codes, d[:, None], -m[:, None]
    if qtype == Q.Q2_K:
        sc, qs = blocks[:, 0:16], blocks[:, 16:80]
        d, dmin = _f16(blocks[:, 80:82]).astype(f32), _f16(blocks[:, 82:84]).astype(f32)
        scales = d[:, None] * (sc & np.uint8(0x0F)).astype(f32)
        mins = dmin[:, None] * (sc >> np.uint8(4)).astype(f32)
        return _crumbs(qs), scales, mins
    if qtype in (Q.Q4_K, Q.Q5_K):
        d, dmin = _f16(blocks[:, 0:2]).astype(f32), _f16(blocks[:, 2:4]).astype(f32)
        sc, m = gguf.quants.Q4_K.get_scale_min(np.ascontiguousarray(blocks[:, 4:16]))
        if qtype == Q.Q4_K:
            codes = _nibbles(blocks[:, 16:144], 4)
        else:
            codes = _nibbles(blocks[:, 48:176], 4) | (_bit_planes(blocks[:, 16:48], 8) << np.uint8(4))
        return codes, d[:, None] * sc.astype(f32), dmin[:, None] * m.astype(f32)
    raise ValueError(f"{qtype.name} has no per-block minimum")


def q3_k_blocks(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q3_K's signed codes (int8 [B, 256], -4..3: the two low bits minus 4 where the high bit is
    clear) and f32 scales ``d * (sc - 32)`` of every 16 weights ([B, 16])."""
    hmask, qs, packed = blocks[:, 0:32], blocks[:, 32:96], blocks[:, 96:108]
    d = _f16(blocks[:, 108:110]).astype(np.float32)
    low = (packed[:, None, 0:8] >> np.array([0, 4], dtype=np.uint8).reshape(1, 2, 1)).reshape(-1, 16)
    high = (packed[:, None, 8:12] >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 4, 1)).reshape(-1, 16)
    sc = (low & np.uint8(0x0F)) | ((high & np.uint8(3)) << np.uint8(4))
    scales = d[:, None] * (sc.astype(np.int8) - np.int8(32)).astype(np.float32)
    codes = _crumbs(qs).astype(np.int8) - ((_bit_planes(hmask, 8) ^ np.uint8(1)) << np.uint8(2)).astype(np.int8)
    return codes, scales
