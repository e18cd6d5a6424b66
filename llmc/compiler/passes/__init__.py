"""IR -> IR passes. Importing this package registers every named pass in
:data:`llmc.compiler.pipeline.PASSES` (the list below is the whole set; nothing is discovered)."""

from llmc.compiler.passes import (
    act_quant,
    fuse,
    kv_quant,
    lut_mpgemm,
    mixed_precision,
    outliers,
    quantize,
    smoothquant,
    sparsify,
)

__all__ = ["act_quant", "fuse", "kv_quant", "lut_mpgemm", "mixed_precision", "outliers", "quantize", "smoothquant", "sparsify"]
