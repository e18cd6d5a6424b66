"""``outliers``: dense-and-sparse decomposition of every float linear weight (not the head).

The ``fraction`` of weights with the highest score, ``|w|`` (``magnitude``, LLM.int8 style) or
``w^2 * H_jj`` (``sensitivity``, SqueezeLLM style, ``H`` the layer Hessian from calibration),
move into a side parameter ``<weight>.outliers`` [N, K] of dtype f16 with the encoding
``#sparse<block=1,density=k/(N*K)>``, where ``k = round(fraction * N * K)`` (at least 1). The
dense weight keeps only the f16 rounding residual ``w - f16(w)`` at those positions (at most
``2^-11 |w|``, which a later quantizer rounds to zero), so dense + side is exactly ``W``.

In every function each ``y = linear(x, W[, b])`` becomes::

    y.dense    = linear(x, W[, b])
    W_outliers = param "W.outliers"
    side       = cast(W_outliers) to W's dtype
    y.outliers = linear(x, side)
    y          = add(y.dense, y.outliers)

so ``W`` stays a direct parameter of a linear layer (a later ``quantize`` still finds it), the
side path is a sparse high-precision GEMV, and the users of ``y`` are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmc.compiler.passes.linear import clone, linear_layers, require_data, set_param
from llmc.compiler.pipeline import PassContext, PipelineError, register_pass
from llmc.ir.builder import Builder
from llmc.ir.graph import Module, Node, Param, Value
from llmc.ir.types import F16, SparseEncoding, TensorType

CRITERIA = ("magnitude", "sensitivity")
F16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class OutliersOptions:
    fraction: float = 0.005
    criterion: str = "magnitude"

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction < 0.5:
            raise ValueError(f"fraction must be in (0, 0.5), got {self.fraction}")
        if self.criterion not in CRITERIA:
            raise ValueError(f"unknown criterion '{self.criterion}' (choose from {', '.join(CRITERIA)})")


def check_outliers(module: Module, options: OutliersOptions) -> None:
    require_data("outliers", module, linear_layers(module))
    for layer in linear_layers(module):
        if f"{layer.weight}.outliers" in module.params:
            raise PipelineError(f"pass outliers: {layer.weight} already has an outlier matrix (run the pass once)")


def outlier_count(size: int, fraction: float) -> int:
    """How many of ``size`` weights move to the side matrix: ``round(fraction * size)``, >= 1."""
    return max(1, int(round(fraction * size)))


def split(w: np.ndarray, score: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """``(dense, side)``: the highest-scoring weights (ties: first in row-major order) go to
    ``side`` (float16, zeros elsewhere); ``dense`` keeps ``w`` with only the f16 rounding
    residual there, so that ``dense + float32(side) == w``."""
    w = w.astype(np.float32)
    picked = np.argsort(-score, axis=None, kind="stable")[:outlier_count(w.size, fraction)]
    values = w.flat[picked]
    if np.abs(values).max() > F16_MAX:
        raise ValueError(f"an outlier exceeds the float16 range ({np.abs(values).max():g})")
    side = np.zeros(w.shape, dtype=np.float16)
    side.flat[picked] = values.astype(np.float16)
    dense = w.copy()
    dense.flat[picked] = values - side.flat[picked].astype(np.float32)
    return dense, side


@register_pass("outliers", OutliersOptions, check=check_outliers)
def outliers(module: Module, options: OutliersOptions, context: PassContext) -> Module:
    """Move the largest or most sensitive weights of every linear layer into an f16 sparse side matrix."""
    check_outliers(module, options)  # again: an earlier pass of the pipeline may have added side matrices
    out = clone(module)
    layers = linear_layers(out)
    stats = context.calibration(out) if options.criterion == "sensitivity" else {}
    moved = 0
    for layer in layers:
        param = out.params[layer.weight]
        w = np.asarray(param.data, dtype=np.float32)
        if options.criterion == "magnitude":
            score = np.abs(w)
        elif layer.weight in stats:
            score = w.astype(np.float64) ** 2 * np.diag(stats[layer.weight].hessian)[None, :]
        else:
            raise PipelineError(f"pass outliers: {layer.weight}: no calibration statistics (not run by prefill)")
        try:
            dense, side = split(w, score, options.fraction)
        except ValueError as e:
            raise PipelineError(f"pass outliers: {layer.weight}: {e}") from None
        count = int(np.count_nonzero(side))
        encoding = SparseEncoding(density=outlier_count(side.size, options.fraction) / side.size)
        name = f"{layer.weight}.outliers"
        out.params[name] = Param(name, TensorType(param.type.shape, F16, (encoding,)), side)
        set_param(out, layer.weight, dense.astype(param.type.dtype.numpy()))
        moved += count
    for func_name in out.functions:
        add_side_paths(out, func_name, {layer.weight for layer in layers})
    context.reports["outliers"] = {"layers": len(layers), "fraction": options.fraction,
                                   "criterion": options.criterion, "weights": moved}
    return out


def add_side_paths(module: Module, func_name: str, weights: set[str]) -> None:
    """Rewrite every linear layer of ``func_name`` that reads one of ``weights`` as the sum of
    the dense layer and a layer reading ``<weight>.outliers`` (cast to the weight's dtype)."""
    func = module.functions[func_name]
    params = {n.outputs[0].name: n.attrs["name"] for n in func.nodes if n.op == "param"}
    builder = Builder(module, func)
    nodes: list[Node] = []
    builder.into = nodes
    for node in func.nodes:
        nodes.append(node)
        weight = params.get(node.inputs[1].name) if node.op == "linear" else None
        if weight not in weights:
            continue
        y = node.outputs[0]
        dense = Value(builder.fresh(f"{y.name}.dense"), y.type)
        node.outputs = [dense]
        side = builder.param(f"{weight}.outliers")
        dtype = node.inputs[1].type.dtype
        if side.type.dtype != dtype:
            side = builder.op("cast", [side], {"dtype": dtype}, name=f"{side.name}_{dtype}")
        extra = builder.op("linear", [node.inputs[0], side], name=f"{y.name}.outliers")
        builder.op("add", [dense, extra])
        nodes[-1].outputs = [y]
    func.nodes = nodes
