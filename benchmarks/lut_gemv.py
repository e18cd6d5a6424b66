"""LUT-mpGEMM GEMV on the CPU with TVM: LUT kernels against a TVM dequantize kernel and torch fp32.

Shapes are ``N x K`` = outputs x inputs of ``y = W x`` (4096x11008 is a down projection,
11008x4096 an up/gate projection). Per shape, bit width and thread count, in one process:

- ``lut_ms``: the TVM LUT kernel with int8 tables (``lut_f32_ms``: float32 tables), activation
  table precompute included;
- ``dequant_ms``: the TVM dequantize baseline (unpack codes, convert, FMA; group-factored scale and
  zero point) on plain packed codes;
- ``torch_ms``: ``x @ W.T`` with the dequantized float32 ``W`` and ``torch.set_num_threads``.

Each time is the median over ``--repeat`` samples, taken round-robin across the three TVM kernels
and then, in a separate phase (separate thread pools), for torch. A sample is the mean of enough
back-to-back calls to last ~10 ms, after a 20 ms pause and one untimed call (warm caches; inputs
already in kernel memory). ``--cold``: each sample is one call after 64 MiB were written, so the
weights come from DRAM.

``--variant`` picks the LUT kernels' instruction set (``auto``: the best this CPU has; see
docs/lut.md) and ``--cpu`` the LLVM CPU every TVM kernel is compiled for: ``--cpu znver3
--variant avx2`` measures, on an AVX-512 host, the code an AVX2-only Zen 3 would run. Speedup columns are baseline / lut. ``bits 1`` is ternary: codes
{-1, 0, 1} stored as two bit-planes (docs/lut.md), so its kernels are the 2-bit ones. Group 128,
symmetric grids. ``err`` is ``max|y_lut - y_torch| / max|y_torch|`` for the int8-table kernel.

    .venv/bin/python benchmarks/lut_gemv.py [--quick] [--json] [--repeat N] [--cold] [--variant V] [--cpu CPU]
        [--shapes NxK,...]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time
from collections.abc import Callable

# TVM pool workers spin (sched_yield) for 300000 rounds, ~0.1 s, after each parallel call; left at
# that they steal the second core from torch's threads sampled next. Keep the spin to a few ms.
os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", "10000")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import tvm  # noqa: E402

from llmc.backends.tvm import build_dequant_gemv, build_lut_gemv  # noqa: E402

SHAPES = ((4096, 4096), (4096, 11008), (11008, 4096))
BITS = (1, 2, 3, 4)
THREADS = (1, 2)
GROUP = 128
TARGETS = {2: 3.0, 4: 1.5}  # issue targets: speedup over the TVM dequant baseline, 4096x4096, 1 thread


def make_weights(n: int, k: int, bits: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """docs/lut.md ``planes``, ``scales``, ``zeros`` and the dequantized ``W`` (float32)."""
    planes_n = 2 if bits == 1 else bits
    lo, hi = (1, 3) if bits == 1 else (0, 2**bits - 1)
    u = rng.integers(lo, hi + 1, size=(n, k), dtype=np.uint8)
    plane_bits = (u[None] >> np.arange(planes_n, dtype=np.uint8)[:, None, None]) & 1
    planes = (plane_bits.reshape(planes_n, n, k // 4, 4) << np.arange(4, dtype=np.uint8)).sum(-1, dtype=np.uint8)
    scales = rng.uniform(0.005, 0.02, size=(n, k // GROUP)).astype(np.float32)
    zeros = np.full((n, k // GROUP), 2 ** (planes_n - 1), np.float32)
    w = (u.reshape(n, -1, GROUP).astype(np.float32) - zeros[:, :, None]) * scales[:, :, None]
    return planes, scales, zeros, w.reshape(n, k)


def sample_ms(fn: Callable[[], object], target_s: float = 1e-2) -> Callable[[], float]:
    """A sampler returning the mean ms per call over a batch of calls lasting about ``target_s``.

    Each sample first sleeps briefly (so worker threads of the previously sampled library stop
    spinning) and makes one untimed call (so the weights are back in cache).
    """
    fn()
    start = time.perf_counter()
    fn()
    number = max(1, int(target_s / max(time.perf_counter() - start, 1e-7)))

    def sample() -> float:
        time.sleep(0.02)
        fn()
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number * 1e3

    return sample


_EVICT = np.zeros(64 << 20, np.uint8)


def sample_cold_ms(fn: Callable[[], object]) -> Callable[[], float]:
    """A sampler timing one call after 64 MiB were written (larger than the last-level cache)."""
    fn()

    def sample() -> float:
        np.add(_EVICT, 1, out=_EVICT)
        time.sleep(0.02)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    return sample


def measure(fns: dict[str, Callable[[], object]], repeat: int, cold: bool = False) -> dict[str, float]:
    """Median ms per call of each function, sampled round-robin ``repeat`` times."""
    samplers = {name: (sample_cold_ms if cold else sample_ms)(fn) for name, fn in fns.items()}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, sampler in samplers.items():
            times[name].append(sampler())
    return {name: float(np.median(t)) for name, t in times.items()}


def bench_shape(n: int, k: int, bits: int, threads_list: tuple[int, ...], repeat: int, rng: np.random.Generator,
                variant: str = "auto", cpu: str | None = None, cold: bool = False) -> list[dict]:
    planes_n = 2 if bits == 1 else bits
    planes, scales, zeros, w = make_weights(n, k, bits, rng)
    x = rng.standard_normal((1, k)).astype(np.float32)
    x_tvm, x_torch, w_torch = tvm.runtime.tensor(x), torch.from_numpy(x), torch.from_numpy(w)
    packed: dict[str, tuple] = {}
    rows = []
    for threads in threads_list:
        kernels = {
            "lut_ms": build_lut_gemv(n, k, planes_n, GROUP, table="int8", threads=threads, variant=variant, cpu=cpu),
            "lut_f32_ms": build_lut_gemv(n, k, planes_n, GROUP, table="f32", threads=threads, variant=variant, cpu=cpu),
            "dequant_ms": build_dequant_gemv(n, k, planes_n, GROUP, threads=threads, cpu=cpu),
        }
        for kern in kernels.values():
            if kern.layout not in packed:
                packed[kern.layout] = kern.pack(planes, scales, zeros)
        torch.set_num_threads(threads)
        tvm_fns = {name: functools.partial(kern.run, x_tvm, *packed[kern.layout]) for name, kern in kernels.items()}
        y_ref = (x_torch @ w_torch.T).numpy()[0]
        y_lut = tvm_fns["lut_ms"]().numpy()[0, :n]
        row = {"shape": f"{n}x{k}", "bits": bits, "threads": threads, "planes": planes_n,
               "variant": kernels["lut_ms"].variant.name, "cpu": cpu or "host", "cache": "cold" if cold else "warm"}
        row.update(measure(tvm_fns, repeat, cold))
        time.sleep(0.2)  # TVM workers asleep before torch's threads run
        row.update(measure({"torch_ms": lambda: x_torch @ w_torch.T}, repeat, cold))
        row["speedup_vs_dequant"] = row["dequant_ms"] / row["lut_ms"]
        row["speedup_vs_torch"] = row["torch_ms"] / row["lut_ms"]
        row["err"] = float(np.abs(y_lut - y_ref).max() / np.abs(y_ref).max())
        rows.append(row)
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"LUT variant {rows[0]['variant']}, LLVM CPU {rows[0]['cpu']}, {rows[0]['cache']} cache")
    head = f"{'N x K':>11} {'bits':>8} {'thr':>3} {'lut_ms':>8} {'lut_f32':>8} {'dequant':>8} {'torch':>8}"
    print(head + f" {'vs deq':>7} {'vs torch':>8} {'err':>8}")
    for r in rows:
        bits = "1 (tern)" if r["bits"] == 1 else str(r["bits"])
        print(f"{r['shape']:>11} {bits:>8} {r['threads']:>3} {r['lut_ms']:8.3f} {r['lut_f32_ms']:8.3f} "
              f"{r['dequant_ms']:8.3f} {r['torch_ms']:8.3f} {r['speedup_vs_dequant']:6.2f}x "
              f"{r['speedup_vs_torch']:7.2f}x {r['err']:8.1e}")
    for bits, want in TARGETS.items():
        hit = [r for r in rows if r["shape"] == "4096x4096" and r["bits"] == bits and r["threads"] == 1]
        for r in hit:
            verdict = "met" if r["speedup_vs_dequant"] >= want else "NOT met"
            print(f"target W{bits} 4096x4096 1 thread >= {want}x over dequant: "
                  f"{r['speedup_vs_dequant']:.2f}x ({verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4096x4096, bits 2 and 4 only")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--repeat", type=int, default=15, help="timed samples per kernel")
    parser.add_argument("--cold", action="store_true", help="time single calls with the caches flushed")
    parser.add_argument("--shapes", default=None, help="NxK shapes, comma-separated (default: all three)")
    parser.add_argument("--variant", default="auto", help="LUT kernel variant (docs/lut.md; default: auto)")
    parser.add_argument("--cpu", default=None, help="LLVM CPU to compile the TVM kernels for (default: this host)")
    args = parser.parse_args()
    shapes = SHAPES[:1] if args.quick else SHAPES
    if args.shapes:
        shapes = tuple(tuple(int(d) for d in shape.split("x")) for shape in args.shapes.split(","))
    bits_list = (2, 4) if args.quick else BITS
    threads_list = tuple(t for t in THREADS if t <= (os.cpu_count() or 1))
    rng = np.random.default_rng(0)
    rows = [row for n, k in shapes for bits in bits_list
            for row in bench_shape(n, k, bits, threads_list, args.repeat, rng, args.variant, args.cpu, args.cold)]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print_table(rows)


if __name__ == "__main__":
    main()
