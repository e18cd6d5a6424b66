"""The ``fuse`` rules as Before / Expected text (results unchanged), and the rewrite driver's
matching. tests/frontend/test_families.py checks that every family imports fused."""

from __future__ import annotations

import numpy as np
import pytest
from zoo import ONNX_STEP_MASK, onnx_sdpa

from llmc.compiler.passes.fuse import fuse_module
from llmc.compiler.passes.rewrite import Const, Graph, Rule, Var, op, rewrite
from llmc.ir import Module, parse_module, print_module, run_function, verify_module

PARAMS = ["w : tensor<8xf32>", "inv : tensor<2xf32>", "proj.weight : tensor<6x4xf32>", "proj.bias : tensor<6xf32>"]


def text_module(body: str, inputs: str, outputs: str, params: list[str], func: str = "f") -> str:
    declared = "".join(f'  param "{p.split(" : ")[0]}" : {p.split(" : ")[1]}\n' for p in params)
    return f'module "m" {{}} {{\n{declared}  func @{func}({inputs}) {{\n{body}\n    return {outputs}\n  }}\n}}'


def module_of(body: str, inputs: str, outputs: str, func: str = "f") -> Module:
    return parse_module(text_module(body, inputs, outputs, PARAMS, func))


def fused(before: Module) -> Module:
    fuse_module(before)
    verify_module(before)
    return before


def assert_fuses_elementwise(body: str, fused_op: str, span: float) -> None:
    """``body`` (``%x`` -> ``%y``, [1, L, 8]) becomes one ``fused_op``, with the same results on [-span, span]."""
    x = "%x: tensor<1xLx8xf32>"
    before = module_of(body, x, "%y")
    data = {"x": np.linspace(-span, span, 24, dtype=np.float32).reshape(1, 3, 8)}
    want = run_function(before, "f", data)["y"]
    after = fused(before)  # fuses in place
    assert print_module(after) == print_module(module_of(f"    %y = {fused_op}(%x) : tensor<1xLx8xf32>", x, "%y"))
    np.testing.assert_allclose(run_function(after, "f", data)["y"], want, rtol=1e-6, atol=1e-7)


def with_data(module: Module, seed: int = 0) -> Module:
    rng = np.random.default_rng(seed)
    for p in module.params.values():
        p.data = rng.standard_normal(p.type.static_shape()).astype(np.float32)
    return module


RMS_BEFORE = """\
    %w = param() {name = "w"} : tensor<8xf32>
    %two = constant() {value = 2.0, shape = [], dtype = f32} : tensor<f32>
    %sq = pow(%x, %two) : tensor<1xLx8xf32>
    %mean = reduce_mean(%sq) {axes = [-1], keepdim = true} : tensor<1xLx1xf32>
    %eps = constant() {value = 1e-06, shape = [], dtype = f32} : tensor<f32>
    %var = add(%mean, %eps) : tensor<1xLx1xf32>
    %inv = rsqrt(%var) : tensor<1xLx1xf32>
    %normed = mul(%x, %inv) : tensor<1xLx8xf32>
    %y = mul(%w, %normed) : tensor<1xLx8xf32>"""
RMS_EXPECTED = """\
    %w = param() {name = "w"} : tensor<8xf32>
    %y = rms_norm(%x, %w) {eps = 1e-06} : tensor<1xLx8xf32>"""


def test_rms_norm_rule() -> None:
    x = "%x: tensor<1xLx8xf32>"
    before = with_data(module_of(RMS_BEFORE, x, "%y"))
    want = run_function(before, "f", {"x": np.random.default_rng(1).standard_normal((1, 3, 8)).astype(np.float32)})
    assert print_module(fused(before)) == print_module(module_of(RMS_EXPECTED, x, "%y"))
    got = run_function(before, "f", {"x": np.random.default_rng(1).standard_normal((1, 3, 8)).astype(np.float32)})
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6)


