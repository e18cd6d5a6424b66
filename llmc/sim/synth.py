"""Synthesis of the RTL units with Yosys (``synth_xilinx -family xcup``, out of context): the LUT,
FF, DSP48E2 and BRAM36 counts an open tool measures, against which the resource model's unit
formulas (:func:`llmc.backends.fpga.resources.rtl_unit`) are checked (docs/rtl.md).

Cells count as the resources they occupy on UltraScale+: a LUT1-LUT6 or SRL one LUT, a LUTRAM
macro its LUTs (``RAM32M16`` eight), a flip-flop one FF, a ``RAMB18E2`` half a BRAM36. Carry
chains, wide multiplexers (``MUXF7``-``MUXF9``) and clock buffers occupy no LUT. Results are cached
by the hash of the Verilog (:mod:`llmc.sim.build_cache`).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from math import ceil
from pathlib import Path

from llmc.backends.fpga import units
from llmc.backends.fpga.target import Resources
from llmc.errors import LlmcError
from llmc.sim.build_cache import cached_build
from llmc.templating import static_file

# cell type -> (resource, how many of it the cell occupies)
CELLS: dict[str, tuple[str, float]] = {
    **{f"LUT{i}": ("lut", 1) for i in range(1, 7)}, "LUT6_2": ("lut", 1), "INV": ("lut", 1),
    "SRL16E": ("lut", 1), "SRLC32E": ("lut", 1),
    "RAM32X1D": ("lut", 2), "RAM64X1D": ("lut", 2), "RAM128X1D": ("lut", 4), "RAM32M": ("lut", 4),
    "RAM64M": ("lut", 4), "RAM32M16": ("lut", 8), "RAM64M8": ("lut", 8),
    "FDRE": ("ff", 1), "FDSE": ("ff", 1), "FDCE": ("ff", 1), "FDPE": ("ff", 1),
    "DSP48E2": ("dsp", 1), "RAMB36E2": ("bram36", 1), "RAMB18E2": ("bram36", 0.5), "URAM288": ("uram", 1),
}
NO_RESOURCE = {"CARRY4", "CARRY8", "MUXF7", "MUXF8", "MUXF9", "BUFG", "IBUF", "OBUF", "GND", "VCC"}
TIMEOUT_S = 600


def yosys() -> str:
    found = shutil.which("yosys")
    if found is None:
        raise LlmcError("yosys not found on PATH (scripts/setup.sh installs it)")
    return found


def synthesize(unit: units.Unit) -> Resources:
    """The resources Yosys maps ``unit`` to (its module and the result queue it instantiates)."""
    sources = {f"{unit.name}.v": units.render_verilog(unit), "llmc_result_queue.v": static_file("rtl/llmc_result_queue.v")}
    tool = yosys()

    def build(folder: Path) -> None:
        for name, text in sources.items():
            (folder / name).write_text(text)
        script = (f"read_verilog -sv {' '.join(sources)}; synth_xilinx -family xcup -noiopad -top {unit.name}; "
                  "tee -q -o stat.json stat -json")
        result = subprocess.run([tool, "-q", "-p", script], cwd=folder, capture_output=True, text=True,
                                timeout=TIMEOUT_S)
        if result.returncode != 0:
            raise LlmcError(f"yosys failed on {unit.name}: {result.stderr.strip().splitlines()[-1:]}")

    folder = cached_build("yosys", {"tool": tool, "sources": sources}, build)
    return cell_resources(json.loads((folder / "stat.json").read_text())["design"]["num_cells_by_type"], unit.name)


def cell_resources(cells: dict[str, int], what: str) -> Resources:
    """The resources of Yosys's cell counts (:data:`CELLS`); an unknown cell type is refused."""
    totals = {"lut": 0.0, "ff": 0.0, "dsp": 0.0, "bram36": 0.0, "uram": 0.0}
    for cell, count in cells.items():
        if cell in NO_RESOURCE:
            continue
        if cell not in CELLS:
            raise LlmcError(f"{what}: yosys mapped to cell type {cell}, which has no resource count")
        kind, each = CELLS[cell]
        totals[kind] += each * count
    return Resources(**{k: ceil(v) for k, v in totals.items()})
