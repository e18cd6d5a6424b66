"""The accelerator's arithmetic, defined once in NumPy: what the HLS header library computes.

Rules that make the C++ kernels and this reference agree bit for bit:

- activations are int32 fixed point with :data:`ACT_FRAC` fractional bits (Q15.16);
- reductions (dot products, sums of squares, softmax sums) are exact integer sums, so their order
  does not matter;
- per-element scalar math is IEEE float32 ``+ - * /`` and ``sqrt`` in the order written (no fused
  multiply-add), conversions as stated; transcendental functions come from :func:`exp2_f32`, a
  257-entry table with linear interpolation, never from a math library;
- rounding is half to even (``rint``) for floats and half away from zero for integer division,
  results saturate to int32.
"""

from __future__ import annotations

import numpy as np

ACT_FRAC = 16
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
F32_INT32_MAX = np.float32(2147483520.0)  # the largest float32 below 2^31
LOG2E = np.float32(1.4426950408889634)
GELU_2U = np.float32(1.5957691216057308)  # 2 sqrt(2 / pi): gelu_tanh(x) = x * sigmoid(GELU_2U * (x + GELU_CUBIC x^3))
GELU_CUBIC = np.float32(0.044715)
# erf(a) ~ 1 - poly(t) exp(-a^2), t = 1 / (1 + ERF_P a), a >= 0: Abramowitz & Stegun 7.1.26, |error| <= 1.5e-7
ERF_P = np.float32(0.3275911)
ERF_A = tuple(np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429))
INV_SQRT2 = np.float32(0.7071067811865476)


def tanh_f32(a: np.ndarray) -> np.ndarray:
    """tanh of float32 ``a`` in float32 steps: ``e = exp2_f32(-2 |a| log2 e)``,
    ``r = (1 - e) / (1 + e)``, the sign of ``a`` (soft-capping)."""
    a = np.asarray(a, dtype=np.float32)
    e = exp2_f32((np.float32(-2) * np.abs(a) * LOG2E).astype(np.float32))
    r = ((np.float32(1) - e).astype(np.float32) / (np.float32(1) + e).astype(np.float32)).astype(np.float32)
    return np.where(a < 0, -r, r).astype(np.float32)


def erf_f32(z: np.ndarray) -> np.ndarray:
    """erf of float32 ``z`` in float32 steps: ``a = |z|``, ``t = 1 / (1 + ERF_P a)``,
    ``poly = ((((A5 t + A4) t + A3) t + A2) t + A1) t``, ``r = 1 - poly * exp2_f32(-(a a) log2 e)``,
    the sign of ``z``."""
    z = np.asarray(z, dtype=np.float32)
    a = np.abs(z)
    t = (np.float32(1) / (np.float32(1) + (ERF_P * a).astype(np.float32))).astype(np.float32)
    poly = ERF_A[4]
    for coefficient in ERF_A[3::-1]:
        poly = ((poly * t).astype(np.float32) + coefficient).astype(np.float32)
    poly = (poly * t).astype(np.float32)
    e = exp2_f32((-(a * a).astype(np.float32) * LOG2E).astype(np.float32))
    r = (np.float32(1) - (poly * e).astype(np.float32)).astype(np.float32)
    return np.where(z < 0, -r, r).astype(np.float32)
EXP2_STEPS = 256  # table entries per octave
QMAX8 = 127


def exp2_table() -> np.ndarray:
    """``T[i] = 2^(i / 256)`` for i = 0..256, float32 (rendered into the C++ header as well)."""
    return np.exp2(np.arange(EXP2_STEPS + 1, dtype=np.float64) / EXP2_STEPS).astype(np.float32)


_EXP2 = exp2_table()


def exp2_f32(y: np.ndarray) -> np.ndarray:
    """``2^y`` for float32 ``y``: 0 below -126, +inf from 128, else
    ``ldexp(T[i] + (T[i+1] - T[i]) * t, n)`` with ``n = floor(y)``, ``u = (y - n) * 256``,
    ``i = min(trunc(u), 255)``, ``t = u - i``."""
    y = np.asarray(y, dtype=np.float32)
    low, high = y < np.float32(-126), y >= np.float32(128)
    safe = np.where(low | high, np.float32(0), y).astype(np.float32)
    n = np.floor(safe).astype(np.float32)
    u = ((safe - n) * np.float32(EXP2_STEPS)).astype(np.float32)
    i = np.minimum(u.astype(np.int32), EXP2_STEPS - 1)  # y just below an integer rounds u up to 256
    t = (u - i.astype(np.float32)).astype(np.float32)
    lo = _EXP2[i]
    v = (lo + ((_EXP2[i + 1] - lo) * t).astype(np.float32)).astype(np.float32)
    out = np.ldexp(v, n.astype(np.int32)).astype(np.float32)
    out = np.where(low, np.float32(0), out)
    return np.where(high, np.float32(np.inf), out).astype(np.float32)


def saturate(x: np.ndarray) -> np.ndarray:
    """Clamp integers to int32."""
    return np.clip(np.asarray(x, dtype=np.int64), INT32_MIN, INT32_MAX).astype(np.int32)


def to_fixed(y: np.ndarray) -> np.ndarray:
    """float32 values already in fixed-point units to int32: ``rint``, saturated."""
    r = np.rint(np.asarray(y, dtype=np.float32))
    r = np.clip(np.nan_to_num(r, nan=0.0), np.float32(INT32_MIN), F32_INT32_MAX)
    return r.astype(np.int32)


def fixed_to_f32(x: np.ndarray) -> np.ndarray:
    """int32 Q15.16 to its float32 value: ``float32(x) * 2^-16``."""
    return (np.asarray(x, dtype=np.int32).astype(np.float32) * np.float32(2.0**-ACT_FRAC)).astype(np.float32)


def div_round(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a / b`` for integers, ``b > 0``, rounded half away from zero."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    mag = (2 * np.abs(a) + b) // (2 * b)
    return np.where(a < 0, -mag, mag)


def shift_round(a: np.ndarray, n: int) -> np.ndarray:
    """``a / 2^n`` rounded half up (``(a + 2^(n-1)) >> n``), int64."""
    a = np.asarray(a, dtype=np.int64)
    return (a + (1 << (n - 1))) >> n if n > 0 else a


def quant8(x: np.ndarray, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 codes of int32 fixed-point ``x`` per ``group`` columns of the last axis:
    ``s = max(1, ceil(max|x| / 127))`` (int32, fixed-point units), ``codes = div_round(x, s)``.
    Returns codes [..., K] int8 and scales [..., K / group] int32."""
    x = np.asarray(x, dtype=np.int64)
    k = x.shape[-1]
    grouped = x.reshape(x.shape[:-1] + (k // group, group))
    amax = np.abs(grouped).max(axis=-1, keepdims=True)
    scale = np.maximum(1, (amax + QMAX8 - 1) // QMAX8)
    codes = np.clip(div_round(grouped, scale), -QMAX8, QMAX8)
    return codes.reshape(x.shape).astype(np.int8), scale[..., 0].astype(np.int32)


def requantize(total: np.ndarray, x_scale: np.ndarray, shift: int) -> np.ndarray:
    """Matrix-engine output stage: ``rint(float32(float64(total)) * (float32(x_scale) * 2^-shift))``
    saturated to int32. ``total`` is the exact int64 sum (below 2^53)."""
    factor = (np.asarray(x_scale).astype(np.float32) * np.float32(2.0**-shift)).astype(np.float32)
    y = (np.asarray(total, dtype=np.int64).astype(np.float64).astype(np.float32) * factor).astype(np.float32)
    return to_fixed(y)
