"""Quantized ONNX: QuantizeLinear and DequantizeLinear (per-tensor, per-axis, blocked; 8, 16, 4 and
2-bit codes) agree with onnxruntime (integers exactly, floats within 1e-6); a DequantizeLinear of
constants feeding a MatMul/Gemm weight imports as llmc's codes (``W.codes`` with a #quant
encoding, ``W.scales`` f16, ``W.zeros``) when that is exact, else stays a float dequantize; the
com.microsoft MatMulNBits weights import as their own codes (checked against an independent
unpacking) and agree with onnxruntime within 1e-5; malformed quantized nodes are refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
ml_dtypes = pytest.importorskip("ml_dtypes")

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx_cases import ONNX_TYPE, Case, build, compare, imported, node  # noqa: E402
from zoo import refused_in_one_line  # noqa: E402

from llmc.ir.builder import value_name  # noqa: E402
from llmc.ir.graph import Module  # noqa: E402
from llmc.ir.interpreter import run_function  # noqa: E402
from llmc.ir.types import F16, QuantEncoding, int_dtype  # noqa: E402

RNG = np.random.default_rng(7)
F32, I8, U8, I16, U16, I32 = np.float32, np.int8, np.uint8, np.int16, np.uint16, np.int32
I4, U4, I2, U2 = ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2
NARROW = {np.dtype(t): t for t in (I4, U4, I2, U2)}  # onnxruntime returns no such arrays: cast to int8 in the graph


def codes(dtype: Any, *shape: int) -> np.ndarray:
    """Random codes over the whole range of ``dtype``."""
    info = ml_dtypes.iinfo(dtype) if np.dtype(dtype) in NARROW else np.iinfo(dtype)
    return RNG.integers(int(info.min), int(info.max) + 1, shape).astype(dtype)


def scales(*shape: int, f16: bool = True) -> np.ndarray:
    """Positive scales, exact float16 values unless ``f16`` is false."""
    s = RNG.uniform(0.01, 0.3, shape).astype(F32)
    return s.astype(np.float16).astype(F32) if f16 else s


def session(model: onnx.ModelProto) -> Any:
    """onnxruntime without graph optimizations: its QDQ fusions would change the arithmetic."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run_both(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float, what: str) -> Module:
    """The model imported (verified, through its text form) and run by llmc's interpreter and by
    onnxruntime; the outputs agree."""
    theirs = session(model).run(None, feeds)
    module = imported(model, what.replace("/", "_"))
    ours = run_function(module, "main", feeds)
    for vi, ref in zip(model.graph.output, theirs, strict=True):
        compare(ours[value_name(vi.name)], ref, rtol, f"{what}: {vi.name}")
    return module


def check(case: Case) -> Module:
    return run_both(build(case), case.feeds, case.rtol, case.id)


