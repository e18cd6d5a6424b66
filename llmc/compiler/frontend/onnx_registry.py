"""The table of ONNX op handlers: :data:`HANDLERS` maps an ONNX op type to the function that
converts one node of it (:func:`handles` registers one). The handlers live in ``onnx_ops``
(elementwise), ``onnx_shape_ops`` (shapes and data movement), ``onnx_nn_ops`` (reductions,
normalisation, matrix products) and ``onnx_index_ops`` (gathers and scatters)."""

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
HANDLERS: dict[str, Handler] = {}


def handles(*ops: str) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of the ONNX op types ``ops``."""
    def wrap(fn: Handler) -> Handler:
        for op in ops:
            if op in HANDLERS:
                raise ValueError(f"ONNX op {op} has two handlers")
            HANDLERS[op] = fn
        return fn

    return wrap
