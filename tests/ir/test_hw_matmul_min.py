"""The matrix engine's per-group minimum: ``hw_matmul`` / ``hw_expert_matmul`` with ``has_min``
(``total = sum_g (acc_g * ws_g - X_g * wm_g)``, X_g the group's sum of activation codes), and the
integer scales and minimums :func:`weights.from_codes` makes of ``dequantize_min`` codes."""

from __future__ import annotations

import numpy as np
import pytest

from llmc.backends.fpga import weights as ew
from llmc.ir.ops import hw_math as hm
from llmc.ir.registry import OPS, InferError, RefContext
from llmc.ir.types import Dim, DType, TensorType

CTX = RefContext({})
I32 = DType("int", 32)


def _matmul(ins: list[np.ndarray], **attrs) -> np.ndarray:
    return OPS["hw_matmul"].ref(ins, OPS["hw_matmul"].with_defaults(attrs), CTX)[0]


def _case(rng: np.random.Generator, t: int = 6, n: int = 10, k: int = 128, group: int = 32, bits: int = 4):
    x = (rng.integers(-(1 << 31), 1 << 31, (t, k)) >> rng.integers(4, 30, (t, 1))).astype(np.int32)
    q = rng.integers(0, 1 << bits, (n, k))
    ws = rng.integers(-(1 << 20), 1 << 20, (n, k // group))
    wm = rng.integers(-(1 << 23), 1 << 23, (n, k // group))
    return x, q, ws, wm


@pytest.mark.parametrize("bits, group", [(4, 32), (5, 32), (2, 16), (8, 64)])
def test_the_minimum_is_subtracted_times_each_groups_activation_sum(bits: int, group: int) -> None:
    rng = np.random.default_rng(bits + group)
    x, q, ws, wm = _case(rng, group=group, bits=bits)
    bias = rng.integers(-(1 << 20), 1 << 20, q.shape[0]).astype(np.int32)
    got = _matmul([x, q, ws, wm, bias], group=group, shift=20, scale_bits=21, has_min=True, has_bias=True)
    xq, xs = hm.quant8(x, x.shape[1])
    total = np.zeros((x.shape[0], q.shape[0]), dtype=np.int64)
    for r in range(x.shape[0]):  # one row, one column, one group at a time, in Python integers
        for j in range(q.shape[0]):
            for g in range(q.shape[1] // group):
                part = slice(g * group, (g + 1) * group)
                xg = [int(v) for v in xq[r, part]]
                total[r, j] += sum(a * int(b) for a, b in zip(xg, q[j, part])) * int(ws[j, g]) - sum(xg) * int(wm[j, g])
    want = hm.saturate(hm.requantize(total, xs, 20).astype(np.int64) + bias[None, :])
    np.testing.assert_array_equal(got, want)


def test_codes_stored_signed_with_the_offset_in_the_minimum_give_the_same_result() -> None:
    """``s q - m = s (q - 8) - (m - 8 s)``: the signed nibbles the DSP pairs multiply, bit for bit."""
    rng = np.random.default_rng(1)
    x, q, ws, wm = _case(rng)
    unsigned = _matmul([x, q, ws, wm], group=32, shift=24, scale_bits=21, has_min=True)
    signed = _matmul([x, q - 8, ws, wm - 8 * ws], group=32, shift=24, scale_bits=21, has_min=True)
    np.testing.assert_array_equal(signed, unsigned)
    assert np.abs(unsigned).max() > 0


def test_expert_matmul_with_minimums_is_each_row_through_its_expert() -> None:
    rng = np.random.default_rng(2)
    x = (rng.integers(-(1 << 31), 1 << 31, (5, 64)) >> 8).astype(np.int32)
    codes, ws, wm = rng.integers(-8, 8, (3, 4, 64)), rng.integers(1, 1 << 12, (3, 4, 2)), rng.integers(-1 << 14, 1 << 14, (3, 4, 2))
    route = np.zeros((5, 2), dtype=np.int32)
    route[:, 0] = [2, 0, 2, 1, 0]
    attrs = {"slot": 0, "group": 32, "shift": 12, "scale_bits": 16, "has_min": True}
    op = OPS["hw_expert_matmul"]
    got = op.ref([x, route, codes, ws, wm], op.with_defaults(attrs), CTX)[0]
    for t, e in enumerate(route[:, 0]):
        np.testing.assert_array_equal(got[t], _matmul([x[t:t + 1], codes[e], ws[e], wm[e]], group=32, shift=12,
                                                      scale_bits=16, has_min=True)[0])


def test_infer_counts_the_minimums_and_bounds_their_sums() -> None:
    op = OPS["hw_matmul"]
    x = TensorType((Dim.sym("T"), Dim.of(4096)), I32)
    codes, groups = TensorType.of([64, 4096], DType("int", 4)), TensorType.of([64, 128], I32)
    attrs = op.with_defaults({"group": 32, "shift": 20, "scale_bits": 24, "has_min": True})
    assert op.infer([x, codes, groups, groups], attrs)[0].shape[1] == Dim.of(64)
    with pytest.raises(InferError, match="expects 4 inputs"):
        op.infer([x, codes, groups], attrs)
    with pytest.raises(InferError, match="minimums must be integers shaped like the scales"):
        op.infer([x, codes, groups, TensorType.of([64, 64], I32)], attrs)
    # 4096 * 127 * (8 + 16) < 2^24: the 24 bits scales have without minimums; 2^17 columns cost one
    assert ew.scale_bits_for(4096, 4, False, True) == 24
    assert ew.scale_bits_for(1 << 17, 4, False, True) == 23 < ew.scale_bits_for(1 << 17, 4, False)
    with pytest.raises(InferError, match="stay below 2"):
        op.infer([x, codes, groups, groups], {**attrs, "scale_bits": 30})


def test_engine_weights_of_dequantize_min_codes() -> None:
    """One shift for the scales and the minimums; the codes stored as q - 2^(bits-1) and the minimums
    ``rint(m 2^shift) - 2^(bits-1) ws``; the engine's product near the float one of ``s q - m``."""
    rng = np.random.default_rng(3)
    n, k, group = 24, 256, 32
    q = rng.integers(0, 16, (n, k))
    s = (rng.uniform(0.5, 2.0, (n, k // group)) * 1e-3).astype(np.float32)
    m = (rng.uniform(0.0, 8.0, (n, k // group)) * 2e-3).astype(np.float32)  # minimums larger than the scales
    w = ew.from_codes(q, s, None, n, k, 4, group, None, False, False, None, mins=m, has_min=True)
    assert w.has_min and str(w.code_dtype) == "i4" and w.codes.min() >= -8 and w.codes.max() <= 7
    peak = max(float(s.max()), float(m.max()))
    assert 2.0 ** (w.scale_bits - 2) <= peak * 2.0**w.shift < 2.0 ** (w.scale_bits - 1)
    np.testing.assert_array_equal(w.mins, np.rint(m.astype(np.float64) * 2.0**w.shift).astype(np.int64) - 8 * w.scales)
    x = rng.standard_normal((4, k)).astype(np.float32)
    fixed = np.rint(x * 2**16).astype(np.int32)
    got = _matmul([fixed, w.codes, w.scales, w.mins], group=group, shift=w.shift, scale_bits=w.scale_bits,
                  has_min=True) / 2**16
    dense = np.repeat(s, group, axis=1) * q - np.repeat(m, group, axis=1)
    want = x @ dense.T
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()


def test_scales_and_minimums_beyond_one_shift_are_refused() -> None:
    s = np.array([[1e-9, 1.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="a scale of 1e-09 rounds to 0"):
        ew.from_codes(np.zeros((1, 64)), s, None, 1, 64, 4, 32, None, False, False, None, mins=np.zeros_like(s),
                      has_min=True)
