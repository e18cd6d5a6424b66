"""SmoothQuant and W8A8 / W4A8: function preserved, outliers flattened, exact IR form, integer layers run."""

from __future__ import annotations

import numpy as np
import pytest
import zoo

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.compiler.calibrate import CalibrationConfig
from llmc.compiler.passes.smoothquant import linear_groups, outlier_ratio
from llmc.compiler.pipeline import PassContext, PipelineError, parse_pipeline, run_pipeline
from llmc.generate.interpreter import causal_mask
from llmc.ir import Module, parse_module, print_module, run_function, verify_module

CONFIG = dict(zoo.LLAMA, initializer_range=0.05)
CALIBRATION = CalibrationConfig(samples=4, length=32)
OUTLIERS = [5, 40]  # channels whose norm weight is scaled up, as in real LLMs' activation outliers


@pytest.fixture(scope="module")
def model() -> llmc.Model:
    m = llmc.load("llama", config=CONFIG, seed=0, max_length=128)
    for name, p in m.module.params.items():
        if name.endswith("layernorm.weight"):
            data = p.data.copy()
            data[OUTLIERS] *= 12.0
            p.data = data
    return m


def context() -> PassContext:
    return PassContext(calibration_config=CALIBRATION)


def prefill(module: Module, ids: np.ndarray) -> dict[str, np.ndarray]:
    n = len(ids)
    return run_function(module, "prefill", {"input_ids": ids[None], "mask": causal_mask(n, 0),
                                            "position_ids": np.arange(n, dtype=np.int64)[None]})


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b.astype(np.float64)))


IDS = np.random.default_rng(7).integers(0, 96, 24).astype(np.int64)


def test_smoothquant_preserves_the_function(model: llmc.Model) -> None:
    ctx = context()
    out = run_pipeline(model.module, parse_pipeline("smoothquant{alpha=0.5}"), ctx)
    before, after = prefill(model.module, IDS), prefill(out, IDS)
    for name in before:
        assert rel_err(after[name], before[name]) < 1e-5, name
    assert any(not np.array_equal(out.params[w].data, model.module.params[w].data) for w in out.params)
    folded = {g["folded"] for g in ctx.reports["smoothquant"]["groups"]}
    assert folded == {"norm", "mul", "linear"}  # qkv/gate-up into norms, down into up, o by a mul
    tokens = model.run(prompt_ids=[3, 4, 5], max_new_tokens=8, stop=False).tokens
    assert llmc.Model(out).run(prompt_ids=[3, 4, 5], max_new_tokens=8, stop=False).tokens == tokens


def test_smoothquant_flattens_activation_outliers(model: llmc.Model) -> None:
    out = run_pipeline(model.module, parse_pipeline("smoothquant"), context())
    stats_before = context().calibration(model.module)
    stats_after = context().calibration(out)  # measured again on the smoothed model
    for group in linear_groups(model.module):
        before = outlier_ratio(stats_before[group[0]].abs_max)
        after = outlier_ratio(stats_after[group[0]].abs_max)
        assert after < before, group
    qkv = linear_groups(model.module)[0]
    assert outlier_ratio(stats_after[qkv[0]].abs_max) < 0.5 * outlier_ratio(stats_before[qkv[0]].abs_max)


def test_smoothing_lowers_w8a8_error_on_outliers(model: llmc.Model) -> None:
    ref = prefill(model.module, IDS)["logits"]
    plain = run_pipeline(model.module, parse_pipeline("act-quant"), context())
    smooth = run_pipeline(model.module, parse_pipeline("smoothquant,act-quant"), context())
    assert rel_err(prefill(smooth, IDS)["logits"], ref) < rel_err(prefill(plain, IDS)["logits"], ref) < 0.1


@pytest.mark.parametrize(("pipeline", "tolerance"), [("act-quant", 0.1), ("act-quant{granularity=tensor}", 0.15),
                                                     ("act-quant{wbits=4,group=32}", 0.5),
                                                     ("smoothquant,act-quant{abits=8,wbits=8}", 0.1)])
