"""The matrix engines' RTL units: configurations, the beats they read, and their rendered sources.

Two streaming units, Verilog rendered from ``llmc/hls_templates/rtl`` and used as Vitis HLS RTL black
boxes whose C++ models (``llmc_sparse_mac.h``, ``llmc_lut_mac.h``) are what C-simulation runs:

- ``sparse_mac``: the N:M sparse MAC chain (int8 or int4 weights, two int4 products per DSP48E2);
- ``lut_mac``: the LUT-mpGEMM lookup-accumulate unit (bit-planes of unsigned codes, zero point).

Both take one beat per cycle (``lanes`` blocks of activations with their weights) and return the exact
``sum x * (w - z)`` of a group when the beat flagged ``last`` closes it. A beat is one little-endian
integer: the fields in the order listed by :meth:`Unit.fields`, then the ``last`` bit on top.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from llmc.backends.fpga import pack
from llmc.backends.fpga.design import LUT_UNIT_LATENCY, AcceleratorConfig, chain_dsps
from llmc.templating import render, static_file

UNITS = ("sparse_mac", "lut_mac")
OUT_BITS = 32


@dataclass(frozen=True)
class Unit:
    """One configuration of a unit: ``kind`` is ``sparse_mac`` (``n``:``m``, ``bits`` 8 or 4) or ``lut_mac``
    (``g`` activations per table, ``bits`` 1..4 bit-planes, ``zero`` point input); ``lanes`` blocks (of ``m``,
    or of ``g``, activations) per beat."""

    kind: str
    bits: int
    lanes: int
    n: int = 0
    m: int = 0
    g: int = 0
    zero: bool = False

    @property
    def name(self) -> str:
        if self.kind == "sparse_mac":
            return f"llmc_sparse_mac_n{self.n}m{self.m}w{self.bits}l{self.lanes}"
        return f"llmc_lut_mac_g{self.g}b{self.bits}l{self.lanes}{'z' if self.zero else ''}"

    @property
    def block(self) -> int:
        """Activations per lane and beat."""
        return self.m if self.kind == "sparse_mac" else self.g

    @property
    def beat_activations(self) -> int:
        return self.lanes * self.block

    @property
    def code_range(self) -> tuple[int, int]:
        """The weight codes the unit takes: signed ``bits``-bit values (sparse chain) or unsigned ones (LUT)."""
        if self.kind == "sparse_mac":
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1

    def fields(self) -> list[tuple[str, int]]:
        """(name, bits) of the beat's fields, least significant first (``last`` follows)."""
        x = ("x", self.beat_activations * 8)
        if self.kind == "sparse_mac":
            slots = self.lanes * self.n
            out = [x, ("w", slots * self.bits)]
            return out if self.n == self.m else [*out, ("idx", slots * 4)]
        out = [x, ("planes", self.lanes * self.bits * self.g)]
        return [*out, ("zero", self.bits)] if self.zero else out

    def offset(self, field: str) -> int:
        """The bit where ``field`` starts in a beat (``last``: the top bit)."""
        at = 0
        for name, bits in self.fields():
            if name == field:
                return at
            at += bits
        if field == "last":
            return at
        raise KeyError(f"{self.name} has no beat field '{field}'")

    @property
    def beat_bits(self) -> int:
        """Width of a beat, ``last`` included."""
        return sum(bits for _, bits in self.fields()) + 1

    def to_json(self) -> dict:
        common = {"bits": self.bits, "lanes": self.lanes}
        if self.kind == "sparse_mac":
            return {"n": self.n, "m": self.m, **common}
        return {"g": self.g, **common, "zero": self.zero}


