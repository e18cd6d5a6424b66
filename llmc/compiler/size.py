"""Storage accounting: the true bits per weight of the linear layers, every piece of metadata counted.

A linear layer's weight operand is traced back through weight-side ops (``dequantize``,
``dequantize_min``, ``cast``, ``concat``, ``gather``, ``add``) to the parameters that store it. Each parameter costs
its stored bits:

- dense: elements x dtype bits;
- ``#sparse<N:M>``: the N kept values of every M, plus ceil(log2 C(M, N)) index bits per group;
- ``#sparse<block=1,density=d>`` (unstructured side matrices): per non-zero, its value and a
  ceil(log2 K) column index, plus a 32-bit row pointer per row.

Bits per weight = stored bits / logical weights, where the logical weights are N x K of every
linear layer whose weight is not only a sparse side matrix (an outlier path adds storage, not
weights).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmc.ir.graph import Function, Module, Param
from llmc.ir.types import SparseEncoding

WEIGHT_SIDE = {"dequantize", "dequantize_min", "cast", "concat", "gather", "add", "mul", "param", "reshape", "transpose"}


def param_bits(param: Param) -> int:
    """Stored bits of one parameter, by its type and encodings."""
    shape = param.type.static_shape()
    numel = math.prod(shape)
    bits = param.type.dtype.bits
    for enc in param.type.encodings:
        if isinstance(enc, SparseEncoding) and enc.m:
            groups = numel // enc.m
            return groups * (enc.n * bits + math.ceil(math.log2(math.comb(enc.m, enc.n))))
        if isinstance(enc, SparseEncoding):
            nnz = round(numel * enc.density)
            k = shape[-1] if shape else 1
            rows = numel // max(k, 1)
            return nnz * (bits + max(1, math.ceil(math.log2(max(k, 2))))) + 32 * (rows + 1)
    return numel * bits


def is_side_matrix(param: Param) -> bool:
    return any(isinstance(e, SparseEncoding) and not e.m for e in param.type.encodings) and param.type.dtype.is_float


def _weight_params(func: Function, value_name: str) -> set[str]:
    producers = func.producers()
    found: set[str] = set()
    stack = [value_name]
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.op not in WEIGHT_SIDE:
            continue
        if node.op == "param":
            found.add(node.attrs["name"])
        stack.extend(v.name for v in node.inputs)
    return found


@dataclass(frozen=True)
class WeightStorage:
    weights: int  # logical linear weights
    bits: int  # stored bits, all metadata included
    layers: int

    @property
    def bits_per_weight(self) -> float:
        return self.bits / self.weights if self.weights else 0.0


def linear_storage(module: Module, include_head: bool = False) -> WeightStorage:
    """Storage of the linear layers (the output head excluded unless asked, as usual)."""
    embedded: set[str] = set()
    for func in module.functions.values():
        params = {n.outputs[0].name: n.attrs["name"] for n in func.nodes if n.op == "param"}
        embedded |= {params[n.inputs[0].name] for n in func.nodes if n.op == "embedding" and n.inputs[0].name in params}
    layers: dict[frozenset[str], int] = {}
    for func in module.functions.values():
        for node in func.nodes:
            if node.op not in ("linear", "qlinear"):
                continue
            weight = node.inputs[1] if node.op == "linear" else node.inputs[2]
            names = set(_weight_params(func, weight.name))
            if node.op == "qlinear":
                names |= _weight_params(func, node.inputs[3].name)
            if not names or (not include_head and (names & embedded or any("lm_head" in n for n in names))):
                continue
            n, k = (d.value for d in weight.type.shape)
            side = all(is_side_matrix(module.params[p]) for p in names)
            layers[frozenset(names)] = 0 if side else n * k
    stored = set().union(*layers) if layers else set()
    return WeightStorage(sum(layers.values()), sum(param_bits(module.params[p]) for p in stored),
                         sum(1 for w in layers.values() if w))


def bits_per_weight(module: Module) -> float:
    return linear_storage(module).bits_per_weight
