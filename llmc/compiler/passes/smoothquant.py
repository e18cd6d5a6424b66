"""``smoothquant``: migrate activation outliers into the weights before activation quantization.

For every group of float linear layers reading the same input ``x`` (q, k, v; gate, up; o;
down), with ``max|x_j|`` from calibration and ``max|W_j|`` the largest magnitude of column ``j``
over the group's weights, the per-input-channel factor is

    s_j = max|x_j|^alpha / max|W_j|^(1 - alpha)

and ``linear(x, W)`` becomes ``linear(x / s, W * s)`` with ``1 / s`` folded into the op that
produces ``x`` (a norm's weight, the rows of the SwiGLU up projection, or an inserted ``mul``):
the function is unchanged up to float rounding, while ``x / s`` has a flatter channel range
that quantizes with less error (Xiao et al., 2023). Channels that never activate, or whose
weights are all zero, keep ``s_j = 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.compiler.passes.linear import clone, fold_input_scale, linear_layers, require_data
from llmc.compiler.pipeline import PassContext, PipelineError, register_pass
from llmc.ir.graph import Module

EPS = 1e-5  # SmoothQuant's floor on both maxima


@dataclass(frozen=True)
class SmoothQuantOptions:
    alpha: float = 0.5  # migration strength: 0 leaves x alone, 1 moves its whole range into W

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha}")


def linear_groups(module: Module) -> list[list[str]]:
    """Float linear weights (output head excluded) grouped by the value they read in the
    prefill function, in the order the groups first appear."""
    weights = {layer.weight for layer in linear_layers(module)}
    func = module.functions["prefill"]
    params = {n.outputs[0].name: n.attrs["name"] for n in func.nodes if n.op == "param"}
    groups: dict[str, list[str]] = {}
    for node in func.nodes:
        name = params.get(node.inputs[1].name) if node.op == "linear" else None
        if name in weights and name not in groups.get(node.inputs[0].name, []):
            groups.setdefault(node.inputs[0].name, []).append(name)
    return list(groups.values())


def smoothing_factors(act_max: np.ndarray, weights: list[np.ndarray], alpha: float) -> np.ndarray:
    """``s_j = max|x_j|^alpha / max|W_j|^(1-alpha)`` (float32), 1 where either maximum is 0."""
    w_max = np.max([np.abs(w.astype(np.float64)).max(axis=0) for w in weights], axis=0)
    a_max = np.asarray(act_max, dtype=np.float64)
    s = np.maximum(a_max, EPS) ** alpha / np.maximum(w_max, EPS) ** (1.0 - alpha)
    return np.where((a_max > 0) & (w_max > 0), s, 1.0).astype(np.float32)


def outlier_ratio(act_max: np.ndarray) -> float:
    """Largest channel maximum over the mean one: how much of the int8 range outliers waste."""
    return float(np.max(act_max) / max(float(np.mean(act_max)), EPS))


def check_smoothquant(module: Module, options: SmoothQuantOptions) -> None:
    require_data("smoothquant", module, linear_layers(module))


@register_pass("smoothquant", SmoothQuantOptions, check=check_smoothquant)
def smoothquant(module: Module, options: SmoothQuantOptions, context: PassContext) -> Module:
    """SmoothQuant: per-channel scaling of linear inputs into the weights (function preserved)."""
    stats = context.calibration(module)
    out = clone(module)
    report = []
    for group in linear_groups(out):
        weights = [out.params[w].data for w in group]
        missing = [w for w in group if w not in stats]
        if missing:
            raise PipelineError(f"pass smoothquant: no calibration statistics for {missing[0]}")
        act_max = np.max([stats[w].abs_max for w in group], axis=0)
        s = smoothing_factors(act_max, weights, options.alpha)  # type: ignore[arg-type]
        how = fold_input_scale(out, group, s)
        report.append({"weights": group, "folded": how, "outlier_ratio": (outlier_ratio(act_max),
                                                                          outlier_ratio(act_max / s))})
    context.reports["smoothquant"] = {"alpha": options.alpha, "groups": report}
    return out
