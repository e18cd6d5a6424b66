"""Kernel plans: a scheduled Relax module as device kernels (OpenCL C or CUDA) plus a launch plan.

TVM's own runtime for OpenCL is not in the ``apache-tvm`` wheel, and a GPU machine may have no
TVM at all; so for those targets TVM generates the device code and this module records how to
call it, for ``launch.py`` to run:

- every TIR function goes through TVM's default TIR pipeline for the target; the host side, as
  it is just before ``MakePackedAPI`` (typed buffers, scalar bindings, scratch buffers and
  ``call_ffi_kernel`` launches with their grid and block extents), becomes a list of
  :class:`~llmc.backends.tvm.launch.HostOp`; the device side becomes source code;
- every Relax function's bindings (``call_tir``, reshape views, tuples) become
  :class:`~llmc.backends.tvm.launch.Step` s.

Sizes are TIR expressions printed as Python (``//`` is TIR's floor division, as in Python).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax, tirx
from tvm.ir import prim
from tvm.ir.expr import GenericConst
from tvm.target import Target
from tvm.tirx.build import codegen_build, split_host_device_mods

from llmc.backends.tvm.launch import Function, HostOp, Kernel, Plan, Step

_BINARY = {prim.Add: "+", prim.Sub: "-", prim.Mul: "*", prim.FloorDiv: "//", prim.FloorMod: "%", prim.EQ: "==",
           prim.NE: "!=", prim.LT: "<", prim.LE: "<=", prim.GT: ">", prim.GE: ">=", prim.And: "and", prim.Or: "or"}
_AXES = {"x": 0, "y": 1, "z": 2}


class Namer:
    """Unique Python identifiers for IR variables, by object (names in TVM IR need not be unique)."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}

    def __call__(self, var: tvm.ir.Var) -> str:
        handle = var.__chandle__()
        if handle not in self.names:
            base = "".join(c if c.isalnum() else "_" for c in var.name)
            self.names[handle] = f"{base}_{len(self.names)}"
        return self.names[handle]


def pyexpr(e: tirx.PrimExpr, name: Namer) -> str:
    """A scalar TIR expression as Python source (integers; floats only as constants)."""
    kind = type(e)
    if isinstance(e, prim.IntImm):
        return str(int(e.value))
    if isinstance(e, prim.FloatImm):
        return repr(float(e.value))
    if isinstance(e, tvm.ir.Var):
        return name(e)
    if kind in _BINARY:
        return f"({pyexpr(e.a, name)} {_BINARY[kind]} {pyexpr(e.b, name)})"
    if kind is prim.Div:
        return f"tdiv({pyexpr(e.a, name)}, {pyexpr(e.b, name)})"
    if kind in (prim.Min, prim.Max):
        return f"{kind.__name__.lower()}({pyexpr(e.a, name)}, {pyexpr(e.b, name)})"
    if kind is prim.Not:
        return f"(not {pyexpr(e.a, name)})"
    if kind is prim.Select:
        return f"({pyexpr(e.true_value, name)} if {pyexpr(e.condition, name)} else {pyexpr(e.false_value, name)})"
    if kind is prim.Cast:
        dtype = str(e.ty)
        return f"{'float' if 'float' in dtype else 'bool' if dtype == 'bool' else 'int'}({pyexpr(e.value, name)})"
    raise NotImplementedError(f"kernel plan: cannot evaluate {kind.__name__} expression {e}")


# -- TIR functions ----------------------------------------------------------------------------


class _KernelPlanner:
    """The host code of one lowered TIR function as :class:`HostOp` s."""

    def __init__(self) -> None:
        self.name = Namer()

    def expr(self, e: tirx.PrimExpr) -> str:
        return pyexpr(e, self.name)

    def buffer(self, e: tvm.ir.Expr) -> str | None:
        """The buffer of ``buffer_data(X)``."""
        if isinstance(e, tvm.ir.Call) and e.op.name == "tirx.buffer_data":
            return self.name(e.args[0])
        return None

    def launch(self, call: tvm.ir.Call) -> HostOp:
        params = [str(p) for p in call.attrs.launch_params]
        values = list(call.args[1:])
        split = len(values) - len(params)
        grid, block, shared = ["1", "1", "1"], ["1", "1", "1"], "0"
        for tag, extent in zip(params, values[split:]):
            if tag.startswith("blockIdx."):
                grid[_AXES[tag[-1]]] = self.expr(extent)
            elif tag.startswith("threadIdx."):
                block[_AXES[tag[-1]]] = self.expr(extent)
            elif tag == "tirx.use_dyn_shared_memory":
                shared = self.expr(extent)
            else:
                raise NotImplementedError(f"kernel plan: unknown launch parameter {tag}")
        args = []
        for a in values[:split]:
            buffer = self.buffer(a)
            args.append(("buffer", buffer) if buffer is not None else ("scalar", str(a.ty), self.expr(a)))
        return HostOp("launch", str(call.args[0].value), args=tuple(args), grid=tuple(grid), block=tuple(block),
                      shared=shared)

    def ops(self, body: tirx.Stmt) -> list[HostOp]:
        out = []
        for st in list(body.seq) if isinstance(body, tirx.SeqStmt) else [body]:
            kind = type(st).__name__
            if kind == "Bind":
                out.append(HostOp("bind", self.name(st.var), expr=self.expr(st.value)))
            elif kind == "AllocBuffer":
                size = " * ".join(self.expr(d) for d in st.buffer.shape) or "1"
                out.append(HostOp("alloc", self.name(st.buffer), expr=size, dtype=str(st.buffer.dtype)))
            elif kind == "DeclBuffer":
                out.append(HostOp("alias", self.name(st.buffer), source=self.buffer(st.data)))
            elif kind == "Evaluate" and isinstance(st.value, tvm.ir.Call) and st.value.op.name == "tirx.call_ffi_kernel":
                out.append(self.launch(st.value))
            elif kind == "SeqStmt":
                out += self.ops(st)
            else:
                raise NotImplementedError(f"kernel plan: host statement {kind} is not supported")
        return out

    def kernel(self, func: tirx.PrimFunc) -> Kernel:
        names = tuple(self.name(p) for p in func.params)
        shapes = tuple(None if isinstance(p.ty, tvm.ir.PrimType) else tuple(self.expr(d) for d in p.ty.shape)
                       for p in func.params)
        return Kernel(names, shapes, tuple(self.ops(func.body)))


