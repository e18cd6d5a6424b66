"""Whether a boolean attention mask built inside a step program is the step's own causal mask,
possibly restricted to a sliding window.

``torch.onnx.export`` of a transformers model builds its mask from the cache positions and the
``attention_mask`` input: ``keys <= queries`` over keys ``0 .. S-1`` and queries ``S-L .. S-1``
(with a sliding window of ``w`` keys also ``keys > queries - w``), and-ed with ``attention_mask``
gathered at the keys. An export imported as a step model computes ``attention_mask`` from the
contract's ``mask`` (a key is attended where some query's mask is 0;
:mod:`llmc.compiler.frontend.onnx_llm`). That mask is causal, so the last query sees every key:
``attention_mask`` is all ones and any gather of it is true, and the conjunction is ``mask == 0``
(with the window, ``mask == 0`` and ``q - k < w``; the contract's ``position_ids`` are the
queries' positions ``S-L .. S-1``, so this is ``sliding_window_mask(mask, position_ids)``).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmc.compiler.passes.rewrite import Const, Graph, Var, op, scalar_constant
from llmc.ir.graph import Function, Node, Value
from llmc.ir.types import BOOL, Dim

STEP_PROGRAMS = frozenset({"step", "prefill", "decode"})
CONTRACT_MASK = "mask"  # the step's additive causal mask [1, 1, L, S] (docs/architecture.md)
CONTRACT_POSITIONS = "position_ids"  # the new tokens' positions [1, L]: S-L .. S-1

# attention_mask from the contract's mask: where any query's mask is 0, as a boolean vector
_SEEN = op("cast", op("reduce_max", op("cast", op("eq", Var("mask"), Const(value=0.0)), bind="flag"), bind="any"))


@dataclass(frozen=True)
class Ramp:
    """An integer tensor equal to ``start + i`` along ``axis`` (counted from the end) and constant
    along its other axes, which are 1; ``axis`` None: a single element, ``start``."""

    start: Dim
    axis: int | None


def contract_mask(func: Function) -> Value | None:
    """The step contract's additive mask input of ``func``, if ``func`` is a step program."""
    if func.name not in STEP_PROGRAMS:
        return None
    return next((v for v in func.inputs if v.name == CONTRACT_MASK and v.type.rank == 4 and v.type.dtype.is_float), None)


def contract_positions(func: Function) -> Value | None:
    """The step contract's ``position_ids`` input of ``func``, if ``func`` is a step program."""
    if func.name not in STEP_PROGRAMS:
        return None
    return next((v for v in func.inputs if v.name == CONTRACT_POSITIONS and v.type.rank == 2 and v.type.dtype.is_int),
                None)


def causal_window(graph: Graph, cond: Value, mask: Value) -> int | None:
    """``cond`` (true where a query attends a key) as the contract's causal ``mask`` restricted to
    the last ``window`` keys of each query: 0 for no window, None where that is not provable.
    ``cond`` must be a conjunction of bounds on ``q - k`` whose tightest lower bound is 0 (causal)
    and tightest upper bound ``window - 1`` if any, constant trues, and gathers of the
    ``attention_mask`` computed from ``mask``."""
    if cond.type.shape != mask.type.shape:
        return None
    lower, upper = [], []
    for term in _conjuncts(graph.producers, cond):
        bound = _distance_bound(graph.producers, term, mask.type.shape[-2], mask.type.shape[-1])
        if bound is not None:
            (lower if bound[0] == "lower" else upper).append(bound[1])
        elif not (_is_true(graph.producers, term) or _sees_all_keys(graph, term, mask)):
            return None
    if not lower or max(lower) != 0 or (upper and min(upper) < 0):
        return None
    return min(upper) + 1 if upper else 0


def _conjuncts(producers: dict[str, Node], value: Value) -> list[Value]:
    node = producers.get(value.name)
    if node is None or node.op != "logical_and":
        return [value]
    return [t for v in node.inputs for t in _conjuncts(producers, v)]


def _is_true(producers: dict[str, Node], value: Value) -> bool:
    return value.type.dtype == BOOL and scalar_constant(producers.get(value.name)) == 1.0


