"""A byte-level BPE tokenizer in pure Python, read from a Hugging Face ``tokenizer.json``.

The deployed runtime tokenizes without the ``tokenizers`` library. It implements the GPT-2 family's
format, the bundled model's: no normalizer, the ``ByteLevel`` pre-tokenizer (GPT-2's split regex,
optional prefix space), a ``BPE`` model with merges, added tokens matched literally, a
``TemplateProcessing`` (or ``ByteLevel``) post-processor and the ``ByteLevel`` decoder. Anything
else raises :class:`UnsupportedTokenizer` naming the part, so a caller can fall back to token ids.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence

from llmc.errors import LlmcError

# GPT-2's split regex, ``'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+``,
# runs as a scanner over character kinds (Python's ``re`` has no \p{L} or \p{N}).
CONTRACTIONS = ("s", "t", "re", "ve", "m", "ll", "d")
# The Unicode White_Space property (what \s matches in the regex engine of ``tokenizers``).
WHITESPACE = frozenset("\t\n\x0b\x0c\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000"
                       + "".join(chr(c) for c in range(0x2000, 0x200B)))


class UnsupportedTokenizer(LlmcError):
    """The tokenizer.json uses a part this tokenizer does not implement."""


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map: printable Latin-1 bytes stand for themselves, the
    others for the characters from U+0100 on, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1),
                 *range(ord("\xae"), ord("\xff") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


@functools.lru_cache(maxsize=4096)
def _kind(ch: str) -> str:
    """``" "`` whitespace, ``"L"`` letter, ``"N"`` number, ``"O"`` anything else."""
    if ch in WHITESPACE:
        return " "
    major = unicodedata.category(ch)[0]
    return major if major in "LN" else "O"


def split_words(text: str) -> list[str]:
    """``text`` cut as GPT-2's regex cuts it (a leading space stays with the word after it)."""
    kinds = [_kind(c) for c in text]
    words, i, n = [], 0, len(text)
    while i < n:
        if text[i] == "'":
            suffix = next((c for c in CONTRACTIONS if text.startswith(c, i + 1)), None)
            if suffix is not None:
                words.append(text[i:i + 1 + len(suffix)])
                i += 1 + len(suffix)
                continue
        start = i + 1 if text[i] == " " and i + 1 < n and kinds[i + 1] != " " else i
        j = start + 1
        while j < n and kinds[j] == kinds[start]:
            j += 1
        if kinds[start] == " " and j < n and j - i > 1:
            j -= 1  # \s+(?!\S): a whitespace run leaves its last character to the word after it
        words.append(text[i:j])
        i = j
    return words


