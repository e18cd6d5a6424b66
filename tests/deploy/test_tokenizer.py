"""The runtime's pure-Python byte-level BPE gives the ids and text of the ``tokenizers`` library."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from llmc.data import CORPUS as DATA_DIR
from llmc.deploy.tokenizer import ByteLevelBPE, UnsupportedTokenizer, split_words
from llmc.model import BUNDLED

tokenizers = pytest.importorskip("tokenizers")

SPEC = (BUNDLED["llmc-tiny"] / "tokenizer.json").read_text()
CORPUS = DATA_DIR / "test.txt.gz"
TRICKY = [
    "", " ", "  ", "a  b", "a \n b", "\n\n x", "trailing   ", "it's 'S 're'll", "don't you'll we've", "'''s",
    "x\u00b2\u00b3 \u00bd \u216b 123 \u0661\u0662\u0663", "h\u00e9llo w\u00f6rld \u2014 \u00fc",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8", "emoji \U0001f600\U0001f44d\U0001f3fd end",
    "tab\tsep\x1c\x1d\x1e\x1f!", "\u00a0nbsp\u2003em\u3000ideo\u2028line", "<s>hi</s><pad>x<unk>", " <s> a",
    "mixed123abc!!?? ..", "\r\n\r\n", "a\u0301e\u0308 combining", "\ufb01 ligature", "\U0001d518\U0001d52b\U0001d526",
    "x" * 300, "\x00\x01 control", "\ufffd replacement", "\ud7ff\ue000 private",
]


@pytest.fixture(scope="module")
def pair() -> tuple[ByteLevelBPE, object]:
    return ByteLevelBPE.from_json(SPEC), tokenizers.Tokenizer.from_str(SPEC)


def test_corpus_ids_equal_tokenizers(pair):
    ours, theirs = pair
    lines = gzip.open(CORPUS, "rt", encoding="utf-8").read().splitlines(keepends=True)
    assert [ours.encode(line) for line in lines] == [e.ids for e in theirs.encode_batch(lines)]


def test_tricky_and_random_strings_equal_tokenizers(pair):
    ours, theirs = pair
    rng = random.Random(0)
    alphabet = "ab Z9'\n\t\u00e9\u00b2\u0661\u4e2d\U0001f600\u2003.!-_<s>\x85"
    fuzz = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40))) for _ in range(400)]
    for text in TRICKY + fuzz:
        assert ours.encode(text) == theirs.encode(text).ids, repr(text)
        assert ours.encode(text, add_special_tokens=False) == theirs.encode(text, add_special_tokens=False).ids


def test_decode_equals_tokenizers(pair):
    ours, theirs = pair
    rng = random.Random(1)
    for _ in range(500):  # arbitrary id sequences, split characters and special tokens included
        ids = [rng.randrange(1024) for _ in range(rng.randrange(1, 12))] + [rng.choice([0, 1, 2, 3])]
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), ids
        assert ours.decode(ids, skip_special_tokens=False) == theirs.decode(ids, skip_special_tokens=False), ids


def test_split_words_cuts_as_gpt2():
    assert split_words("Hello  world's 42x!\n\n  ok") == ["Hello", " ", " world", "'s", " 42", "x", "!", "\n\n ", " ok"]


@pytest.mark.parametrize("change, part", [
    (lambda s: s.update(normalizer={"type": "NFC"}), "a normalizer"),
    (lambda s: s["model"].update(type="WordPiece"), "model"),
    (lambda s: s.update(pre_tokenizer={"type": "Whitespace"}), "pre-tokenizer"),
    (lambda s: s["model"].update(continuing_subword_prefix="##"), "continuing_subword_prefix"),
    (lambda s: s["added_tokens"][0].update(lstrip=True), "lstrip"),
    (lambda s: s.update(post_processor={"type": "BertProcessing"}), "post-processor"),
])
def test_other_tokenizers_are_refused_by_name(change, part):
    spec = json.loads(SPEC)
    change(spec)
    with pytest.raises(UnsupportedTokenizer, match=part):
        ByteLevelBPE(spec)
