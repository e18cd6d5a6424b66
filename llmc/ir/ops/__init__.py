"""Op definitions. Importing this package registers every op in :data:`llmc.ir.registry.OPS`."""

from llmc.ir.ops import hw, hw_link, hw_moe, lut, nn, quant, tensor

__all__ = ["hw", "hw_link", "hw_moe", "lut", "nn", "quant", "tensor"]
