"""The timing model: modelled cycles, memory traffic and energy of every instruction.

Per instruction, from the engine parameters of the design (``AcceleratorConfig``) and the board:

- **memory**: each HBM pseudo-channel delivers ``min(port bytes, channel peak / clock)`` bytes per
  cycle times the calibrated ``efficiency`` (the fraction of peak a streaming kernel reaches;
  FlightLLM measures 65.9% on the U280, the bundled targets use 0.65); an instruction that reads
  HBM pays ``HBM_LATENCY`` cycles once, later tiles are prefetched (ping-pong buffers);
- **matrix engine**: a lane does ``mm_tile_k`` MACs per cycle (N:M sparse tiles skip the zeros:
  ``k * N / M`` per row), loses ``log2(mm_tile_k) + TILE_OVERHEAD`` cycles per tile draining its
  adder tree, and re-reads its tiles once per block of ``row_block`` rows. The weight loader runs
  ahead of the lanes: a matrix instruction ends one tile's compute after its last tile arrives
  (memory bound) or one tile's arrival plus its compute after it starts (compute bound), and the
  input's int8 quantisation on the SFU overlaps the first loads. Across instructions
  (:meth:`TimingModel.program`) the loader fetches the next matrix instruction's first tile as
  soon as the lanes' channels are free: during the last tile's compute and any instructions that
  do not stream from them (all but ``MM``, ``XMM``, ``ATTN``, ``KVAPP`` and ``EMBED``); for an
  expert-indexed ``XMM``, only once its route is written (its first expert's tile);
- **LUT engine**: ``lut_lanes / mm_lanes`` tables per lane, each consuming ``lut_g`` one-bit weights
  per cycle, one pass per bit-plane;
- **SFU**: ``sfu_lanes`` elements per cycle per pass (norms and softmax take two passes);
- **attention**: the KV cache streams from the KV channels it is striped over (by position);
  scores and the weighted sum run on the matrix lanes; the softmax on the SFU;
- every instruction pays ``INSTR_OVERHEAD`` cycles (fetch from the DDR prefetch queue, decode,
  pipeline fill).

Energy is ``static power x time + HBM bits x pJ/bit + MACs x pJ/MAC + SFU operations x pJ/op``
(:class:`PowerModel`, stated constants). docs/simulation.md records the calibration and its error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from math import ceil, log2

from llmc.backends.fpga.design import WORD_BITS, AcceleratorConfig, bucket_for, chunks
from llmc.backends.fpga.isa import ENGINES, LANE_STREAMS, Instruction, MmFlags
from llmc.backends.fpga.pack import align
from llmc.backends.fpga.target import Target
from llmc.errors import LlmcError

RUN_PREFILL, RUN_DECODE = 128, 128  # the run behind a design's decode figure (llmc simulate's defaults)
HBM_LATENCY = 64  # cycles from an HBM read request to its first beat (AXI interconnect included)
INSTR_OVERHEAD = 16  # fetch, decode and pipeline fill per instruction
TILE_OVERHEAD = 8  # cycles a lane loses per tile besides its adder-tree depth (as in the DSE)


@dataclass(frozen=True)
class PowerModel:
    """Stated constants of the energy estimate (UltraScale+ at 16 nm, HBM2)."""

    static_w: float = 35.0  # board idle, shell and clocking of a U280-class card
    hbm_pj_per_bit: float = 7.0  # HBM2 access energy including the PHY
    mac_pj: float = 1.0  # one int8 MAC on a DSP48E2 with its operand routing
    sfu_pj: float = 10.0  # one float32 special-function element operation


@dataclass(frozen=True)
class Cost:
    """One executed instruction: modelled cycles, its memory traffic, MACs and SFU elements."""

    op: str
    cycles: float
    memory_cycles: float
    compute_cycles: float
    hbm_bytes: int
    macs: int = 0  # executed: N:M sparse layers skip their zeros
    sfu_elements: int = 0
    layer: str = ""
    lanes_free: float = 0.0  # cycles at its end during which the weight lanes' channels are idle


@dataclass(frozen=True)
class TimingModel:
    """The timing model of one design on one board."""

    config: AcceleratorConfig
    clock_mhz: float
    port_bits: int
    channel_gbs: float  # peak of one memory channel, GB/s
    efficiency: float
    board_gbs: float  # aggregate peak of the board's memory, GB/s
    power: PowerModel = field(default_factory=PowerModel)
    layer_names: dict[int, str] = field(default_factory=dict)  # MM weight_off -> layer name

    @classmethod
    def for_design(cls, config: AcceleratorConfig, target: Target, **overrides: float) -> TimingModel:
        """The model at the design's clock and the board's calibrated memory efficiency; ``overrides``
        replace ``clock_mhz``, ``port_bits`` or ``efficiency``."""
        mem = target.memory
        model = cls(config, config.clock_mhz, WORD_BITS, mem.bandwidth_gbs / mem.channels, mem.efficiency,
                    mem.bandwidth_gbs)
        return replace(model, **overrides)

    @classmethod
    def for_image(cls, image: object, **overrides: float) -> TimingModel:
        """The model of a loaded project (:class:`~llmc.sim.image.ProjectImage`), layers named from its report."""
        model = cls.for_design(image.config, image.target, **overrides)  # type: ignore[attr-defined]
        return replace(model, layer_names=_layer_names(image))

    # --- rates -------------------------------------------------------------------------------------
    @property
    def hz(self) -> float:
        return self.clock_mhz * 1e6

    @property
    def channel_bytes_per_cycle(self) -> float:
        """What one channel delivers per kernel cycle: the narrower of the port and the channel, at efficiency."""
        return min(self.port_bits / 8, self.channel_gbs * 1e9 / self.hz) * self.efficiency

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.config.mm_lanes * self.config.mm_tile_k

    def _mem(self, busiest_channel_bytes: float) -> float:
        return busiest_channel_bytes / self.channel_bytes_per_cycle

    def _sfu(self, elements: float, passes: int = 1) -> float:
        return passes * elements / self.config.sfu_lanes

    # --- instructions ------------------------------------------------------------------------------
    def program(self, program: Sequence[Instruction], rows: int, start_pos: int) -> list[Cost]:
        """The costs of one run of ``program`` up to its HALT, each matrix instruction starting with
        what the weight loader fetched of its first tile while the lanes' channels were free."""
        out: list[Cost] = []
        free = 0.0
        written: set[int] = set()  # buffers written since the last instruction that streamed from the lanes
        for ins in program:
            if ins.op == "HALT":
                break
            known = ins.op != "XMM" or ins.src1 not in written  # an XMM's expert is known once its route is
            cost = self.cost(ins, rows, start_pos, head_start=free if known else 0.0)
            if ins.op == "SYNC":  # the kernel call ends: the next one starts with nothing prefetched
                free, written = 0.0, set()
            elif ins.op in LANE_STREAMS:
                free, written = cost.lanes_free, set()
            else:
                free, written = free + cost.cycles, written | {ins.dst}
            out.append(cost)
        return out

    def cost(self, ins: Instruction, rows: int, start_pos: int, head_start: float = 0.0) -> Cost:
        """The modelled cost of ``ins`` on ``rows`` rows at position ``start_pos``; a matrix
        instruction's first tile may have been loading for ``head_start`` cycles before it."""
        f, c = ins.fields, self.config
        cols = int(f.get("cols", 0))
        lanes = c.mm_lanes
        if ins.op == "MM":
            return self._matmul(f, rows, head_start)
        if ins.op == "XMM":
            return self._expert_matmul(f, rows, head_start)
        if ins.op == "ROUTE":  # max, exponentials, their sum, then one pass per chosen expert
            passes = 3 + int(f["top_k"])
            return self._simple("ROUTE", 0.0, self._sfu(rows * cols, passes), 0, sfu_elements=passes * rows * cols)
        if ins.op == "ATTN":
            return self._attention(f, rows, start_pos)
        if ins.op == "KVAPP":  # rows go to consecutive KV channels
            width = int(f["kv_heads"]) * int(f["head_dim"])
            row_bytes = width + 4 * int(f["kv_heads"])
            busiest = ceil(rows / len(c.kv_channels)) * row_bytes
            sfu = self._sfu(rows * width, 2)
            return self._simple("KVAPP", self._mem(busiest), sfu, rows * row_bytes, sfu_elements=2 * rows * width)
        if ins.op == "EMBED":
            row_bytes = align(cols * 2)
            busiest = ceil(rows / lanes) * row_bytes
            return self._simple("EMBED", self._mem(busiest), self._sfu(rows * cols), rows * row_bytes,
                                sfu_elements=rows * cols)
        if ins.op in ("NORM", "LNORM", "ESCALE"):
            passes = {"NORM": 2, "LNORM": 3, "ESCALE": 1}[ins.op]  # LayerNorm's mean takes one more pass
            vectors = 2 if ins.op == "LNORM" else 1  # weights, and LayerNorm's biases
            return self._simple(ins.op, self._mem(vectors * cols * 4), self._sfu(rows * cols, passes),
                                vectors * cols * 4, sfu_elements=passes * rows * cols)
        if ins.op == "ROPE":
            nbytes = rows * int(f["rotary_dim"]) // 2 * 4 * 2
            return self._simple("ROPE", self._mem(nbytes), self._sfu(rows * cols), nbytes, sfu_elements=rows * cols)
        if ins.op in ("ACT", "EMUL", "EADD", "WEIGH"):
            return self._simple(ins.op, 0.0, self._sfu(rows * cols), 0, sfu_elements=rows * cols)
        if ins.op in ("SEND", "RECV"):  # int32 rows between an activation buffer and io, element-wise on the SFU
            return self._simple(ins.op, self._mem(rows * cols * 4), self._sfu(rows * cols), rows * cols * 4,
                                sfu_elements=rows * cols)
        if ins.op == "SYNC":  # the cluster's time between segments is the link model's
            return Cost("SYNC", 0.0, 0.0, 0.0, 0)
        raise LlmcError(f"timing: no model for opcode {ins.op}")

    def _simple(self, op: str, memory: float, compute: float, nbytes: int, sfu_elements: int = 0) -> Cost:
        latency = HBM_LATENCY if nbytes else 0
        return Cost(op, max(memory, compute) + latency + INSTR_OVERHEAD, memory, compute, nbytes,
                    sfu_elements=sfu_elements)

    def _matmul(self, f: dict, rows: int, head_start: float) -> Cost:
        c = self.config
        n, k, flags = int(f["n"]), int(f["k"]), int(f["flags"])
        tiles, tile_bytes, row_block = int(f["tiles"]), int(f["tile_bytes"]), max(1, int(f["row_block"]))
        decoded = MmFlags.decode(flags)
        bits, engine, sp_n, sp_m = decoded.bits, decoded.engine, decoded.sparse_n, decoded.sparse_m
        passes = ceil(rows / row_block)
        lane_tiles = ceil(tiles / c.mm_lanes)
        memory = self._mem(passes * lane_tiles * tile_bytes)
        drain = log2(max(2, c.mm_tile_k)) + TILE_OVERHEAD
        density = sp_n / sp_m if engine == ENGINES["sparse"] and sp_m else 1.0  # N:M sparse tiles skip the zeros
        compute = 0.0
        for p in range(passes):
            block = min(row_block, rows - p * row_block)
            if engine == ENGINES["lut"]:  # LUT: one pass per bit-plane, lut_g weights per table lookup
                per_lane = max(1, c.lut_lanes // c.mm_lanes) * c.lut_g
                per_tile = block * c.mm_tile_n * k * bits / per_lane
            else:
                per_tile = block * c.mm_tile_n * k * density / c.mm_tile_k
            compute += lane_tiles * (per_tile + drain)
        first = HBM_LATENCY + tile_bytes / self.channel_bytes_per_cycle  # until the first tile is in
        ahead = min(head_start, first)  # what the loader fetched before this instruction
        loads_done = HBM_LATENCY + memory - ahead
        quant = self._sfu(rows * k, 2)  # per-row int8 quantisation of the input (max, then codes)
        busy = max(loads_done + compute / (passes * lane_tiles), max(quant, first - ahead) + compute)
        out_bytes = rows * n * 4 if decoded.to_io else 0
        return Cost("MM", busy + INSTR_OVERHEAD, memory, compute, passes * tiles * tile_bytes + out_bytes,
                    macs=round(rows * n * k * density), sfu_elements=2 * rows * k,
                    layer=self.layer_names.get(int(f["weight_off"]), ""), lanes_free=busy - loads_done)

    def _expert_matmul(self, f: dict, rows: int, head_start: float) -> Cost:
        """XMM: each expert some row chose streams once, one after another, for its rows; the
        model charges ``min(experts, rows)`` experts with an even share of the rows each (exact for
        a decode step, a bound for prefill). The loader may have fetched the first expert's first
        tile (once the route is written), not the others'."""
        streamed = min(int(f["experts"]), rows)
        share = ceil(rows / streamed)
        first, rest = self._matmul(f, share, head_start), self._matmul(f, share, 0.0)
        n = streamed - 1
        return replace(first, op="XMM", cycles=first.cycles + n * (rest.cycles - INSTR_OVERHEAD),
                       memory_cycles=first.memory_cycles + n * rest.memory_cycles,
                       compute_cycles=first.compute_cycles + n * rest.compute_cycles,
                       hbm_bytes=streamed * first.hbm_bytes, macs=streamed * first.macs,
                       sfu_elements=streamed * first.sfu_elements, lanes_free=rest.lanes_free if n else first.lanes_free)

    def _attention(self, f: dict, rows: int, start_pos: int) -> Cost:
        heads, kvh, d, window = int(f["heads"]), int(f["kv_heads"]), int(f["head_dim"]), int(f["window"])
        s = start_pos + rows
        first = max(0, start_pos + 1 - window) if window else 0  # a sliding window reads only its rows
        read, seen = s - first, min(s, window) if window else s  # rows read; keys each query row scores
        side = read * kvh * (d + 4)  # codes and scales of K (or V)
        busiest = 2 * ceil(read / len(self.config.kv_channels)) * kvh * (d + 4)  # K and V striped over the channels
        memory = self._mem(busiest)
        macs = 2 * rows * heads * seen * d  # scores and weighted sum
        compute = macs / self.peak_macs_per_cycle
        softmax = self._sfu(rows * heads * seen, 2) + self._sfu(rows * heads * d)
        cycles = max(memory, compute) + softmax + HBM_LATENCY + INSTR_OVERHEAD
        return Cost("ATTN", cycles, memory, compute + softmax, 2 * side, macs=macs,
                    sfu_elements=2 * rows * heads * seen + rows * heads * d)

    # --- runs --------------------------------------------------------------------------------------
    def run(self, programs: dict[int, list[Instruction]], prefill: int, decode: int) -> tuple[list[Cost], list[list[Cost]]]:
        """The costs of a prompt of ``prefill`` tokens (chunked by bucket as the runtimes cut it) and of
        each of ``decode`` generated tokens after it (none or more), at its growing position."""
        if prefill < 1 or decode < 0:
            raise LlmcError("timing needs at least one prompt token")
        if prefill + decode > self.config.max_context:
            raise LlmcError(f"{prefill} + {decode} tokens exceed the compiled context of {self.config.max_context}")
        pre = [c for b, first, rows in chunks(prefill, lambda rows: bucket_for(programs, rows))
               for c in self.program(programs[b], rows, first)]
        one = programs[bucket_for(programs, 1)]
        return pre, [self.program(one, 1, prefill + i) for i in range(decode)]

    # --- aggregates --------------------------------------------------------------------------------
    def seconds(self, costs: Sequence[Cost]) -> float:
        return sum(c.cycles for c in costs) / self.hz

    def joules(self, costs: Sequence[Cost]) -> float:
        p = self.power
        dynamic = sum(c.hbm_bytes * 8 * p.hbm_pj_per_bit + c.macs * p.mac_pj + c.sfu_elements * p.sfu_pj
                      for c in costs) * 1e-12
        return p.static_w * self.seconds(costs) + dynamic

    def hbm_utilisation(self, costs: Sequence[Cost]) -> float:
        """Bytes moved over the time taken, as a fraction of the board's peak bandwidth."""
        seconds = self.seconds(costs)
        return sum(c.hbm_bytes for c in costs) / (seconds * self.board_gbs * 1e9) if seconds else 0.0


def run_lengths(context: int, prefill: int = RUN_PREFILL, decode: int = RUN_DECODE) -> tuple[int, int]:
    """``prefill`` and ``decode`` token counts cut to a context of ``context`` tokens (half each at most)."""
    if prefill + decode <= context:
        return prefill, decode
    return max(1, min(prefill, context // 2)), max(1, min(decode, context - min(prefill, context // 2)))


def _layer_names(image: object) -> dict[int, str]:
    """MM weight offsets -> layer names: the report lists layers in the order the program first uses them."""
    import json

    report = image.path / "report.json"  # type: ignore[attr-defined]
    if not report.is_file():
        return {}
    layers = [entry["name"] for entry in json.loads(report.read_text()).get("layers", [])]
    program = image.programs[min(image.programs)]  # type: ignore[attr-defined]
    offsets = list(dict.fromkeys(int(i.fields["weight_off"]) for i in program if i.op in ("MM", "XMM")))
    return dict(zip(offsets, layers)) if len(offsets) == len(layers) else {}


def block_of(layer: str) -> int | None:
    """The decoder block a layer belongs to (``layers.3.mlp.up_proj`` -> 3), None outside the blocks."""
    m = re.search(r"layers\.(\d+)\.", layer)
    return int(m.group(1)) if m else None
