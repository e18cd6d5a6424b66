"""IR types: element dtypes, symbolic dimensions, tensor encodings and tensor types.

Every value in the IR has a :class:`TensorType`: a shape of :class:`Dim` (an integer or a
polynomial over named symbols such as ``L`` or ``P+1``), an element :class:`DType`, and an
optional tuple of encodings that compression passes fill in (quantization, sparsity).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

# ---------------------------------------------------------------------------------------------
# Element types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DType:
    """An element type: ``kind`` is ``float``, ``int``, ``uint``, ``fixed``, ``ufixed`` or ``bool``.

    ``bits`` is the storage width; ``frac`` the number of fractional bits of fixed-point types.
    """

    kind: str
    bits: int
    frac: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("float", "bfloat", "int", "uint", "fixed", "ufixed", "bool"):
            raise ValueError(f"unknown dtype kind '{self.kind}'")
        if self.kind == "float" and self.bits not in (16, 32, 64):
            raise ValueError(f"unsupported float width {self.bits}")
        if (self.kind == "bfloat" and self.bits != 16) or (self.kind == "bool" and self.bits != 1):
            raise ValueError(f"{self.kind} has a fixed width, got {self.bits}")  # printed as bf16 / bool
        if self.kind in ("int", "uint", "fixed", "ufixed") and not 1 <= self.bits <= 64:
            raise ValueError(f"integer width must be 1..64, got {self.bits}")
        if self.kind in ("fixed", "ufixed") and not 0 <= self.frac <= self.bits:
            raise ValueError(f"fixed-point fraction bits must be 0..{self.bits}, got {self.frac}")

    @property
    def is_float(self) -> bool:
        return self.kind in ("float", "bfloat")

    @property
    def is_int(self) -> bool:
        return self.kind in ("int", "uint")

    @property
    def is_fixed(self) -> bool:
        return self.kind in ("fixed", "ufixed")

    @property
    def signed(self) -> bool:
        return self.kind in ("int", "fixed", "float", "bfloat")

    def int_range(self) -> tuple[int, int]:
        """Smallest and largest raw integer of an integer, fixed-point or bool type."""
        if self.kind == "bool":
            return 0, 1
        if self.signed:
            return -(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1
        return 0, (1 << self.bits) - 1

    def numpy(self) -> np.dtype:
        """The NumPy dtype the interpreter stores this type in (bf16 is held in float32)."""
        if self.kind == "bfloat":
            return np.dtype(np.float32)
        if self.kind == "float":
            return np.dtype({16: np.float16, 32: np.float32, 64: np.float64}[self.bits])
        if self.kind == "bool":
            return np.dtype(np.bool_)
        width = next(w for w in (8, 16, 32, 64) if self.bits <= w)
        return np.dtype(f"{'int' if self.signed else 'uint'}{width}")

    def __str__(self) -> str:
        if self.kind == "bfloat":
            return "bf16"
        if self.kind == "bool":
            return "bool"
        if self.kind == "float":
            return f"f{self.bits}"
        if self.kind == "int":
            return f"i{self.bits}"
        if self.kind == "uint":
            return f"u{self.bits}"
        return f"{self.kind}<{self.bits},{self.frac}>"

    @staticmethod
    def parse(text: str) -> DType:
        """Parse ``f32``, ``bf16``, ``i4``, ``u8``, ``bool``, ``fixed<16,8>`` or ``ufixed<8,8>``."""
        if text == "bf16":
            return BF16
        if text == "bool":
            return BOOL
        m = re.fullmatch(r"(f|i|u)(\d+)", text)
        if m:
            return DType({"f": "float", "i": "int", "u": "uint"}[m[1]], int(m[2]))
        m = re.fullmatch(r"(u?fixed)<(\d+),(\d+)>", text)
        if m:
            return DType(m[1], int(m[2]), int(m[3]))
        raise ValueError(f"unknown dtype '{text}'")


BF16 = DType("bfloat", 16)
F16 = DType("float", 16)
F32 = DType("float", 32)
F64 = DType("float", 64)
BOOL = DType("bool", 1)
I8 = DType("int", 8)
I32 = DType("int", 32)
I64 = DType("int", 64)


def int_dtype(bits: int, signed: bool = True) -> DType:
    return DType("int" if signed else "uint", bits)


# ---------------------------------------------------------------------------------------------
# Symbolic dimensions
# ---------------------------------------------------------------------------------------------

Monomial = tuple[str, ...]  # sorted symbol names; () is the constant term


@dataclass(frozen=True)
class Dim:
    """A dimension: a polynomial with integer coefficients over named symbols.

    Concrete sizes are polynomials with only a constant term. ``Dim.of(4)``, ``Dim.sym("L")``,
    ``Dim.sym("P") + 1`` and ``4 * Dim.sym("L")`` are all dims.
    """

    terms: tuple[tuple[Monomial, int], ...]

    @staticmethod
    def _make(terms: Mapping[Monomial, int]) -> Dim:
        return Dim(tuple(sorted((m, c) for m, c in terms.items() if c != 0)))

    @staticmethod
    def of(value: DimLike) -> Dim:
        if isinstance(value, Dim):
            return value
        if isinstance(value, (int, np.integer)):
            return Dim._make({(): int(value)})
        if isinstance(value, str):
            return Dim.parse(value)
        raise TypeError(f"not a dimension: {value!r}")

    @staticmethod
    def sym(name: str) -> Dim:
        if not re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
            raise ValueError(f"bad symbol name '{name}': symbols are upper case, like L or KV_LEN")
        return Dim._make({(name,): 1})

    @property
    def is_static(self) -> bool:
        return all(m == () for m, _ in self.terms)

    @property
    def value(self) -> int:
        """The integer value of a static dim."""
        if not self.is_static:
            raise ValueError(f"dimension {self} is symbolic")
        return self.terms[0][1] if self.terms else 0

    @property
    def symbols(self) -> frozenset[str]:
        return frozenset(s for m, _ in self.terms for s in m)

    def _dict(self) -> dict[Monomial, int]:
        return dict(self.terms)

    def __add__(self, other: DimLike) -> Dim:
        out = self._dict()
        for m, c in Dim.of(other).terms:
            out[m] = out.get(m, 0) + c
        return Dim._make(out)

    __radd__ = __add__

    def __sub__(self, other: DimLike) -> Dim:
        return self + Dim.of(other) * -1

    def __rsub__(self, other: DimLike) -> Dim:
        return Dim.of(other) - self

    def __mul__(self, other: DimLike) -> Dim:
        out: dict[Monomial, int] = {}
        for m1, c1 in self.terms:
            for m2, c2 in Dim.of(other).terms:
                m = tuple(sorted(m1 + m2))
                out[m] = out.get(m, 0) + c1 * c2
        return Dim._make(out)

    __rmul__ = __mul__

    def exact_div(self, other: DimLike) -> Dim | None:
        """``self / other`` when it is a polynomial with integer coefficients, else None."""
        o = Dim.of(other)
        if o.is_static:
            d = o.value
            if d == 0 or any(c % d for _, c in self.terms):
                return None
            return Dim._make({m: c // d for m, c in self.terms})
        if len(o.terms) == 1:  # divide by a monomial c*m
            (om, oc), = o.terms
            out: dict[Monomial, int] = {}
            for m, c in self.terms:
                rest = list(m)
                for s in om:
                    if s not in rest:
                        return None
                    rest.remove(s)
                if c % oc:
                    return None
                out[tuple(rest)] = c // oc
            return Dim._make(out)
        return Dim.of(1) if self == o else None

    def substitute(self, env: Mapping[str, DimLike]) -> Dim:
        """Replace the symbols named in ``env`` by dims (or ints)."""
        total = Dim.of(0)
        for m, c in self.terms:
            term = Dim.of(c)
            for s in m:
                term = term * (Dim.of(env[s]) if s in env else Dim.sym(s))
            total = total + term
        return total

    def evaluate(self, env: Mapping[str, int]) -> int:
        total = 0
        for m, c in self.terms:
            term = c
            for s in m:
                if s not in env:
                    raise KeyError(s)
                term *= env[s]
            total += term
        return total

    def __str__(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        for m, c in sorted(self.terms, key=lambda t: (len(t[0]) == 0, t[0])):
            mono = "*".join(m)
            if not mono:
                body = str(abs(c))
            elif abs(c) == 1:
                body = mono
            else:
                body = f"{abs(c)}*{mono}"
            parts.append(("-" if c < 0 else "+", body))
        first_sign, first = parts[0]
        text = ("-" if first_sign == "-" else "") + first
        for sign, body in parts[1:]:
            text += sign + body
        return text

    def __repr__(self) -> str:
        return f"Dim({self})"

    @staticmethod
    def parse(text: str) -> Dim:
        """Parse a sum of terms such as ``L``, ``P+1``, ``4*L``, ``B*L-2``."""
        text = text.replace(" ", "")
        if not re.fullmatch(r"-?[A-Z0-9_*]+([+-][A-Z0-9_*]+)*", text):
            raise ValueError(f"bad dimension '{text}'")
        total = Dim.of(0)
        for sign, term in re.findall(r"([+-]?)([A-Z0-9_*]+)", text):
            value = Dim.of(-1 if sign == "-" else 1)
            for factor in term.split("*"):
                value = value * (Dim.of(int(factor)) if factor.isdigit() else Dim.sym(factor))
            total = total + value
        return total


DimLike = Dim | int | str


# ---------------------------------------------------------------------------------------------
# Encodings: how a tensor's values are stored, filled in by compression passes
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantEncoding:
    """Integer codes with per-group scales, and one of three offsets: none (``sym``, signed codes,
    ``w = q * s``), integer zero points (``asym,zero=DT``, ``w = (q - z) * s``) or a float
    minimum per group (``min=DT``, unsigned codes, ``w = s * q - min``: llama.cpp's Q4_1 / Q4_K
    kind, read by ``dequantize_min``).

    ``group`` is the number of consecutive elements along the last axis sharing one scale;
    0 means one scale per row (per channel).
    """

    bits: int
    group: int
    scale_dtype: DType = F16
    symmetric: bool = True
    zero_dtype: DType | None = None
    min_dtype: DType | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 16:
            raise ValueError(f"quantization bits must be 1..16, got {self.bits}")
        if self.group < 0:
            raise ValueError(f"group size must be >= 0, got {self.group}")
        if self.symmetric and (self.zero_dtype is not None or self.min_dtype is not None):
            raise ValueError("a symmetric encoding has no zero points or minimums")
        if not self.symmetric and (self.zero_dtype is None) == (self.min_dtype is None):
            raise ValueError("an asymmetric encoding needs either a zero-point dtype or a minimum dtype")
        if self.min_dtype is not None and not self.min_dtype.is_float:
            raise ValueError(f"per-group minimums must be float, got {self.min_dtype}")

    def __str__(self) -> str:
        text = f"#quant<bits={self.bits},group={self.group},scale={self.scale_dtype}"
        if self.min_dtype is not None:
            return text + f",min={self.min_dtype}>"
        text += ",sym" if self.symmetric else f",asym,zero={self.zero_dtype}"
        return text + ">"


@dataclass(frozen=True)
class SparseEncoding:
    """Structured sparsity: ``n`` non-zeros in every ``m`` consecutive elements along the last
    axis (N:M), or a fraction of zeros in blocks of ``block`` (``n``/``m`` unset)."""

    n: int = 0
    m: int = 0
    block: tuple[int, ...] = ()
    density: float = 1.0

    def __post_init__(self) -> None:
        if self.m and not 0 < self.n <= self.m:
            raise ValueError(f"N:M sparsity needs 0 < N <= M, got {self.n}:{self.m}")
        if not 0.0 <= self.density <= 1.0:
            raise ValueError(f"density must be in [0, 1], got {self.density}")

    def __str__(self) -> str:
        if self.m:
            return f"#sparse<{self.n}:{self.m}>"
        block = "x".join(map(str, self.block)) or "1"
        return f"#sparse<block={block},density={self.density!r}>"


Encoding = QuantEncoding | SparseEncoding


def parse_encoding(text: str) -> Encoding:
    m = re.fullmatch(r"#sparse<(\d+):(\d+)>", text)
    if m:
        return SparseEncoding(n=int(m[1]), m=int(m[2]))
    m = re.fullmatch(r"#sparse<block=([0-9x]+),density=([0-9.e+-]+)>", text)
    if m:
        block = tuple(int(b) for b in m[1].split("x"))
        return SparseEncoding(block=() if block == (1,) else block, density=float(m[2]))
    dt = r"(u?fixed<\d+,\d+>|[^,<>]+)"  # a dtype; fixed-point ones hold a comma
    m = re.fullmatch(rf"#quant<bits=(\d+),group=(\d+),scale={dt},(sym|asym,zero={dt}|min={dt})>", text)
    if m:
        symmetric = m[4] == "sym"
        return QuantEncoding(
            bits=int(m[1]),
            group=int(m[2]),
            scale_dtype=DType.parse(m[3]),
            symmetric=symmetric,
            zero_dtype=None if m[5] is None else DType.parse(m[5]),
            min_dtype=None if m[6] is None else DType.parse(m[6]),
        )
    raise ValueError(f"unknown encoding '{text}'")


# ---------------------------------------------------------------------------------------------
# Tensor types
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorType:
    """Shape, element type and encodings of a value: printed ``tensor<1xLx256xf32>``."""

    shape: tuple[Dim, ...]
    dtype: DType
    encodings: tuple[Encoding, ...] = field(default=())

    @staticmethod
    def of(shape: tuple[DimLike, ...] | list[DimLike], dtype: DType, encodings: tuple[Encoding, ...] = ()) -> TensorType:
        return TensorType(tuple(Dim.of(d) for d in shape), dtype, tuple(encodings))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(d.is_static for d in self.shape)

    def static_shape(self) -> tuple[int, ...]:
        return tuple(d.value for d in self.shape)

    def concrete_shape(self, env: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(d.evaluate(env) for d in self.shape)

    def substitute(self, env: Mapping[str, DimLike]) -> TensorType:
        return TensorType(tuple(d.substitute(env) for d in self.shape), self.dtype, self.encodings)

    def numel(self) -> Dim:
        total = Dim.of(1)
        for d in self.shape:
            total = total * d
        return total

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(self.shape, dtype, self.encodings)

    def with_shape(self, shape: tuple[DimLike, ...] | list[DimLike]) -> TensorType:
        return TensorType(tuple(Dim.of(d) for d in shape), self.dtype, self.encodings)

    def __str__(self) -> str:
        dims = "".join(f"{d}x" for d in self.shape)
        enc = "".join(f" {e}" for e in self.encodings)
        return f"tensor<{dims}{self.dtype}{enc}>"

    @staticmethod
    def parse(text: str) -> TensorType:
        m = re.fullmatch(r"tensor<(.*)>", text.strip())
        if not m:
            raise ValueError(f"bad tensor type '{text}'")
        body, *encodings = _split_encodings(m[1])
        # Dims hold no lower-case letters, so the dtype starts at the first lower-case letter
        # that is not an 'x' separator ('x' may also occur inside the dtype, as in fixed<16,8>).
        split = re.fullmatch(r"((?:[^a-z]+x)*)([a-z].*)", body)
        if not split:
            raise ValueError(f"bad tensor type '{text}'")
        dtype = DType.parse(split[2])
        shape = tuple(Dim.parse(p) for p in split[1].split("x")[:-1])
        return TensorType(shape, dtype, tuple(parse_encoding(e) for e in encodings))


def _split_encodings(body: str) -> list[str]:
    """Split ``1x2xf32 #quant<...> #sparse<2:4>`` into the shape part and each encoding."""
    pieces = body.split(" #")
    return [pieces[0].strip()] + ["#" + p.strip() for p in pieces[1:]]
