"""GPTQ (Frantar et al., 2022): quantize a weight column by column, feeding each column's
rounding error back into the columns not yet quantized, weighted by the inverse Hessian of the
layer-wise squared error ``||X W^T - X Q^T||^2`` (``H = 2 X^T X / rows``).

With ``U`` the upper Cholesky factor of ``H^-1``, quantizing column ``j`` to ``q_j`` updates
every later column ``l`` by ``-(w_j - q_j) / U[j, j] * U[j, l]``; the updates are applied lazily,
one block of columns at a time. Options:

- *act-order*: columns are visited in order of decreasing ``diag(H)`` (the most salient inputs
  first, while the most columns are left to absorb their error);
- *groups*: without act-order, a group's scales (and zeros) come from the error-updated weights
  when its first column is reached; with act-order, the "static groups" variant computes them on
  the original weight for every natural group before the loop, so that each group of ``group``
  consecutive inputs keeps one scale (what the IR's ``dequantize`` reads);
- *pruned weights*: entries flagged in ``pruned`` stay exactly zero (they are never updated and
  their code is the zero code), so quantization keeps a sparsity pattern.

Inputs never seen in calibration (``H[j, j] = 0``) get ``H[j, j] = 1``: their columns are rounded
to nearest and exchange no error with the others. Every code is ``to_codes`` of the column as
it stands when quantized, with the stored f16 scales, so :meth:`Quantized.dequantize` is
exactly what the interpreter computes.
"""

from __future__ import annotations

import numpy as np

from llmc.compiler.calibrate import LayerStats
from llmc.compiler.quant.grid import Grid, Quantized, group_params, to_codes


def inverse_hessian_factor(hessian: np.ndarray, damp: float) -> np.ndarray:
    """Upper Cholesky factor ``U`` of ``(H + damp * mean(diag H) * I)^-1`` (float64), after
    giving dead inputs (zero diagonal) a unit diagonal."""
    h = np.array(hessian, dtype=np.float64)
    diag = np.diag(h).copy()
    dead = diag == 0
    diag[dead] = 1.0
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    mean = float(diag.mean()) if diag.size else 1.0
    h[np.diag_indices_from(h)] = diag + damp * mean
    try:
        lower = np.linalg.cholesky(h)
        lower_inv = np.linalg.inv(lower)
        return np.linalg.cholesky(lower_inv.T @ lower_inv).T
    except np.linalg.LinAlgError:
        raise ValueError(f"GPTQ: the Hessian is not positive definite with damp={damp}; raise damp") from None


def dequantize_columns(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None) -> np.ndarray:
    """``(codes - zeros) * float32(scales)`` elementwise: the IR's ``dequantize`` for one column."""
    c = codes.astype(np.int64)
    if zeros is not None:
        c = c - zeros.astype(np.int64)
    return c.astype(np.float32) * scales.astype(np.float32)


def quantize_gptq(w: np.ndarray, grid: Grid, stats: LayerStats, damp: float = 0.01, act_order: bool = True,
                  pruned: np.ndarray | None = None, block: int = 128) -> Quantized:
    """GPTQ-quantize ``w`` [N, K] on ``grid`` with the input statistics ``stats`` of its layer.

    ``pruned`` (bool [N, K]) marks weights to keep at zero; ``block`` is the lazy-update width
    (rounded up to a multiple of the group size so that no group straddles two blocks).
    """
    n, k = w.shape
    span = grid.span(k)
    if stats.gram.shape != (k, k):
        raise ValueError(f"GPTQ: Hessian shape {stats.gram.shape} does not match K={k}")
    hessian = stats.hessian
    order = np.argsort(-np.diag(hessian), kind="stable") if act_order else np.arange(k)
    upper = inverse_hessian_factor(hessian[np.ix_(order, order)], damp)
    base = np.array(w, dtype=np.float64)
    keep = None
    if pruned is not None:
        base[pruned] = 0.0
        keep = ~np.asarray(pruned, dtype=bool)[:, order]
    weights = base[:, order]
    group_of = order // span  # the natural group of each visited column
    static = act_order or not grid.group
    if static:  # every group's parameters from the original weight, before any update
        scales, zeros = group_params(base, grid)
    else:
        scales = np.ones((n, k // span), dtype=np.float16)
        zeros = None if grid.symmetric else np.zeros((n, k // span), dtype=np.uint8)
    codes = np.zeros((n, k), dtype=np.int32)
    width = span * -(-block // span) if grid.group else block
    for start in range(0, k, width):
        end = min(start + width, k)
        cols = weights[:, start:end]  # a view: updated in place
        errors = np.zeros((n, end - start))
        for i in range(end - start):
            j = start + i
            g = group_of[j]
            if not static and j % span == 0:
                s, z = group_params(cols[:, i:i + span], grid)
                scales[:, g] = s[:, 0]
                if zeros is not None and z is not None:
                    zeros[:, g] = z[:, 0]
            zero = None if zeros is None else zeros[:, g:g + 1]
            column = cols[:, i:i + 1]
            code = to_codes(column, scales[:, g:g + 1], zero, grid)
            codes[:, j] = code[:, 0]
            err = (column[:, 0] - dequantize_columns(code, scales[:, g:g + 1], zero)[:, 0]) / upper[j, j]
            cols[:, i:] -= np.outer(err, upper[j, j:end])
            if keep is not None:
                cols[:, i:] *= keep[:, j:end]
            errors[:, i] = err
        weights[:, end:] -= errors @ upper[start:end, end:]
        if keep is not None:
            weights[:, end:] *= keep[:, end:]
    out = np.empty_like(codes)
    out[:, order] = codes
    return Quantized(out, scales, zeros, grid)
