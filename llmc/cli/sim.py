"""``llmc simulate`` and ``llmc verify``: the instruction-set simulator, the timing model and the ladder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llmc.cli.common import Command, TextStream, add_json_argument
from llmc.deploy.console import add_generation_arguments, parse_ids, sampling_options
from llmc.errors import LlmcError

LEVELS_DEFAULT = ("interpreter", "iss", "csim", "rtl")  # llmc.sim.ladder.LEVELS, without importing the simulators


def _project_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project", type=Path, metavar="DIR", help="a project folder written by llmc compile")


def _simulate_arguments(parser: argparse.ArgumentParser) -> None:
    _project_argument(parser)
    parser.add_argument("--timing-only", action="store_true",
                        help="model a run without data (works on projects compiled with --shapes-only)")
    parser.add_argument("--prefill", type=int, metavar="L",
                        help="--timing-only: prompt tokens (128, or half a shorter context: llmc compile's run)")
    parser.add_argument("--decode", type=int, metavar="N",
                        help="--timing-only: generated tokens (128, or what a shorter context leaves)")
    parser.add_argument("--roofline", type=Path, metavar="SVG", help="write the decode roofline plot here")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling (default 0)")
    add_generation_arguments(parser, required=False)
    add_json_argument(parser)


def simulate(args: argparse.Namespace) -> int:
    """Generate text on the instruction-set simulator and report modelled performance."""
    from llmc.backends.fpga.timing import RUN_DECODE, RUN_PREFILL, TimingModel, run_lengths
    from llmc.sim.cluster import is_cluster
    from llmc.sim.image import ProjectImage
    from llmc.sim.perf import model_run, roofline_svg

    if is_cluster(args.project):
        return _simulate_cluster(args)
    image = ProjectImage.load(args.project, weights=not args.timing_only)
    timing = TimingModel.for_image(image)
    if args.timing_only:
        if args.prefill is None and args.decode is None:
            prefill, decode = run_lengths(image.config.max_context)
        else:
            prefill = RUN_PREFILL if args.prefill is None else args.prefill
            decode = RUN_DECODE if args.decode is None else args.decode
        figures = model_run(timing, image.programs, prefill, decode)
        _write_roofline(args.roofline, roofline_svg(timing, figures, image.name))
        if args.json:
            print(json.dumps({"modelled": figures.to_json()}, sort_keys=True))
        else:
            print(_summary(image.name, figures.to_json()))
        return 0
    return _generate_on_iss(args, image, timing)


def _generate_on_iss(args: argparse.Namespace, image: object, timing: object) -> int:
    from llmc.model import load
    from llmc.sim.iss import IssDevice
    from llmc.sim.perf import model_run, roofline_svg

    if (args.prompt is None) == (args.prompt_ids is None):
        raise LlmcError("give --prompt or --prompt-ids (or --timing-only)")
    if not image.has_weights:  # type: ignore[attr-defined]
        raise LlmcError(f"{args.project}: compiled without weights (--shapes-only); use --timing-only")
    model = load(args.project)
    ids = parse_ids(args.prompt_ids) if args.prompt_ids is not None else model.encode(args.prompt)
    text, seconds = _stream(args, model, ids, IssDevice(image, timing))  # type: ignore[arg-type]
    decode = seconds[1:]
    modelled = {"prefill_ms": seconds[0] * 1e3 if seconds else 0.0,
                "decode_tokens_per_s": len(decode) / sum(decode) if decode else 0.0,
                "token_ms": [s * 1e3 for s in seconds]}
    figures = model_run(timing, image.programs, len(ids), max(1, len(decode)))  # type: ignore[arg-type, attr-defined]
    modelled["hbm_utilisation"] = figures.hbm_utilisation
    modelled["joules_per_token"] = figures.joules_per_token
    _write_roofline(args.roofline, roofline_svg(timing, figures, image.name))  # type: ignore[arg-type, attr-defined]
    return _report(args, text, modelled, f"modelled: prefill {modelled['prefill_ms']:.3f} ms, decode "
                   f"{modelled['decode_tokens_per_s']:.1f} tokens/s, HBM utilisation {modelled['hbm_utilisation']:.1%}")


def _simulate_cluster(args: argparse.Namespace) -> int:
    """A cluster folder: its modelled run over each link, or text generated on the cards' ISSs."""
    from llmc.backends.fpga.links import LINKS, cluster_runs
    from llmc.backends.fpga.timing import RUN_DECODE, RUN_PREFILL, TimingModel, run_lengths
    from llmc.model import load
    from llmc.sim.cluster import ClusterImage, ClusterIssDevice

    image = ClusterImage.load(args.project, weights=not args.timing_only)
    if args.timing_only:
        if args.prefill is None and args.decode is None:
            prefill, decode = run_lengths(image.max_context)
        else:
            prefill = RUN_PREFILL if args.prefill is None else args.prefill
            decode = RUN_DECODE if args.decode is None else args.decode
        cards = [(TimingModel.for_image(card), card.programs) for card in image.cards]
        runs = cluster_runs(cards, image.transfers, image.segments, LINKS, prefill, decode)
        if args.json:
            print(json.dumps({"modelled": runs}, sort_keys=True))
        else:
            for kind, run in runs.items():
                print(f"{image.name} over the {kind} link{'' if run['generated'] else ' (modelled only)'}: prefill "
                      f"{run['prefill_tokens']} tokens {run['prefill_ms']:.2f} ms, decode {run['tokens_per_s']:.1f} "
                      f"tokens/s ({run['ms_per_token']:.3f} ms/token, {run['link_share']:.0%} on the link)")
        return 0
    if (args.prompt is None) == (args.prompt_ids is None):
        raise LlmcError("give --prompt or --prompt-ids (or --timing-only)")
    if not all(card.has_weights for card in image.cards):
        raise LlmcError(f"{args.project}: compiled without weights (--shapes-only); use --timing-only")
    model = load(image.cards[0].path)  # the tokenizer
    ids = parse_ids(args.prompt_ids) if args.prompt_ids is not None else model.encode(args.prompt)
    text, seconds = _stream(args, model, ids, ClusterIssDevice(image))
    decode_s = seconds[1:]
    modelled = {"prefill_ms": seconds[0] * 1e3 if seconds else 0.0,
                "decode_tokens_per_s": len(decode_s) / sum(decode_s) if decode_s else 0.0}
    return _report(args, text, modelled, f"modelled over the host link: prefill {modelled['prefill_ms']:.3f} ms, "
                   f"decode {modelled['decode_tokens_per_s']:.1f} tokens/s")


