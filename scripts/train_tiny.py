"""Train ``llmc-tiny``, the small Llama model used as llmc's demo and accuracy fixture.

Everything is deterministic and runs on CPU:

1. read ``train.txt.gz`` / ``test.txt.gz`` from ``--corpus`` (documents are
   separated by one blank line; see ``scripts/make_corpus.py``);
2. train a byte-level BPE tokenizer (vocab 1024) on the train split;
3. tokenize every document as ``<s> text </s>`` and concatenate the documents
   into one token stream per split;
4. train a 4-layer Llama (GQA, tied embeddings) with AdamW, linear warmup and
   cosine decay on 256-token windows in a seeded shuffled order;
5. save the weights rounded to float16 (``model.safetensors``), the config and
   the tokenizer, reload the saved weights as float32 and measure the held-out
   perplexity (see :func:`heldout_nll`);
6. write ``training_log.json`` with the loss curve, the final metrics and
   greedy samples.

Usage::

    .venv/bin/python scripts/train_tiny.py [--out DIR] [--steps N]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO_ROOT / "llmc" / "assets" / "corpus"
DEFAULT_OUT = REPO_ROOT / "llmc" / "assets" / "llmc-tiny"

VOCAB_SIZE = 1024
CONTEXT = 256
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")  # ids 0, 1, 2, 3
UNK_ID, BOS_ID, EOS_ID, PAD_ID = range(len(SPECIAL_TOKENS))
SAMPLE_PROMPTS = (  # two from the train split, one (an FAQ title) from the test split
    "This is the Jargon File, a comprehensive compendium of",
    "The for statement in Python",
    "How do I get a single keypress at a time?",
)
SAMPLE_NEW_TOKENS = 40


def read_documents(path: Path) -> list[str]:
    """Documents of a gzipped corpus split (separated by blank lines)."""
    text = gzip.decompress(path.read_bytes()).decode("utf-8")
    return [doc for doc in text.split("\n\n") if doc.strip()]


def train_tokenizer(documents: list[str]) -> Tokenizer:
    """Byte-level BPE with the special tokens first and ``<s>`` prepended."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A",
        pair="<s> $A <s> $B",
        special_tokens=[("<s>", BOS_ID)],
    )
    return tokenizer


def token_stream(tokenizer: Tokenizer, documents: list[str]) -> torch.Tensor:
    """Concatenation of ``<s> document </s>`` over all documents (int64)."""
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(documents):
        ids.extend(encoding.ids)
        ids.append(EOS_ID)
    return torch.tensor(ids, dtype=torch.int64)


def model_config() -> LlamaConfig:
    """The llmc-tiny architecture."""
    return LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        hidden_act="silu",
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=True,
        initializer_range=0.02,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )


