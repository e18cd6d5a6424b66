"""Dead-code elimination and pruning of unused parameters."""

from __future__ import annotations

from llmc.ir.graph import Function, Module
from llmc.ir.registry import OPS


def dce(func: Function) -> Function:
    """Remove nodes none of whose results is used, but those of ops with a side effect
    (``hw_send``). In place."""
    live = {v.name for v in func.outputs}
    kept = []
    for node in reversed(func.nodes):
        if any(v.name in live for v in node.outputs) or (node.op in OPS and OPS[node.op].side_effect):
            kept.append(node)
            live.update(v.name for v in node.inputs)
    func.nodes = kept[::-1]
    return func


def prune_params(module: Module) -> Module:
    """Drop parameters no function reads. In place."""
    used = {n.attrs["name"] for _, n in module.iter_nodes() if n.op == "param"}
    module.params = {k: p for k, p in module.params.items() if k in used}
    return module
