"""Calibration: statistics of every linear layer's input, collected by running the interpreter.

Each expert of a mixture of experts counts as a layer of its own (:func:`expert_key`): its
statistics are those of the tokens the router sent to it.

Samples are seeded windows of the bundled corpus's train split (random token ids for a model
without a tokenizer). For each linear layer, keyed by its weight parameter, we keep what the
compression algorithms need: the Gram matrix ``X^T X`` (GPTQ, SparseGPT), per-feature mean and
max of ``|x|`` (AWQ, SmoothQuant), per-feature squared norms (Wanda) and a bounded sample of
rows (AWQ's scale search, output-error sensitivity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.data import sample_windows, token_stream
from llmc.generate.interpreter import prefill_inputs
from llmc.ir.graph import Module, Node
from llmc.ir.interpreter import run_function
from llmc.ir.ops.nn import expert_hidden, moe_route


@dataclass
class LayerStats:
    """Input statistics of one linear layer over ``rows`` calibration tokens."""

    rows: int
    gram: np.ndarray  # [K, K] float64: sum of x x^T
    abs_mean: np.ndarray  # [K]
    abs_max: np.ndarray  # [K]
    sq_sum: np.ndarray  # [K]: sum of x_j^2
    samples: np.ndarray  # [<= max_rows, K] float32

    @property
    def hessian(self) -> np.ndarray:
        """``2 X^T X / rows``, the Hessian of the layer-wise squared error."""
        return 2.0 * self.gram / max(self.rows, 1)


@dataclass(frozen=True)
class CalibrationConfig:
    samples: int = 32
    length: int = 256
    seed: int = 0
    max_rows: int = 512

    def __post_init__(self) -> None:
        if self.samples < 1 or self.length < 2:
            raise ValueError("calibration needs at least 1 sample of at least 2 tokens")


def calibration_windows(module: Module, tokenizer_json: str | None, config: CalibrationConfig) -> list[np.ndarray]:
    """Seeded windows of ``config.length`` tokens, at most the model's context."""
    context = int(module.attrs.get("max_position", 0) or 0)
    length = min(config.length, context) if context else config.length
    if tokenizer_json is None:
        rng = np.random.default_rng(config.seed)
        vocab = int(module.attrs["vocab_size"])
        return [rng.integers(0, vocab, size=length) for _ in range(config.samples)]
    stream = token_stream(tokenizer_json, "train", int(module.attrs.get("eos_token_id", -1)))
    return sample_windows(stream, length, config.samples, config.seed)


def linear_weight_names(module: Module, func_name: str = "prefill") -> dict[str, str]:
    """Map value name -> parameter name for every parameter read by ``func_name``."""
    return {n.outputs[0].name: n.attrs["name"] for n in module.functions[func_name].nodes if n.op == "param"}


def expert_key(weight: str, expert: int) -> str:
    """The statistics key of expert ``expert`` of the stacked weight ``weight``."""
    return f"{weight}[{expert}]"


def routed_inputs(args: list[np.ndarray], top_k: int, normalize: bool) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per expert of a ``moe`` (its operands ``args``), the rows that chose it and their down
    projection's inputs: what each expert's ``gate_up`` and ``down`` see."""
    x, router, gate_up = (a.astype(np.float32) for a in args[:3])
    x = x.reshape(-1, x.shape[-1])
    chosen, _ = moe_route(x, router, top_k, normalize)
    out = {}
    for e in np.unique(chosen).tolist():
        rows = x[(chosen == e).any(axis=1)]
        out[e] = (rows, expert_hidden(rows, gate_up[e]))
    return out


def collect(module: Module, tokenizer_json: str | None, config: CalibrationConfig = CalibrationConfig()) -> dict[str, LayerStats]:
    """Run the prefill program on the calibration windows; return stats per linear weight."""
    params = linear_weight_names(module)
    acc: dict[str, dict[str, np.ndarray | int]] = {}
    rng = np.random.default_rng(config.seed)

    def add(name: str, rows: np.ndarray) -> None:
        x = rows.reshape(-1, rows.shape[-1]).astype(np.float64)
        s = acc.setdefault(name, {"rows": 0, "gram": 0.0, "abs_sum": 0.0, "abs_max": 0.0, "sq_sum": 0.0, "samples": []})
        s["rows"] += x.shape[0]
        s["gram"] = s["gram"] + x.T @ x
        s["abs_sum"] = s["abs_sum"] + np.abs(x).sum(axis=0)
        s["abs_max"] = np.maximum(s["abs_max"], np.abs(x).max(axis=0))
        s["sq_sum"] = s["sq_sum"] + (x * x).sum(axis=0)
        s["samples"].append(x.astype(np.float32))

    def observe(node: Node, args: list[np.ndarray], results: list[np.ndarray]) -> None:
        if node.op == "linear" and node.inputs[1].name in params:
            add(params[node.inputs[1].name], args[0])
        elif node.op == "moe" and all(v.name in params for v in node.inputs[2:]):
            for e, (rows, hidden) in routed_inputs(args, node.attrs["top_k"], node.attrs["normalize"]).items():
                add(expert_key(params[node.inputs[2].name], e), rows)
                add(expert_key(params[node.inputs[3].name], e), hidden)

    for window in calibration_windows(module, tokenizer_json, config):
        run_function(module, "prefill", prefill_inputs(window), observe=observe)
    stats = {}
    for name, s in acc.items():  # an expert no calibration token chose has no entry
        rows = np.concatenate(s["samples"])
        keep = rng.choice(len(rows), size=min(config.max_rows, len(rows)), replace=False)
        stats[name] = LayerStats(int(s["rows"]), np.asarray(s["gram"]), np.asarray(s["abs_sum"]) / s["rows"],
                                 np.asarray(s["abs_max"]), np.asarray(s["sq_sum"]), rows[np.sort(keep)])
    return stats