def test_gemma_rms_norm_keeps_its_unit_offset_weight() -> None:
    body = RMS_BEFORE.replace("%y = mul(%w, %normed)", "%y = mul(%normed, %w1)").replace(
        '%w = param() {name = "w"} : tensor<8xf32>',
        '%w = param() {name = "w"} : tensor<8xf32>\n    %one = constant() {value = 1.0, shape = [], dtype = f32} : '
        'tensor<f32>\n    %w1 = add(%w, %one) : tensor<8xf32>')
    after = print_module(fused(module_of(body, "%x: tensor<1xLx8xf32>", "%y")))
    assert "%y = rms_norm(%x, %w1) {eps = 1e-06}" in after and "rsqrt" not in after and "w.offset" in after


def test_rms_norm_of_another_value_is_left_alone() -> None:
    body = RMS_BEFORE.replace("%normed = mul(%x, %inv)", "%normed = mul(%z, %inv)")
    before = module_of(body, "%x: tensor<1xLx8xf32>, %z: tensor<1xLx8xf32>", "%y")
    assert print_module(fused(before)) == print_module(module_of(body, "%x: tensor<1xLx8xf32>, %z: tensor<1xLx8xf32>", "%y"))


# torch.onnx's RMSNorm: the mean over axis 2, eps rounded to float32, 1 / sqrt as reciprocal or div
ONNX_RMS_FORMS = {
    "reciprocal": "%root = sqrt(%var) : tensor<1xLx1xf32>\n    %inv = reciprocal(%root) : tensor<1xLx1xf32>",
    "div": "%root = sqrt(%var) : tensor<1xLx1xf32>\n    %one = constant() {value = 1.0, shape = [], dtype = f32} : "
           "tensor<f32>\n    %inv = div(%one, %root) : tensor<1xLx1xf32>",
}


def onnx_rms(form: str) -> str:
    return (RMS_BEFORE.replace("axes = [-1]", "axes = [2]").replace("value = 1e-06", "value = 9.999999974752427e-07")
            .replace("%inv = rsqrt(%var) : tensor<1xLx1xf32>", ONNX_RMS_FORMS[form]))


@pytest.mark.parametrize("form", list(ONNX_RMS_FORMS))
def test_rms_norm_rule_takes_the_onnx_export_forms(form: str) -> None:
    x = "%x: tensor<1xLx8xf32>"
    before = with_data(module_of(onnx_rms(form), x, "%y"))
    data = {"x": np.random.default_rng(8).standard_normal((1, 3, 8)).astype(np.float32)}
    want = run_function(before, "f", data)["y"]
    assert print_module(fused(before)) == print_module(module_of(RMS_EXPECTED, x, "%y"))
    np.testing.assert_array_equal(run_function(before, "f", data)["y"], want)


def test_a_mean_over_the_tokens_is_not_rms_norm() -> None:
    body = onnx_rms("reciprocal").replace("axes = [2]", "axes = [1]").replace("tensor<1xLx1xf32>", "tensor<1x1x8xf32>")
    x = "%x: tensor<1xLx8xf32>"
    assert print_module(fused(module_of(body, x, "%y"))) == print_module(module_of(body, x, "%y"))


SILU_BEFORE = """\
    %s = sigmoid(%x) : tensor<1xLx8xf32>
    %y = mul(%x, %s) : tensor<1xLx8xf32>"""


def test_silu_rule() -> None:
    assert_fuses_elementwise(SILU_BEFORE, "silu", 6.0)


def test_a_sigmoid_gating_another_value_is_not_silu() -> None:
    body = SILU_BEFORE.replace("mul(%x, %s)", "mul(%z, %s)")
    inputs = "%x: tensor<1xLx8xf32>, %z: tensor<1xLx8xf32>"
    assert print_module(fused(module_of(body, inputs, "%y"))) == print_module(module_of(body, inputs, "%y"))


