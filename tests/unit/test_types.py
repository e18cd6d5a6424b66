"""DType, Dim (symbolic polynomial dims), encodings and TensorType: parse/print and arithmetic."""

from __future__ import annotations

import numpy as np
import pytest

from llmc.ir.types import (
    BF16,
    BOOL,
    F16,
    F32,
    Dim,
    DType,
    QuantEncoding,
    SparseEncoding,
    TensorType,
    parse_encoding,
)

# ---------------------------------------------------------------------------------------------
# DType
# ---------------------------------------------------------------------------------------------

DTYPE_TEXTS = (
    ["f16", "f32", "f64", "bf16", "bool"]
    + [f"i{b}" for b in (1, 2, 4, 7, 8, 16, 32, 64)]
    + [f"u{b}" for b in (1, 3, 8, 16, 32, 64)]
    + ["fixed<16,8>", "ufixed<8,8>", "fixed<1,0>", "ufixed<64,3>"]
)


@pytest.mark.parametrize("text", DTYPE_TEXTS)
def test_dtype_round_trip(text):
    dtype = DType.parse(text)
    assert str(dtype) == text
    assert DType.parse(str(dtype)) == dtype


@pytest.mark.parametrize("kind,bits", [("bfloat", 32), ("bool", 8), ("float", 8), ("int", 0), ("uint", 65), ("real", 32)])
def test_dtype_constructor_rejects(kind, bits):
    with pytest.raises(ValueError):
        DType(kind, bits)
    with pytest.raises(ValueError):
        DType("fixed", 8, 9)


def test_dtype_parse_fields():
    assert DType.parse("bf16") == BF16 and BF16.is_float and BF16.bits == 16
    assert DType.parse("f16") == F16 and DType.parse("f32") == F32
    assert DType.parse("bool") == BOOL
    assert DType.parse("fixed<16,8>") == DType("fixed", 16, 8)
    assert DType.parse("ufixed<8,8>") == DType("ufixed", 8, 8)
    assert DType.parse("u4") == DType("uint", 4)
    assert DType.parse("i4").is_int and DType.parse("fixed<8,4>").is_fixed
    assert not DType.parse("u8").signed and DType.parse("i8").signed


@pytest.mark.parametrize(
    "text", ["f8", "f128", "i0", "i65", "u0", "u65", "fixed<8,9>", "int8", "float32", "F32", "", "fixed<16, 8>", "q4"]
)
def test_dtype_parse_rejects(text):
    with pytest.raises(ValueError):
        DType.parse(text)


@pytest.mark.parametrize(
    "text,lo,hi",
    [
        ("i1", -1, 0),
        ("i4", -8, 7),
        ("i8", -128, 127),
        ("i16", -32768, 32767),
        ("i64", -(2**63), 2**63 - 1),
        ("u1", 0, 1),
        ("u4", 0, 15),
        ("u8", 0, 255),
        ("u64", 0, 2**64 - 1),
        ("fixed<16,8>", -32768, 32767),
        ("ufixed<8,8>", 0, 255),
        ("bool", 0, 1),
    ],
)
def test_int_range(text, lo, hi):
    assert DType.parse(text).int_range() == (lo, hi)


@pytest.mark.parametrize(
    "text,storage",
    [
        ("f16", np.float16),
        ("f32", np.float32),
        ("f64", np.float64),
        ("bf16", np.float32),
        ("bool", np.bool_),
        ("i1", np.int8),
        ("i4", np.int8),
        ("i8", np.int8),
        ("i9", np.int16),
        ("i16", np.int16),
        ("i17", np.int32),
        ("i32", np.int32),
        ("i33", np.int64),
        ("i64", np.int64),
        ("u1", np.uint8),
        ("u8", np.uint8),
        ("u12", np.uint16),
        ("u32", np.uint32),
        ("u64", np.uint64),
        ("fixed<16,8>", np.int16),
        ("ufixed<8,8>", np.uint8),
    ],
)
def test_numpy_storage(text, storage):
    assert DType.parse(text).numpy() == np.dtype(storage)


# ---------------------------------------------------------------------------------------------
# Dim
# ---------------------------------------------------------------------------------------------

L, P, B = Dim.sym("L"), Dim.sym("P"), Dim.sym("B")


def test_dim_static():
    assert Dim.of(4).is_static and Dim.of(4).value == 4
    assert Dim.of(0).value == 0 and Dim.of(0).terms == ()
    assert Dim.of(np.int64(3)) == Dim.of(3)
    assert Dim.of("7") == Dim.of(7)
    assert not L.is_static
    with pytest.raises(ValueError):
        _ = L.value
    with pytest.raises(TypeError):
        Dim.of(1.5)


