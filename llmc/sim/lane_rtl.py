"""One matrix lane of an MM instruction in RTL, memory side included: ``rtl/llmc_lane_mm.v.j2`` puts the lane's
AXI4 read master (``llmc_lane_reader``), a ping-pong tile buffer, the walk and beat former of the kernel's
``feed_lane`` and the lane's unit (``lut_mac`` or the ``sparse_mac`` chain) together; the bench
(``cocotb_benches/lane_bench.py``) runs it against cocotbext-axi's AXI RAM holding the lane's tiles at their
addresses, with the board's round trip and port rate as :mod:`llmc.sim.axi_mem` sets them, under Icarus Verilog or
Verilator.

:func:`image_job` takes the lane's share of an MM of a compiled project (its tiles from the weight image, as the
ISS reads them), :func:`scaled_job` packs random tiles of a wider layer with :mod:`llmc.backends.fpga.pack`.
:func:`run_lane` checks every group product against :func:`llmc.sim.rtl.golden` (``sum x * (w - z)`` of the tile's
own codes) and returns the cycles from the lane's start to its last result; :func:`modelled` is the timing
model's cycles for the same lane (like for like: see its docstring).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from math import ceil, gcd

import numpy as np

from llmc.backends.fpga import pack, units
from llmc.backends.fpga.design import READ_BURST, READS_OUTSTANDING, WORD_BITS, AcceleratorConfig
from llmc.backends.fpga.isa import MmFlags, mm_flags
from llmc.backends.fpga.memory import WORD_BYTES, PortTiming
from llmc.backends.fpga.timing import INSTR_OVERHEAD, TimingModel
from llmc.errors import LlmcError
from llmc.sim.axi_mem import RAM_CYCLES
from llmc.sim.rtl import SIMULATORS, Bench, RtlSimError, build_bench, golden, run_bench
from llmc.templating import render, static_file

LANE_BENCH = Bench("llmc_lane_bench", "llmc.sim.cocotb_benches.lane_bench")


@dataclass(frozen=True)
class LaneJob:
    """One lane's share of an MM: the instruction's ``fields``, the lane's ``tiles`` (bytes, in the order the lane
    reads them, the first at ``base`` on its channel, the next ones back to back) and the int8 activation rows
    ``x`` [rows, k]."""

    config: AcceleratorConfig
    fields: dict
    lane: int
    base: int
    tiles: tuple[bytes, ...]
    x: np.ndarray
    label: str = ""

    @property
    def flags(self) -> MmFlags:
        return MmFlags.decode(int(self.fields["flags"]))

    @property
    def rows(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class LaneResult:
    """One lane run: its cycles against the timing model's, the group products compared."""

    label: str
    simulator: str
    tiles: int
    rows: int
    cycles: int
    modelled: float
    compared: int
    mismatches: int
    seconds: float

    @property
    def ratio(self) -> float:
        return self.cycles / self.modelled


def lane_unit(config: AcceleratorConfig, flags: MmFlags) -> units.Unit:
    """The unit of ``config``'s lanes that computes an MM with ``flags`` (the kernel's ``serve_lane`` choice)."""
    unit = units.unit_for(config, flags.engine_name, flags.bits)
    if unit is not None:
        return unit
    raise LlmcError(f"the design has no RTL unit for a {flags.engine_name} MM of {flags.bits}-bit codes")


def image_job(image: object, index: int, *, bucket: int = 1, lane: int = 0, rows: int = 1, seed: int = 0) -> LaneJob:
    """Lane ``lane``'s share of the MM at ``index`` of ``image``'s (:class:`~llmc.sim.image.ProjectImage`) program for
    ``bucket``: tiles ``lane, lane + lanes, ...`` read from its weight channel, and ``rows`` random int8 rows."""
    ins = image.programs[bucket][index]  # type: ignore[attr-defined]
    if ins.op != "MM":
        raise LlmcError(f"instruction {index} of bucket {bucket} is {ins.op}, not MM")
    config: AcceleratorConfig = image.config  # type: ignore[attr-defined]
    f = ins.fields
    lanes = config.mm_lanes
    tile_bytes, tiles = int(f["tile_bytes"]), int(f["tiles"])
    channel = image.lanes[lane]  # type: ignore[attr-defined]
    base = int(f["weight_off"])
    own = range(lane, tiles, lanes)
    data = tuple(channel[base + i * tile_bytes:base + (i + 1) * tile_bytes].tobytes() for i in range(len(own)))
    if not data or any(len(t) != tile_bytes for t in data):
        raise LlmcError(f"MM {index}: lane {lane} has no whole tiles on its channel")
    x = np.random.default_rng(seed).integers(-128, 128, (rows, int(f["k"])), dtype=np.int64)
    return LaneJob(config, dict(f), lane, base, data, x, label=f"MM {index}")


