"""W4A16 and W2 GEMV on an NVIDIA GPU: TVM-generated CUDA kernels against torch fp16 matmul.

Two steps, so that the GPU machine needs no TVM:

- ``build`` (where TVM and nvcc are): generates the kernels of ``y = W x`` for N x K = 4096x4096 and
  4096x11008 (outputs x inputs) with TVM for CUDA (dlight schedules), compiles them with nvcc to
  one cubin and writes it with the kernel plan::

      .venv/bin/python benchmarks/gpu.py build build/gpu-gemv [--arch sm_90]

- ``run`` (on the GPU; NumPy, CuPy and torch only): makes the same seeded weights, packs them
  (NumPy), runs every kernel from the plan through CuPy, checks it against a float64 reference,
  and times it against torch's fp16 ``x @ W.T`` on the dequantized weights::

      PYTHONPATH=. python3 benchmarks/gpu.py run build/gpu-gemv [--json]

Kernels: ``w4`` (4-bit codes, group 128, dequantize fused into the GEMV; activations float32,
W4A16-class: the activation vector is noise next to the weights), ``w2`` (the same with 2-bit
codes) and ``w2lut`` (LUT-mpGEMM: activation tables, then bit-plane lookups). Timing: each
kernel's launch sequence (and torch's matmul) is captured 100 times in a CUDA graph, replayed
20 times; the median per-GEMV time is reported with the weight bytes read per microsecond.
``--target opencl`` on both steps builds OpenCL kernels and runs them through pyopencl (PoCL):
a check of this script's correctness path on a machine without a GPU (no timing).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from llmc.backends.tvm.launch import Plan, Runner
from llmc.backends.tvm.layouts import pack_words, slot_bits
from llmc.compiler.lut.pack import offset_codes, pack_planes

SHAPES = ((4096, 4096), (4096, 11008))
KERNELS = {"w4": (4, False), "w2": (2, False), "w2lut": (2, True)}  # bits, LUT-mpGEMM
GROUP = 128
REPEAT, REPLAYS = 100, 20


def name_of(kernel: str, n: int, k: int) -> str:
    return f"{kernel}_{n}x{k}"


# -- build: TVM -----------------------------------------------------------------------------


def build(folder: Path, target_name: str, arch: str) -> None:
    from tvm import relax

    from llmc.backends.tvm import kernels
    from llmc.backends.tvm.compile import tvm_target
    from llmc.backends.tvm.plan import build_plan
    from llmc.backends.tvm.schedule import scheduled

    bb = relax.BlockBuilder()
    names = []
    for n, k in SHAPES:
        groups = k // GROUP
        for kernel, (bits, lut) in KERNELS.items():
            x = relax.Var("x", relax.TensorType([1, k], "float32"))
            s, z = (relax.Var(v, relax.TensorType([n, groups], "float32")) for v in ("scales", "zeros"))
            if lut:
                w = relax.Var("planes", relax.TensorType([bits, n, k // 4], "uint8"))
            else:
                w = relax.Var("packed", relax.TensorType([n, k * slot_bits(bits) // 32], "uint32"))
            names.append(name_of(kernel, n, k))
            with bb.function(names[-1], [x, w, s, z]):
                with bb.dataflow():
                    if lut:
                        tables = bb.emit_te(kernels.lut_tables, x, g=4, symmetric=True, table_bits=0)
                        parts = [bb.emit(relax.TupleGetItem(tables, i)) for i in range(3)]
                        y = bb.emit_te(kernels.lut_gemm, *parts, w, s, z, bits=bits, g=4, group=GROUP, symmetric=True)
                    else:
                        y = bb.emit_te(kernels.dequant_linear, x, w, s, z, slot=slot_bits(bits), group=GROUP)
                    out = bb.emit_output(y)
                bb.emit_func_output(out)
    target = tvm_target(target_name, arch)
    plan, code = build_plan(scheduled(bb.get(), target), target, tuple(names))
    folder.mkdir(parents=True, exist_ok=True)
    plan.save(folder / "plan.json")
    if target_name == "cuda":
        from llmc.backends.tvm.cuda import compile_cubin

        (folder / "kernels.cu").write_text(code.source)
        compile_cubin(code, folder / "kernels.cubin")
    else:
        (folder / "kernels.cl").write_text(code.source)
    print(f"wrote {folder}: {len(names)} GEMV functions, {sum(len(k.ops) for k in plan.kernels.values())} host ops")


# -- run: NumPy + CuPy (+ torch) ----------------------------------------------------------------


def weights(n: int, k: int, bits: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded symmetric codes, float16-valued scales and the float64 dequantized weight."""
    rng = np.random.default_rng(seed)
    q = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(n, k))
    scales = rng.uniform(0.005, 0.02, size=(n, k // GROUP)).astype(np.float16).astype(np.float32)
    u, z = offset_codes(q, None, bits, k // GROUP)
    w = (q.reshape(n, -1, GROUP) * scales[:, :, None].astype(np.float64)).reshape(n, k)
    return {"u": u, "z": z.astype(np.float32), "scales": scales, "w": w}


class Recorder:
    """A backend that records launches (for replay in a CUDA graph) and forwards everything else."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.launches = backend, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)

    def launch(self, *launch: Any) -> None:
        self.launches.append(launch)
        self.backend.launch(*launch)


def cupy_us(cupy: Any, body: Any) -> float:
    """Median microseconds of one ``body()`` (CuPy launches) over replays of a CUDA graph of ``REPEAT`` calls."""
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        body()
        stream.begin_capture()
        for _ in range(REPEAT):
            body()
        graph = stream.end_capture()
        times = []
        for _ in range(REPLAYS):
            start, end = cupy.cuda.Event(), cupy.cuda.Event()
            start.record(stream)
            graph.launch(stream)
            end.record(stream)
            end.synchronize()
            times.append(cupy.cuda.get_elapsed_time(start, end) * 1e3 / REPEAT)
    return statistics.median(times)


def torch_us(torch: Any, body: Any) -> float:
    """The same for a torch call, with torch's own CUDA graphs."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(REPEAT):
            body()
    times = []
    for _ in range(REPLAYS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / REPEAT)
    return statistics.median(times)


def gpu_times(backend: Any, launches: list[tuple], w: np.ndarray, x: np.ndarray, want: np.ndarray,
              weight_bytes: int) -> dict[str, float]:
    """Time a recorded launch sequence against torch's fp16 ``x @ W.T``; torch's error too."""
    import cupy
    import torch

    w16 = torch.tensor(w, dtype=torch.float16, device="cuda")
    x16 = torch.tensor(x, dtype=torch.float16, device="cuda")
    out16 = torch.empty((1, w.shape[0]), dtype=torch.float16, device="cuda")
    torch.matmul(x16, w16.T, out=out16)
    torch_err = float(np.abs(out16.float().cpu().numpy()[0] - want).max() / np.abs(want).max())
    tvm = cupy_us(cupy, lambda: [backend.launch(*launch) for launch in launches])
    fp16 = torch_us(torch, lambda: torch.matmul(x16, w16.T, out=out16))
    return {"torch_rel_err": torch_err, "tvm_us": tvm, "torch_fp16_us": fp16, "speedup": fp16 / tvm,
            "weight_GBps": weight_bytes / tvm / 1e3}


def run(folder: Path, target_name: str) -> list[dict]:
    plan = Plan.load(folder / "plan.json")
    if target_name == "cuda":
        from llmc.backends.tvm.launch import CudaBackend

        backend = Recorder(CudaBackend(folder / "kernels.cubin"))
    else:
        from llmc.backends.tvm.launch import OpenCLBackend

        backend = Recorder(OpenCLBackend((folder / "kernels.cl").read_text()))
    runner = Runner(plan, backend)
    rows = []
    for seed, (n, k) in enumerate(SHAPES):
        x = np.random.default_rng(100 + seed).standard_normal((1, k)).astype(np.float32)
        for kernel, (bits, lut) in KERNELS.items():
            data = weights(n, k, bits, seed)
            packed = pack_planes(data["u"], bits, 4) if lut else pack_words(data["u"], slot_bits(bits))
            args = [runner.tensor(a) for a in (x, packed, data["scales"], data["z"])]
            backend.launches = []
            (y,) = runner.call(name_of(kernel, n, k), args)
            launches = backend.launches
            want = data["w"] @ x[0].astype(np.float64)
            row = {"kernel": kernel, "n": n, "k": k, "launches": len(launches),
                   "rel_err": float(np.abs(runner.numpy(y)[0] - want).max() / np.abs(want).max())}
            if target_name == "cuda":
                row.update(gpu_times(backend.backend, launches, data["w"], x, want, packed.nbytes))
            rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", choices=("build", "run"))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--target", choices=("cuda", "opencl"), default="cuda")
    parser.add_argument("--arch", default="sm_90", help="CUDA architecture of the cubin (default sm_90: H100/H200)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.step == "build":
        build(args.folder, args.target, args.arch)
        return
    rows = run(args.folder, args.target)
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    timed = args.target == "cuda"
    print("| GEMV N x K | kernel | launches | rel err | " + ("TVM us | torch fp16 us | torch / TVM | weights GB/s |"
                                                             if timed else ""))
    print("| --- | --- | ---: | ---: |" + (" ---: | ---: | ---: | ---: |" if timed else ""))
    for r in rows:
        line = f"| {r['n']}x{r['k']} | {r['kernel']} | {r['launches']} | {r['rel_err']:.1e} |"
        if timed:
            line += f" {r['tvm_us']:.1f} | {r['torch_fp16_us']:.1f} | {r['speedup']:.2f} | {r['weight_GBps']:.0f} |"
        print(line)


if __name__ == "__main__":
    main()
