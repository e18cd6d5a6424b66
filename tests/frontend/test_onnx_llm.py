"""Causal LMs exported by ``torch.onnx.export`` (dynamo and TorchScript) with their KV cache, in the layout optimum
exports too (``input_ids``, ``attention_mask``, ``position_ids``, ``past_key_values.N.key/value`` ->
``logits``, ``present.N.key/value``), import as step models: a prompt and 32 decode steps in the
reference interpreter match onnxruntime on the file, with the same greedy tokens; TVM runs them, and
fused at import they compile for the accelerator."""

from __future__ import annotations

import shutil
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from zoo import FAMILIES

import llmc
from llmc.cli import main
from llmc.generate.interpreter import InterpreterDevice
from llmc.sim.ladder import verify_project

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
PROMPT = [1, 5, 9, 33, 70]
STEPS = 32
WINDOW = 4  # Mistral's sliding window in its export


def export(family: str, path: Path, dynamo: bool = True, **overrides: object) -> tuple[int, int, int]:
    """The family's random-weight model (its config with ``overrides``) exported with a cache input
    and output per layer, by the dynamo exporter or the TorchScript one (with optimum's dim names);
    its layers, KV heads and head size."""
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.cache_utils import DynamicCache

    config = AutoConfig.for_model(family, **{**FAMILIES[family], **overrides})
    model = AutoModelForCausalLM.from_config(config).eval()
    layers = config.num_hidden_layers
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

    class WithCache(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):  # noqa: ANN001, ANN201
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             past_key_values=cache, use_cache=True)
            return (out.logits, *[t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)])

    past = [torch.randn(1, heads, 2, head_dim) for _ in range(2 * layers)]
    args = (torch.randint(0, 90, (1, 3)), torch.ones(1, 5, dtype=torch.int64), torch.arange(2, 5)[None], *past)
    names = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    inputs, outputs = ["input_ids", "attention_mask", "position_ids", *names], ["logits", *(
        n.replace("past_key_values", "present") for n in names)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(WithCache(), args, str(path), dynamo=True, verbose=False, input_names=inputs,
                              output_names=outputs,
                              dynamic_shapes=({1: "S"}, {1: "T"}, {1: "S"}, tuple({2: "P"} for _ in names)))
        else:
            total = "past_sequence_length + sequence_length"
            axes = {"input_ids": {1: "sequence_length"}, "attention_mask": {1: total},
                    "position_ids": {1: "sequence_length"}, "logits": {1: "sequence_length"},
                    **{n: {2: "past_sequence_length"} for n in names}, **{n: {2: total} for n in outputs[1:]}}
            torch.onnx.export(WithCache(), args, str(path), dynamo=False, input_names=inputs, output_names=outputs,
                              dynamic_axes={n: {0: "batch_size", **a} for n, a in axes.items()})
    return layers, heads, head_dim


def exported(family: str, doc: str, dynamo: bool = True, **overrides: object):
    """A module fixture: the family's export (:func:`export`), once for this file's tests."""
    @pytest.fixture(scope="module")
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
        path = tmp_path_factory.mktemp("export") / f"{family}{'' if dynamo else '_torchscript'}.onnx"
        export(family, path, dynamo=dynamo, **overrides)
        return path
    fixture.__doc__ = doc
    return fixture


llama_export = exported("llama", "The Llama family's export by the dynamo exporter.")
llama_torchscript_export = exported("llama", "The Llama family's export by the TorchScript exporter (``dynamo=False``), "
                                    "optimum's default.", dynamo=False)
qwen2_export = exported("qwen2", "The Qwen2 family's export by the dynamo exporter (Q, K and V biases).")
gpt2_export = exported("gpt2", "The GPT-2 family's export by the dynamo exporter (LayerNorm, tanh GELU, learned "
                       "positions).")
mistral_export = exported("mistral", "Mistral with a 4-key sliding window in every layer, shorter than :data:`PROMPT`.",
                          sliding_window=WINDOW)


def errors_against_onnxruntime(path: Path, shape: tuple[int, int, int], steps: int) -> tuple[float, bool]:
    """The largest relative error of the imported file's logits against onnxruntime's on
    :data:`PROMPT` and ``steps`` greedy decode steps, and whether the greedy tokens are the same;
    ``shape`` is the export's layers, KV heads and head size."""
    layers, heads, head_dim = shape
    model = llmc.load(path, max_length=64)
    assert model.is_language_model and model.module.attrs["layers"] == layers
    session = ort.InferenceSession(str(path))
    past = {f"past_key_values.{i}.{kv}": np.zeros((1, heads, 0, head_dim), np.float32)
            for i in range(layers) for kv in ("key", "value")}

    def reference(tokens: list[int], position: int) -> np.ndarray:
        nonlocal past
        out = session.run(None, {"input_ids": np.array([tokens], np.int64),
                                 "attention_mask": np.ones((1, position + len(tokens)), np.int64),
                                 "position_ids": np.arange(position, position + len(tokens))[None], **past})
        past = {name: out[1 + j] for j, name in enumerate(past)}
        return out[0][0, -1]

    device = InterpreterDevice(model.module)
    want, got = reference(PROMPT, 0), device.prefill(PROMPT)
    errors, same = [np.abs(want - got).max() / np.abs(want).max()], True
    for step in range(steps):
        token = int(np.argmax(want))
        same = same and token == int(np.argmax(got))
        want, got = reference([token], len(PROMPT) + step), device.decode(token)
        errors.append(np.abs(want - got).max() / np.abs(want).max())
    return float(max(errors)), same


@pytest.mark.parametrize(("family", "dynamo"), [
    ("llama", True), ("llama", False),
    *(pytest.param(family, dynamo, marks=pytest.mark.slow) for family in ("qwen2", "gpt2") for dynamo in (True, False))])
def test_an_exported_lm_is_a_step_model(family: str, dynamo: bool, tmp_path: Path) -> None:
    """Files of both exporters: the dynamo one and TorchScript's (``dynamo=False``)."""
    path = tmp_path / f"{family}.onnx"
    error, same = errors_against_onnxruntime(path, export(family, path, dynamo), STEPS)
    assert error < 1e-5 and same


def test_a_sliding_window_export_is_a_step_model_with_windowed_attention(mistral_export: Path) -> None:
    """Mistral's windowed mask is proven the causal mask's last keys: each layer's attention reads
    ``sliding_window_mask`` of the step's mask, and a prompt longer than the window and 8 decode
    steps match onnxruntime."""
    error, same = errors_against_onnxruntime(mistral_export, (2, 1, 16), 8)
    assert error < 1e-5 and same
    module = llmc.load(mistral_export, max_length=64).module
    for name in ("prefill", "decode"):
        ops = Counter(n.op for n in module.functions[name].nodes)
        assert ops["attention"] == 2 and ops["softmax"] == 0, ops
        assert {n.attrs["window"] for n in module.functions[name].nodes if n.op == "sliding_window_mask"} == {WINDOW}


def test_an_exported_lm_runs_on_tvm(llama_export: Path) -> None:
    """TVM compiles the export's step programs for the CPU: its logits follow the
    interpreter's and its greedy tokens are the same."""
    compile_model = pytest.importorskip("llmc.backends.tvm.compile").compile_model
    module = llmc.load(llama_export, max_length=64).module
    reference, device = InterpreterDevice(module), compile_model(module, "cpu")
    want, got = [reference.prefill(PROMPT)], [device.prefill(PROMPT)]
    for _ in range(8):
        token = int(np.argmax(want[-1]))
        assert token == int(np.argmax(got[-1]))
        want.append(reference.decode(token))
        got.append(device.decode(token))
    assert max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(want, got)) < 2e-5