@dataclass
class DeviceCode:
    """Device kernels of a module: ``source`` (OpenCL C or CUDA C++) for ``target``."""

    target: Target
    source: str


def lower_kernels(mod: tvm.IRModule, target: Target) -> tuple[dict[str, Kernel], DeviceCode]:
    """Lower every TIR function of ``mod`` for ``target``: host plans and device source."""
    funcs = {gv.name_hint: f.with_attr("global_symbol", gv.name_hint)
             for gv, f in mod.functions_items() if isinstance(f, tirx.PrimFunc)}
    tir_mod = tirx.transform.BindTarget(target)(tvm.IRModule(funcs))
    captured: dict[str, tvm.IRModule] = {}

    @tvm.instrument.pass_instrument
    class BeforePackedApi:
        def run_before_pass(self, m: tvm.IRModule, info: tvm.transform.PassInfo) -> None:
            if info.name == "tirx.MakePackedAPI":
                captured["host"] = m

    pipeline, _, finalize_device = tirx.get_tir_pipeline("default")
    with tvm.transform.PassContext(instruments=[BeforePackedApi()]):
        lowered = pipeline(tir_mod)
    host = captured["host"]
    kernels = {gv.name_hint: _KernelPlanner().kernel(f) for gv, f in host.functions_items() if gv.name_hint in funcs}
    _, devices = split_host_device_mods(lowered)
    sources = [codegen_build(finalize_device()(m), t).inspect_source() for t, m in devices.items()]
    return kernels, DeviceCode(target, "\n".join(sources))


# -- Relax functions --------------------------------------------------------------------------


class _FunctionPlanner:
    def __init__(self, func: relax.Function, constants: dict[str, np.ndarray]) -> None:
        self.func, self.constants = func, constants
        self.steps: list[Step] = []
        self.name = Namer()  # values and shape symbols

    def type(self, t: relax.TensorType) -> tuple[tuple[str, ...], str]:
        return tuple(pyexpr(d, self.name) for d in t.shape.values), str(t.dtype)

    def ref(self, e: relax.Expr) -> tuple[str, str]:
        if isinstance(e, GenericConst):
            name = f"const{len(self.constants)}"
            self.constants[name] = e.value.numpy()
            return ("value", name)
        if isinstance(e.ty, tvm.ir.PrimType):
            return ("scalar", pyexpr(e, self.name))
        if isinstance(e, relax.Var):
            return ("value", self.name(e))
        raise NotImplementedError(f"kernel plan: argument {type(e).__name__} is not supported")

    def binding(self, var: relax.Var, value: relax.Expr) -> Step:
        out = self.name(var)
        if isinstance(value, relax.Var):
            return Step("view", out, (self.ref(value),), outputs=(self.type(var.ty),))
        if isinstance(value, relax.Tuple):
            return Step("tuple", out, tuple(self.ref(f) for f in value.fields))
        if isinstance(value, relax.TupleGetItem):
            return Step("item", out, (self.ref(value.tuple_value),), index=int(value.index))
        if isinstance(value, tvm.ir.Call) and value.op.name == "relax.reshape":
            return Step("view", out, (self.ref(value.args[0]),), outputs=(self.type(var.ty),))
        if isinstance(value, tvm.ir.Call) and value.op.name == "relax.call_tir":
            if len(value.args) > 2:
                raise NotImplementedError("kernel plan: call_tir with separate tir_vars")
            out_ty = value.ty_args[0]
            fields = out_ty.fields if isinstance(out_ty, relax.TupleType) else [out_ty]
            return Step("call", out, tuple(self.ref(a) for a in value.args[1].fields), value.args[0].name_hint,
                        tuple(self.type(t) for t in fields))
        raise NotImplementedError(f"kernel plan: binding {out} = {type(value).__name__} is not supported")

    def plan(self) -> Function:
        inputs = tuple(self.name(p) for p in self.func.params)
        symbols = []
        for i, p in enumerate(self.func.params):
            for d, dim in enumerate(p.ty.shape.values):
                if isinstance(dim, tvm.ir.Var) and self.name(dim) not in {s for s, _, _ in symbols}:
                    symbols.append((self.name(dim), i, d))
        body = self.func.body
        for block in body.blocks:
            for b in block.bindings:
                self.steps.append(self.binding(b.var, b.value))
        return Function(inputs, tuple(symbols), tuple(self.steps), self.ref(body.body)[1])


def build_plan(mod: tvm.IRModule, target: Target, functions: tuple[str, ...]) -> tuple[Plan, DeviceCode]:
    """The kernel plan and device code of the scheduled Relax module ``mod`` (``schedule.scheduled``)."""
    constants: dict[str, np.ndarray] = {}
    plans = {name: _FunctionPlanner(mod[name], constants).plan() for name in functions}
    kernels, code = lower_kernels(mod, target)
    return Plan(plans, kernels, constants), code
