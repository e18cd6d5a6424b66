"""Op definitions. Importing this package registers every op in :data:`llmc.ir.registry.OPS`."""

from llmc.ir.ops import lut, nn, quant, tensor

__all__ = ["lut", "nn", "quant", "tensor"]
