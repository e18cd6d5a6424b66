"""Simulator speed on the bundled model: decode tokens/s on the instruction-set simulator and on
C-simulation, against the interpreter running the same lowered program (the baseline, same run).

Compiles ``llmc-tiny`` at W4g128 for the U280 into a temporary folder, prefills a 20-token prompt
and times ``--tokens`` greedy decode steps on each level (C-simulation's g++ build is reported
separately). Ratios are level tokens/s over the interpreter's.

    .venv/bin/python benchmarks/simulators.py [--tokens N] [--recipe PIPELINE] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.backends.fpga.flow import compile_project
from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline
from llmc.generate.step import StepDevice
from llmc.io import load_module
from llmc.sim.csim import CsimDevice, build_csim
from llmc.sim.iss import IssDevice

PROMPT = [1, 72, 271, 400, 291, 261, 300, 90, 77, 500, 33, 18, 260, 261, 262, 263, 264, 265, 266, 267]


def decode_rate(device: object, tokens: int) -> float:
    """Greedy decode tokens/s after a 20-token prefill."""
    logits = device.prefill(PROMPT)  # type: ignore[attr-defined]
    start = time.perf_counter()
    for _ in range(tokens):
        logits = device.decode(int(np.argmax(logits)))  # type: ignore[attr-defined]
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--recipe", default="quantize{bits=4,group=128}")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    tiny = llmc.load("llmc-tiny")
    module = run_pipeline(tiny.module, parse_pipeline(args.recipe), PassContext()) if args.recipe else tiny.module
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "tiny"
        compile_project(module, "u280", project)
        start = time.perf_counter()
        exe = build_csim(project)
        build_s = time.perf_counter() - start
        rates = {"interpreter": decode_rate(StepDevice(load_module(project / "model.llmc")), args.tokens),
                 "iss": decode_rate(IssDevice(project), args.tokens)}
        with CsimDevice(project, exe) as csim:
            rates["csim"] = decode_rate(csim, args.tokens)
    result = {"recipe": args.recipe, "tokens": args.tokens, "csim_build_s": build_s,
              "tokens_per_s": rates, "ratio_vs_interpreter": {k: v / rates["interpreter"] for k, v in rates.items()}}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"llmc-tiny {args.recipe or 'int8'}, {args.tokens} decode tokens after a 20-token prompt "
          f"(C-sim g++ build {build_s:.1f} s)")
    for level, rate in rates.items():
        print(f"  {level:<12} {rate:8.1f} tokens/s   x{rate / rates['interpreter']:.2f} vs interpreter")


if __name__ == "__main__":
    main()
