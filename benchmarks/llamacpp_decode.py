"""Decode tokens/s against llama.cpp on the same model: llmc on the TVM CPU target vs llama-cpp-python.

The model is a random Llama with Llama-2-7B layer shapes (hidden 4096, MLP 11008, 32 heads, a
32000-token vocabulary; ``--layers`` layers, default 2; seed 0). Two pairs, each quantized from
the same float weights, every linear layer including the head:

- ``W4g32`` (llmc ``quantize{bits=4,group=32}``: codes -7..7, an fp16 scale per 32 weights, 4.5
  bits per weight) against ``Q4_0`` (4.5 bits per weight). The GGUF file is written from llmc's own
  codes and scales (``q = code + 8``, ``d = scale``), so both run the same weights: ``logit err``,
  ``max|llmc - llama.cpp| / max|llama.cpp|`` over the prompt's last logits, checks it (llama.cpp
  rounds the activations to 8 bits, Q8_0, for its Q4_0 products; the random model's logits are
  nearly flat, so greedy tokens are no check).
- ``W2g32 LUT`` (``quantize{bits=2,group=32,symmetric=false},lut-mpgemm{table_bits=8}``: 2-bit
  codes, fp16 scale and 2-bit zero per 32 weights, 2.56 bits per weight; LUT-mpGEMM with int8
  activation tables) against
  ``Q2_K`` (2.625 bits per weight; a 4-bit scale and min per 16 weights under fp16 super-scales),
  quantized here from the float weights by min/max per sub-block: the same model, not the same codes.

Per pair and thread count (1 and 2), in one process: prefill a 16-token prompt, decode 2 warm-up
tokens, then time ``--tokens`` greedy decode steps; tokens/s is steps / seconds.

The GGUF files are written with the ``gguf`` package; llama-cpp-python is built from source by
pip for this CPU (``make bench-setup``), so llama.cpp uses this CPU's best kernels, and llmc its
best LUT variant (docs/lut.md).

    .venv/bin/python benchmarks/llamacpp_decode.py [--layers N] [--tokens N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
from llama_cpp import Llama
from tvm_decode import PROMPT, tokens_per_second

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.backends.tvm import CompiledModel, compile_model, set_num_threads
from llmc.compiler.frontend import hf
from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline
from llmc.ir.graph import Module

LLAMA2_7B = dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32,
                 vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=10000.0)
PAIRS = [("W4g32", "quantize{bits=4,group=32,include_head=true}", "Q4_0"),
         ("W2g32 LUT", "quantize{bits=2,group=32,symmetric=false,include_head=true},lut-mpgemm{table_bits=8}", "Q2_K")]
THREADS = (1, 2)
LINEARS = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
           "mlp.down_proj": "ffn_down"}


def gguf_names(layers: int) -> dict[str, str]:
    """Hugging Face parameter names -> GGUF tensor names of the llama architecture."""
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    for i in range(layers):
        names[f"model.layers.{i}.input_layernorm.weight"] = f"blk.{i}.attn_norm.weight"
        names[f"model.layers.{i}.post_attention_layernorm.weight"] = f"blk.{i}.ffn_norm.weight"
        for hf_name, g_name in LINEARS.items():
            names[f"model.layers.{i}.{hf_name}.weight"] = f"blk.{i}.{g_name}.weight"
    return names


def rope_rows(name: str, heads: int) -> Callable[[np.ndarray], np.ndarray]:
    """llama.cpp rotates interleaved pairs, Hugging Face the two halves of each head: q and k rows
    are permuted as its converter does (scales and codes alike)."""
    if not name.endswith(("attn_q.weight", "attn_k.weight")):
        return lambda a: a
    return lambda a: a.reshape(heads, 2, a.shape[0] // heads // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)


def q4_0_from_llmc(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Q4_0 blocks (fp16 d, 16 bytes: elements 0-15 in the low nibbles, 16-31 in the high) holding
    llmc's symmetric 4-bit codes (``q = code + 8``) and fp16 group-32 scales exactly."""
    rows, cols = codes.shape
    q = (codes.astype(np.int16) + 8).astype(np.uint8).reshape(rows, cols // 32, 2, 16)
    packed = q[:, :, 0] | (q[:, :, 1] << np.uint8(4))
    d = scales.astype(np.float16).reshape(rows, cols // 32, 1).view(np.uint8)
    return np.concatenate([d, packed], axis=-1).reshape(rows, -1)


def q2_k(w: np.ndarray) -> np.ndarray:
    """Q2_K blocks of 256 weights (16 scale/min bytes, 64 code bytes, fp16 d and dmin) by min/max
    per sub-block of 16: ``w = d * sc * q - dmin * m``."""
    rows, cols = w.shape
    sub = w.astype(np.float32).reshape(-1, 16, 16)  # [blocks, sub-block, weight]
    low = np.minimum(sub.min(-1), 0)
    step = (sub.max(-1) - low) / 3
    d = (step.max(-1, keepdims=True) / 15).astype(np.float16)
    dmin = (-low.min(-1, keepdims=True) / 15).astype(np.float16)
    df, dminf = d.astype(np.float32), dmin.astype(np.float32)
    sc = np.clip(np.rint(np.divide(step, df, out=np.zeros_like(step), where=df > 0)), 0, 15).astype(np.uint8)
    m = np.clip(np.rint(np.divide(-low, dminf, out=np.zeros_like(low), where=dminf > 0)), 0, 15).astype(np.uint8)
    unit = (df * sc)[..., None]
    q = np.rint(np.divide(sub + (dminf * m)[..., None], unit, out=np.zeros_like(sub), where=unit > 0))
    q = np.clip(q, 0, 3).astype(np.uint8).reshape(-1, 2, 4, 32)  # element = half*128 + shift*32 + j
    qs = (q << (np.arange(4, dtype=np.uint8) * 2)[None, None, :, None]).sum(2, dtype=np.uint8).reshape(-1, 64)
    blocks = np.concatenate([sc | (m << np.uint8(4)), qs, d.view(np.uint8), dmin.view(np.uint8)], axis=-1)
    return blocks.reshape(rows, -1)


def write_gguf(path: Path, floats: dict[str, np.ndarray], module: Module, qtype: str, layers: int) -> None:
    """The llama GGUF file of the model: linear layers in ``qtype`` (Q4_0 from ``module``'s codes),
    norms and the embedding in float32, a placeholder vocabulary."""
    cfg = LLAMA2_7B
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(layers)
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    writer.add_rope_freq_base(cfg["rope_theta"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0 if qtype == "Q4_0" else gguf.LlamaFileType.MOSTLY_Q2_K)
    writer.add_tokenizer_model("llama")
    vocab = cfg["vocab_size"]
    writer.add_token_list(["<unk>", "<s>", "</s>"] + [f"<t{i}>" for i in range(3, vocab)])
    writer.add_token_scores([0.0] * vocab)
    writer.add_token_types([gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
                           + [gguf.TokenType.NORMAL] * (vocab - 3))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    for hf_name, name in gguf_names(layers).items():
        permute = rope_rows(name, cfg["num_attention_heads"])
        w = floats[hf_name]
        if w.ndim == 1 or name == "token_embd.weight":
            writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float32))
        elif qtype == "Q4_0":
            codes, scales = (module.params[f"{hf_name}.{part}"].data for part in ("codes", "scales"))
            writer.add_tensor(name, permute(q4_0_from_llmc(codes, scales)), raw_dtype=gguf.GGMLQuantizationType.Q4_0)
        else:
            writer.add_tensor(name, q2_k(permute(w)), raw_dtype=gguf.GGMLQuantizationType.Q2_K)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def decode_rate(prefill: Callable[[list[int]], np.ndarray], step: Callable[[int], int],
                tokens: int) -> tuple[float, np.ndarray]:
    """(tokens/s of greedy decode as tvm_decode.py times it, the prompt's last logits)."""
    logits = np.array(prefill(PROMPT), dtype=np.float32).reshape(-1)
    return tokens_per_second(step, int(np.argmax(logits)), tokens), logits


def llmc_rate(device: CompiledModel, threads: int, tokens: int) -> tuple[float, np.ndarray]:
    set_num_threads(threads)
    return decode_rate(device.prefill, lambda t: int(np.argmax(device.decode(t))), tokens)


def llamacpp_rate(path: Path, threads: int, tokens: int) -> tuple[float, np.ndarray]:
    llm = Llama(model_path=str(path), n_ctx=256, n_batch=64, n_threads=threads, n_threads_batch=threads,
                logits_all=True, verbose=False)  # scores are kept per position only with logits_all

    def run(ids: list[int]) -> np.ndarray:
        llm.eval(ids)
        return np.array(llm.scores[llm.n_tokens - 1])

    rate = decode_rate(run, lambda t: int(np.argmax(run([t]))), tokens)
    llm.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=2, help="layers of the Llama-2-7B-shaped model (default 2)")
    parser.add_argument("--tokens", type=int, default=16, help="timed decode steps per configuration (default 16)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args()
    cfg = hf.config_from_dict({"model_type": "llama", **LLAMA2_7B, "num_hidden_layers": args.layers,
                               "tie_word_embeddings": False}, "7B-shaped")
    torch_model = hf.build_model(cfg, seed=0).eval()
    floats = {name: p.detach().numpy() for name, p in torch_model.state_dict().items()}
    model = llmc.load(torch_model, name="llama2-7b-shaped")
    del torch_model
    threads_list = [t for t in THREADS if t <= (os.cpu_count() or 1)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="llmc-llamacpp-") as folder:
        for label, pipeline, qtype in PAIRS:
            module = run_pipeline(model.module, parse_pipeline(pipeline), PassContext())
            path = Path(folder) / f"model-{qtype}.gguf"
            write_gguf(path, floats, module, qtype, args.layers)
            device = compile_model(module, "cpu")
            for threads in threads_list:
                ours, our_logits = llmc_rate(device, threads, args.tokens)
                theirs, their_logits = llamacpp_rate(path, threads, args.tokens)
                err = float(np.abs(our_logits - their_logits).max() / np.abs(their_logits).max())
                rows.append({"llmc": label, "llama.cpp": qtype, "threads": threads, "llmc_tok_s": ours,
                             "llamacpp_tok_s": theirs, "ratio": ours / theirs,
                             "logit_err": err if qtype == "Q4_0" else None})  # Q2_K: other codes
            path.unlink()
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"Llama-2-7B shapes, {args.layers} layers, vocabulary 32000; {args.tokens} timed decode steps\n")
    print("| llmc | llama.cpp | threads | llmc tok/s | llama.cpp tok/s | llmc / llama.cpp | logit err |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        err = "other codes" if r["logit_err"] is None else f"{r['logit_err']:.1e}"
        print(f"| {r['llmc']} | {r['llama.cpp']} | {r['threads']} | {r['llmc_tok_s']:.2f} | {r['llamacpp_tok_s']:.2f} "
              f"| {r['ratio']:.2f} | {err} |")


if __name__ == "__main__":
    main()
