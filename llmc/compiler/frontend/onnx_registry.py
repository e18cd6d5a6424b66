"""The table of ONNX op handlers: :data:`HANDLERS` maps an ONNX op type to the function that
converts one node of it (:func:`handles` registers one). The handlers live in ``onnx_ops``
(elementwise), ``onnx_shape_ops`` (shapes and data movement), ``onnx_nn_ops`` (reductions, matrix
products), ``onnx_norm_ops`` (normalisation), ``onnx_index_ops`` (gathers and scatters) and
``onnx_quant_ops`` (QuantizeLinear, DequantizeLinear). Ops of onnxruntime's ``com.microsoft``
domain are in :data:`CONTRIB_HANDLERS` (``onnx_nbits``: MatMulNBits; ``onnx_norm_ops``:
SkipLayerNormalization, SkipSimplifiedLayerNormalization; ``onnx_rotary``: RotaryEmbedding;
``onnx_gqa``: GroupQueryAttention)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import onnx

from llmc.compiler.frontend.onnx_values import Operand

if TYPE_CHECKING:
    from llmc.compiler.frontend.onnx_converter import Converter

Node = onnx.NodeProto
Attrs = dict[str, Any]
Handler = Callable[["Converter", Node, Attrs], Sequence[Operand]]
HANDLERS: dict[str, Handler] = {}  # the default (ai.onnx) domain
CONTRIB_DOMAIN = "com.microsoft"
CONTRIB_HANDLERS: dict[str, Handler] = {}  # onnxruntime's com.microsoft domain


def handles(*ops: str, domain: str = "") -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of the ONNX op types ``ops`` of ``domain``
    (the default domain, or :data:`CONTRIB_DOMAIN`)."""
    table = CONTRIB_HANDLERS if domain == CONTRIB_DOMAIN else HANDLERS
    if domain not in ("", CONTRIB_DOMAIN):
        raise ValueError(f"no handler table for domain {domain}")

    def wrap(fn: Handler) -> Handler:
        for op in ops:
            if op in table:
                raise ValueError(f"ONNX op {op} has two handlers")
            table[op] = fn
        return fn

    return wrap
