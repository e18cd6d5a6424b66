"""The card's view of a compiled design: the kernel's register map and its buffers, as plain data.

Both come from :func:`llmc.backends.fpga.design.kernel_ports`, the list the kernel signature and
``connectivity.cfg`` are rendered from, and from the program's metadata (bucket programs, weight
channels, KV bytes per channel, io and mail bytes). The PYNQ device allocates and fills what
:func:`plan_buffers` lists and checks the xclbin's registers against :func:`register_map`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from llmc.backends.fpga.design import AcceleratorConfig, kernel_ports
from llmc.errors import LlmcError

# Vitis HLS s_axilite layout: control, global interrupt enable, IP interrupt enable and status
# words come first; a pointer takes a low, a high and a reserved word; a scalar a value and a reserved word.
FIRST_ARGUMENT = 0x10
POINTER_STRIDE = 12
SCALAR_STRIDE = 8
MIN_BUFFER_BYTES = 4096  # XRT refuses empty buffers (the XRT host uses the same floor)
COMPUTE_UNIT = "llmc_accel_1"  # the instance connectivity.cfg creates (nk=llmc_accel:1:llmc_accel_1)

T = TypeVar("T")


@dataclass(frozen=True)
class Register:
    """One kernel argument in the control interface: its position, name, kind and byte offset; the
    memory bank an m_axi argument's buffer must live in."""

    index: int
    name: str
    kind: str  # "m_axi" or "scalar"
    offset: int
    memory: str = ""


@dataclass(frozen=True)
class Buffer:
    """One device buffer: the argument it is passed as, its bank, its size and what fills it
    (``program.bin:bucket_16``, ``weights.bin:w3``, or ``zeros``)."""

    name: str
    port: str
    memory: str
    size: int
    source: str


def register_map(config: AcceleratorConfig) -> list[Register]:
    """The arguments of ``llmc_accel`` in signature order with their register offsets."""
    registers, offset = [], FIRST_ARGUMENT
    for index, port in enumerate(kernel_ports(config)):
        registers.append(Register(index, port.name, port.kind, offset, port.memory))
        offset += POINTER_STRIDE if port.kind == "m_axi" else SCALAR_STRIDE
    return registers


def plan_buffers(config: AcceleratorConfig, program_bytes: Mapping[int, int], weight_bytes: list[int],
                 kv_bytes: list[int], io_bytes: int) -> list[Buffer]:
    """Every buffer the card needs: one program per bucket (all passed as ``program``, one at a
    time), the weight channels' sections, the KV channels (zeroed) and the io buffer of ``io_bytes``
    (:func:`io_buffer_bytes`: a cluster card's mail region included)."""
    memory = {p.name: p.memory for p in kernel_ports(config)}
    if len(weight_bytes) != len(config.weight_channels) or len(kv_bytes) != len(config.kv_channels):
        raise LlmcError(f"the program has {len(weight_bytes)} weight and {len(kv_bytes)} KV channels, the design "
                        f"{len(config.weight_channels)} and {len(config.kv_channels)}")
    plan = [Buffer(f"program.bucket_{b}", "program", memory["program"], _size(n), f"program.bin:bucket_{b}")
            for b, n in sorted(program_bytes.items())]
    plan += [Buffer(f"w{i}", f"w{i}", memory[f"w{i}"], _size(n), f"weights.bin:w{i}") for i, n in enumerate(weight_bytes)]
    plan += [Buffer(f"kv{i}", f"kv{i}", memory[f"kv{i}"], _size(n), "zeros") for i, n in enumerate(kv_bytes)]
    plan.append(Buffer("io", "io", memory["io"], _size(io_bytes), "zeros"))
    return plan


def _size(nbytes: int) -> int:
    return max(int(nbytes), MIN_BUFFER_BYTES)


def pynq_memory(bank: str) -> str:
    """The attribute of a PYNQ overlay for a connectivity bank: ``HBM[3]`` -> ``HBM3``."""
    return re.sub("[^A-Za-z0-9_]", "", bank)


def check_registers(found: Mapping[str, Mapping], expected: list[Register], where: str) -> None:
    """Compare the registers an xclbin declares (PYNQ's ``ip_dict[cu]["registers"]``) with the
    program's: the same arguments in the same order at the same offsets, m_axi ones in the same banks."""
    args = sorted(((name, r) for name, r in found.items() if name != "CTRL"), key=lambda kv: int(kv[1]["address_offset"]))
    names = [name for name, _ in args]
    if names != [r.name for r in expected]:
        raise LlmcError(f"{where}: the kernel's arguments ({_brief(names)}) are not this program's "
                        f"({_brief([r.name for r in expected])}): build the xclbin from this project")
    for (name, reg), want in zip(args, expected):
        if int(reg["address_offset"]) != want.offset:
            raise LlmcError(f"{where}: argument {name} is at register offset {int(reg['address_offset']):#x}, "
                            f"expected {want.offset:#x}")
        bank = reg.get("memory")
        if want.kind == "m_axi" and bank is not None and bank != want.memory:
            raise LlmcError(f"{where}: argument {name} is connected to {bank}, this program expects {want.memory} "
                            "(connectivity.cfg)")


def _brief(names: list[str]) -> str:
    return ", ".join(names) if len(names) <= 6 else ", ".join([*names[:3], "...", *names[-3:]]) + f"; {len(names)}"


def io_buffer_bytes(io: Mapping[str, int]) -> int:
    """The io buffer's size: the bytes the kernel keeps on chip, then a cluster card's mail region."""
    return int(io["io_bytes"]) + int(io.get("mail_bytes", 0))


def io_span(io: Mapping[str, int], at: int, nbytes: int) -> slice:
    """The bytes ``at``..``at + nbytes`` of the io buffer, checked to lie inside it."""
    size = io_buffer_bytes(io)
    if at < 0 or nbytes < 0 or at + nbytes > size:
        raise LlmcError(f"io: {nbytes} bytes at byte {at} are outside the {size}-byte buffer")
    return slice(at, at + nbytes)


def io_regions(io: Mapping[str, int], rows: int) -> dict[str, slice]:
    """Byte ranges of the io buffer for a call of ``rows`` rows: token ids and positions in (int32
    each), logits out (``vocab`` float32 per row)."""
    vocab = int(io["vocab"])
    regions = {"ids": (int(io["ids_offset"]), 4 * rows), "positions": (int(io["pos_offset"]), 4 * rows),
               "logits": (int(io["logits_offset"]), 4 * rows * vocab)}
    for name, (at, size) in regions.items():
        if at + size > int(io["io_bytes"]):
            raise LlmcError(f"io: {rows} rows of {name} end at byte {at + size}, past the {io['io_bytes']}-byte buffer")
    return {name: slice(at, at + size) for name, (at, size) in regions.items()}


def kernel_arguments(registers: list[Register], buffers: Mapping[str, T], program: T, n_instr: int, seq_len: int,
                     start_pos: int, first_instr: int) -> list[T | int]:
    """The values of one call in register order: ``program`` for the program port, ``buffers`` by
    port name for the other pointers, then the scalars (``first_instr``: the instruction the call starts at)."""
    scalars = {"n_instr": n_instr, "seq_len": seq_len, "start_pos": start_pos, "first_instr": first_instr}
    values: list[T | int] = []
    for r in registers:
        if r.kind == "m_axi":
            values.append(program if r.name == "program" else buffers[r.name])
        elif r.name in scalars:
            values.append(scalars[r.name])
        else:
            raise LlmcError(f"kernel argument {r.name}: no value for this scalar")
    return values
