"""Import an ONNX step model (as written by :func:`llmc.compiler.frontend.hf.export_onnx`) into the IR.

The file must follow llmc's step contract: inputs ``input_ids [1, L]``, ``mask [1, 1, L, P+L]``,
``position_ids [1, L]``, ``past_k_i`` and ``past_v_i [1, Hkv, P, D]``; outputs ``logits``, ``k_i``
and ``v_i``; the module attributes as JSON in the metadata property ``llmc.attrs``. The graph
becomes one IR function ``step`` over the symbols L and P, specialised into ``prefill`` (P=0) and
``decode`` (L=1) as the torch.export path does.

Values known at import time stay :class:`Const` instead of becoming IR ops: initializers,
``Constant`` nodes and shape arithmetic (``Shape -> Gather -> Concat -> Reshape``), whose int64
elements may be symbolic :class:`Dim` (held in NumPy object arrays). Those subgraphs fold into the
static or symbolic attributes of the IR ops that use them. An initializer becomes a module
parameter when a runtime op reads it; a ``MatMul`` or ``Gemm`` by a weight becomes ``linear``
with the weight in PyTorch's [N, K] layout.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from llmc.compiler.passes.cleanup import dce, prune_params
from llmc.compiler.passes.specialize import specialize
from llmc.errors import FrontendError
from llmc.ir.builder import Builder
from llmc.ir.graph import Function, Module, Param, Value
from llmc.ir.ops.common import as_dtype
from llmc.ir.registry import InferError
from llmc.ir.types import BF16, BOOL, F16, F32, F64, I8, I32, I64, Dim, DType, TensorType, int_dtype

ATTRS_KEY = "llmc.attrs"  # metadata property holding the module attributes as JSON
SEQ, PAST = "L", "P"
CONTRACT = "inputs input_ids, mask, position_ids, past_k_0, past_v_0, ...; outputs logits, k_0, v_0, ..."
_FOLD_LIMIT = 1024  # constants up to this many elements are computed with at import time
_CONST_LIMIT = 16  # and become IR constants when a runtime op reads them (larger ones params, unless uniform)
_BIG = 1 << 62  # slice bounds this large mean "to the end"

_DTYPES: dict[int, DType] = {
    TensorProto.FLOAT: F32, TensorProto.FLOAT16: F16, TensorProto.BFLOAT16: BF16, TensorProto.DOUBLE: F64,
    TensorProto.INT64: I64, TensorProto.INT32: I32, TensorProto.INT16: int_dtype(16), TensorProto.INT8: I8,
    TensorProto.UINT8: int_dtype(8, signed=False), TensorProto.BOOL: BOOL,
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


def import_onnx(path: Path, name: str) -> Module:
    """Import an ONNX file of llmc's step contract as a module with ``prefill`` and ``decode``."""
    path = Path(path)
    if not path.is_file():
        raise FrontendError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # protobuf decode errors, unreadable external data
        raise FrontendError(f"{path}: not a readable ONNX file: {_first_line(e)}") from None
    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as e:
        raise FrontendError(f"{path}: malformed ONNX model: {_first_line(e)}") from None
    module = Module(name, _contract_attrs(model, path))
    step = Function("step")
    _Converter(path, model, module, step).run()
    module.functions["prefill"] = dce(specialize(step, {PAST: 0}, "prefill"))
    module.functions["decode"] = dce(specialize(step, {SEQ: 1}, "decode"))
    return prune_params(module)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _contract_attrs(model: onnx.ModelProto, path: Path) -> dict[str, Any]:
    """The module attributes from the metadata, after checking the graph's inputs and outputs."""
    meta = {p.key: p.value for p in model.metadata_props}
    if ATTRS_KEY not in meta:
        raise FrontendError(f"{path}: not exported by llmc (no '{ATTRS_KEY}' metadata); llmc imports ONNX "
                            f"files of its StepModule contract ({CONTRACT}), as written by hf.export_onnx")
    try:
        attrs = json.loads(meta[ATTRS_KEY])
        if not isinstance(attrs["layers"], int):
            raise ValueError("'layers' is not an integer")
        if not all(isinstance(v, (int, float, str)) for v in attrs.values()):
            raise ValueError("attribute values must be numbers or strings")
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as e:
        raise FrontendError(f"{path}: corrupt '{ATTRS_KEY}' metadata: {e}") from None
    caches = [f"{t}_{i}" for i in range(attrs["layers"]) for t in "kv"]
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v.name for v in model.graph.input if v.name not in initializers]
    outputs = [v.name for v in model.graph.output]
    expected = ["input_ids", "mask", "position_ids", *(f"past_{c}" for c in caches)], ["logits", *caches]
    if (inputs, outputs) != expected:
        raise FrontendError(f"{path}: graph inputs ({', '.join(inputs)}) and outputs ({', '.join(outputs)}) do not "
                            f"follow llmc's StepModule contract for {attrs['layers']} layers ({CONTRACT})")
    return attrs


