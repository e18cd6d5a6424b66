"""The generation loop shared by every device: prefill, then decode with sampling and stop tokens.

Needs only NumPy. A device is anything with ``prefill(ids) -> logits`` and
``decode(token) -> logits`` that keeps its own KV cache (the interpreter, the instruction-set
simulator, a TVM module or a card).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

SAMPLERS = ("greedy", "top-k", "top-p")


class Device(Protocol):
    def reset(self) -> None:
        """Forget the KV cache."""

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        """Run the prompt; return the logits of its last position, shape [vocab]."""

    def decode(self, token: int) -> np.ndarray:
        """Append one token; return its logits, shape [vocab]."""


class AppendingDevice:
    """Prefill and decode for a device whose ``run(ids)`` appends tokens to its cache and returns their
    logits [len(ids), vocab] (the accelerator's step program, its simulators and the card)."""

    def reset(self) -> None:
        raise NotImplementedError

    def run(self, ids: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        self.reset()
        return self.run(ids)[-1]

    def decode(self, token: int) -> np.ndarray:
        return self.run([token])[-1]


class TimedDevice(Device, Protocol):
    """A device that reports the seconds of its last call: modelled by a simulator, measured on a card."""

    last_seconds: float


@dataclass(frozen=True)
class SamplingOptions:
    """``greedy`` takes the arg-max; ``top-k`` samples among the ``k`` likeliest; ``top-p`` from the
    smallest set whose probability reaches ``p``. Sampling is seeded and reproducible."""

    method: str = "greedy"
    top_k: int = 40
    top_p: float = 0.9
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in SAMPLERS:
            raise ValueError(f"unknown sampling method '{self.method}' (choose from {', '.join(SAMPLERS)})")
        if self.top_k < 1:
            raise ValueError("top-k must be at least 1")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top-p must be in (0, 1]")
        if not math.isfinite(self.temperature) or self.temperature <= 0.0:
            raise ValueError("temperature must be a positive finite number")


def sample_token(logits: np.ndarray, options: SamplingOptions, rng: np.random.Generator) -> int:
    logits = np.asarray(logits, dtype=np.float64)
    if options.method == "greedy":
        return int(np.argmax(logits))
    scaled = logits / options.temperature
    order = np.argsort(-scaled, kind="stable")
    probs = np.exp(scaled[order] - scaled[order[0]])
    probs /= probs.sum()
    if options.method == "top-k":
        keep = min(options.top_k, len(order))
    else:
        keep = int(np.searchsorted(np.cumsum(probs), options.top_p) + 1)
    kept = probs[:keep] / probs[:keep].sum()
    return int(order[rng.choice(keep, p=kept)])


@dataclass
class Generation:
    """Generated token ids (prompt excluded) and per-step seconds as the device reports them."""

    tokens: list[int] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)

    @staticmethod
    def collect(stream: Iterator[tuple[int, float]]) -> Generation:
        """All of a ``(token, seconds)`` stream."""
        out = Generation()
        for token, seconds in stream:
            out.tokens.append(token)
            out.step_seconds.append(seconds)
        return out


def generate_stream(
    device: Device,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    options: SamplingOptions = SamplingOptions(),
    stop_ids: Sequence[int] = (),
    clock: Callable[[], float] | None = None,
) -> Iterator[tuple[int, float]]:
    """Yield ``(token, seconds)`` for each new token; stops after a stop token or the limit."""
    import time

    clock = clock or time.perf_counter
    if not prompt_ids:
        raise ValueError("the prompt is empty")
    rng = np.random.default_rng(options.seed)
    device.reset()
    start = clock()
    logits = device.prefill(list(prompt_ids))
    for _ in range(max_new_tokens):
        token = sample_token(logits, options, rng)
        yield token, clock() - start
        if token in stop_ids:
            return
        start = clock()
        logits = device.decode(token)


class ReportedTime:
    """A device that reports ``last_seconds`` for each call (modelled by a simulator, measured around
    the kernel on a card), wrapped so that ``generate_stream(timed, ..., clock=timed.clock)`` yields
    those seconds per token instead of the host's wall time."""

    def __init__(self, device: TimedDevice) -> None:
        self.device = device
        self.elapsed = 0.0

    def clock(self) -> float:
        return self.elapsed

    def reset(self) -> None:
        self.device.reset()

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        return self._timed(self.device.prefill(ids))

    def decode(self, token: int) -> np.ndarray:
        return self._timed(self.device.decode(token))

    def _timed(self, logits: np.ndarray) -> np.ndarray:
        self.elapsed += float(self.device.last_seconds)
        return logits


def generate(
    device: Device,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    options: SamplingOptions = SamplingOptions(),
    stop_ids: Sequence[int] = (),
) -> Generation:
    return Generation.collect(generate_stream(device, prompt_ids, max_new_tokens, options, stop_ids))
