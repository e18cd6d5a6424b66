"""Random-weight families on the accelerator: compiled for the U280 and run on the ISS and the
C-simulation of the generated kernel, bit-exact with the lowered program in the interpreter, over
a prompt and decode steps long enough for Mistral's 8-token sliding window to bite. Qwen3 normalises
each head of q and k (QK-norm), OLMo-2 their whole rows; Phi-3's fused projections are split into
layers and Granite's multipliers folded into weights or scaled on the SFU; Gemma-3 adds a scaled
embedding, 1 + w norm weights, GELU (tanh) and local layers with their own window and RoPE table;
GPT-2 and OPT LayerNorm, learned positions (OPT's from 2), biases and GPT-2's fused Conv1D projection;
GPT-NeoX a per-head fused QKV projection, partial rotary, GELU (erf) and the parallel residual; Gemma-2
soft-capped attention scores and logits; Mixtral, Qwen3-MoE and OLMoE route each token to 2 of 4 experts
(OLMoE's weights are softmax probabilities, not renormalised over the two).
make test-full runs the families outside DEFAULT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from zoo import FAMILIES

from llmc.cli import main
from llmc.sim.ladder import verify_project

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="C-simulation needs g++")
ON_THE_ACCELERATOR = ("llama", "mistral", "qwen2", "qwen3", "olmo2", "phi3", "granite", "gemma2", "gemma3_text", "gpt2",
                      "opt", "gpt_neox", "mixtral", "qwen3_moe", "olmoe")
# every kind of block the others are made of (mixtures of experts: tests/fpga/test_moe.py)
DEFAULT = ("qwen3", "granite", "gemma2", "gemma3_text", "gpt2", "gpt_neox")
PROMPT = [3, 17, 42, 8, 25, 61, 9, 4, 5, 6, 7]


@pytest.mark.parametrize("arch", [pytest.param(a, marks=[] if a in DEFAULT else [pytest.mark.slow])
                                  for a in ON_THE_ACCELERATOR])
def test_family_is_bit_exact_on_the_accelerator(arch: str, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(FAMILIES[arch]))
    project = tmp_path / "project"
    assert main(["compile", arch, "--config", str(config), "-o", str(project)]) == 0
    program = (project / "program.txt").read_text()
    if arch in ("mistral", "gemma2", "gemma3_text"):
        assert f"window={FAMILIES[arch]['sliding_window']}" in program
    results = verify_project(project, PROMPT, 12, levels=("interpreter", "iss", "csim"))
    assert [r.mismatches for r in results] == [0, 0, 0], [r.to_json() for r in results]
    assert all(r.compared > 0 for r in results)
