"""Linear layers as the matrix engine stores them: integer codes, integer group scales, zeros.

Every kind of linear layer the compressor produces (float weights, ``dequantize`` codes,
``dequantize_min`` codes with a float minimum per group, ``qlinear`` W8A8 codes, ``lut_gemm``
bit-planes, N:M sparse codes) becomes one :class:`EngineWeights`: codes [N, K], scales as
integers ``rint(scale * 2^shift)`` below ``2^scale_bits`` (so the engine's sums stay exact below
2^53), optional zero points, minimums (integers at the scales' shift) and bias. Scales that were
f16 values are stored as those (``half_scales``), half the bytes of int32.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.compiler.lut.pack import unpack_planes
from llmc.ir.ops.hw import matmul_span
from llmc.ir.ops.hw_math import ACT_FRAC, QMAX8
from llmc.ir.types import DType

MAX_SCALE_BITS = 24


@dataclass
class EngineWeights:
    """One linear layer for the accelerator. Arrays are None for a shapes-only compile."""

    n: int
    k: int
    bits: int
    group: int
    engine: str  # dsp | sparse | lut
    codes: np.ndarray | None  # [N, K] int64 (signed codes, or unsigned with zeros)
    scales: np.ndarray | None  # [N, K / group] int64
    zeros: np.ndarray | None  # [N, K / group] int64, or None
    bias: np.ndarray | None  # [N] int32 Q15.16, or None
    shift: int
    scale_bits: int
    has_zero: bool
    has_bias: bool
    sparse: tuple[int, int] | None = None  # (n, m) for N:M sparse codes
    half_scales: bool = False  # the scales came from f16 values: the tiles store those (pack.half_scale_bits)
    mins: np.ndarray | None = None  # [N, K / group] int64 minimums wm at the scales' shift, or None
    has_min: bool = False  # total = sum_g (acc_g * ws_g - X_g * wm_g), X_g the group's activation codes' sum

    @property
    def code_dtype(self) -> DType:
        return DType("uint" if self.has_zero else "int", self.bits)


def scale_bits_for(k: int, bits: int, has_zero: bool, has_min: bool = False) -> int:
    """The widest integer scale that keeps ``k`` products of int8 x code x scale (and, with minimums,
    the groups' activation sums times minimums below ``2^(scale_bits + bits)``) below 2^53."""
    return min(MAX_SCALE_BITS, 52 - (k * matmul_span(bits, has_zero, has_min)).bit_length())


def integer_scales(scales: np.ndarray | None, scale_bits: int,
                   mins: np.ndarray | None = None) -> tuple[np.ndarray | None, int]:
    """``rint(scales * 2^shift)`` with the largest shift keeping every value below 2^scale_bits; with
    ``mins``, one shift for the scales and the minimums, keeping both below 2^(scale_bits - 1)."""
    if scales is None:
        return None, scale_bits - 1
    values = [scales] if mins is None else [scales, mins]
    peak = max(float(np.abs(v.astype(np.float64)).max(initial=0.0)) for v in values)
    shift = scale_bits - 2 - (int(np.floor(np.log2(peak))) if peak > 0 else 0)
    return np.rint(scales.astype(np.float64) * 2.0**shift).astype(np.int64), shift


def integer_mins(mins: np.ndarray, scales: np.ndarray, ints: np.ndarray, shift: int, offset: int) -> np.ndarray:
    """The integer minimums ``rint(mins * 2^shift) - offset * ints`` at the scales' ``shift``, of codes stored
    ``offset`` below the ones the minimums were for (``s q - m = s (q - offset) - (m - offset s)``).
    ValueError when a scale or minimum that is not zero rounds to zero (the layer's values span more
    than one integer shift holds)."""
    low = np.rint(mins.astype(np.float64) * 2.0**shift).astype(np.int64)
    for name, v, i in (("scale", scales, ints), ("minimum", mins, low)):
        lost = (v != 0) & (i == 0)
        if lost.any():
            peak = max(float(np.abs(scales.astype(np.float64)).max()), float(np.abs(mins.astype(np.float64)).max()))
            raise ValueError(f"its scales and minimums span more than the matrix engine's integers hold at one shift: "
                             f"a {name} of {float(v[lost].flat[0]):.6g} rounds to 0 at shift {shift} beside the "
                             f"largest, {peak:.6g}")
    return low - offset * ints


def fixed_bias(bias: np.ndarray | None) -> np.ndarray | None:
    return None if bias is None else np.rint(bias.astype(np.float64) * (1 << ACT_FRAC)).astype(np.int32)


def _finish(n: int, k: int, bits: int, group: int, engine: str, codes: np.ndarray | None, scales: np.ndarray | None,
            zeros: np.ndarray | None, bias: np.ndarray | None, has_bias: bool, has_zero: bool,
            sparse: tuple[int, int] | None = None, half_scales: bool = False, mins: np.ndarray | None = None,
            has_min: bool = False, min_offset: int = 0) -> EngineWeights:
    sb = scale_bits_for(k, bits, has_zero, has_min)
    ints, shift = integer_scales(scales, sb, mins)
    low = None if mins is None or ints is None else integer_mins(mins, scales, ints, shift, min_offset)
    return EngineWeights(n, k, bits, group, engine, codes, ints, zeros, fixed_bias(bias), shift, sb, has_zero,
                         has_bias, sparse, half_scales, low, has_min)


def from_float(w: np.ndarray | None, n: int, k: int, bias: np.ndarray | None, has_bias: bool) -> EngineWeights:
    """Float weights: symmetric int8 codes per output channel (round to nearest)."""
    codes = scales = None
    if w is not None:
        w64 = w.astype(np.float64)
        scales = np.abs(w64).max(axis=1, keepdims=True) / QMAX8
        scales[scales == 0] = 1.0
        codes = np.clip(np.rint(w64 / scales), -QMAX8, QMAX8).astype(np.int64)
    return _finish(n, k, 8, k, "dsp", codes, scales, None, bias, has_bias, False)


def from_codes(codes: np.ndarray | None, scales: np.ndarray | None, zeros: np.ndarray | None, n: int, k: int,
               bits: int, group: int, bias: np.ndarray | None, has_bias: bool, has_zero: bool,
               sparse: tuple[int, int] | None, lut: bool = False, half_scales: bool = False,
               mins: np.ndarray | None = None, has_min: bool = False) -> EngineWeights:
    """Quantized codes (dequantize or qlinear weights); N:M sparse codes go to the sparse engine,
    with ``lut`` the codes go to the LUT engine, which reads unsigned codes with zero points
    (signed codes ``c`` become ``c + 2^(bits-1)`` with that zero point: the same products).
    ``half_scales``: the scales are f16 values. With ``has_min`` the codes are unsigned, read as
    ``scale * q - min`` (``mins`` float [N, K / group]): they are stored signed, ``q - 2^(bits-1)``,
    as the DSP pairs multiply them, with that offset folded into the integer minimums."""
    group = group or k
    c = None if codes is None else codes.astype(np.int64)
    z = None if zeros is None else zeros.astype(np.int64)
    min_offset = 0
    if has_min:
        if has_zero or sparse:
            raise ValueError("codes with a per-group minimum have no zero points and are not N:M sparse here")
        min_offset = 1 << (bits - 1)
        c = None if c is None else c - min_offset
    if lut and not has_zero:
        offset = 1 << (bits - 1)
        c = None if c is None else c + offset
        z = None if scales is None else np.full(scales.shape, offset, dtype=np.int64)
        has_zero = True
    engine = "lut" if lut else "sparse" if sparse else "dsp"
    return _finish(n, k, bits, group, engine, c, scales, z, bias, has_bias, has_zero, sparse, half_scales, mins,
                   has_min, min_offset)


def from_planes(planes: np.ndarray | None, scales: np.ndarray | None, zeros: np.ndarray | None, n: int, k: int,
                bits: int, g: int, group: int, half_scales: bool = False) -> EngineWeights:
    """LUT bit-planes: unsigned offset codes with their zero points, for the LUT engine."""
    codes = None if planes is None else unpack_planes(planes, k, g).astype(np.int64)
    z = None if zeros is None else zeros.astype(np.int64)
    return _finish(n, k, bits, group or k, "lut", codes, scales, z, None, False, True, None, half_scales)

