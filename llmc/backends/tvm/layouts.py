"""Weight layouts of the TVM linear kernels, packed once from the IR's parameters (NumPy only).

See ``kernels.py`` for what each layout means. Offset codes make every quantized weight
``W = (u - zero) * scale`` with unsigned ``u``: ``u = q - lo`` and ``zero = z - lo`` where ``lo``
is the smallest code of the code dtype (``-2^(b-1)`` for signed codes, 0 for unsigned ones), so
the arithmetic is that of the reference ``dequantize``.
"""

from __future__ import annotations

import numpy as np

from llmc.errors import LlmcError
from llmc.ir.types import DType


def slot_bits(bits: int) -> int:
    """Bits of the field one code takes in a packed word: ``bits`` rounded up to 1, 2, 4, 8 or 16."""
    return next(s for s in (1, 2, 4, 8, 16) if s >= bits)


def offset_codes(codes: np.ndarray, dtype: DType) -> np.ndarray:
    """Unsigned offset codes ``u = q - lo`` (uint32)."""
    lo = dtype.int_range()[0]
    return (codes.astype(np.int64) - lo).astype(np.uint32)


def offset_zeros(zeros: np.ndarray | None, shape: tuple[int, ...], dtype: DType) -> np.ndarray:
    """Zero points of the offset codes, float32: ``z - lo`` (``-lo`` without zero points)."""
    lo = dtype.int_range()[0]
    base = np.zeros(shape, np.int64) if zeros is None else zeros.astype(np.int64)
    return (base - lo).astype(np.float32)


def pack_words(u: np.ndarray, slot: int) -> np.ndarray:
    """``u [N, K]`` into ``[N, ceil(K / per)]`` uint32 words of ``per = 32 / slot`` codes, low bits first."""
    per = 32 // slot
    n, k = u.shape
    padded = np.zeros((n, -(-k // per) * per), np.uint64)
    padded[:, :k] = u
    fields = padded.reshape(n, -1, per) << (slot * np.arange(per, dtype=np.uint64))
    return fields.sum(axis=-1, dtype=np.uint64).astype(np.uint32)


def sparse_pack(values: np.ndarray, kept: np.ndarray, n: int, m: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` kept entries of each block of ``m`` columns of ``values [N, K]`` (``kept`` marks the
    non-zero weights) and their in-block positions (uint8), both ``[N, K n / m]``.

    A block with fewer than ``n`` non-zeros fills up with zero weights; a block with more is refused.
    """
    rows, k = values.shape
    if k % m:
        raise LlmcError(f"{what}: {k} columns are not a multiple of the sparsity block {m}")
    mask = kept.reshape(rows, k // m, m)
    if int(mask.sum(axis=-1).max(initial=0)) > n:
        raise LlmcError(f"{what}: a block of {m} has more than {n} non-zeros; the weight is not {n}:{m} sparse")
    order = np.argsort(~mask, axis=-1, kind="stable")[..., :n]  # non-zeros first, in column order
    picked = np.take_along_axis(values.reshape(rows, k // m, m), order, axis=-1)
    return picked.reshape(rows, -1), order.astype(np.uint8).reshape(rows, -1)
