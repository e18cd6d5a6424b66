"""LUT-mpGEMM: packing layout, exactness against dequantize-then-matmul, int8 tables, the pass."""

from __future__ import annotations

import numpy as np
import pytest

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.compiler.lut.pack import offset_codes, pack_planes, unpack_planes
from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline
from llmc.ir import parse_module, print_module, run_function, verify_module
from llmc.ir.builder import Builder
from llmc.ir.graph import Function, Module, Param
from llmc.ir.types import F16, F32, DType, QuantEncoding, TensorType


def test_plane_layout_matches_the_documented_example() -> None:
    u = np.array([[1, 2, 3, 0, 2]])  # 2-bit codes, K=5: chunks [1,2,3,0] and [2,pad,pad,pad]
    planes = pack_planes(u, bits=2, g=4)
    assert planes.shape == (2, 1, 2) and planes.dtype == np.uint8
    assert planes[0, 0].tolist() == [0b0101, 0b0000]  # low bits 1,0,1,0 | 0
    assert planes[1, 0].tolist() == [0b0110, 0b0001]  # high bits 0,1,1,0 | 1


@pytest.mark.parametrize("bits, g, k", [(1, 4, 8), (2, 4, 203), (3, 2, 17), (4, 8, 64), (4, 4, 129)])
def test_pack_unpack_round_trip(bits: int, g: int, k: int) -> None:
    u = np.random.default_rng(bits).integers(0, 1 << bits, (7, k))
    np.testing.assert_array_equal(unpack_planes(pack_planes(u, bits, g), k, g), u)


