"""ONNX handlers of QuantizeLinear and DequantizeLinear (opsets 13 to 25): per-tensor, per-axis
and blocked (``block_size``, opset 21+) scales and zero points, codes of int8, uint8, int16,
uint16, int4, uint4, int2, uint2 (and int32 for DequantizeLinear), lowered onto ``cast``,
``sub``, ``mul``, ``div``, ``add``, ``maximum``, ``minimum`` (and ``reshape``/``expand``/
``slice`` to spread blocked scales), with onnxruntime's arithmetic:

- DequantizeLinear: ``(int32(x) - int32(zero_point)) * float32(scale)`` in float32, rounded to
  the output type (the scale's, or ``output_dtype``);
- QuantizeLinear: ``saturate(rint(float32(x) / float32(scale)) + zero_point)``: the quotient
  in float32 (also for float16 inputs, as onnxruntime computes; the opset-23 ``precision``
  attribute is not read), rounded half to even by adding and subtracting 1.5 * 2^23 in float32
  after clamping to +-2^22 (exact for every quotient that does not saturate), saturated to the
  code type's full range. NaN inputs give unspecified codes, as in onnxruntime.

A DequantizeLinear of integer constants feeding a MatMul or Gemm as its weight is read again by
:func:`~llmc.compiler.frontend.onnx_quant_weights.quantized_weight`, which keeps the file's
codes; the ops emitted here for it are then dead and removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from llmc.compiler.frontend.onnx_registry import Attrs, Node, handles
from llmc.compiler.frontend.onnx_values import Const, Operand, elem_dtype
from llmc.ir.graph import Value
from llmc.ir.ops.common import as_dtype
from llmc.ir.types import F32, I32, Dim, DType, int_dtype

if TYPE_CHECKING:
    from llmc.compiler.frontend.onnx_converter import Converter

ONE = Dim.of(1)
CODE_TYPES = {int_dtype(b, s) for b in (2, 4, 8, 16) for s in (True, False)}  # QuantizeLinear's outputs
ROUND = 1.5 * 2.0**23  # adding and subtracting it rounds |v| <= 2^22 to an integer, half to even
CLAMP = 2.0**22


@dataclass(frozen=True)
class Layout:
    """How a scale spreads over the codes: ``tensor`` (one scale), ``axis`` (one per index of
    ``axis``) or ``block`` (one per ``block`` consecutive indices of ``axis``)."""

    kind: str
    axis: int = 0
    block: int = 0


def _shape(dims: list[Dim] | tuple[Dim, ...]) -> str:
    return f"[{', '.join(map(str, dims))}]"


def layout(c: Converter, n: Node, attrs: Attrs, x: list[Dim], scale: list[Dim]) -> Layout:
    """The layout of a scale of shape ``scale`` over codes of shape ``x``; an error naming the
    node when the shapes do not fit the ``axis`` and ``block_size`` attributes."""
    rank, block = len(x), int(attrs.get("block_size", 0))
    if block < 0:
        raise c.error(f"block_size {block} is negative")
    if block == 0 and (not scale or scale == [ONE]):
        return Layout("tensor")
    axis = int(attrs.get("axis", 1))
    if not -rank <= axis < rank:
        raise c.error(f"axis {axis} is out of range for an input of rank {rank}")
    axis %= rank
    if block == 0:
        if len(scale) != 1 or scale[0] != x[axis]:
            raise c.error(f"scale shape {_shape(scale)} is neither a scalar nor [{x[axis]}] (per-axis along axis "
                          f"{axis} of {_shape(x)})")
        return Layout("axis", axis)
    size = x[axis]
    if not size.is_static:
        raise c.error(f"blocked quantization along the symbolic dim {size} is not supported")
    expected = list(x)
    expected[axis] = Dim.of(-(-size.value // block))
    if scale != expected:
        raise c.error(f"scale shape {_shape(scale)} does not match {_shape(expected)} (blocks of {block} along "
                      f"axis {axis} of {_shape(x)})")
    return Layout("block", axis, block)


def _to(c: Converter, v: Value, dtype: DType) -> Value:
    return v if v.type.dtype == dtype else c.op("cast", [v], {"dtype": dtype})


def spread(c: Converter, v: Value, x: list[Dim], lay: Layout) -> Value:
    """A scale or zero point shaped to broadcast against codes of shape ``x``."""
    rank = len(x)
    if lay.kind == "tensor":
        return c.reshape(v, [ONE] * rank)
    if lay.kind == "axis":
        return c.reshape(v, [ONE] * lay.axis + [v.type.shape[0]] + [ONE] * (rank - lay.axis - 1))
    dims, a = list(v.type.shape), lay.axis
    groups = dims[a]
    v = c.reshape(v, dims[:a + 1] + [ONE] + dims[a + 1:])
    v = c.op("expand", [v], {"shape": dims[:a + 1] + [Dim.of(lay.block)] + dims[a + 1:]})
    v = c.reshape(v, dims[:a] + [groups * lay.block] + dims[a + 1:])
    if groups * lay.block != x[a]:
        v = c.op("slice", [v], {"axis": a, "start": 0, "end": x[a]})
    return v


def spread_array(data: np.ndarray, shape: tuple[int, ...], lay: Layout) -> np.ndarray:
    """:func:`spread` on an array (for folding constants)."""
    if lay.kind == "tensor":
        return data.reshape((1,) * len(shape))
    if lay.kind == "axis":
        return data.reshape(tuple(-1 if i == lay.axis else 1 for i in range(len(shape))))
    full = np.repeat(data, lay.block, axis=lay.axis)
    return np.take(full, np.arange(shape[lay.axis]), axis=lay.axis)


def _operands(c: Converter, n: Node) -> tuple[Operand, Operand, Const | Value | None]:
    x, scale = c.get(n.input[0]), c.get(n.input[1])
    zero = c.get(n.input[2]) if c.has_input(n, 2) else None
    for v in (x, scale, zero):
        if isinstance(v, list) or (isinstance(v, Const) and v.symbolic):
            raise c.error("operands must be numeric tensors")
    return x, scale, zero  # type: ignore[return-value]


def _zero_layout(c: Converter, zero: Operand | None, scale: list[Dim]) -> None:
    """A zero point must have the scale's shape (a scalar and a [1] vector count as one)."""
    if zero is None:
        return
    dims = c.shape_of(zero)
    if dims != scale and not (dims in ([], [ONE]) and scale in ([], [ONE])):
        raise c.error(f"zero point shape {_shape(dims)} differs from the scale's {_shape(scale)}")


