"""Build, cache and call the TVM CPU GEMV kernels (LUT-mpGEMM and the dequantize baseline).

Target: ``Target.from_device(tvm.cpu())``, the host triple and CPU name as LLVM sees them (a
``-mcpu=native`` target is rejected by the conda-built LLVM triple and falls back to generic).
``cpu_target("znver3")`` is the same triple with another LLVM CPU: code for that class of machine
(an AVX2-only Zen 3 here), which runs on this host when the host has its features. The LUT kernels
come in variants per instruction set (``lut_isa.py``), chosen from the target's features; the
baseline is plain vector TIR.

Threads: the TVM runtime sizes its worker pool once, from ``TVM_NUM_THREADS`` (default: half the
logical CPUs on x86). This module sets that variable to all logical CPUs when it is unset, before
any kernel runs, and each call switches the pool to the kernel's thread count with
``runtime.config_threadpool`` (cheap; checked with ``runtime.NumThreads``).

Compiled modules are cached per (layout, shape, bits, group, batch, variant, CPU); the thread count
is a run-time setting of the same module.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import numpy as np

os.environ.setdefault("TVM_NUM_THREADS", str(os.cpu_count() or 1))

import tvm  # noqa: E402  (the pool size above must be in the environment first)
from tvm.target import codegen  # noqa: E402

from llmc.errors import LlmcError  # noqa: E402

from .dequant import dequant_func  # noqa: E402
from .lut_isa import Variant, choose  # noqa: E402
from .lut_kernels import lut_f32_func, lut_int8_func  # noqa: E402
from .pack import DEQUANT_BLOCK_ROWS, Geometry, PackedWeights, pack_for_tvm  # noqa: E402

_AFFINITY_BIG = 1  # threading::ThreadGroup::kBig: all cores here
_pool_threads = 0  # what set_num_threads last configured (0: not yet)


@functools.cache
def host_target() -> tvm.target.Target:
    """The LLVM target of the host CPU."""
    return tvm.target.Target.from_device(tvm.cpu())


@functools.cache
def cpu_target(cpu: str | None = None) -> tvm.target.Target:
    """The host target, or the host triple with LLVM CPU ``cpu`` (its features, not the host's)."""
    if cpu is None:
        return host_target()
    config = {"kind": "llvm", "mtriple": str(host_target().attrs["mtriple"]), "mcpu": cpu}
    if cpu not in codegen.llvm_get_cpu_archlist(tvm.target.Target(config)):
        raise LlmcError(f"LLVM knows no CPU '{cpu}' for {config['mtriple']}")
    return tvm.target.Target(config)


def set_num_threads(threads: int) -> None:
    """Make TVM parallel loops in this process use ``threads`` workers (no-op if already set here)."""
    global _pool_threads
    if threads == _pool_threads:
        return
    tvm.get_global_func("runtime.config_threadpool")(_AFFINITY_BIG, threads)
    got = tvm.get_global_func("runtime.NumThreads")()
    if got != threads:
        raise RuntimeError(
            f"TVM thread pool has {got} workers, asked for {threads}: set TVM_NUM_THREADS >= {threads} "
            "before the first TVM kernel runs in this process"
        )
    _pool_threads = threads


def _row_blocks(blocks: int, batch: int, widest: int) -> int:
    """Largest power-of-two row blocking <= ``widest / batch`` that divides ``blocks``."""
    rb = max(1, widest // batch)
    while blocks % rb:
        rb //= 2
    return rb


def kernel_func(layout: str, geom: Geometry, batch: int, variant: Variant | None = None) -> tvm.tirx.PrimFunc:
    """The PrimFunc of ``layout`` for ``batch`` rows (LUT layouts: on ``variant``); the row blocking
    shrinks as the batch grows."""
    if layout == "dequant":
        return dequant_func(geom, batch, _row_blocks(DEQUANT_BLOCK_ROWS, batch, DEQUANT_BLOCK_ROWS))
    if variant is None:
        raise ValueError(f"layout {layout} needs a kernel variant")
    block = 32 if layout == "lut_int8" else 16
    widest = max(1, min(8, variant.register_rows // block))
    make = lut_int8_func if layout == "lut_int8" else lut_f32_func
    return make(geom, batch, _row_blocks(geom.padded_rows(layout) // block, batch, widest), variant)


@functools.cache
def _compile(layout: str, geom: Geometry, batch: int, variant: Variant | None, cpu: str | None) -> Callable[..., None]:
    """Build the kernel of ``layout`` for the host (or for LLVM CPU ``cpu``)."""
    func = kernel_func(layout, geom, batch, variant)
    return tvm.compile(func, target=cpu_target(cpu))[func.attrs["global_symbol"]]


class GemvKernel:
    """A compiled GEMV ``y[M, N] = x[M, K] @ W.T`` for one geometry, batch, layout and thread count.

    Call ``kernel.pack(planes, scales, zeros)`` once on the docs/lut.md arrays, then
    ``kernel(x, *packed)`` with ``x`` of shape ``[M, K]`` (or ``[K]`` when ``batch == 1``; the result
    then has shape ``[N]``). The activation tables (LUT kernels) are built inside the call.
    ``variant`` names the LUT kernels' instruction set (``auto``: the best the target has; None for
    the dequant layout); ``cpu`` compiles for that LLVM CPU instead of the host's.
    """

    def __init__(self, layout: str, geom: Geometry, batch: int, threads: int, variant: str = "auto",
                 cpu: str | None = None) -> None:
        if not 1 <= batch <= 8:
            raise ValueError(f"batch must be in 1..8, got {batch}")
        if threads < 1:
            raise ValueError(f"threads must be positive, got {threads}")
        self.layout, self.geom, self.batch, self.threads = layout, geom, batch, threads
        self.variant = None if layout == "dequant" else choose(cpu_target(cpu), variant)
        self._func = _compile(layout, geom, batch, self.variant, cpu)
        self._x = tvm.runtime.tensor(np.zeros((batch, geom.k), np.float32))
        self._out = tvm.runtime.tensor(np.zeros((batch, geom.padded_rows(layout)), np.float32))

    def pack(self, planes: np.ndarray, scales: np.ndarray, zeros: np.ndarray) -> PackedWeights:
        """Device tensors in this kernel's layout from docs/lut.md ``planes``, ``scales``, ``zeros``."""
        packed = pack_for_tvm(planes, scales, zeros, self.geom, self.layout)
        return PackedWeights(*(tvm.runtime.tensor(a) for a in packed))

    def run(self, x: tvm.runtime.Tensor, planes: tvm.runtime.Tensor, scales: tvm.runtime.Tensor,
            zeros: tvm.runtime.Tensor) -> tvm.runtime.Tensor:
        """Run on device tensors (``x`` float32 ``[M, K]``); returns the padded output ``[M, Np]``.

        No host copies: this is what the benchmark times. The returned tensor is reused by the
        next call.
        """
        set_num_threads(self.threads)
        self._func(x, planes, scales, zeros, self._out)
        return self._out

    def __call__(self, x: np.ndarray, planes: tvm.runtime.Tensor, scales: tvm.runtime.Tensor,
                 zeros: tvm.runtime.Tensor) -> np.ndarray:
        vector = x.ndim == 1
        xm = np.ascontiguousarray(x.reshape(1, -1) if vector else x, dtype=np.float32)
        if xm.shape != (self.batch, self.geom.k):
            raise ValueError(f"x must be {(self.batch, self.geom.k)}, got {x.shape}")
        self._x.copyfrom(xm)
        y = self.run(self._x, planes, scales, zeros).numpy()[:, : self.geom.n]
        return y[0] if vector else y


def build_lut_gemv(n: int, k: int, bits: int, group: int, batch: int = 1, table: str = "f32", threads: int = 1,
                   variant: str = "auto", cpu: str | None = None) -> GemvKernel:
    """LUT-mpGEMM GEMV/GEMM (``batch`` 1..8) with ``"f32"`` or ``"int8"`` activation tables."""
    if table not in ("f32", "int8"):
        raise ValueError(f"table must be 'f32' or 'int8', got {table!r}")
    return GemvKernel(f"lut_{table}", Geometry(n, k, bits, group), batch, threads, variant, cpu)


def build_dequant_gemv(n: int, k: int, bits: int, group: int, batch: int = 1, threads: int = 1,
                       cpu: str | None = None) -> GemvKernel:
    """The dequantize-then-FMA baseline on plain packed codes."""
    return GemvKernel("dequant", Geometry(n, k, bits, group), batch, threads, cpu=cpu)
