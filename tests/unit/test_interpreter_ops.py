"""Reference semantics of every op: one-node modules through the interpreter against PyTorch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from ir_fixtures import build_every_op_module, fill_params, one_node, run1, run_op

from llmc.ir import (
    BF16,
    BOOL,
    F16,
    F32,
    I32,
    I64,
    OPS,
    Builder,
    Dim,
    DType,
    Function,
    InferError,
    InterpreterError,
    Module,
    TensorType,
    run_function,
)
from llmc.ir.cluster import run_cluster

torch = pytest.importorskip("torch")
F = torch.nn.functional

I8 = DType.parse("i8")
U8 = DType.parse("u8")


def tt(shape, dtype=F32) -> TensorType:
    return TensorType.of(shape, dtype)


def close(got: np.ndarray, want, rtol=1e-6, atol=1e-6) -> None:
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


def exact(got: np.ndarray, want) -> None:
    want = want.detach().numpy() if isinstance(want, torch.Tensor) else np.asarray(want)
    assert got.shape == want.shape
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------------------------

UNARY = {
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "reciprocal": torch.reciprocal,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "silu": F.silu,
    "erf": torch.erf,
    "cos": torch.cos,
    "sin": torch.sin,
    "gelu": lambda x: F.gelu(x, approximate="none"),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "neg": torch.neg,
    "abs": torch.abs,
    "relu": torch.relu,
}
POSITIVE_ONLY = {"log", "sqrt", "rsqrt"}


@pytest.mark.parametrize("op", list(UNARY))
def test_unary_float(op, rng):
    x = (rng.standard_normal((3, 5, 7)) * 3).astype(np.float32)
    if op in POSITIVE_ONLY:
        x = np.abs(x) + np.float32(0.01)
    x[0, 0, :3] = [0.0, -0.0, 1e-30] if op not in POSITIVE_ONLY else [0.5, 1.0, 2.0]
    got = run1(op, [tt([3, 5, 7])], [x])
    assert got.dtype == np.float32
    close(got, UNARY[op](torch.from_numpy(x)), rtol=2e-6, atol=1e-6)


def test_gelu_variants_differ():
    x = np.linspace(-4, 4, 33, dtype=np.float32)
    erf = run1("gelu", [tt([33])], [x])
    tanh = run1("gelu_tanh", [tt([33])], [x])
    assert 1e-5 < np.max(np.abs(erf - tanh)) < 1e-2


@pytest.mark.parametrize("op,dtype", [("neg", I8), ("abs", I8), ("relu", I32), ("neg", I64)])
def test_unary_int(op, dtype, rng):
    x = rng.integers(-128, 128, size=(4, 6)).astype(dtype.numpy())
    x[0, 0] = -128 if dtype == I8 else x[0, 0]
    got = run1(op, [tt([4, 6], dtype)], [x])
    exact(got, UNARY[op](torch.from_numpy(x)))  # torch wraps -(-128) to -128 for int8 too


def test_logical_not(rng):
    x = rng.random((3, 4)) > 0.5
    exact(run1("logical_not", [tt([3, 4], BOOL)], [x]), torch.logical_not(torch.from_numpy(x)))


BINARY = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "pow": torch.pow,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "eq": torch.eq,
    "ne": torch.ne,
    "lt": torch.lt,
    "le": torch.le,
    "gt": torch.gt,
    "ge": torch.ge,
}
SHAPES = [([2, 3, 4], [2, 3, 4]), ([2, 1, 4], [3, 1]), ([4], [2, 3, 4]), ([], [2, 3]), ([2, 3], [])]


@pytest.mark.parametrize("op", list(BINARY))
@pytest.mark.parametrize("sa,sb", SHAPES, ids=lambda s: "x".join(map(str, s)) or "scalar")
def test_binary_float_broadcast(op, sa, sb, rng):
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    if op == "pow":
        a = np.asarray(np.abs(a) + np.float32(0.1), np.float32)
    if op in ("eq", "ne", "le", "ge") and a.size and b.size:
        a.flat[0] = b.flat[0]  # make equality happen somewhere
    got = run1(op, [tt(sa), tt(sb)], [a, b])
    want = BINARY[op](torch.from_numpy(a), torch.from_numpy(b))
    if want.dtype == torch.bool:
        exact(got, want)
    else:
        close(got, want, rtol=2e-6)


INT_BINARY = {
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": lambda a, b: torch.div(a, b, rounding_mode="trunc"),
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "lt": torch.lt,
    "eq": torch.eq,
}


@pytest.mark.parametrize("op", list(INT_BINARY))
@pytest.mark.parametrize("dtype", [I32, I64, I8])
def test_binary_int_exact(op, dtype, rng):
    a = rng.integers(-100, 100, size=(3, 1, 5)).astype(dtype.numpy())
    b = rng.integers(-100, 100, size=(4, 1)).astype(dtype.numpy())
    if op == "div":
        b[b == 0] = 7
    got = run1(op, [tt([3, 1, 5], dtype), tt([4, 1], dtype)], [a, b])
    exact(got, INT_BINARY[op](torch.from_numpy(a), torch.from_numpy(b)))


@pytest.mark.parametrize("op", ["logical_and", "logical_or"])
def test_logical_binary(op, rng):
    a, b = rng.random((2, 3)) > 0.5, rng.random((3,)) > 0.5
    want = getattr(torch, op)(torch.from_numpy(a), torch.from_numpy(b))
    exact(run1(op, [tt([2, 3], BOOL), tt([3], BOOL)], [a, b]), want)


def test_integer_wrap_semantics():
    i8 = tt([4], I8)
    a = np.array([127, -128, 100, -1], np.int8)
    exact(run1("add", [i8, i8], [a, np.array([1, -1, 100, 1], np.int8)]), np.array([-128, 127, -56, 0], np.int8))
    exact(run1("sub", [i8, i8], [a, np.array([-1, 1, -100, 0], np.int8)]), np.array([-128, 127, -56, -1], np.int8))
    exact(run1("mul", [i8, i8], [a, np.array([2, 2, 3, 16], np.int8)]), np.array([-2, 0, 44, -16], np.int8))
    # torch agrees (two's complement wrap on int8)
    ta, tb = torch.tensor([127, 16], dtype=torch.int8), torch.tensor([1, 16], dtype=torch.int8)
    exact(run1("add", [tt([2], I8)] * 2, [ta.numpy(), tb.numpy()]), ta + tb)
    exact(run1("mul", [tt([2], I8)] * 2, [ta.numpy(), tb.numpy()]), ta * tb)
    # narrow widths stored in int8 wrap at their own width
    i4 = tt([3], DType.parse("i4"))
    exact(run1("add", [i4, i4], [np.array([7, -8, 3], np.int8), np.array([1, -1, 3], np.int8)]), np.array([-8, 7, 6], np.int8))
    u4 = tt([2], DType.parse("u4"))
    exact(run1("sub", [u4, u4], [np.array([0, 15], np.uint8), np.array([1, 15], np.uint8)]), np.array([15, 0], np.uint8))
    # integer division truncates toward zero, like C
    i32 = tt([4], I32)
    got = run1("div", [i32, i32], [np.array([7, -7, 7, -7], np.int32), np.array([2, 2, -2, -2], np.int32)])
    exact(got, np.array([3, -3, -3, 3], np.int32))


def test_float16_and_bf16_elementwise_round_like_torch(rng):
    a = rng.standard_normal((64,)).astype(np.float16)
    b = rng.standard_normal((64,)).astype(np.float16)
    for op in ("add", "mul", "div"):
        got = run1(op, [tt([64], F16)] * 2, [a, b])
        exact(got, BINARY[op](torch.from_numpy(a), torch.from_numpy(b)))
    ta = torch.from_numpy(rng.standard_normal((64,)).astype(np.float32)).to(torch.bfloat16)
    tb = torch.from_numpy(rng.standard_normal((64,)).astype(np.float32)).to(torch.bfloat16)
    for op in ("add", "sub", "mul", "div"):
        got = run1(op, [tt([64], BF16)] * 2, [ta.float().numpy(), tb.float().numpy()])
        assert got.dtype == np.float32
        exact(got, BINARY[op](ta, tb).float())


def test_where_broadcast(rng):
    c = rng.random((2, 1, 4)) > 0.5
    a = rng.standard_normal((3, 1)).astype(np.float32)
    b = rng.standard_normal((4,)).astype(np.float32)
    got = run1("where", [tt([2, 1, 4], BOOL), tt([3, 1]), tt([4])], [c, a, b])
    exact(got, torch.where(torch.from_numpy(c), torch.from_numpy(a), torch.from_numpy(b)))


# ---------------------------------------------------------------------------------------------
# Casts and rounding
# ---------------------------------------------------------------------------------------------


def test_cast_float_to_int_truncates():
    x = np.array([-3.7, -0.5, 0.0, 0.9, 2.5, 3.99, -100.2, 126.9], np.float32)
    got = run1("cast", [tt([8])], [x], {"dtype": I32})
    exact(got, torch.from_numpy(x).to(torch.int32))
    exact(got, np.array([-3, 0, 0, 0, 2, 3, -100, 126], np.int32))
    exact(run1("cast", [tt([8])], [x], {"dtype": I8}), torch.from_numpy(x).to(torch.int8))
    # out of range: truncate, then wrap
    big = np.array([300.5, -129.0, 255.9], np.float32)
    exact(run1("cast", [tt([3])], [big], {"dtype": I8}), np.array([44, 127, -1], np.int8))
    exact(run1("cast", [tt([3])], [big], {"dtype": U8}), np.array([44, 127, 255], np.uint8))


def test_cast_int_wraps_and_bool(rng):
    x = np.array([300, -129, 127, -128, 255, 65536 + 5], np.int32)
    exact(run1("cast", [tt([6], I32)], [x], {"dtype": I8}), torch.from_numpy(x).to(torch.int8))
    exact(run1("cast", [tt([6], I32)], [x], {"dtype": U8}), torch.from_numpy(x).to(torch.uint8))
    exact(run1("cast", [tt([6], I32)], [x], {"dtype": BOOL}), torch.from_numpy(x).to(torch.bool))
    f = np.array([0.0, -0.0, 0.1, np.nan, -2.0], np.float32)
    exact(run1("cast", [tt([5])], [f], {"dtype": BOOL}), torch.from_numpy(f).to(torch.bool))
    b = rng.random(7) > 0.5
    exact(run1("cast", [tt([7], BOOL)], [b], {"dtype": F32}), torch.from_numpy(b).to(torch.float32))
    exact(run1("cast", [tt([7], BOOL)], [b], {"dtype": I64}), torch.from_numpy(b).to(torch.int64))
    exact(run1("cast", [tt([5], I32)], [x[:5]], {"dtype": F16}), torch.from_numpy(x[:5]).to(torch.float16))


def test_cast_to_bf16_rounds_ties_to_even(rng):
    patterns = np.array(
        [
            0x3F808000,  # halfway between bf16 0x3F80 and 0x3F81: ties to even -> 0x3F80
            0x3F818000,  # halfway between 0x3F81 and 0x3F82: ties to even -> 0x3F82
            0x3F808001,  # just above halfway -> rounds up
            0x3F807FFF,  # just below halfway -> rounds down
            0xBF818000,  # negative tie
            0x7F7FFFFF,  # float32 max rounds to +inf
            0x00008000,  # subnormal tie
            0x00018000,  # subnormal tie, odd -> rounds up
            0x7F800000,  # +inf
            0xFF800000,  # -inf
            0x7FC00000,  # nan
            0x80000000,  # -0.0
        ],
        np.uint32,
    ).view(np.float32)
    x = np.concatenate([patterns, (rng.standard_normal(500) * 10.0 ** rng.integers(-30, 30, 500)).astype(np.float32)])
    got = run1("cast", [tt([x.size])], [x], {"dtype": BF16})
    want = torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.view(np.uint32)[~np.isnan(want)], want.view(np.uint32)[~np.isnan(want)])
    assert np.isnan(got[10]) and np.isnan(want[10])
    assert got.view(np.uint32)[0] == 0x3F800000 and got.view(np.uint32)[1] == 0x3F820000


def test_bf16_inputs_are_rounded_on_entry():
    module = one_node("neg", [tt([2], BF16)])
    x = np.array([1.00390625, 1.0 + 2**-7 + 2**-9], np.float32)  # a tie and an above-tie value
    got = run_function(module, "f", {"a0": x})["out"]
    want = -torch.from_numpy(x).to(torch.bfloat16).float()
    exact(got, want)


# ---------------------------------------------------------------------------------------------
# Reductions and scans
# ---------------------------------------------------------------------------------------------

REDUCE = {
    "reduce_sum": lambda x, a, k: torch.sum(x, dim=a, keepdim=k),
    "reduce_mean": lambda x, a, k: torch.mean(x, dim=a, keepdim=k),
    "reduce_max": lambda x, a, k: torch.amax(x, dim=a, keepdim=k),
    "reduce_min": lambda x, a, k: torch.amin(x, dim=a, keepdim=k),
}


@pytest.mark.parametrize("op", list(REDUCE))
@pytest.mark.parametrize("axes", [[0], [-1], [0, 2], [-3, -2, -1]])
@pytest.mark.parametrize("keepdim", [True, False])
def test_reductions(op, axes, keepdim, rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    got = run1(op, [tt([3, 4, 5])], [x], {"axes": axes, "keepdim": keepdim})
    close(got, REDUCE[op](torch.from_numpy(x), axes, keepdim), rtol=1e-5)


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_max", "reduce_min"])
def test_int_reductions_exact(op, rng):
    x = rng.integers(-1000, 1000, (4, 6)).astype(np.int32)
    got = run1(op, [tt([4, 6], I32)], [x], {"axes": [1]})
    want = REDUCE[op](torch.from_numpy(x), [1], False)
    exact(got, want.to(torch.int32))


def test_reduce_duplicate_axes_are_one_axis(rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    got = run1("reduce_sum", [tt([3, 4])], [x], {"axes": [1, -1]})
    close(got, x.sum(axis=1), rtol=1e-6)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cumsum(axis, rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    close(run1("cumsum", [tt([3, 4, 5])], [x], {"axis": axis}), torch.cumsum(torch.from_numpy(x), axis), rtol=1e-5)
    i = rng.integers(-50, 50, (3, 4, 5)).astype(np.int64)
    exact(run1("cumsum", [tt([3, 4, 5], I64)], [i], {"axis": axis}), torch.cumsum(torch.from_numpy(i), axis))
    i8 = np.full((4,), 100, np.int8)
    exact(run1("cumsum", [tt([4], I8)], [i8], {"axis": 0}), np.array([100, -56, 44, -112], np.int8))


@pytest.mark.parametrize("axis", [0, -1, 1])
def test_softmax(axis, rng):
    x = (rng.standard_normal((2, 3, 6)) * 5).astype(np.float32)
    close(run1("softmax", [tt([2, 3, 6])], [x], {"axis": axis}), torch.softmax(torch.from_numpy(x), axis), rtol=1e-5)


@pytest.mark.parametrize("axis,k", [(-1, 2), (1, 3), (0, 1)])
def test_topk_matches_torch(axis, k, rng):
    x = rng.standard_normal((3, 5, 6)).astype(np.float32)
    values, indices = run_op("topk", [tt([3, 5, 6])], [x], {"k": k, "axis": axis})
    want = torch.topk(torch.from_numpy(x), k, dim=axis)
    exact(values, want.values)
    exact(indices, want.indices)


def test_topk_ties_keep_the_lower_index_first():
    values, indices = run_op("topk", [tt([5])], [np.array([1, 3, 3, 0, 3], np.float32)], {"k": 2, "axis": 0})
    exact(values, np.array([3, 3], np.float32))
    exact(indices, np.array([1, 2], np.int64))


def test_topk_k_outside_the_axis_is_refused():
    with pytest.raises(InferError, match="topk k=7 is outside"):
        run_op("topk", [tt([5])], [np.zeros(5, np.float32)], {"k": 7, "axis": 0})


def test_softmax_all_masked_row_is_nan():
    x = np.array([[-np.inf, -np.inf], [0.0, -np.inf]], np.float32)
    got = run1("softmax", [tt([2, 2])], [x], {"axis": -1})
    want = torch.softmax(torch.from_numpy(x), -1).numpy()
    assert np.isnan(got[0]).all() and np.isnan(want[0]).all()
    exact(got[1], want[1])


# ---------------------------------------------------------------------------------------------
# Data movement (exact)
# ---------------------------------------------------------------------------------------------


def test_reshape_transpose_expand(rng):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    exact(run1("reshape", [tt([2, 3, 4])], [x], {"shape": [6, 1, 4]}), torch.from_numpy(x).reshape(6, 1, 4))
    exact(run1("transpose", [tt([2, 3, 4])], [x], {"perm": [2, 0, 1]}), torch.from_numpy(x).permute(2, 0, 1))
    y = rng.standard_normal((3, 1)).astype(np.float32)
    exact(run1("expand", [tt([3, 1])], [y], {"shape": [2, 3, 5]}), torch.from_numpy(y).expand(2, 3, 5))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis, rng):
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    shapes[0][axis], shapes[2][axis] = 1, 5
    arrays = [rng.integers(-9, 9, s).astype(np.int64) for s in shapes]
    got = run1("concat", [tt(s, I64) for s in shapes], arrays, {"axis": axis})
    exact(got, torch.cat([torch.from_numpy(a) for a in arrays], dim=axis))


@pytest.mark.parametrize("axis,start,end,step", [(0, 1, 3, 1), (1, 0, 5, 2), (-1, 2, 4, 1), (1, 4, 4, 1), (2, 0, 3, 3)])
def test_slice(axis, start, end, step, rng):
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    got = run1("slice", [tt([3, 5, 4])], [x], {"axis": axis, "start": start, "end": end, "step": step})
    index = [slice(None)] * 3
    index[axis] = slice(start, end, step)
    exact(got, torch.from_numpy(x)[tuple(index)].contiguous())


def test_gather(rng):
    x = rng.standard_normal((3, 5, 4)).astype(np.float32)
    idx = np.array([4, 0, 2, 2], np.int64)
    exact(run1("gather", [tt([3, 5, 4]), tt([4], I64)], [x, idx], {"axis": 1}),
          torch.index_select(torch.from_numpy(x), 1, torch.from_numpy(idx)))
    idx2 = np.array([[1, 0], [3, 3], [0, 1]], np.int32)  # the indices' shape replaces the axis
    got = run1("gather", [tt([3, 5, 4]), tt([3, 2], I32)], [x, idx2], {"axis": -1})
    assert got.shape == (3, 5, 3, 2)
    exact(got, torch.from_numpy(x)[..., torch.from_numpy(idx2).long()])
    neg = run1("gather", [tt([3, 5, 4]), tt([2], I64)], [x, np.array([-1, -5], np.int64)], {"axis": 1})
    exact(neg, x[:, [4, 0], :])
    with pytest.raises(InterpreterError, match=r"^%out = gather: gather index out of range \[0, 5\)"):
        run1("gather", [tt([3, 5, 4]), tt([1], I64)], [x, np.array([5], np.int64)], {"axis": 1})


@pytest.mark.parametrize("start,end,step,dtype", [(0, 7, 1, I64), (2, 11, 3, I32), (5, 0, -2, I64), (0, 4, 1, F32), (3, 3, 1, I64), (5, 2, 1, I64), (5, 2, 2, I32)])
def test_iota(start, end, step, dtype):
    got = run1("iota", [], [], {"start": start, "end": end, "step": step, "dtype": dtype})
    exact(got, np.arange(start, end, step).astype(dtype.numpy()))
    if (end - start) * step >= 0:  # torch.arange refuses bounds against the step's sign
        tdt = {I64: torch.int64, I32: torch.int32, F32: torch.float32}[dtype]
        exact(got, torch.arange(start, end, step, dtype=tdt))


def test_iota_symbolic_bounds():
    m = Module("m")
    f = Function("f")
    b = Builder(m, f)
    b.input("cache", tt([1, "P"]))
    b.input("x", tt([1, "L"]))
    b.ret(b.op("iota", [], {"start": Dim.sym("P"), "end": Dim.parse("P+L"), "dtype": I64}, name="pos"))
    m.functions["f"] = f
    out = run_function(m, "f", {"cache": np.zeros((1, 3), np.float32), "x": np.zeros((1, 4), np.float32)})["pos"]
    exact(out, np.arange(3, 7, dtype=np.int64))


def test_constant():
    exact(run1("constant", [], [], {"value": 2.5, "shape": [2, 2], "dtype": F32}), np.full((2, 2), 2.5, np.float32))
    exact(run1("constant", [], [], {"value": [1, -2, 3, 4], "shape": [2, 2], "dtype": I8}),
          np.array([[1, -2], [3, 4]], np.int8))
    exact(run1("constant", [], [], {"value": -1.5, "shape": [], "dtype": I32}), np.array(-1, np.int32))
    big = 2**62 + 1  # not representable in float64
    exact(run1("constant", [], [], {"value": big, "shape": [1], "dtype": I64}), np.array([big], np.int64))
    exact(run1("constant", [], [], {"value": [1.00390625], "shape": [1], "dtype": BF16}), np.array([1.0], np.float32))


# ---------------------------------------------------------------------------------------------
# NN ops
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sa,sb", [([4, 3], [3, 5]), ([2, 4, 3], [3, 5]), ([2, 1, 4, 3], [3, 3, 5]), ([1, 3], [2, 3, 2])])
def test_matmul(sa, sb, rng):
    a = rng.standard_normal(sa).astype(np.float32)
    b = rng.standard_normal(sb).astype(np.float32)
    close(run1("matmul", [tt(sa), tt(sb)], [a, b]), torch.matmul(torch.from_numpy(a), torch.from_numpy(b)), rtol=1e-5)


def test_matmul_int_exact(rng):
    a = rng.integers(-50, 50, (2, 3, 4)).astype(np.int32)
    b = rng.integers(-50, 50, (4, 5)).astype(np.int32)
    exact(run1("matmul", [tt([2, 3, 4], I32), tt([4, 5], I32)], [a, b]), torch.matmul(torch.from_numpy(a), torch.from_numpy(b)))


@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias, rng):
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    w = rng.standard_normal((5, 8)).astype(np.float32)
    b = rng.standard_normal((5,)).astype(np.float32)
    types = [tt([2, 3, 8]), tt([5, 8])] + ([tt([5])] if bias else [])
    arrays = [x, w] + ([b] if bias else [])
    want = F.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b) if bias else None)
    close(run1("linear", types, arrays), want, rtol=1e-5, atol=1e-5)


def test_embedding(rng):
    table = rng.standard_normal((10, 4)).astype(np.float32)
    ids = rng.integers(0, 10, (2, 3)).astype(np.int64)
    exact(run1("embedding", [tt([10, 4]), tt([2, 3], I64)], [table, ids]),
          F.embedding(torch.from_numpy(ids), torch.from_numpy(table)))
    for bad in (10, -1):
        with pytest.raises(InterpreterError, match=r"^%out = embedding: token id out of range \[0, 10\)"):
            run1("embedding", [tt([10, 4]), tt([1], I64)], [table, np.array([bad], np.int64)])


@pytest.mark.parametrize("n_affine", [0, 1, 2])
def test_layer_norm(n_affine, rng):
    x = (rng.standard_normal((2, 3, 16)) * 3 + 1).astype(np.float32)
    w = rng.standard_normal(16).astype(np.float32)
    b = rng.standard_normal(16).astype(np.float32)
    got = run1("layer_norm", [tt([2, 3, 16])] + [tt([16])] * n_affine, [x, w, b][: 1 + n_affine], {"eps": 1e-5})
    tw = torch.from_numpy(w) if n_affine >= 1 else None
    tb = torch.from_numpy(b) if n_affine == 2 else None
    close(got, F.layer_norm(torch.from_numpy(x), (16,), tw, tb, eps=1e-5), rtol=1e-5, atol=1e-5)


def test_rms_norm(rng):
    x = (rng.standard_normal((2, 3, 16)) * 3).astype(np.float32)
    w = rng.standard_normal(16).astype(np.float32)
    got = run1("rms_norm", [tt([2, 3, 16]), tt([16])], [x, w], {"eps": 1e-6})
    xd = x.astype(np.float64)
    want = xd / np.sqrt(np.mean(xd * xd, axis=-1, keepdims=True) + 1e-6) * w
    close(got, want.astype(np.float32), rtol=1e-5, atol=1e-6)
    close(got, F.rms_norm(torch.from_numpy(x), (16,), torch.from_numpy(w), eps=1e-6), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("scale", [None, 0.3])
def test_attention_gqa(mask, scale, rng):
    B, H, Hkv, Lq, Lk, D = 2, 4, 2, 3, 5, 8
    q = rng.standard_normal((B, H, Lq, D)).astype(np.float32)
    k = rng.standard_normal((B, Hkv, Lk, D)).astype(np.float32)
    v = rng.standard_normal((B, Hkv, Lk, D)).astype(np.float32)
    m = np.triu(np.full((Lq, Lk), -np.inf, np.float32), k=Lk - Lq + 1)[None, None]  # causal with past
    m = m + rng.standard_normal((1, 1, Lq, Lk)).astype(np.float32)
    types = [tt([B, H, Lq, D]), tt([B, Hkv, Lk, D]), tt([B, Hkv, Lk, D])] + ([tt([1, 1, Lq, Lk])] if mask else [])
    got = run1("attention", types, [q, k, v] + ([m] if mask else []), {"scale": scale})
    want = F.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(v),
        attn_mask=torch.from_numpy(m) if mask else None, scale=scale, enable_gqa=True,
    )
    close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("normalize", [True, False])
def test_moe_is_the_weighted_sum_of_the_chosen_experts(normalize, rng):
    T, H, W, E, K = 3, 8, 5, 4, 2
    x = rng.standard_normal((T, H)).astype(np.float32)
    router = rng.standard_normal((E, H)).astype(np.float32)
    gate_up = rng.standard_normal((E, 2 * W, H)).astype(np.float32)
    down = rng.standard_normal((E, H, W)).astype(np.float32)
    got = run1("moe", [tt([T, H]), tt([E, H]), tt([E, 2 * W, H]), tt([E, H, W])], [x, router, gate_up, down],
               {"top_k": K, "normalize": normalize})
    p = torch.softmax(torch.from_numpy(x @ router.T), -1)
    values, chosen = torch.topk(p, K)
    if normalize:
        values = values / values.sum(-1, keepdim=True)
    want = torch.zeros(T, H)
    for t in range(T):
        for j in range(K):
            e = int(chosen[t, j])
            g, u = (torch.from_numpy(gate_up[e]) @ torch.from_numpy(x[t])).chunk(2)
            want[t] += values[t, j] * (torch.from_numpy(down[e]) @ (F.silu(g) * u))
    close(got, want, rtol=1e-5, atol=1e-5)


def test_attention_softcap_matches_gemma2s_eager_form(rng):
    q, k, v = (rng.standard_normal((1, 2, 3, 8)).astype(np.float32) * 4 for _ in range(3))
    m = np.triu(np.full((3, 3), -np.inf, np.float32), k=1)[None, None]
    got = run1("attention", [tt([1, 2, 3, 8])] * 3 + [tt([1, 1, 3, 3])], [q, k, v, m], {"scale": 0.25, "softcap": 2.0})
    scores = torch.from_numpy(q) @ torch.from_numpy(k).transpose(2, 3) * 0.25
    scores = torch.tanh(scores / 2.0) * 2.0 + torch.from_numpy(m)
    close(got, torch.softmax(scores, -1) @ torch.from_numpy(v), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# Symbolic shapes and interpreter input checks
# ---------------------------------------------------------------------------------------------


def test_symbolic_shapes_bound_at_run_time(rng):
    module = one_node("softmax", [tt([1, "L", 8])], {"axis": -1})
    for length in (1, 5):
        x = rng.standard_normal((1, length, 8)).astype(np.float32)
        got = run_function(module, "f", {"a0": x})["out"]
        close(got, torch.softmax(torch.from_numpy(x), -1), rtol=1e-5)
    module = one_node("concat", [tt([1, "P", 4]), tt([1, "L", 4])], {"axis": 1})
    a, b = np.ones((1, 0, 4), np.float32), np.zeros((1, 5, 4), np.float32)
    assert run_function(module, "f", {"a0": a, "a1": b})["out"].shape == (1, 5, 4)
    module = one_node("reshape", [tt([1, "L", 8])], {"shape": [Dim.sym("L"), 2, 4]})
    assert run_function(module, "f", {"a0": np.zeros((1, 3, 8), np.float32)})["out"].shape == (3, 2, 4)


def test_derived_input_dims_are_checked():
    module = one_node("add", [tt(["L"]), tt(["L"])])
    module = one_node("concat", [tt(["P"]), tt(["P+1"])], {"axis": 0})
    out = run_function(module, "f", {"a0": np.zeros(2, np.float32), "a1": np.ones(3, np.float32)})["out"]
    assert out.shape == (5,)
    with pytest.raises(InterpreterError, match=r"input %a1 dim P\+1 is 2, expected 3"):
        run_function(module, "f", {"a0": np.zeros(2, np.float32), "a1": np.ones(2, np.float32)})
    module = one_node("neg", [tt(["P+1"])])
    with pytest.raises(InterpreterError, match="cannot solve dimension symbol 'P'"):
        run_function(module, "f", {"a0": np.zeros(2, np.float32)})


def test_input_errors_name_the_input():
    module = one_node("add", [tt([1, "L"]), tt([1, "L"])])
    x = np.zeros((1, 3), np.float32)
    with pytest.raises(InterpreterError, match=r"^func @f: missing input %a1$"):
        run_function(module, "f", {"a0": x})
    with pytest.raises(InterpreterError, match=r"^func @f: input %a1 has rank 3, expected tensor<1xLxf32>$"):
        run_function(module, "f", {"a0": x, "a1": np.zeros((1, 3, 1), np.float32)})
    with pytest.raises(InterpreterError, match=r"^func @f: input %a1 gives L=4, another input gave 3$"):
        run_function(module, "f", {"a0": x, "a1": np.zeros((1, 4), np.float32)})
    with pytest.raises(InterpreterError, match=r"input %a0 dim 1 is 2, expected 1"):
        run_function(module, "f", {"a0": np.zeros((2, 3), np.float32), "a1": np.zeros((2, 3), np.float32)})
    with pytest.raises(InterpreterError, match="has no function @nope"):
        run_function(module, "nope", {})


def test_every_op_module_runs_and_matches_types(rng):
    """All reference implementations agree with their own type inference (checked per node)."""
    module = build_every_op_module()
    fill_params(module, rng)
    seen: set[str] = set()
    for L, P in [(3, 2), (1, 0)]:
        inputs = {
            "ids": rng.integers(0, 16, (1, L)),
            "x": rng.standard_normal((1, L, 8)).astype(np.float32),
            "mask": np.zeros((1, 1, L, P + L), np.float32),
            "past.k": rng.standard_normal((1, 2, P, 4)).astype(np.float32),
        }
        out = run_function(module, "step.v1", inputs, observe=lambda n, *_: seen.add(n.op))
        assert out["scores"].shape == (1, L, L) and out["present.k"].shape == (1, 2, P + L, 4)
        assert np.isfinite(out["scores"]).all()
        exact(out["present.k"][:, :, :P], inputs["past.k"])
        assert out["total"] == np.float32(-0.5)
    for t in (1, 5):
        out = run_function(module, "hw", {"ids": rng.integers(0, 16, t), "pos": np.arange(t)},
                           observe=lambda n, *_: seen.add(n.op))
        assert out["out"].shape == (t, 8) and np.isfinite(out["out"]).all()
        cards = [Module(f"card{i}", {}, module.params, {"step": module.functions[f]})
                 for i, f in enumerate(["hw", "hw_card"])]
        inputs = [{"ids": rng.integers(0, 16, t), "pos": np.arange(t)}, {"pos": np.arange(t)}]
        sender, receiver = run_cluster(cards, inputs)
        exact(receiver["received"], sender["out"])
        seen.add("hw_recv")
    assert seen == set(OPS)


def test_a_received_value_needs_a_cluster():
    module = build_every_op_module()
    with pytest.raises(InterpreterError, match="slot 0 comes from another card"):
        run_function(module, "hw_card", {"pos": np.arange(2)})
    lone = Module("card", {}, module.params, {"step": module.functions["hw_card"]})
    with pytest.raises(InterpreterError, match="the cards wait for slots nobody sends: card 0 at slot 0"):
        run_cluster([lone], [{"pos": np.arange(2)}])


def test_shapes_only_module_cannot_run():
    module = build_every_op_module()
    with pytest.raises(InterpreterError, match="has no data"):
        run_function(module, "step.v1", {"ids": np.zeros((1, 1), np.int64), "x": np.zeros((1, 1, 8), np.float32),
                                          "mask": np.zeros((1, 1, 1, 1), np.float32),
                                          "past.k": np.zeros((1, 2, 0, 4), np.float32)})


def test_integer_inputs_are_wrapped_on_entry():
    module = one_node("neg", [tt([3], I8)])
    got = run_function(module, "f", {"a0": np.array([128, 255, -129], np.int64)})["out"]
    exact(got, np.array([-128, 1, -127], np.int8))
    assert math.isclose(float(run_function(one_node("neg", [tt([], F32)]), "f", {"a0": 2})["out"]), -2.0)
