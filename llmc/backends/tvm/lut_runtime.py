"""Run a module's LUT-mpGEMM layers on the TVM CPU kernels inside llmc's runtime.

:func:`lut_kernels` gives interpreter kernels (``run_function(..., kernels=...)``,
``InterpreterDevice(module, kernels=...)``, ``llmc run --lut-kernels tvm``): every ``lut_gemm``
node runs on a compiled TVM GEMV/GEMM kernel fed with the activations its ``lut_precompute``
read (the TVM kernel builds its own tables), everything else on the reference interpreter.
Float-table nodes use the float32-table kernel, int8-table nodes the int8 one, both in the
variant of the host's instruction set (``lut_isa.py``) or the one asked for.
"""

from __future__ import annotations

import numpy as np

from llmc.backends.tvm.build import GemvKernel, build_lut_gemv, host_target
from llmc.backends.tvm.lut_isa import Variant, choose
from llmc.backends.tvm.pack import PackedWeights
from llmc.ir.graph import Module, Node
from llmc.ir.interpreter import Kernel

MAX_BATCH = 8  # rows per kernel call (the kernels are GEMV / small-batch GEMM)


class _LutRuntime:
    def __init__(self, module: Module, threads: int, variant: Variant) -> None:
        self.module = module
        self.threads = threads
        self.variant = variant
        self.params = {n.outputs[0].name: n.attrs["name"] for _, n in module.iter_nodes() if n.op == "param"}
        self.activations: dict[str, np.ndarray] = {}  # tables value name -> the activations they came from
        self.packed: dict[tuple[str, int, str], tuple[GemvKernel, PackedWeights]] = {}

    def precompute(self, node: Node, args: list[np.ndarray]) -> None:
        self.activations[node.outputs[0].name] = args[0]
        return None  # the reference still computes the tables (other consumers may read them)

    def gemm(self, node: Node, args: list[np.ndarray]) -> list[np.ndarray] | None:
        x = self.activations.get(node.inputs[0].name)
        if x is None:
            return None
        planes = self.params[node.inputs[3].name]
        table = "int8" if args[0].dtype == np.int8 else "f32"
        bits, group = node.attrs["bits"], node.attrs["group"]
        n, k = args[3].shape[1], x.shape[-1]
        rows = x.reshape(-1, k).astype(np.float32)
        out = np.empty((rows.shape[0], n), dtype=np.float32)
        for start in range(0, rows.shape[0], MAX_BATCH):
            batch = rows[start:start + MAX_BATCH]
            key = (planes, len(batch), table)
            if key not in self.packed:
                kernel = build_lut_gemv(n, k, bits, group, batch=len(batch), table=table, threads=self.threads,
                                        variant=self.variant.name)
                self.packed[key] = (kernel, kernel.pack(args[3], args[4], args[5]))
            kernel, packed = self.packed[key]
            out[start:start + len(batch)] = np.asarray(kernel(batch, *packed)).reshape(len(batch), n)
        return [out.reshape(x.shape[:-1] + (n,))]


def lut_kernels(module: Module, threads: int = 1, variant: str = "auto") -> dict[str, Kernel]:
    """Interpreter kernels that run ``module``'s ``lut_gemm`` nodes on TVM in ``variant`` (``auto``:
    the host's best; a variant the host cannot run is refused up front, in one line)."""
    runtime = _LutRuntime(module, threads, choose(host_target(), variant))
    return {"lut_precompute": runtime.precompute, "lut_gemm": runtime.gemm}
