"""Small TVMScript helpers shared by the kernels (plain Python, evaluated while parsing)."""

from __future__ import annotations

from tvm.script import tirx as T

V = 16
"""float32 / int32 lanes of one AVX-512 register."""


def vec(base: object, lanes: int = V) -> object:
    """The contiguous index vector ``base .. base + lanes - 1`` (a TIR ramp)."""
    return T.ramp(base, 1, lanes)


def splat(value: object, lanes: int = V) -> object:
    """``value`` broadcast to ``lanes`` lanes."""
    return T.broadcast(value, lanes)