def test_w8a8_verifies_round_trips_and_runs(model: llmc.Model, pipeline: str, tolerance: float) -> None:
    ctx = context()
    out = run_pipeline(model.module, parse_pipeline(pipeline), ctx)
    verify_module(out)
    assert parse_module(print_module(out)) == out
    for func in out.functions.values():
        ops = [n.op for n in func.nodes]
        assert "linear" in ops  # the output head stays float
        assert ops.count("qlinear") == 7 * CONFIG["num_hidden_layers"]
        assert ops.count("quantize_dynamic") == 4 * CONFIG["num_hidden_layers"]  # one per distinct input
    assert not any(p.type.dtype.is_float and p.name.endswith("_proj.weight") for p in out.params.values())
    generation = llmc.Model(out).run(prompt_ids=[3, 4, 5], max_new_tokens=6, stop=False)
    assert len(generation.tokens) == 6
    assert rel_err(prefill(out, IDS)["logits"], prefill(model.module, IDS)["logits"]) < tolerance
    assert set(ctx.reports["act-quant"]["acc_bits"].values()) == {32}


SQ_BEFORE = """
module "tiny" {vocab_size = 16} {
  param "emb" : tensor<16x8xf32>
  param "n1" : tensor<8xf32>
  param "wq" : tensor<8x8xf32>
  param "wk" : tensor<4x8xf32>
  param "wo" : tensor<8x8xf32>
  param "n2" : tensor<8xf32>
  param "wg" : tensor<12x8xf32>
  param "wu" : tensor<12x8xf32>
  param "wd" : tensor<8x12xf32>
  func @prefill(%input_ids: tensor<1xLxi64>, %mask: tensor<1x1xLxLxf32>, %position_ids: tensor<1xLxi64>) {
    %emb = param() {name = "emb"} : tensor<16x8xf32>
    %x = embedding(%emb, %input_ids) : tensor<1xLx8xf32>
    %n1 = param() {name = "n1"} : tensor<8xf32>
    %h = rms_norm(%x, %n1) {eps = 1e-06} : tensor<1xLx8xf32>
    %wq = param() {name = "wq"} : tensor<8x8xf32>
    %q = linear(%h, %wq) : tensor<1xLx8xf32>
    %wk = param() {name = "wk"} : tensor<4x8xf32>
    %k = linear(%h, %wk) : tensor<1xLx4xf32>
    %wo = param() {name = "wo"} : tensor<8x8xf32>%MUL%
    %o = linear(%q, %wo) : tensor<1xLx8xf32>
    %n2 = param() {name = "n2"} : tensor<8xf32>
    %h2 = rms_norm(%o, %n2) {eps = 1e-06} : tensor<1xLx8xf32>
    %wg = param() {name = "wg"} : tensor<12x8xf32>
    %g = linear(%h2, %wg) : tensor<1xLx12xf32>
    %wu = param() {name = "wu"} : tensor<12x8xf32>
    %u = linear(%h2, %wu) : tensor<1xLx12xf32>
    %a = silu(%g) : tensor<1xLx12xf32>
    %m = mul(%a, %u) : tensor<1xLx12xf32>
    %wd = param() {name = "wd"} : tensor<8x12xf32>
    %d = linear(%m, %wd) : tensor<1xLx8xf32>
    return %d, %k
  }
}
"""
SQ_MUL = """
    %wo_input_scale = param() {name = "wo.input_scale"} : tensor<8xf32>
    %0 = mul(%q, %wo_input_scale) : tensor<1xLx8xf32>"""


def tiny(text: str) -> Module:
    module = parse_module(text)
    rng = np.random.default_rng(3)
    for p in module.params.values():
        p.data = rng.standard_normal(p.type.static_shape()).astype(np.float32)
    return module


def test_smoothquant_ir_before_and_expected() -> None:
    before = tiny(SQ_BEFORE.replace("%MUL%", ""))
    ctx = context()
    out = run_pipeline(before, parse_pipeline("smoothquant"), ctx)
    expected = SQ_BEFORE.replace("%MUL%", SQ_MUL).replace("%o = linear(%q,", "%o = linear(%0,")
    expected = expected.replace('param "wd" : tensor<8x12xf32>', 'param "wd" : tensor<8x12xf32>\n'
                                '  param "wo.input_scale" : tensor<8xf32>')
    assert out == parse_module(expected)
    assert [g["folded"] for g in ctx.reports["smoothquant"]["groups"]] == ["norm", "mul", "norm", "linear"]
    ids = np.arange(10, dtype=np.int64)
    for name, value in prefill(before, ids).items():
        assert rel_err(prefill(out, ids)[name], value) < 1e-5


