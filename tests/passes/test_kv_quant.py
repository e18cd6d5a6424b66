"""KV-cache quantization: the cache is on the int grid, every use reads it, decoding stays close."""

from __future__ import annotations

import numpy as np
import pytest
import zoo

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.compiler.pipeline import PassContext, PipelineError, parse_pipeline, run_pipeline
from llmc.generate.interpreter import InterpreterDevice, causal_mask
from llmc.ir import Module, parse_module, print_module, run_function
from llmc.ir.ops.quant import qmax

CONFIG = dict(zoo.LLAMA, initializer_range=0.05)
PROMPT = [3, 14, 15, 92, 65, 35, 89, 79]


@pytest.fixture(scope="module")
def model() -> llmc.Model:
    return llmc.load("llama", config=CONFIG, seed=0, max_length=128)


def kv(model: llmc.Model, pipeline: str) -> Module:
    return run_pipeline(model.module, parse_pipeline(pipeline))


def cache_after(module: Module, steps: int) -> dict[str, np.ndarray]:
    """The cache after prefilling PROMPT and decoding ``steps`` greedy tokens."""
    device = InterpreterDevice(module)
    logits = device.prefill(PROMPT)
    for _ in range(steps):
        logits = device.decode(int(np.argmax(logits)))
    return device.cache


