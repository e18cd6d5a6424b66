"""Modelled batch-1 decode on the U280 for the real shapes of each model family (docs/models.md).

Per model: a folder holding only its public config.json, ``llmc compile DIR --shapes-only -p
PIPELINE --board u280 --context N``, then the timing model over a 128-token prompt and 256
generated tokens (``llmc simulate --timing-only``). A model the accelerator cannot run, or that
does not fit the board, is listed with llmc's one-line reason. Every figure is modelled: no
weights exist here.

    .venv/bin/python benchmarks/families.py [--only NAME,...] [--pipeline P] [--context N] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import time
from pathlib import Path

from llmc.cli import main as llmc

# Public config.json values (Hugging Face model cards), the fields the import reads
MODELS: dict[str, dict] = {
    "Llama-3-8B": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                   "max_position_embeddings": 8192, "rope_theta": 500000.0, "rms_norm_eps": 1e-5},
    "Qwen3-8B": {"model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
                 "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                 "max_position_embeddings": 40960, "rope_theta": 1000000.0, "rms_norm_eps": 1e-6,
                 "tie_word_embeddings": False},
    "Gemma-3-4B": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                   "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                   "vocab_size": 262208, "max_position_embeddings": 131072, "sliding_window": 1024,
                   "query_pre_attn_scalar": 256, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0,
                   "rope_scaling": {"rope_type": "linear", "factor": 8.0}},
    "Phi-3-mini": {"model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
                   "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32064,
                   "max_position_embeddings": 4096, "pad_token_id": 32000},
    "GPT-2-XL": {"model_type": "gpt2", "n_embd": 1600, "n_layer": 48, "n_head": 25, "vocab_size": 50257,
                 "n_positions": 1024},
    "OPT-6.7B": {"model_type": "opt", "hidden_size": 4096, "ffn_dim": 16384, "num_hidden_layers": 32,
                 "num_attention_heads": 32, "vocab_size": 50272, "max_position_embeddings": 2048,
                 "word_embed_proj_dim": 4096, "pad_token_id": 1},
    "OLMoE-1B-7B": {"model_type": "olmoe", "hidden_size": 2048, "intermediate_size": 1024, "num_hidden_layers": 16,
                    "num_attention_heads": 16, "num_key_value_heads": 16, "num_experts": 64, "num_experts_per_tok": 8,
                    "norm_topk_prob": False, "vocab_size": 50304, "max_position_embeddings": 4096,
                    "rope_theta": 10000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "pad_token_id": 1},
    "Mixtral-8x7B": {"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
                     "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                     "num_local_experts": 8, "num_experts_per_tok": 2, "vocab_size": 32000,
                     "max_position_embeddings": 32768, "sliding_window": None},
    "Qwen3-30B-A3B": {"model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
                      "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32,
                      "num_key_value_heads": 4, "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8,
                      "vocab_size": 151936, "max_position_embeddings": 40960, "tie_word_embeddings": False},
}


# groups of 128 do not divide GPT-2-XL's widths (1600, 6400)
GROUP_64 = {"GPT-2-XL"}


def run_cli(args: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = llmc(args)
    return code, out.getvalue(), err.getvalue().strip()


def measure(name: str, config: dict, pipeline: str, context: int, folder: Path) -> dict:
    model = folder / name
    model.mkdir()
    (model / "config.json").write_text(json.dumps(config))
    out = folder / f"{name}.project"
    start = time.perf_counter()
    code, _, err = run_cli(["compile", str(model), "--shapes-only", "-p", pipeline, "--board", "u280",
                            "--context", str(context), "-o", str(out)])
    row: dict = {"model": name, "arch": config["model_type"], "pipeline": pipeline,
                 "compile_s": time.perf_counter() - start}
    if code:
        return {**row, "refused": err.removeprefix("llmc: error: ")}
    code, text, err = run_cli(["simulate", str(out), "--timing-only", "--prefill", "128", "--decode", "256", "--json"])
    if code:
        return {**row, "refused": err.removeprefix("llmc: error: ")}
    modelled = json.loads(text)["modelled"]
    design = json.loads((out / "design.json").read_text())
    peak = design["target"]["memory"]["bandwidth_gbs"] * 1e9
    return {**row, "gb_per_token": modelled["hbm_bytes_per_token"] / 1e9,
            "tokens_per_s": modelled["decode_tokens_per_s"],
            "roofline_tokens_per_s": peak / modelled["hbm_bytes_per_token"],
            "hbm_utilisation": modelled["hbm_utilisation"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated model names (default: all)")
    parser.add_argument("--pipeline", default="quantize{bits=4,group=128}")
    parser.add_argument("--context", type=int, default=4096)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(MODELS)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(n, MODELS[n], args.pipeline.replace("group=128", "group=64") if n in GROUP_64 else args.pipeline,
                        args.context, Path(tmp)) for n in names]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"U280, {args.pipeline}, context {args.context}, prompt 128, 256 generated tokens (modelled)")
    print(f"{'model':<14} {'GB/tok':>7} {'tok/s':>7} {'roofline':>8} {'HBM':>6} {'compile s':>9}")
    for r in rows:
        if "refused" in r:
            print(f"{r['model']:<14} refused: {r['refused']}")
            continue
        note = "" if r["pipeline"] == args.pipeline else f"  ({r['pipeline']})"
        print(f"{r['model']:<14} {r['gb_per_token']:>7.2f} {r['tokens_per_s']:>7.1f} {r['roofline_tokens_per_s']:>8.1f} "
              f"{r['hbm_utilisation']:>6.1%} {r['compile_s']:>9.0f}{note}")


if __name__ == "__main__":
    main()