def nonzero(zero: Operand | None) -> bool:
    """Whether a zero point is given and not known to be all zeros."""
    return zero is not None and not (isinstance(zero, Const) and not np.any(zero.data))


@handles("DequantizeLinear")
def _dequantize_linear(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """``(x - zero_point) * scale``; folded at import when every operand is a small constant."""
    x, scale, zero = _operands(c, n)
    xt, st = c.dtype_of(x), c.dtype_of(scale)
    if not xt.is_int or xt.bits > 32:
        raise c.error(f"input type {xt} is not a quantized integer type")
    if not st.is_float:
        raise c.error(f"scale type {st} is not a float type")
    if zero is not None and c.dtype_of(zero) != xt:
        raise c.error(f"zero point type {c.dtype_of(zero)} differs from the input's {xt}")
    out = elem_dtype(attrs["output_dtype"]) if attrs.get("output_dtype") else st
    if not out.is_float:
        raise c.error(f"output_dtype {out} is not a float type")
    dims, sdims = c.shape_of(x), c.shape_of(scale)
    lay = layout(c, n, attrs, dims, sdims)
    _zero_layout(c, zero, sdims)
    if c.small(x, scale, *([zero] if zero is not None else [])):
        assert isinstance(x, Const) and isinstance(scale, Const)
        shape = x.data.shape
        codes = x.data.astype(np.int64)
        if isinstance(zero, Const):
            codes = codes - spread_array(zero.data.astype(np.int64), shape, lay)
        codes = as_dtype(codes, I32).astype(np.float32)
        return [Const(as_dtype(codes * spread_array(scale.data.astype(np.float32), shape, lay), out), out)]
    codes = _to(c, c.tensor(n.input[0]), I32)
    if nonzero(zero):
        codes = c.op("sub", [codes, spread(c, _to(c, c.tensor(n.input[2]), I32), dims, lay)])
    y = c.op("mul", [_to(c, codes, F32), spread(c, _to(c, c.tensor(n.input[1]), F32), dims, lay)])
    return [_to(c, y, out)]


@handles("QuantizeLinear")
def _quantize_linear(c: Converter, n: Node, attrs: Attrs) -> list[Operand]:
    """``saturate(rint(x / scale) + zero_point)``, in float32 (see the module's docstring)."""
    x, scale, zero = _operands(c, n)
    xt, st = c.dtype_of(x), c.dtype_of(scale)
    if not xt.is_float:
        raise c.error(f"input type {xt} is not supported (float inputs are)")
    if not st.is_float:
        raise c.error(f"scale type {st} is not a float type")
    given = elem_dtype(attrs["output_dtype"]) if attrs.get("output_dtype") else None
    out = c.dtype_of(zero) if zero is not None else given or int_dtype(8, signed=False)
    if given is not None and given != out:
        raise c.error(f"output_dtype {given} differs from the zero point's type {out}")
    if out not in CODE_TYPES:
        raise c.error(f"output type {out} is not supported (int8, uint8, int16, uint16, int4, uint4, int2, uint2 are)")
    dims, sdims = c.shape_of(x), c.shape_of(scale)
    lay = layout(c, n, attrs, dims, sdims)
    _zero_layout(c, zero, sdims)
    rank = len(dims)
    v = c.op("div", [_to(c, c.tensor(n.input[0]), F32), spread(c, _to(c, c.tensor(n.input[1]), F32), dims, lay)])
    v = c.op("minimum", [c.op("maximum", [v, c.scalar(-CLAMP, F32, rank)]), c.scalar(CLAMP, F32, rank)])
    v = c.op("sub", [c.op("add", [v, c.scalar(ROUND, F32, rank)]), c.scalar(ROUND, F32, rank)])
    q = _to(c, v, I32)
    if nonzero(zero):
        q = c.op("add", [q, spread(c, _to(c, c.tensor(n.input[2]), I32), dims, lay)])
    lo, hi = out.int_range()
    q = c.op("minimum", [c.op("maximum", [q, c.scalar(lo, I32, rank)]), c.scalar(hi, I32, rank)])
    return [_to(c, q, out)]
