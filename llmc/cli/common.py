"""What the subcommands share: the :class:`Command` record, common arguments, model loading,
progress display and the generation loop's console front end."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from llmc.deploy.console import TextStream as _TextStream
from llmc.deploy.console import parse_ids, sampling_options
from llmc.errors import LlmcError
from llmc.io import read_json_object
from llmc.model import Model, load

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    """A subcommand: its name, the function that adds its arguments and the function that runs it
    (whose docstring's first line is the help)."""

    name: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Handler

    @property
    def help(self) -> str:
        return (self.run.__doc__ or "").strip().splitlines()[0]


def add_alias(parser: argparse.ArgumentParser, old: str, dest: str) -> None:
    """Accept the earlier spelling ``old`` of an option (``--target``) for ``dest``, without listing it."""
    parser.add_argument(old, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def add_model_arguments(parser: argparse.ArgumentParser, generates: bool = False) -> None:
    """MODEL, --config, --seed and (unless the command ``generates``, needing weights) --shapes-only."""
    parser.add_argument("model", metavar="MODEL",
                        help="a Hugging Face model directory, .onnx, .gguf or .llmc file, 'llmc-tiny', "
                             "or an architecture name (llama, qwen2, mistral, gpt2, opt) for random weights")
    parser.add_argument("--config", type=Path, metavar="JSON",
                        help="config overrides for an architecture name, as a JSON object file")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random weights of an architecture name"
                             + (", and of sampling" if generates else "") + " (default 0)")
    if not generates:
        parser.add_argument("--shapes-only", action="store_true",
                            help="import the structure without materialising weights")


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def load_model(args: argparse.Namespace) -> Model:
    """The model named by ``args.model`` with ``--config``, ``--seed`` and ``--shapes-only``."""
    from llmc.compiler.frontend import is_architecture

    config = None
    if args.config is not None:
        if Path(args.model).exists() or not is_architecture(args.model):
            raise LlmcError(f"--config applies to an architecture name (a transformers model_type such as llama), "
                            f"not '{args.model}'")
        config = read_json_object(args.config, "a JSON object of config values")
    with activity(f"importing {args.model}", progress_enabled(args)):
        return load(args.model, config=config, seed=args.seed, shapes_only=getattr(args, "shapes_only", False))


def progress_enabled(args: argparse.Namespace) -> bool:
    """Progress bars go to stderr, only on a terminal and never under ``--json`` (``run`` also
    leaves them out when its text streams to the same terminal)."""
    return not getattr(args, "json", False) and sys.stderr.isatty()


@contextmanager
def activity(description: str, enabled: bool) -> Iterator[None]:
    """An elapsed-time bar on stderr for a step with no measurable progress; it appears only
    if the step takes over a second and is erased when it ends."""
    if not enabled:
        yield
        return
    done = threading.Event()
    with tqdm(desc=description, bar_format="{desc} {elapsed}", delay=1.0, leave=False, file=sys.stderr) as bar:
        ticker = threading.Thread(target=_tick, args=(bar, done), daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()


def _tick(bar: tqdm, done: threading.Event) -> None:
    while not done.wait(0.5):
        bar.update(0)  # redraws once the bar's delay has passed


def generate(args: argparse.Namespace, model: Model, device: Callable[[], object],
             extra: Callable[[], dict] | None = None) -> int:
    """Stream generated text (or print ``--json``, with ``extra()``'s entries) on the device ``device()``
    (None: the interpreter)."""
    if args.max_new_tokens < 0:
        raise LlmcError("--max-new-tokens must be at least 0")
    sampling = sampling_options(args)
    ids = parse_ids(args.prompt_ids) if args.prompt_ids is not None else model.encode(args.prompt)
    text = TextStream(model)
    show_bar = progress_enabled(args) and not sys.stdout.isatty()  # on one terminal the text is the progress
    with tqdm(total=args.max_new_tokens, desc="generating", unit="tok", delay=1.0, leave=False,
              file=sys.stderr, disable=not show_bar) as bar:
        for token, _ in model.stream(prompt_ids=ids, max_new_tokens=args.max_new_tokens, sampling=sampling,
                                     kernels=lut_kernels(model, args),
                                     device=device()):
            piece = text.push(token)
            if not args.json:
                print(piece, end="", flush=True)
            bar.update(1)
    if args.json:
        print(json.dumps({"tokens": text.ids, "text": text.text, **(extra() if extra else {})}))
    else:
        print()
    return 0


def lut_kernels(model: Model, args: argparse.Namespace) -> dict | None:
    """Interpreter kernels for ``--lut-kernels`` (``--lut-variant``), named on stderr."""
    if getattr(args, "lut_kernels", "interpreter") == "interpreter":
        return None
    from llmc.backends.tvm.build import host_target
    from llmc.backends.tvm.lut_isa import choose
    from llmc.backends.tvm.lut_runtime import lut_kernels as tvm_lut_kernels

    say_lut_variant(choose(host_target(), args.lut_variant))
    return tvm_lut_kernels(model.module, variant=args.lut_variant)


def say_lut_variant(variant: object) -> None:
    """One stderr line naming the LUT kernel variant in use (a ``lut_isa.Variant``, or None)."""
    if variant is None:
        print("llmc: LUT-mpGEMM layers on the generic TVM lowering (no LUT kernel variant for this CPU)",
              file=sys.stderr)
    else:
        print(f"llmc: LUT kernels: {variant.name} ({variant.summary})", file=sys.stderr)


class TextStream(_TextStream):
    """Generated tokens as text with ``model``'s tokenizer (token ids without one)."""

    def __init__(self, model: Model) -> None:
        super().__init__(model.decode_text if model.tokenizer_json is not None else None)
