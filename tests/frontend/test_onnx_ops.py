"""ONNX ops one by one: single-op graphs (random shapes, attributes and dtypes, numpy broadcasting,
shape operands computed at run time from Shape subgraphs over symbolic dims) imported as plain
functions and run through llmc's interpreter agree with onnxruntime: integers and bools exactly,
floats within 1e-6 of the reference's largest magnitude. The dtype x broadcasting sweep of the
binary ops is marked slow."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto  # noqa: E402
from onnx_cases import Case, check, data, node  # noqa: E402

RNG = np.random.default_rng(1234)
F32, F16, F64 = np.float32, np.float16, np.float64
I8, U8, I16, U16, I32, U32, I64 = np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64
ARITH_TYPES = [F32, F16, F64, I8, U8, I16, U16, I32, U32, I64]
BROADCASTS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3)), ((5, 1), (1, 6))]


def d(dtype: Any, *shape: int, positive: bool = False) -> np.ndarray:
    return data(RNG, dtype, shape, positive)


def i64(*values: int) -> np.ndarray:
    return np.asarray(values, np.int64)


def name_of(dtype: Any) -> str:
    return np.dtype(dtype).name


# -- elementwise -----------------------------------------------------------------------------------
def binary_case(op: str, dtype: Any, a: tuple, b: tuple, **extra: Any) -> Case:
    x, y = d(dtype, *a), d(dtype, *b, positive=op in ("Div", "Pow"))
    return Case(f"{op}/{name_of(dtype)}/{a}x{b}", [node(op, ["a", "b"])], {"a": x, "b": y}, **extra)


def elementwise_cases() -> list[Case]:
    cases = [binary_case(op, t, (3, 4), (4,)) for op in ("Add", "Sub", "Mul", "Div") for t in ARITH_TYPES]
    cases += [binary_case(op, t, a, b) for op in ("Add", "Div") for t in (F32, I32) for a, b in BROADCASTS]
    cases += [binary_case("Div", t, (2, 5), (2, 5)) for t in (I8, I32, I64)]  # truncation toward zero
    cases += [binary_case(op, t, a, b) for op in ("Max", "Min") for t in (F32, F16, F64, I8, U8, U32, I32, I64)
              for a, b in BROADCASTS[1:3]]
    for op in ("Max", "Min", "Sum", "Mean"):
        shapes = [(2, 3, 4), (3, 1), (4,)]
        feeds = {f"x{i}": d(F32, *s) for i, s in enumerate(shapes)}
        cases.append(Case(f"{op}/3-ary", [node(op, list(feeds))], feeds))
        cases.append(Case(f"{op}/1-ary", [node(op, ["x0"])], {"x0": d(F32, 2, 3)}))
    cases.append(Case("Max/i32/2-ary", [node("Max", ["a", "b"])], {"a": d(I32, 3, 4), "b": d(I32, 4)}))
    cases += [
        Case("Pow/f32", [node("Pow", ["a", "b"])], {"a": d(F32, 3, 4, positive=True), "b": d(F32, 4)}),
        Case("Pow/f32^i64", [node("Pow", ["a", "b"])], {"a": d(F32, 3, 4), "b": i64(2, 3, 0, 1)}),
        Case("Pow/f32^const", [node("Pow", ["a", "two"])], {"a": d(F32, 3, 4)}, inits={"two": np.float32(2)}),
        Case("Pow/f16", [node("Pow", ["a", "b"])], {"a": d(F16, 3, 4, positive=True), "b": d(F16, 4)}),
        Case("Pow/i32", [node("Pow", ["a", "b"])], {"a": d(I32, 3, 4) % 9, "b": np.asarray([0, 1, 2, 3], I32)}),
        Case("Pow/i64^i64", [node("Pow", ["a", "b"])], {"a": d(I64, 5) % 7, "b": i64(3)}),
    ]
    for op in ("Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"):
        for t in (F32, I32, I64, U8, F16):
            a, b = d(t, 3, 4) % 3, d(t, 4) % 3  # equal elements are likely
            cases.append(Case(f"{op}/{name_of(t)}", [node(op, ["a", "b"])], {"a": a.astype(t), "b": b.astype(t)}))
    cases.append(Case("Equal/bool", [node("Equal", ["a", "b"])], {"a": d(bool, 3, 4), "b": d(bool, 4)}))
    for op in ("And", "Or", "Xor"):
        cases.append(Case(op, [node(op, ["a", "b"])], {"a": d(bool, 2, 3, 4), "b": d(bool, 3, 1)}))
    cases.append(Case("Not", [node("Not", ["a"])], {"a": d(bool, 3, 4)}))
    for t in (F32, I64, I8, U8, F16):
        cases.append(Case(f"Where/{name_of(t)}", [node("Where", ["c", "a", "b"])],
                          {"c": d(bool, 3, 1), "a": d(t, 4), "b": d(t, 2, 3, 4)}))
    return cases


UNARY_FLOAT = ["Sqrt", "Reciprocal", "Exp", "Log", "Tanh", "Sigmoid", "Erf", "Cos", "Sin", "Neg", "Abs", "Relu"]


def unary_cases() -> list[Case]:
    cases = [Case(f"{op}/{name_of(t)}", [node(op, ["x"])], {"x": d(t, 4, 16, positive=op in ("Sqrt", "Log"))})
             for op in UNARY_FLOAT for t in (F32, F64, F16) if not (op == "Erf" and t == F64)]
    cases += [Case(f"Neg/{name_of(t)}", [node("Neg", ["x"])], {"x": d(t, 3, 5)}) for t in (I8, I16, I32, I64)]
    cases += [Case(f"Abs/{name_of(t)}", [node("Abs", ["x"])], {"x": d(t, 3, 5)}) for t in (I8, U8, I32, I64)]
    cases += [Case(f"Relu/{name_of(t)}", [node("Relu", ["x"])], {"x": d(t, 3, 5)}) for t in (I8, I32, I64)]
    cases += [Case(f"Sign/{name_of(t)}", [node("Sign", ["x"])], {"x": np.round(d(t, 3, 5)).astype(t)})
              for t in (F32, I32, U8)]
    cases += [
        Case("Gelu/none", [node("Gelu", ["x"])], {"x": d(F32, 4, 16)}, opset=20),
        Case("Gelu/tanh", [node("Gelu", ["x"], approximate="tanh")], {"x": d(F32, 4, 16)}, opset=20),
        Case("LeakyRelu", [node("LeakyRelu", ["x"], alpha=0.2)], {"x": d(F32, 4, 8)}),
        Case("HardSigmoid", [node("HardSigmoid", ["x"], alpha=0.3, beta=0.4)], {"x": d(F32, 4, 8)}),
        Case("HardSwish", [node("HardSwish", ["x"])], {"x": d(F32, 4, 8) * 2}),
        Case("Clip/both", [node("Clip", ["x", "lo", "hi"])], {"x": d(F32, 4, 8)},
             inits={"lo": np.float32(-0.5), "hi": np.float32(1.0)}),
        Case("Clip/max-only", [node("Clip", ["x", "", "hi"])], {"x": d(I32, 4, 8)}, inits={"hi": np.int32(3)}),
        Case("Clip/none", [node("Clip", ["x"])], {"x": d(F32, 4, 8)}),
        Case("IsNaN", [node("IsNaN", ["x"])], {"x": np.array([1.0, np.nan, -np.inf, 0.0], F32)}),
        Case("IsInf", [node("IsInf", ["x"])], {"x": np.array([1.0, np.nan, -np.inf, np.inf], F32)}),
        Case("IsInf/positive", [node("IsInf", ["x"], detect_negative=0)], {"x": np.array([np.inf, -np.inf], F32)}),
        Case("Identity", [node("Identity", ["x"])], {"x": d(I64, 3)}),
        Case("Dropout/mask", [node("Dropout", ["x"], ["y", "mask"])], {"x": d(F32, 2, 3)}, outputs=("y", "mask")),
        Case("Dropout/ratio", [node("Dropout", ["x", "r"])], {"x": d(F32, 2, 3)}, inits={"r": np.float32(0.3)}),
    ]
    return cases


def cast_cases() -> list[Case]:
    cases = []
    for src, dsts in ((F32, (I32, I8, U8, I64, F16, F64, bool)), (I64, (F32, I32, I8, F16)),
                      (bool, (F32, I64)), (I32, (I8, U8, I16, U16, U32)), (F16, (F32, I32))):
        for dst in dsts:
            x = d(src, 4, 5) * (3 if np.dtype(src).kind in "iu" else 1)
            if np.dtype(src).kind == "f" and np.dtype(dst).kind == "u":
                x = np.abs(x)
            to = {np.dtype(k): v for k, v in ((F32, 1), (U8, 2), (I8, 3), (U16, 4), (I16, 5), (I32, 6), (I64, 7),
                                              (bool, 9), (F16, 10), (F64, 11), (U32, 12))}[np.dtype(dst)]
            cases.append(Case(f"Cast/{name_of(src)}-{name_of(dst)}", [node("Cast", ["x"], to=to)], {"x": x}))
    cases.append(Case("Cast/bf16-roundtrip", [node("Cast", ["x"], "b", to=TensorProto.BFLOAT16),
                                              node("Cast", ["b"], to=TensorProto.FLOAT)], {"x": d(F32, 4, 8)}))
    cases.append(Case("CastLike", [node("CastLike", ["x", "like"])], {"x": d(F32, 3, 4) * 10, "like": d(I32, 1)}))
    return cases


# -- softmax, normalisation, matrix products -------------------------------------------------------
def nn_cases() -> list[Case]:
    cases = [Case(f"{op}/axis{axis}", [node(op, ["x"], axis=axis)], {"x": d(F32, 3, 4, 5) * 3})
             for op in ("Softmax", "LogSoftmax") for axis in (-1, 0, 1)]
    cases.append(Case("Softmax/f16", [node("Softmax", ["x"])], {"x": d(F16, 3, 8)}))
    x, w, b = d(F32, 2, 3, 16) + 1, 1 + d(F32, 16) * 0.1, d(F32, 16)
    cases += [
        Case("LayerNormalization", [node("LayerNormalization", ["x", "w", "b"], epsilon=1e-3)], {"x": x, "w": w, "b": b}),
        Case("LayerNormalization/no-bias", [node("LayerNormalization", ["x", "w"])], {"x": x, "w": w}),
        Case("LayerNormalization/const", [node("LayerNormalization", ["x", "w", "b"])], {"x": x}, inits={"w": w, "b": b}),
        Case("LayerNormalization/stats", [node("LayerNormalization", ["x", "w", "b"], ["y", "mean", "inv"])],
             {"x": x, "w": w, "b": b}, outputs=("y", "mean", "inv")),
        Case("LayerNormalization/axis1", [node("LayerNormalization", ["x", "w", "b"], ["y", "mean", "inv"], axis=1)],
             {"x": x, "w": d(F32, 3, 16), "b": d(F32, 16)}, outputs=("y", "mean", "inv")),
        Case("LayerNormalization/f16", [node("LayerNormalization", ["x", "w", "b"])],
             {"x": x.astype(F16), "w": w.astype(F16), "b": b.astype(F16)}),
        Case("SimplifiedLayerNormalization", [node("SimplifiedLayerNormalization", ["x", "w"], epsilon=1e-5)],
             {"x": x, "w": w}),
        Case("SimplifiedLayerNormalization/inv", [node("SimplifiedLayerNormalization", ["x", "w"], ["y", "inv"])],
             {"x": x, "w": w}, outputs=("y", "inv")),
        Case("SimplifiedLayerNormalization/axis1",
             [node("SimplifiedLayerNormalization", ["x", "w"], ["y", "inv"], axis=1)],
             {"x": x, "w": d(F32, 3, 1)}, outputs=("y", "inv")),
        Case("SimplifiedLayerNormalization/f16", [node("SimplifiedLayerNormalization", ["x", "w"], ["y", "inv"])],
             {"x": x.astype(F16), "w": w.astype(F16)}, outputs=("y", "inv")),
        Case("SimplifiedLayerNormalization/f16-x", [node("SimplifiedLayerNormalization", ["x", "w"])],
             {"x": x.astype(F16), "w": w}),  # Y has the scale's type
        Case("SimplifiedLayerNormalization/f16-scale",
             [node("SimplifiedLayerNormalization", ["x", "w"], ["y", "inv"])],
             {"x": x, "w": w.astype(F16)}, outputs=("y", "inv")),
        Case("LayerNormalization/f16/stats",
             [node("LayerNormalization", ["x", "w", "b"], ["y", "mean", "inv"], axis=-2)],
             {"x": x.astype(F16), "w": w.astype(F16), "b": b.astype(F16)}, outputs=("y", "mean", "inv")),
        Case("RMSNormalization", [node("RMSNormalization", ["x", "w"], epsilon=1e-4)], {"x": x, "w": w}, opset=23),
        Case("RMSNormalization/f16", [node("RMSNormalization", ["x", "w"], axis=1)],
             {"x": x.astype(F16), "w": w.astype(F16)}, opset=23),
        Case("RMSNormalization/axis1", [node("RMSNormalization", ["x", "w"], axis=1)], {"x": x, "w": d(F32, 3, 16)},
             opset=23),
    ]
    for t in (F32, F16, I32, I64, F64):
        cases += [Case(f"MatMul/{name_of(t)}/{a}x{b}", [node("MatMul", ["a", "b"])], {"a": d(t, *a), "b": d(t, *b)})
                  for a, b in (((3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4, 5)), ((2, 3, 4), (4,)),
                               ((4,), (4,)))]
    cases += [
        Case("MatMul/weight", [node("MatMul", ["x", "w"])], {"x": d(F32, 2, 3, 8)}, inits={"w": d(F32, 8, 5)}),
        Case("MatMul/weight+bias", [node("MatMul", ["x", "w"], "p"), node("Add", ["p", "b"])], {"x": d(F32, 3, 8)},
             inits={"w": d(F32, 8, 5), "b": d(F32, 5)}),
        Case("MatMul/u32", [node("MatMul", ["a", "b"])], {"a": d(U32, 3, 4), "b": d(U32, 4, 2)}),
    ]
    for ta in (0, 1):
        for tb in (0, 1):
            a = d(F32, *((5, 3) if ta else (3, 5)))
            bm = d(F32, *((4, 5) if tb else (5, 4)))
            for c_shape in ((4,), (3, 1), (1, 4), (3, 4), ()):
                cases.append(Case(f"Gemm/tA{ta}tB{tb}/C{c_shape}", [node("Gemm", ["a", "b", "c"], alpha=0.5, beta=2.0,
                                                                         transA=ta, transB=tb)],
                                  {"a": a, "b": bm, "c": d(F32, *c_shape)}))
            cases.append(Case(f"Gemm/tA{ta}tB{tb}/weight", [node("Gemm", ["a", "w", "c"], transA=ta, transB=tb)],
                              {"a": a}, inits={"w": bm, "c": d(F32, 4)}))
    cases += [Case("Gemm/no-C", [node("Gemm", ["a", "w"], alpha=3.0)], {"a": d(F32, 3, 5)}, inits={"w": d(F32, 5, 4)}),
              Case("Gemm/beta0", [node("Gemm", ["a", "w", "c"], beta=0.0)], {"a": d(F32, 3, 5), "c": d(F32, 4)},
                   inits={"w": d(F32, 5, 4)})]
    return cases


# -- reductions, scans, masks ----------------------------------------------------------------------
def reduce_cases() -> list[Case]:
    cases = []
    for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL1", "ReduceL2",
               "ReduceLogSumExp"):
        for axes, keep in (([1], 1), ([0, -1], 0), (None, 1), (None, 0)):
            inputs = ["x"] if axes is None else ["x", "axes"]
            inits = {} if axes is None else {"axes": i64(*axes)}
            cases.append(Case(f"{op}/{axes}/keep{keep}", [node(op, inputs, keepdims=keep)], {"x": d(F32, 3, 4, 5)},
                              inits=inits))
        cases.append(Case(f"{op}/noop", [node(op, ["x", "axes"], noop_with_empty_axes=1)], {"x": d(F32, 3, 4) / 4},
                          inits={"axes": np.zeros(0, np.int64)}))
    for op in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin"):
        for t in (I32, I64):
            cases.append(Case(f"{op}/{name_of(t)}", [node(op, ["x", "axes"])], {"x": d(t, 3, 4)}, inits={"axes": i64(1)}))
        cases.append(Case(f"{op}/opset13-attr", [node(op, ["x"], axes=[0, 2], keepdims=0)] if op != "ReduceSum" else
                          [node(op, ["x", "axes"], keepdims=0)], {"x": d(F32, 3, 4, 5)}, opset=13,
                          inits={"axes": i64(0, 2)} if op == "ReduceSum" else {}))
    cases.append(Case("ReduceMax/u8", [node("ReduceMax", ["x"], keepdims=0)], {"x": d(U8, 3, 4)}))
    cases.append(Case("ReduceProd/shape", [node("Shape", ["x"], "s"), node("ReduceProd", ["s"], "n", keepdims=1),
                                           node("Reshape", ["x", "n"])], {"x": d(F32, 3, 4, 5)}, dims={"x": ["N", 4, 5]}))
    for t in (F32, I32, I64):
        for exclusive in (0, 1):
            for reverse in (0, 1):
                cases.append(Case(f"CumSum/{name_of(t)}/ex{exclusive}rev{reverse}",
                                  [node("CumSum", ["x", "axis"], exclusive=exclusive, reverse=reverse)],
                                  {"x": d(t, 3, 5)}, inits={"axis": np.int64(-1 if t == F32 else 0)}))
    cases.append(Case("CumSum/symbolic", [node("CumSum", ["x", "axis"], exclusive=1, reverse=1)], {"x": d(F32, 4, 3)},
                      inits={"axis": np.int32(0)}, dims={"x": ["N", 3]}))
    for upper in (0, 1):
        for k in (-1, 0, 2):
            cases.append(Case(f"Trilu/upper{upper}/k{k}", [node("Trilu", ["x", "k"], upper=upper)],
                              {"x": d(F32, 2, 4, 5)}, inits={"k": np.int64(k)}))
    cases.append(Case("Trilu/i64/symbolic", [node("Trilu", ["x"])], {"x": d(I64, 3, 3)}, dims={"x": ["N", "N"]}))
    for op in ("ArgMax", "ArgMin"):
        for keep in (0, 1):
            for last in (0, 1):
                cases.append(Case(f"{op}/keep{keep}/last{last}", [node(op, ["x"], axis=1, keepdims=keep,
                                                                        select_last_index=last)],
                                  {"x": np.round(d(F32, 3, 6))}))  # rounded: ties
        cases.append(Case(f"{op}/i32", [node(op, ["x"], axis=-1)], {"x": d(I32, 3, 6) % 5}))
    for largest in (0, 1):
        cases.append(Case(f"TopK/largest{largest}", [node("TopK", ["x", "k"], ["v", "i"], axis=1, largest=largest)],
                          {"x": np.round(d(F32, 3, 7))}, inits={"k": i64(3)}, outputs=("v", "i")))
    cases.append(Case("TopK/u8-smallest", [node("TopK", ["x", "k"], ["v", "i"], largest=0)],
                      {"x": d(U8, 2, 6)}, inits={"k": i64(2)}, outputs=("v", "i")))
    return cases


CASES = [*elementwise_cases(), *unary_cases(), *cast_cases(), *nn_cases(), *reduce_cases()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_op_matches_onnxruntime(case: Case) -> None:
    check(case)


SWEEP = [binary_case(op, t, a, b) for op in ("Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Less", "Greater")
         for t in ARITH_TYPES for a, b in BROADCASTS
         if not (op in ("Max", "Min") and t in (I16, U16))]


@pytest.mark.slow
@pytest.mark.parametrize("case", SWEEP, ids=lambda c: c.id)
def test_binary_sweep_matches_onnxruntime(case: Case) -> None:
    check(case)
