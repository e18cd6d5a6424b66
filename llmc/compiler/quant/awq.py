"""AWQ (Lin et al., 2023): activation-aware weight quantization.

A few input channels carry much larger activations than the rest, and the weights that multiply
them matter most. AWQ scales those weight columns up before rounding (so they lose less relative
precision) and divides the activations by the same factor, folded into the operation that
produces them: ``linear(x, W) = linear(x / s, W * s)``. Per group of linear layers that read one
input (q/k/v, gate/up, o, down in a Llama block), it searches ``s = abs_mean(x)^alpha``
(normalised to a geometric mean of 1) over ``alpha`` in ``[0, 1]`` for the smallest output error
of the rounded scaled weights on the calibration rows; ``alpha = 0`` is plain round-to-nearest,
so the chosen scales never do worse than it on those rows. The ``quantize`` pass folds the
chosen scales into the module (:func:`llmc.compiler.passes.quantize.apply_awq`).

After scaling, :func:`quantize_clipped` optionally searches, per row and group, how far to shrink
the quantization range (AWQ's weight clipping), again for the smallest output error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.compiler.calibrate import LayerStats
from llmc.compiler.quant.grid import Grid, Quantized, group_params, quantize_rtn, to_codes
from llmc.ir.graph import Module

ALPHAS = 20  # grid points of the scale search, alpha = 0, 1/19, ..., 1
CLIP_RATIOS = tuple(1.0 - i / 20 for i in range(10))  # range shrink factors tried, 1.0 .. 0.55


@dataclass(frozen=True)
class ScaleChoice:
    """The scale chosen for a group of layers and the output errors it gives and replaces."""

    weights: tuple[str, ...]
    alpha: float
    scale: np.ndarray  # [K]
    error: float  # summed squared output error on the calibration rows, with the scale
    rtn_error: float  # the same without scaling (alpha = 0)
    folded: str = ""  # how fold_input_scale applied it: "norm", "linear" or "mul"


def only_linear_weight(module: Module, name: str) -> bool:
    """Whether parameter ``name`` is read only as the weight of linear layers (not, say, also as
    a tied embedding table, which an input scale must not touch)."""
    for func in module.functions.values():
        values = {n.outputs[0].name for n in func.nodes if n.op == "param" and n.attrs["name"] == name}
        for node in func.nodes:
            if any(v.name in values and (node.op != "linear" or i != 1) for i, v in enumerate(node.inputs)):
                return False
    return True


def input_groups(module: Module, weights: list[str], func: str = "prefill") -> list[list[str]]:
    """The ``weights`` (those read only by linear layers) grouped by the value their linear
    layers read in ``func``, in the order of their first weight."""
    wanted = {name for name in weights if only_linear_weight(module, name)}
    params = {n.outputs[0].name: n.attrs["name"] for n in module.functions[func].nodes if n.op == "param"}
    groups: dict[int, list[str]] = {}
    for node in module.functions[func].nodes:
        name = params.get(node.inputs[1].name) if node.op == "linear" else None
        if name in wanted:
            members = groups.setdefault(id(node.inputs[0]), [])
            if name not in members:
                members.append(name)
    return sorted(groups.values(), key=lambda g: weights.index(g[0]))


def output_error(x: np.ndarray, weights: list[np.ndarray], s: np.ndarray, grid: Grid,
                 reference: list[np.ndarray] | None = None) -> float:
    """``sum_i ||x W_i^T - (x / s) Q(W_i * s)^T||^2`` with ``Q`` round-to-nearest on ``grid``
    (``reference``: the float outputs ``x W_i^T``, if already computed)."""
    scaled_x = (x / s).astype(np.float32)
    total = 0.0
    for i, w in enumerate(weights):
        y = x @ w.T if reference is None else reference[i]
        q = quantize_rtn(w * s[None, :], grid).dequantize()
        total += float(np.sum((y - scaled_x @ q.T).astype(np.float64) ** 2))
    return total


def search_scale(weights: list[np.ndarray], stats: LayerStats, grid: Grid,
                 points: int = ALPHAS) -> tuple[float, np.ndarray, float, float]:
    """Best ``(alpha, s, error, rtn_error)`` for weights that share one input."""
    x = stats.samples.astype(np.float32)
    reference = [x @ w.T for w in weights]
    mean = np.asarray(stats.abs_mean, dtype=np.float64)
    mean = np.maximum(mean, max(float(mean.max()), 1e-12) * 1e-6)  # dead channels: a tiny, finite scale
    best: tuple[float, np.ndarray, float] | None = None
    rtn = 0.0
    for alpha in np.linspace(0.0, 1.0, points):
        log_s = alpha * np.log(mean)
        s = np.exp(log_s - log_s.mean()).astype(np.float32)
        err = output_error(x, weights, s, grid, reference)
        if alpha == 0.0:
            rtn = err
        if best is None or err < best[2]:
            best = (float(alpha), s, err)
    assert best is not None
    return best[0], best[1], best[2], rtn


def scaled_stats(stats: LayerStats, s: np.ndarray) -> LayerStats:
    """The statistics of ``x / s`` given those of ``x``."""
    inv = 1.0 / s.astype(np.float64)
    return LayerStats(stats.rows, stats.gram * np.outer(inv, inv), stats.abs_mean * inv, stats.abs_max * inv,
                      stats.sq_sum * inv * inv, (stats.samples * inv).astype(np.float32))


def quantize_clipped(w: np.ndarray, grid: Grid, stats: LayerStats) -> Quantized:
    """Round-to-nearest with, per row and group, the range shrink factor (of ``CLIP_RATIOS``)
    that gives the smallest squared error of that group's partial outputs on the samples."""
    n, k = w.shape
    span = grid.span(k)
    groups = k // span
    x = stats.samples.astype(np.float32).reshape(-1, groups, span).transpose(1, 0, 2)  # [G, R, span]
    best_err = np.full((n, groups), np.inf)
    scales = np.ones((n, groups), dtype=np.float16)
    zeros = None if grid.symmetric else np.zeros((n, groups), dtype=np.uint8)
    for ratio in CLIP_RATIOS:
        s, z = group_params(w * np.float32(ratio), grid)
        diff = w - Quantized(to_codes(w, s, z, grid), s, z, grid).dequantize()
        partial = x @ diff.reshape(n, groups, span).transpose(1, 2, 0)  # [G, R, N]
        err = np.sum(partial.astype(np.float64) ** 2, axis=1).T  # [N, G]
        better = err < best_err
        best_err = np.where(better, err, best_err)
        scales = np.where(better, s, scales)
        if zeros is not None and z is not None:
            zeros = np.where(better, z, zeros)
    return Quantized(to_codes(w, scales, zeros, grid), scales, zeros, grid)
