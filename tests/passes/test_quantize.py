"""The ``quantize`` pass and its algorithms (RTN, GPTQ, AWQ, ternary) against plain NumPy
references, on small random matrices and a small random Llama."""

from __future__ import annotations

import numpy as np
import pytest
import zoo

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.compiler.calibrate import CalibrationConfig, LayerStats
from llmc.compiler.passes.linear import clone, linear_layers
from llmc.compiler.passes.quantize import QuantizeOptions, apply_awq, quantize
from llmc.compiler.pipeline import PassContext, PipelineError, parse_pipeline, run_pipeline
from llmc.compiler.quant.awq import quantize_clipped, search_scale
from llmc.compiler.quant.gptq import quantize_gptq
from llmc.compiler.quant.grid import Grid, Quantized, quantize_rtn
from llmc.compiler.quant.ternary import quantize_ternary
from llmc.generate.interpreter import causal_mask
from llmc.ir import Param, SparseEncoding, parse_module, print_module, run_function, verify_module

LLAMA = zoo.LLAMA
CALIBRATION = CalibrationConfig(samples=2, length=32)


@pytest.fixture(scope="module")
def llama() -> llmc.Model:
    return llmc.load("llama", config=LLAMA, seed=0, max_length=128)


def stats_of(x: np.ndarray) -> LayerStats:
    x64 = x.astype(np.float64)
    return LayerStats(len(x), x64.T @ x64, np.abs(x64).mean(0), np.abs(x64).max(0), (x64 ** 2).sum(0),
                      x.astype(np.float32))


