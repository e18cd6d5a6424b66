"""The instruction encoding round-trips, refuses bad fields, and docs/isa.md shows the current table."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmc.backends.fpga.isa import (
    ENGINES,
    FLOAT_FIELDS,
    MM_FLAGS,
    OPCODES,
    Instruction,
    MmFlags,
    decode,
    decode_program,
    encode_program,
    kernel_constants,
    markdown_table,
    mm_flags,
)
from llmc.errors import LlmcError


def test_every_opcode_round_trips():
    program = []
    for i, (name, (_, fields, _)) in enumerate(OPCODES.items()):
        values = {f: (0.125 if f in FLOAT_FIELDS else (7 * i + j) * 1000003 % (1 << 32)) for j, f in enumerate(fields)}
        program.append(Instruction(name, i % 7, (i + 1) % 7, (i + 2) % 7, values))
    data = encode_program(program)
    assert len(data) == 64 * len(program)
    assert decode_program(data) == program
    assert decode(program[0].encode()) == program[0]


def test_bad_instructions_are_refused():
    with pytest.raises(LlmcError, match="unknown opcode"):
        Instruction("FOO").encode()
    with pytest.raises(LlmcError, match="fields"):
        Instruction("EADD", fields={}).encode()
    with pytest.raises(LlmcError, match="does not fit 32 bits"):
        Instruction("EADD", fields={"cols": 1 << 32}).encode()
    with pytest.raises(LlmcError, match="multiple of 64"):
        decode_program(b"\0" * 65)


def test_docs_show_the_current_table():
    doc = (Path(__file__).parents[2] / "docs" / "isa.md").read_text()
    assert "<!-- isa:begin -->\n" + markdown_table() + "<!-- isa:end -->" in doc


def test_mm_flags_round_trip_through_the_one_table():
    flags = MmFlags(4, ENGINES["sparse"], True, False, True, True, False, 2, 16)
    assert MmFlags.decode(flags.encode()) == flags and flags.sparse == (2, 16) and flags.engine_name == "sparse"
    assert mm_flags(2, "lut", True, False, True, None, True) == MmFlags(2, 2, True, False, True, True, True, 0, 0).encode()
    assert MmFlags.decode(mm_flags(4, "dsp", False, False, False, None, False, half_scales=True)).half_scales
    with_min = MmFlags.decode(mm_flags(4, "dsp", False, True, False, None, False, has_min=True))
    assert with_min.has_min and with_min.has_bias and not with_min.half_scales and mm_flags(
        4, "dsp", False, False, False, None, False, double_buffer=False, has_min=True) == 4 | 1 << 21
    with pytest.raises(LlmcError, match="sparse_m = 32 does not fit 5 bits"):
        MmFlags(4, 1, False, False, False, True, False, 2, 32).encode()


def test_the_kernel_reads_instruction_fields_by_their_names():
    """The kernel names every slot it reads from the rendered constants (no field index written twice)."""
    import re

    import llmc

    kernel = (Path(llmc.__file__).parent / "hls_templates" / "kernel" / "llmc_accel.cpp.j2").read_text()
    assert not re.findall(r"\.f\[\d", kernel) and not re.findall(r"flags >> \d|engine == \d", kernel)
    names = dict(kernel_constants())
    assert names["MM_WEIGHT_OFF"] == OPCODES["MM"][1].index("weight_off") and names["XMM_SLOT"] == 13
    assert names["MM_FLAG_TO_IO_LSB"] == MM_FLAGS["to_io"][0] and names["ACT_GELU"] == 3