@pytest.mark.skipif(shutil.which("g++") is None, reason="C-simulation needs g++")
@pytest.mark.parametrize("exported", ["llama_export", "llama_torchscript_export", "mistral_export", *(
    pytest.param(fixture, marks=pytest.mark.slow) for fixture in ("qwen2_export", "gpt2_export"))])
def test_an_exported_lm_compiles_for_the_accelerator(exported: str, request: pytest.FixtureRequest,
                                                     tmp_path: Path) -> None:
    """Fused at import (RMSNorm, SiLU, RoPE, attention over the step's causal mask or its sliding
    window; GPT-2's LayerNorm and tanh GELU), the export compiles for the U280, and its C-simulation
    is bit-exact with the interpreter and the ISS (the dynamo exports of Qwen2 and GPT-2 in the slow
    suite)."""
    project = tmp_path / "project"
    assert main(["compile", str(request.getfixturevalue(exported)), "--context", "64", "-o", str(project)]) == 0
    results = verify_project(project, PROMPT, 4, levels=("interpreter", "iss", "csim"))
    assert [r.mismatches for r in results] == [0, 0, 0] and all(r.compared > 0 for r in results)


@pytest.mark.parametrize("exported", ["llama_export", "llama_torchscript_export"])
def test_the_fused_export_has_the_ops_of_llmcs_own_import(exported: str, request: pytest.FixtureRequest) -> None:
    """Fused, either exporter's programs hold the ops llmc's torch.export import of the model holds
    (one ``rms_norm``, ``silu``, ``rope`` and ``attention`` per use), so passes and the FPGA lowering
    see the same graph."""
    exported = llmc.load(request.getfixturevalue(exported), max_length=64).module
    own = llmc.load("llama", config=FAMILIES["llama"], max_length=64).module
    for name in ("prefill", "decode"):
        ops = [Counter(n.op for n in m.functions[name].nodes if n.op != "param") for m in (exported, own)]
        assert ops[0] == ops[1] and ops[0]["attention"] == 2, ops
