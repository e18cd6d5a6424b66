"""TVM backends: an IR module compiled to CPUs (LLVM), NVIDIA GPUs (CUDA) and OpenCL devices.

``compile_model(model, target="cpu" | "cuda" | "opencl")`` returns a callable
:class:`~llmc.backends.tvm.device.CompiledModel` that is also a generation device (see
docs/tvm.md). The LUT-mpGEMM GEMV kernels for CPUs (``build_lut_gemv``, in a variant per
instruction set, and ``build_dequant_gemv``) are here too. Names are imported on first use, so that the TVM-free
modules (``device``, ``launch``, ``layouts``) load where TVM is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "compile_model": "compile", "export": "compile", "TARGETS": "compile", "CompiledModel": "device", "load_compiled": "device",
    "GemvKernel": "build", "build_dequant_gemv": "build", "build_lut_gemv": "build", "host_target": "build",
    "set_num_threads": "build", "Geometry": "pack", "PackedWeights": "pack", "codes_from_planes": "pack",
    "pack_for_tvm": "pack",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'llmc.backends.tvm' has no attribute '{name}'")
    return getattr(importlib.import_module(f"llmc.backends.tvm.{_EXPORTS[name]}"), name)