def test_dim_arithmetic():
    assert P + 1 == 1 + P == Dim.parse("P+1")
    assert L + L == 2 * L == L * 2 == Dim.parse("2*L")
    assert (P + L) - P == L
    assert L - L == Dim.of(0)
    assert 5 - L == Dim.parse("-L+5")
    assert (L + 1) * (L - 1) == L * L - 1
    assert (B * L - 2).symbols == frozenset({"B", "L"})
    assert Dim.of(3) + Dim.of(4) == Dim.of(7)
    assert Dim.of(3) * 4 == Dim.of(12)
    assert L * 0 == Dim.of(0)
    # canonical form: equal polynomials are equal dims however they were built
    assert (L + P) == (P + L) and hash(L + P) == hash(P + L)
    assert B * L == L * B


def test_dim_exact_div():
    assert (4 * L).exact_div(4) == L
    assert (4 * L).exact_div(2) == 2 * L
    assert (4 * L + 2).exact_div(2) == 2 * L + 1
    assert (4 * L + 1).exact_div(2) is None
    assert Dim.of(12).exact_div(4) == Dim.of(3)
    assert Dim.of(12).exact_div(5) is None
    assert L.exact_div(0) is None
    assert (B * L).exact_div(L) == B
    assert (6 * B * L).exact_div(3 * L) == 2 * B
    assert (B * L + L).exact_div(L) == B + 1
    assert (B * L + 1).exact_div(L) is None
    assert L.exact_div(B) is None
    assert (L + P).exact_div(L + P) == Dim.of(1)
    assert (L + P).exact_div(L + 1) is None


def test_dim_substitute_and_evaluate():
    d = B * L - 2
    assert d.substitute({"B": 1}) == L - 2
    assert d.substitute({"B": 2, "L": 3}) == Dim.of(4)
    assert d.substitute({"L": P + 1}) == B * P + B - 2
    assert d.substitute({}) == d
    assert (P + L).substitute({"P": 0}) == L
    assert d.evaluate({"B": 3, "L": 5}) == 13
    assert Dim.of(7).evaluate({}) == 7
    assert (3 - L).evaluate({"L": 10}) == -7
    with pytest.raises(KeyError):
        d.evaluate({"B": 1})


@pytest.mark.parametrize(
    "text", ["0", "1", "17", "L", "P+1", "4*L", "B*L-2", "-L+3", "KV_LEN", "L*L", "2*B*L+L-1", "H2", "-3", "-2*L"]
)
def test_dim_print_parse_round_trip(text):
    d = Dim.parse(text)
    assert str(d) == text
    assert Dim.parse(str(d)) == d


def test_dim_parse_values():
    assert Dim.parse("P+1") == P + 1
    assert Dim.parse("4*L") == 4 * L
    assert Dim.parse("B*L-2") == B * L - 2
    assert Dim.parse("-L+3") == 3 - L
    assert Dim.parse("3-L") == 3 - L  # not canonical text, same value
    assert Dim.parse("L + 1") == L + 1  # spaces ignored
    assert Dim.parse("2*3") == Dim.of(6)


@pytest.mark.parametrize("name", ["l", "seq", "Lx", "1L", "", "L-1", "L.0", "_L", "L L"])
def test_bad_symbol_names_rejected(name):
    with pytest.raises(ValueError):
        Dim.sym(name)


@pytest.mark.parametrize("text", ["l", "L+", "+L", "L**2", "*L", "L--1", "", "4L", "L/2", "L+x"])
def test_bad_dim_text_rejected(text):
    with pytest.raises(ValueError):
        Dim.parse(text)


# ---------------------------------------------------------------------------------------------
# Encodings and TensorType
# ---------------------------------------------------------------------------------------------

ENCODINGS = [
    QuantEncoding(bits=4, group=128),
    QuantEncoding(bits=8, group=0, scale_dtype=F32),
    QuantEncoding(bits=3, group=64, scale_dtype=BF16, symmetric=False, zero_dtype=DType.parse("u8")),
    QuantEncoding(bits=16, group=32, scale_dtype=DType.parse("fixed<16,8>")),
    SparseEncoding(n=2, m=4),
    SparseEncoding(n=1, m=1),
    SparseEncoding(block=(4, 4), density=0.5),
    SparseEncoding(block=(1, 16), density=0.125),
    SparseEncoding(density=1e-05),
    SparseEncoding(),
]