class ByteLevelBPE:
    """Encode text to ids and decode ids to text as ``tokenizers`` does for a byte-level BPE model."""

    def __init__(self, spec: dict) -> None:
        _require(spec.get("normalizer") is None, "a normalizer", spec.get("normalizer"))
        pre = spec.get("pre_tokenizer") or {}
        _require(pre.get("type") == "ByteLevel", "pre-tokenizer", pre)
        decoder = spec.get("decoder") or {}
        _require(decoder.get("type") == "ByteLevel", "decoder", decoder)
        model = spec.get("model") or {}
        _require(model.get("type") == "BPE", "model", model.get("type"))
        for key in ("continuing_subword_prefix", "end_of_word_suffix", "dropout"):
            _require(not model.get(key), f"BPE {key}", model.get(key))
        _require(not model.get("byte_fallback"), "BPE byte_fallback", True)
        self.prefix_space = bool(pre.get("add_prefix_space", False))
        self.use_regex = bool(pre.get("use_regex", True))
        self.ignore_merges = bool(model.get("ignore_merges", False))
        self.vocab: dict[str, int] = {str(k): int(v) for k, v in model.get("vocab", {}).items()}
        self.ranks = {_pair(m): r for r, m in enumerate(model.get("merges", []))}
        self.added: dict[str, int] = {}
        self.special: set[int] = set()
        plain, normalized = [], []
        for token in spec.get("added_tokens", []):
            for flag in ("single_word", "lstrip", "rstrip"):
                _require(not token.get(flag), f"added token {flag}", token["content"])
            self.added[token["content"]] = int(token["id"])
            if token.get("special"):
                self.special.add(int(token["id"]))
            (normalized if token.get("normalized") else plain).append(token["content"])
        self.splitters = [_alternation(group) for group in (plain, normalized) if group]
        self.template = _template(spec.get("post_processor"))
        self.id_to_token = {i: t for t, i in self.vocab.items()} | {i: t for t, i in self.added.items()}
        self.to_char = byte_alphabet()
        self.to_byte = {c: b for b, c in self.to_char.items()}
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_json(cls, text: str) -> ByteLevelBPE:
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as e:
            raise LlmcError(f"tokenizer.json: corrupt JSON: {e}") from None
        if not isinstance(spec, dict):
            raise LlmcError("tokenizer.json: not a JSON object")
        return cls(spec)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids: list[int] = []
        for piece, is_added in self._split_added(text):
            if is_added:
                ids.append(self.added[piece])
                continue
            if self.prefix_space and not piece.startswith(" "):
                piece = " " + piece
            for word in split_words(piece) if self.use_regex else [piece]:
                ids += self._word(word)
        if not add_special_tokens or self.template is None:
            return ids
        return [i for part in self.template for i in (ids if part is None else part)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        data = bytearray()
        for i in ids:
            token = self.id_to_token.get(int(i))
            if token is None or (skip_special_tokens and int(i) in self.special):
                continue
            raw = [self.to_byte.get(c) for c in token]
            data += bytes(raw) if None not in raw else token.encode()  # type: ignore[arg-type]
        return data.decode("utf-8", errors="replace")

    def _split_added(self, text: str) -> list[tuple[str, bool]]:
        """``text`` cut at the added tokens (first those matched before normalization): (piece, is added)."""
        pieces = [(text, False)]
        for splitter in self.splitters:
            cut: list[tuple[str, bool]] = []
            for piece, added in pieces:
                if added:
                    cut.append((piece, True))
                else:  # split() with one group alternates text and matches
                    cut += [(part, k % 2 == 1) for k, part in enumerate(splitter.split(piece)) if part]
            pieces = cut
        return pieces

    def _word(self, word: str) -> list[int]:
        if word not in self._cache:
            chars = "".join(self.to_char[b] for b in word.encode())
            symbols = [chars] if self.ignore_merges and chars in self.vocab else self._merge(list(chars))
            missing = [s for s in symbols if s not in self.vocab]
            if missing:
                raise LlmcError(f"tokenizer: symbol {missing[0]!r} is not in the vocabulary")
            self._cache[word] = [self.vocab[s] for s in symbols]
        return self._cache[word]

    def _merge(self, parts: list[str]) -> list[str]:
        """Apply the lowest-ranked merge everywhere, left to right, until none applies."""
        while len(parts) > 1:
            ranked = [(self.ranks[p], p) for p in zip(parts, parts[1:]) if p in self.ranks]
            if not ranked:
                break
            parts = merge_pair(parts, *min(ranked)[1])
        return parts


def _require(ok: bool, part: str, value: object) -> None:
    if not ok:
        shown = json.dumps(value)[:80] if not isinstance(value, str) else value
        raise UnsupportedTokenizer(f"tokenizer.json: {part} {shown} is not supported (byte-level BPE only)")


def _pair(merge: str | Sequence[str]) -> tuple[str, str]:
    if isinstance(merge, str):
        first, _, second = merge.partition(" ")
        return first, second
    return str(merge[0]), str(merge[1])


def _alternation(tokens: list[str]) -> re.Pattern[str]:
    """Leftmost-longest matching of literal tokens; the capture keeps them in ``split``'s result."""
    return re.compile("(" + "|".join(re.escape(t) for t in sorted(tokens, key=len, reverse=True)) + ")")


def _template(post: dict | None) -> list[list[int] | None] | None:
    """The ``single`` template as fixed id lists and ``None`` for the sequence; None for no template."""
    if post is None or post.get("type") == "ByteLevel":
        return None
    _require(post.get("type") == "TemplateProcessing", "post-processor", post.get("type"))
    specials = post.get("special_tokens", {})
    parts: list[list[int] | None] = []
    for item in post.get("single", []):
        if "Sequence" in item:
            parts.append(None)
        else:
            name = item["SpecialToken"]["id"]
            _require(name in specials, "template token", name)
            parts.append([int(i) for i in specials[name]["ids"]])
    return parts


def merge_pair(parts: list[str], first: str, second: str) -> list[str]:
    """``parts`` with every adjacent ``first, second`` (left to right, not overlapping) merged into one."""
    merged, i = [], 0
    while i < len(parts):
        if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
            merged.append(first + second)
            i += 2
        else:
            merged.append(parts[i])
            i += 1
    return merged