def _dtype(elem_type: int) -> DType:
    if elem_type not in _DTYPES:
        raise ValueError(f"unsupported element type {TensorProto.DataType.Name(elem_type)}")
    return _DTYPES[elem_type]


def _array(t: onnx.TensorProto) -> Const:
    """A tensor proto's data (bf16 held in float32, as the interpreter stores it)."""
    dtype = _dtype(t.data_type)
    return Const(numpy_helper.to_array(t).astype(dtype.numpy(), copy=False), dtype)


def _dims(data: np.ndarray) -> list[Dim]:
    """The elements of an integer constant (numeric or symbolic) as dims."""
    return [x if isinstance(x, Dim) else Dim.of(int(x)) for x in np.asarray(data).ravel()]


def _make(data: Any, dtype: DType) -> Const:
    """A constant from a computed array: symbolic arrays whose dims are all static become numeric."""
    arr = np.asarray(data)
    if arr.dtype == object:
        dims = _dims(arr)
        if any(not d.is_static for d in dims):
            out = np.empty(len(dims), dtype=object)
            out[:] = dims
            return Const(out.reshape(arr.shape), dtype)
        arr = np.array([d.value for d in dims], dtype=np.int64).reshape(arr.shape)
    return Const(as_dtype(arr, dtype), dtype)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX Div: exact for symbolic dims, truncating for integers, true division for floats."""
    if a.dtype == object or b.dtype == object:
        def exact(x: Any, y: Any) -> Dim:
            q = _dims(np.asarray(x))[0].exact_div(_dims(np.asarray(y))[0])
            if q is None:
                raise ValueError(f"{x} is not a multiple of {y}")
            return q
        return np.frompyfunc(exact, 2, 1)(a, b)
    if np.issubdtype(a.dtype, np.integer):
        q = np.abs(a) // np.maximum(np.abs(b), 1)
        return np.where((a < 0) ^ (b < 0), -q, q)
    return a / b


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


class _Converter:
    """State of one conversion: ONNX value name -> IR value, constant or sequence."""

    def __init__(self, path: Path, model: onnx.ModelProto, module: Module, func: Function) -> None:
        self.path = path
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.b = Builder(module, func)
        self.values: dict[str, Operand] = {}
        self.symbols: dict[str, Dim] = {}  # ONNX dim_param -> IR dim
        self.uses: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        self.linears: dict[str, tuple[Value, Value, str]] = {}  # bias-less linear -> x, weight, ONNX name
        self.param_names: dict[tuple[str, bool], str] = {}
        self.node: onnx.NodeProto | None = None

    def error(self, message: str) -> FrontendError:
        where = f"node {self.node.name} ({self.node.op_type})" if self.node is not None else "graph"
        return FrontendError(f"{self.path}: {where}: {message}")

    def run(self) -> None:
        if self.opset < 13:
            raise self.error(f"opset {self.opset} is too old (llmc reads opset 13 and later)")
        try:
            self._convert()
        except (InferError, ValueError, TypeError, IndexError, KeyError) as e:
            raise self.error(str(e)) from None

    def _convert(self) -> None:
        for t in self.graph.initializer:
            self.values[t.name] = _array(t)
            self.values[t.name].origin = t.name
        self._bind_symbols()
        for vi in self.graph.input:
            if vi.name not in self.values:
                self.values[vi.name] = self.b.input(vi.name, self._input_type(vi))
        for node in self.graph.node:
            self.node = node
            handler = HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if handler is None:
                raise self.error("unsupported op")
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            results = handler(self, node, attrs)  # optional outputs (LayerNormalization's) may be absent
            for name, result in zip(node.output, results, strict=False):
                if name:
                    self.values[name] = result
        self.node = None
        self.b.ret(*(self._output(vi) for vi in self.graph.output))

    # -- dims --------------------------------------------------------------------------------
    def _bind_symbols(self) -> None:
        """The contract's dims: input_ids axis 1 is L, past_k_0 axis 2 is P, mask axis 3 is P+L."""
        shapes = {vi.name: vi.type.tensor_type.shape.dim for vi in self.graph.input}
        for name, axis, dim in (("input_ids", 1, Dim.sym(SEQ)), ("past_k_0", 2, Dim.sym(PAST)),
                                ("mask", 3, Dim.sym(SEQ) + Dim.sym(PAST))):
            dims = shapes.get(name, [])
            if len(dims) > axis and dims[axis].dim_param:
                self.symbols.setdefault(dims[axis].dim_param, dim)

    def parse_dim(self, text: str) -> Dim | None:
        """A dim_param (a contract symbol, or a sum of products of them and integers), or None."""
        if text in self.symbols:
            return self.symbols[text]
        text = text.replace(" ", "")
        terms = re.findall(r"([+-]?)([^+-]+)", text)
        if not terms or "".join(s + t for s, t in terms) != text:
            return None
        total = Dim.of(0)
        for sign, term in terms:
            value = Dim.of(-1 if sign == "-" else 1)
            for factor in term.split("*"):
                if not (factor.isdigit() or factor in self.symbols):
                    return None
                value = value * (int(factor) if factor.isdigit() else self.symbols[factor])
            total = total + value
        return total

    def _declared(self, vi: onnx.ValueInfoProto) -> list[Dim | None]:
        return [Dim.of(d.dim_value) if d.HasField("dim_value") else self.parse_dim(d.dim_param)
                for d in vi.type.tensor_type.shape.dim]

    def _input_type(self, vi: onnx.ValueInfoProto) -> TensorType:
        dims = self._declared(vi)
        if any(d is None for d in dims):
            raise FrontendError(f"{self.path}: input {vi.name} has a dimension that is not L, P, P+L or a number")
        return TensorType.of(dims, _dtype(vi.type.tensor_type.elem_type))

    def _output(self, vi: onnx.ValueInfoProto) -> Value:
        value = self.tensor(vi.name)
        declared = self._declared(vi)
        dims = value.type.shape
        if len(declared) != len(dims) or any(d not in (None, s) for d, s in zip(declared, dims, strict=True)):
            shown = ", ".join("?" if d is None else str(d) for d in declared)
            raise FrontendError(f"{self.path}: output {vi.name} is {value.type} in llmc, the file declares [{shown}]")
        if value.name == vi.name:
            return value  # else a value passed through (Identity) or a constant: give it its name
        return self.b.op("reshape", [value], {"shape": list(value.type.shape)}, name=vi.name)

    # -- operands ----------------------------------------------------------------------------
    def get(self, name: str) -> Operand:
        if name not in self.values:
            raise self.error(f"operand '{name}' is not defined")
        return self.values[name]

    def const(self, name: str) -> Const:
        value = self.get(name)
        if not isinstance(value, Const):
            raise self.error(f"operand '{name}' must be known at import time (a constant or a shape computation)")
        return value

    def optional(self, node: onnx.NodeProto, index: int) -> Const | None:
        return self.const(node.input[index]) if len(node.input) > index and node.input[index] else None

    def small(self, *operands: Operand) -> bool:
        """Whether every operand is a constant small enough to compute with at import time."""
        return all(isinstance(x, Const) and x.data.size <= _FOLD_LIMIT for x in operands)

    def shape_of(self, x: Operand) -> list[Dim]:
        if isinstance(x, list):
            raise self.error("a sequence is not a tensor")
        return list(x.type.shape) if isinstance(x, Value) else [Dim.of(s) for s in x.data.shape]

    def dtype_of(self, x: Operand) -> DType:
        return x.type.dtype if isinstance(x, Value) else self.const_of(x).dtype

    def const_of(self, x: Operand) -> Const:
        if not isinstance(x, Const):
            raise self.error("a sequence is not a tensor")
        return x

    def tensor(self, name: str) -> Value:
        """The operand ``name`` as an IR value."""
        return self.as_value(self.get(name), name)

    def as_value(self, x: Operand, name: str) -> Value:
        return x if isinstance(x, Value) else self.materialize(self.const_of(x), name)

    def materialize(self, x: Const, name: str) -> Value:
        """A constant as IR: ``iota`` for symbolic dims, ``constant`` when small, else a parameter."""
        if x.symbolic:
            parts = [self.b.op("iota", [], {"start": d, "end": d + 1, "dtype": x.dtype}) for d in _dims(x.data)]
            flat = parts[0] if len(parts) == 1 else self.b.op("concat", parts, {"axis": 0})
            return flat if x.data.ndim == 1 else self.b.op("reshape", [flat], {"shape": list(x.data.shape)})
        flat = x.data.ravel().astype(np.float64 if x.dtype.is_float else np.int64)
        uniform = flat.size > 0 and bool(np.all(flat == flat[0]))
        weight = x.origin is not None and x.data.ndim > 0 and x.dtype.is_float
        if not weight and (uniform or flat.size <= _CONST_LIMIT):
            return self.b.constant(flat[0].item() if uniform else flat.tolist(), x.dtype, x.data.shape)
        return self.param(x.origin or name, x.transposed, x.data, x.dtype)

    def param(self, key: str, transposed: bool, data: np.ndarray, dtype: DType) -> Value:
        """The module parameter holding ``data``: initializer ``key`` (or its transpose)."""
        name = self.param_names.get((key, transposed))
        if name is None:
            name = key.removeprefix("model.")  # the StepModule wrapper, as in the torch.export path
            while name in self.b.module.params:
                name += "_t" if transposed else "_"
            array = np.ascontiguousarray(data)
            self.b.module.params[name] = Param(name, TensorType.of(array.shape, dtype), array)
            self.param_names[(key, transposed)] = name
        return self.b.param(name)

    def weight(self, name: str, flip: bool) -> Value | None:
        """A 2-D float constant (transposed when ``flip``) as a [N, K] parameter for ``linear``."""
        w = self.get(name)
        if not (isinstance(w, Const) and w.data.ndim == 2 and w.dtype.is_float):
            return None
        return self.param(w.origin or name, w.transposed != flip, w.data.T if flip else w.data, w.dtype)

    def emit(self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None) -> Value:
        assert self.node is not None
        return self.b.op(op, inputs, attrs, name=self.node.output[0])

    def reshaped(self, name: str, dims: list[Dim]) -> Operand:
        x = self.get(name)
        if isinstance(x, Const) and self.small(x):
            return _make(x.data.reshape([d.value for d in dims]), x.dtype)
        v = self.tensor(name)
        return v if tuple(dims) == v.type.shape else self.emit("reshape", [v], {"shape": dims})

    def sliced(self, x: Operand, name: str, axis: int, start: Dim, end: Dim, step: int = 1) -> Operand:
        """``x[start:end:step]`` along ``axis`` (``name`` is x's, should it become a parameter)."""
        if isinstance(x, Const) and self.small(x):
            index = [slice(None)] * x.data.ndim
            index[axis] = slice(start.value, end.value, step)
            return _make(x.data[tuple(index)], x.dtype)
        return self.emit("slice", [self.as_value(x, name)], {"axis": axis, "start": start, "end": end, "step": step})

    def axes(self, node: onnx.NodeProto, attrs: dict[str, Any], rank: int) -> list[int] | None:
        """Axes from the second input (opset 13+) or the ``axes`` attribute; None when absent."""
        given = self.optional(node, 1)
        axes = [d.value for d in _dims(given.data)] if given is not None else attrs.get("axes")
        return None if axes is None else sorted(a % rank for a in axes)


