"""Held-out perplexity through the reference interpreter, on the bundled corpus's test split."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llmc.data import token_stream, windows
from llmc.deploy.interpreter_device import prefill_inputs
from llmc.errors import LlmcError
from llmc.ir.graph import Module
from llmc.ir.interpreter import run_function

WINDOW = 256


@dataclass(frozen=True)
class Perplexity:
    perplexity: float
    nll: float  # summed, nats
    tokens: int  # predicted tokens


def window_nll(module: Module, window: np.ndarray) -> float:
    """Summed next-token negative log-likelihood of one window (float64 log-softmax)."""
    n = len(window)
    out = run_function(module, "prefill", prefill_inputs(window))
    logits = out["logits"][0, :-1].astype(np.float64)
    top = logits.max(axis=-1, keepdims=True)
    logz = (top + np.log(np.exp(logits - top).sum(axis=-1, keepdims=True)))[:, 0]
    return float((logz - logits[np.arange(n - 1), window[1:]]).sum())


def perplexity(module: Module, tokenizer_json: str | None, max_windows: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> Perplexity:
    """Perplexity over consecutive non-overlapping 256-token windows of the test split (each
    window scored from an empty cache), the protocol the bundled model reports."""
    if tokenizer_json is None:
        raise LlmcError(f"model '{module.name}' has no tokenizer: perplexity on the corpus needs one")
    stream = token_stream(tokenizer_json, "test", int(module.attrs.get("eos_token_id", -1)))
    parts = windows(stream, WINDOW, max_windows)
    total, count = 0.0, 0
    for i, window in enumerate(parts):
        total += window_nll(module, window)
        count += len(window) - 1
        if progress is not None:
            progress(i + 1, len(parts))
    return Perplexity(math.exp(total / count), total, count)
