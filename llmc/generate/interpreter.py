"""The IR interpreter as a generation device: the golden reference every other device matches."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from llmc.errors import LlmcError
from llmc.ir.graph import Module
from llmc.ir.interpreter import Kernel, run_function


def causal_mask(new: int, past: int) -> np.ndarray:
    """Additive mask [1, 1, new, past+new]: 0 where a query may attend, -inf elsewhere."""
    rows = np.arange(new)[:, None] + past
    cols = np.arange(past + new)[None, :]
    return np.where(cols <= rows, np.float32(0.0), np.float32(-np.inf))[None, None].astype(np.float32)


def prefill_inputs(ids: Sequence[int]) -> dict[str, np.ndarray]:
    """The ``prefill`` program's inputs for a prompt: ids, causal mask and positions."""
    n = len(ids)
    return {"input_ids": np.asarray(ids, dtype=np.int64)[None], "mask": causal_mask(n, 0),
            "position_ids": np.arange(n, dtype=np.int64)[None]}


class InterpreterDevice:
    """Runs a module's ``prefill`` and ``decode`` functions in the reference interpreter,
    keeping the KV cache as NumPy arrays between calls."""

    def __init__(self, module: Module, kernels: Mapping[str, Kernel] | None = None) -> None:
        if "layers" not in module.attrs:
            raise LlmcError(f"module '{module.name}' has no attribute layers: not a causal LM imported by llmc")
        missing = {"prefill", "decode"} - set(module.functions)
        if missing:
            raise LlmcError(f"module '{module.name}' lacks function(s) {', '.join(sorted(missing))}")
        if not module.has_weights:
            raise LlmcError(f"module '{module.name}' has no weights (imported shapes-only); it cannot run")
        self.module = module
        self.kernels = kernels
        self.layers = int(module.attrs["layers"])
        self.max_position = int(module.attrs.get("max_position", 0) or 0)
        self.cache: dict[str, np.ndarray] = {}
        self.length = 0

    def reset(self) -> None:
        self.cache, self.length = {}, 0

    def _check_length(self, new: int) -> None:
        if self.max_position and self.length + new > self.max_position:
            raise LlmcError(f"sequence of {self.length + new} tokens exceeds the model's context of {self.max_position}")

    def _store(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        self.cache = {f"past_{kv}_{i}": outputs[f"{kv}_{i}"] for i in range(self.layers) for kv in "kv"}
        return outputs["logits"][0, -1]

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self.reset()
        self._check_length(len(ids))
        outputs = run_function(self.module, "prefill", prefill_inputs(ids), kernels=self.kernels)
        self.length = len(ids)
        return self._store(outputs)

    def decode(self, token: int) -> np.ndarray:
        self._check_length(1)
        outputs = run_function(self.module, "decode", kernels=self.kernels, inputs={
            "input_ids": np.asarray([[token]], dtype=np.int64),
            "mask": causal_mask(1, self.length),
            "position_ids": np.asarray([[self.length]], dtype=np.int64),
            **self.cache,
        })
        self.length += 1
        return self._store(outputs)
