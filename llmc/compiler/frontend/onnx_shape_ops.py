"""ONNX handlers of shapes and data movement: Shape, Size, ConstantOfShape, Range, Reshape,
Flatten, (Un)Squeeze, Transpose, Expand, Tile, Concat, Slice, Split.

Shape operands (a Reshape's shape, Slice's starts, ...) must be known at import time: constants,
or computations on shapes, which fold into :class:`Const` of (possibly symbolic) dims. Where one
is not, the output shape ONNX shape inference (with data propagation) gives is used when it
determines the result; else the node is refused.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from llmc.compiler.frontend.onnx_registry import Attrs, Node, handles
from llmc.compiler.frontend.onnx_values import (
    FOLD_LIMIT,
    Const,
    Operand,
    dims_const,
    make_const,
    proto_const,
    to_dims,
)
from llmc.ir.graph import Value
from llmc.ir.types import F32, I64, Dim

if TYPE_CHECKING:
    from llmc.compiler.frontend.onnx_converter import Converter

_BIG = 1 << 62  # slice bounds this large mean "to the end"
ONE = Dim.of(1)


def target_dims(c: Converter, n: Node, index: int, what: str) -> list[Dim]:
    """The dims held by operand ``index``, else the node's inferred output shape."""
    given = c.get(n.input[index])
    if isinstance(given, Const):
        return to_dims(given.data)
    inferred = c.inferred_shape(n.output[0])
    if inferred is None:
        c.const(n.input[index], what)  # raises: data-dependent
    return inferred  # type: ignore[return-value]


def _static_numel(dims: list[Dim]) -> int | None:
    return math.prod(d.value for d in dims) if all(d.is_static for d in dims) else None


