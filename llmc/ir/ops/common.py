"""Helpers shared by op definitions: broadcasting, axis handling and dtype conversion."""

from __future__ import annotations

import numpy as np

from llmc.ir.registry import InferError
from llmc.ir.types import Dim, DType, TensorType


def broadcast_shapes(*shapes: tuple[Dim, ...]) -> tuple[Dim, ...]:
    """NumPy broadcasting on (possibly symbolic) shapes."""
    rank = max(len(s) for s in shapes)
    one = Dim.of(1)
    out = []
    for i in range(rank):
        dims = {s[len(s) - rank + i] for s in shapes if len(s) - rank + i >= 0}
        dims.discard(one)
        if len(dims) > 1:
            raise InferError(
                "shapes do not broadcast: " + ", ".join("[" + ",".join(map(str, s)) + "]" for s in shapes)
            )
        out.append(dims.pop() if dims else one)
    return tuple(out)


def same_dtype(types: list[TensorType]) -> DType:
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        raise InferError("operands have different dtypes: " + ", ".join(sorted(map(str, dtypes))))
    return dtypes.pop()


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise InferError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def round_bf16(x: np.ndarray) -> np.ndarray:
    """Round float32 values to the nearest bfloat16 (ties to even), kept in float32."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    out = rounded.astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), out)


def wrap_int(x: np.ndarray, dtype: DType) -> np.ndarray:
    """Two's-complement wrap of integer values to ``dtype``'s width."""
    x = np.asarray(x).astype(np.int64)
    if dtype.kind == "bool":
        return x != 0
    lo, hi = dtype.int_range()
    if dtype.bits < 64:
        span = 1 << dtype.bits
        x = (x - lo) % span + lo
    del hi
    return x.astype(dtype.numpy())


def widen(x: np.ndarray) -> np.ndarray:
    """The computation type of an operand: float16 in float32, integers in int64 (exact)."""
    if x.dtype == np.float16:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        return x.astype(np.int64)
    return x


def as_dtype(x: np.ndarray, dtype: DType) -> np.ndarray:
    """Convert a result to the storage of ``dtype`` (round bf16, wrap integers)."""
    x = np.asarray(x)
    if dtype.kind == "bfloat":
        return round_bf16(x.astype(np.float32))
    if dtype.is_float:
        return x.astype(dtype.numpy())
    if dtype.kind == "bool":
        return x.astype(np.bool_)
    if np.issubdtype(x.dtype, np.floating):
        x = np.trunc(x)
    return wrap_int(x, dtype)


def float_only(t: TensorType, what: str) -> None:
    if not t.dtype.is_float:
        raise InferError(f"{what} needs a float operand, got {t.dtype}")


def int_only(t: TensorType, what: str) -> None:
    if not (t.dtype.is_int or t.dtype.kind == "bool"):
        raise InferError(f"{what} needs an integer operand, got {t.dtype}")


def exact_int_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` of integer arrays, exact, as int64. Float64 BLAS is used when every partial sum
    provably stays below 2^53 (where doubles are exact integers), else int64 arithmetic."""
    a64, b64 = a.astype(np.int64), b.astype(np.int64)
    bound = int(np.abs(a64).max(initial=0)) * int(np.abs(b64).max(initial=0)) * a.shape[-1]
    if bound < 1 << 53:
        return np.matmul(a64.astype(np.float64), b64.astype(np.float64)).astype(np.int64)
    return np.matmul(a64, b64)