ROPE_BEFORE = """\
    %inv = param() {name = "inv"} : tensor<2xf32>
    %p3 = reshape(%pos) {shape = [1, L, 1]} : tensor<1xLx1xi64>
    %pf = cast(%p3) {dtype = f32} : tensor<1xLx1xf32>
    %f = mul(%pf, %inv) : tensor<1xLx2xf32>
    %emb = concat(%f, %f) {axis = 2} : tensor<1xLx4xf32>
    %c = cos(%emb) : tensor<1xLx4xf32>
    %one = constant() {value = 1.0, shape = [], dtype = f32} : tensor<f32>
    %cs = mul(%c, %one) : tensor<1xLx4xf32>
    %s = sin(%emb) : tensor<1xLx4xf32>
    %ss = mul(%s, %one) : tensor<1xLx4xf32>
    %c4 = reshape(%cs) {shape = [1, 1, L, 4]} : tensor<1x1xLx4xf32>
    %s4 = reshape(%ss) {shape = [1, 1, L, 4]} : tensor<1x1xLx4xf32>
    %xc = mul(%x, %c4) : tensor<1x2xLx4xf32>
    %lo = slice(%x) {axis = 3, start = 0, end = 2, step = 1} : tensor<1x2xLx2xf32>
    %hi = slice(%x) {axis = 3, start = 2, end = 4, step = 1} : tensor<1x2xLx2xf32>
    %nhi = neg(%hi) : tensor<1x2xLx2xf32>
    %rot = concat(%nhi, %lo) {axis = 3} : tensor<1x2xLx4xf32>
    %rs = mul(%rot, %s4) : tensor<1x2xLx4xf32>
    %y = add(%xc, %rs) : tensor<1x2xLx4xf32>"""
ROPE_EXPECTED = """\
    %inv = param() {name = "inv"} : tensor<2xf32>
    %y = rope(%x, %pos, %inv) {seq_axis = -2, scale = 1.0} : tensor<1x2xLx4xf32>"""
ROPE_INPUTS = "%x: tensor<1x2xLx4xf32>, %pos: tensor<1xLxi64>"


def test_rope_rule_matches_the_primitives() -> None:
    before = with_data(module_of(ROPE_BEFORE, ROPE_INPUTS, "%y"))
    rng = np.random.default_rng(2)
    inputs = {"x": rng.standard_normal((1, 2, 5, 4)).astype(np.float32), "pos": np.arange(3, 8)[None]}
    want = run_function(before, "f", inputs)["y"]
    assert print_module(fused(before)) == print_module(module_of(ROPE_EXPECTED, ROPE_INPUTS, "%y"))
    np.testing.assert_allclose(run_function(before, "f", inputs)["y"], want, rtol=1e-6, atol=1e-6)


def test_rope_with_halves_swapped_is_not_rope() -> None:
    body = ROPE_BEFORE.replace("%rot = concat(%nhi, %lo)", "%rot = concat(%lo, %nhi)")
    after = print_module(fused(module_of(body, ROPE_INPUTS, "%y")))
    assert "rope(" not in after and "neg(" in after


GELU_BEFORE = """\
    %half = constant() {value = 0.5, shape = [], dtype = f32} : tensor<f32>
    %hx = mul(%x, %half) : tensor<1xLx8xf32>
    %three = constant() {value = 3.0, shape = [], dtype = f32} : tensor<f32>
    %cube = pow(%x, %three) : tensor<1xLx8xf32>
    %k = constant() {value = 0.044715, shape = [], dtype = f32} : tensor<f32>
    %kc = mul(%cube, %k) : tensor<1xLx8xf32>
    %inner = add(%x, %kc) : tensor<1xLx8xf32>
    %c = constant() {value = 0.7978845608028654, shape = [], dtype = f32} : tensor<f32>
    %arg = mul(%inner, %c) : tensor<1xLx8xf32>
    %t = tanh(%arg) : tensor<1xLx8xf32>
    %one = constant() {value = 1.0, shape = [], dtype = f32} : tensor<f32>
    %t1 = add(%t, %one) : tensor<1xLx8xf32>
    %y = mul(%hx, %t1) : tensor<1xLx8xf32>"""


def test_gelu_tanh_rule() -> None:
    assert_fuses_elementwise(GELU_BEFORE, "gelu_tanh", 4.0)


