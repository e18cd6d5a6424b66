"""``kv-quant``: an integer KV cache (int8 or int4, per head and token, or per group of head_dim).

The frontend's programs return the cache as ``k_i`` / ``v_i`` [1, kv_heads, length, head_dim]:
in ``prefill`` the output holds only new rows; in ``decode`` it is ``concat(past_k_i, new)``
along the sequence. The pass puts a ``fake_quant`` on the new rows (every row of the prefill
output, the ``new`` operand of the decode concat), so that attention and the cache state see
exactly the values a cache storing codes and float16 scales gives back. Past rows are not
quantized again: they come from an earlier output and are already on the grid, and
re-quantizing such a row reproduces it exactly (its largest element is ``qmax * s``, so the
recomputed scale is ``s`` again).

The value that the frontend named (``k_0``) keeps its name and identity, now defined by the
``fake_quant``; the float rows are renamed, so every use reads the quantized rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmc.compiler.passes.linear import clone
from llmc.compiler.pipeline import PassContext, PipelineError, register_pass
from llmc.ir.builder import Builder
from llmc.ir.graph import Function, Module, Node, Value
from llmc.ir.registry import OPS

CACHE_OUTPUT = re.compile(r"[kv]_\d+")


@dataclass(frozen=True)
class KvQuantOptions:
    bits: int = 8
    group: int = 0  # elements of head_dim sharing a scale: 0 = the whole head (per head, per token)

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits must be 2..8, got {self.bits}")
        if self.group < 0:
            raise ValueError(f"group must be >= 0, got {self.group}")


def check_kv_quant(module: Module, options: KvQuantOptions) -> None:
    """Refuse a group that does not divide the head dimension."""
    head_dim = int(module.attrs.get("head_dim", 0))
    if options.group and (not head_dim or head_dim % options.group):
        raise PipelineError(f"pass kv-quant: group {options.group} does not divide head_dim={head_dim}")


def new_rows(func: Function) -> list[Value]:
    """The values holding the rows a call adds to the cache, one per ``k_i`` / ``v_i`` output."""
    inputs = {v.name: v for v in func.inputs}
    producers = func.producers()
    rows = []
    for out in func.outputs:
        if not CACHE_OUTPUT.fullmatch(out.name):
            continue
        past = inputs.get(f"past_{out.name}")
        if past is None:
            rows.append(out)
            continue
        node = producers.get(out.name)
        if node is None or node.op != "concat" or len(node.inputs) != 2 or node.inputs[0] is not past:
            raise PipelineError(f"pass kv-quant: @{func.name} output %{out.name} is not concat(%{past.name}, new rows)")
        rows.append(node.inputs[1])
    return rows


@register_pass("kv-quant", KvQuantOptions, check=check_kv_quant)
def kv_quant(module: Module, options: KvQuantOptions, context: PassContext) -> Module:
    """Quantize the KV cache per head and token (fake_quant on every new K/V row)."""
    out = clone(module)
    attrs = {"bits": options.bits, "group": options.group}
    count = 0
    for func in out.functions.values():
        for value in new_rows(func):
            _quantize_value(out, func, value, attrs)
            count += 1
    if not count:
        raise PipelineError(f"pass kv-quant: module '{module.name}' returns no KV cache (outputs k_i / v_i)")
    context.reports["kv-quant"] = {"bits": options.bits, "group": options.group, "values": count,
                                   "cache_bytes_per_element": _bytes_per_element(module, options)}
    return out


def _quantize_value(module: Module, func: Function, value: Value, attrs: dict[str, int]) -> None:
    """Make ``value`` the result of ``fake_quant`` applied to what its producer computed."""
    producer = func.producers().get(value.name)
    if producer is None:
        raise PipelineError(f"pass kv-quant: @{func.name} cache rows %{value.name} are a function input")
    if producer.op == "fake_quant":
        raise PipelineError(f"pass kv-quant: @{func.name} cache rows %{value.name} are already quantized")
    opdef = OPS["fake_quant"]
    if opdef.infer([value.type], opdef.with_defaults(attrs)) != [value.type]:
        raise PipelineError(f"pass kv-quant: cannot quantize %{value.name}: {value.type}")
    raw = Value(Builder(module, func).fresh(f"{value.name}_float"), value.type)
    producer.outputs = [raw if v is value else v for v in producer.outputs]
    func.nodes.insert(func.nodes.index(producer) + 1, Node("fake_quant", [raw], [value], dict(attrs)))


def _bytes_per_element(module: Module, options: KvQuantOptions) -> float:
    """Storage of one cached element: the code plus its share of a float16 scale."""
    head_dim = int(module.attrs.get("head_dim", 0)) or 1
    return options.bits / 8 + 2 / (options.group or head_dim)
