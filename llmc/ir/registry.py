"""The op registry: each op declares its attributes, type inference and reference semantics once.

An op is an :class:`OpDef`. ``infer`` maps input types and attributes to result types and raises
:class:`InferError` with a plain message when the inputs are not legal; the verifier adds the
location. ``ref`` is the NumPy reference implementation, the golden model every backend is
checked against.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmc.ir.types import Dim, DType, TensorType


class InferError(ValueError):
    """The inputs or attributes of an op are not legal; the message says why."""


_REQUIRED = object()


@dataclass(frozen=True)
class AttrSpec:
    """An attribute's kind and default. Kinds: int, float, bool, str, dtype, dim, ints, dims,
    floats, scalar (int or float), value (scalar or list of scalars)."""

    kind: str
    default: Any = _REQUIRED

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


@dataclass
class RefContext:
    """What a reference implementation may need beyond its inputs."""

    env: Mapping[str, int]  # values of the dimension symbols
    out_types: list[TensorType] = field(default_factory=list)

    def shape(self, dims: list[Any]) -> tuple[int, ...]:
        return tuple(Dim.of(d).evaluate(self.env) for d in dims)


InferFn = Callable[[list[TensorType], dict[str, Any]], "list[TensorType] | None"]
RefFn = Callable[[list[np.ndarray], dict[str, Any], RefContext], list[np.ndarray]]


@dataclass(frozen=True)
class OpDef:
    name: str
    min_inputs: int
    max_inputs: int  # -1: variadic
    attrs: Mapping[str, AttrSpec]
    infer: InferFn
    ref: RefFn
    doc: str
    num_results: int = 1
    side_effect: bool = False  # its node stays when no result is used (a send to another card)

    def with_defaults(self, attrs: Mapping[str, Any]) -> dict[str, Any]:
        out = {k: s.default for k, s in self.attrs.items() if not s.required}
        out.update(attrs)
        return out


OPS: dict[str, OpDef] = {}


def register(
    name: str,
    *,
    inputs: int | tuple[int, int],
    attrs: Mapping[str, AttrSpec] | None = None,
    results: int = 1,
    side_effect: bool = False,
) -> Callable[[type], type]:
    """Class decorator: the class holds ``infer`` and ``ref`` static methods and a docstring."""

    lo, hi = (inputs, inputs) if isinstance(inputs, int) else inputs

    def wrap(cls: type) -> type:
        if name in OPS:
            raise ValueError(f"op '{name}' registered twice")
        OPS[name] = OpDef(
            name=name,
            min_inputs=lo,
            max_inputs=hi,
            attrs=dict(attrs or {}),
            infer=cls.infer,  # type: ignore[attr-defined]
            ref=cls.ref,  # type: ignore[attr-defined]
            doc=(cls.__doc__ or "").strip(),
            num_results=results,
            side_effect=side_effect,
        )
        return cls

    return wrap


def get_op(name: str) -> OpDef:
    if name not in OPS:
        raise KeyError(name)
    return OPS[name]


def check_attr(kind: str, value: Any) -> bool:
    """Whether ``value`` is a legal attribute of ``kind``."""
    scalar = (int, float)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, scalar) and not isinstance(value, bool)
    if kind == "scalar":
        return isinstance(value, scalar) and not isinstance(value, bool)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "str":
        return isinstance(value, str)
    if kind == "dtype":
        return isinstance(value, DType)
    if kind == "dim":
        return isinstance(value, Dim) or (isinstance(value, int) and not isinstance(value, bool))
    if kind == "ints":
        return isinstance(value, list) and all(check_attr("int", v) for v in value)
    if kind == "floats":
        return isinstance(value, list) and all(check_attr("float", v) for v in value)
    if kind == "dims":
        return isinstance(value, list) and all(check_attr("dim", v) for v in value)
    if kind == "value":
        return check_attr("scalar", value) or check_attr("floats", value)
    if kind == "optional_int":
        return value is None or check_attr("int", value)
    if kind == "optional_float":
        return value is None or check_attr("float", value)
    raise ValueError(f"unknown attribute kind '{kind}'")
