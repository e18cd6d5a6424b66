"""``llmc compile``, ``llmc build`` and ``llmc csim``: the FPGA flow from the command line."""

from __future__ import annotations

import argparse
import json
import sys
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
)
from llmc.cli.compress import add_pipeline_arguments, compress, pipeline_calls
from llmc.deploy.console import add_generation_arguments
from llmc.errors import LlmcError

EVAL_WINDOWS = 4  # about 1,000 tokens: seconds on the bundled model


def _compile_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    add_pipeline_arguments(parser)
    parser.add_argument("--board", default="u280", metavar="BOARD",
                        help="a bundled board (u280, u55c, kv260) or a board YAML file (default u280)")
    add_alias(parser, "--target", "board")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="the project folder to write")
    parser.add_argument("--context", type=int, metavar="N", help="compile for a KV cache of N tokens "
                                                                 "(default: the model's maximum)")
    parser.add_argument("--eval-windows", type=int, default=EVAL_WINDOWS, metavar="N",
                        help="measure the lowered program's perplexity against the unlowered one on N 256-token "
                             "windows of the corpus's test split, into the report (0: skip; default %(default)s)")
    parser.add_argument("--max-rows", type=int, default=64, metavar="N",
                        help="rows (prompt tokens) one kernel call serves, the largest length bucket (default 64; "
                             "lower it when the activation buffers outgrow the on-chip memory)")
    parser.add_argument("--clock-mhz", type=float, metavar="MHZ",
                        help="the kernel clock (default: the exploration's choice, at most the board's clock_mhz)")
    parser.add_argument("--cards", type=int, default=1, metavar="N",
                        help="split the model over N boards: a folder of N card projects and cluster.json (default 1)")
    parser.add_argument("--parallel", choices=("pipeline", "tensor"), default="pipeline",
                        help="with --cards: split by layers (pipeline) or by heads and columns (tensor)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    add_json_argument(parser)


def compile_model(args: argparse.Namespace) -> int:
    """Compile a model (and a compression pipeline) into an FPGA project: kernels, program, weights."""
    from llmc.backends.fpga.cluster import CLUSTER_PRODUCTS
    from llmc.backends.fpga.flow import compile_project
    from llmc.backends.fpga.project import BUILD_PRODUCTS
    from llmc.folders import check_output

    products = CLUSTER_PRODUCTS if args.cards > 1 else BUILD_PRODUCTS
    check_output(args.output, force=args.force, products=products)  # refused now, not after compiling
    if args.context is not None and args.context < 1:
        raise LlmcError(f"--context must be at least 1 token, got {args.context}")
    if args.eval_windows < 0:
        raise LlmcError(f"--eval-windows must be 0 or more, got {args.eval_windows}")
    if args.max_rows < 1:
        raise LlmcError(f"--max-rows must be at least 1, got {args.max_rows}")
    if args.cards < 1:
        raise LlmcError(f"--cards must be at least 1, got {args.cards}")
    if args.clock_mhz is not None and not 0 < args.clock_mhz <= 1000:
        raise LlmcError(f"--clock-mhz must be in (0, 1000], got {args.clock_mhz:g}")
    calls = pipeline_calls(args)
    model = load_model(args)
    if calls:
        model, _ = compress(model, calls, args)
    if args.cards > 1:
        return _compile_cluster(args, model)
    with activity(f"compiling for {args.board}", progress_enabled(args)):
        design = compile_project(model.module, args.board, args.output, tokenizer_json=model.tokenizer_json,
                                 force=args.force, max_context=args.context, eval_windows=args.eval_windows,
                                 max_rows=args.max_rows, clock_mhz=args.clock_mhz)
    report = json.loads((args.output / "report.json").read_text())
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        fractions = ", ".join(f"{k} {v:.1%}" for k, v in design.utilisation.fractions.items())
        size = report["program_size"]
        print(f"wrote {args.output}: {len(design.compiled.layers)} linear layers, programs {size['bytes']:,} B for "
              f"buckets {list(design.config.buckets)} ({size['ratio']:.3%} of one program per length), weights "
              f"{sum(report['weight_channel_bytes']):,} B over {len(design.config.weight_channels)} channels; "
              f"resources {fractions}; modelled decode {report['modelled_decode']['tokens_per_s']:.1f} tokens/s")
        _print_accuracy(report["accuracy"])
    return 0


def _compile_cluster(args: argparse.Namespace, model: object) -> int:
    from llmc.backends.fpga.cluster import compile_cluster
    from llmc.backends.fpga.links import CLUSTER_FILE
    from llmc.sizes import human_bytes

    with activity(f"compiling for {args.cards} x {args.board}", progress_enabled(args)):
        compile_cluster(model.module, args.board, args.output, args.cards, args.parallel,  # type: ignore[attr-defined]
                        tokenizer_json=model.tokenizer_json, force=args.force,  # type: ignore[attr-defined]
                        max_context=args.context, eval_windows=args.eval_windows, max_rows=args.max_rows,
                        clock_mhz=args.clock_mhz)
    report = json.loads((args.output / CLUSTER_FILE).read_text())
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    runs = report["modelled"]
    cards = ", ".join(f"card{c}: {card['layers']} blocks, {human_bytes(card['weight_bytes'])}"
                      for c, card in enumerate(report["cards"]))
    print(f"wrote {args.output}: {args.cards} x {args.board}, {args.parallel} split ({cards}); "
          f"{report['segments']} segments and {len(report['transfers'])} transfers per step")
    for kind, run in runs.items():
        note = "" if run["generated"] else " (modelled only: the generated kernels move data through the host)"
        print(f"modelled decode over the {kind} link: {run['tokens_per_s']:.1f} tokens/s, "
              f"{run['link_share']:.0%} of the time on the link{note}")
    _print_accuracy(report["accuracy"])
    return 0


def _print_accuracy(accuracy: dict) -> None:
    if accuracy["measured"]:
        p = accuracy["perplexity"]
        print(f"perplexity on {accuracy['windows']} windows: lowered {p['lowered']:.3f}, unlowered "
              f"{p['unlowered']:.3f}; greedy tokens identical: {accuracy['greedy']['identical']} of "
              f"{accuracy['greedy']['tokens']}")


def _build_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project", type=Path, metavar="DIR", help="a project folder written by llmc compile")
    parser.add_argument("--mode", choices=("hw", "hw_emu", "sw_emu"), default="hw",
                        help="the v++ target: hardware, or hardware or software emulation (default hw)")
    add_alias(parser, "--target", "mode")


def build(args: argparse.Namespace) -> int:
    """Run Vitis (v++) on a compiled project to produce the xclbin."""
    from llmc.backends.fpga.project import build_project

    build_project(args.project, args.mode)
    return 0


def _csim_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project", type=Path, metavar="DIR",
                        help="a project folder written by llmc compile (or a cluster folder: --cards)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling (default 0)")
    add_generation_arguments(parser)
    add_json_argument(parser)


