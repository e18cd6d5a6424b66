"""CUDA kernels compiled ahead: TVM generates them, ``nvcc`` makes a cubin, CuPy launches it.

This serves the machines where TVM's CUDA runtime is absent (the ``apache-tvm`` wheel needs
``libcuda`` at run time) or TVM is not installed at all (``compile.export`` writes the cubin and
its plan for :func:`llmc.backends.tvm.device.load_compiled`). The compiler is ``nvcc`` unless
``TVM_CUDA_COMPILE_MODE=nvrtc``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tvm.support.nvcc import compile_cuda

from llmc.backends.tvm.device import PlanExecutor
from llmc.backends.tvm.launch import CudaBackend, Plan
from llmc.backends.tvm.plan import DeviceCode
from llmc.errors import LlmcError


def nvcc() -> str | None:
    """The ``nvcc`` on the PATH (or under ``CUDA_HOME``), if any."""
    home = os.environ.get("CUDA_HOME")
    return shutil.which("nvcc") or (shutil.which("nvcc", path=str(Path(home) / "bin")) if home else None)


def compile_cubin(code: DeviceCode, path: Path) -> Path:
    """Compile generated CUDA source for its target's ``arch`` into the cubin ``path``."""
    compiler = os.environ.get("TVM_CUDA_COMPILE_MODE", "nvcc").lower()
    if compiler == "nvcc" and nvcc() is None:
        raise LlmcError("nvcc not found: install the CUDA toolkit (or set CUDA_HOME) to compile CUDA kernels")
    with code.target:
        binary = compile_cuda(code.source, "cubin", arch=str(code.target.attrs["arch"]), compiler=compiler)
    path.write_bytes(bytes(binary))
    return path


def require_gpu() -> None:
    """Refuse early when CuPy sees no CUDA GPU to run kernels on."""
    try:
        import cupy

        gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CuPy missing, or no driver / device: both mean no GPU to run on
        raise LlmcError(f"the cuda target: no NVIDIA GPU to run on (TVM's CUDA runtime sees none; CuPy: {e}); "
                        "llmc.backends.tvm.cuda.export compiles the kernels ahead for a GPU machine") from None
    if gpus < 1:
        raise LlmcError("the cuda target: CuPy sees no NVIDIA GPU")


def cuda_executor(plan: Plan, code: DeviceCode) -> PlanExecutor:
    """A plan executor on the first CUDA GPU through CuPy (kernels compiled into a temporary cubin)."""
    folder = Path(tempfile.mkdtemp(prefix="llmc-cuda-"))
    return PlanExecutor(plan, CudaBackend(compile_cubin(code, folder / "kernels.cubin")))
