"""Ternary weights in the style of BitNet b1.58 (Ma et al., 2024): ``absmean`` quantization.

Every weight becomes one of ``{-1, 0, +1}`` times a scale ``gamma = mean |W|``:
``code = clamp(rint(W / gamma), -1, 1)``. The BitNet paper takes ``gamma`` over the whole
tensor; the IR's ``dequantize`` has per-row and per-group scales, so here ``gamma`` is taken
over each group of the grid along K, or over each output row when ``group = 0`` (a finer scale
than BitNet's, which only helps a model that was not trained ternary). Codes are stored as 2-bit
signed integers (a symmetric 2-bit grid is exactly ``-1..1``); the information content is
``log2(3) ~ 1.58`` bits per weight. Scales are rounded to f16 before codes are computed.
"""

from __future__ import annotations

import math

import numpy as np

from llmc.compiler.quant.grid import Grid, Quantized, to_codes

BITS_PER_WEIGHT = math.log2(3)


def ternary_grid(group: int) -> Grid:
    """The grid ternary codes live on: symmetric 2-bit, codes in ``[-1, 1]``."""
    return Grid(2, group, symmetric=True)


def quantize_ternary(w: np.ndarray, group: int = 0) -> Quantized:
    """Absmean-ternary ``w`` [N, K] with one scale per ``group`` columns (0: per row)."""
    grid = ternary_grid(group)
    n, k = w.shape
    span = grid.span(k)
    magnitude = np.abs(w.astype(np.float32)).reshape(n, k // span, span).mean(axis=-1)
    scales = magnitude.astype(np.float16)
    scales = np.where(scales > 0, scales, np.float16(1.0))  # all-zero groups (or below f16's range)
    return Quantized(to_codes(w, scales, None, grid), scales, None, grid)
