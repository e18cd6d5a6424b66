"""Kernel sources of a compiled design: the top kernel, its header, the arithmetic headers, the RTL
units with their black-box descriptions and the C-simulation test bench, rendered from ``llmc/hls_templates``."""

from __future__ import annotations

from dataclasses import asdict
from math import ceil

from llmc.backends.fpga import pack
from llmc.backends.fpga.cformat import render_tables
from llmc.backends.fpga.compile import Compiled
from llmc.backends.fpga.design import (
    READ_BURST,
    READS_OUTSTANDING,
    WRITE_BURST,
    WRITES_OUTSTANDING,
    AcceleratorConfig,
    kernel_ports,
)
from llmc.backends.fpga.isa import OPCODES, kernel_constants
from llmc.backends.fpga.memory import WORD_BYTES
from llmc.backends.fpga.timing import INSTR_OVERHEAD, READS_LANE0, SFU_ONLY, TimingModel
from llmc.backends.fpga.units import design_units, latency, rtl_files
from llmc.ir.graph import Module
from llmc.templating import render, static_file

STATIC_HEADERS = ("llmc_cycles.h", "llmc_math.h", "llmc_mem.h", "llmc_sparse_mac.h", "llmc_lut_mac.h")
KERNEL_SOURCES = ("kernel/llmc_accel.cpp",)


def kernel_context(name: str, module: Module, compiled: Compiled, timing: TimingModel) -> dict:
    config = compiled.config
    ports = kernel_ports(config)
    step = module.functions["step"]
    attn = [n for n in step.nodes if n.op == "hw_attention"]
    matmuls = [n for n in step.nodes if n.op == "hw_matmul"]
    io_memory_bytes = compiled.io["io_bytes"] + compiled.io.get("mail_bytes", 0)  # a cluster card's mail after io
    max_groups = max((n.inputs[1].type.shape[1].value // n.attrs["group"] for n in matmuls), default=1)
    units = design_units(config)
    return {
        "name": name,
        "config": config.to_json(),
        "ports": [asdict(p) for p in ports],
        "weight_ports": [p.name for p in ports if p.kind == "m_axi" and p.name.startswith("w")],
        "kv_ports": [p.name for p in ports if p.kind == "m_axi" and p.name.startswith("kv")],
        "buffers": max(compiled.buffers, 1),
        "max_tile_bytes": max(compiled.max_tile_bytes, 64),
        "max_groups": max_groups,
        "max_sum_groups": max((n.inputs[0].type.shape[1].value // n.attrs["group"] for n in step.nodes
                               if n.op in ("hw_matmul", "hw_expert_matmul") and n.attrs.get("has_min", False)), default=1),
        "max_head_dim": max((n.attrs["head_dim"] for n in attn), default=1),
        "max_heads": max((n.attrs["heads"] for n in attn), default=1),
        "io": compiled.io,
        "io_memory_bytes": io_memory_bytes,
        "kv_bytes": compiled.kv_bytes,
        "buckets": list(config.buckets),
        "units": units,
        "unit_latency": {u.name: latency(u) for u in units},
        "opcodes": {name: number for name, (number, _, _) in OPCODES.items()},
        "constants": kernel_constants(),
        "account": cycle_account_constants(timing),
        "trips": loop_trips(config, max(compiled.max_tile_bytes, 64), max_groups, io_memory_bytes),
        "sfu_only": SFU_ONLY,
        "reads_lane0": READS_LANE0,
        "axi": {"read_burst": READ_BURST, "reads": READS_OUTSTANDING, "write_burst": WRITE_BURST,
                "writes": WRITES_OUTSTANDING},
    }


def loop_trips(config: AcceleratorConfig, max_tile_bytes: int, max_groups: int, io_memory_bytes: int) -> dict[str, int]:
    """The most iterations of each kind of pipelined loop in the kernel (``LLMC_TRIP_*``, its LOOP_TRIPCOUNT
    pragmas), from the design's bounds: a unit's beats of a group, a tile's words, a lane's slice of a vector in
    words, a block's rows, a tile row's groups, an attention head in MAC chunks and in SFU passes, a row and a
    block of rows in SFU passes, a row's elements, a head's, and a transfer's words (io, or two rows of f32)."""
    hidden, head = config.max_hidden, max(config.max_head_dim, 1)
    return {"BEATS": ceil(hidden / config.mm_tile_k), "TILE_WORDS": ceil(max_tile_bytes / WORD_BYTES),
            "VECTOR_WORDS": ceil(pack.vector_slice(hidden, config.mm_lanes) / 16), "ROWS": config.max_rows,
            "GROUPS": max_groups, "HEAD_CHUNKS": ceil(head / config.mm_tile_k), "HEAD_SFU": ceil(head / config.sfu_lanes),
            "SFU": ceil(hidden / config.sfu_lanes), "SFU_ROWS": ceil(config.max_rows * hidden / config.sfu_lanes),
            "HIDDEN": hidden, "HEAD_DIM": head,
            "TRANSFER": ceil(max(io_memory_bytes, 8 * hidden) / WORD_BYTES) + 1}


def cycle_account_constants(timing: TimingModel) -> dict:
    """What C-simulation's cycle account charges for memory and control: the timing model's port rate,
    first-request latency and per-instruction fetch and decode."""
    port = timing.port
    return {"word_cycles": port.word_cycles, "word_bytes": port.bytes_per_cycle,
            "word_extra_q16": round((port.word_cycles - 1.0) * 65536), "latency": port.latency,
            "read_gap": port.read_gap, "write_gap": port.write_gap,
            "read_gap_q16": round(port.read_gap * 65536), "write_gap_q16": round(port.write_gap * 65536),
            "instr_depth": INSTR_OVERHEAD}


def kernel_files(name: str, module: Module, compiled: Compiled, timing: TimingModel) -> dict[str, str]:
    """Project-relative path -> text of every kernel, RTL and test-bench source."""
    ctx = kernel_context(name, module, compiled, timing)
    files = {f"include/{h}": static_file(f"include/{h}") for h in STATIC_HEADERS}
    files["include/llmc_tables.h"] = render_tables()
    files["include/llmc_accel.h"] = render("kernel/llmc_accel.h.j2", **ctx)
    files["kernel/llmc_accel.cpp"] = render("kernel/llmc_accel.cpp.j2", **ctx)
    files["csim/csim_main.cpp"] = render("csim/csim_main.cpp.j2", **ctx)
    files.update(rtl_files(compiled.config))
    return files
