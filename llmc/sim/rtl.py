"""RTL simulation of the matrix engines' units (:mod:`llmc.backends.fpga.units`) under Icarus Verilog or
Verilator, driven by the cocotb bench ``cocotb_benches/stream_bench.py`` (through the harness
``hls_templates/rtl/bench_harness.v.j2``) with cocotb 1.9's runner.

:func:`check_unit` renders a unit, builds it (builds are cached by the hash of their sources, :mod:`llmc.sim.build_cache`),
feeds it dense test vectors packed as the unit reads them and compares every result with
``sum x * (w - z)`` computed by :func:`llmc.ir.ops.common.exact_int_matmul`, as the interpreter's
``hw_matmul`` does for a group. Builds and runs are child processes in their own session with a wall-clock
limit (killed with everything they started when it passes); the bench also stops itself after a cycle
limit, so a hung design fails instead of hanging.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llmc.backends.fpga import units
from llmc.errors import LlmcError
from llmc.ir.ops.common import exact_int_matmul
from llmc.sim.build_cache import cache_root, cached_build
from llmc.templating import render, static_file

SIMULATORS = ("icarus", "verilator")
BENCH_MODULE = "llmc.sim.cocotb_benches.stream_bench"
TOPLEVEL = "llmc_bench"
DEFAULT_GROUP = 32
CYCLES_PER_BEAT = 64  # the bench's cycle limit: generous for its stall phases, finite for a hung design


@dataclass
class UnitResult:
    """One unit configuration checked on one simulator."""

    unit: str
    simulator: str
    config: dict
    compared: int
    mismatches: int
    seconds: float


class RtlSimError(LlmcError):
    """An RTL simulation that did not finish: hung, crashed, timed out, or failed to build."""


def golden(x: np.ndarray, w: np.ndarray, zeros: np.ndarray | None) -> np.ndarray:
    """``sum_k x[v, k] * (w[v, k] - zeros[v])`` per vector, exact (``hw_matmul``'s group product)."""
    z = np.zeros(len(x), dtype=np.int64) if zeros is None else zeros.astype(np.int64)
    return exact_int_matmul(x[:, None, :], (w.astype(np.int64) - z[:, None])[:, :, None])[:, 0, 0]


def random_vectors(unit: str, config: dict, count: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``count`` constrained-random vectors of ``config["group"]`` elements (default 32) for ``unit``: int8
    activations, codes in the unit's range (N:M sparse blocks with random kept positions, or unsigned codes
    with zero points), led by corner cases: all zero, extremes -128/127, max-magnitude codes, worst-case
    accumulation of either sign, kept values at the ends of their blocks, codes equal to the zero point."""
    u = units.make_unit(unit, config)
    length = int(config.get("group", max(DEFAULT_GROUP, u.beat_activations)))
    if length % u.block:
        raise ValueError(f"{u.name}: group {length} is not a multiple of {u.block} activations")
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (count, length), dtype=np.int64)
    lo, hi = u.code_range
    if u.kind == "sparse_mac":
        w = rng.integers(lo, hi + 1, (count, length), dtype=np.int64)
        blocks = rng.random((count, length // u.m, u.m)).argsort(axis=-1).argsort(axis=-1) < u.n
        w = np.where(blocks.reshape(count, length), w, 0)
        first = np.zeros((length // u.m, u.m), dtype=bool)
        first[:, : u.n] = True
        last = first[:, ::-1]
        kept, at_end = first.reshape(-1), last.reshape(-1)
        corners = [(0, 0, kept), (-128, lo, kept), (127, lo, kept), (-128, hi, kept), (127, hi, at_end),
                   (-128, lo, at_end)]
        for row, (xv, wv, mask) in enumerate(corners[:count]):
            x[row] = xv
            w[row] = np.where(mask, wv, 0)
        if count > len(corners):  # alternating extremes against max-magnitude codes
            x[len(corners)] = np.where(np.arange(length) % 2, 127, -128)
            w[len(corners)] = np.where(kept, np.where(np.arange(length) % 3, lo, hi), 0)
        return x, w, None
    w = rng.integers(lo, hi + 1, (count, length), dtype=np.int64)
    zeros = rng.integers(lo, hi + 1, count, dtype=np.int64) if u.zero else None
    corners = [(0, 0, 0), (-128, 0, hi), (-128, hi, 0), (127, hi, 0), (127, 0, hi), (-128, hi, hi)]
    for row, (xv, wv, zv) in enumerate(corners[:count]):
        if zeros is None and zv:
            continue
        x[row], w[row] = xv, wv
        if zeros is not None:
            zeros[row] = zv
    if count > len(corners):  # alternating extremes
        x[len(corners)] = np.where(np.arange(length) % 2, 127, -128)
        w[len(corners)] = np.where(np.arange(length) % 2, 0, hi)
    return x, w, zeros


def _check_vectors(u: units.Unit, x: np.ndarray, w: np.ndarray, zeros: np.ndarray | None) -> None:
    if x.ndim != 2 or x.shape != w.shape or not len(x):
        raise ValueError(f"{u.name}: x and w must be [V, L] with V >= 1, got {x.shape} and {w.shape}")
    if x.min() < -128 or x.max() > 127:
        raise ValueError(f"{u.name}: activations must be int8")
    lo, hi = u.code_range
    if (zeros is not None) != u.zero:
        raise ValueError(f"{u.name}: zeros must be given exactly when the unit has a zero point")
    if zeros is not None and (zeros.shape != (len(x),) or zeros.min() < lo or zeros.max() > hi):
        raise ValueError(f"{u.name}: zeros must be [V] in [{lo}, {hi}]")
    if w.min() < lo or w.max() > hi:
        raise ValueError(f"{u.name}: codes must lie in [{lo}, {hi}]")


def bench_sources(u: units.Unit) -> dict[str, str]:
    """File name -> Verilog of the bench: the unit, the result queue, the harness."""
    return {
        f"{u.name}.v": units.render_verilog(u),
        "llmc_result_queue.v": static_file("rtl/llmc_result_queue.v"),
        "llmc_bench.v": render("rtl/bench_harness.v.j2", module=u.name, beat_bits=u.beat_bits),
    }


def run_child(args: list[str], log: Path, timeout_s: float, what: str, limit_s: float) -> None:
    """Run ``python -m llmc.sim.rtl ARGS`` in its own session; past ``timeout_s`` (what is left of the caller's
    ``limit_s``) kill it and its children."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_CURRENT_TEST"}
    env.setdefault("MAKEFLAGS", f"-j{min(4, os.cpu_count() or 1)}")
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "llmc.sim.rtl", *args], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise RtlSimError(f"{what}: timed out (limit {limit_s:g} s), killed") from None
    if code != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise RtlSimError(f"{what}: exited with code {code}:\n{tail}")


