"""A device that runs an accelerator ``step`` program (``llmc.backends.fpga.lower``) in the
interpreter: the golden model of the FPGA, with its int8 KV cache kept as NumPy arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from llmc.errors import LlmcError
from llmc.generate.loop import AppendingDevice
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
