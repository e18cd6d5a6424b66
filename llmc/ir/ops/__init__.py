"""Op definitions. Importing this package registers every op in :data:`llmc.ir.registry.OPS`."""

from llmc.ir.ops import nn, tensor

__all__ = ["nn", "tensor"]
