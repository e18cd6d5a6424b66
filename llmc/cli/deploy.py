"""``llmc deploy`` and ``llmc run build/NAME --device sim|pynq``: a compiled design on the card's runtime."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmc.cli.common import Command, add_json_argument
from llmc.errors import LlmcError


def _deploy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("project", type=Path, metavar="DIR", help="a project folder written by llmc compile")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                        help="the folder to write (copy it to the card's host)")
    parser.add_argument("--xclbin", type=Path, metavar="FILE",
                        help="the bitstream to ship (default: the project's llmc_accel.hw.xclbin, when built)")
    parser.add_argument("--force", action="store_true", help="replace an existing output folder")
    add_json_argument(parser)


def deploy(args: argparse.Namespace) -> int:
    """Write a self-contained folder that runs a compiled project on an Alveo card (PYNQ) or the simulator."""
    from llmc.deploy.bundle import deploy as write_deployment

    deployment, tokenizer_note = write_deployment(_project(args.project), args.output, xclbin=args.xclbin,
                                                  force=args.force)
    if args.json:
        print(json.dumps({"output": str(args.output), **deployment.to_json()}, sort_keys=True))
        return 0
    print(f"wrote {args.output}: run it with {args.output / 'run.py'} --device pynq|sim --prompt TEXT")
    if deployment.xclbin is None:
        print("note: no xclbin (llmc build the project, then deploy with --xclbin): --device pynq needs one",
              file=sys.stderr)
    if tokenizer_note:
        print(f"note: --prompt needs {tokenizer_note}; use --prompt-ids", file=sys.stderr)
    return 0


def run_on_device(args: argparse.Namespace) -> int:
    """``llmc run build/NAME --device sim|pynq``: the deployed runtime, on the project folder in place."""
    from llmc.deploy.bundle import project_deployment
    from llmc.deploy.runtime import generate_on

    return generate_on(project_deployment(_project(Path(args.model))), args.device, args, sys.stdout)


def _project(path: Path) -> Path:
    if not (path / "design.json").is_file():
        raise LlmcError(f"{path}: not a compiled project (design.json missing; write one with llmc compile MODEL -o DIR)")
    return path


DEPLOY = Command("deploy", _deploy_arguments, deploy)
