"""The reference meaning of a model split over several cards: each card's ``step`` function run
as a Kahn process, ``hw_send`` filling a slot and ``hw_recv`` waiting for it (:mod:`.ops.hw_link`).

The cards advance in turn until each finishes or waits for a slot not yet sent; the results do
not depend on that order. A step in which every unfinished card waits is a deadlock, reported
with the slots they wait for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from llmc.ir.graph import Module, Node
from llmc.ir.interpreter import InterpreterError, evaluate


def run_cluster(cards: Sequence[Module], inputs: Sequence[Mapping[str, np.ndarray]],
                func_name: str = "step") -> list[dict[str, np.ndarray]]:
    """Run ``func_name`` of every card on its ``inputs``; each card's outputs by value name."""
    if len(cards) != len(inputs):
        raise InterpreterError(f"{len(cards)} cards but {len(inputs)} input sets")
    runs = [evaluate(card, func_name, given) for card, given in zip(cards, inputs)]
    slots: dict[int, np.ndarray] = {}
    waiting: dict[int, Node] = {}  # card -> the hw_recv it waits at
    results: dict[int, dict[str, np.ndarray]] = {}
    started: set[int] = set()
    while len(results) < len(cards):
        moved = False
        for c, run in enumerate(runs):
            if c in results:
                continue
            node = waiting.get(c)
            if node is not None and node.attrs["slot"] not in slots:
                continue
            try:
                reply = None if node is None else slots[node.attrs["slot"]]
                waiting.pop(c, None)
                node, sent = next(run) if c not in started else run.send(reply)
                started.add(c)
                while True:
                    moved = True
                    if node.op == "hw_send":
                        slot = node.attrs["slot"]
                        if slot in slots:
                            raise InterpreterError(f"card {c}: %{node.outputs[0].name} = hw_send: slot {slot} "
                                                   "was already sent in this step")
                        slots[slot] = sent
                        node, sent = run.send(None)
                    elif node.attrs["slot"] in slots:
                        node, sent = run.send(slots[node.attrs["slot"]])
                    else:
                        waiting[c] = node
                        break
            except StopIteration as done:
                results[c] = done.value
                moved = True
        if not moved:
            stuck = ", ".join(f"card {c} at slot {n.attrs['slot']}" for c, n in sorted(waiting.items()))
            raise InterpreterError(f"the cards wait for slots nobody sends: {stuck}")
    return [results[c] for c in range(len(cards))]