def test_driver_binds_a_variable_once_and_tries_both_operand_orders() -> None:
    module = module_of("""\
    %a = mul(%x, %y) : tensor<4xf32>
    %b = add(%a, %x) : tensor<4xf32>
    %c = add(%y, %a) : tensor<4xf32>""", "%x: tensor<4xf32>, %y: tensor<4xf32>", "%b, %c")
    rule = Rule("fma", op("add", op("mul", Var("p"), Var("q")), Var("p")),
                lambda m, b: b.op("sub", [m["p"], m["q"]]))
    fired = rewrite(module, module.functions["f"], [rule])
    text = print_module(module)
    assert fired == {"fma": 2}, text  # %b: p=x (first order); %c: add(y, a) = add(a, y) with mul(x, y) = mul(y, x)
    assert "%b = sub(%x, %y)" in text and "%c = sub(%y, %x)" in text


def test_driver_runs_to_a_fixpoint_and_keeps_output_names() -> None:
    module = module_of("""\
    %one = constant() {value = 1.0, shape = [], dtype = f32} : tensor<f32>
    %a = mul(%x, %one) : tensor<4xf32>
    %b = mul(%a, %one) : tensor<4xf32>
    %out = mul(%b, %one) : tensor<4xf32>""", "%x: tensor<4xf32>", "%out")
    times_one = Rule("times-one", op("mul", Var("v"), Const(value=1.0)), lambda m, b: b.op("neg", [b.op("neg", [m["v"]])]))
    graph = Graph(module.functions["f"])
    assert graph.match(op("mul", Var("v"), Const("k")), module.functions["f"].outputs[0]).consts == {"k": 1.0}
    rewrite(module, module.functions["f"], [times_one])
    assert [n.op for n in module.functions["f"].nodes] == ["neg"] * 6
    assert module.functions["f"].outputs[0].name == "out"


def test_a_named_op_used_twice_matches_one_value() -> None:
    module = module_of("""\
    %a = neg(%x) : tensor<4xf32>
    %b = neg(%x) : tensor<4xf32>
    %c = add(%a, %b) : tensor<4xf32>
    %d = add(%a, %a) : tensor<4xf32>""", "%x: tensor<4xf32>", "%c, %d")
    negated = op("neg", Var("v"), bind="n")
    graph = Graph(module.functions["f"])
    c, d = module.functions["f"].outputs
    assert graph.match(op("add", negated, negated), c) is None
    found = graph.match(op("add", negated, negated), d)
    assert found is not None and found["n"].name == "a"


WINDOW_BEFORE = """\
    %keys = iota() {start = 0, end = S, step = 1, dtype = i64} : tensor<Sxi64>
    %p3 = reshape(%pos) {shape = [1, 1, L]} : tensor<1x1xLxi64>
    %p4 = reshape(%p3) {shape = [1, 1, L, 1]} : tensor<1x1xLx1xi64>
    %distance = sub(%p4, %keys) : tensor<1x1xLxSxi64>
    %window = constant() {value = 3, shape = [], dtype = i64} : tensor<i64>
    %outside = ge(%distance, %window) : tensor<1x1xLxSxbool>
    %lowest = constant() {value = -3.4028234663852886e+38, shape = [], dtype = f32} : tensor<f32>
    %y = where(%outside, %lowest, %mask) : tensor<1x1xLxSxf32>"""
WINDOW_EXPECTED = """\
    %y = sliding_window_mask(%mask, %pos) {window = 3} : tensor<1x1xLxSxf32>"""
WINDOW_INPUTS = "%mask: tensor<1x1xLxSxf32>, %pos: tensor<1xLxi64>"


def test_sliding_window_rule_merges_the_reshapes_and_keeps_the_mask() -> None:
    from llmc.generate.interpreter import causal_mask

    before = module_of(WINDOW_BEFORE, WINDOW_INPUTS, "%y")
    inputs = {"mask": causal_mask(4, 5), "pos": np.arange(5, 9)[None]}
    want = run_function(before, "f", inputs)["y"]
    assert print_module(fused(before)) == print_module(module_of(WINDOW_EXPECTED, WINDOW_INPUTS, "%y"))
    got = run_function(before, "f", inputs)["y"]
    np.testing.assert_array_equal(got, want)
    assert (got[0, 0, 0] > -1e30).sum() == 3  # position 5 sees keys 3, 4 and 5


