"""Every supported family (random weights) and the bundled model against PyTorch and transformers.

Interpreter logits match PyTorch to a relative error of 1e-5 for the prefill and 32 decode steps,
greedy generation matches ``generate()`` token for token, and the imported IR round-trips
through its text form.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch
from zoo import FAMILIES, SMALL_PROMPT

import llmc
from llmc.compiler.frontend import hf
from llmc.generate.interpreter import causal_mask
from llmc.ir import parse_module, print_module, run_function

CONFIGS = FAMILIES
PROMPT = SMALL_PROMPT
STEPS = 32
TINY = Path(llmc.__file__).parent / "assets" / "llmc-tiny"


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def torch_model(arch: str) -> torch.nn.Module:
    cfg = hf.config_from_dict({"model_type": arch, **CONFIGS[arch]}, arch)
    return hf.build_model(cfg, seed=0)


def check_against_torch(model: torch.nn.Module, module: llmc.ir.Module) -> list[int]:
    """Prefill and STEPS greedy decode steps through the interpreter and the PyTorch step
    module; returns the greedy tokens."""
    layers = hf.cache_shape(model.config).layers
    step = hf.StepModule(model, layers)
    n = len(PROMPT)
    ids = np.asarray([PROMPT])
    ours = run_function(module, "prefill", {"input_ids": ids, "mask": causal_mask(n, 0), "position_ids": np.arange(n)[None]})
    shape = hf.cache_shape(model.config)
    empty = [torch.zeros(1, shape.kv_heads, 0, shape.head_dim)] * (2 * layers)
    with torch.no_grad():
        ref = step(torch.tensor(ids), torch.from_numpy(causal_mask(n, 0)), torch.arange(n)[None], *empty)
    assert rel_err(ours["logits"], ref[0].numpy()) <= 1e-5
    tokens = []
    for t in range(STEPS):
        token = int(np.argmax(ref[0][0, -1].numpy()))
        tokens.append(token)
        past = n + t
        cache = {f"past_{kv}_{i}": ours[f"{kv}_{i}"] for i in range(layers) for kv in "kv"}
        inputs = {"input_ids": np.asarray([[token]]), "mask": causal_mask(1, past), "position_ids": np.asarray([[past]])}
        ours = run_function(module, "decode", {**inputs, **cache})
        with torch.no_grad():
            ref = step(*(torch.from_numpy(inputs[k]) for k in ("input_ids", "mask", "position_ids")), *ref[1:])
        assert rel_err(ours["logits"], ref[0].numpy()) <= 1e-5, f"decode step {t}"
        for i in range(layers):
            assert rel_err(ours[f"k_{i}"], ref[1 + 2 * i].numpy()) <= 1e-5
    return tokens


def assert_fused(module: llmc.ir.Module, rotary: bool) -> None:
    """No RMSNorm or RoPE is left as primitives: they appear only as fused ops."""
    ops = collections.Counter(n.op for n in module.functions["decode"].nodes)
    assert ops["rsqrt"] == ops["neg"] == ops["cos"] == ops["pow"] == 0, ops
    assert ops["rms_norm"] + ops["layer_norm"] > 0
    assert (ops["rope"] > 0) == rotary
    assert ops["topk"] == ops["gather"] == 0 and ops["moe"] == (2 if "experts" in module.attrs["config"] else 0)


def hf_generate(model: torch.nn.Module, prompt: list[int], steps: int) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, min_new_tokens=steps,
                             do_sample=False, pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_family_matches_pytorch_and_generate(arch: str) -> None:
    model = torch_model(arch)
    loaded = llmc.load(arch, config=CONFIGS[arch], seed=0, max_length=128)
    text = print_module(loaded.module)
    assert parse_module(text) == loaded.module
    assert print_module(parse_module(text)) == text
    check_against_torch(model, loaded.module)
    assert_fused(loaded.module, rotary=arch not in ("gpt2", "opt"))
    ours = loaded.run(prompt_ids=PROMPT, max_new_tokens=STEPS, stop=False).tokens
    assert ours == hf_generate(model, PROMPT, STEPS)
    assert len(set(ours)) > 1, "degenerate test: the model repeats one token"


def test_nn_module_source_matches_architecture_source() -> None:
    model = torch_model("llama")
    a = llmc.load(model, max_length=128)
    b = llmc.load("llama", config=CONFIGS["llama"], seed=0, max_length=128)
    assert a.run(prompt_ids=PROMPT, max_new_tokens=8, stop=False).tokens == b.run(prompt_ids=PROMPT, max_new_tokens=8, stop=False).tokens


@pytest.mark.skipif(not (TINY / "model.safetensors").exists(), reason="bundled model not trained yet")
def test_bundled_model_matches_transformers() -> None:
    from transformers import AutoModelForCausalLM

    loaded = llmc.load("llmc-tiny")
    model = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32, local_files_only=True).eval()
    check_against_torch(model, loaded.module)
    prompt = loaded.encode("The function returns")
    assert loaded.run(prompt_ids=prompt, max_new_tokens=STEPS, stop=False).tokens == hf_generate(model, prompt, STEPS)
    assert parse_module(print_module(loaded.module)) == loaded.module