@dataclass(frozen=True)
class Bench:
    """A cocotb bench: the harness's top module and the Python test module that drives it."""

    toplevel: str
    test_module: str


UNIT_BENCH = Bench(TOPLEVEL, BENCH_MODULE)


def build_bench(bench: Bench, name: str, sources: dict[str, str], simulator: str, timeout_s: float,
                parameters: dict[str, int] | None = None) -> Path:
    """The build folder of ``bench`` with ``sources`` (file name -> Verilog) and top-level ``parameters`` on
    ``simulator``, built once per content hash of all three."""
    parameters = parameters or {}

    def build(folder: Path) -> None:
        for file, text in sources.items():
            (folder / file).write_text(text)
        job = {"simulator": simulator, "build_dir": str(folder / "build"), "toplevel": bench.toplevel,
               "sources": [str(folder / file) for file in sources], "parameters": parameters}
        (folder / "build.json").write_text(json.dumps(job))
        run_child(["build", str(folder / "build.json")], folder / "build.log", timeout_s,
                  f"{name} build on {simulator}", timeout_s)

    return cached_build(f"{name}-{simulator}", [simulator, sources, parameters], build) / "build"


def run_bench(bench: Bench, build: Path, simulator: str, spec: dict, what: str, timeout_s: float,
              limit_s: float) -> dict:
    """Run ``bench`` from ``build`` on ``spec`` (the path of its ``result`` file added) within ``timeout_s``
    (what is left of the caller's ``limit_s``); the outcome the bench wrote."""
    cache_root().mkdir(parents=True, exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix="bench-run-", dir=cache_root()))
    try:
        (run / "spec.json").write_text(json.dumps({**spec, "result": str(run / "result.json")}))
        job = {"simulator": simulator, "build_dir": str(build), "test_dir": str(run), "spec": str(run / "spec.json"),
               "toplevel": bench.toplevel, "test_module": bench.test_module}
        (run / "job.json").write_text(json.dumps(job))
        run_child(["test", str(run / "job.json")], run / "test.log", timeout_s, what, limit_s)
        if not (run / "result.json").exists():
            tail = (run / "test.log").read_text(errors="replace")[-3000:]
            raise RtlSimError(f"{what}: the bench stopped without a result:\n{tail}")
        return json.loads((run / "result.json").read_text())
    finally:
        shutil.rmtree(run, ignore_errors=True)


