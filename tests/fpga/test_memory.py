"""The memory model against the public measurements it is built from (docs/fpga.md, "Memory model")."""

from __future__ import annotations

import pytest

from llmc.backends.fpga.design import READ_BURST, READS_OUTSTANDING, WRITES_OUTSTANDING
from llmc.backends.fpga.memory import port_timing, stream_gbs
from llmc.backends.fpga.target import load_target

# Vitis tutorial 07-using-hbm, "HBM bandwidth explorations": one 512-bit kernel port on one U280
# pseudo-channel, GB/s by transaction size (bytes), the HLS default of 16 reads outstanding
SEQUENTIAL = {64: 13.0996, 128: 13.0704, 256: 13.1032, 512: 13.0747, 1024: 13.0432}
RANDOM = {64: 4.75379, 128: 9.59893, 256: 12.6164, 512: 13.1338, 1024: 13.155}


def u280_port(clock_mhz: float = 300, reads: int = 16, sharing: int = 1):
    memory = load_target("u280").memory
    return port_timing(clock_mhz=clock_mhz, port_bits=512, port_gbs=memory.port_gbs, channel_gbs=memory.channel_gbs,
                       sharing=sharing, latency_ns=memory.latency_ns, reads=reads, read_burst=16,
                       writes=WRITES_OUTSTANDING)


@pytest.mark.parametrize("size", sorted(SEQUENTIAL))
def test_the_model_reproduces_the_tutorials_measurements(size: int) -> None:
    port = u280_port()
    assert stream_gbs(port, 300, size, sequential=True) == pytest.approx(SEQUENTIAL[size], rel=0.01)
    assert stream_gbs(port, 300, size, sequential=False) == pytest.approx(RANDOM[size], rel=0.05)


def test_every_channel_together_matches_the_boards_measured_aggregate() -> None:
    """32 ports on their own channels: 419 GB/s; the hbm_bandwidth example measures ~421, Shuhai 425."""
    aggregate = 32 * stream_gbs(u280_port(), 300, 4096, sequential=True)
    assert aggregate == pytest.approx(421, rel=0.01) and aggregate < 425


def test_the_kernel_clock_and_the_reads_in_flight_bound_a_port() -> None:
    slow = u280_port(clock_mhz=150)  # 512 bits at 150 MHz: 9.6 GB/s, below the channel's 13.1
    assert slow.bytes_per_cycle == 64 and slow.word_cycles == 1
    few = u280_port(reads=1)  # one 16-word burst per 215 ns round trip: 4.8 GB/s
    assert few.bytes_per_cycle * 300e6 == pytest.approx(16 * 64 / 215e-9)
    assert u280_port(reads=8).read_gap == pytest.approx(2 * u280_port(reads=16).read_gap)
    two = u280_port(sharing=2)  # two ports on one channel share its rate
    assert two.bytes_per_cycle == pytest.approx(u280_port().bytes_per_cycle / 2)


def test_a_v80_channel_needs_both_its_ports() -> None:
    """A Versal HBM_NMU carries 12.8 GB/s; a V80 pseudo-channel streams 25.6 x 0.911 = 23.3."""
    memory = load_target("v80").memory

    def lane(sharing: int) -> float:
        port = port_timing(clock_mhz=300, port_bits=512, port_gbs=memory.port_gbs, channel_gbs=memory.channel_gbs,
                           sharing=sharing, latency_ns=memory.latency_ns, reads=READS_OUTSTANDING,
                           read_burst=READ_BURST, writes=WRITES_OUTSTANDING)
        return port.bytes_per_cycle * 300e6 / 1e9

    assert lane(1) == pytest.approx(12.8) and lane(1) < memory.channel_gbs
    assert 2 * lane(2) == pytest.approx(memory.channel_gbs)
