"""IR -> IR passes. Importing this package registers every named pass in
:data:`llmc.compiler.pipeline.PASSES` (the list below is the whole set; nothing is discovered)."""

from llmc.compiler.passes import quantize

__all__ = ["quantize"]
