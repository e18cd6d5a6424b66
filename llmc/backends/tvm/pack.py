"""Re-layout of docs/lut.md packed weights for the TVM CPU kernels (host side, done once offline).

Input is the reference layout of docs/lut.md: ``planes[i, n, c]`` (uint8, ``b`` bit-planes, ``g = 4``
columns per chunk, bit ``j`` of the index = bit ``i`` of the offset code of column ``c*4 + j``),
``scales[n, t]`` and integer ``zeros[n, t]`` with ``W[n, k] = (u[n, k] - z[n, t]) * s[n, t]``.

Every group is padded to a whole number of kernel steps with empty *chunk slots*: slot
``t * CGp + cc`` holds chunk ``t * CG + cc`` of the original layout when ``cc < CG`` (``CG = G / 4``
chunks per group, ``CGp`` = ``CG`` rounded up) and nothing otherwise. The kernels build their
activation tables on the same slots (padding slots get all-zero tables), so padded columns and
padded rows never contribute. Rows are padded to a multiple of the row block with zero scales.

Layouts (``NB`` = padded rows / block rows, ``NT`` groups):

- ``lut_int8``: ``w[NB, NT, b, CGp/4, 64]`` uint8 for blocks of 32 rows. Byte ``4*r + q`` of slot
  quad ``o`` of group ``t`` holds the index of row ``r`` (low nibble) and of row ``16 + r`` (high
  nibble) for slot ``t*CGp + 4*o + q``, so the four adjacent bytes that ``vpdpbusd`` sums belong to
  one row.
- ``lut_f32``: ``w[NB, NT, b, CGp/8, 16]`` int32 (uint32 bit patterns) for blocks of 16 rows;
  nibble ``q`` of the word of row ``r`` is the index of slot ``t*CGp + 8*o + q``.
- ``dequant``: plain codes ``w[Np/8, NT, Gp/(16*per), 8, 16]`` uint8 for blocks of 8 rows, with
  ``per = 8 / sb`` codes of ``sb`` bits per byte (``sb = 4`` for 3-bit codes): bits
  ``[sb*q, sb*q + sb)`` of byte ``l`` of row ``r`` in code block ``kb`` hold column
  ``kb*16*per + q*16 + l`` of group ``t`` (zero-padded to ``Gp`` columns).

Every layout keeps a row block one sequential stream in the order its kernel reads it. The LUT
layouts take scales and zeros transposed, ``[NT, Np]`` float32; the dequant layout ``[Np, NT]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

CHUNK = 4
"""Columns per table chunk (``g`` in docs/lut.md)."""

LAYOUTS = ("lut_int8", "lut_f32", "dequant")
_SLOT_ALIGN = {"lut_int8": 4, "lut_f32": 8}
_BLOCK_ROWS = {"lut_int8": 32, "lut_f32": 16}
DEQUANT_BLOCK_ROWS = 8
"""Rows interleaved in one block of the dequant layout (the rows one kernel task computes)."""


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class Geometry:
    """Shape of one quantized GEMV: ``N`` outputs, ``K`` inputs, ``bits``, group ``G`` (0 = per row)."""

    n: int
    k: int
    bits: int
    group: int

    def __post_init__(self) -> None:
        if self.n < 1 or self.k < 1:
            raise ValueError(f"n and k must be positive, got {self.n}x{self.k}")
        if not 1 <= self.bits <= 4:
            raise ValueError(f"bits must be in 1..4, got {self.bits}")
        if self.group < 0 or self.group % CHUNK:
            raise ValueError(f"group must be 0 or a positive multiple of {CHUNK}, got {self.group}")

    @property
    def group_cols(self) -> int:
        """Columns per quantization group (``K`` rounded up to a chunk for per-row groups)."""
        return self.group or _round_up(self.k, CHUNK)

    @property
    def n_groups(self) -> int:
        return -(-self.k // self.group_cols)

    @property
    def chunks(self) -> int:
        """Chunks of the docs/lut.md layout, ``ceil(K / 4)``."""
        return -(-self.k // CHUNK)

    @property
    def chunks_per_group(self) -> int:
        return self.group_cols // CHUNK

    def slots_per_group(self, layout: str) -> int:
        """Chunk slots per group of a LUT layout (chunks rounded up to the kernel step)."""
        return _round_up(self.chunks_per_group, _SLOT_ALIGN[layout])

    def padded_rows(self, layout: str) -> int:
        if layout == "dequant":
            return _round_up(self.n, DEQUANT_BLOCK_ROWS)
        return _round_up(self.n, _BLOCK_ROWS[layout])

    def slot_bits(self) -> int:
        """Bits per code slot of the dequant layout (3-bit codes take 4-bit slots)."""
        return {1: 1, 2: 2, 3: 4, 4: 4}[self.bits]

    def padded_group_cols(self) -> int:
        """Group length of the dequant layout, a multiple of the 16-lane block of codes."""
        return _round_up(self.group_cols, 16 * (8 // self.slot_bits()))


class PackedWeights(NamedTuple):
    """Kernel-layout arrays; pass them to a built kernel as ``kernel(x, *packed)``."""

    planes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray


def codes_from_planes(planes: np.ndarray, k: int) -> np.ndarray:
    """Offset codes ``u[N, K]`` (uint8) from docs/lut.md bit-planes ``[b, N, ceil(K/4)]``."""
    bits = (planes[:, :, :, None] >> np.arange(CHUNK, dtype=np.uint8)) & 1
    weights = (1 << np.arange(planes.shape[0], dtype=np.uint8))[:, None, None, None]
    u = (bits * weights).sum(axis=0, dtype=np.uint8)
    return u.reshape(planes.shape[1], -1)[:, :k]


def _slot_planes(planes: np.ndarray, geom: Geometry, layout: str) -> np.ndarray:
    """``planes`` gathered onto padded chunk slots and padded rows: ``[b, Np, Cp]``."""
    cgp = geom.slots_per_group(layout)
    cc = np.arange(cgp)
    src = np.arange(geom.n_groups)[:, None] * geom.chunks_per_group + cc
    valid = (cc < geom.chunks_per_group) & (src < geom.chunks)
    slots = np.where(valid, planes[:, :, np.where(valid, src, 0).ravel()].reshape(geom.bits, geom.n, -1, cgp), 0)
    out = np.zeros((geom.bits, geom.padded_rows(layout), slots.shape[2] * cgp), np.uint8)
    out[:, : geom.n] = slots.reshape(geom.bits, geom.n, -1)
    return out


def _pack_lut_int8(planes: np.ndarray, geom: Geometry) -> np.ndarray:
    p = _slot_planes(planes, geom, "lut_int8")
    b, rows, slots = p.shape
    p = p.reshape(b, rows // 32, 2, 16, slots // 4, 4)
    byte = p[:, :, 0] | (p[:, :, 1] << 4)  # [b, NB, 16 rows, quads, 4]
    byte = byte.reshape(b, rows // 32, 16, geom.n_groups, -1, 4)
    return np.ascontiguousarray(byte.transpose(1, 3, 0, 4, 2, 5)).reshape(rows // 32, geom.n_groups, b, -1, 64)


def _pack_lut_f32(planes: np.ndarray, geom: Geometry) -> np.ndarray:
    p = _slot_planes(planes, geom, "lut_f32").astype(np.uint32)
    b, rows, slots = p.shape
    p = p.reshape(b, rows // 16, 16, slots // 8, 8)
    word = (p << (4 * np.arange(8, dtype=np.uint32))).sum(axis=-1, dtype=np.uint32)  # [b, NB, 16, octs]
    word = word.reshape(b, rows // 16, 16, geom.n_groups, -1)
    return np.ascontiguousarray(word.transpose(1, 3, 0, 4, 2)).view(np.int32)


def _pack_dequant(codes: np.ndarray, geom: Geometry) -> np.ndarray:
    sb = geom.slot_bits()
    per = 8 // sb
    gc, gp, nt = geom.group_cols, geom.padded_group_cols(), geom.n_groups
    u = np.zeros((geom.padded_rows("dequant"), nt * gc), np.uint8)
    u[: geom.n, : geom.k] = codes
    grouped = np.zeros((u.shape[0], nt, gp), np.uint8)
    grouped[:, :, :gc] = u.reshape(u.shape[0], nt, gc)
    blocks = grouped.reshape(u.shape[0], nt, gp // (16 * per), per, 16)
    shifts = (sb * np.arange(per, dtype=np.uint8))[:, None]
    codes = (blocks << shifts).sum(axis=3, dtype=np.uint8)  # [Np, NT, NKB, 16]
    rows = DEQUANT_BLOCK_ROWS
    codes = codes.reshape(u.shape[0] // rows, rows, nt, -1, 16)
    return np.ascontiguousarray(codes.transpose(0, 2, 3, 1, 4))


def pack_for_tvm(
    planes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, geom: Geometry, layout: str
) -> PackedWeights:
    """Re-lay docs/lut.md ``planes [b, N, ceil(K/4)]``, ``scales``/``zeros [N, NT]`` for a kernel layout.

    ``layout`` is one of ``LAYOUTS`` (see the module docstring).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    expect = (geom.bits, geom.n, geom.chunks)
    if planes.shape != expect or planes.dtype != np.uint8:
        raise ValueError(f"planes must be uint8 {expect}, got {planes.dtype} {planes.shape}")
    for name, arr in (("scales", scales), ("zeros", zeros)):
        if arr.shape != (geom.n, geom.n_groups):
            raise ValueError(f"{name} must be {(geom.n, geom.n_groups)}, got {arr.shape}")
    if layout == "dequant":
        return pack_codes_for_dequant(codes_from_planes(planes, geom.k), scales, zeros, geom)
    s, z = _padded(scales, zeros, geom, layout)
    packer = _pack_lut_int8 if layout == "lut_int8" else _pack_lut_f32
    return PackedWeights(packer(planes, geom), np.ascontiguousarray(s.T), np.ascontiguousarray(z.T))


def pack_codes_for_dequant(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, geom: Geometry) -> PackedWeights:
    """The ``dequant`` layout straight from offset codes ``u [N, K]`` (no bit-planes in between)."""
    if codes.shape != (geom.n, geom.k):
        raise ValueError(f"codes must be {(geom.n, geom.k)}, got {codes.shape}")
    return PackedWeights(_pack_dequant(codes, geom), *_padded(scales, zeros, geom, "dequant"))


def _padded(scales: np.ndarray, zeros: np.ndarray, geom: Geometry, layout: str) -> tuple[np.ndarray, np.ndarray]:
    """Scales and zeros as float32 ``[Np, NT]``, zero in the padding rows."""
    rows = geom.padded_rows(layout)
    s = np.zeros((rows, geom.n_groups), np.float32)
    z = np.zeros((rows, geom.n_groups), np.float32)
    s[: geom.n] = scales
    z[: geom.n] = zeros
    return s, z
