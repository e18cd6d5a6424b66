"""A compiled model as a callable module and a generation device (NumPy only; no TVM needed here).

:class:`CompiledModel` runs the lowered functions (``prefill``, ``decode``) through an
:class:`Executor`: the Relax VM (``compile.py``) or a kernel plan (``launch.py``). Weights are
uploaded once; between calls the KV cache stays on the device as the functions' outputs (output
``k_0`` is the next call's input ``past_k_0``). It implements the generation loop's ``Device``
(``reset``, ``prefill``, ``decode``), so ``Model.stream(device=...)`` and ``llmc run --tvm``
use the same loop and sampling as the interpreter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from llmc.backends.tvm.launch import Backend, Plan, Runner
from llmc.errors import LlmcError
from llmc.generate.interpreter import causal_mask, prefill_inputs


@dataclass(frozen=True)
class Signature:
    """What a lowered function takes (inputs with their NumPy dtypes, then weight keys) and returns."""

    inputs: tuple[str, ...]
    dtypes: tuple[str, ...]
    weights: tuple[str, ...]
    outputs: tuple[str, ...]


class Executor(Protocol):
    def upload(self, array: np.ndarray) -> Any: ...

    def download(self, value: Any) -> np.ndarray: ...

    def call(self, function: str, args: list[Any]) -> list[Any]: ...


class PlanExecutor:
    """Runs a kernel plan on a backend (OpenCL through pyopencl, CUDA cubins through CuPy)."""

    def __init__(self, plan: Plan, backend: Backend) -> None:
        self.runner = Runner(plan, backend)

    def upload(self, array: np.ndarray) -> Any:
        return self.runner.tensor(array)

    def download(self, value: Any) -> np.ndarray:
        return self.runner.numpy(value)

    def call(self, function: str, args: list[Any]) -> list[Any]:
        return self.runner.call(function, args)


class CompiledModel:
    """Functions of a compiled model: ``model("decode", input_ids=..., ...)`` returns the outputs by
    name as NumPy arrays; as a generation device it keeps the KV cache on the target."""

    def __init__(self, name: str, target: str, executor: Executor, signatures: dict[str, Signature],
                 weights: dict[str, np.ndarray], max_position: int = 0) -> None:
        self.name, self.target, self.executor, self.signatures = name, target, executor, signatures
        self.max_position = max_position
        self.weights = {k: executor.upload(np.ascontiguousarray(v)) for k, v in weights.items()}
        self.cache: dict[str, Any] = {}
        self.length = 0

    def run(self, function: str, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run ``function`` on inputs (NumPy arrays or device values); outputs stay on the device."""
        sig = self.signatures.get(function)
        if sig is None:
            raise LlmcError(f"compiled model '{self.name}' has no function {function} ({', '.join(self.signatures)})")
        missing = [n for n in sig.inputs if n not in inputs]
        if missing:
            raise LlmcError(f"{function}: missing input(s) {', '.join(missing)}")
        args = [inputs[n] if not isinstance(inputs[n], np.ndarray) and not np.isscalar(inputs[n])
                else self.executor.upload(np.ascontiguousarray(inputs[n], dtype=d))
                for n, d in zip(sig.inputs, sig.dtypes)]
        outputs = self.executor.call(function, args + [self.weights[k] for k in sig.weights])
        return dict(zip(sig.outputs, outputs))

    def __call__(self, function: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {k: self.executor.download(v) for k, v in self.run(function, inputs).items()}

    # -- the generation device ----------------------------------------------------------------
    def reset(self) -> None:
        self.cache, self.length = {}, 0

    def _check_length(self, new: int) -> None:
        if self.max_position and self.length + new > self.max_position:
            raise LlmcError(f"sequence of {self.length + new} tokens exceeds the model's context of {self.max_position}")

    def _step(self, function: str, inputs: dict[str, Any], new: int) -> np.ndarray:
        self._check_length(new)
        outputs = self.run(function, inputs)
        self.cache = {name: outputs[name.removeprefix("past_")] for name in self.signatures["decode"].inputs
                      if name.startswith("past_")}
        self.length += new
        return self.executor.download(outputs["logits"])[0, -1]

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self.reset()
        return self._step("prefill", prefill_inputs(ids), len(ids))

    def decode(self, token: int) -> np.ndarray:
        if not self.cache:
            raise LlmcError("decode before prefill: the KV cache is empty")
        inputs = {"input_ids": np.asarray([[token]], dtype=np.int64), "mask": causal_mask(1, self.length),
                  "position_ids": np.asarray([[self.length]], dtype=np.int64), **self.cache}
        return self._step("decode", inputs, 1)


def save_compiled(folder: Path, name: str, max_position: int, signatures: dict[str, Signature],
                  weights: dict[str, np.ndarray]) -> None:
    """``model.json`` (signatures, context) and ``weights.npz``, beside a plan saved as ``plan.json``."""
    meta = {"name": name, "max_position": max_position, "signatures": {k: asdict(v) for k, v in signatures.items()}}
    (folder / "model.json").write_text(json.dumps(meta, indent=1))
    np.savez(folder / "weights.npz", **weights)


def load_compiled(folder: Path, backend: Backend, target: str) -> CompiledModel:
    """A model saved by :func:`save_compiled` with its plan (``plan.json``), on ``backend``."""
    meta = json.loads((folder / "model.json").read_text())
    signatures = {k: Signature(*(tuple(v[f]) for f in ("inputs", "dtypes", "weights", "outputs")))
                  for k, v in meta["signatures"].items()}
    with np.load(folder / "weights.npz") as data:
        weights = {k: data[k] for k in data.files}
    executor = PlanExecutor(Plan.load(folder / "plan.json"), backend)
    return CompiledModel(meta["name"], target, executor, signatures, weights, meta["max_position"])
