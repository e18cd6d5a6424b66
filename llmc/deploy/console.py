"""The generation command line shared by ``llmc`` and a deployed ``run.py``: prompt and sampling
arguments, token ids, streamed text. Standard library and NumPy only."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from llmc.errors import LlmcError
from llmc.generate.loop import SAMPLERS, SamplingOptions


def add_generation_arguments(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """--prompt / --prompt-ids (one of them ``required``), --max-new-tokens and the sampling options."""
    prompt = parser.add_mutually_exclusive_group(required=required)
    prompt.add_argument("--prompt", metavar="TEXT", help="the prompt text (needs a tokenizer)")
    prompt.add_argument("--prompt-ids", metavar="IDS", help="the prompt as comma-separated token ids")
    parser.add_argument("--max-new-tokens", type=int, default=32, metavar="N",
                        help="stop after N new tokens, or at the end-of-sequence token (default 32)")
    parser.add_argument("--sample", choices=SAMPLERS, default="greedy", help="sampling method (default greedy)")
    parser.add_argument("--top-k", type=int, default=SamplingOptions.top_k, metavar="K",
                        help="top-k: sample among the K likeliest tokens (default %(default)s)")
    parser.add_argument("--top-p", type=float, default=SamplingOptions.top_p, metavar="P",
                        help="top-p: sample from the likeliest tokens reaching probability P (default %(default)s)")
    parser.add_argument("--temperature", type=float, default=SamplingOptions.temperature, metavar="T",
                        help="divide the logits by T before top-k/top-p sampling (default %(default)s)")


def sampling_options(args: argparse.Namespace) -> SamplingOptions:
    """The sampling options of parsed generation arguments (and ``--seed``)."""
    try:
        return SamplingOptions(args.sample, args.top_k, args.top_p, args.temperature, args.seed)
    except ValueError as e:
        raise LlmcError(str(e)) from None


def parse_ids(text: str) -> list[int]:
    """``"1, 2,3"`` -> ``[1, 2, 3]``."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise LlmcError(f"--prompt-ids: expected comma-separated integers, got '{text}'") from None


class TextStream:
    """Generated tokens as text: :meth:`push` returns the new text, holding back an incomplete
    character. Without a ``decode`` function the text is the token ids, space-separated."""

    def __init__(self, decode: Callable[[list[int]], str] | None) -> None:
        self.decode = decode
        self.ids: list[int] = []
        self.shown = 0

    @property
    def text(self) -> str | None:
        return self.decode(self.ids) if self.decode is not None else None

    def push(self, token: int) -> str:
        self.ids.append(token)
        if self.decode is None:
            return f"{' ' if len(self.ids) > 1 else ''}{token}"
        text = self.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        piece, self.shown = text[self.shown:], len(text)
        return piece
