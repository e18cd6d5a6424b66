"""Relax pass pipelines per target: legalize, fuse, schedule every TIR function, lower for the VM.

GPUs (CUDA, OpenCL) use TVM's dlight rules (GEMV, matmul, reductions, fallback), which also
schedule the dequantize-fused kernels: the dequantize stage is inlined into the GEMV. On CPUs,
dlight's GEMV rule unrolls so much that LLVM needs minutes per kernel, so :class:`CpuReduction`
schedules every kernel with one reduction instead: producers inlined, the output rows in
parallel, the reduction split into 16 vector lanes (``rfactor``) and summed at the end.
"""

from __future__ import annotations

import tvm
from tvm import relax, s_tir, tirx
from tvm.relax import pipeline as default
from tvm.relax.backend.cpu_generic import pipeline as cpu_pipeline
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.analysis import normalize_prim_func
from tvm.s_tir.dlight.base import try_inline_contiguous_spatial
from tvm.target import Target

LANES = 16
"""float32 lanes of the vectorized reduction (one AVX-512 register, two AVX2 ones)."""


class CpuReduction(dl.ScheduleRule):
    """Parallel outputs and a vectorized, rfactored reduction for one-reduction PrimFuncs."""

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        sch = s_tir.Schedule(func)
        infos = try_inline_contiguous_spatial(sch, normalize_prim_func(sch))
        if not infos or not infos[0].is_reduction() or any(not b.is_injective() for b in infos[1:]):
            return None
        block = infos[0].block_rv
        kinds = infos[0].dom_kind()
        if "O" in kinds or "S" not in kinds:
            return None
        loops = sch.get_loops(block)
        spatial = [loop for loop, k in zip(loops, kinds) if k == "S"]
        reduce = [loop for loop, k in zip(loops, kinds) if k == "R"]
        if not reduce:  # its reduction axes are of extent 1 and folded away: the default rules take it
            return None
        sch.reorder(*spatial, *reduce)
        outer = sch.fuse(*spatial)
        sch.parallel(outer)
        inner = sch.fuse(*reduce) if len(reduce) > 1 else reduce[0]
        extent = sch.get(inner).extent
        if isinstance(extent, tirx.IntImm) and extent.value % LANES == 0 and extent.value >= 2 * LANES:
            _, lanes = sch.split(inner, [None, LANES])
            partial = sch.rfactor(lanes, 0)
            sch.vectorize(sch.get_loops(partial)[-1])
            sch.decompose_reduction(partial, sch.get_loops(partial)[1])
        for epilogue in infos[1:]:
            sch.reverse_compute_at(epilogue.block_rv, outer)
        return sch


def _passes(target: Target, stage: str) -> list[tvm.transform.Pass]:
    """TVM's passes of one ``stage`` for ``target`` (the CPU module of the wheel is read directly:
    its package does not export every stage), with :class:`CpuReduction` scheduling on CPUs."""
    if target.kind.name != "llvm":
        return getattr(default, stage)(target)
    passes = getattr(cpu_pipeline, stage)(target)
    return passes + [dl.ApplyDefaultSchedule(CpuReduction())] if stage == "legalize_passes" else passes


def scheduled(mod: tvm.IRModule, target: Target) -> tvm.IRModule:
    """``mod`` legalized to TIR, fused and scheduled, still in dataflow form (for kernel plans)."""
    with target:
        passes = _passes(target, "library_dispatch_passes") + _passes(target, "legalize_passes")
        return tvm.transform.Sequential([*passes, relax.transform.RewriteDataflowReshape()])(mod)


def vm_pipeline(target: Target) -> tvm.transform.Pass:
    """The Relax pipeline of ``tvm.compile`` for a Relax VM on ``target``."""
    @tvm.transform.module_pass(opt_level=0)
    def pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            stages = ("library_dispatch_passes", "legalize_passes", "dataflow_lower_passes", "finalize_passes")
            passes = [p for stage in stages for p in _passes(target, stage)]
            return tvm.transform.Sequential(passes)(mod)

    return pipeline
