"""``quantize``: weight-only quantization of every linear layer (W-bits, per group along K).

Each float weight ``W`` [N, K] becomes integer codes (``W.codes``, with a ``#quant`` encoding),
float16 scales (``W.scales`` [N, K/group]) and, for asymmetric grids, integer zero points
(``W.zeros``); every function reads them through a ``dequantize`` node, so the interpreter runs
exactly the arithmetic the hardware does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from llmc.compiler.calibrate import LayerStats
from llmc.compiler.passes.linear import LinearLayer, clone, linear_layers, replace_param
from llmc.compiler.pipeline import PassContext, PipelineError, register_pass
from llmc.compiler.quant.grid import Grid, Quantized, quantize_rtn
from llmc.ir.builder import Builder
from llmc.ir.graph import Module, Param, Value
from llmc.ir.ops.common import as_dtype
from llmc.ir.types import F16, DType, QuantEncoding, TensorType

Quantizer = Callable[[np.ndarray, Grid, "LayerStats | None", "QuantizeOptions"], Quantized]
QUANTIZERS: dict[str, Quantizer] = {"rtn": lambda w, grid, stats, options: quantize_rtn(w, grid)}
CALIBRATED = {"gptq", "awq"}


@dataclass(frozen=True)
class QuantizeOptions:
    bits: int = 4
    group: int = 128
    method: str = "rtn"
    symmetric: bool = True
    act_order: bool = True  # GPTQ: quantize columns in order of decreasing Hessian diagonal
    damp: float = 0.01  # GPTQ: dampening, a fraction of the mean Hessian diagonal
    include_head: bool = False

    def __post_init__(self) -> None:
        Grid(self.bits, self.group, self.symmetric)
        if self.method not in QUANTIZERS:
            raise ValueError(f"unknown method '{self.method}' (choose from {', '.join(sorted(QUANTIZERS))})")
        if not 0.0 <= self.damp < 1.0:
            raise ValueError(f"damp must be in [0, 1), got {self.damp}")

    @property
    def grid(self) -> Grid:
        return Grid(self.bits, self.group, self.symmetric)


def check_quantize(module: Module, options: QuantizeOptions) -> None:
    for layer in linear_layers(module, exclude_head=not options.include_head):
        if options.group and layer.in_features % options.group:
            raise PipelineError(f"pass quantize: group {options.group} does not divide K={layer.in_features} "
                                f"of {layer.weight}")


@register_pass("quantize", QuantizeOptions, check=check_quantize)
def quantize(module: Module, options: QuantizeOptions, context: PassContext) -> Module:
    """Weight-only quantization (RTN, GPTQ or AWQ) of every linear layer."""
    out = clone(module)
    layers = linear_layers(out, exclude_head=not options.include_head)
    stats = context.calibration(out) if options.method in CALIBRATED else {}
    quantizer = QUANTIZERS[options.method]
    for layer in layers:
        data = out.params[layer.weight].data
        if data is None:
            raise PipelineError(f"pass quantize: {layer.weight} has no weights (shapes-only module)")
        q = quantizer(data.astype(np.float32), options.grid, stats.get(layer.weight), options)
        install(out, layer, q)
    context.reports["quantize"] = {"layers": len(layers), "bits": options.bits, "group": options.group,
                                   "method": options.method}
    return out


def install(module: Module, layer: LinearLayer, q: Quantized) -> None:
    """Replace ``layer``'s float weight by the parameters of ``q`` and a ``dequantize`` node."""
    grid = q.grid
    n, k = layer.out_features, layer.in_features
    code_dtype = DType("int" if grid.symmetric else "uint", grid.bits)
    zero_dtype = None if grid.symmetric else DType("uint", grid.bits)
    encoding = QuantEncoding(grid.bits, grid.group, F16, grid.symmetric, zero_dtype)
    groups = q.scales.shape[1]
    params = [
        Param(f"{layer.weight}.codes", TensorType.of([n, k], code_dtype, (encoding,)), as_dtype(q.codes, code_dtype)),
        Param(f"{layer.weight}.scales", TensorType.of([n, groups], F16), q.scales.astype(np.float16)),
    ]
    if q.zeros is not None and zero_dtype is not None:
        params.append(Param(f"{layer.weight}.zeros", TensorType.of([n, groups], zero_dtype), as_dtype(q.zeros, zero_dtype)))

    def expand(b: Builder, values: dict[str, Value]) -> Value:
        return b.op("dequantize", [values[p.name] for p in params], {"group": grid.group})

    replace_param(module, layer.weight, params, expand)
