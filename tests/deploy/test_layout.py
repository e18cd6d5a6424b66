"""The register map and buffer layout of the PYNQ device against what the compiler generated: the kernel's
C++ signature, connectivity.cfg, the XRT host's argument indices and the program's metadata."""

from __future__ import annotations

import re

import numpy as np
import pytest
from deploy_support import PROMPT

from llmc.backends.fpga.container import read_container
from llmc.backends.fpga.design import chunks
from llmc.deploy.layout import (
    COMPUTE_UNIT,
    MIN_BUFFER_BYTES,
    check_registers,
    io_regions,
    kernel_arguments,
    plan_buffers,
    pynq_memory,
    register_map,
)
from llmc.errors import LlmcError
from llmc.sim.image import ProjectImage
from llmc.sim.iss import IssDevice


def kernel_signature(source: str) -> list[tuple[str, str]]:
    """``(name, C type)`` of each argument of ``extern "C" void llmc_accel(...)``."""
    args = re.search(r'extern "C" void llmc_accel\((.*?)\)\s*\{', source, re.S)
    assert args is not None
    out = []
    for arg in args.group(1).split(","):
        ctype, name = arg.strip().rsplit(None, 1)
        out.append((name.lstrip("*"), ctype + ("*" if name.startswith("*") else "")))
    return out


@pytest.fixture(scope="module")
def image(projects) -> ProjectImage:
    return ProjectImage.load(projects["w4g128"])


def test_register_map_is_the_kernel_signature(projects, image):
    signature = kernel_signature((projects["w4g128"] / "kernel" / "llmc_accel.cpp").read_text())
    registers = register_map(image.config)
    assert [r.name for r in registers] == [name for name, _ in signature]
    assert [r.kind for r in registers] == ["m_axi" if ctype.endswith("*") else "scalar" for _, ctype in signature]
    host = (projects["w4g128"] / "host" / "host.cpp").read_text()
    assert {name: int(i) for name, i in re.findall(r"constexpr int (\w+) = (\d+);", host)} == \
        {r.name: r.index for r in registers}
    assert registers[0].offset == 0x10 and registers[1].offset == 0x1C  # after the four control words
    assert [b - a for a, b in zip([r.offset for r in registers], [r.offset for r in registers][1:])] == \
        [12 if r.kind == "m_axi" else 8 for r in registers[:-1]]


def test_banks_are_connectivity_cfg(projects, image):
    cfg = (projects["w4g128"] / "connectivity.cfg").read_text()
    assert f"nk=llmc_accel:1:{COMPUTE_UNIT}" in cfg.splitlines()
    banks = dict(re.findall(rf"^sp={COMPUTE_UNIT}\.(\w+):(\S+)$", cfg, re.M))
    registers = register_map(image.config)
    assert banks == {r.name: r.memory for r in registers if r.kind == "m_axi"}
    assert pynq_memory("HBM[31]") == "HBM31" and pynq_memory("DDR[0]") == "DDR0"


def test_buffers_hold_the_programs_sections(projects, image):
    project = projects["w4g128"]
    program, weights = read_container(project / "program.bin", "program"), read_container(project / "weights.bin", "weights")
    sizes = {b: len(program.sections[f"bucket_{b}"]) for b in image.config.buckets}
    lanes = [len(weights.sections[f"w{i}"]) for i in range(len(image.config.weight_channels))]
    plan = plan_buffers(image.config, sizes, lanes, program.metadata["kv_bytes_per_channel"], program.metadata["io_bytes"])
    by_name = {b.name: b for b in plan}
    banks = {r.name: r.memory for r in register_map(image.config)}
    assert all(b.memory == banks[b.port] for b in plan)
    assert {b.port for b in plan} == {name for name, bank in banks.items() if bank}
    for bucket, size in sizes.items():
        assert by_name[f"program.bucket_{bucket}"].size == max(size, MIN_BUFFER_BYTES)
    assert [by_name[f"w{i}"].size for i in range(len(lanes))] == [max(n, MIN_BUFFER_BYTES) for n in lanes]
    assert [by_name[f"kv{i}"].size for i in range(len(image.kv_bytes))] == \
        [max(n, MIN_BUFFER_BYTES) for n in image.kv_bytes]
    assert by_name["io"].size == image.io["io_bytes"] and by_name["w3"].source == "weights.bin:w3"
    with pytest.raises(LlmcError, match="weight and"):
        plan_buffers(image.config, sizes, lanes[:-1], image.kv_bytes, 4096)


def test_io_regions_are_where_the_simulator_exchanges_data(image):
    """After a call, the ISS's io bytes hold the ids and logits exactly where the card's would be read."""
    device = IssDevice(image)
    rows = 13
    logits = device.run(PROMPT[:rows])
    at = io_regions(image.io, rows)
    np.testing.assert_array_equal(device.iss.io[at["ids"]].view("<i4"), PROMPT[:rows])
    np.testing.assert_array_equal(device.iss.io[at["logits"]].view("<f4").reshape(rows, image.vocab), logits)
    assert at["positions"].stop - at["positions"].start == 4 * rows
    with pytest.raises(LlmcError, match="past the"):
        io_regions(image.io, max(image.config.buckets) + 1)


def test_chunks_follow_the_buckets(image):
    assert image.config.buckets == (1, 16, 64)
    assert list(chunks(20, image.bucket_for)) == [(64, 0, 20)]
    assert list(chunks(64 + 17, image.bucket_for)) == [(64, 0, 64), (64, 64, 17)]
    assert list(chunks(1, image.bucket_for)) == [(1, 0, 1)]


def test_kernel_arguments_in_register_order(image):
    registers = register_map(image.config)
    buffers = {r.name: f"buf:{r.name}" for r in registers if r.kind == "m_axi"}
    args = kernel_arguments(registers, buffers, "prog16", n_instr=120, seq_len=13, start_pos=7, first_instr=5)
    assert args[0] == "prog16" and args[1:-4] == [buffers[r.name] for r in registers[1:-4]]
    assert args[-4:] == [120, 13, 7, 5]


def xclbin_registers(image: ProjectImage) -> dict[str, dict]:
    """The registers as PYNQ's xclbin parser describes a kernel built from this project."""
    registers: dict[str, dict] = {"CTRL": {"address_offset": 0}}
    for r in register_map(image.config):
        registers[r.name] = {"address_offset": r.offset, "type": "void*" if r.kind == "m_axi" else "int"}
        if r.memory:
            registers[r.name]["memory"] = r.memory
    return registers


def test_xclbin_registers_are_checked(image):
    expected = register_map(image.config)
    check_registers(xclbin_registers(image), expected, "k.xclbin")
    moved = xclbin_registers(image)
    moved["w3"]["memory"] = "HBM[5]"
    with pytest.raises(LlmcError, match="w3 is connected to HBM.5., this program expects HBM.3."):
        check_registers(moved, expected, "k.xclbin")
    shifted = xclbin_registers(image)
    shifted["start_pos"]["address_offset"] += 4
    with pytest.raises(LlmcError, match="start_pos is at register offset"):
        check_registers(shifted, expected, "k.xclbin")
    other = xclbin_registers(image)
    del other["kv14"]
    with pytest.raises(LlmcError, match="are not this program's .*build the xclbin from this project"):
        check_registers(other, expected, "k.xclbin")
