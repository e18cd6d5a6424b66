"""Weight layouts of the TVM linear kernels, packed once from the IR's parameters (NumPy only).

See ``kernels.py`` for what each layout means; the codes packed are the unsigned offset codes of
docs/lut.md (``llmc.compiler.lut.pack.offset_codes``).
"""

from __future__ import annotations

import numpy as np

from llmc.errors import LlmcError


def slot_bits(bits: int) -> int:
    """Bits of the field one code takes in a packed word: ``bits`` rounded up to 1, 2, 4, 8 or 16."""
    return next(s for s in (1, 2, 4, 8, 16) if s >= bits)


def pack_words(u: np.ndarray, slot: int) -> np.ndarray:
    """Codes ``u [N, K]`` in ``[0, 2^slot)`` into ``[N, ceil(K / per)]`` uint32 words of ``per = 32 / slot`` codes, low bits first."""
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
