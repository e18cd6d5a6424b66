"""The reference interpreter: runs a function of a module on NumPy arrays.

It is the golden model of llmc: every backend and simulator is compared against it. Every
result is checked against its declared type (shape and storage dtype), so a reference
implementation that disagrees with its own type inference fails loudly.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping

import numpy as np

from llmc.ir.graph import Function, Module, Node, Value
from llmc.ir.ops.common import as_dtype
from llmc.ir.registry import OPS, RefContext
from llmc.ir.types import Dim, TensorType


class InterpreterError(RuntimeError):
    """Inputs do not fit the function, or an op failed; the message names the node."""


def bind_symbols(func: Function, inputs: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Solve the dimension symbols from the input shapes and check every input fits."""
    env: dict[str, int] = {}
    pending: list[tuple[str, Dim, int]] = []
    for v in func.inputs:
        if v.name not in inputs:
            raise InterpreterError(f"func @{func.name}: missing input %{v.name}")
        shape = np.shape(inputs[v.name])
        if len(shape) != v.type.rank:
            raise InterpreterError(f"func @{func.name}: input %{v.name} has rank {len(shape)}, expected {v.type}")
        for dim, size in zip(v.type.shape, shape):
            if len(dim.terms) == 1 and dim.terms[0][1] == 1 and len(dim.terms[0][0]) == 1:
                name = dim.terms[0][0][0]
                if env.setdefault(name, size) != size:
                    raise InterpreterError(
                        f"func @{func.name}: input %{v.name} gives {name}={size}, another input gave {env[name]}"
                    )
            else:
                pending.append((v.name, dim, size))
    for name, dim, size in pending:
        try:
            value = dim.evaluate(env)
        except KeyError as e:
            raise InterpreterError(f"func @{func.name}: cannot solve dimension symbol {e} from the inputs") from None
        if value != size:
            raise InterpreterError(f"func @{func.name}: input %{name} dim {dim} is {size}, expected {value}")
    for name, value in env.items():
        if value < 0:
            raise InterpreterError(f"func @{func.name}: dimension {name}={value} is negative")
    return env


def _check(node: Node, value: Value, array: np.ndarray, env: Mapping[str, int]) -> None:
    expected = value.type.concrete_shape(env)
    if array.shape != expected:
        raise InterpreterError(f"%{value.name} = {node.op}: produced shape {array.shape}, type says {expected}")
    if array.dtype != value.type.dtype.numpy():
        raise InterpreterError(f"%{value.name} = {node.op}: produced {array.dtype}, type says {value.type.dtype}")


Observer = Callable[[Node, list[np.ndarray], list[np.ndarray]], None]  # node, operands, results
# An alternative implementation of an op (a compiled kernel): results, or None to use the reference.
Kernel = Callable[[Node, list[np.ndarray]], "list[np.ndarray] | None"]


def run_function(
    module: Module,
    func_name: str,
    inputs: Mapping[str, np.ndarray],
    observe: Observer | None = None,
    kernels: Mapping[str, Kernel] | None = None,
) -> dict[str, np.ndarray]:
    """Run ``func_name`` on ``inputs`` (by input name); returns the outputs by value name.

    ``observe`` is called with every node, its operands and its results (for tracing and
    calibration). ``kernels`` maps op names to alternative implementations (compiled kernels run
    inside the reference program); their results are type-checked like the reference's.
    """
    steps = evaluate(module, func_name, inputs, observe, kernels)
    try:
        node, _ = next(steps)
        while True:
            if node.op == "hw_recv":
                raise InterpreterError(f"%{node.outputs[0].name} = hw_recv: slot {node.attrs['slot']} comes from "
                                       "another card; run the cards with llmc.ir.cluster.run_cluster")
            node, _ = steps.send(None)
    except StopIteration as done:
        return done.value


# What :func:`evaluate` yields: a ``hw_recv`` node (send back its rows) or a ``hw_send`` node and its rows.
Exchange = tuple[Node, "np.ndarray | None"]


def evaluate(
    module: Module,
    func_name: str,
    inputs: Mapping[str, np.ndarray],
    observe: Observer | None = None,
    kernels: Mapping[str, Kernel] | None = None,
) -> Generator[Exchange, np.ndarray | None, dict[str, np.ndarray]]:
    """:func:`run_function` as a generator that stops at the links between cards: at a
    ``hw_recv`` it yields the node and resumes with the received rows; after a ``hw_send`` it
    yields the node and the rows sent. It returns the outputs."""
    if func_name not in module.functions:
        raise InterpreterError(f"module '{module.name}' has no function @{func_name}")
    func = module.functions[func_name]
    env = bind_symbols(func, inputs)
    values: dict[str, np.ndarray] = {}
    for v in func.inputs:
        values[v.name] = as_dtype(np.asarray(inputs[v.name]), v.type.dtype)
    last_use: dict[str, int] = {}
    for i, node in enumerate(func.nodes):
        for v in node.inputs:
            last_use[v.name] = i
    keep = {v.name for v in func.outputs}
    for i, node in enumerate(func.nodes):
        args = [values[v.name] for v in node.inputs]
        if node.op == "hw_recv":
            received = yield node, None
            results = [np.asarray(received)]
        else:
            kernel = kernels.get(node.op) if kernels else None
            results = kernel(node, args) if kernel is not None else None
            if results is None:
                results = _eval(module, node, args, env)
        for value, array in zip(node.outputs, results):
            _check(node, value, array, env)
            values[value.name] = array
        if node.op == "hw_send":
            yield node, results[0]
        if observe is not None:
            observe(node, args, results)
        for v in node.inputs:
            if last_use[v.name] == i and v.name not in keep:
                values.pop(v.name, None)
    return {v.name: values[v.name] for v in func.outputs}


def _eval(module: Module, node: Node, args: list[np.ndarray], env: Mapping[str, int]) -> list[np.ndarray]:
    if node.op == "param":
        param = module.params[node.attrs["name"]]
        if param.data is None:
            raise InterpreterError(f"parameter '{param.name}' has no data (shapes-only module)")
        return [param.data]
    opdef = OPS[node.op]
    ctx = RefContext(env, [v.type for v in node.outputs])
    try:
        return opdef.ref(args, opdef.with_defaults(node.attrs), ctx)
    except (ValueError, IndexError, TypeError) as e:
        outs = ", ".join(f"%{v.name}" for v in node.outputs)
        raise InterpreterError(f"{outs} = {node.op}: {e}") from e


def zeros_for(t: TensorType, env: Mapping[str, int]) -> np.ndarray:
    """A zero tensor of type ``t`` with symbols bound by ``env``."""
    return np.zeros(t.concrete_shape(env), dtype=t.dtype.numpy())
