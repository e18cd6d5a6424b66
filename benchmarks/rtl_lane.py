"""One matrix lane of each MM shape in RTL, memory side included, beside the timing model.

Compiles the bundled model for the U280 as a W2g128 LUT design and a W4g128 2:4 sparse design and runs, for every
distinct MM shape of the decode program (codes per row, tiles in the slowest lane), lane 0's share of it
(``llmc.sim.lane_rtl``: the lane's AXI read master, ping-pong tile buffer, beat former and unit against
cocotbext-axi's AXI RAM at the U280 port's rate and round trip) on Icarus Verilog and Verilator, every group
product checked; then (``--scaled``, on by default) a lane of a Llama-2-7B-wide layer (4,096 codes a row, 4 tiles
a lane, packed random tiles). The model's cycles are the same lane's: the MM's cost less its fetch and decode
(``lane_rtl.modelled``). ``depth`` is the unit's latency from a group's last beat to its result, which the model
does not charge.

    .venv/bin/python benchmarks/rtl_lane.py [--simulators icarus,verilator] [--no-scaled]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from math import ceil
from pathlib import Path

from llmc.backends.fpga import units
from llmc.backends.fpga.isa import MmFlags
from llmc.backends.fpga.timing import TimingModel
from llmc.sim import lane_rtl
from llmc.sim.image import ProjectImage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from zoo import ENGINE_RECIPES, compile_bundled  # noqa: E402

DESIGNS = {"lut": "w2-lut", "sparse": "w4-2of4"}


def shapes(image: ProjectImage, engine: str) -> list[tuple[int, str]]:
    """The first decode-program MM of each (k, lane tiles) on ``engine``, with its layer's name."""
    model = TimingModel.for_image(image)
    seen, out = set(), []
    for i, ins in enumerate(image.programs[1]):
        if ins.op != "MM" or MmFlags.decode(int(ins.fields["flags"])).engine_name != engine:
            continue
        key = (int(ins.fields["k"]), ceil(int(ins.fields["tiles"]) / image.config.mm_lanes))
        if key not in seen:
            seen.add(key)
            out.append((i, model.layer_names.get(int(ins.fields["weight_off"]), f"MM {i}")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulators", default="icarus,verilator")
    parser.add_argument("--no-scaled", action="store_true", help="skip the Llama-2-7B-wide lane")
    args = parser.parse_args()
    simulators = args.simulators.split(",")
    print(f"{'engine':<7} {'MM (lane 0)':<44} {'tiles':>5} {'sim':<9} {'RTL':>6} {'model':>7} {'ratio':>6} "
          f"{'depth':>5} {'exact':>6} {'s':>5}")
    with tempfile.TemporaryDirectory() as tmp:
        for engine, recipe in DESIGNS.items():
            project = Path(tmp) / recipe
            compile_bundled(ENGINE_RECIPES[recipe], project)
            image = ProjectImage.load(project)
            model = TimingModel.for_image(image)
            jobs = [(lane_rtl.image_job(image, i), f"{name.removeprefix('model.')} (k {image.programs[1][i].fields['k']})")
                    for i, name in shapes(image, engine)]
            if not args.no_scaled:
                job = lane_rtl.scaled_job(image.config, engine, 2 if engine == "lut" else 4, 4096, 128, 4)
                jobs.append((job, "7B-wide layer, packed (k 4096)"))
            for job, label in jobs:
                depth = units.latency(lane_rtl.lane_unit(image.config, job.flags))
                for simulator in simulators:
                    start = time.monotonic()
                    r = lane_rtl.compare(job, model, simulator, timeout_s=1200)
                    exact = "yes" if r.mismatches == 0 else f"{r.mismatches} bad"
                    print(f"{engine:<7} {label:<44} {r.tiles:>5} {simulator:<9} {r.cycles:>6} {r.modelled:>7.0f} "
                          f"{r.ratio:>6.3f} {depth:>5} {exact:>6} {time.monotonic() - start:>5.0f}", flush=True)


if __name__ == "__main__":
    main()