def test_a_window_over_other_keys_is_left_alone() -> None:
    body = WINDOW_BEFORE.replace("start = 0, end = S", "start = 1, end = S+1")
    after = print_module(fused(module_of(body, WINDOW_INPUTS, "%y")))
    assert "sliding_window_mask" not in after and "%p4 = reshape(%pos) {shape = [1, 1, L, 1]}" in after


PROJ = """\
    %w = param() {name = "proj.weight"} : tensor<6x4xf32>
    %b = param() {name = "proj.bias"} : tensor<6xf32>
    %y = linear(%x, %w, %b) : tensor<1xLx6xf32>"""
PROJ_INPUTS = "%x: tensor<1xLx4xf32>"


def test_a_scalar_multiple_of_a_linear_layer_folds_into_its_weights() -> None:
    before = with_data(module_of(PROJ + """
    %c = constant() {value = 4.0, shape = [], dtype = f32} : tensor<f32>
    %z = div(%y, %c) : tensor<1xLx6xf32>""", PROJ_INPUTS, "%z"))
    x = {"x": np.random.default_rng(3).standard_normal((1, 2, 4)).astype(np.float32)}
    want = run_function(before, "f", x)["z"]
    text = print_module(fused(before))
    assert "%z = linear(%x, %proj_weight_scaled, %proj_bias_scaled)" in text and "div(" not in text, text
    np.testing.assert_allclose(run_function(before, "f", x)["z"], want, rtol=1e-6)


def test_slices_of_a_fused_projection_become_layers_of_its_rows() -> None:
    before = with_data(module_of(PROJ + """
    %q = slice(%y) {axis = 2, start = 0, end = 4} : tensor<1xLx4xf32>
    %k = slice(%y) {axis = 2, start = 4, end = 6} : tensor<1xLx2xf32>""", PROJ_INPUTS, "%q, %k"))
    x = {"x": np.random.default_rng(4).standard_normal((1, 2, 4)).astype(np.float32)}
    want = run_function(before, "f", x)
    after = fused(before)
    ops = [n.op for n in after.functions["f"].nodes]
    assert ops.count("linear") == 2 and "slice" not in ops
    assert {"proj.rows0_4.weight", "proj.rows4_6.bias"} <= set(after.params)
    got = run_function(after, "f", x)
    for name in ("q", "k"):
        np.testing.assert_array_equal(got[name], want[name])


def test_a_projection_also_used_whole_is_not_split() -> None:
    text = PROJ + """
    %q = slice(%y) {axis = 2, start = 0, end = 4} : tensor<1xLx4xf32>"""
    after = print_module(fused(module_of(text, PROJ_INPUTS, "%q, %y")))
    assert "slice(%y)" in after


def test_a_parameter_plus_a_scalar_is_a_parameter() -> None:
    before = with_data(module_of(RMS_BEFORE.replace("%y = mul(%w, %normed)", "%y = mul(%normed, %w1)").replace(
        '%w = param() {name = "w"} : tensor<8xf32>',
        '%w = param() {name = "w"} : tensor<8xf32>\n    %one = constant() {value = 1.0, shape = [], dtype = f32} : '
        'tensor<f32>\n    %w1 = add(%w, %one) : tensor<8xf32>'), "%x: tensor<1xLx8xf32>", "%y"))
    after = fused(before)
    assert "%y = rms_norm(%x, %w1) {eps = 1e-06}" in print_module(after)
    np.testing.assert_array_equal(after.params["w.offset"].data, after.params["w"].data + 1)


NEOX = """\
    %w = param() {name = "qkv.weight"} : tensor<12x4xf32>
    %inv = param() {name = "inv"} : tensor<1xf32>
    %y = linear(%x, %w) : tensor<1xLx12xf32>
    %heads = reshape(%y) {shape = [1, L, 2, 6]} : tensor<1xLx2x6xf32>
    %t = transpose(%heads) {perm = [0, 2, 1, 3]} : tensor<1x2xLx6xf32>
    %q = slice(%t) {axis = 3, start = 0, end = 2} : tensor<1x2xLx2xf32>
    %k = slice(%t) {axis = 3, start = 2, end = 4} : tensor<1x2xLx2xf32>
    %v = slice(%t) {axis = 3, start = 4, end = 6} : tensor<1x2xLx2xf32>
    %qr = slice(%q) {axis = 3, start = 0, end = 2} : tensor<1x2xLx2xf32>"""


