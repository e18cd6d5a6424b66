"""A lowered model split over several cards: one ``step`` module per card, joined by
``hw_send``/``hw_recv`` (:mod:`llmc.ir.ops.hw_link`).

- **pipeline**: consecutive decoder blocks per card, balanced by weight bytes; the residual
  stream crosses at each cut (card 0 embeds, the last card computes the logits);
- **tensor** (as DFX): every block on every card, attention heads and MLP columns split as evenly
  as whole units allow (:class:`Shard`). A matrix whose input is whole (q, k, v, gate, up) keeps its
  card's share of its rows; one whose input
  is split (o, down) keeps the matching columns and yields a partial sum, which every card sends
  and then adds up in card order, so all cards hold the same residual stream. Card 0 embeds (and
  sends the rows) and computes the logits; norms run on every card.

The split modules are the reference of the cluster (:func:`llmc.ir.cluster.run_cluster`); the
ISS and the C-simulation of the compiled cards are checked against them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.compiler.passes.cleanup import dce, prune_params
from llmc.errors import LlmcError
from llmc.ir.graph import Function, Module, Node, Param, Value
from llmc.ir.registry import OPS
from llmc.ir.types import Dim, TensorType

PARALLEL = ("pipeline", "tensor")
ELEMENTWISE = ("hw_rope", "hw_act", "hw_mul", "hw_scale", "hw_quant8", "concat", "hw_rms_norm")


def split(hw: Module, cards: int, parallel: str) -> list[Module]:
    """The card modules of ``hw`` (a lowered module) split over ``cards`` cards."""
    if parallel not in PARALLEL:
        raise LlmcError(f"unknown split '{parallel}': choose {' or '.join(PARALLEL)}")
    if cards < 2:
        raise LlmcError(f"a split needs at least 2 cards, got {cards}")
    step = hw.functions["step"]
    if any(n.op in ("hw_route", "hw_expert_matmul") for n in step.nodes) and parallel == "tensor":
        raise LlmcError(f"{hw.name}: a tensor split of mixture-of-experts layers is not supported; "
                        "use --parallel pipeline")
    modules = pipeline_split(hw, cards) if parallel == "pipeline" else tensor_split(hw, cards)
    return _drop_unreceived(modules)


def _drop_unreceived(modules: list[Module]) -> list[Module]:
    """Without the sends no card receives (a card that does not compute the logits skips the last
    block's sum), and what only they used."""
    received = {n.attrs["slot"] for m in modules for n in m.functions["step"].nodes if n.op == "hw_recv"}
    for m in modules:
        step = m.functions["step"]
        step.nodes = [n for n in step.nodes if n.op != "hw_send" or n.attrs["slot"] in received]
        dce(step)
        prune_params(m)
    return modules


# --- pipeline -------------------------------------------------------------------------------------
def pipeline_split(hw: Module, cards: int) -> list[Module]:
    step = hw.functions["step"]
    cuts = _balanced_cuts(hw, step, cards)
    bounds = [0, *cuts, len(step.nodes)]
    crossing = [_crossing(step, cut)[0] for cut in cuts]
    out = []
    for c in range(cards):
        builder = _CardBuilder(hw, c, cards, "pipeline")
        positions = builder.positions()
        if c > 0:
            v = crossing[c - 1]
            builder.emit("hw_recv", [positions], [v.name], {"slot": c - 1, "cols": v.type.shape[1].value})
        for node in step.nodes[bounds[c]:bounds[c + 1]]:
            if node.op != "param":
                builder.copy(node)
        if c < cards - 1:
            v = crossing[c]
            builder.emit("hw_send", [builder.values[v.name]], [f"{v.name}_sent"], {"slot": c})
        out.append(builder.finish())
    return out


def _crossing(step: Function, cut: int) -> list[Value]:
    """Activation values made before node ``cut`` and used from it on (parameters and the
    function's inputs are available to every card)."""
    made = {v.name: v for n in step.nodes[:cut] if n.op != "param" for v in n.outputs}
    used = {v.name for n in step.nodes[cut:] for v in n.inputs}
    return [v for name, v in made.items() if name in used]


def _balanced_cuts(hw: Module, step: Function, cards: int) -> list[int]:
    """Node indices before a norm where exactly one activation (the residual stream) crosses
    (between blocks, or between a block's attention and its MLP), chosen so that the cards'
    weight bytes are as even as the cuts allow."""
    producers = step.producers()
    weight = [sum(_param_bytes(hw, producers[v.name]) for v in n.inputs if producers.get(v.name) is not None
                  and producers[v.name].op == "param") if n.op != "param" else 0 for n in step.nodes]
    candidates = [i for i in range(1, len(step.nodes)) if step.nodes[i].op in ("hw_rms_norm", "hw_layer_norm")
                  and len(_crossing(step, i)) == 1]
    total = sum(weight)
    cumulative = np.cumsum([0, *weight])
    cuts: list[int] = []
    for k in range(1, cards):
        left = [i for i in candidates if not cuts or i > cuts[-1]]
        if len(left) < cards - k:
            raise LlmcError(f"{hw.name}: the program has {len(candidates)} places to cut (before a norm, where only "
                            f"the residual stream crosses): it cannot be split over {cards} cards")
        usable = left[:len(left) - (cards - 1 - k)]
        cuts.append(min(usable, key=lambda i: abs(cumulative[i] - total * k / cards)))
    return cuts


def _param_bytes(hw: Module, node: Node) -> int:
    p = hw.params[node.attrs["name"]]
    return p.type.numel().value * p.type.dtype.bits // 8


# --- tensor ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """A value split by columns in whole units of ``unit`` columns (a head, a scale group): its
    ``full // unit`` units dealt to the cards as evenly as they go, the last cards taking one more
    (card 0 also holds the embedding and the logits' matrix)."""

    full: int
    cards: int
    unit: int

    def columns(self, card: int) -> slice:
        base, extra = divmod(self.full // self.unit, self.cards)
        first_more = self.cards - extra  # the first card that takes base + 1 units
        start = card * base + max(0, card - first_more)
        return slice(start * self.unit, (start + base + (card >= first_more)) * self.unit)

    def width(self, card: int) -> int:
        columns = self.columns(card)
        return columns.stop - columns.start

    def per(self, columns: int) -> Shard:
        """The same split of a value with one column per ``columns`` of this one (scales per group)."""
        return Shard(self.full // columns, self.cards, self.unit // columns)


def tensor_split(hw: Module, cards: int) -> list[Module]:
    step = hw.functions["step"]
    shards = _shards(hw, step, cards)
    out = []
    for c in range(cards):
        builder = _CardBuilder(hw, c, cards, "tensor")
        slot = 0
        positions = builder.positions()
        for node in step.nodes:
            if node.op == "param":
                continue
            if node.op == "hw_embed":  # card 0 embeds and sends the rows; every card, card 0 too, receives them
                name, cols = node.outputs[0].name, node.outputs[0].type.shape[1].value
                if c == 0:  # (receiving its own rows keeps card 0 in step with the others)
                    rows = builder.copy(node, rename=f"{name}_embedded")
                    builder.emit("hw_send", [rows], [f"{name}_sent"], {"slot": slot})
                builder.emit("hw_recv", [positions], [name], {"slot": slot, "cols": cols})
                slot += 1
            elif node.op == "hw_matmul" and shards.get(node.inputs[0].name) is not None:
                _partial_sum(builder, node, shards[node.inputs[0].name], positions, slot)
                slot += cards
            else:
                builder.copy(node, shards)
        out.append(builder.finish(logits=c == 0))
    return out


def _shards(hw: Module, step: Function, cards: int) -> dict[str, Shard | None]:
    """Which values are split by columns (a Shard) and which every card holds whole (None)."""
    users = step.users()
    shard: dict[str, Shard | None] = {v.name: None for v in step.inputs}
    for node in step.nodes:
        if node.op == "param":
            continue
        where = f"{hw.name}: %{node.outputs[0].name} = {node.op}"
        ins = [shard.get(v.name) for v in node.inputs]
        split_in = [x for x in ins if x is not None]
        outs: list[Shard | None] = [None] * len(node.outputs)
        if node.op == "hw_matmul":
            logits = any(u.op == "hw_to_float" for u in users.get(node.outputs[0].name, []))
            if not split_in and not logits:  # whole input: this card's rows
                full = node.outputs[0].type.shape[1].value
                outs = [Shard(full, cards, _unit(hw, node, users, full, cards))]
        elif node.op == "hw_attention":
            if ins[0] is None or ins[1] is None:
                raise LlmcError(f"{where}: queries and keys must both be split by heads")
            outs = [ins[0]]
        elif node.op == "concat" and split_in:  # the past cache holds this card's heads
            shard[node.inputs[0].name] = outs[0] = ins[1]
        elif node.op == "hw_quant8" and split_in:
            outs = [split_in[0], split_in[0].per(node.attrs["group"])]
        elif node.op in ELEMENTWISE and split_in:
            if node.op == "hw_rms_norm" and not node.attrs.get("group", 0):
                raise LlmcError(f"{where}: a norm over a split row")
            outs = [split_in[0]]
        elif split_in:
            raise LlmcError(f"{where}: no tensor split of this op over split columns")
        for v, x in zip(node.outputs, outs):
            if x is not None and (x.full % x.unit or x.full // x.unit < cards):
                raise LlmcError(f"{where}: {x.full} columns in units of {x.unit} do not split over {cards} cards")
            shard[v.name] = x
    return shard


def _unit(hw: Module, node: Node, users: dict[str, list[Node]], full: int, cards: int) -> int:
    """The columns a card takes whole of a matrix's split output: what the split value reaches
    first decides: the queries of a head group (a KV head's queries), a KV head, or the scale
    group of the matrix that reads it (with one scale per row: 64, 32 or 16 columns, the widest
    that gives every card some; 16 keeps N:M blocks whole)."""
    frontier = [node.outputs[0].name]
    seen: set[str] = set()
    while frontier:
        name = frontier.pop()
        for user in users.get(name, []):
            if user.op == "hw_attention":
                a = user.attrs
                index = [v.name for v in user.inputs].index(name)
                return a["head_dim"] * (a["heads"] // a["kv_heads"] if index == 0 else 1)
            if user.op == "hw_matmul":
                k, group = user.inputs[0].type.shape[1].value, user.attrs["group"]
                if group < k:
                    return group
                return next((u for u in (64, 32, 16) if full % u == 0 and full // u >= cards), 64)
            if user.op in ELEMENTWISE and user.outputs[0].name not in seen:
                seen.add(user.outputs[0].name)
                frontier += [v.name for v in user.outputs]
    raise LlmcError(f"{hw.name}: %{node.outputs[0].name} = hw_matmul: its split output reaches no attention or "
                    "matrix; no tensor split")


def _partial_sum(builder: _CardBuilder, node: Node, shard: Shard, positions: Value, first_slot: int) -> None:
    """A matrix over split columns: this card's partial product, sent, and the partials of every
    card added in card order (the same sum on every card)."""
    name, cols = node.outputs[0].name, node.outputs[0].type.shape[1].value
    part = builder.copy(node, row_split=shard, rename=f"{name}_part{builder.card}")
    builder.emit("hw_send", [part], [f"{name}_sent{builder.card}"], {"slot": first_slot + builder.card})
    total: Value | None = None
    for c in range(builder.cards):
        term = part if c == builder.card else builder.emit(
            "hw_recv", [positions], [f"{name}_part{c}"], {"slot": first_slot + c, "cols": cols})
        last = c == builder.cards - 1
        total = term if total is None else builder.emit("hw_add", [total, term], [name if last else f"{name}_sum{c}"])
    assert total is not None and total.name == name


# --- building a card's module ---------------------------------------------------------------------
class _CardBuilder:
    def __init__(self, hw: Module, card: int, cards: int, parallel: str) -> None:
        self.hw, self.card, self.cards, self.parallel = hw, card, cards, parallel
        self.step = hw.functions["step"]
        self.producers = self.step.producers()
        self.values: dict[str, Value] = {}
        self.inputs: dict[str, Value] = {}
        self.nodes: list[Node] = []
        self.params: dict[str, Param] = {}
        self.slices: dict[str, tuple[slice | None, slice | None]] = {}

    def emit(self, op: str, inputs: list[Value], names: list[str], attrs: dict | None = None) -> Value:
        attrs = dict(attrs or {})
        types = OPS[op].infer([v.type for v in inputs], OPS[op].with_defaults(attrs))
        outs = [Value(n, t) for n, t in zip(names, types)]
        self.nodes.append(Node(op, list(inputs), outs, attrs))
        for v in outs:
            self.values[v.name] = v
        return outs[0]

    def copy(self, node: Node, shards: dict[str, Shard | None] | None = None, row_split: Shard | None = None,
             rename: str | None = None) -> Value:
        """``node`` on this card: its operands as this card holds them, weights sliced to its share."""
        shards = shards or {}
        attrs = dict(node.attrs)
        out_shard = shards.get(node.outputs[0].name) if node.op != "hw_matmul" or row_split is None else None
        ins: list[Value] = []
        for i, v in enumerate(node.inputs):
            producer = self.producers.get(v.name)
            if producer is not None and producer.op == "param":
                ins.append(self._param(node, i, producer, out_shard, row_split))
            else:
                ins.append(self.operand(v, shards))
        if node.op == "hw_matmul" and row_split is not None:
            k, width = node.inputs[0].type.shape[1].value, row_split.width(self.card)
            if attrs["group"] == k:
                attrs["group"] = width
            elif width % attrs["group"]:
                raise LlmcError(f"{self.hw.name}: %{node.outputs[0].name}: {width} columns per card "
                                f"are not whole groups of {attrs['group']}")
            if attrs.get("has_bias") and self.card:  # the bias is added once, by card 0
                attrs["has_bias"] = False
                ins = ins[:-1]
        if node.op == "hw_attention" and out_shard is not None:  # this card's heads
            attrs["heads"] = out_shard.width(self.card) // attrs["head_dim"]
            attrs["kv_heads"] = ins[1].type.shape[1].value // attrs["head_dim"]
        names = [rename or node.outputs[0].name] + [v.name for v in node.outputs[1:]]
        return self.emit(node.op, ins, names, attrs)

    def positions(self) -> Value:
        """The step's ``position_ids`` input (its length is the row count of a received value)."""
        return self.operand(next(v for v in self.step.inputs if v.name == "position_ids"), {})

    def operand(self, v: Value, shards: dict[str, Shard | None]) -> Value:
        if v.name in self.values:
            return self.values[v.name]
        if v.name not in self.inputs:  # a function input: past caches hold this card's heads
            shard = shards.get(v.name)
            t = v.type
            if shard is not None:
                t = TensorType((t.shape[0], Dim.of(shard.width(self.card))), t.dtype)
            self.inputs[v.name] = Value(v.name, t)
        return self.inputs[v.name]

    def _param(self, node: Node, index: int, producer: Node, out_shard: Shard | None, row_split: Shard | None) -> Value:
        """The weight operand ``index`` of ``node``, sliced to this card's share."""
        name = producer.attrs["name"]
        param = self.hw.params[name]
        rows, cols = self._slices(node, index, param, out_shard, row_split)
        if name in self.params:
            if self.slices[name] != (rows, cols):
                raise LlmcError(f"{self.hw.name}: parameter '{name}' would be split two ways")
            return self.values[producer.outputs[0].name]
        shape = list(param.type.static_shape())
        data = param.data
        if rows is not None:
            shape[0] = rows.stop - rows.start
            data = None if data is None else data[rows]
        if cols is not None:
            shape[1] = cols.stop - cols.start
            data = None if data is None else data[:, cols]
        self.slices[name] = (rows, cols)
        self.params[name] = Param(name, TensorType(tuple(Dim.of(d) for d in shape), param.type.dtype),
                                  None if data is None else np.ascontiguousarray(data))
        value = Value(producer.outputs[0].name, self.params[name].type)
        self.nodes.append(Node("param", [], [value], dict(producer.attrs)))
        self.values[value.name] = value
        return value

    def _slices(self, node: Node, index: int, param: Param, out_shard: Shard | None,
                row_split: Shard | None) -> tuple[slice | None, slice | None]:
        """This card's rows and columns of a weight (None: all of them)."""
        if node.op == "hw_matmul" and out_shard is not None:  # output columns split: the matrix's rows
            return out_shard.columns(self.card), None
        if node.op == "hw_matmul" and row_split is not None and param.type.rank == 2:  # input split: columns
            width = param.type.shape[1].value
            if index == 1:
                return None, row_split.columns(self.card)
            k = node.inputs[0].type.shape[1].value
            return None, (None if width == 1 else row_split.per(k // width).columns(self.card))
        if node.op in ("hw_rms_norm", "hw_scale") and out_shard is not None and \
                param.type.shape[0].value == out_shard.full:  # a vector over the split columns
            return out_shard.columns(self.card), None
        return None, None

    def finish(self, logits: bool = True) -> Module:
        """The card's module: its nodes, the inputs they read, the outputs it makes (logits when
        ``logits`` and this card computes them), unused nodes removed."""
        outputs = [self.values[v.name] for v in self.step.outputs if v.name in self.values
                   and (logits or v.name != "logits")]
        func = dce(Function("step", [], list(self.nodes), outputs))
        used = {v.name for n in func.nodes for v in n.inputs}
        func.inputs = [self.inputs[v.name] for v in self.step.inputs if v.name in used or v.name == "position_ids"]
        func.nodes.sort(key=lambda n: n.op != "param")  # stable: parameters first, then the program
        params = {n.attrs["name"]: self.params[n.attrs["name"]] for n in func.nodes if n.op == "param"}
        attrs = dict(self.hw.attrs, card=self.card, cards=self.cards, parallel=self.parallel)
        return Module(f"{self.hw.name}.card{self.card}", attrs, params, {"step": func})
