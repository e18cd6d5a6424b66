"""Core tensor ops: sources, elementwise arithmetic, reductions, casts and data movement.

Float ops compute in float32 (float64 for f64) and round to the result dtype; integer ops
compute exactly and wrap to the result width (two's complement).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from llmc.ir.ops.common import as_dtype, broadcast_shapes, float_only, norm_axis, same_dtype, widen
from llmc.ir.registry import AttrSpec, InferError, RefContext, register
from llmc.ir.types import BOOL, Dim, TensorType

# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


@register("param", inputs=0, attrs={"name": AttrSpec("str")})
class Param:
    """A module parameter (weight). Its type is the parameter's, checked by the verifier."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> None:
        return None

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        raise RuntimeError("param is evaluated by the interpreter")


@register(
    "constant",
    inputs=0,
    attrs={"value": AttrSpec("value"), "shape": AttrSpec("dims"), "dtype": AttrSpec("dtype")},
)
class Constant:
    """A literal tensor: a scalar filled into ``shape`` or a flat list of all elements."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        value, shape = attrs["value"], [Dim.of(d) for d in attrs["shape"]]
        if isinstance(value, list):
            if not all(d.is_static for d in shape):
                raise InferError("a constant given as a list needs a static shape")
            numel = math.prod(d.value for d in shape)
            if len(value) != numel:
                raise InferError(f"constant has {len(value)} values for {numel} elements")
        return [TensorType.of(shape, attrs["dtype"])]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        shape = ctx.shape(attrs["shape"])
        value = np.asarray(attrs["value"])  # ints stay exact (float64 would round past 2^53)
        if value.dtype.kind not in "iuf":
            value = value.astype(np.float64)
        data = np.broadcast_to(value, shape) if value.ndim == 0 else value.reshape(shape)
        return [as_dtype(data, attrs["dtype"])]


@register(
    "iota",
    inputs=0,
    attrs={"start": AttrSpec("dim"), "end": AttrSpec("dim"), "step": AttrSpec("int", 1), "dtype": AttrSpec("dtype")},
)
class Iota:
    """``arange(start, end, step)`` as a rank-1 tensor (bounds may be symbolic)."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        step = attrs["step"]
        if step == 0:
            raise InferError("iota step must not be 0")
        length = Dim.of(attrs["end"]) - Dim.of(attrs["start"])
        if step != 1:
            if not length.is_static:
                raise InferError("iota with a step other than 1 needs static bounds")
            length = Dim.of(max(0, -(-length.value // step)))
        elif length.is_static and length.value < 0:  # arange(5, 2) is empty
            length = Dim.of(0)
        return [TensorType.of([length], attrs["dtype"])]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        start, end = ctx.shape([attrs["start"], attrs["end"]])
        return [as_dtype(np.arange(start, end, attrs["step"]), attrs["dtype"])]


# ---------------------------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------------------------


def _binary(name: str, fn: Any, result_bool: bool = False, floats_only: bool = False) -> None:
    class Binary:
        @staticmethod
        def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
            dtype = same_dtype(ins)
            if floats_only:
                float_only(ins[0], name)
            shape = broadcast_shapes(ins[0].shape, ins[1].shape)
            return [TensorType(shape, BOOL if result_bool else dtype)]

        @staticmethod
        def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
            a, b = (widen(x) for x in ins)
            return [as_dtype(fn(a, b), ctx.out_types[0].dtype)]

    Binary.__doc__ = f"Elementwise {name} with NumPy broadcasting."
    register(name, inputs=2)(Binary)


def _int_or_true_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if np.issubdtype(a.dtype, np.integer):  # C semantics: truncate toward zero
        q = np.abs(a) // np.maximum(np.abs(b), 1)
        return np.where((a < 0) ^ (b < 0), -q, q)
    return a / b


_binary("add", np.add)
_binary("sub", np.subtract)
_binary("mul", np.multiply)
_binary("div", _int_or_true_div)
_binary("pow", np.power, floats_only=True)
_binary("maximum", np.maximum)
_binary("minimum", np.minimum)
_binary("eq", np.equal, result_bool=True)
_binary("ne", np.not_equal, result_bool=True)
_binary("lt", np.less, result_bool=True)
_binary("le", np.less_equal, result_bool=True)
_binary("gt", np.greater, result_bool=True)
_binary("ge", np.greater_equal, result_bool=True)
_binary("logical_and", np.logical_and, result_bool=True)
_binary("logical_or", np.logical_or, result_bool=True)

_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu_erf(x: np.ndarray) -> np.ndarray:
    wide = x.astype(np.float64)
    return (0.5 * wide * (1.0 + _erf(wide / math.sqrt(2.0)).astype(np.float64))).astype(x.dtype)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    c = np.float32(math.sqrt(2.0 / math.pi))
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(c * (x + np.float32(0.044715) * x * x * x)))


_UNARY_FLOAT = {
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "rsqrt": lambda x: np.float32(1.0) / np.sqrt(x),
    "reciprocal": lambda x: np.float32(1.0) / x,
    "tanh": np.tanh,
    "sigmoid": lambda x: np.float32(1.0) / (np.float32(1.0) + np.exp(-x)),
    "silu": lambda x: x / (np.float32(1.0) + np.exp(-x)),
    "erf": lambda x: _erf(x.astype(np.float64)).astype(x.dtype),
    "cos": np.cos,
    "sin": np.sin,
    "gelu": _gelu_erf,
    "gelu_tanh": _gelu_tanh,
}
_UNARY_ANY = {"neg": np.negative, "abs": np.abs, "relu": lambda x: np.maximum(x, 0), "logical_not": np.logical_not}


def _unary(name: str, fn: Any, floats_only: bool) -> None:
    class Unary:
        @staticmethod
        def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
            if floats_only:
                float_only(ins[0], name)
            return [TensorType(ins[0].shape, ins[0].dtype)]

        @staticmethod
        def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
            x = widen(ins[0])
            with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
                return [as_dtype(fn(x), ctx.out_types[0].dtype)]

    Unary.__doc__ = f"Elementwise {name}."
    register(name, inputs=1)(Unary)


for _name, _fn in _UNARY_FLOAT.items():
    _unary(_name, _fn, floats_only=True)
for _name, _fn in _UNARY_ANY.items():
    _unary(_name, _fn, floats_only=False)


@register("where", inputs=3)
class Where:
    """``cond ? a : b`` with broadcasting; ``cond`` is bool."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        if ins[0].dtype != BOOL:
            raise InferError(f"where condition must be bool, got {ins[0].dtype}")
        dtype = same_dtype(ins[1:])
        return [TensorType(broadcast_shapes(*(t.shape for t in ins)), dtype)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        return [as_dtype(np.where(*ins), ctx.out_types[0].dtype)]


@register("cast", inputs=1, attrs={"dtype": AttrSpec("dtype")})
class Cast:
    """Convert to ``dtype``: floats round to nearest, float to int truncates toward zero and
    wraps, int to narrower int wraps."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        return [TensorType(ins[0].shape, attrs["dtype"])]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        return [as_dtype(ins[0], attrs["dtype"])]


# ---------------------------------------------------------------------------------------------
# Reductions
# ---------------------------------------------------------------------------------------------


def _reduction(name: str, fn: Any) -> None:
    class Reduce:
        @staticmethod
        def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
            rank = ins[0].rank
            axes = sorted({norm_axis(a, rank) for a in attrs["axes"]})
            if name == "reduce_mean":
                float_only(ins[0], name)
            shape = [Dim.of(1) if i in axes else d for i, d in enumerate(ins[0].shape)]
            if not attrs["keepdim"]:
                shape = [d for i, d in enumerate(shape) if i not in axes]
            return [TensorType.of(shape, ins[0].dtype)]

        @staticmethod
        def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
            x = widen(ins[0])
            axes = tuple(sorted({a % max(x.ndim, 1) for a in attrs["axes"]}))  # [1, -1] is one axis
            return [as_dtype(fn(x, axis=axes, keepdims=attrs["keepdim"]), ctx.out_types[0].dtype)]

    Reduce.__doc__ = f"{name} over ``axes``."
    register(name, inputs=1, attrs={"axes": AttrSpec("ints"), "keepdim": AttrSpec("bool", False)})(Reduce)


_reduction("reduce_sum", np.sum)
_reduction("reduce_mean", np.mean)
_reduction("reduce_max", np.max)
_reduction("reduce_min", np.min)


@register("cumsum", inputs=1, attrs={"axis": AttrSpec("int")})
class Cumsum:
    """Inclusive prefix sum along ``axis``."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        norm_axis(attrs["axis"], ins[0].rank)
        return [ins[0]]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x = widen(ins[0])
        return [as_dtype(np.cumsum(x, axis=attrs["axis"]), ctx.out_types[0].dtype)]


# ---------------------------------------------------------------------------------------------
# Data movement
# ---------------------------------------------------------------------------------------------


@register("reshape", inputs=1, attrs={"shape": AttrSpec("dims")})
class Reshape:
    """Row-major reshape to an explicit (possibly symbolic) shape with the same element count."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        out = TensorType.of(attrs["shape"], ins[0].dtype)
        if out.numel() != ins[0].numel():
            raise InferError(f"reshape changes the element count: {ins[0].numel()} -> {out.numel()}")
        return [out]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        return [ins[0].reshape(ctx.shape(attrs["shape"]))]


@register("transpose", inputs=1, attrs={"perm": AttrSpec("ints")})
class Transpose:
    """Permute axes: output axis ``i`` is input axis ``perm[i]``."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        perm = attrs["perm"]
        if sorted(perm) != list(range(ins[0].rank)):
            raise InferError(f"perm {perm} is not a permutation of {ins[0].rank} axes")
        return [ins[0].with_shape([ins[0].shape[p] for p in perm])]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        return [np.ascontiguousarray(np.transpose(ins[0], attrs["perm"]))]


@register("concat", inputs=(1, -1), attrs={"axis": AttrSpec("int")})
class Concat:
    """Join tensors along ``axis``; other dims must agree."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        dtype = same_dtype(ins)
        rank = ins[0].rank
        if any(t.rank != rank for t in ins):
            raise InferError("concat operands have different ranks")
        axis = norm_axis(attrs["axis"], rank)
        for i in range(rank):
            if i != axis and len({t.shape[i] for t in ins}) != 1:
                raise InferError(f"concat operands differ in dim {i}")
        size = Dim.of(0)
        for t in ins:
            size = size + t.shape[axis]
        shape = list(ins[0].shape)
        shape[axis] = size
        return [TensorType.of(shape, dtype)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        return [np.concatenate(ins, axis=attrs["axis"])]


@register(
    "slice",
    inputs=1,
    attrs={"axis": AttrSpec("int"), "start": AttrSpec("dim"), "end": AttrSpec("dim"), "step": AttrSpec("int", 1)},
)
class Slice:
    """``x[start:end:step]`` along ``axis``; ``0 <= start <= end <= size``, ``step > 0``."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        axis = norm_axis(attrs["axis"], ins[0].rank)
        start, end, step = Dim.of(attrs["start"]), Dim.of(attrs["end"]), attrs["step"]
        size = ins[0].shape[axis]
        if step <= 0:
            raise InferError("slice step must be positive")
        for bound in (start, end):
            if bound.is_static and bound.value < 0:
                raise InferError("slice bounds must be non-negative")
            if bound.is_static and size.is_static and bound.value > size.value:
                raise InferError(f"slice bound {bound} is past the dim size {size}")
        length = end - start
        if length.is_static and length.value < 0:
            raise InferError(f"slice start {start} is past its end {end}")
        if step != 1:
            if not length.is_static:
                raise InferError("a strided slice needs static bounds")
            length = Dim.of(-(-length.value // step))
        shape = list(ins[0].shape)
        shape[axis] = length
        return [ins[0].with_shape(shape)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        start, end = ctx.shape([attrs["start"], attrs["end"]])
        index = [slice(None)] * ins[0].ndim
        index[attrs["axis"]] = slice(start, end, attrs["step"])
        return [np.ascontiguousarray(ins[0][tuple(index)])]


@register("expand", inputs=1, attrs={"shape": AttrSpec("dims")})
class Expand:
    """Broadcast to ``shape`` (size-1 dims repeat)."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        target = tuple(Dim.of(d) for d in attrs["shape"])
        if broadcast_shapes(ins[0].shape, target) != target:
            raise InferError("expand target does not contain the input shape")
        return [ins[0].with_shape(target)]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        return [np.ascontiguousarray(np.broadcast_to(ins[0], ctx.shape(attrs["shape"])))]


@register("gather", inputs=2, attrs={"axis": AttrSpec("int")})
class Gather:
    """``take(x, indices, axis)``: the indices' shape replaces dim ``axis``."""

    @staticmethod
    def infer(ins: list[TensorType], attrs: dict[str, Any]) -> list[TensorType]:
        x, idx = ins
        if not idx.dtype.is_int:
            raise InferError(f"gather indices must be integers, got {idx.dtype}")
        axis = norm_axis(attrs["axis"], x.rank)
        return [x.with_shape(list(x.shape[:axis]) + list(idx.shape) + list(x.shape[axis + 1 :]))]

    @staticmethod
    def ref(ins: list[np.ndarray], attrs: dict[str, Any], ctx: RefContext) -> list[np.ndarray]:
        x, idx = ins
        size = x.shape[attrs["axis"]]
        if idx.size and (idx.min() < -size or idx.max() >= size):
            raise IndexError(f"gather index out of range [0, {size})")
        return [np.take(x, idx.astype(np.int64), axis=attrs["axis"])]
