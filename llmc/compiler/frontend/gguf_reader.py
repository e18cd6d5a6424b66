"""A GGUF file read through ``gguf.GGUFReader``, with every problem an error naming the file and the
metadata key or tensor: typed metadata access, the tensor inventory checked against a model's
needs, dequantized floats, and the codes, scales and minimums of the block types llmc keeps
(``gguf_blocks.py``)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from llmc.compiler.frontend.gguf_blocks import KEPT, Form, min_blocks, q3_k_blocks
from llmc.errors import FrontendError

Q = gguf.GGMLQuantizationType
FLOAT_TYPES = (Q.F32, Q.F16, Q.BF16, Q.F64)
_MISSING = object()


class _Reader(gguf.GGUFReader):
    """``GGUFReader`` that checks each tensor's type and extent before mapping it, so that a
    truncated file names its first incomplete tensor."""

    def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
        size = len(self.data)
        for field in fields:
            _, name_bytes, _, dims, raw_type, offset = field.parts
            name = bytes(name_bytes).decode("utf-8", "replace")
            try:
                qtype = Q(int(raw_type[0]))
            except ValueError:
                raise FrontendError(f"tensor '{name}' has unknown GGML type {int(raw_type[0])}") from None
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            count = int(np.prod(dims.astype(np.int64)))
            if count % block or (len(dims) and int(dims[0]) % block):
                raise FrontendError(f"tensor '{name}': rows of {int(dims[0])} are not whole {qtype.name} blocks")
            end = int(start_offs) + int(offset[0]) + count // block * type_size
            if end > size:
                raise FrontendError(f"tensor '{name}' is truncated (its data ends at byte {end}, the file has {size})")
        super()._build_tensors(start_offs, fields)


class GgufFile:
    """A parsed GGUF file: metadata by key, tensors by name."""

    def __init__(self, path: Path, reader: gguf.GGUFReader) -> None:
        self.path = path
        self.reader = reader
        self.tensors = {t.name: t for t in reader.tensors}

    @classmethod
    def open(cls, path: Path) -> GgufFile:
        try:
            return cls(path, _Reader(path))
        except FrontendError as e:
            raise FrontendError(f"{path}: {e}") from None
        except Exception as e:  # the reader fails with ValueError, IndexError, OSError... on a bad header
            detail = " ".join(str(e).split())[:200] or type(e).__name__
            raise FrontendError(f"{path}: not a readable GGUF file (truncated or corrupt: {detail})") from None

    # --- metadata ---------------------------------------------------------------------------

    def keys(self) -> list[str]:
        return list(self.reader.fields)

    def value(self, key: str, default: Any = _MISSING) -> Any:
        field = self.reader.get_field(key)
        if field is None:
            if default is _MISSING:
                raise FrontendError(f"{self.path}: metadata '{key}' is missing")
            return default
        try:
            return field.contents()
        except Exception:  # a malformed string or array
            raise FrontendError(f"{self.path}: metadata '{key}' is unreadable") from None

    def string(self, key: str) -> str:
        value = self.value(key)
        if not isinstance(value, str):
            raise FrontendError(f"{self.path}: metadata '{key}' must be a string, got {value!r}")
        return value

    def integer(self, key: str, default: Any = _MISSING, minimum: int = 1) -> Any:
        """An integer >= ``minimum``; a per-layer list whose entries are all equal counts as one."""
        value = self.value(key, default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, list) and value and all(v == value[0] for v in value):
            value = value[0]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise FrontendError(f"{self.path}: metadata '{key}' must be an integer >= {minimum}, got {value!r}")
        return value

    def number(self, key: str, default: Any = _MISSING) -> float:
        value = self.value(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
            raise FrontendError(f"{self.path}: metadata '{key}' must be a positive number, got {value!r}")
        return float(value)

    # --- tensors ----------------------------------------------------------------------------

    def has_tensor(self, name: str) -> bool:
        return name in self.tensors

    def tensor(self, name: str) -> Any:
        if name not in self.tensors:
            raise FrontendError(f"{self.path}: tensor '{name}' is missing")
        return self.tensors[name]

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape in NumPy order (GGUF lists the dimensions innermost first)."""
        return tuple(int(d) for d in reversed(self.tensor(name).shape.tolist()))

    def check_inventory(self, shapes: dict[str, tuple[int, ...]], extra: Iterable[str] = ()) -> None:
        """Every tensor of ``shapes`` (GGUF name -> NumPy shape) present with that shape, and no tensor
        beyond them and ``extra``."""
        for name, shape in shapes.items():
            got = self.shape(name)
            if got != tuple(shape):
                raise FrontendError(f"{self.path}: tensor '{name}' has shape {list(got)}, the metadata needs "
                                    f"{list(shape)}")
        unexpected = sorted(set(self.tensors) - set(shapes) - set(extra))
        if unexpected:
            more = f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""
            raise FrontendError(f"{self.path}: unexpected tensor '{unexpected[0]}'{more} for this architecture")

    def floats(self, name: str) -> np.ndarray:
        """The tensor dequantized by gguf, as float32 in NumPy order."""
        t = self.tensor(name)
        try:
            data = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        except NotImplementedError:
            raise FrontendError(f"{self.path}: tensor '{name}' is {t.tensor_type.name}, which gguf cannot "
                                "dequantize") from None
        return np.array(data, dtype=np.float32).reshape(self.shape(name))

    def type_name(self, name: str) -> str:
        return self.tensor(name).tensor_type.name

    def is_float(self, name: str) -> bool:
        return self.tensor(name).tensor_type in FLOAT_TYPES

    def kept(self, name: str) -> Form | None:
        """The form llmc keeps the tensor's codes in (``gguf_blocks.KEPT``), or None."""
        return KEPT.get(self.tensor(name).tensor_type)

    def codes(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Codes [N, K], scales [N, K / group] and minimums (like the scales, or None) of a kept block
        type, whose dequantization is exactly gguf's: Q8_0's ``qs``, Q4_0's ``q - 8`` and Q3_K's
        signed codes from the blocks; Q5_0's ``q - 16`` and Q6_K's ``q - 32`` (with the f32 scale ``d *
        sc`` of every 16 weights) read back from gguf's own dequantization, and checked exact; the
        unsigned codes, scales and minimums of Q4_1, Q5_1, Q2_K, Q4_K and Q5_K from the blocks."""
        t = self.tensor(name)
        rows, cols = self.shape(name)
        block = gguf.GGML_QUANT_SIZES[t.tensor_type][0]
        blocks = np.asarray(t.data, dtype=np.uint8).reshape(rows * (cols // block), -1)
        if t.tensor_type in (Q.Q8_0, Q.Q4_0):
            blocks = blocks.reshape(rows, cols // 32, -1)
            scales = np.ascontiguousarray(blocks[..., :2]).view(np.float16)[..., 0]
            qs = np.ascontiguousarray(blocks[..., 2:])
            if t.tensor_type == Q.Q8_0:
                codes = qs.view(np.int8)
            else:  # byte j holds element j (low nibble) and element j + 16 (high)
                codes = np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.int8) - np.int8(8)
            return codes.reshape(rows, cols), scales, None
        if t.tensor_type == Q.Q3_K:
            codes, scales = q3_k_blocks(blocks)
            return codes.reshape(rows, cols), scales.reshape(rows, -1), None
        if t.tensor_type in (Q.Q4_1, Q.Q5_1, Q.Q2_K, Q.Q4_K, Q.Q5_K):
            codes, scales, mins = min_blocks(t.tensor_type, blocks)
            return codes.reshape(rows, cols), scales.reshape(rows, -1), mins.reshape(rows, -1)
        if t.tensor_type == Q.Q5_0:
            blocks = blocks.reshape(rows, cols // 32, -1)
            scales = np.ascontiguousarray(blocks[..., :2]).view(np.float16)[..., 0]
        elif t.tensor_type == Q.Q6_K:
            blocks = blocks.reshape(rows, cols // 256, -1)
            sc = np.ascontiguousarray(blocks[..., 192:208]).view(np.int8).astype(np.float32)
            d = np.ascontiguousarray(blocks[..., 208:210]).view(np.float16).astype(np.float32)
            scales = (d * sc).reshape(rows, cols // 16)
        else:
            raise ValueError(f"{name}: {t.tensor_type.name} codes are not kept")
        return (*_codes_of(self.floats(name), scales, name), None)


def _codes_of(values: np.ndarray, scales: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """The integer codes of dequantized ``values`` [N, K] given their group ``scales`` [N, G]; refused
    unless ``codes * scales`` gives back every value exactly."""
    rows, groups = scales.shape
    step = scales.astype(np.float32).reshape(rows, groups, 1)
    grouped = values.reshape(rows, groups, -1)
    codes = np.where(step != 0, np.rint(grouped / np.where(step != 0, step, np.float32(1))), 0)
    if not np.array_equal((codes.astype(np.float32) * step).astype(np.float32), grouped):
        raise FrontendError(f"{name}: the block codes do not give back the dequantized values")
    return codes.astype(np.int8).reshape(values.shape), scales
