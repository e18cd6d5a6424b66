"""The C-simulation's cycle account of the generated kernel beside the timing model, per instruction kind.

Compiles the bundled model (W4g128, U280), or with ``--layer-7b`` one decoder layer of Llama-2-7B's
shapes (random weights, a 1,024-token vocabulary, context 512), runs a prompt and decode steps in
C-simulation, which counts the cycles the kernel's loops take (``llmc_cycles.h``), and times the same calls
with the timing model. The ratio says how far the generated code is from the machine the timing model times.

    .venv/bin/python benchmarks/cycle_account.py [--prompt N] [--decode N] [--recipe PIPELINE] [--layer-7b]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import llmc
import llmc.compiler.passes  # noqa: F401  (registers the passes)
from llmc.backends.fpga.flow import compile_project
from llmc.backends.fpga.timing import TimingModel
from llmc.compiler.pipeline import PassContext, parse_pipeline, run_pipeline
from llmc.sim.csim import CsimDevice
from llmc.sim.image import ProjectImage

LAYER_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 1, "num_attention_heads": 32,
            "num_key_value_heads": 32, "vocab_size": 1024, "max_position_embeddings": 512, "rms_norm_eps": 1e-5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompt", type=int, default=16)
    parser.add_argument("--decode", type=int, default=4)
    parser.add_argument("--recipe", default="quantize{bits=4,group=128}")
    parser.add_argument("--layer-7b", action="store_true", help="one Llama-2-7B-shaped layer instead of llmc-tiny")
    args = parser.parse_args()
    if args.layer_7b:
        model, name = llmc.load("llama", config=LAYER_7B, max_length=512), "Llama-2-7B layer"
    else:
        model, name = llmc.load("llmc-tiny"), "llmc-tiny"
    module = run_pipeline(model.module, parse_pipeline(args.recipe), PassContext())
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "p"
        compile_project(module, "u280", project)
        image = ProjectImage.load(project)
        timing = TimingModel.for_image(image)
        ids = list(range(1, args.prompt + 1))
        with CsimDevice(project) as device:
            device.reset()
            device.run(ids)
            for i in range(args.decode):
                device.run([ids[i % len(ids)]])
            accounts = device.accounts
        pre, steps = timing.run(image.programs, args.prompt, args.decode)
    calls = [("prefill", accounts[0], pre)] + [(f"decode {i}", a, s) for i, (a, s) in enumerate(zip(accounts[1:], steps))]
    print(f"{name} {args.recipe}, U280 design at {timing.clock_mhz:g} MHz: C-sim cycle account vs timing model")
    print(f"{'call':<10} {'C-sim':>12} {'model':>10} {'ratio':>8}")
    for name, account, costs in calls:
        model = sum(c.cycles for c in costs)
        print(f"{name:<10} {account.cycles:>12,} {model:>10,.0f} {account.cycles / model:>8.3f}")
    print(f"\n{'opcode':<8} {'C-sim (decode 0)':>17} {'model':>10} {'ratio':>8}")
    account, costs = accounts[1], steps[0]
    for op, cycles in sorted(account.by_opcode.items(), key=lambda kv: -kv[1]):
        model = sum(c.cycles for c in costs if c.op == op)
        print(f"{op:<8} {cycles:>17,} {model:>10,.0f} {cycles / model if model else float('inf'):>8.3f}")


if __name__ == "__main__":
    main()
