"""ONNX handlers of indexing: Gather, GatherElements, GatherND, ScatterND, ScatterElements.

GatherElements and GatherND become one ``gather`` from the flattened data at linear indices
(negative indices wrapped, computed with ``iota`` coordinates and the data's strides). The
scatters compare every position with every update's linear index: with no reduction each
position takes the last update that names it (a ``gather``), else the updates are reduced into
it (sum, max, min), which needs positions x updates elements.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from llmc.compiler.frontend.onnx_registry import Attrs, Node, handles
from llmc.compiler.frontend.onnx_values import Operand, dims_const, make_const
from llmc.ir.graph import Value
from llmc.ir.types import I64, Dim

if TYPE_CHECKING:
    from llmc.compiler.frontend.onnx_converter import Converter

ONE = Dim.of(1)


def _prod(dims: list[Dim] | tuple[Dim, ...]) -> Dim:
    return math.prod(dims, start=ONE)


def _dim(c: Converter, d: Dim, rank: int) -> Value:
    """The integer ``d`` as an i64 tensor of shape [1] * rank (a symbolic one of shape [1])."""
    return c.scalar(d.value, I64, rank) if d.is_static else c.materialize(dims_const([d]), "dim")


def _times(c: Converter, x: Value, stride: Dim) -> Value:
    return x if stride == ONE else c.op("mul", [x, _dim(c, stride, x.type.rank)])


def _plus(c: Converter, acc: Value | None, x: Value) -> Value:
    return x if acc is None else c.op("add", [acc, x])


def _wrapped(c: Converter, index: Value, size: Dim) -> Value:
    """Indices as i64 with negative ones counted from the end of a dim of ``size``."""
    if index.type.dtype != I64:
        index = c.op("cast", [index], {"dtype": I64})
    rank = index.type.rank
    negative = c.op("lt", [index, c.scalar(0, I64, rank)])
    return c.op("where", [negative, c.op("add", [index, _dim(c, size, rank)]), index])


def _coord(c: Converter, size: Dim, axis: int, rank: int) -> Value:
    """``iota(size)`` along ``axis`` of a rank-``rank`` tensor (other dims 1)."""
    line = c.op("iota", [], {"start": 0, "end": size, "dtype": I64})
    return c.reshape(line, [ONE] * axis + [size] + [ONE] * (rank - axis - 1))


def _element_index(c: Converter, shape: tuple[Dim, ...], index: Value, axis: int) -> Value:
    """The linear positions in data of ``shape`` that GatherElements' ``index`` names (its shape)."""
    rank = len(shape)
    strides = [_prod(shape[d + 1:]) for d in range(rank)]
    flat = _times(c, _wrapped(c, index, shape[axis]), strides[axis])
    for d in range(rank):
        if d != axis and index.type.shape[d] != ONE:
            flat = c.op("add", [flat, _times(c, _coord(c, index.type.shape[d], d, rank), strides[d])])
    return flat


def _nd_index(c: Converter, shape: tuple[Dim, ...], index: Value, batch: int) -> tuple[Value, int]:
    """GatherND's linear index into data of ``shape`` flattened over its first batch + k dims
    (shape index.shape[:-1]), and k."""
    last = index.type.shape[-1]
    if not last.is_static:
        raise ValueError("the last dim of the indices must be static")
    k, lead = last.value, list(index.type.shape[:-1])
    block = _prod(shape[batch:batch + k])
    linear: Value | None = None
    for j in range(k):
        column = c.op("slice", [index], {"axis": len(lead), "start": j, "end": j + 1})
        column = _wrapped(c, c.reshape(column, lead), shape[batch + j])
        linear = _plus(c, linear, _times(c, column, _prod(shape[batch + j + 1:batch + k])))
    for t in range(batch):
        linear = _plus(c, linear, _times(c, _coord(c, lead[t], t, len(lead)), block * _prod(shape[t + 1:batch])))
    if linear is None:
        linear = c.b.constant(0, I64, lead)
    return linear, k