def make_unit(kind: str, config: dict) -> Unit:
    """A unit from its configuration dict (``sparse_mac``: n, m, bits, lanes; ``lut_mac``: g, bits, lanes,
    zero); a ``group`` entry (vector length for stimulus) is allowed and ignored. Refuses impossible ones."""
    if kind not in UNITS:
        raise ValueError(f"unknown RTL unit '{kind}' (expected one of {', '.join(UNITS)})")
    known = {"sparse_mac": {"n", "m", "bits", "lanes"}, "lut_mac": {"g", "bits", "lanes", "zero"}}[kind]
    extra = set(config) - known - {"group"}
    if extra:
        raise ValueError(f"{kind}: unknown configuration keys {sorted(extra)}")
    lanes = int(config.get("lanes", 1))
    if lanes < 1:
        raise ValueError(f"{kind}: lanes must be at least 1, got {lanes}")
    if kind == "sparse_mac":
        n, m, bits = int(config["n"]), int(config["m"]), int(config["bits"])
        if not 1 <= n <= m <= 16 or bits not in (4, 8):
            raise ValueError(f"sparse_mac needs 1 <= n <= m <= 16 and bits 4 or 8, got {n}:{m} int{bits}")
        return Unit(kind, bits, lanes, n=n, m=m)
    g, bits = int(config["g"]), int(config["bits"])
    if not 1 <= g <= 8 or not 1 <= bits <= 4:
        raise ValueError(f"lut_mac needs 1 <= g <= 8 and 1 <= bits <= 4, got g={g} bits={bits}")
    return Unit(kind, bits, lanes, g=g, zero=bool(config.get("zero", False)))


def design_units(config: AcceleratorConfig) -> list[Unit]:
    """The units a design instantiates in each matrix lane: the sparse chain for each stored weight width,
    the LUT unit for each code width, each taking ``mm_tile_k`` activations a beat (the lane's MAC width)."""
    units = []
    if config.sparse_n:
        for bits in sorted({pack.stored_bits(b) for b in config.weight_bits}, reverse=True):
            units.append(Unit("sparse_mac", bits, config.unit_lanes(config.sparse_m),
                              n=config.sparse_n, m=config.sparse_m))
    for bits in config.lut_bits:
        units.append(Unit("lut_mac", bits, config.unit_lanes(config.lut_g), g=config.lut_g, zero=True))
    return units


def unit_for(config: AcceleratorConfig, engine: str, bits: int) -> Unit | None:
    """The unit of ``config``'s lanes that runs an MM on ``engine`` ("sparse" or "lut") with ``bits``-bit codes: the
    chain of their stored width, or the LUT unit of their width (None: the design has none, as for "dsp")."""
    kind, width = {"sparse": ("sparse_mac", pack.stored_bits(bits)), "lut": ("lut_mac", bits)}.get(engine, ("", 0))
    return next((u for u in design_units(config) if u.kind == kind and u.bits == width), None)


def _bit_fields(values: np.ndarray, width: int) -> np.ndarray:
    """[R, F] integers -> [R, F * width] bits, each value least significant bit first."""
    v = values.astype(np.int64)[..., None] >> np.arange(width)
    return (v & 1).astype(np.uint8).reshape(values.shape[0], -1)


