"""Held-out perplexity through the reference interpreter, on the bundled corpus's test split."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from llmc.data import token_stream, windows
from llmc.errors import LlmcError
from llmc.generate.interpreter import prefill_inputs
from llmc.ir.graph import Module
from llmc.ir.interpreter import run_function

WINDOW = 256


@dataclass(frozen=True)
class Perplexity:
    perplexity: float
    nll: float  # summed, nats
    tokens: int  # predicted tokens


def prefill_logits(module: Module, window: np.ndarray) -> np.ndarray:
    """Logits [n, V] of the ``prefill`` function over one window from an empty cache."""
    return run_function(module, "prefill", prefill_inputs(window))["logits"][0]


def logits_nll(logits: np.ndarray, window: np.ndarray) -> float:
    """Summed next-token negative log-likelihood of ``window`` under ``logits`` [n, V]
    (float64 log-softmax; the last position predicts nothing)."""
    n = len(window)
    x = logits[:-1].astype(np.float64)
    top = x.max(axis=-1, keepdims=True)
    logz = (top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True)))[:, 0]
    return float((logz - x[np.arange(n - 1), window[1:]]).sum())


def window_nll(module: Module, window: np.ndarray) -> float:
    """Summed next-token negative log-likelihood of one window."""
    return logits_nll(prefill_logits(module, window), window)


def corpus_windows(module: Module, tokenizer_json: str | None, max_windows: int | None = None,
                   context: int | None = None) -> list[np.ndarray]:
    """The evaluation windows: consecutive non-overlapping 256-token windows of the test split, or
    of the context (``context``, else the model's) where it is shorter."""
    if tokenizer_json is None:
        raise LlmcError(f"model '{module.name}' has no tokenizer: perplexity on the corpus needs one")
    stream = token_stream(tokenizer_json, "test", int(module.attrs.get("eos_token_id", -1)))
    context = context or int(module.attrs.get("max_position", 0) or 0)
    return windows(stream, min(WINDOW, context) if context else WINDOW, max_windows)


def perplexity(module: Module, tokenizer_json: str | None, max_windows: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> Perplexity:
    """Perplexity over consecutive non-overlapping 256-token windows of the test split (each
    window scored from an empty cache), the protocol the bundled model reports."""
    parts = corpus_windows(module, tokenizer_json, max_windows)
    total, count = 0.0, 0
    for i, window in enumerate(parts):
        total += window_nll(module, window)
        count += len(window) - 1
        if progress is not None:
            progress(i + 1, len(parts))
    return Perplexity(math.exp(total / count), total, count)
