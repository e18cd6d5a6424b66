"""ONNX handlers of reductions, softmax, matrix products, CumSum, Trilu, ArgMax, ArgMin and TopK
(normalisation is in ``onnx_norm_ops``)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from llmc.compiler.frontend.onnx_registry import Attrs, Node, handles
from llmc.compiler.frontend.onnx_shape_ops import flip
from llmc.compiler.frontend.onnx_values import Const, Operand, dims_const, make_const
from llmc.ir.graph import Value
from llmc.ir.types import I64, Dim, DType

if TYPE_CHECKING:
    from llmc.compiler.frontend.onnx_converter import Converter


def _lowest(dtype: DType) -> float | int:
    return -math.inf if dtype.is_float else dtype.int_range()[0]


def _count(c: Converter, x: Value, axes: list[int]) -> Value:
    """The number of elements over ``axes`` as a scalar of x's dtype."""
    count = math.prod((x.type.shape[a] for a in axes), start=Dim.of(1))
    if count.is_static:
        return c.scalar(count.value, x.type.dtype)
    return c.op("cast", [c.materialize(dims_const([count]), "count")], {"dtype": x.type.dtype})


# -- reductions ------------------------------------------------------------------------------------
_REDUCE = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max", "ReduceMin": "reduce_min",
           "ReduceSumSquare": "reduce_sum", "ReduceL1": "reduce_sum", "ReduceL2": "reduce_sum",
           "ReduceLogSumExp": "reduce_sum", "ReduceProd": ""}