def learning_rate(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warmup to ``peak`` then cosine decay to ``peak / 10``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def heldout_nll(model: LlamaForCausalLM, stream: torch.Tensor, max_windows: int | None = None) -> tuple[float, int]:
    """Summed next-token NLL (nats) and number of predicted tokens.

    The stream is cut into consecutive non-overlapping windows of ``CONTEXT``
    tokens (the last, shorter window is kept if it has at least 2 tokens).
    Each window is scored independently from an empty cache: the first token
    of a window is context only, every other token is predicted from the
    tokens before it in the same window, so a full window contributes
    ``CONTEXT - 1`` predictions.
    """
    windows = [stream[i : i + CONTEXT] for i in range(0, len(stream), CONTEXT)]
    windows = [w for w in windows if len(w) >= 2][:max_windows]
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for window in windows:
            logits = model(window[None, :]).logits[0, :-1].double()
            nll = torch.nn.functional.cross_entropy(logits, window[1:], reduction="sum")
            total += nll.item()
            count += len(window) - 1
    return total, count


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only (not on norms or the tied embedding)."""
    decay = [p for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embed" in n]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def greedy_sample(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerFast, prompt: str) -> str:
    """Greedy continuation of ``prompt`` by ``SAMPLE_NEW_TOKENS`` tokens with ``generate()``."""
    inputs = tokenizer(prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=SAMPLE_NEW_TOKENS, do_sample=False, pad_token_id=PAD_ID)
    return tokenizer.decode(output[0], skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the llmc-tiny Llama model.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--steps", type=int, default=2400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--eval-windows", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    started = time.perf_counter()

    train_docs = read_documents(args.corpus / "train.txt.gz")
    test_docs = read_documents(args.corpus / "test.txt.gz")
    tokenizer = train_tokenizer(train_docs)
    train_ids = token_stream(tokenizer, train_docs)
    test_ids = token_stream(tokenizer, test_docs)
    print(
        f"corpus: {len(train_docs)} train docs / {len(train_ids)} tokens, "
        f"{len(test_docs)} test docs / {len(test_ids)} tokens "
        f"(tokenizer {time.perf_counter() - started:.1f}s)",
        flush=True,
    )

    # Training examples: non-overlapping windows of CONTEXT + 1 tokens
    # (inputs and shifted targets), visited in a seeded random order per epoch.
    n_examples = (len(train_ids) - 1) // CONTEXT
    examples = train_ids[: n_examples * CONTEXT + 1]
    order_gen = torch.Generator().manual_seed(args.seed)
    order: list[int] = []

    config = model_config()
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params} parameters", flush=True)
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=args.lr, betas=(0.9, 0.95), eps=1e-8)

    log_steps: list[dict[str, float]] = []
    log_evals: list[dict[str, float]] = []
    train_started = time.perf_counter()
    for step in range(args.steps):
        model.train()
        while len(order) < args.batch_size:
            order.extend(torch.randperm(n_examples, generator=order_gen).tolist())
        batch_index, order = order[: args.batch_size], order[args.batch_size :]
        batch = torch.stack([examples[i * CONTEXT : (i + 1) * CONTEXT + 1] for i in batch_index])
        lr = learning_rate(step, args.steps, args.lr, args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        logits = model(batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        elapsed = time.perf_counter() - train_started
        log_steps.append({"step": step + 1, "loss": round(loss.item(), 4), "lr": lr, "time_s": round(elapsed, 1)})
        if (step + 1) % 10 == 0:
            tokens_per_s = (step + 1) * args.batch_size * CONTEXT / elapsed
            print(
                f"step {step + 1}/{args.steps} loss {loss.item():.4f} lr {lr:.2e} "
                f"|g| {grad_norm.item():.2f} {tokens_per_s:.0f} tok/s {elapsed:.0f}s",
                flush=True,
            )
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            nll, count = heldout_nll(model, test_ids, args.eval_windows)
            log_evals.append({"step": step + 1, "heldout_loss": round(nll / count, 4)})
            print(f"step {step + 1}: held-out loss {nll / count:.4f} ({count} tokens)", flush=True)
    train_seconds = time.perf_counter() - train_started

    args.out.mkdir(parents=True, exist_ok=True)
    model.half().save_pretrained(args.out)
    fast_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        model_max_length=config.max_position_embeddings,
    )
    fast_tokenizer.save_pretrained(args.out)
    # Name the class that exists in every transformers version (v5 writes its
    # internal alias "TokenizersBackend", which v4 cannot resolve).
    tokenizer_config_path = args.out / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_config_path.read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tokenizer_config_path.write_text(json.dumps(tokenizer_config, indent=2) + "\n")

    reloaded = LlamaForCausalLM.from_pretrained(args.out, dtype=torch.float32)
    nll, count = heldout_nll(reloaded, test_ids)
    test_bytes = sum(len(doc.encode("utf-8")) for doc in test_docs)
    perplexity = math.exp(nll / count)
    print(f"held-out perplexity (fp16 weights, fp32 compute): {perplexity:.3f}", flush=True)
    reloaded_tokenizer = PreTrainedTokenizerFast.from_pretrained(args.out)
    samples = [
        {"prompt": prompt, "text": greedy_sample(reloaded, reloaded_tokenizer, prompt)} for prompt in SAMPLE_PROMPTS
    ]
    for sample in samples:
        print(f"sample: {sample['text']!r}", flush=True)

    log = {
        "model": "llmc-tiny",
        "parameters": n_params,
        "seed": args.seed,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "context": CONTEXT,
        "tokens_seen": args.steps * args.batch_size * CONTEXT,
        "train_tokens": len(train_ids),
        "test_tokens": len(test_ids),
        "optimizer": {
            "name": "AdamW",
            "peak_lr": args.lr,
            "warmup_steps": args.warmup,
            "schedule": "linear warmup, cosine decay to peak/10",
            "betas": [0.9, 0.95],
            "weight_decay": args.weight_decay,
            "grad_clip": 1.0,
        },
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "threads": args.threads,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "loss_curve": log_steps,
        "heldout_curve": log_evals,
        "heldout_curve_note": (
            f"mean NLL over the first {args.eval_windows} windows of the test stream, fp32 weights during training"
        ),
        "final": {
            "heldout_nll_sum": nll,
            "heldout_predicted_tokens": count,
            "heldout_loss": nll / count,
            "heldout_perplexity": perplexity,
            "heldout_bits_per_byte": nll / math.log(2) / test_bytes,
            "test_bytes": test_bytes,
            "method": (
                "weights saved as float16, loaded back as float32; test split tokenized as "
                "<s> doc </s> per document and concatenated; non-overlapping windows of "
                f"{CONTEXT} tokens (last partial window kept); the first token of each "
                "window is not predicted; perplexity = exp(sum NLL / predicted tokens)"
            ),
        },
        "greedy_new_tokens": SAMPLE_NEW_TOKENS,
        "samples": samples,
    }
    (args.out / "training_log.json").write_text(json.dumps(log, indent=1) + "\n")


if __name__ == "__main__":
    main()
