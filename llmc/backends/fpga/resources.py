"""Resource estimates of an accelerator design, unit by unit, against a target's usable resources.

Every figure here is an estimate from a simple per-unit formula (each function documents its own),
good enough to size engines in design-space exploration and to report; Vivado's utilisation after
place and route is the real number. Constants are per lane or per port unless stated.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil, log2

from .design import (
    READ_BURST,
    READS_OUTSTANDING,
    WORD_BITS,
    WRITE_BURST,
    WRITES_OUTSTANDING,
    AcceleratorConfig,
    chain_dsps,
    kernel_ports,
)
from .target import RESOURCE_KINDS, Resources, Target
from .units import Unit, design_units

BRAM36_BYTES = 4608  # 36 Kb
BRAM36_WIDTH = 64  # data bits per port in the 512 x 72 configuration
BRAM36_DEPTH = 512
URAM_BYTES = 36 * 1024  # 288 Kb
LUTRAM_DEPTH = 64  # one LUT6 holds a 64 x 1 RAM
ACT_BYTES = 4  # activations are int32 on chip (design.ACT_FRAC)
FP32_MUL_DSP, FP32_ADD_DSP = 3, 2  # DSP48E2 slices per pipelined fp32 multiplier / adder


def datapath_bits(width: int) -> int:
    """The matrix-engine datapath a weight code width runs on: 4 bits for widths 1-4, 8 bits for 5-8."""
    return 4 if width <= 4 else 8


def macs_per_dsp(weight_bits: tuple[int, ...]) -> int:
    """2 when every width runs on the 4-bit datapath (two int4 x int8 MACs packed per DSP48E2), else 1."""
    return 2 if all(datapath_bits(w) == 4 for w in weight_bits) else 1


def sparse_index_bits(config: AcceleratorConfig) -> int:
    """Bits of position stored with each kept weight of an N:M pattern (0 when dense)."""
    return ceil(log2(config.sparse_m)) if config.sparse_m else 0


def matrix_engine(config: AcceleratorConfig) -> Resources:
    """DSP MAC array, adder trees, accumulators and requantisation of ``mm_lanes`` lanes.

    Per lane: ``mm_tile_k / macs_per_dsp`` DSPs; an adder tree over ``mm_tile_k`` products (about 20
    LUTs and 40 pipeline FFs per input); 16 LUTs per DSP to split two packed int4 products; for N:M
    sparsity an M:1 multiplexer per 8-bit activation input (one LUT6 per 4 inputs per bit) and a
    window of ``mm_tile_k * M / N`` activations in FFs; ``mm_tile_n`` int32 accumulators in LUTRAM;
    requantisation by group scales in fabric (800 LUTs, 1,200 FFs) and lane control (300, 500).
    """
    k, pack = config.mm_tile_k, macs_per_dsp(config.weight_bits)
    dsp = ceil(k / pack)
    lut = 20 * k + (16 * dsp if pack == 2 else 0) + 32 * ceil(config.mm_tile_n / LUTRAM_DEPTH) + 800 + 300
    window = k
    if config.sparse_m:
        lut += k * 8 * ceil(config.sparse_m / 4)
        window = k * config.sparse_m // config.sparse_n
    ff = 40 * k + 8 * window + 1200 + 500
    return Resources(lut=lut, ff=ff, dsp=dsp) * config.mm_lanes


def lut_engine(config: AcceleratorConfig) -> Resources:
    """Table-lookup mpGEMM lanes in fabric (none when ``lut_lanes`` is 0).

    Per lane: a table of ``2^(lut_g-1)`` 16-bit entries in LUTRAM (16 LUTs per 64 entries), 16 LUTs
    to negate the looked-up entry (symmetric tables), a 24-bit shift-accumulator (24 LUTs, 24 FFs)
    and a 16-bit output register. Shared: the table builder (2,000 LUTs, 2,000 FFs).
    """
    if not config.lut_lanes:
        return Resources()
    entries = 2 ** (config.lut_g - 1)
    lane = Resources(lut=16 * ceil(entries / LUTRAM_DEPTH) + 16 + 24, ff=24 + 16)
    return lane * config.lut_lanes + Resources(lut=2000, ff=2000)


def rtl_unit(unit: Unit) -> Resources:
    """One RTL unit (rtl/*.v), with constants fitted to Yosys's synthesis of the generated Verilog
    (``synth_xilinx -family xcup``, out of context; :mod:`llmc.sim.synth`, docs/rtl.md).

    Sparse chain, per kept-weight slot (``lanes x N``): 65 LUTs and 58 FFs at int8, 46 and 34 at
    int4 (two slots per DSP), less the N:M multiplexer's 8 LUTs per 4 block positions when dense;
    one DSP48E2 per slot (int8) or per two (int4); plus 20 LUTs and 60 FFs (int8) or 66 and 90
    (int4). LUT unit, per lane (``g`` activations): ``160 + 130 x bits`` LUTs and ``215 + 12 x
    bits`` FFs, plus 70 LUTs and 90 FFs.
    """
    if unit.kind == "sparse_mac":
        slots = unit.lanes * unit.n
        mux = 0 if unit.n == unit.m else 8 * ceil(unit.m / 4)
        if unit.bits == 8:
            return Resources(lut=20 + (57 + mux) * slots, ff=60 + 58 * slots, dsp=chain_dsps(slots, 8))
        return Resources(lut=66 + (38 + mux) * slots, ff=90 + 34 * slots, dsp=chain_dsps(slots, 4))
    return Resources(lut=70 + (160 + 130 * unit.bits) * unit.lanes, ff=90 + (215 + 12 * unit.bits) * unit.lanes)


def rtl_units(config: AcceleratorConfig) -> Resources:
    """The RTL units the design instantiates (:func:`~.units.design_units`), one of each per matrix lane."""
    total = Resources()
    for unit in design_units(config):
        total += rtl_unit(unit)
    return total * config.mm_lanes


def sfu(config: AcceleratorConfig) -> Resources:
    """fp32 special-function lanes (softmax, norms, RoPE, activations, residuals).

    Per lane: two fp32 multipliers and two fp32 adders in DSPs; reciprocal, square root, float/fixed
    conversion and control in fabric (1,800 LUTs, 2,600 FFs). One exp table in a BRAM36 per two lanes.
    """
    lane = Resources(lut=1800, ff=2600, dsp=2 * FP32_MUL_DSP + 2 * FP32_ADD_DSP)
    return lane * config.sfu_lanes + Resources(bram36=ceil(config.sfu_lanes / 2))


def dma(config: AcceleratorConfig) -> Resources:
    """One AXI master per m_axi bundle: 1,800 LUTs, 3,000 FFs and a read buffer one port beat wide and
    ``READ_BURST x READS_OUTSTANDING`` (512) beats deep (8 BRAM36 at 512 bits, 2 at 128).

    The program's master is 512 bits wide; the others ``port_bits``, and a port narrower than the engines' word
    assembles each word in a 512-bit register. Masters that also write (KV cache and io rows: a few KB per token)
    get a shallow write buffer of ``WRITE_BURST x WRITES_OUTSTANDING`` (32) beats in LUTRAM (the kernel's m_axi
    pragmas set these depths). Ports in one bundle share its master (the KV cache and io on a weight lane's channel).
    """
    def master(bits: int) -> Resources:
        fifo = Resources(bram36=ceil(bits / BRAM36_WIDTH) * ceil(READ_BURST * READS_OUTSTANDING / BRAM36_DEPTH))
        return Resources(lut=1800, ff=3000 + (WORD_BITS if bits < WORD_BITS else 0)) + fifo

    bits = config.port_bits
    write_fifo = Resources(lut=bits * ceil(WRITE_BURST * WRITES_OUTSTANDING / LUTRAM_DEPTH), ff=bits)
    ports = [p for p in kernel_ports(config) if p.kind == "m_axi"]
    data = len({p.bundle for p in ports if p.name != "program"})
    writers = len({p.bundle for p in ports if p.name == "io" or p.name.startswith("kv")})
    return master(WORD_BITS) + master(bits) * data + write_fifo * writers


def activation_buffers(config: AcceleratorConfig) -> Resources:
    """``act_buffers`` buffers of ``max_rows x max_hidden`` int32 activations in URAM."""
    per_buffer = ceil(config.max_rows * config.max_hidden * ACT_BYTES / URAM_BYTES)
    return Resources(uram=per_buffer * config.act_buffers)


def weight_buffers(config: AcceleratorConfig) -> Resources:
    """A double buffer per lane holding one ``mm_tile_n x mm_tile_k`` weight tile, in BRAM36.

    A row of the tile (codes at the widest datapath plus N:M positions) is read per cycle, so each
    buffer is ``row bits / 64`` BRAM36 wide and ``mm_tile_n / 512`` deep; the tile's fp16 group
    scales sit in LUTRAM.
    """
    row_bits = config.mm_tile_k * (max(map(datapath_bits, config.weight_bits)) + sparse_index_bits(config))
    bram = 2 * ceil(row_bits / BRAM36_WIDTH) * ceil(config.mm_tile_n / BRAM36_DEPTH)
    scales = 2 * 16 * ceil(config.mm_tile_n / LUTRAM_DEPTH)
    return Resources(lut=scales, bram36=bram) * config.mm_lanes


def kv_buffers(config: AcceleratorConfig) -> Resources:
    """The attention score row (``max_context`` fp32 scores) in BRAM; in URAM the K and V codes of ``kv_group``
    heads over the context and their int32 scales, twice (ping-pong: the next group loads while one is scored)."""
    scores = ceil(config.max_context * 4 / BRAM36_BYTES)
    codes = 2 * 2 * config.kv_group * config.max_context * config.max_head_dim
    scales = 2 * 2 * config.kv_group * config.max_context * 4
    return Resources(bram36=scores, uram=ceil((codes + scales) / URAM_BYTES))


def control() -> Resources:
    """Instruction fetch, decode and dispatch with a small instruction queue."""
    return Resources(lut=6000, ff=9000, bram36=4)


@dataclass(frozen=True)
class Utilisation:
    """Estimated resources of one design per unit, against a target's usable resources."""

    target: str
    usable: Resources
    units: dict[str, Resources]

    @property
    def total(self) -> Resources:
        total = Resources()
        for used in self.units.values():
            total += used
        return total

    @property
    def fractions(self) -> dict[str, float]:
        """Each resource's total as a fraction of the usable amount."""
        return self.total.fractions(self.usable)

    def scarcest(self) -> tuple[str, float]:
        """The resource with the highest fraction used, and that fraction."""
        return max(self.fractions.items(), key=lambda kv: kv[1])

    def fits(self, budget: float = 1.0) -> bool:
        """Whether no resource uses more than ``budget`` of the usable amount."""
        return self.scarcest()[1] <= budget

    def table(self) -> list[list[str]]:
        """Rows for a report: a header, one row per unit, the total, the usable amount and the fraction used."""
        rows = [["unit", "LUT", "FF", "DSP", "BRAM36", "URAM"]]
        for name, used in [*self.units.items(), ("total", self.total), ("usable", self.usable)]:
            rows.append([name, *(f"{getattr(used, k):,}" for k in RESOURCE_KINDS)])
        rows.append(["used", *(f"{self.fractions[k]:.1%}" for k in RESOURCE_KINDS)])
        return rows


def estimate(config: AcceleratorConfig, target: Target) -> Utilisation:
    """Estimate the resources of ``config`` unit by unit against ``target``'s usable resources."""
    units = {
        "matrix engine": matrix_engine(config),
        "LUT engine": lut_engine(config),
        "RTL units": rtl_units(config),
        "SFU": sfu(config),
        "DMA": dma(config),
        "activation buffers": activation_buffers(config),
        "weight buffers": weight_buffers(config),
        "KV buffers": kv_buffers(config),
        "control": control(),
    }
    return Utilisation(target.name, target.usable, units)
