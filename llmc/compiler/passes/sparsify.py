"""``sparsify``: prune every float linear weight (not the head) to N:M or unstructured sparsity.

The pruned float weights replace the originals and the weight's type gains a sparse encoding,
``#sparse<2:4>`` for N:M or ``#sparse<block=1,density=d>`` (``d`` the fraction of non-zeros)
for unstructured; the interpreter computes with the zeros exactly. Options:

* ``pattern``: ``N:M`` (2:4, 4:8, 8:16, 2:16, 4:16; groups of M consecutive inputs along K) or
  ``unstructured`` with ``ratio`` (the fraction pruned, default 0.5).
* ``method``: ``magnitude``, ``wanda`` or ``sparsegpt`` (the last two use calibration data).
* ``ratios``: per-layer overrides, ``key=value`` entries separated by ``;``. A key is a block
  index (``3``), an inclusive block range (``0-3``) or a substring of the weight's name
  (``mlp``, ``attn``, ``q_proj``); a value is an ``N:M`` pattern or an unstructured ratio.
  Every layer takes the value of the last entry that matches it, else the pass's pattern, e.g.
  ``sparsify{pattern=unstructured,ratio=0.5,ratios=mlp=0.6;attn=0.4;0=0.3}``.
* ``damp``: SparseGPT's Hessian dampening, a fraction of the mean diagonal.

On a shapes-only module (no weight data) the weights only gain their encodings; an unstructured
layer states the nominal density ``1 - ratio``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from llmc.compiler.calibrate import LayerStats, expert_key
from llmc.compiler.passes.linear import LinearLayer, clone, expert_layers, linear_layers, set_param, shapes_only_layers
from llmc.compiler.pipeline import PassContext, PipelineError, register_pass
from llmc.compiler.quant.sparse import Pattern, magnitude_mask, sparsegpt, wanda_mask
from llmc.ir.graph import Module
from llmc.ir.types import SparseEncoding, TensorType

METHODS = ("magnitude", "wanda", "sparsegpt")
CALIBRATED = ("wanda", "sparsegpt")
_BLOCKS = re.compile(r"(\d+)(?:-(\d+))?")


@dataclass(frozen=True)
class LayerRule:
    """One ``key=value`` entry of the ``ratios`` option."""

    key: str
    pattern: Pattern

    def matches(self, layer: LinearLayer) -> bool:
        m = _BLOCKS.fullmatch(self.key)
        if m is None:
            return self.key in layer.weight
        low, high = int(m[1]), int(m[2] or m[1])
        return layer.block is not None and low <= layer.block <= high


def parse_rules(spec: str) -> tuple[LayerRule, ...]:
    """Parse ``key=value;key=value``; raises ValueError on a malformed entry."""
    rules = []
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        key, sep, value = entry.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(f"ratios entry '{entry}' is not key=value (e.g. mlp=0.6 or 0-3=2:4)")
        rules.append(LayerRule(key.strip(), Pattern.parse(value)))
    return tuple(rules)


@dataclass(frozen=True)
class SparsifyOptions:
    pattern: str = "2:4"
    ratio: float | None = None  # unstructured only; 0.5 when not given
    method: str = "magnitude"
    ratios: str = ""
    damp: float = 0.01

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method '{self.method}' (choose from {', '.join(METHODS)})")
        if self.ratio is not None and self.pattern.strip() != "unstructured":
            raise ValueError(f"ratio applies to pattern=unstructured; pattern {self.pattern} fixes its own")
        if not 0.0 <= self.damp < 1.0:
            raise ValueError(f"damp must be in [0, 1), got {self.damp}")
        _ = self.default, self.rules  # parsed here so that a bad pattern is an option error

    @property
    def default(self) -> Pattern:
        return Pattern.parse(self.pattern, 0.5 if self.ratio is None else self.ratio)

    @property
    def rules(self) -> tuple[LayerRule, ...]:
        return parse_rules(self.ratios)

    def pattern_for(self, layer: LinearLayer) -> Pattern:
        matching = [rule.pattern for rule in self.rules if rule.matches(layer)]
        return matching[-1] if matching else self.default


def check_sparsify(module: Module, options: SparsifyOptions) -> None:
    layers = linear_layers(module) + expert_layers(module)
    for rule in options.rules:
        if not any(rule.matches(layer) for layer in layers):
            raise PipelineError(f"pass sparsify: ratios entry '{rule.key}' matches no linear layer")
    for layer in layers:
        pattern = options.pattern_for(layer)
        if pattern.structured and layer.in_features % pattern.m:
            raise PipelineError(f"pass sparsify: {pattern} needs K divisible by {pattern.m}, but {layer.weight} "
                                f"has K={layer.in_features}")


def prune(w: np.ndarray, pattern: Pattern, options: SparsifyOptions, stats: LayerStats | None) -> np.ndarray:
    """The pruned ``w`` (float32) by ``options.method``; ``stats`` are needed by wanda and sparsegpt."""
    if options.method == "magnitude":
        return np.where(magnitude_mask(w, pattern), w, 0.0).astype(np.float32)
    if stats is None:
        raise ValueError("no calibration statistics (the layer is not run by prefill)")
    if options.method == "wanda":
        return np.where(wanda_mask(w, stats.sq_sum, pattern), w, 0.0).astype(np.float32)
    return sparsegpt(w, stats.hessian, pattern, options.damp)


def encoding_of(pattern: Pattern, pruned: np.ndarray | None) -> SparseEncoding:
    """``#sparse<n:m>``, or the unstructured encoding with the actual fraction of non-zeros
    (the nominal one without data)."""
    if pattern.structured:
        return SparseEncoding(pattern.n, pattern.m)
    if pruned is None:
        return SparseEncoding(density=1.0 - pattern.ratio)
    return SparseEncoding(density=int(np.count_nonzero(pruned)) / pruned.size)


def _pruned(layer: LinearLayer, data: np.ndarray, pattern: Pattern, options: SparsifyOptions,
            stats: dict[str, LayerStats]) -> np.ndarray:
    """``data`` pruned; stacked experts one by one, each on the statistics of its routed tokens."""
    if layer.experts:
        return np.stack([_pruned(LinearLayer(expert_key(layer.weight, e), layer.out_features, layer.in_features),
                                 data[e], pattern, options, stats) for e in range(layer.experts)])
    try:
        pruned = prune(data.astype(np.float32), pattern, options, stats.get(layer.weight))
    except ValueError as e:
        raise PipelineError(f"pass sparsify: {layer.weight}: {e}") from None
    return pruned.astype(data.dtype)


@register_pass("sparsify", SparsifyOptions, check=check_sparsify)
def sparsify(module: Module, options: SparsifyOptions, context: PassContext) -> Module:
    """Prune every linear weight and expert projection (magnitude, Wanda or SparseGPT) to N:M or
    unstructured sparsity."""
    out = clone(module)
    layers = linear_layers(out) + expert_layers(out)
    shapes_only = shapes_only_layers("sparsify", out, [layer.weight for layer in layers])
    stats = context.calibration(out) if options.method in CALIBRATED and not shapes_only else {}
    zeros = total = 0.0
    for layer in layers:
        param = out.params[layer.weight]
        pattern = options.pattern_for(layer)
        size = max(layer.experts, 1) * layer.out_features * layer.in_features
        pruned = None if shapes_only else _pruned(layer, param.data, pattern, options, stats)
        zeros += size * pattern.sparsity if pruned is None else size - int(np.count_nonzero(pruned))
        total += size
        encodings = param.type.encodings + (encoding_of(pattern, pruned),)
        set_param(out, layer.weight, pruned, TensorType(param.type.shape, param.type.dtype, encodings))
    context.reports["sparsify"] = {"layers": len(layers), "method": options.method, "pattern": str(options.default),
                                   "sparsity": zeros / total if total else 0.0, "shapes_only": shapes_only}
    return out