def beats(unit: Unit, x: np.ndarray, w: np.ndarray, zeros: np.ndarray | None) -> list[int]:
    """The beats that feed ``unit`` vectors ``x`` (int8 [V, L]) times codes ``w`` [V, L] (an N:M pattern for
    the sparse chain, unsigned codes for the LUT unit) with zero points ``zeros`` [V] (LUT unit with ``zero``),
    each vector one group of ``ceil(L / beat_activations)`` beats."""
    vectors, length = x.shape
    per = unit.beat_activations
    if w.shape != x.shape or length % unit.block or length == 0:
        raise ValueError(f"{unit.name}: x and w must be [V, L] with L a multiple of {unit.block}, got {x.shape}, "
                         f"{w.shape}")
    if length % per:  # the last beat of a group carries zero activations and zero codes past its end
        pad = ((0, 0), (0, per - length % per))
        x, w, length = np.pad(x, pad), np.pad(w, pad), length + per - length % per
    count = vectors * length // per
    fields = [_bit_fields(x.reshape(count, per), 8)]
    if unit.kind == "sparse_mac":
        values, index = pack.sparse_select(w.astype(np.int64).reshape(-1, unit.m), unit.n, unit.m)
        fields.append(_bit_fields(values.reshape(count, -1), unit.bits))
        if unit.n != unit.m:
            fields.append(_bit_fields(index.reshape(count, -1), 4))
    else:
        codes = w.astype(np.int64).reshape(count, unit.lanes, 1, unit.g)
        planes = (codes >> np.arange(unit.bits)[None, None, :, None]) & 1  # [beat, lane, plane, j]
        fields.append(planes.astype(np.uint8).reshape(count, -1))
        if unit.zero:
            assert zeros is not None
            fields.append(_bit_fields(np.repeat(zeros.astype(np.int64), length // per)[:, None], unit.bits))
    last = np.zeros((vectors, length // per), dtype=np.uint8)
    last[:, -1] = 1
    fields.append(last.reshape(count, 1))
    data = np.packbits(np.concatenate(fields, axis=1), axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in data]


def render_verilog(unit: Unit) -> str:
    """The unit's Verilog: the unit and its ``_hls`` stream wrapper (needs ``llmc_result_queue.v``)."""
    if unit.kind == "sparse_mac":
        return render("rtl/sparse_mac.v.j2", module=unit.name, n=unit.n, m=unit.m, bits=unit.bits, lanes=unit.lanes)
    adds = [(p, p & (p - 1), (p & -p).bit_length() - 1) for p in range(1, 1 << unit.g)]  # entry, entry - low bit, bit
    return render("rtl/lut_mac.v.j2", module=unit.name, g=unit.g, bits=unit.bits, lanes=unit.lanes, zero=unit.zero,
                  table_adds=adds)


def latency(unit: Unit) -> int:
    """Cycles from a group's last beat to its result (with out_ready high)."""
    if unit.kind == "sparse_mac":
        return chain_dsps(unit.lanes * unit.n, unit.bits) + 3
    return LUT_UNIT_LATENCY


def blackbox_json(unit: Unit, rtl_dir: str = "rtl") -> str:
    """The Vitis HLS RTL black-box description (``syn.blackbox.file`` / ``add_files -blackbox``) of the unit's
    ``_hls`` wrapper: its C++ model reads one group's beats from ``in`` a call and writes its result to ``out``; the
    RTL, free-running, takes group after group from the kernel's stream."""
    function = f"{unit.name}_hls"
    dsps = chain_dsps(unit.lanes * unit.n, unit.bits) if unit.kind == "sparse_mac" else 0
    description = {
        "c_function_name": function,
        "rtl_top_module_name": function,
        "c_files": [{"c_file": f"{rtl_dir}/{unit.name}.cpp", "cflag": "-I include"}],
        "rtl_files": [f"{rtl_dir}/{unit.name}.v", f"{rtl_dir}/llmc_result_queue.v"],
        "c_parameters": [
            {"c_name": "in", "c_port_direction": "in",
             "rtl_ports": {"FIFO_data_read_in": "in_dout", "FIFO_empty_flag": "in_empty_n",
                           "FIFO_read_enable": "in_read"}},
            {"c_name": "out", "c_port_direction": "out",
             "rtl_ports": {"FIFO_data_write_out": "out_din", "FIFO_full_flag": "out_full_n",
                           "FIFO_write_enable": "out_write"}},
        ],
        "rtl_common_signal": {"module_clock": "ap_clk", "module_reset": "ap_rst", "module_clock_enable": "",
                              "ap_ctrl_chain_protocol_idle": "", "ap_ctrl_chain_protocol_start": "",
                              "ap_ctrl_chain_protocol_ready": "", "ap_ctrl_chain_protocol_done": "",
                              "ap_ctrl_chain_protocol_continue": ""},
        "rtl_performance": {"latency": str(latency(unit)), "II": "1"},
        "rtl_resource_usage": {"FF": "0", "LUT": "0", "BRAM": "0", "URAM": "0", "DSP": str(dsps)},
    }
    return json.dumps(description, indent=2) + "\n"


def blackbox_cpp(unit: Unit) -> str:
    """The black box's C++ model: the ``_hls`` function over streams of beats (``llmc_*_mac.h``)."""
    return render("rtl/blackbox.cpp.j2", unit=unit, beat_bits=unit.beat_bits)


def rtl_files(config: AcceleratorConfig) -> dict[str, str]:
    """Project-relative path -> text of the design's RTL units, their black-box descriptions and C++ models."""
    units = design_units(config)
    if not units:
        return {}
    files = {"rtl/llmc_result_queue.v": static_file("rtl/llmc_result_queue.v")}
    for unit in units:
        files[f"rtl/{unit.name}.v"] = render_verilog(unit)
        files[f"rtl/{unit.name}.json"] = blackbox_json(unit)
        files[f"rtl/{unit.name}.cpp"] = blackbox_cpp(unit)
    return files