@handles("Gather")
def _gather(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    data, idx = c.get(n.input[0]), c.get(n.input[1])
    axis = attrs.get("axis", 0) % c.rank_of(data)
    if c.small(data, idx):
        return [make_const(np.take(data.data, idx.data.astype(np.int64), axis=axis), data.dtype)]  # type: ignore[union-attr]
    if c.contract and isinstance(idx, Value) and axis == 0 and c.rank_of(data) == 2 and not isinstance(data, Value):
        return [c.emit("embedding", [c.tensor(n.input[0]), idx])]
    return [c.emit("gather", [c.tensor(n.input[0]), c.tensor(n.input[1])], {"axis": axis})]


@handles("GatherElements")
def _gather_elements(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x, index = c.tensor(n.input[0]), c.tensor(n.input[1])
    flat = _element_index(c, x.type.shape, index, attrs.get("axis", 0) % x.type.rank)
    return [c.op("gather", [c.reshape(x, [x.type.numel()]), flat], {"axis": 0})]


@handles("GatherND")
def _gather_nd(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x, index = c.tensor(n.input[0]), c.tensor(n.input[1])
    batch = attrs.get("batch_dims", 0)
    linear, k = _nd_index(c, x.type.shape, index, batch)
    rest = list(x.type.shape[batch + k:])
    flat = c.reshape(x, [_prod(x.type.shape[:batch + k]), *rest])
    return [c.op("gather", [flat, linear], {"axis": 0})]


def _scatter(c: Converter, data: Value, linear: Value, updates: Value, reduction: str) -> Value:
    """``data`` [N, *R] with ``updates`` [U, *R] written (or reduced) at positions ``linear`` [U]."""
    size, count = data.type.shape[0], linear.type.shape[0]
    rest = len(data.type.shape) - 1
    positions = c.op("reshape", [c.op("iota", [], {"start": 0, "end": size, "dtype": I64})], {"shape": [size, ONE]})
    hits = c.op("eq", [positions, c.reshape(linear, [ONE, count])])  # [N, U]
    if reduction == "none":  # each position takes the last update naming it
        order = c.op("reshape", [c.op("iota", [], {"start": 0, "end": count, "dtype": I64})], {"shape": [ONE, count]})
        last = c.op("reduce_max", [c.op("where", [hits, order, c.scalar(-1, I64, 2)])], {"axes": [1]})
        picked = c.op("gather", [updates, c.op("maximum", [last, c.scalar(0, I64, 1)])], {"axis": 0})
        hit = c.op("reshape", [c.op("ge", [last, c.scalar(0, I64, 1)])], {"shape": [size] + [ONE] * rest})
        return c.op("where", [hit, picked, data])
    dtype = data.type.dtype
    lowest, highest = (-math.inf, math.inf) if dtype.is_float else dtype.int_range()
    op, fill, combine = {"add": ("reduce_sum", 0, "add"), "max": ("reduce_max", lowest, "maximum"),
                         "min": ("reduce_min", highest, "minimum")}[reduction]
    mask = c.reshape(hits, [size, count] + [ONE] * rest)
    spread = c.reshape(updates, [ONE, *updates.type.shape])
    reduced = c.op(op, [c.op("where", [mask, spread, c.scalar(fill, dtype, rest + 2)])], {"axes": [1]})
    return c.op(combine, [data, reduced])


def _reduction(c: Converter, attrs: Attrs) -> str:
    reduction = attrs.get("reduction", b"none")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    if reduction not in ("none", "add", "max", "min"):
        raise c.error(f"reduction '{reduction}' is not supported (none, add, max, min are)")
    return reduction


@handles("ScatterND")
def _scatter_nd(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x, index, updates = (c.tensor(name) for name in n.input[:3])
    reduction = _reduction(c, attrs)
    linear, k = _nd_index(c, x.type.shape, index, 0)
    rest = list(x.type.shape[k:])
    count = _prod(index.type.shape[:-1])
    out = _scatter(c, c.reshape(x, [_prod(x.type.shape[:k]), *rest]),
                   c.reshape(linear, [count]),
                   c.reshape(updates, [count, *rest]), reduction)
    return [c.reshape(out, list(x.type.shape))]


@handles("ScatterElements")
def _scatter_elements(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x, index, updates = (c.tensor(name) for name in n.input[:3])
    reduction = _reduction(c, attrs)
    linear = _element_index(c, x.type.shape, index, attrs.get("axis", 0) % x.type.rank)
    count = index.type.numel()
    out = _scatter(c, c.reshape(x, [x.type.numel()]),
                   c.reshape(linear, [count]),
                   c.reshape(updates, [count]), reduction)
    return [c.reshape(out, list(x.type.shape))]
