"""cocotb bench of one matrix lane (``llmc_lane_mm`` in the ``llmc_lane_bench`` harness) against cocotbext-axi's AXI
RAM.

The spec file named by ``LLMC_RTL_SPEC`` (written by :mod:`llmc.sim.lane_rtl`) holds the lane's tiles (their bytes
and the address of the first, the rest back to back), the activation RAM's entries, the number of results, the
memory's rate (cycles per word: the RAM's read data channel pauses as in ``mem_bench``) and a cycle limit. The
bench puts the tiles in the RAM, loads the activations, starts the lane, collects every result until ``done``,
then checks for a few cycles that no extra result comes, and writes the lane's cycle count and the results to the
spec's ``result`` file as JSON.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cocotb
from cocotb.binary import BinaryValue
from cocotb.triggers import FallingEdge

from llmc.sim.cocotb_benches.mem_bench import RESET_CYCLES, paced_ram

DRAIN_CYCLES = 16


def _signed32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


@cocotb.test()
async def lane(dut) -> None:
    spec = json.loads(Path(os.environ["LLMC_RTL_SPEC"]).read_text())
    fall = FallingEdge(dut.clk)
    ram = paced_ram(dut, spec["memory_bytes"], spec["word_cycles"])
    ram.write(spec["base"], bytes.fromhex(spec["data"]))
    await fall
    dut.rst.value = 1
    dut.go.value = 0
    dut.act_we.value = 0
    dut.act_addr.value = 0
    dut.base.value = spec["base"]
    dut.tiles.value = spec["tiles"]
    for _ in range(RESET_CYCLES):
        await fall
    dut.rst.value = 0
    for i, entry in enumerate(spec["acts"]):  # the activation rows, before the start
        dut.act_we.value = 1
        dut.act_addr.value = i
        dut.act_data.value = BinaryValue(entry, n_bits=spec["act_width"], bigEndian=False)
        await fall
    dut.act_we.value = 0
    dut.go.value = 1
    outputs: list[int] = []
    waited = drained = 0
    while waited < spec["max_cycles"] and drained < DRAIN_CYCLES:
        await fall
        waited += 1
        if int(dut.res_valid.value):
            outputs.append(_signed32(int(dut.res_data.value)))
        if int(dut.done.value):
            drained += 1
    result = {"status": "ok" if int(dut.done.value) else "hung", "cycles": int(dut.cycles.value),
              "outputs": outputs, "waited": waited}
    Path(spec["result"]).write_text(json.dumps(result))
