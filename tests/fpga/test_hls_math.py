"""llmc_math.h, compiled with g++ as Vitis HLS C simulation would, against the NumPy reference bit for bit."""

from __future__ import annotations

import math
import subprocess
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

import llmc
from llmc.backends.fpga.cformat import float_literal, hexfloat, render_tables
from llmc.backends.fpga.pack import half_scale_bits, half_scale_ints
from llmc.ir.ops import hw_math as hm
from llmc.ir.registry import OPS, RefContext

INCLUDE = Path(llmc.__file__).parent / "hls_templates" / "include"
DRIVER = Path(__file__).parent / "cpp" / "math_driver.cpp"
CTX = RefContext(env={})
I32_EDGES = np.array([0, 1, -1, 2, -2, 127, -127, 128, 65535, 65536, -65536, 1 << 30, -(1 << 30),
                      hm.INT32_MAX, hm.INT32_MAX - 1, hm.INT32_MIN, hm.INT32_MIN + 1], dtype=np.int32)


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory, gxx_ap_types: tuple[str, Path]) -> Path:
    gxx, ap_types = gxx_ap_types
    folder = tmp_path_factory.mktemp("hls_math")
    (folder / "llmc_tables.h").write_text(render_tables())
    command = [gxx, "-std=c++14", "-O2", "-Wall", "-Wextra", "-Werror", "-ffp-contract=off", "-isystem", str(ap_types),
               "-I", str(folder), "-I", str(INCLUDE), str(DRIVER), "-o", str(folder / "math_driver")]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return folder / "math_driver"


