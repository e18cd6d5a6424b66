"""TVM CPU LUT-mpGEMM kernels (the variant this CPU gets) against a NumPy reference written from docs/lut.md.

The reference builds the activation tables and does the lookups of docs/lut.md literally (full
float tables; symmetric int8 tables ``Hq``); the dequant baseline is checked against
dequantize-then-matmul. Small shapes: odd N, K not a multiple of the group, per-row groups.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from zoo import matrix

pytest.importorskip("tvm")

from llmc.backends.tvm import (  # noqa: E402
    Geometry,
    build_dequant_gemv,
    build_lut_gemv,
    codes_from_planes,
    pack_for_tvm,
)

CASES = [  # (n, k, group)
    (37, 200, 40),
    (33, 200, 0),
    (64, 256, 128),
    (21, 100, 128),
    (35, 202, 40),  # K not a multiple of g = 4 nor of the group
    (19, 203, 0),
]
# every shape once by default, with every width and both batch sizes among them; all 48 under make test-full
MATRIX = matrix([CASES, [1, 2, 3, 4], [1, 3]], [(CASES[0], 1, 1), (CASES[1], 2, 3), (CASES[2], 3, 1), (CASES[3], 4, 3),
                                                (CASES[4], 2, 1), (CASES[5], 3, 3)])


def make_weights(n: int, k: int, bits: int, group: int, rng: np.random.Generator, pow2_scales: bool = False):
    """Offset codes ``u`` [N, K], docs/lut.md ``planes`` and per-group ``scales``/``zeros``."""
    chunks = -(-k // 4)
    n_groups = -(-k // (group or k))
    u = rng.integers(0, 2**bits, size=(n, k))
    zeros = rng.integers(0, 2**bits, size=(n, n_groups)).astype(np.float32)
    if pow2_scales:
        scales = (2.0 ** -rng.integers(1, 5, size=(n, n_groups))).astype(np.float32)
    else:
        scales = rng.uniform(0.01, 0.1, size=(n, n_groups)).astype(np.float32)
    cols = np.arange(k) // (group or k)
    padded = np.empty((n, chunks * 4), np.int64)
    padded[:, :k] = u
    padded[:, k:] = zeros[:, -1:]  # padding columns carry u = z (weight 0)
    bit = (padded[None] >> np.arange(bits)[:, None, None]) & 1
    planes = (bit.reshape(bits, n, chunks, 4) << np.arange(4)).sum(-1).astype(np.uint8)
    weights = (u - zeros[:, cols]) * scales[:, cols]
    return u, planes, scales, zeros, weights


def reference_lut(x: np.ndarray, planes: np.ndarray, scales: np.ndarray, zeros: np.ndarray, k: int,
                  group: int, table: str) -> np.ndarray:
    """docs/lut.md: per-chunk tables, ``acc = sum_i 2^i sum_c T[c, planes[i, n, c]]``, then scale/zero."""
    bits, n, chunks = planes.shape
    index_bits = (np.arange(16)[:, None] >> np.arange(4)) & 1  # [p, j]
    group_of_chunk = np.arange(chunks) * 4 // (group or chunks * 4)
    out = np.zeros((x.shape[0], n))
    for m, row in enumerate(x):
        xc = np.zeros(chunks * 4, np.float32)
        xc[:k] = row
        xc = xc.reshape(chunks, 4)
        if table == "f32":
            tables = xc.astype(np.float64) @ index_bits.T
        else:  # symmetric tables, int8 with one scale per activation row
            sym = (xc.astype(np.float64) @ (2 * index_bits - 1).T).astype(np.float32)
            half = sym[:, :8]
            scale = np.float32(np.abs(sym).max()) / np.float32(127)
            hq = np.rint(half / scale)
            full = np.concatenate([hq, -hq[:, ::-1]], axis=1)  # S[p] = -H[p ^ 15] for p >= 8
            tables = (np.float64(scale) * full + xc.sum(1, dtype=np.float64)[:, None]) / 2
        looked = tables[np.arange(chunks), planes.astype(np.int64)]  # [b, n, chunks]
        per_chunk = np.tensordot(2.0 ** np.arange(bits), looked, axes=1)  # [n, chunks]
        acc = np.stack([per_chunk[:, group_of_chunk == t].sum(1) for t in range(scales.shape[1])], 1)
        xs = np.array([xc.reshape(-1)[group_of_chunk.repeat(4) == t].sum(dtype=np.float64)
                       for t in range(scales.shape[1])])
        out[m] = (scales * (acc - zeros * xs)).sum(1)
    return out


@pytest.mark.parametrize("shape,bits,batch", MATRIX)
def test_lut_f32_exact_for_integer_activations(shape, bits, batch):
    n, k, group = shape
    rng = np.random.default_rng(bits * 100 + batch)
    _, planes, scales, zeros, weights = make_weights(n, k, bits, group, rng, pow2_scales=True)
    x = rng.integers(-8, 9, size=(batch, k)).astype(np.float32)
    kernel = build_lut_gemv(n, k, bits, group, batch=batch, table="f32")
    y = kernel(x, *kernel.pack(planes, scales, zeros))
    expect = reference_lut(x, planes, scales, zeros, k, group, "f32")
    np.testing.assert_array_equal(y, expect)
    np.testing.assert_array_equal(expect, x.astype(np.float64) @ weights.T)


@pytest.mark.parametrize("shape,bits,batch", MATRIX)
def test_lut_float_activations(shape, bits, batch):
    n, k, group = shape
    rng = np.random.default_rng(bits * 10 + batch)
    _, planes, scales, zeros, weights = make_weights(n, k, bits, group, rng)
    x = rng.standard_normal((batch, k)).astype(np.float32)
    exact = x.astype(np.float64) @ weights.T
    results = {}
    for table in ("f32", "int8"):
        kernel = build_lut_gemv(n, k, bits, group, batch=batch, table=table)
        results[table] = kernel(x, *kernel.pack(planes, scales, zeros))
        expect = reference_lut(x, planes, scales, zeros, k, group, table)
        np.testing.assert_allclose(results[table], expect, rtol=1e-4, atol=1e-4 * np.abs(expect).max())
    # int8 tables stay within the docs/lut.md bound: 0.5 * scale * (2^b - 1) * chunks, times s
    chunks = -(-k // 4)
    chunks_per_group = np.bincount(np.arange(chunks) * 4 // (group or 4 * chunks))
    table_scale = np.abs(np.pad(x, ((0, 0), (0, 4 * chunks - k))).reshape(batch, chunks, 4)).sum(2).max(1) / 127
    bound = 0.5 * table_scale[:, None] * (2**bits - 1) * (scales * chunks_per_group).sum(1)[None]
    assert np.all(np.abs(results["int8"] - exact) <= bound * (1 + 1e-4))


@pytest.mark.parametrize("shape,bits,batch", MATRIX)
def test_dequant_matches_dequantize_then_matmul(shape, bits, batch):
    n, k, group = shape
    rng = np.random.default_rng(bits + 7 * batch)
    _, planes, scales, zeros, weights = make_weights(n, k, bits, group, rng)
    x = rng.standard_normal((batch, k)).astype(np.float32)
    kernel = build_dequant_gemv(n, k, bits, group, batch=batch)
    y = kernel(x, *kernel.pack(planes, scales, zeros))
    expect = x.astype(np.float64) @ weights.T
    np.testing.assert_allclose(y, expect, rtol=1e-4, atol=1e-4 * np.abs(expect).max())


def test_batch_eight():
    rng = np.random.default_rng(5)
    n, k, group, bits, batch = 45, 256, 64, 3, 8
    _, planes, scales, zeros, weights = make_weights(n, k, bits, group, rng)
    x = rng.standard_normal((batch, k)).astype(np.float32)
    exact = x.astype(np.float64) @ weights.T
    kernels = {
        "f32": build_lut_gemv(n, k, bits, group, batch, "f32"),
        "int8": build_lut_gemv(n, k, bits, group, batch, "int8"),
        "dequant": build_dequant_gemv(n, k, bits, group, batch),
    }
    for name, kernel in kernels.items():
        y = kernel(x, *kernel.pack(planes, scales, zeros))
        expect = exact if name == "dequant" else reference_lut(x, planes, scales, zeros, k, group, name)
        np.testing.assert_allclose(y, expect, rtol=1e-4, atol=1e-4 * np.abs(expect).max())


def test_vector_input_and_two_threads():
    rng = np.random.default_rng(3)
    n, k, group, bits = 300, 512, 128, 2
    _, planes, scales, zeros, weights = make_weights(n, k, bits, group, rng)
    x = rng.standard_normal(k).astype(np.float32)
    one = build_lut_gemv(n, k, bits, group, table="int8", threads=1)
    two = build_lut_gemv(n, k, bits, group, table="int8", threads=min(2, os.cpu_count() or 1))
    packed = one.pack(planes, scales, zeros)
    y1 = one(x, *packed)
    assert y1.shape == (n,)
    np.testing.assert_array_equal(two(x, *packed), y1)
    np.testing.assert_allclose(y1, weights @ x, rtol=0.05, atol=0.05 * np.abs(weights @ x).max())


def test_codes_round_trip_and_validation():
    rng = np.random.default_rng(4)
    u, planes, scales, zeros, _ = make_weights(9, 30, 3, 0, rng)
    np.testing.assert_array_equal(codes_from_planes(planes, 30), u)
    geom = Geometry(9, 30, 3, 0)
    with pytest.raises(ValueError, match="planes"):
        pack_for_tvm(planes[:2], scales, zeros, geom, "lut_int8")
    with pytest.raises(ValueError, match="group"):
        Geometry(9, 30, 3, 6)
    with pytest.raises(ValueError, match="layout"):
        pack_for_tvm(planes, scales, zeros, geom, "lut_f16")
