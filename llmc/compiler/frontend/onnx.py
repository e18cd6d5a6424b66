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

This module holds the conversion and the contract checks; the op handlers (:data:`HANDLERS`) are in
:mod:`llmc.compiler.frontend.onnx_ops` and the import-time values in
:mod:`llmc.compiler.frontend.onnx_values`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from llmc.compiler.frontend.onnx_ops import HANDLERS
from llmc.compiler.frontend.onnx_values import (
    CONST_LIMIT,
    FOLD_LIMIT,
    Const,
    Operand,
    elem_dtype,
    make_const,
    proto_const,
    to_dims,
)
from llmc.compiler.passes.cleanup import dce, prune_params
from llmc.compiler.passes.fuse import fuse_function
from llmc.compiler.passes.specialize import specialize
from llmc.errors import FrontendError
from llmc.ir.builder import Builder
from llmc.ir.graph import Function, Module, Param, Value
from llmc.ir.registry import InferError
from llmc.ir.types import Dim, DType, TensorType

ATTRS_KEY = "llmc.attrs"  # metadata property holding the module attributes as JSON
SEQ, PAST = "L", "P"
CONTRACT = "inputs input_ids, mask, position_ids, past_k_0, past_v_0, ...; outputs logits, k_0, v_0, ..."


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
    Converter(path, model, module, step).run()
    fuse_function(module, step)
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


class Converter:
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
            self.values[t.name] = proto_const(t)
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
        return TensorType.of(dims, elem_dtype(vi.type.tensor_type.elem_type))

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
        return all(isinstance(x, Const) and x.data.size <= FOLD_LIMIT for x in operands)

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
            parts = [self.b.op("iota", [], {"start": d, "end": d + 1, "dtype": x.dtype}) for d in to_dims(x.data)]
            flat = parts[0] if len(parts) == 1 else self.b.op("concat", parts, {"axis": 0})
            return flat if x.data.ndim == 1 else self.b.op("reshape", [flat], {"shape": list(x.data.shape)})
        flat = x.data.ravel().astype(np.float64 if x.dtype.is_float else np.int64)
        uniform = flat.size > 0 and bool(np.all(flat == flat[0]))
        weight = x.origin is not None and x.data.ndim > 0 and x.dtype.is_float
        if not weight and (uniform or flat.size <= CONST_LIMIT):
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
            return make_const(x.data.reshape([d.value for d in dims]), x.dtype)
        v = self.tensor(name)
        return v if tuple(dims) == v.type.shape else self.emit("reshape", [v], {"shape": dims})

    def sliced(self, x: Operand, name: str, axis: int, start: Dim, end: Dim, step: int = 1) -> Operand:
        """``x[start:end:step]`` along ``axis`` (``name`` is x's, should it become a parameter)."""
        if isinstance(x, Const) and self.small(x):
            index = [slice(None)] * x.data.ndim
            index[axis] = slice(start.value, end.value, step)
            return make_const(x.data[tuple(index)], x.dtype)
        return self.emit("slice", [self.as_value(x, name)], {"axis": axis, "start": start, "end": end, "step": step})

    def axes(self, node: onnx.NodeProto, attrs: dict[str, Any], rank: int) -> list[int] | None:
        """Axes from the second input (opset 13+) or the ``axes`` attribute; None when absent."""
        given = self.optional(node, 1)
        axes = [d.value for d in to_dims(given.data)] if given is not None else attrs.get("axes")
        return None if axes is None else sorted(a % rank for a in axes)