def _distance_bound(producers: dict[str, Node], value: Value, queries: Dim, keys: Dim) -> tuple[str, int] | None:
    """``value`` as a bound on ``d = q - k``, ``("lower", n)`` for ``d >= n`` or ``("upper", n)``
    for ``d <= n``: a comparison of keys ``k`` (0 .. S-1 on the last axis, plus a constant) with
    queries ``q`` (S-L .. S-1 on the axis before, or one query, plus a constant)."""
    node = producers.get(value.name)
    if node is None or node.op not in _COMPARISONS:
        return None
    strict, swapped = _COMPARISONS[node.op]
    small, large = node.inputs[::-1] if swapped else node.inputs  # small < large, or <= when not strict
    if (offset := _query_offset(producers, small, large, queries, keys)) is not None:
        return "lower", strict - offset  # k <= q + c: d >= -c; k < q + c: d >= 1 - c
    if (offset := _query_offset(producers, large, small, queries, keys)) is not None:
        return "upper", -offset - strict  # q + c <= k: d <= -c; q + c < k: d <= -c - 1
    return None


_COMPARISONS = {"le": (0, False), "lt": (1, False), "ge": (0, True), "gt": (1, True)}  # (strict, operands swapped)


def _query_offset(producers: dict[str, Node], key_value: Value, query_value: Value, queries: Dim, keys: Dim) -> int | None:
    """``c`` where ``query_value`` is the queries' positions plus ``c`` and ``key_value`` the keys'
    (both ramps; a key ramp's start is folded into ``c``), else None."""
    k, q = _ramp(producers, key_value), _ramp(producers, query_value)
    if k is None or q is None or k.axis != -1 or key_value.type.shape[-1] != keys:
        return None
    placed = q.axis == -2 and query_value.type.shape[-2] == queries or q.axis is None and queries == Dim.of(1)
    offset = q.start - k.start - (keys - queries)
    return offset.value if placed and offset.is_static else None


def _ramp(producers: dict[str, Node], value: Value) -> Ramp | None:
    """``value`` as a :class:`Ramp`: an ``iota`` of step 1, reshaped to unit axes around it, plus
    or minus single elements (an ``iota`` of one, a scalar constant)."""
    node, dtype = producers.get(value.name), value.type.dtype
    if node is None or not dtype.is_int or dtype.bits < 32:  # narrower positions could wrap
        return None
    if node.op == "iota":
        if node.attrs.get("step", 1) != 1:
            return None
        return Ramp(Dim.of(node.attrs["start"]), None if value.type.shape[0] == Dim.of(1) else -1)
    if node.op == "constant":
        number = scalar_constant(node)
        return None if number is None or value.type.numel() != Dim.of(1) else Ramp(Dim.of(int(number)), None)
    if node.op == "reshape":
        inner = _ramp(producers, node.inputs[0])
        if inner is None or inner.axis is None:
            return inner
        length = node.inputs[0].type.shape[inner.axis]
        if length == Dim.of(1):
            return Ramp(inner.start, None)
        spread = [a for a, d in enumerate(value.type.shape) if d != Dim.of(1)]
        if [value.type.shape[a] for a in spread] != [length]:
            return None
        return Ramp(inner.start, spread[0] - value.type.rank)
    if node.op == "add":
        a, b = (_ramp(producers, v) for v in node.inputs)
        if a is None or b is None or (a.axis is not None and b.axis is not None):
            return None
        return Ramp(a.start + b.start, b.axis if a.axis is None else a.axis)
    if node.op == "sub":
        a, b = (_ramp(producers, v) for v in node.inputs)
        return None if a is None or b is None or b.axis is not None else Ramp(a.start - b.start, a.axis)
    return None


def _sees_all_keys(graph: Graph, value: Value, mask: Value) -> bool:
    """``value`` is a gather of the keys some query of ``mask`` attends (both through reshapes):
    all true for a causal ``mask``."""
    node = graph.producers.get(_unreshaped(graph, value).name)
    if node is None or node.op != "gather":
        return False
    source = _unreshaped(graph, node.inputs[0])
    seen = graph.match(_SEEN, source)
    if seen is None or seen["mask"] is not mask or source.type.dtype != BOOL:
        return False
    flag = seen["flag"].type.dtype  # true must stay the largest value
    if not (flag.is_float or flag.is_int and flag.bits >= 8):
        return False
    axes = {a % mask.type.rank for a in seen.nodes["any"].attrs["axes"]}
    return mask.type.rank - 2 in axes and mask.type.rank - 1 not in axes


def _unreshaped(graph: Graph, value: Value) -> Value:
    """``value`` with the reshapes producing it stripped."""
    while (node := graph.producers.get(value.name)) is not None and node.op == "reshape":
        value = node.inputs[0]
    return value