# -- QuantizeLinear / DequantizeLinear against onnxruntime -----------------------------------------
def dq_cases() -> list[Case]:
    cases = []
    for t in (I8, U8):
        x = codes(t, 3, 4, 5)
        cases += [
            Case(f"DQ/{np.dtype(t).name}/tensor", [node("DequantizeLinear", ["x", "s", "z"])], {"x": x}, opset=13,
                 inits={"s": np.float32(0.37), "z": codes(t)}),
            Case(f"DQ/{np.dtype(t).name}/tensor-no-zero", [node("DequantizeLinear", ["x", "s"])], {"x": x}, opset=13,
                 inits={"s": np.float32(0.37)}),
            Case(f"DQ/{np.dtype(t).name}/axis1", [node("DequantizeLinear", ["x", "s", "z"])], {"x": x}, opset=13,
                 inits={"s": scales(4, f16=False), "z": codes(t, 4)}),
            Case(f"DQ/{np.dtype(t).name}/axis-1", [node("DequantizeLinear", ["x", "s", "z"], axis=-1)], {"x": x},
                 opset=13, inits={"s": scales(5, f16=False), "z": codes(t, 5)}),
        ]
    cases += [
        Case("DQ/symbolic", [node("DequantizeLinear", ["x", "s", "z"])], {"x": codes(I8, 2, 5, 3)}, opset=13,
             inits={"s": scales(5, f16=False), "z": codes(I8, 5)}, dims={"x": ["B", 5, "L"]}),
        Case("DQ/i32/axis0", [node("DequantizeLinear", ["x", "s"], axis=0)], {"x": codes(I32, 3, 4)}, opset=13,
             inits={"s": scales(3, f16=False)}),
        Case("DQ/u8/f16", [node("DequantizeLinear", ["x", "s", "z"], axis=0)], {"x": codes(U8, 6, 7)}, opset=19,
             inits={"s": scales(6).astype(np.float16), "z": codes(U8, 6)}),
        Case("DQ/output_dtype", [node("DequantizeLinear", ["x", "s", "z"], output_dtype=TensorProto.FLOAT16)],
             {"x": codes(U8, 4, 9)}, opset=23, inits={"s": scales(9, f16=False), "z": codes(U8, 9)}),
        Case("DQ/folded", [node("DequantizeLinear", ["w", "s", "z"], "d"), node("Add", ["x", "d"])],
             {"x": RNG.standard_normal((2, 4)).astype(F32)}, inits={"w": codes(I8, 2, 4), "s": scales(4, f16=False),
                                                                   "z": codes(I8, 4)}, opset=13),
    ]
    for t in (I16, U16):
        cases.append(Case(f"DQ/{np.dtype(t).name}/axis0", [node("DequantizeLinear", ["x", "s", "z"], axis=0)],
                          {"x": codes(t, 3, 8)}, opset=21, inits={"s": scales(3, f16=False), "z": codes(t, 3)}))
    for t, opset in ((I8, 21), (U16, 21), (I4, 21), (U4, 21), (I2, 25), (U2, 25)):
        for axis, shape, block in ((0, (66, 20), 8), (1, (30, 42), 4), (1, (24, 64), 16), (0, (10, 6), 4)):
            sshape = tuple(-(-d // block) if i == axis else d for i, d in enumerate(shape))
            cases.append(Case(f"DQ/{np.dtype(t).name}/block{block}/axis{axis}/{shape}",
                              [node("DequantizeLinear", ["w", "s", "z"], axis=axis, block_size=block)],
                              {}, opset=opset, inits={"w": codes(t, *shape), "s": scales(*sshape, f16=False),
                                                      "z": codes(t, *sshape)}))
    cases.append(Case("DQ/u4/f16", [node("DequantizeLinear", ["w", "s"], axis=0)], {}, opset=21,
                      inits={"w": codes(U4, 40, 3), "s": scales(40).astype(np.float16)}))
    return cases


def q_inputs(*shape: int, scale: float = 0.25, inf: bool = True) -> np.ndarray:
    """Random values, exact ties (odd multiples of scale / 2), values that saturate, infinities
    (not with ``inf=False``: onnxruntime's blocked and float16 kernels turn +inf into the lowest
    code, where ONNX saturates, as llmc does)."""
    x = RNG.standard_normal(shape).astype(F32) * 20
    flat = x.reshape(-1)
    flat[::3] = (RNG.integers(-300, 300, flat[::3].shape) + 0.5) * scale
    flat[1::7] *= 1000
    flat[:2] = [np.inf, -np.inf] if inf else [3e4, -3e4]
    return x


def q_cases() -> list[Case]:
    cases = []
    for t in (I8, U8):
        name = np.dtype(t).name
        cases += [
            Case(f"Q/{name}/tensor", [node("QuantizeLinear", ["x", "s", "z"])], {"x": q_inputs(4, 30)}, opset=13,
                 inits={"s": np.float32(0.25), "z": codes(t)}),
            Case(f"Q/{name}/axis1", [node("QuantizeLinear", ["x", "s", "z"])], {"x": q_inputs(3, 5, 8)}, opset=13,
                 inits={"s": scales(5, f16=False), "z": codes(t, 5)}),
        ]
    cases += [
        Case("Q/u8/no-zero", [node("QuantizeLinear", ["x", "s"])], {"x": q_inputs(40, 5)}, opset=13,
             inits={"s": np.float32(0.5)}),
        Case("Q/f16", [node("QuantizeLinear", ["x", "s", "z"], axis=0)],  # onnxruntime's f16 kernel: +inf -> lowest
             {"x": np.clip(q_inputs(6, 50, inf=False), -6e4, 6e4).astype(np.float16)},
             opset=19, inits={"s": scales(6).astype(np.float16), "z": codes(I8, 6)}),
        Case("Q/i8/output_dtype", [node("QuantizeLinear", ["x", "s"], output_dtype=TensorProto.INT8)],
             {"x": q_inputs(5, 20)}, opset=21, inits={"s": np.float32(0.125)}),
        Case("Q/symbolic", [node("QuantizeLinear", ["x", "s", "z"], axis=-1)], {"x": q_inputs(3, 4, 6)}, opset=13,
             inits={"s": scales(6, f16=False), "z": codes(U8, 6)}, dims={"x": ["B", "L", 6]}),
        Case("Q/precision", [node("QuantizeLinear", ["x", "s", "z"], precision=TensorProto.FLOAT16)],
             {"x": q_inputs(8, 30)}, opset=25, inits={"s": np.float32(0.37), "z": codes(I8)}),
        Case("Q/runtime-scale", [node("QuantizeLinear", ["x", "s", "z"])],
             {"x": q_inputs(3, 7), "s": np.asarray(0.3, F32), "z": np.asarray(3, I8)}, opset=13),
    ]
    for t in (I16, U16):
        cases.append(Case(f"Q/{np.dtype(t).name}/axis0", [node("QuantizeLinear", ["x", "s", "z"], axis=0)],
                          {"x": q_inputs(3, 40) * 300}, opset=21, inits={"s": scales(3, f16=False), "z": codes(t, 3)}))
    for t, opset in ((I8, 21), (U8, 21), (I16, 21), (I4, 21), (U4, 21), (I2, 25), (U2, 25)):
        for axis, shape, block in ((0, (10, 6), 4), (1, (5, 16), 8)):
            sshape = tuple(-(-d // block) if i == axis else d for i, d in enumerate(shape))
            narrow = np.dtype(t) in NARROW
            nodes = [node("QuantizeLinear", ["x", "s", "z"], "q" if narrow else "y", axis=axis, block_size=block)]
            if narrow:  # onnxruntime cannot return 4- and 2-bit arrays
                nodes.append(node("Cast", ["q"], "y", to=TensorProto.INT8 if np.dtype(t).name[0] == "i" else
                                  TensorProto.UINT8))
            cases.append(Case(f"Q/{np.dtype(t).name}/block{block}/axis{axis}", nodes, {"x": q_inputs(*shape, inf=False) / 10},
                              opset=opset, inits={"s": scales(*sshape, f16=False), "z": codes(t, *sshape)}))
    cases.append(Case("QDQ/u8", [node("QuantizeLinear", ["x", "s", "z"], "q"), node("DequantizeLinear", ["q", "s", "z"])],
                      {"x": q_inputs(4, 9)}, opset=13, inits={"s": np.float32(0.07), "z": np.uint8(128)}))
    return cases


@pytest.mark.parametrize("case", dq_cases() + q_cases(), ids=lambda c: c.id)
def test_qdq_matches_onnxruntime(case: Case) -> None:
    check(case)


# -- DequantizeLinear weights kept as codes --------------------------------------------------------
def qdq_matmul(w: np.ndarray, s: np.ndarray, z: np.ndarray | None, k: int, n: int, *, axis: int = 1,
               block: int = 0, gemm: bool = False, transpose: bool = False, f16: bool = False,
               bias: bool = False) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """y = x @ DequantizeLinear(w) (Gemm with transB when ``gemm``; through a Transpose when
    ``transpose``), the weight an initializer named ``fc.weight_quantized``."""
    ft = np.float16 if f16 else F32
    inits = {"fc.weight_quantized": w, "fc.weight_scale": s.astype(ft)}
    dq_in = ["fc.weight_quantized", "fc.weight_scale"]
    if z is not None:
        inits["fc.weight_zero_point"] = z
        dq_in.append("fc.weight_zero_point")
    attrs = {"axis": axis, **({"block_size": block} if block else {})}
    nodes = [helper.make_node("DequantizeLinear", dq_in, ["wd"], name="dq", **attrs)]
    weight = "wd"
    if transpose:
        nodes.append(helper.make_node("Transpose", ["wd"], ["wt"], name="t", perm=[1, 0]))
        weight = "wt"
    if gemm:
        inputs = ["x", weight] + (["b"] if bias else [])
        nodes.append(helper.make_node("Gemm", inputs, ["y"], name="gemm", transB=1))
    else:
        nodes.append(helper.make_node("MatMul", ["x", weight], ["p" if bias else "y"], name="mm"))
        if bias:
            nodes.append(helper.make_node("Add", ["p", "b"], ["y"], name="add"))
    if bias:
        inits["b"] = RNG.standard_normal(n).astype(ft)
    x = RNG.standard_normal((3, k)).astype(ft)
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", ONNX_TYPE[np.dtype(ft)], [3, k])],
                              [helper.make_tensor_value_info("y", ONNX_TYPE[np.dtype(ft)], [3, n])],
                              [numpy_helper.from_array(np.asarray(v), name) for name, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    return model, {"x": x}


def kept_codes(module: Module, base: str, expected: np.ndarray, bits: int, group: int, zeros: np.ndarray | None,
               scales_nk: np.ndarray) -> None:
    """``base.codes`` holds ``expected`` [N, K] with its encoding; scales (f16) and zeros match;
    a ``dequantize`` feeds ``linear`` and no float weight is left."""
    p = module.params[f"{base}.codes"]
    signed = np.dtype(expected.dtype).name.startswith("int")
    zero_dtype = None if zeros is None else int_dtype(bits, signed)
    assert p.type.dtype == int_dtype(bits, signed)
    assert p.type.encodings == (QuantEncoding(bits, group, F16, zeros is None, zero_dtype),)
    np.testing.assert_array_equal(p.data.astype(np.int64), expected.astype(np.int64))
    sp = module.params[f"{base}.scales"]
    assert sp.type.dtype == F16 and sp.data.dtype == np.float16
    np.testing.assert_array_equal(sp.data.astype(F32), scales_nk.astype(F32))
    if zeros is None:
        assert f"{base}.zeros" not in module.params
    else:
        np.testing.assert_array_equal(module.params[f"{base}.zeros"].data.astype(np.int64), zeros.astype(np.int64))
    nodes = module.functions["main"].nodes
    param = next(nd.outputs[0] for nd in nodes if nd.op == "param" and nd.attrs["name"] == f"{base}.codes")
    dq = next(nd for nd in nodes if nd.op == "dequantize" and nd.inputs[0] is param)
    assert dq.attrs["group"] == group
    assert any(nd.op == "linear" and nd.inputs[1] is dq.outputs[0] for nd in nodes)
    floats = [q.name for q in module.params.values() if q.type.dtype.is_float and q.type.rank == 2]
    assert all(name.endswith(".scales") for name in floats), floats


K, N = 64, 24


def test_int8_per_channel_kept() -> None:
    w, s, z = codes(I8, K, N), scales(N), codes(I8, N)
    module = run_both(*qdq_matmul(w, s, z, K, N), 1e-5, "qdq/i8/axis")
    kept_codes(module, "fc.weight", w.T, 8, K, z.reshape(N, 1), s.reshape(N, 1))


def test_symmetric_and_uint8_and_per_tensor_kept() -> None:
    w, s = codes(I8, K, N), scales(N)
    module = run_both(*qdq_matmul(w, s, np.zeros(N, I8), K, N, bias=True), 1e-5, "qdq/i8/sym")
    kept_codes(module, "fc.weight", w.T, 8, K, None, s.reshape(N, 1))
    assert any(nd.op == "linear" and len(nd.inputs) == 3 for nd in module.functions["main"].nodes)  # bias fused
    w, s, z = codes(U8, K, N), scales(1), codes(U8)
    module = run_both(*qdq_matmul(w, s.reshape(()), z, K, N), 1e-5, "qdq/u8/tensor")
    kept_codes(module, "fc.weight", w.T, 8, K, np.full((N, 1), z), np.full((N, 1), s[0]))


def test_int4_blocked_and_gemm_and_transpose_kept() -> None:
    w, s, z = codes(I4, K, N), scales(K // 16, N), codes(I4, K // 16, N)
    module = run_both(*qdq_matmul(w, s, z, K, N, axis=0, block=16), 1e-5, "qdq/i4/block")
    kept_codes(module, "fc.weight", w.T, 4, 16, z.T, s.T)
    w, s, z = codes(U4, N, K), scales(N, K // 32), codes(U4, N, K // 32)  # Gemm transB: W [N, K] blocked along K
    module = run_both(*qdq_matmul(w, s, z, K, N, axis=1, block=32, gemm=True, bias=True), 1e-5, "qdq/u4/gemm")
    kept_codes(module, "fc.weight", w, 4, 32, z, s)
    w, s = codes(I8, N, K), scales(N)  # W [N, K] per-channel, transposed into MatMul
    module = run_both(*qdq_matmul(w, s, None, K, N, axis=0, transpose=True), 1e-5, "qdq/i8/transpose")
    kept_codes(module, "fc.weight", w, 8, K, None, s.reshape(N, 1))
    w, s = codes(I8, K, N), scales(N)
    module = run_both(*qdq_matmul(w, s, None, K, N, f16=True), 1e-3, "qdq/i8/f16")
    kept_codes(module, "fc.weight", w.T, 8, K, None, s.reshape(N, 1))
    assert next(nd for nd in module.functions["main"].nodes if nd.op == "dequantize").outputs[0].type.dtype == F16


@pytest.mark.parametrize("what", ["scales not f16", "per-axis along K", "block along N", "block not dividing K"])
def test_inexact_weights_stay_float_dequantize(what: str) -> None:
    w, z = codes(I8, K, N), codes(I8, N)
    model, feeds = {
        "scales not f16": lambda: qdq_matmul(w, scales(N, f16=False), z, K, N),
        "per-axis along K": lambda: qdq_matmul(w, scales(K), codes(I8, K), K, N, axis=0),
        "block along N": lambda: qdq_matmul(w, scales(K, N // 8), codes(I8, K, N // 8), K, N, axis=1, block=8),
        "block not dividing K": lambda: qdq_matmul(codes(I8, 60, N), scales(3, N), codes(I8, 3, N), 60, N, axis=0,
                                                   block=24),
    }[what]()
    module = run_both(model, feeds, 1e-5, f"qdq/{what}")
    assert not any(name.endswith(".codes") for name in module.params)
    assert not any(nd.op == "dequantize" for nd in module.functions["main"].nodes)


# -- MatMulNBits -----------------------------------------------------------------------------------
def independent_codes(packed: np.ndarray, k: int, bits: int, block: int) -> np.ndarray:
    """Codes [N, K] read element by element from B [N, n_blocks, blob] (low bits first)."""
    rows = packed.shape[0]
    out = np.zeros((rows, k), np.int64)
    for r in range(rows):
        for col in range(k):
            bit = (col % block) * bits
            out[r, col] = (int(packed[r, col // block, bit // 8]) >> (bit % 8)) & ((1 << bits) - 1)
    return out


def nbits_parts(k: int, n: int, bits: int, block: int, zero: str, *, f16: bool = False, exact: bool = True,
                g_idx: np.ndarray | None = None, bias: bool = False, accuracy: int = 0, name: str = "fc",
                a: str = "A", y: str = "y") -> tuple[onnx.NodeProto, dict[str, np.ndarray], dict[str, Any]]:
    """A MatMulNBits node ``y = a @ W^T`` with random packed codes (B named ``<name>.weight_Q4``,
    as onnxruntime's quantizer names it), its initializers, and what llmc should read back."""
    ft = np.float16 if f16 else F32
    blocks = -(-k // block)
    packed = RNG.integers(0, 256, (n, blocks, block * bits // 8), dtype=np.uint8)
    s = scales(n * blocks, f16=exact).astype(ft)
    inits: dict[str, np.ndarray] = {f"{name}.weight_Q4": packed, f"{name}.scales": s}
    zeros: np.ndarray = np.full((n, blocks), 1 << (bits - 1))
    if zero == "packed":
        per_row = -(-blocks * bits // 8)
        zp = RNG.integers(0, 256, (n * per_row,), dtype=np.uint8)
        inits[f"{name}.zp"] = zp
        zeros = unpack_reference(zp.reshape(n, per_row), bits)[:, :blocks]
    elif zero in ("float", "fractional"):
        zp = RNG.integers(0, 1 << bits, n * blocks).astype(ft)
        if zero == "fractional":
            zp = (zp + RNG.uniform(0, 1, zp.shape)).astype(ft)
        inits[f"{name}.zp"] = zp
        zeros = zp.reshape(n, blocks)
    if g_idx is not None:
        inits[f"{name}.g_idx"] = g_idx.astype(I32)
    if bias:
        inits[f"{name}.bias"] = RNG.standard_normal(n).astype(ft)
    inputs = [a, *(f"{name}.{part}" if f"{name}.{part}" in inits else "" for part in
                   ("weight_Q4", "scales", "zp", "g_idx", "bias"))]
    while inputs[-1] == "":
        inputs.pop()
    nd = helper.make_node("MatMulNBits", inputs, [y], name=f"{name}_mnb", domain="com.microsoft", K=k, N=n,
                          bits=bits, block_size=block, accuracy_level=accuracy)
    info = {"codes": independent_codes(packed, blocks * block, bits, block), "scales": s.reshape(n, blocks),
            "zeros": zeros, "feeds": {a: RNG.standard_normal((5, k)).astype(ft)}}
    return nd, inits, info


def nbits_graph(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray], k: int, n: int, f16: bool = False,
                a: str = "A", y: str = "y") -> onnx.ModelProto:
    t = TensorProto.FLOAT16 if f16 else TensorProto.FLOAT
    graph = helper.make_graph(nodes, "nbits", [helper.make_tensor_value_info(a, t, ["M", k])],
                              [helper.make_tensor_value_info(y, t, ["M", n])],
                              [numpy_helper.from_array(v, name) for name, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)],
                             ir_version=10)


def nbits_model(k: int, n: int, bits: int, block: int, zero: str, **kw: Any) -> tuple[onnx.ModelProto, dict[str, Any]]:
    nd, inits, info = nbits_parts(k, n, bits, block, zero, **kw)
    return nbits_graph([nd], inits, k, n, kw.get("f16", False)), info


def unpack_reference(packed: np.ndarray, bits: int) -> np.ndarray:
    per = 8 // bits
    return np.array([[(int(b) >> (bits * i)) & ((1 << bits) - 1) for b in row for i in range(per)] for row in packed])


NBITS = [(bits, zero, k, block) for bits in (2, 4, 8) for zero in ("none", "packed", "float", "fractional")
         for k, block in ((64, 16), (80, 32), (256, 128)) if not (bits == 8 and zero in ("float", "fractional"))]


@pytest.mark.parametrize("bits,zero,k,block", NBITS, ids=lambda v: str(v))
def test_matmul_nbits(bits: int, zero: str, k: int, block: int) -> None:
    model, info = nbits_model(k, 24, bits, block, zero)
    module = run_both(model, info["feeds"], 1e-5, f"nbits/{bits}/{zero}/{k}/{block}")
    p = module.params["fc.weight.codes"]
    np.testing.assert_array_equal(p.data.astype(np.int64), info["codes"])
    assert p.type.dtype == int_dtype(bits, signed=False)
    if zero == "fractional":  # not integers: a float dequantize of the same codes
        assert p.type.encodings == () and not any(nd.op == "dequantize" for nd in module.functions["main"].nodes)
        return
    assert p.type.encodings == (QuantEncoding(bits, block, F16, False, int_dtype(bits, signed=False)),)
    np.testing.assert_array_equal(module.params["fc.weight.scales"].data.astype(F32), info["scales"])
    np.testing.assert_array_equal(module.params["fc.weight.zeros"].data.astype(np.int64), info["zeros"])
    assert ("slice" in [nd.op for nd in module.functions["main"].nodes]) == (k % block != 0)


def test_matmul_nbits_variants() -> None:
    model, info = nbits_model(64, 16, 4, 32, "packed", f16=True, bias=True, accuracy=1)
    module = run_both(model, info["feeds"], 2e-3, "nbits/f16")  # onnxruntime's f16 kernel rounds differently
    assert module.params["fc.weight.scales"].data.dtype == np.float16
    model, info = nbits_model(64, 16, 4, 32, "none", exact=False, bias=True)  # f32 scales: float dequantize
    module = run_both(model, info["feeds"], 1e-5, "nbits/f32-scales")
    assert module.params["fc.weight.codes"].type.encodings == () and module.params["fc.weight.scales"].type.dtype.bits == 32
    model, info = nbits_model(64, 16, 4, 16, "float", g_idx=np.arange(64) // 16)  # the trivial g_idx
    run_both(model, info["feeds"], 1e-5, "nbits/g_idx")
    order = RNG.permutation(np.arange(64) // 16)
    model, info = nbits_model(64, 16, 4, 16, "none", g_idx=order)  # act-order: the columns regrouped, A gathered
    module = run_both(model, info["feeds"], 1e-5, "nbits/act-order")
    perm = np.argsort(order, kind="stable")
    np.testing.assert_array_equal(module.params["fc.weight.codes"].data.astype(np.int64), info["codes"][:, perm])


# -- end to end ------------------------------------------------------------------------------------
def test_quantized_mlps() -> None:
    """Two MLPs: int8 per-channel QDQ weights, and 4-bit MatMulNBits blocks of 32."""
    d, h = 64, 96
    w1, s1, z1 = codes(I8, d, h), scales(h), codes(I8, h)
    w2, s2 = codes(I8, h, d), scales(d)
    inits = {"up_quantized": w1, "up_scale": s1, "up_zp": z1, "up.bias": RNG.standard_normal(h).astype(F32),
             "down_quantized": w2, "down_scale": s2}
    nodes = [helper.make_node("DequantizeLinear", ["up_quantized", "up_scale", "up_zp"], ["up"], name="dq_up"),
             helper.make_node("MatMul", ["x", "up"], ["u"], name="mm_up"),
             helper.make_node("Add", ["u", "up.bias"], ["ub"], name="add_up"),
             helper.make_node("Relu", ["ub"], ["r"], name="relu"),
             helper.make_node("DequantizeLinear", ["down_quantized", "down_scale"], ["down"], name="dq_down"),
             helper.make_node("MatMul", ["r", "down"], ["y"], name="mm_down")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "L", d])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", "L", d])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)
    module = run_both(model, {"x": RNG.standard_normal((2, 5, d)).astype(F32)}, 1e-5, "mlp/qdq")
    kept_codes(module, "down", w2.T, 8, h, None, s2.reshape(d, 1))
    np.testing.assert_array_equal(module.params["up.codes"].data, w1.T)
    np.testing.assert_array_equal(module.params["up.zeros"].data.ravel(), z1)

    up, up_inits, up_info = nbits_parts(d, h, 4, 32, "packed", name="up", a="x", y="u")
    down, down_inits, down_info = nbits_parts(h, d, 4, 32, "none", name="down", a="r", y="y")
    model = nbits_graph([up, helper.make_node("Relu", ["u"], ["r"], name="relu"), down], {**up_inits, **down_inits},
                        d, d, a="x")
    module = run_both(model, up_info["feeds"], 1e-5, "mlp/nbits")
    for name, info in (("up", up_info), ("down", down_info)):
        np.testing.assert_array_equal(module.params[f"{name}.weight.codes"].data.astype(np.int64), info["codes"])
        np.testing.assert_array_equal(module.params[f"{name}.weight.zeros"].data.astype(np.int64), info["zeros"])
    assert [nd.op for nd in module.functions["main"].nodes if nd.op in ("dequantize", "linear", "relu")] == \
        ["dequantize", "linear", "relu", "dequantize", "linear"]


# -- errors ----------------------------------------------------------------------------------------
def bad_models() -> dict[str, tuple[onnx.ModelProto, str]]:
    dq = helper.make_node("DequantizeLinear", ["w", "s"], ["y"], name="dq", axis=0)
    graph = helper.make_graph([dq], "bad", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 6])],
                              [numpy_helper.from_array(codes(I8, 4, 6), "w"), numpy_helper.from_array(scales(5), "s")])
    wrong_scale = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=10)
    bits3, _ = nbits_model(64, 8, 4, 32, "none")
    next(a for a in bits3.graph.node[0].attribute if a.name == "bits").i = 3
    short, _ = nbits_model(64, 8, 4, 32, "none")
    next(a for a in short.graph.node[0].attribute if a.name == "N").i = 9  # B has 8 rows
    return {"scale shape": (wrong_scale, r"node dq \(DequantizeLinear\): scale shape \[5\] is neither a scalar nor \[4\]"),
            "bits": (bits3, r"node fc_mnb \(MatMulNBits\): bits 3 is not supported"),
            "B shape": (short, r"node fc_mnb \(MatMulNBits\): B is u8 \[8, 2, 16\], expected uint8 \[9, 2, 16\]")}


@pytest.mark.parametrize("what", ["scale shape", "bits", "B shape"])
def test_malformed_nodes_refused(what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, message = bad_models()[what]
    path = tmp_path / "bad.onnx"
    onnx.save(model, path)
    refused_in_one_line(path, message, f"{path}: ", tmp_path / "out.llmc", capsys)


# -- files written by onnxruntime's quantizers -----------------------------------------------------
def float_mlp(d: int, h: int, ft: Any) -> onnx.ModelProto:
    t = ONNX_TYPE[np.dtype(ft)]
    inits = [numpy_helper.from_array((RNG.standard_normal((d, h)) * 0.1).astype(ft), "up.weight"),
             numpy_helper.from_array((RNG.standard_normal((h, d)) * 0.1).astype(ft), "down.weight")]
    nodes = [helper.make_node("MatMul", ["x", "up.weight"], ["u"], name="up"),
             helper.make_node("Relu", ["u"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "down.weight"], ["y"], name="down")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", t, ["M", d])],
                              [helper.make_tensor_value_info("y", t, ["M", d])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.mark.parametrize("ft", [F32, np.float16], ids=["f32", "f16"])
def test_matmul_nbits_quantizer_file(ft: Any) -> None:
    """onnxruntime's MatMulNBitsQuantizer (4 bits, blocks of 32, asymmetric): float16 scales keep
    the codes in llmc's form; float32 scales (not float16 values) keep them in a float dequantize."""
    quantizer = pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer")
    q = quantizer.MatMulNBitsQuantizer(float_mlp(64, 96, ft), block_size=32, is_symmetric=False, bits=4)
    q.process()
    model = q.model.model
    feeds = {"x": RNG.standard_normal((3, 64)).astype(ft)}
    module = run_both(model, feeds, 1e-5 if ft == F32 else 2e-3, f"ort-nbits/{np.dtype(ft).name}")
    packed = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "up.weight_Q4"))
    np.testing.assert_array_equal(module.params["up.weight.codes"].data.astype(np.int64),
                                  independent_codes(packed, 64, 4, 32))
    encodings = module.params["up.weight.codes"].type.encodings
    assert (encodings == (QuantEncoding(4, 32, F16, False, int_dtype(4, signed=False)),)) == (ft == np.float16)


def test_qdq_quantizer_file(tmp_path: Path) -> None:
    """onnxruntime's quantize_static (QDQ, int8 per-channel weights, uint8 activations): float32
    scales, so the weights stay a float dequantize; the activations' QuantizeLinear ->
    DequantizeLinear pairs run as onnxruntime runs them (without its QDQ fusions)."""
    quantization = pytest.importorskip("onnxruntime.quantization")

    class Reader(quantization.CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": RNG.standard_normal((4, 64)).astype(F32)} for _ in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    onnx.save(float_mlp(64, 96, F32), tmp_path / "f.onnx")
    quantization.quantize_static(str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), Reader(),
                                 quant_format=quantization.QuantFormat.QDQ, per_channel=True,
                                 weight_type=quantization.QuantType.QInt8, activation_type=quantization.QuantType.QUInt8)
    model = onnx.load(tmp_path / "q.onnx")
    module = run_both(model, {"x": RNG.standard_normal((3, 64)).astype(F32)}, 1e-5, "ort-qdq")
    assert not any(name.endswith(".codes") for name in module.params)
    assert module.params["up.weight_quantized"].type.dtype == int_dtype(8)