AQ_BEFORE = """
module "tiny" {} {
  param "w1" : tensor<4x64xf32>
  param "w2" : tensor<6x64xf32>
  param "b2" : tensor<6xf32>
  func @prefill(%x: tensor<1xLx64xf32>) {
    %w1 = param() {name = "w1"} : tensor<4x64xf32>
    %w2 = param() {name = "w2"} : tensor<6x64xf32>
    %b2 = param() {name = "b2"} : tensor<6xf32>
    %y1 = linear(%x, %w1) : tensor<1xLx4xf32>
    %y2 = linear(%x, %w2, %b2) : tensor<1xLx6xf32>
    return %y1, %y2
  }
}
"""
AQ_EXPECTED = """
module "tiny" {} {
  param "b2" : tensor<6xf32>
  param "w1.codes" : tensor<4x64xi4 #quant<bits=4,group=32,scale=f16,sym>>
  param "w1.scales" : tensor<4x2xf16>
  param "w2.codes" : tensor<6x64xi4 #quant<bits=4,group=32,scale=f16,sym>>
  param "w2.scales" : tensor<6x2xf16>
  func @prefill(%x: tensor<1xLx64xf32>) {
    %b2 = param() {name = "b2"} : tensor<6xf32>
    %x_q, %x_s = quantize_dynamic(%x) {bits = 8} : tensor<1xLx64xi8>, tensor<1xLx1xf32>
    %w1_codes = param() {name = "w1.codes"} : tensor<4x64xi4 #quant<bits=4,group=32,scale=f16,sym>>
    %w1_scales = param() {name = "w1.scales"} : tensor<4x2xf16>
    %y1 = qlinear(%x_q, %x_s, %w1_codes, %w1_scales) {group = 32, acc_bits = 32} : tensor<1xLx4xf32>
    %w2_codes = param() {name = "w2.codes"} : tensor<6x64xi4 #quant<bits=4,group=32,scale=f16,sym>>
    %w2_scales = param() {name = "w2.scales"} : tensor<6x2xf16>
    %y2 = qlinear(%x_q, %x_s, %w2_codes, %w2_scales, %b2) {group = 32, acc_bits = 32} : tensor<1xLx6xf32>
    return %y1, %y2
  }
}
"""
AQ_TENSOR = """
    %x_flat = reshape(%x) {shape = [64*L]} : tensor<64*Lxf32>
    %x_qflat, %x_scale = quantize_dynamic(%x_flat) {bits = 8} : tensor<64*Lxi8>, tensor<1xf32>
    %x_q = reshape(%x_qflat) {shape = [1, L, 64]} : tensor<1xLx64xi8>
    %x_s1 = reshape(%x_scale) {shape = [1, 1, 1]} : tensor<1x1x1xf32>
    %x_s = expand(%x_s1) {shape = [1, L, 1]} : tensor<1xLx1xf32>"""


def test_act_quant_ir_before_and_expected() -> None:
    before = tiny(AQ_BEFORE)
    out = run_pipeline(before, parse_pipeline("act-quant{wbits=4,group=32}"))
    assert out == parse_module(AQ_EXPECTED)
    assert out.functions["prefill"].outputs[0] is out.functions["prefill"].nodes[4].outputs[0]
    per_tensor = run_pipeline(before, parse_pipeline("act-quant{wbits=4,group=32,granularity=tensor}"))
    quantize = "\n    %x_q, %x_s = quantize_dynamic(%x) {bits = 8} : tensor<1xLx64xi8>, tensor<1xLx1xf32>"
    assert per_tensor == parse_module(AQ_EXPECTED.replace(quantize, AQ_TENSOR))
    x = np.random.default_rng(0).standard_normal((1, 5, 64)).astype(np.float32)
    scales = run_function(per_tensor, "prefill", {"x": x})
    token = run_function(out, "prefill", {"x": x})
    for name in token:
        assert rel_err(scales[name], token[name]) < 0.02


@pytest.mark.parametrize("pipeline", ["act-quant{abits=3}", "act-quant{wbits=1}", "act-quant{wbits=9}",
                                      "act-quant{granularity=channel}", "act-quant{group=-1}",
                                      "act-quant{group=48}", "smoothquant{alpha=1.5}", "smoothquant{alpha=x}"])
def test_bad_options_are_refused(model: llmc.Model, pipeline: str) -> None:
    with pytest.raises(PipelineError):
        run_pipeline(model.module, parse_pipeline(pipeline))
