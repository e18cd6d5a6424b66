"""What lowering changes: the accelerator's ``step`` program against the module it was lowered
from, in perplexity and tokens on the bundled corpus.

Both run in the reference interpreter on the same windows of the corpus's test split (the
protocol of ``llmc eval``: consecutive non-overlapping 256-token windows, each from an empty
cache). The lowered program takes a window as one chunk of rows; chunks of any size give the
same logits (every row is quantized on its own and the new keys and values enter the int8 cache
before attention reads it). Greedy decoding from a fixed prompt shows where the two first part.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from llmc.compiler.evaluate import corpus_windows, logits_nll, prefill_logits
from llmc.generate.step import ClusterStepDevice, StepDevice
from llmc.ir.graph import Module
from llmc.model import Model

PROMPT = "A hacker is a person who"
NEW_TOKENS = 32


def skipped(reason: str) -> dict[str, Any]:
    """The report entry of an accuracy measurement not made, and why."""
    return {"measured": False, "reason": reason}


def lowering_accuracy(source: Module, lowered: Module | list[Module], tokenizer_json: str | None, windows: int,
                      context: int) -> dict[str, Any]:
    """Perplexity of ``lowered`` (a lowered module, or the cards of a split one) and ``source`` on
    the first ``windows`` test windows (at most ``context``, the compiled context, tokens each),
    how often their next-token predictions agree there, and their greedy tokens from :data:`PROMPT`."""
    if windows < 1:
        return skipped("not asked for (--eval-windows 0)")
    if not source.has_weights:
        return skipped("the model has no weights (shapes only)")
    if tokenizer_json is None:
        return skipped("the model has no tokenizer")
    device = ClusterStepDevice(lowered) if isinstance(lowered, list) else StepDevice(lowered)
    nll = {"unlowered": 0.0, "lowered": 0.0}
    agree = tokens = 0
    parts = corpus_windows(source, tokenizer_json, windows, context)
    for window in parts:
        device.reset()
        want, got = prefill_logits(source, window), device.run(window.tolist())
        nll["unlowered"] += logits_nll(want, window)
        nll["lowered"] += logits_nll(got, window)
        agree += int((want[:-1].argmax(-1) == got[:-1].argmax(-1)).sum())
        tokens += len(window) - 1
    new_tokens = min(NEW_TOKENS, context - len(Model(source, tokenizer_json).encode(PROMPT)))
    model = Model(source, tokenizer_json)
    greedy = [[token for token, _ in model.stream(PROMPT, max_new_tokens=new_tokens, stop=False, device=d)]
              for d in (None, device)]
    same = [a == b for a, b in zip(*greedy)]
    return {
        "measured": True, "windows": len(parts), "tokens": tokens,
        "perplexity": {k: math.exp(v / tokens) for k, v in nll.items()},
        "top1_agreement": agree / tokens,
        "greedy": {"prompt": PROMPT, "tokens": new_tokens, "identical": int(np.sum(same)),
                   "first_difference": same.index(False) if False in same else None},
    }
