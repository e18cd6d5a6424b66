"""Mixed precision: allocation under the budget, sensitivity ordering, exact IR form, and bpw accounting."""

from __future__ import annotations

import numpy as np
import pytest

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.compiler.calibrate import LayerStats
from llmc.compiler.passes.mixed_precision import allocate, unit_errors
from llmc.compiler.pipeline import PassContext, PipelineError, parse_pipeline, run_pipeline
from llmc.compiler.quant.grid import Grid, quantize_rtn
from llmc.compiler.size import linear_storage, param_bits
from llmc.ir import parse_module, print_module
from llmc.ir.graph import Param
from llmc.ir.types import F16, DType, QuantEncoding, SparseEncoding, TensorType

CONFIG = dict(vocab_size=96, max_position_embeddings=128, initializer_range=0.05, hidden_size=128,
              intermediate_size=256, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(scope="module")
def model() -> llmc.Model:
    return llmc.load("llama", config=CONFIG, seed=0, max_length=128)


def stats_for(x: np.ndarray) -> LayerStats:
    g = x.T.astype(np.float64) @ x
    return LayerStats(len(x), g, np.abs(x).mean(0), np.abs(x).max(0), (x * x).sum(0), x.astype(np.float32))


def test_unit_errors_are_hessian_weighted_output_errors() -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 64)).astype(np.float32)
    x = rng.standard_normal((200, 64)).astype(np.float32)
    errors = unit_errors(w, stats_for(x), [2, 4], 32, per_group=False)
    for j, bits in enumerate([2, 4]):
        d = w - quantize_rtn(w, Grid(bits, 32)).dequantize()
        assert errors[0, j] == pytest.approx(float(np.sum((x.astype(np.float64) @ d.T) ** 2)), rel=1e-6)
    assert errors[0, 0] > errors[0, 1]


def test_allocation_spends_budget_on_the_most_sensitive_units() -> None:
    # unit 0 gains hugely from more bits, unit 1 hardly at all
    errors = [np.array([[100.0, 10.0, 1.0], [1.0, 0.9, 0.8]])]
    costs = [np.array([2.0, 3.0, 4.0])]
    assert allocate(errors, [1], costs, budget=3.0)[0].tolist() == [2, 0]
    assert allocate(errors, [1], costs, budget=2.0)[0].tolist() == [0, 0]


@pytest.mark.parametrize("granularity", ["group", "layer"])
def test_pass_meets_budget_and_round_trips(model: llmc.Model, granularity: str) -> None:
    context = PassContext()
    calls = parse_pipeline(f"mixed-precision{{budget=3.0,group=64,granularity={granularity}}}")
    out = run_pipeline(model.module, calls, context)
    storage = linear_storage(out)
    assert storage.bits_per_weight <= 3.0
    assert storage.weights == linear_storage(model.module).weights
    report = context.reports["mixed-precision"]
    assert sum(report["histogram"].values()) == sum(len(b) for b in report["allocation"].values())
    assert parse_module(print_module(out)) == out
    assert len(llmc.Model(out).run(prompt_ids=[3, 4, 5], max_new_tokens=4, stop=False).tokens) == 4


def test_group_allocation_reconstructs_each_group_at_its_width(model: llmc.Model) -> None:
    from llmc.compiler.passes.linear import clone, linear_layers
    from llmc.compiler.passes.mixed_precision import _install_groups, _quantizer
    from llmc.generate.interpreter import causal_mask
    from llmc.ir.interpreter import run_function

    module = clone(model.module)
    layer = linear_layers(module)[0]
    w = module.params[layer.weight].data
    _install_groups(module, layer, w, [2, 4], 64, _quantizer("rtn", None, 64))  # columns 64.. stored first
    seen = []
    run_function(module, "prefill", {"input_ids": np.array([[3, 4]]), "mask": causal_mask(2, 0),
                                     "position_ids": np.arange(2)[None]},
                 observe=lambda node, args, results: seen.append(results[0]) if node.op == "gather" else None)
    expected = np.concatenate([quantize_rtn(w[:, :64], Grid(2, 64)).dequantize(),
                               quantize_rtn(w[:, 64:], Grid(4, 64)).dequantize()], axis=1)
    np.testing.assert_array_equal(seen[0], expected)


