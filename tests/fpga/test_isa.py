"""The instruction encoding round-trips, refuses bad fields, and docs/isa.md shows the current table."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmc.backends.fpga.isa import (
    FLOAT_FIELDS,
    OPCODES,
    Instruction,
    decode,
    decode_program,
    encode_program,
    markdown_table,
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
