"""Lower an IR module's functions to one TVM Relax IRModule.

Each IR function (``prefill``, ``decode``) becomes a Relax function of the same name taking the
IR function's inputs (the KV cache included) followed by the weights it reads, and returning
the IR function's outputs as a tuple, the grown KV cache included: the runtime keeps the cache.
Symbolic dims (``L``, ``P``) become int64 TIR variables, so one compiled function serves every
length. Ops map to Relax ops (``lower_ops.py``) or to TE kernels for the compressed linear family
(``lower_linear.py``); weights are re-laid once into the kernels' layouts (``WeightTable``).

``param`` nodes and ``dequantize`` / ``dequantize_min`` nodes of parameters emit nothing by themselves: a consumer
reads them in the form it needs (a fused kernel its packed weights), and only a consumer that
needs the plain value makes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.sym import Analyzer

from llmc.backends.tvm.device import Signature
from llmc.backends.tvm.lut_isa import Variant
from llmc.errors import LlmcError
from llmc.ir.graph import Function, Module, Node, Value
from llmc.ir.registry import OPS
from llmc.ir.types import Dim, DType, TensorType

Handler = Callable[["FunctionLowering", Node], list[relax.Expr]]
HANDLERS: dict[str, Handler] = {}
DEQUANTIZE = ("dequantize", "dequantize_min")  # weights made by their consumers when they read parameters
_ANALYZER = Analyzer()


def handles(*ops: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the lowering of ``ops``."""

    def register(fn: Handler) -> Handler:
        for op in ops:
            HANDLERS[op] = fn
        return fn

    return register


def tvm_dtype(dtype: DType) -> str:
    """The TVM dtype of an IR dtype's storage (``i4`` is held in ``int8``, as in the interpreter)."""
    return str(dtype.numpy())


@dataclass
class WeightTable:
    """Weight arrays by key (a parameter name, or a name and a layout), packed once per module."""

    module: Module
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def param(self, name: str) -> np.ndarray:
        data = self.module.params[name].data
        if data is None:
            raise LlmcError(f"parameter '{name}' has no data (shapes-only module); it cannot be compiled to run")
        return data

    def get(self, key: str, make: Callable[[], np.ndarray]) -> np.ndarray:
        if key not in self.arrays:
            self.arrays[key] = np.ascontiguousarray(make())
        return self.arrays[key]


@dataclass(frozen=True)
class Options:
    """Target-dependent lowering choices (``lower_cpu.py``): decode-sized quantized layers on the CPU
    dequantize GEMV kernel (``cpu_gemv``) and LUT-mpGEMM ones on the LUT kernel of ``lut_variant``."""

    cpu_gemv: bool = False
    lut_variant: Variant | None = None