def _call(driver: Path, fn: str, *args: int, inputs: tuple[np.ndarray, ...], out: str) -> np.ndarray:
    data = b"".join(np.ascontiguousarray(a).tobytes() for a in inputs)
    result = subprocess.run([str(driver), fn, *map(str, args)], input=data, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    return np.frombuffer(result.stdout, dtype=out)


def _bits(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def _random_f32(rng: np.random.Generator, n: int) -> np.ndarray:
    """Any float32 bit pattern, NaN and infinities included."""
    return rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)


def _random_i32(rng: np.random.Generator, n: int) -> np.ndarray:
    """int32 of every magnitude (log-uniform bit lengths), both signs."""
    mag = rng.integers(0, 1 << 31, n, dtype=np.int64) >> rng.integers(0, 32, n)
    return np.concatenate([I32_EDGES, np.where(rng.random(n) < 0.5, -mag, mag).astype(np.int32)])


def test_literals() -> None:
    rng = np.random.default_rng(0)
    values = _random_f32(rng, 20000)
    values = np.concatenate([values[np.isfinite(values)], np.float32([0.0, -0.0, 1.0, 2.0, 1e30, 2.0**-149])])
    for v in values:
        assert float.fromhex(hexfloat(v)[:-1]) == float(v)
        text = float_literal(v)
        assert text.endswith("f") and any(mark in text for mark in ".E")
        assert math.copysign(1, float(Decimal(text[:-1]))) == math.copysign(1, float(v))
        assert np.float32(float(Decimal(text[:-1]))) == v
    assert (hexfloat(np.float32(3.0)), float_literal(np.float32(3.0))) == ("0x1.8p+1f", "3.0f")
    with pytest.raises(ValueError):
        hexfloat(np.float32(np.inf))
    with pytest.raises(ValueError):
        float_literal(np.float32(np.nan))


def test_exp2(driver: Path) -> None:
    rng = np.random.default_rng(1)
    ints = np.arange(-130, 131, dtype=np.float32)
    near = np.concatenate([np.nextafter(ints, np.float32(np.inf)), np.nextafter(ints, np.float32(-np.inf))])
    tiny = np.float32(2.0) ** -rng.integers(0, 40, 2000).astype(np.float32) * rng.random(2000).astype(np.float32)
    y = np.concatenate([
        ints, near, rng.uniform(-140, 140, 20000).astype(np.float32), tiny, -tiny - np.float32(2.0**-24),
        np.float32([0.0, -0.0, -2.0**-24, 127.99999, np.inf, -np.inf, 1e30, -1e30]),
    ])
    got = _call(driver, "exp2", inputs=(y,), out=np.float32)
    np.testing.assert_array_equal(_bits(got), _bits(hm.exp2_f32(y)))


def test_exp2_tiny_negative(driver: Path) -> None:
    """Where y - floor(y) rounds to 1 both clamp the table index and return 2^0 = 1; the header maps NaN to 0."""
    y = np.float32([-(2.0**-25), -(2.0**-26), -1e-10, -(2.0**-149), np.nan])
    np.testing.assert_array_equal(hm.exp2_f32(y[:4]), [1, 1, 1, 1])
    np.testing.assert_array_equal(_call(driver, "exp2", inputs=(y,), out=np.float32), [1, 1, 1, 1, 0])


def test_conversions(driver: Path) -> None:
    rng = np.random.default_rng(2)
    edges = np.float32([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2147483520.0, 2147483648.0, -2147483648.0,
                        -2147483904.0, 1e10, -1e10, np.inf, -np.inf, np.nan, -0.0])
    halves = (rng.integers(-(1 << 22), 1 << 22, 5000) + 0.5).astype(np.float32)
    y = np.concatenate([edges, halves, _random_f32(rng, 20000), rng.normal(0, 1e6, 5000).astype(np.float32)])
    with np.errstate(invalid="ignore"):
        expected = hm.to_fixed(y)
    np.testing.assert_array_equal(_call(driver, "to_fixed", inputs=(y,), out=np.int32), expected)

    x = _random_i32(rng, 20000)
    got = _call(driver, "fixed_to_f32", inputs=(x,), out=np.float32)
    np.testing.assert_array_equal(_bits(got), _bits(OPS["hw_to_float"].ref([x[None]], {"cap": 0.0}, CTX)[0][0]))

    z = np.concatenate([np.float32([0.0, -0.0, 1e-30, -1e-30, 20.0, -20.0, 100.0, np.inf, -np.inf]),
                        rng.normal(0, 3, 20000).astype(np.float32)])
    got = _call(driver, "tanh", inputs=(z,), out=np.float32)  # soft-capping's tanh
    np.testing.assert_array_equal(_bits(got), _bits(hm.tanh_f32(z)))
    np.testing.assert_allclose(got, np.tanh(z.astype(np.float64)), atol=3e-6)

    wide = np.concatenate([x.astype(np.int64) << rng.integers(0, 33, x.size),
                           np.int64([1 << 31, -(1 << 31) - 1, (1 << 63) - 1, -(1 << 63)])])
    np.testing.assert_array_equal(_call(driver, "saturate", inputs=(wide,), out=np.int32), hm.saturate(wide))


def test_integer_rounding(driver: Path) -> None:
    rng = np.random.default_rng(3)
    b = rng.integers(1, 1 << 20, 20000) >> rng.integers(0, 20, 20000)
    b = np.maximum(b, 1)
    a = rng.integers(-(1 << 40), 1 << 40, 20000) >> rng.integers(0, 40, 20000)
    a[:5000] = rng.integers(-1000, 1000, 5000) * b[:5000] + b[:5000] // 2  # ties
    got = _call(driver, "div_round", inputs=(a, b), out=np.int64)
    np.testing.assert_array_equal(got, hm.div_round(a, b))

    a = np.concatenate([rng.integers(-(1 << 62), 1 << 62, 20000) >> rng.integers(0, 62, 20000),
                        np.arange(-(1 << 17), 1 << 17, 7)])
    for n in (0, 1, 16, 30):
        np.testing.assert_array_equal(_call(driver, "shift_round", n, inputs=(a,), out=np.int64), hm.shift_round(a, n))


def test_half_scales(driver: Path) -> None:
    """Every finite f16 scale becomes rint(h * 2^shift) in the kernel as in the packer and the ISS, and the
    packer finds f16 bits for the integer scales of f16 values (the nearest f16 or a neighbour at ties)."""
    finite = np.arange(0x7C00, dtype=np.uint16)
    halves = np.concatenate([finite, finite | 0x8000])
    for shift in (0, 7, 14, 24, 25, 31, 36):
        expected = np.rint(halves.view(np.float16).astype(np.float64) * 2.0**shift).astype(np.int64)
        np.testing.assert_array_equal(half_scale_ints(halves, shift), expected)
        np.testing.assert_array_equal(_call(driver, "half_scale", shift, inputs=(halves,), out=np.int64), expected)
        np.testing.assert_array_equal(half_scale_ints(half_scale_bits(expected, shift), shift), expected)
    with pytest.raises(ValueError, match="not f16 values"):
        half_scale_bits(np.int64([2049]), 0)  # 12 significant bits


def test_bit_length(driver: Path) -> None:
    powers = np.int64(1) << np.arange(63, dtype=np.int64)
    v = np.unique(np.concatenate([[0], powers, powers - 1, powers + 1, np.random.default_rng(4).integers(0, 1 << 62, 5000)]))
    got = _call(driver, "bit_length", inputs=(v,), out=np.int32)
    np.testing.assert_array_equal(got, [int(x).bit_length() for x in v])
    # hw_rms_norm's float bit length, max(0, floor(log2(max(v, 1))) + 1 - 19), over its domain |x| <= 2^31
    small = v[v <= 1 << 31]
    via_log2 = np.floor(np.log2(np.maximum(small, 1))).astype(np.int64) + 1
    np.testing.assert_array_equal(np.maximum(0, got[: small.size] - 19), np.maximum(0, via_log2 - 19))


@pytest.mark.parametrize("n, group, sum_group", [(256, 64, 0), (256, 128, 32), (128, 128, 16), (256, 256, 256)])
def test_quant8(driver: Path, n: int, group: int, sum_group: int) -> None:
    """The codes and scales, and (the matrix engine's input) the sum of the codes of every sum_group columns."""
    rng = np.random.default_rng(n + group)
    rows = 200
    x = (rng.integers(-(1 << 31), 1 << 31, (rows, n)) >> rng.integers(0, 32, (rows, 1))).astype(np.int32)
    x[0] = 0
    x[1] = hm.INT32_MIN
    x[2] = hm.INT32_MAX
    x[3, ::2] = hm.INT32_MIN
    s = rng.integers(1, 1 << 16, (20, 1))
    x[4:24] = rng.integers(-127, 127, (20, n)) * s + s // 2  # ties of x / s where s is even
    x[4:24, ::group] = 127 * s  # makes s the scale of every group
    x[24:28, :] = rng.integers(-127, 128, (4, n))
    out = _call(driver, "quant8", n, group, sum_group, inputs=(x,), out=np.uint8)
    codes, scales = hm.quant8(x, group)
    np.testing.assert_array_equal(out[: x.size].view(np.int8).reshape(codes.shape), codes)
    np.testing.assert_array_equal(out[x.size:x.size + 4 * scales.size].view(np.int32).reshape(scales.shape), scales)
    sums = out[x.size + 4 * scales.size:].view(np.int32)
    if sum_group:
        want = codes.astype(np.int64).reshape(rows, n // sum_group, sum_group).sum(axis=-1)
        np.testing.assert_array_equal(sums.reshape(want.shape), want)
    else:
        assert sums.size == 0


def test_requantize(driver: Path) -> None:
    rng = np.random.default_rng(5)
    total = rng.integers(-(1 << 53) + 1, 1 << 53, 20000) >> rng.integers(0, 53, 20000)
    total[:4] = [0, (1 << 53) - 1, -(1 << 53) + 1, 1 << 40]
    xs = np.maximum(1, rng.integers(1, 1 << 25, 20000) >> rng.integers(0, 25, 20000)).astype(np.int32)
    for shift in (0, 8, 20, 32, 48):
        got = _call(driver, "requantize", shift, inputs=(total, xs), out=np.int32)
        np.testing.assert_array_equal(got, hm.requantize(total, xs, shift))


def test_group_dot(driver: Path) -> None:
    rng = np.random.default_rng(6)
    xq = rng.integers(-127, 128, 128).astype(np.int8)
    w = rng.integers(-128, 128, 128).astype(np.int8)
    for zero in (0, 7, -100, 255):
        got = _call(driver, "group_dot", 128, zero, inputs=(xq, w), out=np.int64)
        assert got[0] == int(np.sum(xq.astype(np.int64) * (w.astype(np.int64) - zero)))


@pytest.mark.parametrize("k, group, codes, has_zero, has_bias, shift, has_min", [
    (256, 64, "int8", False, True, 24, False),
    (256, 128, "int4", False, False, 12, False),
    (256, 128, "uint4", True, False, 16, False),
    (384, 128, "uint8", True, True, 8, False),
    (128, 64, "int8", True, True, 0, False),
    (256, 32, "int4", False, True, 16, True),  # unsigned codes stored q - 8, the offset in the minimum
    (256, 64, "uint8", False, False, 20, True),
])
def test_matmul(driver: Path, k: int, group: int, codes: str, has_zero: bool, has_bias: bool, shift: int,
                has_min: bool) -> None:
    rng = np.random.default_rng(k + group + shift)
    t, n, groups, scale_bits = 24, 40, k // group, 16
    lo, hi, dtype = {"int8": (-127, 128, np.int8), "int4": (-8, 8, np.int8),
                     "uint4": (0, 16, np.uint8), "uint8": (0, 256, np.uint8)}[codes]
    x = (rng.integers(-(1 << 31), 1 << 31, (t, k)) >> rng.integers(0, 32, (t, 1))).astype(np.int32)
    x[0], x[1], x[2, :] = 0, hm.INT32_MIN, hm.INT32_MAX
    w = rng.integers(lo, hi, (n, k)).astype(dtype)
    ws = (rng.integers(-(1 << scale_bits) + 1, 1 << scale_bits, (n, groups)) >> rng.integers(0, 16, (n, 1)))
    ins = [x, w, ws.astype(np.int32)]
    if has_zero:
        ins.append(rng.integers(lo, hi, (n, groups)).astype(np.int16))
    if has_min:  # |wm| < 2^(scale_bits + bits)
        wide = scale_bits + (8 if dtype == np.uint8 else 4)
        ins.append((rng.integers(-(1 << wide) + 1, 1 << wide, (n, groups)) >> rng.integers(0, 20, (n, 1))).astype(np.int32))
    if has_bias:
        ins.append(np.concatenate([I32_EDGES, rng.integers(-(1 << 31), 1 << 31, n - I32_EDGES.size)]).astype(np.int32))
    attrs = {"group": group, "shift": shift, "scale_bits": scale_bits, "has_zero": has_zero, "has_bias": has_bias,
             "has_min": has_min}
    expected = OPS["hw_matmul"].ref(ins, attrs, CTX)[0]
    args = (t, n, k, group, shift, int(has_zero), int(has_bias), int(dtype == np.uint8), int(has_min))
    got = _call(driver, "matmul", *args, inputs=tuple(ins), out=np.int32).reshape(t, n)
    np.testing.assert_array_equal(got, expected)
    saturated = np.count_nonzero((expected >= hm.F32_INT32_MAX) | (expected == hm.INT32_MIN))
    assert 0 < saturated < expected.size // 2


@pytest.mark.parametrize("eps", [1e-5, 1e-6, 0.0])
def test_rms_norm(driver: Path, eps: float) -> None:
    rng = np.random.default_rng(7)
    t, c = 80, 256
    x = (rng.integers(-(1 << 31), 1 << 31, (t, c)) >> rng.integers(0, 32, (t, 1))).astype(np.int32)
    x[0] = 0
    x[1] = hm.INT32_MIN
    x[2] = hm.INT32_MAX
    for row, bits in enumerate(range(17, 32), start=3):  # max|x| = 2^k - 1, 2^k, 2^k + 1 around the shift
        for j, v in enumerate(((1 << bits) - 1, 1 << bits, min((1 << bits) + 1, hm.INT32_MAX))):
            x[row + 15 * j] = np.clip(x[row + 15 * j], -v, v)
            x[row + 15 * j, row] = -v if j == 1 else v
    w = rng.normal(0, 2, c).astype(np.float32)
    w[:4] = [0, 1e30, -1e-30, 1]
    expected = OPS["hw_rms_norm"].ref([x, w], {"eps": eps, "group": 0}, CTX)[0]
    got = _call(driver, "rms_norm", t, c, inputs=(np.float32([eps]), x, w), out=np.int32).reshape(t, c)
    np.testing.assert_array_equal(got, expected)
    heads = OPS["hw_rms_norm"].ref([x, w], {"eps": eps, "group": 64}, CTX)[0]  # QK-norm: each head on its own
    for h in range(0, c, 64):
        one = OPS["hw_rms_norm"].ref([x[:, h:h + 64], w[h:h + 64]], {"eps": eps, "group": 0}, CTX)[0]
        np.testing.assert_array_equal(heads[:, h:h + 64], one)


@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_layer_norm(driver: Path, eps: float) -> None:
    rng = np.random.default_rng(9)
    t, c = 64, 192
    x = (rng.integers(-(1 << 31), 1 << 31, (t, c)) >> rng.integers(0, 32, (t, 1))).astype(np.int32)
    x[:8] += rng.integers(-(1 << 28), 1 << 28, (8, 1)).astype(np.int32)  # rows far from zero mean
    x[8] = hm.INT32_MAX  # a constant row: zero variance
    x[9, ::2], x[9, 1::2] = hm.INT32_MIN, hm.INT32_MAX  # the widest deviations
    x[10] = np.arange(c) - 7  # a mean that rounds
    w = rng.normal(0, 2, c).astype(np.float32)
    b = rng.normal(0, 3, c).astype(np.float32)
    expected = OPS["hw_layer_norm"].ref([x, w, b], {"eps": eps}, CTX)[0]
    got = _call(driver, "layer_norm", t, c, inputs=(np.float32([eps]), x, w, b), out=np.int32).reshape(t, c)
    np.testing.assert_array_equal(got, expected)
    real = x.astype(np.float64) / 65536
    centred = (real - real.mean(axis=1, keepdims=True)) / np.sqrt(real.var(axis=1, keepdims=True) + max(eps, 1e-30))
    want = centred[:8] * w + b
    np.testing.assert_allclose(expected[:8] / 65536, want, atol=1e-3 * np.abs(want).max())


@pytest.mark.parametrize("head_dim, rotary", [(64, 64), (128, 128), (64, 16)])  # GPT-NeoX: a quarter rotated
def test_rope(driver: Path, head_dim: int, rotary: int) -> None:
    rng = np.random.default_rng(head_dim)
    t, c, positions = 32, 256, 100
    angles = np.arange(positions)[:, None] * 10000.0 ** (-np.arange(rotary // 2) / (rotary // 2))
    cos = np.rint(np.cos(angles) * 2.0**30).astype(np.int32)
    sin = np.rint(np.sin(angles) * 2.0**30).astype(np.int32)
    cos[1], sin[1] = 1 << 30, -(1 << 30)
    cos[2], sin[2] = -(1 << 30), 1 << 30
    x = _random_i32(rng, t * c)[: t * c].reshape(t, c)
    pos = rng.integers(0, positions, t)
    pos[:3] = [1, 2, 0]
    expected = OPS["hw_rope"].ref([x, pos, cos, sin], {"head_dim": head_dim, "rotary_dim": rotary}, CTX)[0]
    got = _call(driver, "rope", t, c, head_dim, rotary, inputs=(x, cos[pos], sin[pos]), out=np.int32).reshape(t, c)
    np.testing.assert_array_equal(got, expected)
    passed = np.arange(c) % head_dim >= rotary
    np.testing.assert_array_equal(expected[:, passed], x[:, passed])


@pytest.mark.parametrize("t, s, heads, kv_heads, d, scale, window, softcap", [
    (64, 64, 4, 2, 64, 1 / math.sqrt(80), 0, 0.0),  # every s_visible from 1 to S
    (4, 300, 4, 2, 64, 1 / math.sqrt(128), 0, 0.0),
    (6, 24, 2, 1, 128, 1 / math.sqrt(96), 0, 0.0),
    (8, 5, 2, 2, 64, 0.125, 0, 0.0),  # queries before the first key see none
    (20, 40, 4, 2, 64, 0.125, 7, 0.0),  # a sliding window: each query sees its last 7 rows
    (12, 30, 4, 2, 64, 0.125, 0, 50.0),  # Gemma-2's soft-capped scores
])
def test_attention(driver: Path, t: int, s: int, heads: int, kv_heads: int, d: int, scale: float,
                   window: int, softcap: float) -> None:
    rng = np.random.default_rng(t * s + d)

    def acts(rows: int, cols: int) -> np.ndarray:  # Q15.16 values of std 0.25 to 8 per head
        sigma = 2.0 ** rng.uniform(-2, 3, (rows, cols // d)).repeat(d, axis=1)
        return np.rint(rng.normal(0, 1, (rows, cols)) * sigma * 2.0**16).astype(np.int32)

    q, k, v = acts(t, heads * d), acts(s, kv_heads * d), acts(s, kv_heads * d)
    q[0, :d] = 0
    q[1, :d] = hm.INT32_MIN
    q[1, d : 2 * d] = rng.choice([hm.INT32_MIN, hm.INT32_MAX], d)
    k[1, :d] = hm.INT32_MAX
    v[2] = hm.INT32_MIN
    kc, ks = hm.quant8(k, d)
    vc, vs = hm.quant8(v, d)
    attrs = {"heads": heads, "kv_heads": kv_heads, "head_dim": d, "scale": scale, "window": window,
             "softcap": softcap}
    with np.errstate(invalid="ignore"):
        expected = OPS["hw_attention"].ref([q, kc, ks, vc, vs], attrs, CTX)[0]
    inputs = (np.float32([scale, softcap]), q, kc, ks, vc, vs)
    got = _call(driver, "attention", t, s, heads, kv_heads, d, window, inputs=inputs, out=np.int32).reshape(q.shape)
    np.testing.assert_array_equal(got, expected)
    assert np.count_nonzero(expected) > expected.size // 2


def test_elementwise(driver: Path) -> None:
    rng = np.random.default_rng(8)
    near_zero = np.arange(-(1 << 22), 1 << 22, 997, dtype=np.int32)  # silu's curved part, |x| < 64
    x = np.concatenate([_random_i32(rng, 30000), near_zero])
    for fn in ("silu", "relu", "gelu_tanh", "gelu"):
        expected = OPS["hw_act"].ref([x[None]], {"fn": fn}, CTX)[0][0]
        np.testing.assert_array_equal(_call(driver, fn, inputs=(x,), out=np.int32), expected)

    a, b = _random_i32(rng, 30000), _random_i32(rng, 30000)[::-1].copy()
    for fn, op in (("mul", "hw_mul"), ("add", "hw_add")):
        expected = OPS[op].ref([a[None], b[None]], {}, CTX)[0][0]
        np.testing.assert_array_equal(_call(driver, fn, inputs=(a, b), out=np.int32), expected)

    c = 64
    xs = _random_i32(rng, 20000)[: 300 * c].reshape(300, c)
    w = (rng.normal(0, 1, c) * 2.0 ** rng.integers(-20, 20, c)).astype(np.float32)
    w[:4] = [0, -0.0, 1e30, -1]
    expected = OPS["hw_scale"].ref([xs, w], {}, CTX)[0]
    got = _call(driver, "scale", inputs=(xs.ravel(), np.tile(w, xs.shape[0])), out=np.int32)
    np.testing.assert_array_equal(got.reshape(xs.shape), expected)


def test_embed(driver: Path) -> None:
    rng = np.random.default_rng(9)
    table = rng.integers(0, 1 << 16, (500, 64), dtype=np.uint16).view(np.float16)  # NaN, inf, subnormals
    table[0, :4] = [65504, -65504, 0.5, -1.5]
    ids = rng.integers(0, 500, 300)
    ids[0] = 0
    with np.errstate(invalid="ignore"):
        expected = OPS["hw_embed"].ref([table, ids], {"offset": 0}, CTX)[0]
    got = _call(driver, "embed", inputs=(table[ids].astype(np.float32),), out=np.int32)
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)


@pytest.mark.parametrize("experts,top_k", [(8, 2), (4, 1), (64, 8), (3, 3)])
def test_route(driver: Path, experts: int, top_k: int) -> None:
    rng = np.random.default_rng(10)
    x = (rng.normal(0, 1, (400, experts)) * 2.0 ** rng.integers(10, 22, (400, 1))).astype(np.int32)
    x[:20] = x[:20] // (1 << 12)  # near ties
    x[20, :] = 5  # every logit equal: the lower experts win
    x[21, :] = [hm.INT32_MIN, hm.INT32_MAX, *rng.integers(-9, 9, experts - 2)][:experts]
    for normalize in (True, False):
        expected = OPS["hw_route"].ref([x], {"top_k": top_k, "normalize": normalize}, CTX)[0]
        got = _call(driver, "route", *x.shape, top_k, int(normalize), inputs=(x,), out=np.int32)
        np.testing.assert_array_equal(got.reshape(expected.shape), expected)
        assert list(expected[20, 0::2]) == list(range(top_k))


@pytest.mark.parametrize("port_bits", [128, 256, 512])
def test_ports_narrower_than_a_word_move_the_same_bytes(port_bits: int, tmp_path: Path,
                                                        gxx_ap_types: tuple[str, Path]) -> None:
    """read_bytes and write_bytes on a port of 128, 256 or 512 bits (a 512-bit word from 512 / port_bits beats):
    transfers at any offset and length, across words, read and write the bytes a flat memory would."""
    gxx, ap_types = gxx_ap_types
    exe = tmp_path / "port_driver"
    command = [gxx, "-std=c++14", "-O2", "-Wall", "-Wextra", "-Werror", f"-DLLMC_PORT_BITS={port_bits}",
               "-isystem", str(ap_types), "-I", str(INCLUDE), str(DRIVER.parent / "port_driver.cpp"), "-o", str(exe)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rng = np.random.default_rng(port_bits)
    memory = rng.integers(0, 256, 1024, dtype=np.uint8)
    transfers = [(0, 64), (1, 1), (63, 2), (5, 200), (130, 64), (960, 64), (17, 1000), *(
        (int(o), int(rng.integers(1, 1024 - o + 1))) for o in rng.integers(0, 1023, 20))]
    stdin = np.uint32(memory.size).tobytes() + memory.tobytes() + np.uint32(len(transfers)).tobytes()
    stdin += b"".join(np.array(t, dtype=np.uint32).tobytes() for t in transfers)
    out = subprocess.run([str(exe)], input=stdin, capture_output=True, check=True).stdout
    flat, at = memory.copy(), 0
    for off, n in transfers:
        assert out[at:at + n] == flat[off:off + n].tobytes(), (off, n)
        flat[off:off + n] = flat[off:off + n][::-1]
        at += n
    assert out[at:] == flat.tobytes()
