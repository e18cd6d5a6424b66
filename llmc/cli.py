"""The ``llmc`` command line: one small function per subcommand, registered with :func:`command`.

A subcommand is ``@command(add_arguments)`` on ``def name(args) -> int``; its docstring's first
line is its help. Every subcommand that takes a model calls :func:`add_model_arguments` and
:func:`load_model`. User errors (:class:`~llmc.errors.LlmcError` and the others in
:data:`USER_ERRORS`) print one line ``llmc: error: ...`` and exit 2; ``--debug`` adds the
traceback and library warnings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from llmc import __version__
from llmc.deploy.console import TextStream as _TextStream
from llmc.deploy.console import add_generation_arguments, parse_ids
from llmc.deploy.generate import SamplingOptions
from llmc.errors import LlmcError
from llmc.io import read_json_object
from llmc.ir.interpreter import InterpreterError
from llmc.ir.parser import ParseError
from llmc.ir.verify import VerifyError
from llmc.model import Model, load
from llmc.report import ModuleReport, analyze

USER_ERRORS = (LlmcError, ParseError, VerifyError, InterpreterError, OSError)
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a tool killed by a closed pipe

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Handler


COMMANDS: dict[str, Command] = {}


def command(add_arguments: Callable[[argparse.ArgumentParser], None]) -> Callable[[Handler], Handler]:
    """Register the decorated function as the subcommand of its name (``_`` becomes ``-``; a
    trailing ``_`` avoids a keyword, as in ``import_``)."""

    def register(run: Handler) -> Handler:
        name = run.__name__.rstrip("_").replace("_", "-")
        COMMANDS[name] = Command(name, (run.__doc__ or "").strip().splitlines()[0], add_arguments, run)
        return run

    return register


# ---------------------------------------------------------------------------------------------
# Shared arguments and helpers
# ---------------------------------------------------------------------------------------------


def add_model_arguments(parser: argparse.ArgumentParser, generates: bool = False) -> None:
    """MODEL, --config, --seed and (unless the command ``generates``, needing weights) --shapes-only."""
    parser.add_argument("model", metavar="MODEL",
                        help="a Hugging Face model directory, .onnx or .llmc file, 'llmc-tiny', "
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
    from llmc.compiler.frontend import ARCHITECTURES

    config = None
    if args.config is not None:
        if args.model not in ARCHITECTURES:
            raise LlmcError(f"--config applies to an architecture name ({', '.join(ARCHITECTURES)}), not '{args.model}'")
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


def human_bytes(n: int) -> str:
    """``512 B``, ``1.5 KiB``, ... up to GiB."""
    size, unit = float(n), "B"
    for bigger in ("KiB", "MiB", "GiB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"


# ---------------------------------------------------------------------------------------------
# import
# ---------------------------------------------------------------------------------------------


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.llmc",
                        help="the text IR; the weights and tokenizer go beside it")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


@command(_import_arguments)
def import_(args: argparse.Namespace) -> int:
    """Import a model and save it as a .llmc file (text IR, weights, tokenizer)."""
    from llmc.io import tokenizer_path, weights_path

    output: Path = args.output
    if output.suffix != ".llmc":
        raise LlmcError(f"{output}: the output must end in .llmc")
    siblings = [weights_path(output), tokenizer_path(output)]
    existing = [p for p in (output, *siblings) if p.exists()]
    if existing and not args.force:
        raise LlmcError(f"{existing[0]} exists (use --force to overwrite)")
    model = load_model(args)
    written = model.save(output)
    for stale in set(siblings) - set(written):  # would be read back with the new .llmc
        stale.unlink(missing_ok=True)
    for path in written:
        print(f"wrote {path} ({human_bytes(path.stat().st_size)})")
    return 0


# ---------------------------------------------------------------------------------------------
# show
# ---------------------------------------------------------------------------------------------


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_json_argument(parser)


@command(_show_arguments)
def show(args: argparse.Namespace) -> int:
    """Summarise a model: ops, parameters, memory per layer, KV cache, inputs and outputs."""
    report = analyze(load_model(args).module)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(format_report(report)))
    return 0


def format_report(report: ModuleReport) -> list[str]:
    """The text form of ``llmc show``."""
    weights = "" if report.has_weights else " (shapes only: no weights)"
    lines = [f"model {report.name} ({report.arch or 'unknown architecture'}){weights}",
             f"parameters: {report.tensors} tensors, {report.params:,} parameters, {human_bytes(report.bytes)}",
             "memory:"]
    width = max((len(g.label) for g in report.groups), default=0)
    for g in report.groups:
        lines.append(f"  {g.label:<{width}}  {g.tensors:>4} tensors  {g.params:>14,} params  {human_bytes(g.bytes):>10}")
    kv = f"KV cache: {human_bytes(report.kv_bytes_per_token)} per token"
    if report.max_position:
        kv += f", {human_bytes(report.kv_bytes_per_token * report.max_position)} at {report.max_position} tokens"
    lines.append(kv)
    for f in report.functions:
        symbols = f" over {', '.join(f.symbols)}" if f.symbols else ""
        lines.append(f"func @{f.name}{symbols}: {f.nodes} nodes")
        lines += [f"  in  %{s.name}: {s.type}" for s in f.inputs]
        lines += [f"  out %{s.name}: {s.type}" for s in f.outputs]
        lines.append("  ops: " + ", ".join(f"{op} {n}" for op, n in f.ops.items()))
    return lines


# ---------------------------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------------------------


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, generates=True)
    add_generation_arguments(parser)
    parser.add_argument("--lut-kernels", choices=("interpreter", "tvm"), default="interpreter",
                        help="run LUT-mpGEMM layers on the reference interpreter or on TVM CPU kernels")
    parser.add_argument("--device", choices=("interpreter", "sim", "pynq"), default="interpreter",
                        help="a compiled project on the instruction-set simulator or an Alveo card (PYNQ), "
                             "through the deployed runtime (default: the interpreter)")
    parser.add_argument("--target", choices=("cpu", "cuda", "opencl"), default=None,
                        help="compile the model with TVM and generate on this target (default: the interpreter)")
    add_json_argument(parser)


@command(_run_arguments)
def run(args: argparse.Namespace) -> int:
    """Generate text through the reference interpreter (a compiled project: its lowered program) or TVM (--target)."""
    if args.target is not None and args.device != "interpreter":
        raise LlmcError("give --device or --target, not both")
    if args.target is not None and args.lut_kernels != "interpreter":
        raise LlmcError("--lut-kernels applies to the interpreter, not to --target")
    if args.device != "interpreter":
        from llmc.cli_deploy import run_on_device

        return run_on_device(args)
    model = load_model(args)
    return generate(args, model, lambda: tvm_device(args, model))


def generate(args: argparse.Namespace, model: Model, device: Callable[[], object]) -> int:
    """Stream generated text (or print ``--json``) on the device ``device()`` (None: the interpreter)."""
    if args.max_new_tokens < 0:
        raise LlmcError("--max-new-tokens must be at least 0")
    try:
        sampling = SamplingOptions(args.sample, args.top_k, args.top_p, args.temperature, args.seed)
    except ValueError as e:
        raise LlmcError(str(e)) from None
    ids = parse_ids(args.prompt_ids) if args.prompt_ids is not None else model.encode(args.prompt)
    text = TextStream(model)
    show_bar = progress_enabled(args) and not sys.stdout.isatty()  # on one terminal the text is the progress
    with tqdm(total=args.max_new_tokens, desc="generating", unit="tok", delay=1.0, leave=False,
              file=sys.stderr, disable=not show_bar) as bar:
        for token, _ in model.stream(prompt_ids=ids, max_new_tokens=args.max_new_tokens, sampling=sampling,
                                     kernels=lut_kernels(model, getattr(args, "lut_kernels", "interpreter")),
                                     device=device()):
            piece = text.push(token)
            if not args.json:
                print(piece, end="", flush=True)
            bar.update(1)
    if args.json:
        print(json.dumps({"tokens": text.ids, "text": text.text}))
    else:
        print()
    return 0


def lut_kernels(model: Model, choice: str) -> dict | None:
    """Interpreter kernels for ``--lut-kernels``."""
    if choice == "interpreter":
        return None
    from llmc.backends.tvm.lut_runtime import lut_kernels as tvm_lut_kernels

    return tvm_lut_kernels(model.module)


def tvm_device(args: argparse.Namespace, model: Model) -> object | None:
    """The model compiled by TVM for ``--target`` (None without one: the interpreter)."""
    if args.target is None:
        return None
    from llmc.backends.tvm.compile import compile_model

    with activity(f"compiling for {args.target}", progress_enabled(args)):
        return compile_model(model, args.target)


class TextStream(_TextStream):
    """Generated tokens as text with ``model``'s tokenizer (token ids without one)."""

    def __init__(self, model: Model) -> None:
        super().__init__(model.decode_text if model.tokenizer_json is not None else None)


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    import llmc.cli_compress  # noqa: F401  (registers opt and eval)
    import llmc.cli_deploy  # noqa: F401  (registers deploy)
    import llmc.cli_fpga  # noqa: F401  (registers compile, build and csim)
    import llmc.cli_sim  # noqa: F401  (registers simulate and verify)

    debug = "show tracebacks, and library warnings, logs and progress bars"
    common = argparse.ArgumentParser(add_help=False)  # --debug also after the subcommand
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug)
    parser = argparse.ArgumentParser(prog="llmc", description="Compile large language models to FPGA designs.")
    parser.add_argument("--debug", action="store_true", help=debug)
    parser.add_argument("--version", action="version", version=f"llmc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, parents=[common], help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(handler=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``llmc ARGV``; returns the exit code (argparse exits 2 itself on usage errors)."""
    args = build_parser().parse_args(argv)
    try:
        with quiet_libraries(not args.debug):
            return args.handler(args)
    except BrokenPipeError:  # the reader left early (llmc show | head): stop quietly, like SIGPIPE
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("llmc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as e:
        if args.debug:
            traceback.print_exc()
        print(f"llmc: error: {error_message(e)}", file=sys.stderr)
        return EXIT_USER_ERROR


def error_message(e: BaseException) -> str:
    """One line: ``FILE: reason`` for OS errors, else the message with its lines joined."""
    if isinstance(e, OSError) and e.filename is not None:
        return f"{e.filename}: {e.strerror or e}"
    return " ".join(str(e).split()) or type(e).__name__


# Read when transformers and huggingface_hub are first imported, as in a fresh ``llmc`` process.
QUIET_ENVIRONMENT = {"TRANSFORMERS_VERBOSITY": "error", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@contextmanager
def quiet_libraries(enabled: bool) -> Iterator[None]:
    """Hide warnings raised outside llmc, and transformers' log messages and progress bars."""
    if not enabled:
        yield
        return
    saved = {name: os.environ.get(name) for name in QUIET_ENVIRONMENT}
    os.environ.update(QUIET_ENVIRONMENT)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            warnings.filterwarnings("default", module="llmc")
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


if __name__ == "__main__":
    sys.exit(main())