@pytest.mark.parametrize("enc", ENCODINGS, ids=str)
def test_encoding_round_trip(enc):
    assert parse_encoding(str(enc)) == enc


def test_encoding_text():
    assert str(QuantEncoding(bits=4, group=128)) == "#quant<bits=4,group=128,scale=f16,sym>"
    assert (
        str(QuantEncoding(bits=4, group=32, symmetric=False, zero_dtype=DType.parse("u4")))
        == "#quant<bits=4,group=32,scale=f16,asym,zero=u4>"
    )
    assert str(SparseEncoding(n=2, m=4)) == "#sparse<2:4>"
    assert str(SparseEncoding(block=(4, 4), density=0.5)) == "#sparse<block=4x4,density=0.5>"


@pytest.mark.parametrize(
    "make",
    [
        lambda: QuantEncoding(bits=0, group=0),
        lambda: QuantEncoding(bits=17, group=0),
        lambda: QuantEncoding(bits=4, group=-1),
        lambda: QuantEncoding(bits=4, group=0, symmetric=True, zero_dtype=DType.parse("u8")),
        lambda: QuantEncoding(bits=4, group=0, symmetric=False),  # would print zero=None
        lambda: SparseEncoding(n=5, m=4),
        lambda: SparseEncoding(n=0, m=4),
        lambda: SparseEncoding(density=1.5),
        lambda: SparseEncoding(density=-0.1),
    ],
)
def test_encoding_validation(make):
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize(
    "text",
    ["#quant<bits=0,group=0,scale=f16,sym>", "#sparse<3:2>", "#sparse<0:4>", "#quant<bits=4,group=0,scale=f7,sym>",
     "#dense<>", "#quant<bits=4>"],
)
def test_encoding_parse_rejects(text):
    with pytest.raises(ValueError):
        parse_encoding(text)


TENSOR_TEXTS = [
    "tensor<f32>",
    "tensor<1xf32>",
    "tensor<1xLx256xbf16>",
    "tensor<BxP+1x4*Lxi8>",
    "tensor<B*L-2x-L+3xu4>",
    "tensor<0xbool>",
    "tensor<4x4xfixed<16,8>>",
    "tensor<Lxufixed<8,8>>",
    "tensor<ufixed<8,8>>",
    "tensor<256x128xi4 #quant<bits=4,group=128,scale=f16,sym>>",
    "tensor<256x128xu4 #quant<bits=4,group=32,scale=bf16,asym,zero=u4>>",
    "tensor<64x64xf16 #sparse<2:4>>",
    "tensor<64x64xf16 #sparse<block=4x4,density=0.25>>",
    "tensor<64x64xi8 #quant<bits=8,group=0,scale=f32,sym> #sparse<2:4>>",
    "tensor<8xfixed<8,4> #quant<bits=8,group=0,scale=fixed<16,8>,sym>>",
]


@pytest.mark.parametrize("text", TENSOR_TEXTS)
def test_tensor_type_round_trip(text):
    t = TensorType.parse(text)
    assert str(t) == text
    assert TensorType.parse(str(t)) == t


def test_tensor_type_fields():
    t = TensorType.parse("tensor<1xLx4*Lxfixed<16,8> #sparse<2:4>>")
    assert t.shape == (Dim.of(1), L, 4 * L)
    assert t.dtype == DType("fixed", 16, 8)
    assert t.encodings == (SparseEncoding(n=2, m=4),)
    assert t.rank == 3 and not t.is_static
    assert t.numel() == 4 * L * L
    assert t.concrete_shape({"L": 3}) == (1, 3, 12)
    s = t.substitute({"L": 2})
    assert s.is_static and s.static_shape() == (1, 2, 8) and s.encodings == t.encodings
    assert t.with_dtype(F32).dtype == F32 and t.with_dtype(F32).shape == t.shape
    assert TensorType.of([1, "L", L + 1], F32) == TensorType.parse("tensor<1xLxL+1xf32>")
    assert TensorType.parse("tensor<f32>").numel() == Dim.of(1)


@pytest.mark.parametrize(
    "text",
    ["tensor<>", "tensor<2x>", "tensor<2xLx>", "tensor<2xf8>", "tensor<lx2xf32>", "tens<2xf32>",
     "tensor<2xf32 #sparse<5:4>>", "tensor<2x?xf32>"],
)
def test_tensor_type_parse_rejects(text):
    with pytest.raises(ValueError):
        TensorType.parse(text)
