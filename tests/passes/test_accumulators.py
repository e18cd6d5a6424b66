"""Integer accumulation of ``act-quant``: int32 provably suffices for the layer sizes in use, a wider
accumulator is picked (and reported) where it would not, and qlinear is bit-exact against NumPy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.compiler.pipeline import PassContext, PipelineError, parse_pipeline, run_pipeline
from llmc.generate.interpreter import causal_mask
from llmc.ir import F32, Module, Node, Param, TensorType, parse_module, run_function, verify_module
from llmc.ir.verify import VerifyError

BUNDLED = {"hidden_size": 256, "intermediate_size": 768}  # llmc-tiny (scripts/train_tiny.py)
LLAMA2_7B = {"hidden_size": 4096, "intermediate_size": 11008}
INT32_MAX = 2**31 - 1


def layer_ks(config: dict[str, int]) -> list[int]:
    """K of every linear layer of a Llama block: q, k, v, o, gate, up read the hidden size, down
    reads the intermediate size."""
    return [config["hidden_size"]] * 6 + [config["intermediate_size"]]


def one_linear(k: int, n: int = 2, bias: bool = False) -> Module:
    b_param = f'\n  param "b" : tensor<{n}xf32>' if bias else ""
    b_node = f'\n    %b = param() {{name = "b"}} : tensor<{n}xf32>' if bias else ""
    module = parse_module(f"""