class FunctionLowering:
    """Lowers one IR function into the block builder's current module."""

    def __init__(self, module: Module, func: Function, weights: WeightTable, bb: relax.BlockBuilder,
                 options: Options) -> None:
        self.module, self.func, self.weights, self.bb, self.options = module, func, weights, bb, options
        self.symbols = {s: tirx.Var(s, "int64") for s in sorted(func.symbols())}
        self.producers = func.producers()
        self.values: dict[str, relax.Expr] = {}
        self.weight_vars: dict[str, relax.Var] = {}

    # -- types --------------------------------------------------------------------------------
    def dim(self, d: Dim) -> tirx.PrimExpr:
        total: tirx.PrimExpr = tirx.const(0, "int64")
        for monomial, coeff in d.terms:
            term: tirx.PrimExpr = tirx.const(coeff, "int64")
            for s in monomial:
                if s not in self.symbols:
                    raise LlmcError(f"func @{self.func.name}: dim symbol {s} is not bound by the inputs")
                term = term * self.symbols[s]
            total = total + term
        return _ANALYZER.simplify(total)

    def shape(self, t: TensorType) -> list[tirx.PrimExpr]:
        return [self.dim(d) for d in t.shape]

    def relax_type(self, t: TensorType) -> relax.TensorType:
        return relax.TensorType(self.shape(t), tvm_dtype(t.dtype))

    # -- values -------------------------------------------------------------------------------
    def weight(self, key: str, make: Callable[[], np.ndarray]) -> relax.Var:
        """The function parameter holding weight ``key`` (``make`` builds its array once)."""
        if key not in self.weight_vars:
            array = self.weights.get(key, make)
            self.weight_vars[key] = relax.Var(_var_name(key), relax.TensorType(array.shape, str(array.dtype)))
        return self.weight_vars[key]

    def param_name(self, value: Value) -> str | None:
        """The parameter a value is, when it comes straight from a ``param`` node."""
        node = self.producers.get(value.name)
        return node.attrs["name"] if node is not None and node.op == "param" else None

    def value(self, v: Value) -> relax.Expr:
        """The Relax value of ``v``, making a deferred parameter or dequantize on first use."""
        if v.name not in self.values:
            node = self.producers[v.name]
            if node.op == "param":
                name = node.attrs["name"]
                self.values[v.name] = self.weight(name, lambda: self.weights.param(name))
            else:
                self.emit(node)
        return self.values[v.name]

    def arg(self, node: Node, i: int) -> relax.Expr:
        return self.value(node.inputs[i])

    def emit(self, node: Node) -> None:
        handler = HANDLERS.get(node.op)
        if handler is None:
            raise LlmcError(f"func @{self.func.name}, %{node.outputs[0].name} = {node.op}: "
                            "the TVM backend has no lowering for this op")
        results = handler(self, with_defaults(node))
        for value, expr in zip(node.outputs, results):
            self.values[value.name] = expr

    def deferred(self, node: Node) -> bool:
        """Parameters and dequantized parameters are made by their consumers."""
        if node.op == "param":
            return True
        return node.op in DEQUANTIZE and all(self.param_name(v) is not None for v in node.inputs)

    # -- the function -------------------------------------------------------------------------
    def lower(self) -> Signature:
        inputs = [relax.Var(v.name, self.relax_type(v.type)) for v in self.func.inputs]
        self.values.update({v.name: var for v, var in zip(self.func.inputs, inputs)})
        with self.bb.function(self.func.name):
            with self.bb.dataflow():
                for node in self.func.nodes:
                    if not self.deferred(node):
                        self.emit(node)
                outputs = [self.value(v) for v in self.func.outputs]
                result = self.bb.emit_output(relax.Tuple(outputs))
            self.bb.emit_func_output(result, params=inputs + list(self.weight_vars.values()))
        return Signature(tuple(v.name for v in self.func.inputs), tuple(tvm_dtype(v.type.dtype) for v in self.func.inputs),
                         tuple(self.weight_vars), tuple(v.name for v in self.func.outputs))


def with_defaults(node: Node) -> Node:
    """``node`` with every attribute its op declares (defaults filled in)."""
    return Node(node.op, node.inputs, node.outputs, OPS[node.op].with_defaults(node.attrs))


def _var_name(key: str) -> str:
    return "w_" + "".join(c if c.isalnum() else "_" for c in key)


def lower_module(module: Module, functions: tuple[str, ...] = ("prefill", "decode"), options: Options = Options()
                 ) -> tuple[tvm.IRModule, WeightTable, dict[str, Signature]]:
    """Relax functions for ``functions`` of ``module``, the weights they read, and their signatures."""
    from llmc.backends.tvm import lower_linear, lower_ops  # noqa: F401  (register the handlers)

    missing = [f for f in functions if f not in module.functions]
    if missing:
        raise LlmcError(f"module '{module.name}' lacks function(s) {', '.join(missing)}")
    weights = WeightTable(module)
    bb = relax.BlockBuilder()
    signatures = {name: FunctionLowering(module, module.functions[name], weights, bb, options).lower()
                  for name in functions}
    return bb.get(), weights, signatures
