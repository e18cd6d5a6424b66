"""The memory model against a lane's AXI read port in RTL (``llmc.sim.axi_mem``): the reader with the design's
bursts and reads in flight, cocotbext-axi's AXI RAM at the U280 port's rate and round trip, under Icarus Verilog
and Verilator."""

from __future__ import annotations

import pytest

from llmc.backends.fpga.design import READ_BURST, READS_OUTSTANDING, WRITES_OUTSTANDING
from llmc.backends.fpga.memory import port_timing
from llmc.backends.fpga.target import load_target
from llmc.sim.axi_mem import Reads, measure, modelled

pytestmark = pytest.mark.rtl


def u280_port():
    memory = load_target("u280").memory
    return port_timing(clock_mhz=250, port_bits=512, port_gbs=memory.port_gbs, channel_gbs=memory.channel_gbs,
                       sharing=1, latency_ns=memory.latency_ns, reads=READS_OUTSTANDING, read_burst=READ_BURST,
                       writes=WRITES_OUTSTANDING)


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
@pytest.mark.parametrize("reads", [
    Reads(8, 544, sequential=True),  # a lane's weight tiles: 8 tiles of 544 words, one stream
    Reads(256, 1, sequential=False),  # a KV group's scales: one word a cache row, the transaction gap binds
    Reads(256, 2, sequential=False),  # one KV head's codes of 128 bytes a row
    Reads(64, 8, sequential=False),  # four KV heads' codes: the words bind
], ids=["tiles", "scales", "one-head", "four-heads"])
def test_a_lanes_reads_take_what_the_timing_model_charges(reads: Reads, simulator: str) -> None:
    port = u280_port()
    cycles = measure(port, reads, simulator, timeout_s=300)
    assert cycles == pytest.approx(modelled(port, reads), rel=0.1)


@pytest.mark.parametrize("simulator", ["icarus", "verilator"])
def test_fewer_reads_in_flight_are_caught(simulator: str) -> None:
    """With 4 bursts in flight instead of 16, short reads at unrelated addresses wait out the round trip."""
    port, reads = u280_port(), Reads(128, 1, sequential=False)
    assert measure(port, reads, simulator, timeout_s=300, outstanding=4) > 3 * modelled(port, reads)
