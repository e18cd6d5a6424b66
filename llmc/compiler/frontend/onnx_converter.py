"""The state of one ONNX conversion (:class:`Converter`): ONNX value name -> IR value, import-time
constant (:class:`~llmc.compiler.frontend.onnx_values.Const`) or sequence, and the helpers the op
handlers build IR with.

Symbols: a file of llmc's step contract binds ``L`` and ``P`` from its inputs; any other file
gets one upper-case symbol per ``dim_param`` of its inputs (``batch_size`` -> ``BATCH_SIZE``)
and one per unnamed dynamic input dim (``X_0`` for axis 0 of input ``x``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from llmc.compiler.frontend import (
    onnx_gqa,
    onnx_index_ops,
    onnx_nbits,
    onnx_nn_ops,
    onnx_norm_ops,
    onnx_ops,
    onnx_quant_ops,
    onnx_rotary,
    onnx_shape_ops,
)
from llmc.compiler.frontend.onnx_quant_weights import quantized_weight
from llmc.compiler.frontend.onnx_registry import CONTRIB_DOMAIN, CONTRIB_HANDLERS, HANDLERS
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
from llmc.errors import FrontendError
from llmc.ir.builder import Builder, value_name
from llmc.ir.graph import Function, Module, Param, Value, canonical_attr
from llmc.ir.registry import OPS, InferError, RefContext
from llmc.ir.types import Dim, DType, TensorType

del (onnx_gqa, onnx_index_ops, onnx_nbits, onnx_nn_ops, onnx_norm_ops, onnx_ops,  # imported to fill HANDLERS
     onnx_quant_ops, onnx_rotary, onnx_shape_ops)
SEQ, PAST = "L", "P"
_FAILURES = (InferError, ValueError, TypeError, IndexError, KeyError, ArithmeticError)


class Converter:
    """One conversion of ``model``'s graph into ``func`` of ``module``; ``contract``: the file
    follows llmc's step contract (symbols L and P, parameter names without the ``model.`` prefix)."""

    def __init__(self, path: Path, model: onnx.ModelProto, module: Module, func: Function, contract: bool) -> None:
        self.path = path
        self.model = model
        self.graph = model.graph
        self.contract = contract
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
        self.b = Builder(module, func)
        self.values: dict[str, Operand] = {}
        self.symbols: dict[str, Dim] = {}  # ONNX dim_param -> IR dim
        self.uses: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.uses[name] = self.uses.get(name, 0) + 1
        for vi in self.graph.output:
            self.uses[vi.name] = self.uses.get(vi.name, 0) + 1
        self.linears: dict[Value, tuple[Value, Value, str]] = {}  # bias-less linear -> x, weight, ONNX name
        self.param_names: dict[tuple[str, bool], str] = {}
        self.producers = {name: node for node in self.graph.node for name in node.output if name}
        self.quantized: dict[tuple[str, bool], Value | None] = {}  # (DequantizeLinear output, flip) -> weight
        self.rope_tables: dict[tuple[str, str], Any] = {}  # (cos, sin cache) -> their RoPE frequencies, or None
        self.node: onnx.NodeProto | None = None
        self._inferred: dict[str, onnx.ValueInfoProto] | None = None

    def error(self, message: str) -> FrontendError:
        if self.node is None:
            return FrontendError(f"{self.path}: graph: {message}")
        name = self.node.name or f"producing {next((o for o in self.node.output if o), '?')}"
        return FrontendError(f"{self.path}: node {name} ({self.node.op_type}): {message}")

    def run(self) -> None:
        if 0 < self.opset < 13:
            raise self.error(f"opset {self.opset} is too old (llmc reads opset 13 and later)")
        try:
            self._convert()
        except FrontendError:
            raise
        except _FAILURES as e:
            raise self.error(str(e).strip().replace("\n", " ") or type(e).__name__) from None

    def _convert(self) -> None:
        for t in self.graph.initializer:
            self.values[t.name] = proto_const(t)
            self.values[t.name].origin = t.name
        inputs = [vi for vi in self.graph.input if vi.name not in self.values]
        if self.contract:
            self._bind_contract_symbols()
        else:
            self._bind_input_symbols(inputs)
        for vi in inputs:
            self.values[vi.name] = self.b.input(vi.name, self._input_type(vi))
        for node in self.graph.node:
            self.node = node
            handler = HANDLERS.get(node.op_type) if node.domain in ("", "ai.onnx") else \
                CONTRIB_HANDLERS.get(node.op_type) if node.domain == CONTRIB_DOMAIN else None
            if handler is None:
                domain = f" of domain {node.domain}" if node.domain not in ("", "ai.onnx") else ""
                raise self.error(f"unsupported op{domain}")
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            start = len(self.b.into)
            results = list(handler(self, node, attrs))
            built = {id(v) for n in self.b.into[start:] for v in n.outputs}
            for i, name in enumerate(node.output):
                if i < len(results):
                    if isinstance(results[i], Value) and id(results[i]) in built and name:
                        self.b.rename(results[i], name)  # an intermediate's name, if the handler gave one
                    if name:
                        self.values[name] = results[i]
                elif name and self.uses.get(name):
                    raise self.error(f"output {i} ({name}) is not supported")
        self.node = None
        named: set[str] = set()
        self.b.ret(*(self._output(vi, named) for vi in self.graph.output))

    # -- dims --------------------------------------------------------------------------------
    def _bind_contract_symbols(self) -> None:
        """The contract's dims: input_ids axis 1 is L, past_k_0 axis 2 is P, mask axis 3 is P+L."""
        shapes = {vi.name: vi.type.tensor_type.shape.dim for vi in self.graph.input}
        for name, axis, dim in (("input_ids", 1, Dim.sym(SEQ)), ("past_k_0", 2, Dim.sym(PAST)),
                                ("mask", 3, Dim.sym(SEQ) + Dim.sym(PAST))):
            dims = shapes.get(name, [])
            if len(dims) > axis and dims[axis].dim_param:
                self.symbols.setdefault(dims[axis].dim_param, dim)

    def _bind_input_symbols(self, inputs: Sequence[onnx.ValueInfoProto]) -> None:
        """One symbol per distinct dim_param of the inputs, and per dynamic dim without one."""
        used: set[str] = set()

        def new_symbol(text: str) -> Dim:
            base = re.sub(r"[^A-Z0-9_]", "_", text.upper())
            base = base if re.match(r"[A-Z]", base) else f"S_{base}"
            name, k = base, 1
            while name in used:
                name, k = f"{base}_{k}", k + 1
            used.add(name)
            return Dim.sym(name)

        for vi in inputs:
            if not vi.type.HasField("tensor_type"):
                raise FrontendError(f"{self.path}: input {vi.name} is not a tensor")
            for axis, d in enumerate(vi.type.tensor_type.shape.dim):
                if d.HasField("dim_value"):
                    continue
                if d.dim_param and d.dim_param not in self.symbols and self.parse_dim(d.dim_param) is None:
                    self.symbols[d.dim_param] = new_symbol(d.dim_param)
                elif not d.dim_param:
                    d.dim_param = f"{vi.name}_{axis}"  # named here, so that _declared reads it
                    self.symbols[d.dim_param] = new_symbol(d.dim_param)

    def parse_dim(self, text: str) -> Dim | None:
        """A dim_param (a known symbol, or a sum of products of them and integers), or None."""
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
        tensor = vi.type.tensor_type
        if not tensor.HasField("shape"):
            raise FrontendError(f"{self.path}: input {vi.name} has no shape (llmc needs each input's rank)")
        dims = self._declared(vi)
        if any(d is None for d in dims):
            raise FrontendError(f"{self.path}: input {vi.name} has a dimension that is not L, P, P+L or a number")
        try:
            return TensorType.of(dims, elem_dtype(tensor.elem_type))
        except ValueError as e:
            raise FrontendError(f"{self.path}: input {vi.name}: {e}") from None

    def _output(self, vi: onnx.ValueInfoProto, named: set[str]) -> Value:
        value = self.tensor(vi.name)
        tensor = vi.type.tensor_type
        if tensor.elem_type and elem_dtype(tensor.elem_type) != value.type.dtype:
            raise FrontendError(f"{self.path}: output {vi.name} is {value.type} in llmc, the file declares "
                                f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}")
        if tensor.HasField("shape"):
            declared, dims = self._declared(vi), value.type.shape
            if len(declared) != len(dims) or any(d not in (None, s) for d, s in zip(declared, dims, strict=True)):
                shown = ", ".join("?" if d is None else str(d) for d in declared)
                raise FrontendError(f"{self.path}: output {vi.name} is {value.type} in llmc, the file declares [{shown}]")
        if value.name != value_name(vi.name) or value.name in named:  # passed through (Identity), a constant
            value = self.b.op("reshape", [value], {"shape": list(value.type.shape)}, name=vi.name)
        named.add(value.name)
        return value

    def inferred_shape(self, name: str) -> list[Dim] | None:
        """The shape ONNX shape inference (with data propagation) gives value ``name``, when every
        dim of it is a number or a known symbol; inference runs once, on first use."""
        if self._inferred is None:
            try:
                model = onnx.shape_inference.infer_shapes(self.model, data_prop=True)
                self._inferred = {vi.name: vi for vi in (*model.graph.value_info, *model.graph.output)}
            except Exception:  # noqa: BLE001 - inference only helps; without it the handler refuses
                self._inferred = {}
        vi = self._inferred.get(name)
        if vi is None or not vi.type.tensor_type.HasField("shape"):
            return None
        dims = self._declared(vi)
        return None if any(d is None for d in dims) else dims  # type: ignore[return-value]

    # -- operands ----------------------------------------------------------------------------
    def get(self, name: str) -> Operand:
        if name not in self.values:
            raise self.error(f"operand '{name}' is not defined")
        return self.values[name]

    def const(self, name: str, what: str = "operand") -> Const:
        """Operand ``name``, which must be known at import time (``what`` names it in the error)."""
        value = self.get(name)
        if not isinstance(value, Const):
            raise self.error(f"the {what} '{name}' depends on tensor data, not only on shapes: llmc needs it "
                             "known at import time (a constant or a computation on shapes)")
        return value

    def optional(self, node: onnx.NodeProto, index: int, what: str = "operand") -> Const | None:
        return self.const(node.input[index], what) if self.has_input(node, index) else None

    @staticmethod
    def has_input(node: onnx.NodeProto, index: int) -> bool:
        return len(node.input) > index and bool(node.input[index])

    def ints(self, node: onnx.NodeProto, index: int, what: str) -> list[int] | None:
        """An optional integer operand's elements (static), or None when absent."""
        given = self.optional(node, index, what)
        if given is None:
            return None
        dims = to_dims(given.data)
        if any(not d.is_static for d in dims):
            raise self.error(f"the {what} '{node.input[index]}' is symbolic ({', '.join(map(str, dims))})")
        return [d.value for d in dims]

    def small(self, *operands: Operand) -> bool:
        """Whether every operand is a constant small enough to compute with at import time."""
        return all(isinstance(x, Const) and x.data.size <= FOLD_LIMIT for x in operands)

    def shape_of(self, x: Operand) -> list[Dim]:
        if isinstance(x, list):
            raise self.error("a sequence is not a tensor")
        return list(x.type.shape) if isinstance(x, Value) else [Dim.of(s) for s in x.data.shape]

    def rank_of(self, x: Operand) -> int:
        return len(self.shape_of(x))

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
            if not parts:
                return self.b.constant(0, x.dtype, x.data.shape)
            flat = parts[0] if len(parts) == 1 else self.b.op("concat", parts, {"axis": 0})
            return flat if x.data.ndim == 1 else self.b.op("reshape", [flat], {"shape": list(x.data.shape)})
        flat = x.data.ravel().astype(np.float64 if x.dtype.is_float else np.int64)
        uniform = flat.size > 0 and bool(np.all(flat == flat[0]))
        if flat.size == 0:
            return self.b.constant(0, x.dtype, x.data.shape)
        weight = x.origin is not None and x.data.ndim > 0 and x.dtype.is_float
        if not weight and (uniform or flat.size <= CONST_LIMIT):
            return self.b.constant(flat[0].item() if uniform else flat.tolist(), x.dtype, x.data.shape)
        return self.param(x.origin or name, x.transposed, x.data, x.dtype)

    def param(self, key: str, transposed: bool, data: np.ndarray, dtype: DType) -> Value:
        """The module parameter holding ``data``: initializer ``key`` (or its transpose)."""
        name = self.param_names.get((key, transposed))
        if name is None:
            name = key.removeprefix("model.") if self.contract else key  # the StepModule wrapper's prefix
            while name in self.b.module.params:
                name += "_t" if transposed else "_"
            array = np.ascontiguousarray(data)
            self.b.module.params[name] = Param(name, TensorType.of(array.shape, dtype), array)
            self.param_names[(key, transposed)] = name
        return self.b.param(name)

    def weight(self, name: str, flip: bool) -> Value | None:
        """A 2-D float constant (transposed when ``flip``) as a [N, K] parameter for ``linear``;
        a DequantizeLinear of integer constants as llmc's codes read by ``dequantize`` when that
        is exact (:func:`~llmc.compiler.frontend.onnx_quant_weights.quantized_weight`)."""
        quantized = quantized_weight(self, name, flip)
        if quantized is not None:
            return quantized
        w = self.get(name)
        if not (isinstance(w, Const) and w.data.ndim == 2 and w.dtype.is_float and not w.symbolic):
            return None
        return self.param(w.origin or name, w.transposed != flip, w.data.T if flip else w.data, w.dtype)

    # -- building IR -------------------------------------------------------------------------
    def emit(self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None, index: int = 0) -> Value:
        """An op whose result is the node's output ``index`` (named after it)."""
        assert self.node is not None
        return self.b.op(op, inputs, attrs, name=self.node.output[index])

    def op(self, op: str, inputs: Sequence[Value], attrs: dict[str, Any] | None = None) -> Value:
        """An intermediate op of the node being converted."""
        assert self.node is not None
        return self.b.op(op, inputs, attrs, name=f"{next((o for o in self.node.output if o), 'v')}_t")

    def reshape(self, x: Value, dims: Sequence[Dim]) -> Value:
        """``x`` reshaped to ``dims`` (x itself when it has that shape)."""
        return x if tuple(dims) == x.type.shape else self.op("reshape", [x], {"shape": list(dims)})

    def scalar(self, value: float | int | bool, dtype: DType, rank: int = 0) -> Value:
        """A constant of ``dtype`` holding ``value``, of shape [1] * rank."""
        return self.b.constant(int(value) if isinstance(value, bool) else value, dtype, [1] * rank)

    def fold(self, fn: Any, operands: Sequence[Operand], dtype: DType) -> Const | None:
        """``fn`` of the operands' data at import time when they are all small constants, else
        (or when ``fn`` cannot compute on symbolic dims) None."""
        if not self.small(*operands):
            return None
        try:
            with np.errstate(all="ignore"):
                return make_const(fn(*(x.data for x in operands)), dtype)  # type: ignore[union-attr]
        except (TypeError, ValueError, ArithmeticError):
            return None

    def fold_ir(self, op: str, operands: Sequence[Operand], attrs: dict[str, Any] | None = None) -> Const | None:
        """IR op ``op`` computed at import time by its reference implementation (so that folding
        equals running it), when every operand is a small numeric constant; else None."""
        if not self.small(*operands) or any(x.symbolic for x in operands):  # type: ignore[union-attr]
            return None
        opdef = OPS[op]
        full = opdef.with_defaults({k: canonical_attr(v) for k, v in (attrs or {}).items()})
        types = opdef.infer([TensorType.of(x.data.shape, x.dtype) for x in operands], full)  # type: ignore[union-attr]
        out = opdef.ref([x.data for x in operands], full, RefContext({}, types))  # type: ignore[union-attr]
        return Const(out[0], types[0].dtype)

    def reshaped(self, name: str, dims: list[Dim]) -> Operand:
        x = self.get(name)
        if isinstance(x, Const) and self.small(x) and all(d.is_static for d in dims):
            return Const(x.data.reshape([d.value for d in dims]), x.dtype) if x.symbolic else \
                make_const(x.data.reshape([d.value for d in dims]), x.dtype)
        v = self.tensor(name)
        return v if tuple(dims) == v.type.shape else self.emit("reshape", [v], {"shape": dims})

    def sliced(self, x: Operand, name: str, axis: int, start: Dim, end: Dim, step: int = 1) -> Operand:
        """``x[start:end:step]`` along ``axis`` (``name`` is x's, should it become a parameter)."""
        if isinstance(x, Const) and self.small(x) and start.is_static and end.is_static:
            where = [slice(None)] * x.data.ndim
            where[axis] = slice(start.value, end.value, step)
            return make_const(x.data[tuple(where)], x.dtype)
        v = self.as_value(x, name)
        if (start, end, step) == (Dim.of(0), v.type.shape[axis], 1):
            return v
        return self.op("slice", [v], {"axis": axis, "start": start, "end": end, "step": step})

    def axes(self, node: onnx.NodeProto, attrs: dict[str, Any], rank: int) -> list[int] | None:
        """Axes from the second input (opset 13+) or the ``axes`` attribute; None when absent."""
        given = self.ints(node, 1, "axes")
        axes = given if given is not None else attrs.get("axes")
        if axes is None:
            return None
        for a in axes:
            if not -rank <= a < rank:
                raise self.error(f"axis {a} is out of range for rank {rank}")
        return sorted({a % rank for a in axes})
