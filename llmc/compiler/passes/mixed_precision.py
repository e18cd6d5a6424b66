"""``mixed-precision``: bit widths per layer or per group under a bits-per-weight budget.

Sensitivity is the Hessian-weighted output error of quantizing a unit (a whole layer, or a
group of ``group`` input columns of a layer) at each candidate width:
``E = sum_rows d_g^T H_gg d_g`` with ``d = W - Q(W)`` and ``H = X^T X`` from calibration, which
is the squared error the unit adds to the layer's output on the calibration tokens (SliM-LLM
and SqueezeLLM allocate by the same kind of salience). Each unit's cost is its stored bits:
codes, f16 scales and (per group) a 2-bit width tag. Allocation starts every unit at the lowest
width and upgrades greedily by the best error reduction per extra bit until the budget is spent.

In the IR a per-group allocation stores one codes/scales pair per width class, each holding
that class's column groups; ``W = gather(concat(dequantize(...), ...), order)`` restores the
column order (weight-side ops only: activations are untouched).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from llmc.compiler.calibrate import LayerStats, calibration_windows
from llmc.compiler.evaluate import window_nll
from llmc.compiler.passes.linear import (
    LinearLayer,
    check_group_divides,
    clone,
    linear_layers,
    replace_param,
    require_data,
    set_param,
)
from llmc.compiler.passes.quantize import QUANTIZERS, QuantizeOptions, install
from llmc.compiler.pipeline import PassContext, PipelineError, register_pass
from llmc.compiler.quant.grid import Grid, Quantized, quantize_rtn
from llmc.ir.builder import Builder
from llmc.ir.graph import Module, Param, Value
from llmc.ir.types import F16, I32, DType, QuantEncoding, TensorType

U8 = DType("uint", 8)

TAG_BITS = 8  # per column group: where its columns are stored (a u8 slot)


@dataclass(frozen=True)
class MixedPrecisionOptions:
    budget: float = 3.0  # average stored bits per weight, scales and tags included
    min_bits: int = 2  # widths to choose from: min_bits..max_bits
    max_bits: int = 4
    group: int = 128
    granularity: str = "group"  # "group" or "layer"
    method: str = "rtn"  # how each unit is quantized once its width is chosen (rtn or gptq)
    sensitivity: str = "loss"  # "loss": Hessian errors weighted per layer by its measured loss increase

    def __post_init__(self) -> None:
        bits = self.widths
        if not 2 <= self.min_bits <= self.max_bits <= 8:
            raise ValueError(f"widths must satisfy 2 <= min_bits <= max_bits <= 8, got {self.min_bits}..{self.max_bits}")
        if self.group <= 0:
            raise ValueError("mixed precision needs a positive group size")
        if self.sensitivity not in ("loss", "hessian"):
            raise ValueError(f"sensitivity must be 'loss' or 'hessian', got '{self.sensitivity}'")
        if self.method not in ("rtn", "gptq"):
            raise ValueError(f"method must be 'rtn' or 'gptq', got '{self.method}'")
        if self.granularity not in ("group", "layer"):
            raise ValueError(f"granularity must be 'group' or 'layer', got '{self.granularity}'")
        if self.budget < self.unit_cost(bits[0], rows=1 << 30):
            raise ValueError(f"budget {self.budget} is below the minimum {self.unit_cost(bits[0], 1 << 30):.3f} bits "
                             f"per weight ({bits[0]}-bit codes with scales)")

    @property
    def widths(self) -> list[int]:
        return list(range(self.min_bits, self.max_bits + 1))

    def unit_cost(self, bits: int, rows: int = 1) -> float:
        """Stored bits per weight at a width: codes, one f16 scale per row and group, and (per
        group) one slot tag shared by the ``rows`` rows of the column group."""
        tag = TAG_BITS / rows if self.granularity == "group" else 0
        return bits + (16 + tag) / self.group


def check_mixed(module: Module, options: MixedPrecisionOptions) -> None:
    layers = linear_layers(module)
    require_data("mixed-precision", module, layers)
    check_group_divides("mixed-precision", layers, options.group)
    for layer in layers:
        if layer.in_features // options.group > 256:
            raise PipelineError(f"pass mixed-precision: more than 256 groups in {layer.weight}")


def unit_errors(w: np.ndarray, stats: LayerStats, widths: list[int], group: int, per_group: bool) -> np.ndarray:
    """Hessian-weighted error [units, widths] of RTN at each width."""
    k = w.shape[1]
    errors = []
    for bits in widths:
        d = w - quantize_rtn(w, Grid(bits, group)).dequantize()
        if per_group:
            errs = [np.einsum("ij,jk,ik->", d[:, g:g + group], stats.gram[g:g + group, g:g + group], d[:, g:g + group])
                    for g in range(0, k, group)]
        else:
            errs = [np.einsum("ij,jk,ik->", d, stats.gram, d)]
        errors.append(errs)
    return np.asarray(errors).T


def allocate(errors: list[np.ndarray], sizes: list[int], costs: list[np.ndarray], budget: float) -> list[np.ndarray]:
    """Greedy upgrades by error reduction per extra bit. ``errors[i]`` is [units_i, widths];
    every unit of layer ``i`` holds ``sizes[i]`` weights costing ``costs[i][w]`` bits each at
    width index ``w``. Returns width indices per unit."""
    choice = [np.zeros(len(e), dtype=np.int64) for e in errors]
    total = sum(len(e) * s for e, s in zip(errors, sizes))
    spent = sum(c[0] * len(e) * s for e, s, c in zip(errors, sizes, costs))
    last = len(costs[0]) - 1
    while True:
        best, best_gain = None, 0.0
        for i, (err, size, cost) in enumerate(zip(errors, sizes, costs)):
            c = choice[i]
            if (c == last).all():
                continue
            nxt = np.minimum(c + 1, last)
            rows = np.arange(len(c))
            extra = (cost[nxt] - cost[c]) * size
            gain = np.where(c < last, (err[rows, c] - err[rows, nxt]) / np.maximum(extra, 1e-30), -np.inf)
            j = int(np.argmax(gain))
            if gain[j] > best_gain and spent + extra[j] <= budget * total + 1e-9:
                best, best_gain = (i, j, extra[j]), gain[j]
        if best is None:
            return choice
        i, j, extra_bits = best
        choice[i][j] += 1
        spent += extra_bits


@register_pass("mixed-precision", MixedPrecisionOptions, check=check_mixed)
def mixed_precision(module: Module, options: MixedPrecisionOptions, context: PassContext) -> Module:
    """Sensitivity-driven bit allocation per layer or per group under a bits-per-weight budget."""
    out = clone(module)
    layers = linear_layers(out)
    stats = context.calibration(out)
    widths, per_group = options.widths, options.granularity == "group"
    weights = [out.params[layer.weight].data.astype(np.float32) for layer in layers]
    errors = [unit_errors(w, stats[layer.weight], widths, options.group, per_group) for w, layer in zip(weights, layers)]
    if options.sensitivity == "loss":
        scale = loss_weights(out, layers, weights, errors, widths, options.group, context)
        errors = [e * f for e, f in zip(errors, scale)]
    sizes = [layer.out_features * (options.group if per_group else layer.in_features) for layer in layers]
    costs = [np.asarray([options.unit_cost(b, layer.out_features) for b in widths]) for layer in layers]
    choice = allocate(errors, sizes, costs, options.budget)
    allocation = {}
    for layer, w, c in zip(layers, weights, choice):
        bits = [widths[i] for i in c]
        allocation[layer.weight] = bits
        quantizer = _quantizer(options.method, stats[layer.weight], options.group)
        if per_group and len(set(bits)) > 1:
            _install_groups(out, layer, w, bits, options.group, quantizer)
        else:
            q = quantizer(w, bits[0], np.arange(layer.in_features))
            install(out, layer, q.grid, q)
    flat = [b for bits in allocation.values() for b in bits]
    context.reports["mixed-precision"] = {
        "budget": options.budget, "granularity": options.granularity, "allocation": allocation,
        "histogram": {str(b): flat.count(b) for b in widths},
    }
    return out


def loss_weights(module: Module, layers: list[LinearLayer], weights: list[np.ndarray], errors: list[np.ndarray],
                 widths: list[int], group: int, context: PassContext, windows: int = 8) -> list[float]:
    """Per layer, the calibration loss increase per unit of Hessian error: quantizing the layer
    alone at the lowest width, ``(NLL_q - NLL) / E``. Layer output errors are not equally harmful
    (a layer's error is amplified or damped by everything after it); this puts every layer's
    unit errors on the scale of the model's loss before they compete for bits."""
    config = replace(context.calibration_config, samples=min(windows, context.calibration_config.samples))
    sample = calibration_windows(module, context.tokenizer_json, config)
    base = sum(window_nll(module, w) for w in sample)
    probe = clone(module)
    factors = []
    for layer, w, err in zip(layers, weights, errors):
        original = probe.params[layer.weight].data
        set_param(probe, layer.weight, quantize_rtn(w, Grid(widths[0], group)).dequantize().astype(original.dtype))
        increase = sum(window_nll(probe, x) for x in sample) - base
        set_param(probe, layer.weight, original)
        factors.append(max(increase, 1e-6) / max(float(err[:, 0].sum()), 1e-30))
    return factors


Quantizer = Callable[[np.ndarray, int, np.ndarray], Quantized]


def _quantizer(method: str, stats: LayerStats, group: int) -> Quantizer:
    """Quantize the given columns of a weight at a width (GPTQ sees those columns' Hessian)."""

    def run(w: np.ndarray, bits: int, cols: np.ndarray) -> Quantized:
        grid = Grid(bits, group)
        if method == "rtn":
            return quantize_rtn(w, grid)
        sub = replace(stats, gram=stats.gram[np.ix_(cols, cols)])
        options = QuantizeOptions(bits=bits, group=group, method=method)
        return QUANTIZERS[method](w, grid, sub, options)

    return run


def _install_groups(module: Module, layer: LinearLayer, w: np.ndarray, bits: list[int], group: int,
                    quantizer: Quantizer) -> None:
    """One codes/scales pair per width class over that class's column groups; the stored
    position of every natural group (``W.group_slots``, one small integer per group) rebuilds
    the column order with a gather."""
    n, k = layer.out_features, layer.in_features
    params: list[Param] = []
    stored: list[int] = []  # natural group ids in stored order
    for width in sorted(set(bits)):
        ids = [g for g, b in enumerate(bits) if b == width]
        stored.extend(ids)
        cols = np.concatenate([np.arange(g * group, (g + 1) * group) for g in ids])
        q = quantizer(w[:, cols], width, cols)
        dtype = DType("int", width)
        enc = QuantEncoding(width, group, F16, True)
        params += [Param(f"{layer.weight}.w{width}.codes", TensorType.of([n, len(cols)], dtype, (enc,)), q.codes.astype(dtype.numpy())),
                   Param(f"{layer.weight}.w{width}.scales", TensorType.of([n, q.scales.shape[1]], F16), q.scales)]
    slots = np.argsort(np.asarray(stored)).astype(np.uint8)  # natural group -> stored position
    params.append(Param(f"{layer.weight}.group_slots", TensorType.of([len(slots)], U8), slots))

    def expand(b: Builder, values: dict[str, Value]) -> Value:
        parts = [b.op("dequantize", [values[params[i].name], values[params[i + 1].name]], {"group": group})
                 for i in range(0, len(params) - 1, 2)]
        slots_v = b.op("reshape", [b.op("cast", [values[params[-1].name]], {"dtype": I32})], {"shape": [len(slots), 1]})
        base = b.op("mul", [slots_v, b.constant(group, I32)])
        offsets = b.op("reshape", [b.op("iota", [], {"start": 0, "end": group, "dtype": I32})], {"shape": [1, group]})
        columns = b.op("reshape", [b.op("add", [base, offsets])], {"shape": [k]})
        return b.op("gather", [b.op("concat", parts, {"axis": 1}), columns], {"axis": 1})

    replace_param(module, layer.weight, params, expand)
