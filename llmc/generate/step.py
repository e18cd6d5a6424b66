"""A device that runs an accelerator ``step`` program (``llmc.backends.fpga.lower``) in the
interpreter: the golden model of the FPGA, with its int8 KV cache kept as NumPy arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llmc.errors import LlmcError
from llmc.generate.loop import AppendingDevice
from llmc.ir.cluster import run_cluster
from llmc.ir.graph import Module
from llmc.ir.interpreter import run_function


def empty_cache(module: Module) -> dict[str, np.ndarray]:
    """Zero-length cache inputs of the ``step`` function."""
    step = module.functions["step"]
    return {v.name: np.zeros((0, v.type.shape[1].value), dtype=v.type.dtype.numpy())
            for v in step.inputs if v.name.startswith("past_")}


def step_outputs_to_cache(module: Module, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The grown cache, keyed by the step's cache input names (output ``k_0_codes`` feeds
    ``past_k_0_codes``)."""
    return {v.name: outputs[v.name.removeprefix("past_")] for v in module.functions["step"].inputs
            if v.name.startswith("past_")}


class StepDevice(AppendingDevice):
    """Prefill and decode through the ``step`` function; logits of the last position."""

    def __init__(self, module: Module) -> None:
        if "step" not in module.functions:
            raise LlmcError(f"module '{module.name}' has no accelerator step function")
        if not module.has_weights:
            raise LlmcError(f"module '{module.name}' has no weights (compiled shapes-only); it cannot run")
        self.module = module
        self.max_position = int(module.attrs.get("max_position", 0) or 0)
        self.reset()

    def reset(self) -> None:
        self.cache = empty_cache(self.module)
        self.length = 0

    def run(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids`` to the sequence; logits [len(ids), vocab] for them."""
        if self.max_position and self.length + len(ids) > self.max_position:
            raise LlmcError(f"sequence of {self.length + len(ids)} tokens exceeds the model's context "
                            f"of {self.max_position}")
        inputs = {"input_ids": np.asarray(ids, dtype=np.int32),
                  "position_ids": np.arange(self.length, self.length + len(ids), dtype=np.int32), **self.cache}
        outputs = run_function(self.module, "step", inputs)
        self.cache = step_outputs_to_cache(self.module, outputs)
        self.length += len(ids)
        return outputs["logits"]


class ClusterStepDevice(AppendingDevice):
    """The cards' ``step`` functions of a model split over several cards, run as one cluster
    (:func:`llmc.ir.cluster.run_cluster`): the golden model of the cards' ISS and C-simulation."""

    def __init__(self, cards: Sequence[Module]) -> None:
        if not all(card.has_weights for card in cards):
            raise LlmcError("a card's module has no weights (compiled shapes-only); it cannot run")
        self.cards = list(cards)
        self.reset()

    def reset(self) -> None:
        self.caches = [empty_cache(card) for card in self.cards]
        self.length = 0

    def run(self, ids: Sequence[int]) -> np.ndarray:
        """Append ``ids``; their logits [len(ids), vocab] from the card that computes them."""
        positions = np.arange(self.length, self.length + len(ids), dtype=np.int32)
        inputs = []
        for card, cache in zip(self.cards, self.caches):
            names = {v.name for v in card.functions["step"].inputs}
            given = {"position_ids": positions, **cache}
            if "input_ids" in names:
                given["input_ids"] = np.asarray(ids, dtype=np.int32)
            inputs.append(given)
        outputs = run_cluster(self.cards, inputs)
        self.caches = [step_outputs_to_cache(card, out) for card, out in zip(self.cards, outputs)]
        self.length += len(ids)
        return next(out["logits"] for out in outputs if "logits" in out)
