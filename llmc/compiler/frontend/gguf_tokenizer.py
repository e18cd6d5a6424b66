"""Hugging Face ``tokenizers`` JSON from a GGUF file's ``tokenizer.ggml.*`` metadata.

Two of llama.cpp's vocabulary kinds are rebuilt:

- ``gpt2``: byte-level BPE from the tokens and merges, with the pre-tokenizer regex that
  ``tokenizer.ggml.pre`` names (``gpt-2``, ``llama-bpe``, ``qwen2``);
- ``llama``: SentencePiece-style BPE from the tokens and scores (merges ordered by the score of
  the merged piece, as llama.cpp merges bigrams), byte fallback on ``<0xXX>`` tokens.

Control and user-defined tokens become added tokens (control ones special). Any other kind is
declined with the reason, and the model imports without a tokenizer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

PREFIX = "tokenizer.ggml."
# llama.cpp's token types (gguf.TokenType)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
          r"|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass(frozen=True)
class Pretokenizer:
    """How llama.cpp splits text before byte-level BPE for one ``tokenizer.ggml.pre`` value."""

    regex: str
    ignore_merges: bool = False  # a word that is a token is taken whole (Llama 3)
    add_bos: bool = False  # llama.cpp's default when the file does not say


PRE = {
    "gpt-2": Pretokenizer(_GPT2),
    "llama-bpe": Pretokenizer(_LLAMA3, ignore_merges=True, add_bos=True),
    "llama3": Pretokenizer(_LLAMA3, ignore_merges=True, add_bos=True),
    "llama-v3": Pretokenizer(_LLAMA3, ignore_merges=True, add_bos=True),
    "qwen2": Pretokenizer(_QWEN2),
}


@dataclass(frozen=True)
class GgufTokenizer:
    """The tokenizer JSON (None when not rebuilt, with ``reason``) and whether a BOS token starts
    every prompt."""

    json: str | None
    add_bos: bool
    reason: str = ""


def read_tokenizer(fields: Mapping[str, Any]) -> GgufTokenizer:
    """The tokenizer described by ``fields`` (``tokenizer.ggml.*`` key -> value)."""
    try:
        return _read(fields)
    except Exception as e:  # tokenizers rejects an inconsistent vocabulary with its own exception types
        detail = " ".join(str(e).split())[:160]
        return GgufTokenizer(None, _add_bos(fields, False), f"the tokenizer cannot be built ({detail})")


def _read(fields: Mapping[str, Any]) -> GgufTokenizer:
    kind = fields.get(PREFIX + "model")
    tokens = fields.get(PREFIX + "tokens")
    if kind is None or not tokens:
        return GgufTokenizer(None, _add_bos(fields, False), "the file has none")
    if kind == "gpt2":
        pre = fields.get(PREFIX + "pre", "default")
        if pre not in PRE:
            return GgufTokenizer(None, _add_bos(fields, False),
                                 f"BPE pre-tokenizer '{pre}' is not handled ({', '.join(sorted(PRE))} are)")
        merges = fields.get(PREFIX + "merges") or []
        return GgufTokenizer(byte_level_bpe(tokens, merges, _types(fields, tokens), PRE[pre]),
                             _add_bos(fields, PRE[pre].add_bos))
    if kind == "llama":
        scores = fields.get(PREFIX + "scores") or [0.0] * len(tokens)
        space = bool(fields.get(PREFIX + "add_space_prefix", True))
        unk = fields.get(PREFIX + "unknown_token_id")
        return GgufTokenizer(sentencepiece_bpe(tokens, scores, _types(fields, tokens), space, unk),
                             _add_bos(fields, True))
    return GgufTokenizer(None, _add_bos(fields, False), f"tokenizer kind '{kind}' is not handled (gpt2 and llama are)")


def _add_bos(fields: Mapping[str, Any], default: bool) -> bool:
    return bool(fields.get(PREFIX + "add_bos_token", default))


def _types(fields: Mapping[str, Any], tokens: Sequence[str]) -> list[int]:
    types = fields.get(PREFIX + "token_type")
    return list(types) if types and len(types) == len(tokens) else [NORMAL] * len(tokens)


def _vocab(tokens: Sequence[str]) -> dict[str, int]:
    """Token -> id; a token listed twice keeps its first id."""
    vocab: dict[str, int] = {}
    for i, token in enumerate(tokens):
        vocab.setdefault(token, i)
    return vocab


def _add_tokens(tokenizer: Any, tokens: Sequence[str], types: Sequence[int]) -> None:
    from tokenizers import AddedToken

    special = [AddedToken(t, special=True, normalized=False) for t, k in zip(tokens, types) if k == CONTROL]
    user = [AddedToken(t, special=False, normalized=False) for t, k in zip(tokens, types) if k == USER_DEFINED]
    if special:
        tokenizer.add_special_tokens(special)
    if user:
        tokenizer.add_tokens(user)


def byte_level_bpe(tokens: Sequence[str], merges: Sequence[str], types: Sequence[int], pre: Pretokenizer) -> str:
    """GPT-2-style byte-level BPE: the vocabulary and merges as the file lists them."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    pairs = [tuple(m.split(" ", 1)) for m in merges if " " in m]
    tokenizer = Tokenizer(models.BPE(vocab=_vocab(tokens), merges=pairs, ignore_merges=pre.ignore_merges))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pre.regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    _add_tokens(tokenizer, tokens, types)
    return tokenizer.to_str()


def spm_merges(tokens: Sequence[str], scores: Sequence[float], types: Sequence[int]) -> list[tuple[str, str]]:
    """Every split of a normal token into two tokens, the splits of higher-scoring tokens first
    (llama.cpp merges the adjacent pair whose merged piece scores highest)."""
    vocab = _vocab(tokens)
    found = []
    for i, token in enumerate(tokens):
        if types[i] != NORMAL or vocab[token] != i:
            continue
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in vocab and right in vocab:
                found.append((-float(scores[i]), i, cut, left, right))
    return [(left, right) for *_, left, right in sorted(found)]


def sentencepiece_bpe(tokens: Sequence[str], scores: Sequence[float], types: Sequence[int], space_prefix: bool,
                      unk: int | None) -> str:
    """SentencePiece-style BPE: spaces as ``▁`` (a leading one when ``space_prefix``), byte fallback."""
    from tokenizers import Tokenizer, decoders, models, normalizers

    unk_token = tokens[unk] if unk is not None and 0 <= unk < len(tokens) else None
    model = models.BPE(vocab=_vocab(tokens), merges=spm_merges(tokens, scores, types), unk_token=unk_token,
                       fuse_unk=True, byte_fallback=True)
    tokenizer = Tokenizer(model)
    steps = [normalizers.Prepend("▁")] if space_prefix else []
    tokenizer.normalizer = normalizers.Sequence([*steps, normalizers.Replace(" ", "▁")])
    tail = [decoders.Strip(" ", 1, 0)] if space_prefix else []
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), *tail])
    _add_tokens(tokenizer, tokens, types)
    return tokenizer.to_str()
