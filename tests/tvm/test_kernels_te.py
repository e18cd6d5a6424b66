"""Each TE kernel of the linear family against its reference op, built for the CPU (Relax VM) and
for OpenCL (kernel plan on PoCL): integer results and float results with the reference's
rounding are exact; float sums agree to a relative 1e-6 (only their order differs)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
from tvm import relax  # noqa: E402
from tvm_cases import OPENCL_FAST_BUILD, TARGET_PARAMS  # noqa: E402

from llmc.backends.tvm import kernels, layouts  # noqa: E402
from llmc.backends.tvm.compile import tvm_target  # noqa: E402
from llmc.backends.tvm.launch import OpenCLBackend, Runner  # noqa: E402
from llmc.backends.tvm.plan import build_plan  # noqa: E402
from llmc.backends.tvm.schedule import scheduled, vm_pipeline  # noqa: E402
from llmc.compiler.lut.pack import offset_codes  # noqa: E402
from llmc.ir.ops import lut, nn, quant  # noqa: E402
from llmc.ir.registry import RefContext  # noqa: E402
from llmc.ir.types import F16, F32, I8, TensorType  # noqa: E402

RNG = np.random.default_rng(0)


def run(target: str, fn: Callable[..., Any], arrays: list[np.ndarray], **attrs: Any) -> list[np.ndarray]:
    """``fn`` as the one call of a Relax function, compiled for ``target`` and run on ``arrays``."""
    bb = relax.BlockBuilder()
    params = [relax.Var(f"a{i}", relax.TensorType(a.shape, str(a.dtype))) for i, a in enumerate(arrays)]
    with bb.function("main", params):
        with bb.dataflow():
            out = bb.emit_output(bb.emit_te(fn, *params, **attrs))
        bb.emit_func_output(out)
    tt = tvm_target(target)
    if target == "cpu":
        vm = relax.VirtualMachine(tvm.compile(bb.get(), tt, relax_pipeline=vm_pipeline(tt)), tvm.cpu())
        result = vm["main"](*(tvm.runtime.tensor(a) for a in arrays))
        return [result.numpy()] if hasattr(result, "numpy") else [r.numpy() for r in result]
    plan, code = build_plan(scheduled(bb.get(), tt), tt, ("main",))
    runner = Runner(plan, OpenCLBackend(code.source, OPENCL_FAST_BUILD))
    return [runner.numpy(t) for t in runner.call("main", [runner.tensor(a) for a in arrays])]


def ref(op: type, ins: list[np.ndarray], out_types: list[TensorType] | None = None, **attrs: Any) -> list[np.ndarray]:
    return op.ref(ins, attrs, RefContext({}, out_types or []))


def close(a: np.ndarray, b: np.ndarray, tol: float = 1e-6) -> bool:
    return a.shape == b.shape and float(np.abs(a - b).max()) <= tol * max(float(np.abs(b).max()), 1e-30)


def random_codes(shape: tuple[int, ...], bits: int, signed: bool) -> np.ndarray:
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return RNG.integers(lo, hi + 1, size=shape).astype(np.int8 if signed else np.uint8)


@pytest.mark.parametrize("target", TARGET_PARAMS)
@pytest.mark.parametrize("bits, group, signed", [(4, 32, True), (2, 32, True), (3, 0, True), (8, 64, True),
                                                 (4, 32, False)])
def test_dequant_linear(target: str, bits: int, group: int, signed: bool) -> None:
    n, k = 48, 128
    codes = random_codes((n, k), bits, signed)
    groups = k // group if group else 1
    scales = RNG.uniform(0.01, 0.1, size=(n, groups)).astype(np.float16)
    zeros = None if signed else RNG.integers(0, 1 << bits, size=(n, groups)).astype(np.uint8)
    x = RNG.standard_normal((1, 3, k)).astype(np.float32)
    bias = RNG.standard_normal(n).astype(np.float32)
    w = ref(quant.Dequantize, [codes, scales] + ([zeros] if zeros is not None else []), group=group, dtype=F32)[0]
    expected = ref(nn.Linear, [x, w, bias], [TensorType.of([1, 3, n], F32)])[0]
    slot = layouts.slot_bits(bits)
    u, z = offset_codes(codes, zeros, bits, groups)
    packed = layouts.pack_words(u, slot)
    got = run(target, kernels.dequant_linear, [x, packed, scales.astype(np.float32), z.astype(np.float32), bias],
              slot=slot, group=group)
    assert close(got[0], expected)


@pytest.mark.parametrize("target", TARGET_PARAMS)
@pytest.mark.parametrize("quantized", [False, True])
def test_sparse_linear(target: str, quantized: bool) -> None:
    n, k = 32, 64
    keep = np.argsort(RNG.random((n, k // 4, 4)), axis=-1)[..., :2]  # two kept columns per block of 4
    mask = np.zeros((n, k // 4, 4), bool)
    np.put_along_axis(mask, keep, True, axis=-1)
    mask = mask.reshape(n, k)
    x = RNG.standard_normal((1, 2, k)).astype(np.float32)
    if quantized:
        codes = np.where(mask, random_codes((n, k), 4, True), 0).astype(np.int8)
        scales = RNG.uniform(0.01, 0.1, size=(n, 2)).astype(np.float32)
        w = ref(quant.Dequantize, [codes, scales], group=32, dtype=F32)[0]
        u, z = offset_codes(codes, None, 4, 2)
        kept, index = layouts.sparse_pack(u.astype(np.uint8), codes != 0, 2, 4, "w")
        got = run(target, kernels.sparse_dequant_linear, [x, kept, index, scales, z.astype(np.float32)], n=2, m=4,
                  group=32)
    else:
        w = np.where(mask, RNG.standard_normal((n, k)), 0).astype(np.float32)
        kept, index = layouts.sparse_pack(w, w != 0, 2, 4, "w")
        got = run(target, kernels.sparse_linear, [x, kept, index], n=2, m=4)
    assert close(got[0], ref(nn.Linear, [x, w], [TensorType.of([1, 2, n], F32)])[0])


@pytest.mark.parametrize("target", TARGET_PARAMS)
@pytest.mark.parametrize("group", [0, 32])
def test_quantize_rows_and_qlinear(target: str, group: int) -> None:
    n, k = 40, 96
    x = RNG.standard_normal((1, 3, k)).astype(np.float32)
    x[0, 1] = 0  # an all-zero row has scale 1
    codes, scale = run(target, kernels.quantize_rows, [x], bits=8, dtype="int8")
    want_codes, want_scale = ref(quant.QuantizeDynamic, [x], [TensorType.of([1, 3, k], I8)], bits=8)
    assert np.array_equal(codes, want_codes) and np.array_equal(scale, want_scale)
    wq = random_codes((n, k), 8, True)
    ws = RNG.uniform(0.001, 0.01, size=(n, k // group if group else 1)).astype(np.float32)
    bias = RNG.standard_normal(n).astype(np.float32)
    got = run(target, kernels.qlinear, [codes, scale, wq, ws, bias], group=group, acc_dtype="int32")
    assert close(got[0], ref(quant.QLinear, [codes, scale, wq, ws, bias], group=group)[0])


@pytest.mark.parametrize("target", TARGET_PARAMS)
def test_fake_quant_rounds_scales_like_float16(target: str) -> None:
    x = (RNG.standard_normal((1, 2, 5, 64)) * np.logspace(-6, 2, 64, dtype=np.float32)).astype(np.float32)
    got = run(target, kernels.fake_quant, [x], bits=8, group=16, scale_dtype="float16")
    want = ref(quant.FakeQuant, [x], [TensorType.of(x.shape, F32)], bits=8, group=16, scale_dtype=F16)
    assert np.array_equal(got[0], want[0])


@pytest.mark.parametrize("target", TARGET_PARAMS)
@pytest.mark.parametrize("table_bits, symmetric, group", [(0, True, 32), (0, False, 0), (8, True, 64)])
def test_lut_tables_and_gemm(target: str, table_bits: int, symmetric: bool, group: int) -> None:
    k, n, bits = 128, 40, 2
    x = RNG.standard_normal((1, 3, k)).astype(np.float32)
    attrs = dict(g=4, symmetric=symmetric, table_bits=table_bits)
    tables = run(target, kernels.lut_tables, [x], **attrs)
    want = ref(lut.LutPrecompute, [x], **attrs)
    assert np.abs(tables[0].astype(np.float32) - want[0]).max() <= (1 if table_bits else 1e-6)
    assert close(tables[1], want[1]) and close(tables[2], want[2])
    planes = RNG.integers(0, 16, size=(bits, n, k // 4)).astype(np.uint8)
    groups = k // group if group else 1
    scales = RNG.uniform(0.01, 0.02, size=(n, groups)).astype(np.float32)
    zeros = RNG.integers(0, 4, size=(n, groups)).astype(np.uint8)
    gemm = dict(bits=bits, g=4, group=group, symmetric=symmetric)
    got = run(target, kernels.lut_gemm, [*want, planes, scales, zeros.astype(np.float32)], **gemm)
    assert close(got[0], ref(lut.LutGemm, [*want, planes, scales, zeros], **gemm)[0])


def test_the_min_kernels_match_the_reference() -> None:
    """dequantize_min's plain dequantization and fused GEMV (packed codes), on the CPU, to float rounding: LLVM
    may fuse ``scale * q - min`` into one multiply-add (one rounding instead of two), so a weight can differ
    from the interpreter's by an ulp of ``scale * q``."""
    n, k, group = 24, 64, 16
    codes = RNG.integers(0, 32, (n, k)).astype(np.uint8)  # 5-bit codes in 8-bit slots
    scales = RNG.uniform(0.01, 0.1, (n, k // group)).astype(np.float32)
    mins = RNG.uniform(-0.2, 0.2, (n, k // group)).astype(np.float32)
    w = ref(quant.DequantizeMin, [codes, scales, mins], group=group, dtype=F32)[0]
    ulp = np.finfo(np.float32).eps * float(np.abs(np.repeat(scales, group, axis=1) * codes).max())
    got = run("cpu", kernels.dequantize_min_codes, [codes, scales, mins], group=group)[0]
    np.testing.assert_allclose(got, w, rtol=0, atol=ulp)
    x = RNG.standard_normal((1, 3, k)).astype(np.float32)
    packed = layouts.pack_words(codes, layouts.slot_bits(5))
    got = run("cpu", kernels.dequant_min_linear, [x, packed, scales, mins], slot=8, group=group)[0]
    np.testing.assert_allclose(got, x @ w.T, rtol=1e-5, atol=1e-6)