module "one" {{}} {{
  param "w" : tensor<{n}x{k}xf32>{b_param}
  func @prefill(%x: tensor<1xLx{k}xf32>) {{
    %w = param() {{name = "w"}} : tensor<{n}x{k}xf32>{b_node}
    %y = linear(%x, %w{", %b" if bias else ""}) : tensor<1xLx{n}xf32>
    return %y
  }}
}}""")
    rng = np.random.default_rng(k)
    for p in module.params.values():
        p.data = rng.standard_normal(p.type.static_shape()).astype(np.float32)
    return module


def qlinear_of(module: Module) -> Node:
    return next(n for n in module.functions["prefill"].nodes if n.op == "qlinear")


@pytest.mark.parametrize("k", sorted(set(layer_ks(BUNDLED) + layer_ks(LLAMA2_7B))))
@pytest.mark.parametrize(("wbits", "group"), [(8, 0), (4, 128), (4, 0)])
def test_int32_suffices_for_the_layer_sizes_in_use(k: int, wbits: int, group: int) -> None:
    span = group or k
    assert span * 127 * (2 ** (wbits - 1) - 1) <= INT32_MAX  # the worst case |sum| of int8 x int{wbits} codes
    context = PassContext()
    out = run_pipeline(one_linear(k), parse_pipeline(f"act-quant{{wbits={wbits},group={group}}}"), context)
    assert qlinear_of(out).attrs["acc_bits"] == 32
    assert context.reports["act-quant"]["notes"] == []


def test_bundled_config_matches_when_present() -> None:
    path = Path(llmc.__file__).parent / "assets" / "llmc-tiny" / "config.json"
    if not path.exists():
        pytest.skip("llmc-tiny is not trained yet")
    config = json.loads(path.read_text())
    assert {key: config[key] for key in BUNDLED} == BUNDLED


def test_a_long_reduction_gets_a_wider_accumulator_and_int32_is_refused() -> None:
    k = 2**20
    context = PassContext()
    out = run_pipeline(one_linear(k, n=1), parse_pipeline("act-quant"), context)
    node = qlinear_of(out)
    bound = k * 127 * 127  # > 2^33
    assert node.attrs["acc_bits"] == bound.bit_length() + 1 == 35
    assert "35-bit accumulator" in context.reports["act-quant"]["notes"][0]
    verify_module(out)
    node.attrs["acc_bits"] = 32
    with pytest.raises(VerifyError, match="overflow"):
        verify_module(out)
    node.attrs["acc_bits"] = 35

    # the worst case really happens: all codes at +127; the exact sum overflows int32 but not the result
    out.params["w.codes"].data = np.full((1, k), 127, dtype=np.int8)
    y = run_function(out, "prefill", {"x": np.ones((1, 1, k), dtype=np.float32)})["y"]
    scale = np.float32(out.params["w.scales"].data[0, 0])
    assert y[0, 0, 0] == np.float32(bound) * scale * (np.float32(1) / np.float32(127))
    assert np.full(k, 127 * 127, dtype=np.int32).sum(dtype=np.int32) != bound  # what int32 would give

    grouped = run_pipeline(one_linear(k, n=1), parse_pipeline("act-quant{wbits=4,group=128}"))
    assert qlinear_of(grouped).attrs["acc_bits"] == 32  # groups bound the reduction


def test_an_accumulator_beyond_64_bits_is_refused_before_any_work() -> None:
    module = one_linear(64)
    module.params["w"] = Param("w", TensorType.of([1, 2**45], F32))  # shapes only: never materialised
    with pytest.raises(PipelineError, match="accumulator"):
        run_pipeline(module, parse_pipeline("act-quant{abits=16}"))


# -- bit-exact reference -------------------------------------------------------------------------
def reference_linear(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, abits: int, wbits: int, group: int,
                     per_tensor: bool) -> tuple[np.ndarray, np.ndarray]:
    """The integer layer written out from its definition: weight codes and the output."""
    qa, qw = 2 ** (abits - 1) - 1, 2 ** (wbits - 1) - 1
    amax = np.abs(x).max() if per_tensor else np.abs(x).max(axis=-1, keepdims=True)
    xs = np.float32(amax) / np.float32(qa)
    xs = np.where(xs > 0, xs, np.float32(1)).astype(np.float32)
    xq = np.clip(np.rint(x / xs), -qa, qa).astype(np.int64)
    n, k = w.shape
    span = group or k
    ws = (np.abs(w).reshape(n, k // span, span).max(axis=-1) / np.float32(qw)).astype(np.float16)
    ws = np.where(ws > 0, ws, np.float16(1)).astype(np.float32)
    wq = np.clip(np.rint(w / np.repeat(ws, span, axis=1)), -qw, qw).astype(np.int64)
    y = np.zeros(x.shape[:-1] + (n,), dtype=np.float32)
    for g in range(k // span):
        cols = slice(g * span, (g + 1) * span)
        acc = np.einsum("...k,nk->...n", xq[..., cols], wq[:, cols])  # int64: exact
        y = y + acc.astype(np.float32) * ws[:, g]
    y = xs * y
    return wq, (y if bias is None else y + bias)


def assert_bit_exact(float_module: Module, inputs: dict[str, np.ndarray], abits: int = 8, wbits: int = 8,
                     group: int = 0, granularity: str = "token") -> int:
    """Run ``act-quant`` with these options and check every qlinear result against
    :func:`reference_linear` fed with the float activation the layer saw; returns the number of
    layers checked."""
    pipeline = f"act-quant{{abits={abits},wbits={wbits},group={group},granularity={granularity}}}"
    out = run_pipeline(float_module, parse_pipeline(pipeline))
    seen: dict[str, np.ndarray] = {}

    def observe(node: Node, args: list[np.ndarray], results: list[np.ndarray]) -> None:
        seen.update({v.name: a for v, a in zip(node.inputs, args)})
        seen.update({v.name: r for v, r in zip(node.outputs, results)})

    run_function(out, "prefill", inputs, observe=observe)
    func = float_module.functions["prefill"]
    params = {n.outputs[0].name: n.attrs["name"] for n in func.nodes if n.op == "param"}
    checked = 0
    for node in func.nodes:
        if node.op != "linear" or f"{params[node.inputs[1].name]}.codes" not in out.params:
            continue
        weight = params[node.inputs[1].name]
        bias = float_module.params[params[node.inputs[2].name]].data if len(node.inputs) == 3 else None
        codes, y = reference_linear(seen[node.inputs[0].name], float_module.params[weight].data, bias,
                                    abits, wbits, group, granularity == "tensor")
        assert np.array_equal(out.params[f"{weight}.codes"].data.astype(np.int64), codes), weight
        assert np.array_equal(seen[node.outputs[0].name], y), weight
        checked += 1
    return checked


@pytest.fixture(scope="module")
def model() -> llmc.Model:
    config = dict(vocab_size=96, max_position_embeddings=64, initializer_range=0.05, hidden_size=64,
                  intermediate_size=128, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2)
    return llmc.load("llama", config=config, seed=1, max_length=64)


@pytest.mark.parametrize(("abits", "wbits", "group", "granularity"), [
    (8, 8, 0, "token"), (8, 4, 32, "token"), (8, 8, 0, "tensor"), (4, 4, 16, "token"), (16, 8, 0, "token")])
def test_qlinear_is_bit_exact_on_the_models_activations(model: llmc.Model, abits: int, wbits: int, group: int,
                                                       granularity: str) -> None:
    ids = np.random.default_rng(2).integers(0, 96, 20)
    inputs = {"input_ids": ids[None], "mask": causal_mask(20, 0), "position_ids": np.arange(20)[None]}
    assert assert_bit_exact(model.module, inputs, abits, wbits, group, granularity) == 7


def test_qlinear_is_bit_exact_with_a_bias() -> None:
    x = np.random.default_rng(5).standard_normal((1, 9, 256)).astype(np.float32) * 3
    assert assert_bit_exact(one_linear(256, n=12, bias=True), {"x": x}, wbits=4, group=64) == 1
