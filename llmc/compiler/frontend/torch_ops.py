"""The ATen op handlers of the torch.export frontend: :data:`HANDLERS` maps an ATen op (or a
Python ``operator`` function on sizes) to the function that converts one fx node of it, and
:func:`ir_dtype` maps torch dtypes to IR dtypes (see :mod:`llmc.compiler.frontend.torch_export`)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from llmc.errors import FrontendError
from llmc.ir.graph import Param, Value
from llmc.ir.types import BF16, BOOL, F16, F32, F64, I32, I64, Dim, DType, int_dtype

if TYPE_CHECKING:
    from llmc.compiler.frontend.torch_export import Converter

_DTYPES: dict[torch.dtype, DType] = {
    torch.float32: F32,
    torch.float16: F16,
    torch.bfloat16: BF16,
    torch.float64: F64,
    torch.int64: I64,
    torch.int32: I32,
    torch.int16: int_dtype(16),
    torch.int8: int_dtype(8),
    torch.uint8: int_dtype(8, signed=False),
    torch.bool: BOOL,
}
_BIG = 1 << 62  # slice ends this large mean "to the end"


def ir_dtype(dtype: torch.dtype) -> DType:
    if dtype not in _DTYPES:
        raise FrontendError(f"unsupported tensor dtype {dtype}")
    return _DTYPES[dtype]


Handler = Callable[["Converter", torch.fx.Node], "Value | list[Value] | None"]
HANDLERS: dict[Any, Handler] = {}


def handles(*targets: Any) -> Callable[[Handler], Handler]:
    def wrap(fn: Handler) -> Handler:
        for t in targets:
            HANDLERS[t] = fn
        return fn

    return wrap


aten = torch.ops.aten


# -- no-ops and symbolic sizes ------------------------------------------------------------------
@handles(aten.clone.default, aten.alias.default, aten.detach.default, aten.detach_.default,
         aten.lift_fresh_copy.default, aten.contiguous.default, aten.dropout.default)
def _identity(c: Converter, n: torch.fx.Node) -> Value | None:
    return c.value(n.args[0])


@handles(aten._assert_tensor_metadata.default, aten.sym_size.int, operator.add, operator.mul,
         operator.sub, operator.floordiv, aten.sym_constrain_range_for_size.default,
         aten._assert_scalar.default)
def _symbolic(c: Converter, n: torch.fx.Node) -> None:
    return None  # sizes are read from metadata where they are used


@handles(aten.to.dtype, aten._to_copy.default, aten.to.dtype_layout, aten.type_as.default)
def _to(c: Converter, n: torch.fx.Node) -> Value:
    x = c.tensor(n.args[0])
    dtype = c.meta_type(n).dtype
    return x if x.type.dtype == dtype else c.emit("cast", [x], {"dtype": dtype})


# -- elementwise --------------------------------------------------------------------------------
_BINARY = {
    aten.add.Tensor: "add", aten.add.Scalar: "add", aten.sub.Tensor: "sub", aten.sub.Scalar: "sub",
    aten.mul.Tensor: "mul", aten.mul.Scalar: "mul", aten.div.Tensor: "div", aten.div.Scalar: "div",
    aten.pow.Tensor_Scalar: "pow", aten.pow.Tensor_Tensor: "pow", aten.maximum.default: "maximum",
    aten.minimum.default: "minimum", aten.eq.Tensor: "eq", aten.eq.Scalar: "eq", aten.ne.Scalar: "ne",
    aten.ne.Tensor: "ne", aten.lt.Tensor: "lt", aten.lt.Scalar: "lt", aten.le.Tensor: "le",
    aten.le.Scalar: "le", aten.gt.Tensor: "gt", aten.gt.Scalar: "gt", aten.ge.Tensor: "ge",
    aten.ge.Scalar: "ge", aten.logical_and.default: "logical_and", aten.logical_or.default: "logical_or",
    aten.bitwise_and.Tensor: "logical_and", aten.bitwise_or.Tensor: "logical_or",
}


@handles(*_BINARY)
def _binary(c: Converter, n: torch.fx.Node) -> Value:
    op = _BINARY[n.target]
    a, b = n.args[0], n.args[1]
    out = c.meta_type(n)
    if out.dtype == BOOL and op not in ("logical_and", "logical_or"):
        dtypes = [c.tensor(x).type.dtype for x in (a, b) if isinstance(x, torch.fx.Node)]
        dtype = next((d for d in dtypes if d.is_float), dtypes[0])
    else:
        dtype = out.dtype
    if n.kwargs.get("alpha", 1) != 1:
        b = c.b.op("mul", [c.operand(b, dtype), c.operand(n.kwargs["alpha"], dtype)])
        return c.emit(op, [c.operand(a, dtype), b])
    if n.target in (aten.div.Tensor, aten.div.Scalar) and n.kwargs.get("rounding_mode") is not None:
        raise c.error("division with a rounding mode is not supported")
    return c.emit(op, [c.operand(a, dtype), c.operand(b, dtype)])


_UNARY = {
    aten.neg.default: "neg", aten.abs.default: "abs", aten.exp.default: "exp", aten.log.default: "log",
    aten.sqrt.default: "sqrt", aten.rsqrt.default: "rsqrt", aten.reciprocal.default: "reciprocal",
    aten.tanh.default: "tanh", aten.sigmoid.default: "sigmoid", aten.silu.default: "silu",
    aten.relu.default: "relu", aten.erf.default: "erf", aten.cos.default: "cos", aten.sin.default: "sin",
    aten.logical_not.default: "logical_not", aten.bitwise_not.default: "logical_not",
}


@handles(*_UNARY)
def _unary(c: Converter, n: torch.fx.Node) -> Value:
    return c.emit(_UNARY[n.target], [c.tensor(n.args[0])])


@handles(aten.gelu.default)
def _gelu(c: Converter, n: torch.fx.Node) -> Value:
    approx = n.kwargs.get("approximate", n.args[1] if len(n.args) > 1 else "none")
    return c.emit("gelu_tanh" if approx == "tanh" else "gelu", [c.tensor(n.args[0])])


@handles(aten.where.self, aten.where.ScalarOther, aten.where.ScalarSelf)
def _where(c: Converter, n: torch.fx.Node) -> Value:
    dtype = c.meta_type(n).dtype
    return c.emit("where", [c.tensor(n.args[0]), c.operand(n.args[1], dtype), c.operand(n.args[2], dtype)])


@handles(aten.masked_fill.Scalar, aten.masked_fill.Tensor)
def _masked_fill(c: Converter, n: torch.fx.Node) -> Value:
    x = c.tensor(n.args[0])
    return c.emit("where", [c.tensor(n.args[1]), c.operand(n.args[2], x.type.dtype), x])


# -- reductions and normalisation ---------------------------------------------------------------
_REDUCE = {aten.mean.dim: "reduce_mean", aten.sum.dim_IntList: "reduce_sum", aten.amax.default: "reduce_max",
           aten.amin.default: "reduce_min"}


@handles(*_REDUCE)
def _reduce(c: Converter, n: torch.fx.Node) -> Value:
    x = c.tensor(n.args[0])
    axes = n.args[1] if len(n.args) > 1 and n.args[1] is not None else list(range(x.type.rank))
    keep = n.args[2] if len(n.args) > 2 else n.kwargs.get("keepdim", False)
    if n.kwargs.get("dtype") is not None:
        x = c.operand(n.args[0], ir_dtype(n.kwargs["dtype"]))
    return c.emit(_REDUCE[n.target], [x], {"axes": list(axes), "keepdim": bool(keep)})


@handles(aten.softmax.int, aten._softmax.default)
def _softmax(c: Converter, n: torch.fx.Node) -> Value:
    x = c.operand(n.args[0], c.meta_type(n).dtype)
    return c.emit("softmax", [x], {"axis": n.args[1]})


@handles(aten.cumsum.default)
def _cumsum(c: Converter, n: torch.fx.Node) -> Value:
    return c.emit("cumsum", [c.operand(n.args[0], c.meta_type(n).dtype)], {"axis": n.args[1]})


@handles(aten.layer_norm.default)
def _layer_norm(c: Converter, n: torch.fx.Node) -> Value:
    x, shape = c.tensor(n.args[0]), n.args[1]
    if len(shape) != 1:
        raise c.error("layer_norm over more than the last axis is not supported")
    extras = [c.tensor(a) for a in n.args[2:4] if a is not None]
    if len(n.args) > 2 and n.args[2] is None and len(extras) == 1:
        raise c.error("layer_norm with a bias but no weight is not supported")
    eps = n.args[4] if len(n.args) > 4 else 1e-5
    return c.emit("layer_norm", [x, *extras], {"eps": float(eps)})


# -- linear algebra -----------------------------------------------------------------------------
@handles(aten.linear.default)
def _linear(c: Converter, n: torch.fx.Node) -> Value:
    args = [c.tensor(a) for a in n.args[:3] if a is not None]
    return c.emit("linear", args)


@handles(aten.matmul.default, aten.mm.default, aten.bmm.default)
def _matmul(c: Converter, n: torch.fx.Node) -> Value:
    return c.emit("matmul", [c.tensor(n.args[0]), c.tensor(n.args[1])])


@handles(aten.addmm.default)
def _addmm(c: Converter, n: torch.fx.Node) -> Value:
    """``bias + x @ w``: a [K, N] weight parameter (GPT-2's Conv1D) becomes a linear layer with
    the weight stored [N, K], so every linear layer in the IR has PyTorch's layout."""
    bias, x, w = (c.tensor(a) for a in n.args[:3])
    if n.kwargs.get("beta", 1) != 1 or n.kwargs.get("alpha", 1) != 1:
        raise c.error("addmm with alpha or beta other than 1 is not supported")
    weight = _transposed_param(c, w)
    if weight is not None and bias.type.rank == 1:
        return c.emit("linear", [x, weight, bias])
    return c.emit("add", [c.b.op("matmul", [x, w]), bias])


def _transposed_param(c: Converter, w: Value) -> Value | None:
    producer = c.b.func.producers().get(w.name)
    if producer is None or producer.op != "param":
        return None
    param = c.b.module.params[producer.attrs["name"]]
    if param.type.rank != 2:
        return None
    c.b.module.params[param.name] = Param(
        param.name,
        param.type.with_shape(param.type.shape[::-1]),
        None if param.data is None else np.ascontiguousarray(param.data.T),
    )
    producer.outputs[0].type = c.b.module.params[param.name].type
    c.b.func.nodes.remove(producer)
    c.b._params.pop(param.name)
    return c.b.param(param.name)


@handles(aten.embedding.default)
def _embedding(c: Converter, n: torch.fx.Node) -> Value:
    return c.emit("embedding", [c.tensor(n.args[0]), c.tensor(n.args[1])])


@handles(aten.index_select.default)
def _index_select(c: Converter, n: torch.fx.Node) -> Value:
    return c.emit("gather", [c.tensor(n.args[0]), c.tensor(n.args[2])], {"axis": n.args[1]})


@handles(aten.index.Tensor)
def _index(c: Converter, n: torch.fx.Node) -> Value:
    """``x[idx]``: one integer index tensor on the first axis (a mixture of experts' weights
    gathered by expert id)."""
    indices = n.args[1]
    if len(indices) != 1 or indices[0] is None:
        raise c.error("indexing is supported with one integer index tensor on the first axis")
    return c.emit("gather", [c.tensor(n.args[0]), c.tensor(indices[0])], {"axis": 0})


@handles(aten.topk.default)
def _topk(c: Converter, n: torch.fx.Node) -> list[Value]:
    x = c.tensor(n.args[0])
    k = n.args[1]
    axis = (n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", -1)) % x.type.rank
    largest = n.args[3] if len(n.args) > 3 else n.kwargs.get("largest", True)
    if not largest:
        raise c.error("topk of the smallest values is not supported")
    return c.b.op_multi("topk", [x], {"k": k, "axis": axis}, [f"{n.name}_values", f"{n.name}_indices"])


@handles(aten.repeat_interleave.self_int)
def _repeat_interleave(c: Converter, n: torch.fx.Node) -> Value:
    """``repeat_interleave(x, r, axis)`` as a new axis after ``axis``, expanded to ``r`` and merged."""
    x = c.tensor(n.args[0])
    repeats = n.args[1]
    axis = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim")
    if axis is None or not isinstance(repeats, int):
        raise c.error("repeat_interleave needs an axis and a constant repeat count")
    axis %= x.type.rank
    shape = list(x.type.shape)
    grown = c.b.op("reshape", [x], {"shape": shape[:axis + 1] + [1] + shape[axis + 1:]})
    grown = c.b.op("expand", [grown], {"shape": shape[:axis + 1] + [repeats] + shape[axis + 1:]})
    return c.emit("reshape", [grown], {"shape": list(c.meta_type(n).shape)})


@handles(aten.scaled_dot_product_attention.default)
def _sdpa(c: Converter, n: torch.fx.Node) -> Value:
    q, k, v = (c.tensor(a) for a in n.args[:3])
    mask = n.args[3] if len(n.args) > 3 else n.kwargs.get("attn_mask")
    if n.kwargs.get("is_causal", n.args[5] if len(n.args) > 5 else False):
        raise c.error("causal attention without an explicit mask: pass the mask as a graph input")
    if n.kwargs.get("dropout_p", n.args[4] if len(n.args) > 4 else 0.0):
        raise c.error("attention dropout is not supported (export the model in eval mode)")
    inputs = [q, k, v]
    if mask is not None:
        inputs.append(c.operand(mask, q.type.dtype))
    return c.emit("attention", inputs, {"scale": n.kwargs.get("scale")})


# -- data movement ------------------------------------------------------------------------------
@handles(aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.unsqueeze.default,
         aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, aten.flatten.using_ints)
def _reshape(c: Converter, n: torch.fx.Node) -> Value:
    x = c.tensor(n.args[0])
    shape = list(c.meta_type(n).shape)
    if tuple(shape) == x.type.shape:
        return x
    return c.emit("reshape", [x], {"shape": shape})


@handles(aten.transpose.int, aten.permute.default, aten.t.default)
def _transpose(c: Converter, n: torch.fx.Node) -> Value:
    x = c.tensor(n.args[0])
    perm = list(range(x.type.rank))
    if n.target == aten.permute.default:
        perm = [p % x.type.rank for p in n.args[1]]
    elif x.type.rank >= 2:
        a, b = (n.args[1] % x.type.rank, n.args[2] % x.type.rank) if n.target == aten.transpose.int else (0, 1)
        perm[a], perm[b] = perm[b], perm[a]
    return c.emit("transpose", [x], {"perm": perm})


@handles(aten.expand.default)
def _expand(c: Converter, n: torch.fx.Node) -> Value:
    x = c.tensor(n.args[0])
    shape = list(c.meta_type(n).shape)
    return x if tuple(shape) == x.type.shape else c.emit("expand", [x], {"shape": shape})


@handles(aten.cat.default)
def _cat(c: Converter, n: torch.fx.Node) -> Value:
    parts = [c.value(a) for a in n.args[0]]
    parts = [p for p in parts if p is not None and p.type.numel() != Dim.of(0)]
    axis = n.args[1] if len(n.args) > 1 else 0
    if len(parts) == 1:
        return parts[0]
    return c.emit("concat", parts, {"axis": axis % parts[0].type.rank})


@handles(aten.slice.Tensor)
def _slice(c: Converter, n: torch.fx.Node) -> Value:
    x = c.tensor(n.args[0])
    axis = (n.args[1] if len(n.args) > 1 else 0) % x.type.rank
    size = x.type.shape[axis]
    start = _bound(c, n.args[2] if len(n.args) > 2 else None, size, 0)
    end = _bound(c, n.args[3] if len(n.args) > 3 else None, size, None)
    step = n.args[4] if len(n.args) > 4 else 1
    if start == Dim.of(0) and end == size and step == 1:
        return x
    return c.emit("slice", [x], {"axis": axis, "start": start, "end": end, "step": step})


def _bound(c: Converter, arg: Any, size: Dim, default: int | None) -> Dim:
    if arg is None:
        return Dim.of(default) if default is not None else size
    value = c.int_arg(arg)
    if value.is_static:
        v = value.value
        if v >= _BIG or (size.is_static and v > size.value):
            return size
        if v < 0:
            return size + v
    return value


@handles(aten.split.Tensor, aten.split_with_sizes.default)
def _split(c: Converter, n: torch.fx.Node) -> list[Value]:
    x = c.tensor(n.args[0])
    axis = (n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)) % x.type.rank
    parts, start = [], Dim.of(0)
    for val in n.meta["val"]:
        size = c.dim(val.shape[axis])
        parts.append(c.b.op("slice", [x], {"axis": axis, "start": start, "end": start + size}))
        start = start + size
    return parts


@handles(operator.getitem)
def _getitem(c: Converter, n: torch.fx.Node) -> Value:
    parts = c.values.get(n.args[0].name)
    if not isinstance(parts, list):
        raise c.error("indexing a value that is not a tuple of tensors")
    return parts[n.args[1]]


@handles(aten.select.int)
def _select(c: Converter, n: torch.fx.Node) -> Value:
    x = c.tensor(n.args[0])
    axis = n.args[1] % x.type.rank
    index = _bound(c, n.args[2], x.type.shape[axis], 0)
    part = c.b.op("slice", [x], {"axis": axis, "start": index, "end": index + 1})
    return c.emit("reshape", [part], {"shape": list(c.meta_type(n).shape)})


# -- sources ------------------------------------------------------------------------------------
@handles(aten.full.default, aten.zeros.default, aten.ones.default, aten.scalar_tensor.default)
def _full(c: Converter, n: torch.fx.Node) -> Value:
    t = c.meta_type(n)
    fill = {aten.zeros.default: 0, aten.ones.default: 1}.get(n.target)
    if fill is None:
        fill = n.args[1] if n.target == aten.full.default else n.args[0]
    value = float(fill) if t.dtype.is_float else int(fill)
    return c.emit("constant", [], {"value": value, "shape": list(t.shape), "dtype": t.dtype})


@handles(aten.arange.start, aten.arange.default, aten.arange.start_step)
def _arange(c: Converter, n: torch.fx.Node) -> Value:
    args = list(n.args)
    if n.target == aten.arange.default:
        args = [0, *args]
    step = args[2] if len(args) > 2 else 1
    start, end = c.int_arg(args[0]), c.int_arg(args[1])
    return c.emit("iota", [], {"start": start, "end": end, "step": step, "dtype": c.meta_type(n).dtype})
