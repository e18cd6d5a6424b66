"""The verifier: structural and type rules every module must satisfy.

Messages name the function, the node (``%out = op``) and what is wrong, e.g.
``func @prefill, %5 = matmul: matmul inner dims differ: 256 vs 128``.
"""

from __future__ import annotations

from llmc.ir.graph import Function, Module, Node
from llmc.ir.registry import OPS, InferError, check_attr
from llmc.ir.types import QuantEncoding


class VerifyError(ValueError):
    """The module breaks an IR rule; the message names where."""


def _where(func: Function, node: Node | None = None) -> str:
    if node is None:
        return f"func @{func.name}"
    outs = ", ".join(f"%{v.name}" for v in node.outputs) or "(no result)"
    return f"func @{func.name}, {outs} = {node.op}"


def verify_module(module: Module) -> None:
    """Raise :class:`VerifyError` on the first broken rule."""
    if not module.functions:
        raise VerifyError(f"module '{module.name}' has no functions")
    for name, param in module.params.items():
        if name != param.name:
            raise VerifyError(f"parameter table key '{name}' does not match its name '{param.name}'")
        if param.data is not None and tuple(param.data.shape) != param.type.static_shape():
            raise VerifyError(f"parameter '{name}' data shape {param.data.shape} != type {param.type}")
        for enc in param.type.encodings:
            if isinstance(enc, QuantEncoding) and enc.min_dtype is not None and (
                    param.type.dtype.kind != "uint" or param.type.dtype.bits != enc.bits):
                raise VerifyError(f"parameter '{name}': {enc} holds unsigned {enc.bits}-bit codes, not "
                                  f"{param.type.dtype}")
    for func in module.functions.values():
        verify_function(module, func)
    verify_step_contract(module)


def verify_step_contract(module: Module) -> None:
    """A causal LM's programs (``prefill``, ``decode`` and attribute ``layers``) have the inputs and
    outputs, by name and in order, that every device feeds and reads (docs/architecture.md)."""
    if "layers" not in module.attrs or not {"prefill", "decode"} <= set(module.functions):
        return
    layers = module.attrs["layers"]
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise VerifyError(f"module '{module.name}': attribute layers must be a positive integer, got {layers!r}")
    caches = [f"{kv}_{i}" for i in range(layers) for kv in "kv"]
    step = ["input_ids", "mask", "position_ids"]
    for name, inputs in (("prefill", step), ("decode", step + [f"past_{c}" for c in caches])):
        func = module.functions[name]
        got_in, got_out = [v.name for v in func.inputs], [v.name for v in func.outputs]
        if got_in != inputs:
            raise VerifyError(f"func @{name}: inputs are {', '.join(got_in) or 'none'}; a {layers}-layer model's "
                              f"are {', '.join(inputs)}")
        if got_out != ["logits", *caches]:
            raise VerifyError(f"func @{name}: outputs are {', '.join(got_out) or 'none'}; a {layers}-layer model's "
                              f"are logits, {', '.join(caches)}")


def verify_function(module: Module, func: Function) -> None:
    defined: set[int] = set()
    names: set[str] = set()

    def define(values: list, node: Node | None) -> None:
        for v in values:
            if v.name in names:
                raise VerifyError(f"{_where(func, node)}: value %{v.name} is defined twice")
            names.add(v.name)
            defined.add(id(v))

    define(func.inputs, None)
    bound = func.symbols()
    for node in func.nodes:
        for v in node.inputs:
            if id(v) not in defined:
                raise VerifyError(f"{_where(func, node)}: operand %{v.name} is not defined before use")
        verify_node(module, func, node)
        for v in node.outputs:
            free = {s for d in v.type.shape for s in d.symbols} - bound
            if free:
                raise VerifyError(
                    f"{_where(func, node)}: result type uses dimension symbols {sorted(free)} "
                    "that no function input binds"
                )
        define(node.outputs, node)
    if not func.outputs:
        raise VerifyError(f"{_where(func)}: returns nothing")
    for v in func.outputs:
        if id(v) not in defined:
            raise VerifyError(f"{_where(func)}: returns %{v.name}, which is not defined")


def verify_node(module: Module, func: Function, node: Node) -> None:
    where = _where(func, node)
    opdef = OPS.get(node.op)
    if opdef is None:
        raise VerifyError(f"{where}: unknown op '{node.op}'")
    n = len(node.inputs)
    if n < opdef.min_inputs or (opdef.max_inputs >= 0 and n > opdef.max_inputs):
        expected = (
            str(opdef.min_inputs)
            if opdef.min_inputs == opdef.max_inputs
            else f"{opdef.min_inputs}..{'' if opdef.max_inputs < 0 else opdef.max_inputs}"
        )
        raise VerifyError(f"{where}: takes {expected} operands, got {n}")
    if len(node.outputs) != opdef.num_results:
        raise VerifyError(f"{where}: has {len(node.outputs)} results, the op defines {opdef.num_results}")
    for key, value in node.attrs.items():
        spec = opdef.attrs.get(key)
        if spec is None:
            raise VerifyError(f"{where}: unknown attribute '{key}'")
        if not check_attr(spec.kind, value):
            raise VerifyError(f"{where}: attribute '{key}' must be {spec.kind}, got {value!r}")
    for key, spec in opdef.attrs.items():
        if spec.required and key not in node.attrs:
            raise VerifyError(f"{where}: missing attribute '{key}'")
    if node.op == "param":
        param = module.params.get(node.attrs["name"])
        if param is None:
            raise VerifyError(f"{where}: no parameter named '{node.attrs['name']}'")
        if param.type != node.output.type:
            raise VerifyError(f"{where}: type {node.output.type} differs from parameter type {param.type}")
        return
    try:
        inferred = opdef.infer([v.type for v in node.inputs], opdef.with_defaults(node.attrs))
    except InferError as e:
        raise VerifyError(f"{where}: {e}") from None
    if inferred is None:
        return
    for value, expected in zip(node.outputs, inferred):
        if value.type != expected:
            raise VerifyError(f"{where}: result %{value.name} declared {value.type}, but the op gives {expected}")
