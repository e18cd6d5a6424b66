"""Integer grids: per-group scales (and zero points), rounding to codes, and dequantization.

A weight ``W`` [N, K] is split along K into groups of ``group`` columns (0: one group per row).
Symmetric grids use signed codes in ``[-(2^(b-1)-1), 2^(b-1)-1]`` and ``scale = max|w| / qmax``;
asymmetric grids use unsigned codes in ``[0, 2^b-1]`` with an integer zero point. Scales are
rounded to their storage dtype (f16) before codes are computed, so that the codes are exactly the
ones the hardware's stored scales reproduce.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Grid:
    bits: int
    group: int = 128
    symmetric: bool = True

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be 2..8, got {self.bits}")
        if self.group < 0:
            raise ValueError(f"group must be >= 0, got {self.group}")

    @property
    def qmin(self) -> int:
        return -((1 << (self.bits - 1)) - 1) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.symmetric else (1 << self.bits) - 1

    def span(self, k: int) -> int:
        """Columns per group for K columns."""
        span = self.group or k
        if k % span:
            raise ValueError(f"group size {span} does not divide K={k}")
        return span


@dataclass
class Quantized:
    """Codes [N, K] (int32), scales [N, G] (float16) and zero points [N, G] (uint8, or None)."""

    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray | None
    grid: Grid

    def dequantize(self) -> np.ndarray:
        """Exactly the IR's ``dequantize``: ``(codes - zero) * float32(scale)`` per group."""
        span = self.grid.span(self.codes.shape[1])
        codes = self.codes.astype(np.int64)
        if self.zeros is not None:
            codes = codes - np.repeat(self.zeros.astype(np.int64), span, axis=1)
        return codes.astype(np.float32) * np.repeat(self.scales.astype(np.float32), span, axis=1)


def group_params(w: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray | None]:
    """Scales (f16, rounded) and zero points for each row-group of ``w`` [N, span] or [N, K]."""
    n, k = w.shape
    span = grid.span(k)
    g = w.reshape(n, k // span, span).astype(np.float32)
    if grid.symmetric:
        scale = np.abs(g).max(axis=-1) / np.float32(grid.qmax)
        scale = np.where(scale > 0, scale, 1.0).astype(np.float16)
        return scale, None
    lo, hi = np.minimum(g.min(axis=-1), 0), np.maximum(g.max(axis=-1), 0)
    scale = ((hi - lo) / np.float32(grid.qmax)).astype(np.float16)
    scale = np.where(scale > 0, scale, np.float16(1.0))
    zero = np.clip(np.rint(-lo / scale.astype(np.float32)), 0, grid.qmax).astype(np.uint8)
    return scale, zero


def to_codes(w: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, grid: Grid) -> np.ndarray:
    """Round ``w`` onto the grid given per-group scales and zeros (broadcast along groups)."""
    span = w.shape[1] // scales.shape[1]
    s = np.repeat(scales.astype(np.float32), span, axis=1)
    q = np.rint(w.astype(np.float32) / s)
    if zeros is not None:
        q = q + np.repeat(zeros.astype(np.float32), span, axis=1)
    return np.clip(q, grid.qmin, grid.qmax).astype(np.int32)


def quantize_rtn(w: np.ndarray, grid: Grid) -> Quantized:
    """Round-to-nearest quantization of ``w`` [N, K]."""
    scales, zeros = group_params(w, grid)
    return Quantized(to_codes(w, scales, zeros, grid), scales, zeros, grid)