def correlated_inputs(rng: np.random.Generator, rows: int, k: int) -> np.ndarray:
    """Inputs that live near a low-dimensional subspace, with uneven channel magnitudes."""
    basis = rng.normal(size=(k // 4, k))
    x = rng.normal(size=(rows, k // 4)) @ basis + 0.1 * rng.normal(size=(rows, k))
    return (x * rng.uniform(0.2, 3.0, size=k)).astype(np.float32)


def output_error(x: np.ndarray, w: np.ndarray, q: Quantized) -> float:
    return float(np.sum((x @ w.T - x @ q.dequantize().T).astype(np.float64) ** 2))


def logits(module: llmc.ir.Module, ids: np.ndarray) -> np.ndarray:
    n = len(ids)
    feeds = {"input_ids": ids[None].astype(np.int64), "mask": causal_mask(n, 0),
             "position_ids": np.arange(n, dtype=np.int64)[None]}
    return run_function(module, "prefill", feeds)["logits"]


def reference_params(w: np.ndarray, bits: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Scale (f16-rounded, as float32) and zero point of each row of ``w`` [N, span]."""
    w = w.astype(np.float32)
    if symmetric:
        scale = (np.abs(w).max(1) / np.float32(2 ** (bits - 1) - 1)).astype(np.float16).astype(np.float32)
        return np.where(scale > 0, scale, 1.0), np.zeros(len(w))
    lo, hi = np.minimum(w.min(1), 0), np.maximum(w.max(1), 0)
    scale = ((hi - lo) / np.float32(2 ** bits - 1)).astype(np.float16).astype(np.float32)
    scale = np.where(scale > 0, scale, 1.0)
    return scale, np.clip(np.rint(-lo / scale), 0, 2 ** bits - 1)


def reference_round(col: np.ndarray, scale: np.ndarray, zero: np.ndarray, bits: int, symmetric: bool) -> np.ndarray:
    lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2 ** bits - 1)
    return np.clip(np.rint(col.astype(np.float32) / scale.astype(np.float32)) + zero, lo, hi)


def reference_rtn(w: np.ndarray, bits: int, group: int, symmetric: bool) -> tuple[np.ndarray, np.ndarray]:
    """Codes and dequantized weights, one group at a time."""
    span = group or w.shape[1]
    codes, deq = np.zeros(w.shape), np.zeros(w.shape, dtype=np.float32)
    for g in range(0, w.shape[1], span):
        scale, zero = reference_params(w[:, g:g + span], bits, symmetric)
        codes[:, g:g + span] = reference_round(w[:, g:g + span], scale[:, None], zero[:, None], bits, symmetric)
        deq[:, g:g + span] = (codes[:, g:g + span] - zero[:, None]).astype(np.float32) * scale[:, None]
    return codes, deq


def textbook_gptq(w: np.ndarray, x: np.ndarray, bits: int, group: int, symmetric: bool, act_order: bool,
                  damp: float = 0.01) -> np.ndarray:
    """GPTQ as in the paper's Algorithm 1, one column at a time with no lazy batching."""
    n, k = w.shape
    span = group or k
    h = 2.0 * x.astype(np.float64).T @ x.astype(np.float64) / len(x)
    h[np.diag_indices(k)] = np.where(np.diag(h) == 0, 1.0, np.diag(h))
    perm = np.argsort(-np.diag(h), kind="stable") if act_order else np.arange(k)
    h = h[np.ix_(perm, perm)] + damp * np.mean(np.diag(h)) * np.eye(k)
    u = np.linalg.cholesky(np.linalg.inv(h)).T
    weights = w.astype(np.float64)[:, perm]
    static = [reference_params(w[:, g:g + span], bits, symmetric) for g in range(0, k, span)]
    codes = np.zeros((n, k))
    for j in range(k):
        if act_order or not group:
            scale, zero = static[perm[j] // span]
        elif j % span == 0:
            scale, zero = reference_params(weights[:, j:j + span], bits, symmetric)
        codes[:, j] = reference_round(weights[:, j], scale, zero, bits, symmetric)
        q = (codes[:, j] - zero).astype(np.float32) * scale
        err = (weights[:, j] - q) / u[j, j]
        weights[:, j:] -= np.outer(err, u[j, j:])
    out = np.zeros_like(codes)
    out[:, perm] = codes
    return out


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group,symmetric", [(0, True), (8, True), (0, False), (16, False)])
def test_rtn_matches_numpy(bits: int, group: int, symmetric: bool) -> None:
    w = np.random.default_rng(bits).normal(size=(12, 32)).astype(np.float32)
    w[0, :16] = 0.0  # an all-zero group
    q = quantize_rtn(w, Grid(bits, group, symmetric))
    codes, deq = reference_rtn(w, bits, group, symmetric)
    np.testing.assert_array_equal(q.codes, codes)
    np.testing.assert_array_equal(q.dequantize(), deq)
    assert q.scales.dtype == np.float16 and (q.zeros is None) == symmetric


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("bits,group,symmetric", [(4, 0, True), (3, 8, True), (4, 8, False), (2, 16, True)])
def test_gptq_matches_textbook(act_order: bool, bits: int, group: int, symmetric: bool) -> None:
    rng = np.random.default_rng(7)
    w = rng.normal(size=(16, 32)).astype(np.float32)
    x = correlated_inputs(rng, 96, 32)
    x[:, 5] = 0.0  # a dead input
    q = quantize_gptq(w, Grid(bits, group, symmetric), stats_of(x), damp=0.01, act_order=act_order)
    np.testing.assert_array_equal(q.codes, textbook_gptq(w, x, bits, group, symmetric, act_order))
    if act_order and group:  # static groups: one scale per natural group, from the original weight
        np.testing.assert_array_equal(q.scales, quantize_rtn(w, Grid(bits, group, symmetric)).scales)


@pytest.mark.parametrize("act_order,group", [(False, 8), (True, 8), (False, 0)])
def test_gptq_lazy_batches_match_textbook(act_order: bool, group: int) -> None:
    rng = np.random.default_rng(3)
    w = rng.normal(size=(8, 64)).astype(np.float32)
    x = correlated_inputs(rng, 160, 64)
    q = quantize_gptq(w, Grid(4, group), stats_of(x), act_order=act_order, block=12)  # 16-wide with groups
    np.testing.assert_array_equal(q.codes, textbook_gptq(w, x, 4, group, True, act_order))


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("bits,group,symmetric", [(4, 16, True), (3, 0, True), (3, 16, False)])
def test_gptq_output_error_below_rtn(act_order: bool, bits: int, group: int, symmetric: bool) -> None:
    rng = np.random.default_rng(11)
    w = rng.normal(size=(48, 64)).astype(np.float32)
    x = correlated_inputs(rng, 256, 64)
    grid = Grid(bits, group, symmetric)
    gptq = quantize_gptq(w, grid, stats_of(x), act_order=act_order)
    assert output_error(x, w, gptq) < 0.8 * output_error(x, w, quantize_rtn(w, grid))


def test_gptq_keeps_pruned_weights_zero() -> None:
    rng = np.random.default_rng(9)
    w = rng.normal(size=(16, 32)).astype(np.float32)
    pruned = np.zeros(w.shape, dtype=bool)
    pruned.reshape(16, 8, 4)[:, :, :2] = True  # a 2:4 pattern
    w[pruned] = 0.0
    x = correlated_inputs(rng, 128, 32)
    for symmetric in (True, False):
        q = quantize_gptq(w, Grid(4, 8, symmetric), stats_of(x), pruned=pruned)
        assert np.all(q.dequantize()[pruned] == 0.0)
        dense = quantize_gptq(w, Grid(4, 8, symmetric), stats_of(x))
        assert np.any(dense.dequantize()[pruned] != 0.0)  # without the mask, error feedback fills them


def test_awq_scales_reduce_error_with_outlier_channels() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(size=(32, 64)).astype(np.float32)
    x = rng.normal(size=(256, 64)).astype(np.float32)
    x[:, [3, 17, 40]] *= 40.0  # outlier input channels
    stats = stats_of(x)
    grid = Grid(3, 16)
    alpha, s, err, rtn = search_scale([w], stats, grid)
    assert alpha > 0 and err < 0.7 * rtn
    assert np.isclose(rtn, output_error(x, w, quantize_rtn(w, grid)), rtol=1e-4)
    clipped = quantize_clipped(w * s, grid, stats_of(x / s))
    scaled_error = float(np.sum((x @ w.T - (x / s) @ clipped.dequantize().T).astype(np.float64) ** 2))
    assert scaled_error <= err * 1.0001


def test_awq_folding_keeps_the_function(llama: llmc.Model) -> None:
    module = clone(llama.module)
    stats = PassContext(calibration_config=CALIBRATION).calibration(llama.module)
    choices = apply_awq(module, linear_layers(module), stats, Grid(4, 32))
    assert {c.folded for c in choices} >= {"norm", "linear"} and len(choices) == 4 * LLAMA["num_hidden_layers"]
    verify_module(module)
    ids = np.random.default_rng(0).integers(0, LLAMA["vocab_size"], size=24)
    ref, out = logits(llama.module, ids), logits(module, ids)
    assert np.linalg.norm(out - ref) / np.linalg.norm(ref) < 1e-5
    assert any(p.data is not llama.module.params[n].data for n, p in module.params.items())


@pytest.mark.parametrize("group", [0, 8])
def test_ternary_absmean(group: int) -> None:
    w = np.random.default_rng(4).normal(size=(6, 32)).astype(np.float32)
    q = quantize_ternary(w, group)
    assert set(np.unique(q.codes)) <= {-1, 0, 1} and q.grid.bits == 2
    span = group or 32
    gamma = np.abs(w).reshape(6, -1, span).mean(-1).astype(np.float16)
    np.testing.assert_array_equal(q.scales, gamma)
    expected = np.clip(np.rint(w / np.repeat(gamma.astype(np.float32), span, axis=1)), -1, 1)
    np.testing.assert_array_equal(q.codes, expected)


@pytest.mark.parametrize("pipeline,bound", [
    ("quantize{bits=4,group=32}", 0.6),
    ("quantize{bits=3,group=0,symmetric=false}", 1.0),
    ("quantize{bits=4,group=32,method=gptq}", 0.6),
    ("quantize{bits=3,group=64,method=gptq,act_order=false,symmetric=false}", 1.0),
    ("quantize{bits=4,group=32,method=awq}", 0.6),
    ("quantize{method=ternary,group=0}", 2.0),
])
def test_pass_output_verifies_round_trips_and_runs(llama: llmc.Model, pipeline: str, bound: float) -> None:
    context = PassContext(calibration_config=CALIBRATION)
    out = run_pipeline(llama.module, parse_pipeline(pipeline), context)  # verifies after the pass
    assert parse_module(print_module(out)) == out
    codes = [p for p in out.params.values() if p.name.endswith(".codes")]
    assert len(codes) == 7 * LLAMA["num_hidden_layers"] == context.reports["quantize"]["layers"]
    assert not linear_layers(out)
    ids = np.random.default_rng(1).integers(0, LLAMA["vocab_size"], size=16)
    ref, got = logits(llama.module, ids), logits(out, ids)
    assert got.shape == ref.shape and np.linalg.norm(got - ref) / np.linalg.norm(ref) < bound
    if "ternary" in pipeline:
        assert set(np.unique(np.concatenate([p.data.ravel() for p in codes]))) <= {-1, 0, 1}
        assert abs(context.reports["quantize"]["bits_per_weight"] - 1.585) < 1e-3


BEFORE = """
module "tiny" {
  param "w" : tensor<2x4xf32>
  func @main(%x: tensor<1x4xf32>) {
    %w = param() {name = "w"} : tensor<2x4xf32>
    %y = linear(%x, %w) : tensor<1x2xf32>
    return %y
  }
}
"""

EXPECTED = """
module "tiny" {
  param "w.codes" : tensor<2x4xi4 #quant<bits=4,group=2,scale=f16,sym>>
  param "w.scales" : tensor<2x2xf16>
  func @main(%x: tensor<1x4xf32>) {
    %w_codes = param() {name = "w.codes"} : tensor<2x4xi4 #quant<bits=4,group=2,scale=f16,sym>>
    %w_scales = param() {name = "w.scales"} : tensor<2x2xf16>
    %w = dequantize(%w_codes, %w_scales) {group = 2} : tensor<2x4xf32>
    %y = linear(%x, %w) : tensor<1x2xf32>
    return %y
  }
}
"""

def test_pass_before_expected() -> None:
    before = parse_module(BEFORE)
    w = np.array([[0.5, -1.0, 2.0, 0.25], [3.0, 1.5, -0.75, 0.0]], dtype=np.float32)
    before.params["w"] = Param("w", before.params["w"].type, w)
    out = quantize(before, QuantizeOptions(bits=4, group=2), PassContext())
    assert out == parse_module(EXPECTED)
    np.testing.assert_array_equal(out.params["w.codes"].data, [[4, -7, 7, 1], [7, 4, -7, 0]])
    x = np.array([[1.0, 2.0, -1.0, 0.5]], dtype=np.float32)
    np.testing.assert_array_equal(run_function(out, "main", {"x": x})["y"], x @ quantize_rtn(w, Grid(4, 2)).dequantize().T)
    assert before.params["w"].data is w and "w" not in out.params  # the input module is untouched


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq"])
def test_sparsified_weights_keep_their_zeros(llama: llmc.Model, method: str) -> None:
    context = PassContext(calibration_config=CALIBRATION)
    sparse = run_pipeline(llama.module, parse_pipeline("sparsify{pattern=2:4}"), context)
    out = run_pipeline(sparse, parse_pipeline(f"quantize{{bits=4,group=32,method={method}}}"), context)
    for layer in linear_layers(sparse):
        codes = out.params[f"{layer.weight}.codes"]
        assert codes.type.encodings[1:] == (SparseEncoding(n=2, m=4),)
        assert np.all(codes.data[sparse.params[layer.weight].data == 0] == 0)


@pytest.mark.parametrize("pipeline,message", [
    ("quantize{bits=0}", "bits must be 2..8"),
    ("quantize{bits=9}", "bits must be 2..8"),
    ("quantize{method=foo}", "unknown method 'foo'"),
    ("quantize{method=ternary,symmetric=false}", "ternary codes are symmetric"),
    ("quantize{damp=1.5}", "damp must be in"),
    ("quantize{bits=4,group=32},quantize{group=48,method=gptq}", "group 48 does not divide K=64"),
])
def test_bad_options_refused_before_any_work(llama: llmc.Model, pipeline: str, message: str) -> None:
    context = PassContext(calibration_config=CALIBRATION)
    with pytest.raises(PipelineError, match=message):
        run_pipeline(llama.module, parse_pipeline(pipeline), context)
    assert context.timings == [] and context.reports == {}
