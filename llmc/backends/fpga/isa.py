"""The accelerator's instruction set: opcodes, fields, and a stable binary encoding.

Every instruction is one 512-bit word: sixteen little-endian u32 slots. Slot 0 holds the opcode
(bits 0-7), the destination buffer (8-15) and two source buffers (16-23, 24-31); slots 1..15
hold the opcode's fields in the order of :data:`FIELDS` (floats as their IEEE-754 bits). The row
count ``seq_len`` and first position ``start_pos`` are kernel arguments, so one program serves
every sequence length up to its bucket. docs/isa.md is generated from this table.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from llmc.errors import LlmcError

WORDS = 16
INSTR_BYTES = WORDS * 4

MM_FIELDS = ("n", "k", "group", "shift", "flags", "weight_off", "tile_bytes", "row_block", "tiles", "io_off", "cap")
# opcode -> (number, fields, what it does); buffers are dst/src0/src1 in slot 0
OPCODES: dict[str, tuple[int, tuple[str, ...], str]] = {
    "EMBED": (1, ("cols", "table_off", "by_position", "offset"),
              "dst[t] = table row ids[t] + offset, or start_pos + t + offset with by_position = 1 (learned "
              "positions), as Q15.16 (f16 rows striped over the weight channels)"),
    "NORM": (2, ("cols", "weight_off", "eps", "group"),
             "dst = RMSNorm(src0) with f32 weights at weight_off (channel 0); with group > 0 each group of columns "
             "(a head) is normalised on its own"),
    "MM": (3, MM_FIELDS,
           "dst = src0 x W: tiles of tile_n rows round-robin over the lanes' channels at weight_off; "
           "with flag 10 the rows go to io at io_off as float32 (logits), as tanh(v) * cap when cap > 0"),
    "ROPE": (4, ("cols", "head_dim", "cos_off", "sin_off", "rotary_dim"),
             "dst = RoPE(src0) at positions start_pos + t on the first rotary_dim columns of each head"),
    "KVAPP": (5, ("codes_off", "scales_off", "kv_heads", "head_dim"),
              "quantize src0 per head to int8 and write rows start_pos.. of a KV cache "
              "(row j on KV channel j mod C at row j div C)"),
    "ATTN": (6, ("heads", "kv_heads", "head_dim", "scale", "k_codes_off", "k_scales_off", "v_codes_off",
                 "v_scales_off", "window", "softcap"),
             "dst = causal attention of src0 over cache rows 0 .. start_pos + seq_len - 1, striped as KVAPP writes "
             "them; with window > 0 row t sees only the last window rows up to its position (sliding window); "
             "with softcap > 0 scores become tanh(s / softcap) * softcap"),
    "ACT": (7, ("cols", "fn"), "dst = fn(src0); fn 0 = SiLU, 1 = ReLU"),
    "EMUL": (8, ("cols",), "dst = src0 * src1 (Q15.16)"),
    "EADD": (9, ("cols",), "dst = src0 + src1 (saturating)"),
    "ESCALE": (10, ("cols", "vec_off"), "dst = src0 * f32 vector at vec_off (channel 0)"),
    "LNORM": (11, ("cols", "weight_off", "bias_off", "eps"),
              "dst = LayerNorm(src0) with f32 weights at weight_off and biases at bias_off (channel 0)"),
    "ROUTE": (12, ("cols", "top_k", "normalize"),
              "dst[t] = the top_k largest of the cols router logits src0[t] (ties to the lower expert) and their "
              "softmax weights, over the chosen experts with normalize = 1, as Q15.16: [e0, w0, e1, w1, ...]"),
    "XMM": (13, MM_FIELDS + ("experts", "expert_stride", "slot"),
            "dst[t] = src0[t] x W[e], e = src1[t][2 slot]: MM on expert e's tiles at weight_off + e * expert_stride, "
            "each chosen expert streamed once for all the rows that chose it"),
    "WEIGH": (14, ("cols", "slot"), "dst[t] = src0[t] * src1[t][2 slot + 1] (Q15.16: the row's expert weight)"),
    "HALT": (15, (), "end of program"),
    "SEND": (16, ("cols", "io_off"),
             "write src0's rows to io at io_off as int32 (a value another card of the cluster receives)"),
    "RECV": (17, ("cols", "io_off"),
             "dst = the int32 rows at io_off of io (a value another card sent, delivered by the host or link)"),
    "SYNC": (18, (), "end of a segment: the kernel call returns so the cluster can move what the cards sent; "
                     "the next call starts after it"),
}
FLOAT_FIELDS = {"eps", "scale", "softcap", "cap"}
BY_NUMBER = {num: name for name, (num, _, _) in OPCODES.items()}
ENGINES = {"dsp": 0, "sparse": 1, "lut": 2}
ACT_FNS = {"silu": 0, "relu": 1, "gelu_tanh": 2, "gelu": 3}

# The MM / XMM ``flags`` word: field -> (lowest bit, width). The compiler encodes it, and the ISS,
# the timing model and the kernel (rendered constants) decode it, all from this table.
MM_FLAGS: dict[str, tuple[int, int]] = {
    "bits": (0, 4),  # code width
    "engine": (4, 2),  # ENGINES
    "has_zero": (6, 1),  # zero points in the tile
    "has_bias": (7, 1),  # bias in the tile
    "unsigned": (8, 1),  # unsigned codes
    "double_buffer": (9, 1),  # double-buffered weight loads
    "to_io": (10, 1),  # rows to io as float32 (the logits)
    "half_scales": (11, 1),  # scales stored as f16 values, converted to the integer scales on chip
    "sparse_n": (12, 4),  # N of the N:M pattern
    "sparse_m": (16, 5),  # M of the N:M pattern (16 sets bit 20)
    "has_min": (21, 1),  # integer minimums in the tile: each group's sum less its minimum times the activations' sum
}
for _name, (_, _fields, _) in OPCODES.items():
    assert len(_fields) < WORDS, _name
    assert "cols" not in _fields or _fields.index("cols") == 0, _name  # the kernel reads cols from slot 1


@dataclass(frozen=True)
class MmFlags:
    """The decoded ``flags`` of a matrix instruction."""

    bits: int
    engine: int
    has_zero: bool
    has_bias: bool
    unsigned: bool
    double_buffer: bool
    to_io: bool
    sparse_n: int
    sparse_m: int
    half_scales: bool = False
    has_min: bool = False

    @classmethod
    def decode(cls, word: int) -> MmFlags:
        values = {name: word >> lsb & ((1 << width) - 1) for name, (lsb, width) in MM_FLAGS.items()}
        return cls(**{k: bool(v) if MM_FLAGS[k][1] == 1 else v for k, v in values.items()})

    def encode(self) -> int:
        word = 0
        for name, (lsb, width) in MM_FLAGS.items():
            value = int(getattr(self, name))
            if not 0 <= value < 1 << width:
                raise LlmcError(f"MM flag {name} = {value} does not fit {width} bits")
            word |= value << lsb
        return word

    @property
    def engine_name(self) -> str:
        return next(name for name, number in ENGINES.items() if number == self.engine)

    @property
    def sparse(self) -> tuple[int, int] | None:
        return (self.sparse_n, self.sparse_m) if self.engine == ENGINES["sparse"] else None


def mm_flags(bits: int, engine: str, has_zero: bool, has_bias: bool, unsigned: bool,
             sparse: tuple[int, int] | None, to_io: bool, double_buffer: bool = True, half_scales: bool = False,
             has_min: bool = False) -> int:
    n, m = sparse or (0, 0)
    return MmFlags(bits, ENGINES[engine], has_zero, has_bias, unsigned, double_buffer, to_io, n, m,
                   half_scales, has_min).encode()


def kernel_constants() -> list[tuple[str, int]]:
    """Named constants the kernel reads instructions with: each opcode's field slots
    (``MM_WEIGHT_OFF`` = its index in ``Instr.f``), the flag fields' lowest bits and widths
    (``MM_FLAG_TO_IO_LSB``/``_WIDTH``) and the activation functions (``ACT_SILU``)."""
    out = [(f"{op}_{name}".upper(), i) for op, (_, names, _) in OPCODES.items() for i, name in enumerate(names)]
    for name, (lsb, width) in MM_FLAGS.items():
        out += [(f"MM_FLAG_{name}_LSB".upper(), lsb), (f"MM_FLAG_{name}_WIDTH".upper(), width)]
    out += [(f"ACT_{name}".upper(), number) for name, number in ACT_FNS.items()]
    out += [(f"ENGINE_{name}".upper(), number) for name, number in ENGINES.items()]
    return out


@dataclass(frozen=True)
class Instruction:
    op: str
    dst: int = 0
    src0: int = 0
    src1: int = 0
    fields: dict[str, int | float] = field(default_factory=dict)

    def encode(self) -> bytes:
        if self.op not in OPCODES:
            raise LlmcError(f"unknown opcode '{self.op}'")
        number, names, _ = OPCODES[self.op]
        if set(self.fields) != set(names):
            raise LlmcError(f"{self.op}: fields {sorted(self.fields)} != {sorted(names)}")
        slots = [number | self.dst << 8 | self.src0 << 16 | self.src1 << 24]
        for name in names:
            value = self.fields[name]
            if name in FLOAT_FIELDS:
                slots.append(struct.unpack("<I", struct.pack("<f", value))[0])
            else:
                if not 0 <= int(value) < 1 << 32:
                    raise LlmcError(f"{self.op}: field {name} = {value} does not fit 32 bits")
                slots.append(int(value))
        slots += [0] * (WORDS - len(slots))
        return struct.pack(f"<{WORDS}I", *slots)

    def text(self) -> str:
        regs = f"b{self.dst}, b{self.src0}, b{self.src1}"
        args = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.fields.items())
        return f"{self.op:<7} {regs}" + (f", {args}" if args else "")


def decode(word: bytes) -> Instruction:
    if len(word) != INSTR_BYTES:
        raise LlmcError(f"an instruction is {INSTR_BYTES} bytes, got {len(word)}")
    slots = struct.unpack(f"<{WORDS}I", word)
    number = slots[0] & 0xFF
    if number not in BY_NUMBER:
        raise LlmcError(f"unknown opcode number {number}")
    name = BY_NUMBER[number]
    fields: dict[str, int | float] = {}
    for i, fname in enumerate(OPCODES[name][1]):
        raw = slots[1 + i]
        fields[fname] = struct.unpack("<f", struct.pack("<I", raw))[0] if fname in FLOAT_FIELDS else raw
    return Instruction(name, slots[0] >> 8 & 0xFF, slots[0] >> 16 & 0xFF, slots[0] >> 24 & 0xFF, fields)


def encode_program(program: list[Instruction]) -> bytes:
    return b"".join(i.encode() for i in program)


def decode_program(data: bytes) -> list[Instruction]:
    if len(data) % INSTR_BYTES:
        raise LlmcError(f"a program is a multiple of {INSTR_BYTES} bytes, got {len(data)}")
    return [decode(data[i:i + INSTR_BYTES]) for i in range(0, len(data), INSTR_BYTES)]


def markdown_table() -> str:
    """The opcode table of docs/isa.md."""
    rows = ["| opcode | number | fields (slots 1..) | meaning |", "| --- | --- | --- | --- |"]
    for name, (number, names, doc) in OPCODES.items():
        rows.append(f"| {name} | {number} | {', '.join(names) or '-'} | {doc} |")
    return "\n".join(rows) + "\n"