def csim(args: argparse.Namespace) -> int:
    """Generate text on the C-simulation of the project's kernel (g++ with the ap_types headers)."""
    from llmc.model import load
    from llmc.sim.cluster import is_cluster
    from llmc.sim.cluster_csim import ClusterCsimDevice
    from llmc.sim.csim import CsimDevice, build_csim

    device: CsimDevice | ClusterCsimDevice
    if is_cluster(args.project):  # every card's C-simulation, run segment by segment
        model = load(args.project / "card0")  # the tokenizer
        with activity("compiling the cards' C-simulations", progress_enabled(args)):
            device = ClusterCsimDevice(args.project)
    else:
        if not (args.project / "design.json").is_file():
            raise LlmcError(f"{args.project}: not an llmc project folder (design.json missing)")
        model = load(args.project)
        with activity("compiling the C-simulation", progress_enabled(args)):
            exe = build_csim(args.project)
        device = CsimDevice(args.project, exe)
    try:
        return generate(args, model, lambda: device, extra=lambda: {"cycles": device.cycle_report()})
    finally:
        device.close()
        sys.stdout.flush()


COMPILE = Command("compile", _compile_arguments, compile_model)
BUILD = Command("build", _build_arguments, build)
CSIM = Command("csim", _csim_arguments, csim)