def check_unit(unit: str, config: dict, x: np.ndarray, w: np.ndarray, zeros: np.ndarray | None, simulator: str,
               timeout_s: float, *, seed: int = 0, ready_rate: float | None = None,
               max_cycles: int | None = None) -> UnitResult:
    """Simulate ``unit`` (``sparse_mac`` or ``lut_mac``, configured by ``config``) on ``simulator`` with the
    vectors ``x`` (int8 [V, L]) and ``w`` (codes [V, L]; N:M sparse for the chain) and per-vector ``zeros``
    (LUT unit with a zero point, else None), each vector one group; compare every result with :func:`golden`.

    ``timeout_s`` limits the build and the run (wall clock); ``seed`` drives the stalls; ``ready_rate`` fixes
    the probability of accepting a result each cycle (0 never: a hang); ``max_cycles`` overrides the bench's
    cycle limit. Raises :class:`RtlSimError` when the simulation does not finish."""
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator '{simulator}' (expected one of {', '.join(SIMULATORS)})")
    u = units.make_unit(unit, config)
    _check_vectors(u, x, w, zeros)
    want = golden(x, w, zeros)
    if np.abs(want).max() >= 1 << (units.OUT_BITS - 1):
        raise ValueError(f"{u.name}: a group's result does not fit the unit's int{units.OUT_BITS} output")
    start = time.monotonic()
    build = build_bench(UNIT_BENCH, u.name, bench_sources(u), simulator, timeout_s)
    beats = units.beats(u, x, w, zeros)
    spec = {"beats": beats, "expected": want.tolist(), "beat_bits": u.beat_bits, "seed": seed,
            "ready_rate": ready_rate, "max_cycles": max_cycles or CYCLES_PER_BEAT * len(beats) + 1000}
    what = f"{u.name} on {simulator}"
    remaining = max(1.0, timeout_s - (time.monotonic() - start))
    outcome = run_bench(UNIT_BENCH, build, simulator, spec, what, remaining, timeout_s)
    if outcome["status"] != "ok":
        raise RtlSimError(f"{what}: hung: no progress within {outcome['cycles']} cycles "
                          f"({outcome['beats_sent']} of {len(beats)} beats taken, "
                          f"{len(outcome['outputs'])} of {len(want)} results)")
    got = np.asarray(outcome["outputs"], dtype=np.int64)
    common = min(len(got), len(want))
    mismatches = int((got[:common] != want[:common]).sum()) + abs(len(got) - len(want))
    return UnitResult(unit, simulator, u.to_json(), len(want), mismatches, time.monotonic() - start)


def _main(argv: list[str]) -> None:
    """Child process: ``build JOB`` or ``test JOB`` with cocotb's runner."""
    warnings.filterwarnings("ignore", "Python runners", UserWarning)
    from cocotb.runner import get_runner

    action, job = argv[0], json.loads(Path(argv[1]).read_text())
    runner = get_runner(job["simulator"])
    toplevel = job["toplevel"]
    if action == "build":
        extra = ["--timing", "--timescale", "1ns/1ns"] if job["simulator"] == "verilator" else []
        runner.build(sources=job["sources"], hdl_toplevel=toplevel, build_dir=job["build_dir"], always=True,
                     build_args=extra, timescale=("1ns", "1ns"), parameters=job["parameters"])
        return
    runner.test(hdl_toplevel=toplevel, hdl_toplevel_lang="verilog", test_module=job["test_module"],
                build_dir=job["build_dir"], test_dir=job["test_dir"], extra_env={"LLMC_RTL_SPEC": job["spec"]},
                results_xml=str(Path(job["test_dir"]) / "results.xml"))


if __name__ == "__main__":
    _main(sys.argv[1:])