# -- shapes and constants --------------------------------------------------------------------------
@handles("Shape")
def _shape(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    dims = c.shape_of(c.get(n.input[0]))
    return [dims_const(dims[attrs.get("start", 0):attrs.get("end", len(dims))])]


@handles("Size")
def _size(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    size = math.prod(c.shape_of(c.get(n.input[0])), start=ONE)
    return [Const(dims_const([size]).data.reshape(()), I64)]


@handles("ConstantOfShape")
def _constant_of_shape(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    dims = target_dims(c, n, 0, "shape")
    fill = proto_const(attrs["value"]) if "value" in attrs else Const(np.zeros(1, np.float32), F32)
    value = fill.data.ravel()[0].item()
    numel = _static_numel(dims)
    if numel is not None and numel <= FOLD_LIMIT:
        return [make_const(np.full([d.value for d in dims], value, dtype=fill.data.dtype), fill.dtype)]
    return [c.emit("constant", [], {"value": int(value) if isinstance(value, bool) else value, "shape": dims,
                                    "dtype": fill.dtype})]


@handles("Range")
def _range(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """Static: computed as onnxruntime does (``start``, then ``delta`` added on); symbolic:
    ``iota``."""
    start, delta = c.const(n.input[0], "start"), c.const(n.input[2], "delta")
    limit = c.get(n.input[1])
    if isinstance(limit, Const) and not (start.symbolic or limit.symbolic or delta.symbolic):
        step = delta.data.item()
        span = (np.asarray(limit.data) - np.asarray(start.data, limit.data.dtype)).item()  # in the type, as onnxruntime
        count = max(math.ceil(span / step), 0) if step else 0
        if count <= FOLD_LIMIT:
            data = np.empty(count, start.dtype.numpy())
            value = start.data.astype(start.dtype.numpy()).reshape(())
            for i in range(count):
                data[i] = value
                value = (value + delta.data.astype(value.dtype)).astype(value.dtype)
            return [make_const(data, start.dtype)]
    step = to_dims(delta.data)[0]
    begin = to_dims(start.data)[0]
    if not step.is_static or (start.dtype.is_float and not float(start.data.item()).is_integer()):
        raise c.error("a range with symbolic bounds needs an integer start and step")
    if isinstance(limit, Const):
        end = to_dims(limit.data)[0]
    else:
        length = c.inferred_shape(n.output[0])
        if length is None or len(length) != 1:
            c.const(n.input[1], "limit")  # raises
        end = begin + length[0] * step.value  # type: ignore[index]
    if step.value == -1 and not (begin - end).is_static:  # counting down from a symbolic start
        down = c.op("iota", [], {"start": 0, "end": begin - end, "dtype": start.dtype})
        return [c.op("sub", [c.materialize(Const(dims_const([begin]).data, start.dtype), "start"), down])]
    return [c.emit("iota", [], {"start": begin, "end": end, "step": step.value, "dtype": start.dtype})]


# -- reshapes --------------------------------------------------------------------------------------
@handles("Reshape")
def _reshape(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    shape = c.shape_of(c.get(n.input[0]))
    if not isinstance(c.get(n.input[1]), Const):
        return [c.reshaped(n.input[0], target_dims(c, n, 1, "shape"))]
    dims = [shape[i] if d == Dim.of(0) and not attrs.get("allowzero", 0) else d
            for i, d in enumerate(to_dims(c.const(n.input[1]).data))]
    if Dim.of(-1) in dims:
        missing = dims.index(Dim.of(-1))
        rest, divisor = list(shape), ONE
        for d in dims[:missing] + dims[missing + 1:]:
            if d in rest:
                rest.remove(d)  # cancel equal factors: (P+L)*16 / (P+L) needs no polynomial division
            else:
                divisor = divisor * d
        size = math.prod(rest, start=ONE).exact_div(divisor)
        if size is None:
            raise c.error(f"cannot infer the -1 of reshape [{', '.join(map(str, dims))}] from "
                          f"[{', '.join(map(str, shape))}]")
        dims[missing] = size
    return [c.reshaped(n.input[0], dims)]


@handles("Flatten")
def _flatten(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    shape = c.shape_of(c.get(n.input[0]))
    axis = attrs.get("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    return [c.reshaped(n.input[0], [math.prod(shape[:axis], start=ONE), math.prod(shape[axis:], start=ONE)])]


@handles("Squeeze", "Unsqueeze")
def _squeeze(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    shape = c.shape_of(c.get(n.input[0]))
    if n.op_type == "Squeeze":
        axes = c.axes(n, attrs, len(shape))
        if axes is None and not all(d.is_static for d in shape):
            inferred = c.inferred_shape(n.output[0])
            if inferred is not None:
                return [c.reshaped(n.input[0], inferred)]
        dims = [d for i, d in enumerate(shape) if not (d == ONE if axes is None else i in axes)]
        if axes is not None and any(shape[a] != ONE for a in axes):
            raise c.error(f"cannot squeeze axes {axes} of [{', '.join(map(str, shape))}]: not all of size 1")
        return [c.reshaped(n.input[0], dims)]
    given = c.optional(n, 1, "axes")
    count = given.data.size if given is not None else len(attrs["axes"])
    axes, dims = c.axes(n, attrs, len(shape) + count) or [], iter(shape)
    return [c.reshaped(n.input[0], [ONE if i in axes else next(dims) for i in range(len(shape) + count)])]


@handles("Transpose")
def _transpose(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    rank = len(c.shape_of(x))
    perm = [p % rank for p in attrs.get("perm", range(rank - 1, -1, -1))]
    if isinstance(x, Const) and x.origin is not None and perm == [1, 0]:
        return [Const(x.data.T, x.dtype, x.origin, not x.transposed)]  # a weight's transpose stays a weight
    if c.small(x):
        return [make_const(np.transpose(x.data, perm), x.dtype)]
    v = c.tensor(n.input[0])
    return [v if perm == list(range(rank)) else c.emit("transpose", [v], {"perm": perm})]


# -- broadcasting and joining ----------------------------------------------------------------------
@handles("Expand")
def _expand(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    shape, target = c.shape_of(x), target_dims(c, n, 1, "shape")
    rank = max(len(shape), len(target))
    shape = [ONE] * (rank - len(shape)) + shape
    target = [ONE] * (rank - len(target)) + target
    out = [t if s == ONE else s for s, t in zip(shape, target, strict=True)]  # ONNX broadcasts both ways
    numel = _static_numel(out)
    if c.small(x) and numel is not None and numel <= FOLD_LIMIT:
        return [make_const(np.broadcast_to(x.data, [d.value for d in out]), x.dtype)]
    v = c.tensor(n.input[0])
    if v.type.rank < rank:
        v = c.op("reshape", [v], {"shape": shape})
    return [v if tuple(out) == v.type.shape else c.emit("expand", [v], {"shape": out})]


@handles("Tile")
def _tile(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """Each repeated axis: ``reshape`` to [.., 1, d, ..], ``expand`` to [.., r, d, ..], merge."""
    x = c.get(n.input[0])
    shape = c.shape_of(x)
    given = c.get(n.input[1])
    if isinstance(given, Const):
        repeats = to_dims(given.data)
    else:
        out = c.inferred_shape(n.output[0])
        if out is None or any((o.exact_div(s) if s != Dim.of(0) else None) is None for o, s in zip(out, shape)):
            c.const(n.input[1], "repeats")  # raises
        repeats = [o.exact_div(s) for o, s in zip(out, shape)]  # type: ignore[misc]
    numel = _static_numel([*shape, *repeats])
    if c.small(x) and not x.symbolic and numel is not None and numel <= FOLD_LIMIT:
        return [make_const(np.tile(x.data, [r.value for r in repeats]), x.dtype)]
    v = c.tensor(n.input[0])
    for axis, r in enumerate(repeats):
        if r == ONE:
            continue
        dims = list(v.type.shape)
        v = c.op("reshape", [v], {"shape": dims[:axis] + [ONE] + dims[axis:]})
        v = c.op("expand", [v], {"shape": dims[:axis] + [r] + dims[axis:]})
        v = c.op("reshape", [v], {"shape": dims[:axis] + [dims[axis] * r] + dims[axis + 1:]})
    return [v]


@handles("Concat")
def _concat(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    parts = [c.get(name) for name in n.input]
    if c.small(*parts):
        return [make_const(np.concatenate([p.data for p in parts], axis=attrs["axis"]), parts[0].dtype)]
    values = [v for v in (c.tensor(name) for name in n.input) if v.type.numel() != Dim.of(0)] or [c.tensor(n.input[0])]
    if len(values) == 1:
        return values
    return [c.emit("concat", values, {"axis": attrs["axis"] % values[0].type.rank})]


# -- slicing ---------------------------------------------------------------------------------------
def _bound(v: Dim, size: Dim, low: int) -> Dim:
    """An ONNX slice bound (negative counts from the end) clamped to ``[low, size + low]``: low 0
    for positive steps, -1 for negative ones. Symbolic bounds are taken to be in range."""
    if not v.is_static:
        return v
    x = v.value
    if x >= _BIG or (size.is_static and x >= size.value + low):
        return size + low
    if x <= -_BIG:
        return Dim.of(low)
    if x < 0:
        return Dim.of(max(low, size.value + x)) if size.is_static else size + x
    return v


def flip(c: Converter, x: Value, axis: int) -> Value:
    """``x`` reversed along ``axis``."""
    return _reverse_slice(c, x, x.name, axis, x.type.shape[axis], Dim.of(-1), Dim.of(-_BIG), -1)


def _reverse_slice(c: Converter, x: Operand, name: str, axis: int, size: Dim, start: Dim, end: Dim, step: int) -> Value:
    """``x[start:end:step]`` with ``step < 0``: a gather of ``start - k * |step|``, k < count."""
    first, stop = _bound(start, size, -1), _bound(end, size, -1)
    span = first - stop
    if span.is_static:
        count = Dim.of(max(0, -(-span.value // -step)))
    elif step == -1:
        count = span
    else:
        raise c.error(f"a slice with step {step} over a symbolic dim ({size}) is not supported")
    v = c.as_value(x, name)
    if first.is_static:
        index = c.op("iota", [], {"start": first, "end": first - count * -step, "step": step, "dtype": I64})
    else:
        ks = c.op("iota", [], {"start": 0, "end": count, "dtype": I64})
        if step != -1:
            ks = c.op("mul", [ks, c.scalar(-step, I64, 1)])
        index = c.op("sub", [c.materialize(dims_const([first]), name), ks])
    return c.op("gather", [v, index], {"axis": axis})


@handles("Slice")
def _slice(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    shape = c.shape_of(x)
    starts = to_dims(c.const(n.input[1], "starts").data)
    ends = to_dims(c.const(n.input[2], "ends").data)
    axes = [a % len(shape) for a in c.ints(n, 3, "axes") or range(len(starts))]
    steps = c.ints(n, 4, "steps") or [1] * len(starts)
    if c.small(x) and all(d.is_static for d in starts + ends):
        where = [slice(None)] * len(shape)
        for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
            where[axis] = slice(start.value, end.value, step)
        return [make_const(x.data[tuple(where)], x.dtype)]  # type: ignore[union-attr]
    for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
        if step == 0:
            raise c.error("slice step 0")
        if step < 0:
            x = _reverse_slice(c, x, n.input[0], axis, shape[axis], start, end, step)
            continue
        start, end = _bound(start, shape[axis], 0), _bound(end, shape[axis], 0)
        if end.is_static and start.is_static and end.value < start.value:
            end = start
        x = c.sliced(x, n.input[0], axis, start, end, step)
    return [x]


@handles("Split", "SplitToSequence")
def _split(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    shape = c.shape_of(c.get(n.input[0]))
    axis = attrs.get("axis", 0) % len(shape)
    size = shape[axis]
    given = c.get(n.input[1]) if c.has_input(n, 1) else None
    sequence = n.op_type == "SplitToSequence"
    if given is not None and not isinstance(given, Const):
        inferred = [c.inferred_shape(name) for name in n.output]
        if sequence or any(s is None for s in inferred):
            c.const(n.input[1], "split")  # raises
        sizes = [s[axis] for s in inferred]  # type: ignore[index]
    elif given is not None and given.data.ndim == 1 or "split" in attrs:
        sizes = to_dims(given.data) if given is not None else [Dim.of(s) for s in attrs["split"]]
    else:
        parts = attrs.get("num_outputs", len(n.output)) if given is None else None
        if size.is_static:
            chunk = -(-size.value // parts) if given is None else to_dims(given.data)[0].value
            sizes = [Dim.of(min(chunk, size.value - i)) for i in range(0, size.value, chunk)]
        elif parts is not None and size.exact_div(parts) is not None:
            sizes = [size.exact_div(parts)] * parts  # type: ignore[list-item]
        else:
            raise c.error(f"cannot split the symbolic dim {size} into equal parts")
    bounds = [sum(sizes[:i], Dim.of(0)) for i in range(len(sizes) + 1)]
    x = c.get(n.input[0])
    parts_out = [c.sliced(x, n.input[0], axis, bounds[i], bounds[i + 1]) for i in range(len(sizes))]
    return [parts_out] if sequence else parts_out


@handles("SequenceAt")
def _sequence_at(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    seq = c.get(n.input[0])
    if not isinstance(seq, list):
        raise c.error("SequenceAt needs a sequence from SplitToSequence")
    return [seq[to_dims(c.const(n.input[1], "position").data)[0].value]]