def test_a_per_head_fused_projection_splits_into_one_layer_per_operand() -> None:
    text = NEOX.replace('    %qr = slice(%q) {axis = 3, start = 0, end = 2} : tensor<1x2xLx2xf32>', '')
    module = parse_module(text_module(text, "%x: tensor<1xLx4xf32>", "%q, %k, %v", ["qkv.weight : tensor<12x4xf32>",
                                                                                    "inv : tensor<1xf32>"]))
    with_data(module)
    x = {"x": np.random.default_rng(5).standard_normal((1, 3, 4)).astype(np.float32)}
    want = run_function(module, "f", x)
    after = fused(module)
    assert [n.op for n in after.functions["f"].nodes].count("linear") == 3
    assert after.params["qkv.heads2_4.weight"].data.shape == (4, 4)  # rows 2, 3 of head 0 and 8, 9 of head 1
    got = run_function(after, "f", x)
    for name in ("q", "k", "v"):
        np.testing.assert_array_equal(got[name], want[name])


def test_partial_rotary_is_one_rope_over_the_whole_head() -> None:
    body = ROPE_BEFORE.replace("%x", "%xr").replace("%y = add(%xrc, %rs)", "%r = add(%xrc, %rs)")
    body = body.replace('%inv = param() {name = "inv"} : tensor<2xf32>',
                        '%inv = param() {name = "inv"} : tensor<2xf32>\n'
                        '    %xr = slice(%x) {axis = 3, start = 0, end = 4, step = 1} : tensor<1x2xLx4xf32>\n'
                        '    %xp = slice(%x) {axis = 3, start = 4, end = 12, step = 1} : tensor<1x2xLx8xf32>')
    body += "\n    %y = concat(%r, %xp) {axis = 3} : tensor<1x2xLx12xf32>"
    inputs = "%x: tensor<1x2xLx12xf32>, %pos: tensor<1xLxi64>"
    before = with_data(module_of(body, inputs, "%y"))
    data = {"x": np.random.default_rng(6).standard_normal((1, 2, 3, 12)).astype(np.float32), "pos": np.arange(3)[None]}
    want = run_function(before, "f", data)["y"]
    text = print_module(fused(before))
    assert "%y = rope(%x, %pos, %inv) {seq_axis = -2, scale = 1.0, rotary_dim = 4}" in text, text
    np.testing.assert_allclose(run_function(before, "f", data)["y"], want, rtol=1e-6, atol=1e-6)


MOE_PARAMS = ['router : tensor<4x8xf32>', 'gu : tensor<4x6x8xf32>', 'dn : tensor<4x8x3xf32>']
MOE_WEIGHTS = """\
    %router = param() {name = "router"} : tensor<4x8xf32>
    %gu = param() {name = "gu"} : tensor<4x6x8xf32>
    %dn = param() {name = "dn"} : tensor<4x8x3xf32>"""
