"""The accelerator's parameters: what design-space exploration chooses and every later step reads.

An :class:`AcceleratorConfig` fixes the engine sizes, on-chip buffers and HBM channel use of one
design; the templates, the instruction compiler, the weight packer, the resource model and the
simulators all read this one object. :class:`KernelPort` lists the top kernel's memory ports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

from llmc.backends.fpga.pack import stored_bits

WORD_BITS = 512  # the engines' word: what a matrix lane or loader moves per cycle (and the program port's width)
PORT_WIDTHS = (128, 256, 512)  # m_axi data widths of the weight, KV and io ports: 512 / width beats an engine word
READ_BURST, READS_OUTSTANDING = 32, 16  # m_axi read bursts (beats) and bursts in flight per master (HLS's default)
WRITE_BURST, WRITES_OUTSTANDING = 16, 2  # m_axi write bursts: KV and io rows are short
INSTR_BITS = 512  # one instruction (one program-memory beat)
ACT_FRAC = 16  # activations are int32 fixed point with 16 fractional bits (Q15.16)


@dataclass(frozen=True)
class AcceleratorConfig:
    """One accelerator design.

    The matrix engine has ``mm_lanes`` lanes; lane ``i`` reads its weight tiles through its own port
    from channel ``weight_channels[i]`` (two lanes may share a channel where one port cannot reach its
    peak) and produces ``mm_tile_n`` outputs at a time, consuming ``mm_tile_k`` inputs per
    cycle (int8 x int8, or two int4 x int8 MACs packed per DSP48E2); its port is ``port_bits`` wide (a
    512-bit word a cycle, or one every ``512 / port_bits`` cycles). ``sparse_n:sparse_m`` is the
    N:M pattern the sparse DSP chain selects (0:0 for none). The LUT engine looks up ``lut_lanes``
    tables of ``2^(lut_g-1)`` entries per cycle. The SFU processes ``sfu_lanes`` elements per cycle.
    """

    target: str  # target name, e.g. "u280"
    clock_mhz: float
    mm_lanes: int
    mm_tile_n: int
    mm_tile_k: int
    weight_bits: tuple[int, ...]  # code widths the matrix engine supports, e.g. (8, 4)
    sparse_n: int
    sparse_m: int
    lut_lanes: int
    lut_g: int
    lut_bits: tuple[int, ...]  # weight widths the LUT engine supports, e.g. (2,)
    sfu_lanes: int
    max_rows: int  # largest prefill chunk (rows kept on chip)
    max_hidden: int  # widest activation row (hidden or intermediate size)
    max_context: int  # KV cache length
    act_buffers: int  # number of on-chip activation buffers
    weight_channels: tuple[int, ...]  # the memory channel of each lane's port (a channel may serve several)
    kv_channels: tuple[int, ...]  # HBM pseudo-channels holding the KV cache (may be the weight channels)
    io_channel: int  # HBM pseudo-channel for token ids in / logits out
    program_memory: str = "DDR[0]"  # where instructions live
    memory_bank: str = "HBM[{}]"  # connectivity name of main-memory channel {} (the board's)
    buckets: tuple[int, ...] = field(default=(1,))  # compiled chunk lengths (1 = decode)
    kv_group: int = 1  # KV heads whose cache rows attention loads at once (side by side in a row: long reads)
    max_head_dim: int = 0  # the widest attention head (sizes the on-chip KV buffers)
    port_bits: int = WORD_BITS  # the weight, KV and io ports' data width (one of PORT_WIDTHS)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict) -> AcceleratorConfig:
        tuples = {"weight_bits", "lut_bits", "weight_channels", "kv_channels", "buckets"}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in values.items()})

    def mac_chunk(self, bits: int) -> int:
        """Codes of width ``bits`` a lane's MAC array multiplies per cycle: ``mm_tile_k``, at most a port word."""
        return min(self.mm_tile_k, WORD_BITS // stored_bits(bits))

    def unit_lanes(self, block: int) -> int:
        """Blocks of ``block`` activations a lane's RTL unit takes per beat: the lane's width, ``mm_tile_k``."""
        return max(1, self.mm_tile_k // block)

    def unit_latency(self, engine: str, bits: int) -> int:
        """Cycles from a lane unit's last beat to its result for an MM on ``engine`` ("sparse", "lut"; 0 for the
        MAC arrays) with ``bits``-bit codes: the sparse chain's DSP48E2 slices and 3, the LUT unit's 5 stages."""
        if engine == "sparse":
            return chain_dsps(self.unit_lanes(self.sparse_m) * self.sparse_n, stored_bits(bits)) + 3
        return LUT_UNIT_LATENCY if engine == "lut" else 0


LUT_UNIT_LATENCY = 5  # rtl/lut_mac.v.j2: table, lookup, plane sum, lane sum, accumulate


def chain_dsps(slots: int, bits: int) -> int:
    """DSP48E2 slices of a sparse chain with ``slots`` kept values a beat: one each at 8 bits, one per two at 4."""
    return slots if bits == 8 else (slots + 1) // 2


@dataclass(frozen=True)
class KernelPort:
    """One argument of the top kernel ``llmc_accel``: an m_axi pointer or an s_axilite scalar."""

    name: str  # C++ argument name
    kind: str  # "m_axi" or "scalar"
    bundle: str = ""  # m_axi bundle (one AXI master per bundle)
    memory: str = ""  # connectivity sp target, e.g. "HBM[3]" or "DDR[0]"
    ctype: str = "int"  # scalar C type


def kernel_ports(config: AcceleratorConfig) -> list[KernelPort]:
    """The top kernel's arguments in order: program, weight channels, KV channels, io, scalars
    (``first_instr``: the instruction a call starts at, 0 but for the later segments of a cluster card).

    A KV (or io) channel that is also a weight channel shares that lane's AXI master (its bundle):
    weights, the cache and io are never moved by the same instruction, so one master serves them all.
    """
    ports = [KernelPort("program", "m_axi", "gmem_prog", config.program_memory)]
    bank = config.memory_bank.format
    ports += [KernelPort(f"w{i}", "m_axi", f"gmem_w{i}", bank(ch)) for i, ch in enumerate(config.weight_channels)]
    lane_of: dict[int, int] = {}  # a channel's first lane
    for i, ch in enumerate(config.weight_channels):
        lane_of.setdefault(ch, i)

    def on(channel: int, name: str) -> KernelPort:  # in the lane's bundle when the channel is a lane's
        bundle = f"gmem_w{lane_of[channel]}" if channel in lane_of else f"gmem_{name}"
        return KernelPort(name, "m_axi", bundle, bank(channel))

    ports += [on(ch, f"kv{i}") for i, ch in enumerate(config.kv_channels)]
    ports.append(on(config.io_channel, "io"))
    ports += [KernelPort(name, "scalar") for name in ("n_instr", "seq_len", "start_pos", "first_instr")]
    return ports


def lanes_per_channel(config: AcceleratorConfig) -> int:
    """The most weight lanes (each its own port) that read one memory channel."""
    return max(Counter(config.weight_channels).values())


def bucket_for(buckets: Sequence[int], rows: int) -> int:
    """The smallest bucket holding ``rows`` rows, else the largest (the chunk is cut to it)."""
    return next((b for b in sorted(buckets) if b >= rows), max(buckets))


def chunks(total: int, bucket_for: Callable[[int], int]) -> Iterator[tuple[int, int, int]]:
    """``(bucket, first row, rows)`` for a run of ``total`` rows, each chunk in the bucket
    ``bucket_for(rows left)`` chooses (as the simulators, the PYNQ runtime and the XRT host cut a prefill)."""
    done = 0
    while done < total:
        bucket = bucket_for(total - done)
        rows = min(total - done, bucket)
        yield bucket, done, rows
        done += rows
