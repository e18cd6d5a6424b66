"""Pruning of a weight ``W`` [N, K] (N outputs, K inputs): patterns, masks and SparseGPT.

Patterns: ``n:m`` keeps at most ``n`` of every ``m`` consecutive input columns of each row (the
combinations a sparse DSP chain supports, :data:`SUPPORTED_NM`); unstructured prunes a
``ratio`` of the weights. Masks are boolean arrays shaped like ``W``, True where a weight is
kept. Counts round to nearest: ``round(ratio * count)`` weights are pruned in each unit.

* magnitude: score ``|W|``; N:M per group, unstructured over the whole layer.
* Wanda (Sun et al. 2023): score ``|W_ij| * ||x_j||_2``; N:M per group, unstructured per output
  row (the comparison group of the paper).
* SparseGPT (Frantar & Alistarh 2023): columns are pruned left to right and each pruning error
  is compensated by an optimal-brain-surgeon update of the columns not yet visited, using the
  upper Cholesky factor ``U`` of ``H^-1`` (``H^-1 = U^T U``, ``H`` the layer Hessian). The mask
  is chosen with the score ``w^2 / U_jj^2`` on the updated weights: per group of ``m`` columns
  when the first column of the group is reached (N:M), or once per block of columns over the
  whole block (unstructured, so the sparsity adapts across rows and columns of the block).
  Updates inside a block are applied column by column, to the rest of the layer once per block.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SUPPORTED_NM = ((2, 4), (4, 8), (8, 16), (2, 16), (4, 16))
SPARSEGPT_BLOCK = 128


@dataclass(frozen=True)
class Pattern:
    """``n:m`` structured sparsity (``m`` > 0) or unstructured with a ``ratio`` of zeros."""

    n: int = 0
    m: int = 0
    ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.m or self.n:
            if self.ratio:
                raise ValueError("an N:M pattern fixes its ratio (1 - N/M); give no ratio with it")
            if not 0 < self.n <= self.m:
                raise ValueError(f"N:M sparsity needs 0 < N <= M, got {self.n}:{self.m}")
            if self.m not in (4, 8, 16):
                raise ValueError(f"N:M sparsity needs M in 4, 8 or 16, got {self.n}:{self.m}")
            if (self.n, self.m) not in SUPPORTED_NM:
                supported = ", ".join(f"{n}:{m}" for n, m in SUPPORTED_NM)
                raise ValueError(f"{self.n}:{self.m} is not supported by the sparse DSP chain ({supported})")
        elif not 0.0 < self.ratio < 1.0:
            raise ValueError(f"the sparsity ratio must be in (0, 1), got {self.ratio}")

    @staticmethod
    def parse(text: str, ratio: float = 0.5) -> Pattern:
        """``N:M``, ``unstructured`` (with ``ratio``) or a bare ratio such as ``0.6``."""
        text = text.strip()
        if ":" in text:
            n, _, m = text.partition(":")
            if not (n.strip().isdigit() and m.strip().isdigit()):
                raise ValueError(f"bad N:M pattern '{text}'")
            return Pattern(int(n), int(m))
        if text == "unstructured":
            return Pattern(ratio=ratio)
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"bad sparsity pattern '{text}': write N:M, unstructured or a ratio") from None
        return Pattern(ratio=value)

    @property
    def structured(self) -> bool:
        return self.m > 0

    @property
    def sparsity(self) -> float:
        """The fraction of weights pruned."""
        return 1.0 - self.n / self.m if self.structured else self.ratio

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.structured else f"unstructured({self.ratio!r})"


def nm_keep(score: np.ndarray, n: int, m: int) -> np.ndarray:
    """Keep the ``n`` highest scores of every ``m`` consecutive columns (ties: lower column)."""
    rows, k = score.shape
    groups = score.reshape(rows, k // m, m)
    top = np.argsort(-groups, axis=-1, kind="stable")[..., :n]
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, top, True, axis=-1)
    return keep.reshape(rows, k)


def ratio_keep(score: np.ndarray, ratio: float, per_row: bool) -> np.ndarray:
    """Prune the ``round(ratio * count)`` lowest scores of each row, or of the whole array."""
    if per_row:
        pruned = int(round(ratio * score.shape[1]))
        order = np.argsort(score, axis=1, kind="stable")[:, :pruned]
        keep = np.ones(score.shape, dtype=bool)
        np.put_along_axis(keep, order, False, axis=1)
        return keep
    pruned = int(round(ratio * score.size))
    keep = np.ones(score.size, dtype=bool)
    keep[np.argsort(score, axis=None, kind="stable")[:pruned]] = False
    return keep.reshape(score.shape)


def magnitude_mask(w: np.ndarray, pattern: Pattern) -> np.ndarray:
    """Keep the largest ``|W|`` (per N:M group, or over the whole layer)."""
    score = np.abs(w.astype(np.float64))
    return nm_keep(score, pattern.n, pattern.m) if pattern.structured else ratio_keep(score, pattern.ratio, False)


def wanda_mask(w: np.ndarray, sq_sum: np.ndarray, pattern: Pattern) -> np.ndarray:
    """Keep the largest ``|W_ij| * ||x_j||`` (``sq_sum[j] = ||x_j||^2`` over the calibration
    tokens), per N:M group or per output row."""
    score = np.abs(w.astype(np.float64)) * np.sqrt(np.maximum(sq_sum.astype(np.float64), 0.0))[None, :]
    return nm_keep(score, pattern.n, pattern.m) if pattern.structured else ratio_keep(score, pattern.ratio, True)


def inverse_cholesky(h: np.ndarray, damp: float) -> np.ndarray:
    """Upper-triangular ``U`` with ``(H + damp * mean(diag H) * I)^-1 = U^T U``."""
    k = h.shape[0]
    damped = h + damp * float(np.mean(np.diag(h))) * np.eye(k)
    inverse = np.linalg.inv(damped)
    try:
        return np.linalg.cholesky((inverse + inverse.T) / 2).T
    except np.linalg.LinAlgError:
        raise ValueError("the Hessian is not positive definite; raise the dampening") from None


def sparsegpt(w: np.ndarray, hessian: np.ndarray, pattern: Pattern, damp: float = 0.01,
              block: int = SPARSEGPT_BLOCK) -> np.ndarray:
    """Prune ``w`` [N, K] with SparseGPT given the Hessian ``H`` [K, K] of the layer's squared
    output error (``2 X^T X / rows``): returns the pruned and updated weights (float32), whose
    zeros follow ``pattern``. Inputs never seen in calibration (``H_jj = 0``) have their weights
    pruned first (they cost nothing on the calibration data)."""
    k = w.shape[1]
    if pattern.structured and block % pattern.m:
        raise ValueError(f"SparseGPT block {block} must be a multiple of M={pattern.m}")
    w = w.astype(np.float64)
    h = hessian.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    u = inverse_cholesky(h, damp)
    keep = np.ones(w.shape, dtype=bool)
    for start in range(0, k, block):
        end = min(start + block, k)
        wb, ub = w[:, start:end].copy(), u[start:end, start:end]
        d = np.diag(ub)
        errors = np.zeros_like(wb)
        if not pattern.structured:
            keep[:, start:end] = ratio_keep(wb**2 / d**2, pattern.ratio, False)
        for i in range(end - start):
            if pattern.structured and i % pattern.m == 0:
                group = slice(i, i + pattern.m)
                keep[:, start + i:start + i + pattern.m] = nm_keep(wb[:, group] ** 2 / d[group] ** 2, pattern.n, pattern.m)
            q = np.where(keep[:, start + i], wb[:, i], 0.0)
            errors[:, i] = (wb[:, i] - q) / d[i]
            wb[:, i:] -= np.outer(errors[:, i], ub[i, i:])
            wb[:, i] = q
        w[:, start:end] = wb
        w[:, end:] -= errors @ u[start:end, end:]
    return np.where(keep, w, 0.0).astype(np.float32)
