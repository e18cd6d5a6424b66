"""``compile_model``: an IR module lowered to Relax, scheduled and built for CPU, CUDA or OpenCL.

- ``cpu``: LLVM for the host CPU, run by the Relax VM.
- ``cuda``: TVM generates CUDA kernels. Where TVM's CUDA runtime sees a GPU they run through the
  Relax VM; elsewhere ``nvcc`` compiles them to a cubin (``cuda.py``) and CuPy launches them from a
  kernel plan (``launch.py``), which needs no TVM on the GPU machine.
- ``opencl``: TVM generates OpenCL C kernels; the ``apache-tvm`` wheel has no OpenCL runtime, so
  they run from a kernel plan through pyopencl (on PoCL in CI; any OpenCL device otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax
from tvm.target import Target

from llmc.backends.tvm.build import host_target
from llmc.backends.tvm.device import CompiledModel, PlanExecutor, Signature, save_compiled
from llmc.backends.tvm.launch import OpenCLBackend, Plan
from llmc.backends.tvm.lower import Options, lower_module
from llmc.backends.tvm.lut_isa import Variant, choose
from llmc.backends.tvm.plan import DeviceCode, build_plan
from llmc.backends.tvm.schedule import scheduled, vm_pipeline
from llmc.errors import LlmcError
from llmc.ir.graph import Module
from llmc.model import Model

TARGETS = ("cpu", "cuda", "opencl")
DEFAULT_CUDA_ARCH = "sm_90"
FUNCTIONS = ("prefill", "decode")


def tvm_target(name: str, arch: str | None = None) -> Target:
    """The TVM target of ``cpu``, ``cuda`` (``arch`` like ``sm_90``; default: the GPU's, else sm_90)
    or ``opencl``; GPU targets have the host CPU as their host."""
    if name == "cpu":
        return host_target()
    if name == "cuda":
        if arch is None:
            gpu = tvm.cuda(0)
            arch = f"sm_{gpu.compute_version.replace('.', '')}" if gpu.exist else DEFAULT_CUDA_ARCH
        limits = {"max_shared_memory_per_block": 49152, "max_threads_per_block": 1024, "thread_warp_size": 32}
        return Target({"kind": "cuda", "arch": arch, **limits}, host=host_target())
    if name == "opencl":
        return Target({"kind": "opencl"}, host=host_target())
    raise LlmcError(f"unknown TVM target '{name}' (choose from {', '.join(TARGETS)})")


class VmExecutor:
    """The Relax VM on one TVM device."""

    def __init__(self, executable: tvm.runtime.Executable, device: tvm.runtime.Device) -> None:
        self.vm = relax.VirtualMachine(executable, device)
        self.device = device

    def upload(self, array: np.ndarray) -> Any:
        return tvm.runtime.tensor(array, self.device)

    def download(self, value: Any) -> np.ndarray:
        return value.numpy()

    def call(self, function: str, args: list[Any]) -> list[Any]:
        return list(self.vm[function](*args))


@dataclass
class Lowered:
    """A module lowered to Relax: the IRModule, weight arrays by key and function signatures."""

    name: str
    mod: tvm.IRModule
    weights: dict[str, np.ndarray]
    signatures: dict[str, Signature]
    max_position: int


def cpu_lut_variant(target: Target, name: str = "auto") -> Variant | None:
    """The LUT kernel variant (``name``, or the best for ``target``) a CPU target lowers ``lut_gemm``
    layers to; None on other targets, and where ``auto`` finds only the portable one
    (the generic lowering serves those CPUs)."""
    if target.kind.name != "llvm":
        return None
    variant = choose(target, name)
    return None if name == "auto" and variant.name == "portable" else variant


def lower(model: Model | Module, target: Target | None = None, lut_variant: str = "auto") -> Lowered:
    """Lower a model's ``prefill`` and ``decode`` to Relax for ``target`` (weights packed for the kernels;
    on CPUs, decode-sized quantized layers use the GEMV kernels of ``build.py``, LUT ones in ``lut_variant``)."""
    module = model.module if isinstance(model, Model) else model
    if not module.has_weights:
        raise LlmcError(f"module '{module.name}' has no weights (imported shapes-only); it cannot be compiled to run")
    cpu = target is not None and target.kind.name == "llvm"
    options = Options(cpu_gemv=cpu, lut_variant=cpu_lut_variant(target, lut_variant) if cpu else None)
    mod, weights, signatures = lower_module(module, FUNCTIONS, options)
    return Lowered(module.name, mod, weights.arrays, signatures, int(module.attrs.get("max_position", 0) or 0))


def kernel_plan(lowered: Lowered, target: Target) -> tuple[Plan, DeviceCode]:
    """The kernel plan and generated device source of a lowered model for a GPU-class target."""
    return build_plan(scheduled(lowered.mod, target), target, FUNCTIONS)


def require_opencl() -> None:
    """Refuse early, in one line, when pyopencl or an OpenCL platform is missing."""
    try:
        import pyopencl

        pyopencl.get_platforms()
    except ImportError:
        raise LlmcError("the opencl target needs pyopencl (pip install 'llmc[tvm]')") from None
    except Exception as e:  # pyopencl's error when the ICD loader finds no platform
        reason = str(e).split(".")[0]
        raise LlmcError(f"the opencl target: no OpenCL platform ({reason}); install an ICD, "
                        "e.g. the Debian package pocl-opencl-icd") from None


def compile_model(model: Model | Module, target: str = "cpu", *, arch: str | None = None,
                  opencl_options: Sequence[str] = (), lut_variant: str = "auto") -> CompiledModel:
    """Compile ``model`` for ``target`` (``cpu``, ``cuda`` or ``opencl``); the result runs its functions
    (``result("decode", ...)``) and is a generation device (``Model.stream(device=result)``).

    ``arch`` is the CUDA architecture (``sm_90``; default: the GPU's); ``opencl_options`` go to the
    OpenCL compiler (``-cl-opt-disable`` builds PoCL kernels about twice as fast); ``lut_variant``
    the CPU LUT kernels' instruction set (``lut_isa.py``)."""
    tt = tvm_target(target, arch)
    if target == "cuda" and not tvm.cuda(0).exist:
        from llmc.backends.tvm.cuda import require_gpu

        require_gpu()
    if target == "opencl":
        require_opencl()
    lowered = lower(model, tt, lut_variant)
    if target == "cpu" or (target == "cuda" and tvm.cuda(0).exist):
        device = tvm.cpu() if target == "cpu" else tvm.cuda(0)
        if target == "cuda":
            os.environ.setdefault("TVM_CUDA_COMPILE_MODE", "nvcc")  # read by TVM's CUDA compile callback
        executable = tvm.compile(lowered.mod, tt, relax_pipeline=vm_pipeline(tt))
        executor: Any = VmExecutor(executable, device)
    elif target == "opencl":
        plan, code = kernel_plan(lowered, tt)
        executor = PlanExecutor(plan, OpenCLBackend(code.source, opencl_options))
    else:
        from llmc.backends.tvm.cuda import cuda_executor

        executor = cuda_executor(*kernel_plan(lowered, tt))
    return CompiledModel(lowered.name, target, executor, lowered.signatures, lowered.weights, lowered.max_position)


def export(model: Model | Module, folder: Path, target: str = "cuda", arch: str = DEFAULT_CUDA_ARCH) -> list[Path]:
    """Compile ``model`` for ``cuda`` (a cubin for ``arch``, by nvcc) or ``opencl`` (OpenCL C) into
    ``folder`` with its kernel plan, signatures and weights: what :func:`~llmc.backends.tvm.device.load_compiled`
    runs on a machine without TVM (NumPy and CuPy, or pyopencl)."""
    if target not in ("cuda", "opencl"):
        raise LlmcError(f"export is for the kernel-plan targets cuda and opencl, not '{target}'")
    folder.mkdir(parents=True, exist_ok=True)
    lowered = lower(model)
    plan, code = kernel_plan(lowered, tvm_target(target, arch))
    written = [folder / ("kernels.cu" if target == "cuda" else "kernels.cl")]
    written[0].write_text(code.source)
    if target == "cuda":
        from llmc.backends.tvm.cuda import compile_cubin

        written.append(compile_cubin(code, folder / "kernels.cubin"))
    plan.save(folder / "plan.json")
    save_compiled(folder, lowered.name, lowered.max_position, lowered.signatures, lowered.weights)
    return written + [folder / n for n in ("plan.json", "plan.json.npz", "model.json", "weights.npz")]
