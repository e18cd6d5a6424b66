"""Decode tokens/s on the CPU: TVM-compiled models at fp32, W4 and W2 against torch eager fp32.

Two models: the bundled ``llmc-tiny`` and a Llama-2-7B-shaped layer stack (hidden 4096, MLP
11008, 32 heads, random weights; ``--layers`` layers, default 2, and a 1024-token vocabulary so
that the timed work is the layers, not a 32000-row head). Per model, in one process:

- ``torch``: the Hugging Face module in eager mode, fp32, with its KV cache (``torch.no_grad``,
  ``torch.set_num_threads`` = all cores) — the baseline of every ratio;
- ``tvm <recipe>``: the same weights compressed by the recipe, compiled with
  ``llmc.backends.tvm.compile_model(..., "cpu")`` and run as a generation device (KV cache kept by
  the runtime), on all cores.

Each configuration prefills a 16-token prompt, decodes 2 warm-up tokens, then times ``--tokens``
greedy decode steps; tokens/s is steps / seconds, ``x torch`` the ratio to the torch baseline.

    .venv/bin/python benchmarks/tvm_decode.py [--layers N] [--tokens N] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import numpy as np
import torch

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.backends.tvm import compile_model
from llmc.compiler.frontend import hf
from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline
from llmc.model import BUNDLED

RECIPES = [("fp32", ""), ("W4g128", "quantize{bits=4,group=128}"), ("W2g128", "quantize{bits=2,group=128}"),
           ("W2g128 LUT", "quantize{bits=2,group=128},lut-mpgemm")]
LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                 vocab_size=1024, max_position_embeddings=4096, rms_norm_eps=1e-5)
PROMPT = list(range(3, 19))


def tokens_per_second(step: Callable[[int], int], first: int, tokens: int) -> float:
    """Greedy decode: two warm-up steps, then ``tokens`` timed steps."""
    token = step(step(first))
    start = time.perf_counter()
    for _ in range(tokens):
        token = step(token)
    return tokens / (time.perf_counter() - start)


def torch_rate(module: torch.nn.Module, tokens: int) -> float:
    with torch.no_grad():
        out = module(torch.tensor([PROMPT]), use_cache=True)
        cache = [out.past_key_values]

        def step(token: int) -> int:
            result = module(torch.tensor([[token]]), past_key_values=cache[0], use_cache=True)
            cache[0] = result.past_key_values
            return int(result.logits[0, -1].argmax())

        return tokens_per_second(step, int(out.logits[0, -1].argmax()), tokens)


def tvm_rate(model: llmc.Model, pipeline: str, tokens: int) -> tuple[float, float]:
    """(tokens/s, compile seconds) of ``model`` compressed by ``pipeline`` on the TVM CPU target."""
    module = run_pipeline(model.module, parse_pipeline(pipeline), PassContext()) if pipeline else model.module
    start = time.perf_counter()
    device = compile_model(module, "cpu")
    seconds = time.perf_counter() - start
    first = int(np.argmax(device.prefill(PROMPT)))
    return tokens_per_second(lambda t: int(np.argmax(device.decode(t))), first, tokens), seconds


def bench(name: str, module: torch.nn.Module, model: llmc.Model, tokens: int) -> list[dict]:
    rows = [{"model": name, "config": "torch eager fp32", "tok_s": torch_rate(module, tokens), "compile_s": 0.0}]
    for label, pipeline in RECIPES:
        rate, seconds = tvm_rate(model, pipeline, tokens)
        rows.append({"model": name, "config": f"tvm {label}", "tok_s": rate, "compile_s": seconds})
    for row in rows:
        row["x_torch"] = row["tok_s"] / rows[0]["tok_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2, help="layers of the Llama-2-7B-shaped stack (default 2)")
    parser.add_argument("--tokens", type=int, default=16, help="timed decode steps per configuration (default 16)")
    parser.add_argument("--quick", action="store_true", help="the bundled model only")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    tiny = hf.load_pretrained(BUNDLED["llmc-tiny"]).eval()
    rows = bench("llmc-tiny", tiny, llmc.load("llmc-tiny"), args.tokens * 4)
    if not args.quick:
        cfg = hf.config_from_dict({"model_type": "llama", **LLAMA2_7B, "num_hidden_layers": args.layers}, "7B stack")
        stack = hf.build_model(cfg, seed=0).eval()
        rows += bench(f"Llama-2-7B x{args.layers} layers", stack, llmc.load(stack, name="llama2-7b-stack"), args.tokens)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print("| model | configuration | tokens/s | x torch | compile s |\n| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['model']} | {r['config']} | {r['tok_s']:.1f} | {r['x_torch']:.2f} | {r['compile_s']:.1f} |")


if __name__ == "__main__":
    main()
