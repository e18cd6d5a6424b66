"""``llmc import``, ``llmc show`` and ``llmc run``: a model in, its summary, text out (or, for a plain
function, arrays in and out)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmc.cli.common import (
    Command,
    activity,
    add_alias,
    add_json_argument,
    add_model_arguments,
    generate,
    load_model,
    progress_enabled,
    say_lut_variant,
)
from llmc.deploy.console import add_generation_arguments
from llmc.errors import LlmcError
from llmc.model import Model
from llmc.report import ModuleReport, analyze
from llmc.sizes import human_bytes


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.llmc",
                        help="the text IR; the weights and tokenizer go beside it")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def import_model(args: argparse.Namespace) -> int:
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
    add_generation_arguments(parser, required=False)
    parser.add_argument("--inputs", type=Path, metavar="FILE.npz",
                        help="run a plain function (an ONNX graph that is not a language model) on the arrays of "
                             "this .npz, by input name, instead of generating text")
    parser.add_argument("--outputs", type=Path, metavar="FILE.npz",
                        help="with --inputs: write the function's outputs to this .npz by name (default: list them)")
    parser.set_defaults(usage_error=parser.error)
    parser.add_argument("--lut-kernels", choices=("interpreter", "tvm"), default="interpreter",
                        help="run LUT-mpGEMM layers on the reference interpreter or on TVM CPU kernels")
    parser.add_argument("--lut-variant", default="auto", metavar="NAME",
                        help="the TVM LUT kernels' instruction set (--lut-kernels tvm, --tvm cpu): auto (the best "
                             "this CPU has), avx512, avx2, neon-dotprod, neon or portable")
    parser.add_argument("--device", choices=("interpreter", "sim", "pynq"), default="interpreter",
                        help="a compiled project (or cluster) on the instruction-set simulator or Alveo cards (PYNQ), "
                             "through the deployed runtime (default: the interpreter)")
    parser.add_argument("--tvm", choices=("cpu", "cuda", "opencl"), default=None, metavar="TARGET",
                        help="compile the model with TVM and generate on cpu, cuda or opencl (default: the interpreter)")
    add_alias(parser, "--target", "tvm")
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Generate text through the reference interpreter (a compiled project: its lowered program) or TVM (--tvm), or run a plain function on --inputs."""
    prompt = args.prompt is not None or args.prompt_ids is not None
    if args.inputs is not None or args.outputs is not None:
        if prompt:
            raise LlmcError("give --prompt/--prompt-ids (a language model) or --inputs (a plain function), not both")
        return run_plain(args)
    if not prompt:
        args.usage_error("one of the arguments --prompt --prompt-ids --inputs is required")
    if args.tvm is not None and args.device != "interpreter":
        raise LlmcError("give --device or --tvm, not both")
    if args.tvm is not None and args.lut_kernels != "interpreter":
        raise LlmcError("--lut-kernels applies to the interpreter, not to --tvm")
    if args.device != "interpreter":
        from llmc.cli.deploy import run_on_device

        return run_on_device(args)
    model = load_model(args)
    if not model.is_language_model:
        raise LlmcError(f"{args.model} is a plain function ({', '.join('@' + f for f in model.module.functions)}), "
                        "not a language model: give its inputs with --inputs FILE.npz")
    return generate(args, model, lambda: tvm_device(args, model))


def run_plain(args: argparse.Namespace) -> int:
    """``llmc run MODEL --inputs in.npz [--outputs out.npz]``: a plain function through the interpreter."""
    import io

    import numpy as np

    from llmc.io import atomic_write

    if args.inputs is None:
        raise LlmcError("--outputs needs --inputs FILE.npz")
    if args.tvm is not None or args.device != "interpreter" or args.lut_kernels != "interpreter":
        raise LlmcError("--inputs runs on the interpreter: --tvm, --device and --lut-kernels apply to language models")
    try:
        with np.load(args.inputs, allow_pickle=False) as npz:
            inputs = {name: npz[name] for name in npz.files}
    except (ValueError, EOFError, OSError) as e:  # not a zip, a pickled array, a truncated file
        if isinstance(e, FileNotFoundError):
            raise
        raise LlmcError(f"{args.inputs}: not a .npz file of arrays: {' '.join(str(e).split())}") from None
    model = load_model(args)
    if model.is_language_model:
        raise LlmcError(f"{args.model} is a language model: generate with --prompt or --prompt-ids "
                        "(--inputs and --outputs apply to plain functions)")
    outputs = model.call(inputs)
    if args.outputs is not None:
        buffer = io.BytesIO()
        np.savez(buffer, **outputs)
        atomic_write(args.outputs, buffer.getvalue())
    if args.json:
        print(json.dumps({"outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in outputs.items()},
                          "written": None if args.outputs is None else str(args.outputs)}))
        return 0
    for name, value in outputs.items():
        print(f"{name}: {value.dtype}{list(value.shape)}")
    if args.outputs is not None:
        print(f"wrote {args.outputs}")
    return 0


def tvm_device(args: argparse.Namespace, model: Model) -> object | None:
    """The model compiled by TVM for ``--tvm`` (None without one: the interpreter)."""
    if args.tvm is None:
        return None
    from llmc.backends.tvm.compile import compile_model, cpu_lut_variant, tvm_target

    if args.tvm == "cpu" and model.module.has_weights and any(
            n.op == "lut_gemm" for _, n in model.module.iter_nodes()):
        say_lut_variant(cpu_lut_variant(tvm_target("cpu"), args.lut_variant))
    with activity(f"compiling for {args.tvm}", progress_enabled(args)):
        return compile_model(model, args.tvm, lut_variant=args.lut_variant)


IMPORT = Command("import", _import_arguments, import_model)
SHOW = Command("show", _show_arguments, show)
RUN = Command("run", _run_arguments, run)
