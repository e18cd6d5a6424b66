"""Op definitions. Importing this package registers every op in :data:`llmc.ir.registry.OPS`."""

from llmc.ir.ops import nn, quant, tensor

__all__ = ["nn", "quant", "tensor"]
