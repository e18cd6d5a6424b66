"""Weight tiles as the engines read them, and the inverse (for the simulators and tests).

A matrix-engine tile holds ``tile_n`` output rows of a layer: codes, then the scales, then
int16 zero points, int32 minimums and int32 bias when present, each part starting on a 64-byte boundary. Scales
are int32, or (``half_scales``: the layer's scales were f16 values) the f16 values, which the
engine turns into the same integer scales on chip (:func:`half_scale_ints`). Codes:

- ``dsp``: stored width 8 (code widths 5-8) or 4 (widths 2-4, two per byte, low nibble first),
  row-major;
- ``sparse`` N:M: per row and block of M, the N kept values (stored width as above) followed
  per row by their N in-block indices as nibbles;
- ``lut``: bit-planes: plane i holds bit i of every unsigned code, row-major, 8 per byte LSB first.
"""

from __future__ import annotations

import numpy as np

ALIGN = 64


def align(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


def vector_slice(count: int, lanes: int) -> int:
    """Elements of an f32 vector of ``count`` that each lane holds, striped over ``lanes`` weight channels: lane l
    holds elements ``l * slice ..`` (whole 64-byte words) at the vector's offset on its channel."""
    return align(-(-count // lanes), ALIGN // 4)


def stored_bits(bits: int) -> int:
    return 8 if bits > 4 else 4


def code_bytes(engine: str, bits: int, rows: int, k: int, sparse: tuple[int, int] | None) -> int:
    if engine == "lut":
        return bits * rows * k // 8
    if engine == "sparse":
        n, m = sparse  # type: ignore[misc]
        kept = rows * (k // m) * n
        return kept * stored_bits(bits) // 8 + kept // 2
    return rows * k * stored_bits(bits) // 8


def tile_layout(engine: str, bits: int, tile_n: int, k: int, groups: int, has_zero: bool, has_bias: bool,
                sparse: tuple[int, int] | None, half_scales: bool = False, has_min: bool = False) -> dict[str, int]:
    """Byte offsets of the parts of one tile and its total size."""
    out = {"codes": 0}
    end = align(code_bytes(engine, bits, tile_n, k, sparse))
    out["scales"], end = end, end + align(tile_n * groups * (2 if half_scales else 4))
    if has_zero:
        out["zeros"], end = end, end + align(tile_n * groups * 2)
    if has_min:
        out["mins"], end = end, end + align(tile_n * groups * 4)
    if has_bias:
        out["bias"], end = end, end + align(tile_n * 4)
    out["size"] = end
    return out


def _nibbles(values: np.ndarray) -> bytes:
    v = (values.astype(np.int64) & 0xF).reshape(-1)
    if v.size % 2:
        v = np.append(v, 0)
    return ((v[1::2] << 4) | v[0::2]).astype(np.uint8).tobytes()


def _from_nibbles(data: bytes, count: int, signed: bool) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    v = np.stack([raw & 0xF, raw >> 4], axis=-1).reshape(-1)[:count]
    return np.where(v >= 8, v - 16, v) if signed else v


def pack_values(values: np.ndarray, bits: int) -> bytes:
    if stored_bits(bits) == 8:
        return (values.astype(np.int64) & 0xFF).astype(np.uint8).tobytes()
    return _nibbles(values)


def unpack_values(data: bytes, count: int, bits: int, signed: bool) -> np.ndarray:
    if stored_bits(bits) == 8:
        raw = np.frombuffer(data[:count], dtype=np.uint8).astype(np.int64)
        return np.where(raw >= 128, raw - 256, raw) if signed else raw
    return _from_nibbles(data, count, signed)


def sparse_select(codes: np.ndarray, n: int, m: int) -> tuple[np.ndarray, np.ndarray]:
    """The kept values and in-block indices of N:M sparse rows [R, K]; refuses a denser block."""
    rows, k = codes.shape
    blocks = codes.reshape(rows, k // m, m)
    nonzero = blocks != 0
    if (nonzero.sum(axis=-1) > n).any():
        raise ValueError(f"weights are not {n}:{m} sparse")
    order = np.argsort(~nonzero, axis=-1, kind="stable")[..., :n]  # non-zeros first, in order
    order = np.sort(order, axis=-1)
    return np.take_along_axis(blocks, order, axis=-1), order


def pack_codes(codes: np.ndarray, engine: str, bits: int, sparse: tuple[int, int] | None) -> bytes:
    """Codes [R, K] of one tile in the engine's layout."""
    if engine == "lut":
        planes = [np.packbits(((codes >> i) & 1).astype(np.uint8).reshape(-1), bitorder="little")
                  for i in range(bits)]
        return b"".join(p.tobytes() for p in planes)
    if engine == "sparse":
        values, index = sparse_select(codes, *sparse)  # type: ignore[misc]
        return pack_values(values.reshape(-1), bits) + _nibbles(index.reshape(-1))
    return pack_values(codes.reshape(-1), bits)


def unpack_codes(data: bytes, rows: int, k: int, engine: str, bits: int, signed: bool,
                 sparse: tuple[int, int] | None) -> np.ndarray:
    """The inverse of :func:`pack_codes`."""
    if engine == "lut":
        plane = rows * k // 8
        out = np.zeros(rows * k, dtype=np.int64)
        for i in range(bits):
            out |= np.unpackbits(np.frombuffer(data[i * plane:(i + 1) * plane], np.uint8),
                                 bitorder="little").astype(np.int64) << i
        return out.reshape(rows, k)
    if engine == "sparse":
        n, m = sparse  # type: ignore[misc]
        kept = rows * (k // m) * n
        vbytes = kept * stored_bits(bits) // 8
        values = unpack_values(data[:vbytes], kept, bits, signed).reshape(rows, k // m, n)
        index = _from_nibbles(data[vbytes:], kept, False).reshape(rows, k // m, n)
        out = np.zeros((rows, k // m, m), dtype=np.int64)
        np.put_along_axis(out, index, values, axis=-1)
        return out.reshape(rows, k)
    return unpack_values(data, rows * k, bits, signed).reshape(rows, k)


def half_scale_ints(halves: np.ndarray, shift: int) -> np.ndarray:
    """The integer scales ``rint(h * 2^shift)`` (half to even) of f16 scales ``h`` given as their bits, as the
    engine computes them: the significand shifted left, or right with rounding."""
    h = halves.astype(np.int64)
    exponent, fraction = (h >> 10) & 0x1F, h & 0x3FF
    if (exponent == 0x1F).any():
        raise ValueError("an f16 scale is infinite or NaN")
    significand = np.where(exponent > 0, fraction | 0x400, fraction)
    power = np.maximum(exponent, 1) - 25 + shift  # h = significand * 2^(power - shift)
    left = significand << np.clip(power, 0, 52)
    right = np.clip(-power, 0, 52)
    kept, rest = significand >> right, significand & ((np.int64(1) << right) - 1)
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 1)
    rounded = kept + ((rest > half) | ((rest == half) & (kept & 1 == 1) & (right > 0)))
    magnitude = np.where(power >= 0, left, rounded)
    return np.where(h & 0x8000, -magnitude, magnitude)


def half_scale_bits(ints: np.ndarray, shift: int) -> np.ndarray:
    """f16 bits whose :func:`half_scale_ints` are ``ints`` (the nearest f16 to ``ints / 2^shift``, or a
    neighbour); ValueError when there are none, as for scales that were not f16 values."""
    target = ints.astype(np.int64)
    with np.errstate(over="ignore"):  # beyond f16's range: no candidate
        nearest = (target.astype(np.float64) * 2.0**-shift).astype(np.float16)
        candidates = (nearest, np.nextafter(nearest, np.float16(np.inf)), np.nextafter(nearest, np.float16(-np.inf)))

    def reproduces(halves: np.ndarray) -> np.ndarray:
        finite = np.isfinite(halves)
        return finite & (half_scale_ints(np.where(finite, halves, 0).astype(np.float16).view(np.uint16), shift) == target)

    out = nearest.copy()
    for candidate in candidates[1:]:
        wrong = ~reproduces(out)
        out[wrong] = candidate[wrong]
    if not reproduces(out).all():
        raise ValueError("the integer scales are not f16 values at this shift")
    return out.view(np.uint16)


def pack_tile(codes: np.ndarray, scales: np.ndarray, zeros: np.ndarray | None, bias: np.ndarray | None,
              layout: dict[str, int], engine: str, bits: int, sparse: tuple[int, int] | None,
              mins: np.ndarray | None = None) -> bytes:
    """One tile's bytes (rows beyond the layer are zero); ``scales`` as stored: int32, or f16 bits (uint16)."""
    out = bytearray(layout["size"])
    parts = [("codes", pack_codes(codes, engine, bits, sparse)),
             ("scales", scales.astype("<u2" if scales.dtype == np.uint16 else "<i4").tobytes())]
    if zeros is not None:
        parts.append(("zeros", zeros.astype("<i2").tobytes()))
    if mins is not None:
        if np.abs(mins.astype(np.int64)).max(initial=0) >= 1 << 31:
            raise ValueError("an integer minimum does not fit int32")
        parts.append(("mins", mins.astype("<i4").tobytes()))
    if bias is not None:
        parts.append(("bias", bias.astype("<i4").tobytes()))
    for name, data in parts:
        out[layout[name]:layout[name] + len(data)] = data
    return bytes(out)
