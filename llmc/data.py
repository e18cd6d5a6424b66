"""The bundled corpus: documents of the train and test splits, and their token streams.

The protocol is the one the bundled model was trained and evaluated with: every document is
encoded as ``<s> text </s>`` and the documents are concatenated into one stream per split.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from pathlib import Path

import numpy as np

from llmc.errors import LlmcError

CORPUS = Path(__file__).parent / "assets" / "corpus"
SPLITS = ("train", "test")


def read_documents(split: str) -> list[str]:
    """Documents of a split (separated by blank lines in ``<split>.txt.gz``)."""
    if split not in SPLITS:
        raise LlmcError(f"unknown corpus split '{split}' (choose from {', '.join(SPLITS)})")
    text = gzip.decompress((CORPUS / f"{split}.txt.gz").read_bytes()).decode("utf-8")
    return [doc for doc in text.split("\n\n") if doc.strip()]


@lru_cache(maxsize=4)
def token_stream(tokenizer_json: str, split: str, eos_id: int) -> np.ndarray:
    """``<s> document </s>`` for every document of ``split``, concatenated (int64)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(read_documents(split)):
        ids.extend(encoding.ids)
        ids.append(eos_id)
    return np.asarray(ids, dtype=np.int64)


def windows(stream: np.ndarray, length: int, count: int | None = None) -> list[np.ndarray]:
    """Consecutive non-overlapping windows of ``length`` tokens (a last shorter one is kept if it
    has at least 2 tokens); the first ``count`` of them."""
    parts = [stream[i:i + length] for i in range(0, len(stream), length)]
    return [w for w in parts if len(w) >= 2][:count]


def sample_windows(stream: np.ndarray, length: int, count: int, seed: int) -> list[np.ndarray]:
    """``count`` windows of ``length`` tokens at seeded random offsets (calibration data)."""
    if len(stream) <= length:
        raise LlmcError(f"the corpus has {len(stream)} tokens, fewer than one window of {length}")
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(stream) - length, size=count)
    return [stream[s:s + length] for s in starts]
