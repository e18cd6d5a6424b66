"""cocotb bench of one llmc streaming unit, seen through the ``llmc_bench`` harness
(``hls_templates/rtl/bench_harness.v.j2``).

The spec file named by ``LLMC_RTL_SPEC`` (written by :mod:`llmc.sim.rtl`) holds the beats, the expected
results, a seed and a cycle limit. At every falling clock edge the bench reads the handshakes of the last
rising edge and drives the next (written at once: the design only acts on rising edges): beats with random valid gaps (a beat once offered stays until taken;
junk data while not valid) and random back-pressure on the result port, in phases from free flow to
near-permanent stalls. Outputs are collected in order and compared in bulk at the end; a drain phase
then checks that no extra result appears. Past the cycle limit the run stops as hung. The outcome goes
to the spec's ``result`` file as JSON.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.binary import BinaryValue
from cocotb.triggers import FallingEdge

# (cycles, probability of offering a beat, probability of accepting a result) per phase
PHASES = ((600, 1.0, 1.0), (600, 0.7, 0.9), (400, 1.0, 0.25), (400, 0.35, 1.0), (400, 0.5, 0.5), (150, 1.0, 0.03),
          (400, 0.9, 0.7))
RESET_CYCLES = 4
DRAIN_CYCLES = 32
JUNK_WORDS = 16


def _signed32(v: int) -> int:
    return v - (1 << 32) if v >= 1 << 31 else v


def _schedule() -> list[tuple[float, float]]:
    """(p_valid, p_ready) of every cycle of one round of the phases."""
    return [(p_valid, p_ready) for cycles, p_valid, p_ready in PHASES for _ in range(cycles)]


@cocotb.test()
async def stream(dut) -> None:
    spec = json.loads(Path(os.environ["LLMC_RTL_SPEC"]).read_text())
    expected: list[int] = spec["expected"]
    width: int = spec["beat_bits"]
    ready_rate: float | None = spec["ready_rate"]
    limit: int = spec["max_cycles"]
    rng = random.Random(spec["seed"])
    beats = [BinaryValue(v, n_bits=width, bigEndian=False) for v in spec["beats"]]
    junk = [BinaryValue(rng.getrandbits(width), n_bits=width, bigEndian=False) for _ in range(JUNK_WORDS)]
    schedule = _schedule()
    fall = FallingEdge(dut.clk)
    beat, ctl, events, result = dut.beat, dut.ctl, dut.events, dut.result

    dut.rst.value = 1
    ctl.value = 0
    beat.value = junk[0]
    for _ in range(RESET_CYCLES):
        await fall
    dut.rst.value = 0

    outputs: list[int] = []
    sent = cycles = drained = 0
    offered = False
    status = "ok"
    while drained < DRAIN_CYCLES:
        await fall  # the handshakes of the last rising edge are settled: drive the next one
        happened = int(events.value)
        if happened & 2:  # the offered beat was taken
            sent += 1
            offered = False
        if happened & 1:
            outputs.append(_signed32(int(result.value)))
        if len(outputs) >= len(expected):
            drained += 1
        if cycles >= limit:
            status = "hung"
            break
        p_valid, p_ready = schedule[cycles % len(schedule)]
        if ready_rate is not None:
            p_ready = ready_rate
        if not offered:
            if sent < len(beats) and rng.random() < p_valid:
                offered = True
                beat.setimmediatevalue(beats[sent])
            elif happened & 2:
                beat.setimmediatevalue(junk[sent % JUNK_WORDS])
        ready = drained > 0 or rng.random() < p_ready
        ctl.setimmediatevalue(offered | ready << 1)
        cycles += 1

    mismatches = [i for i, (got, want) in enumerate(zip(outputs, expected)) if got != want]
    Path(spec["result"]).write_text(json.dumps(
        {"status": status, "outputs": outputs, "cycles": cycles, "beats_sent": sent}))
    assert status == "ok", f"no progress within {limit} cycles: {sent} of {len(beats)} beats taken, " \
                           f"{len(outputs)} of {len(expected)} results"
    assert len(outputs) == len(expected), f"{len(outputs)} results for {len(expected)} groups"
    assert not mismatches, f"{len(mismatches)} mismatches, first at vector {mismatches[0]}"
