"""cocotb bench of a lane's AXI read port (``llmc_lane_reader`` in the ``llmc_mem_bench`` harness) against
cocotbext-axi's AXI RAM.

The spec file named by ``LLMC_RTL_SPEC`` (written by :mod:`llmc.sim.axi_mem`) holds the transactions (count,
words each, address stride), the memory's rate (cycles per word: the RAM's read data channel pauses so that it
delivers one word every ``word_cycles`` on average, as the memory model's port rate) and a cycle limit. The
bench fills the RAM with random bytes, starts the reader, waits for ``done`` and writes the reader's cycle
count, the words it took and whether the XOR of those words is that of the words it should have read to the
spec's ``result`` file as JSON.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import cocotb
from cocotb.triggers import FallingEdge
from cocotbext.axi import AxiARBus, AxiRamRead, AxiRBus, AxiReadBus

RESET_CYCLES = 4
WORD_BYTES = 64


class _ByExactName:
    """A bus whose signals are looked up by their exact names. cocotb_bus looks optional signals up without
    regard to case by listing the whole design (``dir``); under Verilator 5.006 with cocotb 1.9.2, every
    write to the harness's inputs after that listing is lost."""

    def _caseInsensGetattr(self, obj, attr):  # noqa: N802 (cocotb_bus's name)
        return getattr(obj, attr, None)


class _ARBus(_ByExactName, AxiARBus):
    pass


class _RBus(_ByExactName, AxiRBus):
    pass


def _paced(word_cycles: float):
    """Pause the read data channel (True: no beat this cycle) so that a beat leaves every ``word_cycles``
    cycles: a token bucket refilled by ``1 / word_cycles`` a cycle, holding at most two beats (the fraction
    left after a beat carries over; an idle channel saves up at most one beat)."""
    credit = 1.0
    while True:
        if credit >= 1.0:
            credit -= 1.0
            yield False
        else:
            yield True
        credit = min(2.0, credit + 1.0 / word_cycles)


def paced_ram(dut, memory_bytes: int, word_cycles: float) -> AxiRamRead:
    """cocotbext-axi's AXI RAM of ``memory_bytes`` on the harness's ``m_axi`` read bus (signals by exact name), its
    read data channel paced to a word every ``word_cycles``."""
    bus = AxiReadBus(_ARBus.from_prefix(dut, "m_axi", case_insensitive=False),
                     _RBus.from_prefix(dut, "m_axi", case_insensitive=False))
    ram = AxiRamRead(bus, dut.clk, dut.rst, size=memory_bytes)
    ram.r_channel.set_pause_generator(_paced(word_cycles))
    return ram


@cocotb.test()
async def stream(dut) -> None:
    spec = json.loads(Path(os.environ["LLMC_RTL_SPEC"]).read_text())
    fall = FallingEdge(dut.clk)
    ram = paced_ram(dut, spec["memory_bytes"], spec["word_cycles"])
    data = random.Random(0).randbytes(spec["memory_bytes"])
    ram.write(0, data)
    expected = 0
    for txn in range(spec["txns"]):
        for word in range(spec["txn_words"]):
            at = txn * spec["stride"] + word * WORD_BYTES
            expected ^= int.from_bytes(data[at:at + WORD_BYTES], "little")
    await fall
    dut.rst.value = 1
    dut.go.value = 0
    dut.base.value = 0
    dut.stride.value = spec["stride"]
    dut.txns.value = spec["txns"]
    dut.txn_words.value = spec["txn_words"]
    for _ in range(RESET_CYCLES):
        await fall
    dut.rst.value = 0
    await fall
    dut.go.value = 1
    waited = 0
    while waited < spec["max_cycles"] and not int(dut.done.value):
        await fall
        waited += 1
    result = {"status": "ok" if int(dut.done.value) else "hung", "cycles": int(dut.cycles.value),
              "words": int(dut.words.value), "waited": waited,
              "checksum_ok": int(dut.checksum.value) == expected}
    Path(spec["result"]).write_text(json.dumps(result))
