"""``llmc opt`` and ``llmc eval``: run compression pipelines, measure what they cost in accuracy."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

from llmc.cli.common import (
    Command,
    activity,
    add_json_argument,
    add_model_arguments,
    load_model,
    progress_enabled,
)
from llmc.compiler.calibrate import CalibrationConfig
from llmc.compiler.pipeline import PassCall
from llmc.errors import LlmcError
from llmc.ir.graph import Module
from llmc.model import Model
from llmc.sizes import human_bytes


def add_pipeline_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-p", "--pipeline", metavar="PASSES",
                        help="passes, e.g. 'smoothquant{alpha=0.5},quantize{bits=4,group=128,method=gptq}'")
    parser.add_argument("--recipe", type=Path, metavar="YAML", help="a recipe file instead of --pipeline")
    parser.add_argument("--calib-samples", type=int, default=CalibrationConfig.samples, metavar="N",
                        help="calibration windows from the corpus's train split (default %(default)s)")
    parser.add_argument("--calib-length", type=int, default=CalibrationConfig.length, metavar="T",
                        help="tokens per window (default %(default)s)")
    parser.add_argument("--print-after", default="", metavar="PASSES",
                        help="print the IR after these passes (comma-separated names, or 'all') to stderr")


def pipeline_calls(args: argparse.Namespace) -> list[PassCall]:
    """The passes of ``--pipeline`` or ``--recipe``, parsed and checked before any model loads."""
    import llmc.compiler.passes  # noqa: F401  (registers the passes)
    from llmc.compiler.pipeline import load_recipe, parse_pipeline

    if args.pipeline and args.recipe:
        raise LlmcError("give --pipeline or --recipe, not both")
    return load_recipe(args.recipe) if args.recipe else parse_pipeline(args.pipeline or "")


def compress(model: Model, calls: list[PassCall], args: argparse.Namespace) -> tuple[Model, dict]:
    """Apply ``calls`` to ``model``; returns the new model and the pass reports."""
    from llmc.compiler.pipeline import Hooks, PassContext, run_pipeline
    from llmc.ir.printer import print_module

    try:
        calibration = CalibrationConfig(samples=args.calib_samples, length=args.calib_length)
    except ValueError as e:
        raise LlmcError(f"calibration: {e}") from None
    context = PassContext(tokenizer_json=model.tokenizer_json, calibration_config=calibration)

    def show(name: str, module: Module) -> None:
        print(f"// after {name}\n{print_module(module)}", file=sys.stderr)

    after = frozenset(filter(None, (s.strip() for s in args.print_after.split(","))))
    hooks = Hooks(print_after=after, printer=show)
    with activity("compressing", progress_enabled(args)):
        module = run_pipeline(model.module, calls, context, hooks)
    reports = {"pipeline": ",".join(str(c) for c in calls), "passes": context.reports,
               "timings": [{"pass": name, "seconds": round(s, 3)} for name, s in context.timings]}
    return Model(module, model.tokenizer_json, model.source), reports


def _opt_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_pipeline_arguments(parser)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE.llmc", help="the compressed program")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_json_argument(parser)


def opt(args: argparse.Namespace) -> int:
    """Compress a model with a pass pipeline and write the result as a .llmc file."""
    from llmc.compiler.size import linear_storage
    from llmc.io import tokenizer_path, weights_path

    output: Path = args.output
    if output.suffix != ".llmc":
        raise LlmcError(f"{output}: the output must end in .llmc")
    existing = [p for p in (output, weights_path(output), tokenizer_path(output)) if p.exists()]
    if existing and not args.force:
        raise LlmcError(f"{existing[0]} exists (use --force to overwrite)")
    calls = pipeline_calls(args)
    model, reports = compress(load_model(args), calls, args)
    written = model.save(output)
    reports["bits_per_weight"] = linear_storage(model.module).bits_per_weight
    reports["written"] = [str(p) for p in written]
    if args.json:
        print(json.dumps(reports))
    else:
        for path in written:
            print(f"wrote {path} ({human_bytes(path.stat().st_size)})")
        print(f"bits per weight (linear layers, metadata included): {reports['bits_per_weight']:.3f}")
        for t in reports["timings"]:
            print(f"  {t['pass']}: {t['seconds']:.2f} s")
    return 0


def _eval_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_pipeline_arguments(parser)
    parser.add_argument("--windows", type=int, default=None, metavar="N",
                        help="evaluate only the first N 256-token windows of the test split (default: all)")
    add_json_argument(parser)


def eval_model(args: argparse.Namespace) -> int:
    """Held-out perplexity, true bits per weight and time of a model, optionally compressed first."""
    from llmc.compiler.evaluate import perplexity
    from llmc.compiler.size import linear_storage

    if args.windows is not None and args.windows < 1:
        raise LlmcError("--windows must be at least 1")
    start = time.perf_counter()
    calls = pipeline_calls(args)
    model = load_model(args)
    reports: dict = {}
    if calls:
        model, reports = compress(model, calls, args)
    with tqdm(desc="perplexity", unit="win", file=sys.stderr, delay=1.0, leave=False,
              disable=not progress_enabled(args)) as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        result = perplexity(model.module, model.tokenizer_json, args.windows, progress)
    storage = linear_storage(model.module)
    out = {"perplexity": result.perplexity, "bits_per_weight": storage.bits_per_weight,
           "seconds": time.perf_counter() - start, "tokens": result.tokens,
           "pipeline": reports.get("pipeline", "")}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"perplexity {out['perplexity']:.3f} over {out['tokens']} tokens")
        print(f"bits per weight {out['bits_per_weight']:.3f} (linear layers, metadata included)")
        print(f"time {out['seconds']:.1f} s")
    return 0


OPT = Command("opt", _opt_arguments, opt)
EVAL = Command("eval", _eval_arguments, eval_model)