def grid_codes(rows: np.ndarray, bits: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes and scales of values already on a ``bits`` grid with float16 scales per group."""
    span = group or rows.shape[-1]
    grouped = rows.reshape(*rows.shape[:-1], rows.shape[-1] // span, span).astype(np.float32)
    scale = (np.abs(grouped).max(axis=-1, keepdims=True) / np.float32(qmax(bits))).astype(np.float16)
    scale = np.where(scale > 0, scale, 1).astype(np.float32)
    return grouped / scale, scale


@pytest.mark.parametrize(("bits", "group"), [(8, 0), (4, 0), (8, 8)])
def test_cache_values_lie_on_the_grid(model: llmc.Model, bits: int, group: int) -> None:
    cache = cache_after(kv(model, f"kv-quant{{bits={bits},group={group}}}"), steps=3)
    assert sorted(cache) == sorted(f"past_{x}_{i}" for i in range(2) for x in "kv")
    for name, values in cache.items():
        assert values.shape == (1, 2, len(PROMPT) + 3, 16), name
        codes, scale = grid_codes(values, bits, group)
        assert np.array_equal(codes, np.rint(codes)), name
        assert np.abs(codes).max() <= qmax(bits)
        assert np.all(scale.astype(np.float16).astype(np.float32) == scale)
        # re-quantizing the cache (past rows included) gives it back exactly: decode never needs to
        requantized = np.rint(codes) * scale
        assert np.array_equal(requantized.reshape(values.shape), values), name


def test_decode_quantizes_only_new_rows(model: llmc.Model) -> None:
    module = kv(model, "kv-quant{bits=4}")
    cache = cache_after(module, steps=0)
    n = len(PROMPT)
    past = {k: v + np.float32(1e-3) for k, v in cache.items()}  # deliberately off the grid
    out = run_function(module, "decode", {"input_ids": np.array([[7]]), "mask": causal_mask(1, n),
                                          "position_ids": np.array([[n]]), **past})
    for i in range(2):
        for x in "kv":
            assert np.array_equal(out[f"{x}_{i}"][:, :, :n], past[f"past_{x}_{i}"])  # passed through untouched
            codes, _ = grid_codes(out[f"{x}_{i}"][:, :, n:], 4, 0)
            assert np.array_equal(codes, np.rint(codes))


def test_every_use_reads_the_quantized_rows(model: llmc.Model) -> None:
    module = kv(model, "kv-quant")
    for func in module.functions.values():
        users = func.users()
        fakes = [n for n in func.nodes if n.op == "fake_quant"]
        assert len(fakes) == 2 * CONFIG["num_hidden_layers"]
        for node in fakes:
            assert [u.op for u in users[node.inputs[0].name]] == ["fake_quant"]  # float rows: no other reader
        attention_kv = {v.name for n in func.nodes if n.op == "attention" for v in n.inputs[1:3]}
        assert attention_kv.isdisjoint(n.inputs[0].name for n in fakes)
    assert parse_module(print_module(module)) == module


def test_greedy_tokens_survive_int8_and_int4_costs_more(model: llmc.Model) -> None:
    ref = model.run(prompt_ids=PROMPT, max_new_tokens=24, stop=False).tokens
    device = InterpreterDevice(kv(model, "kv-quant{bits=8}"))
    logits, same = device.prefill(PROMPT), 0
    for token in ref:  # teacher-forced: one early near-tie must not decide every later step
        same += int(np.argmax(logits) == token)
        logits = device.decode(token)
    assert same >= 21

    ids = np.array(PROMPT * 3, dtype=np.int64)

    def logits(module: Module) -> np.ndarray:
        n = len(ids)
        return run_function(module, "prefill", {"input_ids": ids[None], "mask": causal_mask(n, 0),
                                                "position_ids": np.arange(n)[None]})["logits"]

    base = logits(model.module)
    errors = {bits: np.linalg.norm(logits(kv(model, f"kv-quant{{bits={bits}}}")) - base) for bits in (8, 4)}
    assert 0 < errors[8] < errors[4]
    assert errors[8] < 0.02 * np.linalg.norm(base)


BEFORE = """
module "tiny" {head_dim = 4} {
  func @prefill(%x: tensor<1x2xLx4xf32>) {
    %k_0 = neg(%x) : tensor<1x2xLx4xf32>
    %a = add(%k_0, %x) : tensor<1x2xLx4xf32>
    return %a, %k_0
  }
  func @decode(%x: tensor<1x2x1x4xf32>, %past_k_0: tensor<1x2xPx4xf32>) {
    %new = neg(%x) : tensor<1x2x1x4xf32>
    %k_0 = concat(%past_k_0, %new) {axis = 2} : tensor<1x2xP+1x4xf32>
    %a = add(%new, %x) : tensor<1x2x1x4xf32>
    return %a, %k_0
  }
}
"""
EXPECTED = """
module "tiny" {head_dim = 4} {
  func @prefill(%x: tensor<1x2xLx4xf32>) {
    %k_0_float = neg(%x) : tensor<1x2xLx4xf32>
    %k_0 = fake_quant(%k_0_float) {bits = 4, group = 2} : tensor<1x2xLx4xf32>
    %a = add(%k_0, %x) : tensor<1x2xLx4xf32>
    return %a, %k_0
  }
  func @decode(%x: tensor<1x2x1x4xf32>, %past_k_0: tensor<1x2xPx4xf32>) {
    %new_float = neg(%x) : tensor<1x2x1x4xf32>
    %new = fake_quant(%new_float) {bits = 4, group = 2} : tensor<1x2x1x4xf32>
    %k_0 = concat(%past_k_0, %new) {axis = 2} : tensor<1x2xP+1x4xf32>
    %a = add(%new, %x) : tensor<1x2x1x4xf32>
    return %a, %k_0
  }
}
"""


def test_ir_before_and_expected() -> None:
    context = PassContext()
    out = run_pipeline(parse_module(BEFORE), parse_pipeline("kv-quant{bits=4,group=2}"), context)
    assert out == parse_module(EXPECTED)
    assert context.reports["kv-quant"] == {"bits": 4, "group": 2, "values": 2, "cache_bytes_per_element": 1.5}


@pytest.mark.parametrize("pipeline", ["kv-quant{bits=1}", "kv-quant{bits=9}", "kv-quant{group=5}",
                                      "kv-quant{group=-2}", "kv-quant{bits=four}"])
def test_bad_options_are_refused(model: llmc.Model, pipeline: str) -> None:
    with pytest.raises(PipelineError):
        run_pipeline(model.module, parse_pipeline(pipeline))


def test_modules_it_cannot_handle_are_refused() -> None:
    with pytest.raises(PipelineError, match="no KV cache"):
        run_pipeline(parse_module(BEFORE.replace("%k_0", "%y")), parse_pipeline("kv-quant"))
    with pytest.raises(PipelineError, match="already quantized"):
        run_pipeline(parse_module(BEFORE), parse_pipeline("kv-quant,kv-quant{bits=4}"))
    with pytest.raises(PipelineError, match="not concat"):
        run_pipeline(parse_module(BEFORE.replace("concat(%past_k_0, %new)", "concat(%new, %past_k_0)")),
                     parse_pipeline("kv-quant"))
