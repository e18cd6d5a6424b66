"""The ``outliers`` pass: dense-and-sparse decomposition of the linear weights."""

from __future__ import annotations

import numpy as np
import pytest
from test_sparsify import run_both, tiny_lm, with_data

from llmc.compiler.passes.linear import linear_layers
from llmc.compiler.passes.outliers import outlier_count, split
from llmc.compiler.pipeline import PassContext, PipelineError, parse_pipeline, run_pipeline
from llmc.ir import (
    F16,
    F32,
    I64,
    Builder,
    Function,
    Module,
    Param,
    TensorType,
    parse_module,
    print_module,
    run_function,
)
from llmc.ir.types import Dim, SparseEncoding
from llmc.ir.verify import verify_module


def picked(side: np.ndarray) -> set[int]:
    return set(np.flatnonzero(side).tolist())


def top(score: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-score, axis=None)[:k].tolist())


def test_split_reconstructs_exactly():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((32, 64)) * 0.05).astype(np.float32)
    w.flat[rng.choice(w.size, 6, replace=False)] *= 40.0
    dense, side = split(w, np.abs(w), 0.005)
    k = round(0.005 * w.size)
    assert side.dtype == np.float16 and np.count_nonzero(side) == k == 10
    assert picked(side) == top(np.abs(w), k)
    np.testing.assert_array_equal(dense + side.astype(np.float32), w)
    mask = side != 0
    assert (np.abs(dense[mask]) <= 2.0**-11 * np.abs(w[mask])).all()  # only the f16 rounding residual
    np.testing.assert_array_equal(dense[~mask], w[~mask])


def test_outlier_count_rounds_to_nearest_and_keeps_one():
    assert outlier_count(2048, 0.005) == 10
    assert outlier_count(1000, 0.0015) == 2
    assert outlier_count(100, 0.001) == 1


def linear_reading(module: Module, func: str, weight: str):
    nodes = module.functions[func].nodes
    values = {n.outputs[0].name for n in nodes if n.op == "param" and n.attrs["name"] == weight}
    (node,) = [n for n in nodes if n.op == "linear" and n.inputs[1].name in values]
    return node


def users(module: Module, func: str, name: str) -> list[tuple[str, tuple[str, ...]]]:
    return [(n.op, tuple(v.name for v in n.outputs)) for n in module.functions[func].users().get(name, [])]


@pytest.mark.parametrize("func", ["prefill", "decode"])
def test_every_linear_gets_a_side_path(func):
    module = tiny_lm()
    context = PassContext()
    out = run_pipeline(module, parse_pipeline("outliers{fraction=0.01}"), context)
    layers = linear_layers(module)
    assert linear_layers(out) == layers  # the dense weights stay direct linear parameters
    producers = out.functions[func].producers()
    for layer in layers:
        before = linear_reading(module, func, layer.weight)
        dense = linear_reading(out, func, layer.weight)
        y = before.outputs[0].name
        add = producers[y]
        assert add.op == "add" and add.inputs[0] is dense.outputs[0]
        assert [v.name for v in dense.inputs] == [v.name for v in before.inputs]
        side = producers[add.inputs[1].name]
        cast = producers[side.inputs[1].name]
        assert side.op == "linear" and side.inputs[0] is dense.inputs[0] and len(side.inputs) == 2
        assert cast.op == "cast" and producers[cast.inputs[0].name].attrs["name"] == f"{layer.weight}.outliers"
        p = out.params[f"{layer.weight}.outliers"]
        k = outlier_count(p.data.size, 0.01)
        assert p.type.dtype == F16 and p.type.encodings == (SparseEncoding(density=k / p.data.size),)
        assert np.count_nonzero(p.data) == k
        np.testing.assert_array_equal(out.params[layer.weight].data + p.data.astype(np.float32),
                                      module.params[layer.weight].data)
        assert users(out, func, y) == users(module, func, y)
    sizes = [layer.out_features * layer.in_features for layer in layers]
    assert context.reports["outliers"]["weights"] == sum(outlier_count(size, 0.01) for size in sizes)


