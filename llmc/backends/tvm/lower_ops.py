"""Lowerings of the core and neural-network IR ops to Relax ops (legalized to TIR by TVM)."""

from __future__ import annotations

import math

import numpy as np
from tvm import relax
from tvm.relax import op as R

from llmc.backends.tvm.lower import FunctionLowering, handles, tvm_dtype
from llmc.errors import LlmcError
from llmc.ir.graph import Node
from llmc.ir.ops.common import as_dtype
from llmc.ir.types import Dim

_BINARY = {"add": R.add, "sub": R.subtract, "mul": R.multiply, "div": R.divide, "pow": R.power,
           "maximum": R.maximum, "minimum": R.minimum, "eq": R.equal, "ne": R.not_equal, "lt": R.less,
           "le": R.less_equal, "gt": R.greater, "ge": R.greater_equal, "logical_and": R.logical_and,
           "logical_or": R.logical_or}
_UNARY = {"exp": R.exp, "log": R.log, "sqrt": R.sqrt, "rsqrt": R.rsqrt, "tanh": R.tanh, "sigmoid": R.sigmoid,
          "silu": R.nn.silu, "relu": R.nn.relu, "erf": R.erf, "cos": R.cos, "sin": R.sin, "gelu": R.nn.gelu,
          "gelu_tanh": R.nn.gelu_tanh, "neg": R.negative, "abs": R.abs, "logical_not": R.logical_not}
_REDUCE = {"reduce_sum": R.sum, "reduce_mean": R.mean, "reduce_max": R.max, "reduce_min": R.min}


def _emit(lw: FunctionLowering, expr: relax.Expr) -> list[relax.Expr]:
    return [lw.bb.emit(expr)]


def _int_arithmetic_check(lw: FunctionLowering, node: Node) -> None:
    """Integer results narrower than their storage would need wrapping that TVM does not do."""
    dtype = node.outputs[0].type.dtype
    if dtype.is_int and dtype.bits != dtype.numpy().itemsize * 8:
        raise LlmcError(f"func @{lw.func.name}, %{node.outputs[0].name} = {node.op}: "
                        f"{dtype} arithmetic is not supported by the TVM backend")


