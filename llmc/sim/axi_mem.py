"""A lane's memory side in RTL: the AXI4 read master of a weight or KV loader (``rtl/llmc_lane_reader.v``: bursts of
``READ_BURST`` words, ``READS_OUTSTANDING`` in flight) against cocotbext-axi's AXI RAM, with the board's round
trip as a request delay and its port rate as pauses of the read data channel, under Icarus Verilog (under
Verilator 5.006 with cocotb 1.9.2 the bench's own writes are lost once the RAM model attaches: not yet usable).

:func:`measure` runs ``txns`` transactions of ``txn_words`` words (back to back in memory, or each at an unrelated
address) and returns the cycles the reader took; :func:`modelled` is what the timing model charges for the same
reads (:mod:`llmc.backends.fpga.memory`): a first request's latency, then the words at the port's rate, each
transaction at an unrelated address no sooner than the gap after the one before. ``tests/rtl/test_axi_mem.py``
holds the two within 10%.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from llmc.backends.fpga.design import READ_BURST, READS_OUTSTANDING
from llmc.backends.fpga.memory import WORD_BYTES, PortTiming
from llmc.sim.rtl import SIMULATORS, Bench, RtlSimError, build_bench, run_bench
from llmc.templating import static_file

MEM_BENCH = Bench("llmc_mem_bench", "llmc.sim.cocotb_benches.mem_bench")
RAM_CYCLES = 2  # the RAM model's own cycles from a request to its first word (measured with no delay)


@dataclass(frozen=True)
class Reads:
    """``txns`` transactions of ``txn_words`` words, contiguous in memory or each at an unrelated address."""

    txns: int
    txn_words: int
    sequential: bool

    @property
    def stride(self) -> int:
        """Bytes between the starts of two transactions (a gap of a 4 KiB page when not sequential)."""
        return self.txn_words * WORD_BYTES + (0 if self.sequential else 4096)


def modelled(port: PortTiming, reads: Reads) -> float:
    """The timing model's cycles for ``reads`` on ``port``."""
    words = reads.txn_words * port.word_cycles
    each = words if reads.sequential else max(words, port.read_gap)
    return port.latency + (reads.txns - 1) * each + words


def measure(port: PortTiming, reads: Reads, simulator: str, timeout_s: float, *,
            outstanding: int = READS_OUTSTANDING) -> int:
    """Cycles the RTL reader takes for ``reads`` with ``port``'s latency and word rate, ``outstanding`` bursts in
    flight (the design's by default)."""
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator '{simulator}' (expected one of {', '.join(SIMULATORS)})")
    start = time.monotonic()
    latency = max(0, port.latency - RAM_CYCLES)
    parameters = {"BURST": READ_BURST, "OUTSTANDING": outstanding, "LATENCY": latency}
    build = build_bench(MEM_BENCH, "mem-bench", _sources(), simulator, timeout_s, parameters)
    words = reads.txns * reads.txn_words
    spec = {"txns": reads.txns, "txn_words": reads.txn_words, "stride": reads.stride,
            "word_cycles": port.word_cycles, "memory_bytes": reads.txns * reads.stride + 4096,
            "max_cycles": int(8 * (port.latency + words * max(port.word_cycles, port.read_gap))) + 1000}
    what = f"memory bench on {simulator}"
    remaining = max(1.0, timeout_s - (time.monotonic() - start))
    outcome = run_bench(MEM_BENCH, build, simulator, spec, what, remaining, timeout_s)
    if outcome["status"] != "ok" or outcome["words"] != words:
        raise RtlSimError(f"{what}: hung after {outcome['waited']} cycles ({outcome['words']} of {words} words)")
    if not outcome["checksum_ok"]:
        raise RtlSimError(f"{what}: the reader passed on other words than those at its addresses")
    return int(outcome["cycles"])


def _sources() -> dict[str, str]:
    """File name -> Verilog of the bench: the reader, the request delay and the harness."""
    return {name: static_file(f"rtl/{name}") for name in ("llmc_lane_reader.v", "llmc_ar_delay.v", "llmc_mem_bench.v")}