MOE_BEFORE = MOE_WEIGHTS + """
    %logits = linear(%x, %router) : tensor<2x4xf32>
    %p = softmax(%logits) {axis = -1} : tensor<2x4xf32>
    %tv, %ti = topk(%p) {k = 2, axis = 1} : tensor<2x2xf32>, tensor<2x2xi64>
    %s = reduce_sum(%tv) {axes = [-1], keepdim = true} : tensor<2x1xf32>
    %w = div(%tv, %s) : tensor<2x2xf32>
    %x3 = reshape(%x) {shape = [2, 1, 8]} : tensor<2x1x8xf32>
    %xr = expand(%x3) {shape = [2, 2, 8]} : tensor<2x2x8xf32>
    %ids = reshape(%ti) {shape = [4]} : tensor<4xi64>
    %g1 = gather(%gu, %ids) {axis = 0} : tensor<4x6x8xf32>
    %xc = reshape(%xr) {shape = [4, 8, 1]} : tensor<4x8x1xf32>
    %h3 = matmul(%g1, %xc) : tensor<4x6x1xf32>
    %h = reshape(%h3) {shape = [4, 6]} : tensor<4x6xf32>
    %g = slice(%h) {axis = 1, start = 0, end = 3} : tensor<4x3xf32>
    %u = slice(%h) {axis = 1, start = 3, end = 6} : tensor<4x3xf32>
    %sg = silu(%g) : tensor<4x3xf32>
    %a = mul(%sg, %u) : tensor<4x3xf32>
    %d1 = gather(%dn, %ids) {axis = 0} : tensor<4x8x3xf32>
    %ac = reshape(%a) {shape = [4, 3, 1]} : tensor<4x3x1xf32>
    %o3 = matmul(%d1, %ac) : tensor<4x8x1xf32>
    %o = reshape(%o3) {shape = [4, 8]} : tensor<4x8xf32>
    %wc = reshape(%w) {shape = [4, 1]} : tensor<4x1xf32>
    %ow = mul(%o, %wc) : tensor<4x8xf32>
    %o2 = reshape(%ow) {shape = [2, 2, 8]} : tensor<2x2x8xf32>
    %y = reduce_sum(%o2) {axes = [1], keepdim = false} : tensor<2x8xf32>"""
MOE_EXPECTED = MOE_WEIGHTS + """
    %y = moe(%x, %router, %gu, %dn) {top_k = 2, normalize = true} : tensor<2x8xf32>"""


def test_a_batched_mixture_of_experts_is_one_moe_op() -> None:
    before = with_data(parse_module(text_module(MOE_BEFORE, "%x: tensor<2x8xf32>", "%y", MOE_PARAMS)))
    x = {"x": np.random.default_rng(7).standard_normal((2, 8)).astype(np.float32)}
    want = run_function(before, "f", x)["y"]
    expected = parse_module(text_module(MOE_EXPECTED, "%x: tensor<2x8xf32>", "%y", MOE_PARAMS))
    assert print_module(fused(before)) == print_module(expected)
    np.testing.assert_array_equal(run_function(before, "f", x)["y"], want)


def test_experts_chosen_by_another_router_are_not_a_moe() -> None:
    body = MOE_BEFORE.replace("%ids = reshape(%ti)", "%ids = reshape(%other)")
    text = text_module(body, "%x: tensor<2x8xf32>, %other: tensor<2x2xi64>", "%y", MOE_PARAMS)
    assert "moe(" not in print_module(fused(parse_module(text)))


# The cache of a grouped KV head and its keys and values expanded to the two query heads, unchanged by the rule
SDPA_KV = """\
    %k = concat(%past_k, %new_k) {axis = 2} : tensor<1x1xL+Px4xf32>
    %v = concat(%past_v, %new_v) {axis = 2} : tensor<1x1xL+Px4xf32>
    %k5 = reshape(%k) {shape = [1, 1, 1, L+P, 4]} : tensor<1x1x1xL+Px4xf32>
    %kx = expand(%k5) {shape = [1, 1, 2, L+P, 4]} : tensor<1x1x2xL+Px4xf32>
    %v5 = reshape(%v) {shape = [1, 1, 1, L+P, 4]} : tensor<1x1x1xL+Px4xf32>
    %vx5 = expand(%v5) {shape = [1, 1, 2, L+P, 4]} : tensor<1x1x2xL+Px4xf32>
    %vx = reshape(%vx5) {shape = [1, 2, L+P, 4]} : tensor<1x2xL+Px4xf32>
"""
# torch.onnx's scaled_dot_product_attention in a step program: keys of a grouped KV head expanded, the
# mask built from the cache positions and the attention_mask the import computes from the step's mask
SDPA_BEFORE = ONNX_STEP_MASK + """\
    %causal = le(%keys4, %queries) : tensor<1x1xLxL+Pxbool>
    %true = constant() {value = 1, shape = [], dtype = bool} : tensor<bool>
    %causal1 = logical_and(%true, %causal) : tensor<1x1xLxL+Pxbool>
    %padded = gather(%flat, %keys4) {axis = 0} : tensor<1x1x1xL+Pxbool>
    %keep = logical_and(%causal1, %padded) : tensor<1x1xLxL+Pxbool>
    %lowest = constant() {value = -3.4028234663852886e+38, shape = [], dtype = f32} : tensor<f32>
    %bias = where(%keep, %zero, %lowest) : tensor<1x1xLxL+Pxf32>
""" + SDPA_KV + """\
    %k3 = reshape(%kx) {shape = [2, L+P, 4]} : tensor<2xL+Px4xf32>
    %kt3 = transpose(%k3) {perm = [0, 2, 1]} : tensor<2x4xL+Pxf32>
    %kt = reshape(%kt3) {shape = [1, 2, 4, L+P]} : tensor<1x2x4xL+Pxf32>
""" + onnx_sdpa("vx")
SDPA_EXPECTED = SDPA_KV + """\
    %0 = reshape(%kx) {shape = [1, 2, L+P, 4]} : tensor<1x2xL+Px4xf32>
    %y = attention(%q, %0, %vx, %mask) {scale = 0.49999997} : tensor<1x2xLx4xf32>"""