@handles(*_BINARY)
def _binary(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    _int_arithmetic_check(lw, node)
    return _emit(lw, _BINARY[node.op](lw.arg(node, 0), lw.arg(node, 1)))


@handles(*_UNARY)
def _unary(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    _int_arithmetic_check(lw, node)
    return _emit(lw, _UNARY[node.op](lw.arg(node, 0)))


@handles("reciprocal")
def _reciprocal(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    x = lw.arg(node, 0)
    one = relax.const(1.0, tvm_dtype(node.outputs[0].type.dtype))
    return _emit(lw, R.divide(one, x))


@handles("where")
def _where(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    return _emit(lw, R.where(lw.arg(node, 0), lw.arg(node, 1), lw.arg(node, 2)))


@handles("cast")
def _cast(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    """A parameter's cast is done once, at compile time, with the reference's semantics (so no
    float16 reaches devices without half precision)."""
    _int_arithmetic_check(lw, node)
    dtype = node.attrs["dtype"]
    name = lw.param_name(node.inputs[0])
    if name is not None:
        return [lw.weight(f"{name}#{dtype}", lambda: as_dtype(lw.weights.param(name), dtype))]
    return _emit(lw, R.astype(lw.arg(node, 0), tvm_dtype(dtype)))


@handles(*_REDUCE)
def _reduce(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    rank = node.inputs[0].type.rank
    axes = sorted({a % max(rank, 1) for a in node.attrs["axes"]})
    return _emit(lw, _REDUCE[node.op](lw.arg(node, 0), axes, bool(node.attrs["keepdim"])))


@handles("cumsum")
def _cumsum(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    return _emit(lw, R.cumsum(lw.arg(node, 0), node.attrs["axis"]))


@handles("constant")
def _constant(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    out = node.outputs[0].type
    dtype = tvm_dtype(out.dtype)
    value = node.attrs["value"]
    if isinstance(value, list):
        return [relax.const(np.asarray(value).astype(dtype).reshape([d.value for d in out.shape]), dtype)]
    scalar = relax.const(np.asarray(value).astype(dtype), dtype)
    if out.rank == 0:
        return [scalar]
    return _emit(lw, R.broadcast_to(scalar, lw.shape(out)))


@handles("iota")
def _iota(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    start, end = (lw.dim(Dim.of(node.attrs[k])) for k in ("start", "end"))
    return _emit(lw, R.arange(start, end, node.attrs["step"], tvm_dtype(node.attrs["dtype"])))


@handles("reshape")
def _reshape(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    return _emit(lw, R.reshape(lw.arg(node, 0), lw.shape(node.outputs[0].type)))


@handles("transpose")
def _transpose(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    return _emit(lw, R.permute_dims(lw.arg(node, 0), node.attrs["perm"]))


@handles("concat")
def _concat(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    rank = node.inputs[0].type.rank
    return _emit(lw, R.concat([lw.value(v) for v in node.inputs], node.attrs["axis"] % rank))


@handles("slice")
def _slice(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    rank = node.inputs[0].type.rank
    start, end = (lw.dim(Dim.of(node.attrs[k])) for k in ("start", "end"))
    return _emit(lw, R.strided_slice(lw.arg(node, 0), [node.attrs["axis"] % rank], [start], [end],
                                     [node.attrs["step"]], assume_inbound=True))


@handles("expand")
def _expand(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    return _emit(lw, R.broadcast_to(lw.arg(node, 0), lw.shape(node.outputs[0].type)))


@handles("gather")
def _gather(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    rank = node.inputs[0].type.rank
    return _emit(lw, R.take(lw.arg(node, 0), lw.arg(node, 1), node.attrs["axis"] % rank, mode="clip"))


@handles("embedding")
def _embedding(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    return _emit(lw, R.take(lw.arg(node, 0), lw.arg(node, 1), 0, mode="clip"))


@handles("matmul")
def _matmul(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    _int_arithmetic_check(lw, node)
    return _emit(lw, R.matmul(lw.arg(node, 0), lw.arg(node, 1)))


@handles("softmax")
def _softmax(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    return _emit(lw, R.nn.softmax(lw.arg(node, 0), node.attrs["axis"]))


@handles("rms_norm")
def _rms_norm(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    return _emit(lw, R.nn.rms_norm(lw.arg(node, 0), lw.arg(node, 1), [-1], node.attrs["eps"]))


@handles("layer_norm")
def _layer_norm(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    x = lw.arg(node, 0)
    width = node.inputs[0].type.shape[-1].value
    dtype = tvm_dtype(node.inputs[0].type.dtype)
    gamma = lw.arg(node, 1) if len(node.inputs) > 1 else relax.const(np.ones(width, dtype), dtype)
    beta = lw.arg(node, 2) if len(node.inputs) > 2 else relax.const(np.zeros(width, dtype), dtype)
    return _emit(lw, R.nn.layer_norm(x, gamma, beta, [-1], node.attrs["eps"]))


@handles("attention")
def _attention(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    """``softmax(q k^T * scale + mask) v`` with KV heads repeated for grouped queries."""
    q, k, v = (lw.arg(node, i) for i in range(3))
    qt, kt = node.inputs[0].type, node.inputs[1].type
    group = qt.shape[1].value // kt.shape[1].value
    if group > 1:
        k, v = (lw.bb.emit(R.repeat(t, group, 1)) for t in (k, v))
    scale = node.attrs["scale"]
    scale = scale if scale is not None else 1.0 / math.sqrt(qt.shape[3].value)
    dtype = tvm_dtype(qt.dtype)
    scores = lw.bb.emit(R.matmul(q, R.permute_dims(k, [0, 1, 3, 2])))
    scores = lw.bb.emit(R.multiply(scores, relax.const(scale, dtype)))
    if node.attrs.get("softcap") is not None:
        cap = relax.const(node.attrs["softcap"], dtype)
        scores = lw.bb.emit(R.multiply(R.tanh(R.divide(scores, cap)), cap))
    if len(node.inputs) == 4:
        scores = lw.bb.emit(R.add(scores, lw.arg(node, 3)))
    return _emit(lw, R.matmul(R.nn.softmax(scores, -1), v))



@handles("rope")
def _rope(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    """``x * cos + rotate_half(x) * sin``, the tables computed from the positions in the graph."""
    full, positions, inv_freq = (lw.arg(node, i) for i in range(3))
    xt = node.inputs[0].type
    rank, width = xt.rank, xt.shape[-1].value
    rotated_dim = node.attrs.get("rotary_dim", 0) or width
    half = rotated_dim // 2
    x = full if rotated_dim == width else lw.bb.emit(R.strided_slice(full, [rank - 1], [0], [rotated_dim]))
    seq_axis = node.attrs["seq_axis"] % rank
    dtype = tvm_dtype(xt.dtype)
    angles = lw.bb.emit(R.multiply(R.expand_dims(R.astype(positions, dtype), [-1]), inv_freq))
    angles = lw.bb.emit(R.concat([angles, angles], -1))
    ones = [a for a in range(1, rank - 1) if a != seq_axis]
    scale = relax.const(node.attrs["scale"], dtype)
    cos, sin = (lw.bb.emit(R.multiply(fn(angles), scale)) for fn in (R.cos, R.sin))
    if ones:
        cos, sin = (lw.bb.emit(R.expand_dims(t, ones)) for t in (cos, sin))
    lo = lw.bb.emit(R.strided_slice(x, [rank - 1], [0], [half]))
    hi = lw.bb.emit(R.strided_slice(x, [rank - 1], [half], [2 * half]))
    rotated = lw.bb.emit(R.concat([R.negative(hi), lo], -1))
    y = R.add(R.multiply(x, cos), R.multiply(rotated, sin))
    if rotated_dim == width:
        return _emit(lw, y)
    passed = lw.bb.emit(R.strided_slice(full, [rank - 1], [rotated_dim], [width]))
    return _emit(lw, R.concat([lw.bb.emit(y), passed], -1))


@handles("sliding_window_mask")
def _sliding_window_mask(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    mask, positions = lw.arg(node, 0), lw.arg(node, 1)
    mt = node.inputs[0].type
    keys = lw.bb.emit(R.arange(0, lw.dim(mt.shape[-1]), 1, "int64"))
    distance = lw.bb.emit(R.subtract(R.expand_dims(R.astype(positions, "int64"), [1, 3]), keys))
    outside = lw.bb.emit(R.greater_equal(distance, relax.const(node.attrs["window"], "int64")))
    dtype = tvm_dtype(mt.dtype)
    lowest = relax.const(float(np.finfo(mt.dtype.numpy()).min), dtype)
    return _emit(lw, R.where(outside, lowest, mask))


@handles("topk")
def _topk(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    return list(_largest(lw, lw.arg(node, 0), node.attrs["k"], node.attrs["axis"]))


def _largest(lw: FunctionLowering, x: relax.Expr, k: int, axis: int) -> tuple[relax.Expr, relax.Expr]:
    """The ``k`` largest values of ``x`` along ``axis`` and their int64 indices (the ``topk`` op)."""
    both = lw.bb.emit(R.topk(x, k, axis, "both", True, "int64"))
    return lw.bb.emit(relax.TupleGetItem(both, 0)), lw.bb.emit(relax.TupleGetItem(both, 1))


@handles("moe")
def _moe(lw: FunctionLowering, node: Node) -> list[relax.Expr]:
    """The mixture of experts as the interpreter computes it: each token's top-k experts' weights
    gathered, their gated MLPs as batched matrix products, the weighted sum over the k."""
    x, router, gate_up, down = (lw.arg(node, i) for i in range(4))
    k = node.attrs["top_k"]
    hidden = node.inputs[0].type.shape[1].value
    inner = node.inputs[3].type.shape[2].value
    probs = lw.bb.emit(R.nn.softmax(R.matmul(x, R.permute_dims(router, [1, 0])), -1))
    weights, chosen = _largest(lw, probs, k, -1)
    if node.attrs["normalize"]:
        weights = lw.bb.emit(R.divide(weights, R.sum(weights, [-1], keepdims=True)))
    experts = lw.bb.emit(R.reshape(chosen, [-1]))
    tokens = lw.bb.emit(R.expand_dims(R.repeat(x, k, 0), [-1]))
    h = lw.bb.emit(R.squeeze(R.matmul(R.take(gate_up, experts, 0), tokens), [-1]))
    gate = lw.bb.emit(R.strided_slice(h, [1], [0], [inner]))
    up = lw.bb.emit(R.strided_slice(h, [1], [inner], [2 * inner]))
    act = lw.bb.emit(R.multiply(R.nn.silu(gate), up))
    out = lw.bb.emit(R.squeeze(R.matmul(R.take(down, experts, 0), R.expand_dims(act, [-1])), [-1]))
    out = lw.bb.emit(R.multiply(out, R.reshape(weights, [-1, 1])))
    return _emit(lw, R.sum(R.reshape(out, [-1, k, hidden]), [1]))
