"""``llmc deploy`` and ``llmc run build/NAME --device sim|pynq``: a compiled design (one card's or a
cluster's) on the card's runtime."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmc.cli.common import Command, add_json_argument
from llmc.errors import LlmcError


def _deploy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project", type=Path, metavar="DIR",
                        help="a project or cluster (--cards N) folder written by llmc compile")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                        help="the folder to write (copy it to the card's host)")
    parser.add_argument("--xclbin", type=Path, metavar="FILE",
                        help="the bitstream to ship (default: the project's llmc_accel.hw.xclbin, when built; a "
                        "cluster ships each card's own)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    add_json_argument(parser)


def deploy(args: argparse.Namespace) -> int:
    """Write a self-contained folder that runs a compiled project on an Alveo card (PYNQ) or the simulator."""
    from llmc.deploy.bundle import deploy as write_deployment
    from llmc.deploy.runtime import ClusterDeployment

    deployment, tokenizer_note = write_deployment(_project(args.project), args.output, xclbin=args.xclbin,
                                                  force=args.force)
    if args.json:
        print(json.dumps({"output": str(args.output), **deployment.to_json()}, sort_keys=True))
        return 0
    print(f"wrote {args.output}: run it with {args.output / 'run.py'} --device pynq|sim --prompt TEXT")
    if isinstance(deployment, ClusterDeployment):
        unbuilt = [card.folder for card in deployment.cards if card.xclbin is None]
        if unbuilt:
            print(f"note: no xclbin for {', '.join(unbuilt)} (llmc build each card's project, then deploy again): "
                  "--device pynq needs them", file=sys.stderr)
    elif deployment.xclbin is None:
        print("note: no xclbin (llmc build the project, then deploy with --xclbin): --device pynq needs one",
              file=sys.stderr)
    if tokenizer_note:
        print(f"note: --prompt needs {tokenizer_note}; use --prompt-ids", file=sys.stderr)
    return 0


def run_on_device(args: argparse.Namespace) -> int:
    """``llmc run build/NAME --device sim|pynq``: the deployed runtime, on the project or cluster folder in place."""
    from llmc.deploy.bundle import project_deployment
    from llmc.deploy.runtime import generate_on

    return generate_on(project_deployment(_project(Path(args.model))), args.device, args, sys.stdout)


def _project(path: Path) -> Path:
    """A compiled project (design.json) or cluster (cluster.json) folder."""
    from llmc.sim.cluster import is_cluster

    if not (path / "design.json").is_file() and not is_cluster(path):
        raise LlmcError(f"{path}: not a compiled project (design.json missing; write one with llmc compile MODEL -o DIR)")
    return path


DEPLOY = Command("deploy", _deploy_arguments, deploy)


def _calibrate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project", type=Path, metavar="DIR", help="a project folder written by llmc compile")
    parser.add_argument("--device", choices=("sim", "pynq"), default="sim",
                        help="sim: C-simulate the benchmark and check it (default); pynq: measure on the card")
    parser.add_argument("--xclbin", type=Path, metavar="FILE", help="the benchmark built with Vitis (--device pynq)")
    parser.add_argument("--beats", type=int, default=None, metavar="N",
                        help="words read per port (default: 4096 in simulation, 2^22 = 256 MiB on the card)")
    parser.add_argument("--card", type=int, default=0, metavar="I", help="which Alveo card (--device pynq)")
    parser.add_argument("-o", "--output", type=Path, metavar="BOARD.yaml",
                        help="where to write the board file with the measured efficiency (--device pynq; a new file)")
    parser.add_argument("--sources", type=Path, metavar="OUT",
                        help="also write the benchmark's sources and Vitis Makefile to this new folder")
    add_json_argument(parser)


def calibrate(args: argparse.Namespace) -> int:
    """Measure the memory efficiency the design's ports reach with a generated HBM read benchmark."""
    import yaml

    from llmc.deploy.calibrate import bench_files, bench_ports, calibrated_target, csim, measure_on_card
    from llmc.folders import write_folder
    from llmc.io import atomic_write
    from llmc.sim.image import ProjectImage

    image = ProjectImage.load(_project(args.project), weights=False)
    if args.beats is not None and args.beats < 1:
        raise LlmcError("--beats must be at least 1")
    if args.output is not None and args.output.exists():
        raise LlmcError(f"{args.output}: exists (the board file is written new)")
    files = bench_files(image)
    if args.sources is not None:
        write_folder(args.sources, files, kind="calibrate")
    if args.device == "sim":
        beats = args.beats or 4096
        sums = csim(image, beats)
        result = {"device": "sim", "ports": len(sums), "beats": beats, "checksums": "match",
                  "sources": sorted(files)}
        print(json.dumps(result, sort_keys=True) if args.json else
              f"{image.name}: the benchmark's C-simulation read {beats} words on each of {len(sums)} ports, "
              "checksums match (no bandwidth without a card: --device pynq)")
        return 0
    if args.xclbin is None or args.output is None:
        raise LlmcError("--device pynq needs --xclbin (the benchmark built with Vitis) and -o BOARD.yaml")
    beats = args.beats or 1 << 22
    bytes_per_s = measure_on_card(image, args.xclbin, beats, card=args.card)
    target = calibrated_target(image.target, bytes_per_s, len(bench_ports(image)))
    atomic_write(args.output, yaml.safe_dump(target.to_json(), sort_keys=False))
    result = {"device": "pynq", "gbs": bytes_per_s / 1e9, "efficiency": target.memory.efficiency,
              "board": str(args.output)}
    print(json.dumps(result, sort_keys=True) if args.json else
          f"{image.name}: {bytes_per_s / 1e9:.1f} GB/s over {len(bench_ports(image))} ports, efficiency "
          f"{target.memory.efficiency:.3f}; wrote {args.output} (llmc compile --board {args.output})")
    return 0


CALIBRATE = Command("calibrate", _calibrate_arguments, calibrate)
