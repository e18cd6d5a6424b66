"""ONNX shape, data-movement and indexing ops one by one against onnxruntime: static shapes, and
symbolic dims whose shape operands (Reshape's shape, Slice's bounds, Expand's shape, ...) are
computed at run time by Shape subgraphs and fold at import."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import helper  # noqa: E402
from onnx_cases import Case, check, data, node  # noqa: E402

RNG = np.random.default_rng(99)
F32, I32, I64 = np.float32, np.int32, np.int64
BIG = 1 << 62


def d(dtype: object, *shape: int) -> np.ndarray:
    return data(RNG, dtype, shape)


def i64(*values: int) -> np.ndarray:
    return np.asarray(values, np.int64)


def first_dim(x: str = "x", out: str = "n") -> list:
    """``n = Shape(x)[0:1]``: the run-time size of a symbolic dim, as a [1] tensor."""
    return [node("Shape", [x], out, end=1)]


def reshape_cases() -> list[Case]:
    x = d(F32, 3, 4, 5)
    cases = [Case(f"Reshape/{shape}", [node("Reshape", ["x", "s"])], {"x": x}, inits={"s": i64(*shape)})
             for shape in ((0, -1), (-1,), (5, 0, 3), (3, 2, 2, 5), (60, 1))]
    cases += [
        Case("Reshape/allowzero", [node("Reshape", ["x", "s"], allowzero=1)], {"x": x}, inits={"s": i64(12, 5)}),
        Case("Reshape/symbolic", [*first_dim(), node("Concat", ["n", "m1"], "s", axis=0), node("Reshape", ["x", "s"])],
             {"x": x}, inits={"m1": i64(-1)}, dims={"x": ["N", 4, 5]}),
        Case("Reshape/torch-pattern", [node("Shape", ["x"], "s"), node("Gather", ["s", "zero"], "b", axis=0),
                                       node("Unsqueeze", ["b", "axes"], "b1"), node("Concat", ["b1", "rest"], "t", axis=0),
                                       node("Reshape", ["x", "t"])],
             {"x": x}, inits={"zero": np.int64(0), "axes": i64(0), "rest": i64(2, 10)}, dims={"x": ["B", 4, 5]}),
        Case("Reshape/symbolic-product", [node("Shape", ["x"], "s", start=1), node("ReduceProd", ["s"], "p", keepdims=1),
                                          node("Concat", ["m1", "p"], "t", axis=0), node("Reshape", ["x", "t"])],
             {"x": x}, inits={"m1": i64(-1)}, dims={"x": [3, "H", 5]}),
    ]
    for axis in (0, 1, 2, -1):
        cases.append(Case(f"Flatten/axis{axis}", [node("Flatten", ["x"], axis=axis)], {"x": x}, dims={"x": ["N", 4, 5]}))
    cases += [
        Case("Squeeze/axes", [node("Squeeze", ["x", "a"])], {"x": d(F32, 1, 3, 1, 2)}, inits={"a": i64(0, -2)}),
        Case("Squeeze/all", [node("Squeeze", ["x"])], {"x": d(I64, 1, 3, 1, 2)}),
        Case("Squeeze/symbolic", [node("Squeeze", ["x", "a"])], {"x": d(F32, 3, 1)}, inits={"a": i64(1)},
             dims={"x": ["N", 1]}),
        Case("Unsqueeze/axes", [node("Unsqueeze", ["x", "a"])], {"x": d(F32, 3, 2)}, inits={"a": i64(0, 3)}),
        Case("Unsqueeze/negative", [node("Unsqueeze", ["x", "a"])], {"x": d(F32, 3, 2)}, inits={"a": i64(-1, 1)}),
        Case("Unsqueeze/scalar", [node("Unsqueeze", ["x", "a"])], {"x": d(I32)}, inits={"a": i64(0)}),
        Case("Transpose/default", [node("Transpose", ["x"])], {"x": x}),
        Case("Transpose/perm", [node("Transpose", ["x"], perm=[1, 0, 2])], {"x": x}, dims={"x": ["N", 4, "M"]}),
        Case("Transpose/bool", [node("Transpose", ["x"], perm=[1, 0])], {"x": d(bool, 3, 4)}),
    ]
    return cases


def join_cases() -> list[Case]:
    cases = [
        Case("Concat/axis0", [node("Concat", ["a", "b", "c"], axis=0)], {"a": d(F32, 2, 3), "b": d(F32, 1, 3),
                                                                         "c": d(F32, 4, 3)}),
        Case("Concat/axis-1/const", [node("Concat", ["a", "k"], axis=-1)], {"a": d(I64, 2, 3)}, inits={"k": d(I64, 2, 2)}),
        Case("Concat/symbolic", [node("Concat", ["a", "b"], axis=1)], {"a": d(F32, 2, 3), "b": d(F32, 2, 4)},
             dims={"a": [2, "M"], "b": [2, "K"]}),
        Case("Split/sizes", [node("Split", ["x", "s"], ["y0", "y1", "y2"], axis=1)], {"x": d(F32, 2, 6)},
             inits={"s": i64(2, 3, 1)}, outputs=("y0", "y1", "y2")),
        Case("Split/num_outputs", [node("Split", ["x"], ["y0", "y1", "y2"], num_outputs=3)], {"x": d(F32, 7, 2)},
             outputs=("y0", "y1", "y2")),
        Case("Split/equal-opset13", [node("Split", ["x"], ["y0", "y1"], axis=-1)], {"x": d(I32, 3, 4)}, opset=13,
             outputs=("y0", "y1")),
        Case("Split/symbolic", [node("Split", ["x"], ["y0", "y1"], axis=1, num_outputs=2)], {"x": d(F32, 3, 4)},
             dims={"x": ["N", 4]}, outputs=("y0", "y1")),
        Case("Split/symbolic-sizes", [node("Split", ["x", "s"], ["y0", "y1"], axis=0)], {"x": d(F32, 6, 2)},
             inits={"s": i64(2, 4)}, dims={"x": [6, "M"]}, outputs=("y0", "y1")),
        Case("Expand/static", [node("Expand", ["x", "s"])], {"x": d(F32, 3, 1)}, inits={"s": i64(2, 3, 4)}),
        Case("Expand/bidirectional", [node("Expand", ["x", "s"])], {"x": d(I64, 4)}, inits={"s": i64(3, 1)}),
        Case("Expand/runtime-shape", [node("Shape", ["z"], "s"), node("Expand", ["x", "s"])],
             {"x": d(F32, 1, 4), "z": d(F32, 3, 4)}, dims={"z": ["N", 4]}),
        Case("Expand/bool", [node("Expand", ["x", "s"])], {"x": d(bool, 1, 2)}, inits={"s": i64(3, 2)}),
        Case("Tile/static", [node("Tile", ["x", "r"])], {"x": d(F32, 2, 3)}, inits={"r": i64(2, 3)}),
        Case("Tile/one-axis", [node("Tile", ["x", "r"])], {"x": d(I32, 2, 3)}, inits={"r": i64(1, 4)}),
        Case("Tile/symbolic", [node("Tile", ["x", "r"])], {"x": d(F32, 2, 3)}, inits={"r": i64(2, 2)},
             dims={"x": ["N", 3]}),
        Case("Tile/runtime-repeats", [node("Shape", ["z"], "n", end=1), node("Concat", ["one", "n"], "r", axis=0),
                                      node("Tile", ["x", "r"])], {"x": d(F32, 2, 3), "z": d(F32, 4)},
             inits={"one": i64(1)}, dims={"z": ["K"]}),
        Case("Split/runtime-sizes", [node("Concat", ["a", "b"], "ab", axis=0), node("Shape", ["a"], "na", end=1),
                                     node("Shape", ["b"], "nb", end=1), node("Concat", ["na", "nb"], "s", axis=0),
                                     node("Split", ["ab", "s"], ["y0", "y1"], axis=0)],
             {"a": d(F32, 2, 3), "b": d(F32, 4, 3)}, dims={"a": ["N", 3], "b": ["M", 3]}, outputs=("y0", "y1")),
        Case("ReduceSum/runtime-axes", [node("Shape", ["x"], "s"), node("Shape", ["s"], "r"), node("Sub", ["r", "one"], "a"),
                                        node("ReduceSum", ["x", "a"], keepdims=0)], {"x": d(F32, 2, 3, 4)},
             inits={"one": i64(1)}, dims={"x": ["N", 3, 4]}),
        Case("Unsqueeze/runtime-axes", [node("Shape", ["x"], "s"), node("Shape", ["s"], "a"),
                                        node("Unsqueeze", ["x", "a"])], {"x": d(F32, 2, 3)}, dims={"x": ["N", 3]}),
    ]
    return cases


SLICES = [([1], [4], [0], None), ([-3], [BIG], [1], None), ([0, 1], [5, -1], [0, 2], [2, 3]), ([4], [-BIG], [0], [-1]),
          ([-1], [0], [2], [-2]), ([10], [-10], [1], [-3]), ([2], [2], [0], None), ([1, 0], [-1, 3], [-1, -3], None),
          ([5], [1], [1], [-2])]


def slice_cases() -> list[Case]:
    x = d(F32, 5, 6, 7)
    cases = []
    for starts, ends, axes, steps in SLICES:
        inputs, inits = ["x", "s", "e", "a"], {"s": i64(*starts), "e": i64(*ends), "a": i64(*axes)}
        if steps is not None:
            inputs.append("t")
            inits["t"] = i64(*steps)
        cases.append(Case(f"Slice/{starts}:{ends}:{steps}@{axes}", [node("Slice", inputs)], {"x": x}, inits=inits))
    cases.append(Case("Slice/no-axes", [node("Slice", ["x", "s", "e"])], {"x": x}, inits={"s": i64(1, 2), "e": i64(3, 5)}))
    cases.append(Case("Slice/int32-bounds", [node("Slice", ["x", "s", "e", "a"])], {"x": x},
                      inits={"s": np.asarray([1], I32), "e": np.asarray([-1], I32), "a": np.asarray([2], I32)}))
    sym = {"x": ["N", 6, 7]}
    cases += [
        Case("Slice/symbolic", [node("Slice", ["x", "s", "e", "a"])], {"x": x}, inits={"s": i64(1), "e": i64(-1),
                                                                                       "a": i64(0)}, dims=sym),
        Case("Slice/symbolic-reverse", [node("Slice", ["x", "s", "e", "a", "t"])], {"x": x},
             inits={"s": i64(-1), "e": i64(-BIG), "a": i64(0), "t": i64(-1)}, dims=sym),
        Case("Slice/symbolic-reverse-tail", [node("Slice", ["x", "s", "e", "a", "t"])], {"x": x},
             inits={"s": i64(-1), "e": i64(-4), "a": i64(0), "t": i64(-1)}, dims=sym),
        Case("Slice/runtime-end", [*first_dim(), node("Sub", ["n", "two"], "e"), node("Slice", ["x", "one", "e", "zero"])],
             {"x": x}, inits={"two": i64(2), "one": i64(1), "zero": i64(0)}, dims=sym),
        Case("Slice/const-by-symbolic", [*first_dim(), node("Slice", ["table", "zero", "n", "zero"], "rows"),
                                         node("Add", ["x", "rows"])],
             {"x": d(F32, 3, 4)}, inits={"table": d(F32, 16, 4), "zero": i64(0)}, dims={"x": ["N", 4]}),
    ]
    return cases


def value_cases() -> list[Case]:
    sym = {"x": ["N", 3]}
    x = d(F32, 4, 3)
    return [
        Case("Shape/start-end", [node("Shape", ["x"], "s", start=-2, end=-1), node("Cast", ["s"], to=1)],
             {"x": d(F32, 2, 3, 4)}),
        Case("Shape/output", [node("Shape", ["x"])], {"x": x}, dims=sym),
        Case("Size", [node("Size", ["x"])], {"x": x}, dims=sym),
        Case("ConstantOfShape/symbolic", [node("Shape", ["x"], "s"),
                                          node("ConstantOfShape", ["s"], value=helper.make_tensor("v", 1, [1], [2.5]))],
             {"x": x}, dims=sym),
        Case("ConstantOfShape/int64", [node("ConstantOfShape", ["s"], value=helper.make_tensor("v", 7, [1], [7]))],
             {"x": x}, inits={"s": i64(2, 3)}, outputs=("y",)),
        Case("ConstantOfShape/default", [*first_dim(), node("ConstantOfShape", ["n"]), node("Add", ["y", "y"], "z")],
             {"x": x}, dims=sym, outputs=("z",)),
        Case("Constant/value_ints", [node("Constant", [], "c", value_ints=[1, 2, 3]), node("Add", ["i", "c"])],
             {"i": d(I64, 2, 3)}),
        Case("Constant/value_float", [node("Constant", [], "c", value_float=0.5), node("Mul", ["x", "c"])], {"x": x}),
        Case("Constant/value", [node("Constant", [], "c", value=helper.make_tensor("v", 6, [3], [1, -2, 3])),
                                node("Mul", ["i", "c"])], {"i": d(I32, 2, 3)}),
        Case("Range/int", [node("Range", ["a", "b", "c"])], {"x": x}, inits={"a": np.int64(2), "b": np.int64(11),
                                                                            "c": np.int64(3)}),
        Case("Range/float", [node("Range", ["a", "b", "c"])], {"x": x},
             inits={"a": np.float32(0.1), "b": np.float32(2.0), "c": np.float32(0.3)}),
        Case("Range/negative", [node("Range", ["a", "b", "c"])], {"x": x},
             inits={"a": np.int32(5), "b": np.int32(-4), "c": np.int32(-2)}),
        Case("Range/symbolic", [node("Shape", ["x"], "s"), node("Gather", ["s", "zero"], "n"),
                                node("Range", ["zero", "n", "one"])],
             {"x": x}, inits={"zero": np.int64(0), "one": np.int64(1)}, dims=sym),
        Case("Range/symbolic-down", [node("Shape", ["x"], "s"), node("Gather", ["s", "zero"], "n"),
                                     node("Sub", ["n", "one"], "top"), node("Range", ["top", "m1", "m1"])],
             {"x": x}, inits={"zero": np.int64(0), "one": np.int64(1), "m1": np.int64(-1)}, dims=sym),
    ]


def index_cases() -> list[Case]:
    x = d(F32, 4, 5)
    cases = [
        Case("Gather/axis0", [node("Gather", ["x", "i"])], {"x": x, "i": i64(2, -1, 0)}),
        Case("Gather/axis1-scalar", [node("Gather", ["x", "i"], axis=1)], {"x": x, "i": np.asarray(-2, I64)}),
        Case("Gather/int32-2d", [node("Gather", ["x", "i"], axis=-1)], {"x": x, "i": np.asarray([[0, 4], [1, 1]], I32)}),
        Case("Gather/const-table", [node("Gather", ["t", "i"])], {"i": i64(3, -1, 0)}, inits={"t": d(F32, 6, 4)}),
        Case("Gather/symbolic", [node("Gather", ["x", "i"], axis=1)], {"x": x, "i": i64(1, 3)}, dims={"x": ["N", 5]}),
        Case("GatherElements/axis1", [node("GatherElements", ["x", "i"], axis=1)],
             {"x": x, "i": RNG.integers(-5, 5, (4, 3))}),
        Case("GatherElements/axis0", [node("GatherElements", ["x", "i"], axis=0)],
             {"x": x, "i": RNG.integers(-4, 4, (2, 5)).astype(I32)}),
        Case("GatherElements/3d", [node("GatherElements", ["x", "i"], axis=2)],
             {"x": d(I64, 2, 3, 4), "i": RNG.integers(0, 4, (2, 2, 5))}),
        Case("GatherElements/symbolic", [node("GatherElements", ["x", "i"], axis=1)],
             {"x": x, "i": RNG.integers(0, 5, (4, 2))}, dims={"x": ["N", 5], "i": ["N", 2]}),
        Case("GatherND/k2", [node("GatherND", ["x", "i"])], {"x": d(F32, 2, 3, 4), "i": i64(0, 2, 1, -1).reshape(2, 2)}),
        Case("GatherND/k1", [node("GatherND", ["x", "i"])], {"x": d(F32, 2, 3, 4), "i": i64(1, 0, 1).reshape(3, 1)}),
        Case("GatherND/k3", [node("GatherND", ["x", "i"])], {"x": d(I32, 2, 3, 4), "i": i64(1, 2, 3, 0, 0, 0).reshape(2, 3)}),
        Case("GatherND/batch1", [node("GatherND", ["x", "i"], batch_dims=1)],
             {"x": d(F32, 2, 3, 4), "i": i64(2, 0, 1, 1).reshape(2, 2, 1)}),
        Case("GatherND/batch1-k2", [node("GatherND", ["x", "i"], batch_dims=1)],
             {"x": d(F32, 2, 3, 4), "i": i64(2, 3, 0, 1).reshape(2, 2)}),
    ]
    for reduction in ("none", "add", "max", "min"):
        for t in (F32, I64):
            cases.append(Case(f"ScatterND/{reduction}/{np.dtype(t).name}",
                              [node("ScatterND", ["x", "i", "u"], reduction=reduction)],
                              {"x": d(t, 4, 5), "i": i64(1, 3, -4).reshape(3, 1), "u": d(t, 3, 5)}, opset=18))
        cases.append(Case(f"ScatterND/k2/{reduction}", [node("ScatterND", ["x", "i", "u"], reduction=reduction)],
                          {"x": d(F32, 3, 4, 2), "i": i64(0, 1, 2, 3).reshape(2, 2), "u": d(F32, 2, 2)}, opset=18))
        cases.append(Case(f"ScatterElements/{reduction}", [node("ScatterElements", ["x", "i", "u"], axis=1,
                                                                reduction=reduction)],
                          {"x": d(F32, 3, 4), "i": i64(1, 0, 3, -1, 0, 2).reshape(3, 2), "u": d(F32, 3, 2)}, opset=18))
    cases.append(Case("ScatterND/duplicates-add", [node("ScatterND", ["x", "i", "u"], reduction="add")],
                      {"x": d(I64, 4), "i": i64(1, 1, 2).reshape(3, 1), "u": d(I64, 3)}))
    cases.append(Case("ScatterND/symbolic", [node("ScatterND", ["x", "i", "u"])],
                      {"x": d(F32, 4, 5), "i": i64(1, 0).reshape(2, 1), "u": d(F32, 2, 5)}, dims={"x": ["N", 5]}))
    return cases


CASES = [*reshape_cases(), *join_cases(), *slice_cases(), *value_cases(), *index_cases()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_op_matches_onnxruntime(case: Case) -> None:
    check(case)