def test_bad_options_are_refused_before_work(model: llmc.Model) -> None:
    for text, message in [
        ("mixed-precision{budget=1.0}", "below the minimum"),
        ("mixed-precision{min_bits=1}", "min_bits"),
        ("mixed-precision{min_bits=4,max_bits=3}", "min_bits"),
        ("mixed-precision{granularity=row}", "granularity"),
        ("mixed-precision{group=48}", "does not divide"),
    ]:
        with pytest.raises(PipelineError, match=message):
            run_pipeline(model.module, parse_pipeline(text))


def test_param_bits_counts_every_kind_of_storage() -> None:
    i4 = DType("int", 4)
    dense = Param("a", TensorType.of([8, 16], i4, (QuantEncoding(4, 16),)))
    assert param_bits(dense) == 8 * 16 * 4
    two_four = Param("b", TensorType.of([8, 16], i4, (QuantEncoding(4, 16), SparseEncoding(2, 4))))
    assert param_bits(two_four) == 32 * (2 * 4 + 3)  # 2 values + log2(C(4,2)=6) -> 3 index bits per group
    side = Param("c", TensorType.of([8, 16], F16, (SparseEncoding(block=(), density=0.25),)))
    assert param_bits(side) == 32 * (16 + 4) + 32 * 9


BEFORE = """
module "m" {vocab_size = 16, max_position = 8} {
  param "emb" : tensor<16x8xf32>
  param "w" : tensor<16x8xf32>
  func @prefill(%input_ids: tensor<1xLxi64>, %mask: tensor<1x1xLxLxf32>, %position_ids: tensor<1xLxi64>) {
    %emb = param() {name = "emb"} : tensor<16x8xf32>
    %x = embedding(%emb, %input_ids) : tensor<1xLx8xf32>
    %w = param() {name = "w"} : tensor<16x8xf32>
    %logits = linear(%x, %w) : tensor<1xLx16xf32>
    return %logits
  }
}
"""

EXPECTED = """
module "m" {vocab_size = 16, max_position = 8} {
  param "emb" : tensor<16x8xf32>
  param "w.codes" : tensor<16x8xi4 #quant<bits=4,group=4,scale=f16,sym>>
  param "w.scales" : tensor<16x2xf16>
  func @prefill(%input_ids: tensor<1xLxi64>, %mask: tensor<1x1xLxLxf32>, %position_ids: tensor<1xLxi64>) {
    %emb = param() {name = "emb"} : tensor<16x8xf32>
    %x = embedding(%emb, %input_ids) : tensor<1xLx8xf32>
    %w_codes = param() {name = "w.codes"} : tensor<16x8xi4 #quant<bits=4,group=4,scale=f16,sym>>
    %w_scales = param() {name = "w.scales"} : tensor<16x2xf16>
    %w = dequantize(%w_codes, %w_scales) {group = 4} : tensor<16x8xf32>
    %logits = linear(%x, %w) : tensor<1xLx16xf32>
    return %logits
  }
}
"""


def test_before_expected_layer_granularity() -> None:
    before = parse_module(BEFORE)
    rng = np.random.default_rng(0)
    for p in before.params.values():
        p.data = rng.standard_normal(p.type.static_shape()).astype(np.float32)
    # budget 8.0 = 4-bit codes + one f16 scale per 4 weights: every layer gets 4 bits
    out = run_pipeline(before, parse_pipeline("mixed-precision{budget=8.0,group=4,granularity=layer}"))
    assert out == parse_module(EXPECTED)
