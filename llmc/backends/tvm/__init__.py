"""TVM CPU backend: LUT-mpGEMM GEMV kernels (docs/lut.md) and a dequantize baseline.

``build_lut_gemv`` / ``build_dequant_gemv`` return a ``GemvKernel``; ``kernel.pack`` re-lays the
docs/lut.md bit-planes, scales and zeros (see ``pack``), and ``kernel(x, *packed)`` runs it.
"""

from .build import GemvKernel, build_dequant_gemv, build_lut_gemv, host_target, set_num_threads
from .pack import Geometry, PackedWeights, codes_from_planes, pack_for_tvm

__all__ = [
    "GemvKernel",
    "Geometry",
    "PackedWeights",
    "build_dequant_gemv",
    "build_lut_gemv",
    "codes_from_planes",
    "host_target",
    "pack_for_tvm",
    "set_num_threads",
]
