"""What a module holds: ops per function, parameters, memory per layer, KV cache and signatures.

Pure functions over an IR :class:`~llmc.ir.graph.Module`; they read types only, so they work on
shapes-only modules too. :func:`analyze` gathers everything into a :class:`ModuleReport`, whose
:meth:`~ModuleReport.to_dict` is JSON-ready. Formatting for people is the CLI's job.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from llmc.ir.graph import Function, Module
from llmc.ir.types import TensorType

CACHE_PREFIX = "past_"  # decode inputs named past_* are the KV cache (see llmc.compiler.frontend.hf)
_LAYER = re.compile(r"(?:^|\.)(?:layers|h)\.(\d+)\.")
_EMBEDDING = re.compile(r"(?:^|\.)(?:\w*embed\w*|wte|wpe)\.")
_HEAD = re.compile(r"(?:^|\.)lm_head\.")
_GROUP_ORDER = {"embedding": 0, "layer": 1, "head": 2, "other": 3}


@dataclass(frozen=True)
class Signature:
    """A function input or output: its name and printed type, e.g. ``tensor<1xLxi64>``."""

    name: str
    type: str


@dataclass(frozen=True)
class FunctionReport:
    """A function's node count, node counts by op (commonest first) and its symbolic signature."""

    name: str
    nodes: int
    ops: dict[str, int]
    symbols: list[str]
    inputs: list[Signature]
    outputs: list[Signature]


@dataclass(frozen=True)
class ParamGroup:
    """Parameters of one part of the model: ``embedding``, ``layer`` (with its ``index``),
    ``head`` or ``other`` (final norms, rotary tables, ...)."""

    kind: str
    index: int | None
    tensors: int
    params: int
    bytes: int

    @property
    def label(self) -> str:
        return self.kind if self.index is None else f"{self.kind} {self.index}"


@dataclass(frozen=True)
class ModuleReport:
    """Everything ``llmc show`` prints. Byte counts follow each tensor's storage dtype."""

    name: str
    arch: str
    has_weights: bool
    tensors: int
    params: int
    bytes: int
    groups: list[ParamGroup]
    kv_bytes_per_token: int
    max_position: int
    functions: list[FunctionReport]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tensor_bytes(t: TensorType) -> int:
    """Storage bytes of a static tensor, its elements packed at their dtype's width (``i4`` codes
    take half a byte; the scales of quantized weights are parameters of their own)."""
    return -(-t.numel().value * t.dtype.bits // 8)


def op_counts(func: Function) -> dict[str, int]:
    """Nodes per op, commonest first (ties by name)."""
    counts = Counter(n.op for n in func.nodes)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def function_report(func: Function) -> FunctionReport:
    return FunctionReport(
        name=func.name,
        nodes=len(func.nodes),
        ops=op_counts(func),
        symbols=sorted(func.symbols()),
        inputs=[Signature(v.name, str(v.type)) for v in func.inputs],
        outputs=[Signature(v.name, str(v.type)) for v in func.outputs],
    )


def param_group(name: str) -> tuple[str, int | None]:
    """The group of a parameter name: ``("layer", N)`` for ``...layers.N.`` or ``...h.N.``, else
    ``("embedding" | "head" | "other", None)``."""
    layer = _LAYER.search(name)
    if layer:
        return "layer", int(layer[1])
    if _EMBEDDING.search(name):
        return "embedding", None
    if _HEAD.search(name):
        return "head", None
    return "other", None


def param_groups(module: Module) -> list[ParamGroup]:
    """Parameter tensors, elements and bytes per group: embedding, layers in order, head, other."""
    sums: dict[tuple[str, int | None], list[int]] = {}
    for param in module.params.values():
        total = sums.setdefault(param_group(param.name), [0, 0, 0])
        total[0] += 1
        total[1] += param.type.numel().value
        total[2] += tensor_bytes(param.type)
    keys = sorted(sums, key=lambda k: (_GROUP_ORDER[k[0]], k[1] or 0))
    return [ParamGroup(kind, index, *sums[kind, index]) for kind, index in keys]


def kv_bytes_per_token(module: Module) -> int:
    """Bytes the KV cache grows by per token: the parts of the ``past_*`` inputs of ``decode``
    that are linear in a symbol (the cache length). 0 when the module has no ``decode``."""
    decode = module.functions.get("decode")
    if decode is None:
        return 0
    total = 0
    for value in decode.inputs:
        if value.name.startswith(CACHE_PREFIX):
            per_token = sum(c for m, c in value.type.numel().terms if len(m) == 1)
            total += -(-per_token * value.type.dtype.bits // 8)
    return total


def analyze(module: Module) -> ModuleReport:
    """The full report of a module (weights need not be materialised)."""
    groups = param_groups(module)
    return ModuleReport(
        name=module.name,
        arch=str(module.attrs.get("arch", "")),
        has_weights=module.has_weights,
        tensors=sum(g.tensors for g in groups),
        params=sum(g.params for g in groups),
        bytes=sum(g.bytes for g in groups),
        groups=groups,
        kv_bytes_per_token=kv_bytes_per_token(module),
        max_position=int(module.attrs.get("max_position", 0) or 0),
        functions=[function_report(f) for f in module.functions.values()],
    )
