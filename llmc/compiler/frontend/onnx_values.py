"""Values of the ONNX frontend known at import time: :class:`Const` and the helpers that compute with them.

Shared by the converter (:mod:`llmc.compiler.frontend.onnx_converter`) and its op handlers.
Symbolic integers (the dims of shapes) compute with :data:`SYMBOLIC_OPS`, which assume every
symbol is a size (non-negative) and refuse (TypeError) what the symbols leave open.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from llmc.ir.graph import Value
from llmc.ir.ops.common import as_dtype
from llmc.ir.types import BF16, BOOL, F16, F32, F64, I8, I32, I64, Dim, DType, int_dtype

FOLD_LIMIT = 1024  # constants up to this many elements are computed with at import time
CONST_LIMIT = 16  # and become IR constants when a runtime op reads them (larger ones params, unless uniform)

_DTYPES: dict[int, DType] = {
    TensorProto.FLOAT: F32, TensorProto.FLOAT16: F16, TensorProto.BFLOAT16: BF16, TensorProto.DOUBLE: F64,
    TensorProto.INT64: I64, TensorProto.INT32: I32, TensorProto.INT16: int_dtype(16), TensorProto.INT8: I8,
    TensorProto.UINT8: int_dtype(8, signed=False), TensorProto.UINT16: int_dtype(16, signed=False),
    TensorProto.UINT32: int_dtype(32, signed=False), TensorProto.BOOL: BOOL,
    TensorProto.INT4: int_dtype(4), TensorProto.UINT4: int_dtype(4, signed=False),
    TensorProto.INT2: int_dtype(2), TensorProto.UINT2: int_dtype(2, signed=False),
}


@dataclass
class Const:
    """A tensor known at import time. ``data`` is numeric, or an object array of :class:`Dim` for
    symbolic integers. ``origin`` names the initializer it is (``transposed``: its transpose)."""

    data: np.ndarray
    dtype: DType
    origin: str | None = None
    transposed: bool = False

    @property
    def symbolic(self) -> bool:
        return self.data.dtype == object


Operand = Value | Const | list  # a list is an ONNX sequence (SplitToSequence)


def elem_dtype(elem_type: int) -> DType:
    if elem_type not in _DTYPES:
        raise ValueError(f"unsupported element type {TensorProto.DataType.Name(elem_type)}")
    return _DTYPES[elem_type]


def proto_const(t: onnx.TensorProto) -> Const:
    """A tensor proto's data (bf16 held in float32, as the interpreter stores it)."""
    dtype = elem_dtype(t.data_type)
    return Const(numpy_helper.to_array(t).astype(dtype.numpy(), copy=False), dtype)


def to_dims(data: np.ndarray) -> list[Dim]:
    """The elements of an integer constant (numeric or symbolic) as dims."""
    return [x if isinstance(x, Dim) else Dim.of(int(x)) for x in np.asarray(data).ravel()]


def dims_const(dims: list[Dim]) -> Const:
    """A rank-1 int64 constant of dims (symbolic ones kept as :class:`Dim`)."""
    out = np.empty(len(dims), dtype=object)
    out[:] = dims
    return make_const(out, I64)


def make_const(data: Any, dtype: DType) -> Const:
    """A constant from a computed array: symbolic arrays whose dims are all static become numeric."""
    arr = np.asarray(data)
    if arr.dtype == object and dtype == BOOL:
        arr = arr.astype(np.bool_)
    if arr.dtype == object:
        dims = to_dims(arr)
        if any(not d.is_static for d in dims):
            out = np.empty(len(dims), dtype=object)
            out[:] = dims
            return Const(out.reshape(arr.shape), dtype)
        arr = np.array([d.value for d in dims], dtype=np.int64).reshape(arr.shape)
    return Const(as_dtype(arr, dtype), dtype)


# -- arithmetic on symbolic dims -------------------------------------------------------------------
def _lower_bound(d: Dim) -> int | None:
    """A lower bound of ``d`` over non-negative symbols (dims are sizes), None when there is none."""
    if any(c < 0 for m, c in d.terms if m):
        return None
    return dict(d.terms).get((), 0)


def _order(x: Any, y: Any) -> int:
    """The sign of ``x - y`` for dims or integers; TypeError when the symbols leave it open."""
    d = Dim.of(x) - Dim.of(y)
    if d.is_static:
        return (d.value > 0) - (d.value < 0)
    below, above = _lower_bound(d), _lower_bound(Dim.of(0) - d)
    if below is not None and below > 0:
        return 1
    if above is not None and above > 0:
        return -1
    raise TypeError(f"cannot compare {x} with {y} at import time")


def _div(x: Any, y: Any) -> Any:
    """Integer division of dims: truncating for numbers, exact for symbolic dims."""
    a, b = Dim.of(x), Dim.of(y)
    if a.is_static and b.is_static:
        q = abs(a.value) // max(abs(b.value), 1)
        return -q if (a.value < 0) != (b.value < 0) else q
    q = a.exact_div(b)
    if q is None:
        raise TypeError(f"{a} is not a multiple of {b}")
    return q


def _pairwise(fn: Any) -> Any:
    return np.frompyfunc(lambda x, y: fn(Dim.of(x), Dim.of(y)), 2, 1)


SYMBOLIC_OPS: dict[str, Any] = {  # ONNX op -> its NumPy form on object arrays of dims
    "Add": _pairwise(lambda x, y: x + y), "Sub": _pairwise(lambda x, y: x - y),
    "Mul": _pairwise(lambda x, y: x * y), "Div": _pairwise(_div),
    "Equal": _pairwise(lambda x, y: _order(x, y) == 0), "Less": _pairwise(lambda x, y: _order(x, y) < 0),
    "LessOrEqual": _pairwise(lambda x, y: _order(x, y) <= 0), "Greater": _pairwise(lambda x, y: _order(x, y) > 0),
    "GreaterOrEqual": _pairwise(lambda x, y: _order(x, y) >= 0),
    "Max": _pairwise(lambda x, y: x if _order(x, y) >= 0 else y),
    "Min": _pairwise(lambda x, y: x if _order(x, y) <= 0 else y),
}
