"""ONNX handlers of constants, casts and elementwise ops. Each folds at import time when its
operands are small constants (with the IR op's own reference implementation, or NumPy on
symbolic dims), else emits IR ops; ONNX's numpy broadcasting is the IR's."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from llmc.compiler.frontend.onnx_registry import Attrs, Node, handles
from llmc.compiler.frontend.onnx_values import SYMBOLIC_OPS, Const, Operand, elem_dtype, make_const, proto_const
from llmc.ir.graph import Value
from llmc.ir.types import BOOL, F32, F64, I64

if TYPE_CHECKING:
    from llmc.compiler.frontend.onnx_converter import Converter


# -- constants and casts ---------------------------------------------------------------------------
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


@handles("Dropout")
def _dropout(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """Inference: the input, and a mask of all true."""
    training = c.optional(n, 2, "training_mode")
    if training is not None and bool(training.data.ravel()[0]):
        raise c.error("training mode is not supported (llmc imports for inference)")
    x = c.get(n.input[0])
    if len(n.output) < 2 or not n.output[1] or not c.uses.get(n.output[1]):
        return [x]
    return [x, c.emit("constant", [], {"value": 1, "shape": c.shape_of(x), "dtype": BOOL}, index=1)]


@handles("Cast", "CastLike")
def _cast(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    if n.op_type == "Cast":
        try:
            dtype = elem_dtype(attrs["to"])
        except ValueError as e:
            raise c.error(str(e)) from None
    else:
        dtype = c.dtype_of(c.get(n.input[1]))
    if isinstance(x, Const) and x.symbolic:
        if dtype.is_int or dtype.is_float:  # integers held exactly, also as floats (torch's float(dim))
            return [Const(x.data, dtype)]
    else:
        folded = c.fold_ir("cast", [x], {"dtype": dtype})
        if folded is not None:
            return [folded]
    v = c.tensor(n.input[0])
    return [v if v.type.dtype == dtype else c.emit("cast", [v], {"dtype": dtype})]


def _cast_to(c: Converter, x: Value, dtype: Any) -> Value:
    return x if x.type.dtype == dtype else c.op("cast", [x], {"dtype": dtype})


# -- binary ----------------------------------------------------------------------------------------
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Equal": "eq", "Less": "lt", "LessOrEqual": "le",
           "Greater": "gt", "GreaterOrEqual": "ge", "And": "logical_and", "Or": "logical_or", "Xor": "ne"}
_LOGICAL = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or", "Xor"}


def _fold2(c: Converter, onnx_op: str, op: str, a: Operand, b: Operand, dtype: Any) -> Const | None:
    """A binary op folded: with :data:`SYMBOLIC_OPS` when an operand is symbolic, else with the IR op."""
    if any(isinstance(x, Const) and x.symbolic for x in (a, b)):
        if onnx_op not in SYMBOLIC_OPS or (onnx_op == "Div" and c.dtype_of(a).is_float):
            return None  # float division of dims: left to the IR
        return c.fold(SYMBOLIC_OPS[onnx_op], [a, b], dtype)
    return c.fold_ir(op, [a, b])


@handles(*_BINARY)
def _binary(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    op = _BINARY[n.op_type]
    a, b = c.get(n.input[0]), c.get(n.input[1])
    folded = _fold2(c, n.op_type, op, a, b, BOOL if n.op_type in _LOGICAL else c.dtype_of(a))
    if folded is not None:
        return [folded]
    if n.op_type == "Mul":
        for x, y in ((a, b), (b, a)):
            if isinstance(x, Value) and c.small(y) and not y.symbolic and y.data.size == 1 \
                    and y.data.ndim <= x.type.rank and y.dtype == x.type.dtype and y.data.ravel()[0] == 1:
                return [x]  # the exporter's unit scales
    if n.op_type == "Add":
        fused = _fuse_bias(c, n, 0) or _fuse_bias(c, n, 1)
        if fused is not None:
            return [fused]
    return [c.emit(op, [c.tensor(n.input[0]), c.tensor(n.input[1])])]


def _fuse_bias(c: Converter, n: Node, i: int) -> Value | None:
    """``linear(x, w) + b`` (operand ``i`` the product) as ``linear(x, w, b)`` when nothing else
    reads the product."""
    product, bias = c.get(n.input[i]), c.get(n.input[1 - i])
    if not (isinstance(product, Value) and product in c.linears and isinstance(bias, Const)) or bias.symbolic:
        return None
    x, weight, onnx_name = c.linears[product]
    if c.uses.get(onnx_name) != 1 or bias.data.shape != weight.type.static_shape()[:1] or bias.dtype != x.type.dtype:
        return None
    return c.emit("linear", [x, weight, c.param(bias.origin or n.input[1 - i], False, bias.data, bias.dtype)])


@handles("Pow")
def _pow(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """Float bases: the exponent cast to the base's type. Integer bases: computed in f64 and
    truncated, as onnxruntime does."""
    a, b = c.get(n.input[0]), c.get(n.input[1])
    dtype = c.dtype_of(a)
    wide = dtype if dtype.is_float else F64
    if isinstance(b, Const) and not b.symbolic:
        b = make_const(b.data, wide)
    if isinstance(a, Const) and not a.symbolic and not dtype.is_float:
        a = make_const(a.data, wide)
    if all(isinstance(x, Const) for x in (a, b)):
        folded = c.fold_ir("pow", [a, b])
        if folded is not None:
            return [folded if dtype.is_float else c.fold_ir("cast", [folded], {"dtype": dtype})]
    x, y = (_cast_to(c, c.as_value(v, name), wide) for v, name in zip((a, b), n.input))
    out = c.op("pow", [x, y])
    return [out if dtype.is_float else c.op("cast", [out], {"dtype": dtype})]


@handles("Max", "Min", "Sum", "Mean")
def _variadic(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """Left to right: ``op(op(x0, x1), x2)``; Mean divides the sum by the count."""
    op = {"Max": "maximum", "Min": "minimum", "Sum": "add", "Mean": "add"}[n.op_type]
    operands = [c.get(name) for name in n.input]
    acc = operands[0]
    for i, x in enumerate(operands[1:], start=1):
        folded = _fold2(c, "Add" if n.op_type in ("Sum", "Mean") else n.op_type, op, acc, x, c.dtype_of(acc))
        acc = folded if folded is not None else c.op(op, [c.as_value(acc, n.input[0]), c.as_value(x, n.input[i])])
    if n.op_type == "Mean" and len(operands) > 1:
        count = Const(np.asarray(len(operands), c.dtype_of(acc).numpy()), c.dtype_of(acc))
        folded = c.fold_ir("div", [acc, count])
        acc = folded if folded is not None else c.op("div", [c.as_value(acc, n.input[0]), c.materialize(count, "n")])
    return [acc]


# -- unary -----------------------------------------------------------------------------------------
_UNARY = {"Neg": "neg", "Abs": "abs", "Sqrt": "sqrt", "Reciprocal": "reciprocal", "Exp": "exp", "Log": "log",
          "Tanh": "tanh", "Sigmoid": "sigmoid", "Relu": "relu", "Erf": "erf", "Cos": "cos", "Sin": "sin",
          "Not": "logical_not"}


@handles(*_UNARY)
def _unary(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    if isinstance(x, Const) and x.symbolic and n.op_type == "Neg":
        return [make_const(np.subtract(0, x.data), x.dtype)]
    folded = c.fold_ir(_UNARY[n.op_type], [x])
    return [folded if folded is not None else c.emit(_UNARY[n.op_type], [c.tensor(n.input[0])])]


@handles("Gelu")
def _gelu(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    approximate = attrs.get("approximate", b"none")
    approximate = approximate.decode() if isinstance(approximate, bytes) else approximate
    if approximate not in ("none", "tanh"):
        raise c.error(f"unknown approximation '{approximate}'")
    return [c.emit("gelu" if approximate == "none" else "gelu_tanh", [c.tensor(n.input[0])])]


@handles("LeakyRelu")
def _leaky_relu(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """``x >= 0 ? x : alpha * x``."""
    x = c.tensor(n.input[0])
    rank, dtype = x.type.rank, x.type.dtype
    negative = c.op("lt", [x, c.scalar(0, dtype, rank)])
    scaled = c.op("mul", [x, c.scalar(float(attrs.get("alpha", 0.01)), dtype, rank)])
    return [c.emit("where", [negative, scaled, x])]


@handles("HardSigmoid", "HardSwish")
def _hard_sigmoid(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """``max(0, min(1, alpha * x + beta))``; HardSwish multiplies it by x (alpha 1/6, beta 1/2)."""
    x = c.tensor(n.input[0])
    rank, dtype = x.type.rank, x.type.dtype
    swish = n.op_type == "HardSwish"
    alpha, beta = (1 / 6, 0.5) if swish else (float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5)))
    y = c.op("add", [c.op("mul", [x, c.scalar(alpha, dtype, rank)]), c.scalar(beta, dtype, rank)])
    y = c.op("maximum", [c.op("minimum", [y, c.scalar(1, dtype, rank)]), c.scalar(0, dtype, rank)])
    return [c.op("mul", [x, y]) if swish else y]


@handles("Clip")
def _clip(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """``min(max(x, lo), hi)`` with each bound optional."""
    x = c.tensor(n.input[0])
    for index, op in ((1, "maximum"), (2, "minimum")):
        if c.has_input(n, index):
            x = c.op(op, [x, c.tensor(n.input[index])])
    return [x]


@handles("Sign")
def _sign(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.tensor(n.input[0])
    rank, dtype = x.type.rank, x.type.dtype
    zero = c.scalar(0, dtype, rank)
    out = c.op("where", [c.op("gt", [x, zero]), c.scalar(1, dtype, rank), zero])
    if dtype.signed:
        out = c.op("where", [c.op("lt", [x, zero]), c.scalar(-1, dtype, rank), out])
    return [out]


@handles("IsNaN", "IsInf")
def _is_nan(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """IsNaN is ``x != x``; IsInf compares with +inf and -inf (``detect_positive``, ``detect_negative``)."""
    x = c.tensor(n.input[0])
    if n.op_type == "IsNaN":
        return [c.emit("ne", [x, x])]
    rank, dtype = x.type.rank, x.type.dtype
    tests = [c.op("eq", [x, c.scalar(sign * float("inf"), dtype, rank)])
             for sign, key in ((1, "detect_positive"), (-1, "detect_negative")) if attrs.get(key, 1)]
    if not tests:
        return [c.emit("constant", [], {"value": 0, "shape": list(x.type.shape), "dtype": BOOL})]
    return [tests[0] if len(tests) == 1 else c.emit("logical_or", tests)]


@handles("Where")
def _where(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    cond, a, b = (c.get(name) for name in n.input)
    if c.small(cond, a, b) and any(x.symbolic for x in (a, b)):
        return [make_const(np.where(cond.data, a.data, b.data), a.dtype)]
    folded = c.fold_ir("where", [cond, a, b])
    return [folded if folded is not None else c.emit("where", [c.tensor(name) for name in n.input])]
