"""Codes with a per-group float minimum: the ``#quant<..., min=DT>`` encoding (text, validation),
the verifier's rules for it and ``dequantize_min`` (``scale * q - min``, each step rounded in
float32), in the interpreter and in the TVM backend's kernel."""

from __future__ import annotations

import numpy as np
import pytest

from llmc.ir import F32, Module, TensorType, VerifyError, parse_module, print_module, run_function, verify_module
from llmc.ir.ops.quant import DequantizeMin
from llmc.ir.registry import RefContext
from llmc.ir.types import BF16, F16, DType, QuantEncoding, parse_encoding

U4 = DType("uint", 4)
MIN_ENCODINGS = [
    ("#quant<bits=4,group=32,scale=f16,min=f16>", QuantEncoding(4, 32, F16, False, None, F16)),
    ("#quant<bits=2,group=16,scale=f32,min=f32>", QuantEncoding(2, 16, F32, False, None, F32)),
    ("#quant<bits=5,group=0,scale=bf16,min=f32>", QuantEncoding(5, 0, BF16, False, None, F32)),
    ("#quant<bits=4,group=8,scale=fixed<16,8>,min=f16>", QuantEncoding(4, 8, DType.parse("fixed<16,8>"), False, None, F16)),
]


@pytest.mark.parametrize("text, enc", MIN_ENCODINGS, ids=[t for t, _ in MIN_ENCODINGS])
def test_min_encoding_text_round_trips(text: str, enc: QuantEncoding) -> None:
    assert str(enc) == text and parse_encoding(text) == enc
    tensor = f"tensor<8x64xu{enc.bits} {text} #sparse<2:4>>"
    assert str(TensorType.parse(tensor)) == tensor


@pytest.mark.parametrize("make", [
    lambda: QuantEncoding(4, 32, F16, True, None, F16),  # sym has no minimum
    lambda: QuantEncoding(4, 32, F16, False, U4, F16),  # a zero point or a minimum, not both
    lambda: QuantEncoding(4, 32, F16, False, None, U4),  # minimums are float
])
def test_min_encoding_validation(make) -> None:
    with pytest.raises(ValueError):
        make()


@pytest.mark.parametrize("text", ["#quant<bits=4,group=32,scale=f16,asym,min=f16>",
                                  "#quant<bits=4,group=32,scale=f16,sym,min=f16>",
                                  "#quant<bits=4,group=32,scale=f16,min=u4>", "#quant<bits=4,group=32,min=f16>"])
def test_min_encoding_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_encoding(text)


CODES = "tensor<4x8xu4 #quant<bits=4,group=4,scale=f16,min=f16>>"


def module_text(codes: str = CODES, scales: str = "tensor<4x2xf16>", mins: str = "tensor<4x2xf16>",
                op: str = "dequantize_min", group: int = 4) -> str:
    return (
        'module "m" {\n'
        f'  param "w.codes" : {codes}\n  param "w.scales" : {scales}\n  param "w.mins" : {mins}\n'
        "  func @f(%x: tensor<1x8xf32>) {\n"
        f'    %c = param() {{name = "w.codes"}} : {codes}\n'
        f'    %s = param() {{name = "w.scales"}} : {scales}\n'
        f'    %m = param() {{name = "w.mins"}} : {mins}\n'
        f"    %w = {op}(%c, %s, %m) {{group = {group}}} : tensor<4x8xf32>\n"
        "    %y = linear(%x, %w) : tensor<1x4xf32>\n"
        "    return %y\n  }\n}\n"
    )


def test_a_min_module_verifies_and_round_trips() -> None:
    text = module_text()
    module = parse_module(text)
    verify_module(module)
    assert print_module(module) == text


@pytest.mark.parametrize("kwargs, message", [
    (dict(codes="tensor<4x8xi4>"), "dequantize_min codes must be unsigned integers, got i4"),
    (dict(mins="tensor<4x1xf16>"), "dequantize_min minimums must be floats shaped like the scales"),
    (dict(mins="tensor<4x2xu4>"), "dequantize_min minimums must be floats shaped like the scales"),
    (dict(scales="tensor<4x1xf16>"), "dequantize_min scale shape [4,1] != [4,2]"),
    (dict(group=8, scales="tensor<4x1xf16>", mins="tensor<4x1xf16>"),
     "codes encoded #quant<bits=4,group=4,scale=f16,min=f16>, but these operands are "
     "#quant<bits=4,group=8,scale=f16,min=f16>"),
    (dict(mins="tensor<4x2xf32>"), "but these operands are #quant<bits=4,group=4,scale=f16,min=f32>"),
    (dict(op="dequantize"), "codes with a per-group minimum (#quant<..., min=...>) are read by dequantize_min"),
    (dict(codes="tensor<4x8xu8 #quant<bits=4,group=4,scale=f16,min=f16>>"),
     "parameter 'w.codes': #quant<bits=4,group=4,scale=f16,min=f16> holds unsigned 4-bit codes, not u8"),
])
def test_the_verifier_names_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(VerifyError) as info:
        verify_module(parse_module(module_text(**kwargs)))
    assert message in str(info.value)


def ref(ins: list[np.ndarray], group: int, dtype=F32) -> np.ndarray:
    return DequantizeMin.ref(ins, {"group": group, "dtype": dtype}, RefContext({}))[0]


def test_scale_times_code_then_minus_min_per_group() -> None:
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, (3, 12)).astype(np.uint8)
    scales = rng.uniform(0.01, 0.1, (3, 3)).astype(np.float16)
    mins = rng.uniform(-0.5, 0.5, (3, 3)).astype(np.float16)
    got = ref([codes, scales, mins], 4)
    s, m = np.repeat(scales.astype(np.float32), 4, axis=1), np.repeat(mins.astype(np.float32), 4, axis=1)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32), (s * codes.astype(np.float32) - m).view(np.uint32))
    per_row = ref([codes, scales[:, :1], mins[:, :1]], 0, F16)  # group 0: one scale per row; rounded to f16
    want = (scales[:, :1].astype(np.float32) * codes.astype(np.float32) - mins[:, :1].astype(np.float32))
    np.testing.assert_array_equal(per_row.view(np.uint16), want.astype(np.float16).view(np.uint16))


def test_the_product_is_rounded_before_the_minimum_is_subtracted() -> None:
    """s * q = 4098 + 2^-12 rounds to 4098 in float32, so w = 0; a fused multiply-add would give 2^-12."""
    s = np.float32(1 + 2.0**-12)
    got = ref([np.array([[4097]], np.uint16), np.array([[s]]), np.array([[4098.0]], np.float32)], 0)
    assert got[0, 0] == 0.0 and np.float64(s) * 4097 - 4098 == 2.0**-12


def test_a_min_module_runs_in_the_interpreter() -> None:
    module: Module = parse_module(module_text())
    rng = np.random.default_rng(1)
    data = {"w.codes": rng.integers(0, 16, (4, 8)).astype(np.uint8),
            "w.scales": rng.uniform(0.01, 0.1, (4, 2)).astype(np.float16),
            "w.mins": rng.uniform(-0.1, 0.1, (4, 2)).astype(np.float16)}
    for name, array in data.items():
        module.params[name].data = array
    x = rng.standard_normal((1, 8)).astype(np.float32)
    w = ref([data["w.codes"], data["w.scales"], data["w.mins"]], 4)
    np.testing.assert_allclose(run_function(module, "f", {"x": x})["y"], x @ w.T, rtol=1e-6)
