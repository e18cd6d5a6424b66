"""The timing model: the cycles of every instruction as the generated kernel spends them, with its memory
traffic and energy.

The model is the closed form of the kernel's own structure (``kernel/llmc_accel.cpp``); C-simulation counts
the same loops as it runs (``include/llmc_cycles.h``) and ``llmc verify --levels cycles`` holds the two within
10% of each other per call. Per instruction:

- **memory** (:mod:`llmc.backends.fpga.memory`): a port streams one 512-bit word every ``word_cycles``
  (the least of the port, the board's AXI port, its share of the channel at the measured efficiency and the
  reads in flight); an instruction's first request waits ``latency`` cycles, later bursts are outstanding
  reads; a transaction at an address that does not follow the port's last one (the KV cache's rows, a norm's
  weights) takes at least the transaction gap;
- **matrix engine** (``MM``, ``XMM``): the input rows are quantised on the SFU (two passes), then each pass of
  ``row_block`` rows is a dataflow region: every lane's loader streams its tiles (lane ``l`` takes tiles
  ``l, l + lanes, ...``; scales first, then codes) from its own channel while the lane's MAC array consumes
  them: per tile, one cycle per word of scales, then one cycle per (chunk, row), a chunk being ``mm_tile_k``
  codes of one column, at most one word (so int8 weights go 64 per cycle). The sparse chain and the LUT
  engine fill a ping-pong tile buffer (one cycle per word), then take one beat of ``mm_tile_k``
  activations per cycle per group and row; when only SFU instructions and readers of vectors or tables lie
  between two ``MM``s, each loader reads the second's first tile once its own tiles of the first are read,
  after its slices of the vectors of the first instruction between that reads any (a norm's weights);
- **vectors** (norm weights and biases, smoothing factors) are striped over the weight channels
  (:func:`~llmc.backends.fpga.pack.vector_slice`): read ahead as above, or by every lane at once;
- **attention** (``ATTN``): the query rows quantised on the SFU; per group of ``kv_group`` KV heads (whose codes
  lie side by side in a cache row), the KV channels' loaders read their rows into one half of a ping-pong buffer
  (the K codes of every row, then the V codes, then each scale; one stream each when the group is every head)
  while the group before is scored: per query row and head the lanes score their keys (``key = lane mod lanes``,
  ``head_dim / mm_tile_k`` cycles a key) and, a second pass, weigh them; the SFU adds the lanes' sums;
- **SFU**: ``sfu_lanes`` elements per cycle per pass over a row (RMSNorm three passes, LayerNorm four, the
  int8 quantisation two); the router's top-k and its float sums one element per cycle;
- every instruction pays ``INSTR_OVERHEAD`` cycles (fetch, decode, pipeline fill), and a call reads its
  token ids and writes its logits through the io channel (``IO``).

Energy is ``static power x time + HBM bits x pJ/bit + MACs x pJ/MAC + SFU operations x pJ/op``
(:class:`PowerModel`, stated constants). docs/simulation.md records the calibration and its error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from math import ceil

from llmc.backends.fpga.design import (
    READ_BURST,
    READS_OUTSTANDING,
    WORD_BITS,
    WRITES_OUTSTANDING,
    AcceleratorConfig,
    bucket_for,
    chunks,
    lanes_per_channel,
)
from llmc.backends.fpga.isa import Instruction, MmFlags
from llmc.backends.fpga.memory import PortTiming, port_timing
from llmc.backends.fpga.pack import align, code_bytes, vector_slice
from llmc.backends.fpga.target import Target
from llmc.errors import LlmcError

RUN_PREFILL, RUN_DECODE = 128, 128  # the run behind a design's decode figure (llmc simulate's defaults)
INSTR_OVERHEAD = 16  # fetch, decode and pipeline fill per instruction
WORD_BYTES = WORD_BITS // 8


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
    ahead: float = 0.0  # MM: when, from its start, its loaders had read the next MM's first tiles
    vectors: float = 0.0  # MM: when, from its start, they had read the vectors before those (VECTORS)


@dataclass(frozen=True)
class TimingModel:
    """The timing model of one design on one board."""

    config: AcceleratorConfig
    clock_mhz: float
    port: PortTiming  # each kernel port's memory timing (:mod:`llmc.backends.fpga.memory`)
    channel_peak_gbs: float  # peak of one memory channel, GB/s
    board_gbs: float  # aggregate peak of the board's memory, GB/s
    power: PowerModel = field(default_factory=PowerModel)
    layer_names: dict[int, str] = field(default_factory=dict)  # MM weight_off -> layer name
    kv_rows: dict[tuple[int, int, int], float] = field(default_factory=dict, compare=False, repr=False)  # _kv_row's

    @classmethod
    def for_design(cls, config: AcceleratorConfig, target: Target, *, clock_mhz: float | None = None,
                   port_bits: int | None = None, efficiency: float | None = None) -> TimingModel:
        """The model at the design's clock and port width (or ``clock_mhz``, ``port_bits``) with the board's memory
        model; ``efficiency`` replaces the board's measured efficiency."""
        mem = target.memory
        clock = config.clock_mhz if clock_mhz is None else clock_mhz
        port = port_timing(
            clock_mhz=clock, port_bits=config.port_bits if port_bits is None else port_bits, port_gbs=mem.port_gbs,
            channel_gbs=mem.channel_peak_gbs * (mem.efficiency if efficiency is None else efficiency),
            sharing=lanes_per_channel(config), latency_ns=mem.latency_ns, reads=READS_OUTSTANDING,
            read_burst=READ_BURST, writes=WRITES_OUTSTANDING)
        return cls(config, clock, port, mem.channel_peak_gbs, mem.bandwidth_gbs)

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
    def port_bytes_per_cycle(self) -> float:
        """What one lane's port streams per kernel cycle (:func:`~llmc.backends.fpga.memory.port_timing`)."""
        return self.port.bytes_per_cycle

    @property
    def channel_peak_bytes_per_cycle(self) -> float:
        """A channel's peak per kernel cycle (the roofline's bandwidth)."""
        return self.channel_peak_gbs * 1e9 / self.hz

    @property
    def word_cycles(self) -> float:
        """Cycles a port spends on one 512-bit word of a sequential stream."""
        return self.port.word_cycles

    @property
    def latency(self) -> int:
        """Cycles from a memory request to its first word."""
        return self.port.latency

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.config.mm_lanes * self.config.mm_tile_k

    def _move(self, nbytes: float) -> float:
        """Cycles of ``nbytes`` streamed through a port (whole words), following the port's last transaction."""
        return ceil(nbytes / WORD_BYTES) * self.word_cycles

    def _seek(self, nbytes: float, write: bool = False) -> float:
        """Cycles of one transaction of ``nbytes`` at an address that does not follow the port's last one:
        its words, but no sooner than the transaction gap after the one before."""
        return max(self._move(nbytes), self.port.write_gap if write else self.port.read_gap)

    def _rows(self, rows: int, nbytes: int, contiguous: bool) -> float:
        """Cycles of ``rows`` reads of ``nbytes``, one after another in a stream: each at an unrelated address,
        or (``contiguous``) each where the last ended, but the first."""
        if rows == 0:
            return 0.0
        return self._seek(nbytes) + (rows - 1) * (self._move(nbytes) if contiguous else self._seek(nbytes))

    def _pass(self, elements: int) -> int:
        """Cycles of one SFU pass over ``elements`` elements."""
        return ceil(elements / self.config.sfu_lanes)

    def _quant8(self, n: int, group: int) -> int:
        """int8 codes of ``n`` values per group: two SFU passes over each group."""
        return n // group * 2 * self._pass(group)

    # --- instructions ------------------------------------------------------------------------------
    def program(self, program: Sequence[Instruction], rows: int, start_pos: int) -> list[Cost]:
        """The costs of one run of ``program`` up to its HALT: each kernel call (a cluster card's segment
        ends at a SYNC) reads its token ids, and the call that computes the logits writes them. The weight
        loaders read an MM's first tiles during the MM before it (:func:`next_matmul`); an instruction that
        reads lane 0's channel meanwhile waits for that read."""
        out: list[Cost] = [self._io(4 * rows)]  # the token ids
        now, ahead = out[0].cycles, None  # the cycle the loaders had read the next MM's first tiles
        reader, vectors = None, 0.0  # the instruction whose vectors they read before those, and when
        for i, ins in enumerate(program):
            if ins.op == "HALT":
                break
            if ins.op == "MM":
                following = next_matmul(program, i)
                words = int(following.fields["tile_bytes"]) // WORD_BYTES if following else 0
                reader = vector_reader(program, i) if following else None
                vector_words = self._vector_words(program[reader]) if reader is not None else 0
                cost = self._matmul(ins.fields, [rows], rows, None if ahead is None else ahead - now, words,
                                    vector_words)
                ahead = now + cost.ahead if following else None
                vectors = now + cost.vectors
            elif i == reader:  # its vectors were read ahead: it waits for them, then computes
                cost = self.cost(ins, rows, start_pos)
                cost = replace(cost, cycles=cost.compute_cycles + INSTR_OVERHEAD
                               + max(0.0, vectors - now - INSTR_OVERHEAD), memory_cycles=0.0)
            else:
                cost = self.cost(ins, rows, start_pos)
                if ahead is not None and ins.op in READS_LANE0:  # its read queues behind the loaders' read-ahead
                    cost = replace(cost, cycles=cost.cycles + max(0.0, ahead - now - INSTR_OVERHEAD))
            out.append(cost)
            now += cost.cycles
            if ins.op == "SYNC":
                out.append(self._io(4 * rows))
                now, ahead = now + out[-1].cycles, None
            elif ins.op in ("MM", "XMM") and MmFlags.decode(int(ins.fields["flags"])).to_io:
                out.append(self._io(rows * int(ins.fields["n"]) * 4, write=True))  # the logits
                now += out[-1].cycles
        return out

    def _io(self, nbytes: int, write: bool = False) -> Cost:
        """One burst between io and the kernel's buffer: a call's token ids, or its logits (``write``)."""
        memory = self._seek(nbytes, write)
        return Cost("IO", self.latency + memory, memory, 0.0, nbytes)

    def cost(self, ins: Instruction, rows: int, start_pos: int) -> Cost:
        """The modelled cost of ``ins`` on ``rows`` rows at position ``start_pos``."""
        f = ins.fields
        cols = int(f.get("cols", 0))
        if ins.op == "MM":
            return self._matmul(f, [rows], rows)
        if ins.op == "XMM":  # each expert some row chose streams once, for its rows (min(experts, rows) even shares)
            streamed = min(int(f["experts"]), rows)
            shares = [rows // streamed + (1 if e < rows % streamed else 0) for e in range(streamed)]
            return replace(self._matmul(f, shares, rows), op="XMM")
        if ins.op == "ATTN":
            return self._attention(f, rows, start_pos)
        if ins.op == "ROUTE":  # top_k scans of the experts, the float sum, the weights: one element per cycle
            top_k, normalize = int(f["top_k"]), int(f["normalize"])
            per_row = top_k * cols + (top_k if normalize else cols) + top_k
            return self._simple("ROUTE", 0.0, rows * per_row, 0, sfu_elements=rows * per_row)
        if ins.op == "KVAPP":  # per row: the codes written as the heads are quantised, then the scales
            kvh, d = int(f["kv_heads"]), int(f["head_dim"])
            width, channels = kvh * d, len(self.config.kv_channels)
            busy = sum(self._kv_row(kvh, d, (start_pos + t) // channels * width % WORD_BYTES) for t in range(rows))
            return Cost("KVAPP", self.latency + busy + INSTR_OVERHEAD, rows * self._seek(kvh * 4, write=True),
                        rows * self._quant8(width, d), rows * (width + 4 * kvh), sfu_elements=2 * rows * kvh * d)
        if ins.op == "EMBED":  # per row: its table entry, then converted on the SFU
            nbytes = align(cols * 2)
            return self._simple("EMBED", rows * self._seek(cols * 2), rows * self._pass(cols), rows * nbytes,
                                sfu_elements=rows * cols, serial=True)
        if ins.op in VECTORS:  # the vectors, every lane its slices at once (lane 0 the most), then the passes
            memory = VECTORS[ins.op] * self._seek(4 * min(cols, vector_slice(cols, self.config.mm_lanes)))
            nbytes = VECTORS[ins.op] * cols * 4
            if ins.op == "NORM":  # per row (per head for QK-norm) three passes
                group = int(f.get("group", 0)) or cols
                sfu = rows * (cols // group) * 3 * self._pass(group)
                return self._simple("NORM", memory, sfu, nbytes, sfu_elements=3 * rows * cols, serial=True)
            if ins.op == "LNORM":  # per row four passes (the sum first)
                return self._simple("LNORM", memory, rows * 4 * self._pass(cols), nbytes, sfu_elements=4 * rows * cols,
                                    serial=True)
            return self._simple("ESCALE", memory, self._pass(rows * cols), nbytes, sfu_elements=rows * cols,
                                serial=True)
        if ins.op == "ROPE":  # per row: its cos and sin table rows, then the pairs (and any pass-through columns)
            half, head_dim = int(f["rotary_dim"]) // 2, int(f["head_dim"])
            sfu = self._pass(cols // head_dim * half) + (self._pass(cols) if 2 * half < head_dim else 0)
            return self._simple("ROPE", rows * 2 * self._seek(half * 4), rows * sfu, rows * half * 4 * 2,
                                sfu_elements=rows * cols, serial=True)
        if ins.op in ("ACT", "EMUL", "EADD", "WEIGH"):
            return self._simple(ins.op, 0.0, self._pass(rows * cols), 0, sfu_elements=rows * cols)
        if ins.op in ("SEND", "RECV"):  # int32 rows between an activation buffer and io, a row per burst, contiguous
            memory = self._seek(cols * 4, write=ins.op == "SEND") + (rows - 1) * self._move(cols * 4)
            return self._simple(ins.op, memory, 0.0, rows * cols * 4, serial=True)
        if ins.op == "SYNC":  # the cluster's time between segments is the link model's
            return Cost("SYNC", 0.0, 0.0, 0.0, 0)
        raise LlmcError(f"timing: no model for opcode {ins.op}")

    def _kv_row(self, kvh: int, d: int, skip: int) -> float:
        """Cycles of one KVAPP row whose codes start ``skip`` bytes into a word: the SFU quantises head after head
        while the port writes each word once the head holding its last byte is done (at least the transaction gap),
        then the row's scales."""
        if (kvh, d, skip) in self.kv_rows:
            return self.kv_rows[kvh, d, skip]
        key, width, head = (kvh, d, skip), kvh * d, self._quant8(d, d)
        finish, i = 0.0, 0
        while i < width:
            last = i + min(WORD_BYTES - skip, width - i) - 1
            finish = max(finish, (last // d + 1) * head) + self.word_cycles
            i, skip = last + 1, 0
        self.kv_rows[key] = max(finish, self.port.write_gap) + self._seek(kvh * 4, write=True)
        return self.kv_rows[key]

    def _simple(self, op: str, memory: float, compute: float, nbytes: int, sfu_elements: int = 0,
                serial: bool = False) -> Cost:
        """An instruction that moves ``memory`` cycles of words and computes ``compute`` cycles, one after
        the other (``serial``: the kernel's loops do both in turn) or without memory."""
        latency = self.latency if nbytes else 0
        busy = memory + compute if serial else max(memory, compute)
        return Cost(op, busy + latency + INSTR_OVERHEAD, memory, compute, nbytes, sfu_elements=sfu_elements)

    def _vector_words(self, ins: Instruction) -> int:
        """The words lane 0 reads of the vectors of ``ins`` (a reader of VECTORS)."""
        cols = int(ins.fields["cols"])
        return VECTORS[ins.op] * ceil(min(cols, vector_slice(cols, self.config.mm_lanes)) * 4 / WORD_BYTES)

    def _matmul(self, f: dict, shares: list[int], rows: int, ahead: float | None = None, next_words: int = 0,
                vector_words: int = 0) -> Cost:
        """An MM (one share of every row) or XMM (a share of rows per expert streamed): the input rows'
        quantisation, then one dataflow region per pass of ``row_block`` rows of a share. ``ahead``: when
        (from the instruction's start) the loaders had read this MM's first tiles during the one before;
        ``next_words``: the words of the next MM's first tile, read once the last pass's own tiles are, after
        ``vector_words`` of the vectors before it."""
        c = self.config
        n, k, group, flags = int(f["n"]), int(f["k"]), int(f["group"]), int(f["flags"])
        tiles, tile_bytes, row_block = int(f["tiles"]), int(f["tile_bytes"]), max(1, int(f["row_block"]))
        decoded = MmFlags.decode(flags)
        name, sparse = decoded.engine_name, decoded.sparse
        code_words = align(code_bytes(name, decoded.bits, c.mm_tile_n, k, sparse)) // WORD_BYTES
        part_words = tile_bytes // WORD_BYTES - code_words
        lane_tiles = ceil(tiles / c.mm_lanes)
        chunk = c.mac_chunk(decoded.bits)
        drain = 0
        if name != "dsp":  # a lane's unit takes unit_lanes blocks a beat, a group's last beat part full
            block = sparse[1] if sparse else c.lut_g
            beats = ceil(group // block / c.unit_lanes(block)) * (k // group)
            drain = c.unit_latency(name, decoded.bits)  # the last group's result, after its last beat
        quant = rows * self._quant8(k, k)
        tile_cycles = tile_bytes // WORD_BYTES * self.word_cycles
        cycles = compute = memory = loads_end = 0.0
        ready = float(quant)  # the first pass's lanes wait for the quantised rows, its loaders do not
        for share in shares:
            for first in range(0, share, row_block):
                block = min(row_block, share - first)
                if name == "dsp":  # the MAC array consumes the words as they come
                    streamed, after = part_words + c.mm_tile_n * ceil(k / chunk) * block, 0
                else:  # the buffer fills as the words come; the unit starts once a tile is in (ping-pong)
                    streamed, after = part_words + code_words, c.mm_tile_n * block * beats
                per_tile = streamed + after if name == "dsp" else after
                start = INSTR_OVERHEAD + cycles  # the pass's region, from the instruction's start
                if ahead is None:  # tile t's last word, from the region's start
                    arrivals = [self.latency + (t + 1) * tile_cycles + 1 for t in range(lane_tiles)]
                    loads_end = start + self.latency + lane_tiles * tile_cycles
                else:  # the first tile read during the MM before; the rest once the port is free
                    # a port still reading the tile ahead queues the next requests behind it
                    port = ahead - start if ahead > start else (self.latency if lane_tiles > 1 else 0)
                    arrivals = [ahead - start + 1] + [port + t * tile_cycles + 1 for t in range(1, lane_tiles)]
                    loads_end = start + port + (lane_tiles - 1) * tile_cycles
                done, filled = ready, 0.0
                for arrived in arrivals:  # a lane's tile ends after its compute and after its last word
                    if name == "dsp":
                        done = max(done + streamed, arrived)
                    else:
                        filled = max(filled + streamed, arrived)
                        done = max(done, filled + 1) + after
                cycles += done + drain
                compute += lane_tiles * per_tile
                memory += lane_tiles * tile_cycles
                ready, ahead = 0.0, None
        cycles = max(cycles, quant)
        vectors = loads_end + self.latency + vector_words * self.word_cycles if next_words else 0.0
        read_ahead = vectors + next_words * self.word_cycles if next_words else 0.0
        density = sparse[0] / sparse[1] if sparse else 1.0  # N:M sparse tiles skip the zeros
        passes = sum(ceil(share / row_block) for share in shares)
        return Cost("MM", cycles + INSTR_OVERHEAD, memory, compute, passes * tiles * tile_bytes,
                    macs=round(rows * n * k * density), sfu_elements=2 * rows * k,
                    layer=self.layer_names.get(int(f["weight_off"]), ""), ahead=read_ahead, vectors=vectors)

    def _attention(self, f: dict, rows: int, start_pos: int) -> Cost:
        """The query rows' int8 codes; per group of KV heads, their cache rows from the busiest KV channel into one
        half of a ping-pong buffer while the group before is scored: per query row and head the lanes' two passes
        over its visible keys and the SFU's sum over the lanes."""
        c = self.config
        heads, kvh, d, window = int(f["heads"]), int(f["kv_heads"]), int(f["head_dim"]), int(f["window"])
        s = start_pos + rows
        first = max(0, start_pos + 1 - window) if window else 0  # a sliding window reads only its rows
        busiest = ceil((s - first) / len(c.kv_channels))  # rows on the fullest KV channel
        steps = ceil(d / c.mm_tile_k)
        seen = [min(start_pos + t + 1, window) if window else start_pos + t + 1 for t in range(rows)]
        per_head = sum(2 * ceil(keys / c.mm_lanes) * steps for keys in seen) + rows * self._pass(d)
        loads, scores = [], []  # per group of heads loaded together: its loads, then its scoring
        for h0 in range(0, kvh, c.kv_group):  # their codes (and scales) lie side by side in a cache row
            g = min(c.kv_group, kvh - h0)
            codes, scales = self._rows(busiest, g * d, g == kvh), self._rows(busiest, g * 4, g == kvh)
            loads.append(self.latency + 2 * codes + 2 * scales)
            scores.append(g * (heads // kvh) * per_head)
        quant = rows * self._quant8(heads * d, d)
        overlapped = loads[0] + sum(max(load, score) for load, score in zip(loads[1:], scores)) + scores[-1]
        macs = 2 * heads * d * sum(seen)  # scores and weighted sum
        nbytes = 2 * (s - first) * kvh * (d + 4)
        return Cost("ATTN", quant + overlapped + INSTR_OVERHEAD, sum(loads), quant + sum(scores), nbytes, macs=macs,
                    sfu_elements=2 * rows * heads * d + 2 * heads * sum(seen))

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


SFU_ONLY = ("ACT", "EMUL", "EADD", "WEIGH", "ROUTE")  # instructions that leave the weight channels free
READS_LANE0 = ("NORM", "LNORM", "ESCALE", "ROPE")  # they read the weight channels (vectors; ROPE lane 0's tables)
VECTORS = {"NORM": 1, "LNORM": 2, "ESCALE": 1}  # readers of striped vectors: how many each reads


def next_matmul(program: Sequence[Instruction], at: int) -> Instruction | None:
    """The MM the weight loaders read ahead for after the instruction at ``at``: the next one, when only SFU
    instructions and readers of lane 0's channel lie between (the kernel's ``next_matmul``)."""
    for ins in program[at + 1:]:
        if ins.op == "MM":
            return ins
        if ins.op not in SFU_ONLY + READS_LANE0:
            return None
    return None


def vector_reader(program: Sequence[Instruction], at: int) -> int | None:
    """The first instruction between the MM at ``at`` and the one its loaders read ahead for that reads VECTORS
    (the kernel's ``vectors_between``), whose vectors they read first."""
    for j in range(at + 1, len(program)):
        if program[j].op == "MM":
            return None
        if program[j].op in VECTORS:
            return j
    return None


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
