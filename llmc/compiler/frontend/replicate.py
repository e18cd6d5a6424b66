"""Grow a step traced with two transformer blocks to the model's full depth.

Tracing through ``torch.export`` costs time in proportion to a model's depth, while every block
of a decoder-only LM is the same program over its own weights and KV cache. A shapes-only import
therefore traces two blocks and copies the second one. Comparing block 1 with block 0 node by
node tells, for each operand of block 1, whether it is the block's own (a weight or a cache
input: renumbered in every copy), shared by all blocks (RoPE tables, the mask) or carried from
the block before (the residual stream). A step that does not fit this picture (blocks that
differ, per-block work outside the blocks, a tail that reads block 0) raises
:class:`NotReplicable`, and the caller traces the whole model instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmc.ir.graph import Function, Module, Node, Param, Value

BLOCK = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)(?:\.|$)")
TEMPLATE = 1  # the block copied; block 0 is its reference


class NotReplicable(Exception):
    """The traced step is not two identical blocks between a head and a tail."""


def block_index(path: str) -> int | None:
    """The block a module path or parameter name belongs to (``model.layers.3.mlp`` -> 3)."""
    m = BLOCK.search(path)
    return int(m[1]) if m else None


def renumber(name: str, block: int) -> str:
    """``name`` of block ``TEMPLATE`` as the same name of ``block``: parameter names carry the
    index as a path component, cache inputs and outputs as a ``_1`` suffix."""
    m = BLOCK.search(name)
    if m is not None:
        return name[:m.start(1)] + str(block) + name[m.end(1):]
    if name.endswith(f"_{TEMPLATE}"):
        return name[:-len(str(TEMPLATE))] + str(block)
    raise NotReplicable(f"'{name}' names no block")


@dataclass(frozen=True)
class Operand:
    """Where an operand of a template node comes from, in a copy for block ``i``:
    ``own`` (block i's value at ``pos``/``out``), ``carry`` (block i-1's), ``param`` or ``input``
    (block i's renumbered parameter or input ``name``) or ``shared`` (``value`` itself)."""

    kind: str
    pos: int = 0
    out: int = 0
    name: str = ""
    value: Value | None = None


class Names:
    """Fresh value names in the style of the traced ones (``linear_15``, ``7``)."""

    def __init__(self, taken: set[str]) -> None:
        self.taken = taken
        self.next: dict[str, int] = {}

    def fresh(self, hint: str) -> str:
        base = re.sub(r"_?\d+$", "", hint)
        n = self.next.get(base, 1)
        while (name := f"{base}_{n}" if base else str(n)) in self.taken:
            n += 1
        self.next[base] = n + 1
        self.taken.add(name)
        return name

    def exact(self, name: str) -> str:
        if name in self.taken:
            raise NotReplicable(f"value name %{name} is taken")
        self.taken.add(name)
        return name


class Replicator:
    """The analysis of a two-block step (:meth:`__init__`) and its growth (:meth:`run`)."""

    def __init__(self, module: Module, func: Function, origins: list[str]) -> None:
        if len(origins) != len(func.nodes):
            raise NotReplicable(f"{len(origins)} origins for {len(func.nodes)} nodes")
        self.module, self.func = module, func
        self.param_nodes = [n for n in func.nodes if n.op == "param"]
        self.param_name = {n.outputs[0].name: n.attrs["name"] for n in self.param_nodes}
        self.param_block = {v: block_index(name) for v, name in self.param_name.items()}
        body = [(n, block_index(o)) for n, o in zip(func.nodes, origins) if n.op != "param"]
        order = [b for i, (_, b) in enumerate(body) if i == 0 or b != body[i - 1][1]]
        if order not in ([None, 0, TEMPLATE, None], [None, 0, TEMPLATE]):
            raise NotReplicable(f"blocks are traced in the order {order}")
        start = next(i for i, (_, b) in enumerate(body) if b == 0)
        self.head = [n for n, _ in body[:start]]
        self.blocks = [[n for n, b in body if b == i] for i in (0, TEMPLATE)]
        self.tail = [n for n, _ in body[start + sum(map(len, self.blocks)):]]
        first, template = self.blocks
        if len(first) != len(template):
            raise NotReplicable(f"blocks 0 and {TEMPLATE} have {len(first)} and {len(template)} nodes")
        self.where = {v.name: (i, pos, k) for i, nodes in enumerate(self.blocks)
                      for pos, n in enumerate(nodes) for k, v in enumerate(n.outputs)}
        self.inputs = {v.name for v in func.inputs}
        self.operands = [self.compare(n0, n1) for n0, n1 in zip(first, template)]
        self.own_inputs = [v for v in func.inputs if any(o.kind == "input" and o.name == v.name
                                                         for ops in self.operands for o in ops)]
        own = {v.name for v in self.own_inputs} | {v for v, b in self.param_block.items() if b is not None}
        for node in self.head:
            if any(v.name in own for v in node.inputs):
                raise NotReplicable(f"%{node.outputs[0].name} before the blocks reads a block's input")

    def compare(self, n0: Node, n1: Node) -> list[Operand]:
        """How each operand of template node ``n1`` relates to block 0's ``n0``."""
        same = (n0.op, n0.attrs, [v.type for v in n0.outputs]) == (n1.op, n1.attrs, [v.type for v in n1.outputs])
        if not same or len(n0.inputs) != len(n1.inputs):
            raise NotReplicable(f"%{n0.outputs[0].name} and %{n1.outputs[0].name} differ")
        return [self.classify(n1, u0, u1) for u0, u1 in zip(n0.inputs, n1.inputs)]

    def classify(self, n1: Node, u0: Value, u1: Value) -> Operand:
        w0, w1 = self.where.get(u0.name), self.where.get(u1.name)
        if w1 is not None and w1[0] == TEMPLATE:
            if w0 != (0, *w1[1:]):
                raise NotReplicable(f"%{n1.outputs[0].name} reads %{u1.name} where block 0 reads %{u0.name}")
            return Operand("own", w1[1], w1[2])
        if self.param_block.get(u1.name) == TEMPLATE:
            return self._renumbered("param", self.param_name.get(u0.name, ""), self.param_name[u1.name])
        if u1.name in self.inputs and u1 is not u0:
            return self._renumbered("input", u0.name, u1.name)
        if u1 is u0 and self.param_block.get(u1.name) is None and w1 is None:
            return Operand("shared", value=u1)
        if w1 is not None and w0 is None and self.param_block.get(u0.name) is None:
            return Operand("carry", w1[1], w1[2])  # block 0's value where block 0 reads one from before it
        raise NotReplicable(f"%{n1.outputs[0].name} reads %{u1.name}, which is neither shared nor its block's")

    @staticmethod
    def _renumbered(kind: str, name0: str, name1: str) -> Operand:
        if renumber(name1, 0) != name0:
            raise NotReplicable(f"block 0 reads '{name0}' where block {TEMPLATE} reads '{name1}'")
        return Operand(kind, name=name1)

    def run(self, layers: int) -> Function:
        """The step with ``layers`` blocks; the new parameters go into the module."""
        func = self.func
        names = Names({v.name for v in func.inputs} | {v.name for n in func.nodes for v in n.outputs})
        own_params = [n for n in self.param_nodes if self.param_block[n.outputs[0].name] == TEMPLATE]
        params: dict[str, Value] = {}
        new_params: list[Node] = []
        inputs = {v.name: v for v in func.inputs}
        new_inputs: list[Value] = []
        for block in range(TEMPLATE + 1, layers):
            for node in own_params:
                name = renumber(node.attrs["name"], block)
                self.module.params[name] = Param(name, self.module.params[node.attrs["name"]].type, None)
                params[name] = Value(names.exact(name.replace(".", "_")), node.outputs[0].type)
                new_params.append(Node("param", [], [params[name]], {"name": name}))
            for v in self.own_inputs:
                inputs[renumber(v.name, block)] = Value(names.exact(renumber(v.name, block)), v.type)
                new_inputs.append(inputs[renumber(v.name, block)])
        values = [[n.outputs for n in nodes] for nodes in self.blocks]
        copies: list[Node] = []
        for block in range(TEMPLATE + 1, layers):
            mine: list[list[Value]] = []
            for n0, n1, operands in zip(*self.blocks, self.operands):
                ins = [self._operand(o, block, mine, values[-1], params, inputs) for o in operands]
                outs = [Value(self._copy_name(names, v0.name, v1.name, block), v1.type)
                        for v0, v1 in zip(n0.outputs, n1.outputs)]
                copies.append(Node(n1.op, ins, outs, dict(n1.attrs)))
                mine.append(outs)
            values.append(mine)
        last = {v.name: values[-1][pos][k] for pos, n in enumerate(self.blocks[1]) for k, v in enumerate(n.outputs)}
        out = Function(func.name, _insert_after(func.inputs, self.own_inputs, new_inputs))
        out.nodes = (_insert_after(self.param_nodes, own_params, new_params) + self.head + self.blocks[0]
                     + self.blocks[1] + copies + [self._retarget(n, last) for n in self.tail])
        out.outputs = self._outputs(values)
        self.module.params = _ordered_params(self.module.params, [n.attrs["name"] for n in own_params], layers)
        return out

    @staticmethod
    def _operand(o: Operand, block: int, mine: list[list[Value]], before: list[list[Value]],
                 params: dict[str, Value], inputs: dict[str, Value]) -> Value:
        if o.kind == "own":
            return mine[o.pos][o.out]
        if o.kind == "carry":
            return before[o.pos][o.out]
        if o.kind == "param":
            return params[renumber(o.name, block)]
        if o.kind == "input":
            return inputs[renumber(o.name, block)]
        assert o.value is not None
        return o.value

    @staticmethod
    def _copy_name(names: Names, name0: str, name1: str, block: int) -> str:
        """Values named per block (``k_0``, ``k_1``) stay so (``k_5``); others get fresh names."""
        if name1.endswith(f"_{TEMPLATE}") and renumber(name1, 0) == name0:
            return names.exact(renumber(name1, block))
        return names.fresh(name1)

    def _retarget(self, node: Node, last: dict[str, Value]) -> Node:
        """A node after the blocks, reading the last block where it read block 1."""
        for v in node.inputs:
            if self.where.get(v.name, (TEMPLATE,))[0] == 0 or self.param_block.get(v.name) is not None:
                raise NotReplicable(f"%{node.outputs[0].name} after the blocks reads %{v.name} of a block")
        return Node(node.op, [last.get(v.name, v) for v in node.inputs], node.outputs, node.attrs)

    def _outputs(self, values: list[list[list[Value]]]) -> list[Value]:
        """Outputs in order, the template block's (its caches) repeated for every later block."""
        template = [self.where[v.name] for v in self.func.outputs if self.where.get(v.name, (0,))[0] == TEMPLATE]
        outs: list[Value] = []
        for v in self.func.outputs:
            if self.where.get(v.name, (0,))[0] != TEMPLATE:
                outs.append(v)
            elif self.where[v.name] == template[0]:
                outs += [values[b][pos][k] for b in range(TEMPLATE, len(values)) for _, pos, k in template]
        return outs


def _insert_after(items: list, anchors: list, extra: list) -> list:
    """``items`` with ``extra`` inserted after the last of ``anchors``."""
    if not extra:
        return list(items)
    at = max(i for i, x in enumerate(items) if any(x is a for a in anchors)) + 1
    return items[:at] + extra + items[at:]


def _ordered_params(params: dict[str, Param], template: list[str], layers: int) -> dict[str, Param]:
    """Parameters in the traced order, each copied block's right after the block before."""
    copied = [renumber(t, b) for b in range(TEMPLATE + 1, layers) for t in template]
    base = [n for n in params if n not in set(copied)]
    at = max(base.index(t) for t in template) + 1
    return {n: params[n] for n in base[:at] + copied + base[at:]}


def replicate(module: Module, func: Function, origins: list[str], layers: int) -> Function:
    """``func``, traced with two blocks (``origins``: the module path of each node), grown to
    ``layers`` blocks; the new blocks' parameters (without data) are added to ``module``."""
    if layers <= TEMPLATE + 1:
        return func
    return Replicator(module, func, origins).run(layers)