def test_pass_verifies_round_trips_and_keeps_the_function():
    module = tiny_lm()
    out = run_pipeline(module, parse_pipeline("outliers"))
    verify_module(out)
    assert parse_module(print_module(out)) == out
    for got, want in zip(run_both(out), run_both(module)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_sensitivity_weights_by_the_hessian_diagonal():
    module = tiny_lm()
    out = run_pipeline(module, parse_pipeline("outliers{criterion=sensitivity,fraction=0.02}"))
    stats = PassContext().calibration(module)
    differs = False
    for layer in linear_layers(module):
        w = module.params[layer.weight].data.astype(np.float64)
        side = out.params[f"{layer.weight}.outliers"].data
        k = outlier_count(w.size, 0.02)
        assert picked(side) == top(w**2 * np.diag(stats[layer.weight].hessian), k)
        differs |= picked(side) != top(np.abs(w), k)
    assert differs


def one_layer(rng: np.random.Generator, d: int = 64, vocab: int = 32) -> Module:
    """``logits = linear(silu(linear(embedding(ids), W)), E)`` with a heavy-tailed ``W``."""
    module = Module("one", {"vocab_size": vocab})
    w = rng.standard_normal((d, d)) ** 3 / d**0.5
    for name, data in (("emb", rng.standard_normal((vocab, d))), ("layers.0.w", w)):
        module.params[name] = Param(name, TensorType.of(data.shape, F32), data.astype(np.float32))
    func = Function("prefill")
    module.functions["prefill"] = func
    b = Builder(module, func)
    h = b.op("embedding", [b.param("emb"), b.input("input_ids", TensorType.of([1, Dim.sym("L")], I64))])
    y = b.op("silu", [b.op("linear", [h, b.param("layers.0.w")])])
    b.ret(b.op("linear", [y, b.param("emb")], name="logits"))
    return module


def test_outliers_help_low_bit_quantization():
    module = one_layer(np.random.default_rng(0))
    ids = {"input_ids": np.arange(32, dtype=np.int64)[None]}
    want = run_function(module, "prefill", ids)["logits"]
    error = {}
    for spec in ("quantize{bits=3,group=16}", "outliers{fraction=0.01},quantize{bits=3,group=16}"):
        out = run_pipeline(module, parse_pipeline(spec))
        error[spec] = float(np.abs(run_function(out, "prefill", ids)["logits"] - want).mean())
    plain, split_first = error.values()
    assert split_first < 0.8 * plain, error


BEFORE = """
module "t" {{vocab_size = 8}} {{
  param "emb" : tensor<8x8xf32>
  param "layers.0.w" : tensor<8x8xf32>
  param "layers.0.b" : tensor<8xf32>{side_param}
  func @prefill(%ids: tensor<1xLxi64>) {{
    %emb = param() {{name = "emb"}} : tensor<8x8xf32>
    %h = embedding(%emb, %ids) : tensor<1xLx8xf32>
    %w = param() {{name = "layers.0.w"}} : tensor<8x8xf32>
    %b = param() {{name = "layers.0.b"}} : tensor<8xf32>
    {linear}
    %z = silu(%y) : tensor<1xLx8xf32>
    %logits = linear(%z, %emb) : tensor<1xLx8xf32>
    return %logits
  }}
}}
"""
SIDE = """
  param "layers.0.w.outliers" : tensor<8x8xf16 #sparse<block=1,density=0.046875>>"""
SPLIT = """%y.dense = linear(%h, %w, %b) : tensor<1xLx8xf32>
    %layers_0_w_outliers = param() {name = "layers.0.w.outliers"} : tensor<8x8xf16 #sparse<block=1,density=0.046875>>
    %layers_0_w_outliers_f32 = cast(%layers_0_w_outliers) {dtype = f32} : tensor<8x8xf32>
    %y.outliers = linear(%h, %layers_0_w_outliers_f32) : tensor<1xLx8xf32>
    %y = add(%y.dense, %y.outliers) : tensor<1xLx8xf32>"""


def test_ir_before_expected():
    before = BEFORE.format(side_param="", linear="%y = linear(%h, %w, %b) : tensor<1xLx8xf32>")
    out = run_pipeline(with_data(before), parse_pipeline("outliers{fraction=0.05}"))  # round(0.05 * 64) = 3
    assert out == parse_module(BEFORE.format(side_param=SIDE, linear=SPLIT))


@pytest.mark.parametrize("spec,message", [
    ("outliers{fraction=0}", r"fraction must be in \(0, 0.5\)"),
    ("outliers{fraction=0.5}", r"fraction must be in \(0, 0.5\)"),
    ("outliers{criterion=hessian}", "unknown criterion"),
    ("outliers,outliers", "already has an outlier matrix"),
])
def test_bad_options_are_refused(spec, message):
    with pytest.raises(PipelineError, match=message):
        run_pipeline(tiny_lm(), parse_pipeline(spec))


def test_shapes_only_module_is_refused():
    module = tiny_lm()
    for p in module.params.values():
        p.data = None
    with pytest.raises(PipelineError, match="no weights"):
        run_pipeline(module, parse_pipeline("outliers"))
