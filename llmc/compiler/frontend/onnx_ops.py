"""The ONNX op handlers: :data:`HANDLERS` maps an ONNX op type to the function that converts one
node of it, folding it at import time when its operands are small constants (see
:mod:`llmc.compiler.frontend.onnx`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from llmc.compiler.frontend.onnx_values import (
    FOLD_LIMIT,
    Const,
    Operand,
    elem_dtype,
    make_const,
    proto_const,
    to_dims,
)
from llmc.ir.graph import Value
from llmc.ir.types import BOOL, F32, I64, Dim

if TYPE_CHECKING:
    from llmc.compiler.frontend.onnx import Converter

_BIG = 1 << 62  # slice bounds this large mean "to the end"

Node = onnx.NodeProto
Attrs = dict[str, Any]
Handler = Callable[["Converter", Node, Attrs], Sequence[Operand]]
HANDLERS: dict[str, Handler] = {}


def handles(*ops: str) -> Callable[[Handler], Handler]:
    def wrap(fn: Handler) -> Handler:
        HANDLERS.update(dict.fromkeys(ops, fn))
        return fn

    return wrap


# -- constants, casts and shapes -------------------------------------------------------------------
@handles("Constant")
def _constant(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    if "value" in attrs:
        return [proto_const(attrs["value"])]
    for key, dtype in (("value_float", F32), ("value_floats", F32), ("value_int", I64), ("value_ints", I64)):
        if key in attrs:
            return [Const(np.asarray(attrs[key], dtype=dtype.numpy()), dtype)]
    raise c.error(f"unsupported constant attribute {', '.join(attrs)}")


@handles("Identity")
def _identity(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    return [c.get(n.input[0])]


@handles("Cast", "CastLike")
def _cast(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    dtype = elem_dtype(attrs["to"]) if n.op_type == "Cast" else c.dtype_of(c.get(n.input[1]))
    if isinstance(x, Const) and c.small(x) and (dtype.is_int or not x.symbolic):
        return [Const(x.data, dtype) if x.symbolic else make_const(x.data, dtype)]
    v = c.tensor(n.input[0])
    return [v if v.type.dtype == dtype else c.emit("cast", [v], {"dtype": dtype})]


@handles("Shape")
def _shape(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    dims = c.shape_of(c.get(n.input[0]))
    out = np.empty(len(dims), dtype=object)
    out[:] = dims
    return [make_const(out[attrs.get("start", 0):attrs.get("end", len(dims))], I64)]


@handles("ConstantOfShape")
def _constant_of_shape(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    dims = to_dims(c.const(n.input[0]).data)
    fill = proto_const(attrs["value"]) if "value" in attrs else Const(np.zeros(1, np.float32), F32)
    if all(d.is_static for d in dims) and math.prod(d.value for d in dims) <= FOLD_LIMIT:
        return [make_const(np.full([d.value for d in dims], fill.data.ravel()[0]), fill.dtype)]
    return [c.emit("constant", [], {"value": fill.data.ravel()[0].item(), "shape": dims, "dtype": fill.dtype})]


@handles("Range")
def _range(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    start, limit, delta = (c.const(name) for name in n.input)
    if not (start.symbolic or limit.symbolic):
        data = np.arange(start.data.item(), limit.data.item(), delta.data.item())
        if data.size <= FOLD_LIMIT:
            return [make_const(data, start.dtype)]
    begin, end = to_dims(start.data)[0], to_dims(limit.data)[0]
    return [c.emit("iota", [], {"start": begin, "end": end, "step": int(delta.data.item()), "dtype": start.dtype})]


# -- elementwise -----------------------------------------------------------------------------------
def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Div: exact for symbolic dims, truncating for integers, true division for floats."""
    if a.dtype == object or b.dtype == object:
        def exact(x: Any, y: Any) -> Dim:
            q = to_dims(np.asarray(x))[0].exact_div(to_dims(np.asarray(y))[0])
            if q is None:
                raise ValueError(f"{x} is not a multiple of {y}")
            return q
        return np.frompyfunc(exact, 2, 1)(a, b)
    if np.issubdtype(a.dtype, np.integer):
        q = np.abs(a) // np.maximum(np.abs(b), 1)
        return np.where((a < 0) ^ (b < 0), -q, q)
    return a / b