Node = onnx.NodeProto
Attrs = dict[str, Any]
Handler = Callable[[_Converter, Node, Attrs], Sequence[Operand]]
HANDLERS: dict[str, Handler] = {}


def handles(*ops: str) -> Callable[[Handler], Handler]:
    def wrap(fn: Handler) -> Handler:
        HANDLERS.update(dict.fromkeys(ops, fn))
        return fn

    return wrap


# -- constants, casts and shapes -------------------------------------------------------------------
@handles("Constant")
def _constant(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    if "value" in attrs:
        return [_array(attrs["value"])]
    for key, dtype in (("value_float", F32), ("value_floats", F32), ("value_int", I64), ("value_ints", I64)):
        if key in attrs:
            return [Const(np.asarray(attrs[key], dtype=dtype.numpy()), dtype)]
    raise c.error(f"unsupported constant attribute {', '.join(attrs)}")


@handles("Identity")
def _identity(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    return [c.get(n.input[0])]


@handles("Cast", "CastLike")
def _cast(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    dtype = _dtype(attrs["to"]) if n.op_type == "Cast" else c.dtype_of(c.get(n.input[1]))
    if isinstance(x, Const) and c.small(x) and (dtype.is_int or not x.symbolic):
        return [Const(x.data, dtype) if x.symbolic else _make(x.data, dtype)]
    v = c.tensor(n.input[0])
    return [v if v.type.dtype == dtype else c.emit("cast", [v], {"dtype": dtype})]


@handles("Shape")
def _shape(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    dims = c.shape_of(c.get(n.input[0]))
    out = np.empty(len(dims), dtype=object)
    out[:] = dims
    return [_make(out[attrs.get("start", 0):attrs.get("end", len(dims))], I64)]


@handles("ConstantOfShape")
def _constant_of_shape(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    dims = _dims(c.const(n.input[0]).data)
    fill = _array(attrs["value"]) if "value" in attrs else Const(np.zeros(1, np.float32), F32)
    if all(d.is_static for d in dims) and math.prod(d.value for d in dims) <= _FOLD_LIMIT:
        return [_make(np.full([d.value for d in dims], fill.data.ravel()[0]), fill.dtype)]
    return [c.emit("constant", [], {"value": fill.data.ravel()[0].item(), "shape": dims, "dtype": fill.dtype})]


@handles("Range")
def _range(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    start, limit, delta = (c.const(name) for name in n.input)
    if not (start.symbolic or limit.symbolic):
        data = np.arange(start.data.item(), limit.data.item(), delta.data.item())
        if data.size <= _FOLD_LIMIT:
            return [_make(data, start.dtype)]
    begin, end = _dims(start.data)[0], _dims(limit.data)[0]
    return [c.emit("iota", [], {"start": begin, "end": end, "step": int(delta.data.item()), "dtype": start.dtype})]


# -- elementwise -----------------------------------------------------------------------------------
_BINARY = {"Add": ("add", np.add), "Sub": ("sub", np.subtract), "Mul": ("mul", np.multiply), "Div": ("div", _div),
           "Pow": ("pow", np.power), "Max": ("maximum", np.maximum), "Min": ("minimum", np.minimum),
           "Equal": ("eq", np.equal), "Less": ("lt", np.less), "LessOrEqual": ("le", np.less_equal),
           "Greater": ("gt", np.greater), "GreaterOrEqual": ("ge", np.greater_equal),
           "And": ("logical_and", np.logical_and), "Or": ("logical_or", np.logical_or)}
_LOGICAL = {"Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual", "And", "Or"}


@handles(*_BINARY)
def _binary(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    if len(n.input) != 2:
        raise c.error("only two operands are supported")
    op, fold = _BINARY[n.op_type]
    a, b = c.get(n.input[0]), c.get(n.input[1])
    dtype = c.dtype_of(a)
    if c.small(a, b):
        return [_make(fold(a.data, b.data), BOOL if n.op_type in _LOGICAL else dtype)]
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
        y = c.materialize(_make(b.data, dtype), n.input[1])  # ONNX lets the exponent's type differ
    else:
        y = c.tensor(n.input[1])
    return [c.emit(op, [c.tensor(n.input[0]), y])]


def _fuse_bias(c: _Converter, n: Node, i: int) -> Value | None:
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
def _unary(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    if c.small(x) and n.op_type in _FOLD_UNARY and (n.op_type == "Neg" or not x.symbolic):
        return [_make(_FOLD_UNARY[n.op_type](x.data), x.dtype)]
    return [c.emit(_UNARY[n.op_type], [c.tensor(n.input[0])])]


@handles("Where")
def _where(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    cond, a, b = (c.get(name) for name in n.input)
    if c.small(cond, a, b):
        return [_make(np.where(cond.data, a.data, b.data), a.dtype)]
    return [c.emit("where", [c.tensor(name) for name in n.input])]


# -- reductions, normalisation and linear algebra --------------------------------------------------
_REDUCE = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max", "ReduceMin": "reduce_min"}


@handles(*_REDUCE)
def _reduce(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.tensor(n.input[0])
    axes = c.axes(n, attrs, x.type.rank)
    if not axes and attrs.get("noop_with_empty_axes", 0):
        return [x]
    axes = axes or list(range(x.type.rank))
    return [c.emit(_REDUCE[n.op_type], [x], {"axes": axes, "keepdim": bool(attrs.get("keepdims", 1))})]


@handles("Softmax")
def _softmax(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.tensor(n.input[0])
    return [c.emit("softmax", [x], {"axis": attrs.get("axis", -1) % x.type.rank})]


@handles("LayerNormalization")
def _layer_norm(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.tensor(n.input[0])
    if attrs.get("axis", -1) % x.type.rank != x.type.rank - 1:
        raise c.error("normalisation over more than the last axis is not supported")
    if any(c.uses.get(name) for name in n.output[1:] if name):
        raise c.error("the mean and inverse deviation outputs are not supported")
    extras = [c.tensor(name) for name in n.input[1:] if name]
    return [c.emit("layer_norm", [x, *extras], {"eps": float(attrs.get("epsilon", 1e-5))})]


@handles("MatMul")
def _matmul(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.tensor(n.input[0])
    weight = c.weight(n.input[1], flip=True)
    if weight is None:
        return [c.emit("matmul", [x, c.tensor(n.input[1])])]
    out = c.emit("linear", [x, weight])
    c.linears[out.name] = (x, weight, n.output[0])  # a following bias Add may fuse into it
    return [out]


@handles("Gemm")
def _gemm(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
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
def _gather(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    data, idx = c.get(n.input[0]), c.get(n.input[1])
    axis = attrs.get("axis", 0)
    if c.small(data, idx):
        return [_make(np.take(data.data, idx.data.astype(np.int64), axis=axis), data.dtype)]
    if isinstance(data, Const) and data.data.ndim == 2 and axis == 0 and isinstance(idx, Value):
        return [c.emit("embedding", [c.tensor(n.input[0]), idx])]
    x = c.tensor(n.input[0])
    return [c.emit("gather", [x, c.tensor(n.input[1])], {"axis": axis % x.type.rank})]


# -- data movement ---------------------------------------------------------------------------------
@handles("Reshape")
def _reshape(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    shape = c.shape_of(c.get(n.input[0]))
    dims = [shape[i] if d == Dim.of(0) and not attrs.get("allowzero", 0) else d
            for i, d in enumerate(_dims(c.const(n.input[1]).data))]
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
def _squeeze(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
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
def _transpose(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    rank = len(c.shape_of(x))
    perm = list(attrs.get("perm", range(rank - 1, -1, -1)))
    if isinstance(x, Const) and x.origin is not None and perm == [1, 0]:
        return [Const(x.data.T, x.dtype, x.origin, not x.transposed)]  # a weight's transpose stays a weight
    if c.small(x):
        return [_make(np.transpose(x.data, perm), x.dtype)]
    v = c.tensor(n.input[0])
    return [v if perm == list(range(rank)) else c.emit("transpose", [v], {"perm": perm})]


@handles("Expand")
def _expand(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    x = c.get(n.input[0])
    shape, target = c.shape_of(x), _dims(c.const(n.input[1]).data)
    rank = max(len(shape), len(target))
    shape = [Dim.of(1)] * (rank - len(shape)) + shape
    target = [Dim.of(1)] * (rank - len(target)) + target
    out = [t if s == Dim.of(1) else s for s, t in zip(shape, target, strict=True)]  # ONNX broadcasts both ways
    if c.small(x) and all(d.is_static for d in out) and math.prod(d.value for d in out) <= _FOLD_LIMIT:
        return [_make(np.broadcast_to(x.data, [d.value for d in out]), x.dtype)]
    v = c.tensor(n.input[0])
    return [v if tuple(out) == v.type.shape else c.emit("expand", [v], {"shape": out})]


@handles("Concat")
def _concat(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    parts = [c.get(name) for name in n.input]
    if c.small(*parts):
        return [_make(np.concatenate([p.data for p in parts], axis=attrs["axis"]), parts[0].dtype)]
    values = [v for v in (c.tensor(name) for name in n.input) if v.type.numel() != Dim.of(0)] or [c.tensor(n.input[0])]
    if len(values) == 1:
        return values
    return [c.emit("concat", values, {"axis": attrs["axis"] % values[0].type.rank})]


@handles("Slice")
def _slice(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    shape = c.shape_of(c.get(n.input[0]))
    starts, ends = _dims(c.const(n.input[1]).data), _dims(c.const(n.input[2]).data)
    axes, steps = c.optional(n, 3), c.optional(n, 4)
    axes_list = [d.value % len(shape) for d in _dims(axes.data)] if axes is not None else list(range(len(starts)))
    steps_list = [d.value for d in _dims(steps.data)] if steps is not None else [1] * len(starts)
    x = c.get(n.input[0])
    for axis, start, end, step in zip(axes_list, starts, ends, steps_list, strict=True):
        if step <= 0:
            raise c.error("slices with a negative step are not supported")
        start, end = _bound(start, shape[axis]), _bound(end, shape[axis])
        if start != Dim.of(0) or end != shape[axis] or step != 1:
            x = c.sliced(x, n.input[0], axis, start, end, step)
    return [x]


@handles("Split", "SplitToSequence")
def _split(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    shape = c.shape_of(c.get(n.input[0]))
    axis = attrs.get("axis", 0) % len(shape)
    size, given = shape[axis], c.optional(n, 1)
    if given is not None and given.data.ndim == 1 or "split" in attrs:
        sizes = _dims(given.data) if given is not None else [Dim.of(s) for s in attrs["split"]]
    elif size.is_static:
        chunk = _dims(given.data)[0].value if given is not None \
            else -(-size.value // attrs.get("num_outputs", len(n.output)))
        sizes = [Dim.of(min(chunk, size.value - i)) for i in range(0, size.value, chunk)]
    else:
        raise c.error(f"cannot split the symbolic dim {size} into equal parts")
    bounds = [sum(sizes[:i], Dim.of(0)) for i in range(len(sizes) + 1)]
    x = c.get(n.input[0])
    parts = [c.sliced(x, n.input[0], axis, bounds[i], bounds[i + 1]) for i in range(len(sizes))]
    return [parts] if n.op_type == "SplitToSequence" else parts


@handles("SequenceAt")
def _sequence_at(c: _Converter, n: Node, attrs: Attrs) -> list[Operand]:
    seq = c.get(n.input[0])
    if not isinstance(seq, list):
        raise c.error("SequenceAt needs a sequence from SplitToSequence")
    return [seq[_dims(c.const(n.input[1]).data)[0].value]]