def _report(args: argparse.Namespace, text: TextStream, modelled: dict, summary: str) -> int:
    """The generated tokens and modelled figures as JSON, or the summary line after the streamed text."""
    if args.json:
        print(json.dumps({"tokens": text.ids, "text": text.text, "modelled": modelled}, sort_keys=True))
    else:
        print()
        print(summary)
    return 0


def _stream(args: argparse.Namespace, model: object, ids: list[int], device: object) -> tuple[TextStream, list[float]]:
    """Generate on a simulator device, printing the text as it comes unless ``--json``; the text and
    each token's modelled seconds."""
    text = TextStream(model)
    seconds: list[float] = []
    for token, _ in model.stream(prompt_ids=ids, max_new_tokens=args.max_new_tokens,  # type: ignore[attr-defined]
                                 sampling=sampling_options(args), device=device):
        seconds.append(device.last_seconds)  # type: ignore[attr-defined]
        piece = text.push(token)
        if not args.json:
            print(piece, end="", flush=True)
    return text, seconds


def _write_roofline(path: Path | None, svg: str) -> None:
    if path is not None:
        from llmc.io import atomic_write

        atomic_write(path, svg.encode())


def _summary(name: str, m: dict) -> str:
    lines = [f"{name}: prefill {m['prefill_tokens']} tokens {m['prefill_ms']:.2f} ms (time to first token), "
             f"decode {m['decode_tokens_per_s']:.1f} tokens/s ({m['decode_ms_per_token']:.3f} ms/token), "
             f"HBM {m['hbm_bytes_per_token'] / 2**20:.1f} MiB/token at {m['hbm_utilisation']:.1%} of peak, "
             f"{m['joules_per_token']:.3f} J/token"]
    lines.append(f"{'layer':<40} {'us':>9} {'bw util':>8} {'mac util':>8}")
    for x in m["layers"]:
        lines.append(f"{x['name']:<40} {x['seconds'] * 1e6:>9.1f} {x['bandwidth_utilisation']:>8.1%} "
                     f"{x['compute_utilisation']:>8.1%}")
    return "\n".join(lines)


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    _project_argument(parser)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--prompt", metavar="TEXT", help="the prompt (default: the first 20 token ids 1..20)")
    group.add_argument("--prompt-ids", metavar="IDS", help="comma-separated token ids")
    parser.add_argument("--decode", type=int, default=8, metavar="N", help="greedy decode steps compared (8)")
    parser.add_argument("--levels", default=",".join(LEVELS_DEFAULT), metavar="LIST",
                        help=f"levels to run (default {','.join(LEVELS_DEFAULT)}; also cycles: C-simulation's cycle "
                             "account within 10%% of the timing model; a cluster folder runs interpreter,iss,csim)")
    parser.add_argument("--rtl-vectors", type=int, default=2000, metavar="N",
                        help="group dot products driven through each RTL unit and simulator (2000)")
    parser.add_argument("--timeout", type=float, default=600.0, metavar="S", help="time limit of each level (600 s)")
    add_json_argument(parser)


def verify(args: argparse.Namespace) -> int:
    """Run interpreter -> ISS -> C-sim -> RTL units on the same inputs; exit 1 on any mismatch."""
    from llmc.model import load
    from llmc.sim.cluster import is_cluster
    from llmc.sim.ladder import CLUSTER_LEVELS, format_table, verify_cluster, verify_project

    cluster = is_cluster(args.project)
    if not cluster and not (args.project / "model.llmc").is_file():
        raise LlmcError(f"{args.project}: not a compiled llmc project with weights (model.llmc missing)")
    if args.decode < 0:
        raise LlmcError("--decode must be at least 0")
    if args.prompt_ids is not None:
        ids = parse_ids(args.prompt_ids)
    elif args.prompt is not None:
        ids = load(args.project / "card0" if cluster else args.project).encode(args.prompt)
    else:
        ids = list(range(1, 21))
    levels = [lv.strip() for lv in args.levels.split(",") if lv.strip()]
    if cluster:
        asked = levels if args.levels != ",".join(LEVELS_DEFAULT) else list(CLUSTER_LEVELS)
        results = verify_cluster(args.project, ids, args.decode, levels=asked, timeout_s=args.timeout)
    else:
        results = verify_project(args.project, ids, args.decode, levels=levels, timeout_s=args.timeout,
                                 rtl_vectors=args.rtl_vectors)
    if args.json:
        print(json.dumps([r.to_json() for r in results]))
    else:
        print(format_table(results))
    return 1 if any(r.mismatches for r in results) else 0


SIMULATE = Command("simulate", _simulate_arguments, simulate)
VERIFY = Command("verify", _verify_arguments, verify)