@handles(*_REDUCE)
def _reduce(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    rank = c.rank_of(x)
    axes = c.axes(n, attrs, rank)
    if not axes and attrs.get("noop_with_empty_axes", 0):
        if n.op_type in ("ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd"):
            return [x]
        axes = []  # the elementwise steps still apply (onnxruntime's reading)
    elif not axes:
        axes = list(range(rank))
    keep = bool(attrs.get("keepdims", 1))
    if n.op_type == "ReduceProd":  # shape arithmetic (a tensor's element count) only
        if not c.small(x):
            raise c.error("ReduceProd of tensor data is not supported")
        data = np.frompyfunc(lambda a, b: a * b, 2, 1).reduce(x.data.astype(object), axis=tuple(axes), keepdims=keep) \
            if x.symbolic else np.prod(x.data, axis=tuple(axes), keepdims=keep)
        return [make_const(np.asarray(data), x.dtype)]
    attrs_ir = {"axes": axes, "keepdim": keep}
    op = _REDUCE[n.op_type]
    if n.op_type in ("ReduceSum", "ReduceMax", "ReduceMin") or (n.op_type == "ReduceMean" and c.dtype_of(x).is_float):
        folded = c.fold_ir(op, [x], attrs_ir)
        if folded is not None:
            return [folded]
    v = c.tensor(n.input[0])
    if not axes:
        y = {"ReduceSumSquare": lambda: c.op("mul", [v, v]), "ReduceL1": lambda: c.op("abs", [v]),
             "ReduceL2": lambda: c.op("sqrt", [c.op("mul", [v, v])]),
             "ReduceLogSumExp": lambda: c.op("log", [c.op("exp", [v])])}[n.op_type]
        return [y()]
    if n.op_type == "ReduceMean" and not v.type.dtype.is_float:  # integers: the sum divided, truncated
        return [c.op("div", [c.op("reduce_sum", [v], attrs_ir), _count(c, v, axes)])]
    if n.op_type == "ReduceLogSumExp":  # log(sum(exp(x - max))) + max, as onnxruntime computes it
        top = c.op("reduce_max", [v], {"axes": axes, "keepdim": True})
        total = c.op("reduce_sum", [c.op("exp", [c.op("sub", [v, top])])], attrs_ir)
        top = top if keep else c.op("reshape", [top], {"shape": list(total.type.shape)})
        return [c.op("add", [c.op("log", [total]), top])]
    if n.op_type in ("ReduceSumSquare", "ReduceL2"):
        v = c.op("mul", [v, v])
    elif n.op_type == "ReduceL1":
        v = c.op("abs", [v])
    out = c.op(op, [v], attrs_ir)
    return [c.op("sqrt", [out]) if n.op_type == "ReduceL2" else out]


# -- softmax ---------------------------------------------------------------------------------------
@handles("Softmax", "LogSoftmax")
def _softmax(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """LogSoftmax: ``(x - max) - log(sum(exp(x - max)))``."""
    x = c.tensor(n.input[0])
    axis = attrs.get("axis", -1) % x.type.rank
    if n.op_type == "Softmax":
        return [c.emit("softmax", [x], {"axis": axis})]
    shifted = c.op("sub", [x, c.op("reduce_max", [x], {"axes": [axis], "keepdim": True})])
    total = c.op("reduce_sum", [c.op("exp", [shifted])], {"axes": [axis], "keepdim": True})
    return [c.op("sub", [shifted, c.op("log", [total])])]


# -- matrix products -------------------------------------------------------------------------------
@handles("MatMul")
def _matmul(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """A product by a 2-D float constant is ``linear`` with the weight as [N, K]; otherwise
    ``matmul``, 1-D operands promoted to matrices and the added axis removed again (NumPy)."""
    a, b = c.get(n.input[0]), c.get(n.input[1])
    ra, rb = c.rank_of(a), c.rank_of(b)
    if ra >= 1 and rb == 2:
        weight = c.weight(n.input[1], flip=True)
        if weight is not None and c.dtype_of(a) == weight.type.dtype:
            out = c.emit("linear", [c.tensor(n.input[0]), weight])
            c.linears[out] = (c.tensor(n.input[0]), weight, n.output[0])  # a following bias Add may fuse into it
            return [out]
    if ra >= 2 and rb >= 2:
        folded = c.fold_ir("matmul", [a, b])
        if folded is not None:
            return [folded]
    x, y = c.tensor(n.input[0]), c.tensor(n.input[1])
    if ra == 1:
        x = c.op("reshape", [x], {"shape": [1, x.type.shape[0]]})
    if rb == 1:
        y = c.op("reshape", [y], {"shape": [y.type.shape[0], 1]})
    out = c.op("matmul", [x, y])
    if ra == 1 or rb == 1:
        dims = list(out.type.shape)
        drop = {len(dims) - 2} if ra == 1 else set()
        drop |= {len(dims) - 1} if rb == 1 else set()
        out = c.op("reshape", [out], {"shape": [d for i, d in enumerate(dims) if i not in drop]})
    return [out]


@handles("Gemm")
def _gemm(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """``alpha * A' B' + beta * C``: ``linear`` by a constant B (as [N, K]; a [N] C its bias),
    else ``matmul``; scaled, plus the scaled C."""
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    x = c.tensor(n.input[0])
    dtype = x.type.dtype
    if attrs.get("transA", 0):
        x = c.op("transpose", [x], {"perm": [1, 0]})
    trans_b = bool(attrs.get("transB", 0))
    weight = c.weight(n.input[1], flip=not trans_b)
    bias = c.get(n.input[2]) if c.has_input(n, 2) and beta != 0 else None
    if weight is None:  # a run-time B
        y = c.tensor(n.input[1])
        out = c.op("matmul", [x, c.op("transpose", [y], {"perm": [1, 0]}) if trans_b else y])
    elif alpha == 1 and isinstance(bias, Const) and not bias.symbolic \
            and bias.data.shape == weight.type.static_shape()[:1]:
        data = bias.data if beta == 1 else c.fold_ir("mul", [bias, make_const(np.asarray(beta), bias.dtype)]).data  # type: ignore[union-attr]
        key = (bias.origin or n.input[2]) if beta == 1 else f"{n.input[2]}.scaled"
        return [c.emit("linear", [x, weight, c.param(key, False, data, bias.dtype)])]
    else:
        out = c.op("linear", [x, weight])
    if alpha != 1:
        out = c.op("mul", [out, c.scalar(alpha, dtype, 2)])
    if bias is None:
        return [out]
    addend = c.tensor(n.input[2])
    if beta != 1:
        addend = c.op("mul", [addend, c.scalar(beta, dtype, addend.type.rank)])
    return [c.op("add", [out, addend])]


# -- scans and masks -------------------------------------------------------------------------------
@handles("CumSum")
def _cumsum(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """``cumsum``; ``reverse`` flips before and after; ``exclusive`` shifts by one (a leading 0)."""
    x = c.tensor(n.input[0])
    axis = (c.ints(n, 1, "axis") or [0])[0] % x.type.rank
    if attrs.get("reverse", 0):
        x = flip(c, x, axis)
    out = c.op("cumsum", [x], {"axis": axis})
    if attrs.get("exclusive", 0):
        dims = list(x.type.shape)
        size = dims[axis]
        dims[axis] = Dim.of(1)
        head = c.b.constant(0, x.type.dtype, dims)
        if size != Dim.of(1):
            out = c.op("concat", [head, c.op("slice", [out], {"axis": axis, "start": 0, "end": size - 1})],
                       {"axis": axis})
        else:
            out = head
    return [flip(c, out, axis) if attrs.get("reverse", 0) else out]


@handles("Trilu")
def _trilu(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """Keep ``j - i >= k`` (upper) or ``j - i <= k`` (lower) of the last two axes, zero the rest."""
    x = c.tensor(n.input[0])
    k = (c.ints(n, 1, "k") or [0])[0]
    rows, cols = x.type.shape[-2:]
    i = c.op("reshape", [c.op("iota", [], {"start": 0, "end": rows, "dtype": I64})], {"shape": [rows, 1]})
    j = c.op("reshape", [c.op("iota", [], {"start": 0, "end": cols, "dtype": I64})], {"shape": [1, cols]})
    keep = c.op("ge" if attrs.get("upper", 1) else "le", [c.op("sub", [j, i]), c.scalar(k, I64, 2)])
    return [c.emit("where", [keep, x, c.scalar(0, x.type.dtype, 2)])]


# -- top k -----------------------------------------------------------------------------------------
def _largest(c: Converter, x: Value, k: int, axis: int, largest: bool) -> tuple[Value, Value]:
    """``topk`` values and indices; the smallest as the largest of ``-x`` (or of ``~x`` for unsigned)."""
    if largest:
        values, indices = c.b.op_multi("topk", [x], {"k": k, "axis": axis})
        return values, indices
    dtype = x.type.dtype
    if dtype.is_float or dtype.signed:
        values, indices = c.b.op_multi("topk", [c.op("neg", [x])], {"k": k, "axis": axis})
        return c.op("neg", [values]), indices
    top = c.scalar(dtype.int_range()[1], dtype, x.type.rank)
    values, indices = c.b.op_multi("topk", [c.op("sub", [top, x])], {"k": k, "axis": axis})
    return c.op("sub", [c.scalar(dtype.int_range()[1], dtype, x.type.rank), values]), indices


@handles("ArgMax", "ArgMin")
def _argmax(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """The first extreme (``select_last_index``: the last) along ``axis`` as int64."""
    x = c.tensor(n.input[0])
    axis = attrs.get("axis", 0) % x.type.rank
    last = bool(attrs.get("select_last_index", 0))
    if last:
        x = flip(c, x, axis)
    index = _largest(c, x, 1, axis, n.op_type == "ArgMax")[1]
    if last:
        size = x.type.shape[axis]
        top = c.scalar(size.value - 1, I64, x.type.rank) if size.is_static else \
            c.materialize(dims_const([size - 1]), "last")
        index = c.op("sub", [top, index])
    if not attrs.get("keepdims", 1):
        index = c.op("reshape", [index], {"shape": [d for i, d in enumerate(index.type.shape) if i != axis]})
    return [index]


@handles("TopK")
def _topk(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """Values and int64 indices, sorted (``sorted=0`` gives the sorted order too); equal values
    keep their order."""
    x = c.tensor(n.input[0])
    k = (c.ints(n, 1, "K") or [0])[0]
    axis = attrs.get("axis", -1) % x.type.rank
    values, indices = _largest(c, x, k, axis, bool(attrs.get("largest", 1)))
    return [values, indices]

