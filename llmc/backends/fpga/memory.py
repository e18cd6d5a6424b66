"""The memory model: what one m_axi port of the kernel moves per kernel cycle, derived from the board's
measured memory figures and the design's port width, clock, lanes per channel and AXI settings.

A port streams sequential words at the least of four rates:

- the port itself: ``port_bits / 8`` bytes every kernel cycle;
- the memory side of a port: ``port_gbs`` (the board's AXI port into a channel: U280 256 bits at 450 MHz,
  PG276; a Versal HBM_NMU 256 bits at 400 MHz, PG313);
- its share of the channel: ``bandwidth_gbs / channels x efficiency`` over the ports on that channel, where
  ``efficiency`` is the measured sequential read rate of one port on its own channel (U280: 13.10 of
  14.375 GB/s, the Vitis HBM tutorial's sequential accesses, whatever the transaction size);
- the reads in flight: ``outstanding x burst bytes / latency`` (Little's law).

A transaction at an address that does not follow the port's last one (a new burst elsewhere: the KV cache's
rows, a norm's weights) cannot start sooner than ``latency / outstanding`` after the one before: the
tutorial's random reads of 64 and 128 bytes take 13.4 ns each with the HLS default of 16 outstanding reads,
which puts a read's round trip at 16 x 13.46 = 215 ns (``latency_ns``). docs/fpga.md, "Memory model", lists
every figure with its source and checks the model against the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

WORD_BYTES = 64  # one 512-bit word: the kernel's port width


@dataclass(frozen=True)
class PortTiming:
    """One kernel port's memory timing in kernel cycles."""

    word_cycles: float  # per 512-bit word of a sequential stream (at least 1: a loop moves a word per cycle)
    latency: int  # from a request to its first word
    read_gap: float  # least cycles between read transactions at unrelated addresses
    write_gap: float  # the same for writes
    bytes_per_cycle: float  # what the port streams per cycle (64 / word_cycles, unless the loop bounds it)


def port_timing(*, clock_mhz: float, port_bits: int, port_gbs: float, channel_gbs: float, sharing: int,
                latency_ns: float, reads: int, read_burst: int, writes: int) -> PortTiming:
    """The timing of a ``port_bits`` port at ``clock_mhz`` on a channel that streams ``channel_gbs``
    sequentially (peak x efficiency), shared by ``sharing`` ports, each reaching the memory at ``port_gbs``
    at most, with ``reads`` bursts of ``read_burst`` words in flight (``writes`` for writes) and a round trip
    of ``latency_ns``."""
    hz = clock_mhz * 1e6
    latency_s = latency_ns * 1e-9
    in_flight = reads * read_burst * port_bits / 8 / latency_s
    rate = min(port_bits / 8 * hz, port_gbs * 1e9, channel_gbs * 1e9 / sharing, in_flight) / hz
    cycles_per_ns = clock_mhz / 1000
    return PortTiming(
        word_cycles=max(1.0, WORD_BYTES / rate),
        latency=ceil(latency_ns * cycles_per_ns),
        read_gap=latency_ns / reads * cycles_per_ns,
        write_gap=latency_ns / writes * cycles_per_ns,
        bytes_per_cycle=rate,
    )


def stream_gbs(timing: PortTiming, clock_mhz: float, transaction_bytes: int, sequential: bool) -> float:
    """GB/s of a long run of ``transaction_bytes`` reads on one port: back to back when ``sequential``, else
    each at an unrelated address (the tutorial's random accesses)."""
    words = ceil(transaction_bytes / WORD_BYTES) * timing.word_cycles
    cycles = words if sequential else max(words, timing.read_gap)
    return transaction_bytes / cycles * clock_mhz * 1e6 / 1e9