SDPA_INPUTS = ("%q: tensor<1x2xLx4xf32>, %mask: tensor<1x1xLxL+Pxf32>, %past_k: tensor<1x1xPx4xf32>, "
               "%new_k: tensor<1x1xLx4xf32>, %past_v: tensor<1x1xPx4xf32>, %new_v: tensor<1x1xLx4xf32>")


def sdpa_fused(body: str, inputs: str = SDPA_INPUTS, func: str = "step") -> bool:
    after = print_module(fused(module_of(body, inputs, "%y", func)))
    assert ("attention(" in after) != ("softmax(" in after), after
    return "attention(" in after


def test_onnx_attention_over_the_steps_causal_mask_is_one_attention_op() -> None:
    from llmc.generate.interpreter import causal_mask

    before = module_of(SDPA_BEFORE, SDPA_INPUTS, "%y", "step")
    rng = np.random.default_rng(9)
    inputs = {"q": rng.standard_normal((1, 2, 3, 4)).astype(np.float32), "mask": causal_mask(3, 2),
              **{f"{age}_{kv}": rng.standard_normal((1, 1, n, 4)).astype(np.float32)
                 for kv in "kv" for age, n in (("past", 2), ("new", 3))}}
    want = run_function(before, "step", inputs)["y"]
    assert print_module(fused(before)) == print_module(module_of(SDPA_EXPECTED, SDPA_INPUTS, "%y", "step"))
    np.testing.assert_allclose(run_function(before, "step", inputs)["y"], want, rtol=1e-6, atol=1e-6)


def test_attention_under_another_mask_is_left_alone() -> None:
    assert sdpa_fused(SDPA_BEFORE)
    assert not sdpa_fused(SDPA_BEFORE, func="f")  # a plain function has no step mask
    assert not sdpa_fused(SDPA_BEFORE.replace("reshape(%positions)", "reshape(%steps)"))  # queries not after the past
    assert not sdpa_fused(SDPA_BEFORE.replace("le(%keys4, %queries)", "le(%queries, %keys4)"))  # anti-causal
    assert not sdpa_fused(SDPA_BEFORE.replace("eq(%mask, %zero)", "eq(%other, %zero)"),
                          SDPA_INPUTS + ", %other: tensor<1x1xLxL+Pxf32>")  # padding from another mask
    assert not sdpa_fused(SDPA_BEFORE.replace("le(%keys4, %queries)", "lt(%keys4, %queries)"))  # the diagonal masked
    assert not sdpa_fused(SDPA_BEFORE.replace("%kt3 = transpose(%k3) {perm = [0, 2, 1]}",
                                              "%kt3 = transpose(%k3) {perm = [2, 0, 1]}").replace(
        "tensor<2x4xL+Pxf32>", "tensor<4x2xL+Pxf32>"))  # not k^T