def scaled_job(config: AcceleratorConfig, engine: str, bits: int, k: int, group: int, lane_tiles: int, *,
               rows: int = 1, base: int = 4096, seed: int = 0) -> LaneJob:
    """Lane 0's share of a layer of ``lane_tiles x mm_lanes`` tiles of random codes (``engine`` ``lut``: unsigned
    ``bits``-bit codes with int16 zero points; ``sparse``: the design's N:M pattern of signed codes), packed by
    :func:`llmc.backends.fpga.pack.pack_tile` with int32 scales, lane 0's first tile at ``base``."""
    rng = np.random.default_rng(seed)
    tile_n, groups = config.mm_tile_n, k // group
    sparse = (config.sparse_n, config.sparse_m) if engine == "sparse" else None
    has_zero = engine == "lut"
    layout = pack.tile_layout(engine, bits, tile_n, k, groups, has_zero, False, sparse)
    tiles = []
    for _ in range(lane_tiles):
        if engine == "lut":
            codes = rng.integers(0, 1 << bits, (tile_n, k))
            zeros = rng.integers(0, 1 << bits, (tile_n, groups))
        else:
            n, m = sparse  # type: ignore[misc]
            lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
            keep = rng.random((tile_n, k // m, m)).argsort(axis=-1).argsort(axis=-1) < n
            codes = np.where(keep.reshape(tile_n, k), rng.integers(lo, hi + 1, (tile_n, k)), 0)
            zeros = None
        scales = rng.integers(1, 1 << 16, (tile_n, groups)).astype(np.int32)
        tiles.append(pack.pack_tile(codes, scales, zeros, None, layout, engine, bits, sparse))
    flags = mm_flags(bits, engine, has_zero, False, engine == "lut", sparse, False)
    fields = {"n": lane_tiles * config.mm_lanes * tile_n, "k": k, "group": group, "flags": flags,
              "tiles": lane_tiles * config.mm_lanes, "tile_bytes": layout["size"], "row_block": max(rows, 1),
              "weight_off": base, "shift": 0}
    x = rng.integers(-128, 128, (rows, k), dtype=np.int64)
    return LaneJob(config, fields, 0, base, tuple(tiles), x,
                   label=f"scaled {engine} W{bits} k={k}, {lane_tiles} tiles a lane")


@dataclass(frozen=True)
class _Field:
    """A beat field's slice of the tile: ``width`` bits at bit ``base + j * per_j + g * per_g + beat * per_beat``."""

    name: str
    width: int
    base: int
    per_j: int
    per_g: int
    per_beat: int
    lo: int = 0
    words: int = 0
    bank_bits: int = 1
    align_bits: int = 0
    sel_bits: int = 0


def _geometry(job: LaneJob, unit: units.Unit) -> dict:
    """The template's context: the tile's shape and where each beat field lies in it."""
    c, f, flags = job.config, job.fields, job.flags
    tile_n, k, group = c.mm_tile_n, int(f["k"]), int(f["group"])
    groups, per = k // group, unit.beat_activations
    bpg = ceil(group / per)
    tile_bytes = int(f["tile_bytes"])
    layout = pack.tile_layout(flags.engine_name, flags.bits, tile_n, k, groups, flags.has_zero, flags.has_bias,
                              flags.sparse, flags.half_scales, flags.has_min)
    if layout["size"] != tile_bytes or tile_bytes % WORD_BYTES:
        raise LlmcError(f"{job.label}: tile_bytes {tile_bytes} is not the layout's {layout['size']} in whole words")
    if unit.kind == "lut_mac":
        specs = [_Field(f"plane{b}", per, b * tile_n * k, k, group, per) for b in range(unit.bits)]
        if flags.has_zero:
            specs.append(_Field("zero", unit.bits, layout["zeros"] * 8, groups * 16, 16, 0))
    else:
        n, m, stored = unit.n, unit.m, unit.bits
        kept = tile_n * (k // m) * n
        specs = [_Field("values", unit.lanes * n * stored, 0, k // m * n * stored, group // m * n * stored,
                        unit.lanes * n * stored)]
        if n != m:
            specs.append(_Field("index", unit.lanes * n * 4, kept * stored, k // m * n * 4, group // m * n * 4,
                                unit.lanes * n * 4))
    words = tile_bytes // WORD_BYTES
    fields = [_place(spec, tile_n, groups, bpg, words, job.label) for spec in specs]
    entries = job.rows * groups * bpg
    return {"tile_n": tile_n, "k": k, "group": group, "groups": groups, "bpg": bpg, "rows": job.rows,
            "beat_activations": per, "tile_bytes": tile_bytes, "tile_words": words,
            "fill_bits": max(1, (words - 1).bit_length()), "act_bits": max(1, (entries - 1).bit_length()),
            "per_tile": tile_n * job.rows * groups, "zeros_at": layout.get("zeros", 0), "has_zero": flags.has_zero,
            "has_bias": flags.has_bias, "unit": unit, "fields": fields}


def _place(spec: _Field, tile_n: int, groups: int, bpg: int, words: int, label: str) -> _Field:
    """``spec`` with the tile words its slices come from and the alignment of their offsets in a word; refuses a
    slice that crosses a word."""
    offsets = [spec.base + j * spec.per_j + g * spec.per_g + b * spec.per_beat
               for j in range(tile_n) for g in range(groups) for b in range(bpg)]
    align = WORD_BITS
    for at in offsets:
        if at % WORD_BITS + spec.width > WORD_BITS:
            raise LlmcError(f"{label}: a beat's {spec.name} slice crosses a tile word (bit {at}, {spec.width} wide)")
        align = gcd(align, at % WORD_BITS)
    lo, hi = min(offsets) // WORD_BITS, max(offsets) // WORD_BITS
    if hi >= words:
        raise LlmcError(f"{label}: the {spec.name} slices run past the tile")
    align_bits = align.bit_length() - 1  # align divides 512: a power of two
    return replace(spec, lo=lo, words=hi - lo + 1, bank_bits=max(1, (hi - lo).bit_length()), align_bits=align_bits,
                   sel_bits=9 - align_bits)


def sources(job: LaneJob, *, stall: bool = False) -> dict[str, str]:
    """File name -> Verilog of the lane bench: the unit, its result queue, the reader, the lane, the request
    delay and the harness. ``stall``: a beat former that idles a cycle after every beat (a mutant)."""
    unit = lane_unit(job.config, job.flags)
    context = _geometry(job, unit)
    return {
        f"{unit.name}.v": units.render_verilog(unit),
        "llmc_result_queue.v": static_file("rtl/llmc_result_queue.v"),
        "llmc_lane_reader.v": static_file("rtl/llmc_lane_reader.v"),
        "llmc_ar_delay.v": static_file("rtl/llmc_ar_delay.v"),
        "llmc_lane_mm.v": render("rtl/llmc_lane_mm.v.j2", stall=stall, **context),
        "llmc_lane_bench.v": render("rtl/llmc_lane_bench.v.j2", **context),
    }


def expected(job: LaneJob) -> np.ndarray:
    """Every group product of the lane in the walk's order (tile, tile row j, activation row, group): ``sum x * (w -
    z)`` of the tile's own codes and zero points (:func:`llmc.sim.rtl.golden`)."""
    c, f, flags = job.config, job.fields, job.flags
    tile_n, k, group = c.mm_tile_n, int(f["k"]), int(f["group"])
    groups = k // group
    layout = pack.tile_layout(flags.engine_name, flags.bits, tile_n, k, groups, flags.has_zero, flags.has_bias,
                              flags.sparse, flags.half_scales, flags.has_min)
    end = pack.code_bytes(flags.engine_name, flags.bits, tile_n, k, flags.sparse)
    xs = job.x.reshape(job.rows, groups, group)
    out = []
    for tile in job.tiles:
        codes = pack.unpack_codes(tile[:end], tile_n, k, flags.engine_name, flags.bits, not flags.unsigned,
                                  flags.sparse).reshape(tile_n, groups, group)
        zeros = np.zeros((tile_n, groups), dtype=np.int64)
        if flags.has_zero:
            at = layout["zeros"]
            zeros = np.frombuffer(tile[at:at + tile_n * groups * 2], "<i2").astype(np.int64).reshape(tile_n, groups)
        x = np.broadcast_to(xs[None], (tile_n, job.rows, groups, group)).reshape(-1, group)
        w = np.broadcast_to(codes[:, None], (tile_n, job.rows, groups, group)).reshape(-1, group)
        z = np.broadcast_to(zeros[:, None], (tile_n, job.rows, groups)).reshape(-1)
        out.append(golden(x, w, z))
    return np.concatenate(out)


def activations(job: LaneJob, per: int) -> list[int]:
    """The activation RAM's entries: row r, group g, beat b at (r * groups + g) * beats + b, ``per`` int8 values
    each (little endian), zero past the group's end."""
    group = int(job.fields["group"])
    groups, bpg = int(job.fields["k"]) // group, ceil(group / per)
    out = []
    for row in job.x:
        for g in range(groups):
            part = np.zeros(bpg * per, dtype=np.int64)
            part[:group] = row[g * group:(g + 1) * group]
            for b in range(bpg):
                out.append(int.from_bytes((part[b * per:(b + 1) * per] & 0xFF).astype(np.uint8).tobytes(), "little"))
    return out


def modelled(model: TimingModel, job: LaneJob) -> float:
    """The timing model's cycles for the lane's share of the MM, like for like with :func:`run_lane`: the MM's cost
    (``TimingModel._matmul``, the slowest lane: ``ceil(tiles / lanes)`` tiles, as lane 0 has) less its
    ``INSTR_OVERHEAD`` of fetch and decode, from the region's start (the first request) to the last result (the
    last beat's cycle and the unit's latency);
    the rows' quantisation on the SFU ends before the first tile is in (checked), so the unit never waits for it,
    and the RTL lane has its activations before it starts. The MM is timed as the only one in flight (no tile read ahead)."""
    f = job.fields
    if ceil(int(f["tiles"]) / job.config.mm_lanes) != len(job.tiles):
        raise LlmcError(f"{job.label}: the lane holds {len(job.tiles)} tiles, the slowest lane "
                        f"{ceil(int(f['tiles']) / job.config.mm_lanes)}")
    if job.rows > max(1, int(f["row_block"])):
        raise LlmcError(f"{job.label}: {job.rows} rows take more than one pass of {f['row_block']}")
    quant = job.rows * model._quant8(int(f["k"]), int(f["k"]))
    if quant > model.latency + int(f["tile_bytes"]) // WORD_BYTES * model.word_cycles + 1:
        raise LlmcError(f"{job.label}: the quantisation ({quant} cycles) outlasts the first tile's load")
    return model._matmul(f, [job.rows], job.rows).cycles - INSTR_OVERHEAD


def run_lane(job: LaneJob, port: PortTiming, simulator: str, timeout_s: float, *,
             outstanding: int = READS_OUTSTANDING, stall: bool = False) -> tuple[int, np.ndarray]:
    """Run the lane on ``simulator`` with ``port``'s round trip and word rate, ``outstanding`` bursts in flight (the
    design's by default; fewer: a mutant), the slow beat former when ``stall``; the cycles from the start to the last
    result and the results. Raises :class:`RtlSimError` when it does not finish."""
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator '{simulator}' (expected one of {', '.join(SIMULATORS)})")
    start = time.monotonic()
    unit = lane_unit(job.config, job.flags)
    files = sources(job, stall=stall)
    parameters = {"BURST": READ_BURST, "OUTSTANDING": outstanding, "LATENCY": max(0, port.latency - RAM_CYCLES)}
    build = build_bench(LANE_BENCH, "lane-bench", files, simulator, timeout_s, parameters)
    want = expected(job)
    tile_bytes = int(job.fields["tile_bytes"])
    end = job.base + len(job.tiles) * tile_bytes
    words = len(job.tiles) * tile_bytes // WORD_BYTES
    beats = len(want) * ceil(int(job.fields["group"]) / unit.beat_activations)
    spec = {"memory_bytes": -(-end // 4096) * 4096, "base": job.base, "tiles": len(job.tiles),
            "data": b"".join(job.tiles).hex(), "acts": activations(job, unit.beat_activations),
            "act_width": unit.beat_activations * 8, "results": len(want), "word_cycles": port.word_cycles,
            "max_cycles": int(4 * (port.latency * len(job.tiles) + words * port.word_cycles + 2 * beats)) + 1000}
    what = f"lane bench ({job.label}) on {simulator}"
    remaining = max(1.0, timeout_s - (time.monotonic() - start))
    outcome = run_bench(LANE_BENCH, build, simulator, spec, what, remaining, timeout_s)
    got = np.asarray(outcome["outputs"], dtype=np.int64)
    if outcome["status"] != "ok":
        raise RtlSimError(f"{what}: hung after {outcome['waited']} cycles ({len(got)} of {len(want)} results)")
    return int(outcome["cycles"]), got


def compare(job: LaneJob, model: TimingModel, simulator: str, timeout_s: float, **mutant: object) -> LaneResult:
    """:func:`run_lane` with the model's port, its results checked against :func:`expected` and its cycles set
    beside :func:`modelled`."""
    start = time.monotonic()
    cycles, got = run_lane(job, model.port, simulator, timeout_s, **mutant)  # type: ignore[arg-type]
    want = expected(job)
    common = min(len(got), len(want))
    mismatches = int((got[:common] != want[:common]).sum()) + abs(len(got) - len(want))
    return LaneResult(job.label, simulator, len(job.tiles), job.rows, cycles, modelled(model, job), len(want),
                      mismatches, time.monotonic() - start)
