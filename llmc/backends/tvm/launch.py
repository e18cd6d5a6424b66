"""Run a kernel plan without TVM: a compiled model's functions as launches of TVM-generated kernels.

A :class:`Plan` is what ``plan.py`` extracts from a scheduled Relax module: per function, the
steps of its body (kernel calls, reshape views, tuples) and, per TIR function, the host side of
its lowered code (scalar bindings, scratch buffers, device kernel launches with their grid and
block sizes). Sizes are Python expressions over the shape symbols (``L``, ``P`` and the TIR
functions' own), evaluated at run time. A backend owns memory and launches kernels: OpenCL
through pyopencl, CUDA cubins through CuPy. This module needs NumPy only (and the backend's
library), so a machine without TVM runs a plan saved by :meth:`Plan.save`.

Plans are trusted code (their expressions are evaluated): load only plans you made.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np


def _truncdiv(a: int, b: int) -> int:
    """C division of integers (TIR ``Div``), rounding toward zero."""
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


_HELPERS: dict[str, Any] = {"min": min, "max": max, "int": int, "float": float, "bool": bool, "tdiv": _truncdiv}


@dataclass(frozen=True)
class HostOp:
    """One statement of a TIR function's host code.

    ``bind``: scalar ``name = expr``; ``alloc``: scratch buffer ``name`` of ``expr`` elements of
    ``dtype``; ``alias``: buffer ``name`` shares ``source``'s memory; ``launch``: kernel ``name``
    with ``args`` (``["buffer", var]`` or ``["scalar", dtype, expr]``), ``grid`` and ``block``
    (three expressions each) and ``shared`` bytes of dynamic shared memory.
    """

    op: str
    name: str
    expr: str = ""
    dtype: str = ""
    source: str = ""
    args: tuple[tuple[str, ...], ...] = ()
    grid: tuple[str, ...] = ()
    block: tuple[str, ...] = ()
    shared: str = "0"


@dataclass(frozen=True)
class Kernel:
    """A TIR function: its parameters in call order (``shapes``: per buffer dim a symbol name or an
    expression; ``None`` for a scalar parameter) and its host code."""

    params: tuple[str, ...]
    shapes: tuple[tuple[str, ...] | None, ...]
    ops: tuple[HostOp, ...]


@dataclass(frozen=True)
class Step:
    """One binding of a Relax function: ``call`` of TIR function ``func`` on ``args`` (``["value",
    name]`` or ``["scalar", expression]``) and fresh ``outputs`` (shape expressions and dtypes;
    several make a tuple); ``view`` of value ``args[0]`` with shape ``outputs[0]``; ``tuple`` of
    ``args``; ``item`` ``index`` of tuple ``args[0]``."""

    op: str
    out: str
    args: tuple[tuple[str, str], ...] = ()
    func: str = ""
    outputs: tuple[tuple[tuple[str, ...], str], ...] = ()
    index: int = 0


@dataclass(frozen=True)
class Function:
    """A Relax function: its inputs, where each shape symbol is read (input, dim), steps, result."""

    inputs: tuple[str, ...]
    symbols: tuple[tuple[str, int, int], ...]
    steps: tuple[Step, ...]
    output: str


@dataclass
class Plan:
    """Functions, TIR functions and constants of a compiled model, for :class:`Runner`."""

    functions: dict[str, Function]
    kernels: dict[str, Kernel]
    constants: dict[str, np.ndarray]

    def save(self, path: Path) -> None:
        """``path`` (JSON) and ``path.npz`` (constants)."""
        doc = {"functions": {k: asdict(v) for k, v in self.functions.items()},
               "kernels": {k: asdict(v) for k, v in self.kernels.items()}}
        Path(path).write_text(json.dumps(doc))
        np.savez(Path(f"{path}.npz"), **self.constants)

    @staticmethod
    def load(path: Path) -> Plan:
        doc = json.loads(Path(path).read_text())
        with np.load(Path(f"{path}.npz")) as data:
            constants = {k: data[k] for k in data.files}
        functions = {k: Function(tuple(v["inputs"]), tuple(map(tuple, v["symbols"])),
                                 tuple(_step(s) for s in v["steps"]), v["output"]) for k, v in doc["functions"].items()}
        kernels = {k: Kernel(tuple(v["params"]), tuple(None if d is None else tuple(d) for d in v["shapes"]),
                             tuple(_host_op(o) for o in v["ops"])) for k, v in doc["kernels"].items()}
        return Plan(functions, kernels, constants)


def _step(d: dict[str, Any]) -> Step:
    outputs = tuple((tuple(shape), dtype) for shape, dtype in d["outputs"])
    return Step(d["op"], d["out"], tuple(map(tuple, d["args"])), d["func"], outputs, d["index"])


def _host_op(d: dict[str, Any]) -> HostOp:
    return HostOp(d["op"], d["name"], d["expr"], d["dtype"], d["source"], tuple(map(tuple, d["args"])),
                  tuple(d["grid"]), tuple(d["block"]), d["shared"])


@dataclass
class Tensor:
    """A device buffer seen with a shape and dtype (views share the buffer)."""

    buffer: Any
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class Backend(Protocol):
    def alloc(self, nbytes: int) -> Any: ...

    def upload(self, array: np.ndarray) -> Any: ...

    def download(self, tensor: Tensor) -> np.ndarray: ...

    def launch(self, kernel: str, grid: tuple[int, ...], block: tuple[int, ...], shared: int,
               args: list[Any]) -> None: ...


class _Expr:
    """An expression string compiled once."""

    def __init__(self, text: str) -> None:
        self.code = compile(text, "<plan>", "eval")

    def __call__(self, scope: dict[str, Any]) -> Any:
        return eval(self.code, {"__builtins__": {}, **_HELPERS}, scope)  # noqa: S307  (plans are trusted)


class Runner:
    """Executes a plan's functions on a backend; values stay on the device."""

    def __init__(self, plan: Plan, backend: Backend) -> None:
        self.plan, self.backend = plan, backend
        self._exprs: dict[str, _Expr] = {}
        self._constants: dict[str, Tensor] = {}

    def expr(self, text: str, scope: dict[str, Any]) -> Any:
        if text not in self._exprs:
            self._exprs[text] = _Expr(text)
        return self._exprs[text](scope)

    def tensor(self, array: np.ndarray) -> Tensor:
        array = np.ascontiguousarray(array)
        return Tensor(self.backend.upload(array), array.shape, array.dtype)

    def numpy(self, tensor: Tensor) -> np.ndarray:
        return self.backend.download(tensor)

    def _value(self, env: dict[str, Any], arg: tuple[str, str], symbols: dict[str, int]) -> Any:
        kind, text = arg
        if kind == "scalar":
            return self.expr(text, symbols)
        if text in env:
            return env[text]
        if text not in self._constants:
            self._constants[text] = self.tensor(self.plan.constants[text])
        return self._constants[text]

    def call(self, name: str, args: list[Tensor]) -> list[Tensor]:
        """Run function ``name`` on device tensors; returns its result tuple."""
        fn = self.plan.functions[name]
        if len(args) != len(fn.inputs):
            raise ValueError(f"{name} takes {len(fn.inputs)} arguments, got {len(args)}")
        env: dict[str, Any] = dict(zip(fn.inputs, args))
        symbols = {sym: args[i].shape[dim] for sym, i, dim in fn.symbols}
        for step in fn.steps:
            env[step.out] = self._step(step, env, symbols)
        result = env[fn.output]
        return list(result) if isinstance(result, tuple) else [result]

    def _step(self, step: Step, env: dict[str, Any], symbols: dict[str, int]) -> Any:
        values = [self._value(env, a, symbols) for a in step.args]
        if step.op == "tuple":
            return tuple(values)
        if step.op == "item":
            return values[0][step.index]
        if step.op == "view":
            shape, dtype = step.outputs[0]
            return Tensor(values[0].buffer, tuple(self.expr(d, symbols) for d in shape), np.dtype(dtype))
        outputs = []
        for shape, dtype in step.outputs:
            t = Tensor(None, tuple(self.expr(d, symbols) for d in shape), np.dtype(dtype))
            t.buffer = self.backend.alloc(t.nbytes)
            outputs.append(t)
        self.run_kernel(step.func, values + outputs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def run_kernel(self, name: str, args: list[Tensor | int]) -> None:
        """Run TIR function ``name`` on its arguments (tensors for buffers, integers for scalars)."""
        kernel = self.plan.kernels[name]
        scope: dict[str, Any] = {}
        storage: dict[str, Any] = {}
        for param, shape, arg in zip(kernel.params, kernel.shapes, args):
            if shape is None:
                scope[param] = arg
                continue
            storage[param] = arg.buffer
            for dim, size in zip(shape, arg.shape):
                if dim.isidentifier():
                    scope[dim] = size
        for op in kernel.ops:
            if op.op == "bind":
                scope[op.name] = self.expr(op.expr, scope)
            elif op.op == "alias":
                storage[op.name] = storage[op.source]
            elif op.op == "alloc":
                storage[op.name] = self.backend.alloc(int(self.expr(op.expr, scope)) * np.dtype(op.dtype).itemsize)
            else:
                values = [storage[a[1]] if a[0] == "buffer" else np.dtype(a[1]).type(self.expr(a[2], scope))
                          for a in op.args]
                grid = tuple(int(self.expr(e, scope)) for e in op.grid)
                block = tuple(int(self.expr(e, scope)) for e in op.block)
                self.backend.launch(op.name, grid, block, int(self.expr(op.shared, scope)), values)


class OpenCLBackend:
    """pyopencl: one context (``PYOPENCL_CTX`` picks the device, else the first) and an in-order queue;
    kernels built from source with the compiler ``options`` (e.g. ``-cl-opt-disable``)."""

    def __init__(self, source: str, options: Sequence[str] = ()) -> None:
        import pyopencl as cl

        self.cl = cl
        self.context = cl.create_some_context(interactive=False)
        self.queue = cl.CommandQueue(self.context)
        self.program = cl.Program(self.context, source).build(options=list(options))
        self._kernels: dict[str, Any] = {}

    def alloc(self, nbytes: int) -> Any:
        return self.cl.Buffer(self.context, self.cl.mem_flags.READ_WRITE, max(nbytes, 4))

    def upload(self, array: np.ndarray) -> Any:
        flags = self.cl.mem_flags.READ_WRITE | self.cl.mem_flags.COPY_HOST_PTR
        return self.cl.Buffer(self.context, flags, hostbuf=array) if array.nbytes else self.alloc(0)

    def download(self, tensor: Tensor) -> np.ndarray:
        out = np.empty(tensor.shape, tensor.dtype)
        if out.nbytes:
            self.cl.enqueue_copy(self.queue, out, tensor.buffer)
        return out

    def launch(self, kernel: str, grid: tuple[int, ...], block: tuple[int, ...], shared: int, args: list[Any]) -> None:
        if shared:
            raise RuntimeError(f"{kernel}: dynamic shared memory is not supported on OpenCL")
        if kernel not in self._kernels:
            self._kernels[kernel] = self.cl.Kernel(self.program, kernel)
        k = self._kernels[kernel]
        k.set_args(*args)
        total = tuple(g * b for g, b in zip(grid, block))
        self.cl.enqueue_nd_range_kernel(self.queue, k, total, block)


class CudaBackend:
    """CuPy: kernels from a cubin compiled ahead (``cuda.py``), buffers as CuPy byte arrays."""

    def __init__(self, cubin: Path) -> None:
        import cupy

        self.cupy = cupy
        self.module = cupy.RawModule(path=str(cubin))
        self._kernels: dict[str, Any] = {}

    def alloc(self, nbytes: int) -> Any:
        return self.cupy.empty(max(nbytes, 4), self.cupy.uint8)

    def upload(self, array: np.ndarray) -> Any:
        return self.cupy.asarray(array.reshape(-1).view(np.uint8)) if array.nbytes else self.alloc(0)

    def download(self, tensor: Tensor) -> np.ndarray:
        raw = self.cupy.asnumpy(tensor.buffer[: tensor.nbytes])
        return raw.view(tensor.dtype).reshape(tensor.shape)

    def launch(self, kernel: str, grid: tuple[int, ...], block: tuple[int, ...], shared: int, args: list[Any]) -> None:
        if kernel not in self._kernels:
            self._kernels[kernel] = self.module.get_function(kernel)
        self._kernels[kernel](grid, block, tuple(args), shared_mem=shared)
