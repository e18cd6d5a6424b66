"""Offset codes and bit-plane packing (docs/lut.md), shared by the IR pass and the backends.

``planes[i, n, c] = sum_{j < g} bit_i(u[n, c*g + j]) << j`` with K zero-padded to chunks of g.
"""

from __future__ import annotations

import math

import numpy as np


def offset_codes(codes: np.ndarray, zeros: np.ndarray | None, bits: int, groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Unsigned codes ``u`` in [0, 2^bits) and integer zero points ``z`` [N, groups] with
    ``W = (u - z) * scale``: signed (symmetric) codes are shifted by 2^(bits-1)."""
    if zeros is None:
        offset = 1 << (bits - 1)
        u = codes.astype(np.int64) + offset
        z = np.full((codes.shape[0], groups), offset, dtype=np.int64)
    else:
        u, z = codes.astype(np.int64), zeros.astype(np.int64)
    if u.min(initial=0) < 0 or u.max(initial=0) >= 1 << bits:
        raise ValueError(f"codes do not fit {bits} bits")
    return u, z


def pack_planes(u: np.ndarray, bits: int, g: int) -> np.ndarray:
    """[N, K] unsigned codes -> [bits, N, ceil(K/g)] uint8 bit-plane indices."""
    n, k = u.shape
    chunks = math.ceil(k / g)
    padded = np.zeros((n, chunks * g), dtype=np.int64)
    padded[:, :k] = u
    grouped = padded.reshape(n, chunks, g)
    weights = (1 << np.arange(g))[None, None, :]
    return np.stack([(((grouped >> i) & 1) * weights).sum(axis=-1) for i in range(bits)]).astype(np.uint8)


def unpack_planes(planes: np.ndarray, k: int, g: int) -> np.ndarray:
    """The inverse of :func:`pack_planes`: [bits, N, C] -> [N, K] unsigned codes."""
    bits, n, chunks = planes.shape
    idx = planes.astype(np.int64)[..., None] >> np.arange(g)[None, None, None, :] & 1  # [bits, N, C, g]
    u = (idx * (1 << np.arange(bits))[:, None, None, None]).sum(axis=0)
    return u.reshape(n, chunks * g)[:, :k]
