"""``quantize``: weight-only quantization of every linear layer (W-bits, per group along K).

Each float weight ``W`` [N, K] becomes integer codes (``W.codes``, with a ``#quant`` encoding),
float16 scales (``W.scales`` [N, K/group]) and, for asymmetric grids, integer zero points
(``W.zeros``); every function reads them through a ``dequantize`` node, so the interpreter runs
exactly the arithmetic the hardware does.

Methods: ``rtn`` (round to nearest), ``gptq`` (Hessian error feedback, see
:mod:`llmc.compiler.quant.gptq`), ``awq`` (activation-aware input scales folded into the
producing op, then round to nearest with a clipping search, see :mod:`llmc.compiler.quant.awq`)
and ``ternary`` (BitNet b1.58 absmean codes in ``{-1, 0, 1}``; ``bits`` is ignored, codes are
stored in 2 bits). ``gptq`` and ``awq`` calibrate on the input module. A weight whose type
carries a ``#sparse`` encoding keeps its zeros (and the encoding, on its codes).

On a shapes-only module (no weight data) every method gives the parameters and types RTN would
give, without data: what the backends need to place and schedule the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from llmc.compiler.calibrate import LayerStats, expert_key
from llmc.compiler.passes.linear import (
    LinearLayer,
    check_group_divides,
    clone,
    expert_layers,
    fold_input_scale,
    linear_layers,
    replace_param,
    shapes_only_layers,
)
from llmc.compiler.pipeline import PassContext, PipelineError, register_pass
from llmc.compiler.quant.awq import ScaleChoice, input_groups, quantize_clipped, scaled_stats, search_scale
from llmc.compiler.quant.gptq import quantize_gptq
from llmc.compiler.quant.grid import Grid, Quantized, quantize_rtn
from llmc.compiler.quant.ternary import BITS_PER_WEIGHT, quantize_ternary, ternary_grid
from llmc.ir.builder import Builder
from llmc.ir.graph import Module, Param, Value
from llmc.ir.ops.common import as_dtype
from llmc.ir.types import F16, DType, QuantEncoding, SparseEncoding, TensorType


@dataclass(frozen=True)
class QuantizeOptions:
    bits: int = 4
    group: int = 128
    method: str = "rtn"
    symmetric: bool = True
    act_order: bool = True  # GPTQ: quantize columns in order of decreasing Hessian diagonal
    damp: float = 0.01  # GPTQ: dampening, a fraction of the mean Hessian diagonal
    clip: bool = True  # AWQ: search a per-group clipping of the quantization range
    include_head: bool = False

    def __post_init__(self) -> None:
        Grid(self.bits, self.group, self.symmetric)
        if self.method not in QUANTIZERS:
            raise ValueError(f"unknown method '{self.method}' (choose from {', '.join(sorted(QUANTIZERS))})")
        if not 0.0 <= self.damp < 1.0:
            raise ValueError(f"damp must be in [0, 1), got {self.damp}")
        if self.method == "ternary" and not self.symmetric:
            raise ValueError("ternary codes are symmetric: drop symmetric=false")

    @property
    def grid(self) -> Grid:
        if self.method == "ternary":
            return ternary_grid(self.group)
        return Grid(self.bits, self.group, self.symmetric)


class Quantizer(Protocol):
    """Rounds one weight matrix; ``pruned`` (bool, like ``w``) marks zeros to keep."""

    def __call__(self, w: np.ndarray, grid: Grid, stats: LayerStats | None, options: QuantizeOptions,
                 pruned: np.ndarray | None = None) -> Quantized: ...


def _rtn(w: np.ndarray, grid: Grid, stats: LayerStats | None, options: QuantizeOptions,
         pruned: np.ndarray | None = None) -> Quantized:
    return quantize_rtn(w, grid)


def _gptq(w: np.ndarray, grid: Grid, stats: LayerStats | None, options: QuantizeOptions,
          pruned: np.ndarray | None = None) -> Quantized:
    assert stats is not None
    return quantize_gptq(w, grid, stats, options.damp, options.act_order, pruned)


def _awq(w: np.ndarray, grid: Grid, stats: LayerStats | None, options: QuantizeOptions,
         pruned: np.ndarray | None = None) -> Quantized:
    assert stats is not None
    return quantize_clipped(w, grid, stats) if options.clip else quantize_rtn(w, grid)


def _ternary(w: np.ndarray, grid: Grid, stats: LayerStats | None, options: QuantizeOptions,
             pruned: np.ndarray | None = None) -> Quantized:
    return quantize_ternary(w, grid.group)


# Rounding of one weight matrix, by method. Zero weights stay zero (for GPTQ, those in ``pruned``).
QUANTIZERS: dict[str, Quantizer] = {"rtn": _rtn, "gptq": _gptq, "awq": _awq, "ternary": _ternary}
CALIBRATED = {"gptq", "awq"}


def check_quantize(module: Module, options: QuantizeOptions) -> None:
    layers = linear_layers(module, exclude_head=not options.include_head) + expert_layers(module)
    check_group_divides("quantize", layers, options.group)


@register_pass("quantize", QuantizeOptions, check=check_quantize)
def quantize(module: Module, options: QuantizeOptions, context: PassContext) -> Module:
    """Weight-only quantization (RTN, GPTQ, AWQ or ternary) of every linear layer and expert projection."""
    out = clone(module)
    layers = linear_layers(out, exclude_head=not options.include_head)
    experts = expert_layers(out)
    shapes_only = shapes_only_layers("quantize", out, [layer.weight for layer in layers + experts])
    grid = options.grid
    report: dict[str, object] = {"layers": len(layers), "bits": grid.bits, "group": grid.group,
                                 "method": options.method, "shapes_only": shapes_only,
                                 "bits_per_weight": BITS_PER_WEIGHT if options.method == "ternary" else grid.bits}
    if shapes_only:
        for layer in layers + experts:
            install(out, layer, grid, None, _sparse_encodings(out.params[layer.weight]))
        context.reports["quantize"] = report
        return out
    stats = context.calibration(module) if options.method in CALIBRATED else {}
    if experts:
        report["experts"] = quantize_experts(out, experts, grid, options, stats)
    missing = [layer.weight for layer in layers if options.method in CALIBRATED and layer.weight not in stats]
    if missing:
        raise PipelineError(f"pass quantize: calibration never reached {missing[0]}")
    if options.method == "awq":
        choices = apply_awq(out, layers, stats, grid)
        stats = {**stats, **{w: scaled_stats(stats[w], c.scale) for c in choices if c.folded for w in c.weights}}
        report["awq"] = [{"weights": list(c.weights), "alpha": round(c.alpha, 3), "folded": c.folded,
                          "error_vs_rtn": c.error / c.rtn_error if c.rtn_error else 1.0} for c in choices]
    for layer in layers:
        p = out.params[layer.weight]
        assert p.data is not None
        data = p.data.astype(np.float32)
        sparse = _sparse_encodings(p)
        pruned = (data == 0) if sparse else None
        try:
            q = QUANTIZERS[options.method](data, grid, stats.get(layer.weight), options, pruned)
        except ValueError as e:
            raise PipelineError(f"pass quantize: {layer.weight}: {e}") from None
        install(out, layer, grid, q, sparse)
    context.reports["quantize"] = report
    return out


def quantize_experts(module: Module, experts: list[LinearLayer], grid: Grid, options: QuantizeOptions,
                     stats: dict[str, LayerStats]) -> dict[str, object]:
    """Quantize stacked expert weights [E, N, K] expert by expert, a calibrated method on the
    statistics of the tokens routed to that expert (an expert no calibration token chose is rounded
    to nearest; AWQ searches each expert's clipping but folds no input scales, the router sharing
    the experts' input). Returns the report entry."""
    uncalibrated = 0
    for layer in experts:
        p = module.params[layer.weight]
        data = np.asarray(p.data, dtype=np.float32)
        sparse = _sparse_encodings(p)
        parts = []
        for e in range(layer.experts):
            stat = stats.get(expert_key(layer.weight, e))
            method = "rtn" if options.method in CALIBRATED and stat is None else options.method
            uncalibrated += method != options.method
            try:
                parts.append(QUANTIZERS[method](data[e], grid, stat, options, (data[e] == 0) if sparse else None))
            except ValueError as err:
                raise PipelineError(f"pass quantize: {layer.weight} expert {e}: {err}") from None
        zeros = None if parts[0].zeros is None else np.concatenate([q.zeros for q in parts])
        stacked = Quantized(np.concatenate([q.codes for q in parts]), np.concatenate([q.scales for q in parts]), zeros,
                            parts[0].grid)
        install(module, layer, grid, stacked, sparse)
    return {"projections": len(experts), "method": options.method, "rounded_to_nearest": uncalibrated}


def apply_awq(module: Module, layers: list[LinearLayer], stats: dict[str, LayerStats], grid: Grid) -> list[ScaleChoice]:
    """Search the AWQ scale of every input group of ``layers`` and fold it into ``module`` (in
    place; the function is unchanged). ``stats``: calibration of the module before any scaling."""
    choices = []
    for names in input_groups(module, [layer.weight for layer in layers]):
        data = [np.asarray(module.params[n].data, dtype=np.float32) for n in names]
        alpha, s, err, rtn = search_scale(data, stats[names[0]], grid)
        folded = fold_input_scale(module, names, s) if alpha > 0 else ""
        choices.append(ScaleChoice(tuple(names), alpha, s, err, rtn, folded))
    return choices


def _sparse_encodings(p: Param) -> tuple[SparseEncoding, ...]:
    return tuple(e for e in p.type.encodings if isinstance(e, SparseEncoding))


def install(module: Module, layer: LinearLayer, grid: Grid, q: Quantized | None,
            extra: tuple[SparseEncoding, ...] = (), scale_dtype: DType = F16) -> None:
    """Replace ``layer``'s float weight by the codes, scales (and zero points) of ``grid`` and a
    ``dequantize`` node; the data comes from ``q`` (None: shapes only). ``extra`` encodings
    (sparsity) go on the codes; ``scale_dtype`` is the scales' type (f16, or f32 for GGUF's Q6_K)."""
    shape, k = layer.shape, layer.in_features
    code_dtype = DType("int" if grid.symmetric else "uint", grid.bits)
    zero_dtype = None if grid.symmetric else DType("uint", grid.bits)
    encoding = QuantEncoding(grid.bits, grid.group, scale_dtype, grid.symmetric, zero_dtype)
    grouped = [*shape[:-1], k // grid.span(k)]
    codes_type = TensorType.of(shape, code_dtype, (encoding, *extra))
    params = [
        Param(f"{layer.weight}.codes", codes_type, None if q is None else as_dtype(q.codes.reshape(shape), code_dtype)),
        Param(f"{layer.weight}.scales", TensorType.of(grouped, scale_dtype),
              None if q is None else q.scales.reshape(grouped).astype(scale_dtype.numpy())),
    ]
    if zero_dtype is not None:
        zeros_type = TensorType.of(grouped, zero_dtype)
        params.append(Param(f"{layer.weight}.zeros", zeros_type,
                            None if q is None or q.zeros is None else as_dtype(q.zeros.reshape(grouped), zero_dtype)))

    def expand(b: Builder, values: dict[str, Value]) -> Value:
        return b.op("dequantize", [values[p.name] for p in params], {"group": grid.group})

    replace_param(module, layer.weight, params, expand)