_BINARY = {"Add": ("add", np.add), "Sub": ("sub", np.subtract), "Mul": ("mul", np.multiply), "Div": ("div", _div),
           "Pow": ("pow", np.power), "Max": ("maximum", np.maximum), "Min": ("minimum", np.minimum),
           "Equal": ("eq", np.equal), "Less": ("lt", np.less), "LessOrEqual": ("le", np.less_equal),
           "Greater": ("gt", np.greater), "GreaterOrEqual": ("ge", np.greater_equal),
           "And": ("logical_and", np.logical_and), "Or": ("logical_or", np.logical_or)}
_LOGICAL = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or"}


@handles(*_BINARY)
def _binary(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    if len(n.input) != 2:
        raise c.error("only two operands are supported")
    op, fold = _BINARY[n.op_type]
    a, b = c.get(n.input[0]), c.get(n.input[1])
    dtype = c.dtype_of(a)
    if c.small(a, b):
        return [make_const(fold(a.data, b.data), BOOL if n.op_type in _LOGICAL else dtype)]
    if n.op_type == "Mul":
        for x, y in ((a, b), (b, a)):
            if isinstance(x, Value) and c.small(y) and not y.symbolic and y.data.size == 1 \
                    and y.data.ndim <= x.type.rank and y.dtype == dtype and y.data.ravel()[0] == 1:
                return [x]  # the exporter's unit scales
    if n.op_type == "Add":
        fused = _fuse_bias(c, n, 0) or _fuse_bias(c, n, 1)
        if fused is not None:
            return [fused]
    if n.op_type == "Pow" and isinstance(b, Const) and not b.symbolic and b.dtype != dtype:
        y = c.materialize(make_const(b.data, dtype), n.input[1])  # ONNX lets the exponent's type differ
    else:
        y = c.tensor(n.input[1])
    return [c.emit(op, [c.tensor(n.input[0]), y])]


def _fuse_bias(c: Converter, n: Node, i: int) -> Value | None:
    """``linear(x, w) + b`` (operand ``i`` the product) as ``linear(x, w, b)`` when nothing else
    reads the product."""
    product, bias = c.get(n.input[i]), c.get(n.input[1 - i])
    if not (isinstance(product, Value) and product.name in c.linears and isinstance(bias, Const)):
        return None
    x, weight, onnx_name = c.linears[product.name]
    if c.uses.get(onnx_name) != 1 or bias.data.shape != weight.type.static_shape()[:1] or bias.dtype != x.type.dtype:
        return None
    return c.emit("linear", [x, weight, c.param(bias.origin or n.input[1 - i], False, bias.data, bias.dtype)])


_UNARY = {"Neg": "neg", "Abs": "abs", "Sqrt": "sqrt", "Reciprocal": "reciprocal", "Exp": "exp", "Log": "log",
          "Tanh": "tanh", "Sigmoid": "sigmoid", "Relu": "relu", "Erf": "erf", "Cos": "cos", "Sin": "sin",
          "Not": "logical_not"}
_FOLD_UNARY = {"Neg": lambda x: np.subtract(0, x), "Sqrt": np.sqrt, "Reciprocal": lambda x: 1.0 / x,
               "Not": np.logical_not}


@handles(*_UNARY)
def _unary(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    if c.small(x) and n.op_type in _FOLD_UNARY and (n.op_type == "Neg" or not x.symbolic):
        return [make_const(_FOLD_UNARY[n.op_type](x.data), x.dtype)]
    return [c.emit(_UNARY[n.op_type], [c.tensor(n.input[0])])]


@handles("Where")
def _where(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    cond, a, b = (c.get(name) for name in n.input)
    if c.small(cond, a, b):
        return [make_const(np.where(cond.data, a.data, b.data), a.dtype)]
    return [c.emit("where", [c.tensor(name) for name in n.input])]


# -- reductions, normalisation and linear algebra --------------------------------------------------
_REDUCE = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max", "ReduceMin": "reduce_min"}


@handles(*_REDUCE)
def _reduce(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.tensor(n.input[0])
    axes = c.axes(n, attrs, x.type.rank)
    if not axes and attrs.get("noop_with_empty_axes", 0):
        return [x]
    axes = axes or list(range(x.type.rank))
    return [c.emit(_REDUCE[n.op_type], [x], {"axes": axes, "keepdim": bool(attrs.get("keepdims", 1))})]


@handles("Softmax")
def _softmax(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.tensor(n.input[0])
    return [c.emit("softmax", [x], {"axis": attrs.get("axis", -1) % x.type.rank})]


@handles("LayerNormalization")
def _layer_norm(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.tensor(n.input[0])
    if attrs.get("axis", -1) % x.type.rank != x.type.rank - 1:
        raise c.error("normalisation over more than the last axis is not supported")
    if any(c.uses.get(name) for name in n.output[1:] if name):
        raise c.error("the mean and inverse deviation outputs are not supported")
    extras = [c.tensor(name) for name in n.input[1:] if name]
    return [c.emit("layer_norm", [x, *extras], {"eps": float(attrs.get("epsilon", 1e-5))})]


@handles("MatMul")
def _matmul(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.tensor(n.input[0])
    weight = c.weight(n.input[1], flip=True)
    if weight is None:
        return [c.emit("matmul", [x, c.tensor(n.input[1])])]
    out = c.emit("linear", [x, weight])
    c.linears[out.name] = (x, weight, n.output[0])  # a following bias Add may fuse into it
    return [out]


@handles("Gemm")
def _gemm(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
        raise c.error("Gemm with alpha, beta or transA is not supported")
    x = c.tensor(n.input[0])
    weight = c.weight(n.input[1], flip=not attrs.get("transB", 0))
    if weight is None:
        y = c.tensor(n.input[1])
        weight = y if attrs.get("transB", 0) else c.b.op("transpose", [y], {"perm": [1, 0]})
    bias = c.get(n.input[2]) if len(n.input) > 2 and n.input[2] else None
    if isinstance(bias, Const) and bias.data.shape == weight.type.static_shape()[:1]:
        return [c.emit("linear", [x, weight, c.param(bias.origin or n.input[2], False, bias.data, bias.dtype)])]
    if bias is None:
        return [c.emit("linear", [x, weight])]
    return [c.emit("add", [c.b.op("linear", [x, weight]), c.tensor(n.input[2])])]


@handles("Gather")
def _gather(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    data, idx = c.get(n.input[0]), c.get(n.input[1])
    axis = attrs.get("axis", 0)
    if c.small(data, idx):
        return [make_const(np.take(data.data, idx.data.astype(np.int64), axis=axis), data.dtype)]
    if isinstance(data, Const) and data.data.ndim == 2 and axis == 0 and isinstance(idx, Value):
        return [c.emit("embedding", [c.tensor(n.input[0]), idx])]
    x = c.tensor(n.input[0])
    return [c.emit("gather", [x, c.tensor(n.input[1])], {"axis": axis % x.type.rank})]


# -- data movement ---------------------------------------------------------------------------------
@handles("Reshape")
def _reshape(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    shape = c.shape_of(c.get(n.input[0]))
    dims = [shape[i] if d == Dim.of(0) and not attrs.get("allowzero", 0) else d
            for i, d in enumerate(to_dims(c.const(n.input[1]).data))]
    if Dim.of(-1) in dims:
        missing = dims.index(Dim.of(-1))
        rest, divisor = list(shape), Dim.of(1)
        for d in dims[:missing] + dims[missing + 1:]:
            if d in rest:
                rest.remove(d)  # cancel equal factors: (P+L)*16 / (P+L) needs no polynomial division
            else:
                divisor = divisor * d
        size = math.prod(rest, start=Dim.of(1)).exact_div(divisor)
        if size is None:
            raise c.error(f"cannot infer the -1 of reshape [{', '.join(map(str, dims))}] from "
                          f"[{', '.join(map(str, shape))}]")
        dims[missing] = size
    return [c.reshaped(n.input[0], dims)]


@handles("Squeeze", "Unsqueeze")
def _squeeze(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    shape = c.shape_of(c.get(n.input[0]))
    if n.op_type == "Squeeze":
        axes = c.axes(n, attrs, len(shape))
        return [c.reshaped(n.input[0], [d for i, d in enumerate(shape)
                                        if not (d == Dim.of(1) if axes is None else i in axes)])]
    given = c.optional(n, 1)
    count = given.data.size if given is not None else len(attrs["axes"])
    axes, dims = c.axes(n, attrs, len(shape) + count) or [], iter(shape)
    return [c.reshaped(n.input[0], [Dim.of(1) if i in axes else next(dims) for i in range(len(shape) + count)])]


@handles("Transpose")
def _transpose(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    rank = len(c.shape_of(x))
    perm = list(attrs.get("perm", range(rank - 1, -1, -1)))
    if isinstance(x, Const) and x.origin is not None and perm == [1, 0]:
        return [Const(x.data.T, x.dtype, x.origin, not x.transposed)]  # a weight's transpose stays a weight
    if c.small(x):
        return [make_const(np.transpose(x.data, perm), x.dtype)]
    v = c.tensor(n.input[0])
    return [v if perm == list(range(rank)) else c.emit("transpose", [v], {"perm": perm})]


@handles("Expand")
def _expand(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    shape, target = c.shape_of(x), to_dims(c.const(n.input[1]).data)
    rank = max(len(shape), len(target))
    shape = [Dim.of(1)] * (rank - len(shape)) + shape
    target = [Dim.of(1)] * (rank - len(target)) + target
    out = [t if s == Dim.of(1) else s for s, t in zip(shape, target, strict=True)]  # ONNX broadcasts both ways
    if c.small(x) and all(d.is_static for d in out) and math.prod(d.value for d in out) <= FOLD_LIMIT:
        return [make_const(np.broadcast_to(x.data, [d.value for d in out]), x.dtype)]
    v = c.tensor(n.input[0])
    return [v if tuple(out) == v.type.shape else c.emit("expand", [v], {"shape": out})]


@handles("Concat")
def _concat(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    parts = [c.get(name) for name in n.input]
    if c.small(*parts):
        return [make_const(np.concatenate([p.data for p in parts], axis=attrs["axis"]), parts[0].dtype)]
    values = [v for v in (c.tensor(name) for name in n.input) if v.type.numel() != Dim.of(0)] or [c.tensor(n.input[0])]
    if len(values) == 1:
        return values
    return [c.emit("concat", values, {"axis": attrs["axis"] % values[0].type.rank})]


def _bound(v: Dim, size: Dim) -> Dim:
    """An ONNX slice bound (negative counts from the end; clamped) as a dim in ``[0, size]``."""
    if not v.is_static:
        return v
    x = v.value
    if x >= _BIG or (size.is_static and x >= size.value):
        return size
    if x <= -_BIG:
        return Dim.of(0)
    if x < 0:
        return Dim.of(max(0, size.value + x)) if size.is_static else size + x
    return v


@handles("Slice")
def _slice(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    shape = c.shape_of(c.get(n.input[0]))
    starts, ends = to_dims(c.const(n.input[1]).data), to_dims(c.const(n.input[2]).data)
    axes, steps = c.optional(n, 3), c.optional(n, 4)
    axes_list = [d.value % len(shape) for d in to_dims(axes.data)] if axes is not None else list(range(len(starts)))
    steps_list = [d.value for d in to_dims(steps.data)] if steps is not None else [1] * len(starts)
    x = c.get(n.input[0])
    for axis, start, end, step in zip(axes_list, starts, ends, steps_list, strict=True):
        if step <= 0:
            raise c.error("slices with a negative step are not supported")
        start, end = _bound(start, shape[axis]), _bound(end, shape[axis])
        if start != Dim.of(0) or end != shape[axis] or step != 1:
            x = c.sliced(x, n.input[0], axis, start, end, step)
    return [x]


@handles("Split", "SplitToSequence")
def _split(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    shape = c.shape_of(c.get(n.input[0]))
    axis = attrs.get("axis", 0) % len(shape)
    size, given = shape[axis], c.optional(n, 1)
    if given is not None and given.data.ndim == 1 or "split" in attrs:
        sizes = to_dims(given.data) if given is not None else [Dim.of(s) for s in attrs["split"]]
    elif size.is_static:
        chunk = to_dims(given.data)[0].value if given is not None \
            else -(-size.value // attrs.get("num_outputs", len(n.output)))
        sizes = [Dim.of(min(chunk, size.value - i)) for i in range(0, size.value, chunk)]
    else:
        raise c.error(f"cannot split the symbolic dim {size} into equal parts")
    bounds = [sum(sizes[:i], Dim.of(0)) for i in range(len(sizes) + 1)]
    x = c.get(n.input[0])
    parts = [c.sliced(x, n.input[0], axis, bounds[i], bounds[i + 1]) for i in range(len(sizes))]
    return [parts] if n.op_type == "SplitToSequence" else parts


@handles("SequenceAt")
def _sequence_at(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    seq = c.get(n.input[0])
    if not isinstance(seq, list):
        raise c.error("SequenceAt needs a sequence from SplitToSequence")
    return [seq[to_dims(c.const(n.input[1]).data)[0].value]]