def quantized_module(n: int, k: int, bits: int, group: int, symmetric: bool, seed: int) -> Module:
    """``y = linear(x, dequantize(codes, scales[, zeros]))`` with random codes (a ternary-like
    grid when bits == 2 and symmetric, as the ternary quantizer produces)."""
    rng = np.random.default_rng(seed)
    groups = 1 if group == 0 else k // group
    lo, hi = (-(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1) if symmetric else (0, (1 << bits) - 1)
    code_t = DType("int" if symmetric else "uint", max(bits, 2))
    module = Module("q", {})
    enc = QuantEncoding(max(bits, 2), group, F16, symmetric, None if symmetric else code_t)
    params = [Param("w.codes", TensorType.of([n, k], code_t, (enc,)), rng.integers(lo, hi + 1, (n, k)).astype(code_t.numpy())),
              Param("w.scales", TensorType.of([n, groups], F16), rng.uniform(0.01, 0.1, (n, groups)).astype(np.float16))]
    if not symmetric:
        params.append(Param("w.zeros", TensorType.of([n, groups], code_t), rng.integers(0, 1 << bits, (n, groups)).astype(np.uint8)))
    for p in params:
        module.params[p.name] = p
    func = Function("prefill")
    module.functions["prefill"] = func
    b = Builder(module, func)
    x = b.input("x", TensorType.of([3, k], F32))
    w = b.op("dequantize", [b.param(p.name) for p in params], {"group": group})
    b.ret(b.op("linear", [x, w], name="y"))
    verify_module(module)
    return module


CASES = [(2, 0, True), (2, 40, True), (3, 40, False), (4, 8, True), (4, 0, False), (2, 20, False)]


@pytest.mark.parametrize("bits, group, symmetric", CASES)
@pytest.mark.parametrize("tables", ["symmetric=true", "symmetric=false"])
def test_lut_form_is_exact_for_integer_activations(bits: int, group: int, symmetric: bool, tables: str) -> None:
    module = quantized_module(37, 200, bits, group, symmetric, seed=bits + group)
    lut = run_pipeline(module, parse_pipeline(f"lut-mpgemm{{{tables}}}"))
    assert [n.op for n in lut.functions["prefill"].nodes].count("lut_gemm") == 1
    x = np.random.default_rng(0).integers(-8, 9, (3, 200)).astype(np.float32)
    expected = run_function(module, "prefill", {"x": x})["y"]
    np.testing.assert_array_equal(run_function(lut, "prefill", {"x": x})["y"], expected)
    xf = np.random.default_rng(1).standard_normal((3, 200)).astype(np.float32)
    np.testing.assert_allclose(run_function(lut, "prefill", {"x": xf})["y"],
                               run_function(module, "prefill", {"x": xf})["y"], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("bits", [2, 4])
def test_int8_tables_error_is_bounded(bits: int) -> None:
    k, g = 256, 4
    module = quantized_module(64, k, bits, 128, True, seed=bits)
    lut = run_pipeline(module, parse_pipeline("lut-mpgemm{table_bits=8}"))
    x = np.random.default_rng(2).standard_normal((3, k)).astype(np.float32)
    exact = run_function(module, "prefill", {"x": x})["y"]
    got = run_function(lut, "prefill", {"x": x})["y"]
    # |S| <= g * max|x| per entry; rounding error <= scale / 2 per lookup, times sum_i 2^i over K/g chunks,
    # halved by the symmetric form, times the largest weight scale
    table_scale = g * np.abs(x).max(axis=-1, keepdims=True) / 127
    bound = 0.5 * table_scale * ((1 << bits) - 1) * (k // g) / 2 * module.params["w.scales"].data.astype(np.float32).max()
    error = np.abs(got - exact)
    assert (error <= bound).all()
    assert error.max() > 0  # the tables really are quantized
    rel = float(error.max() / np.abs(exact).max())
    assert rel < 0.05, rel


def test_offset_codes_reject_codes_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        offset_codes(np.array([[9]]), None, 4, 1)


BEFORE = """
module "m" {} {
  param "w.codes" : tensor<4x8xi2 #quant<bits=2,group=4,scale=f16,sym>>
  param "w.scales" : tensor<4x2xf16>
  func @prefill(%x: tensor<1xLx8xf32>) {
    %c = param() {name = "w.codes"} : tensor<4x8xi2 #quant<bits=2,group=4,scale=f16,sym>>
    %s = param() {name = "w.scales"} : tensor<4x2xf16>
    %w = dequantize(%c, %s) {group = 4} : tensor<4x8xf32>
    %q = linear(%x, %w) : tensor<1xLx4xf32>
    %k = linear(%x, %w) : tensor<1xLx4xf32>
    %y = add(%q, %k) : tensor<1xLx4xf32>
    return %y
  }
}
"""

EXPECTED = """
module "m" {} {
  param "w.scales" : tensor<4x2xf16>
  param "w.planes" : tensor<2x4x2xu8>
  param "w.lut_zeros" : tensor<4x2xu8>
  func @prefill(%x: tensor<1xLx8xf32>) {
    %s = param() {name = "w.scales"} : tensor<4x2xf16>
    %0, %1, %2 = lut_precompute(%x) {g = 4, symmetric = true, table_bits = 0} : tensor<1xLx2x8xf32>, tensor<1xLx1xf32>, tensor<1xLx2xf32>
    %w_planes = param() {name = "w.planes"} : tensor<2x4x2xu8>
    %w_lut_zeros = param() {name = "w.lut_zeros"} : tensor<4x2xu8>
    %q = lut_gemm(%0, %1, %2, %w_planes, %s, %w_lut_zeros) {bits = 2, g = 4, group = 4, symmetric = true} : tensor<1xLx4xf32>
    %k = lut_gemm(%0, %1, %2, %w_planes, %s, %w_lut_zeros) {bits = 2, g = 4, group = 4, symmetric = true} : tensor<1xLx4xf32>
    %y = add(%q, %k) : tensor<1xLx4xf32>
    return %y
  }
}
"""


def test_before_expected_shares_one_precompute() -> None:
    before = parse_module(BEFORE)
    before.params["w.codes"].data = np.zeros((4, 8), np.int8)
    before.params["w.scales"].data = np.ones((4, 2), np.float16)
    out = run_pipeline(before, parse_pipeline("lut-mpgemm"))
    assert out == parse_module(EXPECTED), print_module(out)


@pytest.mark.parametrize("bits", [2, 4])
def test_bundled_model_in_lut_form_generates_the_same_tokens(bits: int) -> None:
    model = llmc.load("llmc-tiny")
    context = PassContext(tokenizer_json=model.tokenizer_json)
    quantized = run_pipeline(model.module, parse_pipeline(f"quantize{{bits={bits},group=128}}"), context)
    lut = run_pipeline(quantized, parse_pipeline("lut-mpgemm"))
    ops = [n.op for n in lut.functions["decode"].nodes]
    assert ops.count("lut_gemm") == 28 and "dequantize" not in ops
    prompt = model.encode("A hacker is")
    reference = llmc.Model(quantized).run(prompt_ids=prompt, max_new_tokens=16, stop=False).tokens
    assert llmc.Model(lut).run(prompt_ids=prompt, max_new_tokens=16, stop=False).tokens == reference
